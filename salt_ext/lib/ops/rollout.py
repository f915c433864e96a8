"""Roll a new slurm.conf (and gres.conf / cgroup.conf) out to a running cluster.

The order is the one Slurm needs (see ``model.classify``):

- ``reconfigure``: push the files everywhere, then ``scontrol reconfigure``; no daemon
  restarts and running jobs are untouched.
- ``restart_slurmctld``: push, restart slurmctld, wait for ``scontrol ping``.
- ``restart_slurmd``: push, restart slurmd in batches, each batch registered before the next.
- ``restart_all`` (node definitions, ports, auth, plugins): push, stop slurmd on every node,
  restart slurmctld, then start slurmd in batches. Stopping slurmd does not kill jobs
  (their slurmstepd processes keep running) and slurmctld keeps jobs in its state files.

Every machine that will get the files must answer before anything changes. After the
action, every node must report the new conf hash and be registered, not down. The first
failure stops the rollout; the report names the nodes, the step and the evidence, and
``slurm.rollback_conf`` puts the previous version back the same way.

A rollout is crash-safe with a ``tracker`` (the master's journal, ``journal.Journal``
adapter): it records the class and the files before pushing and the nodes whose slurmd it
stops before stopping them, so the next run rolls an interrupted rollout forward
(``floor``). "Applied" is judged from what the daemons run, not from files on disk: a
daemon that started before its files were last written (``slurm_node.status``'s
``loaded``), with no converged rollout of those files since, raises the class
(:func:`stale_floor`). A rollout that fails after stopping slurmd starts it again on every
node it stopped before reporting.

The cluster is reached through ``minions.call(targets, fun, arg, timeout)`` returning
``{minion: {"ok": bool, "ret": ..., "error": str or None}}`` (missing minions included, as
not ok), so this module has no Salt imports and is unit-tested with a fake.
"""

from salt_ext.lib.conf import cluster_files, hostlist, model
from salt_ext.lib.util import fsutil

CONF_FILES = cluster_files.CONF_FILES


class RolloutError(RuntimeError):
    """A step failed; ``failed`` maps node (or controller) to the reason."""

    def __init__(self, step, failed):
        self.step = step
        self.failed = failed
        super().__init__(f"{step} failed on {', '.join(sorted(failed))}")


def worse(one, two):
    """The class that does both ``one`` and ``two``."""
    return model.worse_class(one, two)


def stale_floor(controller, statuses, applied_files, label=lambda m: m):
    """``(class, reasons)`` that the daemons' own state asks for, whatever the files say.

    ``statuses`` are ``slurm_node.status`` returns by minion; ``applied_files`` the file
    hashes of the last converged rollout (None if unknown). A daemon that started before
    its files were written runs them only if a converged rollout of exactly these files
    (a reconfigure) happened since.
    """
    applied_conf = (applied_files or {}).get("slurm.conf")
    klass, reasons = "none", []
    for minion, status in statuses.items():
        if not status:
            continue
        loaded = status.get("loaded") or {}
        for daemon, info in loaded.items():
            if not (info or {}).get("stale"):
                continue
            if applied_conf and status.get("slurm_conf_hash") == applied_conf:
                continue
            if daemon == "slurmctld" and minion == controller:
                # what it loaded is unknown: the superset class is the safe one
                klass = worse(klass, "restart_all")
            elif daemon == "slurmd":
                klass = worse(klass, "restart_slurmd")
            else:
                continue
            reasons.append(
                f"{daemon} on {label(minion)} started before its config files were last "
                "written and no rollout of them finished since: it may run an older config"
            )
    return klass, reasons


class NullTracker:
    """Where a rollout records its progress when nobody journals it."""

    def record(self, step=None, **data):
        """Nothing to record."""

    def set_applied(self, files):
        """Nothing to record."""


def batches(items, size):
    size = max(1, int(size))
    return [items[i : i + size] for i in range(0, len(items), size)]


