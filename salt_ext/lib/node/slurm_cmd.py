"""
Whitelisted Slurm commands for ``slurm.cmd``: validate an argument list, return the argv to run.

THREAT MODEL
============

Who calls it
    A Salt user or salt-api client whose eauth ACL allows ``slurm.cmd`` but not ``cmd.run``.
    The minion runs as root, so anything this gateway lets through runs as root unless the
    caller passes ``runas``. The caller is trusted with exactly the Slurm client commands
    below and nothing else; Slurm's own authorisation (the command runs as ``runas``) still
    applies on top, and this whitelist is defence in depth beneath it.

Assets
    root on the minion and on the compute nodes; other users' jobs (their scripts,
    environments, output); the munge key (``/etc/munge/munge.key``, the cluster's root
    credential); ``slurm.conf`` and the running controller.

Threats, mitigations and the tests that prove them (tests/unit/test_node_slurm_cmd.py unless
named otherwise):

1. Shell injection through metacharacters (``;``, ``&&``, ``|``, ``$(id)``, backticks,
   ``>``). Mitigation: the argv list goes to ``execve`` (``cmd.run_all`` with
   ``python_shell=False``), never joined into a string; and any token holding one of
   ``; & | $ ` < > \\`` is refused anyway, because argvs end up in logs and get pasted into
   shells. Tests: ``test_hostile_input_is_rejected_naming_the_token`` (semicolon, and-and,
   pipe, dollar-paren, backticks, redirect ids),
   ``test_module_slurm_cmd.py::test_argv_reaches_cmd_run_all_as_a_list_without_a_shell``.

2. Running something other than the eight commands (``bash``, ``sacctmgr``,
   ``/usr/bin/sinfo``, ``../sinfo``, ``sinfo;id``). Mitigation: the command must equal one of
   :data:`COMMANDS`' keys; the module resolves it on the minion's own PATH, never the
   ``runas`` user's login PATH. Tests: ``test_hostile_input_is_rejected_naming_the_token``
   (``cmd-*`` ids), ``test_unknown_command_lists_the_allowed_commands``,
   ``test_module_slurm_cmd.py::test_binary_is_resolved_on_the_minions_path``.

3. Options that act as another user: ``--uid=0`` / ``--uid 0`` / ``--gid`` (sbatch, srun),
   ``scontrol -u``. Mitigation: every option is matched exactly against the command's
   whitelist; these are on the deny list with the reason in the error. ``-u`` means
   different things per command and is judged per command: a filter choosing whose jobs
   squeue/sacct list and scancel cancels (allowed: Slurm lets only the owner or an operator
   cancel), ``--unbuffered`` for srun (a flag), and unknown to sbatch. Tests: hostile ids
   ``uid-equals``, ``uid-separate``, ``gid``, ``scontrol-uid``, ``sbatch-u-root``;
   ``test_squeue_u_is_a_read_filter``.

4. Abbreviations: Slurm's getopt_long takes unique prefixes (``sbatch --ui=0`` *is*
   ``--uid=0``, shown here with 22.05), scontrol takes prefixes of subcommands
   (``scontrol rec`` is ``reconfigure``), entities and update keys (``Sta=DRAIN``).
   Mitigation: exact, whole-word matching of options, subcommands, entities and keys, and
   the canonical spelling is what runs. Tests: hostile ids ``uid-prefix``, ``nodes-prefix``,
   ``scontrol-rec``, ``update-key-prefix``; ``test_abbreviated_option_is_rejected``; Slurm's
   side in tests/functional/test_gateway_vs_slurm.py:
   ``test_getopt_accepts_abbreviations_so_we_match_options_exactly``,
   ``test_scontrol_abbreviates_subcommands_so_we_match_whole_words``.

5. Parser confusion between us and getopt: ``--opt=value`` vs ``--opt value`` vs
   ``-ovalue``, clustered flags (``-Nho%N``), optional arguments (``--exclusive=…``),
   values that look like options (``-o --uid=0``), ``--``, and for srun/sbatch the end of
   options at the program/script. Mitigation: our own getopt-compatible parser; values may
   not start with ``-``; ``--`` is refused; and the validated result is re-emitted
   canonically (``--long=value``), so Slurm parses exactly what we validated. Tests:
   ``test_option_forms_are_canonicalised``, ``test_value_that_looks_like_an_option_is_rejected``,
   ``test_srun_program_arguments_belong_to_the_program``, hostile ids ``double-dash``,
   ``exclusive-user``, ``option-looking-value``, ``denied-in-cluster``; Slurm's
   side: functional ``test_srun_and_sbatch_stop_parsing_at_the_program``,
   ``test_other_commands_take_options_after_positionals``.

6. Environment tricks: ``--export=ALL,LD_PRELOAD=/x``, ``--export-file``,
   ``--get-user-env``. Mitigation: denied; the module has no ``env`` parameter. Tests:
   hostile ids ``export-ld-preload``, ``get-user-env``, ``export-file``.

7. Programs run by Slurm hooks or files written by Slurm: ``--prolog``, ``--epilog``,
   ``--task-prolog``, ``--task-epilog`` (run a program), ``--container`` (an OCI bundle
   path), ``--bcast`` (copies a file to every node), ``--propagate`` (rlimits),
   ``--multi-prog``, ``-Z/--no-allocate`` (root-only: run without an allocation),
   ``--jobid`` (attach to another allocation), ``--reboot``, ``--bb/--bbf``,
   ``--send-libs``, ``--priority``, ``--nice`` (negative values raise priority),
   ``--mail-user`` (mail to any address), ``-F/--nodefile`` (reads a file). Mitigation:
   denied with reasons. Tests: hostile ids ``prolog``, ``task-prolog``, ``epilog``,
   ``container``, ``bcast``, ``propagate``, ``no-allocate``;
   ``test_every_denied_option_says_why``.

8. Writing files in the wrong place (``sbatch -o /etc/passwd``, ``--chdir=/root``,
   ``-e ../x``). Decision: ``-o/-e/-i`` and ``-D/--chdir`` take relative paths without
   ``..`` (``/dev/null`` also for ``-o/-e/-i``). Relative paths resolve in the job's working
   directory, which is the ``runas`` user's home (Salt's ``cwd`` for ``runas``), so a job's
   files stay in its owner's home; an absolute path would, for a root job, truncate any
   file on the compute node. Tests: hostile ids ``output-etc-passwd``, ``chdir-root``,
   ``error-dotdot``; ``test_output_paths_must_be_relative``.
   Filename patterns expand after we look (``sbatch -J ../../../etc/cron.d/x -o %x`` made
   slurmctld record ``StdOut=<cwd>/../../../etc/cron.d/x``; srun's ``-i %x`` reads that
   path on the minion). Decision: only Slurm 22.05's patterns (:data:`FILENAME_PATTERNS`,
   ``%%``, width up to 10) are accepted, and none can yield ``/`` or a ``..`` component:
   numbers, host and user names cannot, job names may not hold ``/`` or start with ``.``
   (rule ``jobname``, for ``-J`` and ``scontrol update JobName=``), and ``%x`` needs an
   explicit ``-J`` because the default name (program, script, ``SBATCH_JOB_NAME``) is not
   ours to check. A path is then judged with each pattern as one letter. Tests:
   ``HOSTILE_11`` ids ``jobname-*``, ``output-x-*``, ``*-pattern``, ``pattern-*``,
   ``update-jobname-slash``; ``test_filename_patterns_that_stay_inside_are_allowed``;
   functional ``test_filename_patterns_are_the_ones_the_man_page_lists``.

9. Jobs as root: ``srun``/``sbatch`` as root run arbitrary programs as root on the compute
   nodes, i.e. ``cmd.run`` by another name. Mitigation: refused when the effective user
   (``runas`` or, without it, the minion's own user) has uid 0 — any uid-0 alias counts —
   unless the pillar says ``slurm:cmd:allow_root: true``. Only pillar can allow it: the
   module refuses an ``allow_root`` argument. Tests:
   ``test_srun_and_sbatch_refuse_root_without_allow_root``,
   ``test_srun_and_sbatch_run_as_root_when_allowed``,
   ``test_module_slurm_cmd.py::test_allow_root_comes_from_pillar_only``.

10. scontrol changing the cluster or reading files. Mitigation: subcommand whitelist
    :data:`SCONTROL_SUBCOMMANDS` (read-only ``show``/``ping``/``version``/``listpids``; job
    control Slurm authorises per job owner; ``update`` of a node's drain state or a few job
    fields only), everything else (``shutdown``, ``takeover``, ``reconfigure``,
    ``create``, ``delete``, ``reboot``, ``token``, ``write``, ``setdebug``…) refused with a
    reason. ``scontrol show hostlist /path`` reads a file and prints its lines (22.05, run
    as root that prints ``/etc/munge/munge.key``): IDs may not contain ``/``. Tests: hostile
    ids ``scontrol-shutdown``, ``scontrol-takeover``, ``scontrol-reconfigure``,
    ``scontrol-delete``, ``update-partition``, ``update-node-down-cpus``,
    ``show-hostlist-file``; ``test_scontrol_update_only_whitelisted_keys``; Slurm's side:
    functional ``test_scontrol_show_hostlist_reads_files_so_ids_cannot_be_paths``,
    ``test_scontrol_update_keys_we_allow_are_accepted_by_scontrol``.

11. Het-job separator: srun/sbatch split argv at a lone ``:`` and parse options again after
    it, so ``srun hostname : --prolog=/x hostname`` would smuggle options past the program.
    Mitigation: a lone ``:`` is refused for srun/sbatch. Test: hostile id ``het-separator``.

12. Newline, NUL, other control and bidi-override characters (log forging, argument
    splitting in Slurm's own parsers). Mitigation: every character must be printable;
    errors show tokens with ``repr``. Tests: hostile ids ``newline``, ``nul``, ``tab``,
    ``bidi``.

13. Resource exhaustion: at most :data:`MAX_ARGS` arguments of :data:`MAX_ARG_LEN`
    characters; commands that never end are refused (``-i/--iterate``, ``scancel -i``
    waits on stdin, scontrol without a subcommand is interactive); the module's timeout
    defaults to 60 s. Tests: hostile ids ``too-many-args``, ``over-long-arg``, ``iterate``,
    ``scontrol-interactive``.
    Hostlists are sized by :func:`salt_ext.lib.conf.hostlist.count` before Slurm expands them
    (``scontrol show hostnames 'a[0-65535]b[0-9999]'`` prints 655 million names): at most
    ``Limits.max_hosts``, and no number above :data:`MAX_HOST_NUMBER` (a range ending at
    2^64-1 never ends in Slurm). Field widths of 10^7 segfault sinfo and squeue: widths
    are capped at ``Limits.max_format_width``. Whatever still prints or runs too long is
    killed with its process group by :mod:`salt_ext.lib.util.outcap` (``max_output_bytes``,
    the timeout). All limits come from pillar ``slurm:cmd`` (:func:`limits_from_pillar`).
    Tests: ``HOSTILE_11`` ids ``hostnames-*``, ``*-product``, ``*-width*``;
    ``test_hostlist_cap_is_inclusive_and_comes_from_limits``;
    tests/unit/test_util_outcap.py; functional
    ``test_scontrol_never_finishes_a_range_ending_at_ulong_max``,
    ``test_scontrol_expands_a_hostlist_product_in_full``,
    ``test_slurm_cmd_output_cap_kills_the_real_command``.

14. Other users' secrets: job environments and scripts (``sacct --env-vars``,
    ``sacct -B``, ``scontrol write batch_script``) and auth tokens (``scontrol token``).
    Mitigation: denied. Tests: hostile ids ``sacct-env-vars``, ``scontrol-token``.

15. Mass action: ``scancel -p PART`` or ``scancel -t PENDING`` with no job id, run as root,
    cancels every user's jobs. Mitigation: scancel needs a job id or ``-u/--user``. Test:
    hostile id ``scancel-sweep``. Decision for callers with ``runas`` (what an ACL pins to
    one person): ``scancel -u`` must be exactly that user, and ``scontrol update
    NodeName=`` may not be ``ALL`` nor more than ``Limits.runas_max_nodes`` nodes. Without
    ``runas`` the caller is root, the admin, and keeps both. Tests: ``HOSTILE_11`` ids
    ``scancel-*``, ``drain-*``; ``test_admin_without_runas_*``, ``test_runas_*``.

Not seen by this gateway, bounded by the ``runas`` user's own rights instead: ``#SBATCH``
lines inside a batch script file and ``SBATCH_*``/``SLURM_*`` variables in that user's login
environment. That is the other reason jobs as root are refused by default. sbatch 22.05 does
not scan a ``--wrap`` string for ``#SBATCH`` (checked by hand); a ``--wrap`` starting with
``#`` is refused all the same (test: hostile id ``wrap-directive``).

Residual risk, by design: without ``runas`` the command runs as root, i.e. with Slurm
operator rights (``scancel`` any job, ``scontrol hold`` any job, drain any node). To confine
a salt-api client to one Slurm identity, pin ``runas`` in its eauth ACL with Salt's
argument matching, e.g. ``- 'slurm.cmd': {kwargs: {runas: '^alice$'}}``.
"""

