import copy
import os
import signal
import subprocess
import sys
import time

import pytest

from salt_ext.lib.node import direct


@pytest.fixture
def slurm_conf(tmp_path):
    pidfile = tmp_path / "run" / "slurmd.pid"
    pidfile.parent.mkdir()
    conf = tmp_path / "slurm.conf"
    conf.write_text(
        "ClusterName=cluster\n"
        f"SlurmdPidFile={pidfile}\n"
        f"slurmdlogfile={tmp_path / 'slurmd.log'}  # lower case works too\n"
        "NodeName=n1 CPUs=1 RealMemory=1000 State=UNKNOWN\n"
    )
    return conf


def test_spec_reads_pid_and_log_paths_from_slurm_conf_and_passes_it(slurm_conf, tmp_path):
    info = direct.spec("slurmd", str(slurm_conf))
    assert info["pidfile"] == str(tmp_path / "run" / "slurmd.pid")
    assert info["log"] == str(tmp_path / "slurmd.log")
    assert info["argv"] == ["slurmd", "-f", str(slurm_conf)]


def test_spec_without_conf_uses_builtin_paths():
    info = direct.spec("slurmctld")
    assert info["pidfile"] == "/run/slurmctld.pid"
    assert info["argv"] == ["slurmctld"]


def test_spec_keeps_defaults_for_keys_the_conf_does_not_set(tmp_path):
    conf = tmp_path / "slurm.conf"
    conf.write_text("ClusterName=cluster\n")
    info = direct.spec("slurmd", str(conf))
    assert info["pidfile"] == "/run/slurmd.pid"
    assert info["log"] == "/var/log/slurm/slurmd.log"


def test_spec_munge_ignores_slurm_conf(slurm_conf):
    info = direct.spec("munge", str(slurm_conf))
    assert info["argv"] == ["munged"]
    assert info["pidfile"] == "/run/munge/munged.pid"


def test_spec_does_not_modify_the_daemon_table(slurm_conf):
    before = copy.deepcopy(direct.DAEMONS)
    direct.spec("slurmd", str(slurm_conf))
    direct.spec("slurmd", str(slurm_conf))
    assert direct.DAEMONS == before


def test_spec_unknown_daemon_raises_value_error():
    with pytest.raises(ValueError, match="unknown daemon 'slurmfoo'"):
        direct.spec("slurmfoo")


def _pidfile(tmp_path):
    return tmp_path / "run" / "slurmd.pid"


def test_pid_of_missing_pidfile_is_none(slurm_conf):
    assert direct.pid_of("slurmd", str(slurm_conf)) is None


@pytest.mark.parametrize("content", ["garbage\n", "", "\n"])
def test_pid_of_unreadable_pidfile_is_none(slurm_conf, tmp_path, content):
    _pidfile(tmp_path).write_text(content)
    assert direct.pid_of("slurmd", str(slurm_conf)) is None


def test_pid_of_live_pid_of_another_program_is_none(slurm_conf, tmp_path):
    # this test process is alive but is not slurmd: a reused pid must not count
    _pidfile(tmp_path).write_text(f"{os.getpid()}\n")
    assert direct.pid_of("slurmd", str(slurm_conf)) is None


def test_pid_of_returns_pid_when_comm_matches(slurm_conf, tmp_path, monkeypatch):
    pid = os.getpid()
    _pidfile(tmp_path).write_text(f"{pid}\n")
    monkeypatch.setattr(direct, "_comm", lambda p: "slurmd" if p == pid else None)
    assert direct.pid_of("slurmd", str(slurm_conf)) == pid


def test_comm_of_missing_process_is_none():
    assert direct._comm(2**22 + 12345) is None


def test_log_tail_returns_last_lines(tmp_path):
    log = tmp_path / "slurmd.log"
    log.write_text("".join(f"line {i}\n" for i in range(50)))
    assert direct.log_tail(str(log), 3) == ["line 47", "line 48", "line 49"]


def test_log_tail_of_short_file_returns_all_lines(tmp_path):
    log = tmp_path / "slurmd.log"
    log.write_text("only\n")
    assert direct.log_tail(str(log)) == ["only"]


