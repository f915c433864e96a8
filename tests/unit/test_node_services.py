"""salt_ext.lib.node.services against fake init systems: commands, /proc, clocks and signals are
injected; pid files, logs, rc?.d links and OpenRC runlevels live in a tmp dir."""

import os
import signal

import pytest

from salt_ext.lib.node import direct, services


class Host:
    """A fake machine: processes (pid -> comm), a clock that moves only when slept, and a
    table of command handlers. Every command run is recorded in ``calls``."""

    def __init__(self, tmp_path):
        self.tmp = tmp_path
        self.procs = {}
        self.clock = 1000.0
        self.calls = []
        self.handlers = {}
        self.timers = []  # (at, callable)
        self.killed = []
        self.next_pid = 500

    # injected functions
    def comm(self, pid):
        return self.procs.get(pid)

    def sleep(self, seconds):
        self.clock += seconds
        for at, action in sorted(self.timers, key=lambda t: t[0]):
            if at <= self.clock:
                self.timers.remove((at, action))
                action()

    def monotonic(self):
        return self.clock

    def now(self):
        return 1_700_000_000 + self.clock

    def kill(self, pid, sig):
        self.killed.append((pid, sig))
        if sig == signal.SIGKILL:
            self.procs.pop(pid, None)

    def run(self, argv, timeout=None):
        self.calls.append(list(argv))
        for prefix, handler in self.handlers.items():
            if tuple(argv[: len(prefix)]) == prefix:
                return handler(argv)
        return 0, "", ""

    # helpers
    def spawn(self, comm):
        self.next_pid += 1
        self.procs[self.next_pid] = comm
        return self.next_pid

    def later(self, seconds, action):
        self.timers.append((self.clock + seconds, action))

    def commands(self, first):
        return [c for c in self.calls if c[0] == first or c[0].endswith(first)]


@pytest.fixture
def host(tmp_path):
    return Host(tmp_path)


@pytest.fixture
def conf(tmp_path):
    path = tmp_path / "slurm.conf"
    path.write_text(
        f"SlurmdPidFile={tmp_path / 'slurmd.pid'}\nSlurmdLogFile={tmp_path / 'slurmd.log'}\n"
    )
    return str(path)


def service(host, manager, conf, daemon="slurmd", name=None):
    return services.Service(
        daemon,
        manager,
        name or daemon,
        conf,
        run=host.run,
        comm=host.comm,
        sleep=host.sleep,
        monotonic=host.monotonic,
        now=host.now,
        kill=host.kill,
        root=str(host.tmp),
    )


class Unit:
    """A fake systemd unit for slurmd: start spawns MainPID; ``dies_after`` kills it."""

    def __init__(self, host, dies_after=None, journal="slurmd: fatal: bad option -Z"):
        self.host, self.dies_after, self.journal = host, dies_after, journal
        self.pid, self.state, self.result, self.starts = 0, "inactive", "success", 0
        self.exec_status = 0
        self.spawn_failures = 0  # starts that fail in systemd's own step (219/CGROUP)
        self.enabled = "enabled"
        self.journal_since = None
        host.handlers[("systemctl", "show")] = self.show
        host.handlers[("systemctl", "start")] = self.start
        host.handlers[("systemctl", "stop")] = self.stop
        host.handlers[("systemctl", "status")] = lambda argv: (3, "× slurmd.service\n", "")
        host.handlers[("systemctl", "is-enabled")] = lambda argv: (0, self.enabled + "\n", "")
        host.handlers[("systemctl", "enable")] = self.set_enabled("enabled")
        host.handlers[("systemctl", "disable")] = self.set_enabled("disabled")
        host.handlers[("journalctl",)] = self.read_journal

    def set_enabled(self, value):
        def handler(argv):
            if self.enabled != "masked":
                self.enabled = value
            return 0, "", ""

        return handler

    def show(self, argv):
        text = (
            f"MainPID={self.pid}\nActiveState={self.state}\nSubState=running\n"
            f"Result={self.result}\nExecMainStatus={self.exec_status}\n"
        )
        return 0, text, ""

    def start(self, argv):
        self.starts += 1
        if self.spawn_failures:
            self.spawn_failures -= 1
            self.pid, self.state, self.result, self.exec_status = 0, "failed", "exit-code", 219
            return 0, "", ""
        self.pid, self.state = self.host.spawn("slurmd"), "active"
        if self.dies_after is not None:
            pid = self.pid

            def die():
                self.host.procs.pop(pid, None)
                self.pid, self.state, self.result = 0, "failed", "exit-code"

            self.host.later(self.dies_after, die)
        return 0, "", ""  # systemctl start of a Type=simple unit: 0 whatever happens next

    def stop(self, argv):
        self.host.procs.pop(self.pid, None)
        self.pid, self.state = 0, "inactive"
        return 0, "", ""

    def read_journal(self, argv):
        self.journal_since = argv[argv.index("--since") + 1]
        return 0, f"-- Journal begins --\nNov 28 slurmd[501]: {self.journal}\n", ""


