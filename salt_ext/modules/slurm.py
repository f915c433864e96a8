"""
Whitelisted Slurm client commands on a minion (``slurm.cmd``): an argument list, never a shell.

What may run is decided in :mod:`salt_ext.lib.node.slurm_cmd`, whose docstring is the threat model;
this module only translates Salt's arguments, runs the validated argv as ``runas`` and
reports. It loads where at least one Slurm client command is installed.
"""

import shlex

import salt.utils.data
import salt.utils.path
from salt.exceptions import CommandExecutionError, SaltInvocationError

from salt_ext.lib.node import slurm_cmd
from salt_ext.lib.util import outcap

__virtualname__ = "slurm"


MAX_TIMEOUT = slurm_cmd.Limits().max_seconds  # the default of pillar slurm:cmd:max_seconds
# cmd.run_all's own timeout, a backstop behind the supervisor's
_BACKSTOP_SECONDS = 30
# stderr quoted in an error, from its end (the full text is in the error's info)
_DETAIL_CHARS = 2000

# Keyword arguments a caller might hope reach cmd.run_all, or grant what only pillar may.
RESERVED_KWARGS = (
    "allow_root",
    "bg",
    "clean_env",
    "cwd",
    "env",
    "group",
    "prepend_path",
    "python_shell",
    "shell",
    "stdin",
    "umask",
    "use_vt",
)


def __virtual__():
    if any(salt.utils.path.which(name) for name in slurm_cmd.COMMANDS):
        return __virtualname__
    return (
        False,
        f"slurm: no Slurm client command ({', '.join(slurm_cmd.COMMANDS)}) found on PATH",
    )


def _token(value):
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    # Salt's command line reads each argument as YAML: 12.10 arrives as the float 12.1 (a
    # different job step), yes as True. Guessing the original text could cancel the wrong
    # step, so refuse and say how to pass it verbatim.
    raise SaltInvocationError(
        f"argument {value!r} arrived as {type(value).__name__}, not text (Salt's command line "
        "reads arguments as YAML: 12.10 becomes 12.1, yes becomes True); write it as "
        "--option=value or -jVALUE, quote it ('\"12.10\"'), or pass the command as one list"
    )


def _arguments(command, args, kwargs):
    """(command, [tokens]) from the separate-arguments, one-list and Key=Value forms."""
    if isinstance(command, (list, tuple)):
        if args:
            raise SaltInvocationError(
                "give the command either as one list or as separate arguments, not both"
            )
        if not command:
            raise SaltInvocationError(
                f"the command list is empty; allowed commands: {', '.join(slurm_cmd.COMMANDS)}"
            )
        command, args = command[0], tuple(command[1:])
    elif len(args) == 1 and isinstance(args[0], (list, tuple)):
        args = tuple(args[0])
    tokens = [_token(arg) for arg in args]
    # Salt turns a Key=Value argument (scontrol update NodeName=n1 …) into a keyword
    # argument, on the CLI and in salt-api's `arg` list alike; put them back, in order.
    for key, value in kwargs.items():
        if key.startswith("__"):
            continue  # Salt's own __pub_* publish data
        if key in RESERVED_KWARGS:
            raise SaltInvocationError(
                f"{key}= is not an argument of slurm.cmd"
                + (
                    "; jobs as root are allowed only by pillar slurm:cmd:allow_root"
                    if key == "allow_root"
                    else ""
                )
            )
        tokens.append(f"{key}={_token(value)}")
    return command, tokens


def _allow_root():
    # read __pillar__ itself: Salt 3008 masks pillar.get output
    flag = salt.utils.data.traverse_dict_and_list(__pillar__, "slurm:cmd:allow_root", False)
    return flag is True


def _limits():
    try:
        return slurm_cmd.limits_from_pillar(
            salt.utils.data.traverse_dict_and_list(__pillar__, "slurm:cmd", None)
        )
    except slurm_cmd.GatewayError as err:
        raise SaltInvocationError(str(err)) from err


