"""
A Slurm node's (or controller's) own view: settings, health, daemon control, verification.

The ``slurm.node`` / ``slurm.controller`` states are built on these functions; admins call
them directly to look at or restart one machine.
"""

import concurrent.futures
import json
import logging
import os
import socket
import time

from salt.exceptions import CommandExecutionError, SaltInvocationError

from salt_ext.lib.conf import cluster_files, model
from salt_ext.lib.conf import hardware as hardware_lib
from salt_ext.lib.node import dbd as dbd_lib
from salt_ext.lib.node import direct, scontrol, services
from salt_ext.lib.node import munge as munge_lib
from salt_ext.lib.node import restd as restd_lib
from salt_ext.lib.node import settings as settings_lib
from salt_ext.lib.util import command, fsutil
from salt_ext.modules import _minion_plan as minion_plan

__virtualname__ = "slurm_node"

log = logging.getLogger(__name__)


def __virtual__():
    return __virtualname__


_account = minion_plan.account


def _machine():
    return minion_plan.machine(__grains__, __salt__)


def settings(role="node"):
    """
    Validate the ``slurm:`` pillar and return this machine's plan for ``role``: what the
    state tree installs, where every file and directory goes, which daemons run.

    Raises with the pillar key that is wrong, before anything is changed; the state tree
    renders from this, so bad pillar stops ``state.apply`` at render time. The Slurm
    directories (log, spool or state) are read from the slurm.conf the master serves; a
    path there that cannot be made safely (relative, ``..``, a system directory) stops it
    the same way.

    Besides the pillar's settings the plan holds ``daemons`` (munge, then slurmd or
    slurmctld), ``conf_files`` (the cluster's conf files, in order), ``conf_on_master``,
    ``dirs`` (``[{path, user, group, mode}]``), ``munge_key_path`` and ``homes``.

    ``roles`` lists the roles whose parts this machine gets (``["dbd", "controller"]`` on
    a controller that is the accounting dbd host), ``accounting`` the accounting plan
    (never the DB password: ``<set>`` at most).

    role
        ``node``, ``controller`` or ``dbd``.

    CLI Example:

    .. code-block:: bash

        salt node1 slurm_node.settings
        salt ctl slurm_node.settings controller
    """
    if role not in settings_lib.DAEMONS_BY_ROLE:
        raise SaltInvocationError(f"role must be 'node', 'controller' or 'dbd', got {role!r}")
    url = cluster_files.salt_url(cluster_files.SLURM_CONF)
    # asks the file server directly (cp.list_master may lag behind a new file), and quietly:
    # cp.get_file_str logs an error for a file the master does not serve
    served = __salt__["cp.get_file_str"](url) if __salt__["cp.hash_file"](url) else None
    try:
        return settings_lib.machine_plan(
            __pillar__.get("slurm"),
            __grains__,
            role,
            _machine(),
            served if isinstance(served, str) else None,
        )
    except settings_lib.ConfPathError as err:
        raise CommandExecutionError(str(err)) from err
    except settings_lib.SettingsError as err:
        raise CommandExecutionError(f"bad slurm pillar: {err}") from err


def _plan(role="node"):
    """The pillar's part of the plan (no file server request): what the daemon functions
    need, cheap enough for every call."""
    return minion_plan.plan(__pillar__, __grains__, role, _machine())


def _service_name(daemon, plan):
    return plan["services"]["munge" if daemon == "munge" else daemon]


def _service(daemon, plan, manager, conf):
    """The daemon under an init system (:mod:`salt_ext.lib.node.services`)."""
    return services.Service(daemon, manager, _service_name(daemon, plan), conf)


def _check_daemon(daemon):
    if daemon not in direct.DAEMONS:
        raise SaltInvocationError(
            f"daemon must be one of {', '.join(direct.DAEMONS)}, got {daemon!r}"
        )


ROLE_OF = {
    "slurmctld": "controller",
    "slurmdbd": "dbd",
    "mariadb": "dbd",
    "slurmrestd": "controller",
}


