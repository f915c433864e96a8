"""The master's cluster lock and operation journal (no Salt, real files and flocks)."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from salt_ext.lib.ops import journal


class Clock:
    def __init__(self, now=1_800_000_000.0):
        self.now = now

    def __call__(self):
        return self.now


@pytest.fixture
def jrnl(tmp_path):
    return journal.Journal(str(tmp_path / "slurm"), clock=Clock())


def hold_lock_in_child(directory, name="apply_conf"):
    """Another process that takes the lock and sleeps until killed."""
    code = textwrap.dedent(
        f"""
        import sys, time
        from salt_ext.lib.ops import journal
        with journal.Journal({str(directory)!r}).operation({name!r}) as entry:
            print("held", flush=True)
            time.sleep(60)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_operation_is_refused_naming_the_holder_and_since_when(jrnl, tmp_path):
    holder = hold_lock_in_child(tmp_path / "slurm")
    try:
        with pytest.raises(journal.LockBusy) as err, jrnl.operation("deploy"):
            pass
        message = str(err.value)
        assert "slurm.apply_conf is running" in message
        assert f"pid {holder.pid}" in message
        assert "UTC" in message
    finally:
        holder.kill()
        holder.wait()


def test_a_dead_holders_lock_is_free_and_its_work_is_reported_interrupted(jrnl, tmp_path):
    holder = hold_lock_in_child(tmp_path / "slurm")
    with open(os.path.join(tmp_path, "slurm", "journal.json")) as handle:
        current = json.load(handle)["current"]
    # what the dead run had recorded before it was killed
    current.update(dirty=True, rollout={"class": "restart_all", "stopped": ["n1"]})
    with open(os.path.join(tmp_path, "slurm", "journal.json"), "w") as handle:
        json.dump({"current": current}, handle)
    holder.kill()
    holder.wait()
    with jrnl.operation("deploy"):
        (entry,) = jrnl.interrupted()
        assert entry["operation"] == "apply_conf"
        assert entry["pid"] == holder.pid
        assert entry["rollout"]["stopped"] == ["n1"]
        jrnl.resolve_interrupted("rolled forward")
    assert jrnl.interrupted() == []
    history = jrnl.history()
    assert [e["operation"] for e in history] == ["deploy", "apply_conf"]
    assert history[1]["resolved"]["how"] == "rolled forward"


def test_nested_operations_share_the_lock_and_one_entry(jrnl):
    with jrnl.operation("deploy") as outer:
        with journal.Journal(jrnl.directory).operation("apply_conf") as inner:
            assert inner is outer
        jrnl.record(outer, "after the nested call")
    (entry,) = jrnl.history()
    assert entry["operation"] == "deploy"
    assert entry["state"] == "done"
    assert [s["step"] for s in entry["steps"]] == ["after the nested call"]


def test_an_error_before_any_change_is_a_plain_failure(jrnl):
    with pytest.raises(ValueError), jrnl.operation("apply_conf"):
        raise ValueError("bad pillar")
    assert jrnl.interrupted() == []
    assert jrnl.history()[0]["state"].startswith("failed: ValueError: bad pillar")


def test_an_error_after_a_change_leaves_the_work_for_the_next_run(jrnl):
    with pytest.raises(KeyboardInterrupt), jrnl.operation("apply_conf") as entry:
        jrnl.record(entry, "push", dirty=True, rollout={"class": "reconfigure"})
        raise KeyboardInterrupt
    with jrnl.operation("deploy"):
        (entry,) = jrnl.interrupted()
    assert entry["rollout"]["class"] == "reconfigure"
    assert entry["steps"][-1]["step"] == "push"


def test_the_journal_is_private_and_applied_files_survive(jrnl):
    with jrnl.operation("apply_conf"):
        jrnl.set_applied({"slurm.conf": "sha256:ab"})
    assert os.stat(jrnl.path).st_mode & 0o777 == 0o600
    assert os.stat(jrnl.directory).st_mode & 0o777 == 0o700
    assert jrnl.applied()["files"] == {"slurm.conf": "sha256:ab"}


def test_a_torn_journal_does_not_block_operations(jrnl):
    os.makedirs(jrnl.directory, exist_ok=True)
    with open(jrnl.path, "w") as handle:
        handle.write('{"current": {"operation": "dep')
    with jrnl.operation("deploy"):
        assert jrnl.interrupted() == []
    assert jrnl.history()[0]["operation"] == "deploy"


def test_runner_arguments_that_do_not_bind_are_a_failure_with_exit_1():
    from salt_ext import runner_support  # noqa: PLC0415

    @runner_support.errors_as_result("slurm")
    def drain(nodes, reason):
        return {"result": True}

    ret = drain("n1")
    assert ret["result"] is False and ret["retcode"] == 1
    assert "reason" in ret["error"] and "slurm.drain" in ret["error"]
    assert drain("n1", reason="x") == {"result": True}


def test_a_rollouts_tracker_writes_into_the_running_entry(jrnl):
    with jrnl.operation("apply_conf") as entry:
        tracker = jrnl.tracker(entry)
        tracker.record("push the files", dirty=True, rollout={"class": "reconfigure"})
        with open(jrnl.path) as handle:
            on_disk = json.load(handle)["current"]
        assert on_disk["rollout"] == {"class": "reconfigure"}
        assert on_disk["steps"][-1]["step"] == "push the files"
        tracker.set_applied({"slurm.conf": "sha256:cd"})
    assert jrnl.applied()["files"] == {"slurm.conf": "sha256:cd"}
