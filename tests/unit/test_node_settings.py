import pytest

from salt_ext.lib.node import settings
from salt_ext.lib.node.settings import SettingsError

DEBIAN = {"os_family": "Debian", "os": "Debian", "osrelease": "12", "init": "systemd"}
ALPINE = {"os_family": "Alpine", "os": "Alpine", "osrelease": "3.20.3", "init": "openrc"}
REDHAT = {"os_family": "RedHat", "os": "Rocky", "osrelease": "9.4", "init": "systemd"}


def _machine(**overrides):
    facts = {
        "init_grain": "systemd",
        "systemd_booted": True,
        "pid1_name": "systemd",
        "accounts": {"munge": None, "slurm": None},
        "pkg_install_available": True,
    }
    facts.update(overrides)
    return facts


def _raises_naming(key, pillar):
    with pytest.raises(SettingsError) as info:
        settings.validate(pillar)
    message = str(info.value)
    assert message.startswith(f"{key}:"), message
    return message


# --- validate() -------------------------------------------------------------------------


def test_validate_fills_every_default_around_the_controller():
    cfg = settings.validate({"controller": "ctl"})
    users = {"munge": {"uid": 1108, "gid": 1108}, "slurm": {"uid": 1109, "gid": 1109}}
    accounting = {**settings.DEFAULTS["accounting"], "host": "ctl", "address": "ctl"}
    accounting["managed"] = False  # derived: accounts / users / QOS as code
    assert cfg == {
        **settings.DEFAULTS,
        "controller": "ctl",
        "users": users,
        "accounting": accounting,
    }


def test_gid_follows_the_uid_unless_set():
    cfg = settings.validate({"controller": "ctl", "users": {"munge": {"uid": 2000}}})
    assert cfg["users"]["munge"] == {"uid": 2000, "gid": 2000}
    cfg = settings.validate({"controller": "ctl", "users": {"munge": {"uid": 2000, "gid": 7}}})
    assert cfg["users"]["munge"] == {"uid": 2000, "gid": 7}


def test_validate_does_not_modify_the_defaults():
    before = repr(settings.DEFAULTS)
    settings.validate({"controller": "ctl", "users": {"munge": {"uid": 2000, "gid": 2000}}})
    assert repr(settings.DEFAULTS) == before


def test_validate_merges_nested_keys_over_defaults():
    cfg = settings.validate({"controller": "ctl", "verify": {"timeout": 5}})
    assert cfg["verify"] == {"enabled": True, "timeout": 5}


def test_validate_accepts_numeric_string_ids_and_returns_ints():
    cfg = settings.validate({"controller": "ctl", "users": {"slurm": {"uid": "64030"}}})
    assert cfg["users"]["slurm"]["uid"] == 64030


@pytest.mark.parametrize("uid", ["abc", True, -1, 4294967295, 1.5, None])
def test_validate_bad_uid_names_the_uid_key(uid):
    message = _raises_naming(
        "slurm:users:munge:uid", {"controller": "ctl", "users": {"munge": {"uid": uid}}}
    )
    assert repr(uid) in message


def test_validate_accepts_highest_valid_uid():
    cfg = settings.validate({"controller": "ctl", "users": {"munge": {"uid": 4294967294}}})
    assert cfg["users"]["munge"]["uid"] == 4294967294


def test_validate_bad_gid_names_the_gid_key():
    _raises_naming("slurm:users:slurm:gid", {"controller": "ctl", "users": {"slurm": {"gid": "x"}}})


def test_validate_unknown_service_manager_names_the_key():
    message = _raises_naming(
        "slurm:service_manager", {"controller": "ctl", "service_manager": "upstart"}
    )
    assert "'upstart'" in message


@pytest.mark.parametrize("pillar", [{}, {"controller": None}, {"controller": 42}, None])
def test_validate_missing_or_non_string_controller_names_the_key(pillar):
    _raises_naming("slurm:controller", pillar)


def test_validate_bad_munge_key_source_names_the_key():
    _raises_naming(
        "slurm:munge_key:source", {"controller": "ctl", "munge_key": {"source": "vault"}}
    )


@pytest.mark.parametrize("packages", ["slurmd", ["slurmd", ""], ["slurmd", 3]])
def test_validate_packages_not_a_list_of_names_names_the_key(packages):
    _raises_naming("slurm:packages", {"controller": "ctl", "packages": packages})


@pytest.mark.parametrize("timeout", [-1, 0, "x", True])
def test_validate_bad_verify_timeout_names_the_key(timeout):
    _raises_naming("slurm:verify:timeout", {"controller": "ctl", "verify": {"timeout": timeout}})


