"""slurmdbd and its database: slurmdbd.conf, the database and its user, the DB password.

The dbd host runs slurmdbd (and MariaDB with local storage). This module renders
slurmdbd.conf from the validated accounting settings plus the password, writes it the one
way slurmdbd 22.05 accepts (0600, owned by SlurmUser), and creates the database and a
least-privilege user with the ``mysql`` client. It is the only module that ever holds the
DB password (``slurm:accounting:storage:password``).

Why the ``mysql`` client and not a Salt MySQL extension: ``saltext.mysql`` (1.1.0 on PyPI,
the home of Salt's ``mysql_*`` modules since they left core) loads only with a Python MySQL
driver (its ``__virtual__`` needs ``MySQLdb``: the ``pymysql`` or ``mysqlclient`` extra)
plus ``sqlparse``, none of which the minion's Python has, and clean nodes install this
extension with ``--no-index --no-deps``. Its ``mysql_user.present`` also takes
``password`` as a state argument, i.e. in the SLS text, the state's arguments and
``state.show_sls``. The client is in ``mariadb-client`` (pulled in by ``mariadb-server``),
runs as root over the unix socket (``unix_socket`` auth, no password of ours), and gets
its SQL on stdin.

Threat model for the DB password (each threat: mitigation, then the test that proves it;
tests in ``tests/unit/test_node_dbd.py`` unless named):

1. **Process argv** (``/proc/<pid>/cmdline`` is world-readable): the password is never an
   argument of any command. SQL goes to ``mysql`` on stdin, and it carries only the
   password's ``mysql_native_password`` hash (:func:`native_hash`), never the password;
   slurmdbd reads it from slurmdbd.conf. Tests: ``test_sql_runs_with_no_secret_in_argv``
   (every argv the module builds), and the bed's ``test_password_never_leaks``
   (tests/integration/test_accounting.py) scans every process's cmdline on the dbd host.
2. **The SLS text, state arguments, ``state.show_sls``, ``slurm_node.settings``**: no SLS
   names the password; the state functions read it from the minion's pillar themselves,
   and the validated settings replace it with ``<set>``
   (:func:`salt_ext.lib.node.settings.validate`). Tests:
   ``test_settings_never_hold_the_password`` (unit, test_node_settings.py) and the
   functional ``test_dbd_sls_reads_the_plan`` (no password in the rendered high data).
3. **State output, return data, events, job cache**: changes report fingerprints only
   (:func:`conf_fingerprint`: SHA-256 of the file with the ``StoragePass`` value blanked,
   so a published hash cannot be brute-forced back into the password; a changed
   password shows as ``storage password: changed``). Tests:
   ``test_fingerprint_does_not_depend_on_the_password``, and on the bed the state
   output, runner output and the master's event bus are searched for the password as
   text, hex and base64.
4. **Error messages** (a ``mysql`` error quotes the statement near a syntax error;
   exceptions end up in state comments and logs): every message leaving :func:`run_sql`
   is passed through :func:`redact`, which removes the password and its hash in every
   spelling we can think of (text, hex, base64). Test: ``test_mysql_errors_are_redacted``.
5. **Logs at any level**: this module logs nothing; the exec/state modules log only
   fingerprints. Salt itself logs pillar data only at ``garbage`` level on the master
   (``Rendered data from file``); the bed runs master and minions at ``debug`` and the
   integration test searches their logs (text, hex, base64).
6. **The file on disk**: slurmdbd.conf is written atomically with mode 0600 and owner
   SlurmUser from the first byte (:func:`salt_ext.lib.util.fsutil.atomic_write`: a
   temporary file with that mode, renamed into place), never world-readable, not even for
   an instant. Test: ``test_conf_written_0600_from_the_first_byte``.
7. **The database's own logs**: the SQL holds the native hash, not the password, so a
   general/binary log shows no more than ``mysql.user`` itself does.

Residual risk: root on the dbd host reads slurmdbd.conf (slurmdbd needs it in clear), and
anyone who reads the master's pillar files or the minion's in-memory pillar reads the
password; deliver it in a pillar only the dbd host gets.
"""

