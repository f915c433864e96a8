"""slurm:restd: pillar validation, the plan, HS256 JWT signing, conf rendering and
slurmrestd's files (salt_ext.lib.node.restd)."""

import base64
import hashlib
import hmac
import json

import pytest

from salt_ext.lib.conf import generate
from salt_ext.lib.node import dbd, restd, settings
from salt_ext.lib.node.settings import SettingsError

PILLAR = {"cluster_name": "hpc", "controller": "ctl"}
DEBIAN = {"os_family": "Debian", "os": "Debian", "osrelease": "12", "init": "systemd"}
MACHINE = {
    "init_grain": "systemd",
    "systemd_booted": True,
    "pid1_name": "systemd",
    "accounts": {"munge": None, "slurm": None},
    "pkg_install_available": True,
}
KEY = bytes(range(32))


def validate(**restd_cfg):
    return settings.validate({**PILLAR, "restd": restd_cfg})


def raises_naming(key, **restd_cfg):
    with pytest.raises(SettingsError) as info:
        validate(**restd_cfg)
    assert str(info.value).startswith(f"{key}:"), info.value
    return str(info.value)


# --- the pillar ---------------------------------------------------------------------------


def test_off_by_default_with_port_6820_and_user_slurmrestd():
    cfg = settings.validate(PILLAR)
    assert cfg["restd"] == {"enabled": False, "port": 6820, "user": "slurmrestd"}


@pytest.mark.parametrize("value", ["yes", 1, None])
def test_enabled_must_be_a_bool(value):
    raises_naming("slurm:restd:enabled", enabled=value)


@pytest.mark.parametrize("port", [0, 65536, "6820", True, 6817, 6818])
def test_bad_or_taken_port_names_the_key(port):
    raises_naming("slurm:restd:port", enabled=True, port=port)


def test_port_of_slurmdbd_is_taken_when_accounting_is_on():
    with pytest.raises(SettingsError, match="^slurm:restd:port: 6819 is slurm:accounting:port"):
        settings.validate({**PILLAR, "accounting": {"enabled": True}, "restd": {"port": 6819}})


@pytest.mark.parametrize("user", ["root", "slurm", "munge"])
def test_root_slurmuser_and_munge_are_refused(user):
    message = raises_naming("slurm:restd:user", enabled=True, user=user)
    assert "refuses" in message


def test_a_slurmuser_override_is_refused_too():
    with pytest.raises(SettingsError, match="^slurm:restd:user"):
        settings.validate(
            {**PILLAR, "conf": {"overrides": {"SlurmUser": "svc"}}, "restd": {"user": "svc"}}
        )


@pytest.mark.parametrize("user", ["", "Bad", "a b", "x" * 33, "1abc", 5, None, "a;b"])
def test_user_must_be_a_login_name(user):
    raises_naming("slurm:restd:user", enabled=True, user=user)


# --- the plan -------------------------------------------------------------------------------


def plan(role, minion, grains=DEBIAN, **pillar):
    grains = {**grains, "id": minion, "host": minion}
    return settings.plan(
        {**PILLAR, "restd": {"enabled": True}, **pillar}, grains, role, dict(MACHINE)
    )


def test_controller_runs_slurmrestd_after_slurmctld_with_its_packages():
    p = plan("controller", "ctl")
    assert p["daemons"] == ["munge", "slurmctld", "slurmrestd"]
    assert {"slurmrestd", "slurm-wlm-jwt-plugin"} <= set(p["packages"])
    assert p["restd"]["is_host"] and p["restd"]["jwt_key"] == "/etc/slurm/jwt_hs256.key"


def test_nodes_get_the_jwt_plugin_but_no_slurmrestd():
    p = plan("node", "n1")
    assert "slurmrestd" not in p["daemons"] and "slurmrestd" not in p["packages"]
    assert "slurm-wlm-jwt-plugin" in p["packages"]
    assert not p["restd"]["is_host"]


