"""Roll a new slurm.conf (and gres.conf / cgroup.conf) out to a running cluster.

The order is the one Slurm needs (see ``slurmconf.classify``):

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

The cluster is reached through ``minions.call(targets, fun, arg, timeout)`` returning
``{minion: {"ok": bool, "ret": ..., "error": str or None}}`` (missing minions included, as
not ok), so this module has no Salt imports and is unit-tested with a fake.
"""

from salt_ext.lib import cluster_files, fsutil, hostlist, slurmconf

CONF_FILES = cluster_files.CONF_FILES


class RolloutError(RuntimeError):
    """A step failed; ``failed`` maps node (or controller) to the reason."""

    def __init__(self, step, failed):
        self.step = step
        self.failed = failed
        super().__init__(f"{step} failed on {', '.join(sorted(failed))}")


def conf_nodes(conf_text, extra_keys=()):
    """NodeNames a slurm.conf defines, hostlists expanded, DEFAULT skipped, in file order."""
    conf = slurmconf.parse(conf_text, "slurm.conf", extra_keys)
    names = []
    for record in conf.records("NodeName"):
        if record.name.upper() != "DEFAULT":
            names += hostlist.expand(record.name)
    return names


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
            "slurm_node.wait_registered",
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
    ):
        super().__init__(minions, controller, node_minions, batch_size, timeout, progress)
        self.extra_keys = tuple(extra_keys)
        self.new_files = new_files
        self.report.update({"class": None, "reasons": [], "diff": ""})

    # ------------------------------------------------------------------ steps
    def classify(self):
        old = self._call("read the controller's conf", [self.controller], "slurm_node.conf_files")[
            self.controller
        ]
        changes = {name: (old.get(name), self.new_files.get(name)) for name in CONF_FILES}
        verdict = slurmconf.classify_files(changes, self.extra_keys)
        self.report["class"] = verdict["class"]
        self.report["reasons"] = verdict["reasons"]
        self.report["diff"] = "".join(
            slurmconf.unified_diff(o or "", n or "", name)
            for name, (o, n) in changes.items()
            if (o or "") != (n or "")
        )
        return verdict["class"]

    def run(self, test=False):
        try:
            self._step(f"checking that {len(self._targets())} minions answer")
            self._call("reach every machine (nothing changed yet)", self._targets(), "test.ping")
            klass = self.classify()
            self._step(f"change class: {klass}")
            if test:
                self.report.update(result=None, comment=f"would roll out as {klass}")
                return self.report
            synced = self._call("push the files", self._targets(), "slurm_node.sync_conf")
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
                + ". Restore the previous version with `salt-run slurm.rollback_conf`."
            )
            self.report["result"] = False
            return self.report
        self.report["class"] = klass
        self.report["result"] = True
        self.report["comment"] = f"rolled out ({klass}); {len(self.node_minions)} nodes converged"
        return self.report

    def _do_none(self):
        self._step("nothing to do: every machine has this version")

    def _do_reconfigure(self):
        self._step("scontrol reconfigure")
        self._call("scontrol reconfigure", [self.controller], "slurm_node.reconfigure")

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
            "slurm_node.controller_up",
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
            self._call(f"slurmd {action}", minions, "slurm_node.daemon_control", ["slurmd", action])
            self._wait_registered(minions, f"registered after slurmd {action}")

    def _do_restart_slurmd(self):
        # slurmctld re-reads the file (no restart needed for it), then the slurmds restart
        self._do_reconfigure()
        self._start_in_batches("restart")

    def _do_restart_all(self):
        minions = self._node_targets()
        if minions:
            self._step(f"stopping slurmd on {hostlist.compress(list(self.node_minions))}")
            self._call("stop slurmd", minions, "slurm_node.daemon_control", ["slurmd", "stop"])
        self._restart_controller()
        self._start_in_batches("start")

    def _converge(self):
        minions = self._node_targets()
        want = {name: _hash(text) for name, text in self.new_files.items()}
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
        self._step(f"converged: {len(minions)} nodes on slurm.conf {want['slurm.conf']}")


def _hash(text):
    return None if text is None else "sha256:" + fsutil.sha256_bytes(text)
