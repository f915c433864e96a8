"""Accounting on the test bed: a real MariaDB and slurmdbd on the controller, deployed from
bare by ``salt-run slurm.deploy`` with ``slurm:accounting:enabled``; ``sacct`` sees
finished jobs, the DB password leaks nowhere, and the faults heal.

The module has its own bed (master + ctl, n1, n2; name and subnet from
``SXT_DBD_BED_NAME`` / ``SXT_DBD_BED_SUBNET``), with master and minions logging at
``debug`` so that a leak of the password at that level would show in their logs. The
password reaches only ctl's pillar (the dbd host), as the README advises.
"""

import json
import os
import secrets
import time

import pytest

from salt_ext.lib.accounting import current
from tests.conftest import sandbox_bed
from tests.integration import helpers
from tests.integration.helpers import (
    job_info,
    salt_run,
    sinfo_nodes,
    state_results,
    wait_for,
)
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


def leaks(text, secret=PASSWORD):
    return helpers.leaks(text, secret)


@pytest.fixture(scope="module")
def cluster(request):
    """This module's own bed (master + ctl, n1, n2), logging at debug."""
    yield from sandbox_bed(request.config, nodes=NODES, log_level="debug", **DBD_BED)


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


# ------------------------------------------------------------ accounts / users / QOS as code
# The tests below run last on the deployed bed: they add accounts to the pillar, which
# turns on AccountingStorageEnforce (a job then needs an association).
ACCOUNTS = {
    "qos": {"single": {"limits": {"MaxJobsPerUser": 1}}},
    "accounts": {
        "science": {"description": "Faculty of Science"},
        "physics": {"parent": "science", "fairshare": 10},
    },
    # the bed's unix user (the same on ctl and n1: the nodes share the host's /etc/passwd)
    "users": {"sxuser": {"accounts": ["physics"], "qos": ["normal", "single"]}},
}
ACCOUNTS["users"]["sxuser"]["default_qos"] = "single"


def with_accounts(**extra):
    accounting = {**PILLAR["accounting"], **json.loads(json.dumps(ACCOUNTS)), **extra}
    return {**PILLAR, "accounting": accounting}


def sacctmgr_dump(cluster):
    """Every QOS, account, user and association as sacctmgr prints them for the state's own
    five reads (to prove nothing changed)."""
    out = {}
    for kind, argv in current.read_commands("acctbed").items():
        proc = cluster.run("ctl", argv)
        assert proc.returncode == 0, proc.stderr
        out[kind] = proc.stdout
    return out


def controller_apply(cluster, test=False):
    """``state.apply slurm.controller`` on ctl: its return, as for a render error (list)."""
    ret = cluster.salt("ctl", "state.apply", ["slurm.controller"], timeout=300, test=test)
    return ret["ctl"]


def accounting_chunk(ret):
    chunks = state_results(ret)
    assert "slurm-accounting" in chunks, sorted(chunks)
    return chunks["slurm-accounting"]


def sbatch_as_sxuser(cluster, wrap):
    argv = ["sbatch", "--parsable", "-o", "/dev/null", "--chdir=/tmp", "--wrap", wrap]
    proc = cluster.run("ctl", ["runuser", "-u", "sxuser", "--", *argv])
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip().split(";")[0]


def qos_limit(cluster):
    proc = cluster.run("ctl", ["sacctmgr", "-n", "-P", "show", "qos", "single", "format=MaxJobsPU"])
    return proc.stdout.strip()


def squeue(cluster, job_id):
    return cluster.run("ctl", ["squeue", "-h", "-j", job_id, "-o", "%T %r"]).stdout.strip()


@pytest.fixture(scope="module")
def accounts_deployed(cluster, deployed):
    """The pillar's accounts / users / QOS deployed by slurm.deploy (no extra step)."""
    cluster.write_pillar(with_accounts(), per_minion=PER_MINION)
    result, proc = deploy(cluster)
    assert proc.returncode == 0 and result["result"] is True, (
        result.get("comment"),
        result.get("steps"),
        proc.stderr[-3000:],
    )
    return result, proc


def test_deploy_applies_the_accounts_and_a_qos_limit_holds_a_users_second_job(
    cluster, accounts_deployed
):
    result, proc = accounts_deployed
    acct = result["accounting"]
    # science, physics, single, sxuser (and its association) added; nothing had drifted
    assert acct["result"] is True and acct["changed"] >= 4 and acct["drift"] == 0, acct
    assert any(s.startswith("accounts as code on ctl: changed") for s in result["steps"]), result
    assert "accounts as code on ctl: changed" in proc.stderr
    conf = cluster.run("ctl", ["cat", "/etc/slurm/slurm.conf"]).stdout.splitlines()
    assert "AccountingStorageEnforce=associations,limits,qos" in conf, conf
    users = cluster.run(
        "ctl",
        ["sacctmgr", "-n", "-P", "show", "assoc", "user=sxuser", "format=Account,QOS,DefaultQOS"],
    ).stdout.split()
    assert users == ["physics|normal,single|single"], users
    status, run = salt_run(cluster, "slurm.status")
    assert run.returncode == 0 and status["accounts_as_code"]["in_sync"] is True, status
    assert (
        "accounts as code on ctl: in sync with pillar"
        in cluster.cli(["salt-run", "slurm.status"]).stdout
    )
    first = sbatch_as_sxuser(cluster, "sleep 120")
    second = sbatch_as_sxuser(cluster, "sleep 120")
    try:
        assert wait_for(lambda: squeue(cluster, first).startswith("RUNNING"), 30, 0.5), squeue(
            cluster, first
        )
        assert wait_for(
            lambda: squeue(cluster, second) == "PENDING QOSMaxJobsPerUserLimit", 30, 0.5
        ), (squeue(cluster, second), job_info(cluster, second))
    finally:
        cluster.run("ctl", ["scancel", first, second])


