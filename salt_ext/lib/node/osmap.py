"""Per-OS facts in one table: packages, config dir, service names, default service manager.

The state tree and the execution modules read this table only (there is no map.jinja), so
an OS is supported in exactly one place. Sources: each distribution's own packages (Debian
bookworm/Ubuntu slurm-wlm, EPEL slurm, OpenHPC ``ohpc-slurm-*`` meta-packages, Alpine
community ``slurm``/``munge``, openSUSE ``slurm``/``slurm-node``).
"""

ROLES = ("node", "controller", "dbd")
SERVICE_MANAGERS = ("auto", "systemd", "openrc", "sysvinit", "direct")


class UnsupportedOS(ValueError):
    """No row of the table matches the machine's grains."""


# the OS's service (unit / init script) names of the daemons we manage
DEFAULT_SERVICES = {
    "munge": "munge",
    "slurmd": "slurmd",
    "slurmctld": "slurmctld",
    "slurmdbd": "slurmdbd",
    "mariadb": "mariadb",
    "slurmrestd": "slurmrestd",
}

# os_family -> facts. "packages" per role; "flavours" replace packages by pillar choice.
FAMILIES = {
    "Debian": {
        "packages": {
            "node": ["munge", "slurmd", "slurm-client"],
            "controller": ["munge", "slurmctld", "slurm-client"],
            # accounting_storage/mysql lives in slurm-wlm-mysql-plugin (slurmdbd depends on
            # it; named so that a purge names it too); slurm-client: sacctmgr
            "dbd": ["munge", "slurmdbd", "slurm-wlm-mysql-plugin", "slurm-client"],
        },
        "db_packages": ["mariadb-server"],
        # slurm:restd: slurmrestd does not pull in auth/jwt (slurm-wlm-jwt-plugin: it needs
        # libjwt); its OpenAPI plugins (openapi/v0.0.38, dbv0.0.38) are in
        # slurm-wlm-basic-plugins, which every daemon package depends on
        "restd_packages": ["slurmrestd"],
        "jwt_packages": ["slurm-wlm-jwt-plugin"],
        "conf_dir": "/etc/slurm",
        "init": "systemd",
        "services": DEFAULT_SERVICES,
        "nologin": "/usr/sbin/nologin",
    },
    "RedHat": {
        "packages": {
            "node": ["munge", "munge-libs", "slurm", "slurm-slurmd"],
            "controller": ["munge", "munge-libs", "slurm", "slurm-slurmctld"],
            "dbd": ["munge", "munge-libs", "slurm", "slurm-slurmdbd"],
        },
        "flavours": {
            "ohpc": {
                "node": ["munge", "ohpc-slurm-client"],
                "controller": ["munge", "ohpc-slurm-server"],
                "dbd": ["munge", "ohpc-slurm-server"],
            },
        },
        "db_packages": ["mariadb-server"],
        # EPEL builds auth/jwt into the slurm package
        "restd_packages": ["slurm-slurmrestd"],
        "jwt_packages": [],
        "conf_dir": "/etc/slurm",
        "init": "systemd",
        "services": DEFAULT_SERVICES,
        "nologin": "/sbin/nologin",
    },
    "Alpine": {
        "packages": {
            "node": ["munge", "slurm"],
            "controller": ["munge", "slurm"],
            "dbd": ["munge", "slurm"],
        },
        "db_packages": ["mariadb"],
        "restd_packages": ["slurm"],
        "jwt_packages": [],
        "conf_dir": "/etc/slurm",
        "init": "openrc",
        "services": {**DEFAULT_SERVICES, "munge": "munged"},
        "nologin": "/sbin/nologin",
        # Salt 3008 moved apk support out of core into this extension.
        "needs_pkg_extension": "saltext-apk",
    },
    "Suse": {
        "packages": {
            "node": ["munge", "slurm-node"],
            "controller": ["munge", "slurm"],
            "dbd": ["munge", "slurm-slurmdbd"],
        },
        "db_packages": ["mariadb"],
        "restd_packages": ["slurm-rest"],
        "jwt_packages": [],
        "conf_dir": "/etc/slurm",
        "init": "systemd",
        "services": DEFAULT_SERVICES,
        "nologin": "/sbin/nologin",
    },
}

# Debian/Ubuntu packages before slurm-wlm 20.11 kept the configuration in /etc/slurm-llnl.
LEGACY_CONF_DIR = "/etc/slurm-llnl"


def _version_tuple(value):
    parts = []
    for piece in str(value or "").split("."):
        if not piece.isdigit():
            break
        parts.append(int(piece))
    return tuple(parts)


def conf_dir_for(grains, family_facts):
    if grains.get("os") == "Ubuntu" and (0,) < _version_tuple(grains.get("osrelease")) <= (
        20,
        4,
    ):
        return LEGACY_CONF_DIR
    return family_facts["conf_dir"]


def facts(grains, role="node", flavour="distro"):
    """Facts for the machine described by ``grains``; :class:`UnsupportedOS` if none match."""
    family = grains.get("os_family")
    row = FAMILIES.get(family)
    if row is None:
        raise UnsupportedOS(
            f"unsupported OS: os_family={family!r} os={grains.get('os')!r} "
            f"osrelease={grains.get('osrelease')!r}; supported os_family values: "
            f"{', '.join(FAMILIES)}"
        )
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, got {role!r}")
    packages = row["packages"][role]
    if flavour not in (None, "", "distro"):
        flavours = row.get("flavours", {})
        if flavour not in flavours:
            known = ", ".join(["distro", *flavours]) or "distro"
            raise ValueError(f"flavour {flavour!r} not available on {family} (known: {known})")
        packages = flavours[flavour][role]
    return {
        "os_family": family,
        "packages": list(packages),
        "conf_dir": conf_dir_for(grains, row),
        "init": row["init"],
        "services": dict(row["services"]),
        "nologin": row["nologin"],
        "needs_pkg_extension": row.get("needs_pkg_extension"),
        "db_packages": list(row.get("db_packages", ())),
        "restd_packages": list(row.get("restd_packages", ())),
        "jwt_packages": list(row.get("jwt_packages", ())),
    }


def pick_service_manager(
    requested, init_grain, systemd_booted, pid1_name, family_init, openrc_booted=False
):
    """Resolve ``auto`` to the manager that can really start daemons on this machine.

    ``systemd`` needs a booted systemd (/run/systemd/system), ``openrc``/``sysvinit`` an
    init process as PID 1; anything else (containers, sandboxes: PID 1 is the container's
    entry point) gets ``direct``, where the extension starts the daemons itself.

    ``openrc_booted`` (``/run/openrc`` exists): OpenRC ran the boot. Debian's OpenRC keeps
    sysvinit's ``init`` as PID 1, and Salt's ``init`` grain then says ``sysvinit``; the
    runtime directory tells them apart.
    """
    if requested != "auto":
        return requested
    if systemd_booted:
        return "systemd"
    if pid1_name in ("init", "openrc-init") and openrc_booted:
        return "openrc"
    if pid1_name in ("init", "openrc-init") and init_grain in ("openrc", "sysvinit"):
        return init_grain
    if pid1_name == "init" and family_init == "openrc":
        return "openrc"
    return "direct"
