"""Slurm's REST API on the test bed: slurmrestd (Debian's 22.05) as its own user with JWT,
deployed from bare by ``salt-run slurm.deploy`` with ``slurm:restd:enabled`` and accounting
on (so ``/slurmdb`` answers); tokens from ``salt-run slurm.token`` on a terminal, curl with
the token in a header read from stdin, key rotation, and the key leaking nowhere.

The module has its own bed (master + ctl, n1; name and subnet from ``SXT_RESTD_BED_NAME``
/ ``SXT_RESTD_BED_SUBNET``), master and minions logging at ``debug``.
"""

import hashlib
import json
import os
import re
import secrets
import time

import pytest

from tests.conftest import sandbox_bed
from tests.integration.helpers import leaks, salt_run, salt_run_on_a_terminal, wait_for
from tests.testbed.bed import BED_CONF_OVERRIDES

NODES = ("ctl", "n1")
RESTD_BED = {
    "name": os.environ.get("SXT_RESTD_BED_NAME", "sxr"),
    "subnet": os.environ.get("SXT_RESTD_BED_SUBNET", "10.63.0"),
}
PASSWORD = "Acct-" + secrets.token_hex(12)
OVERRIDES = {k: v for k, v in BED_CONF_OVERRIDES.items() if k != "JobAcctGatherType"}
PORT = 6820
PILLAR = {
    "cluster_name": "restbed",
    "controller": "ctl",
    "node_target": "n*",
    "conf": {"overrides": OVERRIDES},
    "partitions": [{"name": "debug", "nodes": "ALL", "default": True}],
    "accounting": {"enabled": True},
    "restd": {"enabled": True, "port": PORT},
}
PER_MINION = {"ctl": {"slurm": {"accounting": {"storage": {"password": PASSWORD}}}}}
TOKENS = []  # every token this module saw: none may appear in logs or events


@pytest.fixture(scope="module")
def cluster(request):
    yield from sandbox_bed(request.config, nodes=NODES, log_level="debug", **RESTD_BED)


def master_key(cluster):
    path = os.path.join(cluster.file_root, "slurm_files", "jwt_hs256.key")
    with open(path, "rb") as handle:
        return handle.read()


@pytest.fixture(scope="module")
def deployed(cluster, bus):
    cluster.write_pillar(PILLAR, per_minion=PER_MINION)
    first, proc = salt_run(cluster, "slurm.deploy")
    assert proc.returncode == 0 and first["result"] is True, (
        first.get("comment"),
        first.get("steps"),
        proc.stderr[-3000:],
        cluster.run("ctl", ["tail", "-n", "30", "/var/log/slurm/slurmrestd.log"]).stdout,
    )
    second, proc2 = salt_run(cluster, "slurm.deploy")
    return {"first": (first, proc), "second": (second, proc2)}


def token(cluster, user="sxuser", lifespan=600):
    text, out, err, code = salt_run_on_a_terminal(
        cluster, "--out=json", "slurm.token", f"user={user}", f"lifespan={lifespan}", timeout=120
    )
    assert code == 0, (out, err[-2000:])
    made = re.search(r"^token: (\S+)$", text, re.M).group(1)
    result = json.loads(out)
    assert result["token"] == "<token: printed on the terminal>" and made not in out + err
    TOKENS.append(made)
    return made


def curl(cluster, path, made=None, user="sxuser", node="n1"):
    """``(HTTP status, body)`` of GET ``path`` on ctl's TCP port, from ``node``; the token
    goes in a header read from curl's stdin (``-H @-``), never in its argv."""
    argv = ["curl", "-s", "-m", "20", "-w", "\n%{http_code}"]
    headers = None
    if made:
        argv += ["-H", "@-"]
        headers = f"X-SLURM-USER-NAME: {user}\nX-SLURM-USER-TOKEN: {made}\n"
    proc = cluster.run(node, [*argv, f"http://ctl:{PORT}{path}"], stdin=headers)
    body, _, status = proc.stdout.rpartition("\n")
    return int(status or 0), body


def accepted(status, body):
    """slurmrestd 22.05 may answer 200 with the error of slurmctld/slurmdbd in the body
    (seen: an old token after a rotation, slurmctld logging ``jwt_decode failure``)."""
    try:
        errors = json.loads(body).get("errors")
    except ValueError:
        return False
    return status == 200 and not errors


