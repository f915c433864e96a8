import pytest

from salt_ext.lib.node import osmap


def test_facts_debian_node():
    facts = osmap.facts({"os_family": "Debian", "os": "Debian", "osrelease": "12"}, role="node")
    assert facts["packages"] == ["munge", "slurmd", "slurm-client"]
    assert facts["conf_dir"] == "/etc/slurm"
    assert facts["init"] == "systemd"
    assert facts["services"]["munge"] == "munge"
    assert facts["needs_pkg_extension"] is None


def test_facts_debian_controller():
    facts = osmap.facts({"os_family": "Debian", "os": "Debian"}, role="controller")
    assert facts["packages"] == ["munge", "slurmctld", "slurm-client"]


@pytest.mark.parametrize(
    ("osrelease", "conf_dir"),
    [
        ("18.04", "/etc/slurm-llnl"),
        ("20.04", "/etc/slurm-llnl"),
        ("22.04", "/etc/slurm"),
        ("24.04", "/etc/slurm"),
    ],
)
def test_facts_ubuntu_conf_dir_by_release(osrelease, conf_dir):
    grains = {"os_family": "Debian", "os": "Ubuntu", "osrelease": osrelease}
    assert osmap.facts(grains)["conf_dir"] == conf_dir


def test_facts_ubuntu_without_release_uses_current_conf_dir():
    assert osmap.facts({"os_family": "Debian", "os": "Ubuntu"})["conf_dir"] == "/etc/slurm"


@pytest.mark.parametrize(
    ("role", "packages"),
    [
        ("node", ["munge", "munge-libs", "slurm", "slurm-slurmd"]),
        ("controller", ["munge", "munge-libs", "slurm", "slurm-slurmctld"]),
    ],
)
def test_facts_redhat_distro_packages(role, packages):
    grains = {"os_family": "RedHat", "os": "Rocky", "osrelease": "9.4"}
    facts = osmap.facts(grains, role=role)
    assert facts["packages"] == packages
    assert facts["nologin"] == "/sbin/nologin"


@pytest.mark.parametrize(
    ("role", "packages"),
    [
        ("node", ["munge", "ohpc-slurm-client"]),
        ("controller", ["munge", "ohpc-slurm-server"]),
    ],
)
def test_facts_redhat_ohpc_packages(role, packages):
    grains = {"os_family": "RedHat", "os": "Rocky", "osrelease": "9.4"}
    assert osmap.facts(grains, role=role, flavour="ohpc")["packages"] == packages


def test_facts_unknown_flavour_lists_known_ones():
    with pytest.raises(ValueError, match=r"'ohpc' not available on Debian \(known: distro\)"):
        osmap.facts({"os_family": "Debian"}, flavour="ohpc")


@pytest.mark.parametrize(
    ("role", "packages"),
    [("node", ["munge", "slurm-node"]), ("controller", ["munge", "slurm"])],
)
def test_facts_suse_packages(role, packages):
    grains = {"os_family": "Suse", "os": "openSUSE Leap", "osrelease": "15.6"}
    facts = osmap.facts(grains, role=role)
    assert facts["packages"] == packages
    assert facts["init"] == "systemd"


def test_facts_alpine_uses_munged_service_openrc_and_needs_saltext_apk():
    facts = osmap.facts({"os_family": "Alpine", "os": "Alpine", "osrelease": "3.20.3"})
    assert facts["services"] == {
        "munge": "munged",
        "slurmd": "slurmd",
        "slurmctld": "slurmctld",
        "slurmdbd": "slurmdbd",
        "mariadb": "mariadb",
        "slurmrestd": "slurmrestd",
    }
    assert facts["init"] == "openrc"
    assert facts["needs_pkg_extension"] == "saltext-apk"


def test_facts_returns_copies_not_the_table():
    facts = osmap.facts({"os_family": "Debian"})
    facts["packages"].append("extra")
    facts["services"]["munge"] = "changed"
    again = osmap.facts({"os_family": "Debian"})
    assert "extra" not in again["packages"]
    assert again["services"]["munge"] == "munge"


def test_facts_unsupported_os_names_grains_and_supported_families():
    grains = {"os_family": "Arch", "os": "Arch", "osrelease": "rolling"}
    with pytest.raises(osmap.UnsupportedOS) as info:
        osmap.facts(grains)
    message = str(info.value)
    assert "os_family='Arch'" in message
    assert "Debian, RedHat, Alpine, Suse" in message


def test_facts_unknown_role_is_rejected():
    with pytest.raises(ValueError, match="role must be one of"):
        osmap.facts({"os_family": "Debian"}, role="login")


@pytest.mark.parametrize(
    ("requested", "init_grain", "systemd_booted", "pid1", "family_init", "expected"),
    [
        # an explicit choice wins over everything the machine says
        ("direct", "systemd", True, "systemd", "systemd", "direct"),
        ("openrc", "systemd", True, "systemd", "systemd", "openrc"),
        ("systemd", None, False, "bash", "openrc", "systemd"),
        # a booted systemd
        ("auto", "systemd", True, "systemd", "systemd", "systemd"),
        # an init process as PID 1
        ("auto", "openrc", False, "init", "openrc", "openrc"),
        ("auto", "openrc", False, "openrc-init", "openrc", "openrc"),
        ("auto", "sysvinit", False, "init", "systemd", "sysvinit"),
        ("auto", None, False, "init", "openrc", "openrc"),
        # containers and sandboxes: PID 1 is the entry point, whatever the init grain says
        ("auto", "systemd", False, "process_api", "systemd", "direct"),
        ("auto", "systemd", False, "bash", "systemd", "direct"),
        ("auto", "openrc", False, "sleep", "openrc", "direct"),
        ("auto", "systemd", False, "systemd", "systemd", "direct"),
        ("auto", None, False, None, "systemd", "direct"),
    ],
)
def test_pick_service_manager(requested, init_grain, systemd_booted, pid1, family_init, expected):
    chosen = osmap.pick_service_manager(requested, init_grain, systemd_booted, pid1, family_init)
    assert chosen == expected


@pytest.mark.parametrize(
    ("init_grain", "pid1", "openrc_booted", "family_init", "expected"),
    [
        # Debian booted by OpenRC: PID 1 is sysvinit's init, the grain says sysvinit
        ("sysvinit", "init", True, "systemd", "openrc"),
        ("openrc", "openrc-init", True, "openrc", "openrc"),
        # plain sysvinit: no /run/openrc
        ("sysvinit", "init", False, "systemd", "sysvinit"),
        # /run/openrc without an init as PID 1 (a container's leftover) means nothing
        ("sysvinit", "bash", True, "systemd", "direct"),
        (None, "process_api", True, "systemd", "direct"),
    ],
)
def test_pick_service_manager_detects_openrc_by_its_run_dir(
    init_grain, pid1, openrc_booted, family_init, expected
):
    chosen = osmap.pick_service_manager(
        "auto", init_grain, False, pid1, family_init, openrc_booted=openrc_booted
    )
    assert chosen == expected


def test_pick_service_manager_systemd_and_explicit_choices_win_over_openrc_dir():
    assert osmap.pick_service_manager("auto", "systemd", True, "systemd", "systemd", True) == (
        "systemd"
    )
    assert osmap.pick_service_manager("sysvinit", "sysvinit", False, "init", "x", True) == (
        "sysvinit"
    )
