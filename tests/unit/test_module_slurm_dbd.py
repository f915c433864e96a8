"""Loader-mocked tests for the ``slurm_dbd`` execution and state modules (fixtures in
tests/unit/conftest.py): slurmdbd.conf through the one writer, the password never in a
result, the accounting evidence asked of ``slurm_node.health``."""

import json
import os
import stat

import pytest
from salt.exceptions import CommandExecutionError

from salt_ext.modules import slurm_dbd
from salt_ext.states import slurm_dbd as dbd_states

PASSWORD = "Pw-unit-7f3c9a"


@pytest.fixture
def dbd_host(loader, monkeypatch, tmp_path):
    """ctl is the controller and the dbd host; slurmdbd.conf goes to ``tmp_path``."""
    loader.grains["id"] = "ctl"
    loader.pillar["slurm"] = {
        "controller": "ctl",
        "accounting": {"enabled": True, "storage": {"password": PASSWORD}},
    }
    real_plan = slurm_dbd._plan

    def plan(role="node"):
        got = real_plan(role)
        got["accounting"]["slurmdbd_conf"] = str(tmp_path / "slurmdbd.conf")
        return got

    monkeypatch.setattr(slurm_dbd, "_plan", plan)
    monkeypatch.setattr(slurm_dbd, "_slurm_ids", lambda: (os.getuid(), os.getgid()))
    return tmp_path / "slurmdbd.conf"


def test_conf_test_mode_writes_nothing_and_shows_no_password(dbd_host):
    ret = slurm_dbd.conf(test=True)
    assert not dbd_host.exists()
    assert ret["changes"] and "would be written" in ret["comment"]
    assert PASSWORD not in json.dumps(ret)


def test_conf_writes_0600_then_is_unchanged(dbd_host):
    first = slurm_dbd.conf()
    assert stat.S_IMODE(dbd_host.stat().st_mode) == 0o600
    assert f"StoragePass={PASSWORD}" in dbd_host.read_text()
    assert PASSWORD not in json.dumps(first)
    again = slurm_dbd.conf()
    assert again["changes"] == {} and "is as the pillar says" in again["comment"]


def test_conf_without_the_password_in_this_minions_pillar_names_the_key(dbd_host, loader):
    loader.pillar["slurm"]["accounting"]["storage"].pop("password")
    with pytest.raises(CommandExecutionError, match="slurm:accounting:storage:password"):
        slurm_dbd.conf()
    assert not dbd_host.exists()


def test_conf_with_accounting_off_does_nothing(dbd_host, loader):
    loader.pillar["slurm"]["accounting"]["enabled"] = False
    with pytest.raises(CommandExecutionError, match="accounting is off"):
        slurm_dbd.conf()
    assert not dbd_host.exists()


def test_probe_asks_slurm_node_health_for_the_dbd_daemons_only(dbd_host, loader, monkeypatch):
    asked = []
    loader.salt["slurm_node.health"] = lambda names: (
        asked.append(names) or {name: {"state": "running"} for name in names}
    )
    monkeypatch.setattr(slurm_dbd, "clusters", lambda bound=30: ["cluster"])
    monkeypatch.setattr(slurm_dbd.direct, "log_tail", lambda path, lines=20: [])

    def refused(address, timeout):
        raise ConnectionRefusedError(111, "Connection refused")

    monkeypatch.setattr(slurm_dbd.socket, "create_connection", refused)
    result = slurm_dbd.probe()
    assert asked == [["mariadb", "slurmdbd"]]
    assert set(result["health"]) == {"mariadb", "slurmdbd"}
    assert result["clusters"] == ["cluster"]
    assert result["reach"] == {"ok": False, "detail": "ctl:6819: [Errno 111] Connection refused"}


def test_the_conf_state_refuses_another_path(dbd_host, loader):
    loader.salt["slurm_node.settings"] = lambda role: {
        "accounting": {"slurmdbd_conf": str(dbd_host)}
    }
    loader.salt["slurm_dbd.conf"] = slurm_dbd.conf
    ret = dbd_states.conf("/etc/elsewhere/slurmdbd.conf")
    assert ret["result"] is False and str(dbd_host) in ret["comment"]
    assert not dbd_host.exists()
    ok = dbd_states.conf(str(dbd_host))
    assert ok["result"] is True and ok["changes"] and dbd_host.exists()
    assert PASSWORD not in json.dumps(ok)