def test_log_tail_missing_file_is_empty(tmp_path):
    assert direct.log_tail(str(tmp_path / "nope.log")) == []


# --- health: /proc state, judging, stopping a stopped daemon ---------------------------------
def test_process_state_of_this_process_and_of_nothing():
    assert direct.process_state(os.getpid()) in ("R", "S")
    assert direct.process_state(None) is None
    assert direct.process_state(2**22 + 12345) is None


def test_describe_state_names_the_stopped_state():
    assert direct.describe_state(7, "T") == "pid 7 state T (stopped)"
    assert direct.describe_state(7, "S") == "pid 7 state S"


@pytest.mark.parametrize(
    ("running", "letter", "answer", "state", "evidence"),
    [
        (False, None, None, "stopped", "slurmd not running"),
        (
            True,
            "S",
            (True, "answers `scontrol show slurmd`"),
            "running",
            "pid 9: answers `scontrol show slurmd`",
        ),
        # a process stopped by SIGSTOP is hung even when nobody asked it
        (True, "T", None, "hung", "pid 9 state T (stopped)"),
        (True, "t", (None, "not asked"), "hung", "pid 9 state t (stopped by a tracer)"),
        (
            True,
            "S",
            (False, "no answer to `scontrol show slurmd` in 5 s"),
            "hung",
            "no answer to `scontrol show slurmd` in 5 s",
        ),
        (
            True,
            "D",
            (False, "no answer in 5 s"),
            "hung",
            "pid 9 state D (uninterruptible sleep); no answer in 5 s",
        ),
        # not asked (munged down): it runs, and the evidence says why nothing more is known
        (
            True,
            "S",
            (None, "not asked: munged does not answer"),
            "running",
            "pid 9: not asked: munged does not answer",
        ),
    ],
)
def test_judge(running, letter, answer, state, evidence):
    entry = direct.judge("slurmd", running, 9 if running else None, letter, answer)
    assert entry["state"] == state and entry["evidence"] == evidence
    assert entry["proc_state"] == letter


@pytest.fixture
def sleeper(tmp_path, monkeypatch):
    """A real process registered as daemon "sleeper" (pid file + comm), killed at the end."""
    procs = []

    def spawn(code="import time; time.sleep(60)"):
        proc = subprocess.Popen([sys.executable, "-c", code])
        procs.append(proc)
        pidfile = tmp_path / "sleeper.pid"
        pidfile.write_text(f"{proc.pid}\n")
        deadline = time.monotonic() + 5
        while direct._comm(proc.pid) is None and time.monotonic() < deadline:
            time.sleep(0.01)
        monkeypatch.setitem(
            direct.DAEMONS,
            "sleeper",
            {
                "argv": ["sleep"],
                "comm": direct._comm(proc.pid),
                "pidfile": str(pidfile),
                "log": "/nonexistent",
            },
        )
        return proc

    yield spawn
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def _stop(pid):
    os.kill(pid, signal.SIGSTOP)
    deadline = time.monotonic() + 5
    while direct.process_state(pid) != "T":
        assert time.monotonic() < deadline, direct.process_state(pid)
        time.sleep(0.01)


def test_stop_ends_a_process_stopped_by_sigstop_with_sigterm(sleeper):
    proc = sleeper()
    _stop(proc.pid)
    started = time.monotonic()
    assert direct.stop("sleeper", timeout=10) is True
    # SIGTERM reached it at once (SIGCONT), not SIGKILL after the 10 s grace
    assert time.monotonic() - started < 5
    assert proc.wait(5) == -signal.SIGTERM
    assert not direct.is_process(proc.pid, "sleeper")


def test_stop_kills_a_stopped_process_that_ignores_sigterm_after_the_grace(sleeper):
    proc = sleeper(
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"
    )
    time.sleep(0.3)  # its handler is set
    _stop(proc.pid)
    assert direct.stop("sleeper", timeout=0.5) is True
    assert proc.wait(5) == -signal.SIGKILL


def test_is_process_tells_a_daemon_from_another_program():
    assert not direct.is_process(os.getpid(), "slurmd")
