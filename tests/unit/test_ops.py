"""The operations layer (salt_ext.lib.ops) against a fake cluster: deploy from bare, a
hardware change rolled out in Slurm's order, the master killed at every call of a
deploy / apply_conf (the next run converges), two operations at once, an unreachable
minion skipped after one ping round, timeouts on an injected clock."""

import os
import threading

import pytest

from salt_ext.lib.conf import model
from salt_ext.lib.ops import OpError, conf, deploy, health, journal, nodes
from tests.unit.fakecluster import KILLED, NODES, PILLAR, FakeCluster


@pytest.fixture
def fake(tmp_path):
    return FakeCluster(tmp_path)


def deployed(cluster):
    summary = deploy.deploy(cluster.context())
    assert summary["result"] is True, summary
    assert cluster.converged() == (True, [])
    return summary


def upgrade_hardware(cluster, cpus=4):
    """The nodes got more CPUs: the next render changes every NodeName line."""
    with cluster.edit() as state:
        for name in NODES:
            state["machines"][name]["hardware"]["CPUs"] = cpus
            state["machines"][name]["hardware"]["CoresPerSocket"] = cpus
            state["mine"][name] = state["machines"][name]["hardware"]  # mine.update ran


def killed_at(cluster, call, operation):
    """Run ``operation(ctx)`` in a child that dies (as under SIGKILL) at port call
    ``call``; True when it died there, False when it finished first."""
    pid = os.fork()
    if pid == 0:  # the child: the master process that gets killed
        cluster.kill_at = call
        try:
            operation(cluster.context())
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) == KILLED


def daemon_actions(cluster):
    return [entry for entry in cluster.log() if entry[0] == "slurm_node.daemon_control"]


def test_deploy_from_bare_converges_and_again_restarts_nothing(fake):
    cluster = fake
    deployed(cluster)
    before = len(cluster.log())
    again = deploy.deploy(cluster.context())
    assert again["result"] is True, again
    after = cluster.log()[before:]
    assert not [e for e in after if e[0] == "slurm_node.daemon_control"]
    assert all(n["changed"] == 0 for n in again["nodes"].values()), again["nodes"]


def test_a_hardware_change_is_rolled_out_stop_restart_start(fake):
    cluster = fake
    deployed(cluster)
    upgrade_hardware(cluster)
    before = len(cluster.log())
    summary = deploy.deploy(cluster.context())
    assert summary["result"] is True, summary
    assert summary["rollout"]["class"] == "restart_all"
    actions = [(e[1], e[2]) for e in cluster.log()[before:] if e[0] == "slurm_node.daemon_control"]
    assert actions[0] == (list(NODES), ["slurmd", "stop"])
    assert actions[1] == (["ctl"], ["slurmctld", "restart"])
    assert cluster.converged() == (True, [])


def prepared(path, render=False):
    """A deployed fake cluster whose nodes just got more CPUs (rendered, with ``render``)."""
    cluster = FakeCluster(path)
    deployed(cluster)
    upgrade_hardware(cluster)
    if render:
        conf.render(cluster.context())
    return cluster


def calls_of(operation, path, render=False):
    """How many port calls an uninterrupted ``operation`` makes on a prepared cluster."""
    cluster = prepared(path, render)
    start = cluster.calls
    assert operation(cluster.context())["result"] is True
    return cluster.calls - start


@pytest.mark.parametrize(
    ("operation", "again", "render"),
    [
        (deploy.deploy, deploy.deploy, False),
        (deploy.deploy, None, False),  # rendered, then apply_conf
        (conf.apply, conf.apply, True),
        (conf.apply, deploy.deploy, True),
    ],
    ids=["deploy-then-deploy", "deploy-then-apply_conf", "apply-then-apply", "apply-then-deploy"],
)
def test_the_master_killed_at_any_call_is_finished_by_the_next_run(
    tmp_path, operation, again, render
):
    """A restart_all change killed at call k, for every k: the next run converges (every
    daemon runs the new conf, slurmd everywhere), and says it finished the dead run."""
    total = calls_of(operation, tmp_path / "reference", render)
    assert total > 10
    for call in range(1, total + 1):
        cluster = prepared(tmp_path / f"k{call}", render)
        assert killed_at(cluster, call, operation), call
        if again is None:
            conf.render(cluster.context())  # a no-op when the dead run had rendered
            report = conf.apply(cluster.context())
        else:
            report = again(cluster.context())
        assert report["result"] is True, (call, report.get("comment"), report)
        assert cluster.converged() == (True, []), (call, cluster.converged())
        assert not cluster.context().journal.interrupted(), call