def finished_job(cluster):
    argv = ["sbatch", "--parsable", "-o", "/dev/null", "--chdir=/tmp", "--wrap", "true"]
    proc = cluster.run("ctl", ["runuser", "-u", "sxuser", "--", *argv])
    assert proc.returncode == 0, proc.stderr
    job_id = proc.stdout.strip().split(";")[0]
    assert wait_for(
        lambda: (
            cluster.run(
                "ctl", ["sacct", "-j", job_id, "-X", "-o", "State", "-P", "-n"]
            ).stdout.strip()
            == "COMPLETED"
        ),
        60,
        0.5,
    )
    return job_id


def test_deploy_from_bare_with_restd_and_again_changes_nothing(cluster, deployed):
    second, proc = deployed["second"]
    assert proc.returncode == 0 and second["result"] is True, second.get("comment")
    assert second["controller"]["changed"] == 0, second["controller"]
    assert {m: n["changed"] for m, n in second["nodes"].items()} == {"n1": 0}
    conf = cluster.run("ctl", ["cat", "/etc/slurm/slurm.conf"]).stdout.splitlines()
    assert "AuthAltTypes=auth/jwt" in conf, conf
    assert "AuthAltParameters=jwt_key=/etc/slurm/jwt_hs256.key" in conf, conf
    dbd = cluster.run("ctl", ["cat", "/etc/slurm/slurmdbd.conf"]).stdout.splitlines()
    assert "AuthAltTypes=auth/jwt" in dbd
    stat = cluster.run("ctl", ["stat", "-c", "%a %U:%G", "/etc/slurm/jwt_hs256.key"]).stdout
    assert stat.strip() == "600 slurm:slurm"
    # slurmrestd runs as its own user, on the unix socket and the TCP port
    pid = cluster.run("ctl", ["cat", "/run/slurmrestd/slurmrestd.pid"]).stdout.strip()
    owner = cluster.run("ctl", ["ps", "-o", "user:20=,comm=", "-p", pid]).stdout.split()
    assert owner == ["slurmrestd", "slurmrestd"], owner
    sock = cluster.run("ctl", ["stat", "-c", "%F %U", "/run/slurmrestd/slurmrestd.socket"])
    assert sock.stdout.strip() == "socket slurmrestd", sock


def test_a_token_gets_200_and_none_401(cluster, deployed):
    job_id = finished_job(cluster)
    made = token(cluster)
    status, body = curl(cluster, "/slurm/v0.0.38/diag", made)
    assert accepted(status, body) and "statistics" in body, (status, body[:500])
    seen = {}

    def job_listed():
        status, body = curl(cluster, "/slurmdb/v0.0.38/jobs", made)
        assert accepted(status, body), (status, body[:500])
        seen.update(
            {
                str(j["job_id"]): (j.get("state") or {}).get("current")
                for j in json.loads(body)["jobs"]
            }
        )
        return seen.get(job_id) == "COMPLETED"

    # sacct shows it at once; /slurmdb/jobs was seen a few seconds later
    assert wait_for(job_listed, 30, 2), (job_id, seen)
    status, _ = curl(cluster, "/slurm/v0.0.38/diag")
    assert status == 401
    # the unix socket answers too (the same JWT rule)
    sock = cluster.run(
        "ctl",
        [
            "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--unix-socket",
            "/run/slurmrestd/slurmrestd.socket", "http://ctl/slurm/v0.0.38/diag",
        ],
    )  # fmt: skip
    assert sock.stdout == "401", sock


def test_token_arguments_are_checked(cluster, deployed):
    for args in (["user=Bad;name"], ["user=sxuser", "lifespan=0"], ["user=sxuser", "lifespan=x"]):
        proc = cluster.cli(["salt-run", "--out=json", "slurm.token", *args, "to_tty=False"])
        assert proc.returncode == 1, proc.stdout
        error = json.loads(proc.stdout)["error"]
        assert ("user" if "Bad" in args[0] else "lifespan") in error, error


def test_status_and_verify_cover_the_rest_api(cluster, deployed):
    data, proc = salt_run(cluster, "slurm.status")
    assert proc.returncode == 0 and data["restd"]["mark"] is True, data.get("restd")
    table = cluster.cli(["salt-run", "slurm.status"]).stdout
    assert f"REST API on ctl:{PORT}: slurmrestd ok" in table, table
    result, proc = salt_run(cluster, "slurm.verify")
    assert proc.returncode == 0 and result["restd"]["ok"] is True, result.get("restd")
    assert "/slurm/v0.0.38/diag" in result["restd"]["evidence"]


