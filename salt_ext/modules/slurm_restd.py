"""
Slurm's REST API on this machine: the cluster's JWT key (controller and dbd host) and
slurmrestd's files (controller), with ``slurm:restd:enabled``.

The key is fetched from the master's file server by this module itself and written 0600
SlurmUser; nothing here returns, logs or puts in an argv the key or a token (the threat
model is the docstring of :mod:`salt_ext.lib.node.restd`).
"""

import logging
import os
import pwd

import salt.utils.data
from salt.exceptions import CommandExecutionError

from salt_ext.lib.conf import cluster_files
from salt_ext.lib.node import direct, services
from salt_ext.lib.node import restd as restd_lib
from salt_ext.lib.node import settings as settings_lib
from salt_ext.lib.util import command, fsutil

__virtualname__ = "slurm_restd"

log = logging.getLogger(__name__)

LOG_LINES = 200


def __virtual__():
    return __virtualname__


def _cfg():
    try:
        return settings_lib.validate(
            salt.utils.data.traverse_dict_and_list(__pillar__, "slurm", None)
        )
    except settings_lib.SettingsError as err:
        raise CommandExecutionError(f"bad slurm pillar: {err}") from err


def _conf_dir():
    try:
        return settings_lib.conf_dir(__grains__)
    except settings_lib.SettingsError as err:
        raise CommandExecutionError(str(err)) from err


def _rest(cfg):
    rest = settings_lib.restd_plan(cfg, __grains__.get("id"), _conf_dir())
    if not rest["enabled"]:
        raise CommandExecutionError("the REST API is off (slurm:restd:enabled is false)")
    return rest


def _slurm_ids():
    try:
        entry = pwd.getpwnam("slurm")
    except KeyError:
        raise CommandExecutionError("account 'slurm' does not exist") from None
    return entry.pw_uid, entry.pw_gid


def _local_hash(path):
    try:
        return restd_lib.key_hash(path)
    except FileNotFoundError:
        return None


def key_hash():
    """
    ``sha256:`` of this machine's JWT key file (None when it has none): what status and
    diagnose compare with the master's. Never the key.

    CLI Example:

    .. code-block:: bash

        salt ctl slurm_restd.key_hash
    """
    return _local_hash(restd_lib.key_path(_conf_dir()))


def jwt_key(test=False):
    """
    The cluster's JWT key (``salt://slurm_files/jwt_hs256.key`` on the master) beside
    slurm.conf (``/etc/slurm/jwt_hs256.key``; Ubuntu <= 20.04: ``/etc/slurm-llnl/``), 0600
    slurm:slurm, written atomically. Returns
    ``{"changes", "comment"}`` with ``sha256:`` fingerprints only; ``test=True`` changes
    nothing.

    CLI Example:

    .. code-block:: bash

        salt ctl slurm_restd.jwt_key test=True
    """
    path = _rest(_cfg())["jwt_key"]
    url = cluster_files.salt_url(restd_lib.KEY_NAME)
    info = __salt__["cp.hash_file"](url) or {}
    if info.get("hash_type") != "sha256":
        raise CommandExecutionError(
            f"{url}: the master serves no JWT key; `salt-run slurm.deploy` creates it"
        )
    wanted = f"sha256:{info['hsum']}"
    uid, gid = _slurm_ids()
    local = _local_hash(path)
    changes = {}
    if local != wanted:
        changes["key_hash"] = {"old": local, "new": wanted}
    else:
        st = os.stat(path)
        if (st.st_mode & 0o7777, st.st_uid, st.st_gid) != (restd_lib.KEY_MODE, uid, gid):
            changes["mode"] = {
                "old": f"{st.st_mode & 0o7777:04o} {st.st_uid}:{st.st_gid}",
                "new": f"{restd_lib.KEY_MODE:04o} {uid}:{gid}",
            }
    if not changes:
        return {"changes": {}, "comment": f"JWT key is in place ({wanted})"}
    if test:
        return {"changes": changes, "comment": f"JWT key would be brought to {wanted}"}
    if "key_hash" in changes:
        cached = __salt__["cp.cache_file"](url)
        if not cached:
            raise CommandExecutionError(f"{url}: download failed")
        try:
            with open(cached, "rb") as handle:
                key = handle.read()
        finally:
            # no second copy of the key in the minion's file cache
            try:
                os.unlink(cached)
            except OSError:
                pass
        if restd_lib.key_hash_bytes(key) != wanted:
            raise CommandExecutionError(f"{url}: changed during the download; apply again")
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            fsutil.atomic_write(path, key, mode=restd_lib.KEY_MODE, uid=uid, gid=gid)
        except OSError as err:
            raise CommandExecutionError(
                f"{path}: cannot write the JWT key: {err.strerror or err}"
            ) from None
        return {"changes": changes, "comment": f"JWT key written, 0600 slurm ({wanted})"}
    os.chown(path, uid, gid)
    os.chmod(path, restd_lib.KEY_MODE)
    return {"changes": changes, "comment": "JWT key mode/owner fixed (0600 slurm)"}


