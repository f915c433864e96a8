"""Day-2 runners on the test bed: deploy from bare, status, verify, drain/resume, and
diagnose recognising real faults (each produced for real, then healed).

A fault test registers the smallest repair of its fault with the ``repair`` fixture before
making it; the repair runs after the test whether it passed or not, then the cluster must
be healthy again (a full ``heal`` otherwise), so one failure does not fail the next tests."""

import base64
import os
import signal
import subprocess
import time

import pytest

from salt_ext.lib.util import fsutil
from tests.conftest import TESTBED_NODES, sandbox_bed
from tests.integration.conftest import COMPUTE, PILLAR
from tests.integration.helpers import (
    BusLog,
    cluster_healthy,
    held_job,
    job_info,
    json_output,
    salt_run,
    sinfo_nodes,
    wait_for,
)
from tests.testbed.bed import render_pillar

OPS_PILLAR = render_pillar(**PILLAR, node_target="n*")
FAKETIME = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"


def deploy(cluster, pillar=None, **kwargs):
    if pillar is not None:
        cluster.write_pillar(pillar)
    result, proc = salt_run(cluster, "slurm.deploy", **kwargs)
    return result, proc


def causes(report, node):
    return [c["cause"] for c in report["nodes"].get(node, {}).get("causes", [])]


def diagnose(cluster, **kwargs):
    report, proc = salt_run(cluster, "slurm.diagnose", **kwargs)
    assert "nodes" in report, report
    return report, proc


OPS_BED = {
    "name": os.environ.get("SXT_OPS_BED_NAME", "sxo"),
    "subnet": os.environ.get("SXT_OPS_BED_SUBNET", "10.69.0"),
}


@pytest.fixture(scope="module")
def cluster(request):
    """This module's own bed (master + ctl, n1, n2, n3): its faults and rollouts run in
    the "ops" lane beside the shared bed's modules (tests/conftest.py)."""
    yield from sandbox_bed(request.config, nodes=TESTBED_NODES, **OPS_BED)


@pytest.fixture(scope="module")
def deployed(cluster):
    """The bare bed made a cluster by ``slurm.deploy``, then ``slurm.deploy`` again."""
    first, proc = deploy(cluster, pillar=OPS_PILLAR)
    second, proc2 = deploy(cluster)
    return {"first": (first, proc), "second": (second, proc2)}


def heal(cluster):
    """The full repair: ``slurm.deploy``, then diagnose finds nothing."""
    result, proc = deploy(cluster)
    assert result["result"] is True, (result.get("comment"), result.get("verify"))
    report, _ = diagnose(cluster)
    assert report["result"] is True, report


def apply_node(cluster, *minions):
    """``state.apply slurm.node`` on ``minions``: what restores a node's files, key and
    daemons (the smallest repair of a fault on a node)."""
    rets = cluster.salt(list(minions), "state.apply", ["slurm.node"], tgt_type="list", timeout=300)
    bad = {m: r for m, r in rets.items() if not isinstance(r, dict)} or {
        m: [c["comment"] for c in r.values() if c["result"] is False] for m, r in rets.items()
    }
    assert sorted(rets) == sorted(minions) and not any(bad.values()), bad


def reapply_conf(cluster, pillar=OPS_PILLAR):
    """The master's slurm.conf rendered again from ``pillar`` and the mine, and rolled out:
    the smallest repair of a conf the test changed."""
    cluster.write_pillar(pillar, refresh=False)
    rendered, _ = salt_run(cluster, "slurm.render_conf")
    assert rendered.get("result") is not False, rendered
    applied, _ = salt_run(cluster, "slurm.apply_conf")
    assert applied["result"] is True, applied


@pytest.fixture
def repair(cluster, deployed):
    """``repair(action)``: register the smallest repair of the fault the test is about to
    make (start the one daemon, re-apply one node, re-render the conf). After the test,
    passed or failed, the repairs run (last registered first) and the cluster must be
    healthy again (``cluster_healthy``: slurm.status and sinfo); if it is not, ``heal``
    (a full deploy) repairs it so that the next test starts healthy, and this test errors
    naming what the repair left."""
    actions = []
    yield actions.append
    errors = []
    for action in reversed(actions):
        try:
            action()
        except Exception as exc:  # noqa: BLE001 - reported below, after the full heal
            errors.append(f"repair {getattr(action, '__name__', action)}: {exc!r}"[:2000])
    if not wait_for(lambda: cluster_healthy(cluster), 60):
        errors.append(f"unhealthy after the repair: {salt_run(cluster, 'slurm.status')[0]}")
        heal(cluster)
    assert not errors, errors


def test_deploy_from_bare_verifies_and_again_changes_nothing(cluster, deployed):
    first, proc = deployed["first"]
    assert proc.returncode == 0 and first["result"] is True, (first, proc.stderr[-3000:])
    assert first["verify"]["result"] is True
    assert all(n["changed"] > 0 for n in first["nodes"].values()), first["nodes"]
    assert any("munge key created" in s for s in first["steps"])
    second, proc = deployed["second"]
    assert second["result"] is True
    assert second["controller"]["changed"] == 0
    assert {m: n["changed"] for m, n in second["nodes"].items()} == dict.fromkeys(COMPUTE, 0)
    assert any("change none" in s for s in second["steps"]), second["steps"]
    assert sinfo_nodes(cluster) == dict.fromkeys(COMPUTE, "idle")


