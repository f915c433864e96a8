"""Rollout ordering and failure handling against a fake cluster (no Salt, no daemons)."""

import pytest

from salt_ext.lib.ops import rollout
from salt_ext.lib.util import fsutil
from tests.unit.fakeports import PingViaCall

OLD = """\
ClusterName=hpc
SlurmctldHost=ctl
NodeName=n[1-3] CPUs=2 RealMemory=1000
PartitionName=main Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""
PARTITION_CHANGE = OLD.replace("MaxTime=INFINITE", "MaxTime=60")
NODE_CHANGE = OLD.replace("CPUs=2", "CPUs=4")
NODES = {"n1": "n1", "n2": "n2", "n3": "n3"}


class FakeCluster(PingViaCall):
    """Answers like the minions would; records (fun, targets, arg) in order."""

    def __init__(self, controller_files, down=(), not_registering=(), unreachable=()):
        self.controller_files = controller_files
        self.files = {}
        self.down = set(down)
        self.not_registering = set(not_registering)
        self.unreachable = set(unreachable)
        self.calls = []

    def call(self, targets, fun, arg=(), timeout=120):
        self.calls.append((fun, tuple(targets), tuple(arg)))
        out = {}
        for target in targets:
            if target in self.unreachable:
                out[target] = {"ok": False, "ret": None, "error": "no return (minion down?)"}
                continue
            out[target] = {"ok": True, "ret": self._answer(target, fun, arg), "error": None}
        return out

    def _answer(self, target, fun, arg):
        if fun == "slurm_node.conf_files":
            return self.controller_files
        if fun == "slurm_node.stage_conf":
            self.staged = getattr(self, "staged", set()) | {target}
            return {"staged": ["slurm.conf"], "hashes": {}}
        if fun == "slurm_node.discard_staged_conf":
            self.staged = getattr(self, "staged", set()) - {target}
            return []
        if fun == "slurm_node.commit_conf":
            changed = self.files.get(target) != self.new_text
            self.files[target] = self.new_text
            return {"changed": ["slurm.conf"] if changed else [], "hashes": {}}
        if fun == "slurm_node.status":
            text = self.files.get(target, self.controller_files["slurm.conf"])
            return {"slurm_conf_hash": "sha256:" + fsutil.sha256_bytes(text)}
        if fun == "slurm_controller.wait_registered":
            if target in self.not_registering:
                return {
                    "ok": False,
                    "cause": "munge key mismatch",
                    "evidence": ["slurmd: Zero Bytes"],
                }
            return {"ok": True}
        if fun == "slurm_controller.up":
            return {"ok": True, "output": "Slurmctld(primary) at ctl is UP"}
        return True


def run(cluster, new_text, test=False, batch_size=2, nodes=None):
    cluster.new_text = new_text
    for minion in ["ctl", *NODES]:
        cluster.files.setdefault(minion, cluster.controller_files["slurm.conf"])
    files = {"slurm.conf": new_text, "gres.conf": None, "cgroup.conf": None}
    return rollout.Rollout(cluster, "ctl", nodes or NODES, files, batch_size=batch_size).run(test)


def funs(cluster):
    return [(fun, targets, arg) for fun, targets, arg in cluster.calls if fun != "test.ping"]


def controller_files(text):
    return {"slurm.conf": text, "gres.conf": None, "cgroup.conf": None}


def test_partition_change_is_reconfigure_and_restarts_nothing():
    cluster = FakeCluster(controller_files(OLD))
    report = run(cluster, PARTITION_CHANGE)
    assert report["result"] is True, report
    assert report["class"] == "reconfigure"
    assert "MaxTime=60" in report["diff"]
    assert ("slurm_controller.reconfigure", ("ctl",), ()) in funs(cluster)
    assert not [c for c in cluster.calls if c[0] == "slurm_node.daemon_control"]


def test_node_change_stops_slurmd_then_restarts_slurmctld_then_starts_in_batches():
    cluster = FakeCluster(controller_files(OLD))
    report = run(cluster, NODE_CHANGE, batch_size=2)
    assert report["result"] is True, report
    assert report["class"] == "restart_all"
    control = [(t, a) for f, t, a in cluster.calls if f == "slurm_node.daemon_control"]
    assert control == [
        (("n1", "n2", "n3"), ("slurmd", "stop")),
        (("ctl",), ("slurmctld", "restart")),
        (("n1", "n2"), ("slurmd", "start")),
        (("n3",), ("slurmd", "start")),
    ]
    # files reach every machine before the first daemon is touched
    order = [f for f, _, _ in cluster.calls]
    assert order.index("slurm_node.commit_conf") < order.index("slurm_node.daemon_control")
    assert all(text == NODE_CHANGE for text in cluster.files.values())


def test_test_mode_reports_class_and_diff_and_changes_nothing():
    cluster = FakeCluster(controller_files(OLD))
    report = run(cluster, NODE_CHANGE, test=True)
    assert report["result"] is None
    assert report["class"] == "restart_all"
    assert {f for f, _, _ in cluster.calls} == {
        "test.ping",
        "slurm_node.conf_files",
        "slurm_node.status",
    }


def test_unreachable_node_stops_before_any_change():
    cluster = FakeCluster(controller_files(OLD), unreachable={"n2"})
    report = run(cluster, NODE_CHANGE)
    assert report["result"] is False
    assert report["failed"] == {"n2": "no answer to test.ping (minion down?)"}
    assert "nothing changed" in report["comment"]
    assert {f for f, _, _ in cluster.calls} == {"test.ping"}


def test_a_batch_that_does_not_register_stops_the_rollout_and_names_node_and_cause():
    cluster = FakeCluster(controller_files(OLD), not_registering={"n1"})
    report = run(cluster, NODE_CHANGE, batch_size=2)
    assert report["result"] is False
    assert list(report["failed"]) == ["n1"]
    assert "munge key mismatch" in report["failed"]["n1"]
    assert "slurm.rollback_conf" in report["comment"]
    started = [
        t for f, t, a in cluster.calls if f == "slurm_node.daemon_control" and a[1] == "start"
    ]
    # n3's batch never started as a batch; the failure path starts what the run stopped
    assert started == [("n1", "n2"), ("n3",)]
    assert report["restarted_after_failure"] == ["n3"]
    assert "started again" in report["comment"]


def test_identical_conf_everywhere_is_class_none_and_does_nothing():
    cluster = FakeCluster(controller_files(OLD))
    report = run(cluster, OLD)
    assert report["result"] is True
    assert report["class"] == "none"
    assert not [
        c
        for c in cluster.calls
        if c[0] in ("slurm_node.daemon_control", "slurm_controller.reconfigure")
    ]


def test_drift_on_a_node_only_is_fixed_by_reconfigure():
    cluster = FakeCluster(controller_files(OLD))
    cluster.files["n2"] = "ClusterName=stale\n"
    report = run(cluster, OLD)
    assert report["result"] is True
    assert report["class"] == "reconfigure"
    assert any("n2" in reason for reason in report["reasons"])


@pytest.mark.parametrize(
    "size, expected", [(2, [[1, 2], [3]]), (10, [[1, 2, 3]]), (0, [[1], [2], [3]])]
)
def test_batches(size, expected):
    assert rollout.batches([1, 2, 3], size) == expected


def test_slurmctld_only_change_restarts_slurmctld_then_reconfigures():
    cluster = FakeCluster(controller_files(OLD))
    report = run(
        cluster, OLD.replace("SlurmctldHost=ctl\n", "SlurmctldHost=ctl\nMaxJobCount=50000\n")
    )
    assert report["result"] is True and report["class"] == "restart_slurmctld", report
    acts = [
        (f, a)
        for f, _, a in funs(cluster)
        if f in ("slurm_node.daemon_control", "slurm_controller.reconfigure")
    ]
    assert acts == [
        ("slurm_node.daemon_control", ("slurmctld", "restart")),
        ("slurm_controller.reconfigure", ()),
    ]


def test_slurmd_only_change_reconfigures_then_restarts_slurmd_in_batches():
    cluster = FakeCluster(controller_files(OLD))
    report = run(
        cluster,
        OLD.replace(
            "SlurmctldHost=ctl\n", "SlurmctldHost=ctl\nSlurmdParameters=config_overrides\n"
        ),
    )
    assert report["result"] is True and report["class"] == "restart_slurmd", report
    acts = [
        (f, t, a)
        for f, t, a in funs(cluster)
        if f in ("slurm_node.daemon_control", "slurm_controller.reconfigure")
    ]
    assert acts == [
        ("slurm_controller.reconfigure", ("ctl",), ()),
        ("slurm_node.daemon_control", ("n1", "n2"), ("slurmd", "restart")),
        ("slurm_node.daemon_control", ("n3",), ("slurmd", "restart")),
    ]


class Tracker:
    """The journal as the rollout sees it: every record in order."""

    def __init__(self):
        self.records = []
        self.applied = None

    def record(self, step=None, **data):
        self.records.append((step, data))

    def set_applied(self, files):
        self.applied = files


class StaleCluster(FakeCluster):
    """Daemons report whether they started before their files were written."""

    def __init__(self, *args, stale=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.stale = set(stale)

    def _answer(self, target, fun, arg):
        answer = super()._answer(target, fun, arg)
        if fun == "slurm_node.status":
            daemon = "slurmctld" if target == "ctl" else "slurmd"
            answer["loaded"] = {daemon: {"stale": target in self.stale}}
        return answer


def test_interrupted_restart_all_is_rolled_forward_although_every_file_is_current():
    # the run that died had pushed NODE_CHANGE everywhere: files say "none"
    cluster = FakeCluster(controller_files(NODE_CHANGE))
    for minion in ["ctl", *NODES]:
        cluster.files[minion] = NODE_CHANGE
    cluster.new_text = NODE_CHANGE
    files = {"slurm.conf": NODE_CHANGE, "gres.conf": None, "cgroup.conf": None}
    report = rollout.Rollout(
        cluster, "ctl", NODES, files, floor=("restart_all", ["slurm.deploy died at step x"])
    ).run()
    assert report["result"] is True, report
    assert report["class"] == "restart_all"
    assert "slurm.deploy died at step x" in report["reasons"]
    control = [(t, a) for f, t, a in cluster.calls if f == "slurm_node.daemon_control"]
    assert control[0] == (("n1", "n2", "n3"), ("slurmd", "stop"))
    assert (("ctl",), ("slurmctld", "restart")) in control


def test_a_controller_that_started_before_its_file_was_written_is_restarted():
    cluster = StaleCluster(controller_files(OLD), stale={"ctl"})
    report = run(cluster, OLD)
    assert report["result"] is True, report
    assert report["class"] == "restart_all"
    assert any("slurmctld on ctl started before" in r for r in report["reasons"])


def test_stale_slurmd_alone_restarts_slurmd_only():
    cluster = StaleCluster(controller_files(OLD), stale={"n2"})
    report = run(cluster, OLD)
    assert report["class"] == "restart_slurmd", report
    assert not [a for f, _, a in cluster.calls if a[:1] == ("slurmctld",)]


def test_a_stale_daemon_is_current_when_a_converged_rollout_of_its_file_is_recorded():
    cluster = StaleCluster(controller_files(OLD), stale={"ctl", "n1"})
    cluster.new_text = OLD
    cluster.files = {minion: OLD for minion in ["ctl", *NODES]}
    files = {"slurm.conf": OLD, "gres.conf": None, "cgroup.conf": None}
    applied = {"slurm.conf": "sha256:" + fsutil.sha256_bytes(OLD)}
    report = rollout.Rollout(cluster, "ctl", NODES, files, applied_files=applied).run()
    assert report["class"] == "none", report


def test_journal_says_class_and_stopped_nodes_before_acting_and_applied_at_the_end():
    cluster = FakeCluster(controller_files(OLD))
    cluster.new_text = NODE_CHANGE
    tracker = Tracker()
    files = {"slurm.conf": NODE_CHANGE, "gres.conf": None, "cgroup.conf": None}
    report = rollout.Rollout(cluster, "ctl", NODES, files, tracker=tracker).run()
    assert report["result"] is True
    pushed = next(d for s, d in tracker.records if s and s.startswith("push the files"))
    assert pushed["dirty"] is True and pushed["rollout"]["class"] == "restart_all"
    stopping = next(d for s, d in tracker.records if s and s.startswith("stopping slurmd"))
    assert stopping["rollout"]["stopped"] == ["n1", "n2", "n3"]
    # the last record after the starts has nothing left stopped
    assert tracker.records[-1][1]["rollout"]["stopped"] == []
    assert tracker.applied == {
        "slurm.conf": "sha256:" + fsutil.sha256_bytes(NODE_CHANGE),
        "gres.conf": None,
        "cgroup.conf": None,
    }


def test_a_failed_controller_restart_starts_every_stopped_slurmd_again():
    class CtlFails(FakeCluster):
        def call(self, targets, fun, arg=(), timeout=120):
            if fun == "slurm_node.daemon_control" and tuple(arg) == ("slurmctld", "restart"):
                self.calls.append((fun, tuple(targets), tuple(arg)))
                return {t: {"ok": False, "ret": None, "error": "slurmctld died"} for t in targets}
            return super().call(targets, fun, arg, timeout)

    cluster = CtlFails(controller_files(OLD))
    tracker = Tracker()
    cluster.new_text = NODE_CHANGE
    files = {"slurm.conf": NODE_CHANGE, "gres.conf": None, "cgroup.conf": None}
    report = rollout.Rollout(cluster, "ctl", NODES, files, tracker=tracker).run()
    assert report["result"] is False
    control = [(t, a) for f, t, a in cluster.calls if f == "slurm_node.daemon_control"]
    assert control[-1] == (("n1", "n2", "n3"), ("slurmd", "start"))
    assert report["restarted_after_failure"] == ["n1", "n2", "n3"]
    assert tracker.records[-1][1]["rollout"]["stopped"] == []
    assert tracker.applied is None


def test_a_slurmd_that_cannot_start_again_is_named():
    class NoStart(FakeCluster):
        def call(self, targets, fun, arg=(), timeout=120):
            if fun == "slurm_node.daemon_control" and tuple(arg) == ("slurmd", "start"):
                self.calls.append((fun, tuple(targets), tuple(arg)))
                return {t: {"ok": t != "n2", "ret": True, "error": "disk full"} for t in targets}
            return super().call(targets, fun, arg, timeout)

    cluster = NoStart(controller_files(OLD))
    report = run(cluster, NODE_CHANGE, batch_size=3)
    assert report["result"] is False
    assert report["not_restarted"] == {"n2": "disk full"}
    assert "could NOT be started again on n2" in report["comment"]
