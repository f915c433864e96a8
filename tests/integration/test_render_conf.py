"""slurm.conf from the nodes' real hardware, and change rollout, on the test bed.

Starts from the cluster ``slurm.deploy`` built (``provisioned``), previews and rolls out a
node feature, then makes the changes an admin makes: a partition change while a job runs
(reconfigure), a node definition change (ordered restart), a broken base file (nothing
written), rollback.
"""

import pytest

from salt_ext.lib.conf import model
from tests.integration.conftest import BED_PILLAR, COMPUTE
from tests.integration.helpers import (
    changed,
    failed,
    held_job,
    job_info,
    running_job,
    salt_run,
    sinfo_nodes,
    wait_for,
)

# the deployed bed's pillar plus a node feature: a node definition change to preview
RENDER_PILLAR = {**BED_PILLAR, "node_groups": {"bed": {"nodes": "n*", "features": ["rendered"]}}}
BED_CONF = RENDER_PILLAR["conf"]
ALL = ["ctl", *COMPUTE]


def set_pillar(cluster, slurm):
    """Runners and state runs compile pillar themselves; no minion refresh needed."""
    cluster.write_pillar(slurm, refresh=False)


def master_file(cluster, name="slurm.conf"):
    path = cluster.cluster_files_dir() / name
    return path.read_text() if path.exists() else None


def conf_hashes(cluster):
    status = cluster.salt(ALL, "slurm_node.status", tgt_type="list")
    return {m: s["slurm_conf_hash"] for m, s in status.items()}


def pids(cluster):
    pid_of = {}
    for name in ALL:
        daemon = "slurmctld" if name == "ctl" else "slurmd"
        proc = cluster.run(name, ["cat", f"/run/{daemon}.pid"])
        pid_of[name] = proc.stdout.strip()
    return pid_of


def all_idle(cluster):
    return wait_for(
        lambda: set(sinfo_nodes(cluster).values()) == {"idle"} and sinfo_nodes(cluster), 90
    )


@pytest.fixture(scope="module")
def rendered(cluster, provisioned):
    """The deployed bed's conf with a node feature added: previewed, written, rolled out."""
    set_pillar(cluster, RENDER_PILLAR)
    preview, proc = salt_run(cluster, "slurm.render_conf", test=True)
    assert proc.returncode == 0, proc.stderr
    result, proc = salt_run(cluster, "slurm.render_conf")
    assert result["written"] is True, result
    applied, proc = salt_run(cluster, "slurm.apply_conf")
    assert applied["result"] is True, applied
    return {"preview": preview, "result": result, "applied": applied}


def test_render_uses_mine_hardware_and_nodes_come_up_idle(cluster, rendered):
    hardware = cluster.salt("n1", "slurm_node.hardware")["n1"]
    assert hardware["source"] == "slurmd -C"
    conf = master_file(cluster)
    node_lines = [line for line in conf.splitlines() if line.startswith("NodeName=")]
    assert len(node_lines) == 1, node_lines  # identical sandboxes: one hostlist line
    assert node_lines[0].startswith(f"NodeName=n[1-3] CPUs={hardware['CPUs']} ")
    memory = int(node_lines[0].split("RealMemory=")[1].split()[0])
    assert 0 < memory < hardware["RealMemory"]  # the reserve keeps nodes out of "Low RealMemory"
    assert rendered["result"]["node_lines"] == 1
    assert sinfo_nodes(cluster) == {n: "idle" for n in COMPUTE}
    hashes = conf_hashes(cluster)
    assert len(set(hashes.values())) == 1 and None not in hashes.values(), hashes
    proc = cluster.run("ctl", ["srun", "-N3", "hostname"], timeout=60)
    assert proc.returncode == 0 and sorted(proc.stdout.split()) == COMPUTE, proc.stderr


def test_a_job_without_mem_leaves_memory_for_a_second_one(cluster, rendered):
    conf = model.parse(master_file(cluster))
    node = conf.records("NodeName")[0]
    per_cpu = int(node.get("RealMemory")) // int(node.get("CPUs"))
    assert conf.get("DefMemPerCPU") == str(per_cpu)
    job_id = running_job(cluster, "-N3", wrap="sleep 60")
    try:
        # without DefMemPerCPU the first job holds every node's memory and this one waits
        proc = cluster.run("ctl", ["srun", "-N3", "--immediate=20", "hostname"], timeout=60)
        assert proc.returncode == 0 and sorted(proc.stdout.split()) == COMPUTE, proc.stderr
    finally:
        cluster.run("ctl", ["scancel", job_id])
    assert wait_for(lambda: "JobState=RUNNING" not in job_info(cluster, job_id), 30)


def test_preview_wrote_nothing_and_showed_the_change(cluster, rendered):
    preview = rendered["preview"]
    assert preview["written"] is False
    assert preview["class"] == "restart_all"  # a node definition changed
    assert "+NodeName=n[1-3]" in preview["diff"] and "rendered" in preview["diff"]
    assert rendered["applied"]["class"] == "restart_all"