def _resolve(daemon, manager, conf):
    _check_daemon(daemon)
    plan = _plan(ROLE_OF.get(daemon, "node"))
    return plan, manager or plan["service_manager"], conf or plan["slurm_conf"]


def daemon_running(daemon, manager=None, conf=None):
    """
    True when ``daemon`` (munge, slurmd, slurmctld) really runs under ``manager``.

    Decided by ``/proc``, never by an exit code: systemd's unit is active and its MainPID
    is the daemon; sysvinit/OpenRC/direct: the daemon's pid file names a live process of
    that name (an init script's ``status`` is not asked: Debian's slurmd script says 0
    with no slurm.conf and no process).

    CLI Example:

    .. code-block:: bash

        salt node1 slurm_node.daemon_running slurmd
    """
    plan, manager, conf = _resolve(daemon, manager, conf)
    if manager == "direct":
        return direct.pid_of(daemon, conf) is not None
    return _service(daemon, plan, manager, conf).running()


def daemon_control(daemon, action, manager=None, conf=None):
    """
    ``start``, ``stop`` or ``restart`` one daemon with the machine's service manager, and
    prove it: after a start the daemon's process runs and is still alive after a settle
    time; a stop waits for the process to exit; a restart runs a new process. On failure
    the error carries the unit's journal or the daemon's log lines from this start.

    CLI Example:

    .. code-block:: bash

        salt node1 slurm_node.daemon_control slurmd restart
    """
    if action not in ("start", "stop", "restart"):
        raise SaltInvocationError(f"action must be start, stop or restart, got {action!r}")
    plan, manager, conf = _resolve(daemon, manager, conf)
    if manager == "direct":
        try:
            if action == "stop":
                direct.stop(daemon, conf)
            else:
                getattr(direct, action)(daemon, conf)
        except direct.DaemonError as err:
            raise CommandExecutionError(str(err)) from err
        return True
    try:
        result = getattr(_service(daemon, plan, manager, conf), action)()
    except services.ServiceError as err:
        raise CommandExecutionError(str(err)) from err
    for note in result.get("notes", ()):
        log.info("%s %s: %s", daemon, action, note)
    return True


DIRECT_BOOT = (
    "the direct manager has no init, so nothing starts at boot: the minion's state run "
    "(slurm.node / slurm.controller, e.g. a startup state) starts the daemons"
)


def daemon_enabled(daemon, manager=None):
    """
    Whether the init system starts ``daemon`` at boot: systemd ``is-enabled`` says
    ``enabled``, sysvinit has an ``S??`` link in the default runlevel, OpenRC has it in
    the ``default`` runlevel. None with the ``direct`` manager (no boot to speak of).

    CLI Example:

    .. code-block:: bash

        salt node1 slurm_node.daemon_enabled slurmd
    """
    plan, manager, conf = _resolve(daemon, manager, None)
    if manager == "direct":
        return None
    return _service(daemon, plan, manager, conf).enabled()


def daemon_boot(daemon, enable=True, manager=None, forget=False):
    """
    Enable (or with ``enable=False`` disable) ``daemon`` at boot, proven by reading it
    back: ``systemctl enable/disable``, ``update-rc.d``, ``rc-update add/del … default``.
    ``forget=True`` (with ``enable=False``) also removes sysvinit's ``K`` links, for a
    daemon whose init script is removed with it (slurmrestd's, by ``slurm.absent``).

    Returns ``{"enabled": bool or None, "changed": bool}`` (None, unchanged, with the
    ``direct`` manager: see ``comment``).

    CLI Example:

    .. code-block:: bash

        salt node1 slurm_node.daemon_boot slurmd
        salt node1 slurm_node.daemon_boot munge enable=False
        salt ctl slurm_node.daemon_boot slurmrestd enable=False forget=True
    """
    plan, manager, conf = _resolve(daemon, manager, None)
    if manager == "direct":
        return {"enabled": None, "changed": False, "comment": DIRECT_BOOT}
    if enable and forget:
        raise SaltInvocationError("forget: only with enable=False")
    try:
        service = _service(daemon, plan, manager, conf)
        changed = service.forget_boot() if forget else service.set_boot(bool(enable))
    except services.ServiceError as err:
        raise CommandExecutionError(str(err)) from err
    return {"enabled": bool(enable), "changed": changed}


