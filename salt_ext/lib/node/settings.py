"""The ``slurm:`` pillar: defaults, validation and the per-machine plan derived from it.

Everything the state tree needs is computed here before any state runs, so bad pillar fails
at render time (nothing changed) with the key that was wrong and what was expected.
``pillar/slurm.sls.example`` documents the same keys.
"""

import copy
import os
import re

from salt_ext.lib.accounting import pillar as accounting_pillar
from salt_ext.lib.conf import cluster_files, generate, model
from salt_ext.lib.node import dbd, healthcheck, munge, osmap, restd

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
    # slurm.absent: purge_packages also purges the packages; purge_database also removes
    # MariaDB's data directory on the dbd host (local storage; every database in it)
    "absent": {"purge_packages": False, "purge_database": False},
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
    # job accounting: slurmdbd on the dbd host, its database local (MariaDB) or external
    "accounting": {
        "enabled": False,  # the one switch
        "host": None,  # the dbd host's minion id (= hostname); None: slurm:controller
        "address": None,  # AccountingStorageHost in slurm.conf; None: the dbd host's name
        "port": 6819,  # DbdPort / AccountingStoragePort
        "storage": {
            "type": "local",  # local: MariaDB on the dbd host; external: host/port below
            "host": None,  # external only: the database server
            "port": 3306,
            "database": "slurm_acct_db",
            "user": "slurm",
            "password": None,  # required when enabled; never shown, logged or in argv
        },
        # accounts / users / QOS as code (state slurm_accounting.managed); checked by
        # salt_ext.lib.accounting.pillar, which names the key of every problem
        "purge": False,
        "qos": {},
        "accounts": {},
        "users": {},
    },
    # the autopilot (salt_ext/lib/ops/autopilot.py): beacons on every machine report a
    # stopped daemon or a key/conf that differs from the master's, the master's reactor
    # runs slurm.heal, which fixes the smallest thing, with per-node backoff
    "autopilot": {
        "enabled": False,  # the one switch (slurm.node / slurm.controller add the beacon)
        "interval": 5,  # seconds between two beacon checks on a machine (1-300)
        "max_tries": 3,  # fixes per node within `window`; one more and the node is drained
        "window": 600,  # seconds
    },
    # node health checks run by Slurm's HealthCheckProgram and the autopilot's beacon
    # (salt_ext/lib/node/healthcheck.py: keys, check kinds, the drain / resume rule)
    "health": healthcheck.DEFAULTS,
    # slurmrestd on the controller with JWT (salt_ext.lib.node.restd holds its threat model)
    "restd": {
        "enabled": False,  # the one switch
        "port": 6820,  # TCP port (all addresses) beside the unix socket /run/slurmrestd/
        "user": "slurmrestd",  # its own unprivileged account (not root, not SlurmUser)
    },
}


TARGET_TYPES = ("glob", "pcre", "list", "grain", "grain_pcre", "pillar", "nodegroup", "compound")


class SettingsError(ValueError):
    """Bad pillar: the message names the ``slurm:`` key and what it should be."""


class ConfPathError(SettingsError):
    """The slurm.conf the master serves puts a directory where none can be made safely."""


DAEMONS_BY_ROLE = {
    "node": ("munge", "slurmd"),
    "controller": ("munge", "slurmctld"),
    # mariadb only with local storage (see :func:`plan`)
    "dbd": ("munge", "mariadb", "slurmdbd"),
}
# every daemon of either role, Slurm's before munge (they need it): how slurm.absent stops
STOP_ORDER = ("slurmd", "slurmctld", "munge")
PASSWORD_KEY = "slurm:accounting:storage:password"  # noqa: S105 - the key, not a value
# what MariaDB names and slurmdbd.conf values may hold here: no quoting anywhere
_DB_NAME = re.compile(r"[A-Za-z0-9_]{1,64}")
_DB_USER = re.compile(r"[A-Za-z0-9_]{1,32}")
_HOST = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,252})?|\[?[0-9A-Fa-f:.]{2,45}\]?")
# slurmdbd.conf: one line per key, '#' starts a comment, whitespace ends an unquoted value
_PASSWORD = re.compile(r"[!-~]{8,128}")
# the accounts' homes when we create them (Debian's packages use the same)
HOMES = {"munge": munge.STATE_DIR, "slurm": "/var/lib/slurm"}