# --- systemd ---------------------------------------------------------------------------


def test_systemd_running_needs_active_and_mainpid_comm(host, conf):
    unit = Unit(host)
    svc = service(host, "systemd", conf)
    assert svc.running() is False
    unit.start([])
    assert svc.status() == {
        "running": True,
        "pid": unit.pid,
        "detail": f"slurmd: ActiveState=active SubState=running Result=success MainPID={unit.pid}",
    }
    host.procs[unit.pid] = "bash"  # pid reused by something else
    assert svc.running() is False


def test_systemd_start_proves_the_process_after_settle(host, conf):
    unit = Unit(host)
    result = service(host, "systemd", conf).start()
    assert result["pid"] == unit.pid and result["changed"] is True
    assert host.clock >= 1000 + services.SETTLE


def test_systemd_unit_that_fails_after_1s_fails_start_with_journal_of_this_start(host, conf):
    unit = Unit(host, dies_after=1)
    svc = service(host, "systemd", conf)
    started_at = int(host.now())
    with pytest.raises(services.ServiceError) as info:
        svc.start()
    text = str(info.value)
    assert "died within 2 s" in text
    assert "journal: Nov 28 slurmd[501]: slurmd: fatal: bad option -Z" in text
    assert "Journal begins" not in text
    assert "systemctl status: × slurmd.service" in text
    assert unit.journal_since == f"@{started_at}"
    journal = host.commands("journalctl")[0]
    assert journal[:3] == ["journalctl", "-u", "slurmd"] and "--no-pager" in journal


def test_systemd_start_of_running_unit_changes_nothing(host, conf):
    unit = Unit(host)
    unit.start([])
    assert service(host, "systemd", conf).start()["changed"] is False
    assert unit.starts == 1


def test_systemd_failed_unit_is_reset_before_start(host, conf):
    unit = Unit(host)
    unit.state = "failed"
    result = service(host, "systemd", conf).start()
    assert ["systemctl", "reset-failed", "slurmd"] in host.calls
    assert result["notes"] == ["systemctl reset-failed slurmd"]


def test_systemd_spawn_failure_of_its_own_is_retried_once_and_said(host, conf):
    unit = Unit(host)
    unit.spawn_failures = 1
    result = service(host, "systemd", conf).start()
    assert result["changed"] is True and result["pid"] == unit.pid and unit.starts == 2
    assert ["systemctl", "reset-failed", "slurmd"] in host.calls
    assert "could not spawn slurmd (exit status 219" in result["notes"][0]


def test_systemd_spawn_failure_twice_fails_at_once_without_waiting(host, conf):
    unit = Unit(host)
    unit.spawn_failures = 2
    with pytest.raises(services.ServiceError, match=r"no slurmd process \(the unit failed\)"):
        service(host, "systemd", conf).start()
    assert unit.starts == 2
    assert host.clock < 1000 + services.START_BOUND  # a failed unit is not waited for