import json as jsonlib
import os
import pwd
import re
from dataclasses import dataclass, field, fields

from salt_ext.lib.conf import hostlist

MAX_ARGS = 64
MAX_ARG_LEN = 1024

SHELL_METACHARACTERS = frozenset(";&|$`<>\\")


class GatewayError(ValueError):
    """Input refused; the message names the offending argument and what is allowed."""

    def __init__(self, message, token=None):
        self.token = token
        super().__init__(message)


@dataclass(frozen=True)
class Limits:
    """Caps from pillar ``slurm:cmd``; the defaults are the safe values."""

    max_hosts: int = 65536  # hosts one hostlist argument may name
    max_format_width: int = 1024  # a field width in -o/-O/--format (Slurm crashes at 10^7)
    max_output_bytes: int = 16 * 1024 * 1024  # stdout + stderr, then the command is killed
    max_seconds: int = 3600  # the largest timeout a caller may ask for
    runas_max_nodes: int = 16  # nodes one scontrol update may change when runas is given


# pillar key -> largest value accepted (smallest is 1)
LIMIT_BOUNDS = {
    "max_hosts": 16 * 1024 * 1024,
    "max_format_width": 1_000_000,
    "max_output_bytes": 1024**3,
    "max_seconds": 86400,
    "runas_max_nodes": 16 * 1024 * 1024,
}


