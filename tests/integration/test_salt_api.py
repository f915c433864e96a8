"""salt-api on the test bed: a real ``salt-api`` (rest_cherrypy, TLS, ``file`` eauth) in
front of the bed's master, driven with curl and pepper exactly as the README's
"salt-api (REST)" section shows (``test_readme_shows_the_tested_config_and_calls`` holds the
two together). The eauth ACL is ``SALT_API_ACL`` in tests/conftest.py: ``slurmops`` may run
only the listed runners and ``slurm.cmd`` on ``n*`` only as sxuser; ``slurmview`` may only
read status. Denied calls are proven to change nothing."""

import hashlib
import json
import os
import re
import shlex
import subprocess

import pytest
import yaml

from tests.conftest import SALT_API_ACL, SALT_API_EAUTH
from tests.integration.conftest import COMPUTE
from tests.integration.helpers import wait_for
from tests.testbed.bed import REPO

pytestmark = pytest.mark.testbed

USERS = {"slurmops": "ops-secret-1", "slurmview": "view-secret-2", "bootstrap": "kv-secret-3"}

# The request bodies the README shows, in its order
STATUS = {"client": "runner", "fun": "slurm.status"}
DRAIN = {"client": "runner", "fun": "slurm.drain", "nodes": "n2", "reason": "API maintenance"}
RESUME = {"client": "runner", "fun": "slurm.resume", "nodes": "n2"}
SINFO_AS_SXUSER = {
    "client": "local",
    "tgt": "n1",
    "fun": "slurm.cmd",
    "arg": ["sinfo", "-N", "-h", "-o", "%N %t"],
    "kwarg": {"runas": "sxuser"},
}
DENIED_RUNNER = {"client": "runner", "fun": "slurm.create_munge_key", "force": True}
DENIED_RUNAS_ROOT = {
    "client": "local",
    "tgt": "n1",
    "fun": "slurm.cmd",
    "arg": ["sinfo", "-N", "-h"],
    "kwarg": {"runas": "root"},
}
KV_ISSUE = {"client": "runner", "fun": "keyvault.issue", "minion_id": "node42", "ttl": 600}
KV_LIST = {"client": "runner", "fun": "keyvault.list"}
KV_DENIED_REVOKE = {"client": "runner", "fun": "keyvault.revoke", "token_id": "abc123"}
README_BODIES = [STATUS, DRAIN, RESUME, SINFO_AS_SXUSER, DENIED_RUNNER, DENIED_RUNAS_ROOT]
README_KV_BODIES = [KV_ISSUE, KV_LIST, KV_DENIED_REVOKE]

# The pepper command lines the README shows, in its order
PEPPER_STATUS = ["--client", "runner", "--out", "json", "slurm.status"]
PEPPER_SINFO = ["--out", "json", "--json", json.dumps([SINFO_AS_SXUSER])]
PEPPER_DENIED_RUNNER = ["--client", "runner", "slurm.create_munge_key", "force=True"]
PEPPER_DENIED_STRING_RUNAS = ["n1", "slurm.cmd", "sinfo", "runas=sxuser"]
README_PEPPER = [PEPPER_STATUS, PEPPER_SINFO, PEPPER_DENIED_RUNNER, PEPPER_DENIED_STRING_RUNAS]
PEPPER_KV_ISSUE = ["--client", "runner", "--out", "json", "keyvault.issue", "minion_id=node43"]
PEPPER_KV_DENIED_REVOKE = ["--client", "runner", "keyvault.revoke", "token_id=abc123"]
README_KV_PEPPER = [PEPPER_KV_ISSUE, PEPPER_KV_DENIED_REVOKE]


def login_argv(url, cacert, jar, user, password):
    return [
        *("curl", "-sS", "--cacert", cacert, "-c", jar, f"{url}/login"),
        *("-H", "Accept: application/json"),
        *("-d", f"username={user}", "-d", f"password={password}", "-d", "eauth=file"),
    ]


