"""Accounting on the test bed: a real MariaDB and slurmdbd on the controller, deployed from
bare by ``salt-run slurm.deploy`` with ``slurm:accounting:enabled``; ``sacct`` sees
finished jobs, the DB password leaks nowhere, and the faults heal.

The module has its own bed (master + ctl, n1, n2; name and subnet from
``SXT_DBD_BED_NAME`` / ``SXT_DBD_BED_SUBNET``), with master and minions logging at
``debug`` so that a leak of the password at that level would show in their logs. The
password reaches only ctl's pillar (the dbd host), as the README advises.
"""

import base64
import json
import os
import secrets
import time

import pytest

from tests.conftest import sandbox_bed
from tests.integration.helpers import BusLog, salt_run, sinfo_nodes, wait_for
from tests.testbed.bed import BED_CONF_OVERRIDES

NODES = ("ctl", "n1", "n2")
COMPUTE = ["n1", "n2"]
DBD_BED = {
    "name": os.environ.get("SXT_DBD_BED_NAME", "sxa"),
    "subnet": os.environ.get("SXT_DBD_BED_SUBNET", "10.66.0"),
}
# a fresh password per run: nothing on the machine can hold it from an earlier one
PASSWORD = "Acct-" + secrets.token_hex(12)
# the bed's slurm.conf keys, but JobAcctGatherType left to the accounting default
OVERRIDES = {k: v for k, v in BED_CONF_OVERRIDES.items() if k != "JobAcctGatherType"}
PILLAR = {
    "cluster_name": "acctbed",
    "controller": "ctl",
    "node_target": "n*",
    "conf": {"overrides": OVERRIDES},
    "partitions": [{"name": "debug", "nodes": "ALL", "default": True}],
    "accounting": {"enabled": True},
}
# only the dbd host's pillar holds the password
PER_MINION = {"ctl": {"slurm": {"accounting": {"storage": {"password": PASSWORD}}}}}


def spellings(secret):
    raw = secret.encode()
    return {
        secret,
        raw.hex(),
        raw.hex().upper(),
        base64.b64encode(raw).decode().rstrip("="),
        # base64 of the secret at another byte offset inside a longer text
        base64.b64encode(b"x" + raw).decode()[4:-4],
        base64.b64encode(b"xy" + raw).decode()[4:-4],
    }


def leaks(text, secret=PASSWORD):
    return sorted(form for form in spellings(secret) if form and form in text)


@pytest.fixture(scope="module")
def cluster(request):
    """This module's own bed (master + ctl, n1, n2), logging at debug."""
    yield from sandbox_bed(request.config, nodes=NODES, log_level="debug", **DBD_BED)


@pytest.fixture(scope="module")
def bus(cluster):
    log = BusLog(cluster.master_opts())
    yield log
    log.stop.set()


def deploy(cluster):
    return salt_run(cluster, "slurm.deploy")


@pytest.fixture(scope="module")
def deployed(cluster, bus):
    cluster.write_pillar(PILLAR, per_minion=PER_MINION)
    started = time.monotonic()
    first, proc = deploy(cluster)
    first_seconds = time.monotonic() - started
    assert proc.returncode == 0 and first["result"] is True, (
        first.get("comment"),
        first.get("steps"),
        proc.stderr[-3000:],
    )
    second, proc2 = deploy(cluster)
    return {"first": (first, proc), "second": (second, proc2), "seconds": first_seconds}


def sacct(cluster, job_id):
    proc = cluster.run(
        "ctl", ["sacct", "-j", job_id, "-X", "-o", "JobID,State,ExitCode", "-P", "-n"]
    )
    return proc.stdout.strip()


def finished_job(cluster, *options, wrap="true"):
    """A batch job from ctl (as sxuser) that has finished; its id."""
    argv = ["sbatch", "--parsable", "-o", "/dev/null", "--chdir=/tmp", *options, "--wrap", wrap]
    proc = cluster.run("ctl", ["runuser", "-u", "sxuser", "--", *argv])
    assert proc.returncode == 0, proc.stderr
    job_id = proc.stdout.strip().split(";")[0]
    assert wait_for(
        lambda: (
            "JobState=COMPLETED" in cluster.run("ctl", ["scontrol", "show", "job", job_id]).stdout
            or not cluster.run("ctl", ["squeue", "-h", "-j", job_id]).stdout.strip()
        ),
        60,
        0.5,
    ), cluster.run("ctl", ["scontrol", "show", "job", job_id]).stdout
    return job_id


def test_deploy_from_bare_with_accounting_and_again_changes_nothing(cluster, deployed):
    first, _ = deployed["first"]
    steps = "\n".join(first["steps"])
    assert first["controller"]["changed"] > 0
    # DB -> slurmdbd -> slurmctld -> slurmd: the controller (the dbd host) comes before
    # the node states
    assert steps.index("controller ctl: ok") < steps.index("n1: ok"), steps
    second, proc = deployed["second"]
    assert proc.returncode == 0 and second["result"] is True, second.get("comment")
    assert second["controller"]["changed"] == 0, second["controller"]
    assert {m: n["changed"] for m, n in second["nodes"].items()} == dict.fromkeys(COMPUTE, 0)
    assert sinfo_nodes(cluster) == dict.fromkeys(COMPUTE, "idle")
    conf = cluster.run("ctl", ["cat", "/etc/slurm/slurm.conf"]).stdout
    for line in (
        "AccountingStorageType=accounting_storage/slurmdbd",
        "AccountingStorageHost=ctl",
        "AccountingStoragePort=6819",
        "JobAcctGatherType=jobacct_gather/linux",
        "ClusterName=acctbed",
    ):
        assert line in conf.splitlines(), conf
    stat = cluster.run("ctl", ["stat", "-c", "%a %U:%G", "/etc/slurm/slurmdbd.conf"]).stdout
    assert stat.strip() == "600 slurm:slurm"