def test_validate_non_bool_verify_enabled_names_the_key():
    _raises_naming("slurm:verify:enabled", {"controller": "ctl", "verify": {"enabled": "yes"}})


@pytest.mark.parametrize("value", ["ctl", ["controller", "ctl"], 3])
def test_validate_non_mapping_slurm_pillar_names_slurm(value):
    message = _raises_naming("slurm", value)
    assert "expected a mapping" in message


def test_validate_non_mapping_nested_section_names_the_section():
    _raises_naming("slurm:verify", {"controller": "ctl", "verify": "yes"})


# --- plan() -----------------------------------------------------------------------------


def test_plan_debian_node():
    plan = settings.plan({"controller": "ctl"}, DEBIAN, "node", _machine())
    assert plan["packages"] == ["munge", "slurmd", "slurm-client"]
    assert plan["conf_dir"] == "/etc/slurm"
    assert plan["slurm_conf"] == "/etc/slurm/slurm.conf"
    assert plan["service_manager"] == "systemd"
    assert plan["munge_key_source"] == "salt://slurm_files/munge.key"
    assert plan["controller"] == "ctl"
    assert plan["nologin"] == "/usr/sbin/nologin"


def test_plan_debian_controller_packages():
    plan = settings.plan({"controller": "ctl"}, DEBIAN, "controller", _machine())
    assert plan["packages"] == ["munge", "slurmctld", "slurm-client"]


def test_plan_in_a_container_uses_direct_service_manager():
    machine = _machine(systemd_booted=False, pid1_name="process_api")
    plan = settings.plan({"controller": "ctl"}, DEBIAN, "node", machine)
    assert plan["service_manager"] == "direct"


def test_plan_pillar_packages_override_the_os_table():
    pillar = {"controller": "ctl", "packages": ["munge", "slurm-wlm"]}
    plan = settings.plan(pillar, DEBIAN, "node", _machine())
    assert plan["packages"] == ["munge", "slurm-wlm"]


def test_plan_pillar_munge_key_source_uses_default_pillar_key():
    pillar = {"controller": "ctl", "munge_key": {"source": "pillar"}}
    plan = settings.plan(pillar, DEBIAN, "node", _machine())
    assert plan["munge_key_source"] == "pillar:slurm_munge_key"


def test_plan_pillar_munge_key_source_uses_configured_pillar_key():
    pillar = {"controller": "ctl", "munge_key": {"source": "pillar", "pillar_key": "secrets:munge"}}
    plan = settings.plan(pillar, DEBIAN, "node", _machine())
    assert plan["munge_key_source"] == "pillar:secrets:munge"


def test_plan_existing_account_with_other_ids_names_key_and_both_id_pairs():
    machine = _machine(accounts={"munge": (2000, 2001), "slurm": None})
    with pytest.raises(SettingsError) as info:
        settings.plan({"controller": "ctl"}, DEBIAN, "node", machine)
    message = str(info.value)
    assert message.startswith("slurm:users:munge:")
    assert "1108/1108" in message
    assert "2000/2001" in message


def test_plan_existing_account_with_matching_ids_is_accepted():
    machine = _machine(accounts={"munge": (1108, 1108), "slurm": [1109, 1109]})
    plan = settings.plan({"controller": "ctl"}, DEBIAN, "node", machine)
    assert plan["create_accounts"] == []


def test_plan_create_accounts_lists_only_missing_accounts():
    machine = _machine(accounts={"munge": (1108, 1108), "slurm": None})
    plan = settings.plan({"controller": "ctl"}, DEBIAN, "node", machine)
    assert plan["create_accounts"] == ["slurm"]


def test_plan_create_accounts_when_accounts_unknown_lists_both():
    plan = settings.plan({"controller": "ctl"}, DEBIAN, "node", _machine(accounts=None))
    assert plan["create_accounts"] == ["munge", "slurm"]


def test_plan_alpine_without_pkg_module_asks_for_saltext_apk():
    machine = _machine(pkg_install_available=False)
    with pytest.raises(SettingsError) as info:
        settings.plan({"controller": "ctl"}, ALPINE, "node", machine)
    assert "pip install saltext-apk" in str(info.value)


def test_plan_alpine_with_pkg_module_uses_openrc_and_munged():
    machine = _machine(init_grain="openrc", systemd_booted=False, pid1_name="init")
    plan = settings.plan({"controller": "ctl"}, ALPINE, "node", machine)
    assert plan["service_manager"] == "openrc"
    assert plan["services"]["munge"] == "munged"