def test_a_second_operation_is_refused_naming_the_first(fake):
    cluster = fake
    deployed(cluster)
    holding, release = threading.Event(), threading.Event()

    def hold():
        with cluster.context().journal.operation("apply_conf"):
            holding.set()
            release.wait(10)

    thread = threading.Thread(target=hold)
    thread.start()
    try:
        assert holding.wait(10)
        with pytest.raises(journal.LockBusy, match=r"slurm\.apply_conf is running \(pid"):
            deploy.deploy(cluster.context())
        with pytest.raises(journal.LockBusy):
            nodes.remove(cluster.context(), "n1")
    finally:
        release.set()
        thread.join()
    assert deploy.deploy(cluster.context())["result"] is True


def test_one_unreachable_minion_is_named_after_one_ping_and_never_called_again(fake):
    cluster = fake
    deployed(cluster)
    with cluster.edit() as state:
        state["machines"]["n2"]["up"] = False
    progress = []
    for operation in (health.status, health.verify, health.diagnose):
        before = len(cluster.log())
        result = operation(cluster.context(progress=progress.append))
        assert result["result"] is False
        later = cluster.log()[before:]
        assert later and not [e for e in later if "n2" in e[1]], later
    assert any("n2" in line and "unreachable" in line for line in progress)
    status = health.status(cluster.context())
    row = next(r for r in status["nodes"] if r["node"] == "n2")
    assert row["reachable"] is False
    report = health.diagnose(cluster.context())
    assert [c["cause"] for c in report["nodes"]["n2"]["causes"]] == ["minion unreachable"]
    verified = health.verify(cluster.context())
    assert list(verified["failed"]) == ["n2"]


def test_deploy_names_a_silent_node_of_the_cluster_and_fails(fake):
    cluster = fake
    deployed(cluster)
    with cluster.edit() as state:
        state["machines"]["n3"]["up"] = False
    summary = deploy.deploy(cluster.context())
    assert summary["result"] is False
    assert summary["unreachable"] == ["n3"]
    assert "n3" in summary["comment"]


def test_remove_node_gives_up_after_its_timeout_on_the_injected_clock(fake):
    cluster = fake
    deployed(cluster)
    with cluster.edit() as state:
        state["jobs"] = {"n2": ["42"]}
    ctx = cluster.context()
    started = ctx.clock.monotonic()
    result = nodes.remove(ctx, "n2", timeout=600)
    assert result["result"] is False and "still runs jobs 42 after 600 s" in result["comment"]
    assert 600 <= ctx.clock.monotonic() - started <= 610  # no real second passed
    assert cluster._load()["admin"]["n2"][0] == "DRAIN"
    assert "n2" in model.conf_nodes(cluster.master_files()["slurm.conf"])  # nothing else


def test_remove_node_without_jobs_renders_it_out_and_rolls_out(fake):
    cluster = fake
    deployed(cluster)
    result = nodes.remove(cluster.context(), "n2")
    assert result["result"] is True, result
    assert model.conf_nodes(cluster.master_files()["slurm.conf"]) == ["n1", "n3"]
    assert cluster._load()["machines"]["n2"]["daemons"] == {"munge": False, "slurmd": False}


def test_bad_arguments_are_one_line_errors_naming_them(fake):
    cluster = fake
    deployed(cluster)
    with pytest.raises(OpError, match=r"^reason: required"):
        nodes.set_state(cluster.context(), ["n1"], "DRAIN", " ")
    with pytest.raises(OpError, match=r"^nodes: n9 not in the master's slurm.conf"):
        nodes.set_state(cluster.context(), ["n9"], "DRAIN", "x")
    with pytest.raises(OpError, match=r"^nodes: n9 neither in slurm.conf nor in the mine"):
        health.diagnose(cluster.context(), ["n9"])
    with pytest.raises(OpError, match=r"^node: n9 is not a NodeName"):
        nodes.remove(cluster.context(), "n9")


