"""salt_ext.lib.node.dbd: slurmdbd.conf, the SQL for the database and its user, and the
DB password's threat model (the module docstring names these tests)."""

import base64
import os
import stat
import subprocess

import pytest

from salt_ext.lib.node import dbd, settings
from salt_ext.lib.util import command

PASSWORD = "S3cret-Pw_42!"
ACCT = settings.accounting(
    settings.validate(
        {
            "controller": "ctl",
            "accounting": {"enabled": True, "storage": {"password": PASSWORD}},
        }
    ),
    "ctl",
)
EMPTY = {"database": False, "user": False, "hash": "", "privileges": False}


def test_render_conf_has_every_key_slurmdbd_needs():
    text = dbd.render_conf(ACCT, PASSWORD)
    values = dict(line.split("=", 1) for line in text.splitlines() if not line.startswith("#"))
    assert values == {
        "AuthType": "auth/munge",
        "DbdHost": "ctl",
        "DbdPort": "6819",
        "SlurmUser": "slurm",
        "PidFile": dbd.SLURMDBD_PIDFILE,
        "LogFile": dbd.SLURMDBD_LOG,
        "StorageType": "accounting_storage/mysql",
        "StorageHost": "localhost",
        "StoragePort": "3306",
        "StorageLoc": "slurm_acct_db",
        "StorageUser": "slurm",
        "StoragePass": PASSWORD,
    }


def test_render_conf_external_storage_names_the_server():
    cfg = settings.validate(
        {
            "controller": "ctl",
            "accounting": {
                "enabled": True,
                "host": "dbd1",
                "storage": {"type": "external", "host": "db.example.org", "port": 3307},
            },
        }
    )
    acct = settings.accounting(cfg, "dbd1")
    text = dbd.render_conf(acct, PASSWORD)
    assert "StorageHost=db.example.org\n" in text and "StoragePort=3307\n" in text
    assert "DbdHost=dbd1\n" in text and acct["is_dbd_host"] and not acct["local_db"]


def test_fingerprint_does_not_depend_on_the_password():
    one = dbd.conf_fingerprint(dbd.render_conf(ACCT, PASSWORD))
    two = dbd.conf_fingerprint(dbd.render_conf(ACCT, "another-password"))
    assert one == two and one.startswith("sha256:")
    assert dbd.conf_fingerprint(None) is None


def test_plan_conf_reports_a_changed_password_without_it(tmp_path):
    path = tmp_path / "slurmdbd.conf"
    uid, gid = os.getuid(), os.getgid()
    dbd.write_conf(path, dbd.render_conf(ACCT, "old-password"), uid, gid)
    todo = dbd.plan_conf(str(path), dbd.render_conf(ACCT, PASSWORD), uid, gid)
    assert todo["write"] and todo["changes"] == {"storage password": "changed"}
    assert PASSWORD not in repr(todo) and "old-password" not in repr(todo)
    # the same text: nothing to do
    dbd.write_conf(path, dbd.render_conf(ACCT, PASSWORD), uid, gid)
    assert dbd.plan_conf(str(path), dbd.render_conf(ACCT, PASSWORD), uid, gid)["changes"] == {}


def test_plan_conf_fixes_a_loose_mode(tmp_path):
    path = tmp_path / "slurmdbd.conf"
    text = dbd.render_conf(ACCT, PASSWORD)
    dbd.write_conf(path, text, os.getuid(), os.getgid())
    os.chmod(path, 0o644)
    todo = dbd.plan_conf(str(path), text, os.getuid(), os.getgid())
    assert todo["fix_mode"] and not todo["write"] and todo["changes"]["mode"]["old"][:4] == "0644"
    dbd.fix_mode(str(path), os.getuid(), os.getgid())
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_conf_written_0600_from_the_first_byte(tmp_path, monkeypatch):
    """The temporary file has mode 0600 before the first byte is written (threat 6)."""
    seen = []
    real_fdopen = os.fdopen

    def spy(fd, *args, **kwargs):
        seen.append(stat.S_IMODE(os.fstat(fd).st_mode))
        return real_fdopen(fd, *args, **kwargs)

    monkeypatch.setattr(os, "fdopen", spy)
    path = tmp_path / "slurmdbd.conf"
    dbd.write_conf(path, dbd.render_conf(ACCT, PASSWORD), os.getuid(), os.getgid())
    assert seen == [0o600]
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_native_hash_is_mariadbs():
    # SELECT PASSWORD('password') in MariaDB
    assert dbd.native_hash("password") == "*2470C0C06DEE42FD1618BB99005ADCA2EC9D1E19"


def test_change_sql_from_nothing_creates_all_with_the_hash_only():
    wanted = dbd.native_hash(PASSWORD)
    statements, changes = dbd.change_sql("slurm_acct_db", "slurm", wanted, EMPTY)
    sql = "\n".join(statements)
    assert "CREATE DATABASE IF NOT EXISTS `slurm_acct_db`" in sql
    assert f"CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY PASSWORD '{wanted}'" in sql
    assert "GRANT SELECT, INSERT, UPDATE, DELETE, CREATE, DROP, INDEX, ALTER" in sql
    assert "CREATE ROUTINE, ALTER ROUTINE, EXECUTE ON" in sql
    assert "ON `slurm_acct_db`.* TO 'slurm'@'localhost'" in sql
    # least privilege: nothing global, no GRANT OPTION, no other database
    assert "*.*" not in sql and "GRANT OPTION" not in sql and "ALL" not in sql
    assert PASSWORD not in sql and wanted not in repr(changes)
    assert set(changes) == {"database", "user", "grant"}