def test_plan_debian_booted_by_openrc_uses_openrc():
    debian = {"os_family": "Debian", "os": "Debian", "osrelease": "12", "init": "sysvinit"}
    machine = _machine(
        init_grain="sysvinit", systemd_booted=False, pid1_name="init", openrc_booted=True
    )
    assert settings.plan({"controller": "ctl"}, debian, "node", machine)["service_manager"] == (
        "openrc"
    )
    machine["openrc_booted"] = False
    assert settings.plan({"controller": "ctl"}, debian, "node", machine)["service_manager"] == (
        "sysvinit"
    )


def test_plan_unsupported_os_family_names_the_grains():
    grains = {"os_family": "Arch", "os": "Arch", "osrelease": "rolling"}
    with pytest.raises(SettingsError) as info:
        settings.plan({"controller": "ctl"}, grains, "node", _machine())
    message = str(info.value)
    assert "os_family='Arch'" in message
    assert "os='Arch'" in message
    assert "osrelease='rolling'" in message


def test_plan_ohpc_flavour_on_debian_names_the_flavour_key():
    with pytest.raises(SettingsError) as info:
        settings.plan({"controller": "ctl", "flavour": "ohpc"}, DEBIAN, "node", _machine())
    message = str(info.value)
    assert message.startswith("slurm:flavour:")
    assert "'ohpc'" in message


def test_plan_ohpc_flavour_on_redhat_uses_ohpc_packages():
    plan = settings.plan({"controller": "ctl", "flavour": "ohpc"}, REDHAT, "node", _machine())
    assert plan["packages"] == ["munge", "ohpc-slurm-client"]


def test_plan_bad_pillar_is_reported_before_machine_checks():
    machine = _machine(accounts={"munge": (1, 1), "slurm": (2, 2)})
    with pytest.raises(SettingsError, match=r"^slurm:controller:"):
        settings.plan({}, DEBIAN, "node", machine)


def test_plan_purge_packages_defaults_off():
    plan = settings.plan({"controller": "ctl"}, DEBIAN, "node", _machine())
    assert plan["purge_packages"] is False
    assert plan["verify"] == {"enabled": True, "timeout": 60}


# --- machine_plan(): the directories, conf files and daemons of a role ----------------------

GRAINS = {**DEBIAN, "host": "n1", "nodename": "n1.example.org"}
MUNGE_AND_CONF = [
    {"path": "/etc/munge", "user": "munge", "group": "munge", "mode": "0700"},
    {"path": "/var/lib/munge", "user": "munge", "group": "munge", "mode": "0711"},
    {"path": "/var/log/munge", "user": "munge", "group": "munge", "mode": "0700"},
    {"path": "/etc/slurm", "user": "root", "group": "root", "mode": "0755"},
]
GENERATED = (
    "StateSaveLocation=/var/spool/slurmctld\nSlurmdSpoolDir=/var/spool/slurmd\n"
    "SlurmctldLogFile=/var/log/slurm/slurmctld.log\nSlurmdLogFile=/var/log/slurm/slurmd.log\n"
)


def _dirs(role, served):
    plan = settings.machine_plan({"controller": "ctl"}, GRAINS, role, _machine(), served)
    return plan["dirs"]


def test_machine_plan_names_daemons_conf_files_and_key():
    plan = settings.machine_plan({"controller": "ctl"}, GRAINS, "node", _machine(), GENERATED)
    assert plan["daemons"] == ["munge", "slurmd"]
    assert plan["conf_files"] == ["slurm.conf", "gres.conf", "cgroup.conf"]
    assert plan["munge_key_path"] == "/etc/munge/munge.key"
    assert plan["conf_on_master"] is True
    ctl = settings.machine_plan({"controller": "ctl"}, GRAINS, "controller", _machine(), None)
    assert ctl["daemons"] == ["munge", "slurmctld"] and ctl["conf_on_master"] is False


def test_dirs_of_the_generated_conf_are_todays_owners_and_modes():
    log = {"path": "/var/log/slurm", "user": "slurm", "group": "slurm", "mode": "0755"}
    assert _dirs("node", GENERATED) == [
        *MUNGE_AND_CONF,
        log,
        {"path": "/var/spool/slurmd", "user": "root", "group": "root", "mode": "0755"},
    ]
    assert _dirs("controller", GENERATED) == [
        *MUNGE_AND_CONF,
        log,
        {"path": "/var/spool/slurmctld", "user": "slurm", "group": "slurm", "mode": "0700"},
    ]