import base64
import hashlib
import os
import re

from salt_ext.lib.util import command, fsutil

CONF_NAME = "slurmdbd.conf"
CONF_MODE = 0o600
# fixed places of slurmdbd (rendered into slurmdbd.conf) and MariaDB (Debian's my.cnf)
SLURMDBD_PIDFILE = "/run/slurmdbd.pid"
SLURMDBD_LOG = "/var/log/slurm/slurmdbd.log"
MARIADB_PIDFILE = "/run/mysqld/mysqld.pid"
MARIADB_SOCKET = "/run/mysqld/mysqld.sock"
MARIADB_RUNDIR = "/run/mysqld"
MARIADB_DATADIR = "/var/lib/mysql"
MARIADB_LOG_DIR = "/var/log/mysql"
MARIADB_LOG = f"{MARIADB_LOG_DIR}/error.log"
MARIADB_USER = "mysql"
SQL_BOUND = 30

HEADER = (
    "# Managed by saltext-slurm (slurm.dbd), rendered from the slurm:accounting: pillar;\n"
    "# edits made here are overwritten. Mode 0600, owner SlurmUser: slurmdbd refuses others.\n"
)

# the privileges slurmdbd needs on its own database, and no more (SchedMD's accounting page
# grants ALL on the database; these are what ALL covers that slurmdbd uses)
# (mysql.db column, GRANT name)
PRIVILEGES = (
    ("Select_priv", "SELECT"),
    ("Insert_priv", "INSERT"),
    ("Update_priv", "UPDATE"),
    ("Delete_priv", "DELETE"),
    ("Create_priv", "CREATE"),
    ("Drop_priv", "DROP"),
    ("Index_priv", "INDEX"),
    ("Alter_priv", "ALTER"),
    ("Create_tmp_table_priv", "CREATE TEMPORARY TABLES"),
    ("Lock_tables_priv", "LOCK TABLES"),
    # slurmdbd (re)creates its stored procedures at every start
    ("Create_routine_priv", "CREATE ROUTINE"),
    ("Alter_routine_priv", "ALTER ROUTINE"),
    ("Execute_priv", "EXECUTE"),
)


class DbdError(RuntimeError):
    """The database could not be checked or changed; the message is already redacted."""


def render_conf(acct, password, slurm_user="slurm"):
    """slurmdbd.conf text for the accounting plan ``acct`` (``settings.accounting`` plus
    ``host``), with ``password`` as StoragePass."""
    storage = acct["storage"]
    local = storage["type"] == "local"
    lines = [
        ("AuthType", "auth/munge"),
        ("DbdHost", acct["host"]),
        ("DbdPort", str(acct["port"])),
        ("SlurmUser", slurm_user),
        ("PidFile", SLURMDBD_PIDFILE),
        ("LogFile", SLURMDBD_LOG),
        ("StorageType", "accounting_storage/mysql"),
        # localhost: libmariadb takes the unix socket (no TCP listener needed)
        ("StorageHost", "localhost" if local else storage["host"]),
        ("StoragePort", str(storage["port"])),
        ("StorageLoc", storage["database"]),
        ("StorageUser", storage["user"]),
        ("StoragePass", password),
    ]
    if acct.get("jwt_key"):
        # slurm:restd: slurmdbd checks the tokens slurmrestd forwards (it reads the key only
        # at start: a new key needs a restart, SIGHUP does not reload it)
        lines += [("AuthAltTypes", "auth/jwt"), ("AuthAltParameters", f"jwt_key={acct['jwt_key']}")]
    return HEADER + "".join(f"{key}={value}\n" for key, value in lines)


_STORAGE_PASS = re.compile(r"^(StoragePass\s*=).*$", re.IGNORECASE | re.MULTILINE)


def conf_fingerprint(text):
    """``sha256:`` of slurmdbd.conf ``text`` with the StoragePass value blanked (None for
    no file): what output shows, and nothing to brute-force the password from."""
    if text is None:
        return None
    blanked = _STORAGE_PASS.sub(r"\1<hidden>", text)
    return "sha256:" + fsutil.sha256_bytes(blanked)


