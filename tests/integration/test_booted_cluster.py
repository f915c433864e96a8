"""A Slurm site on machines that boot (issue #13): a systemd controller, systemd, sysvinit
and OpenRC compute hosts and a sandbox node alongside, built from bare by ``slurm.deploy``
with packages installed by ``pkg.installed`` from the bed's local repository. Then what no
sandbox can show: services enabled at boot (a reboot brings every kind back idle with no
command), a daemon that dies at start under systemd fails the state with its journal,
Debian's sysvinit script that says "running" with no process, ``slurm.absent`` that purges
and disables, and runners that exit non-zero when a node failed. No mocks.

Its own bed (master + one sandbox node + booted hosts): the shared bed's cluster stays as
the other modules expect it.
"""

import os
import time

import pytest

from tests import conftest
from tests.integration.helpers import changed, failed, json_output, state_results, wait_for
from tests.testbed import SandboxCluster, hosts
from tests.testbed.bed import render_pillar

pytestmark = pytest.mark.testbed

CONTROLLER = "hc"
KINDS = {"hc": "systemd", "hs": "systemd", "hv": "sysvinit", "ho": "openrc"}
COMPUTE = ["hs", "hv", "ho", "n1"]
PILLAR = render_pillar(
    controller=CONTROLLER, node_target=",".join(COMPUTE), node_target_type="list"
)
BED = {
    "name": os.environ.get("SXT_BOOT_BED_NAME", "sxbt"),
    "subnet": os.environ.get("SXT_BOOT_BED_SUBNET", "10.79.0"),
}
PACKAGES = {"hc": ["munge", "slurmctld"], "hs": ["munge", "slurmd"]}


def say(request, text):
    conftest.say(request.config, text)


@pytest.fixture(scope="module")
def site(host_images, request):
    bed = SandboxCluster(nodes=("n1",), **BED)
    started = time.monotonic()
    try:
        bed.up()
        with hosts.booted(bed, KINDS):
            say(
                request,
                f"\n[booted cluster] master, n1 and {len(KINDS)} booted hosts up in "
                f"{time.monotonic() - started:.1f}s",
            )
            bed.write_pillar(PILLAR)
            yield bed
    finally:
        bed.down(keep_files=False)


def salt_run(bed, fun, *args, out_json=True):
    argv = ["salt-run", *(["--out=json"] if out_json else []), fun, *args]
    proc = bed.cli(argv, timeout=900)
    data = json_output(proc.stdout, (proc.stdout, proc.stderr[-3000:])) if out_json else None
    return data, proc


def sh(bed, name, *argv, timeout=60):
    return bed.run(name, list(argv), timeout=timeout)


def sinfo(bed):
    proc = sh(bed, CONTROLLER, "sinfo", "-h", "-N", "-o", "%N %t")
    return dict(line.split() for line in proc.stdout.splitlines() if line.strip())


def all_idle(bed):
    return sinfo(bed) == dict.fromkeys(COMPUTE, "idle")


def installed(bed, name, pkg):
    query = sh(bed, name, "dpkg-query", "-W", "-f=${Status}", pkg)
    return "install ok installed" in query.stdout


def apply(bed, name, sls, **kwargs):
    return bed.salt(name, "state.apply", [sls], timeout=600, **kwargs)[name]


def slurmd_pid(bed, name):
    status = bed.salt(name, "slurm_node.status")[name]
    return status["health"].get("slurmd", {}).get("pid")


@pytest.fixture(scope="module")
def deployed(site, request):
    """``slurm.deploy`` from bare (no key, no conf, no packages), then once more."""
    for name in KINDS:
        assert not installed(site, name, "munge"), f"{name} has munge before the deploy"
    started = time.monotonic()
    first, proc = salt_run(site, "slurm.deploy")
    seconds = time.monotonic() - started
    assert proc.returncode == 0 and first["result"] is True, (
        first,
        proc.stderr[-3000:],
        site.tail_logs(),
    )
    second, proc2 = salt_run(site, "slurm.deploy")
    say(request, f"\n[booted cluster] slurm.deploy from bare: {seconds:.1f}s")
    return {"first": first, "second": (second, proc2)}