def test_progress_goes_to_stderr_and_the_event_bus(cluster, deployed):
    _, proc = deployed["second"]
    assert "[slurm " in proc.stderr and "n2: ok (0 changed)" in proc.stderr
    assert "[slurm " not in proc.stdout
    bus = BusLog(cluster.master_opts())
    try:
        report, proc = salt_run(cluster, "slurm.diagnose")
        assert proc.returncode == 0, report
        # the job's own events: Salt's "new" names the runner, ours carry its progress
        jid = wait_for(
            lambda: next(
                (
                    e["data"]["jid"]
                    for e in bus.snapshot()
                    if e["tag"].endswith("/new") and e["data"].get("fun") == "runner.slurm.diagnose"
                ),
                None,
            ),
            timeout=10,
            interval=0.2,
        )
        assert jid, [e["tag"] for e in bus.snapshot()]
        probing = [m for m in proc.stderr.splitlines() if "probing" in m]
        assert probing, proc.stderr
        # no leaked Salt objects of ours: Salt's own salt-run leaves a Runner and a
        # MasterMinion unclosed for any runner (test.arg too), nothing more
        floor = cluster.cli(["salt-run", "test.arg", "1"]).stderr.count("unclosed")
        assert proc.stderr.count("unclosed") <= floor, proc.stderr

        def progress(tag):
            return [
                e["data"]["message"]
                for e in bus.snapshot()
                if e["tag"] == tag and e["data"].get("jid") == jid
            ]

        assert wait_for(lambda: progress(f"salt/run/{jid}/progress"), timeout=10, interval=0.2)
        assert any("probing" in m for m in progress(f"salt/run/{jid}/progress"))
        assert any("probing" in m for m in progress("salt/slurm/progress"))
    finally:
        bus.stop.set()


def test_status_table_and_json(cluster, deployed):
    table = cluster.cli(["salt-run", "slurm.status"])
    assert table.returncode == 0
    assert "NODE" in table.stdout and "3/3 nodes healthy" in table.stdout, table.stdout
    data, _ = salt_run(cluster, "slurm.status")
    assert data["result"] is True
    rows = {row["node"]: row for row in data["nodes"]}
    assert sorted(rows) == COMPUTE
    for row in rows.values():
        assert row["state"] == "IDLE" and row["conf"] is True and row["key"] is True
        assert row["munged"] is True and row["slurmd"] is True and row["version"] == "22.05.8"


def test_verify_passes_with_a_job_step_on_every_node(cluster, deployed):
    result, proc = salt_run(cluster, "slurm.verify")
    assert proc.returncode == 0 and result["result"] is True, result
    for node in COMPUTE:
        checks = result["nodes"][node]
        assert all(c["ok"] for c in checks.values()), checks
        assert checks["job step"]["evidence"].endswith(f": {node}")


def test_drain_and_resume(cluster, repair):
    repair(lambda: salt_run(cluster, "slurm.resume", nodes="n2,n3"))
    drained, _ = salt_run(cluster, "slurm.drain", nodes="n2", reason="disk swap")
    assert drained["result"] is True
    assert "DRAIN" in drained["nodes"]["n2"]["state"]
    assert sinfo_nodes(cluster)["n2"] in ("drain", "drng")
    reasons = cluster.run("ctl", ["sinfo", "-h", "-R", "-o", "%n %E"]).stdout
    assert "n2 disk swap" in reasons
    no_reason, proc = salt_run(cluster, "slurm.drain", nodes="n3", reason="")
    assert proc.returncode != 0 and "reason" in no_reason["error"]
    resumed, _ = salt_run(cluster, "slurm.resume", nodes="n2")
    assert resumed["result"] is True and resumed["nodes"]["n2"]["state"] == "IDLE"


def test_three_faults_named_then_healed_by_deploy(cluster, repair):
    repair(lambda: apply_node(cluster, *COMPUTE))
    cluster.salt("n1", "slurm_node.daemon_control", ["munge", "stop"])
    cluster.run("n2", ["sh", "-c", "head -c 64 /dev/urandom > /etc/munge/munge.key"], check=True)
    cluster.salt("n2", "slurm_node.restart", ["munge"])
    cluster.run("n3", ["sh", "-c", "echo 'SlurmdTimeout=31' >> /etc/slurm/slurm.conf"], check=True)
    report, proc = diagnose(cluster)
    assert proc.returncode != 0 and report["result"] is False
    assert causes(report, "n1")[0] == "munged not running", report["nodes"]["n1"]
    assert causes(report, "n2")[0] == "munge key mismatch", report["nodes"]["n2"]
    assert causes(report, "n3") == ["slurm.conf differs from the controller's"], report["nodes"][
        "n3"
    ]
    key_evidence = " ".join(report["nodes"]["n2"]["causes"][0]["evidence"])
    assert "munge.key on n2: sha256:" in key_evidence
    verify, proc = salt_run(cluster, "slurm.verify")
    assert proc.returncode != 0 and sorted(verify["failed"]) == COMPUTE
    assert "munge key hash" in verify["failed"]["n2"]
    heal(cluster)


def test_slurmd_stopped(cluster, repair):
    repair(lambda: apply_node(cluster, "n1"))
    cluster.salt("n1", "slurm_node.daemon_control", ["slurmd", "stop"])
    report, _ = diagnose(cluster)
    assert causes(report, "n1") == ["slurmd not running"], report["nodes"]
    # an unhealthy cluster is a failure in the admin's text table too, not only in JSON
    table = cluster.cli(["salt-run", "slurm.status"])
    assert table.returncode == 1 and "n1" in table.stdout, (table.stdout, table.stderr)


def test_minion_unreachable(cluster, repair):
    def start_minion():
        cluster.start_minion("n3")
        cluster.wait_for_minions(["n3"])

    repair(start_minion)
    cluster.stop_minion("n3")
    report, _ = diagnose(cluster, timeout=10)
    assert causes(report, "n3") == ["minion unreachable"], report["nodes"]