def _wanted_files(cfg, manager):
    rest = _rest(cfg)
    text = restd_lib.env_text(rest, cfg["accounting"]["enabled"])
    files = [(rest["env_file"], text, 0o644)]
    extra = restd_lib.launcher(manager, rest)
    if extra:
        files.append(extra)
    return files


def service_files(test=False):
    """
    slurmrestd's files for this machine's service manager: its environment file
    (``slurmrestd.env`` beside slurm.conf: listen on the unix socket and the pillar port, JWT only,
    the OpenAPI plugins, the user), and the systemd drop-in over Debian's unit (our user,
    ``RuntimeDirectory``; then ``systemctl daemon-reload``) or an init script for sysvinit /
    OpenRC. Returns ``{"changes", "comment"}``; ``test=True`` changes nothing.

    CLI Example:

    .. code-block:: bash

        salt ctl slurm_restd.service_files test=True
    """
    cfg = _cfg()
    manager = __salt__["slurm_node.settings"]("controller")["service_manager"]
    changes = {}
    todo = []
    for path, text, mode in _wanted_files(cfg, manager):
        old = fsutil.sha256_file(path)
        new = fsutil.sha256_bytes(text.encode())
        mode_now = os.stat(path).st_mode & 0o7777 if old else None
        if old != new or mode_now != mode:
            changes[path] = {
                "old": f"sha256:{old}" if old else None,
                "new": f"sha256:{new}",
            }
            todo.append((path, text, mode))
    if not changes:
        return {"changes": {}, "comment": f"slurmrestd's files are in place ({manager})"}
    if test:
        return {"changes": changes, "comment": "would write " + ", ".join(changes)}
    for path, text, mode in todo:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fsutil.atomic_write(path, text, mode=mode)
    if manager == "systemd" and any(p == restd_lib.DROPIN for p, _, _ in todo):
        proc = command.run(["systemctl", "daemon-reload"], timeout=60, check=False)
        if proc.returncode != 0:
            raise CommandExecutionError(f"systemctl daemon-reload: {proc.stderr.strip()}")
    return {"changes": changes, "comment": "wrote " + ", ".join(changes)}


def _why_stopped(manager):
    """The lines that say why slurmrestd does not run: its unit's journal (systemd) or the
    last complaints in its log (other managers)."""
    if manager == "systemd":
        service = services.Service("slurmrestd", "systemd", "slurmrestd")
        lines = service.last_run()
        if lines:
            return lines
    said = direct.log_tail(restd_lib.LOG, LOG_LINES)
    telling = [line for line in said if "fatal" in line.lower() or "error" in line.lower()]
    return [f"{os.path.basename(restd_lib.LOG)}: {line}" for line in (telling or said)[-4:]]


def probe():
    """
    What ``slurm.diagnose`` needs of the REST API on this machine: ``key_hash`` (of the
    JWT key file), and on the controller ``health`` of slurmrestd, ``why`` it is not
    running (journal or log), and ``check``: one authenticated REST call
    (``/slurm/v0.0.38/diag``) with a 30 s token signed here from the local key for the
    restd user, never shown.

    CLI Example:

    .. code-block:: bash

        salt ctl slurm_restd.probe
    """
    cfg = _cfg()
    rest = _rest(cfg)
    result = {
        "key_hash": _local_hash(rest["jwt_key"]),
        "key_path": rest["jwt_key"],
        "is_host": rest["is_host"],
    }
    if not rest["is_host"]:
        return result
    health = __salt__["slurm_node.health"]("slurmrestd")["slurmrestd"]
    result["health"] = health
    manager = __salt__["slurm_node.settings"]("controller")["service_manager"]
    result["manager"] = manager
    if health["state"] != "running":
        result["why"] = _why_stopped(manager)
        result["check"] = None
        return result
    result["check"] = check()
    return result


def check():
    """
    One authenticated REST call: ``GET /slurm/v0.0.38/diag`` on the pillar's port with a
    token for the restd user, signed here from the local JWT key, valid 30 s, held in
    memory only. ``{"ok", "status", "evidence"}``.

    CLI Example:

    .. code-block:: bash

        salt ctl slurm_restd.check
    """
    rest = _rest(_cfg())
    return restd_lib.check(rest["jwt_key"], rest["port"], rest["user"])
