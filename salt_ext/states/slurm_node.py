"""
States for the parts of a Slurm node that Salt's core states do not cover: the munge key
(never shown, hash only), the cluster's conf files (the same writer as
``slurm.apply_conf``), daemons under any service manager including ``direct`` (no init),
and proof that the node or controller really works.

Used by the SLS tree ``slurm.node`` / ``slurm.controller`` / ``slurm.absent``.
"""

import os
import pwd
import stat

import salt.utils.data
from salt.exceptions import CommandExecutionError, SaltInvocationError

from salt_ext.lib.node import munge as munge_lib

__virtualname__ = "slurm_node"

KEY_MODE = munge_lib.KEY_MODE


def __virtual__():
    return __virtualname__


def _ret(name):
    return {"name": name, "result": True, "changes": {}, "comment": ""}


def _fetch_key(source, saltenv):
    """Key bytes from ``salt://…`` or ``pillar:<key>``; CommandExecutionError if absent."""
    try:
        return munge_lib.fetch_key(
            source,
            lambda url: __salt__["cp.cache_file"](url, saltenv),
            # __pillar__ holds plain values; pillar.get would return Salt 3008's redacted form
            lambda key: salt.utils.data.traverse_dict_and_list(__pillar__, key, None),
        )
    except munge_lib.KeySourceError as err:
        raise CommandExecutionError(str(err)) from err


def _master_key_hash(source, saltenv):
    """Hash of the key on the master without downloading it (salt:// sources only)."""
    if source.startswith("pillar:"):
        return None
    info = __salt__["cp.hash_file"](source, saltenv)
    if not info or info.get("hash_type") != "sha256":
        return None
    return f"sha256:{info['hsum']}"


def _local_key_state(name):
    try:
        info = os.stat(name)
    except FileNotFoundError:
        return None, None
    return munge_lib.key_hash(name), info


def munge_key(name, source, user="munge", saltenv="base"):
    """
    The munge key at ``name`` equals the cluster's key, mode 0400, owned by ``user``.

    Changes and comments name the key by SHA-256 only; its content is never returned,
    logged or put in events.

    name
        Key path, normally ``/etc/munge/munge.key``.
    source
        ``salt://slurm_files/munge.key`` (master's file server) or ``pillar:<pillar key>``
        (base64 key delivered only to targeted minions).
    user
        Owner (and group) of the key.
    """
    ret = _ret(name)
    try:
        owner = pwd.getpwnam(user)
    except KeyError:
        ret.update(result=False, comment=f"account '{user}' does not exist")
        return ret
    local_hash, info = _local_key_state(name)
    wanted_hash = _master_key_hash(source, saltenv) if local_hash else None
    key = None
    if wanted_hash is None:
        try:
            key = _fetch_key(source, saltenv)
        except CommandExecutionError as err:
            ret.update(result=False, comment=str(err))
            return ret
        wanted_hash = munge_lib.key_hash_bytes(key)
    if local_hash != wanted_hash:
        ret["changes"]["key_hash"] = {"old": local_hash, "new": wanted_hash}
    elif (
        stat.S_IMODE(info.st_mode) != KEY_MODE
        or info.st_uid != owner.pw_uid
        or info.st_gid != owner.pw_gid
    ):
        ret["changes"]["mode"] = {
            "old": f"{stat.S_IMODE(info.st_mode):04o} {info.st_uid}:{info.st_gid}",
            "new": f"{KEY_MODE:04o} {owner.pw_uid}:{owner.pw_gid}",
        }
    if not ret["changes"]:
        ret["comment"] = f"munge key is in place ({local_hash})"
        return ret
    if __opts__["test"]:
        ret["result"] = None
        ret["comment"] = f"munge key would be updated to {wanted_hash}"
        return ret
    if "key_hash" in ret["changes"]:
        if key is None:
            key = _fetch_key(source, saltenv)
        munge_lib.write_key(name, key, owner.pw_uid, owner.pw_gid)
        ret["comment"] = f"munge key written ({wanted_hash})"
    else:
        os.chown(name, owner.pw_uid, owner.pw_gid)
        os.chmod(name, KEY_MODE)
        ret["comment"] = "munge key mode/owner fixed"
    return ret