def restart(what="all"):
    """
    Restart munge, slurmd (or slurmctld on the controller), or all of this machine's daemons.

    Each restart is proven: the old process is gone (a daemon stopped by SIGSTOP included),
    a new one runs and answers (``munge | unmunge``, ``scontrol show slurmd``,
    ``scontrol ping``) within :data:`RESTART_BOUND` seconds; otherwise this fails with the
    evidence.

    what
        ``munge``, ``slurmd``, ``slurmctld`` or ``all``: munge first (Slurm daemons need
        it), then this machine's own Slurm daemons: slurmctld on the pillar's controller,
        slurmd where installed, on the controller only when it runs there (a package that
        is installed on a machine not of its role is never started by ``all``).

    Returns ``{"restarted": [daemons], "daemons": {daemon: {"old_pid", "pid", "state",
    "evidence"}}}``.

    CLI Example:

    .. code-block:: bash

        salt node1 slurm_node.restart slurmd
    """
    choices = ("munge", "slurmd", "slurmctld", "all")
    if what not in choices:
        raise SaltInvocationError(f"what must be one of {', '.join(choices)}, got {what!r}")
    if what == "all":
        node = _plan("node")
        controller = __grains__.get("id") == node["controller"]
        targets = ["munge"]
        if controller and _installed("slurmctld"):
            targets.append("slurmctld")
        if _installed("slurmd") and (
            not controller or daemon_running("slurmd", None, node["slurm_conf"])
        ):
            targets.append("slurmd")
    else:
        targets = [what]
    report = {}
    for daemon in targets:
        plan = _plan("controller" if daemon == "slurmctld" else "node")
        old = _pid(daemon, plan["slurm_conf"], plan)
        daemon_control(daemon, "restart")
        report[daemon] = _proven(daemon, plan, old)
    return {"restarted": targets, "daemons": report}


RESTART_BOUND = 30


def _proven(daemon, plan, old_pid, bound=RESTART_BOUND):
    """Wait until ``daemon`` runs as a new process that answers; its health entry with
    ``old_pid``. Raises :class:`CommandExecutionError` with the evidence after ``bound``."""
    conf = plan["slurm_conf"]
    deadline = time.monotonic() + bound
    while True:
        names = ("munge",) if daemon == "munge" else ("munge", daemon)
        running = {d: daemon_running(d, plan["service_manager"], conf) for d in names}
        entry = _health(conf, running, plan)[daemon]
        problem = None
        if old_pid and direct.is_process(old_pid, daemon):
            problem = f"the old process (pid {old_pid}) still runs"
        elif entry["state"] != direct.RUNNING:
            problem = f"{entry['state']}: {entry['evidence']}"
        elif old_pid and entry["pid"] == old_pid:
            problem = f"still pid {old_pid}"
        if problem is None:
            return {"old_pid": old_pid, **entry}
        if time.monotonic() > deadline:
            raise CommandExecutionError(
                f"{daemon} restarted, but no new process answers after {bound} s: {problem}"
            )
        time.sleep(0.5)


def _installed(daemon):
    return __salt__["cmd.which"](direct.DAEMONS[daemon]["argv"][0]) is not None


def _version(argv):
    try:
        proc = command.run(argv, timeout=10, check=False)
    except command.CommandFailed:
        return None
    text = (proc.stdout or proc.stderr).strip().splitlines()
    return text[0] if text else None


# bounded requests that prove a daemon answers (seconds); a healthy one answers in ms
MUNGE_BOUND = 3
ANSWER_BOUND = scontrol.ANSWER_BOUND
NOT_ASKED_MUNGE = "not asked: munged does not answer, and Slurm's requests need it"


def _failed(what, err, bound):
    return f"no answer to `{what}` in {bound} s" if command.timed_out(err) else str(err)


