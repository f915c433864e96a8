"""Real Salt loaders (no daemons) find and run the extension's modules."""

import os
import stat

import pytest
import salt.config
import salt.exceptions
import salt.loader


@pytest.fixture
def master_opts(tmp_path):
    opts = salt.config.master_config(str(tmp_path / "master"))
    opts["cachedir"] = str(tmp_path / "cache")
    opts["file_roots"] = {"base": [str(tmp_path / "srv")]}
    return opts


@pytest.fixture
def minion_opts(tmp_path):
    opts = salt.config.minion_config(str(tmp_path / "minion"))
    opts["cachedir"] = str(tmp_path / "cache")
    opts["file_client"] = "local"
    return opts


def test_runner_loader_runs_create_munge_key(master_opts, tmp_path):
    runners = salt.loader.runner(master_opts)
    first = runners["slurm.create_munge_key"]()
    key = tmp_path / "srv" / "slurm_files" / "munge.key"
    assert first["created"] is True and first["path"] == str(key)
    assert stat.S_IMODE(key.stat().st_mode) == 0o400
    content = key.read_bytes()
    # the result names the key by hash only
    assert content.hex() not in repr(first) and first["key_hash"].startswith("sha256:")
    again = runners["slurm.create_munge_key"]()
    assert again["created"] is False and key.read_bytes() == content
    forced = runners["slurm.create_munge_key"](force=True)
    assert forced["created"] is True and forced["key_hash"] != first["key_hash"]


def test_minion_loader_has_munge_module(minion_opts, tmp_path):
    mods = salt.loader.minion_mods(minion_opts)
    key = tmp_path / "k"
    key.write_bytes(os.urandom(64))
    assert mods["munge.key_hash"](str(key)).startswith("sha256:")
    assert {"munge.encode", "munge.decode"} <= set(mods)


def test_minion_loaders_have_slurm_accounting(minion_opts):
    """The exec and state modules load under their own virtual name, beside Salt's own."""
    mods = salt.loader.minion_mods(minion_opts)
    assert {"slurm_accounting.apply", "slurm_accounting.show"} <= set(mods)
    states = salt.loader.states(minion_opts, mods, salt.loader.utils(minion_opts), {})
    assert "slurm_accounting.managed" in states
    # a bad pillar is refused before sacctmgr is looked for
    with pytest.raises(salt.exceptions.SaltInvocationError, match="accounts:a:parent"):
        mods["slurm_accounting.apply"](accounting={"accounts": {"a": {"parent": "b"}}})


def test_beacon_loader_runs_the_slurm_beacon(minion_opts, tmp_path):
    """Salt's beacon loader finds ours; a stopped daemon and a key that differs from the
    master's become one event with cause names only, repeated no faster than ``repeat``."""
    mods = salt.loader.minion_mods(minion_opts)
    key = tmp_path / "munge.key"
    key.write_bytes(os.urandom(64))
    mods["slurm_node.daemon_running"] = lambda daemon, manager=None, conf=None: daemon == "munge"
    mods["cp.hash_file"] = lambda url: {"hash_type": "sha256", "hsum": "0" * 64}
    beacons = salt.loader.beacons(minion_opts, mods)
    config = [
        {"role": "node"},
        {"repeat": 5},
        {"munge_key": str(key)},
        {"munge_key_source": "salt://slurm_files/munge.key"},
        {"slurm_conf": str(tmp_path / "missing.conf")},
    ]
    assert beacons["slurm.validate"](config) == (True, "valid")
    assert beacons["slurm.validate"]([{"role": "dbd"}])[0] is False
    events = beacons["slurm.beacon"](config)
    assert events == [
        {
            "tag": "fault",
            "causes": ["slurmd not running", "munge key differs from the master's"],
            "role": "node",
        }
    ]
    assert key.read_bytes().hex() not in repr(events)
    assert beacons["slurm.beacon"](config) == []  # the same fault again within `repeat`
