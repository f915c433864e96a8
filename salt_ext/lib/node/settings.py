"""The ``slurm:`` pillar: defaults, validation and the per-machine plan derived from it.

Everything the state tree needs is computed here before any state runs, so bad pillar fails
at render time (nothing changed) with the key that was wrong and what was expected.
``pillar/slurm.sls.example`` documents the same keys.
"""

import copy

from salt_ext.lib.conf import cluster_files, generate
from salt_ext.lib.node import osmap

DEFAULTS = {
    "cluster_name": "cluster",
    "controller": None,  # required: the controller's hostname (= its NodeName / minion id)
    "service_manager": "auto",
    "flavour": "distro",  # RedHat family: "ohpc" installs OpenHPC's *-ohpc packages
    "packages": None,  # overrides the OS table's package list for this role
    # gid defaults to the uid (set it only when the group's id must differ)
    "users": {
        "munge": {"uid": 1108},
        "slurm": {"uid": 1109},
    },
    "munge_key": {
        "source": "salt",  # "salt": salt://slurm_files/munge.key; "pillar": see pillar_key
        "pillar_key": "slurm_munge_key",  # pillar path holding the key (base64)
    },
    "verify": {"enabled": True, "timeout": 60},
    "absent": {"purge_packages": False},
    # slurm.render_conf: whose hardware (slurm_node.hardware in the Salt mine) makes NodeName lines
    "node_target": "*",
    "node_target_type": "glob",
    "conf": {
        "base": None,  # salt:// URL or master path of a slurm.conf to start from
        "overrides": {},  # slurm.conf Key: value, applied last (null removes the key)
        "extra_keys": [],  # keys newer Slurm versions know that 22.05's table lacks
        "memory_reserve": "2%",  # subtracted from slurmd's RealMemory (or MiB as a number)
        "memory_round_mb": 256,  # RealMemory rounded down to a multiple of this
        "memory_tolerance": "3%",  # nodes of one model this far below the largest share a line
        "history": 5,  # previous rendered versions kept for slurm.rollback_conf
    },
    "partitions": None,  # list of {name, nodes, groups, default, options}; None: one "main"
    "node_groups": {},  # name -> {nodes, features, weight, options}
    "cgroup": None,  # cgroup.conf Key: value over the defaults
}


TARGET_TYPES = ("glob", "pcre", "list", "grain", "grain_pcre", "pillar", "nodegroup", "compound")


class SettingsError(ValueError):
    """Bad pillar: the message names the ``slurm:`` key and what it should be."""


def _merge(base, override, path="slurm"):
    if override is None:
        return copy.deepcopy(base)
    if not isinstance(override, dict):
        raise SettingsError(f"{path}: expected a mapping, got {type(override).__name__}")
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(base.get(key), dict):
            merged[key] = _merge(base[key], value, f"{path}:{key}")
        else:
            merged[key] = value
    return merged


def _int_id(value, key):
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise SettingsError(f"{key}: expected a number (0-4294967294), got {value!r}")
    try:
        number = int(value)
    except ValueError:
        raise SettingsError(f"{key}: expected a number (0-4294967294), got {value!r}") from None
    if not 0 <= number < 4294967295:
        raise SettingsError(f"{key}: expected a number (0-4294967294), got {value!r}")
    return number


def _positive(value, key):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise SettingsError(f"{key}: expected a positive number of seconds, got {value!r}")
    return value


