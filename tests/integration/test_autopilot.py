"""The autopilot on the test bed: real faults, and nobody runs a command after injecting them.

The module has its own bed (master + ctl, n1, n2, and n3 for the give-up rule; name and
subnet from ``SXT_AUTO_BED_NAME`` / ``SXT_AUTO_BED_SUBNET``) whose master has the README's reactor
config (``SandboxCluster(autopilot=True)``), deployed by ``salt-run slurm.deploy`` with
``slurm:autopilot:enabled``: the ``slurm`` beacon runs on every machine, its events reach
the reactor, which runs ``slurm.heal``.
"""

import os
import sys
import time
from pathlib import Path

import pytest

from salt_ext.lib.ops import journal
from tests.conftest import sandbox_bed, say
from tests.integration.helpers import held_job, job_info, salt_run, sinfo_nodes, wait_for
from tests.testbed.bed import render_pillar

NODES = ("ctl", "n1", "n2", "n3")
AUTO_BED = {
    "name": os.environ.get("SXT_AUTO_BED_NAME", "sxp"),
    "subnet": os.environ.get("SXT_AUTO_BED_SUBNET", "10.61.0"),
}
# a health check on a tmpfs each node mounts in its own mount namespace (the host has
# only the empty directory); HealthCheckInterval is long so that the autopilot's beacon,
# not slurmd's own run of the program, is what acts in the health test
SCRATCH = f"/var/lib/saltext-slurm-testbed/{AUTO_BED['name']}/scratch"
PROGRAM = str(Path(sys.prefix) / "bin" / "saltext-slurm-healthcheck")
PILLAR = render_pillar(
    cluster_name="autobed",
    node_target="n*",
    autopilot={"enabled": True, "interval": 5},
    health={
        "interval": 600,
        "program": PROGRAM,
        "checks": [{"name": "scratch", "kind": "mount", "path": SCRATCH, "timeout": 5}],
    },
)
COMPUTE = ("n1", "n2", "n3")
HEAL_LIMIT = 60  # seconds a fault may take to heal here (the target is 15 s)


@pytest.fixture(scope="module")
def cluster(request):
    """This module's own bed, with the autopilot's reactor in the master config."""
    yield from sandbox_bed(request.config, nodes=NODES, autopilot=True, **AUTO_BED)


@pytest.fixture(scope="module")
def deployed(cluster):
    os.makedirs(SCRATCH, exist_ok=True)
    for node in COMPUTE:
        mount_scratch(cluster, node)
    cluster.write_pillar(PILLAR)
    summary, proc = salt_run(cluster, "slurm.deploy")
    assert proc.returncode == 0 and summary["result"] is True, (
        summary.get("comment"),
        proc.stderr[-3000:],
    )
    return summary


def mount_scratch(cluster, node):
    proc = cluster.run(node, ["mount", "-t", "tmpfs", "-o", "size=1m", "scratch", SCRATCH])
    assert proc.returncode == 0, proc.stderr


def daemon_pid(cluster, node, daemon="slurmd"):
    """The daemon's pid when it runs and answers, else None."""
    ret = cluster.salt(node, "slurm_node.health", [daemon], timeout=30).get(node)
    entry = (ret or {}).get(daemon) if isinstance(ret, dict) else None
    return entry["pid"] if entry and entry.get("state") == "running" else None


def log_entries(cluster, node):
    data, proc = salt_run(cluster, "slurm.autopilot_log", node=node, limit=0)
    assert proc.returncode == 0, (data, proc.stderr[-2000:])
    return data["entries"]


def kill(cluster, node, pid):
    proc = cluster.run(node, ["kill", "-9", str(pid)])
    assert proc.returncode == 0, proc.stderr
    return time.monotonic()


def node_reason(cluster, node):
    return cluster.run("ctl", ["sinfo", "-h", "-n", node, "-N", "-o", "%E"]).stdout.strip()


def healed(cluster, node, old_pid, before, daemon="slurmd", want="idle"):
    """A new daemon runs, sinfo shows ``want`` and the autopilot logged a fix."""
    pid = daemon_pid(cluster, node, daemon)
    if not pid or pid == old_pid or sinfo_nodes(cluster).get(node) != want:
        return False
    fixes = [e for e in log_entries(cluster, node)[before:] if e["action"] == "fix"]
    return fixes[-1] if fixes and fixes[-1]["result"] is True else False