def test_deploy_from_bare_installs_runs_and_enables_on_every_kind(site, deployed):
    for name in KINDS:
        for pkg in PACKAGES.get(name, ["munge", "slurmd"]):
            assert installed(site, name, pkg), (name, pkg)
    # the init system runs them: systemd's units are active, every daemon proven by /proc
    for name in ("hc", "hs"):
        for unit in PACKAGES[name][::-1]:
            active = sh(site, name, "systemctl", "is-active", unit).stdout.strip()
            assert active == "active", (name, unit, active)
    for name, daemons in {
        **{n: ["munge", "slurmd"] for n in COMPUTE},
        "hc": ["munge", "slurmctld"],
    }.items():
        for daemon in daemons:
            assert site.salt(name, "slurm_node.daemon_running", [daemon])[name] is True, (
                name,
                daemon,
            )
            if name in KINDS:
                assert site.salt(name, "slurm_node.daemon_enabled", [daemon])[name] is True, (
                    name,
                    daemon,
                )
    # munge/slurm UIDs are the cluster's, on every kind
    for name in KINDS:
        assert sh(site, name, "id", "-u", "slurm").stdout.strip() == "1109", name
    assert wait_for(lambda: all_idle(site), 60), sinfo(site)
    srun = sh(site, CONTROLLER, "srun", "-N4", "--mem=32M", "hostname")
    assert srun.returncode == 0, srun.stderr
    assert sorted(srun.stdout.split()) == sorted(COMPUTE)


def test_a_second_deploy_changes_nothing(site, deployed):
    second, proc = deployed["second"]
    assert proc.returncode == 0 and second["result"] is True, second
    assert second["controller"]["changed"] == 0, second["controller"]
    assert {m: n["changed"] for m, n in second["nodes"].items()} == dict.fromkeys(COMPUTE, 0)


def test_reboot_brings_every_kind_back_idle_with_no_command(site, deployed, request):
    """Services enabled at boot: each compute host rebooted; nobody runs anything after."""
    rebooted = ["hs", "hv", "ho"]
    before = {name: slurmd_pid(site, name) for name in rebooted}
    started = time.monotonic()
    minion_seconds = site.reboot(rebooted)
    assert wait_for(
        lambda: (
            all_idle(site) and all(slurmd_pid(site, n) not in (None, before[n]) for n in rebooted)
        ),
        120,
        interval=2,
    ), (sinfo(site), site.tail_logs(rebooted))
    idle = time.monotonic() - started
    say(
        request,
        "\n[booted cluster] reboot -> minion: "
        + ", ".join(f"{n} ({KINDS[n]}) {s:.1f}s" for n, s in minion_seconds.items())
        + f"; all idle again {idle:.1f}s after the reboot",
    )
    srun = sh(site, CONTROLLER, "srun", "-N4", "--mem=32M", "hostname")
    assert srun.returncode == 0, srun.stderr


def test_a_disabled_unit_is_a_change_the_next_apply_repairs(site, deployed):
    assert sh(site, "hs", "systemctl", "disable", "slurmd").returncode == 0
    assert site.salt("hs", "slurm_node.daemon_enabled", ["slurmd"])["hs"] is False
    dry = apply(site, "hs", "slurm.node", test=True)
    results = state_results(dry)
    boot = results["slurm-slurmd-boot"]
    assert boot["result"] is None and "slurmd" in boot["comment"], boot
    ret = apply(site, "hs", "slurm.node")
    assert not failed(ret), failed(ret)
    assert "slurm-slurmd-boot" in changed(ret), changed(ret)
    assert sh(site, "hs", "systemctl", "is-enabled", "slurmd").stdout.strip() == "enabled"