def _ask_munge():
    what = "munge | unmunge"
    try:
        credential = munge_lib.encode("saltext-slurm health", timeout=MUNGE_BOUND)
        decoded = munge_lib.decode(credential, timeout=MUNGE_BOUND)
    except command.CommandFailed as err:
        return False, _failed(what, err, MUNGE_BOUND)
    if decoded["ok"]:
        return True, f"answers `{what}`"
    return False, f"`{what}`: {decoded.get('error')}"


def _ask_slurmd():
    what = "scontrol show slurmd"
    try:
        command.run(what.split(), timeout=ANSWER_BOUND)
    except command.CommandFailed as err:
        return False, _failed(what, err, ANSWER_BOUND)
    return True, f"answers `{what}`"


def _ask_slurmctld():
    what = "scontrol ping"
    try:
        proc = command.run(what.split(), timeout=ANSWER_BOUND, check=False)
    except command.CommandFailed as err:
        return False, _failed(what, err, ANSWER_BOUND)
    return scontrol.ping_answer(proc.stdout + proc.stderr, socket.gethostname().split(".")[0])


def _ask_mariadb():
    what = "mariadb-admin ping"
    try:
        proc = command.run(
            ["mariadb-admin", f"--socket={dbd_lib.MARIADB_SOCKET}", "--user=root", "ping"],
            timeout=ANSWER_BOUND,
            check=False,
        )
    except command.CommandFailed as err:
        return False, _failed(what, err, ANSWER_BOUND)
    if proc.returncode == 0 and "alive" in proc.stdout:
        return True, f"answers `{what}`"
    return False, f"`{what}`: {(proc.stderr or proc.stdout).strip()[-200:]}"


def _ask_slurmdbd(port=6819):
    # runs in a worker thread: no loader dunders here, the port comes from the caller
    what = f"connect to port {port}"
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=ANSWER_BOUND):
            pass
    except OSError as err:
        return False, f"`{what}`: {err}"
    return True, f"accepts a connection on port {port}"


_ASK = {
    "munge": _ask_munge,
    "slurmd": _ask_slurmd,
    "slurmctld": _ask_slurmctld,
    "mariadb": _ask_mariadb,
    "slurmdbd": _ask_slurmdbd,
    "slurmrestd": lambda: restd_lib.ask(6820),
}


def _pid(daemon, conf, plan=None):
    """The daemon's pid: the unit's MainPID under systemd, else its pid file's process."""
    try:
        if plan and plan["service_manager"] == "systemd":
            return _service(daemon, plan, "systemd", conf).pid()
        return direct.pid_of(daemon, conf)
    except (OSError, ValueError):
        return None


# daemons whose answer does not go through munge
NO_MUNGE = ("munge", "mariadb", "slurmrestd")


def _health(conf, running, plan=None):
    """``{daemon: direct.judge(...)}`` for the daemons in ``running`` ({name: bool})."""
    pids = {d: _pid(d, conf, plan) if up else None for d, up in running.items()}
    letters = {d: direct.process_state(pid) for d, pid in pids.items()}
    munge_stuck = not running.get("munge") or letters.get("munge") in direct.STOPPED_STATES
    answers, asks = {}, []
    for daemon, up in running.items():
        if not up or letters[daemon] in direct.STOPPED_STATES:
            continue
        if daemon not in NO_MUNGE and munge_stuck:
            answers[daemon] = (None, NOT_ASKED_MUNGE)
            continue
        asks.append(daemon)
    if asks:
        with concurrent.futures.ThreadPoolExecutor(max_workers=len(asks)) as pool:
            port = ((plan or {}).get("accounting") or {}).get("port", 6819)
            rest_port = ((plan or {}).get("restd") or {}).get("port", 6820)
            calls = {
                **_ASK,
                "slurmdbd": lambda: _ask_slurmdbd(port),
                "slurmrestd": lambda: restd_lib.ask(rest_port),
            }
            answers.update(zip(asks, pool.map(lambda d: calls[d](), asks), strict=True))
    if answers.get("munge", (True,))[0] is False:
        # Slurm's requests carry munge credentials: their silence says nothing of slurmd
        for daemon, (ok, _) in list(answers.items()):
            if daemon not in NO_MUNGE and ok is False:
                answers[daemon] = (None, NOT_ASKED_MUNGE)
    label = {"munge": "munged"}
    return {
        daemon: direct.judge(
            label.get(daemon, daemon), up, pids[daemon], letters[daemon], answers.get(daemon)
        )
        for daemon, up in running.items()
    }