def test_slurmd_cannot_reach_the_controller(cluster, repair):
    ctl_ip = cluster.nodes["ctl"].ip
    repair(lambda: cluster.run("n2", ["ip", "route", "del", "blackhole", f"{ctl_ip}/32"]))
    cluster.run("n2", ["ip", "route", "add", "blackhole", f"{ctl_ip}/32"], check=True)
    report, _ = diagnose(cluster)
    assert causes(report, "n2") == ["slurmd cannot reach the controller"], report["nodes"]


def test_clock_skew(cluster, repair):
    # munged on n1 runs ten minutes behind (libfaketime): its credentials are expired on ctl
    repair(lambda: cluster.salt("n1", "slurm_node.restart", ["munge"]))
    cluster.salt("n1", "slurm_node.daemon_control", ["munge", "stop"])
    started = cluster.run(
        "n1",
        [
            "runuser",
            "-u",
            "munge",
            "--",
            "env",
            f"LD_PRELOAD={FAKETIME}",
            "FAKETIME=-600",
            "munged",
        ],
    )
    assert started.returncode == 0, started.stderr
    report, _ = diagnose(cluster)
    assert "clock skew" in causes(report, "n1"), report["nodes"]
    skew = next(c for c in report["nodes"]["n1"]["causes"] if c["cause"] == "clock skew")
    assert "credential" in " ".join(skew["evidence"]).lower()


def test_hostname_differs_from_nodename(cluster, repair):
    repair(lambda: cluster.salt("n3", "slurm_node.restart", ["slurmd"]))
    repair(lambda: cluster.run("n3", ["hostname", "n3"], check=True))
    cluster.run("n3", ["hostname", "n3x"], check=True)
    cluster.salt("n3", "slurm_node.restart", ["slurmd"])
    report, _ = diagnose(cluster)
    assert "hostname differs from NodeName" in causes(report, "n3"), report["nodes"]


def test_node_missing_from_conf(cluster, repair):
    repair(lambda: reapply_conf(cluster))
    repair(lambda: cluster.salt("n3", "mine.send", ["slurm_node.hardware"]))
    cluster.salt("n3", "mine.delete", ["slurm_node.hardware"])
    rendered, _ = salt_run(cluster, "slurm.render_conf")
    assert rendered["nodes"] == 2, rendered
    assert salt_run(cluster, "slurm.apply_conf")[0]["result"] is True
    cluster.salt("n3", "mine.send", ["slurm_node.hardware"])  # as slurm.node would
    report, _ = diagnose(cluster)
    assert "node missing from slurm.conf" in causes(report, "n3"), report["nodes"]


def test_hardware_below_conf(cluster, repair):
    repair(lambda: salt_run(cluster, "slurm.resume", nodes="n3"))
    repair(lambda: reapply_conf(cluster))  # rendered from the mine again, then rolled out
    path = cluster.cluster_files_dir() / "slurm.conf"
    text = path.read_text()
    line = next(ln for ln in text.splitlines() if ln.startswith("NodeName=n[1-3]"))
    rest = line.split(" ", 1)[1]
    memory = rest.split("RealMemory=")[1].split()[0]
    too_big = rest.replace(f"RealMemory={memory}", "RealMemory=999999")
    path.write_text(text.replace(line, f"NodeName=n[1-2] {rest}\nNodeName=n3 {too_big}"))
    # n3 never registers: apply_conf waits for it as long as it is told to
    applied, proc = salt_run(cluster, "slurm.apply_conf", timeout=20)
    assert applied["result"] is False and "n3" in applied["failed"], applied
    report, _ = diagnose(cluster)
    assert "hardware below slurm.conf" in causes(report, "n3"), report["nodes"]
    low = next(
        c for c in report["nodes"]["n3"]["causes"] if c["cause"] == "hardware below slurm.conf"
    )
    assert "Low RealMemory" in " ".join(low["evidence"])


# ---------------------------------------------------------------------- slurm.cmd
def cmd(cluster, *args, **kwargs):
    return cluster.salt("ctl", "slurm.cmd", list(args), **kwargs)["ctl"]


def test_slurm_cmd_runs_whitelisted_commands_and_parses_json(cluster, deployed):
    sinfo = cmd(cluster, "sinfo", "-N", "-h", "-o", "%N %t")
    assert sinfo["retcode"] == 0 and sinfo["stdout"].split() == [
        "n1",
        "idle",
        "n2",
        "idle",
        "n3",
        "idle",
    ]
    squeue = cmd(cluster, "squeue", "--json")
    assert isinstance(squeue["data"], dict) and "jobs" in squeue["data"], squeue
    node = cmd(cluster, "scontrol", "show", "node", "n2")
    assert "NodeName=n2" in node["stdout"]


def test_slurm_cmd_runs_jobs_as_the_user_and_refuses_root(cluster, deployed):
    step = cmd(cluster, "srun", "-N1", "-w", "n3", "id", "-un", runas="sxuser")
    assert step["retcode"] == 0 and step["stdout"].strip() == "sxuser", step
    refused = cmd(cluster, "srun", "-N1", "-w", "n3", "id")
    assert isinstance(refused, str) and "root" in refused and "allow_root" in refused, refused