def conf_files_synced(name):
    """
    The cluster's conf files in this machine's conf dir ``name`` are the ones the master
    serves (``salt://slurm_files/``): slurm.conf, and gres.conf / cgroup.conf when served.
    Written the way ``slurm.apply_conf`` writes them, by the same code
    (``slurm_node.sync_conf``): atomically, 0644 root, and a gres.conf or cgroup.conf the
    master stopped serving is removed when saltext-slurm wrote it. Changes name each file
    with its old and new SHA-256 (None: absent), never its text. Daemons that ``watch``
    this state restart (slurmctld: reconfigure) when a file changed.

    name
        The conf dir (``conf_dir`` of ``slurm_node.settings``); another directory is refused.

    .. code-block:: yaml

        slurm-conf-files:
          slurm_node.conf_files_synced:
            - name: /etc/slurm
    """
    ret = _ret(name)
    test = bool(__opts__["test"])
    try:
        result = __salt__["slurm_node.sync_conf"](test=test, conf_dir=name)
    except (CommandExecutionError, SaltInvocationError) as err:
        ret.update(result=False, comment=str(err))
        return ret
    previous = result.get("previous") or {}
    for conf in result["changed"]:
        ret["changes"][conf] = {"old": previous.get(conf), "new": result["hashes"].get(conf)}
    if not ret["changes"]:
        ret["comment"] = f"the conf files in {name} are the master's"
        return ret
    done = [
        f"{conf} {'removed' if result['actions'].get(conf) == 'remove' else 'written'}"
        for conf in result["changed"]
    ]
    if test:
        ret["result"] = None
        ret["comment"] = f"in {name}, would be: " + ", ".join(done)
    else:
        ret["comment"] = f"in {name}: " + ", ".join(done)
    return ret


def daemon_running(name, manager, conf=None, restart_for=None):
    """
    The daemon ``name`` (munge, slurmd or slurmctld) runs.

    With ``manager: direct`` the extension starts the daemon itself (pid file, health
    check); otherwise the machine's service manager does, and the start is proven by
    ``/proc`` (the unit's MainPID / the pid file's process is the daemon, still alive after
    a settle time), never by an exit code. On failure the comment carries the unit's
    journal or the daemon's log lines from this start. ``watch`` restarts it (slurmctld:
    ``scontrol reconfigure`` while it runs). Boot is a separate state,
    :func:`daemon_enabled`: Salt skips ``mod_watch`` when the watching state itself has
    changes.

    name
        munge, slurmd or slurmctld.
    manager
        systemd, openrc, sysvinit or direct (``auto`` is resolved by ``slurm_node.settings``).
    conf
        slurm.conf path (pid and log file locations are read from it).
    restart_for
        Files the daemon reads only at start (slurmctld: the JWT key, which ``scontrol
        reconfigure`` does not reload in 22.05): when ``watch`` fires and one of them is
        newer than the running process, it is restarted instead of reconfigured.
    """
    return _ensure_daemon(name, manager, conf, running=True)


def _ensure_daemon(name, manager, conf, running):
    """Shared body of daemon_running / daemon_dead: check, honour test=True, act, report."""
    ret = _ret(name)
    action, done = ("start", "started") if running else ("stop", "stopped")
    try:
        is_running = __salt__["slurm_node.daemon_running"](name, manager, conf)
    except (CommandExecutionError, SaltInvocationError) as err:
        ret.update(result=False, comment=str(err))
        return ret
    if is_running == running:
        ret["comment"] = f"{name} is {'running' if running else 'not running'} ({manager})"
        return ret
    if __opts__["test"]:
        ret.update(result=None, comment=f"{name} would be {done} ({manager})")
        ret["changes"][done] = name
        return ret
    try:
        __salt__["slurm_node.daemon_control"](name, action, manager, conf)
    except (CommandExecutionError, SaltInvocationError) as err:
        ret.update(result=False, comment=str(err))
        return ret
    ret["changes"][done] = name
    ret["comment"] = f"{name} {done} ({manager})"
    return ret