def health(daemon=None):
    """
    Whether each installed daemon (or only ``daemon``) really runs and answers:
    ``{daemon: {"state": "running" | "hung" | "stopped", "pid", "proc_state",
    "evidence"}}``. Running is decided by ``/proc`` (see :func:`daemon_running`);
    answering by bounded requests (``munge | unmunge``, ``scontrol show slurmd``,
    ``scontrol ping``, a few seconds each, side by side). A daemon stopped by a signal
    (state ``T``) or silent past the bound is ``hung``. ``daemon`` may name several
    (a list or ``a,b``).

    CLI Example:

    .. code-block:: bash

        salt node1 slurm_node.health
        salt node1 slurm_node.health slurmd
        salt ctl slurm_node.health mariadb,slurmdbd
    """
    plan = _plan("node")
    if daemon is None:
        return _health(plan["slurm_conf"], _running_daemons(plan), plan)
    wanted = daemon if isinstance(daemon, list) else str(daemon).split(",")
    for name in wanted:
        _check_daemon(name)
    # munge's answer decides whether a Slurm daemon's silence means anything
    names = ["munge", *(name for name in wanted if name != "munge")]
    running = {d: daemon_running(d, plan["service_manager"], plan["slurm_conf"]) for d in names}
    judged = _health(plan["slurm_conf"], running, plan)
    return {name: judged[name] for name in wanted}


def _dbd_daemons(plan):
    """The accounting daemons this machine runs: none unless it is the dbd host."""
    acct = plan.get("accounting") or {}
    if not acct.get("is_dbd_host"):
        return ()
    return ("mariadb", "slurmdbd") if acct.get("local_db") else ("slurmdbd",)


def _running_daemons(plan):
    mine = _dbd_daemons(plan)
    if (plan.get("restd") or {}).get("is_host"):
        mine = (*mine, "slurmrestd")
    return {
        daemon: daemon_running(daemon, plan["service_manager"], plan["slurm_conf"])
        for daemon in direct.DAEMONS
        if (daemon in mine or daemon not in ("mariadb", "slurmdbd", "slurmrestd"))
        and _installed(daemon)
    }


def status():
    """
    This machine's Slurm health: daemons, munge key hash, slurm.conf hash, versions.

    ``daemons`` says which processes exist (by ``/proc``: a unit's MainPID or a pid file's
    process, never an exit code); ``health`` whether each one also answers (see
    :func:`health`); ``boot`` whether the init system starts each at boot (None with the
    ``direct`` manager, which has no boot). A hung daemon never makes this call fail or
    outlast the bounds.

    Never returns the key, only ``sha256:…`` of it, so outputs can be compared across nodes.

    CLI Example:

    .. code-block:: bash

        salt 'node*' slurm_node.status
    """
    plan = _plan("node")
    conf = plan["slurm_conf"]
    result = {"service_manager": plan["service_manager"], "daemons": _running_daemons(plan)}
    result["health"] = _health(conf, result["daemons"], plan)
    result["boot"] = {}
    for daemon in result["daemons"]:
        try:
            result["boot"][daemon] = daemon_enabled(daemon, plan["service_manager"])
        except (CommandExecutionError, ValueError, OSError) as err:
            result["boot"][daemon] = f"unknown: {err}"
    try:
        result["munge_key_hash"] = munge_lib.key_hash(plan["munge_key_path"])
    except FileNotFoundError:
        result["munge_key_hash"] = None
    conf_hash = fsutil.sha256_file(conf)
    result["slurm_conf_hash"] = f"sha256:{conf_hash}" if conf_hash else None
    # files on disk are intent, not proof: did each daemon start after its files changed?
    conf_paths = [os.path.join(plan["conf_dir"], name) for name in cluster_files.CONF_FILES]
    result["loaded"] = {
        daemon: direct.loaded_conf(daemon, conf_paths, conf)
        for daemon in ("slurmd", "slurmctld")
        if result["daemons"].get(daemon)
    }
    result["accounts"] = {name: _account(name) for name in ("munge", "slurm")}
    result["host"] = __grains__.get("host")
    result["versions"] = {
        "slurm": _version(["slurmd", "-V"]) or _version(["sinfo", "-V"]),
        "munge": _version(["munged", "-V"]),
    }
    return result


