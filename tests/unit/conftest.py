"""Fixtures for the loader-mocked tests of the exec modules (dunders injected by hand)."""

import types

import pytest

from salt_ext.lib.node import direct
from salt_ext.lib.util import command
from salt_ext.modules import _minion_plan, munge, slurm_controller, slurm_dbd, slurm_node
from salt_ext.states import slurm_dbd as dbd_states
from tests.unit.loader_env import DEBIAN_GRAINS, MACHINE, FakeServices, service_salt


@pytest.fixture
def loader(monkeypatch):
    """Inject Salt's dunders; returns a namespace to adjust grains, pillar and __salt__."""
    env = types.SimpleNamespace(
        salt=service_salt(),
        grains=dict(DEBIAN_GRAINS),
        pillar={"slurm": {"controller": "ctl"}},
        opts={"test": False},
        services=FakeServices(),
    )
    monkeypatch.setattr(slurm_node, "_service", env.services)
    for module in (slurm_node, slurm_controller, munge, slurm_dbd, dbd_states):
        monkeypatch.setattr(module, "__salt__", env.salt, raising=False)
        monkeypatch.setattr(module, "__grains__", env.grains, raising=False)
        monkeypatch.setattr(module, "__pillar__", env.pillar, raising=False)
        monkeypatch.setattr(module, "__opts__", env.opts, raising=False)
    monkeypatch.setattr(_minion_plan, "machine", lambda grains, salt: dict(MACHINE))
    # what the other modules ask of slurm_node through the loader
    for name in ("daemon_running", "daemon_control", "health"):
        env.salt[f"slurm_node.{name}"] = getattr(slurm_node, name)
    return env


@pytest.fixture
def fake_commands(monkeypatch):
    """command.run answering by argv[:3]: a string (stdout) or an exception to raise."""
    answers = {}
    calls = []

    def run(argv, stdin=None, timeout=60, check=True, env=None):
        calls.append((tuple(argv), timeout))
        for key, value in answers.items():
            if tuple(argv[: len(key)]) == key:
                if isinstance(value, Exception):
                    raise value
                if isinstance(value, tuple):
                    out, code = value
                else:
                    out, code = value, 0
                if check and code:
                    raise command.CommandFailed(
                        argv, f"{' '.join(argv)} exited {code}: {out}", code
                    )
                return types.SimpleNamespace(stdout=out, stderr="", returncode=code)
        raise AssertionError(f"unexpected command {argv}")

    monkeypatch.setattr(command, "run", run)
    monkeypatch.setattr(slurm_node.socket, "gethostname", lambda: "n1")
    answers.update(
        {
            ("munge",): "MUNGE:cred:",
            ("unmunge",): "STATUS: Success (0)\n\nsaltext-slurm health",
            ("scontrol", "show", "slurmd"): "Active Steps = NONE",
            ("scontrol", "ping"): "Slurmctld(primary) at ctl is UP",
        }
    )
    return types.SimpleNamespace(answers=answers, calls=calls)


@pytest.fixture
def no_logs(monkeypatch):
    """No daemon logs to read (and none of the host's)."""
    monkeypatch.setattr(direct, "log_tail", lambda path, lines=20: [])