@pytest.mark.parametrize(
    "args",
    [
        ["sinfo;id"],
        ["bash", "-c", "id"],
        ["scontrol", "shutdown"],
        ["scontrol", "rec"],
        ["sinfo", "-o", "$(id)"],
        ["sbatch", "--uid=0", "--wrap", "id"],
        ["sbatch", "--ui=0", "--wrap", "id"],
        ["scontrol", "update", "NodeName=n1", "State=DOWN", "Reason=x"],
        ["scontrol", "show", "hostlist", "/etc/munge/munge.key"],
        ["sinfo", "`id`"],
        ["sinfo", "-o", "%N\nid"],
        ["sinfo", "\x00"],
        ["squeue", "-u", "root;id"],
        ["squeue", "--format", "|id"],
        ["sinfo", "--help;id"],
        ["sstat", "-j", "1&&id"],
        ["sinfo", "-o", "%N", "--", "-x"],
        ["rm", "-rf", "/"],
        ["sacctmgr", "add", "user", "x"],
        ["strigger", "--set"],
        ["scontrol", "reconfigure"],
        ["scontrol", "takeover"],
        ["scontrol", "delete", "PartitionName=debug"],
        ["scontrol", "create", "Reservation=x"],
        ["scontrol", "update", "PartitionName=debug", "State=DOWN"],
        ["scontrol", "show", "node", "../../etc/shadow"],
        ["srun", "--uid=0", "id"],
        ["srun", "--gid=0", "id"],
        ["srun", "--prolog=/tmp/x", "id"],
        ["srun", "--export=LD_PRELOAD=/tmp/x.so", "id"],
        ["sbatch", "--output=/etc/passwd", "--wrap", "id"],
        ["sbatch", "--chdir=/root", "--wrap", "id"],
        # issue #11: patterns, hostlist sizes, format widths, mass actions with runas
        ["sbatch", "-J", "../../../etc/cron.d/x", "-o", "%x", "--wrap=id"],
        ["srun", "-J", "..", "-i", "%x/x", "cat"],
        ["sbatch", "-o", "%x", "--wrap=id"],
        ["scontrol", "show", "hostnames", "a[18446744073709551615]b[1]"],
        ["scontrol", "show", "hostnames", "a[0-65535]b[0-9999]"],
        ["sinfo", "-o", "%10000000N"],
        ["squeue", "-o", "%10000000A"],
        ["scancel", "--user=root,sxuser"],
        ["scontrol", "update", "NodeName=ALL", "State=DRAIN", "Reason=x"],
    ],
    ids=lambda args: " ".join(args).encode("unicode_escape").decode(),
)
def test_slurm_cmd_rejects_hostile_input_through_real_salt(cluster, deployed, args):
    refused = cmd(cluster, *args, runas="sxuser")
    # SaltInvocationError comes back as Salt's "ERROR executing ..." with our message
    assert isinstance(refused, str) and refused.startswith("ERROR executing 'slurm.cmd': "), refused
    reasons = ("not allowed", "refused", "metacharacter", "unknown", "non-printable")
    reasons += ("absolute", "not accepted", "climbs out", "more than", "above", "give -J")
    assert any(w in refused for w in reasons), refused
    assert cluster.run("ctl", ["scontrol", "ping"]).stdout.strip().endswith("is UP")
    assert sinfo_nodes(cluster) == dict.fromkeys(COMPUTE, "idle")


def test_huge_format_width_crashes_sinfo_itself(cluster, deployed):
    # what pillar slurm:cmd:max_format_width guards against: a width of 10^7 segfaults sinfo
    crashed = cluster.run("ctl", ["sinfo", "-o", "%10000000N"])
    assert crashed.returncode in (-11, 139), (crashed.returncode, crashed.stderr[-500:])


def test_slurm_cmd_admin_without_runas_may_drain_every_node(cluster, deployed):
    drained = cmd(cluster, "scontrol", "update", "NodeName=ALL", "State=DRAIN", "Reason=gw all")
    try:
        assert isinstance(drained, dict) and drained["retcode"] == 0, drained
        assert set(sinfo_nodes(cluster).values()) <= {"drain", "drng"}, sinfo_nodes(cluster)
    finally:
        cmd(cluster, "scontrol", "update", "NodeName=ALL", "State=RESUME")
    assert wait_for(lambda: sinfo_nodes(cluster) == dict.fromkeys(COMPUTE, "idle"), 60)


def test_remove_node_while_a_job_runs_then_add_it_back(cluster, repair):
    def add_back():
        if "n3" not in sinfo_nodes(cluster):
            added, _ = salt_run(cluster, "slurm.add_node", minion="n3")
            assert added["result"] is True, added

    repair(add_back)
    job_id, release = held_job(cluster, "-w", "n3")
    repair(release)
    # a job that asks for n3 by name and waits: it could never start after the removal
    later = cluster.run(
        "ctl",
        ["sbatch", "--parsable", "-w", "n3", "--begin=now+1hour", "-o", "/dev/null", "--chdir=/tmp"]
        + ["--wrap", "true"],
    )
    assert later.returncode == 0, later.stderr
    repair(lambda: cluster.run("ctl", ["scancel", later.stdout.strip()]))
    proc = salt_run_popen(cluster, "slurm.remove_node", "node=n3")
    try:
        read_until(proc, "waiting for its jobs")
        # n3 drained, the job runs on and the runner waits for it
        waiting = ("JobState=RUNNING" in job_info(cluster, job_id), proc.poll())
    finally:
        release()
        out, err = proc.communicate(timeout=600)
    assert waiting == (True, None), (waiting, job_info(cluster, job_id), err[-2000:])
    cluster.run("ctl", ["scancel", later.stdout.strip()])
    removed = json_output(out, err[-2000:])
    assert proc.returncode == 0 and removed["result"] is True, (removed, err[-2000:])
    assert removed["pending_jobs"] == [later.stdout.strip()], removed
    assert "cannot start" in removed["comment"]
    shown = job_info(cluster, job_id)
    assert "JobState=COMPLETED" in shown and "ExitCode=0:0" in shown, shown
    assert sinfo_nodes(cluster) == {"n1": "idle", "n2": "idle"}
    conf = (cluster.cluster_files_dir() / "slurm.conf").read_text()
    assert [ln.split()[0] for ln in conf.splitlines() if ln.startswith("NodeName=")] == [
        "NodeName=n[1-2]"
    ]
    assert cluster.salt("n3", "slurm_node.status")["n3"]["daemons"].get("slurmd") is False
    added, proc = salt_run(cluster, "slurm.add_node", minion="n3")
    assert added["result"] is True, (added.get("comment"), added.get("verify"))
    assert sinfo_nodes(cluster) == dict.fromkeys(COMPUTE, "idle")