def stale(daemon, files, conf=None):
    """
    True when the running ``daemon`` started before one of ``files`` was last written
    (it runs with their older content unless it re-reads them); False when it started
    after all of them, or does not run.

    CLI Example:

    .. code-block:: bash

        salt ctl slurm_node.stale slurmctld '[/etc/slurm/jwt_hs256.key]'
    """
    _check_daemon(daemon)
    if isinstance(files, str):
        files = [f for f in files.split(",") if f]
    conf = conf or _plan("node")["slurm_conf"]
    return bool(direct.loaded_conf(daemon, list(files), conf)["stale"])


def hardware():
    """
    This node's hardware as slurmd will register it, for ``slurm.render_conf``.

    From ``slurmd -C`` (CPUs, Boards, SocketsPerBoard, CoresPerSocket, ThreadsPerCore,
    RealMemory); before slurmd is installed, CPUs and RealMemory from grains. GPUs from
    ``nvidia-smi -L`` or the ``/dev/nvidiaN`` files, with ``autodetect: nvml`` when this
    node's Slurm has the NVML plugin. ``slurm.node`` sends this to the Salt mine.

    CLI Example:

    .. code-block:: bash

        salt node1 slurm_node.hardware
    """
    result = None
    if __salt__["cmd.which"]("slurmd"):
        try:
            proc = command.run(["slurmd", "-C"], timeout=30)
            result = hardware_lib.parse_slurmd_c(proc.stdout)
            result["source"] = "slurmd -C"
        except (command.CommandFailed, hardware_lib.HardwareError) as err:
            log.warning("slurmd -C failed, using grains: %s", err)
    if result is None:
        try:
            result = hardware_lib.from_grains(__grains__)
        except hardware_lib.HardwareError as err:
            raise CommandExecutionError(str(err)) from err
        result["source"] = "grains"
    smi = None
    if __salt__["cmd.which"]("nvidia-smi"):
        try:
            smi = command.run(["nvidia-smi", "-L"], timeout=30).stdout
        except command.CommandFailed as err:
            log.warning("nvidia-smi -L failed, counting /dev/nvidia*: %s", err)
    result["gpus"] = hardware_lib.gpus(
        smi,
        hardware_lib.nvidia_device_files(),
        hardware_lib.autodetect_plugin(hardware_lib.PLUGIN_DIRS),
    )
    result["minion_id"] = __grains__["id"]
    return result


def conf_files():
    """
    This machine's Slurm config files (slurm.conf, gres.conf, cgroup.conf) as text, None
    for an absent file. ``slurm.apply_conf`` compares them with the new version to decide
    between ``scontrol reconfigure`` and restarts.

    CLI Example:

    .. code-block:: bash

        salt ctl slurm_node.conf_files
    """
    return cluster_files.read_conf_files(_plan("node")["conf_dir"])


STAGED_SUFFIX = ".saltext-new"
STAGED_MANIFEST = ".saltext-staged.json"


def _conf_dir(conf_dir):
    planned = _plan("node")["conf_dir"]
    if conf_dir is not None and conf_dir != planned:
        raise SaltInvocationError(
            f"conf_dir: this machine's conf dir is {planned} (slurm_node.settings), "
            f"got {conf_dir!r}"
        )
    return planned