def cmd(command, *args, runas=None, timeout=60, json=None, **kwargs):
    """
    Run one whitelisted Slurm command with an argument list (never a shell).

    Commands: sinfo, squeue, scontrol, sacct, sstat, srun, sbatch, scancel. Every option is
    checked against a per-command whitelist (exact names, no abbreviations) and the argv
    that runs spells options out in full. Rejected input raises with the offending argument
    and the allowed commands, options or subcommands.

    command
        The Slurm command, or the whole command as one list (``[squeue, -u, alice]``).

    args
        Its arguments, one per argument. ``Key=Value`` arguments (scontrol update) may
        arrive as keyword arguments from Salt; they are put back after the others, in order.

    runas
        Unix user to run as (default: the minion's user, normally root). srun and sbatch
        refuse to run jobs as root unless pillar ``slurm:cmd:allow_root`` is ``true``.

    timeout
        Seconds before the command and its process group are killed (1 to pillar
        ``slurm:cmd:max_seconds``, default 3600). Output (stdout and stderr together) past
        pillar ``slurm:cmd:max_output_bytes`` (default 16 MiB) kills it too; either is an
        error saying which limit was reached.

    json
        ``True`` adds ``--json`` (sinfo, squeue, sacct in Slurm 22.05) and parses the
        output into ``data``; a ``--json`` argument is parsed as well.

    Returns ``{"retcode": 0, "stdout": ..., "stderr": ..., "data": ..., "argv": [...]}``.

    From the command line put ``--`` before arguments that start with ``-`` (the ``salt``
    command reads them otherwise), or pass the command as one list. Salt reads command-line
    arguments as YAML: quote numbers that are not plain integers (``'"12.10"'``).

    CLI Example:

    .. code-block:: bash

        salt node1 slurm.cmd scontrol show node n1
        salt node1 slurm.cmd -- squeue -u alice --json
        salt node1 slurm.cmd sinfo json=True
        salt node1 slurm.cmd '[sinfo, -N, -h, -o, "%N %t"]'
        salt node1 slurm.cmd scontrol update NodeName=n1 State=DRAIN Reason=maintenance
        salt node1 slurm.cmd -- sbatch --wrap 'sleep 5' -o /dev/null runas=alice
        salt node1 slurm.cmd -- srun -N1 -w n1 hostname runas=alice
    """
    command, tokens = _arguments(command, args, kwargs)
    limits = _limits()
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise SaltInvocationError(f"timeout must be a number of seconds, got {timeout!r}")
    if not 1 <= timeout <= limits.max_seconds:
        raise SaltInvocationError(
            f"timeout must be between 1 and {limits.max_seconds} (pillar "
            f"slurm:cmd:max_seconds), got {timeout}"
        )
    if json is not None and not isinstance(json, bool):
        raise SaltInvocationError(f"json must be True or False, got {json!r}")
    try:
        argv = slurm_cmd.build_argv(
            command, tokens, runas=runas, allow_root=_allow_root(), json=json, limits=limits
        )
    except slurm_cmd.GatewayError as err:
        raise SaltInvocationError(str(err)) from err

    # Resolve on the minion's own PATH: with runas, Salt runs the command in that user's
    # login environment, whose PATH the user controls.
    binary = salt.utils.path.which(command)
    if not binary:
        raise CommandExecutionError(f"{command} is not installed on this minion (not on PATH)")
    argv = [binary, *argv[1:]]

    # cmd.run_all holds all output in memory and kills only its own child, so the command
    # runs under outcap's supervisor, which caps output and time and kills the command's
    # whole process group. The supervisor runs as the minion's user (a runas user may not
    # be allowed to execute the minion's Python) and starts the command as runas itself:
    # uid, groups, home as working directory (where relative -o/-e paths land) and login
    # environment (srun copies it into the job), as Salt's runas would. A list with
    # python_shell=False stays a list; stdin="" gives srun and scontrol an empty stdin.
    result = __salt__["cmd.run_all"](
        outcap.wrap(argv, limits.max_output_bytes, timeout, runas=runas),
        python_shell=False,
        timeout=timeout + _BACKSTOP_SECONDS,
        stdin="",
        ignore_retcode=True,
    )
    retcode = result.get("retcode")
    stdout = result.get("stdout", "")
    stderr = result.get("stderr", "")
    verdict = outcap.verdict_of(retcode, stderr)
    if verdict:
        raise CommandExecutionError(
            f"{shlex.join(argv)}: {verdict}",
            info={"retcode": retcode, "stderr": stderr[-_DETAIL_CHARS:]},
        )
    if retcode != 0:
        detail = (stderr or stdout).strip()[-_DETAIL_CHARS:]
        raise CommandExecutionError(
            f"{shlex.join(argv)} exited {retcode}: {detail}",
            info={"retcode": retcode, "stderr": stderr[-_DETAIL_CHARS:]},
        )
    try:
        data = slurm_cmd.parse_output(command, argv[1:], stdout)
    except ValueError as err:
        raise CommandExecutionError(f"{shlex.join(argv)} printed no valid JSON: {err}") from err
    return {"retcode": 0, "stdout": stdout, "stderr": stderr, "data": data, "argv": argv}
