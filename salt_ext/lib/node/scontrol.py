"""Parsing ``scontrol show … -o`` output and naming the cause of an unusable node; the
bounded ``scontrol ping`` both node and controller ask."""

import re
import shlex

from salt_ext.lib.util import command

DEFAULT_SLURM_USER = "slurm"  # SlurmUser: slurmctld sets its own reasons as this user
# a verification job step's memory (MB): small, so it fits beside running jobs
TEST_STEP_MB = 32

# base states in which a node takes no jobs
_BAD_BASE = {"DOWN", "UNKNOWN", "FUTURE", "DRAIN", "FAIL"}
_BAD_FLAGS = {"NOT_RESPONDING", "DRAIN", "FAIL", "POWERED_DOWN", "INVALID_REG"}
# a drain is the admin's decision and survives restarts; a drained node that answers and
# registered valid hardware is up (slurmctld marks a bad registration INVALID_REG)
_UNREGISTERED_BASE = _BAD_BASE - {"DRAIN"}
_UNREGISTERED_FLAGS = _BAD_FLAGS - {"DRAIN"}


def parse_one_line(text):
    """``Key=Value Key=Value …`` (one ``scontrol -o`` record) -> dict.

    Values may contain spaces only in ``Reason=`` which scontrol prints last on a line of
    its own kind; everything from ``Reason=`` to the end of the line is kept whole.
    """
    text = text.strip()
    record = {}
    reason = None
    if " Reason=" in text:
        text, _, reason = text.partition(" Reason=")
    for token in shlex.split(text, posix=False):
        key, sep, value = token.partition("=")
        if sep:
            record[key] = value
    if reason is not None:
        record["Reason"] = reason.strip()
    return record


def node_state(stdout, slurm_user=DEFAULT_SLURM_USER):
    """State of the first node in ``scontrol show node -o`` output."""
    lines = [line for line in stdout.splitlines() if line.strip()]
    if not lines:
        return {
            "state": None,
            "flags": [],
            "reason": None,
            "reason_by": None,
            "usable": False,
            "responding": False,
            "registered": False,
            "drained": False,
        }
    return _state(parse_one_line(lines[0]), slurm_user)


def node_states(stdout, slurm_user=DEFAULT_SLURM_USER):
    """``{NodeName: state}`` for every node in ``scontrol show node -o`` output."""
    states = {}
    for line in stdout.splitlines():
        if line.strip():
            state = _state(parse_one_line(line), slurm_user)
            states[state["name"]] = state
    return states


def _int(value):
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _state(record, slurm_user=DEFAULT_SLURM_USER):
    raw = record.get("State", "")
    parts = raw.split("+")
    base = parts[0].rstrip("*~#!%$@^-")
    flags = parts[1:]
    responding = not raw.split("+")[0].endswith("*") and "NOT_RESPONDING" not in flags
    usable = base not in _BAD_BASE and not (set(flags) & _BAD_FLAGS) and responding
    registered = (
        base not in _UNREGISTERED_BASE and not (set(flags) & _UNREGISTERED_FLAGS) and responding
    )
    return {
        "name": record.get("NodeName"),
        "state": base,
        "raw_state": raw,
        "flags": flags,
        "reason": record.get("Reason"),
        "responding": responding,
        "usable": usable,
        "registered": registered,
        "drained": base == "DRAIN" or "DRAIN" in flags,
        **reason_parts(record.get("Reason"), slurm_user),
        "cpus": _int(record.get("CPUEfctv", record.get("CPUTot"))),
        "cpus_alloc": _int(record.get("CPUAlloc")),
        "memory": _int(record.get("RealMemory")),
        "memory_alloc": _int(record.get("AllocMem")),
    }


# reasons slurmctld (or slurmd) sets by itself, lower case: prefixes of Slurm's own texts
SLURM_REASONS = (
    "not responding",
    "duplicate jobid",
    "kill task failed",
    "batch job complete failure",
    "node unexpectedly rebooted",
    "low realmemory",
    "low socket",
    "low cpu",
    "low tmpdisk",
    "prolog error",
    "epilog error",
    "job credential revoked",
    "launch failed requeued held",
    "no network address",
    "node silently failed",
)
_REASON = re.compile(r"^(?P<text>.*?)\s*\[(?P<user>[^@\]]+)@(?P<time>[^\]]+)\]\s*$")