def test_failed_start_waits_for_the_daemons_own_journal_lines(host, conf):
    """A unit seen failed at once: journald gets the daemon's stderr a moment later."""
    unit = Unit(host, journal="slurmd: unrecognized option '--no-such-option'")
    reads = []

    def journal(argv):
        reads.append(host.clock)
        if len(reads) < 3:
            return 0, "Nov 29 hs systemd[1]: slurmd.service: Failed with result 'exit-code'.\n", ""
        return unit.read_journal(argv)

    def fails(argv):
        unit.pid, unit.state, unit.result, unit.exec_status = 0, "failed", "exit-code", 1
        return 0, "", ""

    host.handlers[("journalctl",)] = journal
    host.handlers[("systemctl", "start")] = fails
    with pytest.raises(services.ServiceError) as info:
        service(host, "systemd", conf).start()
    assert "unrecognized option '--no-such-option'" in str(info.value)
    assert len(reads) == 3 and reads[-1] - reads[0] <= services.JOURNAL_WAIT


def test_a_forking_units_control_process_spawn_failure_is_retried_too(host, conf):
    """munge (Type=forking): systemctl start exits 1, ExecMainStatus says 0, the
    ExecStart record says status=219/CGROUP."""
    unit = Unit(host)
    starts = []

    def start(argv):
        starts.append(host.clock)
        if len(starts) == 1:
            unit.pid, unit.state, unit.result, unit.exec_status = 0, "failed", "exit-code", 0
            return 1, "", "Job for munge.service failed because the control process exited"
        return unit.start(argv)

    def show(argv):
        code, text, err = unit.show(argv)
        if unit.state == "failed":
            text += "ExecStart={ path=/usr/sbin/munged ; code=exited ; status=219/CGROUP }\n"
        return code, text, err

    host.handlers[("systemctl", "start")] = start
    host.handlers[("systemctl", "show")] = show
    result = service(host, "systemd", conf).start()
    assert result["changed"] is True and len(starts) == 2
    assert starts[1] - starts[0] >= services.SPAWN_RETRY_PAUSE
    assert "exit status 219" in result["notes"][0]


def test_systemd_daemon_exit_1_is_not_retried(host, conf):
    unit = Unit(host)

    def fails(argv):
        unit.starts += 1
        unit.pid, unit.state, unit.result, unit.exec_status = 0, "failed", "exit-code", 1
        return 0, "", ""

    host.handlers[("systemctl", "start")] = fails
    with pytest.raises(services.ServiceError, match="the unit failed"):
        service(host, "systemd", conf).start()
    assert unit.starts == 1


def test_systemd_start_with_no_process_ever_fails_after_start_bound(host, conf):
    Unit(host)
    host.handlers[("systemctl", "start")] = lambda argv: (0, "", "")
    with pytest.raises(services.ServiceError, match="no slurmd process after 15 s"):
        service(host, "systemd", conf).start()
    assert host.clock >= 1000 + services.START_BOUND


def test_systemd_restart_proves_a_new_pid(host, conf):
    unit = Unit(host)
    unit.start([])
    old = unit.pid
    result = service(host, "systemd", conf).restart()
    assert result["old_pid"] == old and result["pid"] != old
    assert old not in host.procs
    actions = [c[1] for c in host.calls if c[0] == "systemctl" and c[1] in ("stop", "start")]
    assert actions == ["stop", "start"]  # never `systemctl restart`


def test_systemd_enable_disable_proven_by_is_enabled(host, conf):
    unit = Unit(host)
    svc = service(host, "systemd", conf)
    unit.enabled = "disabled"
    assert svc.enabled() is False
    assert svc.enable() is True and unit.enabled == "enabled"
    assert svc.enable() is False  # nothing to do
    assert svc.disable() is True and svc.enabled() is False
    assert ["systemctl", "enable", "slurmd"] in host.calls
    assert ["systemctl", "disable", "slurmd"] in host.calls


def test_systemd_enable_of_masked_unit_fails_with_advice(host, conf):
    unit = Unit(host)
    unit.enabled = "masked"
    with pytest.raises(services.ServiceError, match="systemctl unmask slurmd"):
        service(host, "systemd", conf).enable()


# --- sysvinit ----------------------------------------------------------------------------