def test_change_sql_when_all_is_in_place_is_empty_and_a_new_password_alters():
    wanted = dbd.native_hash(PASSWORD)
    current = {"database": True, "user": True, "hash": wanted, "privileges": True}
    assert dbd.change_sql("slurm_acct_db", "slurm", wanted, current) == ([], {})
    statements, changes = dbd.change_sql(
        "slurm_acct_db", "slurm", wanted, {**current, "hash": dbd.native_hash("old-one")}
    )
    assert statements == [f"ALTER USER 'slurm'@'localhost' IDENTIFIED BY PASSWORD '{wanted}';"]
    assert changes == {"user": "slurm@localhost: password changed"}


@pytest.mark.parametrize("name", ["a'b", "db;DROP", "x y", "", "é"])
def test_sql_is_never_built_from_an_unchecked_name(name):
    with pytest.raises(dbd.DbdError):
        dbd.status_sql(name, "slurm")
    with pytest.raises(dbd.DbdError):
        dbd.change_sql("slurm_acct_db", name, dbd.native_hash(PASSWORD), EMPTY)


def test_parse_status():
    line = "1\t1\t*ABC\t" + ",".join(["Y"] * len(dbd.PRIVILEGES)) + "\n"
    assert dbd.parse_status(line) == {
        "database": True,
        "user": True,
        "hash": "*ABC",
        "privileges": True,
    }
    assert dbd.parse_status("0\t0\t\t\n")["privileges"] is False
    with pytest.raises(dbd.DbdError):
        dbd.parse_status("garbage")


class FakeMysql:
    """Records every argv and stdin; answers the status query from ``state``."""

    def __init__(self, fail=None):
        self.calls = []
        self.state = dict(EMPTY)
        self.fail = fail

    def __call__(self, argv, stdin=None, timeout=None, check=True, env=None):
        self.calls.append((list(argv), stdin, env))
        if self.fail:
            return subprocess.CompletedProcess(argv, 1, "", self.fail)
        if stdin.startswith("SELECT"):
            privs = ",".join(["Y" if self.state["privileges"] else "N"] * len(dbd.PRIVILEGES))
            out = "\t".join(
                [
                    "1" if self.state["database"] else "0",
                    "1" if self.state["user"] else "0",
                    self.state["hash"],
                    privs,
                ]
            )
            return subprocess.CompletedProcess(argv, 0, out + "\n", "")
        if "CREATE DATABASE" in stdin:
            self.state["database"] = True
        if "CREATE USER" in stdin or "ALTER USER" in stdin:
            self.state.update(user=True, hash=dbd.native_hash(PASSWORD))
        if "GRANT" in stdin:
            self.state["privileges"] = True
        return subprocess.CompletedProcess(argv, 0, "", "")


def test_sql_runs_with_no_secret_in_argv():
    """Threat 1: no argv the module builds holds the password or its hash; the SQL goes on
    stdin and holds the hash only; MYSQL_PWD of the caller is not passed on."""
    fake = FakeMysql()
    os.environ["MYSQL_PWD"] = "leaky"
    try:
        done = dbd.ensure_database("slurm_acct_db", "slurm", PASSWORD, runner=fake)
    finally:
        del os.environ["MYSQL_PWD"]
    assert set(done["changes"]) == {"database", "user", "grant"}
    wanted = dbd.native_hash(PASSWORD)
    for argv, stdin, env in fake.calls:
        joined = " ".join(argv)
        assert PASSWORD not in joined and wanted not in joined and wanted[1:] not in joined
        assert argv[0] == "mysql" and "--user=root" in argv
        assert PASSWORD not in stdin
        assert "MYSQL_PWD" not in env
    # idempotent: the second run only asks
    again = dbd.ensure_database("slurm_acct_db", "slurm", PASSWORD, runner=fake)
    assert again["changes"] == {} and fake.calls[-1][1].startswith("SELECT")


def test_test_mode_changes_nothing():
    fake = FakeMysql()
    done = dbd.ensure_database("slurm_acct_db", "slurm", PASSWORD, test=True, runner=fake)
    assert set(done["changes"]) == {"database", "user", "grant"}
    assert len(fake.calls) == 1 and fake.calls[0][1].startswith("SELECT")


def test_mysql_errors_are_redacted():
    """Threat 4: an error quoting the statement (the hash) or the password loses both."""
    wanted = dbd.native_hash(PASSWORD)
    raw = PASSWORD.encode()
    said = (
        f"ERROR 1064: near 'IDENTIFIED BY PASSWORD '{wanted}'' {PASSWORD} {raw.hex()} "
        f"{base64.b64encode(raw).decode()}"
    )
    with pytest.raises(dbd.DbdError) as caught:
        dbd.ensure_database("slurm_acct_db", "slurm", PASSWORD, runner=FakeMysql(fail=said))
    message = str(caught.value)
    for secret in (PASSWORD, wanted, wanted[1:], raw.hex(), base64.b64encode(raw).decode()):
        assert secret not in message
    assert "<hidden>" in message and "ERROR 1064" in message


def test_a_missing_client_is_a_redacted_error_too():
    def missing(argv, **kwargs):
        raise command.CommandFailed(argv, f"{argv[0]}: command not found")

    with pytest.raises(dbd.DbdError, match="mysql: command not found"):
        dbd.ensure_database("slurm_acct_db", "slurm", PASSWORD, runner=missing)
