"""salt-api on the test bed: a real ``salt-api`` (rest_cherrypy, TLS, ``file`` eauth) in
front of the bed's master, driven with curl and pepper exactly as the README's
"salt-api (REST)" section shows. The eauth ACL is ``SALT_API_ACL`` in tests/conftest.py:
``slurmops`` may run only the listed runners and ``slurm.cmd`` on ``n*`` only as sxuser;
``slurmview`` may only read status. Denied calls are proven to change nothing."""

import hashlib
import json
import os
import subprocess

import pytest

from tests.conftest import SALT_API_ACL
from tests.integration.conftest import COMPUTE
from tests.integration.helpers import wait_for

pytestmark = pytest.mark.testbed

USERS = {"slurmops": "ops-secret-1", "slurmview": "view-secret-2"}


class Api:
    """curl and pepper against the bed's salt-api, as an admin would type them."""

    def __init__(self, cluster, url, workdir):
        self.cluster = cluster
        self.url = url
        self.cacert = str(cluster.api_dir / "cert.pem")
        self.workdir = workdir

    def cookies(self, user):
        return str(self.workdir / f"{user}.cookies")

    def curl(self, *args):
        """``curl ARGS -w '\\n%{http_code}'``: returns (HTTP status, body as JSON or text)."""
        proc = subprocess.run(
            ["curl", "-sS", "--cacert", self.cacert, "-w", "\n%{http_code}", *args],
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        assert proc.returncode == 0, (args, proc.stderr)
        body, _, code = proc.stdout.rpartition("\n")
        try:
            body = json.loads(body)
        except ValueError:
            pass
        return int(code), body

    def login(self, user, password=None, jar=None):
        # README: curl -sS --cacert salt-api.crt -c ~/.salt-api.cookies
        #   https://salt:8000/login -H 'Accept: application/json'
        #   -d username=slurmops -d password="$PASSWORD" -d eauth=file
        return self.curl(
            "-c",
            self.cookies(jar or user),
            f"{self.url}/login",
            "-H",
            "Accept: application/json",
            "-d",
            f"username={user}",
            "-d",
            f"password={USERS[user] if password is None else password}",
            "-d",
            "eauth=file",
        )

    def call(self, user, lowstate):
        # README: curl -sS --cacert salt-api.crt -b ~/.salt-api.cookies https://salt:8000/
        #   -H 'Accept: application/json' -H 'Content-Type: application/json' -d '{...}'
        return self.curl(
            "-b",
            self.cookies(user),
            f"{self.url}/",
            "-H",
            "Accept: application/json",
            "-H",
            "Content-Type: application/json",
            "-d",
            json.dumps(lowstate),
        )

    def pepper(self, user, *args):
        env = {
            "PATH": os.environ["PATH"],
            "HOME": str(self.workdir),
            "SALTAPI_URL": self.url,
            "SALTAPI_USER": user,
            "SALTAPI_PASS": USERS[user],
            "SALTAPI_EAUTH": "file",
        }
        return subprocess.run(
            [self.cluster.bin("pepper"), *args],
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
            env=env,
            cwd=str(self.workdir),
        )


@pytest.fixture(scope="module")
def api(cluster, provisioned, tmp_path_factory):
    url = cluster.start_salt_api(USERS)
    client = Api(cluster, url, tmp_path_factory.mktemp("salt-api"))
    for user in USERS:
        code, body = client.login(user)
        assert code == 200, (user, code, body)
    yield client
    cluster.stop_salt_api()


def ret(body):
    """The one return of a single-lowstate call."""
    assert isinstance(body, dict) and len(body["return"]) == 1, body
    return body["return"][0]


def sinfo_reasons(cluster):
    proc = cluster.run("ctl", ["sinfo", "-R", "-h", "-N", "-o", "%N|%E"])
    assert proc.returncode == 0, proc.stderr
    return dict(line.split("|", 1) for line in proc.stdout.splitlines() if line.strip())


def munge_key_hash(cluster):
    return hashlib.sha256((cluster.cluster_files_dir() / "munge.key").read_bytes()).hexdigest()


def test_login_gives_a_token_with_the_acl_of_the_user(api):
    code, body = api.login("slurmops")
    assert code == 200
    login = ret(body)
    assert login["eauth"] == "file" and login["user"] == "slurmops"
    assert len(login["token"]) >= 32
    assert login["perms"] == SALT_API_ACL["slurmops"]


def test_wrong_password_is_401(api):
    code, body = api.login("slurmops", password="not-the-password", jar="intruder")  # noqa: S106
    assert code == 401, body
    code, body = api.call("intruder", {"client": "runner", "fun": "slurm.status"})
    assert code == 401, body


def test_runner_status_has_a_row_per_node(api):
    code, body = api.call("slurmops", {"client": "runner", "fun": "slurm.status"})
    assert code == 200, body
    status = ret(body)
    assert status["result"] is True, status
    rows = {row["node"]: row for row in status["nodes"]}
    assert sorted(rows) == COMPUTE
    assert status["controller"]["minion"] == "ctl"


def test_drain_and_resume_with_a_reason(api, cluster):
    code, body = api.call(
        "slurmops",
        {"client": "runner", "fun": "slurm.drain", "nodes": "n2", "reason": "API maintenance"},
    )
    assert code == 200, body
    assert ret(body)["result"] is True, body
    try:
        assert sinfo_reasons(cluster) == {"n2": "API maintenance"}
    finally:
        code, body = api.call(
            "slurmops", {"client": "runner", "fun": "slurm.resume", "nodes": "n2"}
        )
    assert code == 200 and ret(body)["result"] is True, body
    assert wait_for(lambda: sinfo_reasons(cluster) == {}, timeout=20), sinfo_reasons(cluster)


def test_runner_outside_the_acl_is_denied_and_does_nothing(api, cluster):
    before = munge_key_hash(cluster)
    code, body = api.call(
        "slurmops", {"client": "runner", "fun": "slurm.create_munge_key", "force": True}
    )
    assert code == 401, body
    assert munge_key_hash(cluster) == before


def test_read_only_user_cannot_drain(api, cluster):
    code, body = api.call("slurmview", {"client": "runner", "fun": "slurm.status"})
    assert code == 200 and sorted(r["node"] for r in ret(body)["nodes"]) == COMPUTE, body
    code, body = api.call(
        "slurmview",
        {"client": "runner", "fun": "slurm.drain", "nodes": "n1", "reason": "not allowed"},
    )
    assert code == 401, body
    assert sinfo_reasons(cluster) == {}


def slurm_cmd(api, arg, runas=None, tgt="n1", user="slurmops"):
    low = {"client": "local", "tgt": tgt, "fun": "slurm.cmd", "arg": arg}
    if runas is not None:
        low["kwarg"] = {"runas": runas}
    return api.call(user, low)


def test_slurm_cmd_as_the_pinned_user(api):
    code, body = slurm_cmd(api, ["sinfo", "-N", "-h", "-o", "%N %t"], runas="sxuser")
    assert code == 200, body
    out = ret(body)["n1"]
    assert out["retcode"] == 0, out
    assert dict(line.split() for line in out["stdout"].splitlines()) == dict.fromkeys(
        COMPUTE, "idle"
    )
    code, body = slurm_cmd(api, ["srun", "-N1", "-w", "n1", "id", "-un"], runas="sxuser")
    assert code == 200 and ret(body)["n1"]["stdout"].strip() == "sxuser", body


@pytest.mark.parametrize(
    ("arg", "runas", "tgt"),
    [
        (["sinfo", "-N", "-h"], "root", "n1"),  # another user than the pin
        (["sinfo", "-N", "-h"], "sxuser2", "n1"),  # the pin is anchored: ^sxuser$
        (["sinfo", "-N", "-h"], None, "n1"),  # no runas: the minion's user, root
        (["sinfo", "-N", "-h", "runas=root"], None, "n1"),  # key=value as a string
        (["sinfo", "-N", "-h"], "sxuser", "ctl"),  # only n* in the ACL
    ],
    ids=["runas-root", "runas-prefix", "no-runas", "runas-as-string-arg", "target-ctl"],
)
def test_slurm_cmd_outside_the_pin_is_denied(api, arg, runas, tgt):
    code, body = slurm_cmd(api, arg, runas=runas, tgt=tgt)
    assert code == 401, body


def test_a_smuggled_runas_string_does_not_beat_the_pinned_kwarg(api):
    # the minion turns "runas=root" into a keyword argument; the ACL-checked kwarg dict
    # comes last in the publication and wins
    code, body = slurm_cmd(
        api, ["srun", "-N1", "-w", "n1", "id", "-un", "runas=root"], runas="sxuser"
    )
    assert code == 200, body
    assert ret(body)["n1"]["stdout"].strip() == "sxuser", body


def test_pepper_runner_and_local_calls(api):
    proc = api.pepper("slurmops", "--client", "runner", "--out", "json", "slurm.status")
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    status = json.loads(proc.stdout)
    assert sorted(r["node"] for r in status["nodes"]) == COMPUTE, status
    low = {
        "client": "local",
        "tgt": "n1",
        "fun": "slurm.cmd",
        "arg": ["sinfo", "-N", "-h", "-o", "%N %t"],
        "kwarg": {"runas": "sxuser"},
    }
    proc = api.pepper("slurmops", "--out", "json", "--json", json.dumps([low]))
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    out = json.loads(proc.stdout)["n1"]
    assert sorted(line.split()[0] for line in out["stdout"].splitlines()) == COMPUTE, out


def test_pepper_denied_calls(api, cluster):
    before = munge_key_hash(cluster)
    proc = api.pepper("slurmops", "--client", "runner", "slurm.create_munge_key", "force=True")
    assert proc.returncode != 0
    assert "Authentication denied" in proc.stderr, (proc.stdout, proc.stderr)
    assert munge_key_hash(cluster) == before
    # pepper sends key=value of a local call as a string argument, which the ACL's kwargs
    # pin cannot see: pinned calls go through --json (above)
    proc = api.pepper("slurmops", "n1", "slurm.cmd", "sinfo", "runas=sxuser")
    assert proc.returncode != 0
    assert "Authentication denied" in proc.stderr, (proc.stdout, proc.stderr)
