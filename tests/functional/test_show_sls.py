"""``state.show_sls`` of the real SLS tree through a real Salt loader, per OS grains.

No daemons: a masterless minion config (``file_client: local``) serves states/ as
salt://slurm and the pillar from a temp dir; grains are replaced by each OS row's.
"""

import copy
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


def _opts(tmp_path, grains, pillar, served=None):
    file_root = tmp_path / "states"
    file_root.mkdir()
    (file_root / "slurm").symlink_to(REPO / "states")
    if served:
        (file_root / "slurm_files").mkdir()
        for name, text in served.items():
            (file_root / "slurm_files" / name).write_text(text)
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
    # what the modules read when called directly (state.show_sls compiles its own)
    opts["pillar"] = {"slurm": pillar}
    return opts


def loader(tmp_path, grains, pillar=None, served=None):
    """Execution modules of a masterless minion whose file server serves ``served``
    (``{name: text}`` under salt://slurm_files/)."""
    opts = _opts(tmp_path, grains, pillar or {"controller": "ctl"}, served)
    return salt.loader.minion_mods(opts)


def show_sls(tmp_path, grains, sls="slurm.node", pillar=None, served=None):
    return loader(tmp_path, grains, pillar, served)["state.show_sls"](sls)


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
    assert "conf_files_synced" in high["slurm-conf-files"]["slurm_node"]
    assert _arg(high["slurm-conf-files"], "slurm_node", "name") == conf_dir
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


# --- the state tree and slurm_node.settings agree -------------------------------------------

MOVED = (
    "ClusterName=c\nSlurmctldHost=ctl\n"
    "StateSaveLocation=/srv/slurm/ctld-state\n"
    "SlurmdSpoolDir=/srv/slurm/spool-%n\n"
    'SlurmdLogFile="/srv/slurm/logs/slurmd.log"\n'
    "SlurmctldLogFile=/srv/slurm/ctld-logs/slurmctld.log\n"
    "NodeName=node1 CPUs=1\n"
)


def _planned_states(high):
    """What the rendered tree does with directories, conf files and daemons."""
    dirs = []
    for sid, chunk in high.items():
        if "file" in chunk and "directory" in chunk["file"]:
            assert sid == f"slurm-dir-{_arg(chunk, 'file', 'name')}"
            dirs.append(
                {
                    "path": _arg(chunk, "file", "name"),
                    "user": _arg(chunk, "file", "user"),
                    "group": _arg(chunk, "file", "group"),
                    "mode": _arg(chunk, "file", "mode"),
                }
            )
    synced = [c for c in high.values() if "conf_files_synced" in c.get("slurm_node", [])]
    daemons = [
        _arg(c, "slurm_node", "name")
        for c in high.values()
        if "daemon_running" in c.get("slurm_node", [])
    ]
    return dirs, synced, daemons


@pytest.mark.parametrize(
    ("sls", "role", "served"),
    [
        ("slurm.node", "node", {"slurm.conf": MOVED}),
        ("slurm.controller", "controller", {"slurm.conf": MOVED}),
        ("slurm.node", "node", {"slurm.conf": MOVED, "gres.conf": "Name=gpu\n"}),
        # no conf on the master yet: Slurm's defaults
        ("slurm.node", "node", None),
        ("slurm.controller", "controller", None),
        # a conf without the keys: Slurm's defaults (log files: syslog, no directory)
        ("slurm.node", "node", {"slurm.conf": "ClusterName=c\n"}),
    ],
)
def test_sls_dirs_conf_files_and_daemons_are_exactly_the_plans(tmp_path, sls, role, served):
    mods = loader(tmp_path, ROWS["debian12"][0], served=served)
    plan = mods["slurm_node.settings"](role)
    high = mods["state.show_sls"](sls)
    assert isinstance(high, dict), high
    dirs, synced, daemons = _planned_states(high)
    assert dirs == plan["dirs"]
    assert daemons == plan["daemons"]
    assert len(synced) == 1 and _arg(synced[0], "slurm_node", "name") == plan["conf_dir"]
    # the state writes through slurm_node.sync_conf, which manages the plan's conf files
    from salt_ext.lib.conf import cluster_files  # noqa: PLC0415

    assert plan["conf_files"] == list(cluster_files.CONF_FILES)
    assert _arg(high["slurm-munge-key"], "slurm_node", "name") == plan["munge_key_path"]
    assert ("slurm-no-conf-on-master" in high) is (served is None)
    for daemon in plan["daemons"]:
        sid = "slurm-munged" if daemon == "munge" else f"slurm-{daemon}"
        assert _arg(high[sid], "slurm_node", "require")[0] == {"file": "slurm-dir-*"}


