"""Loader-mocked tests for the munge key's rotation steps in the ``munge`` execution module
(fixtures in tests/unit/conftest.py)."""

import os
import stat
import types
from unittest.mock import MagicMock

import pytest
from salt.exceptions import CommandExecutionError, SaltInvocationError

from salt_ext.modules import _minion_plan, munge, slurm_node
from tests.unit.loader_env import content_hash


@pytest.fixture
def key_dir(loader, monkeypatch, tmp_path):
    """A plan whose munge key lives in ``tmp_path``; the master serves ``served`` bytes."""
    key_path = tmp_path / "munge.key"
    key_path.write_bytes(b"o" * 64)
    plan = {
        "munge_key_path": str(key_path),
        "munge_key_source": "salt://slurm_files/munge.key",
        "service_manager": "systemd",
        "slurm_conf": str(tmp_path / "slurm.conf"),
        "services": {"munge": "munge"},
    }
    monkeypatch.setattr(munge, "_plan", lambda role="node": plan)
    monkeypatch.setattr(_minion_plan, "account", lambda name: (os.getuid(), os.getgid()))
    monkeypatch.setattr(
        munge, "roundtrip", lambda: {"ok": True, "status": "Success", "error": None}
    )
    served = {"key": b"n" * 64}

    def cache_file(url):
        copy = tmp_path / "cache-copy"
        copy.write_bytes(served["key"])
        return str(copy)

    loader.salt["cp.cache_file"] = MagicMock(side_effect=cache_file)
    return types.SimpleNamespace(path=key_path, plan=plan, served=served, dir=tmp_path)


def test_stage_munge_key_puts_the_new_key_beside_the_live_one(key_dir):
    ret = munge.stage_key(content_hash(b"n" * 64))
    staged = key_dir.dir / ".staged.munge.key"
    assert ret == {"staged": content_hash(b"n" * 64)}
    assert staged.read_bytes() == b"n" * 64
    assert stat.S_IMODE(staged.stat().st_mode) == 0o400
    assert key_dir.path.read_bytes() == b"o" * 64  # live key untouched
    assert not (key_dir.dir / "cache-copy").exists()  # no second copy in the minion cache


def test_stage_munge_key_refuses_a_key_with_another_hash(key_dir):
    with pytest.raises(CommandExecutionError, match="expected sha256:"):
        munge.stage_key(content_hash(b"x" * 64))
    assert not (key_dir.dir / ".staged.munge.key").exists()


@pytest.mark.parametrize("bad", ["", "md5:abc", None, 42])
def test_stage_munge_key_names_a_bad_expected_hash(key_dir, bad):
    with pytest.raises(SaltInvocationError, match="expected_hash"):
        munge.stage_key(bad)


def test_stage_munge_key_refuses_a_pillar_key_source(key_dir):
    key_dir.plan["munge_key_source"] = "pillar:slurm_munge_key"
    with pytest.raises(CommandExecutionError, match="slurm:munge_key:source is 'pillar'"):
        munge.stage_key(content_hash(b"n" * 64))


def test_activate_munge_key_swaps_and_restarts_munged(key_dir, loader):
    new = content_hash(b"n" * 64)
    munge.stage_key(new)
    ret = munge.activate_key(new)
    assert ret == {"key_hash": new, "swapped": True, "previous": content_hash(b"o" * 64)}
    assert key_dir.path.read_bytes() == b"n" * 64
    assert stat.S_IMODE(key_dir.path.stat().st_mode) == 0o400
    assert not (key_dir.dir / ".staged.munge.key").exists()
    assert loader.services.actions("restart") == [("restart", "munge")]


def test_activate_munge_key_without_a_staged_key_changes_nothing(key_dir, loader):
    with pytest.raises(CommandExecutionError, match="no staged munge key"):
        munge.activate_key(content_hash(b"n" * 64))
    assert key_dir.path.read_bytes() == b"o" * 64
    assert loader.services.actions("restart") == []


def test_activate_munge_key_already_live_does_not_restart(key_dir, loader):
    ret = munge.activate_key(content_hash(b"o" * 64))
    assert ret["swapped"] is False
    assert loader.services.actions("restart") == []


def test_activate_munge_key_fails_when_the_round_trip_fails(key_dir, monkeypatch):
    new = content_hash(b"n" * 64)
    munge.stage_key(new)
    monkeypatch.setattr(munge, "roundtrip", lambda: {"ok": False, "error": "Invalid credential"})
    with pytest.raises(CommandExecutionError, match="Invalid credential"):
        munge.activate_key(new)


def test_discard_staged_munge_key(key_dir):
    munge.stage_key(content_hash(b"n" * 64))
    assert munge.discard_staged_key() is True
    assert munge.discard_staged_key() is False
    assert key_dir.path.read_bytes() == b"o" * 64


def test_a_rotation_stages_the_key_with_the_states_writer(key_dir, monkeypatch):
    from salt_ext.states import slurm_node as state_mod  # noqa: PLC0415

    assert state_mod.munge_lib.write_key is slurm_node.munge_lib.write_key
    calls = []
    real = slurm_node.munge_lib.write_key
    monkeypatch.setattr(
        slurm_node.munge_lib, "write_key", lambda *a: calls.append(a[0]) or real(*a)
    )
    munge.stage_key(content_hash(b"n" * 64))
    assert calls == [str(key_dir.dir / ".staged.munge.key")]
