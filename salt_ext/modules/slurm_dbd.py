"""
The accounting host's side of Slurm: slurmdbd.conf, the database and its user on the local
MariaDB, the cluster registered in slurmdbd, and the evidence ``slurm.verify`` and
``slurm.diagnose`` need (a job that reaches ``sacct``; slurmdbd's and MariaDB's health).

The ``slurm.dbd`` state (and ``slurm.controller`` on a controller that is the dbd host) is
built on these; the DB password is read from this minion's pillar here and nowhere else
(see :mod:`salt_ext.lib.node.dbd` for its threat model).
"""

import os
import pwd
import re
import socket
import time

import salt.utils.data
from salt.exceptions import CommandExecutionError

from salt_ext.lib.node import dbd as dbd_lib
from salt_ext.lib.node import direct, scontrol
from salt_ext.lib.node import settings as settings_lib
from salt_ext.lib.util import command
from salt_ext.modules import _minion_plan as minion_plan

__virtualname__ = "slurm_dbd"


def __virtual__():
    return __virtualname__


def _plan(role="node"):
    return minion_plan.plan(__pillar__, __grains__, role, minion_plan.machine(__grains__, __salt__))


def _accounting_plan(role="dbd"):
    plan = _plan(role)
    if not plan["accounting"]["enabled"]:
        raise CommandExecutionError(
            "accounting is off (slurm:accounting:enabled is false): nothing to do"
        )
    return plan


def _db_password():
    """The DB password from this minion's pillar (the plain value: ``pillar.get`` would
    return Salt 3008's masked form). Never returned, logged or put in an argv."""
    value = salt.utils.data.traverse_dict_and_list(__pillar__, settings_lib.PASSWORD_KEY, None)
    if not value:
        raise CommandExecutionError(f"{settings_lib.PASSWORD_KEY}: not in this minion's pillar")
    return str(value)


def _slurm_ids():
    entry = pwd.getpwnam("slurm")
    return entry.pw_uid, entry.pw_gid


def conf(test=False):
    """
    Bring slurmdbd.conf (in the conf dir) to what the ``slurm:accounting:`` pillar says:
    rendered here from the pillar (the DB password read from this minion's pillar), written
    atomically, mode 0600, owner slurm (slurmdbd 22.05 refuses anything else).

    Returns ``{"path", "changes", "comment"}``; changes carry fingerprints (SHA-256 of the
    file with the password blanked) and ``storage password: changed``, never the text.
    ``test=True`` changes nothing.

    CLI Example:

    .. code-block:: bash

        salt ctl slurm_dbd.conf test=True
    """
    plan = _accounting_plan()
    acct = plan["accounting"]
    path = acct["slurmdbd_conf"]
    try:
        uid, gid = _slurm_ids()
    except KeyError as err:
        raise CommandExecutionError("account 'slurm' does not exist") from err
    text = dbd_lib.render_conf(acct, _db_password(), "slurm")
    todo = dbd_lib.plan_conf(path, text, uid, gid)
    result = {"path": path, "changes": todo["changes"]}
    if not todo["changes"]:
        result["comment"] = f"{path} is as the pillar says ({dbd_lib.conf_fingerprint(text)})"
    elif test:
        result["comment"] = f"{path} would be written ({dbd_lib.conf_fingerprint(text)})"
    elif todo["write"]:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        dbd_lib.write_conf(path, text, uid, gid)
        result["comment"] = f"{path} written, 0600 slurm ({dbd_lib.conf_fingerprint(text)})"
    else:
        dbd_lib.fix_mode(path, uid, gid)
        result["comment"] = f"{path}: mode/owner fixed (0600 slurm)"
    return result


def database(test=False):
    """
    The accounting database and its user on the local MariaDB: the database
    (``slurm:accounting:storage:database``), the user (``…:user``) at localhost with the
    pillar's password, and only the privileges slurmdbd needs, on that database only.
    SQL goes to the ``mysql`` client on stdin, as root over the unix socket; it holds the
    password's hash, never the password (see :mod:`salt_ext.lib.node.dbd`).

    Returns ``{"changes", "comment"}``; ``test=True`` changes nothing.

    CLI Example:

    .. code-block:: bash

        salt ctl slurm_dbd.database test=True
    """
    plan = _accounting_plan()
    storage = plan["accounting"]["storage"]
    if storage["type"] != "local":
        return {"changes": {}, "comment": "external database: created by its admin"}
    try:
        done = dbd_lib.ensure_database(
            storage["database"], storage["user"], _db_password(), test=bool(test)
        )
    except dbd_lib.DbdError as err:
        raise CommandExecutionError(str(err)) from None
    where = f"{storage['user']}@localhost on {storage['database']}"
    if not done["changes"]:
        done["comment"] = f"database and user are in place ({where})"
    else:
        done["comment"] = ("would change: " if test else "changed: ") + ", ".join(
            done["changes"].values()
        )
    return done


SACCTMGR_BOUND = 30


def _sacctmgr(args, bound=SACCTMGR_BOUND):
    try:
        return command.run(["sacctmgr", *args], timeout=bound, check=False, env=_c_env())
    except command.CommandFailed as err:
        raise CommandExecutionError(str(err)) from err


def _c_env():
    return {**os.environ, "LC_ALL": "C"}


def clusters(bound=SACCTMGR_BOUND):
    """
    The clusters slurmdbd knows (``sacctmgr -n -P show cluster format=cluster``), or an
    error naming why it cannot say.

    CLI Example:

    .. code-block:: bash

        salt ctl slurm_dbd.clusters
    """
    proc = _sacctmgr(["-n", "-P", "show", "cluster", "format=cluster"], bound)
    if proc.returncode != 0:
        raise CommandExecutionError(
            f"sacctmgr show cluster exited {proc.returncode}: "
            f"{(proc.stderr or proc.stdout).strip()[-300:]}"
        )
    return sorted({line.strip() for line in proc.stdout.splitlines() if line.strip()})