def test_moved_slurm_dirs_come_from_the_served_conf(tmp_path):
    node = loader(tmp_path, ROWS["debian12"][0], served={"slurm.conf": MOVED})
    paths = {d["path"]: (d["user"], d["mode"]) for d in node["slurm_node.settings"]("node")["dirs"]}
    assert paths["/srv/slurm/spool-node1"] == ("root", "0755")  # %n: the node's name
    assert paths["/srv/slurm/logs"] == ("slurm", "0755")
    assert "/var/spool/slurmd" not in paths and "/var/log/slurm" not in paths
    ctl = node["slurm_node.settings"]("controller")["dirs"]
    assert {"path": "/srv/slurm/ctld-state", "user": "slurm", "group": "slurm", "mode": "0700"} in (
        ctl
    )


def test_absent_removes_the_plans_key_and_conf_files(tmp_path):
    mods = loader(tmp_path, ROWS["debian12"][0])
    plan = mods["slurm_node.settings"]("node")
    high = mods["state.show_sls"]("slurm.absent")
    removed = [_arg(c, "file", "name") for c in high.values() if "absent" in c.get("file", [])]
    assert removed == [
        plan["munge_key_path"],
        *(f"{plan['conf_dir']}/{name}" for name in plan["conf_files"]),
    ]
    stopped = [
        _arg(c, "slurm_node", "name")
        for c in high.values()
        if "daemon_dead" in c.get("slurm_node", [])
    ]
    assert stopped == plan["stop_order"]


def test_a_hostile_served_conf_stops_the_render_naming_the_key(tmp_path):
    served = {"slurm.conf": "StateSaveLocation=/var/../etc\n"}
    result = show_sls(tmp_path, ROWS["debian12"][0], sls="slurm.controller", served=served)
    assert isinstance(result, list), result
    assert "StateSaveLocation='/var/../etc': '.' and '..' are not allowed" in "\n".join(result)


STATES = REPO / "states"
# paths that are no fact of the plan: the wheel cache of slurm.bootstrap, which runs before
# the extension (and so slurm_node.settings) exists on the minion
ALLOWED_LITERAL_PATHS = {("bootstrap.sls", "/var/cache/saltext-slurm/wheels")}


def test_state_tree_hard_codes_no_system_paths():
    import re  # noqa: PLC0415

    found = set()
    for path in sorted(p for p in STATES.rglob("*") if p.is_file()):
        for literal in re.findall(
            r"/(?:etc|var|run|srv|opt|usr|tmp)(?:/[\w.%-]+)*", path.read_text()
        ):
            found.add((str(path.relative_to(STATES)), literal))
    assert found <= ALLOWED_LITERAL_PATHS, sorted(found - ALLOWED_LITERAL_PATHS)


# --- accounting: slurm.dbd and the controller that is the dbd host ---------------------------

DBD_PASSWORD = "Func-Test-Pw-1234"
DBD_PILLAR = {
    "controller": "node1",
    "accounting": {"enabled": True, "storage": {"password": DBD_PASSWORD}},
}
DBD_SERVED = {"slurm.conf": "ClusterName=c\nStateSaveLocation=/var/spool/slurmctld\n"}