class ClusterSteps:
    """Steps against the cluster through ``minions.call``, shared by :class:`Rollout` and
    ``keyrotation.KeyRotation``: progress lines, calls whose failures stop the run with the
    nodes named, and waiting for nodes to register."""

    def __init__(
        self, minions, controller, node_minions, batch_size=10, timeout=120, progress=None
    ):
        self.minions = minions
        self.controller = controller
        self.node_minions = dict(node_minions)  # NodeName -> minion id
        self.batch_size = batch_size
        self.timeout = timeout
        self.progress = progress or (lambda message: None)
        self.report = {"result": False, "steps": [], "failed": {}, "comment": ""}

    def _step(self, message):
        self.report["steps"].append(message)
        self.progress(message)

    def _call(self, step, targets, fun, arg=(), timeout=None, must=True):
        """``{minion: return}``; with ``must``, any failure raises :class:`RolloutError`.
        Without it, failed minions map to ``None`` and ``self.last_failed`` names why."""
        returns = self.minions.call(targets, fun, arg, timeout or self.timeout)
        failed = {t: returns.get(t, {}).get("error") or "no return" for t in targets}
        failed = {t: reason for t, reason in failed.items() if not returns.get(t, {}).get("ok")}
        self.last_failed = {self._label(t): reason for t, reason in failed.items()}
        if failed and must:
            raise RolloutError(step, self.last_failed)
        return {t: (r.get("ret") if r.get("ok") else None) for t, r in returns.items()}

    def _reach(self, step, targets):
        """One ping round (the minions port's): every target must answer, else nothing
        changes and the silent ones are named."""
        _, silent = self.minions.ping(list(targets), "list")
        if silent:
            raise RolloutError(
                step, {self._label(t): "no answer to test.ping (minion down?)" for t in silent}
            )

    def _label(self, minion):
        for node, owner in self.node_minions.items():
            if owner == minion:
                return node
        return minion

    def _targets(self):
        seen = [self.controller]
        for minion in self.node_minions.values():
            if minion not in seen:
                seen.append(minion)
        return seen

    def _node_targets(self):
        return list(dict.fromkeys(self.node_minions.values()))

    def _wait_registered(self, minions, step):
        returns = self._call(
            step,
            minions,
            "slurm_controller.wait_registered",
            [None, self.timeout],
            timeout=self.timeout + 30,
        )
        failed = {}
        for minion, ret in returns.items():
            if not ret.get("ok"):
                evidence = "; ".join(ret.get("evidence", [])[:4])
                failed[self._label(minion)] = f"{ret.get('cause') or 'not registered'} ({evidence})"
        if failed:
            raise RolloutError(step, failed)


