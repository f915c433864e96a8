"""Daemons under an init system (systemd, sysvinit, OpenRC), proven by ``/proc``.

One home for starting, stopping, checking and boot-enabling munged, slurmd and slurmctld
when an init system owns them (the ``direct`` manager, for machines with no init, lives in
:mod:`salt_ext.lib.node.direct`). The rules:

1. **An exit code is never proof.** ``systemctl start`` returns 0 for a ``Type=simple``
   unit that dies a second later; Debian's ``/etc/init.d/slurmd`` exits 0 for every action,
   ``status`` included, when slurm.conf is missing. Whether a daemon runs is decided by
   ``/proc`` only:

   - systemd: ``systemctl show -p MainPID,ActiveState,SubState,Result``: the unit is
     ``active`` and its MainPID's ``/proc/<pid>/comm`` is the daemon;
   - sysvinit / OpenRC: the daemon's pid file (slurm.conf's ``SlurmdPidFile`` /
     ``SlurmctldPidFile``, munge's ``/run/munge/munged.pid``) names a live process whose
     comm is the daemon. The init script's ``status`` is never asked.

2. **Start** = (OpenRC: ``rc-service <svc> zap`` first when the service is marked started
   or crashed but nothing runs; systemd: ``reset-failed`` for a failed unit), the manager's
   start, then poll up to :data:`START_BOUND` seconds for the process, which must still be
   the same live process after :data:`SETTLE` seconds (a daemon that dies on a bad option
   one second in is caught).

3. **Stop** = the manager's stop, then wait up to :data:`STOP_BOUND` seconds for the old
   process to exit; then SIGKILL and :data:`KILL_BOUND` seconds more, or fail.
   **Restart** = stop (the old pid is gone), start, and a NEW pid must run: an init
   script's ``restart`` that does not wait (Debian's slurmd: stop, then ``start --oknodo``
   finds the dying process and starts nothing) is never used.

4. **Evidence from this start only.** A failure carries systemd's
   ``journalctl -u <unit> --since @<start epoch>`` and ``systemctl status`` lines, or (all
   managers) the daemon log lines written since the start (its size is remembered before
   starting) and the init script's own output. Stale lines of an earlier failure never
   appear.

5. **Boot.** ``enabled`` is read from what the init system will do at boot, and
   ``enable``/``disable`` are proven by reading it again: systemd ``systemctl is-enabled``
   (``enabled`` only), sysvinit ``S??<svc>`` links in the default runlevel's
   ``/etc/rc<N>.d`` (``update-rc.d``), OpenRC ``/etc/runlevels/default/<svc>``
   (``rc-update add/del <svc> default``).

Everything a test needs to fake (commands, ``/proc`` comm, clocks, signals, the root of
the file system) is injected into :class:`Service`.
"""

import os
import re
import signal
import time

from salt_ext.lib.node import direct
from salt_ext.lib.util import command

MANAGERS = ("systemd", "sysvinit", "openrc")
START_BOUND = 15
SETTLE = 2
STOP_BOUND = 20
KILL_BOUND = 5
POLL = 0.2
COMMAND_BOUND = 90
EVIDENCE_LINES = 40
JOURNAL_LINES = 6  # the daemon's own lines of one failed start that a state comment quotes
SPAWN_RETRY_PAUSE = 1  # seconds before the one retry of a start systemd itself failed
JOURNAL_WAIT = 3  # seconds a failed start's evidence waits for the daemon's own journal lines


_SYSTEMD_START = re.compile(r"systemd\[\d+\]: (Starting|Started) ")
_RUN_BOUNDARY = re.compile(
    r"systemd\[\d+\]: (Starting |Stopping |Stopped |.*Deactivated successfully"
    r"|.*Main process exited|.*Failed with result)"
)
_SYSTEMD_VERDICT = re.compile(r"Main process exited|Failed with result|Failed to start")
_COMPLAINT = re.compile(
    r"error|fatal|unrecognized|invalid|denied|refus|cannot|can't|unable|not found|no such",
    re.IGNORECASE,
)