def test_a_finished_job_is_in_sacct_and_the_cluster_registered(cluster, deployed):
    job_id = finished_job(cluster)
    assert wait_for(lambda: sacct(cluster, job_id) == f"{job_id}|COMPLETED|0:0", 30, 0.5), sacct(
        cluster, job_id
    )
    clusters = cluster.run("ctl", ["sacctmgr", "-n", "-P", "show", "cluster", "format=cluster"])
    assert "acctbed" in clusters.stdout.split(), clusters


def test_password_never_leaks(cluster, deployed, bus):
    first, proc = deployed["first"]
    second, proc2 = deployed["second"]
    outputs = {
        "deploy output": proc.stdout + proc.stderr + proc2.stdout + proc2.stderr,
        "deploy summary": json.dumps([first, second]),
    }
    # state output of the dbd states, with test=True and for real
    for test in (True, False):
        ret = cluster.salt("ctl", "state.apply", ["slurm.controller"], timeout=300, test=test)
        outputs[f"state.apply test={test}"] = json.dumps(ret, default=str)
    shown = cluster.salt("ctl", "state.show_sls", ["slurm.controller"], timeout=120)
    outputs["state.show_sls"] = json.dumps(shown, default=str)
    outputs["settings"] = json.dumps(cluster.salt("ctl", "slurm_node.settings", ["controller"]))
    for runner in ("slurm.status", "slurm.verify", "slurm.diagnose"):
        result, run = salt_run(cluster, runner)
        outputs[runner] = run.stdout + run.stderr
    outputs["events"] = json.dumps(bus.snapshot(), default=str)
    for label, path in cluster.log_paths().items():
        try:
            outputs[f"log {label}"] = open(path, errors="replace").read()  # noqa: SIM115
        except OSError:
            continue
    # every process's argv on the dbd host (mysql, slurmdbd, mariadbd ...)
    cmdlines = cluster.run(
        "ctl", ["sh", "-c", "for f in /proc/[0-9]*/cmdline; do tr '\\0' ' ' < $f; echo; done"]
    )
    outputs["argv"] = cmdlines.stdout
    found = {label: leaks(text) for label, text in outputs.items() if leaks(text)}
    assert not found, found
    # the search would have found it: the file slurmdbd reads does hold it
    conf = cluster.run("ctl", ["cat", "/etc/slurm/slurmdbd.conf"]).stdout
    assert leaks(conf), "the password is not where slurmdbd reads it"
    # the bed logged at debug (a leak at that level would be in the logs searched above)
    assert "[DEBUG" in outputs["log ctl/minion"]


def test_status_shows_the_accounting_daemons(cluster, deployed):
    data, proc = salt_run(cluster, "slurm.status")
    assert proc.returncode == 0 and data["result"] is True, data
    rows = {row["daemon"]: row for row in data["accounting"]}
    assert rows["slurmdbd"]["mark"] is True and rows["mariadb"]["mark"] is True, rows
    table = cluster.cli(["salt-run", "slurm.status"]).stdout
    assert "accounting on ctl: mariadb ok, slurmdbd ok" in table, table


def test_verify_proves_a_finished_job_reaches_sacct(cluster, deployed):
    result, proc = salt_run(cluster, "slurm.verify")
    assert proc.returncode == 0 and result["result"] is True, result
    assert result["accounting"]["ok"] is True, result["accounting"]
    assert result["accounting"]["evidence"].endswith("|COMPLETED|0:0"), result["accounting"]


def accounting_causes(cluster):
    report, proc = salt_run(cluster, "slurm.diagnose")
    return [c["cause"] for c in report["accounting"]["causes"]], report, proc


def stop(cluster, daemon):
    ret = cluster.salt("ctl", "slurm_node.daemon_control", [daemon, "stop"], timeout=60)
    assert ret == {"ctl": True}, ret


def heal(cluster):
    result, proc = deploy(cluster)
    assert proc.returncode == 0 and result["result"] is True, (
        result.get("comment"),
        result.get("steps"),
    )
    causes, report, _ = accounting_causes(cluster)
    assert causes == [] and report["result"] is True, report
    return result


def test_mariadb_stopped_is_named_and_deploy_heals(cluster, deployed):
    stop(cluster, "mariadb")
    causes, _, proc = accounting_causes(cluster)
    assert "MariaDB is stopped on ctl" in causes, causes
    assert proc.returncode != 0
    healed = heal(cluster)
    assert healed["controller"]["changed"] >= 1
    job_id = finished_job(cluster)
    assert wait_for(lambda: sacct(cluster, job_id) == f"{job_id}|COMPLETED|0:0", 30, 0.5)


def test_jobs_finishing_while_slurmdbd_is_down_reach_the_db(cluster, deployed):
    """slurmctld queues the records of jobs that end while slurmdbd is down and sends
    them when it is back: none is lost."""
    stop(cluster, "slurmdbd")
    causes, _, _ = accounting_causes(cluster)
    assert "slurmdbd is stopped on ctl" in causes, causes
    jobs = [finished_job(cluster) for _ in range(3)]
    heal(cluster)
    want = {job: f"{job}|COMPLETED|0:0" for job in jobs}
    assert wait_for(lambda: {j: sacct(cluster, j) for j in jobs} == want, 90, 1), {
        j: sacct(cluster, j) for j in jobs
    }
