"""Run a command from an argument list (never a shell) and report failures with stderr."""

import subprocess


class CommandFailed(Exception):
    """A command exited non-zero, timed out or was not found; the message carries stderr."""

    def __init__(self, argv, message, returncode=None, stdout="", stderr=""):
        self.argv = list(argv)
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        super().__init__(message)


def run(argv, stdin=None, timeout=60, check=True, env=None):
    """Run ``argv``; return ``subprocess.CompletedProcess`` with text stdout/stderr.

    With ``check`` a non-zero exit raises :class:`CommandFailed` whose message names the
    command and quotes its stderr, which is what an admin needs to act on.
    """
    argv = [str(a) for a in argv]
    try:
        proc = subprocess.run(
            argv,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env=env,
        )
    except FileNotFoundError as err:
        raise CommandFailed(argv, f"{argv[0]}: command not found") from err
    except subprocess.TimeoutExpired as err:
        raise CommandFailed(argv, f"{' '.join(argv)}: timed out after {timeout}s") from err
    if check and proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip()
        raise CommandFailed(
            argv,
            f"{' '.join(argv)} exited {proc.returncode}: {detail}",
            proc.returncode,
            proc.stdout,
            proc.stderr,
        )
    return proc


def timed_out(err):
    """True when the :class:`CommandFailed` ``err`` is a timeout (not an exit or a missing
    command): a hung daemon's silence, which callers report as evidence, not as a failure."""
    return isinstance(err.__cause__, subprocess.TimeoutExpired)
