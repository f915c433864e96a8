"""The ``direct`` service manager: start, check and stop our daemons ourselves.

For machines with no init system (containers, sandboxes): munged, slurmd, slurmctld,
slurmdbd and (accounting with local storage) MariaDB's mariadbd. Each daemon runs in the
background, writes its pid file, and is recognised by pid file + ``/proc/<pid>/comm``, so a
stale pid file or a reused pid never counts as "running". The Slurm daemons and munged fork
by themselves; mariadbd does not, so it is started through ``setsid -f`` (a new session,
the parent returns at once), as user mysql, with its data directory initialised by
``mariadb-install-db`` when empty. slurmrestd neither forks nor writes a pid file: it is
started as the user its environment file names (:mod:`salt_ext.lib.node.restd`), in a
session of its own, its output appended to its log, and its pid file is written here.
"""

import grp
import os
import pwd
import signal
import subprocess
import time

from salt_ext.lib.conf import model
from salt_ext.lib.node import dbd, restd
from salt_ext.lib.node import munge as munge_lib
from salt_ext.lib.util import fsutil

DAEMONS = {
    "munge": {
        "argv": ["munged"],
        "comm": "munged",
        "user": "munge",
        "pidfile": "/run/munge/munged.pid",
        "log": f"{munge_lib.LOG_DIR}/munged.log",
        # munged wants its socket dir to exist, owned by itself, on a fresh /run
        "runtime_dirs": [("/run/munge", "munge", 0o755)],
    },
    "slurmd": {
        "argv": ["slurmd"],
        "comm": "slurmd",
        "pidfile_key": "slurmdpidfile",
        "pidfile": "/run/slurmd.pid",
        "log_key": "slurmdlogfile",
        "log": "/var/log/slurm/slurmd.log",
        "takes_conf": True,
    },
    "slurmctld": {
        "argv": ["slurmctld"],
        "comm": "slurmctld",
        "pidfile_key": "slurmctldpidfile",
        "pidfile": "/run/slurmctld.pid",
        "log_key": "slurmctldlogfile",
        "log": "/var/log/slurm/slurmctld.log",
        "takes_conf": True,
    },
    # runs as root, then as slurmdbd.conf's SlurmUser (it drops privileges itself)
    "slurmdbd": {
        "argv": ["slurmdbd"],
        "comm": "slurmdbd",
        "pidfile": dbd.SLURMDBD_PIDFILE,
        "log": dbd.SLURMDBD_LOG,
    },
    "mariadb": {
        "argv": [
            "mariadbd",
            f"--pid-file={dbd.MARIADB_PIDFILE}",
            f"--socket={dbd.MARIADB_SOCKET}",
            f"--log-error={dbd.MARIADB_LOG}",
        ],
        "comm": "mariadbd",
        "user": dbd.MARIADB_USER,
        "pidfile": dbd.MARIADB_PIDFILE,
        "log": dbd.MARIADB_LOG,
        "runtime_dirs": [(dbd.MARIADB_RUNDIR, dbd.MARIADB_USER, 0o755)],
        "foreground": True,  # does not fork: setsid -f
        "datadir": dbd.MARIADB_DATADIR,
    },
    # slurm:restd: in the foreground as its own user, configured by its environment file
    "slurmrestd": {
        "argv": ["slurmrestd"],
        "comm": "slurmrestd",
        "pidfile": restd.PIDFILE,
        "log": restd.LOG,
        "env_file": restd.ENV_FILE,
    },
}
# a daemon we run in the foreground must still be there this long after its start (a bad
# option or a refused user makes slurmrestd exit within milliseconds)
FOREGROUND_SETTLE = 1.5


class DaemonError(RuntimeError):
    """A daemon did not start or stop; the message carries its last log lines."""