def journal_story(lines, limit):
    """The journal lines of a unit's LAST run (after its last "Starting"/"Started" line):
    the daemon's own complaints (error, fatal, unrecognized option ...) or, when it made
    none, its first lines, then systemd's verdict ("Main process exited ..."). A usage
    text of 25 lines or an earlier run's errors never crowd out the line that says why."""
    lines = [line for line in lines if line.strip() and not line.startswith("-- ")]
    starts = [i for i, line in enumerate(lines) if _SYSTEMD_START.search(line)]
    if starts:
        # the daemon's own lines can reach journald before systemd's "Started" line (seen:
        # slurmd's "unrecognized option" logged first): the last run begins after the
        # previous run's end or this run's "Starting" line, not at "Started"
        bounds = [i for i in range(starts[-1]) if _RUN_BOUNDARY.search(lines[i])]
        run = lines[bounds[-1] + 1 if bounds else 0 :]
        if "Starting " in lines[starts[-1]]:
            run = lines[starts[-1] + 1 :]
    else:
        run = lines
    own = [line for line in run if "systemd[" not in line]
    complaints = [line for line in own if _COMPLAINT.search(line)]
    verdict = [line for line in run if "systemd[" in line and _SYSTEMD_VERDICT.search(line)]
    return [f"journal: {line}" for line in (complaints[:limit] or own[:limit]) + verdict[-2:]]


def _own_lines(journal_text):
    """Journal lines of the daemon itself (not systemd's, not journalctl's headers)."""
    return [
        line
        for line in journal_text.splitlines()
        if line.strip() and not line.startswith("-- ") and "systemd[" not in line
    ]


class ServiceError(RuntimeError):
    """A daemon did not start/stop/enable; ``evidence`` holds the lines that show why."""

    def __init__(self, message, evidence=()):
        self.evidence = list(evidence)
        text = message + ("".join(f"\n  {line}" for line in self.evidence))
        super().__init__(text)


def _int_or_none(text):
    try:
        return int(text)
    except (TypeError, ValueError):
        return None


def _run(argv, timeout=COMMAND_BOUND):
    """``(returncode, stdout, stderr)``; a missing program is 127, a timeout 124."""
    try:
        proc = command.run(argv, timeout=timeout, check=False, env=_c_locale())
    except command.CommandFailed as err:
        code = 127 if "not found" in str(err) else 124
        return code, "", str(err)
    return proc.returncode, proc.stdout, proc.stderr


def _c_locale():
    return {**os.environ, "LC_ALL": "C", "SYSTEMD_PAGER": "", "SYSTEMD_COLORS": "0"}