def call_argv(url, cacert, jar, body):
    return [
        *("curl", "-sS", "--cacert", cacert, "-b", jar, f"{url}/"),
        *("-H", "Accept: application/json", "-H", "Content-Type: application/json"),
        *("-d", json.dumps(body)),
    ]


class Api:
    """curl and pepper against the bed's salt-api, as an admin would type them."""

    def __init__(self, cluster, url, workdir):
        self.cluster = cluster
        self.url = url
        self.cacert = str(cluster.api_dir / "cert.pem")
        self.workdir = workdir

    def jar(self, name):
        return str(self.workdir / f"{name}.cookies")

    def curl(self, argv):
        """Run a README curl command plus ``-w '\\n%{http_code}'``: returns (HTTP status,
        body as JSON or text)."""
        proc = subprocess.run(
            [*argv, "-w", "\n%{http_code}"],
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        assert proc.returncode == 0, (argv, proc.stderr)
        body, _, code = proc.stdout.rpartition("\n")
        try:
            body = json.loads(body)
        except ValueError:
            pass
        return int(code), body

    def login(self, user, password=None, jar=None):
        password = USERS[user] if password is None else password
        return self.curl(login_argv(self.url, self.cacert, self.jar(jar or user), user, password))

    def call(self, user, body):
        return self.curl(call_argv(self.url, self.cacert, self.jar(user), body))

    def pepper(self, user, args):
        # no CA configured anywhere: pepper does not check the certificate (README)
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
    code, body = api.call("intruder", STATUS)
    assert code == 401, body


def test_runner_status_has_a_row_per_node(api):
    code, body = api.call("slurmops", STATUS)
    assert code == 200, body
    status = ret(body)
    assert status["result"] is True, status
    rows = {row["node"]: row for row in status["nodes"]}
    assert sorted(rows) == COMPUTE
    assert status["controller"]["minion"] == "ctl"


def test_drain_and_resume_with_a_reason(api, cluster):
    code, body = api.call("slurmops", DRAIN)
    assert code == 200, body
    assert ret(body)["result"] is True, body
    try:
        assert sinfo_reasons(cluster) == {"n2": "API maintenance"}
    finally:
        code, body = api.call("slurmops", RESUME)
    assert code == 200 and ret(body)["result"] is True, body
    assert wait_for(lambda: sinfo_reasons(cluster) == {}, timeout=20), sinfo_reasons(cluster)


def test_runner_outside_the_acl_is_denied_and_does_nothing(api, cluster):
    before = munge_key_hash(cluster)
    code, body = api.call("slurmops", DENIED_RUNNER)
    assert code == 401, body
    assert munge_key_hash(cluster) == before


def test_wheel_client_is_disabled(api):
    # key management is not among netapi_enable_clients, whatever an ACL would say
    code, body = api.call("slurmops", {"client": "wheel", "fun": "key.list_all"})
    assert code == 400, body
    assert "Client disabled: &#x27;wheel&#x27;" in body or "Client disabled: 'wheel'" in body, body


def test_read_only_user_cannot_drain(api, cluster):
    code, body = api.call("slurmview", STATUS)
    assert code == 200 and sorted(r["node"] for r in ret(body)["nodes"]) == COMPUTE, body
    code, body = api.call("slurmview", {**DRAIN, "nodes": "n1", "reason": "not allowed"})
    assert code == 401, body
    assert sinfo_reasons(cluster) == {}


def slurm_cmd(arg, runas=None, tgt="n1"):
    low = {"client": "local", "tgt": tgt, "fun": "slurm.cmd", "arg": arg}
    if runas is not None:
        low["kwarg"] = {"runas": runas}
    return low


def test_slurm_cmd_as_the_pinned_user(api):
    code, body = api.call("slurmops", SINFO_AS_SXUSER)
    assert code == 200, body
    out = ret(body)["n1"]
    assert out["retcode"] == 0, out
    assert dict(line.split() for line in out["stdout"].splitlines()) == dict.fromkeys(
        COMPUTE, "idle"
    )
    code, body = api.call("slurmops", slurm_cmd(["srun", "-N1", "-w", "n1", "id", "-un"], "sxuser"))
    assert code == 200 and ret(body)["n1"]["stdout"].strip() == "sxuser", body


@pytest.mark.parametrize(
    "low",
    [
        DENIED_RUNAS_ROOT,  # another user than the pin
        slurm_cmd(["sinfo", "-N", "-h"], "sxuser2"),  # the pin is anchored: ^sxuser$
        slurm_cmd(["sinfo", "-N", "-h"]),  # no runas: the minion's user, root
        slurm_cmd(["sinfo", "-N", "-h", "runas=sxuser"]),  # key=value as a string argument
        slurm_cmd(["sinfo", "-N", "-h"], "sxuser", tgt="ctl"),  # only n* in the ACL
    ],
    ids=["runas-root", "runas-prefix", "no-runas", "runas-as-string-arg", "target-ctl"],
)
def test_slurm_cmd_outside_the_pin_is_denied(api, low):
    code, body = api.call("slurmops", low)
    assert code == 401, body


def test_a_smuggled_runas_string_does_not_beat_the_pinned_kwarg(api):
    # the minion turns "runas=root" into a keyword argument; the ACL-checked kwarg dict
    # comes last in the publication and wins
    low = slurm_cmd(["srun", "-N1", "-w", "n1", "id", "-un", "runas=root"], "sxuser")
    code, body = api.call("slurmops", low)
    assert code == 200, body
    assert ret(body)["n1"]["stdout"].strip() == "sxuser", body


def test_pepper_runner_and_local_calls(api):
    proc = api.pepper("slurmops", PEPPER_STATUS)
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    status = json.loads(proc.stdout)
    assert sorted(r["node"] for r in status["nodes"]) == COMPUTE, status
    proc = api.pepper("slurmops", PEPPER_SINFO)
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    out = json.loads(proc.stdout)["n1"]
    assert sorted(line.split()[0] for line in out["stdout"].splitlines()) == COMPUTE, out


def test_pepper_denied_calls(api, cluster):
    before = munge_key_hash(cluster)
    proc = api.pepper("slurmops", PEPPER_DENIED_RUNNER)
    assert proc.returncode != 0
    assert "Authentication denied" in proc.stderr, (proc.stdout, proc.stderr)
    assert munge_key_hash(cluster) == before
    # pepper sends key=value of a local call as a string argument, which the ACL's kwargs
    # pin cannot see: pinned calls go through --json (above)
    proc = api.pepper("slurmops", PEPPER_DENIED_STRING_RUNAS)
    assert proc.returncode != 0
    assert "Authentication denied" in proc.stderr, (proc.stdout, proc.stderr)


# ---------------------------------------------------------------------- keyvault.issue
def kv_tokens(api):
    code, body = api.call("bootstrap", KV_LIST)
    assert code == 200, body
    return {t["token_id"]: t for t in ret(body)["tokens"]}


def master_finger(cluster):
    import salt.utils.crypt  # noqa: PLC0415

    return salt.utils.crypt.pem_finger(
        str(cluster.master_dir / "pki" / "master.pub"), sum_type="sha256"
    )


@pytest.fixture
def revoke_after(cluster):
    issued = []
    yield issued
    for token_id in issued:
        cluster.cli(["salt-run", "keyvault.revoke", f"token_id={token_id}"])


def test_keyvault_issue_through_the_api_and_only_that(api, cluster, revoke_after):
    code, body = api.call("bootstrap", KV_ISSUE)
    assert code == 200, body
    bundle = ret(body)
    revoke_after.append(bundle["token_id"])
    assert bundle["minion_id"] == "node42"
    assert bundle["token"].startswith(bundle["token_id"] + ".")
    assert bundle["master_finger"] == master_finger(cluster)
    # the token reaches the CLI on stdin (a shell builtin's argument), never in any argv
    assert bundle["command"].startswith(f"echo '{bundle['token']}' | salt-keyvault-bootstrap ")
    assert "--token=- " in bundle["command"]
    listed = kv_tokens(api)[bundle["token_id"]]
    assert listed["minion_id"] == "node42" and listed["state"] == "issued"
    secret = bundle["token"].split(".", 1)[1]
    code, body = api.call("bootstrap", KV_LIST)
    assert secret not in json.dumps(body)
    # revoking is not in this user's ACL, nor is issuing in the operators'
    code, body = api.call("bootstrap", {**KV_DENIED_REVOKE, "token_id": bundle["token_id"]})
    assert code == 401, body
    assert kv_tokens(api)[bundle["token_id"]]["state"] == "issued"
    code, body = api.call("slurmops", KV_ISSUE)
    assert code == 401, body


def test_keyvault_issue_with_pepper(api, cluster, revoke_after):
    before = set(kv_tokens(api))
    proc = api.pepper("bootstrap", PEPPER_KV_ISSUE)
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    bundle = json.loads(proc.stdout)
    revoke_after.append(bundle["token_id"])
    assert bundle["minion_id"] == "node43" and bundle["token_id"] not in before
    assert bundle["master_finger"] == master_finger(cluster)
    proc = api.pepper(
        "bootstrap", [*PEPPER_KV_DENIED_REVOKE[:-1], f"token_id={bundle['token_id']}"]
    )
    assert proc.returncode != 0 and "Authentication denied" in proc.stderr, proc.stderr
    assert kv_tokens(api)[bundle["token_id"]]["state"] == "issued"


def readme_section(title="## salt-api (REST)\n"):
    text = (REPO / "README.md").read_text()
    return text.split(title, 1)[1].split("\n## ", 1)[0]


def shell_commands(section, program):
    """Each ``program …`` command of the section's bash blocks, as argv (as bash splits it,
    without expanding variables)."""
    blocks = re.findall(r"```bash\n(.*?)```", section, re.S)
    lines = "\n".join(blocks).replace("\\\n", " ").splitlines()
    return [shlex.split(line, comments=True) for line in lines if line.startswith(program + " ")]


def test_readme_shows_the_tested_config_and_calls():
    section = readme_section()
    config = yaml.safe_load(re.search(r"```yaml\n(.*?)```", section, re.S).group(1))
    eauth = config["external_auth"]["file"]
    tested = SALT_API_EAUTH["external_auth"]["file"]
    assert {k: v for k, v in eauth.items() if not k.startswith("^")} == SALT_API_ACL
    assert {k: eauth[k] for k in ("^filetype", "^hashtype")} == {
        k: tested[k] for k in ("^filetype", "^hashtype")
    }
    assert config["netapi_enable_clients"] == ["local", "runner"]
    assert {"ssl_crt", "ssl_key"} <= set(config["rest_cherrypy"])
    assert "disable_ssl" not in config["rest_cherrypy"]

    placeholders = ("$API", "cert.pem", "~/.salt-api.cookies")
    assert shell_commands(section, "curl") == [
        login_argv(*placeholders, "slurmops", "$PW"),
        *(call_argv(*placeholders, body) for body in README_BODIES),
    ]
    assert [argv[1:] for argv in shell_commands(section, "pepper")] == README_PEPPER
    kv_section = readme_section("### KeyVault through salt-api\n")
    assert shell_commands(kv_section, "curl") == [
        call_argv(*placeholders, body) for body in README_KV_BODIES
    ]
    assert [argv[1:] for argv in shell_commands(kv_section, "pepper")] == README_KV_PEPPER

    # the users-file line the README builds with sha256sum is the one the bed writes
    command = re.search(r"`(printf '%s:%s\\n' slurmops .*?)`", section).group(1)
    line = subprocess.run(
        ["bash", "-c", command],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": os.environ["PATH"], "PW": USERS["slurmops"]},
    ).stdout
    assert line == f"slurmops:{hashlib.sha256(USERS['slurmops'].encode()).hexdigest()}\n"