def mod_watch(name, sfun=None, manager=None, conf=None, restart_for=None, **kwargs):
    """Restart the daemon when a watched state (key, config) changed; slurmctld is
    reconfigured instead, unless a file it reads only at start (``restart_for``) changed
    since it started."""
    ret = _ret(name)
    if sfun != "daemon_running":
        ret.update(result=False, comment=f"watch is not supported by slurm_node.{sfun}")
        return ret
    running = __salt__["slurm_node.daemon_running"](name, manager, conf)
    reconfigure = name == "slurmctld" and running
    if reconfigure and restart_for:
        reconfigure = not __salt__["slurm_node.stale"](name, restart_for, conf)
    action = "reconfigure" if reconfigure else ("restart" if running else "start")
    if __opts__["test"]:
        ret.update(result=None, comment=f"{name} would {action}")
        ret["changes"][action] = name
        return ret
    try:
        if reconfigure:
            __salt__["slurm_controller.reconfigure"]()
        else:
            __salt__["slurm_node.daemon_control"](name, action, manager, conf)
    except CommandExecutionError as err:
        ret.update(result=False, comment=str(err))
        return ret
    ret["changes"][action] = name
    ret["comment"] = f"{name}: {action} done"
    return ret


def _ensure_boot(ret, name, manager, enable):
    """Bring boot enablement of ``name`` to ``enable``; fills ``ret``; False on failure."""
    if manager == "direct":
        return True
    word = "enabled" if enable else "disabled"
    try:
        now = __salt__["slurm_node.daemon_enabled"](name, manager)
        if now == enable:
            return True
        if not __opts__["test"]:
            __salt__["slurm_node.daemon_boot"](name, enable, manager)
    except (CommandExecutionError, SaltInvocationError) as err:
        ret.update(result=False, comment=str(err))
        return False
    ret["changes"]["boot"] = {"old": "enabled" if now else "disabled", "new": word}
    return True


def daemon_enabled(name, manager):
    """
    The init system starts the daemon ``name`` at boot: ``systemctl enable``,
    ``update-rc.d`` (sysvinit), ``rc-update add … default`` (OpenRC), each proven by
    reading it back. A unit someone disabled is a change the next apply repairs
    (``test=True`` reports it). With ``manager: direct`` there is no boot: nothing to do,
    the minion's state run starts the daemons.

    name
        munge, slurmd or slurmctld.
    manager
        systemd, openrc, sysvinit or direct.
    """
    ret = _ret(name)
    if manager == "direct":
        ret["comment"] = f"{name}: no boot under the direct manager (the state run starts it)"
        return ret
    if not _ensure_boot(ret, name, manager, True):
        return ret
    if not ret["changes"]:
        ret["comment"] = f"{name} is enabled at boot ({manager})"
    elif __opts__["test"]:
        ret.update(result=None, comment=f"{name} would be enabled at boot ({manager})")
    else:
        ret["comment"] = f"{name} enabled at boot ({manager})"
    return ret


def daemon_dead(name, manager, conf=None, forget_boot=False):
    """
    The daemon ``name`` does not run and does not start at boot (used by
    ``slurm.absent``).

    name
        munge, slurmd or slurmctld.
    manager
        Service manager, as for :func:`daemon_running`.
    forget_boot
        Its init script goes too (slurmrestd's, ours): sysvinit's ``K`` links are removed
        as well, or they would dangle.
    """
    ret = _ensure_daemon(name, manager, conf, running=False)
    if ret["result"] is False:
        return ret
    if not _ensure_boot(ret, name, manager, False):
        return ret
    if forget_boot and manager != "direct" and not __opts__["test"]:
        try:
            forgot = __salt__["slurm_node.daemon_boot"](name, False, manager, forget=True)
        except (CommandExecutionError, SaltInvocationError) as err:
            ret.update(result=False, comment=str(err))
            return ret
        if forgot.get("changed"):
            ret["changes"].setdefault("boot", {"old": "links", "new": "no links"})
    if "boot" in ret["changes"]:
        disabled = "would be disabled" if __opts__["test"] else "disabled"
        ret["comment"] += f"; {disabled} at boot"
        if __opts__["test"]:
            ret["result"] = None
    return ret