def test_off_changes_nothing_in_the_plan():
    p = plan("controller", "ctl", restd={"enabled": False})
    assert "slurmrestd" not in p["daemons"]
    assert "slurm-wlm-jwt-plugin" not in p["packages"]
    assert p["accounting"]["jwt_key"] is None


# --- conf rendering ---------------------------------------------------------------------------


def hardware():
    return {
        "n1": {
            "NodeName": "n1",
            "CPUs": 2,
            "Boards": 1,
            "SocketsPerBoard": 1,
            "CoresPerSocket": 2,
            "ThreadsPerCore": 1,
            "RealMemory": 4000,
            "gpus": {"count": 0, "type": None, "files": [], "autodetect": None},
        }
    }


def test_slurm_conf_gets_jwt_as_the_alternative_authentication():
    on = generate.render(validate(enabled=True), hardware())["files"]["slurm.conf"]
    lines = on.splitlines()
    assert "AuthAltTypes=auth/jwt" in lines
    assert "AuthAltParameters=jwt_key=/etc/slurm/jwt_hs256.key" in lines
    off = generate.render(validate(), hardware())["files"]["slurm.conf"]
    assert "AuthAlt" not in off


def test_a_base_file_with_another_auth_alt_value_is_refused():
    base = "AuthAltTypes=auth/other\n"
    with pytest.raises(generate.ConfGenError, match="slurm:restd:enabled"):
        generate.render(validate(enabled=True), hardware(), base_text=base)


def test_slurmdbd_conf_names_the_key_only_with_restd_on():
    cfg = settings.validate({**PILLAR, "accounting": {"enabled": True}})
    acct = {**settings.accounting(cfg), "jwt_key": restd.KEY_PATH}
    text = dbd.render_conf(acct, "secret-pass-1")
    assert "AuthAltTypes=auth/jwt\n" in text
    assert f"AuthAltParameters=jwt_key={restd.KEY_PATH}\n" in text
    acct["jwt_key"] = None
    assert "AuthAlt" not in dbd.render_conf(acct, "secret-pass-1")


# --- JWT ----------------------------------------------------------------------------------------