# The directories each role's Slurm daemon needs, read from the served slurm.conf:
# (key, Slurm 22.05's default when the key is absent (slurm.conf(5)), what the value names,
# owner, mode). A log file key's default is none (the daemon logs to syslog): no directory.
SLURM_DIRS = {
    "node": (
        ("SlurmdLogFile", None, "file", "slurm", "0755"),
        # slurmd runs as root; job scripts land here
        ("SlurmdSpoolDir", "/var/spool/slurmd", "dir", "root", "0755"),
    ),
    "controller": (
        ("SlurmctldLogFile", None, "file", "slurm", "0755"),
        # slurmctld runs as SlurmUser: its state (job and node records) is its own
        ("StateSaveLocation", "/var/spool", "dir", "slurm", "0700"),
    ),
    "dbd": (),  # slurmdbd's come from slurmdbd.conf, which we render: dbd_dirs
}
# Directories the OS owns: never created, chowned or chmodded for Slurm. A log file there
# is fine (its directory is left as it is); a spool or state directory is not (it would have
# to be handed to the daemon's user).
SYSTEM_DIRS = frozenset(
    "/bin /boot /dev /etc /home /lib /lib32 /lib64 /media /mnt /opt /proc /root /run /sbin "
    "/srv /sys /tmp /usr /usr/bin /usr/lib /usr/local /usr/sbin /usr/share /var /var/cache "
    "/var/lib /var/local /var/lock /var/log /var/mail /var/opt /var/run /var/spool /var/tmp".split()
)
# kernel and device file systems: nothing of Slurm's belongs there
FORBIDDEN_ROOTS = ("/proc", "/sys", "/dev")
MAX_PATH = 1024
# what a path in a slurm.conf may hold here: it ends up in the state tree as a name and an ID
_SAFE_PATH = re.compile(r"/[A-Za-z0-9._+@,~=/-]*")


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
    _check_autopilot(cfg["autopilot"])
    try:
        cfg["health"] = healthcheck.validate(cfg["health"])
    except healthcheck.HealthError as err:
        raise SettingsError(str(err)) from None
    _check_accounting(cfg)
    _check_restd(cfg)
    for key in ("purge_packages", "purge_database"):
        if not isinstance(cfg["absent"].get(key, False), bool):
            raise SettingsError(
                f"slurm:absent:{key}: expected true or false, got {cfg['absent'][key]!r}"
            )
    try:
        generate.check_settings(cfg)
    except generate.ConfGenError as err:
        raise SettingsError(str(err)) from None
    try:
        accounting_pillar.validate(cfg["accounting"])
    except accounting_pillar.PillarError as err:
        raise SettingsError(str(err)) from None
    # accounts / users / QOS as code on this cluster (the controller's SLS applies
    # slurm_accounting.managed; render_conf sets AccountingStorageEnforce)
    acct = cfg["accounting"]
    acct["managed"] = bool(acct["enabled"] and accounting_pillar.manages(acct))
    return cfg


AUTOPILOT_BOUNDS = {"interval": (1, 300), "max_tries": (1, 20), "window": (10, 86400)}


def _check_autopilot(auto):
    if not isinstance(auto.get("enabled"), bool):
        raise SettingsError(
            f"slurm:autopilot:enabled: expected true or false, got {auto.get('enabled')!r}"
        )
    for key, (low, high) in AUTOPILOT_BOUNDS.items():
        value = auto.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise SettingsError(
                f"slurm:autopilot:{key}: expected a whole number from {low} to {high}, "
                f"got {value!r}"
            )


def _port(value, key):
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise SettingsError(f"{key}: expected a port number (1-65535), got {value!r}")
    return value


