"""Run a command with its output and wall time capped: ``python -I -m salt_ext.lib.util.outcap``.

``slurm.cmd`` runs Slurm clients through Salt's ``cmd.run_all``, which keeps every byte of
output in the minion's memory and on timeout kills only the process it started. Slurm
clients can be made to print without end (``scontrol show hostnames`` of a huge hostlist)
or to spin (a hostlist range ending at 2^64-1), so ``cmd.run_all`` runs this supervisor
instead, as the minion's own user: the runas user may not even be allowed to execute the
minion's Python. With ``--runas USER`` the supervisor starts the command as that user
(uid, gid, groups), in their home, with their login environment (``su -``, as Salt's
runas does). It starts the command in a new process group, passes its stdout and
stderr through while their total stays within ``MAX_BYTES``, and kills the whole group
once the total passes it or ``SECONDS`` pass, then says so on stderr and exits with
:data:`EXIT_OUTPUT` or :data:`EXIT_TIMEOUT`. Otherwise it exits with the command's code.

Only the standard library is used, and ``-I`` keeps the user's ``PYTHON*`` variables and
user site-packages out of it.
"""

import os
import pwd
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


def wrap(argv, max_bytes, seconds, runas=None, python=None):
    """The argv that runs ``argv`` under this supervisor (as ``runas`` when given)."""
    python = python or sys.executable
    user = ["--runas", runas] if runas else []
    return [python, "-I", "-m", __name__, str(int(max_bytes)), str(seconds), *user, "--", *argv]


def _login_env(user):
    """``user``'s login environment as ``su -`` builds it; a minimal one if that fails
    (e.g. a nologin shell)."""
    marker = b"__slurm_cmd_env__"
    env = {}
    try:
        proc = subprocess.run(  # noqa: S603 - fixed argv; the name is a pwd entry
            ["su", "-", user.pw_name, "-c", f"echo {marker.decode()}; exec env -0"],
            capture_output=True,
            stdin=subprocess.DEVNULL,
            timeout=10,
            check=False,
        )
        if marker + b"\n" in proc.stdout:
            text = proc.stdout.split(marker + b"\n", 1)[1].decode(errors="replace")
            env = dict(item.split("=", 1) for item in text.split("\0") if "=" in item)
    except (OSError, subprocess.SubprocessError):
        pass
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    env.update(USER=user.pw_name, LOGNAME=user.pw_name, HOME=user.pw_dir)
    return env


def as_user(name):
    """Popen keyword arguments that start a command as user ``name`` (see the docstring)."""
    user = pwd.getpwnam(name)
    return {
        "user": user.pw_uid,
        "group": user.pw_gid,
        "extra_groups": os.getgrouplist(user.pw_name, user.pw_gid),
        "cwd": user.pw_dir,
        "env": _login_env(user),
    }


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


def supervise(argv, max_bytes, seconds, out, err, **popen):
    """Run ``argv``; copy its output to the binary streams ``out``/``err``; return the exit
    code (see the module docstring). ``popen``: more Popen arguments (:func:`as_user`)."""
    deadline = time.monotonic() + seconds
    try:
        proc = subprocess.Popen(  # noqa: S603 - an argv list, never a shell
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            **popen,
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
    args = sys.argv[1:] if args is None else list(args)
    popen = {}
    if len(args) > 4 and args[2] == "--runas":
        try:
            popen = as_user(args[3])
        except KeyError:
            sys.stderr.write(f"{PREFIX} no user {args[3]!r}\n")
            return EXIT_NOT_RUN
        del args[2:4]
    if len(args) < 4 or args[2] != "--":
        sys.stderr.write(
            f"usage: python -I -m {__name__} MAX_BYTES SECONDS [--runas USER] -- COMMAND…\n"
        )
        return 2
    out, err = sys.stdout.buffer, sys.stderr.buffer
    return supervise(args[3:], int(args[0]), float(args[1]), out, err, **popen)


if __name__ == "__main__":
    sys.exit(main())