def conf_password(text):
    """The StoragePass value of slurmdbd.conf ``text`` (None when absent)."""
    found = None
    for line in (text or "").splitlines():
        match = re.match(r"\s*StoragePass\s*=(.*)$", line, re.IGNORECASE)
        if match:
            found = match.group(1).strip()
    return found


def read_conf(path):
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except FileNotFoundError:
        return None


def plan_conf(path, wanted_text, uid, gid):
    """What bringing ``path`` to ``wanted_text`` takes: ``{"write": bool, "fix_mode":
    bool, "changes": {...}}``; changes carry fingerprints and a password flag only."""
    current = read_conf(path)
    changes = {}
    old, new = conf_fingerprint(current), conf_fingerprint(wanted_text)
    if old != new:
        changes[CONF_NAME] = {"old": old, "new": new}
    if current is not None and conf_password(current) != conf_password(wanted_text):
        changes["storage password"] = "changed"
    write = current != wanted_text
    fix_mode = False
    if current is not None and not write:
        info = os.stat(path)
        if (info.st_mode & 0o7777, info.st_uid, info.st_gid) != (CONF_MODE, uid, gid):
            fix_mode = True
            changes["mode"] = {
                "old": f"{info.st_mode & 0o7777:04o} {info.st_uid}:{info.st_gid}",
                "new": f"{CONF_MODE:04o} {uid}:{gid}",
            }
    return {"write": write, "fix_mode": fix_mode, "changes": changes}


def write_conf(path, text, uid, gid):
    """slurmdbd.conf atomically, 0600 ``uid``:``gid`` from the first byte."""
    fsutil.atomic_write(path, text, mode=CONF_MODE, uid=uid, gid=gid)


def fix_mode(path, uid, gid):
    os.chown(path, uid, gid)
    os.chmod(path, CONF_MODE)


# --- the database -------------------------------------------------------------------------


def native_hash(password):
    """MariaDB's ``mysql_native_password`` hash: ``*`` + upper hex SHA1(SHA1(password))."""
    inner = hashlib.sha1(password.encode()).digest()  # noqa: S324 - MariaDB's own scheme
    return "*" + hashlib.sha1(inner).hexdigest().upper()  # noqa: S324


def _spellings(secret):
    raw = secret.encode()
    forms = {secret, raw.hex(), raw.hex().upper(), base64.b64encode(raw).decode()}
    forms.add(base64.b64encode(raw).decode().rstrip("="))
    return {f for f in forms if f}


def redact(text, secrets):
    """``text`` with every spelling (text, hex, base64) of each secret replaced."""
    text = str(text)
    for secret in secrets:
        if not secret:
            continue
        for form in sorted(_spellings(secret), key=len, reverse=True):
            text = text.replace(form, "<hidden>")
    return text


def mysql_argv(defaults_file=None):
    """The client's argv: batch output, no column names, as root over the unix socket (or
    with a 0600 defaults file for an external server). Never a password."""
    argv = ["mysql"]
    if defaults_file:
        argv.append(f"--defaults-extra-file={defaults_file}")
    else:
        argv += ["--user=root", f"--socket={MARIADB_SOCKET}"]
    return [*argv, "--batch", "--skip-column-names", "--connect-timeout=10"]


def _account(user):
    return f"'{user}'@'localhost'"


def status_sql(database, user):
    """One query: does the database exist, the user's password hash, its privileges on
    the database (names and the user are validated: letters, digits and '_' only)."""
    _check_names(database, user)
    privs = ", ".join(f"`{column}`" for column, _ in PRIVILEGES)
    return (
        "SELECT "  # noqa: S608 - names checked above: letters, digits and '_' only
        f"(SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME='{database}'), "
        f"(SELECT COUNT(*) FROM mysql.user WHERE User='{user}' AND Host='localhost'), "
        f"IFNULL((SELECT Password FROM mysql.user WHERE User='{user}' AND Host='localhost'), "
        "''), "
        f"IFNULL((SELECT CONCAT_WS(',', {privs}) FROM mysql.db WHERE Db='{database}' "
        f"AND User='{user}' AND Host='localhost'), '');\n"
    )