def reason_parts(reason, slurm_user=DEFAULT_SLURM_USER):
    """Split ``Reason=Kill task failed [slurm@2026-11-28T03:40:00]``: ``{"reason_text",
    "reason_user", "reason_time", "reason_by"}``; ``reason_by`` is ``"slurm"`` for a reason
    Slurm set itself (set by SlurmUser; when SlurmUser is root, or the record names no
    user, one of Slurm's own texts), ``"admin"`` for a person's, None without a reason."""
    if not reason:
        return {"reason_text": None, "reason_user": None, "reason_time": None, "reason_by": None}
    match = _REASON.match(reason)
    text, user, when = (
        (match["text"], match["user"], match["time"]) if match else (reason, None, None)
    )
    if user and slurm_user != "root":
        by_slurm = user == slurm_user
    else:  # the user does not tell (slurmctld runs as root, or no [user@time]): the text does
        by_slurm = text.lower().startswith(SLURM_REASONS)
    return {
        "reason_text": text,
        "reason_user": user,
        "reason_time": when,
        "reason_by": "slurm" if by_slurm else "admin",
    }


def step_room(state, mem_mb):
    """Whether a one-CPU step asking ``mem_mb`` MB fits beside the node's running jobs:
    ``(fits, "2/2 CPUs, 23552/23552 MB allocated")``. Unknown figures count as room."""
    cpus, used = state.get("cpus"), state.get("cpus_alloc") or 0
    memory, mem_used = state.get("memory"), state.get("memory_alloc") or 0
    full_cpus = cpus is not None and cpus - used < 1
    full_memory = memory is not None and memory - mem_used < mem_mb
    text = f"{used}/{cpus} CPUs, {mem_used}/{memory} MB allocated"
    return not (full_cpus or full_memory), text


def ping_answer(output, host):
    """``(ok, text)`` from ``scontrol ping`` run on ``host``: its own slurmctld's line when
    it has one (a backup controller), else the primary's."""
    lines = [line.strip() for line in output.splitlines() if " is " in line]
    mine = [line for line in lines if f" at {host} is " in line] or lines[:1]
    if mine and all(line.endswith("is UP") for line in mine):
        return True, f"answers `scontrol ping` ({mine[0]})"
    return False, f"`scontrol ping`: {'; '.join(mine) or output.strip()[-200:] or 'no output'}"


# seconds a bounded request waits for a daemon's answer (a healthy one answers in ms)
ANSWER_BOUND = 5


def ping(bound=ANSWER_BOUND):
    """``scontrol ping`` from here, bounded: ``{"ok": bool, "output", "timed_out"}``; a
    timeout is an answer (``ok`` False, ``timed_out`` True), never an exception."""
    try:
        proc = command.run(["scontrol", "ping"], timeout=bound, check=False)
    except command.CommandFailed as err:
        timed_out = command.timed_out(err)
        output = f"no answer to `scontrol ping` in {bound} s" if timed_out else str(err)
        return {"ok": False, "output": output, "timed_out": timed_out}
    output = (proc.stdout + proc.stderr).strip()
    return {"ok": "is UP" in proc.stdout, "output": output[-300:], "timed_out": False}


# log fragments that name a cause (lower case); see diagnose()
TELLING = (
    "protocol authentication error",
    "invalid credential",
    "munge decode failed",
    "unable to register",
    "unable to contact slurm controller",
    "connection refused",
    "low realmemory",
    "low socket",
    "not found in slurm.conf",
    "invalid node name",
    "rewound credential",
    "expired credential",
    "zero bytes were transmitted or received",
    "unable to determine this slurmd's nodename",
    "different slurm.conf",
)


def is_telling(line):
    lowered = line.lower()
    return any(fragment in lowered for fragment in TELLING)


def diagnose(evidence_lines, state):
    """Short cause for an unusable node from log/command evidence."""
    lines = [line.lower() for line in evidence_lines]
    text = "\n".join(lines)
    if "protocol authentication error" in text or "invalid credential" in text:
        return "munge key mismatch with the controller (authentication failed)"
    # slurmctld closes the connection without a reply when it cannot decode the request's
    # munge credential; with the port reachable that means the keys differ
    if "zero bytes were transmitted or received" in text and "connection refused" not in text:
        return (
            "munge key mismatch with the controller (slurmctld drops this node's requests: "
            "Zero Bytes were transmitted or received)"
        )
    # judged line by line: evidence mixes slurmd and munged logs (labelled "munged: …"), and
    # slurmd's "slurm stream socket …: Connection refused" is about the controller, not munged
    if any("munge" in ln and ("socket" in ln or "connection refused" in ln) for ln in lines):
        return "munged is not running"
    if "unable to contact slurm controller" in text or "connection refused" in text:
        return "slurmd cannot reach the controller"
    if "low realmemory" in text or "low socket" in text or "low cpu" in text:
        return "node hardware is below what slurm.conf declares"
    if "not found in slurm.conf" in text or "invalid node name" in text:
        return "node missing from slurm.conf (hostname does not match a NodeName)"
    if state and state.get("reason"):
        return f"node {state.get('state')}: {state['reason']}"
    if state and not state.get("responding", True):
        return "controller gets no answer from slurmd"
    return "node did not register with the controller in time"