def limits_from_pillar(cmd_pillar):
    """:class:`Limits` from the ``slurm:cmd`` pillar mapping (None: the defaults).

    Raises :class:`GatewayError` naming the ``slurm:cmd:`` key when a value is not a whole
    number within its bounds. Keys that are not limits (``allow_root``) are ignored here.
    """
    if cmd_pillar is None:
        return Limits()
    if not isinstance(cmd_pillar, dict):
        raise GatewayError(
            f"pillar slurm:cmd must be a mapping, got {type(cmd_pillar).__name__}", cmd_pillar
        )
    values = {}
    for item in fields(Limits):
        if item.name not in cmd_pillar:
            continue
        value, top = cmd_pillar[item.name], LIMIT_BOUNDS[item.name]
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= top:
            raise GatewayError(
                f"pillar slurm:cmd:{item.name} must be a whole number from 1 to {top}, "
                f"got {value!r}",
                value,
            )
        values[item.name] = value
    return Limits(**values)


# --- value rules ---------------------------------------------------------------------------

_JOB = r"\d+(?:_\d+)?(?:\.(?:\d+|batch|extern))?"
_PATH = r"[A-Za-z0-9_%.+][A-Za-z0-9_%.+/-]*"


@dataclass(frozen=True)
class Rule:
    """What a value may look like; ``describe`` goes into error messages."""

    name: str
    pattern: str
    describe: str
    dash_ok: bool = False  # leading '-' is part of the syntax (sort order), not an option

    def check(self, value):
        if not value:
            return "is empty"
        if value.startswith("-") and not self.dash_ok:
            return "looks like an option"
        if self.pattern and not re.fullmatch(self.pattern, value, re.ASCII):
            return "has characters or a shape not allowed"
        return None


def _list(item):
    return rf"{item}(?:,{item})*"


RULES = {
    "names": Rule("names", _list(r"[A-Za-z0-9_][A-Za-z0-9_.+:-]*"), "a comma list of names"),
    "name": Rule("name", r"[A-Za-z0-9_][A-Za-z0-9_.+:-]*", "a name"),
    "users": Rule("users", _list(r"[A-Za-z0-9_][A-Za-z0-9_.-]*"), "a comma list of users"),
    "hostlist": Rule("hostlist", r"[A-Za-z0-9_][A-Za-z0-9_.,\[\]-]*", "a hostlist like n[1-4]"),
    "jobs": Rule("jobs", _list(_JOB), "a comma list of job ids like 123, 123_4 or 123.0"),
    "job": Rule("job", r"\d+(?:_\d+)?", "a job id like 123 or 123_4"),
    "format": Rule("format", r"[A-Za-z0-9_%.,: -]+", "a format string like '%N %t'"),
    "sort": Rule("sort", _list(r"[+-]?[A-Za-z0-9%]+"), "sort fields like -t,N", dash_ok=True),
    "states": Rule("states", _list(r"[A-Za-z_]+"), "a comma list of states"),
    "time": Rule("time", r"[A-Za-z0-9][A-Za-z0-9:/.+T-]*", "a time like 2024-01-31T08:00"),
    "timelimit": Rule(
        "timelimit",
        r"(?:\d+-)?\d+(?::\d+){0,2}|(?i:unlimited|infinite)",
        "a time limit like 30, 1:00:00 or 1-00:00:00",
    ),
    "count": Rule("count", r"\d+(?:-\d+)?", "a count like 2 or 1-4"),
    "int": Rule("int", r"\d+", "a non-negative integer"),
    "mem": Rule("mem", r"\d+[KMGTkmgt]?", "a size like 4000 or 4G"),
    "tres": Rule("tres", r"[A-Za-z0-9_][A-Za-z0-9_:,.]*", "a resource spec like gpu:a100:2"),
    "constraint": Rule("constraint", r"[A-Za-z0-9_][A-Za-z0-9_,:*\[\]]*", "node features"),
    "dependency": Rule("dependency", r"[a-z][A-Za-z0-9_:,?+]*", "a dependency like afterok:123"),
    "array": Rule("array", r"\d[0-9,:%-]*", "array indexes like 1-10%2"),
    "signal": Rule("signal", r"[A-Za-z0-9]+", "a signal name or number"),
    "text": Rule("text", "", "free text"),
    "jobname": Rule(
        "jobname",
        r"[A-Za-z0-9_][^/]*",
        "a job name without '/' that starts with a letter, digit or '_'",
    ),
    "path": Rule(
        "path",
        "",
        "a relative path without '..' or /dev/null; filename patterns "
        + " ".join("%" + p for p in "%AaJjNnstux")
        + " with a width up to 10 (%x needs -J/--job-name)",
    ),
    "reldir": Rule("reldir", "", "a relative directory without '..'"),
}

# Slurm 22.05's filename patterns (sbatch(1), srun(1) "filename pattern"), after '%' and an
# optional zero-padding width, which Slurm caps at 10.
FILENAME_PATTERNS = "AaJjNnstux"
_MAX_PATTERN_WIDTH = 10
_FILENAME_PATTERN = re.compile(rf"%(?:%|(\d*)([{FILENAME_PATTERNS}]))")
# Slurm's hostlist code counts in unsigned long: a range ending at 2^64-1 never ends and
# anything near it overflows. Real node numbers are far below this.
MAX_HOST_NUMBER = 2**32 - 1
# a field width in sinfo/squeue -o (%.20N, %-8i), -O (NodeList:20, JobID:.8), sacct/sstat
# -o (JobID%20)
_FORMAT_WIDTH = re.compile(r"[%:][-.]*(\d+)")


def filename_patterns(value):
    """The pattern letters in an -o/-e/-i/-D value (``%%`` is text); None if one is bad."""
    letters = []
    pos = value.find("%")
    while pos != -1:
        m = _FILENAME_PATTERN.match(value, pos)
        if not m or (m.group(1) and int(m.group(1)) > _MAX_PATTERN_WIDTH):
            return None
        if m.group(2):
            letters.append(m.group(2))
        pos = value.find("%", m.end())
    return letters


