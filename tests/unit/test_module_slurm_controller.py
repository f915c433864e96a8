"""Loader-mocked tests for the ``slurm_controller`` execution module (fixtures in
tests/unit/conftest.py)."""

import time
import types
from unittest.mock import MagicMock

import pytest

from salt_ext.lib.node import direct, scontrol
from salt_ext.lib.util import command
from salt_ext.modules import slurm_controller
from tests.unit.loader_env import ZERO_BYTES, timeout_error


def test_controller_up_survives_a_silent_controller(loader, fake_commands, monkeypatch):
    fake_commands.answers[("scontrol", "ping")] = timeout_error(["scontrol", "ping"], 15)
    clock = iter([0, 0, 100])
    monkeypatch.setattr(
        slurm_controller,
        "time",
        types.SimpleNamespace(monotonic=lambda: next(clock), sleep=lambda s: None),
    )
    result = slurm_controller.up(timeout=10)
    assert result["ok"] is False and "no answer to `scontrol ping` in 15 s" in result["output"]


def _node_line(name, alloc, mem_alloc, state):
    return (
        f"NodeName={name} CPUAlloc={alloc} CPUEfctv=2 CPUTot=2 RealMemory=1000 "
        f"AllocMem={mem_alloc} State={state}"
    )


def test_job_steps_reports_a_full_node_busy_with_its_jobs_and_runs_no_step(
    loader, fake_commands, monkeypatch
):
    monkeypatch.setattr(slurm_controller, "_slurm_user", lambda: "slurm")
    fake_commands.answers[("scontrol", "show", "node")] = "\n".join(
        [
            _node_line("n1", 2, 1000, "ALLOCATED"),
            _node_line("n2", 0, 0, "IDLE"),
            _node_line("n3", 2, 100, "ALLOCATED"),
        ]
    )
    fake_commands.answers[("squeue", "-h", "-w")] = ""
    fake_commands.answers[("srun",)] = "n2"

    def squeue(node, pending=False, running_only=False):
        assert running_only
        return {"n1": ["12"], "n3": []}[node]

    monkeypatch.setattr(slurm_controller, "node_jobs", squeue)
    steps = slurm_controller.job_steps(["n1", "n2", "n3"])
    assert steps["n1"] == {
        "ok": True,
        "busy": True,
        "jobs": ["12"],
        "output": "busy: 2/2 CPUs, 1000/1000 MB allocated by running job(s) 12",
    }
    assert steps["n2"] == {"ok": True, "output": "n2"}
    assert steps["n3"]["ok"] is False and "yet no job runs there" in steps["n3"]["output"]
    sruns = [argv for argv, _ in fake_commands.calls if argv[0] == "srun"]
    assert [argv[2] for argv in sruns] == ["n2"]


def test_job_steps_a_step_that_could_not_start_because_a_job_took_the_node_is_busy(
    loader, fake_commands, monkeypatch
):
    monkeypatch.setattr(slurm_controller, "_slurm_user", lambda: "slurm")
    looks = iter([_node_line("n1", 0, 0, "IDLE"), _node_line("n1", 2, 1000, "ALLOCATED")])
    monkeypatch.setattr(
        slurm_controller, "cluster_nodes", lambda: scontrol.node_states(next(looks))
    )
    fake_commands.answers[("srun",)] = ("srun: error: Unable to allocate resources", 1)
    monkeypatch.setattr(slurm_controller, "node_jobs", lambda node, running_only=False: ["15"])
    steps = slurm_controller.job_steps(["n1"])
    assert steps["n1"]["ok"] is True and steps["n1"]["jobs"] == ["15"]


def test_node_jobs_pending_lists_only_jobs_asking_for_the_node(loader, monkeypatch):
    out = "11|n[2-4]\n12|\n13|n1,n5\n14|n3\n"
    monkeypatch.setattr(command, "run", MagicMock(return_value=types.SimpleNamespace(stdout=out)))
    assert slurm_controller.node_jobs("n3", pending=True) == ["11", "14"]
    command.run.assert_called_once_with(
        ["squeue", "-h", "-t", "PENDING", "-o", "%i|%n"], timeout=30
    )


def test_wait_registered_stops_early_on_munge_key_mismatch(loader, monkeypatch, no_logs):
    run = MagicMock(side_effect=command.CommandFailed(["scontrol"], ZERO_BYTES, 1))
    monkeypatch.setattr(command, "run", run)
    sleeps = []
    monkeypatch.setattr(
        slurm_controller,
        "time",
        types.SimpleNamespace(monotonic=time.monotonic, sleep=sleeps.append),
    )
    began = time.monotonic()
    result = slurm_controller.wait_registered(timeout=600)
    assert time.monotonic() - began < 5
    assert result["ok"] is False
    assert "munge key mismatch" in result["cause"]
    assert result["evidence"][0] == ZERO_BYTES
    assert result["state"] is None
    assert run.call_count == 5
    assert len(sleeps) == run.call_count - 1
    run.assert_called_with(["scontrol", "show", "node", "-o", "n1"], timeout=15)