def test_render_again_is_a_no_op(cluster, rendered):
    before = master_file(cluster)
    result, proc = salt_run(cluster, "slurm.render_conf")
    assert proc.returncode == 0
    assert result["written"] is False and result["class"] == "none" and result["diff"] == ""
    assert master_file(cluster) == before


def test_partition_change_during_a_job_is_a_reconfigure(cluster, rendered):
    before = pids(cluster)
    job_id, release = held_job(cluster, "-w", "n1")
    try:
        reconfigure_while_the_job_runs(cluster, before, job_id)
    finally:
        release()
    finished = wait_for(lambda: "JobState=COMPLETED" in job_info(cluster, job_id), 60)
    assert finished, job_info(cluster, job_id)
    assert "ExitCode=0:0" in job_info(cluster, job_id)


def reconfigure_while_the_job_runs(cluster, before, job_id):
    set_pillar(
        cluster,
        {
            **RENDER_PILLAR,
            "partitions": [
                {"name": "debug", "nodes": "ALL", "default": True, "options": {"MaxTime": 60}}
            ],
        },
    )
    result, _ = salt_run(cluster, "slurm.render_conf")
    assert result["class"] == "reconfigure", result
    applied, proc = salt_run(cluster, "slurm.apply_conf")
    assert applied["result"] is True and applied["class"] == "reconfigure", applied
    assert pids(cluster) == before  # no daemon restarted
    partition = cluster.run("ctl", ["scontrol", "show", "partition", "debug"]).stdout
    assert "MaxTime=01:00:00" in partition
    # the job ran through the reconfigure
    assert "JobState=RUNNING" in job_info(cluster, job_id), job_info(cluster, job_id)


def test_node_definition_change_restarts_in_order_and_converges(cluster, rendered):
    before = pids(cluster)
    set_pillar(
        cluster, {**RENDER_PILLAR, "node_groups": {"bed": {"nodes": "n*", "features": ["sandbox"]}}}
    )
    result, _ = salt_run(cluster, "slurm.render_conf")
    assert result["class"] == "restart_all", result
    assert any("NodeName" in reason for reason in result["reasons"]), result["reasons"]
    applied, proc = salt_run(cluster, "slurm.apply_conf", batch_size=2)
    assert applied["result"] is True, applied
    assert proc.returncode == 0
    steps = applied["steps"]
    stop = next(i for i, s in enumerate(steps) if s.startswith("stopping slurmd"))
    ctld = next(i for i, s in enumerate(steps) if s.startswith("restarting slurmctld"))
    starts = [i for i, s in enumerate(steps) if s.startswith("slurmd start")]
    assert stop < ctld < starts[0] and len(starts) == 2, steps  # 3 nodes in batches of 2
    after = pids(cluster)
    assert all(after[n] != before[n] for n in ALL), (before, after)
    assert all_idle(cluster) == {n: "idle" for n in COMPUTE}
    features = cluster.run("ctl", ["sinfo", "-h", "-N", "-o", "%N %f"]).stdout
    assert all(line.endswith("sandbox") for line in features.split("\n") if line), features
    hashes = conf_hashes(cluster)
    assert len(set(hashes.values())) == 1, hashes


BROKEN_BASES = [
    ("SchedulerType=sched/backfill\nSCHEDULERTYPE=sched/builtin\n", "line 2: duplicate key"),
    ("SchedulerType=sched/backfill\nthis line is garbage\n", "line 2"),
    ("SchedulerTyp=sched/backfill\n", "did you mean 'SchedulerType'"),
]


def test_broken_base_file_is_refused_and_nothing_changes(cluster, rendered):
    (cluster.file_root / "site").mkdir(exist_ok=True)
    before_files = {n: master_file(cluster, n) for n in ("slurm.conf", "gres.conf", "cgroup.conf")}
    before_hashes, before_pids = conf_hashes(cluster), pids(cluster)
    history = salt_run(cluster, "slurm.conf_history")[0]
    set_pillar(cluster, {**RENDER_PILLAR, "conf": {**BED_CONF, "base": "salt://site/base.conf"}})
    try:
        for base, message in BROKEN_BASES:
            (cluster.file_root / "site" / "base.conf").write_text(base)
            result, proc = salt_run(cluster, "slurm.render_conf")
            assert proc.returncode != 0, (base, result)
            assert result["result"] is False, (base, result)
            assert "nothing written" in result["error"] and message in result["error"], result
            assert "salt://site/base.conf" in result["error"]
    finally:
        set_pillar(cluster, RENDER_PILLAR)
    assert {n: master_file(cluster, n) for n in before_files} == before_files
    assert salt_run(cluster, "slurm.conf_history")[0] == history
    assert conf_hashes(cluster) == before_hashes and pids(cluster) == before_pids