class Service:
    """One daemon (``munge``, ``slurmd``, ``slurmctld``) under one init system.

    daemon
        Key of :data:`salt_ext.lib.node.direct.DAEMONS` (its comm, pid file and log).
    manager
        ``systemd``, ``sysvinit`` or ``openrc``.
    name
        The OS's service (unit / init script) name, e.g. ``munge`` or Alpine's ``munged``.
    conf
        slurm.conf path: pid and log file locations are read from it.
    """

    def __init__(
        self,
        daemon,
        manager,
        name,
        conf=None,
        *,
        run=_run,
        comm=None,
        sleep=time.sleep,
        monotonic=time.monotonic,
        now=time.time,
        kill=os.kill,
        root="/",
    ):
        if manager not in MANAGERS:
            raise ValueError(f"manager must be one of {', '.join(MANAGERS)}, got {manager!r}")
        self.daemon = daemon
        self.manager = manager
        self.name = name
        self.info = direct.spec(daemon, conf)
        self._run = run
        self._comm = comm or direct._comm
        self._sleep = sleep
        self._monotonic = monotonic
        self._now = now
        self._kill = kill
        self.root = root

    # --- is it running? ---------------------------------------------------------------

    def _is_daemon(self, pid):
        return bool(pid) and self._comm(pid) == self.info["comm"]

    def _unit(self):
        code, out, err = self._run(
            [
                "systemctl",
                "show",
                "-p",
                "MainPID,ActiveState,SubState,Result,ExecMainStatus,ExecStart",
                self.name,
            ]
        )
        props = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
        try:
            props["MainPID"] = int(props.get("MainPID") or 0)
        except ValueError:
            props["MainPID"] = 0
        if code != 0:
            props["error"] = (err or out).strip()
        return props

    def _pidfile_pid(self):
        try:
            with open(self.info["pidfile"]) as handle:
                return int(handle.read().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def status(self):
        """``{"running": bool, "pid": int or None, "detail": str}`` from ``/proc``."""
        if self.manager == "systemd":
            unit = self._unit()
            pid = unit["MainPID"]
            detail = (
                f"{self.name}: ActiveState={unit.get('ActiveState')} "
                f"SubState={unit.get('SubState')} Result={unit.get('Result')} MainPID={pid}"
            )
            if unit.get("error"):
                detail += f" ({unit['error']})"
            alive = self._is_daemon(pid)
            if pid and not alive:
                detail += f"; pid {pid} is not {self.info['comm']}"
            running = unit.get("ActiveState") == "active" and alive
            status = {"running": running, "pid": pid if running else None, "detail": detail}
            if unit.get("ActiveState") == "failed":
                # ExecStart's own record has the exit status of the start command also for a
                # Type=forking unit (munge), whose failure is a "control process" one
                spawned = re.search(r"\bstatus=(\d+)", unit.get("ExecStart") or "")
                status["failed"] = _int_or_none(
                    spawned.group(1) if spawned else unit.get("ExecMainStatus")
                )
            return status
        pid = self._pidfile_pid()
        alive = self._is_daemon(pid)
        where = self.info["pidfile"]
        if pid is None:
            detail = f"no pid in {where}"
        elif alive:
            detail = f"pid {pid} from {where} is {self.info['comm']}"
        else:
            detail = f"pid {pid} from {where} is not a live {self.info['comm']}"
        return {"running": alive, "pid": pid if alive else None, "detail": detail}

    def pid(self):
        return self.status()["pid"]

    def running(self):
        return self.status()["running"]

    # --- start / stop / restart --------------------------------------------------------

    def _command(self, action):
        if self.manager == "systemd":
            return ["systemctl", action, self.name]
        if self.manager == "openrc":
            return ["rc-service", self.name, action]
        return [os.path.join(self.root, "etc/init.d", self.name), action]

    def _openrc_marked(self):
        """OpenRC's own idea of the service (``started``, ``crashed``, ``stopped`` ...)."""
        code, out, err = self._run(["rc-service", self.name, "status"])
        text = f"{out}\n{err}".lower()
        for word in ("crashed", "started", "starting", "stopping", "stopped"):
            if word in text:
                return word
        return f"unknown (exit {code})"

    def start(self):
        """Start unless it runs; return ``{"pid", "changed", "notes"}``; ServiceError with
        this start's evidence when no live daemon runs after the settle time."""
        before = self.status()
        if before["running"]:
            return {"pid": before["pid"], "changed": False, "notes": []}
        notes = []
        if self.manager == "openrc":
            marked = self._openrc_marked()
            if marked in ("started", "crashed", "starting", "stopping"):
                self._run(["rc-service", self.name, "zap"])
                notes.append(f"rc-service {self.name} zap (marked {marked}, nothing ran)")
        elif self.manager == "systemd" and "ActiveState=failed" in before["detail"]:
            self._run(["systemctl", "reset-failed", self.name])
            notes.append(f"systemctl reset-failed {self.name}")
        since = self._now()
        log_size = direct.log_size(self.info["log"])
        argv = self._command("start")
        code, out, err = self._run(argv)
        said = [line for line in f"{out}\n{err}".splitlines() if line.strip()]
        current = self._await_start()
        if self._spawn_failed(current):
            # systemd failed a step of its own before the daemon ran (seen: 219/CGROUP in a
            # container, once in hundreds of starts): one more try, said in the notes
            notes.append(
                f"systemd could not spawn {self.name} (exit status {current['failed']}: a "
                "step of systemd's own, before the daemon ran); reset-failed, started again"
            )
            self._run(["systemctl", "reset-failed", self.name])
            self._sleep(SPAWN_RETRY_PAUSE)  # seen: the old cgroup not yet gone after a stop
            code, out, err = self._run(argv)
            said += [line for line in f"{out}\n{err}".splitlines() if line.strip()]
            current = self._await_start()
        if not current["running"]:
            raise ServiceError(
                f"{self.daemon} did not start ({self.manager}: `{' '.join(argv)}` exited "
                f"{code}; no {self.info['comm']} process"
                + (" (the unit failed)" if "failed" in current else f" after {START_BOUND} s")
                + f": {current['detail']})",
                self._evidence(since, log_size, said),
            )
        pid = current["pid"]
        self._sleep(SETTLE)
        after = self.status()
        if not (after["running"] and after["pid"] == pid and self._is_daemon(pid)):
            raise ServiceError(
                f"{self.daemon} started (pid {pid}) but died within {SETTLE} s "
                f"({self.manager}: {after['detail']})",
                self._evidence(since, log_size, said),
            )
        if code != 0:
            notes.append(f"`{' '.join(argv)}` exited {code}, yet pid {pid} runs")
        return {"pid": pid, "changed": True, "notes": notes}

    def _await_start(self):
        """Status once the daemon runs, the unit failed (systemd: no point waiting), or
        :data:`START_BOUND` passed."""
        deadline = self._monotonic() + START_BOUND
        current = self.status()
        while not current["running"] and "failed" not in current:
            if self._monotonic() >= deadline:
                break
            self._sleep(POLL)
            current = self.status()
        return current

    def _spawn_failed(self, status):
        """systemd's own exit codes (systemd.exec(5): 200-243, e.g. 219/CGROUP, 203/EXEC)
        say the daemon never ran; slurmd/munged exit 1 for their own errors."""
        code = status.get("failed")
        return self.manager == "systemd" and code is not None and 200 <= code <= 243

    def stop(self):
        """Stop; wait until the old process is gone (SIGKILL after :data:`STOP_BOUND`).
        Returns ``{"old_pid", "changed", "notes"}``."""
        before = self.status()
        old = before["pid"]
        notes = []
        argv = self._command("stop")
        code, out, err = self._run(argv)
        if old is None:
            return {"old_pid": None, "changed": False, "notes": notes}
        if not self._wait_gone(old, STOP_BOUND):
            notes.append(f"pid {old} still ran {STOP_BOUND} s after `{' '.join(argv)}`: SIGKILL")
            try:
                self._kill(old, signal.SIGKILL)
            except ProcessLookupError:
                pass
            if not self._wait_gone(old, KILL_BOUND):
                said = [line for line in f"{out}\n{err}".splitlines() if line.strip()]
                raise ServiceError(
                    f"{self.daemon} (pid {old}) did not exit after `{' '.join(argv)}` "
                    f"(exit {code}) and SIGKILL",
                    said,
                )
        return {"old_pid": old, "changed": True, "notes": notes}

    def _wait_gone(self, pid, bound):
        deadline = self._monotonic() + bound
        while self._is_daemon(pid):
            if self._monotonic() >= deadline:
                return False
            self._sleep(POLL)
        return True

    def restart(self):
        """Stop (old pid gone), start, prove a new pid: ``{"old_pid", "pid", "notes"}``."""
        stopped = self.stop()
        started = self.start()
        old, new = stopped["old_pid"], started["pid"]
        if old is not None and new == old:
            raise ServiceError(f"{self.daemon} restart: still pid {old}, no new process")
        return {"old_pid": old, "pid": new, "notes": stopped["notes"] + started["notes"]}

    def _evidence(self, since, log_size, said):
        lines = [f"{self.name}: {line}" for line in said]
        if self.manager == "systemd":
            _, out, _ = self._run(["systemctl", "status", self.name, "--no-pager", "-n", "0"])
            lines += [f"systemctl status: {line.strip()}" for line in out.splitlines()[:8]]
            argv = [
                "journalctl",
                "-u",
                self.name,
                "--since",
                f"@{int(since)}",
                "--no-pager",
                "-n",
                str(EVIDENCE_LINES),
            ]
            # a unit seen failed at once: journald may not have the daemon's own lines yet
            # (they come through its stdout stream); wait for them a little, not for nothing
            deadline = self._monotonic() + JOURNAL_WAIT
            _, out, _ = self._run(argv)
            while not _own_lines(out) and self._monotonic() < deadline:
                self._sleep(POLL)
                _, out, _ = self._run(argv)
            lines += journal_story(out.splitlines(), JOURNAL_LINES)
        log_lines = direct.log_since(self.info["log"], log_size, EVIDENCE_LINES)
        lines += [f"{os.path.basename(self.info['log'])}: {line}" for line in log_lines]
        return lines or [f"nothing logged since the start ({self.info['log']}, journal)"]

    def last_run(self, limit=4):
        """Why a daemon that is not running stopped, from the init system's own record of
        its LAST run only (systemd: the unit's journal after its last "Starting"/"Started"
        line, the daemon's own lines first, then systemd's verdict), so ``slurm.diagnose``
        never quotes a stale log line of an earlier run. ``[]`` for other managers (their
        daemons' log files are read instead) or when the journal has nothing."""
        if self.manager != "systemd":
            return []
        code, out, _ = self._run(
            ["journalctl", "-u", self.name, "-n", "80", "--no-pager", "-o", "short"]
        )
        if code != 0:
            return []
        return journal_story(out.splitlines(), limit)

    # --- boot ---------------------------------------------------------------------------

    def _default_runlevel(self):
        try:
            with open(os.path.join(self.root, "etc/inittab")) as handle:
                for line in handle:
                    found = re.match(r"^[^#:]*:(\d):initdefault:", line)
                    if found:
                        return found.group(1)
        except OSError:
            pass
        return "2"

    def _rc_links(self):
        """``{runlevel: "S"|"K"}`` for this service's sysvinit links."""
        links = {}
        pattern = re.compile(rf"^([SK])\d\d{re.escape(self.name)}$")
        for level in "0123456S":
            folder = os.path.join(self.root, f"etc/rc{level}.d")
            try:
                names = os.listdir(folder)
            except OSError:
                continue
            for entry in names:
                found = pattern.match(entry)
                if found:
                    links[level] = found.group(1)
        return links

    def _openrc_link(self):
        return os.path.join(self.root, "etc/runlevels/default", self.name)

    def enabled(self):
        """True when the init system starts the daemon at boot."""
        if self.manager == "systemd":
            _, out, _ = self._run(["systemctl", "is-enabled", self.name])
            return out.strip().splitlines()[:1] == ["enabled"]
        if self.manager == "openrc":
            return os.path.lexists(self._openrc_link())
        return self._rc_links().get(self._default_runlevel()) == "S"

    def _boot_commands(self, enable):
        if self.manager == "systemd":
            return [["systemctl", "enable" if enable else "disable", self.name]]
        if self.manager == "openrc":
            return [["rc-update", "add" if enable else "del", self.name, "default"]]
        if enable:
            first = [] if self._rc_links() else [["update-rc.d", self.name, "defaults"]]
            return [*first, ["update-rc.d", self.name, "enable"]]
        return [["update-rc.d", self.name, "disable"]]

    def set_boot(self, enable=True):
        """Enable (or disable) at boot and prove it by reading it back; True if changed."""
        if self.enabled() == enable:
            return False
        said = []
        for argv in self._boot_commands(enable):
            code, out, err = self._run(argv)
            said += [f"`{' '.join(argv)}` exited {code}"]
            said += [line for line in f"{out}\n{err}".splitlines() if line.strip()]
        if self.enabled() != enable:
            hint = ""
            if self.manager == "systemd":
                _, out, _ = self._run(["systemctl", "is-enabled", self.name])
                state = out.strip() or "unknown"
                hint = f" (systemctl is-enabled: {state})"
                if state == "masked":
                    hint += f"; the unit is masked: `systemctl unmask {self.name}` if it should run"
            raise ServiceError(
                f"{self.name} is still {'not ' if enable else ''}enabled at boot "
                f"({self.manager}){hint}",
                said,
            )
        return True

    def forget_boot(self):
        """Disabled at boot and no link left behind: for a service whose init script goes
        with it (ours for slurmrestd, which ``slurm.absent`` removes). sysvinit's
        ``disable`` keeps ``K`` links in every runlevel, which would dangle; they go with
        ``update-rc.d -f NAME remove``. True if anything changed."""
        changed = self.set_boot(False)
        if self.manager != "sysvinit" or not self._rc_links():
            return changed
        argv = ["update-rc.d", "-f", self.name, "remove"]
        code, out, err = self._run(argv)
        left = self._rc_links()
        if left:
            said = [f"`{' '.join(argv)}` exited {code}"]
            said += [line for line in f"{out}\n{err}".splitlines() if line.strip()]
            raise ServiceError(
                f"{self.name}: its rc links are still there (runlevels {''.join(sorted(left))})",
                said,
            )
        return True

    def enable(self):
        return self.set_boot(True)

    def disable(self):
        return self.set_boot(False)