def _path_problem(value, allow_dev_null):
    if allow_dev_null and value == "/dev/null":
        return None
    if value.startswith("-"):
        return "looks like an option"
    if not re.fullmatch(_PATH, value, re.ASCII):
        return "is absolute or has characters not allowed"
    if filename_patterns(value) is None:
        return (
            "has a '%' that is not a filename pattern ("
            + ", ".join("%" + p for p in "%" + FILENAME_PATTERNS)
            + f", with a width up to {_MAX_PATTERN_WIDTH})"
        )
    # Every pattern expands to text without '/' that is not all dots (numbers, host and user
    # names, and job names, which the jobname rule keeps so), so the path keeps the shape it
    # has with each pattern as one letter.
    shape = _FILENAME_PATTERN.sub(lambda m: "%" if m.group(0) == "%%" else "X", value)
    if ".." in shape.split("/"):
        return "climbs out with '..'"
    return None


def _hostlist_problem(value, limits):
    for digits in re.findall(r"\d+", value):
        if int(digits) > MAX_HOST_NUMBER:
            return (
                f"has the number {digits}, above {MAX_HOST_NUMBER} (Slurm's hostlist code "
                "overflows near 2^64 and never finishes)"
            )
    try:
        hosts = hostlist.count(value)
    except ValueError as err:
        return f"is not a hostlist Slurm reads the same way ({err})"
    if hosts > limits.max_hosts:
        return (
            f"names {hosts} hosts, more than {limits.max_hosts} (pillar slurm:cmd:max_hosts); "
            "Slurm expands it in memory"
        )
    return None


def _format_problem(value, limits):
    for m in _FORMAT_WIDTH.finditer(value):
        if int(m.group(1)) > limits.max_format_width:
            return (
                f"has the field width {m.group(1)}, more than {limits.max_format_width} "
                "(pillar slurm:cmd:max_format_width; Slurm crashes on huge widths)"
            )
    return None


def value_problem(rule, value, limits):
    """Why ``value`` breaks ``rule`` (one of :data:`RULES`), or None. The one home of every
    value check, whether the value came with an option or as a positional or Key=Value."""
    if rule in ("path", "reldir"):
        return _path_problem(value, rule == "path")
    problem = RULES[rule].check(value)
    if problem is None and rule == "hostlist":
        problem = _hostlist_problem(value, limits)
    if problem is None and rule == "format":
        problem = _format_problem(value, limits)
    return problem


# --- command specs -------------------------------------------------------------------------


@dataclass(frozen=True)
class Option:
    """One whitelisted option; ``rule`` None means a flag."""

    long: str
    short: str | None = None
    rule: str | None = None

    def label(self):
        return f"{self.short}/{self.long}" if self.short else self.long


@dataclass(frozen=True)
class CommandSpec:
    options: tuple
    denied: dict = field(default_factory=dict)  # spelling -> why, e.g. "--uid": "..."
    json: bool = False
    runs_jobs: bool = False  # srun/sbatch: execute programs on compute nodes
    permute: bool = True  # getopt permutes (options anywhere) vs stops at the program

    def by_long(self):
        return {o.long: o for o in self.options}

    def by_short(self):
        return {o.short: o for o in self.options if o.short}


def _o(long, short=None, rule=None):
    return Option(long, short, rule)


VERBOSE = _o("--verbose", "-v")
QUIET = _o("--quiet", "-Q")
JSON_OPT = _o("--json")

_WHY_UID = "runs as another user; use runas= (Slurm checks who that user may act for)"
_WHY_CLUSTERS = "talks to other clusters through slurmdbd; the gateway stays on this cluster"
_WHY_ITERATE = "never returns; it would hold a minion worker until the timeout"
_DENY_CLUSTERS = {"--clusters": _WHY_CLUSTERS, "-M": _WHY_CLUSTERS}
_DENY_ITERATE = {"--iterate": _WHY_ITERATE, "-i": _WHY_ITERATE}

# Resource requests shared by srun and sbatch: Slurm enforces them against the user's limits.
_JOB_RESOURCES = (
    _o("--nodes", "-N", "count"),
    _o("--ntasks", "-n", "int"),
    _o("--cpus-per-task", "-c", "int"),
    _o("--ntasks-per-node", None, "int"),
    _o("--nodelist", "-w", "hostlist"),
    _o("--exclude", "-x", "hostlist"),
    _o("--partition", "-p", "names"),
    _o("--time", "-t", "timelimit"),
    _o("--job-name", "-J", "jobname"),
    _o("--account", "-A", "name"),
    _o("--qos", "-q", "name"),
    _o("--reservation", None, "name"),
    _o("--mem", None, "mem"),
    _o("--mem-per-cpu", None, "mem"),
    _o("--gpus", "-G", "tres"),
    _o("--gres", None, "tres"),
    _o("--constraint", "-C", "constraint"),
    _o("--dependency", "-d", "dependency"),
    _o("--comment", None, "text"),
    _o("--output", "-o", "path"),
    _o("--error", "-e", "path"),
    _o("--input", "-i", "path"),
    _o("--chdir", "-D", "reldir"),
    # bare only: --exclusive=user|mcs is getopt's optional argument, refused as a value
    _o("--exclusive"),
    _o("--hold", "-H"),
    _o("--contiguous"),
    _o("--overcommit", "-O"),
    _o("--oversubscribe", "-s"),
    _o("--no-kill", "-k"),
    QUIET,
    VERBOSE,
)

_JOB_DENIED = {
    "--uid": _WHY_UID,
    "--gid": "runs as another group; Slurm allows it to root only",
    "--export": "sets the job's environment (LD_PRELOAD and friends)",
    "--propagate": "copies the submitting process's resource limits into the job",
    "--container": "runs the job inside an arbitrary OCI bundle path",
    "--bb": "burst buffer scripts run with elevated privileges on the nodes",
    "--bbf": "reads a burst buffer specification file",
    "--reboot": "reboots the allocated nodes",
    "--priority": "sets the job's priority (operators only)",
    "--nice": "a negative nice raises priority; Slurm lets operators do it",
    "--mail-user": "sends mail to an arbitrary address",
    "--clusters": _WHY_CLUSTERS,
    "-M": _WHY_CLUSTERS,
}