# ---------------------------------------------------------------------- munge key rotation
def key_hashes(cluster):
    hashes = cluster.salt("*", "munge.key_hash")
    assert sorted(hashes) == ["ctl", *COMPUTE], hashes
    return hashes


def master_key(cluster):
    return cluster.cluster_files_dir() / "munge.key"


def test_rotate_munge_key_refuses_a_cluster_that_disagrees(cluster, deployed):
    key_file = cluster.nodes["n3"].private_dir("/etc/munge") / "munge.key"
    saved = key_file.read_bytes()
    before = master_key(cluster).read_bytes()
    try:
        # a different key file on n3 (munged still runs on the old one): not a state to rotate from
        key_file.write_bytes(os.urandom(64))
        result, proc = salt_run(cluster, "slurm.rotate_munge_key")
    finally:
        key_file.write_bytes(saved)
    assert proc.returncode != 0 and result["result"] is False
    assert list(result["failed"]) == ["n3"], result
    assert "differs from the master's" in result["failed"]["n3"]
    assert "nothing was changed" in result["comment"]
    assert master_key(cluster).read_bytes() == before
    assert not (cluster.cluster_files_dir() / "munge.key.previous").exists()


def test_rotate_munge_key_failed_stage_leaves_every_machine_on_the_old_key(cluster, deployed):
    before = key_hashes(cluster)
    assert len(set(before.values())) == 1
    blocker = cluster.nodes["n2"].private_dir("/etc/munge") / ".staged.munge.key"
    blocker.mkdir()  # the staged key cannot be written on n2
    try:
        result, proc = salt_run(cluster, "slurm.rotate_munge_key")
    finally:
        blocker.rmdir()
    assert proc.returncode != 0 and result["result"] is False, result
    assert list(result["failed"]) == ["n2"], result
    assert "no machine swapped keys" in result["comment"]
    assert key_hashes(cluster) == before
    assert f"sha256:{fsutil.sha256_file(master_key(cluster))}" == before["ctl"]
    assert not (cluster.cluster_files_dir() / "munge.key.previous").exists()
    staged = [cluster.nodes[n].private_dir("/etc/munge") / ".staged.munge.key" for n in COMPUTE]
    assert not any(path.exists() for path in staged)


def test_rotate_munge_key_failed_swap_rolls_back_everywhere(cluster, deployed):
    before = key_hashes(cluster)
    live = cluster.nodes["n3"].private_dir("/etc/munge") / "munge.key"
    # n3 stages the new key but cannot swap it in: the others have already swapped
    subprocess.run(["chattr", "+i", str(live)], check=True)
    try:
        result, proc = salt_run(cluster, "slurm.rotate_munge_key")
    finally:
        subprocess.run(["chattr", "-i", str(live)], check=True)
    assert proc.returncode != 0 and result["result"] is False, result
    assert list(result["failed"]) == ["n3"], result
    assert result["rolled_back"]["result"] is True, result["rolled_back"]
    assert "rolled back to" in result["comment"]
    assert key_hashes(cluster) == before
    assert f"sha256:{fsutil.sha256_file(master_key(cluster))}" == before["ctl"]
    assert not (cluster.cluster_files_dir() / "munge.key.previous").exists()
    verified, proc = salt_run(cluster, "slurm.verify")
    assert proc.returncode == 0 and verified["result"] is True, verified


def test_rotate_munge_key_while_a_job_runs(cluster, deployed):
    before = key_hashes(cluster)
    old_key = master_key(cluster).read_bytes()
    job_id, release = held_job(cluster, "-N3", "--mem=100M", steps=True)
    try:
        rotate_while_the_job_runs(cluster, job_id, release, before, old_key)
    finally:
        release()


