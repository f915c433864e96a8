"""
Node health checks on this machine (pillar ``slurm:health:checks``): run them, and apply
the drain / resume rule of ``saltext-slurm-healthcheck`` (Slurm's HealthCheckProgram).
The checks and the rule live in :mod:`salt_ext.lib.node.healthcheck`.
"""

import os
import sys
import sysconfig

from salt.exceptions import CommandExecutionError

from salt_ext.lib.node import healthcheck
from salt_ext.lib.util import command

__virtualname__ = "slurm_health"


def __virtual__():
    return __virtualname__


def run(apply=False, config=None):
    """
    Run this node's health checks.

    apply
        Drain the node when a check fails, resume it when the program's own drain is no
        longer needed (as Slurm's HealthCheckProgram does). Default: check only.
    config
        The checks file (default ``/etc/slurm/saltext-health.json``).

    CLI Example:

    .. code-block:: bash

        salt 'n*' slurm_health.run
        salt n1 slurm_health.run apply=True
    """
    try:
        return healthcheck.run(config or healthcheck.CONFIG_PATH, do_apply=bool(apply))
    except (healthcheck.HealthError, command.CommandFailed, OSError) as err:
        raise CommandExecutionError(f"health checks: {err}") from err


def program():
    """
    The path of the installed ``saltext-slurm-healthcheck`` beside this minion's Python,
    or None.

    CLI Example:

    .. code-block:: bash

        salt n1 slurm_health.program
    """
    for directory in (os.path.dirname(sys.executable), sysconfig.get_path("scripts")):
        path = os.path.join(directory, healthcheck.PROGRAM)
        if os.access(path, os.X_OK):
            return path
    return None
