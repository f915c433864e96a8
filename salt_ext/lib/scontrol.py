"""Parsing ``scontrol show … -o`` output and naming the cause of an unusable node."""

import shlex

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


def node_state(stdout):
    """State of the first node in ``scontrol show node -o`` output."""
    lines = [line for line in stdout.splitlines() if line.strip()]
    if not lines:
        return {
            "state": None,
            "flags": [],
            "reason": None,
            "usable": False,
            "responding": False,
            "registered": False,
            "drained": False,
        }
    return _state(parse_one_line(lines[0]))


def node_states(stdout):
    """``{NodeName: state}`` for every node in ``scontrol show node -o`` output."""
    states = {}
    for line in stdout.splitlines():
        if line.strip():
            state = _state(parse_one_line(line))
            states[state["name"]] = state
    return states


def _state(record):
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
    }


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