def test_beacon_configured_on_every_machine(cluster, deployed):
    for node in NODES:
        beacons = cluster.salt(node, "beacons.list", return_yaml=False, timeout=30)[node]
        assert "slurm" in beacons, (node, beacons)
        cfg = {k: v for item in beacons["slurm"] for k, v in item.items()}
        assert cfg["daemons"] == (["munge", "slurmctld"] if node == "ctl" else ["munge", "slurmd"])


def test_slurmd_killed_on_n2_heals_while_a_job_runs_on_n1(cluster, deployed, request):
    job_id, release = held_job(cluster, "-w", "n1")
    old = daemon_pid(cluster, "n2")
    assert old, cluster.tail_logs(["n2"])
    before = len(log_entries(cluster, "n2"))
    started = kill(cluster, "n2", old)
    fix = wait_for(lambda: healed(cluster, "n2", old, before), HEAL_LIMIT, 1)
    seconds = time.monotonic() - started
    assert fix, (log_entries(cluster, "n2"), sinfo_nodes(cluster), cluster.tail_logs(["n2"]))
    say(request.config, f"[autopilot] slurmd killed on n2 -> n2 idle again in {seconds:.1f}s")
    assert fix["cause"] == "slurmd not running"
    assert fix["steps"][0]["fix"] == "restart slurmd" and fix["steps"][0]["ok"]
    assert "JobState=RUNNING" in job_info(cluster, job_id)
    release()
    assert wait_for(lambda: "JobState=COMPLETED" in job_info(cluster, job_id), 60, 1), job_info(
        cluster, job_id
    )
    assert "ExitCode=0:0" in job_info(cluster, job_id)


def test_an_admins_drain_stays_while_slurmd_is_restarted(cluster, deployed):
    drained, proc = salt_run(cluster, "slurm.drain", nodes="n1", reason="disk swap")
    assert proc.returncode == 0, drained
    try:
        old = daemon_pid(cluster, "n1")
        before = len(log_entries(cluster, "n1"))
        kill(cluster, "n1", old)
        fix = wait_for(lambda: healed(cluster, "n1", old, before, want="drain"), HEAL_LIMIT, 1)
        assert fix, (log_entries(cluster, "n1"), sinfo_nodes(cluster))
        assert "the admin's drain stays" in fix["comment"]
        assert not fix.get("resumed")
        # and it stays so: a few more beacon intervals change nothing
        time.sleep(8)
        assert sinfo_nodes(cluster)["n1"] == "drain"
        assert node_reason(cluster, "n1") == "disk swap"
    finally:
        salt_run(cluster, "slurm.resume", nodes="n1")


def test_nothing_happens_while_an_operation_holds_the_cluster_lock(cluster, deployed):
    jrnl = journal.Journal(str(cluster.master_dir / "cache" / "slurm"))
    before = len(log_entries(cluster, "n2"))
    with jrnl.operation("rotate_munge_key"):
        old = daemon_pid(cluster, "n2")
        kill(cluster, "n2", old)
        time.sleep(14)  # three beacon intervals
        assert daemon_pid(cluster, "n2") is None
        entries = log_entries(cluster, "n2")[before:]
        assert entries, "the reactor never ran slurm.heal"
        assert all(e["action"] == "skip" for e in entries), entries
        assert any("slurm.rotate_munge_key holds the cluster lock" in e["comment"] for e in entries)
    # the lock is free: the next beacon event heals it
    fix = wait_for(lambda: healed(cluster, "n2", old, before), HEAL_LIMIT, 1)
    assert fix, (log_entries(cluster, "n2"), sinfo_nodes(cluster))


def test_munged_killed_heals_itself(cluster, deployed, request):
    old = daemon_pid(cluster, "n2", "munge")
    before = len(log_entries(cluster, "n2"))
    started = kill(cluster, "n2", old)
    fix = wait_for(lambda: healed(cluster, "n2", old, before, daemon="munge"), HEAL_LIMIT, 1)
    assert fix, (log_entries(cluster, "n2"), cluster.tail_logs(["n2"]))
    say(
        request.config,
        f"[autopilot] munged killed on n2 -> healed in {time.monotonic() - started:.1f}s",
    )
    assert fix["cause"] == "munged not running"


