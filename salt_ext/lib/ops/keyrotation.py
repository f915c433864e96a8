"""Replace the cluster's munge key while jobs keep running.

munged reads its key once, at start, and every Slurm message between two machines is a
credential one munged makes and the other decodes; so a key change is safe only when no
machine is left on the other key. The order:

1. every machine (controller and every node of slurm.conf) answers, runs munged and holds
   the master's current key; otherwise nothing changes (a cluster that already disagrees
   needs ``slurm.deploy`` first, not a new key);
2. the master makes the new key and keeps the old one as ``munge.key.previous``;
3. every machine *stages* the new key beside the live one (download, hash check, 0400), so
   a failed download leaves every machine on the old key and the rotation stops there;
4. one parallel call swaps the staged key in (an atomic rename) and restarts munged on all
   machines at once: the window in which two machines disagree is the spread of that one
   call, about a second. slurmd and slurmctld keep running and so do jobs: slurmstepd
   retries a message that failed in that window;
5. every node must be registered and not down (slurmd is restarted on a node that is not,
   which makes it register at once instead of at the controller's next ping);
6. ``slurm.verify`` (credentials both ways, key hashes, a job step per node). Only when it
   passes is the old key deleted on the master. If anything after step 2 fails, the old key
   goes back the same way (stage, swap, verify) and the report says what failed.

The key never leaves the master except through the file server to the minions; reports,
progress lines and events carry ``sha256:`` fingerprints only.
"""

from salt_ext.lib.conf import hostlist
from salt_ext.lib.ops.rollout import ClusterSteps, RolloutError, batches


class KeyRotation(ClusterSteps):
    """One rotation; ``run()`` returns the report (``result`` True/False/None).

    ``keys`` is the master's side, with ``current_hash()``, ``begin()`` (keep the current
    key as previous, write a new one, return its hash), ``restore()`` (previous key back as
    current, return its hash) and ``commit()`` (forget the previous key). ``verify()``
    returns ``{"result": bool, "failed": {node: {check: evidence}}, "comment": str}``.
    """

    def __init__(
        self,
        minions,
        controller,
        node_minions,
        keys,
        verify,
        batch_size=10,
        timeout=120,
        progress=None,
    ):
        super().__init__(minions, controller, node_minions, batch_size, timeout, progress)
        self.keys = keys
        self.verify = verify
        self.report.update(old_hash=None, new_hash=None, rolled_back=None)

    def run(self, test=False):
        try:
            old = self._preflight()
        except RolloutError as err:
            return self._fail(err, "nothing was changed")
        if test:
            self.report.update(
                result=None,
                comment=f"would replace munge key {old} on {len(self._targets())} machines",
            )
            return self.report
        new = self.keys.begin()
        self.report["new_hash"] = new
        self._step(f"new munge key {_short(new)} on the master; {_short(old)} kept until verified")
        try:
            self._stage(new)
        except RolloutError as err:
            self._call(
                "discard staged keys",
                self._targets(),
                "munge.discard_staged_key",
                must=False,
            )
            self.keys.restore()
            self.report["new_hash"] = None
            return self._fail(err, f"no machine swapped keys; all stay on {_short(old)}")
        try:
            self._swap(new)
            self._registered()
            checked = self.verify()
            if not checked.get("result"):
                raise RolloutError("slurm.verify with the new key", _flatten(checked))
        except RolloutError as err:
            back = self.report["rolled_back"] = self._roll_back(old)
            where = (
                f"rolled back to {_short(old)}"
                if back["result"]
                else f"rollback to {_short(old)} FAILED too: {back['comment']}"
            )
            return self._fail(err, where)
        self.keys.commit()
        self._step(f"verified; old key {_short(old)} deleted on the master")
        self.report.update(
            result=True,
            comment=(
                f"munge key {_short(old)} -> {_short(new)} on {len(self._targets())} machines; "
                "verified"
            ),
        )
        return self.report

    # ------------------------------------------------------------------ steps
    def _preflight(self):
        targets = self._targets()
        self._step(f"checking {len(targets)} machines: munged up, same key as the master")
        self._reach("reach every machine (nothing changed yet)", targets)
        statuses = self._call(
            "reach every machine (nothing changed yet)", targets, "slurm_node.status"
        )
        current = self.keys.current_hash()
        self.report["old_hash"] = current
        bad = {}
        for minion, status in statuses.items():
            if not (status.get("daemons") or {}).get("munge"):
                bad[self._label(minion)] = "munged not running"
            elif status.get("munge_key_hash") != current:
                bad[self._label(minion)] = (
                    f"munge key {status.get('munge_key_hash')} differs from the master's {current}"
                )
        if bad:
            raise RolloutError(
                "every machine runs munged with the master's key (fix with `salt-run "
                "slurm.deploy`, then rotate)",
                bad,
            )
        return current

    def _stage(self, key_hash):
        self._step(f"staging {_short(key_hash)} on {len(self._targets())} machines")
        self._call("stage the key", self._targets(), "munge.stage_key", [key_hash])

    def _swap(self, key_hash):
        self._step(f"swapping in {_short(key_hash)} and restarting munged everywhere at once")
        self._call(
            "swap the key and restart munged",
            self._targets(),
            "munge.activate_key",
            [key_hash],
        )

    def _registered(self):
        """Every node registered and not down; a node that is not gets slurmd restarted
        (it registers at once instead of at the controller's next ping)."""
        nodes = self._node_targets()
        for batch in batches(nodes, self.batch_size):
            waited = self._call(
                "nodes registered with the new key",
                batch,
                "slurm_controller.wait_registered",
                [None, min(self.timeout, 30)],
                timeout=min(self.timeout, 30) + 30,
            )
            lagging = [m for m, ret in waited.items() if not ret.get("ok")]
            if lagging:
                self._step(
                    f"slurmd restart on {hostlist.compress([self._label(m) for m in lagging])}"
                )
                self._call(
                    "restart slurmd", lagging, "slurm_node.daemon_control", ["slurmd", "restart"]
                )
                self._wait_registered(lagging, "nodes registered after slurmd restart")
        self._step(f"{len(nodes)} nodes registered")

    def _roll_back(self, old):
        self._step(f"rolling back to {_short(old)}")
        try:
            self.keys.restore()
            self._stage(old)
            self._swap(old)
            self._registered()
        except RolloutError as err:
            return {"result": False, "comment": str(err), "failed": err.failed}
        checked = self.verify()
        if not checked.get("result"):
            return {"result": False, "comment": checked.get("comment"), "failed": _flatten(checked)}
        self._step(f"rolled back: every machine on {_short(old)} again, verified")
        return {"result": True, "comment": "verified on the old key", "failed": {}}

    def _fail(self, err, where):
        self.report["failed"] = err.failed
        self.report["result"] = False
        self.report["comment"] = (
            f"stopped at step '{err.step}'; failing: "
            + "; ".join(f"{k}: {v}" for k, v in sorted(err.failed.items()))
            + f". {where}."
        )
        self._step(self.report["comment"])
        return self.report


def _short(key_hash):
    return f"{key_hash[:19]}…" if key_hash else "none"


def _flatten(checked):
    failed = checked.get("failed") or {}
    if not failed:
        return {"verify": checked.get("comment") or checked.get("error") or "failed"}
    return {
        node: "; ".join(f"{name}: {evidence}" for name, evidence in checks.items())
        if isinstance(checks, dict)
        else str(checks)
        for node, checks in failed.items()
    }