COMMANDS = {
    "sinfo": CommandSpec(
        options=(
            _o("--all", "-a"),
            _o("--dead", "-d"),
            _o("--exact", "-e"),
            _o("--noheader", "-h"),
            _o("--hide"),
            _o("--long", "-l"),
            _o("--Node", "-N"),
            _o("--responding", "-r"),
            _o("--list-reasons", "-R"),
            _o("--summarize", "-s"),
            _o("--reservation", "-T"),
            _o("--noconvert"),
            _o("--nodes", "-n", "hostlist"),
            _o("--format", "-o", "format"),
            _o("--Format", "-O", "format"),
            _o("--partition", "-p", "names"),
            _o("--sort", "-S", "sort"),
            _o("--states", "-t", "states"),
            VERBOSE,
            JSON_OPT,
        ),
        denied={**_DENY_ITERATE, **_DENY_CLUSTERS},
        json=True,
    ),
    "squeue": CommandSpec(
        options=(
            _o("--all", "-a"),
            _o("--noheader", "-h"),
            _o("--hide"),
            _o("--long", "-l"),
            _o("--array", "-r"),
            _o("--start"),
            _o("--noconvert"),
            _o("--account", "-A", "names"),
            _o("--jobs", "-j", "jobs"),
            _o("--name", "-n", "names"),
            _o("--format", "-o", "format"),
            _o("--Format", "-O", "format"),
            _o("--partition", "-p", "names"),
            _o("--qos", "-q", "names"),
            _o("--reservation", "-R", "name"),
            _o("--steps", "-s", "jobs"),
            _o("--sort", "-S", "sort"),
            _o("--states", "-t", "states"),
            # a read filter: lists those users' jobs, changes nothing
            _o("--user", "-u", "users"),
            _o("--nodelist", "-w", "hostlist"),
            _o("--licenses", "-L", "names"),
            VERBOSE,
            JSON_OPT,
        ),
        denied={**_DENY_ITERATE, **_DENY_CLUSTERS},
        json=True,
    ),
    "sacct": CommandSpec(
        options=(
            _o("--allusers", "-a"),
            _o("--allocations", "-X"),
            _o("--brief", "-b"),
            _o("--duplicates", "-D"),
            _o("--long", "-l"),
            _o("--noheader", "-n"),
            _o("--parsable", "-p"),
            _o("--parsable2", "-P"),
            _o("--noconvert"),
            _o("--accounts", "-A", "names"),
            _o("--endtime", "-E", "time"),
            _o("--starttime", "-S", "time"),
            _o("--jobs", "-j", "jobs"),
            _o("--nodelist", "-N", "hostlist"),
            _o("--format", "-o", "format"),
            _o("--partition", "-r", "names"),
            _o("--state", "-s", "states"),
            # a read filter; sacct also spells it --uid, which the gateway refuses everywhere
            _o("--user", "-u", "users"),
            VERBOSE,
            JSON_OPT,
        ),
        denied={
            "--uid": "spelled -u/--user here; --uid is refused everywhere so it never "
            "has to be read twice",
            "--env-vars": "prints jobs' environments, which hold other users' secrets",
            "--batch-script": "prints other users' batch scripts",
            "-B": "prints other users' batch scripts",
            "--file": "reads an arbitrary file as job accounting data",
            "-f": "reads an arbitrary file as job accounting data",
            **_DENY_CLUSTERS,
        },
        json=True,
    ),
    "sstat": CommandSpec(
        options=(
            _o("--allsteps", "-a"),
            _o("--noheader", "-n"),
            _o("--parsable", "-p"),
            _o("--parsable2", "-P"),
            _o("--pidformat", "-i"),
            _o("--noconvert"),
            _o("--jobs", "-j", "jobs"),
            _o("--format", "-o", "format"),
            VERBOSE,
        ),
    ),
    "scancel": CommandSpec(
        options=(
            _o("--batch", "-b"),
            _o("--full", "-f"),
            _o("--hurry", "-H"),
            _o("--account", "-A", "name"),
            _o("--name", "-n", "name"),
            _o("--partition", "-p", "name"),
            _o("--qos", "-q", "name"),
            _o("--reservation", "-R", "name"),
            _o("--signal", "-s", "signal"),
            _o("--state", "-t", "states"),
            # selects jobs to cancel; Slurm lets only their owner or an operator do it
            _o("--user", "-u", "users"),
            _o("--nodelist", "-w", "hostlist"),
            QUIET,
            VERBOSE,
        ),
        denied={
            "--interactive": "asks for confirmation on stdin; it would hang until the timeout",
            "-i": "asks for confirmation on stdin; it would hang until the timeout",
            "--sibling": "removes sibling jobs of a federation",
            **_DENY_CLUSTERS,
        },
    ),
    "scontrol": CommandSpec(
        options=(
            _o("--details", "-d"),
            _o("--oneliner", "-o"),
            _o("--all", "-a"),
            _o("--future", "-F"),
            _o("--hide"),
            QUIET,
            VERBOSE,
        ),
        denied={
            "--uid": "updates jobs as another user",
            "-u": "updates jobs as another user (-u/--uid)",
            "--cluster": _WHY_CLUSTERS,
            "-M": _WHY_CLUSTERS,
        },
    ),
    "srun": CommandSpec(
        options=(
            *_JOB_RESOURCES,
            _o("--label", "-l"),
            # srun's -u is --unbuffered, a flag; it selects no user
            _o("--unbuffered", "-u"),
            _o("--kill-on-bad-exit", "-K"),
            _o("--exact"),
            _o("--overlap"),
            _o("--disable-status", "-X"),
            _o("--wait", "-W", "int"),
        ),
        denied={
            **_JOB_DENIED,
            "--prolog": "runs a program before the step, on every node",
            "--epilog": "runs a program after the step, on every node",
            "--task-prolog": "runs a program before each task",
            "--task-epilog": "runs a program after each task",
            "--bcast": "copies a file to a path on every allocated node",
            "--bcast-exclude": "goes with --bcast",
            "--send-libs": "copies shared libraries to every allocated node",
            "--no-allocate": "runs on nodes without an allocation (root only)",
            "-Z": "runs on nodes without an allocation (root only)",
            "--jobid": "attaches the step to another allocation",
            "--multi-prog": "reads a file naming the programs to run",
            "--slurmd-debug": "changes slurmd's logging for the step",
            "--pty": "needs a terminal the minion does not have",
        },
        runs_jobs=True,
        permute=False,
    ),
    "sbatch": CommandSpec(
        options=(
            *_JOB_RESOURCES,
            _o("--array", "-a", "array"),
            _o("--wrap", None, "text"),
            _o("--parsable"),
            _o("--requeue"),
            _o("--no-requeue"),
            # sbatch's -W is --wait, a flag (srun's takes seconds)
            _o("--wait", "-W"),
        ),
        denied={
            **_JOB_DENIED,
            "--get-user-env": "loads a user's login environment as root",
            "--export-file": "reads the job's environment from a file",
            "--nodefile": "reads a file of host names",
            "-F": "reads a file of host names",
        },
        runs_jobs=True,
        permute=False,
    ),
}

JSON_COMMANDS = tuple(name for name, spec in COMMANDS.items() if spec.json)

# --- scontrol grammar ----------------------------------------------------------------------