def test_dirs_follow_a_conf_that_moves_them():
    served = (
        "SlurmdSpoolDir=/data/spool/%n\nSlurmdLogFile=/data/log/%h/slurmd.log\n"
        "StateSaveLocation=/data/ctld/\n"
    )
    node = [d["path"] for d in _dirs("node", served)]
    assert node[4:] == ["/data/log/n1.example.org", "/data/spool/n1"]
    assert [d["path"] for d in _dirs("controller", served)][4:] == ["/data/ctld"]


def test_dirs_without_a_conf_or_a_key_use_slurms_defaults():
    # log files default to syslog: no log directory; StateSaveLocation's default,
    # /var/spool, is a system directory: left alone (the run stops at "no slurm.conf")
    assert _dirs("node", None)[4:] == [
        {"path": "/var/spool/slurmd", "user": "root", "group": "root", "mode": "0755"}
    ]
    assert _dirs("node", "ClusterName=c\n") == _dirs("node", None)
    assert _dirs("controller", None) == MUNGE_AND_CONF


def test_a_served_conf_without_state_save_location_asks_for_one():
    with pytest.raises(settings.ConfPathError, match="StateSaveLocation=/var/spool is Slurm's"):
        _dirs("controller", "ClusterName=c\n")


def test_a_log_file_in_a_system_directory_leaves_the_directory_alone():
    assert _dirs("node", "SlurmdLogFile=/var/log/slurmd.log\n")[4:] == [
        {"path": "/var/spool/slurmd", "user": "root", "group": "root", "mode": "0755"}
    ]


def test_a_log_file_in_the_spool_directory_gives_one_entry_the_spools():
    dirs = _dirs("node", "SlurmdSpoolDir=/data/s\nSlurmdLogFile=/data/s/slurmd.log\n")
    assert dirs[4:] == [{"path": "/data/s", "user": "root", "group": "root", "mode": "0755"}]


@pytest.mark.parametrize(
    ("line", "why"),
    [
        ("SlurmdSpoolDir=spool/slurmd", "not an absolute path"),
        ("SlurmdSpoolDir=/var/spool/../../etc", "'.' and '..' are not allowed"),
        ("SlurmdSpoolDir=/", "the root directory"),
        ("SlurmdSpoolDir=//", "the root directory"),
        ("SlurmdSpoolDir=/" + "a" * 1100, "longer than 1024 characters"),
        ('SlurmdSpoolDir="/var/spool/x y"', "only letters, digits"),
        ("SlurmdSpoolDir=/var/spool/x:\\n", "only letters, digits"),
        ("SlurmdSpoolDir=/proc/self", "a kernel or device file system"),
        ("SlurmdSpoolDir=/var/spool", "a system directory"),
        ("SlurmdSpoolDir=/etc/munge", "munge's or the conf directory"),
        ("SlurmdLogFile=/etc/slurm/slurmd.log", "munge's or the conf directory"),
    ],
)
def test_a_hostile_or_broken_conf_path_is_refused_naming_the_key(line, why):
    with pytest.raises(settings.ConfPathError) as info:
        _dirs("node", line + "\n")
    message = str(info.value)
    assert message.startswith("the slurm.conf the master serves: Slurmd"), message
    assert why in message


# --- slurm:accounting: -------------------------------------------------------------------

ACCT_ON = {"controller": "ctl", "accounting": {"enabled": True}}
DEBIAN = {"os_family": "Debian", "os": "Debian", "osrelease": "12", "id": "ctl", "host": "ctl"}
NO_INIT = {"pid1_name": "sleep", "accounts": {}}


def _with_password(pw="Secret-Pw-123"):
    return {
        "controller": "ctl",
        "accounting": {"enabled": True, "storage": {"password": pw}},
    }


def test_accounting_is_off_by_default_and_defaults_to_the_controller():
    cfg = settings.validate({"controller": "ctl"})
    acct = settings.accounting(cfg, "ctl")
    assert acct["enabled"] is False and acct["is_dbd_host"] is False
    assert (acct["host"], acct["address"], acct["port"]) == ("ctl", "ctl", 6819)
    assert acct["storage"] == {
        "type": "local",
        "host": None,
        "port": 3306,
        "database": "slurm_acct_db",
        "user": "slurm",
    }


def test_a_missing_password_on_the_dbd_host_names_the_key():
    with pytest.raises(settings.SettingsError, match=r"^slurm:accounting:storage:password: "):
        settings.plan(ACCT_ON, DEBIAN, "controller", NO_INIT)
    # the other machines' pillar may lack it: only the dbd host needs it
    node = settings.plan(ACCT_ON, {**DEBIAN, "id": "n1", "host": "n1"}, "node", NO_INIT)
    assert node["roles"] == ["node"] and node["daemons"] == ["munge", "slurmd"]
    with pytest.raises(settings.SettingsError, match="slurm:accounting:storage:password"):
        settings.require_password(settings.validate(ACCT_ON))