class InitScript:
    """Debian's /etc/init.d/slurmd: exits 0 for every action; ``works`` False models a
    missing slurm.conf (nothing starts). ``stop`` does not wait for the process."""

    def __init__(self, host, pidfile, works=True, exit_slowly=0.0):
        self.host, self.pidfile, self.works, self.exit_slowly = host, pidfile, works, exit_slowly
        self.pid = None
        host.handlers[(os.path.join(str(host.tmp), "etc/init.d/slurmd"),)] = self.handle

    def handle(self, argv):
        action = argv[1]
        if action == "start" and self.works:
            if not (self.pid and self.host.procs.get(self.pid) == "slurmd"):
                self.pid = self.host.spawn("slurmd")
                with open(self.pidfile, "w") as handle:
                    handle.write(f"{self.pid}\n")
        elif action == "start":
            return 0, "slurm.conf not found, not starting slurmd\n", ""
        elif action == "stop" and self.pid:
            pid = self.pid
            if self.exit_slowly:
                self.host.later(self.exit_slowly, lambda: self.host.procs.pop(pid, None))
            else:
                self.host.procs.pop(pid, None)
        return 0, "", ""


@pytest.fixture
def pidfile(tmp_path):
    return str(tmp_path / "slurmd.pid")


def test_sysvinit_status_is_the_pid_file_process_never_the_script(host, conf, pidfile):
    script = InitScript(host, pidfile, works=False)
    svc = service(host, "sysvinit", conf)
    assert svc.running() is False
    assert host.calls == []  # `status` of the init script is never asked
    with open(pidfile, "w") as handle:
        handle.write("4242\n")  # a stale pid file
    assert svc.status()["running"] is False
    host.procs[4242] = "slurmd"
    assert svc.status() == {
        "running": True,
        "pid": 4242,
        "detail": f"pid 4242 from {pidfile} is slurmd",
    }
    assert script.pid is None


def test_sysvinit_script_exits_0_but_no_process_start_fails_with_its_output_and_log(
    host, conf, pidfile, tmp_path
):
    InitScript(host, pidfile, works=False)
    log = tmp_path / "slurmd.log"
    log.write_text("old: error from yesterday\n")

    def start_and_log(argv):
        with open(log, "a") as handle:
            handle.write("fatal: Unable to read slurm.conf\n")
        return 0, "slurm.conf not found, not starting slurmd\n", ""

    host.handlers[(os.path.join(str(tmp_path), "etc/init.d/slurmd"),)] = start_and_log
    with pytest.raises(services.ServiceError) as info:
        service(host, "sysvinit", conf).start()
    text = str(info.value)
    assert "exited 0; no slurmd process after 15 s" in text
    assert "slurmd: slurm.conf not found, not starting slurmd" in text
    assert "slurmd.log: fatal: Unable to read slurm.conf" in text
    assert "yesterday" not in text  # only lines of this start


def test_sysvinit_restart_waits_for_the_old_pid_before_starting(host, conf, pidfile):
    script = InitScript(host, pidfile, exit_slowly=3.0)
    script.handle(["x", "start"])
    old = script.pid
    started_while_old_alive = []
    original = script.handle

    def watch(argv):
        if argv[1] == "start" and old in host.procs:
            started_while_old_alive.append(True)
        return original(argv)

    host.handlers[(os.path.join(str(host.tmp), "etc/init.d/slurmd"),)] = watch
    result = service(host, "sysvinit", conf).restart()
    assert started_while_old_alive == []
    assert result["old_pid"] == old and result["pid"] not in (None, old)
    assert [c[1] for c in host.calls] == ["stop", "start"]  # never the script's `restart`


def test_stop_kills_a_process_that_ignores_stop_then_fails_if_it_survives(host, conf, pidfile):
    script = InitScript(host, pidfile, exit_slowly=10_000)
    script.handle(["x", "start"])
    svc = service(host, "sysvinit", conf)
    result = svc.stop()
    assert (script.pid, signal.SIGKILL) in host.killed
    assert result["changed"] is True and "SIGKILL" in result["notes"][0]

    script.handle(["x", "start"])
    host.kill = lambda pid, sig: None  # an unkillable process (D state)
    svc._kill = host.kill
    with pytest.raises(services.ServiceError, match="did not exit"):
        svc.stop()


def _link(tmp_path, level, name):
    folder = tmp_path / f"etc/rc{level}.d"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).symlink_to("../init.d/slurmd")