def test_a_limit_changed_by_hand_is_drift_for_test_mode_and_apply_corrects_it(
    cluster, accounts_deployed
):
    proc = cluster.run(
        "ctl", ["sacctmgr", "-i", "modify", "qos", "single", "set", "MaxJobsPerUser=5"]
    )
    assert proc.returncode == 0, proc.stderr
    chunk = accounting_chunk(controller_apply(cluster, test=True))
    assert chunk["result"] is None, chunk
    drift = chunk["changes"]["drift"]
    assert any(d.get("name") == "single" and d.get("field") == "MaxJobsPerUser" for d in drift), (
        drift
    )
    assert "drifted" in chunk["comment"], chunk["comment"]
    # test=True wrote nothing; slurm.status names the difference and fails
    assert qos_limit(cluster) == "5"
    status, run = salt_run(cluster, "slurm.status")
    assert run.returncode != 0 and status["accounts_as_code"]["drift"] == 1, status
    chunk = accounting_chunk(controller_apply(cluster))
    assert chunk["result"] is True, chunk
    modified = chunk["changes"]["qos"]["modified"]
    assert str(modified["single"]["MaxJobsPerUser"]["new"]) == "1", chunk
    assert qos_limit(cluster) == "1"


def test_an_unmanaged_account_is_left_alone_unless_purge(cluster, accounts_deployed):
    made = cluster.run("ctl", ["sacctmgr", "-i", "add", "account", "handmade", "cluster=acctbed"])
    assert made.returncode == 0, made.stderr

    def accounts():
        """The accounts with an association on this cluster (an account record is shared
        by every cluster of the slurmdbd: purge removes this cluster's association)."""
        proc = cluster.run(
            "ctl", ["sacctmgr", "-n", "-P", "show", "assoc", "cluster=acctbed", "format=Account"]
        )
        return set(proc.stdout.split())

    chunk = accounting_chunk(controller_apply(cluster))
    assert chunk["result"] is True and not chunk["changes"], chunk
    assert "handmade" in chunk["unmanaged"]["accounts"], chunk
    assert "1 unmanaged left alone" in chunk["comment"], chunk["comment"]
    assert "handmade" in accounts()
    cluster.write_pillar(with_accounts(purge=True), per_minion=PER_MINION)
    chunk = accounting_chunk(controller_apply(cluster))
    assert chunk["result"] is True and chunk["changes"]["accounts"] == {"removed": ["handmade"]}, (
        chunk
    )
    assert "handmade" not in accounts() and {"root", "science", "physics"} <= accounts()
    again = accounting_chunk(controller_apply(cluster))
    assert again["result"] is True and not again["changes"] and not again["unmanaged"], again


@pytest.mark.parametrize(
    ("change", "key"),
    [
        (
            {"users": {"sxuser": {"accounts": {"physics": {"qos": ["gold"]}}}}},
            "slurm:accounting:users:sxuser:accounts:physics:qos",
        ),
        (
            {"accounts": {**ACCOUNTS["accounts"], "optics": {"parent": "nosuch"}}},
            "slurm:accounting:accounts:optics:parent",
        ),
        (
            {"accounts": {**ACCOUNTS["accounts"], "optics": {"limits": {"GrpTRES": "cpu=lots"}}}},
            "slurm:accounting:accounts:optics:limits:GrpTRES",
        ),
        # a TRES slurmdbd does not know: found after the read, before any write
        (
            {"accounts": {**ACCOUNTS["accounts"], "optics": {"limits": {"GrpTRES": "gres/gpu=2"}}}},
            "slurm:accounting:accounts:optics:limits:GrpTRES",
        ),
    ],
    ids=["unknown-qos", "missing-parent", "bad-tres-count", "unknown-tres"],
)
def test_bad_accounting_pillar_fails_naming_the_key_and_changes_nothing(
    cluster, accounts_deployed, change, key
):
    before = sacctmgr_dump(cluster)
    cluster.write_pillar(with_accounts(**change), per_minion=PER_MINION)
    try:
        ret = controller_apply(cluster)
        text = json.dumps(ret)
        assert key in text, text[-2000:]
        if isinstance(ret, dict):  # rendered: the accounting state itself failed
            chunk = accounting_chunk(ret)
            assert chunk["result"] is False and key in chunk["comment"], chunk
        assert sacctmgr_dump(cluster) == before
    finally:
        cluster.write_pillar(with_accounts(), per_minion=PER_MINION, refresh=False)