def _check_accounting(cfg):
    """``slurm:accounting:``; the password is checked for presence and form only and never
    quoted in a message (:mod:`salt_ext.lib.node.dbd` holds its threat model)."""
    acct = cfg["accounting"]
    if not isinstance(acct.get("enabled"), bool):
        raise SettingsError(
            f"slurm:accounting:enabled: expected true or false, got {acct.get('enabled')!r}"
        )
    if not isinstance(acct.get("storage"), dict):
        raise SettingsError("slurm:accounting:storage: expected a mapping")
    host = acct.get("host") or cfg["controller"]
    if not isinstance(host, str) or not _HOST.fullmatch(host):
        raise SettingsError(
            f"slurm:accounting:host: expected the dbd host's minion id, got {acct['host']!r}"
        )
    acct["host"] = host
    address = acct.get("address") or host
    if not isinstance(address, str) or not _HOST.fullmatch(address):
        raise SettingsError(
            f"slurm:accounting:address: expected a host name or address, got {acct['address']!r}"
        )
    acct["address"] = address
    acct["port"] = _port(acct.get("port"), "slurm:accounting:port")
    storage = acct["storage"]
    if storage.get("type") not in ("local", "external"):
        raise SettingsError(
            "slurm:accounting:storage:type: expected 'local' (MariaDB on the dbd host) or "
            f"'external', got {storage.get('type')!r}"
        )
    if storage["type"] == "external":
        db_host = storage.get("host")
        if not isinstance(db_host, str) or not _HOST.fullmatch(db_host):
            raise SettingsError(
                "slurm:accounting:storage:host: required with storage type 'external' (the "
                f"database server's name or address), got {db_host!r}"
            )
    else:
        storage["host"] = None
    storage["port"] = _port(storage.get("port"), "slurm:accounting:storage:port")
    for key, pattern, what in (
        ("database", _DB_NAME, "1-64 letters, digits or '_'"),
        ("user", _DB_USER, "1-32 letters, digits or '_'"),
    ):
        value = storage.get(key)
        if not isinstance(value, str) or not pattern.fullmatch(value):
            raise SettingsError(f"slurm:accounting:storage:{key}: expected {what}, got {value!r}")
    password = storage.get("password")
    if password not in (None, "") and (
        not isinstance(password, str)
        or not _PASSWORD.fullmatch(password)
        or any(c in password for c in "#\"'\\")
    ):
        # the value itself is never part of the message
        raise SettingsError(
            f"{PASSWORD_KEY}: expected 8-128 printable ASCII characters without spaces, "
            "quotes, backslashes or '#' (slurmdbd.conf cannot hold others), got a "
            f"{type(password).__name__} that is not (value not shown)"
        )
    # the password leaves the validated settings: nothing derived from them carries it
    storage["password"] = None if password in (None, "") else "<set>"


# Slurm's own ports: slurmrestd may not take one
_SLURM_PORTS = {6817: "SlurmctldPort", 6818: "SlurmdPort"}


def _check_restd(cfg):
    """``slurm:restd:``: the switch, the TCP port, the daemon's own user."""
    restd_cfg = cfg["restd"]
    if not isinstance(restd_cfg.get("enabled"), bool):
        raise SettingsError(
            f"slurm:restd:enabled: expected true or false, got {restd_cfg.get('enabled')!r}"
        )
    port = _port(restd_cfg.get("port"), "slurm:restd:port")
    taken = dict(_SLURM_PORTS)
    if cfg["accounting"]["enabled"]:
        taken[cfg["accounting"]["port"]] = "slurm:accounting:port"
    if port in taken:
        raise SettingsError(f"slurm:restd:port: {port} is {taken[port]}'s; pick another port")
    try:
        user = restd.check_user(restd_cfg.get("user"), "slurm:restd:user")
    except restd.RestdError as err:
        raise SettingsError(str(err)) from None
    overrides = {str(k).lower(): v for k, v in (cfg["conf"].get("overrides") or {}).items()}
    slurm_user = str(overrides.get("slurmuser") or "slurm")
    if user in ("root", slurm_user, "munge"):
        raise SettingsError(
            f"slurm:restd:user: {user!r} is root, SlurmUser or munge; slurmrestd refuses root "
            "and SlurmUser (and their groups): give it an account of its own, e.g. slurmrestd"
        )