class Rollout(ClusterSteps):
    """One rollout: ``run()`` returns the report dict (``result`` True/False/None)."""

    def __init__(
        self,
        minions,
        controller,
        node_minions,
        new_files,
        batch_size=10,
        timeout=120,
        progress=None,
        extra_keys=(),
        tracker=None,
        floor=None,
        applied_files=None,
    ):
        super().__init__(minions, controller, node_minions, batch_size, timeout, progress)
        self.extra_keys = tuple(extra_keys)
        self.new_files = new_files
        self.tracker = tracker or NullTracker()
        # class and reasons an interrupted earlier rollout left to finish
        self.floor = floor or ("none", [])
        self.applied_files = applied_files
        self.stopped = []  # minions whose slurmd this run stopped and has not started yet
        self.report.update({"class": None, "reasons": [], "diff": ""})

    # ------------------------------------------------------------------ steps
    def classify(self):
        old = self._call("read the controller's conf", [self.controller], "slurm_node.conf_files")[
            self.controller
        ]
        changes = {name: (old.get(name), self.new_files.get(name)) for name in CONF_FILES}
        verdict = model.classify_files(changes, self.extra_keys)
        self.report["class"] = verdict["class"]
        self.report["reasons"] = verdict["reasons"]
        self.report["diff"] = "".join(
            model.unified_diff(o or "", n or "", name)
            for name, (o, n) in changes.items()
            if (o or "") != (n or "")
        )
        return verdict["class"]

    def run(self, test=False):
        try:
            self._step(f"checking that {len(self._targets())} minions answer")
            self._reach("reach every machine (nothing changed yet)", self._targets())
            klass = self.classify()
            before = self._call(
                "read what the daemons loaded", self._targets(), "slurm_node.status"
            )
            for floor, reasons in (
                self.floor,
                stale_floor(self.controller, before, self.applied_files, self._label),
            ):
                if worse(klass, floor) != klass:
                    self.report["reasons"] += reasons
                    klass = worse(klass, floor)
            self.report["class"] = klass
            self._step(f"change class: {klass}")
            if test:
                self.report.update(result=None, comment=f"would roll out as {klass}")
                return self.report
            self.tracker.record(
                f"push the files ({klass})",
                dirty=True,
                rollout={"class": klass, "files": self._want(), "stopped": []},
            )
            synced = self._push()
            drifted = sorted(self._label(m) for m, r in synced.items() if r and r["changed"])
            self._step(f"files pushed; changed on: {', '.join(drifted) or 'none'}")
            if klass == "none" and drifted:
                klass = "reconfigure"
                self.report["reasons"].append(
                    f"the controller had this version already; {', '.join(drifted)} did not "
                    "(reconfigure makes every slurmd re-read it)"
                )
            getattr(self, f"_do_{klass}")()
            self._converge()
        except RolloutError as err:
            self.report["failed"] = err.failed
            self.report["comment"] = (
                f"stopped at step '{err.step}'; failing: "
                + "; ".join(f"{k}: {v}" for k, v in sorted(err.failed.items()))
                + ". "
                + self._restart_stopped()
                + (
                    "Fix that and run `salt-run slurm.apply_conf` again."
                    if "nothing changed" in err.step
                    else "Restore the previous version with `salt-run slurm.rollback_conf`."
                )
            )
            self.report["result"] = False
            return self.report
        self.report["class"] = klass
        self.report["result"] = True
        self.report["comment"] = f"rolled out ({klass}); {len(self.node_minions)} nodes converged"
        return self.report

    def _push(self):
        """Stage the files on every machine first; only when all staged are they put in
        place (renames). A machine that cannot stage (a full disk) leaves every machine on
        the files it had: never a mix of versions without a reconfigure."""
        self._call(
            "stage the files (nothing changed on any machine)",
            self._targets(),
            "slurm_node.stage_conf",
            must=False,
        )
        if self.last_failed:
            failed = dict(self.last_failed)
            self._call(
                "discard staged files",
                self._targets(),
                "slurm_node.discard_staged_conf",
                must=False,
            )
            raise RolloutError("stage the files (nothing changed on any machine)", failed)
        return self._call(
            "put the staged files in place", self._targets(), "slurm_node.commit_conf"
        )

    def _want(self):
        return {name: file_hash(text) for name, text in self.new_files.items()}

    def _restart_stopped(self):
        """Never leave slurmd stopped behind a failure: running jobs lose their slurmd
        (credentials revoked, steps cannot launch) for as long as it is down."""
        if not self.stopped:
            return ""
        stopped, self.stopped = self.stopped, []
        self._step(f"failure: starting slurmd again on {len(stopped)} nodes this run stopped")
        self._call(
            "start slurmd again",
            stopped,
            "slurm_node.daemon_control",
            ["slurmd", "start"],
            must=False,
        )
        failed = self.last_failed
        started = [self._label(m) for m in stopped if self._label(m) not in failed]
        self.report["restarted_after_failure"] = started
        self.report["not_restarted"] = failed
        self.tracker.record(
            "slurmd started again after the failure",
            rollout={
                **self._journal_rollout(),
                "stopped": [m for m in stopped if self._label(m) in failed],
            },
        )
        if failed:
            return (
                f"slurmd could NOT be started again on {', '.join(sorted(failed))} "
                f"({'; '.join(f'{k}: {v}' for k, v in sorted(failed.items()))}); "
            )
        return f"slurmd was started again on the {len(started)} nodes this run had stopped. "

    def _journal_rollout(self):
        return {"class": self.report.get("class"), "files": self._want(), "stopped": []}

    def _do_none(self):
        self._step("nothing to do: every machine has this version")

    def _do_reconfigure(self):
        self._step("scontrol reconfigure")
        self._call("scontrol reconfigure", [self.controller], "slurm_controller.reconfigure")

    def _restart_controller(self):
        self._step(f"restarting slurmctld on {self.controller}")
        self._call(
            "restart slurmctld",
            [self.controller],
            "slurm_node.daemon_control",
            ["slurmctld", "restart"],
        )
        ping = self._call(
            "slurmctld answers",
            [self.controller],
            "slurm_controller.up",
            [self.timeout],
            timeout=self.timeout + 30,
        )[self.controller]
        if not ping["ok"]:
            raise RolloutError("slurmctld answers", {self.controller: ping["output"]})

    def _do_restart_slurmctld(self):
        self._restart_controller()
        # the slurmds have the new file but have not read it; reconfigure makes them
        self._do_reconfigure()

    def _start_in_batches(self, action):
        nodes = list(self.node_minions)
        for batch in batches(nodes, self.batch_size):
            minions = [self.node_minions[n] for n in batch]
            self._step(f"slurmd {action}: {hostlist.compress(batch)}")
            if action == "restart":
                # a restart is a stop too: until it answers, the node is one we stopped
                self._mark_stopped(minions)
            self._call(f"slurmd {action}", minions, "slurm_node.daemon_control", ["slurmd", action])
            self.stopped = [m for m in self.stopped if m not in minions]
            self.tracker.record(rollout={**self._journal_rollout(), "stopped": self.stopped})
            self._wait_registered(minions, f"registered after slurmd {action}")

    def _mark_stopped(self, minions):
        self.stopped = list(dict.fromkeys([*self.stopped, *minions]))
        self.tracker.record(
            f"stopping slurmd on {len(minions)} nodes",
            rollout={**self._journal_rollout(), "stopped": self.stopped},
        )

    def _do_restart_slurmd(self):
        # slurmctld re-reads the file (no restart needed for it), then the slurmds restart
        self._do_reconfigure()
        self._start_in_batches("restart")

    def _do_restart_all(self):
        minions = self._node_targets()
        if minions:
            self._step(f"stopping slurmd on {hostlist.compress(list(self.node_minions))}")
            self._mark_stopped(minions)
            self._call("stop slurmd", minions, "slurm_node.daemon_control", ["slurmd", "stop"])
        self._restart_controller()
        self._start_in_batches("start")

    def _converge(self):
        minions = self._node_targets()
        want = {name: file_hash(text) for name, text in self.new_files.items()}
        statuses = self._call("read conf hashes", [self.controller, *minions], "slurm_node.status")
        stale = {
            self._label(m): f"slurm.conf {s.get('slurm_conf_hash')} != {want['slurm.conf']}"
            for m, s in statuses.items()
            if s.get("slurm_conf_hash") != want["slurm.conf"]
        }
        if stale:
            raise RolloutError("every node has the new conf", stale)
        if minions:
            self._wait_registered(minions, "every node registered, none down")
        self.tracker.set_applied(want)
        self._step(f"converged: {len(minions)} nodes on slurm.conf {want['slurm.conf']}")


def file_hash(text):
    """``sha256:…`` of a file's text (None for no file), as ``slurm_node.status`` reports it."""
    return None if text is None else "sha256:" + fsutil.sha256_bytes(text)