def test_sysvinit_boot_reads_default_runlevel_links(host, conf, tmp_path):
    def update_rc_d(argv):
        name, action = argv[1], argv[2]
        for level in "2345":
            folder = tmp_path / f"etc/rc{level}.d"
            for entry in list(folder.glob(f"[SK]??{name}")) if folder.exists() else []:
                entry.unlink()
            _link(tmp_path, level, ("K01" if action == "disable" else "S01") + name)
        return 0, "", ""

    host.handlers[("update-rc.d",)] = update_rc_d
    svc = service(host, "sysvinit", conf)
    assert svc.enabled() is False
    assert svc.enable() is True
    # no links at all: `defaults` first, then `enable`
    assert host.calls == [
        ["update-rc.d", "slurmd", "defaults"],
        ["update-rc.d", "slurmd", "enable"],
    ]
    assert svc.enabled() is True
    assert svc.disable() is True and svc.enabled() is False
    assert host.calls[-1] == ["update-rc.d", "slurmd", "disable"]
    (tmp_path / "etc/inittab").write_text("id:3:initdefault:\n")
    (tmp_path / "etc/rc3.d/K01slurmd").unlink()
    _link(tmp_path, 3, "S01slurmd")
    assert svc.enabled() is True  # runlevel 3 is the default now


def test_sysvinit_enable_that_does_not_take_fails(host, conf):
    with pytest.raises(services.ServiceError, match="still not enabled at boot"):
        service(host, "sysvinit", conf).enable()


# --- OpenRC ------------------------------------------------------------------------------


def test_openrc_zaps_a_service_marked_started_with_nothing_running(host, conf, pidfile):
    marked = {"state": "started"}
    script = InitScript(host, pidfile)

    def rc_service(argv):
        action = argv[2]
        if action == "status":
            return (0 if marked["state"] == "started" else 3), f" * status: {marked['state']}\n", ""
        if action == "zap":
            marked["state"] = "stopped"
            return 0, "", ""
        if action == "start":
            if marked["state"] == "started":
                return 0, " * WARNING: slurmd has already been started\n", ""
            marked["state"] = "started"
            return script.handle(["x", "start"])
        return 0, "", ""

    host.handlers[("rc-service",)] = rc_service
    result = service(host, "openrc", conf).start()
    assert host.calls[:3] == [
        ["rc-service", "slurmd", "status"],
        ["rc-service", "slurmd", "zap"],
        ["rc-service", "slurmd", "start"],
    ]
    assert result["pid"] == script.pid
    assert "zap" in result["notes"][0]


def test_openrc_crashed_is_zapped_too_and_stopped_is_not(host, conf, pidfile):
    script = InitScript(host, pidfile)
    for state, zapped in (("crashed", True), ("stopped", False)):
        host.calls.clear()
        host.procs.clear()
        script.pid = None
        host.handlers[("rc-service", "slurmd", "status")] = lambda argv, s=state: (
            32,
            f" * status: {s}\n",
            "",
        )
        host.handlers[("rc-service", "slurmd", "start")] = lambda argv: script.handle(
            ["x", "start"]
        )
        service(host, "openrc", conf).start()
        assert (["rc-service", "slurmd", "zap"] in host.calls) is zapped


def test_openrc_boot_is_the_default_runlevel_link(host, conf, tmp_path):
    link = tmp_path / "etc/runlevels/default/slurmd"

    def rc_update(argv):
        link.parent.mkdir(parents=True, exist_ok=True)
        if argv[1] == "add":
            link.symlink_to("/etc/init.d/slurmd")
        else:
            link.unlink()
        return 0, "", ""

    host.handlers[("rc-update",)] = rc_update
    svc = service(host, "openrc", conf)
    assert svc.enabled() is False
    assert svc.enable() is True and link.is_symlink()
    assert svc.disable() is True and not link.is_symlink()
    assert host.calls == [
        ["rc-update", "add", "slurmd", "default"],
        ["rc-update", "del", "slurmd", "default"],
    ]


def test_munge_uses_its_own_pid_file_and_comm(host):
    svc = service(host, "sysvinit", None, daemon="munge", name="munge")
    assert svc.info["pidfile"] == "/run/munge/munged.pid"
    assert svc.info["comm"] == "munged"


