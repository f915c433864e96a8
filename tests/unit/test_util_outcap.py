"""``salt_ext.lib.util.outcap``: the supervisor that caps a slurm.cmd command's output and time.

Real processes (sh, yes, sleep), no mocks: what is tested is process-group handling.
"""

import io
import os
import pwd
import subprocess
import time

import pytest

from salt_ext.lib.util import outcap


def _run(argv, max_bytes=1000, seconds=10, **popen):
    out, err = io.BytesIO(), io.BytesIO()
    code = outcap.supervise(argv, max_bytes, seconds, out, err, **popen)
    return code, out.getvalue().decode(), err.getvalue().decode()


def _gone(pid, wait=5):
    """True once ``pid`` no longer runs (gone, or a zombie nobody reaps in a container)."""
    end = time.monotonic() + wait
    while time.monotonic() < end:
        try:
            with open(f"/proc/{pid}/stat") as handle:
                if handle.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.05)
    return False


def test_output_and_exit_code_pass_through():
    code, out, err = _run(["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert (code, out, err) == (3, "out\n", "err\n")


def test_a_signal_death_is_reported_like_a_shell_does():
    code, _, _ = _run(["sh", "-c", "kill -TERM $$"])
    assert code == 128 + 15


def test_output_past_the_cap_kills_the_command():
    code, out, err = _run(["yes"], max_bytes=5000)
    assert code == outcap.EXIT_OUTPUT
    assert len(out) == 5000 and set(out) == {"y", "\n"}
    verdict = outcap.verdict_of(code, err)
    assert verdict.startswith("slurm.cmd: output passed 5000 bytes")
    assert "slurm:cmd:max_output_bytes" in verdict


def test_stdout_and_stderr_count_together():
    # the pause lets the supervisor read stderr's 10 bytes before stdout floods in (in one
    # select round it may take either first, and then the split would differ)
    code, out, err = _run(["sh", "-c", "echo 123456789 >&2; sleep 0.5; exec yes"], max_bytes=100)
    assert code == outcap.EXIT_OUTPUT and len(out) == 90 and err.startswith("123456789\n")


def test_wall_time_past_the_cap_kills_the_command():
    started = time.monotonic()
    code, _, err = _run(["sleep", "60"], seconds=0.5)
    assert code == outcap.EXIT_TIMEOUT and time.monotonic() - started < 30
    assert "still running after 0.5 s" in outcap.verdict_of(code, err)


def test_the_whole_process_group_is_killed():
    # the shell's child keeps running after the shell is gone unless the group is killed
    code, out, _ = _run(["sh", "-c", "sleep 300 & echo $!; exec yes"], max_bytes=2000)
    assert code == outcap.EXIT_OUTPUT
    assert _gone(int(out.split()[0]))


def test_a_silent_command_that_never_ends_is_killed_with_its_group():
    code, out, _ = _run(["sh", "-c", "sleep 300 & echo $!; exec sleep 300"], seconds=0.5)
    assert code == outcap.EXIT_TIMEOUT and _gone(int(out.split()[0]))


def test_leftovers_of_a_command_that_ended_are_killed():
    code, out, _ = _run(["sh", "-c", "sleep 300 >/dev/null 2>&1 & echo $!"])
    assert code == 0 and _gone(int(out.split()[0]))


def test_verdict_only_from_the_supervisors_exit_codes():
    assert outcap.verdict_of(0, "slurm.cmd: output passed 1 bytes\n") is None
    assert outcap.verdict_of(outcap.EXIT_OUTPUT, "program said 125\n") is None


@pytest.mark.parametrize(("script", "code"), [("echo ok", 0), ("exec yes", outcap.EXIT_OUTPUT)])
def test_wrap_runs_the_supervisor_as_its_own_isolated_python(script, code):
    argv = outcap.wrap(["sh", "-c", script], 64, 10)
    assert argv[1:4] == ["-I", "-m", "salt_ext.lib.util.outcap"]
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": "/nonexistent"}
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False, env=env)
    assert proc.returncode == code, proc.stderr
    assert len(proc.stdout) <= 64


def test_usage_error():
    assert outcap.main(["1", "2"]) == 2


def test_a_command_that_cannot_run_is_a_clear_error():
    code, _, err = _run(["/nonexistent/sinfo"])
    assert code == outcap.EXIT_NOT_RUN and "cannot run /nonexistent/sinfo" in err


@pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")
def test_runas_starts_the_command_as_that_user_in_their_home():
    user = pwd.getpwnam("nobody")
    popen = outcap.as_user("nobody")
    assert popen["cwd"] == user.pw_dir and popen["user"] == user.pw_uid
    assert popen["env"]["USER"] == "nobody" and popen["env"]["HOME"] == user.pw_dir
    assert popen["env"]["PATH"]  # nobody's nologin shell: the minimal environment
    # nobody's home (/nonexistent) cannot be the working directory: a clear error
    code, _, err = _run(["id", "-un"], **popen)
    assert code == outcap.EXIT_NOT_RUN and "cannot run id" in err
    code, out, _ = _run(["id", "-un"], **{**popen, "cwd": "/"})
    assert (code, out) == (0, "nobody\n")


def test_main_refuses_an_unknown_runas_user():
    assert outcap.main(["1", "2", "--runas", "gw-no-such-user", "--", "id"]) == 127


def test_wrap_puts_runas_before_the_command():
    assert outcap.wrap(["id"], 1, 2, runas="alice")[4:] == [
        "1",
        "2",
        "--runas",
        "alice",
        "--",
        "id",
    ]