def spec(name, conf_path=None):
    """Daemon description with pid/log paths resolved from slurm.conf where it sets them."""
    if name not in DAEMONS:
        raise ValueError(f"unknown daemon {name!r}; known: {', '.join(DAEMONS)}")
    info = dict(DAEMONS[name])
    if conf_path and info.get("env_file"):
        # slurmrestd's environment file is beside slurm.conf
        info["env_file"] = restd.env_path(os.path.dirname(conf_path))
    if conf_path and info.get("takes_conf"):
        values = model.read_values(conf_path)
        info["pidfile"] = values.get(info["pidfile_key"], info["pidfile"])
        info["log"] = values.get(info["log_key"], info["log"])
        info["argv"] = [*info["argv"], "-f", conf_path]
    return info


def _comm(pid):
    """The process's name, or None when it is gone or a zombie (dead, not yet reaped)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            stat = handle.read()
        with open(f"/proc/{pid}/comm") as handle:
            comm = handle.read().strip()
    except OSError:
        return None
    return None if stat.rsplit(")", 1)[-1].split()[:1] == ["Z"] else comm


def is_process(pid, name):
    """True while ``pid`` is a live (not zombie) process of daemon ``name``."""
    return _comm(pid) == DAEMONS[name]["comm"]


def pid_of(name, conf_path=None):
    """Pid of the running daemon, or None (no pid file, dead pid, or pid reused)."""
    info = spec(name, conf_path)
    try:
        with open(info["pidfile"]) as handle:
            pid = int(handle.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if _comm(pid) == info["comm"] else None


def started_at(pid):
    """Wall-clock time a process started (from ``/proc``), or None if it is gone.

    ``btime`` in /proc/stat has whole seconds, so the value can be up to 1 s early:
    callers compare with a margin (:data:`START_MARGIN`).
    """
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            # the command name (field 2) may hold spaces and parentheses: split after it
            fields = handle.read().rsplit(")", 1)[1].split()
        with open("/proc/stat", encoding="ascii") as handle:
            btime = next(int(line.split()[1]) for line in handle if line.startswith("btime "))
    except (OSError, IndexError, ValueError, StopIteration):
        return None
    # fields[0] is field 3 (state); starttime is field 22
    return btime + int(fields[19]) / os.sysconf("SC_CLK_TCK")


START_MARGIN = 1.5

# /proc/<pid>/stat states that mean "alive but not working"
_STATE_NAMES = {
    "T": "stopped",
    "t": "stopped by a tracer",
    "D": "uninterruptible sleep",
    "Z": "zombie",
}
STOPPED_STATES = ("T", "t")

RUNNING, HUNG, STOPPED = "running", "hung", "stopped"


def process_state(pid):
    """The one-letter state of ``pid`` from ``/proc`` (``R``, ``S``, ``T`` ...), None if it
    is gone (or ``pid`` is None)."""
    if not pid:
        return None
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def describe_state(pid, letter):
    """``pid 123 state T (stopped)``."""
    name = _STATE_NAMES.get(letter)
    return f"pid {pid} state {letter}" + (f" ({name})" if name else "")


def judge(label, running, pid, letter, answer):
    """One daemon's health: ``{"state": running|hung|stopped, "pid", "proc_state",
    "evidence"}``.

    ``running``: the service manager (or pid file) says the process runs; ``letter``: its
    :func:`process_state`; ``answer``: what a bounded request to it gave, ``(ok, text)``
    where ``ok`` is True (it answered), False (no or a failed answer: ``text`` says which)
    or None (not asked: ``text`` says why). A process stopped by a signal is hung whatever
    the answer; one that does not answer in time is hung too: it runs but serves no one.
    """
    if not running:
        return {
            "state": STOPPED,
            "pid": None,
            "proc_state": None,
            "evidence": f"{label} not running",
        }
    ok, text = answer if answer else (None, "not asked")
    where = describe_state(pid, letter) if pid and letter else (f"pid {pid}" if pid else "")
    entry = {"state": RUNNING, "pid": pid, "proc_state": letter}
    if letter in STOPPED_STATES:
        return {**entry, "state": HUNG, "evidence": where}
    if ok is False:
        evidence = f"{where}; {text}" if letter in _STATE_NAMES else text
        return {**entry, "state": HUNG, "evidence": evidence}
    return {**entry, "evidence": f"pid {pid}: {text}" if pid else text}


def loaded_conf(name, conf_files, conf_path=None):
    """Whether the running daemon started after its config files were last written.

    Returns ``{"pid", "started", "conf_mtime", "stale"}``; ``stale`` is True when a file
    is newer than the process (it may run an older config unless a reconfigure made it
    re-read), None when the daemon does not run.
    """
    pid = pid_of(name, conf_path)
    mtimes = []
    for path in conf_files:
        try:
            mtimes.append(os.stat(path).st_mtime)
        except OSError:
            continue
    conf_mtime = max(mtimes) if mtimes else None
    started = started_at(pid) if pid else None
    stale = None
    if started is not None:
        stale = bool(conf_mtime is not None and conf_mtime > started + START_MARGIN)
    return {"pid": pid, "started": started, "conf_mtime": conf_mtime, "stale": stale}


def log_tail(path, lines=20):
    """Last ``lines`` lines of a log file (empty list if unreadable)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 64 * 1024))
            text = handle.read().decode(errors="replace")
    except OSError:
        return []
    return text.splitlines()[-lines:]


