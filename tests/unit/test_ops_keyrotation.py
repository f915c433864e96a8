"""Munge key rotation order and failure handling against a fake cluster (no Salt, no daemons)."""

from salt_ext.lib.ops import keyrotation
from tests.unit.fakeports import PingViaCall

NODES = {"n1": "n1", "n2": "n2", "n3": "n3"}
OLD, NEW = "sha256:" + "a" * 64, "sha256:" + "b" * 64


class FakeKeys:
    def __init__(self):
        self.current, self.previous, self.log = OLD, None, []

    def current_hash(self):
        return self.current

    def begin(self):
        self.log.append("begin")
        self.previous, self.current = self.current, NEW
        return NEW

    def restore(self):
        self.log.append("restore")
        self.current, self.previous = self.previous, None
        return self.current

    def commit(self):
        self.log.append("commit")
        self.previous = None


class FakeCluster(PingViaCall):
    """Each machine has a live key, a staged key and munged; records calls in order."""

    def __init__(self, fail=None, munged_down=(), live=None, slow_register=()):
        self.live = {m: OLD for m in ("ctl", *NODES)}
        self.live.update(live or {})
        self.staged = {}
        self.fail = fail or {}  # (fun, minion) -> error, or (fun, minion, hash) -> error
        self.munged_down = set(munged_down)
        self.slow_register = set(slow_register)
        self.calls = []

    def call(self, targets, fun, arg=(), timeout=120):
        self.calls.append((fun, tuple(targets), tuple(arg)))
        out = {}
        for target in targets:
            error = self.fail.get((fun, target)) or self.fail.get((fun, target, *arg[:1]))
            if error:
                out[target] = {"ok": False, "ret": error, "error": error}
                continue
            out[target] = {"ok": True, "ret": self._answer(target, fun, arg), "error": None}
        return out

    def _answer(self, target, fun, arg):
        if fun == "slurm_node.status":
            return {
                "daemons": {"munge": target not in self.munged_down},
                "munge_key_hash": self.live[target],
            }
        if fun == "munge.stage_key":
            self.staged[target] = arg[0]
            return {"staged": arg[0]}
        if fun == "munge.activate_key":
            assert self.staged.get(target) == arg[0], (target, "swap without a staged key")
            self.live[target] = self.staged.pop(target)
            return {"key_hash": arg[0]}
        if fun == "munge.discard_staged_key":
            return self.staged.pop(target, None) is not None
        if fun == "slurm_controller.wait_registered":
            if target in self.slow_register:
                self.slow_register.discard(target)  # a slurmd restart fixes it
                return {"ok": False, "cause": "not responding", "evidence": []}
            return {"ok": True}
        return True

    def funs(self):
        return [fun for fun, _, _ in self.calls]


def _verify_from(cluster, keys):
    def verify():
        bad = {m: {"munge key": h} for m, h in cluster.live.items() if h != keys.current}
        return {"result": not bad, "failed": bad, "comment": f"{len(bad)} failed"}

    return verify


def _rotate(cluster, keys=None, verify=None, test=False):
    keys = keys or FakeKeys()
    rotation = keyrotation.KeyRotation(
        cluster, "ctl", NODES, keys, verify or _verify_from(cluster, keys), batch_size=2
    )
    return rotation.run(test=test), keys


def test_rotation_stages_everywhere_before_any_swap_then_verifies_and_drops_old_key():
    cluster = FakeCluster()
    report, keys = _rotate(cluster)
    assert report["result"] is True, report
    assert set(cluster.live.values()) == {NEW}
    funs = cluster.funs()
    stage = funs.index("munge.stage_key")
    swap = funs.index("munge.activate_key")
    assert stage < swap
    # one call swaps on every machine at once: the window of disagreement is one call
    assert [c for c in cluster.calls if c[0] == "munge.activate_key"] == [
        ("munge.activate_key", ("ctl", "n1", "n2", "n3"), (NEW,))
    ]
    assert keys.log == ["begin", "commit"]
    assert report["old_hash"] == OLD and report["new_hash"] == NEW
    assert "daemon_control" not in " ".join(funs)  # slurmd/slurmctld keep running


def test_test_mode_checks_and_changes_nothing():
    cluster = FakeCluster()
    report, keys = _rotate(cluster, test=True)
    assert report["result"] is None
    assert keys.log == []
    assert cluster.funs() == ["test.ping", "slurm_node.status"]


def test_preflight_refuses_a_cluster_that_already_disagrees():
    cluster = FakeCluster(munged_down=["n2"], live={"n3": "sha256:" + "c" * 64})
    report, keys = _rotate(cluster)
    assert report["result"] is False
    assert report["failed"]["n2"] == "munged not running"
    assert "differs from the master's" in report["failed"]["n3"]
    assert "nothing was changed" in report["comment"]
    assert keys.log == [] and cluster.funs() == ["test.ping", "slurm_node.status"]


def test_preflight_refuses_when_a_machine_does_not_answer():
    cluster = FakeCluster(fail={("slurm_node.status", "n1"): "no return (minion down?)"})
    report, keys = _rotate(cluster)
    assert report["result"] is False and "n1" in report["failed"]
    assert keys.log == []


def test_failed_stage_on_one_node_leaves_every_machine_on_the_old_key():
    cluster = FakeCluster(fail={("munge.stage_key", "n2"): "disk full"})
    report, keys = _rotate(cluster)
    assert report["result"] is False
    assert report["failed"] == {"n2": "disk full"}
    assert set(cluster.live.values()) == {OLD}
    assert cluster.staged == {}  # discarded again
    assert "munge.activate_key" not in cluster.funs()
    assert keys.log == ["begin", "restore"] and keys.current == OLD
    assert "no machine swapped keys" in report["comment"]


def test_failed_verify_rolls_back_to_the_old_key_everywhere():
    cluster = FakeCluster()
    keys = FakeKeys()
    answers = iter([{"result": False, "failed": {"n3": {"job step": "srun: error"}}}])

    def verify():
        return next(answers, None) or _verify_from(cluster, keys)()

    report, _ = _rotate(cluster, keys, verify)
    assert report["result"] is False
    assert report["failed"] == {"n3": "job step: srun: error"}
    assert report["rolled_back"]["result"] is True
    assert set(cluster.live.values()) == {OLD}
    assert keys.log == ["begin", "restore"]
    assert "rolled back to" in report["comment"]


def test_failed_swap_rolls_back_and_reports_a_failed_rollback():
    cluster = FakeCluster(fail={("munge.activate_key", "n1"): "munged did not start"})
    report, keys = _rotate(cluster)
    assert report["result"] is False
    assert report["failed"] == {"n1": "munged did not start"}
    # n1 cannot swap back either: the report says the rollback failed and where
    assert report["rolled_back"]["result"] is False
    assert "n1" in report["rolled_back"]["failed"]
    assert "FAILED too" in report["comment"]
    assert keys.current == OLD


def test_a_node_that_does_not_register_gets_slurmd_restarted():
    cluster = FakeCluster(slow_register=["n2"])
    report, _ = _rotate(cluster)
    assert report["result"] is True, report
    assert ("slurm_node.daemon_control", ("n2",), ("slurmd", "restart")) in cluster.calls