def read_only_etc_slurm(cluster):
    """ctl's /etc/slurm read-only (as a file system remounted read-only after an I/O
    error), in ctl's own mount namespace: the host's files stay writable."""
    for argv in (
        ["mount", "--bind", "/etc/slurm", "/etc/slurm"],
        ["mount", "-o", "remount,bind,ro", "/etc/slurm"],
    ):
        proc = cluster.run("ctl", argv)
        assert proc.returncode == 0, (argv, proc.stderr)


def rest_logs(cluster):
    return "\n".join(
        cluster.run("ctl", ["tail", "-n", "15", f"/var/log/slurm/{name}.log"]).stdout
        for name in ("slurmctld", "slurmdbd", "slurmrestd")
    )


def test_a_failed_rotation_is_rolled_back_and_old_tokens_keep_working(cluster, deployed):
    """The new key cannot be written on ctl: salt-run exits 1 saying "rolled back", the
    master keeps the old key (and no previous one), a token made before answers 200."""
    old_key = master_key(cluster)
    old = token(cluster)
    assert accepted(*curl(cluster, "/slurm/v0.0.38/diag", old))
    read_only_etc_slurm(cluster)
    try:
        result, proc = salt_run(cluster, "slurm.rotate_jwt_key")
    finally:
        undone = cluster.run("ctl", ["umount", "/etc/slurm"])
    assert undone.returncode == 0, undone.stderr
    assert proc.returncode == 1 and result["result"] is False, (result, rest_logs(cluster))
    assert result["rolled_back"]["result"] is True, (result, rest_logs(cluster))
    assert "rolled back" in result["comment"] and "ctl" in result["failed"], result
    assert "Read-only file system" in result["comment"], result["comment"]
    assert not leaks(proc.stdout + proc.stderr, old_key)
    assert master_key(cluster) == old_key
    previous = os.path.join(cluster.file_root, "slurm_files", "jwt_hs256.key.previous")
    assert not os.path.exists(previous)
    status, body = curl(cluster, "/slurm/v0.0.38/diag", old)
    assert accepted(status, body), (status, body[:300], rest_logs(cluster))
    assert accepted(*curl(cluster, "/slurmdb/v0.0.38/jobs", old))


def test_a_rollback_that_fails_too_names_each_hosts_key_and_deploy_finishes_it(cluster, deployed):
    """slurmrestd cannot start on ctl (its binary made non-executable by a bind mount in
    ctl's own mount namespace): the rotation fails at its restart, and the rollback at the
    same restart. The report names the key ctl holds and ``salt-run slurm.deploy``; with
    the fault undone that command brings back a cluster where a token made before answers."""
    old_key = master_key(cluster)
    old_hash = "sha256:" + hashlib.sha256(old_key).hexdigest()
    old = token(cluster)
    binary = cluster.run("ctl", ["sh", "-c", "command -v slurmrestd"]).stdout.strip()
    assert binary.startswith("/"), binary
    copy = cluster.nodes["ctl"].dir / "slurmrestd-not-executable"
    copy.write_bytes(b"#!/bin/sh\nexit 1\n")
    copy.chmod(0o644)
    mounted = cluster.run("ctl", ["mount", "--bind", str(copy), binary])
    assert mounted.returncode == 0, mounted.stderr
    try:
        result, proc = salt_run(cluster, "slurm.rotate_jwt_key")
    finally:
        undone = cluster.run("ctl", ["umount", binary])
    assert undone.returncode == 0, undone.stderr
    assert proc.returncode == 1 and result["result"] is False, (result, rest_logs(cluster))
    assert result["failed"]["step"] == "restart slurmrestd", result
    back = result["rolled_back"]
    assert back["result"] is False and back["comment"].startswith("restart slurmrestd"), back
    assert back["holds"] == {"ctl": old_hash}, back
    comment = result["comment"]
    assert "rollback FAILED" in comment and f"ctl holds {old_hash}" in comment, comment
    assert "salt-run slurm.deploy" in comment, comment
    assert master_key(cluster) == old_key
    healed, proc = salt_run(cluster, "slurm.deploy")
    assert proc.returncode == 0 and healed["result"] is True, (
        healed.get("comment"),
        rest_logs(cluster),
    )
    status, body = curl(cluster, "/slurm/v0.0.38/diag", old)
    assert accepted(status, body), (status, body[:300], rest_logs(cluster))