@pytest.mark.parametrize(
    ("accounting", "key"),
    [
        ({"enabled": "yes"}, "slurm:accounting:enabled"),
        ({"port": 0}, "slurm:accounting:port"),
        ({"port": "6819"}, "slurm:accounting:port"),
        ({"host": "a b"}, "slurm:accounting:host"),
        ({"storage": {"type": "sqlite"}}, "slurm:accounting:storage:type"),
        ({"storage": {"type": "external"}}, "slurm:accounting:storage:host"),
        ({"storage": {"database": "acct-db"}}, "slurm:accounting:storage:database"),
        ({"storage": {"user": "x'y"}}, "slurm:accounting:storage:user"),
        ({"storage": {"port": 70000}}, "slurm:accounting:storage:port"),
    ],
)
def test_bad_accounting_pillar_names_the_key(accounting, key):
    with pytest.raises(settings.SettingsError, match=f"^{key}: "):
        settings.validate({"controller": "ctl", "accounting": accounting})


@pytest.mark.parametrize("bad", ["short", "has space 123", "with#hash123", 'quo"te1234', 12345678])
def test_a_bad_password_is_refused_without_being_shown(bad):
    with pytest.raises(settings.SettingsError) as caught:
        settings.validate(_with_password(bad))
    assert str(caught.value).startswith("slurm:accounting:storage:password: ")
    assert str(bad) not in str(caught.value)


def test_settings_never_hold_the_password():
    """Threat 2 of salt_ext.lib.node.dbd: the validated settings and the plan (what
    slurm_node.settings returns and the SLS renders from) carry ``<set>`` at most."""
    pillar = _with_password("Never-Shown-42")
    cfg = settings.validate(pillar)
    assert cfg["accounting"]["storage"]["password"] == "<set>"
    assert pillar["accounting"]["storage"]["password"] == "Never-Shown-42"  # not modified
    plan = settings.machine_plan(pillar, DEBIAN, "controller", NO_INIT, None)
    assert "Never-Shown-42" not in repr(plan) and "password" not in plan["accounting"]["storage"]


def test_the_controller_that_is_the_dbd_host_gets_the_dbd_role_first():
    plan = settings.machine_plan(_with_password(), DEBIAN, "controller", NO_INIT, None)
    assert plan["roles"] == ["dbd", "controller"]
    assert plan["daemons"] == ["munge", "mariadb", "slurmdbd", "slurmctld"]
    assert plan["packages"] == [
        "munge",
        "slurmdbd",
        "slurm-wlm-mysql-plugin",
        "slurm-client",
        "mariadb-server",
        "slurmctld",
    ]
    paths = {d["path"]: (d["user"], d["mode"]) for d in plan["dirs"]}
    assert paths["/var/lib/mysql"] == ("mysql", "0755")
    assert paths["/var/log/mysql"] == ("mysql", "0750")
    assert paths["/var/log/slurm"] == ("slurm", "0755")
    assert plan["accounting"]["slurmdbd_conf"] == "/etc/slurm/slurmdbd.conf"


def test_a_dbd_host_of_its_own_with_external_storage_runs_no_mariadb():
    pillar = _with_password()
    pillar["accounting"].update(host="dbd1", storage={"type": "external", "host": "db1"})
    pillar["accounting"]["storage"]["password"] = "Secret-Pw-123"
    dbd_host = {**DEBIAN, "id": "dbd1", "host": "dbd1"}
    plan = settings.machine_plan(pillar, dbd_host, "dbd", NO_INIT, None)
    assert plan["roles"] == ["dbd"] and plan["daemons"] == ["munge", "slurmdbd"]
    assert "mariadb-server" not in plan["packages"]
    ctl = settings.plan(
        {**pillar, "accounting": {**pillar["accounting"]}}, DEBIAN, "controller", NO_INIT
    )
    assert ctl["roles"] == ["controller"] and ctl["daemons"] == ["munge", "slurmctld"]


def test_bad_accounting_pillar_fails_at_render_naming_the_key():
    bad = {"controller": "ctl", "accounting": {"accounts": {"physics": {"parent": "science"}}}}
    with pytest.raises(settings.SettingsError, match="slurm:accounting:accounts:physics:parent"):
        settings.validate(bad)
    good = {"controller": "ctl", "accounting": {"enabled": True, "accounts": {"physics": {}}}}
    assert settings.validate(good)["accounting"]["accounts"] == {"physics": {}}
