"""
What the exec modules share: this machine's runtime facts and its plan from pillar and
grains (:mod:`salt_ext.lib.node.settings`). Not a loader module (the loader skips names
that start with ``_``); the modules pass their loader dunders in.
"""

import grp
import os
import pwd

from salt.exceptions import CommandExecutionError

from salt_ext.lib.node import settings as settings_lib


def account(name):
    """``(uid, gid)`` of the account ``name`` (its own group when there is one), or None."""
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        return None
    try:
        gid = grp.getgrnam(name).gr_gid
    except KeyError:
        gid = entry.pw_gid
    return (entry.pw_uid, gid)


def _pid1_name():
    try:
        with open("/proc/1/comm") as handle:
            return handle.read().strip()
    except OSError:
        return None


def machine(grains, salt):
    """The runtime facts the plan needs besides pillar and grains."""
    return {
        "init_grain": grains.get("init"),
        "systemd_booted": os.path.isdir("/run/systemd/system"),
        "openrc_booted": os.path.isdir("/run/openrc"),
        "pid1_name": _pid1_name(),
        "accounts": {name: account(name) for name in ("munge", "slurm")},
        "pkg_install_available": "pkg.install" in salt,
    }


def plan(pillar, grains, role, facts):
    """The pillar's part of the plan for ``role`` (no file server request): cheap enough
    for every call. Bad pillar raises naming the key."""
    try:
        return settings_lib.plan(pillar.get("slurm"), grains, role, facts)
    except settings_lib.SettingsError as err:
        raise CommandExecutionError(f"bad slurm pillar: {err}") from err