def b64decode(part):
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def test_sign_makes_an_hs256_jwt_with_slurms_claims():
    token = restd.sign(KEY, "alice", 600, now=1_700_000_000)
    header, payload, signature = token.split(".")
    assert json.loads(b64decode(header)) == {"alg": "HS256", "typ": "JWT"}
    assert json.loads(b64decode(payload)) == {
        "iat": 1_700_000_000,
        "exp": 1_700_000_600,
        "sun": "alice",
    }
    # an independent HMAC over the signing input: what libjwt checks in slurmctld
    expected = hmac.new(KEY, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    assert b64decode(signature) == expected
    assert "=" not in token  # base64url without padding (RFC 7515)


def test_another_key_gives_another_signature():
    one = restd.sign(KEY, "alice", 60, now=1)
    other = restd.sign(bytes(32), "alice", 60, now=1)
    assert one.rsplit(".", 1)[0] == other.rsplit(".", 1)[0] and one != other


@pytest.mark.parametrize("lifespan", [0, -5, restd.MAX_LIFESPAN + 1, "x", None, True])
def test_lifespan_is_bounded(lifespan):
    with pytest.raises(restd.RestdError, match="^lifespan:"):
        restd.sign(KEY, "alice", lifespan)


@pytest.mark.parametrize("user", ["Alice", "a b", "", "-x", "a/b", None])
def test_user_is_a_login_name(user):
    with pytest.raises(restd.RestdError, match="^user:"):
        restd.sign(KEY, user, 60)


def test_new_key_is_32_random_bytes_and_only_its_hash_is_shown(tmp_path):
    key = restd.new_key()
    assert len(key) == 32 and key != restd.new_key()
    path = tmp_path / "k"
    path.write_bytes(key)
    assert restd.key_hash(path) == "sha256:" + hashlib.sha256(key).hexdigest()
    path.write_bytes(b"short")
    with pytest.raises(restd.RestdError, match="5 bytes"):
        restd.read_key(path)


# --- slurmrestd's files ------------------------------------------------------------------------


def test_env_file_listens_on_socket_and_port_with_jwt_only():
    env = restd.parse_env(restd.env_text({"port": 7000, "user": "rest"}, accounting=True))
    assert env == {
        "SLURM_JWT": "daemon",
        "SLURMRESTD_AUTH_TYPES": "rest_auth/jwt",
        "SLURMRESTD_OPENAPI_PLUGINS": "openapi/v0.0.38,openapi/dbv0.0.38",
        "SLURMRESTD_LISTEN": "unix:/run/slurmrestd/slurmrestd.socket,:7000",
        "SALTEXT_SLURMRESTD_USER": "rest",
    }


def test_without_accounting_the_db_plugin_is_not_loaded():
    # 22.05's openapi/dbv0.0.38 stops slurmrestd: "slurm not configured with slurmdbd"
    env = restd.parse_env(restd.env_text({"port": 7000, "user": "rest"}, accounting=False))
    assert env["SLURMRESTD_OPENAPI_PLUGINS"] == "openapi/v0.0.38"


def test_systemd_drop_in_replaces_debians_root_unix_socket_start():
    path, text, mode = restd.launcher("systemd", {"port": 6820, "user": "rest"})
    assert path == "/etc/systemd/system/slurmrestd.service.d/saltext-slurm.conf"
    lines = text.splitlines()
    assert {"User=rest", "Group=rest", "RuntimeDirectory=slurmrestd"} <= set(lines)
    # ExecStart= resets Debian's (root's unix:/run/slurmrestd.socket) before ours
    assert lines.index("ExecStart=") < lines.index("ExecStart=/usr/sbin/slurmrestd")
    assert f"EnvironmentFile={restd.ENV_FILE}" in lines and mode == 0o644


@pytest.mark.parametrize("manager", ["sysvinit", "openrc"])
def test_init_scripts_run_it_as_the_user_with_a_pid_file(manager):
    path, text, mode = restd.launcher(manager, {"port": 6820, "user": "rest"})
    assert path == "/etc/init.d/slurmrestd" and mode == 0o755
    assert restd.PIDFILE in text and restd.ENV_FILE in text and "rest:rest" in text


def test_direct_needs_no_file():
    assert restd.launcher("direct", {"port": 6820, "user": "rest"}) is None


# --- the conf dir: Ubuntu <= 20.04 keeps Slurm's files in /etc/slurm-llnl -----------------

FOCAL = {"os_family": "Debian", "os": "Ubuntu", "osrelease": "20.04", "init": "systemd"}
JAMMY = {"os_family": "Debian", "os": "Ubuntu", "osrelease": "22.04", "init": "systemd"}


@pytest.mark.parametrize(
    ("grains", "conf_dir"), [(FOCAL, "/etc/slurm-llnl"), (JAMMY, "/etc/slurm")]
)
def test_key_env_file_and_slurmdbd_conf_follow_slurm_conf_by_grains(grains, conf_dir):
    pillar = {"accounting": {"enabled": True, "storage": {"password": "pw-123456"}}}
    p = plan("controller", "ctl", grains=grains, **pillar)
    assert p["conf_dir"] == conf_dir and p["slurm_conf"] == f"{conf_dir}/slurm.conf"
    assert p["restd"]["jwt_key"] == f"{conf_dir}/jwt_hs256.key"
    assert p["restd"]["env_file"] == f"{conf_dir}/slurmrestd.env"
    assert p["restd"]["files"][0] == f"{conf_dir}/slurmrestd.env"
    assert p["accounting"]["slurmdbd_conf"] == f"{conf_dir}/slurmdbd.conf"
    # slurmdbd.conf names the key where this machine keeps it
    assert p["accounting"]["jwt_key"] == f"{conf_dir}/jwt_hs256.key"
    assert settings.conf_dir(grains) == conf_dir


@pytest.mark.parametrize("manager", ["systemd", "sysvinit", "openrc"])
def test_the_launchers_read_the_env_file_of_the_conf_dir(manager):
    rest = plan("controller", "ctl", grains=FOCAL)["restd"]
    _, text, _ = restd.launcher(manager, rest)
    assert "/etc/slurm-llnl/slurmrestd.env" in text and "/etc/slurm/" not in text


def test_the_direct_manager_reads_the_env_file_beside_slurm_conf():
    from salt_ext.lib.node import direct  # noqa: PLC0415

    assert direct.spec("slurmrestd")["env_file"] == "/etc/slurm/slurmrestd.env"
    info = direct.spec("slurmrestd", "/etc/slurm-llnl/slurm.conf")
    assert info["env_file"] == "/etc/slurm-llnl/slurmrestd.env"


def test_slurm_conf_names_the_key_in_the_controllers_conf_dir(tmp_path):
    from salt_ext.lib.ops import conf as conf_ops  # noqa: PLC0415
    from tests.unit.fakecluster import PILLAR as FAKE_PILLAR  # noqa: PLC0415
    from tests.unit.fakecluster import FakeCluster  # noqa: PLC0415

    cluster = FakeCluster(tmp_path)
    pillar = {**FAKE_PILLAR, "restd": {"enabled": True}}
    ctx = cluster.context(pillar=pillar)
    assert conf_ops.jwt_key_path(ctx) == "/etc/slurm/jwt_hs256.key"  # no grains cached
    cluster.cached_grains = {FAKE_PILLAR["controller"]: FOCAL}
    assert conf_ops.jwt_key_path(ctx) == "/etc/slurm-llnl/jwt_hs256.key"
    cluster.cached_grains = {FAKE_PILLAR["controller"]: {"os_family": "Plan9"}}
    assert conf_ops.jwt_key_path(ctx) == "/etc/slurm/jwt_hs256.key"
    text = generate.render(
        validate(enabled=True), hardware(), jwt_key="/etc/slurm-llnl/jwt_hs256.key"
    )["files"]["slurm.conf"]
    assert "AuthAltParameters=jwt_key=/etc/slurm-llnl/jwt_hs256.key" in text.splitlines()


def test_openrc_script_only_uses_net_which_debians_openrc_does_not_provide():
    # `need net` on a booted Debian OpenRC host: "slurmrestd needs service(s) net", not started
    _, text, _ = restd.launcher("openrc", {"port": 6820, "user": "rest"})
    depend = text.split("depend() {", 1)[1].split("}", 1)[0].split()
    assert "need" not in depend and depend[:2] == ["use", "net"]
    assert "after munge slurmctld" in text


def test_openrc_script_logs_with_either_start_stop_daemon(tmp_path):
    """Debian's OpenRC runs dpkg's start-stop-daemon (``--output``), Alpine's its own
    (``--stdout``/``--stderr`` from output_log/error_log): the script picks by asking it."""
    import subprocess  # noqa: PLC0415

    _, text, _ = restd.launcher("openrc", {"port": 6820, "user": "rest"})
    body = text.split("\ndepend()", 1)[0].split("\n", 1)[1]  # the assignments, no shebang
    seen = {}
    for name, helptext in {
        "openrc": "  -1, --stdout <file>",
        "dpkg": "  -O, --output <file>",
    }.items():
        fake = tmp_path / name
        fake.mkdir()
        (fake / "start-stop-daemon").write_text(f"#!/bin/sh\necho '{helptext}'\n")
        (fake / "start-stop-daemon").chmod(0o755)
        script = (
            body + '\necho "out=${output_log-} err=${error_log-} args=${start_stop_daemon_args-}"\n'
        )
        proc = subprocess.run(
            ["/bin/sh", "-c", script],
            env={"PATH": f"{fake}:/usr/bin:/bin"},
            capture_output=True,
            text=True,
            check=True,
        )
        seen[name] = proc.stdout.strip()
    assert seen["openrc"] == f"out={restd.LOG} err={restd.LOG} args="
    assert seen["dpkg"] == f"out= err= args=--output {restd.LOG}"