def _served_conf_files():
    """``{name: text or None}`` of the conf files the master serves now."""
    served = {}
    for name in cluster_files.CONF_FILES:
        url = cluster_files.salt_url(name)
        # asks the file server directly; cp.list_master may lag behind a new file
        if not __salt__["cp.hash_file"](url):
            if name == cluster_files.SLURM_CONF:
                raise CommandExecutionError(
                    f"the master serves no {url}; run `salt-run slurm.render_conf` first"
                )
            served[name] = None
            continue
        text = __salt__["cp.get_file_str"](url)
        if text is False or text is None:
            raise CommandExecutionError(f"could not fetch {url} from the master")
        served[name] = text
    return served


def sync_conf(test=False, conf_dir=None):
    """
    Fetch the cluster's slurm.conf (and gres.conf / cgroup.conf when the master serves
    them) from ``salt://slurm_files/`` and write each atomically, mode 0644 root:
    ``stage_conf`` then ``commit_conf``. No daemon is touched: ``slurm.apply_conf`` decides
    whether to reconfigure or restart (the ``slurm_node.conf_files_synced`` state, through
    ``watch``). A gres.conf or cgroup.conf the master no longer serves is removed if
    saltext-slurm wrote it.

    test
        Only say what would change; nothing is written or staged.
    conf_dir
        When given, must be this machine's conf dir (a guard for the state tree).

    Returns ``{"changed": [names], "actions": {name: "write" | "remove"}, "hashes": {name:
    "sha256:..." or None}, "previous": {name: "sha256:..." or None}}``: hashes only, never
    the files' text.

    CLI Example:

    .. code-block:: bash

        salt 'n*' slurm_node.sync_conf
        salt 'n*' slurm_node.sync_conf test=True
    """
    directory = _conf_dir(conf_dir)
    if test:
        planned = cluster_files.plan_sync(directory, _served_conf_files())
        return {"changed": sorted(planned["actions"]), **planned}
    stage_conf()
    return commit_conf()


def stage_conf():
    """
    First half of a push: fetch the master's conf files and write those that differ
    beside the live ones (``<name>.saltext-new``), plus a manifest of what
    ``commit_conf`` will do. Nothing a daemon reads changes. A failure (a full disk, the
    master unreachable) removes what was staged and says so: this machine is unchanged.

    CLI Example:

    .. code-block:: bash

        salt 'n*' slurm_node.stage_conf
    """
    conf_dir = _plan("node")["conf_dir"]
    discard_staged_conf()
    try:
        served = _served_conf_files()
        planned = cluster_files.plan_sync(conf_dir, served)
        for name, action in planned["actions"].items():
            if action == "write":
                os.makedirs(conf_dir, mode=0o755, exist_ok=True)
                path = os.path.join(conf_dir, name) + STAGED_SUFFIX
                fsutil.atomic_write(path, served[name], mode=0o644, uid=0, gid=0)
        if planned["actions"]:
            manifest = json.dumps(planned)
            fsutil.atomic_write(os.path.join(conf_dir, STAGED_MANIFEST), manifest, mode=0o600)
    except OSError as err:
        discard_staged_conf()
        raise CommandExecutionError(
            f"cannot stage the conf files in {conf_dir}: {err.strerror or err}; "
            "nothing changed on this machine"
        ) from err
    except CommandExecutionError:
        discard_staged_conf()
        raise
    return {
        "staged": sorted(planned["actions"]),
        "hashes": planned["hashes"],
        "previous": planned["previous"],
    }


def commit_conf():
    """
    Second half of a push: put the files ``stage_conf`` staged in place (renames, which
    need no free space) and remove the ones the master stopped serving.

    Returns ``{"changed": [names], "actions": {name: "write" | "remove"}, "hashes": {name:
    "sha256:..." or None}, "previous": {name: "sha256:..." or None}}``.

    CLI Example:

    .. code-block:: bash

        salt 'n*' slurm_node.commit_conf
    """
    conf_dir = _plan("node")["conf_dir"]
    manifest_path = os.path.join(conf_dir, STAGED_MANIFEST)
    try:
        with open(manifest_path, encoding="utf-8") as handle:
            manifest = json.load(handle)
    except FileNotFoundError:
        current = cluster_files.read_conf_files(conf_dir)
        hashes = {
            n: (f"sha256:{fsutil.sha256_bytes(t)}" if t is not None else None)
            for n, t in current.items()
        }
        return {"changed": [], "actions": {}, "hashes": hashes, "previous": dict(hashes)}
    changed = []
    for name, action in sorted(manifest["actions"].items()):
        if name not in cluster_files.CONF_FILES:
            continue
        path = os.path.join(conf_dir, name)
        if action == "write":
            os.replace(path + STAGED_SUFFIX, path)
        elif os.path.exists(path):
            os.unlink(path)
        changed.append(name)
    os.unlink(manifest_path)
    fsutil.fsync_dir(conf_dir)
    return {
        "changed": changed,
        "actions": {name: manifest["actions"][name] for name in changed},
        "hashes": manifest["hashes"],
        "previous": manifest.get("previous") or {},
    }