def test_slurmd_dying_at_start_fails_the_state_with_its_journal_and_deploy_exits_1(site, deployed):
    """The issue's first defect: a bad option in /etc/default/slurmd; systemd said started,
    the state said verified, slurmd was dead."""
    default = "/etc/default/slurmd"
    saved = sh(site, "hs", "cat", default).stdout
    try:
        sh(site, "hs", "sh", "-c", f"echo 'SLURMD_OPTIONS=--no-such-option' > {default}")
        assert sh(site, "hs", "systemctl", "stop", "slurmd").returncode == 0
        ret = apply(site, "hs", "slurm.node")
        problems = failed(ret)
        assert "slurm-slurmd" in problems, state_results(ret)
        comment = problems["slurm-slurmd"]
        assert "no-such-option" in comment or "unrecognized" in comment, comment
        assert site.salt("hs", "slurm_node.daemon_running", ["slurmd"])["hs"] is False
        # diagnose quotes the journal of this failed start, not an old slurmd.log line
        report, proc = salt_run(site, "slurm.diagnose", "nodes=hs")
        assert proc.returncode != 0, report
        evidence = " ".join(
            line for cause in report["nodes"]["hs"]["causes"] for line in cause["evidence"]
        )
        assert "no-such-option" in evidence, report["nodes"]["hs"]
        # the runner's default (table) output exits 1 too (it used to exit 0 with a table
        # naming the failed node; JSON output: tests/integration/test_slurm_ops.py)
        _, proc = salt_run(site, "slurm.deploy", out_json=False)
        assert proc.returncode != 0, proc.stdout[-3000:]
        assert "failed nodes: hs" in proc.stdout, proc.stdout[-3000:]
    finally:
        site.run("hs", ["sh", "-c", f"cat > {default}"], stdin=saved)
    ret = apply(site, "hs", "slurm.node")
    assert not failed(ret), failed(ret)
    assert wait_for(lambda: all_idle(site), 60), sinfo(site)


def test_sysvinit_status_without_slurm_conf_is_not_running(site, deployed):
    """Debian's /etc/init.d/slurmd exits 0 for every action when slurm.conf is missing."""
    conf = "/etc/slurm/slurm.conf"
    old_pid = slurmd_pid(site, "hv")
    try:
        assert sh(site, "hv", "mv", conf, conf + ".away").returncode == 0
        assert sh(site, "hv", "kill", str(old_pid)).returncode == 0
        assert wait_for(lambda: sh(site, "hv", "kill", "-0", str(old_pid)).returncode != 0, 30)
        lie = sh(site, "hv", "/etc/init.d/slurmd", "status")
        running = site.salt("hv", "slurm_node.daemon_running", ["slurmd"])["hv"]
        assert running is False, (running, lie.returncode, lie.stdout)
    finally:
        sh(site, "hv", "mv", conf + ".away", conf)
    restarted = site.salt("hv", "slurm_node.restart", ["slurmd"])["hv"]
    assert site.salt("hv", "slurm_node.daemon_running", ["slurmd"])["hv"] is True, restarted
    assert slurmd_pid(site, "hv") not in (None, old_pid)
    assert wait_for(lambda: all_idle(site), 60), sinfo(site)


PURGE = {"slurm": {"absent": {"purge_packages": True}}}


def test_absent_purges_and_disables_then_the_node_state_reinstalls(site, deployed):
    name = "ho"
    ret = apply(site, name, "slurm.absent", pillar=PURGE)
    assert not failed(ret), failed(ret)
    for pkg in ("munge", "slurmd"):
        assert not installed(site, name, pkg), pkg
    runlevel = sh(site, name, "ls", "/etc/runlevels/default").stdout.split()
    assert "munge" not in runlevel and "slurmd" not in runlevel, runlevel
    # systemd: nothing left that fails at boot (a unit left enabled made it 'degraded')
    ret = apply(site, "hs", "slurm.absent", pillar=PURGE)
    assert not failed(ret), failed(ret)
    site.reboot(["hs"])
    state = wait_for(
        lambda: (
            sh(site, "hs", "systemctl", "is-system-running").stdout.strip()
            in ("running", "degraded")
        ),
        60,
    )
    assert sh(site, "hs", "systemctl", "is-system-running").stdout.strip() == "running", (
        state,
        sh(site, "hs", "systemctl", "--failed", "--no-pager").stdout,
    )
    for node in (name, "hs"):
        ret = apply(site, node, "slurm.node")
        assert not failed(ret), (node, failed(ret))
    assert wait_for(lambda: all_idle(site), 90), sinfo(site)