def _prepare_runtime_dirs(info):
    for path, owner, mode in info.get("runtime_dirs", ()):
        os.makedirs(path, exist_ok=True)
        entry = pwd.getpwnam(owner)
        os.chown(path, entry.pw_uid, entry.pw_gid)
        os.chmod(path, mode)


def _init_datadir(info, timeout):
    """MariaDB's system tables in an empty data directory (``mariadb-install-db``, root
    over the unix socket only, no test database); nothing when they exist."""
    datadir = info.get("datadir")
    if not datadir or os.path.isdir(os.path.join(datadir, "mysql")):
        return
    argv = [
        "mariadb-install-db",
        f"--user={info['user']}",
        f"--datadir={datadir}",
        "--auth-root-authentication-method=socket",
        "--skip-test-db",
    ]
    try:
        proc = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout * 6, check=False, cwd="/"
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        raise DaemonError(f"{argv[0]}: {err}") from err
    if proc.returncode != 0:
        said = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-15:]
        raise DaemonError(f"{argv[0]} exited {proc.returncode}:\n" + "\n".join(said))


def start(name, conf_path=None, timeout=20):
    """Start the daemon unless it runs; return its pid. :class:`DaemonError` on failure."""
    pid = pid_of(name, conf_path)
    if pid:
        return pid
    info = spec(name, conf_path)
    if info.get("env_file"):
        return _start_foreground(name, info, timeout)
    _prepare_runtime_dirs(info)
    _init_datadir(info, timeout)
    argv = ["setsid", "-f", *info["argv"]] if info.get("foreground") else info["argv"]
    kwargs = {}
    if info.get("user"):
        entry = pwd.getpwnam(info["user"])
        kwargs = {
            "user": entry.pw_uid,
            "group": entry.pw_gid,
            "extra_groups": [g.gr_gid for g in grp.getgrall() if info["user"] in g.gr_mem],
        }
    if info.get("foreground"):
        # the daemon keeps whatever it inherits: no pipe of ours (run would wait for it)
        kwargs.update(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    else:
        kwargs.update(capture_output=True)
    try:
        # the daemon forks; the parent returns once the child is set up (or failed)
        proc = subprocess.run(
            argv,
            text=True,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd="/",
            **kwargs,
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        raise DaemonError(f"{name}: could not run {info['argv'][0]}: {err}") from err
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid = pid_of(name, conf_path)
        if pid:
            return pid
        if proc.returncode != 0:
            break
        time.sleep(0.1)
    detail = "\n".join(
        filter(
            None,
            [(proc.stderr or "").strip(), (proc.stdout or "").strip(), *log_tail(info["log"], 15)],
        )
    )
    raise DaemonError(f"{name} did not start (exit {proc.returncode}):\n{detail}")


def _start_foreground(name, info, timeout):
    """Start a daemon that stays in the foreground and writes no pid file (slurmrestd):
    as the user its environment file names, with that environment only."""
    values = restd.read_env(info["env_file"])
    user = values.pop(restd.RUN_AS, None)
    if not user:
        raise DaemonError(
            f"{name}: {info['env_file']} is missing or names no user ({restd.RUN_AS}); "
            "apply slurm.controller"
        )
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise DaemonError(f"{name}: user {user!r} does not exist") from None
    run_dir = os.path.dirname(info["pidfile"])
    os.makedirs(run_dir, exist_ok=True)
    os.chown(run_dir, entry.pw_uid, entry.pw_gid)
    os.chmod(run_dir, 0o755)  # noqa: S103 - its socket directory: clients must reach it
    os.makedirs(os.path.dirname(info["log"]), exist_ok=True)
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C", **values}
    size = log_size(info["log"])
    try:
        with open(info["log"], "ab") as log:
            proc = subprocess.Popen(
                info["argv"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                cwd="/",
                env=env,
                start_new_session=True,
                user=entry.pw_uid,
                group=entry.pw_gid,
                extra_groups=[],
            )
    except OSError as err:
        raise DaemonError(f"{name}: could not run {info['argv'][0]}: {err}") from err
    fsutil.atomic_write(info["pidfile"], f"{proc.pid}\n", mode=0o644)
    deadline = time.monotonic() + min(timeout, FOREGROUND_SETTLE)
    while time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.1)
    if proc.poll() is None and pid_of(name) == proc.pid:
        return proc.pid
    detail = "\n".join(log_since(info["log"], size, 15))
    raise DaemonError(f"{name} did not start (exit {proc.returncode}):\n{detail}")


def stop(name, conf_path=None, timeout=20):
    """Stop the daemon if it runs (SIGTERM, then SIGKILL after ``timeout``) and wait until
    its process is gone.

    A process stopped by SIGSTOP keeps SIGTERM pending until it continues, so SIGCONT
    follows SIGTERM: a stopped daemon shuts down as cleanly as a running one."""
    pid = pid_of(name, conf_path)
    if not pid:
        return False
    comm = spec(name, conf_path)["comm"]
    for sig in (signal.SIGTERM, signal.SIGCONT):
        _signal(pid, sig)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _comm(pid) != comm:
            return True
        time.sleep(0.1)
    _signal(pid, signal.SIGKILL)
    # a start right after must not find the old process still holding its port/pid file
    deadline = time.monotonic() + 5
    while _comm(pid) == comm:
        if time.monotonic() > deadline:
            raise DaemonError(f"{name} (pid {pid}) did not exit after SIGKILL")
        time.sleep(0.05)
    return True


def _signal(pid, sig):
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def restart(name, conf_path=None, timeout=20):
    stop(name, conf_path, timeout)
    return start(name, conf_path, timeout)


def log_size(path):
    """Size of a log file now (0 when it does not exist): where lines of a start begin."""
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def log_since(path, size, lines=40):
    """The last ``lines`` lines written to ``path`` after it was ``size`` bytes long.

    A file now shorter than ``size`` was rotated or truncated: all of it is new. Reads at
    most 64 KiB; a partial first line is dropped.
    """
    try:
        with open(path, "rb") as handle:
            end = handle.seek(0, os.SEEK_END)
            start = size if 0 <= size <= end else 0
            begin = max(start, end - 64 * 1024)
            handle.seek(begin)
            text = handle.read().decode(errors="replace")
    except OSError:
        return []
    found = text.splitlines()
    if begin > start and found:
        found = found[1:]
    return found[-lines:]