def hardware_in_mine(name="slurm_node.hardware"):
    """
    Make sure the Salt mine holds this node's current ``slurm_node.hardware``, which
    ``slurm.render_conf`` turns into NodeName lines. Sends it only when it differs from
    what the mine has (no change on a re-run); the changes name what differs.

    .. code-block:: yaml

        slurm-hardware-in-mine:
          slurm_node.hardware_in_mine
    """
    ret = _ret(name)
    try:
        current = __salt__["slurm_node.hardware"]()
        stored = (__salt__["mine.get"](__grains__["id"], "slurm_node.hardware") or {}).get(
            __grains__["id"]
        )
    except CommandExecutionError as err:
        ret.update(result=False, comment=f"could not read hardware: {err}")
        return ret
    if stored == current:
        ret["comment"] = "the mine holds this node's current hardware"
        return ret
    summary = {k: v for k, v in current.items() if k not in ("minion_id", "source")}
    if stored:
        summary = {
            k: {"old": stored.get(k), "new": v} for k, v in summary.items() if stored.get(k) != v
        }
    ret["changes"] = {"hardware": summary}
    if __opts__["test"]:
        ret.update(result=None, comment="hardware would be sent to the mine")
        return ret
    if not __salt__["mine.send"]("slurm_node.hardware"):
        ret.update(result=False, changes={}, comment="mine.send slurm_node.hardware failed")
        return ret
    ret["comment"] = f"hardware sent to the mine (from {current.get('source')})"
    return ret


def _slurmd_problem():
    """None when the local slurmd runs and answers, else what is wrong (with evidence)."""
    try:
        entry = __salt__["slurm_node.health"]("slurmd")["slurmd"]
    except (CommandExecutionError, SaltInvocationError) as err:
        return f"cannot check the local slurmd: {err}"
    if entry.get("state") == "running":
        return None
    return f"the local slurmd is {entry.get('state')}: {entry.get('evidence')}"


def node_verified(name, timeout=60):
    """
    Prove the node works: a local munge round trip, the local slurmd runs and answers
    (``scontrol show slurmd``, its process checked in ``/proc``), then the controller lists
    the node and it is neither down nor unresponsive within ``timeout`` seconds, and the
    local slurmd still runs and answers afterwards (the controller notices a dead slurmd
    only minutes later, so its IDLE alone proves nothing). Changes nothing.

    On failure the comment names the cause (e.g. munge key mismatch with the controller)
    and quotes the slurmd/munged log lines that show it.

    name
        The node's NodeName (its short hostname).
    timeout
        Seconds to wait for registration.
    """
    ret = _ret(name)
    if __opts__["test"]:
        ret.update(result=None, comment="node would be verified after the changes")
        return ret
    try:
        local = __salt__["munge.roundtrip"]()
    except CommandExecutionError as err:
        ret.update(result=False, comment=f"local munge round trip failed: {err}")
        return ret
    if not local["ok"]:
        ret.update(result=False, comment=f"local munge round trip failed: {local['error']}")
        return ret
    problem = _slurmd_problem()
    if problem:
        ret.update(result=False, comment=f"node {name} not usable: {problem}")
        return ret
    outcome = __salt__["slurm_controller.wait_registered"](name, timeout)
    if outcome["ok"]:
        problem = _slurmd_problem()
        state = outcome["state"]
        if problem:
            ret.update(
                result=False,
                comment=f"node {name} not usable: {problem} (the controller still says "
                f"{state['raw_state']}: it notices a dead slurmd only after SlurmdTimeout)",
            )
            return ret
        ret["comment"] = (
            f"munge round trip ok; the local slurmd runs and answers; {name} is "
            f"{state['raw_state']} at the controller (after {outcome['waited']}s)"
            + (
                f"; it stays drained ({state.get('reason')}): `salt-run slurm.resume {name}`"
                if state.get("drained")
                else ""
            )
        )
        return ret
    state = outcome.get("state") or {}
    lines = [
        f"node {name} not usable after {outcome['waited']}s: {outcome['cause']}",
        f"controller reports state={state.get('raw_state')} reason={state.get('reason')}",
        *outcome["evidence"],
    ]
    ret.update(result=False, comment="\n".join(lines))
    return ret


def controller_verified(name, timeout=60):
    """
    Prove the controller works: local munge round trip and ``scontrol ping`` says UP.

    name
        The controller's hostname.
    timeout
        Seconds to wait for slurmctld to answer.
    """
    ret = _ret(name)
    if __opts__["test"]:
        ret.update(result=None, comment="controller would be verified after the changes")
        return ret
    local = __salt__["munge.roundtrip"]()
    if not local["ok"]:
        ret.update(result=False, comment=f"local munge round trip failed: {local['error']}")
        return ret
    ping = __salt__["slurm_controller.up"](timeout)
    if ping["ok"]:
        ret["comment"] = f"munge round trip ok; {ping['output']}"
        return ret
    ret.update(result=False, comment=f"slurmctld does not answer: {ping['output']}")
    return ret