def test_rollback_restores_the_previous_version_on_every_node(cluster, rendered):
    set_pillar(cluster, RENDER_PILLAR)
    salt_run(cluster, "slurm.render_conf")
    applied, _ = salt_run(cluster, "slurm.apply_conf")
    assert applied["result"] is True, applied
    good = master_file(cluster)
    set_pillar(
        cluster,
        {
            **RENDER_PILLAR,
            "conf": {**BED_CONF, "overrides": {**BED_CONF["overrides"], "SlurmdTimeout": 45}},
        },
    )
    result, _ = salt_run(cluster, "slurm.render_conf")
    assert result["written"] is True and result["class"] == "reconfigure", result
    assert salt_run(cluster, "slurm.apply_conf")[0]["result"] is True
    assert master_file(cluster) != good
    history = salt_run(cluster, "slurm.conf_history")[0]
    assert 1 <= len(history) <= 5
    rolled, proc = salt_run(cluster, "slurm.rollback_conf")
    assert rolled["result"] is True, rolled
    assert master_file(cluster) == good
    hashes = conf_hashes(cluster)
    assert len(set(hashes.values())) == 1, hashes
    assert "SlurmdTimeout=30" in cluster.run("n2", ["cat", "/etc/slurm/slurm.conf"]).stdout
    set_pillar(cluster, RENDER_PILLAR)


def test_rollout_stops_at_a_node_that_cannot_register_and_names_it(cluster, rendered):
    set_pillar(cluster, RENDER_PILLAR)
    salt_run(cluster, "slurm.render_conf")
    assert salt_run(cluster, "slurm.apply_conf")[0]["result"] is True
    # a real fault: n3's munged gets another key, so its slurmd is refused by slurmctld
    cluster.run("n3", ["sh", "-c", "head -c 64 /dev/urandom > /etc/munge/munge.key"], check=True)
    cluster.salt("n3", "slurm_node.restart", ["munge"])
    try:
        set_pillar(cluster, {**RENDER_PILLAR, "node_groups": {"bed": {"nodes": "n*", "weight": 5}}})
        assert salt_run(cluster, "slurm.render_conf")[0]["class"] == "restart_all"
        report, proc = salt_run(cluster, "slurm.apply_conf", batch_size=2, timeout=40)
        assert proc.returncode != 0
        assert report["result"] is False
        assert list(report["failed"]) == ["n3"], report
        assert "munge key mismatch" in report["failed"]["n3"], report["failed"]
        assert "slurm.rollback_conf" in report["comment"]
        assert sinfo_nodes(cluster)["n1"] == "idle"  # the batch before n3 came back
    finally:
        set_pillar(cluster, RENDER_PILLAR)
        healed = cluster.salt("n3", "state.apply", ["slurm.node"], timeout=300)
    assert not [r for r in healed["n3"].values() if r["result"] is False], healed
    rolled, proc = salt_run(cluster, "slurm.rollback_conf")
    assert rolled["result"] is True, rolled
    assert "Weight=5" not in master_file(cluster)
    assert all_idle(cluster) == {n: "idle" for n in COMPUTE}


def test_pillar_moving_the_slurmd_spool_makes_the_state_create_it(cluster, rendered):
    """The state tree creates the directories the served slurm.conf names (the plan reads
    them from it), not the ones it used to hard-code."""
    # inside each node's private /var/spool/slurmd; %n: slurmd's own NodeName
    moved = "/var/spool/slurmd/moved-%n"
    conf = {**BED_CONF, "overrides": {**BED_CONF["overrides"], "SlurmdSpoolDir": moved}}
    set_pillar(cluster, {**RENDER_PILLAR, "conf": conf})
    try:
        result, _ = salt_run(cluster, "slurm.render_conf")
        assert result["written"] is True, result
        assert f"SlurmdSpoolDir={moved}" in master_file(cluster)
        ctl = cluster.salt("ctl", "state.apply", ["slurm.controller"], timeout=300)["ctl"]
        assert not failed(ctl), failed(ctl)
        nodes = cluster.salt(COMPUTE, "state.apply", ["slurm.node"], tgt_type="list", timeout=300)
        for name in COMPUTE:
            spool = f"/var/spool/slurmd/moved-{name}"
            assert not failed(nodes[name]), (name, failed(nodes[name]))
            assert f"slurm-dir-{spool}" in changed(nodes[name]), changed(nodes[name])
            proc = cluster.run(name, ["stat", "-c", "%U:%G %a", spool])
            assert proc.stdout.strip() == "root:root 755", (name, proc.stdout, proc.stderr)
            assert cluster.salt(name, "slurm_node.daemon_running", ["slurmd"])[name] is True
        assert all_idle(cluster) == {n: "idle" for n in COMPUTE}
        proc = cluster.run("ctl", ["srun", "-N3", "hostname"], timeout=60)
        assert sorted(proc.stdout.split()) == COMPUTE, proc.stderr
    finally:
        set_pillar(cluster, RENDER_PILLAR)
        salt_run(cluster, "slurm.render_conf")
        restored = cluster.salt("ctl", "state.apply", ["slurm.controller"], timeout=300)
        restored.update(
            cluster.salt(COMPUTE, "state.apply", ["slurm.node"], tgt_type="list", timeout=300)
        )
    assert {name: failed(ret) for name, ret in restored.items()} == {n: {} for n in ALL}
    assert "moved" not in master_file(cluster)
    assert all_idle(cluster) == {n: "idle" for n in COMPUTE}