def restd_plan(cfg, minion_id=None, conf_dir=restd.DEFAULT_CONF_DIR):
    """The REST part of the plan: ``enabled``, ``port``, ``user``, ``is_host`` (slurmrestd
    runs on the controller), ``jwt_key`` (the key's path, None when off), ``socket``,
    ``env_file``. The key and the environment file are beside slurm.conf, in the machine's
    ``conf_dir`` (:func:`conf_dir`)."""
    restd_cfg = cfg["restd"]
    on = restd_cfg["enabled"]
    env_file = restd.env_path(conf_dir)
    return {
        "enabled": on,
        "port": restd_cfg["port"],
        "user": restd_cfg["user"],
        "is_host": bool(on and minion_id and minion_id == cfg["controller"]),
        "jwt_key": restd.key_path(conf_dir) if on else None,
        "socket": restd.SOCKET,
        "env_file": env_file,
        # what slurm.absent removes on the controller besides the key (ours, not Debian's)
        "files": [env_file, restd.DROPIN, restd.INIT_SCRIPT],
    }


def conf_dir(grains):
    """This machine's Slurm conf dir by its grains (Ubuntu <= 20.04: /etc/slurm-llnl)."""
    try:
        return osmap.facts(grains)["conf_dir"]
    except osmap.UnsupportedOS as err:
        raise SettingsError(str(err)) from None


def require_password(cfg, where="the dbd host"):
    """:class:`SettingsError` naming the key when accounting is on and the validated
    ``cfg`` (of the dbd host's pillar) holds no DB password. Only the dbd host needs it:
    give it in a pillar only that host receives; the other machines' pillar may lack it."""
    acct = cfg["accounting"]
    if acct["enabled"] and acct["storage"]["password"] is None:
        raise SettingsError(
            f"{PASSWORD_KEY}: required when slurm:accounting:enabled is true, in the pillar "
            f"of {where} ({acct['host']}): the database password slurmdbd uses"
        )