def rotate_while_the_job_runs(cluster, job_id, release, before, old_key):
    def show():
        return job_info(cluster, job_id)

    slurmd_pids = {n: cluster.run(n, ["cat", "/run/slurmd.pid"]).stdout for n in COMPUTE}
    # a node drained for maintenance neither blocks nor fails the rotation, and stays drained
    salt_run(cluster, "slurm.drain", nodes="n1", reason="maintenance")
    result, proc = salt_run(cluster, "slurm.rotate_munge_key")
    assert proc.returncode == 0 and result["result"] is True, (result, proc.stderr[-3000:])
    assert "JobState=RUNNING" in show(), (show(), proc.stderr[-3000:])
    assert "n1 maintenance" in cluster.run("ctl", ["sinfo", "-h", "-R", "-o", "%n %E"]).stdout
    resumed, _ = salt_run(cluster, "slurm.resume", nodes="n1")
    assert resumed["result"] is True
    after = key_hashes(cluster)
    new_hash = f"sha256:{fsutil.sha256_file(master_key(cluster))}"
    assert new_hash != before["ctl"] and set(after.values()) == {new_hash}
    assert result["old_hash"] == before["ctl"] and result["new_hash"] == new_hash
    assert not (cluster.cluster_files_dir() / "munge.key.previous").exists()
    # slurmd kept running through the swap (only munged restarted)
    assert {n: cluster.run(n, ["cat", "/run/slurmd.pid"]).stdout for n in COMPUTE} == slurmd_pids
    assert "JobState=RUNNING" in show(), show()
    release()
    assert wait_for(lambda: "JobState=COMPLETED" in show(), 60), show()
    assert "ExitCode=0:0" in show()
    verified, proc = salt_run(cluster, "slurm.verify")
    assert proc.returncode == 0 and verified["result"] is True, verified
    # the key itself appears nowhere: not in the output, not in the master log
    new_key = master_key(cluster).read_bytes()
    printed = proc.stdout + proc.stderr + cluster.master_log.read_text(errors="replace")
    for key in (old_key, new_key):
        assert key.hex() not in printed and base64.b64encode(key).decode() not in printed


