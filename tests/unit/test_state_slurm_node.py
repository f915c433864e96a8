"""Loader-mocked tests for the ``slurm_node`` state module (dunders injected by hand)."""

import base64
import hashlib
import os
import pwd
import stat
import types
from unittest.mock import MagicMock

import pytest
from salt.exceptions import CommandExecutionError

from salt_ext.lib.util import command
from salt_ext.states import slurm_node

USER = pwd.getpwuid(os.getuid()).pw_name
OWNER = pwd.getpwnam(USER)
SOURCE = "salt://slurm_files/munge.key"
KEY = bytes(range(7, 71))  # 64 bytes, none of them secret, easy to spot in output


def _hash(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture
def loader(monkeypatch, tmp_path):
    """Inject Salt's dunders; ``cp.cache_file`` hands out a fresh copy of ``env.master_key``."""
    env = types.SimpleNamespace(
        opts={"test": False},
        pillar={},
        master_key=KEY,
        cached=[],
        key_path=tmp_path / "etc" / "munge" / "munge.key",
    )

    def cache_file(source, saltenv="base"):
        path = tmp_path / f"cache-{len(env.cached)}"
        path.write_bytes(env.master_key)
        env.cached.append(path)
        return str(path)

    def hash_file(source, saltenv="base"):
        return {"hash_type": "sha256", "hsum": hashlib.sha256(env.master_key).hexdigest()}

    env.salt = {
        "cp.cache_file": MagicMock(side_effect=cache_file),
        "cp.hash_file": MagicMock(side_effect=hash_file),
        "slurm_node.daemon_running": MagicMock(return_value=True),
        "slurm_node.daemon_control": MagicMock(return_value=True),
        "munge.roundtrip": MagicMock(
            return_value={"ok": True, "status": "Success (0)", "error": None}
        ),
        "slurm_controller.wait_registered": MagicMock(),
        "slurm_controller.reconfigure": MagicMock(return_value=True),
        "slurm_controller.up": MagicMock(
            return_value={"ok": True, "output": "Slurmctld(primary) at ctl is UP", "waited": 0}
        ),
        "slurm_node.hardware": MagicMock(),
        "slurm_node.health": MagicMock(
            return_value={"slurmd": {"state": "running", "pid": 9, "evidence": "answers"}}
        ),
        "slurm_node.daemon_enabled": MagicMock(return_value=True),
        "slurm_node.daemon_boot": MagicMock(return_value={"enabled": True, "changed": True}),
        "mine.get": MagicMock(return_value={}),
        "mine.send": MagicMock(return_value=True),
    }
    monkeypatch.setattr(slurm_node, "__salt__", env.salt, raising=False)
    monkeypatch.setattr(slurm_node, "__opts__", env.opts, raising=False)
    monkeypatch.setattr(slurm_node, "__pillar__", env.pillar, raising=False)
    monkeypatch.setattr(slurm_node, "__grains__", {"host": "n1"}, raising=False)
    return env


def _place_key(path, data, mode=0o400):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.chmod(path, mode)
    os.chown(path, OWNER.pw_uid, OWNER.pw_gid)


def _assert_secret_not_in(ret, key=KEY):
    text = repr(ret)
    for form in (
        repr(key),
        key.hex(),
        base64.b64encode(key).decode(),
    ):
        assert form not in text


# --- munge_key -----------------------------------------------------------------------------


def test_munge_key_absent_is_written_0400_and_reported_by_hash_only(loader):
    ret = slurm_node.munge_key(str(loader.key_path), SOURCE, user=USER)
    assert ret["result"] is True
    assert ret["changes"] == {"key_hash": {"old": None, "new": _hash(KEY)}}
    assert loader.key_path.read_bytes() == KEY
    info = loader.key_path.stat()
    assert stat.S_IMODE(info.st_mode) == 0o400
    assert (info.st_uid, info.st_gid) == (OWNER.pw_uid, OWNER.pw_gid)
    assert _hash(KEY) in ret["comment"]
    _assert_secret_not_in(ret)
    # nothing to compare against locally: no need to ask the master for its hash
    loader.salt["cp.hash_file"].assert_not_called()
    loader.salt["cp.cache_file"].assert_called_once_with(SOURCE, "base")


def test_munge_key_passes_saltenv(loader):
    slurm_node.munge_key(str(loader.key_path), SOURCE, user=USER, saltenv="prod")
    loader.salt["cp.cache_file"].assert_called_once_with(SOURCE, "prod")


def test_munge_key_cached_copy_is_deleted_after_reading(loader):
    slurm_node.munge_key(str(loader.key_path), SOURCE, user=USER)
    assert len(loader.cached) == 1
    assert not loader.cached[0].exists()


def test_munge_key_test_mode_changes_nothing(loader):
    loader.opts["test"] = True
    ret = slurm_node.munge_key(str(loader.key_path), SOURCE, user=USER)
    assert ret["result"] is None
    assert ret["changes"] == {"key_hash": {"old": None, "new": _hash(KEY)}}
    assert not loader.key_path.exists()
    assert not loader.key_path.parent.exists()
    assert all(not path.exists() for path in loader.cached)
    _assert_secret_not_in(ret)


def test_munge_key_same_key_no_changes_without_downloading(loader):
    _place_key(loader.key_path, KEY)
    ret = slurm_node.munge_key(str(loader.key_path), SOURCE, user=USER)
    assert ret["result"] is True
    assert ret["changes"] == {}
    assert _hash(KEY) in ret["comment"]
    loader.salt["cp.hash_file"].assert_called_once_with(SOURCE, "base")
    loader.salt["cp.cache_file"].assert_not_called()


def test_munge_key_different_key_is_replaced(loader):
    old = b"o" * 64
    _place_key(loader.key_path, old)
    ret = slurm_node.munge_key(str(loader.key_path), SOURCE, user=USER)
    assert ret["result"] is True
    assert ret["changes"] == {"key_hash": {"old": _hash(old), "new": _hash(KEY)}}
    assert loader.key_path.read_bytes() == KEY
    assert stat.S_IMODE(loader.key_path.stat().st_mode) == 0o400
    assert all(not path.exists() for path in loader.cached)
    _assert_secret_not_in(ret)
    _assert_secret_not_in(ret, old)


def test_munge_key_without_master_hash_downloads_to_compare(loader):
    loader.salt["cp.hash_file"] = MagicMock(return_value={"hash_type": "md5", "hsum": "x"})
    _place_key(loader.key_path, KEY)
    ret = slurm_node.munge_key(str(loader.key_path), SOURCE, user=USER)
    assert ret["result"] is True
    assert ret["changes"] == {}
    loader.salt["cp.cache_file"].assert_called_once()
    assert all(not path.exists() for path in loader.cached)


def test_munge_key_wrong_mode_is_fixed(loader):
    _place_key(loader.key_path, KEY, mode=0o644)
    ret = slurm_node.munge_key(str(loader.key_path), SOURCE, user=USER)
    assert ret["result"] is True
    assert list(ret["changes"]) == ["mode"]
    assert ret["changes"]["mode"] == {
        "old": f"0644 {OWNER.pw_uid}:{OWNER.pw_gid}",
        "new": f"0400 {OWNER.pw_uid}:{OWNER.pw_gid}",
    }
    assert stat.S_IMODE(loader.key_path.stat().st_mode) == 0o400
    assert loader.key_path.read_bytes() == KEY
    loader.salt["cp.cache_file"].assert_not_called()


def test_munge_key_wrong_mode_test_mode_leaves_it(loader):
    loader.opts["test"] = True
    _place_key(loader.key_path, KEY, mode=0o644)
    ret = slurm_node.munge_key(str(loader.key_path), SOURCE, user=USER)
    assert ret["result"] is None
    assert "mode" in ret["changes"]
    assert stat.S_IMODE(loader.key_path.stat().st_mode) == 0o644


def test_munge_key_missing_on_master_says_how_to_create_it(loader):
    loader.salt["cp.cache_file"] = MagicMock(return_value=False)
    ret = slurm_node.munge_key(str(loader.key_path), SOURCE, user=USER)
    assert ret["result"] is False
    assert "salt-run slurm.create_munge_key" in ret["comment"]
    assert SOURCE in ret["comment"]
    assert ret["changes"] == {}
    assert not loader.key_path.exists()


def test_munge_key_from_pillar_base64(loader):
    loader.pillar["slurm_munge_key"] = base64.b64encode(KEY).decode() + "\n"
    ret = slurm_node.munge_key(str(loader.key_path), "pillar:slurm_munge_key", user=USER)
    assert ret["result"] is True
    assert ret["changes"] == {"key_hash": {"old": None, "new": _hash(KEY)}}
    assert loader.key_path.read_bytes() == KEY
    assert stat.S_IMODE(loader.key_path.stat().st_mode) == 0o400
    loader.salt["cp.cache_file"].assert_not_called()
    loader.salt["cp.hash_file"].assert_not_called()
    _assert_secret_not_in(ret)


def test_munge_key_from_nested_pillar_key_matches_existing(loader):
    loader.pillar["secrets"] = {"munge": base64.b64encode(KEY).decode()}
    _place_key(loader.key_path, KEY)
    ret = slurm_node.munge_key(str(loader.key_path), "pillar:secrets:munge", user=USER)
    assert ret["result"] is True
    assert ret["changes"] == {}


def test_munge_key_pillar_not_base64_names_the_pillar_key(loader):
    loader.pillar["slurm_munge_key"] = "this is not base64!"
    ret = slurm_node.munge_key(str(loader.key_path), "pillar:slurm_munge_key", user=USER)
    assert ret["result"] is False
    assert "'slurm_munge_key'" in ret["comment"]
    assert "base64" in ret["comment"]
    assert not loader.key_path.exists()


def test_munge_key_pillar_missing_names_the_pillar_key(loader):
    ret = slurm_node.munge_key(str(loader.key_path), "pillar:slurm_munge_key", user=USER)
    assert ret["result"] is False
    assert "'slurm_munge_key'" in ret["comment"]
    assert not loader.key_path.exists()


def test_munge_key_shorter_than_32_bytes_is_refused(loader):
    loader.master_key = b"k" * 31
    ret = slurm_node.munge_key(str(loader.key_path), SOURCE, user=USER)
    assert ret["result"] is False
    assert "shorter than 32 bytes" in ret["comment"]
    assert not loader.key_path.exists()
    assert all(not path.exists() for path in loader.cached)


def test_munge_key_short_pillar_key_is_refused(loader):
    loader.pillar["slurm_munge_key"] = base64.b64encode(b"short").decode()
    ret = slurm_node.munge_key(str(loader.key_path), "pillar:slurm_munge_key", user=USER)
    assert ret["result"] is False
    assert "shorter than 32 bytes" in ret["comment"]


def test_munge_key_unknown_account(loader):
    ret = slurm_node.munge_key(str(loader.key_path), SOURCE, user="no-such-user-xyz")
    assert ret["result"] is False
    assert "no-such-user-xyz" in ret["comment"]
    loader.salt["cp.cache_file"].assert_not_called()


# --- daemon_running ------------------------------------------------------------------------


def test_daemon_running_already_running(loader):
    ret = slurm_node.daemon_running("slurmd", "systemd", "/etc/slurm/slurm.conf")
    assert ret["result"] is True
    assert ret["changes"] == {}
    loader.salt["slurm_node.daemon_running"].assert_called_once_with(
        "slurmd", "systemd", "/etc/slurm/slurm.conf"
    )
    loader.salt["slurm_node.daemon_control"].assert_not_called()


def test_daemon_running_test_mode(loader):
    loader.opts["test"] = True
    loader.salt["slurm_node.daemon_running"].return_value = False
    ret = slurm_node.daemon_running("munge", "openrc")
    assert ret["result"] is None
    assert ret["changes"] == {"started": "munge"}
    loader.salt["slurm_node.daemon_control"].assert_not_called()


def test_daemon_running_starts_it(loader):
    loader.salt["slurm_node.daemon_running"].return_value = False
    ret = slurm_node.daemon_running("slurmd", "direct", "/etc/slurm/slurm.conf")
    assert ret["result"] is True
    assert ret["changes"] == {"started": "slurmd"}
    loader.salt["slurm_node.daemon_control"].assert_called_once_with(
        "slurmd", "start", "direct", "/etc/slurm/slurm.conf"
    )


def test_daemon_running_start_failure(loader):
    loader.salt["slurm_node.daemon_running"].return_value = False
    loader.salt["slurm_node.daemon_control"].side_effect = CommandExecutionError(
        "slurmd did not start: fatal: bad config"
    )
    ret = slurm_node.daemon_running("slurmd", "direct")
    assert ret["result"] is False
    assert ret["changes"] == {}
    assert "slurmd did not start: fatal: bad config" in ret["comment"]


def test_daemon_running_status_failure(loader):
    loader.salt["slurm_node.daemon_running"].side_effect = CommandExecutionError(
        "bad slurm pillar: slurm:controller: required"
    )
    ret = slurm_node.daemon_running("slurmd", "systemd")
    assert ret["result"] is False
    assert "bad slurm pillar" in ret["comment"]


def test_daemon_running_failure_comment_carries_the_journal_of_this_start(loader):
    loader.salt["slurm_node.daemon_running"].return_value = False
    loader.salt["slurm_node.daemon_control"].side_effect = CommandExecutionError(
        "slurmd started (pid 9) but died within 2 s (systemd: ActiveState=failed)\n"
        "  journal: Nov 28 n1 slurmd[9]: slurmd: fatal: Invalid option -Z"
    )
    ret = slurm_node.daemon_running("slurmd", "systemd")
    assert ret["result"] is False and ret["changes"] == {}
    assert "journal: Nov 28 n1 slurmd[9]: slurmd: fatal: Invalid option -Z" in ret["comment"]


# --- daemon_enabled / daemon_dead: boot ------------------------------------------------------


def test_daemon_enabled_already_enabled_changes_nothing(loader):
    ret = slurm_node.daemon_enabled("slurmd", "systemd")
    assert ret == {
        "name": "slurmd",
        "result": True,
        "changes": {},
        "comment": "slurmd is enabled at boot (systemd)",
    }
    loader.salt["slurm_node.daemon_boot"].assert_not_called()


def test_daemon_enabled_test_mode_reports_a_disabled_unit(loader):
    loader.opts["test"] = True
    loader.salt["slurm_node.daemon_enabled"].return_value = False
    ret = slurm_node.daemon_enabled("slurmd", "systemd")
    assert ret["result"] is None
    assert ret["changes"] == {"boot": {"old": "disabled", "new": "enabled"}}
    assert ret["comment"] == "slurmd would be enabled at boot (systemd)"
    loader.salt["slurm_node.daemon_boot"].assert_not_called()


@pytest.mark.parametrize("manager", ["systemd", "sysvinit", "openrc"])
def test_daemon_enabled_repairs_a_disabled_unit(loader, manager):
    loader.salt["slurm_node.daemon_enabled"].return_value = False
    ret = slurm_node.daemon_enabled("munge", manager)
    assert ret["result"] is True
    assert ret["changes"] == {"boot": {"old": "disabled", "new": "enabled"}}
    loader.salt["slurm_node.daemon_boot"].assert_called_once_with("munge", True, manager)


def test_daemon_enabled_failure_is_a_failed_state(loader):
    loader.salt["slurm_node.daemon_enabled"].return_value = False
    loader.salt["slurm_node.daemon_boot"].side_effect = CommandExecutionError(
        "slurmd is still not enabled at boot (systemd) (systemctl is-enabled: masked)"
    )
    ret = slurm_node.daemon_enabled("slurmd", "systemd")
    assert ret["result"] is False and ret["changes"] == {}
    assert "masked" in ret["comment"]


def test_daemon_enabled_direct_has_no_boot(loader):
    ret = slurm_node.daemon_enabled("slurmd", "direct")
    assert ret["result"] is True and ret["changes"] == {}
    assert "no boot under the direct manager" in ret["comment"]
    loader.salt["slurm_node.daemon_enabled"].assert_not_called()


def test_daemon_dead_stops_and_disables(loader):
    ret = slurm_node.daemon_dead("slurmd", "systemd", "/etc/slurm/slurm.conf")
    assert ret["result"] is True
    assert ret["changes"] == {
        "stopped": "slurmd",
        "boot": {"old": "enabled", "new": "disabled"},
    }
    assert ret["comment"] == "slurmd stopped (systemd); disabled at boot"
    loader.salt["slurm_node.daemon_control"].assert_called_once_with(
        "slurmd", "stop", "systemd", "/etc/slurm/slurm.conf"
    )
    loader.salt["slurm_node.daemon_boot"].assert_called_once_with("slurmd", False, "systemd")


def test_daemon_dead_stopped_but_enabled_is_still_a_change(loader):
    loader.salt["slurm_node.daemon_running"].return_value = False
    ret = slurm_node.daemon_dead("munge", "openrc")
    assert ret["changes"] == {"boot": {"old": "enabled", "new": "disabled"}}
    loader.salt["slurm_node.daemon_control"].assert_not_called()


def test_daemon_dead_test_mode_reports_stop_and_disable(loader):
    loader.opts["test"] = True
    ret = slurm_node.daemon_dead("slurmd", "sysvinit")
    assert ret["result"] is None
    assert ret["changes"] == {
        "stopped": "slurmd",
        "boot": {"old": "enabled", "new": "disabled"},
    }
    loader.salt["slurm_node.daemon_control"].assert_not_called()
    loader.salt["slurm_node.daemon_boot"].assert_not_called()


def test_daemon_dead_already_dead_and_disabled_changes_nothing(loader):
    loader.salt["slurm_node.daemon_running"].return_value = False
    loader.salt["slurm_node.daemon_enabled"].return_value = False
    ret = slurm_node.daemon_dead("slurmd", "systemd")
    assert ret["result"] is True and ret["changes"] == {}


def test_daemon_dead_direct_does_not_touch_boot(loader):
    ret = slurm_node.daemon_dead("slurmd", "direct")
    assert ret["changes"] == {"stopped": "slurmd"}
    loader.salt["slurm_node.daemon_enabled"].assert_not_called()


# --- mod_watch -----------------------------------------------------------------------------


@pytest.fixture
def fake_run(monkeypatch):
    run = MagicMock(return_value=types.SimpleNamespace(stdout="", stderr="", returncode=0))
    monkeypatch.setattr(command, "run", run)
    return run


def test_mod_watch_running_slurmctld_reconfigures(loader, fake_run):
    ret = slurm_node.mod_watch("slurmctld", sfun="daemon_running", manager="systemd")
    assert ret["result"] is True
    assert ret["changes"] == {"reconfigure": "slurmctld"}
    loader.salt["slurm_controller.reconfigure"].assert_called_once_with()
    loader.salt["slurm_node.daemon_control"].assert_not_called()


@pytest.mark.parametrize(("stale", "action"), [(True, "restart"), (False, "reconfigure")])
def test_mod_watch_restarts_slurmctld_when_a_start_only_file_is_newer(
    loader, fake_run, stale, action
):
    """The JWT key is read only at start: newer than slurmctld -> restart, else reconfigure."""
    loader.salt["slurm_node.stale"] = MagicMock(return_value=stale)
    key = "/etc/slurm/jwt_hs256.key"
    ret = slurm_node.mod_watch(
        "slurmctld", sfun="daemon_running", manager="systemd", conf="/c", restart_for=[key]
    )
    assert ret["result"] is True and ret["changes"] == {action: "slurmctld"}
    loader.salt["slurm_node.stale"].assert_called_once_with("slurmctld", [key], "/c")
    if stale:
        loader.salt["slurm_node.daemon_control"].assert_called_once_with(
            "slurmctld", "restart", "systemd", "/c"
        )
        loader.salt["slurm_controller.reconfigure"].assert_not_called()
    else:
        loader.salt["slurm_controller.reconfigure"].assert_called_once_with()


def test_mod_watch_reconfigure_failure(loader, fake_run):
    loader.salt["slurm_controller.reconfigure"].side_effect = CommandExecutionError(
        "scontrol reconfigure exited 1: error: oops"
    )
    ret = slurm_node.mod_watch("slurmctld", sfun="daemon_running", manager="systemd")
    assert ret["result"] is False
    assert "oops" in ret["comment"]
    assert ret["changes"] == {}


def test_mod_watch_running_slurmd_restarts(loader, fake_run):
    ret = slurm_node.mod_watch("slurmd", sfun="daemon_running", manager="openrc", conf="/c")
    assert ret["result"] is True
    assert ret["changes"] == {"restart": "slurmd"}
    loader.salt["slurm_node.daemon_control"].assert_called_once_with(
        "slurmd", "restart", "openrc", "/c"
    )
    fake_run.assert_not_called()


@pytest.mark.parametrize("name", ["munge", "slurmd", "slurmctld"])
def test_mod_watch_not_running_starts(loader, fake_run, name):
    loader.salt["slurm_node.daemon_running"].return_value = False
    ret = slurm_node.mod_watch(name, sfun="daemon_running", manager="direct")
    assert ret["result"] is True
    assert ret["changes"] == {"start": name}
    loader.salt["slurm_node.daemon_control"].assert_called_once_with(name, "start", "direct", None)
    fake_run.assert_not_called()


@pytest.mark.parametrize(
    ("name", "running", "action"),
    [("slurmctld", True, "reconfigure"), ("slurmd", True, "restart"), ("munge", False, "start")],
)
def test_mod_watch_test_mode(loader, fake_run, name, running, action):
    loader.opts["test"] = True
    loader.salt["slurm_node.daemon_running"].return_value = running
    ret = slurm_node.mod_watch(name, sfun="daemon_running", manager="systemd")
    assert ret["result"] is None
    assert ret["changes"] == {action: name}
    fake_run.assert_not_called()
    loader.salt["slurm_node.daemon_control"].assert_not_called()


def test_mod_watch_restart_failure(loader, fake_run):
    loader.salt["slurm_node.daemon_control"].side_effect = CommandExecutionError(
        "service.restart slurmd failed (systemd)"
    )
    ret = slurm_node.mod_watch("slurmd", sfun="daemon_running", manager="systemd")
    assert ret["result"] is False
    assert "service.restart slurmd failed" in ret["comment"]


def test_mod_watch_other_state_function_is_refused(loader, fake_run):
    ret = slurm_node.mod_watch("x", sfun="munge_key")
    assert ret["result"] is False
    assert "munge_key" in ret["comment"]


# --- node_verified -------------------------------------------------------------------------


def test_node_verified_failure_names_cause_and_quotes_evidence(loader):
    loader.salt["slurm_controller.wait_registered"].return_value = {
        "ok": False,
        "state": {"state": "DOWN", "raw_state": "DOWN*", "reason": "Not responding"},
        "waited": 12.0,
        "evidence": [
            "scontrol show node exited 1: Zero Bytes were transmitted or received",
            "slurmd: error: Unable to register: Zero Bytes were transmitted or received",
        ],
        "cause": "munge key mismatch with the controller",
    }
    ret = slurm_node.node_verified("n1", timeout=30)
    assert ret["result"] is False
    assert ret["changes"] == {}
    lines = ret["comment"].splitlines()
    assert "munge key mismatch with the controller" in lines[0]
    assert "12.0s" in lines[0]
    assert "state=DOWN*" in lines[1]
    assert "reason=Not responding" in lines[1]
    assert lines[2:] == [
        "scontrol show node exited 1: Zero Bytes were transmitted or received",
        "slurmd: error: Unable to register: Zero Bytes were transmitted or received",
    ]
    loader.salt["slurm_controller.wait_registered"].assert_called_once_with("n1", 30)


def test_node_verified_failure_without_state(loader):
    loader.salt["slurm_controller.wait_registered"].return_value = {
        "ok": False,
        "state": None,
        "waited": 60.2,
        "evidence": [],
        "cause": "node did not register with the controller in time",
    }
    ret = slurm_node.node_verified("n1")
    assert ret["result"] is False
    assert "node did not register" in ret["comment"]
    assert "state=None" in ret["comment"]


def test_node_verified_ok(loader):
    loader.salt["slurm_controller.wait_registered"].return_value = {
        "ok": True,
        "state": {"state": "IDLE", "raw_state": "IDLE", "drained": False},
        "waited": 1.5,
    }
    ret = slurm_node.node_verified("n1")
    assert ret["result"] is True
    assert ret["changes"] == {}
    assert "IDLE" in ret["comment"] and "drained" not in ret["comment"]


def test_node_verified_fails_when_the_local_slurmd_is_dead_without_waiting(loader):
    loader.salt["slurm_node.health"].return_value = {
        "slurmd": {"state": "stopped", "pid": None, "evidence": "slurmd not running"}
    }
    ret = slurm_node.node_verified("n1")
    assert ret["result"] is False
    assert "the local slurmd is stopped: slurmd not running" in ret["comment"]
    loader.salt["slurm_controller.wait_registered"].assert_not_called()
    loader.salt["slurm_node.health"].assert_called_once_with("slurmd")


def test_node_verified_idle_at_the_controller_is_not_enough(loader):
    # the controller says IDLE for minutes after slurmd died
    loader.salt["slurm_controller.wait_registered"].return_value = {
        "ok": True,
        "state": {"state": "IDLE", "raw_state": "IDLE", "drained": False},
        "waited": 0.1,
    }
    loader.salt["slurm_node.health"].side_effect = [
        {"slurmd": {"state": "running", "pid": 9, "evidence": "answers"}},
        {"slurmd": {"state": "stopped", "pid": None, "evidence": "slurmd not running"}},
    ]
    ret = slurm_node.node_verified("n1")
    assert ret["result"] is False
    assert "the local slurmd is stopped" in ret["comment"]
    assert "controller still says IDLE" in ret["comment"]


def test_node_verified_a_hung_slurmd_fails(loader):
    loader.salt["slurm_node.health"].return_value = {
        "slurmd": {"state": "hung", "pid": 9, "evidence": "pid 9 state T (stopped)"}
    }
    ret = slurm_node.node_verified("n1")
    assert ret["result"] is False
    assert "hung: pid 9 state T (stopped)" in ret["comment"]


def test_node_verified_drained_node_passes_and_says_how_to_resume(loader):
    loader.salt["slurm_controller.wait_registered"].return_value = {
        "ok": True,
        "state": {"state": "IDLE", "raw_state": "IDLE+DRAIN", "drained": True, "reason": "bios"},
        "waited": 0.2,
    }
    ret = slurm_node.node_verified("n1")
    assert ret["result"] is True
    assert "stays drained (bios)" in ret["comment"] and "slurm.resume n1" in ret["comment"]


def test_node_verified_local_munge_failure_skips_registration(loader):
    loader.salt["munge.roundtrip"].return_value = {
        "ok": False,
        "status": None,
        "error": "unmunge: Error: Invalid credential",
    }
    ret = slurm_node.node_verified("n1")
    assert ret["result"] is False
    assert "local munge round trip failed: unmunge: Error: Invalid credential" in ret["comment"]
    loader.salt["slurm_controller.wait_registered"].assert_not_called()


def test_node_verified_local_munge_error(loader):
    loader.salt["munge.roundtrip"].side_effect = CommandExecutionError("munge: command not found")
    ret = slurm_node.node_verified("n1")
    assert ret["result"] is False
    assert "munge: command not found" in ret["comment"]


def test_node_verified_test_mode(loader):
    loader.opts["test"] = True
    ret = slurm_node.node_verified("n1")
    assert ret["result"] is None
    loader.salt["munge.roundtrip"].assert_not_called()
    loader.salt["slurm_controller.wait_registered"].assert_not_called()


HW = {
    "NodeName": "n1",
    "CPUs": 2,
    "RealMemory": 24105,
    "gpus": {"count": 0},
    "minion_id": "n1",
    "source": "slurmd -C",
}


def test_hardware_in_mine_unchanged_sends_nothing(loader):
    loader.salt["slurm_node.hardware"].return_value = dict(HW)
    loader.salt["mine.get"].return_value = {"n1": dict(HW)}
    slurm_node.__grains__["id"] = "n1"
    ret = slurm_node.hardware_in_mine()
    assert ret["result"] is True and ret["changes"] == {}
    loader.salt["mine.send"].assert_not_called()


def test_hardware_in_mine_sends_what_changed(loader):
    loader.salt["slurm_node.hardware"].return_value = {**HW, "CPUs": 4}
    loader.salt["mine.get"].return_value = {"n1": dict(HW)}
    slurm_node.__grains__["id"] = "n1"
    ret = slurm_node.hardware_in_mine()
    assert ret["result"] is True
    assert ret["changes"] == {"hardware": {"CPUs": {"old": 2, "new": 4}}}
    loader.salt["mine.send"].assert_called_once_with("slurm_node.hardware")


def test_hardware_in_mine_test_mode_and_send_failure(loader):
    loader.salt["slurm_node.hardware"].return_value = dict(HW)
    slurm_node.__grains__["id"] = "n1"
    loader.opts["test"] = True
    ret = slurm_node.hardware_in_mine()
    assert ret["result"] is None and ret["changes"]["hardware"]["CPUs"] == 2
    loader.salt["mine.send"].assert_not_called()
    loader.opts["test"] = False
    loader.salt["mine.send"].return_value = False
    ret = slurm_node.hardware_in_mine()
    assert ret["result"] is False and ret["changes"] == {}


def test_controller_verified_reports_ping(loader):
    ret = slurm_node.controller_verified("ctl")
    assert ret["result"] is True and "is UP" in ret["comment"]
    loader.salt["slurm_controller.up"].return_value = {
        "ok": False,
        "output": "Slurmctld(primary) at ctl is DOWN",
        "waited": 5,
    }
    ret = slurm_node.controller_verified("ctl", timeout=5)
    assert ret["result"] is False and "is DOWN" in ret["comment"]
    loader.salt["slurm_controller.up"].assert_called_with(5)


# --- conf_files_synced: the same writer as slurm.apply_conf --------------------------------


@pytest.fixture
def conf_loader(loader, monkeypatch, tmp_path):
    """The real exec slurm_node.sync_conf behind the state, over a conf dir in tmp_path."""
    from salt_ext.lib.conf import generate  # noqa: PLC0415
    from salt_ext.modules import slurm_node as exec_mod  # noqa: PLC0415

    conf_dir = tmp_path / "slurm"
    conf_dir.mkdir()
    served = {"slurm.conf": "ClusterName=new\n"}
    exec_salt = {
        "cp.hash_file": MagicMock(side_effect=lambda url: url.rsplit("/", 1)[1] in served),
        "cp.get_file_str": MagicMock(side_effect=lambda url: served[url.rsplit("/", 1)[1]]),
    }
    monkeypatch.setattr(exec_mod, "__salt__", exec_salt, raising=False)
    monkeypatch.setattr(exec_mod, "_plan", lambda role="node": {"conf_dir": str(conf_dir)})

    def write(path, data, mode=0o644, uid=None, gid=None):
        assert (mode, uid, gid) == (0o644, 0, 0) or path.endswith(exec_mod.STAGED_MANIFEST)
        with open(path, "w") as handle:
            handle.write(data)

    monkeypatch.setattr(exec_mod.fsutil, "atomic_write", write)
    loader.salt["slurm_node.sync_conf"] = exec_mod.sync_conf
    (conf_dir / "slurm.conf").write_text("ClusterName=old\n")
    (conf_dir / "gres.conf").write_text(generate.HEADER + "NodeName=g1 Name=gpu Count=1\n")
    return types.SimpleNamespace(dir=conf_dir, served=served, env=loader)


def test_conf_files_synced_test_mode_lists_each_file_and_writes_nothing(conf_loader):
    conf_loader.env.opts["test"] = True
    ret = slurm_node.conf_files_synced(str(conf_loader.dir))
    assert ret["result"] is None
    assert ret["changes"] == {
        "gres.conf": {"old": _hash((conf_loader.dir / "gres.conf").read_bytes()), "new": None},
        "slurm.conf": {"old": _hash(b"ClusterName=old\n"), "new": _hash(b"ClusterName=new\n")},
    }
    assert "gres.conf removed" in ret["comment"] and "would be" in ret["comment"]
    assert (conf_loader.dir / "slurm.conf").read_text() == "ClusterName=old\n"
    assert (conf_loader.dir / "gres.conf").exists()


def test_conf_files_synced_writes_and_removes_an_unserved_gres_conf(conf_loader):
    ret = slurm_node.conf_files_synced(str(conf_loader.dir))
    assert ret["result"] is True, ret
    assert set(ret["changes"]) == {"gres.conf", "slurm.conf"}
    assert ret["changes"]["gres.conf"]["new"] is None
    assert (conf_loader.dir / "slurm.conf").read_text() == "ClusterName=new\n"
    assert sorted(p.name for p in conf_loader.dir.iterdir()) == ["slurm.conf"]
    # no file's text in what the state returns (state output, events, the job cache)
    assert "ClusterName" not in repr(ret) and "gpu" not in repr(ret)
    again = slurm_node.conf_files_synced(str(conf_loader.dir))
    assert again["result"] is True and again["changes"] == {}


def test_conf_files_synced_without_slurm_conf_on_the_master_fails(conf_loader):
    conf_loader.served.clear()
    ret = slurm_node.conf_files_synced(str(conf_loader.dir))
    assert ret["result"] is False and "slurm.render_conf" in ret["comment"]
    assert (conf_loader.dir / "slurm.conf").read_text() == "ClusterName=old\n"


def test_conf_files_synced_refuses_a_name_that_is_not_the_conf_dir(conf_loader):
    ret = slurm_node.conf_files_synced("/tmp/elsewhere")
    assert ret["result"] is False and "conf_dir" in ret["comment"]


def test_daemon_dead_forget_boot_removes_the_links_its_removed_script_would_leave(loader):
    # slurm.absent on the REST host: our slurmrestd init script goes, so its links go too
    loader.salt["slurm_node.daemon_enabled"].return_value = False  # disabled, K links left
    loader.salt["slurm_node.daemon_boot"].return_value = {"enabled": False, "changed": True}
    ret = slurm_node.daemon_dead("slurmrestd", "sysvinit", forget_boot=True)
    assert ret["result"] is True, ret
    assert ret["changes"]["boot"] == {"old": "links", "new": "no links"}
    loader.salt["slurm_node.daemon_boot"].assert_called_once_with(
        "slurmrestd", False, "sysvinit", forget=True
    )
    loader.salt["slurm_node.daemon_boot"].side_effect = CommandExecutionError(
        "slurmrestd: its rc links are still there (runlevels 06)"
    )
    ret = slurm_node.daemon_dead("slurmrestd", "sysvinit", forget_boot=True)
    assert ret["result"] is False and "rc links" in ret["comment"]
    # test mode and the direct manager: no such call
    loader.salt["slurm_node.daemon_boot"].reset_mock()
    loader.opts["test"] = True
    slurm_node.daemon_dead("slurmrestd", "sysvinit", forget_boot=True)
    loader.opts["test"] = False
    slurm_node.daemon_dead("slurmrestd", "direct", forget_boot=True)
    loader.salt["slurm_node.daemon_boot"].assert_not_called()