def accounting(cfg, minion_id=None):
    """The accounting part of the plan (no password): ``enabled``, ``host`` (the dbd
    host's minion id), ``address``, ``port``, ``storage`` (type, host, port, database,
    user), ``local_db``, ``managed`` (accounts / users / QOS as code: the controller
    applies ``slurm_accounting.managed``) and ``is_dbd_host`` (``minion_id`` is the dbd
    host)."""
    acct = cfg["accounting"]
    storage = {k: v for k, v in acct["storage"].items() if k != "password"}
    return {
        "enabled": acct["enabled"],
        "host": acct["host"],
        "address": acct["address"],
        "port": acct["port"],
        "storage": storage,
        "local_db": storage["type"] == "local",
        "managed": acct["managed"],
        "is_dbd_host": bool(acct["enabled"] and minion_id and minion_id == acct["host"]),
    }


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
    acct = accounting(cfg, grains.get("id"))
    acct["slurmdbd_conf"] = f"{conf_dir}/slurmdbd.conf"
    rest = restd_plan(cfg, grains.get("id"), conf_dir)
    # slurmdbd.conf gets AuthAltTypes/AuthAltParameters from it (dbd.render_conf)
    acct["jwt_key"] = rest["jwt_key"]
    if acct["is_dbd_host"] or role == "dbd":
        require_password(cfg, "this machine")
    # the dbd role's parts on this machine: slurm.dbd, or slurm.controller on a controller
    # that is the dbd host (it runs them before slurmctld: DB -> slurmdbd -> slurmctld)
    roles = ["dbd", role] if role == "controller" and acct["is_dbd_host"] else [role]
    # slurm.absent on the dbd host stops slurmdbd (and the local MariaDB) too, after the
    # daemons that talk to it and before munge
    stop_order = list(STOP_ORDER)
    if acct["is_dbd_host"]:
        dbd_daemons = ["slurmdbd", *(["mariadb"] if acct["local_db"] else [])]
        stop_order = stop_order[:-1] + dbd_daemons + stop_order[-1:]
    if rest["is_host"]:
        # slurmrestd talks to slurmctld and slurmdbd: it goes first
        stop_order = ["slurmrestd", *stop_order]
    daemons, packages = [], []
    for one in roles:
        wanted = DAEMONS_BY_ROLE[one]
        if one == "dbd" and not acct["local_db"]:
            wanted = tuple(d for d in wanted if d != "mariadb")
        if one == "controller" and rest["is_host"]:
            wanted = (*wanted, "slurmrestd")
        daemons += [d for d in wanted if d not in daemons]
        facts = os_facts if one == role else osmap.facts(grains, one, cfg["flavour"])
        pkgs = facts["packages"] + (
            facts["db_packages"] if one == "dbd" and acct["local_db"] else []
        )
        if rest["enabled"]:
            # every daemon reading AuthAltTypes=auth/jwt loads the plugin
            pkgs = pkgs + facts["jwt_packages"]
            if one == "controller":
                pkgs = pkgs + facts["restd_packages"]
        packages += [p for p in pkgs if p not in packages]
    return {
        "daemons": daemons,
        "roles": roles,
        "accounting": acct,
        "restd": rest,
        "stop_order": stop_order,
        "conf_files": list(cluster_files.CONF_FILES),
        "homes": dict(HOMES),
        "role": role,
        "cluster_name": cfg["cluster_name"],
        "controller": cfg["controller"],
        "service_manager": manager,
        "packages": cfg["packages"] or packages,
        "conf_dir": conf_dir,
        "slurm_conf": f"{conf_dir}/slurm.conf",
        "services": os_facts["services"],
        "users": cfg["users"],
        # accounts we create get a home and shell; existing ones keep theirs
        "create_accounts": [a for a in cfg["users"] if not (machine.get("accounts") or {}).get(a)],
        "nologin": os_facts["nologin"],
        "munge_key_path": munge.DEFAULT_KEY_PATH,
        "munge_key_source": (
            cluster_files.salt_url(cluster_files.MUNGE_KEY)
            if munge_key["source"] == "salt"
            else f"pillar:{munge_key['pillar_key']}"
        ),
        "files_prefix": cluster_files.FILES_PREFIX,
        "verify": cfg["verify"],
        "autopilot": cfg["autopilot"],
        "health": cfg["health"],
        "health_config": healthcheck.CONFIG_PATH,
        "purge_packages": bool(cfg["absent"].get("purge_packages")),
        # MariaDB's data directory, removed by slurm.absent only on the dbd host with local
        # storage and slurm:absent:purge_database
        "purge_database_dir": (
            dbd.MARIADB_DATADIR
            if acct["is_dbd_host"] and acct["local_db"] and cfg["absent"].get("purge_database")
            else None
        ),
    }


def machine_plan(pillar_slurm, grains, role, machine, served_conf):
    """:func:`plan` plus what the cluster's slurm.conf decides for this machine.

    ``served_conf`` is the text of the slurm.conf the master serves, or None when it serves
    none yet. Adds ``conf_on_master`` (bool) and ``dirs``: every directory this role needs,
    ``[{"path", "user", "group", "mode"}]``: munge's (key, state, log), the conf dir, then
    the Slurm daemon's log directory and spool (slurmd) or state (slurmctld) directory as
    the served slurm.conf sets them, Slurm's defaults where it does not.
    """
    result = plan(pillar_slurm, grains, role, machine)
    result["conf_on_master"] = served_conf is not None
    result["dirs"] = dirs(role, result["conf_dir"], served_conf, grains)
    if "dbd" in result["roles"]:
        known = {entry["path"] for entry in result["dirs"]}
        result["dirs"] += [d for d in dbd_dirs(result["accounting"]) if d["path"] not in known]
    return result


