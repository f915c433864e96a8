"""Run a command with its output and wall time capped: ``python -I -m salt_ext.lib.outcap``.

``slurm.cmd`` runs Slurm clients through Salt's ``cmd.run_all``, which switches to ``runas``
with that user's login environment and working directory, but keeps every byte of output
in the minion's memory and on timeout kills only the process it started. Slurm clients can
be made to print without end (``scontrol show hostnames`` of a huge hostlist) or to spin
(a hostlist range ending at 2^64-1), so ``cmd.run_all`` runs this supervisor instead,
as the same user. It starts the command in a new process group, passes its stdout and
stderr through while their total stays within ``MAX_BYTES``, and kills the whole group
once the total passes it or ``SECONDS`` pass, then says so on stderr and exits with
:data:`EXIT_OUTPUT` or :data:`EXIT_TIMEOUT`. Otherwise it exits with the command's code.

Only the standard library is used, and ``-I`` keeps the user's ``PYTHON*`` variables and
user site-packages out of it.
"""

import os
import selectors
import signal
import subprocess
import sys
import time

EXIT_TIMEOUT = 124  # as timeout(1)
EXIT_OUTPUT = 125
EXIT_NOT_RUN = 127  # as a shell's "command not found"
PREFIX = "slurm.cmd:"  # starts the supervisor's own line on stderr
_CHUNK = 65536
_POLL = 0.05


def wrap(argv, max_bytes, seconds, python=None):
    """The argv that runs ``argv`` under this supervisor."""
    python = python or sys.executable
    return [python, "-I", "-m", __name__, str(int(max_bytes)), str(seconds), "--", *argv]


def _kill_group(pgid):
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _exited(pid, deadline):
    """Wait (not reaping) until ``pid`` exits or the deadline passes; True if it exited."""
    while True:
        if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(_POLL)


def supervise(argv, max_bytes, seconds, out, err):
    """Run ``argv``; copy its output to the binary streams ``out``/``err``; return the exit
    code (see the module docstring)."""
    deadline = time.monotonic() + seconds
    try:
        proc = subprocess.Popen(  # noqa: S603 - an argv list, never a shell
            argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
        )
    except OSError as exc:
        err.write(f"{PREFIX} cannot run {argv[0]}: {exc.strerror}\n".encode())
        return EXIT_NOT_RUN
    verdict = None
    total = 0
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ, out)
        selector.register(proc.stderr, selectors.EVENT_READ, err)
        while selector.get_map() and verdict is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                verdict = EXIT_TIMEOUT
                break
            for key, _ in selector.select(remaining):
                chunk = os.read(key.fd, _CHUNK)
                if not chunk:
                    selector.unregister(key.fileobj)
                    continue
                key.data.write(chunk[: max(max_bytes - total, 0)])
                key.data.flush()
                total += len(chunk)
                if total > max_bytes:
                    verdict = EXIT_OUTPUT
                    break
    if verdict is None and not _exited(proc.pid, deadline):
        verdict = EXIT_TIMEOUT
    # The leader is not reaped yet, so its pid still names the group: kill what is left in
    # it (all of it on a verdict; leftovers that outlived the leader otherwise).
    _kill_group(proc.pid)
    proc.wait()
    proc.stdout.close()
    proc.stderr.close()
    if verdict is None:
        return proc.returncode if proc.returncode >= 0 else 128 - proc.returncode
    if verdict == EXIT_OUTPUT:
        why = (
            f"output passed {max_bytes} bytes (pillar slurm:cmd:max_output_bytes); "
            f"killed {argv[0]} and its process group"
        )
    else:
        why = (
            f"still running after {seconds:g} s (timeout; at most pillar "
            f"slurm:cmd:max_seconds); killed {argv[0]} and its process group"
        )
    err.write(f"\n{PREFIX} {why}\n".encode())
    err.flush()
    return verdict


def verdict_of(retcode, stderr):
    """The supervisor's own message when ``retcode``/``stderr`` carry one, else None."""
    if retcode not in (EXIT_TIMEOUT, EXIT_OUTPUT):
        return None
    lines = stderr.rstrip("\n").rsplit("\n", 1)
    return lines[-1] if lines[-1].startswith(PREFIX) else None


def main(args=None):
    args = sys.argv[1:] if args is None else args
    if len(args) < 4 or args[2] != "--":
        sys.stderr.write(f"usage: python -I -m {__name__} MAX_BYTES SECONDS -- COMMAND…\n")
        return 2
    return supervise(args[3:], int(args[0]), float(args[1]), sys.stdout.buffer, sys.stderr.buffer)


if __name__ == "__main__":
    sys.exit(main())