def validate(pillar_slurm):
    """Merge ``slurm:`` pillar over the defaults and check every key we read."""
    cfg = _merge(DEFAULTS, pillar_slurm)
    controller = cfg["controller"]
    if not controller or not isinstance(controller, str):
        raise SettingsError(
            "slurm:controller: required, the controller's hostname (e.g. 'ctl'); "
            f"got {controller!r}"
        )
    if cfg["service_manager"] not in osmap.SERVICE_MANAGERS:
        raise SettingsError(
            f"slurm:service_manager: expected one of {', '.join(osmap.SERVICE_MANAGERS)}, "
            f"got {cfg['service_manager']!r}"
        )
    for account in ("munge", "slurm"):
        ids = cfg["users"].get(account)
        if not isinstance(ids, dict):
            raise SettingsError(f"slurm:users:{account}: expected a mapping with uid and gid")
        ids["uid"] = _int_id(ids.get("uid"), f"slurm:users:{account}:uid")
        ids["gid"] = _int_id(ids.get("gid", ids["uid"]), f"slurm:users:{account}:gid")
    source = cfg["munge_key"].get("source")
    if source not in ("salt", "pillar"):
        raise SettingsError(f"slurm:munge_key:source: expected 'salt' or 'pillar', got {source!r}")
    packages = cfg["packages"]
    if packages is not None and (
        not isinstance(packages, list) or not all(isinstance(p, str) and p for p in packages)
    ):
        raise SettingsError(f"slurm:packages: expected a list of package names, got {packages!r}")
    if not isinstance(cfg["verify"].get("enabled"), bool):
        raise SettingsError(
            f"slurm:verify:enabled: expected true or false, got {cfg['verify'].get('enabled')!r}"
        )
    cfg["verify"]["timeout"] = _positive(cfg["verify"].get("timeout"), "slurm:verify:timeout")
    if cfg["node_target_type"] not in TARGET_TYPES:
        raise SettingsError(
            f"slurm:node_target_type: expected one of {', '.join(TARGET_TYPES)}, "
            f"got {cfg['node_target_type']!r}"
        )
    try:
        generate.check_settings(cfg)
    except generate.ConfGenError as err:
        raise SettingsError(str(err)) from None
    return cfg


def plan(pillar_slurm, grains, role, machine):
    """Everything the SLS for ``role`` needs, for the machine described by ``grains``.

    ``machine`` holds runtime facts the pillar cannot know: ``init_grain``,
    ``systemd_booted``, ``openrc_booted``, ``pid1_name``, ``accounts`` (name -> (uid, gid)
    or None) and ``pkg_install_available``.
    """
    cfg = validate(pillar_slurm)
    try:
        os_facts = osmap.facts(grains, role=role, flavour=cfg["flavour"])
    except osmap.UnsupportedOS as err:
        raise SettingsError(str(err)) from None
    except ValueError as err:
        raise SettingsError(f"slurm:flavour: {err}") from None
    if os_facts["needs_pkg_extension"] and not machine.get("pkg_install_available"):
        raise SettingsError(
            f"{grains.get('os')} needs the {os_facts['needs_pkg_extension']} Salt extension "
            "for package management on Salt 3008 (no pkg module is loaded): "
            f"pip install {os_facts['needs_pkg_extension']} on the minion, then restart it"
        )
    for account, ids in cfg["users"].items():
        existing = (machine.get("accounts") or {}).get(account)
        if existing and tuple(existing) != (ids["uid"], ids["gid"]):
            raise SettingsError(
                f"slurm:users:{account}: pillar wants uid/gid {ids['uid']}/{ids['gid']} but "
                f"account '{account}' exists here as {existing[0]}/{existing[1]}; changing it "
                "under running daemons and owned files is not safe to do automatically. "
                "Either set the pillar to the existing IDs on every node, or stop munge/slurm, "
                "usermod/groupmod the account and chown its files, then apply again"
            )
    manager = osmap.pick_service_manager(
        cfg["service_manager"],
        machine.get("init_grain"),
        machine.get("systemd_booted"),
        machine.get("pid1_name"),
        os_facts["init"],
        bool(machine.get("openrc_booted")),
    )
    conf_dir = os_facts["conf_dir"]
    munge_key = cfg["munge_key"]
    return {
        "role": role,
        "cluster_name": cfg["cluster_name"],
        "controller": cfg["controller"],
        "service_manager": manager,
        "packages": cfg["packages"] or os_facts["packages"],
        "conf_dir": conf_dir,
        "slurm_conf": f"{conf_dir}/slurm.conf",
        "services": os_facts["services"],
        "users": cfg["users"],
        # accounts we create get a home and shell; existing ones keep theirs
        "create_accounts": [a for a in cfg["users"] if not (machine.get("accounts") or {}).get(a)],
        "nologin": os_facts["nologin"],
        "munge_key_path": "/etc/munge/munge.key",
        "munge_key_source": (
            cluster_files.salt_url(cluster_files.MUNGE_KEY)
            if munge_key["source"] == "salt"
            else f"pillar:{munge_key['pillar_key']}"
        ),
        "files_prefix": cluster_files.FILES_PREFIX,
        "verify": cfg["verify"],
        "purge_packages": bool(cfg["absent"].get("purge_packages")),
    }