def dbd_dirs(acct):
    """The dbd role's directories: slurmdbd's log directory and, with local storage,
    MariaDB's data and log directories (its run directory is the service manager's)."""
    wanted = [_entry(os.path.dirname(dbd.SLURMDBD_LOG), "slurm", "0755")]
    if acct["local_db"]:
        wanted += [
            _entry(dbd.MARIADB_DATADIR, dbd.MARIADB_USER, "0755"),
            _entry(dbd.MARIADB_LOG_DIR, dbd.MARIADB_USER, "0750"),
        ]
    return wanted


def _entry(path, owner, mode):
    return {"path": path, "user": owner, "group": owner, "mode": mode}


def dirs(role, conf_dir, served_conf, grains):
    """The directories of :func:`machine_plan` (see there); :class:`ConfPathError` when the
    served slurm.conf names a path that cannot be made safely."""
    wanted = [
        _entry(munge.KEY_DIR, "munge", "0700"),
        _entry(munge.STATE_DIR, "munge", "0711"),
        _entry(munge.LOG_DIR, "munge", "0700"),
        _entry(conf_dir, "root", "0755"),
    ]
    fixed = {entry["path"] for entry in wanted}
    values = model.values(served_conf) if served_conf is not None else {}
    slurm = {}
    for key, default, kind, owner, mode in SLURM_DIRS[role]:
        value = values.get(key.lower())
        if value is None or value == "":
            if default is None:
                continue
            value = default
        path = _conf_path(key, _substitute(key, value, grains))
        if kind == "file":
            path = os.path.dirname(path)
            if path in SYSTEM_DIRS or path == "/":
                continue  # the OS's directory, as it is: slurmd (root) writes there
        elif path in SYSTEM_DIRS:
            if served_conf is None:
                continue  # no conf yet: the state run stops at "the master has no slurm.conf"
            how = "is Slurm's default for it" if value == default else "is set in it"
            raise ConfPathError(
                f"the slurm.conf the master serves: {key}={path} {how}; that is a system "
                f"directory, which saltext-slurm will not hand to {owner} (mode {mode}): set "
                f"{key} to a directory of its own (slurm:conf:overrides), e.g. "
                f"{key}={_SUGGESTED[key]}, and render again"
            )
        if path in fixed:
            raise ConfPathError(
                f"the slurm.conf the master serves: {key}={path} is munge's or the conf "
                f"directory; give {key} a directory of its own"
            )
        # a log file in the spool/state directory: the directory is the daemon's
        slurm[path] = _entry(path, owner, mode)
    return wanted + list(slurm.values())


_SUGGESTED = {"SlurmdSpoolDir": "/var/spool/slurmd", "StateSaveLocation": "/var/spool/slurmctld"}


def _substitute(key, value, grains):
    """slurmd's ``%h`` (its hostname) and ``%n`` (its NodeName), first occurrence each, as
    slurm.conf(5) says for SlurmdSpoolDir and SlurmdLogFile."""
    if not key.startswith("Slurmd"):
        return value
    host = str(grains.get("host") or "")
    value = value.replace("%n", host, 1)
    return value.replace("%h", str(grains.get("nodename") or host), 1)


def _conf_path(key, value):
    """``value`` as an absolute, normalised path, or :class:`ConfPathError` saying why not."""

    def refuse(why):
        shown = value if len(value) <= 80 else value[:80] + "..."
        return ConfPathError(f"the slurm.conf the master serves: {key}={shown!r}: {why}")

    if len(value) > MAX_PATH:
        raise refuse(f"longer than {MAX_PATH} characters")
    if not value.startswith("/"):
        raise refuse("not an absolute path")
    if not _SAFE_PATH.fullmatch(value):
        raise refuse("only letters, digits, '/', '.', '_', '-', '+', '@', ',', '~' and '=' here")
    parts = [part for part in value.split("/") if part]
    if any(part in (".", "..") for part in parts):
        raise refuse("'.' and '..' are not allowed")
    path = "/" + "/".join(parts)
    if path == "/":
        raise refuse("the root directory")
    if any(path == root or path.startswith(root + "/") for root in FORBIDDEN_ROOTS):
        raise refuse("a kernel or device file system")
    return path