# ---------------------------------------------------------------------- crash-safe operations
def salt_run_popen(cluster, *argv):
    """``salt-run`` in its own process group, stderr (the progress lines) piped."""
    return subprocess.Popen(
        [cluster.bin("salt-run"), "-c", str(cluster.master_conf_dir), "--out=json", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )


def read_until(proc, text, limit=300):
    """Progress lines of ``proc`` up to and including the first one containing ``text``."""
    lines = []
    for line in proc.stderr:
        lines.append(line)
        if text in line or len(lines) > limit:
            return lines
    raise AssertionError(f"{text!r} never printed:\n{''.join(lines)}")


def slurmd_running(cluster):
    ret = cluster.salt(COMPUTE, "slurm_node.daemon_running", ["slurmd"], tgt_type="list")
    return {n: ret.get(n) for n in COMPUTE}


@pytest.mark.parametrize(
    ("journal", "kill_at"),
    [("kept", "stopping slurmd"), ("lost", "stopping slurmd"), ("kept", "slurmd start: n2")],
    ids=["after-push-kept", "after-push-lost", "mid-batch-kept"],
)
def test_a_killed_rollout_is_finished_by_the_next_deploy(cluster, repair, journal, kill_at):
    """The issue's fault: a new feature, the runner killed after the push and before
    slurmctld restarted (files everywhere say "applied"; slurmctld runs the old config),
    or mid-batch (slurmctld restarted, n1 started, n2 and n3 still stopped). With the
    journal the next deploy finishes the rollout; without it (``lost``) the daemon start
    times against the file times still show slurmctld is stale. (Every other kill point:
    tests/unit/test_ops.py, against a fake cluster.)"""
    feature = f"cs{journal}{len(kill_at)}"
    repair(lambda: reapply_conf(cluster))
    job_id, release = held_job(cluster, "-w", "n1", "--mem=100M")
    repair(release)
    cluster.write_pillar(
        render_pillar(
            **PILLAR, node_target="n*", node_groups={"bed": {"nodes": "n*", "features": [feature]}}
        )
    )
    rendered, _ = salt_run(cluster, "slurm.render_conf")
    assert rendered["class"] == "restart_all", rendered
    proc = salt_run_popen(cluster, "slurm.apply_conf", "batch_size=1")
    try:
        read_until(proc, kill_at)
    finally:
        os.killpg(proc.pid, 9)
        proc.wait()
    hashes = cluster.salt(["ctl", *COMPUTE], "slurm_node.status", tgt_type="list")
    assert len({s["slurm_conf_hash"] for s in hashes.values()}) == 1, hashes
    if journal == "lost":
        (cluster.master_dir / "cache" / "slurm" / "journal.json").unlink()
    result, proc = deploy(cluster)
    assert proc.returncode == 0 and result["result"] is True, (result, proc.stderr[-3000:])
    assert result["rollout"]["class"] == "restart_all", result["rollout"]
    reasons = " ".join(result["rollout"]["reasons"])
    if journal == "kept":
        assert "finishing its rollout (restart_all)" in proc.stderr, proc.stderr[-3000:]
    else:
        assert "slurmctld on ctl started before its config files" in reasons, reasons
    assert slurmd_running(cluster) == dict.fromkeys(COMPUTE, True)
    srun = cluster.run("ctl", ["srun", "-C", feature, "-N3", "--mem=32M", "hostname"])
    assert srun.returncode == 0, (srun.stderr, cluster.tail_logs(["ctl", "n1"]))
    assert sorted(srun.stdout.split()) == COMPUTE
    # the job that ran before the interrupted rollout survives it and the repair
    assert "JobState=RUNNING" in job_info(cluster, job_id), job_info(cluster, job_id)
    release()
    assert wait_for(lambda: "JobState=COMPLETED" in job_info(cluster, job_id), 60), job_info(
        cluster, job_id
    )
    assert "ExitCode=0:0" in job_info(cluster, job_id)
    if kill_at == "slurmd start: n2":
        # the finished rollout is not rolled out again (once: the journal says the same
        # for every kill point, tests/unit/test_ops.py)
        again, proc = deploy(cluster)
        assert again["result"] is True and "rollout" not in again, again


FILL_CONF_DIR = (
    "mkdir -p /run/sxt-conf-save && cp -a /etc/slurm/. /run/sxt-conf-save/ && "
    "mount -t tmpfs -o size=256k tmpfs /etc/slurm && cp -a /run/sxt-conf-save/. /etc/slurm/ && "
    "(dd if=/dev/zero of=/etc/slurm/filler bs=4k 2>/dev/null || true)"
)


def conf_hashes(cluster):
    statuses = cluster.salt(["ctl", *COMPUTE], "slurm_node.status", tgt_type="list")
    return {m: s["slurm_conf_hash"] for m, s in statuses.items()}


def test_a_full_disk_on_one_node_changes_no_machine_and_names_it(cluster, deployed):
    """Issue 12 item 6: with /etc/slurm full on n2, the others used to get the new file
    and no reconfigure ran. Now every machine stages first; n2 cannot, so nobody changes."""
    before = conf_hashes(cluster)
    filled = cluster.run("n2", ["sh", "-c", FILL_CONF_DIR])
    assert filled.returncode == 0, filled.stderr
    cluster.write_pillar(
        render_pillar(
            **PILLAR, node_target="n*", node_groups={"bed": {"nodes": "n*", "features": ["full"]}}
        )
    )
    try:
        rendered, _ = salt_run(cluster, "slurm.render_conf")
        assert rendered["written"] is True, rendered
        result, proc = salt_run(cluster, "slurm.apply_conf")
        assert proc.returncode == 1, (result, proc.stderr[-2000:])
        assert (
            "n2: cannot stage the conf files in /etc/slurm: No space left on device"
            in (result["comment"])
        ), result
        assert "Traceback" not in proc.stdout + proc.stderr
        assert conf_hashes(cluster) == before  # nothing mixed: every machine on the old file
        assert slurmd_running(cluster) == dict.fromkeys(COMPUTE, True)
        leftovers = cluster.salt(["ctl", *COMPUTE], "file.find", ["/etc/slurm"], tgt_type="list")
        assert not [f for files in leftovers.values() for f in files if "saltext" in f], leftovers
    finally:
        cluster.run("n2", ["umount", "/etc/slurm"])
        cluster.write_pillar(OPS_PILLAR)
    rendered, _ = salt_run(cluster, "slurm.render_conf")
    result, proc = salt_run(cluster, "slurm.apply_conf")
    assert proc.returncode == 0 and result["result"] is True, result
    assert conf_hashes(cluster) == before


def test_a_second_operation_is_refused_while_one_runs_and_names_it(cluster, deployed):
    first = salt_run_popen(cluster, "slurm.deploy")
    try:
        read_until(first, "munge key")
        second, proc = salt_run(cluster, "slurm.apply_conf")
        assert proc.returncode == 1, (second, proc.stderr)
        assert "slurm.deploy is running" in second["error"], second
        assert f"pid {first.pid}" in second["error"], second
        out, err = first.communicate(timeout=300)
        assert first.returncode == 0, err[-3000:]
    finally:
        if first.poll() is None:
            os.killpg(first.pid, 9)
            first.wait()
    # the holder is gone: the lock is free again
    again, proc = salt_run(cluster, "slurm.apply_conf")
    assert proc.returncode == 0 and again["result"] is True, again


@pytest.mark.parametrize(
    "argv, named",
    [
        (["slurm.drain", "n1"], "reason"),
        (["slurm.drain", "n[1-2", "reason=x"], "nodes"),
        (["slurm.drain", "n9", "reason=x"], "nodes: n9 not in"),
        (["slurm.diagnose", "nodes=n[1-2"], "nodes"),
        (["slurm.apply_conf", "batch_size=0"], "batch_size"),
        (["slurm.deploy", "timeout=soon"], "timeout"),
        (["slurm.remove_node"], "node"),
    ],
)
@pytest.mark.parametrize("out", [[], ["--out=json"]])
def test_bad_arguments_exit_1_with_one_line_naming_the_argument(
    cluster, deployed, argv, named, out
):
    proc = cluster.cli(["salt-run", *out, *argv])
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert named in proc.stdout, proc.stdout
    assert "Traceback" not in proc.stdout + proc.stderr
    assert len(proc.stdout.splitlines()) <= 8, proc.stdout


# --- hung daemons and busy nodes (issue 12 items 4, 5)
def daemon_pid(cluster, node, pidfile):
    return int(cluster.run(node, ["cat", pidfile], check=True).stdout.split()[0])


def proc_state(pid):
    """The one-letter state of ``pid`` (``T``: stopped), None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


def cont(pid):
    try:
        os.kill(pid, signal.SIGCONT)
    except ProcessLookupError:
        pass


def all_healthy(cluster):
    data, proc = salt_run(cluster, "slurm.status")
    return proc.returncode == 0 and data["result"] is True


def test_stopped_slurmd_is_hung_in_status_diagnose_verify_and_restart_replaces_it(
    cluster, deployed
):
    pid = daemon_pid(cluster, "n2", "/run/slurmd.pid")
    os.kill(pid, signal.SIGSTOP)
    try:
        table = cluster.cli(["salt-run", "slurm.status"])
        assert table.returncode == 1, (table.stdout, table.stderr[-2000:])
        # a failed status is {"result": False, "report": table}: the table comes indented
        row = next(ln for ln in table.stdout.splitlines() if ln.strip().startswith("n2 "))
        assert "HUNG" in row.split(), table.stdout
        assert f"n2: slurmd hung: pid {pid} state T (stopped)" in table.stdout, table.stdout
        report, proc = diagnose(cluster, nodes="n2")
        assert proc.returncode == 1 and causes(report, "n2")[0] == "slurmd hung", report
        hung = report["nodes"]["n2"]["causes"][0]
        assert f"pid {pid} state T (stopped)" in " ".join(hung["evidence"]), hung
        assert f"kill -CONT {pid}" in hung["fix"] and "slurm_node.restart slurmd" in hung["fix"]
        assert "minion unreachable" not in causes(report, "n2")
        assert not any("resume" in c["fix"] for c in report["nodes"]["n2"]["causes"]), report
        verify, proc = salt_run(cluster, "slurm.verify", timeout=20)
        assert proc.returncode == 1 and list(verify["failed"]) == ["n2"], verify
        assert "slurmd hung" in verify["failed"]["n2"]["daemons"], verify["failed"]
        # a restart of the stopped slurmd: the old process exits, a new one runs and answers
        restarted = cluster.salt("n2", "slurm_node.restart", ["slurmd"])["n2"]
        assert isinstance(restarted, dict), restarted
        new = restarted["daemons"]["slurmd"]
        assert new["old_pid"] == pid and new["pid"] not in (None, pid), restarted
        assert new["state"] == "running", restarted
        assert proc_state(pid) in (None, "Z"), proc_state(pid)  # gone (or not yet reaped)
        assert proc_state(new["pid"]) in ("S", "R"), proc_state(new["pid"])
        assert daemon_pid(cluster, "n2", "/run/slurmd.pid") == new["pid"]
    finally:
        cont(pid)
    assert wait_for(lambda: all_healthy(cluster), 60)


def test_stopped_munged_is_hung_not_an_unreachable_minion_and_cont_heals_it(cluster, deployed):
    pid = daemon_pid(cluster, "n3", "/run/munge/munged.pid")
    os.kill(pid, signal.SIGSTOP)
    try:
        status = cluster.salt("n3", "slurm_node.status", timeout=30)["n3"]
        assert isinstance(status, dict), status
        assert status["health"]["munge"]["state"] == "hung", status["health"]
        started = time.monotonic()
        report, proc = diagnose(cluster, nodes="n3")
        took = {"diagnose": time.monotonic() - started}
        assert proc.returncode == 1, report
        assert causes(report, "n3")[0] == "munged hung", report["nodes"]["n3"]
        assert "minion unreachable" not in causes(report, "n3")
        hung = report["nodes"]["n3"]["causes"][0]
        assert f"pid {pid} state T (stopped)" in " ".join(hung["evidence"]), hung
        assert f"kill -CONT {pid}" in hung["fix"], hung
        started = time.monotonic()
        verify, proc = salt_run(cluster, "slurm.verify")
        took["verify"] = time.monotonic() - started
        assert proc.returncode == 1 and list(verify["failed"]) == ["n3"], verify
        assert "munged hung" in verify["failed"]["n3"]["daemons"], verify["failed"]
        # nobody waits for the hung munged's own timeouts (10 s per munge call)
        print(f"with munged hung on n3: {took}")
        assert max(took.values()) < 10, took
    finally:
        cont(pid)
    assert wait_for(lambda: all_healthy(cluster), 60)
    assert daemon_pid(cluster, "n3", "/run/munge/munged.pid") == pid  # healed by CONT alone


def test_a_node_slurm_drained_itself_fails_verify_an_admin_drain_does_not(cluster, deployed):
    # slurmctld sets its own reasons as SlurmUser: the same record as a real "Kill task failed"
    drain = ["scontrol", "update", "NodeName=n1", "State=DRAIN", "Reason=Kill task failed"]
    cluster.run("ctl", ["runuser", "-u", "slurm", "--", *drain], check=True)
    try:
        verify, proc = salt_run(cluster, "slurm.verify")
        assert proc.returncode == 1 and list(verify["failed"]) == ["n1"], verify
        assert "drained by Slurm: Kill task failed" in verify["failed"]["n1"]["job step"]
        report, _ = diagnose(cluster, nodes="n1")
        assert causes(report, "n1") == ["drained by Slurm: Kill task failed"], report
        salt_run(cluster, "slurm.drain", nodes="n1", reason="admin work")
        verify, proc = salt_run(cluster, "slurm.verify")
        assert proc.returncode == 0 and verify["result"] is True, verify
        report, _ = diagnose(cluster, nodes="n1")
        assert causes(report, "n1") == ["drained by an admin: admin work"], report
    finally:
        salt_run(cluster, "slurm.resume", nodes="n1")
    assert wait_for(lambda: sinfo_nodes(cluster) == dict.fromkeys(COMPUTE, "idle"), 30)


def test_verify_and_key_rotation_pass_on_a_cluster_busy_with_one_job(cluster, deployed):
    job_id, release = held_job(cluster, "-N3", "--exclusive", steps=True)
    try:
        assert set(sinfo_nodes(cluster).values()) == {"alloc"}, sinfo_nodes(cluster)
        verify, proc = salt_run(cluster, "slurm.verify")
        assert proc.returncode == 0 and verify["result"] is True, verify
        for node in COMPUTE:
            step = verify["nodes"][node]["job step"]
            assert step["ok"] and step.get("busy") and job_id in step["evidence"], step
        # verify did not wait for the job: it is still running (held until released)
        assert "JobState=RUNNING" in job_info(cluster, job_id)
        rotated, proc = salt_run(cluster, "slurm.rotate_munge_key")
        assert proc.returncode == 0 and rotated["result"] is True, (rotated, proc.stderr[-3000:])
        assert "JobState=RUNNING" in job_info(cluster, job_id)
        release()
        assert wait_for(lambda: "JobState=COMPLETED" in job_info(cluster, job_id), 60)
        assert "ExitCode=0:0" in job_info(cluster, job_id)
    finally:
        cluster.run("ctl", ["scancel", job_id])
    assert wait_for(lambda: sinfo_nodes(cluster) == dict.fromkeys(COMPUTE, "idle"), 30)