SCONTROL_SHOW = {
    # entity -> rule for its optional ID (None: takes no ID); plurals map to the same word
    "config": "name",
    "daemons": None,
    "federation": None,
    "frontend": "name",
    "hostlist": "hostlist",
    "hostlistsorted": "hostlist",
    "hostnames": "hostlist",
    "job": "job",
    "licenses": "names",
    "node": "hostlist",
    "partition": "name",
    "reservation": "name",
    "slurmd": None,
    "step": "jobs",
    "topology": "name",
}
_SHOW_ALIASES = {
    "nodes": "node",
    "jobs": "job",
    "partitions": "partition",
    "reservations": "reservation",
    "steps": "step",
    "license": "licenses",
}
_SHOW_NEEDS_ID = ("hostlist", "hostlistsorted", "hostnames")

SCONTROL_SUBCOMMANDS = {
    "show": "read-only",
    "ping": "read-only: is slurmctld up",
    "version": "read-only",
    "listpids": "read-only: Slurm processes on this node",
    "hold": "job control; Slurm lets only the owner or an operator",
    "uhold": "job control; Slurm lets only the owner or an operator",
    "release": "job control; Slurm lets only the owner or an operator",
    "requeue": "job control; Slurm lets only the owner or an operator",
    "requeuehold": "job control; Slurm lets only the owner or an operator",
    # operator-only in Slurm; no more power than scancel, which is allowed too
    "suspend": "job control; Slurm lets operators only",
    "resume": "job control; Slurm lets operators only",
    "top": "reorders the user's own pending jobs (Slurm decides if users may)",
    "update": "NodeName=… State=DRAIN|RESUME|UNDRAIN Reason=…, or JobId=… with a few keys",
}

SCONTROL_DENIED = {
    "abort": "kills slurmctld",
    "shutdown": "stops slurm daemons",
    "takeover": "moves control to the backup controller",
    "reconfigure": "makes every daemon re-read slurm.conf (use slurm_controller.reconfigure)",
    "create": "creates partitions or reservations",
    "delete": "deletes partitions or reservations",
    "reboot": "reboots nodes",
    "cancel_reboot": "changes node reboot plans",
    "setdebug": "changes slurmctld logging",
    "setdebugflags": "changes slurmctld logging",
    "schedloglevel": "changes scheduler logging",
    "fsdampeningfactor": "changes fair-share scheduling",
    "token": "mints an auth token (a credential)",
    "write": "writes files (batch scripts, config) as the caller",
    "notify": "writes into other jobs' output",
    "wait_job": "blocks until nodes boot",
}

NODE_STATES = ("DRAIN", "RESUME", "UNDRAIN")  # DOWN kills running jobs; drain lets them finish
NODE_KEYS = {"NodeName": "hostlist", "State": None, "Reason": "text"}
JOB_KEYS = {
    "JobId": "job",
    "TimeLimit": "timelimit",
    "Comment": "text",
    "JobName": "jobname",  # %x in -o/-e/-i paths expands to it
    "Dependency": "dependency",
    "Nice": "int",  # non-negative: a user may lower a job's priority, never raise it
}


# --- checks --------------------------------------------------------------------------------


def _short_repr(token, limit=40):
    text = repr(token)
    return text if len(text) <= limit else text[: limit - 1] + "…'"


def _check_token(command, index, token):
    if not isinstance(token, str):
        raise GatewayError(
            f"{command}: argument {index + 1} is {type(token).__name__} {token!r}, not a string",
            token,
        )
    if len(token) > MAX_ARG_LEN:
        raise GatewayError(
            f"{command}: argument {index + 1} ({_short_repr(token)}, {len(token)} characters) "
            f"is longer than {MAX_ARG_LEN} characters",
            token,
        )
    if token == "":
        raise GatewayError(f"{command}: argument {index + 1} is empty", token)
    for char in token:
        if not char.isprintable():
            raise GatewayError(
                f"{command}: argument {token!r} holds the non-printable character {char!r}; "
                "only printable characters are allowed",
                token,
            )
        if char in SHELL_METACHARACTERS:
            raise GatewayError(
                f"{command}: argument {token!r} holds the shell metacharacter {char!r}; "
                f"none of {' '.join(sorted(SHELL_METACHARACTERS))} are allowed",
                token,
            )


def _check_command(command):
    if not isinstance(command, str) or command not in COMMANDS:
        raise GatewayError(
            f"command {command!r} is not allowed; allowed commands: {', '.join(COMMANDS)}",
            command,
        )
    return COMMANDS[command]


def _uid_of(user):
    return pwd.getpwnam(user).pw_uid


def effective_uid(runas):
    """uid the command will run as: ``runas``'s, or this process's own without it."""
    if runas is None:
        return os.geteuid()
    if not isinstance(runas, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]{0,31}\$?", runas):
        raise GatewayError(f"runas {runas!r} is not a valid user name", runas)
    try:
        return _uid_of(runas)
    except KeyError:
        raise GatewayError(f"runas user {runas!r} does not exist on this minion", runas) from None


def _allowed_options(spec):
    return ", ".join(o.label() for o in spec.options)


def _reject_option(command, spec, token, name):
    if name in spec.denied:
        raise GatewayError(
            f"{command}: option {token!r} is refused: {spec.denied[name]}; "
            f"allowed options: {_allowed_options(spec)}",
            token,
        )
    hint = ""
    if name.startswith("--"):
        known = [o.long for o in spec.options] + [d for d in spec.denied if d.startswith("--")]
        if any(k.startswith(name) for k in known):
            hint = " (abbreviations are not accepted: spell the option out)"
    raise GatewayError(
        f"{command}: unknown option {token!r}{hint}; allowed options: {_allowed_options(spec)}",
        token,
    )


def _check_value(call, option, value, token):
    command = call.command
    problem = value_problem(option.rule, value, call.limits)
    if problem:
        raise GatewayError(
            f"{command}: value {value!r} of {option.label()} (in {token!r}) {problem}; "
            f"{option.label()} takes {RULES[option.rule].describe}",
            token,
        )