@pytest.mark.parametrize(
    ("sls", "role"), [("slurm.dbd", "dbd"), ("slurm.controller", "controller")]
)
def test_dbd_sls_reads_the_plan(tmp_path, sls, role):
    """The dbd states take every path, daemon and name from the plan, and no SLS text
    holds the DB password (threat 2 of salt_ext.lib.node.dbd)."""
    mods = loader(tmp_path, ROWS["debian12"][0], pillar=DBD_PILLAR, served=DBD_SERVED)
    plan = mods["slurm_node.settings"](role)
    high = mods["state.show_sls"](sls)
    assert isinstance(high, dict), high
    dirs, _, daemons = _planned_states(high)
    assert dirs == plan["dirs"] and daemons == plan["daemons"]
    assert "dbd" in plan["roles"] and {"mariadb", "slurmdbd"} <= set(daemons)
    acct = plan["accounting"]
    assert _arg(high["slurm-dbd-conf"], "slurm_dbd", "name") == acct["slurmdbd_conf"]
    assert _arg(high["slurm-dbd-database"], "slurm_dbd", "name") == acct["storage"]["database"]
    assert _arg(high["slurm-dbd-database"], "slurm_dbd", "user") == acct["storage"]["user"]
    assert _arg(high["slurm-packages"], "pkg", "pkgs") == plan["packages"]
    assert "mariadb-server" in plan["packages"] and "slurmdbd" in plan["packages"]
    # DB -> slurmdbd (-> cluster registered -> slurmctld)
    assert {"slurm_dbd": "slurm-dbd-database"} in _arg(
        high["slurm-slurmdbd"], "slurm_node", "require"
    )
    assert {"slurm_dbd": "slurm-dbd-conf"} in _arg(high["slurm-slurmdbd"], "slurm_node", "watch")
    if role == "controller":
        ctld = _arg(high["slurm-slurmctld"], "slurm_node", "require")
        assert {"slurm_dbd": "slurm-dbd-cluster"} in ctld
        cluster = _arg(high["slurm-dbd-cluster"], "slurm_dbd", "require")
        assert {"slurm_node": "slurm-slurmdbd"} in cluster
    else:
        assert "slurm-dbd-cluster" not in high and "slurm-slurmctld" not in high
    text = json.dumps(high, default=str) + json.dumps(plan, default=str)
    assert DBD_PASSWORD not in text


def test_dbd_sls_with_accounting_off_says_so(tmp_path):
    high = show_sls(tmp_path, ROWS["debian12"][0], sls="slurm.dbd", served=DBD_SERVED)
    assert list(high) == ["slurm-dbd-accounting-off"]


def test_a_missing_password_stops_the_dbd_render_naming_the_key(tmp_path):
    pillar = {"controller": "node1", "accounting": {"enabled": True}}
    result = show_sls(tmp_path, ROWS["debian12"][0], "slurm.controller", pillar, DBD_SERVED)
    assert isinstance(result, list) and "slurm:accounting:storage:password" in "\n".join(result)


def test_autopilot_beacon_only_when_the_pillar_enables_it(tmp_path):
    grains = ROWS["debian12"][0]
    for sub in ("off", "on", "ctl"):
        (tmp_path / sub).mkdir()
    off = show_sls(tmp_path / "off", grains)
    assert "absent" in off["slurm-autopilot-beacon"]["beacon"]
    pillar = {"controller": "ctl", "autopilot": {"enabled": True, "interval": 7}}
    on = show_sls(tmp_path / "on", grains, pillar=pillar)
    chunk = on["slurm-autopilot-beacon"]
    assert "present" in chunk["beacon"]
    assert _arg(chunk, "beacon", "name") == "slurm"
    assert _arg(chunk, "beacon", "interval") == 7
    assert _arg(chunk, "beacon", "daemons") == ["munge", "slurmd"]
    assert _arg(chunk, "beacon", "disable_during_state_run") is True
    ctl = show_sls(tmp_path / "ctl", grains, sls="slurm.controller", pillar=pillar)
    assert _arg(ctl["slurm-autopilot-beacon"], "beacon", "daemons") == ["munge", "slurmctld"]
    assert _arg(ctl["slurm-autopilot-beacon"], "beacon", "role") == "controller"


