"""What the ``slurm`` beacon (``salt_ext/beacons/slurm.py``) reports, and when.

A machine's faults the autopilot acts on, judged from cheap local facts only: whether each
of the role's daemons runs (``/proc``, as ``slurm_node.daemon_running``) and whether the
munge key and slurm.conf hash like the files the master serves (the master's file server
answers a hash; the files themselves are never fetched for the check). The beacon fires
one event carrying the names of the faults, never a hash, a path's content or a key.

When: at once when the set of faults changes, then again every ``interval`` seconds for
:data:`REPEATS` more checks while it persists (the master's fix may have failed, or been
deferred while another operation held the cluster lock), then with doubling spacing up to
:data:`MAX_SPACING` seconds. A machine with a lasting fault (the autopilot gave up on it)
thus costs the master one event every few minutes, not one per interval.
"""

import re

DAEMON_DOWN = {
    "munge": "munged not running",
    "slurmd": "slurmd not running",
    "slurmctld": "slurmctld not running",
}
HEALTH_PREFIX = "health:"  # "health:<check name>": a health check fails on this node
HEALTH_PASSES = "health checks pass again"  # the health drain this node made can go
KEY_DIFFERS = "munge key differs from the master's"
CONF_DIFFERS = "slurm.conf differs from the master's"
# every cause an event may carry, in the order they are reported (most fundamental first)
CAUSES = (*DAEMON_DOWN.values(), KEY_DIFFERS, CONF_DIFFERS, HEALTH_PASSES)
_CHECK_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,39}")  # healthcheck's check names
EVENT_TAG = "fault"

REPEATS = 5


def is_cause(name):
    """One of :data:`CAUSES`, or ``health:<check name>``."""
    if name in CAUSES:
        return True
    return name.startswith(HEALTH_PREFIX) and bool(
        _CHECK_NAME.fullmatch(name[len(HEALTH_PREFIX) :])
    )


def is_health(name):
    return name == HEALTH_PASSES or name.startswith(HEALTH_PREFIX)


MAX_SPACING = 300


def faults(running, key_hashes=(None, None), conf_hashes=(None, None), health=None):
    """Cause names, in :data:`CAUSES` order.

    ``running``: ``{daemon: bool}`` for the role's daemons (munge, slurmd or slurmctld);
    ``key_hashes`` / ``conf_hashes``: ``(local, served)``, each ``"sha256:…"`` or None. A
    served hash of None (the master does not answer, or the key comes from pillar) judges
    nothing; a local one of None with a served one means the file is missing: it differs.
    ``health``: ``(failed check names, a health drain is remembered)`` or None: each
    failed check is ``health:<name>``; none failing while the node remembers its own
    health drain is :data:`HEALTH_PASSES` (the autopilot's cue to resume it).
    """
    found = [DAEMON_DOWN[d] for d in DAEMON_DOWN if d in running and running[d] is False]
    local, served = key_hashes
    if served and local != served:
        found.append(KEY_DIFFERS)
    local, served = conf_hashes
    if served and local != served:
        found.append(CONF_DIFFERS)
    if health is not None:
        failed, drained = health
        found.extend(f"{HEALTH_PREFIX}{name}" for name in failed)
        if drained and not failed:
            found.append(HEALTH_PASSES)
    return found


def due(memory, found, now, interval):
    """Whether to fire for ``found`` now; ``memory`` (a dict the beacon keeps between
    calls, e.g. in ``__context__``) is updated. No faults: nothing fires, memory resets."""
    if not found:
        memory.clear()
        return False
    key = list(found)
    if memory.get("faults") != key:
        memory.update(faults=key, fired=now, repeats=0)
        return True
    repeats = memory.get("repeats", 0)
    spacing = interval if repeats < REPEATS else interval * 2 ** (repeats - REPEATS + 1)
    if now - memory.get("fired", 0) < min(spacing, MAX_SPACING) - 0.5:
        return False
    memory.update(fired=now, repeats=repeats + 1)
    return True


def event(found, role):
    """The beacon's event data (Salt adds the minion id): cause names and the role only."""
    return {"tag": EVENT_TAG, "causes": [c for c in found if is_cause(c)], "role": role}