def _parse(call, spec, args):
    """getopt_long's reading of ``args``, exact names only: ([(Option, value)], positionals)."""
    command = call.command
    longs, shorts = spec.by_long(), spec.by_short()
    options, positionals = [], []
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if positionals and not spec.permute:
            positionals.append(arg)  # srun/sbatch: the program's own arguments
            continue
        if arg == "--":
            raise GatewayError(
                f"{command}: {arg!r} is not accepted; options end at the program or script "
                "by themselves",
                arg,
            )
        if arg.startswith("--"):
            name, has_value, value = arg.partition("=")
            option = longs.get(name)
            if option is None:
                _reject_option(command, spec, arg, name)
            if option.rule is None:
                if has_value:
                    raise GatewayError(f"{command}: option {name} takes no value ({arg!r})", arg)
                options.append((option, None))
                continue
            shown = arg
            if not has_value:
                if i >= len(args):
                    raise GatewayError(f"{command}: option {arg!r} needs a value", arg)
                value = args[i]
                i += 1
                shown = f"{arg} {value}"
            _check_value(call, option, value, shown)
            options.append((option, value))
            continue
        if arg.startswith("-") and len(arg) > 1:
            pos = 1
            while pos < len(arg):
                short = "-" + arg[pos]
                option = shorts.get(short)
                if option is None:
                    _reject_option(command, spec, arg, short)
                pos += 1
                if option.rule is None:
                    options.append((option, None))
                    continue
                value = arg[pos:]
                shown = arg
                if not value:
                    if i >= len(args):
                        raise GatewayError(f"{command}: option {arg!r} needs a value", arg)
                    value = args[i]
                    i += 1
                    shown = f"{arg} {value}"
                _check_value(call, option, value, shown)
                options.append((option, value))
                break
            continue
        positionals.append(arg)
    return options, positionals


def _emit(option, value):
    return option.long if value is None else f"{option.long}={value}"


# --- positionals per command ---------------------------------------------------------------


@dataclass(frozen=True)
class _Call:
    command: str
    runas: str | None  # as the caller gave it: None means the minion's own user
    limits: Limits


def _no_positionals(call, positionals, options):
    command = call.command
    if positionals:
        raise GatewayError(
            f"{command}: unexpected argument {positionals[0]!r}; {command} takes options only "
            f"(allowed options: {_allowed_options(COMMANDS[command])})",
            positionals[0],
        )
    return []


def _check_rule(call, rule, value, what):
    command = call.command
    problem = value_problem(rule, value, call.limits)
    if problem:
        raise GatewayError(
            f"{command}: {what} {value!r} {problem}; expected {RULES[rule].describe}", value
        )
    return value


def _scancel_positionals(call, positionals, options):
    command = call.command
    for token in positionals:
        _check_rule(call, "jobs", token, "job id")
    for option, value in options:
        if option.long == "--user" and call.runas is not None and value != call.runas:
            # a caller pinned to runas acts for that one person; root with the minion's
            # own identity (no runas) is the admin and may cancel by any users
            raise GatewayError(
                f"{command}: {option.label()} {value!r} is refused with runas {call.runas!r}: "
                f"with runas, scancel cancels only that user's jobs (-u {call.runas} or job "
                "ids); other users' jobs need a call without runas",
                value,
            )
    if not positionals and not options:
        raise GatewayError(f"{command}: give job ids or -u/--user", None)
    if not positionals and not any(o.long == "--user" for o, _ in options):
        raise GatewayError(
            f"{command}: give job ids or -u/--user; filters alone ("
            + ", ".join(o.label() for o, _ in options)
            + ") would cancel every user's matching jobs when run as root",
            " ".join(_emit(o, v) for o, v in options),
        )
    return positionals


def _job_positionals(call, positionals, options):
    command = call.command
    if ":" in positionals:
        raise GatewayError(
            f"{command}: ':' (heterogeneous job separator) is not accepted: "
            f"{command} parses options again after it",
            ":",
        )
    wrap = any(o.long == "--wrap" for o, _ in options)
    if command == "sbatch" and wrap and positionals:
        raise GatewayError(
            f"sbatch: {positionals[0]!r}: a script or its arguments cannot go with --wrap",
            positionals[0],
        )
    if command == "sbatch" and not wrap and not positionals:
        raise GatewayError(
            "sbatch: give --wrap 'COMMAND' or a script path (a script on stdin is not accepted)",
            None,
        )
    if command == "srun" and not positionals:
        raise GatewayError("srun: give the program to run, e.g. srun -N1 hostname", None)
    if positionals:
        program = positionals[0]
        if program.startswith("-") or not re.fullmatch(
            r"[A-Za-z0-9_./+][A-Za-z0-9_./+-]*", program, re.ASCII
        ):
            raise GatewayError(f"{command}: {program!r} is not a program or script name", program)
    named = any(o.long == "--job-name" for o, _ in options)
    for option, value in options:
        patterns = filename_patterns(value) if option.rule in ("path", "reldir") else None
        if not named and "x" in (patterns or ()):
            # the default name (program, script, SBATCH_JOB_NAME in the user's environment)
            # never went through the jobname rule
            raise GatewayError(
                f"{command}: {option.label()} {value!r} uses %x (the job name): give "
                "-J/--job-name too",
                value,
            )
        if option.long == "--wrap" and value.lstrip().startswith("#"):
            raise GatewayError(
                f"sbatch: --wrap value {value!r} starts with '#'; a wrapped command must be "
                "a command, not a directive",
                value,
            )
    return positionals


def _scontrol_show(call, tokens):
    if not tokens:
        raise GatewayError(
            f"scontrol show: give an entity; allowed: {', '.join(SCONTROL_SHOW)}", None
        )
    word = tokens[0].lower()
    entity = _SHOW_ALIASES.get(word, word)
    if entity not in SCONTROL_SHOW:
        raise GatewayError(
            f"scontrol show: entity {tokens[0]!r} is not allowed (abbreviations are not "
            f"accepted); allowed: {', '.join(SCONTROL_SHOW)}",
            tokens[0],
        )
    rule = SCONTROL_SHOW[entity]
    ids = tokens[1:]
    if len(ids) > (0 if rule is None else 1):
        extra = ids[0 if rule is None else 1]
        raise GatewayError(
            f"scontrol show {entity}: unexpected argument {extra!r}; it takes "
            + ("no ID" if rule is None else f"one ID ({RULES[rule].describe})"),
            extra,
        )
    if entity in _SHOW_NEEDS_ID and not ids:
        raise GatewayError(f"scontrol show {entity}: give a hostlist like n[1-4]", None)
    for value in ids:
        # scontrol reads a file for an ID starting with '/'; no rule allows '/'
        _check_rule(call, rule, value, f"show {entity} ID")
    return ["show", entity, *ids]


def _split_pair(token):
    key, has_eq, value = token.partition("=")
    if not has_eq or not key or not value:
        raise GatewayError(
            f"scontrol update: {token!r} is not Key=Value; allowed: NodeName=… State=… "
            "Reason=…, or JobId=… " + " ".join(f"{k}=…" for k in JOB_KEYS if k != "JobId"),
            token,
        )
    return key, value