@pytest.mark.parametrize(
    ("accounting", "managed"),
    [
        ({}, False),
        ({"qos": {"single": {"limits": {"MaxJobsPerUser": 1}}}}, True),
        ({"accounts": {"physics": {}}}, True),
        ({"purge": True}, True),
    ],
)
def test_the_controller_applies_accounts_as_code_after_the_cluster_is_registered(
    tmp_path, accounting, managed
):
    """With accounts / users / QOS (or purge) in pillar the controller's SLS carries
    slurm_accounting.managed, after the cluster's registration; without them it does not."""
    pillar = copy.deepcopy(DBD_PILLAR)
    pillar["accounting"].update(accounting)
    mods = loader(tmp_path, ROWS["debian12"][0], pillar=pillar, served=DBD_SERVED)
    assert mods["slurm_node.settings"]("controller")["accounting"]["managed"] is managed
    high = mods["state.show_sls"]("slurm.controller")
    assert isinstance(high, dict), high
    assert ("slurm-accounting" in high) is managed
    if managed:
        state = high["slurm-accounting"]
        assert _arg(state, "slurm_accounting", "require") == [{"slurm_dbd": "slurm-dbd-cluster"}]
        assert _arg(state, "slurm_accounting", "cluster") == "cluster"  # slurm:cluster_name
    # never on the dbd role's own SLS: the registration (and sacctmgr's cluster) is the
    # controller's
    assert "slurm-accounting" not in mods["state.show_sls"]("slurm.dbd")


@pytest.mark.parametrize("purge", [False, True])
def test_absent_on_the_dbd_host_stops_slurmdbd_and_mariadb_and_purges_data_only_if_asked(
    tmp_path, purge
):
    pillar = copy.deepcopy(DBD_PILLAR)
    pillar["absent"] = {"purge_database": purge}
    grains = {**ROWS["debian12"][0], "id": "node1"}  # the controller, so the dbd host
    mods = loader(tmp_path, grains, pillar=pillar, served=DBD_SERVED)
    high = mods["state.show_sls"]("slurm.absent")
    assert isinstance(high, dict), high
    dead = [
        _arg(c, "slurm_node", "name")
        for i, c in high.items()
        if i.startswith("slurm-absent-") and "slurm_node" in c
    ]
    # the daemons that talk to slurmdbd first, then slurmdbd, MariaDB, munge last
    assert dead == ["slurmd", "slurmctld", "slurmdbd", "mariadb", "munge"]
    assert '"slurm-absent-file-/etc/slurm/slurmdbd.conf"' in json.dumps(list(high))
    data = "slurm-absent-database-/var/lib/mysql"
    assert (data in high) is purge
    if purge:
        assert _arg(high[data], "file", "require") == [{"slurm_node": "slurm-absent-mariadb"}]
    # a compute node's absent does not touch slurmdbd or MariaDB, purge or not
    (tmp_path / "n").mkdir()
    node = loader(tmp_path / "n", {**grains, "id": "n1"}, pillar=pillar, served=DBD_SERVED)
    node_high = node["state.show_sls"]("slurm.absent")
    assert "slurm-absent-slurmdbd" not in node_high and data not in node_high


def test_purge_database_must_be_a_boolean(tmp_path):
    pillar = {**copy.deepcopy(DBD_PILLAR), "absent": {"purge_database": "yes"}}
    result = show_sls(tmp_path, ROWS["debian12"][0], "slurm.absent", pillar, DBD_SERVED)
    assert isinstance(result, list) and "slurm:absent:purge_database" in "\n".join(result)


def test_absent_on_the_rest_api_host_stops_slurmrestd_first_and_removes_its_files(tmp_path):
    pillar = {**copy.deepcopy(DBD_PILLAR), "restd": {"enabled": True}}
    grains = {**ROWS["debian12"][0], "id": "node1"}  # the controller: slurmrestd's host
    mods = loader(tmp_path, grains, pillar=pillar, served=DBD_SERVED)
    plan = mods["slurm_node.settings"]("node")
    high = mods["state.show_sls"]("slurm.absent")
    assert isinstance(high, dict), high
    dead = [
        _arg(c, "slurm_node", "name")
        for i, c in high.items()
        if i.startswith("slurm-absent-") and "slurm_node" in c
    ]
    assert dead[0] == "slurmrestd" and dead[-1] == "munge", dead
    removed = {_arg(c, "file", "name") for c in high.values() if "file" in c}
    assert {plan["restd"]["jwt_key"], *plan["restd"]["files"]} <= removed, removed
    # each file goes once slurmrestd is dead
    key = high[f"slurm-absent-file-{plan['restd']['jwt_key']}"]
    assert {"slurm_node": "slurm-absent-slurmrestd"} in _arg(key, "file", "require")