def cluster_registered(name, test=False):
    """
    The cluster ``name`` is in the accounting database: ``sacctmgr -i add cluster NAME``
    only when ``sacctmgr -n -P show cluster`` lacks it. Returns ``{"changed", "comment"}``.

    CLI Example:

    .. code-block:: bash

        salt ctl slurm_dbd.cluster_registered testbed
    """
    # slurmdbd may have started a moment ago: give it a few tries to answer
    deadline = time.monotonic() + 30
    while True:
        try:
            known = clusters()
            break
        except CommandExecutionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)
    if name.lower() in known:
        return {"changed": False, "comment": f"cluster {name} is registered in slurmdbd"}
    if test:
        return {"changed": True, "comment": f"cluster {name} would be registered"}
    proc = _sacctmgr(["-i", "add", "cluster", name])
    if proc.returncode != 0 or name.lower() not in clusters():
        raise CommandExecutionError(
            f"sacctmgr -i add cluster {name} exited {proc.returncode}: "
            f"{(proc.stderr or proc.stdout).strip()[-300:]}"
        )
    return {"changed": True, "comment": f"cluster {name} registered in slurmdbd"}


ACCOUNTING_LOG_LINES = 400


def _telling(path, pattern, lines=ACCOUNTING_LOG_LINES, keep=6):
    return [line for line in direct.log_tail(path, lines) if pattern.search(line)][-keep:]


def probe():
    """
    Evidence for ``slurm.diagnose`` about accounting, from this machine: on the dbd host
    the health of mariadb (local storage) and slurmdbd and slurmdbd.log's telling lines;
    everywhere whether slurmdbd's port answers at ``AccountingStorageHost`` from here; on
    the controller the clusters slurmdbd knows (``sacctmgr show cluster``) and
    slurmctld.log's lines about slurmdbd. Every request is bounded; nothing here fails.

    CLI Example:

    .. code-block:: bash

        salt ctl slurm_dbd.probe
    """
    plan = _plan("node")
    acct = plan["accounting"]
    result = {"enabled": acct["enabled"], "is_dbd_host": acct["is_dbd_host"]}
    if not acct["enabled"]:
        return result
    if acct["is_dbd_host"]:
        names = ["mariadb", "slurmdbd"] if acct.get("local_db") else ["slurmdbd"]
        result["health"] = __salt__["slurm_node.health"](names)
        lines = _telling(
            dbd_lib.SLURMDBD_LOG,
            re.compile(r"error|fatal|denied|can't connect|started", re.IGNORECASE),
            keep=40,
        )
        # this run's lines only: after the last "slurmdbd version ... started"
        starts = [
            i for i, line in enumerate(lines) if re.search(r"slurmdbd version .* started", line)
        ]
        result["slurmdbd_log"] = (lines[starts[-1] + 1 :] if starts else lines)[-6:]
    try:
        with socket.create_connection(
            (acct["address"], acct["port"]), timeout=scontrol.ANSWER_BOUND
        ):
            result["reach"] = {"ok": True, "detail": f"{acct['address']}:{acct['port']} answers"}
    except OSError as err:
        result["reach"] = {"ok": False, "detail": f"{acct['address']}:{acct['port']}: {err}"}
    if __grains__.get("id") == plan["controller"]:
        try:
            result["clusters"] = clusters(bound=10)
        except CommandExecutionError as err:
            result["clusters_error"] = str(err)[-300:]
        ctld_log = direct.spec("slurmctld", plan["slurm_conf"])["log"]
        result["slurmctld_log"] = _telling(
            ctld_log, re.compile(r"slurmdbd|persist|accounting_storage", re.IGNORECASE)
        )
    return result


def job_recorded(timeout=60):
    """
    Prove accounting end to end: a one-task job step (``srun --immediate``, 32 MB), then
    wait until ``sacct`` shows it finished ``COMPLETED|0:0``. Returns ``{"ok", "job",
    "evidence"}``.

    CLI Example:

    .. code-block:: bash

        salt ctl slurm_dbd.job_recorded
    """
    name = f"saltext-acct-{int(time.time() * 1000)}"
    argv = ["srun", "--immediate=10", "-N1", "-n1", f"--mem={scontrol.TEST_STEP_MB}M", "-J", name]
    try:
        proc = command.run([*argv, "true"], timeout=60, check=False, env=_c_env())
    except command.CommandFailed as err:
        return {"ok": False, "job": None, "evidence": str(err)[-300:]}
    if proc.returncode != 0:
        said = (proc.stderr or proc.stdout).strip()[-300:]
        return {"ok": False, "job": None, "evidence": f"srun exited {proc.returncode}: {said}"}
    deadline = time.monotonic() + timeout
    query = ["sacct", "-X", "-n", "-P", f"--name={name}", "-o", "JobID,State,ExitCode"]
    seen = ""
    while True:
        try:
            out = command.run(query, timeout=15, check=False, env=_c_env())
            seen = (out.stdout.strip() or out.stderr.strip())[-300:]
        except command.CommandFailed as err:
            seen = str(err)[-300:]
        fields = seen.split("|")
        if len(fields) == 3 and fields[1:] == ["COMPLETED", "0:0"]:
            return {"ok": True, "job": fields[0], "evidence": f"sacct: {seen}"}
        if time.monotonic() > deadline:
            return {
                "ok": False,
                "job": fields[0] if len(fields) == 3 else None,
                "evidence": f"job {name} ran; after {timeout} s sacct shows: {seen or 'nothing'}",
            }
        time.sleep(1)
