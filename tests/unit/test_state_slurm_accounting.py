"""Loader-mocked tests for the ``slurm_accounting`` exec and state modules: the state calls
the exec module, which runs a fake sacctmgr (tests/unit/fakesacctmgr.py) instead of the
real one."""

import copy

import pytest

from salt_ext.lib.accounting import engine
from salt_ext.modules import slurm_accounting as module
from salt_ext.states import slurm_accounting as state
from tests.unit.fakesacctmgr import FakeSacctmgr

PILLAR = {
    "slurm": {
        "cluster_name": "tux",
        "accounting": {
            "qos": {"single": {"limits": {"MaxJobsPerUser": 1}}},
            "accounts": {"physics": {"qos": ["normal", "single"], "fairshare": 10}},
            "users": {"alice": {"accounts": ["physics"]}},
        },
    }
}


@pytest.fixture
def env(monkeypatch):
    fake = FakeSacctmgr(cluster="tux")
    opts = {"test": False}
    pillar = copy.deepcopy(PILLAR)
    monkeypatch.setattr(engine, "command_runner", lambda timeout=300: fake)
    monkeypatch.setattr(module, "__pillar__", pillar, raising=False)
    monkeypatch.setattr(state, "__opts__", opts, raising=False)
    monkeypatch.setattr(state, "__salt__", {"slurm_accounting.apply": module.apply}, raising=False)
    fake.opts, fake.pillar = opts, pillar
    return fake


def _writes(fake):
    return [call for call in fake.calls if "-i" in call["argv"]]


def test_test_mode_reports_without_writing(env):
    env.opts["test"] = True
    ret = state.managed("acct")
    assert ret["result"] is None
    assert ret["changes"]["qos"] == {"added": ["single"]}
    assert ret["changes"]["users"] == {"added": ["alice"]}
    assert "would change" in ret["comment"]
    assert _writes(env) == [] and len(env.calls) == 5


def test_apply_then_no_changes(env):
    ret = state.managed("acct")
    assert ret["result"] is True and ret["changes"]["accounts"] == {"added": ["physics"]}
    assert env.assoc("physics", "alice") and env.qos["single"]["MaxJobsPerUser"] == 1
    again = state.managed("acct")
    assert again == {
        "name": "acct",
        "result": True,
        "changes": {},
        "comment": "accounting matches pillar (5 sacctmgr processes)",
        "unmanaged": {},
        "kept": [],
    }


def test_drift_and_unmanaged_are_returned(env):
    state.managed("acct")
    env.qos["single"]["MaxJobsPerUser"] = 3
    env("sacctmgr -i".split(), "add account name=legacy cluster=tux\n")
    env.opts["test"] = True
    ret = state.managed("acct")
    assert ret["result"] is None
    assert ret["changes"]["drift"] == [
        {"kind": "qos", "name": "single", "field": "MaxJobsPerUser", "cluster": 3, "pillar": 1}
    ]
    assert ret["changes"]["qos"]["modified"] == {"single": {"MaxJobsPerUser": {"old": 3, "new": 1}}}
    assert ret["unmanaged"] == {"accounts": ["legacy"]}
    assert "1 unmanaged left alone" in ret["comment"]


def test_bad_pillar_fails_naming_the_key_and_runs_nothing(env):
    env.pillar["slurm"]["accounting"]["users"]["alice"]["qos"] = ["gold"]
    ret = state.managed("acct")
    assert ret["result"] is False
    assert "slurm:accounting:users:alice:accounts:physics:qos: QOS 'gold'" in ret["comment"]
    assert env.calls == []


def test_a_failing_phase_fails_the_state_with_what_was_done(env):
    env.fail_on = "User - 'alice'"
    ret = state.managed("acct")
    assert ret["result"] is False
    assert "phase 'create'" in ret["comment"]
    assert ret["changes"] == {"phases_done": ["qos"]}


def test_show_returns_plain_lists(env):
    state.managed("acct")
    shown = module.show()
    assert shown["accounts"]["physics"]["assoc"]["QOS"] == ["normal", "single"]
    assert shown["users"]["alice"]["DefaultAccount"] == "physics"


def test_check_summarises_a_test_apply_without_writing(env):
    before = module.check()
    assert before["in_sync"] is False and _writes(env) == []
    assert before["counts"]["users"] == {"added": 1} and before["total"] >= 3
    state.managed("acct")
    after = module.check()
    assert after == {
        "in_sync": True,
        "total": 0,
        "counts": {},
        "drift": 0,
        "unmanaged": {},
        "processes": 5,
    }