def test_unknown_manager_is_refused(host, conf):
    with pytest.raises(ValueError, match="manager must be one of"):
        service(host, "direct", conf)


# --- log_size / log_since ------------------------------------------------------------------


def test_log_since_returns_only_lines_after_the_remembered_size(tmp_path):
    log = tmp_path / "d.log"
    assert direct.log_size(str(log)) == 0
    log.write_text("old 1\nold 2\n")
    size = direct.log_size(str(log))
    with open(log, "a") as handle:
        handle.write("new 1\nnew 2\n")
    assert direct.log_since(str(log), size) == ["new 1", "new 2"]
    assert direct.log_since(str(log), size, lines=1) == ["new 2"]
    log.write_text("rotated\n")  # shorter than before: all of it is new
    assert direct.log_since(str(log), size) == ["rotated"]
    assert direct.log_since(str(tmp_path / "missing.log"), 0) == []


def test_sysvinit_with_slurm_conf_missing_is_not_running(host, tmp_path):
    # Debian's init script answers 0 to everything then; only /proc counts
    host.handlers[(os.path.join(str(tmp_path), "etc/init.d/slurmd"),)] = lambda argv: (0, "", "")
    svc = service(host, "sysvinit", str(tmp_path / "missing" / "slurm.conf"))
    assert svc.info["pidfile"] == "/run/slurmd.pid"  # Slurm's default without a conf
    assert svc.running() is False
    assert host.calls == []


JOURNAL = (
    """\
Nov 28 10:00:01 n1 systemd[1]: Starting slurmd.service - Slurm node daemon...
Nov 28 10:00:01 n1 slurmd[90]: slurmd: error: an OLD run's error
Nov 28 10:00:02 n1 systemd[1]: Started slurmd.service - Slurm node daemon.
Nov 28 10:05:00 n1 systemd[1]: Stopping slurmd.service - Slurm node daemon...
Nov 28 10:06:00 n1 systemd[1]: Started slurmd.service - Slurm node daemon.
Nov 28 10:06:00 n1 slurmd[120]: slurmd: unrecognized option '--no-such-option'
Nov 28 10:06:00 n1 slurmd[120]: Usage: slurmd [OPTIONS]
"""
    + "".join(
        f"Nov 28 10:06:00 n1 slurmd[120]:    -{c}   an option of slurmd's usage text\n"
        for c in "bcCdDfFGhLMnNsvVZ"
    )
    + "Nov 28 10:06:00 n1 systemd[1]: slurmd.service: Main process exited, code=exited, "
    "status=1/FAILURE\n"
    "Nov 28 10:06:00 n1 systemd[1]: slurmd.service: Failed with result 'exit-code'.\n"
)


def test_last_run_quotes_the_journal_of_the_last_start_only(host, conf):
    host.handlers[("journalctl",)] = lambda argv: (0, JOURNAL, "")
    lines = service(host, "systemd", conf).last_run()
    assert lines == [
        "journal: Nov 28 10:06:00 n1 slurmd[120]: slurmd: unrecognized option '--no-such-option'",
        "journal: Nov 28 10:06:00 n1 systemd[1]: slurmd.service: Main process exited, "
        "code=exited, status=1/FAILURE",
        "journal: Nov 28 10:06:00 n1 systemd[1]: slurmd.service: Failed with result 'exit-code'.",
    ]
    assert not any("OLD run" in line for line in lines)


@pytest.mark.parametrize("manager", ["sysvinit", "openrc"])
def test_last_run_is_empty_without_a_journal(host, conf, manager):
    assert service(host, manager, conf).last_run() == []
    assert not host.commands("journalctl")


def test_last_run_survives_a_journal_that_fails(host, conf):
    host.handlers[("journalctl",)] = lambda argv: (1, "", "No journal files were found.")
    assert service(host, "systemd", conf).last_run() == []