def test_wait_registered_quotes_telling_log_lines(loader, monkeypatch):
    logs = {
        "/var/log/slurm/slurmd.log": [
            "[t] slurmd started",
            "[t] error: Unable to register: Zero Bytes were transmitted or received",
            "[t] error: something else went wrong",
        ],
        "/var/log/munge/munged.log": ["munged: Info: started"],
    }
    monkeypatch.setattr(direct, "log_tail", lambda path, lines=20: logs.get(path, []))
    monkeypatch.setattr(direct, "spec", lambda name, conf=None: dict(direct.DAEMONS[name]))
    monkeypatch.setattr(
        command, "run", MagicMock(side_effect=command.CommandFailed([], ZERO_BYTES))
    )
    monkeypatch.setattr(
        slurm_controller,
        "time",
        types.SimpleNamespace(monotonic=time.monotonic, sleep=lambda s: None),
    )
    result = slurm_controller.wait_registered("n7", timeout=600)
    assert result["evidence"] == [
        ZERO_BYTES,
        "slurmd: [t] error: Unable to register: Zero Bytes were transmitted or received",
        "slurmd: [t] error: something else went wrong",
    ]
    command.run.assert_called_with(["scontrol", "show", "node", "-o", "n7"], timeout=15)


def test_wait_registered_ok_once_the_node_is_usable(loader, monkeypatch, no_logs):
    outputs = [
        command.CommandFailed([], "scontrol: error: Connection refused"),
        types.SimpleNamespace(stdout="NodeName=n1 State=DOWN* Reason=Not responding\n"),
        types.SimpleNamespace(stdout="NodeName=n1 Arch=x86_64 State=IDLE CPUTot=1\n"),
    ]
    monkeypatch.setattr(command, "run", MagicMock(side_effect=outputs))
    monkeypatch.setattr(
        slurm_controller,
        "time",
        types.SimpleNamespace(monotonic=time.monotonic, sleep=lambda s: None),
    )
    result = slurm_controller.wait_registered(timeout=600)
    assert result["ok"] is True
    assert result["state"]["state"] == "IDLE"
    assert command.run.call_count == 3


def test_wait_registered_accepts_an_admin_drain_but_not_an_invalid_registration(
    loader, monkeypatch, no_logs
):
    drained = "NodeName=n1 State=IDLE+DRAIN Reason=maintenance [root@t]\n"
    monkeypatch.setattr(
        command, "run", MagicMock(return_value=types.SimpleNamespace(stdout=drained))
    )
    result = slurm_controller.wait_registered(timeout=600)
    assert result["ok"] is True and result["state"]["drained"] is True
    invalid = "NodeName=n1 State=IDLE+DRAIN+INVALID_REG Reason=Low RealMemory\n"
    monkeypatch.setattr(
        command, "run", MagicMock(return_value=types.SimpleNamespace(stdout=invalid))
    )
    monkeypatch.setattr(slurm_controller, "_evidence", lambda plan, daemon: [])
    clock = iter(range(0, 10000, 5))
    monkeypatch.setattr(
        slurm_controller,
        "time",
        types.SimpleNamespace(monotonic=lambda: next(clock), sleep=lambda s: None),
    )
    result = slurm_controller.wait_registered(timeout=10)
    assert result["ok"] is False and result["state"]["registered"] is False


def test_wait_registered_gives_up_at_the_timeout(loader, monkeypatch, no_logs):
    clock = {"now": 0.0}

    def sleep(seconds):
        clock["now"] += seconds

    monkeypatch.setattr(
        slurm_controller, "time", types.SimpleNamespace(monotonic=lambda: clock["now"], sleep=sleep)
    )
    # a controller that keeps refusing: transient, so no early stop
    monkeypatch.setattr(
        command,
        "run",
        MagicMock(side_effect=command.CommandFailed([], "scontrol: error: Connection refused")),
    )
    result = slurm_controller.wait_registered(timeout=10)
    assert result["ok"] is False
    assert result["waited"] == pytest.approx(11, abs=1)
    assert command.run.call_count == 12
    assert result["cause"] == "slurmd cannot reach the controller"


def test_wait_registered_zero_bytes_streak_resets_after_an_answer(loader, monkeypatch, no_logs):
    failure = command.CommandFailed([], ZERO_BYTES)
    down = types.SimpleNamespace(stdout="NodeName=n1 State=DOWN Reason=rebooting\n")
    idle = types.SimpleNamespace(stdout="NodeName=n1 State=IDLE\n")
    outputs = [failure] * 4 + [down] + [failure] * 4 + [idle]
    monkeypatch.setattr(command, "run", MagicMock(side_effect=outputs))
    monkeypatch.setattr(
        slurm_controller,
        "time",
        types.SimpleNamespace(monotonic=time.monotonic, sleep=lambda s: None),
    )
    result = slurm_controller.wait_registered(timeout=600)
    assert result["ok"] is True
    assert command.run.call_count == len(outputs)