def _scontrol_update(call, tokens):
    if not tokens:
        raise GatewayError("scontrol update: give NodeName=… or JobId=… first", None)
    first_key, _ = _split_pair(tokens[0])
    if first_key.lower() == "nodename":
        keys, what = NODE_KEYS, "node"
    elif first_key.lower() == "jobid":
        keys, what = JOB_KEYS, "job"
    else:
        raise GatewayError(
            f"scontrol update: {tokens[0]!r} is not allowed; only nodes (NodeName=…) and jobs "
            "(JobId=…) may be updated",
            tokens[0],
        )
    canonical = {k.lower(): k for k in keys}
    seen = {}
    for token in tokens:
        key, value = _split_pair(token)
        name = canonical.get(key.lower())
        if name is None:
            raise GatewayError(
                f"scontrol update: key {token!r} is not allowed for a {what} (keys are matched "
                f"whole); allowed: {', '.join(keys)}",
                token,
            )
        if name in seen:
            raise GatewayError(f"scontrol update: {name} given twice ({token!r})", token)
        if name == "State":
            if value.upper() not in NODE_STATES:
                raise GatewayError(
                    f"scontrol update: {token!r} is not allowed; State may be "
                    f"{', '.join(NODE_STATES)}",
                    token,
                )
            value = value.upper()
        else:
            _check_rule(call, keys[name], value, f"update {name}")
        seen[name] = value
    if what == "node":
        _check_runas_nodes(call, seen["NodeName"])
        if "State" not in seen:
            raise GatewayError(
                f"scontrol update: give State={'|'.join(NODE_STATES)} for the node", tokens[0]
            )
        if seen["State"] == "DRAIN" and "Reason" not in seen:
            # scontrol refuses this too ("You must specify a reason"); say it before running
            raise GatewayError("scontrol update: State=DRAIN needs Reason=…", tokens[0])
    elif len(seen) == 1:
        raise GatewayError(
            "scontrol update: give at least one of "
            + ", ".join(k for k in JOB_KEYS if k != "JobId"),
            tokens[0],
        )
    return ["update", *(f"{k}={v}" for k, v in seen.items())]


def _check_runas_nodes(call, nodes):
    """With runas, an update may change at most ``runas_max_nodes`` nodes, never ALL."""
    if call.runas is None:
        return  # the minion's own user: root, the admin
    cap = call.limits.runas_max_nodes
    # a comma inside brackets splits "n[1,2]" into parts that are never "all" either
    if any(part.lower() == "all" for part in nodes.split(",")):
        count = "every node"
    else:
        count = hostlist.count(nodes)
        if count <= cap:
            return
        count = f"{count} nodes"
    raise GatewayError(
        f"scontrol update: NodeName={nodes!r} ({count}) is refused with runas {call.runas!r}: "
        f"with runas, one update changes at most {cap} nodes (pillar "
        "slurm:cmd:runas_max_nodes), never ALL; an admin call without runas may",
        nodes,
    )


def _scontrol_positionals(call, positionals, options):
    if not positionals:
        raise GatewayError(
            "scontrol: give a subcommand (without one scontrol reads commands from stdin); "
            f"allowed: {', '.join(SCONTROL_SUBCOMMANDS)}",
            None,
        )
    word = positionals[0]
    sub = word.lower()  # scontrol is case-insensitive; we still compare whole words
    rest = positionals[1:]
    if sub not in SCONTROL_SUBCOMMANDS:
        why = SCONTROL_DENIED.get(sub)
        reason = f"is refused: {why}" if why else "is not allowed (abbreviations are not accepted)"
        raise GatewayError(
            f"scontrol: subcommand {word!r} {reason}; allowed: {', '.join(SCONTROL_SUBCOMMANDS)}",
            word,
        )
    if sub == "show":
        return _scontrol_show(call, rest)
    if sub == "update":
        return _scontrol_update(call, rest)
    if sub in ("ping", "version"):
        if rest:
            raise GatewayError(f"scontrol {sub}: unexpected argument {rest[0]!r}", rest[0])
        return [sub]
    if sub == "listpids":
        if len(rest) > 1:
            raise GatewayError(f"scontrol listpids: unexpected argument {rest[1]!r}", rest[1])
        for token in rest:
            _check_rule(call, "jobs", token, "listpids job id")
        return [sub, *rest]
    if not rest:
        raise GatewayError(f"scontrol {sub}: give one or more job ids", None)
    for token in rest:
        _check_rule(call, "jobs", token, f"{sub} job id")
    return [sub, *rest]


_POSITIONALS = {
    "sinfo": _no_positionals,
    "squeue": _no_positionals,
    "sacct": _no_positionals,
    "sstat": _no_positionals,
    "scancel": _scancel_positionals,
    "scontrol": _scontrol_positionals,
    "srun": _job_positionals,
    "sbatch": _job_positionals,
}


# --- public API ----------------------------------------------------------------------------


def build_argv(command, args, runas=None, allow_root=False, json=None, limits=None):
    """
    Validate ``command`` and ``args``; return the argv to execute (options spelled in full).

    ``runas``: user the command will run as (None: this process's user). ``allow_root``:
    let srun/sbatch run jobs as uid 0. ``json``: True adds ``--json`` (only where Slurm
    22.05 has it), False refuses a ``--json`` in ``args``, None leaves ``args`` alone.
    ``limits``: :class:`Limits` (None: the defaults).
    Raises :class:`GatewayError` naming the offending argument and what is allowed.
    """
    spec = _check_command(command)
    if isinstance(args, str):
        raise GatewayError(f"{command}: arguments must be a list, not the string {args!r}", args)
    args = list(args)
    if len(args) > MAX_ARGS:
        raise GatewayError(
            f"{command}: {len(args)} arguments, at most {MAX_ARGS} are allowed", None
        )
    for index, token in enumerate(args):
        _check_token(command, index, token)
    uid = effective_uid(runas)
    if spec.runs_jobs and uid == 0 and not allow_root:
        raise GatewayError(
            f"{command}: the job would run as root ("
            + (f"runas {runas!r} has uid 0" if runas else "no runas: the minion's own user")
            + "); pass runas=USER, or set pillar slurm:cmd:allow_root: true to allow jobs "
            "as root",
            runas,
        )
    call = _Call(command, runas, limits or Limits())
    options, positionals = _parse(call, spec, args)
    has_json = any(o is JSON_OPT for o, _ in options)
    if json is True and not has_json:
        if not spec.json:
            raise GatewayError(
                f"{command}: json=True but {command} has no --json in Slurm 22.05; "
                f"commands with JSON output: {', '.join(JSON_COMMANDS)}",
                command,
            )
        options.append((JSON_OPT, None))
    if json is False and has_json:
        raise GatewayError(f"{command}: json=False contradicts '--json' in the arguments", "--json")
    positionals = _POSITIONALS[command](call, positionals, options)
    return [command, *(_emit(o, v) for o, v in options), *positionals]


def parse_output(command, args, stdout):
    """Parsed JSON when ``args`` (as :func:`build_argv` returned them) ask for ``--json``.

    None otherwise. Raises ``ValueError`` when the output is not JSON.
    """
    spec = COMMANDS.get(command)
    if spec is None or not spec.json or "--json" not in args:
        return None
    return jsonlib.loads(stdout)