_NAME = re.compile(r"[A-Za-z0-9_]{1,64}")


def _check_names(database, user):
    """Settings validate them too; SQL is never built from anything else."""
    for what, value in (("database", database), ("user", user)):
        if not isinstance(value, str) or not _NAME.fullmatch(value):
            raise DbdError(f"{what} name {value!r}: letters, digits and '_' only")


def parse_status(output):
    # empty fields (no user yet) end the line in tabs: never strip them
    lines = [line for line in output.splitlines() if line.strip()]
    fields = (lines or [""])[0].split("\t")
    if len(fields) != 4:
        raise DbdError(f"unexpected answer from mysql: {len(fields)} fields")
    return {
        "database": fields[0] == "1",
        "user": fields[1] == "1",
        "hash": fields[2],
        "privileges": fields[3].split(",") == ["Y"] * len(PRIVILEGES),
    }


def change_sql(database, user, password_hash, current):
    """``(statements, changes)`` that bring the database and user to what is wanted, given
    :func:`parse_status`'s ``current``. Statements hold the hash, never the password;
    changes name what changes, never a hash."""
    _check_names(database, user)
    if not re.fullmatch(r"\*[0-9A-F]{40}", password_hash or ""):
        raise DbdError("not a mysql_native_password hash")
    statements, changes = [], {}
    if not current["database"]:
        statements.append(
            f"CREATE DATABASE IF NOT EXISTS `{database}` "
            "CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci;"
        )
        changes["database"] = f"{database} created"
    if not current["user"]:
        statements.append(
            f"CREATE USER IF NOT EXISTS {_account(user)} IDENTIFIED BY PASSWORD '{password_hash}';"
        )
        changes["user"] = f"{user}@localhost created"
    elif current["hash"] != password_hash:
        statements.append(f"ALTER USER {_account(user)} IDENTIFIED BY PASSWORD '{password_hash}';")
        changes["user"] = f"{user}@localhost: password changed"
    if not current["privileges"]:
        privs = ", ".join(name for _, name in PRIVILEGES)
        statements.append(f"GRANT {privs} ON `{database}`.* TO {_account(user)};")
        changes["grant"] = f"{user}@localhost on {database}.*"
    return statements, changes


def run_sql(sql, secrets, runner=command.run, timeout=SQL_BOUND):
    """Run ``sql`` through the client (stdin); its stdout. Any failure raises
    :class:`DbdError` whose message holds none of ``secrets``."""
    argv = mysql_argv()
    try:
        proc = runner(argv, stdin=sql, timeout=timeout, check=False, env=_env())
    except command.CommandFailed as err:
        raise DbdError(redact(f"mysql: {err}", secrets)) from None
    if proc.returncode != 0:
        said = (proc.stderr or proc.stdout or "").strip()
        raise DbdError(redact(f"mysql exited {proc.returncode}: {said}", secrets)) from None
    return proc.stdout


def _env():
    # no MYSQL_PWD or ~/.my.cnf of the caller's: the client reads only the system's files
    env = {k: v for k, v in os.environ.items() if not k.startswith("MYSQL")}
    return {**env, "LC_ALL": "C", "HOME": "/nonexistent"}


def ensure_database(database, user, password, test=False, runner=command.run):
    """The database and the user (password, privileges on it) as wanted: ``{"changes":
    {...}, "comment"}``. ``test``: only what would change."""
    wanted = native_hash(password)
    secrets = (password, wanted, wanted[1:])
    current = parse_status(run_sql(status_sql(database, user), secrets, runner))
    statements, changes = change_sql(database, user, wanted, current)
    if statements and not test:
        run_sql("\n".join(statements) + "\nFLUSH PRIVILEGES;\n", secrets, runner)
        after = parse_status(run_sql(status_sql(database, user), secrets, runner))
        left, _ = change_sql(database, user, wanted, after)
        if left:
            raise DbdError(
                f"database {database} / user {user}: still not as wanted after the change "
                f"({len(left)} statement(s) left)"
            )
    return {"changes": changes}