def discard_staged_conf():
    """
    Remove what ``stage_conf`` staged (the live files stay as they are).

    CLI Example:

    .. code-block:: bash

        salt 'n*' slurm_node.discard_staged_conf
    """
    conf_dir = _plan("node")["conf_dir"]
    removed = []
    for name in [*(n + STAGED_SUFFIX for n in cluster_files.CONF_FILES), STAGED_MANIFEST]:
        path = os.path.join(conf_dir, name)
        if os.path.exists(path):
            os.unlink(path)
            removed.append(name)
    return removed


def probe(lines=200):
    """
    Evidence for ``slurm.diagnose`` from this node's side: :func:`status` (with each
    daemon's health) plus the clock, whether this hostname is a NodeName in the local
    slurm.conf, ``scontrol ping`` from here (can slurmd's host reach slurmctld?), the local
    munge round trip, and the telling lines of the slurmd and munged logs.

    Every request is bounded; a daemon that hangs shows up as evidence, never as a failed
    call (which ``slurm.diagnose`` would read as an unreachable minion).

    CLI Example:

    .. code-block:: bash

        salt n1 slurm_node.probe
    """
    result = status()
    plan = _plan("node")
    conf = plan["slurm_conf"]
    result["time"] = time.time()
    result["hostname"] = socket.gethostname().split(".")[0]
    try:
        names = _conf_node_names(conf)
    except (OSError, ValueError):
        names = None
    result["in_local_conf"] = None if names is None else result["hostname"] in names
    munge = result["health"].get("munge") or {}
    munge_ok = munge.get("state") == direct.RUNNING
    result["munge_roundtrip"] = {
        "ok": munge_ok,
        "error": None if munge_ok else munge.get("evidence", "munge is not installed"),
    }
    if not result["slurm_conf_hash"]:
        result["controller_ping"] = None
    elif not munge_ok:
        result["controller_ping"] = {"ok": None, "output": NOT_ASKED_MUNGE, "timed_out": False}
    else:
        result["controller_ping"] = scontrol.ping()
    logs = {}
    for label, path in (
        ("slurmd", direct.spec("slurmd", conf)["log"]),
        ("munged", direct.DAEMONS["munge"]["log"]),
        ("slurmctld", direct.spec("slurmctld", conf)["log"]),
    ):
        tail = direct.log_tail(path, lines)
        if tail:
            logs[label] = [line for line in tail if scontrol.is_telling(line)][-8:]
            logs[label + "_last"] = tail[-3:]
        daemon = "munge" if label == "munged" else label
        if (result.get("daemons") or {}).get(daemon) is False and plan["service_manager"] in (
            services.MANAGERS
        ):
            # why it is not running, from its last run only: a daemon that died on a bad
            # option under systemd never wrote its log file, whose lines are an older run's
            journal = _service(daemon, plan, plan["service_manager"], conf).last_run()
            if journal:
                logs[label + "_last"] = journal
    result["logs"] = logs
    return result


def _conf_node_names(conf_path):
    """NodeNames a slurm.conf file defines (hostlists expanded)."""
    with open(conf_path, encoding="utf-8") as handle:
        return set(model.conf_nodes(handle.read()))


# --- accounting: slurmdbd.conf, the database, the cluster in it ---------------------------
