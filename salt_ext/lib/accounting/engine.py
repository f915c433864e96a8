"""Read once, diff, honour ``test``, apply the difference in batches, prove it converged.

``run(argv, stdin=None) -> stdout`` is injected (the exec module passes
:func:`salt_ext.lib.util.command.run`; unit tests pass a fake sacctmgr) and raises
:class:`salt_ext.lib.util.command.CommandFailed` when sacctmgr exits non-zero.
"""

from salt_ext.lib.util import command

from . import current, diff, pillar, values

APPLY = [current.SACCTMGR, "-i"]
# the create phase's flat file comes on stdin (no temporary file to leave behind)
LOAD = [*APPLY, "load", "file=/dev/stdin"]


class ApplyError(RuntimeError):
    """A phase failed; ``result`` carries what was done before it."""

    def __init__(self, message, result):
        self.result = result
        super().__init__(message)


def command_runner(timeout=300):
    """A ``run`` over :func:`command.run` (argv only, never a shell)."""

    def run(argv, stdin=None):
        return command.run(argv, stdin=stdin, timeout=timeout).stdout

    return run


def sync(accounting, cluster, run, test=False, bulk=True):
    """Make the cluster's QOS, accounts and users what ``accounting`` (the
    ``slurm:accounting`` pillar) says.

    Returns ``{"changes", "drift", "unmanaged", "kept", "commands", "processes",
    "applied"}``: ``commands`` the phases and their lines (what ran, or would run with
    ``test``), ``processes`` how many sacctmgr processes this call started (reads
    included). Raises :class:`.pillar.PillarError` before any read on bad pillar (and
    after the reads, before any write, on a TRES slurmdbd does not know),
    :class:`.current.ParseError` on output it cannot read, :class:`ApplyError` when a phase
    fails or the cluster still differs afterwards. ``bulk=False``: no load file, every
    creation by ``add`` lines (for the benchmark's comparison).
    """
    wanted = pillar.validate(accounting)
    try:
        values.check_name(cluster, "slurm:cluster_name")
    except values.BadValue as err:
        raise pillar.PillarError([str(err)]) from None
    count = {"processes": 0}

    def counted(argv, stdin=None):
        count["processes"] += 1
        return run(argv, stdin) if stdin is not None else run(argv)

    have = current.read(counted, cluster)
    pillar.check_tres(wanted, have.get("tres"))
    try:
        result = diff.plan(wanted, have, cluster, bulk)
    except diff.UnsafeCommand as err:  # before any write: a value set too long for a line
        raise pillar.PillarError([f"slurm:accounting: {err}"]) from None
    result["applied"] = False
    if test or not result["commands"]:
        result["processes"] = count["processes"]
        return result
    done = []
    for phase in result["commands"]:
        stdin = "\n".join(phase["lines"]) + "\n"
        try:
            counted(LOAD if phase["phase"] == diff.LOAD_PHASE else APPLY, stdin)
        except command.CommandFailed as err:
            result["processes"] = count["processes"]
            result["phases_done"] = done
            raise ApplyError(
                f"sacctmgr failed in phase {phase['phase']!r} (after {done or 'none'}): {err}",
                result,
            ) from err
        done.append(phase["phase"])
    result["applied"] = True
    after = diff.plan(wanted, current.read(counted, cluster), cluster, bulk)
    result["processes"] = count["processes"]
    remaining = after["commands"]
    if remaining:
        result["remaining"] = after["commands"]
        raise ApplyError(
            "sacctmgr accepted the changes but the cluster still differs from pillar: "
            + "; ".join(line for phase in remaining for line in phase["lines"][:5]),
            result,
        )
    return result