def test_slurm_conf_edited_by_hand_is_put_back(cluster, deployed, request):
    conf = cluster.nodes["n1"].private_dir("/etc/slurm") / "slurm.conf"
    want = conf.read_text()
    old = daemon_pid(cluster, "n1")
    before = len(log_entries(cluster, "n1"))
    started = time.monotonic()
    conf.write_text(want + "# edited by hand\n")
    fix = wait_for(lambda: healed(cluster, "n1", old, before), HEAL_LIMIT, 1)
    assert fix, (log_entries(cluster, "n1"), cluster.tail_logs(["n1"]))
    say(
        request.config,
        f"[autopilot] slurm.conf edited on n1 -> put back in {time.monotonic() - started:.1f}s",
    )
    assert conf.read_text() == want
    assert fix["steps"][0]["fix"] == "sync conf"


def key_hash(cluster, node):
    proc = cluster.run(node, ["sha256sum", "/etc/munge/munge.key"])
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split()[0]


def test_a_wrong_munge_key_on_a_node_is_put_back(cluster, deployed, request):
    want = key_hash(cluster, "n2")
    old = daemon_pid(cluster, "n1", "munge")
    before = len(log_entries(cluster, "n1"))
    started = time.monotonic()
    # same file, owner and mode: only the content is wrong (1 KiB of random bytes)
    wrote = cluster.run(
        "n1", ["dd", "if=/dev/urandom", "of=/etc/munge/munge.key", "bs=1024", "count=1"]
    )
    assert wrote.returncode == 0, wrote.stderr
    assert key_hash(cluster, "n1") != want

    def put_back():
        if key_hash(cluster, "n1") != want:
            return False
        return healed(cluster, "n1", old, before, daemon="munge")

    fix = wait_for(put_back, HEAL_LIMIT, 1)
    assert fix, (log_entries(cluster, "n1")[before:], cluster.tail_logs(["n1"]))
    say(
        request.config,
        f"[autopilot] wrong munge.key on n1 -> put back in {time.monotonic() - started:.1f}s",
    )
    fixes = [e for e in log_entries(cluster, "n1")[before:] if e["action"] == "fix"]
    assert len(fixes) == 1, fixes
    assert fixes[0]["cause"] in ("munge key differs from the master's", "munge key mismatch")
    assert fixes[0]["steps"][0]["fix"] == "sync key" and fixes[0]["steps"][0]["ok"]
    # the node works with the cluster again: a job runs there
    proc = cluster.run("ctl", ["srun", "-w", "n1", "-t", "1", "--mem=32M", "true"], timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_a_fault_that_comes_back_gets_three_tries_then_a_drain(cluster, deployed):
    """slurmd cannot start on n3 (its binary made non-executable by a bind mount in n3's
    own mount namespace: the host's /usr stays untouched) -> 3 fixes, then n3 drained with
    "autopilot gave up: slurmd not running", and nothing more."""
    node = cluster.nodes["n3"]
    binary = cluster.run("n3", ["sh", "-c", "command -v slurmd"]).stdout.strip()
    assert binary.startswith("/"), binary
    copy = node.dir / "slurmd-not-executable"
    copy.write_bytes(b"#!/bin/sh\nexit 1\n")
    copy.chmod(0o644)
    before = len(log_entries(cluster, "n3"))
    try:
        mounted = cluster.run("n3", ["mount", "--bind", str(copy), binary])
        assert mounted.returncode == 0, mounted.stderr
        kill(cluster, "n3", daemon_pid(cluster, "n3"))

        def gave_up():
            return [e for e in log_entries(cluster, "n3")[before:] if e["action"] == "give_up"]

        assert wait_for(gave_up, 120, 2), log_entries(cluster, "n3")
        entries = log_entries(cluster, "n3")[before:]
        fixes = [e for e in entries if e["action"] == "fix"]
        assert len(fixes) == 3 and not any(e["result"] for e in fixes), entries
        assert all(e["steps"][0]["fix"] == "restart slurmd" for e in fixes)
        assert sinfo_nodes(cluster)["n3"] in ("drain", "drng", "down*", "drain*")
        assert node_reason(cluster, "n3") == "autopilot gave up: slurmd not running"
        # and stops: more beacon events, no more fixes
        time.sleep(12)
        later = log_entries(cluster, "n3")[before:]
        assert [e for e in later if e["action"] == "fix"] == fixes
        assert daemon_pid(cluster, "n3") is None
    finally:
        cluster.run("n3", ["umount", binary])
        cluster.salt("n3", "slurm_node.restart", ["slurmd"], timeout=60)
        salt_run(cluster, "slurm.resume", nodes="n3")


def test_a_missing_mount_drains_the_node_and_its_return_resumes_it(cluster, deployed, request):
    """/scratch unmounted in n1's own mount namespace -> n1 drained "health: scratch: …" by
    the autopilot; mounted again -> resumed; nobody runs a command in between."""
    conf = (cluster.nodes["n1"].private_dir("/etc/slurm") / "slurm.conf").read_text()
    assert f"HealthCheckProgram={PROGRAM}" in conf and "HealthCheckInterval=600" in conf
    # the program Slurm runs, as Slurm runs it, on a healthy node: every check passes
    proc = cluster.run("n1", [PROGRAM])
    assert proc.returncode == 0 and proc.stdout == f"ok   scratch: {SCRATCH} is mounted\n", (
        proc.stdout,
        proc.stderr,
    )
    before = len(log_entries(cluster, "n1"))
    started = time.monotonic()
    umounted = cluster.run("n1", ["umount", SCRATCH])
    assert umounted.returncode == 0, umounted.stderr
    try:
        drained = wait_for(lambda: sinfo_nodes(cluster).get("n1") == "drain", HEAL_LIMIT, 1)
        drain_s = time.monotonic() - started
        assert drained, (sinfo_nodes(cluster), log_entries(cluster, "n1")[before:])
        assert node_reason(cluster, "n1") == f"health: scratch: {SCRATCH} is not mounted"
        entries = log_entries(cluster, "n1")[before:]
        drains = [e for e in entries if e["action"] == "drain"]
        assert len(drains) == 1 and drains[0]["cause"] == "health:scratch", entries
        # the other nodes' scratch is still there: they stay in service
        assert sinfo_nodes(cluster)["n2"] == "idle"
    finally:
        mount_scratch(cluster, "n1")
    started = time.monotonic()
    resumed = wait_for(lambda: sinfo_nodes(cluster).get("n1") == "idle", HEAL_LIMIT, 1)
    assert resumed, (sinfo_nodes(cluster), node_reason(cluster, "n1"), log_entries(cluster, "n1"))
    resume_s = time.monotonic() - started
    entries = log_entries(cluster, "n1")[before:]
    resumes = [e for e in entries if e["action"] == "resume"]
    assert len(resumes) == 1 and resumes[0]["cause"] == "health checks pass again", entries
    say(
        request.config,
        f"[autopilot] scratch unmounted on n1 -> drained in {drain_s:.1f}s; "
        f"mounted again -> resumed in {resume_s:.1f}s",
    )


def test_a_health_check_never_resumes_an_admins_drain(cluster, deployed):
    drained, proc = salt_run(cluster, "slurm.drain", nodes="n2", reason="cable check")
    assert proc.returncode == 0, drained
    try:
        assert cluster.run("n2", ["umount", SCRATCH]).returncode == 0
        time.sleep(8)  # beacon intervals: the check fails, the admin's reason stays
        assert node_reason(cluster, "n2") == "cable check"
        mount_scratch(cluster, "n2")
        time.sleep(8)  # and passes again: still the admin's drain
        assert sinfo_nodes(cluster)["n2"] == "drain"
        assert node_reason(cluster, "n2") == "cable check"
    finally:
        if cluster.run("n2", ["mountpoint", "-q", SCRATCH]).returncode != 0:
            mount_scratch(cluster, "n2")
        salt_run(cluster, "slurm.resume", nodes="n2")