def test_journal_story_keeps_the_daemons_lines_logged_before_systemds_started_line():
    """Seen on a booted host: slurmd's complaint reached journald before "Started"."""
    lines = [
        "Nov 29 07:10:00 hs slurmd[90]: slurmd: error: an OLD run's error",
        "Nov 29 07:15:14 hs systemd[1]: Stopping slurmd.service - Slurm node daemon...",
        "Nov 29 07:15:14 hs systemd[1]: slurmd.service: Deactivated successfully.",
        "Nov 29 07:15:14 hs systemd[1]: Stopped slurmd.service - Slurm node daemon.",
        "Nov 29 07:15:15 hs slurmd[345]: /usr/sbin/slurmd: unrecognized option '--no-such-option'",
        "Nov 29 07:15:15 hs slurmd[345]: Usage: slurmd [OPTIONS]",
        "Nov 29 07:15:15 hs systemd[1]: Started slurmd.service - Slurm node daemon.",
        "Nov 29 07:15:15 hs systemd[1]: slurmd.service: Main process exited, code=exited, "
        "status=1/FAILURE",
        "Nov 29 07:15:15 hs systemd[1]: slurmd.service: Failed with result 'exit-code'.",
    ]
    story = services.journal_story(lines, 6)
    assert story[0] == (
        "journal: Nov 29 07:15:15 hs slurmd[345]: /usr/sbin/slurmd: unrecognized option "
        "'--no-such-option'"
    )
    assert not any("OLD run" in line for line in story)
    assert story[-1].endswith("Failed with result 'exit-code'.")


def test_journal_story_without_complaints_gives_the_first_lines_of_the_run():
    lines = [
        "Nov 28 10:00:00 n1 systemd[1]: Started munge.service - MUNGE.",
        "Nov 28 10:00:00 n1 munged[5]: munged: Info: starting up",
        "Nov 28 10:00:01 n1 munged[5]: munged: Info: something else",
        "Nov 28 10:00:02 n1 systemd[1]: munge.service: Main process exited, code=killed",
    ]
    assert services.journal_story(lines, 1) == [
        "journal: Nov 28 10:00:00 n1 munged[5]: munged: Info: starting up",
        "journal: Nov 28 10:00:02 n1 systemd[1]: munge.service: Main process exited, code=killed",
    ]


def test_forget_boot_removes_sysvinits_k_links_that_disable_leaves(host, conf, tmp_path):
    """slurm.absent removes our slurmrestd init script: `update-rc.d disable` alone left
    K01slurmrestd in every runlevel (seen on a booted sysvinit host), dangling."""

    def update_rc_d(argv):
        if argv[1:] == ["-f", "slurmd", "remove"]:
            for entry in tmp_path.glob("etc/rc?.d/[SK]??slurmd"):
                entry.unlink()
            return 0, "", ""
        for level in "0123456":
            folder = tmp_path / f"etc/rc{level}.d"
            for entry in list(folder.glob("[SK]??slurmd")) if folder.exists() else []:
                entry.unlink()
            start = argv[2] != "disable" and level in "2345"
            _link(tmp_path, level, ("S01" if start else "K01") + "slurmd")
        return 0, "", ""

    host.handlers[("update-rc.d",)] = update_rc_d
    svc = service(host, "sysvinit", conf)
    assert svc.enable() is True
    assert svc.forget_boot() is True
    assert host.calls[-2:] == [
        ["update-rc.d", "slurmd", "disable"],
        ["update-rc.d", "-f", "slurmd", "remove"],
    ]
    assert list(tmp_path.glob("etc/rc?.d/*slurmd")) == [] and svc.enabled() is False
    assert svc.forget_boot() is False  # nothing left: no command
    # links that will not go: an error naming them
    _link(tmp_path, 0, "K01slurmd")
    host.handlers[("update-rc.d",)] = lambda argv: (1, "", "update-rc.d: error: busy")
    with pytest.raises(services.ServiceError, match="rc links are still there") as info:
        svc.forget_boot()
    assert any("busy" in line for line in info.value.evidence)


@pytest.mark.parametrize("manager", ["openrc", "systemd"])
def test_forget_boot_elsewhere_is_disable(host, conf, manager):
    svc = service(host, manager, conf)
    calls = []
    svc.set_boot = lambda enable: calls.append(enable) or True
    assert svc.forget_boot() is True and calls == [False]