def test_rotation_refuses_old_tokens_and_new_ones_work(cluster, deployed):
    """Also: after the faults of the tests before are undone, a rotation succeeds."""
    old_key = master_key(cluster)
    old = token(cluster)
    assert accepted(*curl(cluster, "/slurm/v0.0.38/diag", old))
    result, proc = salt_run(cluster, "slurm.rotate_jwt_key")
    assert proc.returncode == 0 and result["result"] is True, (
        result,
        proc.stderr[-2000:],
        rest_logs(cluster),
    )
    assert master_key(cluster) != old_key
    status, body = curl(cluster, "/slurm/v0.0.38/diag", old)
    assert not accepted(status, body), (status, body[:300])
    status, body = curl(cluster, "/slurmdb/v0.0.38/jobs", old)
    assert not accepted(status, body), (status, body[:300])
    new = token(cluster)
    assert accepted(*curl(cluster, "/slurm/v0.0.38/diag", new))
    assert accepted(*curl(cluster, "/slurmdb/v0.0.38/jobs", new))
    # and the cluster is as the pillar says: a deploy changes nothing
    again, proc = salt_run(cluster, "slurm.deploy")
    assert proc.returncode == 0 and again["controller"]["changed"] == 0, again.get("comment")


def test_diagnose_names_a_key_mismatch_and_a_refused_start(cluster, deployed):
    # a different key on the controller than the master's
    cluster.run("ctl", ["sh", "-c", "head -c 32 /dev/urandom > /etc/slurm/jwt_hs256.key"])
    report, proc = salt_run(cluster, "slurm.diagnose")
    causes = [c["cause"] for c in report["restd"]["causes"]]
    assert proc.returncode != 0 and "JWT key mismatch on ctl" in causes, report["restd"]
    # slurmrestd refused to start: its user made root by hand
    ret = cluster.salt("ctl", "slurm_node.daemon_control", ["slurmrestd", "stop"], timeout=60)
    assert ret == {"ctl": True}, ret
    env = "/etc/slurm/slurmrestd.env"
    cluster.run(
        "ctl", ["sed", "-i", "s/^SALTEXT_SLURMRESTD_USER=.*/SALTEXT_SLURMRESTD_USER=root/", env]
    )
    ret = cluster.salt("ctl", "slurm_node.daemon_control", ["slurmrestd", "start"], timeout=60)
    assert "did not start" in str(ret["ctl"]) and "root user" in str(ret["ctl"]), ret
    report, proc = salt_run(cluster, "slurm.diagnose")
    found = {c["cause"]: c for c in report["restd"]["causes"]}
    assert "slurmrestd refused to start on ctl" in found, found
    assert any(
        "root user" in line for line in found["slurmrestd refused to start on ctl"]["evidence"]
    )


def test_deploy_heals_the_rest_api_faults(cluster, deployed):
    healed, proc = salt_run(cluster, "slurm.deploy")
    assert proc.returncode == 0 and healed["result"] is True, healed.get("comment")
    report, proc = salt_run(cluster, "slurm.diagnose")
    assert proc.returncode == 0 and report["restd"]["causes"] == [], report["restd"]


def test_jwt_key_and_tokens_never_leak(cluster, deployed, bus):
    key = master_key(cluster)
    outputs = {}
    for label, (result, proc) in deployed.items():
        outputs[f"deploy {label}"] = proc.stdout + proc.stderr + json.dumps(result)
    for test in (True, False):
        ret = cluster.salt("ctl", "state.apply", ["slurm.controller"], timeout=300, test=test)
        outputs[f"state.apply test={test}"] = json.dumps(ret, default=str)
    for runner in ("slurm.status", "slurm.verify", "slurm.diagnose"):
        _, run = salt_run(cluster, runner)
        outputs[runner] = run.stdout + run.stderr
    time.sleep(1)
    outputs["events"] = json.dumps(bus.snapshot(), default=str)
    for label, path in cluster.log_paths().items():
        try:
            outputs[f"log {label}"] = open(path, errors="replace").read()  # noqa: SIM115
        except OSError:
            continue
    cmdlines = cluster.run(
        "ctl", ["sh", "-c", "for f in /proc/[0-9]*/cmdline; do tr '\\0' ' ' < $f; echo; done"]
    )
    outputs["argv on ctl"] = cmdlines.stdout
    for node in NODES:
        cachedir = cluster.minion_config(cluster.nodes[node])["cachedir"]
        copies = [os.path.join(d, f) for d, _, fs in os.walk(cachedir) for f in fs]
        assert not [c for c in copies if c.endswith("jwt_hs256.key")], copies
    found = {}
    for secret in [key, *TOKENS]:
        for label, text in outputs.items():
            if leaks(text, secret):
                found.setdefault(label, []).append(leaks(text, secret)[:1])
    assert not found, found
    assert TOKENS, "no token was made: the search proved nothing"
    assert "[DEBUG" in outputs["log ctl/minion"]
