"""
The autopilot's node-side signal: a beacon that fires ``salt/beacon/<id>/slurm/fault``
when one of this machine's Slurm daemons is not running or its munge key / slurm.conf
differs from what the master serves. The event carries cause names only (never a hash,
a path's content or a key); what fires when is :mod:`salt_ext.lib.node.signals`.

``slurm.node`` and ``slurm.controller`` configure it (``beacon.present``, saved in the
minion's ``minion.d/beacons.conf``) when pillar ``slurm:autopilot:enabled`` is true, from
the machine's plan (``slurm_node.settings``), and remove it otherwise:

.. code-block:: yaml

    beacons:
      slurm:
        - interval: 5                     # seconds between checks (Salt's own key)
        - disable_during_state_run: True  # a state run restarts daemons on purpose
        - role: node                      # node or controller
        - repeat: 5                       # spacing of repeated events (= interval)
        - daemons: [munge, slurmd]
        - manager: direct
        - slurm_conf: /etc/slurm/slurm.conf
        - munge_key: /etc/munge/munge.key
        - munge_key_source: salt://slurm_files/munge.key   # pillar:… is not compared
        - conf_source: salt://slurm_files/slurm.conf
        - health_config: /etc/slurm/saltext-health.json    # compute nodes only

With ``health_config`` (a compute node), the node's health checks
(:mod:`salt_ext.lib.node.healthcheck`, check only: the drain is Slurm's program's or the
master's) run at every check: a failing one is the cause ``health:<check name>``; none
failing while the node remembers its own health drain is ``health checks pass again``.
"""

import logging
import time

from salt_ext.lib.node import healthcheck, signals
from salt_ext.lib.node import munge as munge_lib
from salt_ext.lib.util import fsutil

__virtualname__ = "slurm"

log = logging.getLogger(__name__)

ROLES = ("node", "controller")
DAEMONS = ("munge", "slurmd", "slurmctld")
_MEMORY = "saltext_slurm.beacon"


def __virtual__():
    return __virtualname__


def _config(config):
    if isinstance(config, dict):
        return dict(config)
    merged = {}
    for item in config or []:
        if isinstance(item, dict):
            merged.update(item)
    return merged


def validate(config):
    """Check the beacon's configuration (Salt calls this before :func:`beacon`)."""
    if not isinstance(config, (list, dict)):
        return False, "slurm beacon: configuration must be a list of one-key mappings"
    cfg = _config(config)
    if cfg.get("role", "node") not in ROLES:
        return False, f"slurm beacon: role must be one of {', '.join(ROLES)}"
    daemons = cfg.get("daemons", ["munge", "slurmd"])
    if not isinstance(daemons, list) or not set(daemons) <= set(DAEMONS):
        return False, f"slurm beacon: daemons must be a list of {', '.join(DAEMONS)}"
    repeat = cfg.get("repeat", 5)
    if isinstance(repeat, bool) or not isinstance(repeat, (int, float)) or not 1 <= repeat <= 300:
        return False, "slurm beacon: repeat must be a number of seconds from 1 to 300"
    for key in ("slurm_conf", "munge_key", "health_config"):
        if key in cfg and not (isinstance(cfg[key], str) and cfg[key].startswith("/")):
            return False, f"slurm beacon: {key} must be an absolute path"
    return True, "valid"


def _served_hash(url):
    """The master's SHA-256 of ``url`` (a hash request, no download); None if unknown."""
    if not isinstance(url, str) or not url.startswith("salt://"):
        return None
    try:
        info = __salt__["cp.hash_file"](url)
    except Exception as err:  # noqa: BLE001 - a silent master judges nothing
        log.debug("slurm beacon: no hash of %s from the master: %s", url, err)
        return None
    if not info or info.get("hash_type") != "sha256":
        return None
    return f"sha256:{info['hsum']}"


def _running(cfg):
    running = {}
    for daemon in cfg.get("daemons", ["munge", "slurmd"]):
        try:
            running[daemon] = bool(
                __salt__["slurm_node.daemon_running"](
                    daemon, cfg.get("manager"), cfg.get("slurm_conf")
                )
            )
        except Exception as err:  # noqa: BLE001 - unknown is no fault
            log.debug("slurm beacon: daemon_running %s: %s", daemon, err)
    return running


def _health(cfg):
    """``(failed check names, own health drain remembered)`` or None without checks."""
    path = cfg.get("health_config")
    if not path:
        return None
    try:
        out = healthcheck.run(path, do_apply=False)
    except (healthcheck.HealthError, OSError) as err:
        log.warning("slurm beacon: health checks: %s", err)
        return None
    if out["node"] is None and out["record"] is None:
        return None
    return out["failed"], out["record"] is not None


def beacon(config):
    """One check: ``[{"tag": "fault", "causes": [...], "role": ...}]`` or ``[]``."""
    cfg = _config(config)
    key_path = cfg.get("munge_key", munge_lib.DEFAULT_KEY_PATH)
    try:
        local_key = munge_lib.key_hash(key_path)
    except (FileNotFoundError, PermissionError):
        local_key = None
    conf_path = cfg.get("slurm_conf", "/etc/slurm/slurm.conf")
    conf_hash = fsutil.sha256_file(conf_path)
    found = signals.faults(
        _running(cfg),
        (local_key, _served_hash(cfg.get("munge_key_source"))),
        (f"sha256:{conf_hash}" if conf_hash else None, _served_hash(cfg.get("conf_source"))),
        _health(cfg),
    )
    memory = __context__.setdefault(_MEMORY, {})
    if signals.due(memory, found, time.monotonic(), float(cfg.get("repeat", 5))):
        log.info("slurm beacon: %s", ", ".join(found))
        return [signals.event(found, cfg.get("role", "node"))]
    return []
