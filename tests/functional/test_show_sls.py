"""``state.show_sls`` of the real SLS tree through a real Salt loader, per OS grains.

No daemons: a masterless minion config (``file_client: local``) serves states/ as
salt://slurm and the pillar from a temp dir; grains are replaced by each OS row's.
"""

import json

import pytest
import salt.config
import salt.loader

from tests.testbed.bed import REPO

ROWS = {
    "debian12": (
        {"os": "Debian", "os_family": "Debian", "osrelease": "12", "init": "systemd"},
        ["munge", "slurmd", "slurm-client"],
        "/etc/slurm",
    ),
    "ubuntu2004": (
        {"os": "Ubuntu", "os_family": "Debian", "osrelease": "20.04", "init": "systemd"},
        ["munge", "slurmd", "slurm-client"],
        "/etc/slurm-llnl",
    ),
    "ubuntu2204": (
        {"os": "Ubuntu", "os_family": "Debian", "osrelease": "22.04", "init": "systemd"},
        ["munge", "slurmd", "slurm-client"],
        "/etc/slurm",
    ),
    "rocky8": (
        {"os": "Rocky", "os_family": "RedHat", "osrelease": "8.9", "init": "systemd"},
        ["munge", "munge-libs", "slurm", "slurm-slurmd"],
        "/etc/slurm",
    ),
    "rocky9": (
        {"os": "Rocky", "os_family": "RedHat", "osrelease": "9.3", "init": "systemd"},
        ["munge", "munge-libs", "slurm", "slurm-slurmd"],
        "/etc/slurm",
    ),
    "sles15": (
        {"os": "SUSE", "os_family": "Suse", "osrelease": "15.5", "init": "systemd"},
        ["munge", "slurm-node"],
        "/etc/slurm",
    ),
}


def _opts(tmp_path, grains, pillar):
    file_root = tmp_path / "states"
    file_root.mkdir()
    (file_root / "slurm").symlink_to(REPO / "states")
    pillar_root = tmp_path / "pillar"
    pillar_root.mkdir()
    (pillar_root / "top.sls").write_text(json.dumps({"base": {"*": ["slurm"]}}))
    (pillar_root / "slurm.sls").write_text(json.dumps({"slurm": pillar}))
    opts = salt.config.minion_config(str(tmp_path / "minion"))
    opts.update(
        {
            "file_client": "local",
            "cachedir": str(tmp_path / "cache"),
            "file_roots": {"base": [str(file_root)]},
            "pillar_roots": {"base": [str(pillar_root)]},
            "id": "node1",
        }
    )
    opts["grains"] = {**salt.loader.grains(opts), "host": "node1", **grains}
    return opts


def show_sls(tmp_path, grains, sls="slurm.node", pillar=None):
    opts = _opts(tmp_path, grains, pillar or {"controller": "ctl"})
    mods = salt.loader.minion_mods(opts)
    return mods["state.show_sls"](sls)


def _arg(chunk, state, key):
    for item in chunk[state]:
        if isinstance(item, dict) and key in item:
            return item[key]
    raise KeyError(key)


@pytest.mark.parametrize("row", sorted(ROWS))
def test_node_sls_per_os(tmp_path, row):
    grains, packages, conf_dir = ROWS[row]
    high = show_sls(tmp_path, grains)
    assert isinstance(high, dict), high
    assert _arg(high["slurm-packages"], "pkg", "pkgs") == packages
    assert _arg(high["slurm-conf-slurm.conf"], "file", "name") == f"{conf_dir}/slurm.conf"
    # no init runs here (PID 1 is not an init system), so auto must pick `direct`
    assert _arg(high["slurm-slurmd"], "slurm_node", "manager") == "direct"
    assert _arg(high["slurm-munge-key"], "slurm_node", "source") == ("salt://slurm_files/munge.key")
    # the direct manager has no boot: no boot states, the sandbox output stays as it was
    assert not [sid for sid in high if sid.endswith("-boot")]