def test_a_full_disk_on_one_node_leaves_every_machine_on_the_old_files(tmp_path):
    cluster = prepared(tmp_path, render=True)
    old = cluster._load()["machines"]["ctl"]["files"]
    with cluster.edit() as state:
        state["machines"]["n2"]["disk_full"] = True
    report = conf.apply(cluster.context())
    assert report["result"] is False
    assert (
        "n2: cannot stage the conf files in /etc/slurm: No space left on device"
        in (report["comment"])
    )
    machines = cluster._load()["machines"]
    assert all(m["files"] == old for m in machines.values())  # nothing mixed
    assert all(all(m["daemons"].values()) for m in machines.values())  # nothing stopped
    assert not any(m.get("staged") for m in machines.values())
    with cluster.edit() as state:
        state["machines"]["n2"]["disk_full"] = False
    assert conf.apply(cluster.context())["result"] is True
    assert cluster.converged() == (True, [])


def test_a_node_left_out_of_node_target_is_no_unreachable_node(fake, monkeypatch):
    """The cluster shrinks by the pillar: n3 is no longer matched by slurm:node_target;
    deploy renders it out and succeeds (it is not a silent node of the cluster)."""
    cluster = fake
    deployed(cluster)
    monkeypatch.setitem(PILLAR, "node_target", "n[12]")
    summary = deploy.deploy(cluster.context())
    assert summary["result"] is True, summary
    assert "unreachable" not in summary
    assert model.conf_nodes(cluster.master_files()["slurm.conf"]) == ["n1", "n2"]


def test_deploy_installs_the_extension_on_minions_that_have_only_salt_minion(fake):
    """Freshly installed machines (salt-minion only) become a cluster in one deploy: the
    extension is published and installed with slurm.bootstrap on those only."""
    with fake.edit() as state:
        for minion in ("ctl", "n2"):
            state["machines"][minion]["extension"] = False
    summary = deploy.deploy(fake.context())
    assert summary["result"] is True, summary
    log = fake._load()["log"]  # noqa: SLF001
    assert [entry[1] for entry in log if entry[0] == "state slurm.bootstrap"] == [["ctl", "n2"]]
    assert any("installing 0.0.0 from the master" in s for s in summary["steps"])
    again = deploy.deploy(fake.context())
    assert again["result"] is True
    log = fake._load()["log"]  # noqa: SLF001
    assert sum(1 for entry in log if entry[0] == "state slurm.bootstrap") == 1


def test_a_node_the_extension_cannot_reach_fails_the_others_deploy(fake):
    with fake.edit() as state:
        state["machines"]["n2"]["extension"] = False
    fake.publish_extension = lambda: {"version": "0.0.0"}  # a wheel nobody can install
    summary = deploy.deploy(fake.context())
    assert summary["result"] is False
    assert summary["nodes"]["n2"]["prepare"] is False, summary["nodes"]["n2"]
    assert summary["nodes"]["n1"]["state"] is True
    assert "n2" in summary["comment"], summary["comment"]


def test_a_minion_error_is_reported_as_one_readable_line():
    from salt_ext.lib.ops import ports  # noqa: PLC0415

    assert ports.minion_error("ERROR: slurmctld did not start") == "slurmctld did not start"
    traceback = (
        "The minion function caused an exception: Traceback (most recent call last):\n"
        '  File "/usr/lib/python3/dist-packages/salt/minion.py", line 3199, in _thread_return\n'
        "    return_data = minion_instance._execute_job_function(\n"
        "OSError: [Errno 30] Read-only file system: '/etc/slurm/.jwt_hs256.key.x'\n"
    )
    assert ports.minion_error(traceback) == (
        "exception on the minion: OSError: [Errno 30] Read-only file system: "
        "'/etc/slurm/.jwt_hs256.key.x'"
    )
    assert ports.minion_error(None) == "None"


def test_unfinished_sees_a_dead_holder_without_taking_the_lock(tmp_path):
    jrnl = journal.Journal(str(tmp_path))
    assert jrnl.unfinished() == []
    with jrnl.operation("apply_conf") as entry:
        jrnl.record(entry, "pushing files", dirty=True)
        assert jrnl.unfinished() == []  # held by this live process: not dead
    pid = os.fork()
    if pid == 0:  # a run that dies holding the lock
        with jrnl.operation("rotate_jwt_key") as entry:
            jrnl.record(entry, "writing a new JWT key", dirty=True)
            os._exit(9)
    os.waitpid(pid, 0)
    dead = jrnl.unfinished()
    assert [e["operation"] for e in dead] == ["rotate_jwt_key"]
    assert dead[0]["steps"][-1]["step"] == "writing a new JWT key"
    assert jrnl.interrupted() == []  # not marked yet: that is the next operation's job