FRESH = {"fs": "systemd", "fv": "sysvinit", "fo": "openrc"}


def test_fresh_machines_of_each_kind_join_while_a_job_runs_then_key_rotation_and_removal(
    site, deployed, request
):
    """Machines with only salt-minion (the package's own munge key once munge is installed)
    join a running cluster in one ``slurm.add_node``; a job started before keeps running
    through the join, a munge key rotation and the removal of one of them."""
    release = f"/tmp/{site.name}-release-{os.getpid()}"
    sbatch = sh(
        site,
        CONTROLLER,
        "sbatch",
        "--parsable",
        "-w",
        "n1",
        "--mem=32M",
        "-o",
        "/dev/null",
        "--chdir=/tmp",
        "--wrap",
        f"for i in $(seq 600); do [ -e {release} ] && exit 0; sleep 0.5; done; exit 1",
    )
    assert sbatch.returncode == 0, sbatch.stderr
    job = sbatch.stdout.strip().split(";")[0]

    def job_state():
        out = sh(site, CONTROLLER, "scontrol", "show", "job", job).stdout
        return next((w.split("=", 1)[1] for w in out.split() if w.startswith("JobState=")), None)

    try:
        assert wait_for(lambda: job_state() == "RUNNING", 30), job_state()
        started = time.monotonic()
        site.add_hosts(FRESH)
        nodes = [*COMPUTE, *FRESH]
        site.write_pillar(
            render_pillar(
                controller=CONTROLLER, node_target=",".join(nodes), node_target_type="list"
            )
        )
        added, proc = salt_run(site, "slurm.add_node", ",".join(FRESH))
        assert proc.returncode == 0 and added["result"] is True, (added, proc.stderr[-3000:])
        say(
            request,
            f"\n[booted cluster] 3 fresh machines booted and added in "
            f"{time.monotonic() - started:.1f}s",
        )
        for name in FRESH:
            assert installed(site, name, "slurmd"), name
            assert site.salt(name, "slurm_node.daemon_enabled", ["slurmd"])[name] is True
        states = sinfo(site)
        assert sorted(states) == sorted(nodes), states
        assert all(states[n] == "idle" for n in nodes if n != "n1"), states
        assert job_state() == "RUNNING"
        srun = sh(site, CONTROLLER, "srun", f"-N{len(nodes)}", "--mem=32M", "hostname")
        assert srun.returncode == 0, srun.stderr
        assert sorted(srun.stdout.split()) == sorted(nodes)

        rotated, proc = salt_run(site, "slurm.rotate_munge_key")
        assert proc.returncode == 0 and rotated["result"] is True, (rotated, proc.stderr[-3000:])
        assert job_state() == "RUNNING"

        removed, proc = salt_run(site, "slurm.remove_node", "fo")
        assert proc.returncode == 0 and removed["result"] is True, (removed, proc.stderr[-3000:])
        assert "fo" not in sinfo(site)
        assert site.salt("fo", "slurm_node.daemon_running", ["slurmd"])["fo"] is False
        assert job_state() == "RUNNING"
    finally:
        sh(site, "n1", "touch", release)
    assert wait_for(lambda: job_state() == "COMPLETED", 60), job_state()
    info = sh(site, CONTROLLER, "scontrol", "show", "job", job).stdout
    assert "ExitCode=0:0" in info, info