def test_explicit_service_manager_is_used(tmp_path):
    grains = ROWS["rocky9"][0]
    high = show_sls(tmp_path, grains, pillar={"controller": "ctl", "service_manager": "systemd"})
    assert _arg(high["slurm-slurmd"], "slurm_node", "manager") == "systemd"


@pytest.mark.parametrize("manager", ["systemd", "sysvinit", "openrc"])
def test_node_sls_enables_daemons_at_boot_in_their_own_states(tmp_path, manager):
    high = show_sls(
        tmp_path, ROWS["debian12"][0], pillar={"controller": "ctl", "service_manager": manager}
    )
    for sid, daemon in (("slurm-munged-boot", "munge"), ("slurm-slurmd-boot", "slurmd")):
        assert "daemon_enabled" in high[sid]["slurm_node"], high[sid]
        assert _arg(high[sid], "slurm_node", "name") == daemon
        assert _arg(high[sid], "slurm_node", "manager") == manager
        assert _arg(high[sid], "slurm_node", "require") == [{"pkg": "slurm-packages"}]
    assert "slurm-slurmctld-boot" not in high


def test_controller_sls_enables_slurmctld_at_boot(tmp_path):
    high = show_sls(
        tmp_path,
        ROWS["debian12"][0],
        sls="slurm.controller",
        pillar={"controller": "ctl", "service_manager": "systemd"},
    )
    assert _arg(high["slurm-slurmctld-boot"], "slurm_node", "name") == "slurmctld"
    assert "slurm-munged-boot" in high and "slurm-slurmd-boot" not in high


def test_absent_sls_stops_disables_and_purges_both_roles_packages(tmp_path):
    pillar = {
        "controller": "ctl",
        "service_manager": "systemd",
        "absent": {"purge_packages": True},
    }
    high = show_sls(tmp_path, ROWS["debian12"][0], sls="slurm.absent", pillar=pillar)
    for daemon in ("slurmd", "slurmctld", "munge"):
        assert "daemon_dead" in high[f"slurm-absent-{daemon}"]["slurm_node"]
    purge = high["slurm-absent-packages"]
    assert _arg(purge, "pkg", "pkgs") == ["slurmd", "slurm-client", "slurmctld"]
    # purging munge would delete its account (cluster UID): removed only
    assert "removed" in high["slurm-absent-munge-package"]["pkg"]
    assert _arg(purge, "pkg", "require") == [
        {"slurm_node": "slurm-absent-munge"},
        {"slurm_node": "slurm-absent-slurmd"},
        {"slurm_node": "slurm-absent-slurmctld"},
    ]


def test_absent_sls_keeps_packages_by_default(tmp_path):
    high = show_sls(tmp_path, ROWS["debian12"][0], sls="slurm.absent")
    assert "slurm-absent-packages" not in high
    assert "slurm-absent-slurmd" in high


def test_ohpc_flavour_on_rocky(tmp_path):
    grains = ROWS["rocky9"][0]
    high = show_sls(tmp_path, grains, pillar={"controller": "ctl", "flavour": "ohpc"})
    assert _arg(high["slurm-packages"], "pkg", "pkgs") == ["munge", "ohpc-slurm-client"]


def test_controller_sls_debian(tmp_path):
    high = show_sls(tmp_path, ROWS["debian12"][0], sls="slurm.controller")
    assert _arg(high["slurm-packages"], "pkg", "pkgs") == ["munge", "slurmctld", "slurm-client"]
    assert "slurm-slurmctld" in high and "slurm-slurmd" not in high


ALPINE = {"os": "Alpine", "os_family": "Alpine", "osrelease": "3.20.0", "init": "openrc"}


def test_alpine_without_saltext_apk_fails_with_advice(tmp_path):
    # Salt 3008 without saltext-apk loads no pkg module for Alpine
    result = show_sls(tmp_path, ALPINE)
    assert isinstance(result, list)
    assert "pip install saltext-apk" in "\n".join(result)


def test_unsupported_os_names_the_grains(tmp_path):
    grains = {"os": "Gentoo", "os_family": "Gentoo", "osrelease": "2.14"}
    result = "\n".join(show_sls(tmp_path, grains))
    assert "os_family='Gentoo'" in result and "os='Gentoo'" in result
