"""Loader-mocked tests for the ``slurm_node`` execution module (dunders injected by hand)."""

import types
from unittest.mock import MagicMock, call

import pytest
from salt.exceptions import CommandExecutionError, SaltInvocationError

from salt_ext.lib.node import direct, services
from salt_ext.lib.util import command
from salt_ext.modules import _minion_plan, slurm_node
from tests.unit.loader_env import (
    ALPINE_GRAINS,
    DEBIAN_GRAINS,
    content_hash,
    timeout_error,
    use_grains,
)

# --- daemon_running / daemon_control through a service manager -----------------------------


@pytest.mark.parametrize("manager", ["systemd", "openrc", "sysvinit"])
@pytest.mark.parametrize(
    ("grains", "daemon", "service"),
    [
        (DEBIAN_GRAINS, "munge", "munge"),
        (ALPINE_GRAINS, "munge", "munged"),
        (DEBIAN_GRAINS, "slurmd", "slurmd"),
        (ALPINE_GRAINS, "slurmctld", "slurmctld"),
    ],
)
def test_daemon_running_asks_the_proven_service_with_the_os_service_name(
    loader, manager, grains, daemon, service
):
    use_grains(loader, grains)
    assert slurm_node.daemon_running(daemon, manager) is True
    assert loader.services.calls == [("running", service, manager)]
    assert loader.services.made[0][0] == daemon


def test_daemon_running_false_when_no_process_runs(loader):
    loader.services.running["slurmd"] = False
    assert slurm_node.daemon_running("slurmd", "sysvinit") is False


def test_daemon_running_uses_the_planned_manager_when_none_given(loader, monkeypatch):
    loader.pillar["slurm"]["service_manager"] = "openrc"
    pid_of = MagicMock()
    monkeypatch.setattr(direct, "pid_of", pid_of)
    assert slurm_node.daemon_running("munge") is True
    assert loader.services.calls == [("running", "munge", "openrc")]
    pid_of.assert_not_called()


def test_daemon_running_never_asks_salt_service_status(loader):
    # Debian's init script answers 0 to `status` with no slurmd: service.status is not proof
    loader.salt["service.status"] = MagicMock(return_value=True)
    loader.services.running["slurmd"] = False
    assert slurm_node.daemon_running("slurmd", "sysvinit") is False
    loader.salt["service.status"].assert_not_called()


@pytest.mark.parametrize("manager", ["systemd", "openrc", "sysvinit"])
@pytest.mark.parametrize("action", ["start", "stop", "restart"])
def test_daemon_control_runs_the_proven_action_with_the_os_service_name(loader, manager, action):
    use_grains(loader, ALPINE_GRAINS)
    assert slurm_node.daemon_control("munge", action, manager) is True
    assert loader.services.calls == [(action, "munged", manager)]


def test_daemon_control_debian_munge_service_is_munge(loader):
    slurm_node.daemon_control("munge", "start", "systemd")
    assert loader.services.calls == [("start", "munge", "systemd")]


@pytest.mark.parametrize("manager", ["systemd", "openrc", "sysvinit"])
def test_daemon_control_failure_raises_with_the_evidence_of_this_start(loader, manager):
    loader.services.fail["start"] = services.ServiceError(
        "slurmd started (pid 9) but died within 2 s",
        ["journal: slurmd[9]: fatal: Invalid option -Z"],
    )
    with pytest.raises(CommandExecutionError) as excinfo:
        slurm_node.daemon_control("slurmd", "start", manager)
    message = str(excinfo.value)
    assert "died within 2 s" in message
    assert "journal: slurmd[9]: fatal: Invalid option -Z" in message


def test_daemon_enabled_and_boot_per_manager(loader):
    loader.services.enabled["slurmd"] = False
    assert slurm_node.daemon_enabled("slurmd", "systemd") is False
    assert slurm_node.daemon_boot("slurmd", manager="systemd") == {
        "enabled": True,
        "changed": True,
    }
    assert slurm_node.daemon_boot("slurmd", manager="systemd") == {
        "enabled": True,
        "changed": False,
    }
    assert slurm_node.daemon_boot("slurmd", enable=False, manager="openrc")["changed"] is True
    assert loader.services.enabled["slurmd"] is False


def test_daemon_boot_failure_is_a_command_execution_error(loader):
    loader.services.fail["set_boot"] = services.ServiceError("slurmd is still not enabled")
    with pytest.raises(CommandExecutionError, match="still not enabled"):
        slurm_node.daemon_boot("slurmd", manager="sysvinit")


def test_direct_manager_has_no_boot(loader):
    assert slurm_node.daemon_enabled("slurmd", "direct") is None
    ret = slurm_node.daemon_boot("slurmd", manager="direct")
    assert ret["enabled"] is None and ret["changed"] is False
    assert "state run" in ret["comment"]
    assert loader.services.calls == []


def test_daemon_enabled_rejects_unknown_daemon(loader):
    with pytest.raises(SaltInvocationError, match="daemon must be one of"):
        slurm_node.daemon_enabled("sshd", "systemd")


# --- daemon_running / daemon_control with the direct manager -------------------------------


def test_daemon_running_direct_uses_pid_of(loader, monkeypatch):
    pid_of = MagicMock(return_value=4242)
    monkeypatch.setattr(direct, "pid_of", pid_of)
    assert slurm_node.daemon_running("slurmd", "direct") is True
    pid_of.assert_called_once_with("slurmd", "/etc/slurm/slurm.conf")
    assert loader.services.calls == []


def test_daemon_running_direct_false_without_pid(loader, monkeypatch):
    monkeypatch.setattr(direct, "pid_of", MagicMock(return_value=None))
    assert slurm_node.daemon_running("munge", "direct", conf="/tmp/x.conf") is False
    direct.pid_of.assert_called_once_with("munge", "/tmp/x.conf")


def test_daemon_running_direct_from_pillar_service_manager(loader, monkeypatch):
    loader.pillar["slurm"]["service_manager"] = "direct"
    monkeypatch.setattr(direct, "pid_of", MagicMock(return_value=None))
    assert slurm_node.daemon_running("slurmctld") is False
    direct.pid_of.assert_called_once_with("slurmctld", "/etc/slurm/slurm.conf")
    assert loader.services.calls == []


@pytest.mark.parametrize("action", ["start", "stop", "restart"])
def test_daemon_control_direct_calls_lib_daemons(loader, monkeypatch, action):
    calls = MagicMock()
    for name in ("start", "stop", "restart"):
        monkeypatch.setattr(direct, name, getattr(calls, name))
    assert slurm_node.daemon_control("slurmd", action, "direct") is True
    assert calls.mock_calls == [getattr(call, action)("slurmd", "/etc/slurm/slurm.conf")]
    assert loader.services.calls == []


@pytest.mark.parametrize("action", ["start", "stop", "restart"])
def test_daemon_control_direct_daemon_error_becomes_command_execution_error(
    loader, monkeypatch, action
):
    failure = MagicMock(side_effect=direct.DaemonError("slurmd did not start: fatal: boom"))
    for name in ("start", "stop", "restart"):
        monkeypatch.setattr(direct, name, failure)
    with pytest.raises(CommandExecutionError, match="slurmd did not start: fatal: boom"):
        slurm_node.daemon_control("slurmd", action, "direct")


# --- argument checks -----------------------------------------------------------------------


def test_daemon_control_rejects_unknown_action(loader):
    with pytest.raises(SaltInvocationError) as excinfo:
        slurm_node.daemon_control("slurmd", "reload", "systemd")
    message = str(excinfo.value)
    for allowed in ("start", "stop", "restart"):
        assert allowed in message
    assert "'reload'" in message


def test_daemon_control_rejects_unknown_daemon(loader):
    with pytest.raises(SaltInvocationError) as excinfo:
        slurm_node.daemon_control("sshd", "start", "systemd")
    message = str(excinfo.value)
    for allowed in direct.DAEMONS:
        assert allowed in message
    assert "'sshd'" in message
    assert loader.services.calls == []


def test_restart_rejects_unknown_target(loader):
    with pytest.raises(SaltInvocationError) as excinfo:
        slurm_node.restart("bogus")
    message = str(excinfo.value)
    for allowed in ("munge", "slurmd", "slurmctld", "all"):
        assert allowed in message
    assert loader.services.actions("restart") == []


@pytest.fixture
def proven(monkeypatch):
    """restart()'s proof that the new process answers, recorded instead of waited for."""
    seen = []

    def fake(daemon, plan, old_pid):
        seen.append((daemon, old_pid))
        return {"old_pid": old_pid, "state": "running", "pid": 2, "evidence": "ok"}

    monkeypatch.setattr(slurm_node, "_proven", fake)
    monkeypatch.setattr(slurm_node, "_pid", lambda daemon, conf, plan=None: 1)
    return seen


def test_restart_all_restarts_munge_first_then_installed_daemons(loader, proven):
    loader.salt["cmd.which"] = MagicMock(
        side_effect=lambda name: "/usr/sbin/slurmd" if name == "slurmd" else None
    )
    assert slurm_node.restart("all")["restarted"] == ["munge", "slurmd"]
    assert loader.services.actions("restart") == [("restart", "munge"), ("restart", "slurmd")]
    assert proven == [("munge", 1), ("slurmd", 1)]


def test_restart_all_on_a_combined_host_restarts_everything_munge_first(
    loader, proven, monkeypatch
):
    loader.grains["id"] = "ctl"  # the pillar's controller, and slurmd runs here too
    monkeypatch.setattr(slurm_node, "daemon_running", lambda daemon, *a: daemon == "slurmd")
    assert slurm_node.restart()["restarted"] == ["munge", "slurmctld", "slurmd"]
    assert loader.services.actions("restart") == [
        ("restart", "munge"),
        ("restart", "slurmctld"),
        ("restart", "slurmd"),
    ]


def test_restart_all_leaves_a_daemon_not_of_this_machines_role(loader, proven, monkeypatch):
    """Both packages installed (cmd.which finds every binary): a compute node never gets
    slurmctld started, the controller never gets a slurmd that does not run there."""
    monkeypatch.setattr(slurm_node, "daemon_running", lambda daemon, *a: False)
    loader.grains["id"] = "n1"
    assert slurm_node.restart("all")["restarted"] == ["munge", "slurmd"]
    loader.grains["id"] = "ctl"
    assert slurm_node.restart("all")["restarted"] == ["munge", "slurmctld"]
    assert loader.services.actions("restart") == [
        ("restart", "munge"),
        ("restart", "slurmd"),
        ("restart", "munge"),
        ("restart", "slurmctld"),
    ]


def test_restart_single_daemon_reports_old_and_new_pid(loader, proven):
    assert slurm_node.restart("slurmd") == {
        "restarted": ["slurmd"],
        "daemons": {"slurmd": {"old_pid": 1, "state": "running", "pid": 2, "evidence": "ok"}},
    }
    assert loader.services.actions("restart") == [("restart", "slurmd")]


def _health_sequence(monkeypatch, entries, alive):
    """_proven's view: successive health entries of the daemon, and whether the old pid
    still runs at each look."""
    entries, alive = list(entries), list(alive)
    monkeypatch.setattr(
        slurm_node,
        "_health",
        lambda conf, running, plan=None: {"slurmd": entries.pop(0), "munge": {}},
    )
    monkeypatch.setattr(direct, "is_process", lambda pid, name: alive.pop(0))
    monkeypatch.setattr(slurm_node, "daemon_running", lambda *a: True)
    sleeps = []
    clock = iter(range(0, 1000, 10))
    monkeypatch.setattr(
        slurm_node,
        "time",
        types.SimpleNamespace(monotonic=lambda: next(clock), sleep=sleeps.append),
    )
    return sleeps


PLAN = {"slurm_conf": "/etc/slurm/slurm.conf", "service_manager": "direct"}


def test_proven_waits_until_the_old_process_is_gone_and_a_new_one_answers(monkeypatch):
    hung = {"state": "hung", "pid": 7, "proc_state": "T", "evidence": "pid 7 state T (stopped)"}
    fresh = {"state": "running", "pid": 8, "proc_state": "S", "evidence": "pid 8: answers"}
    starting = {"state": "hung", "pid": 8, "proc_state": "S", "evidence": "no answer"}
    sleeps = _health_sequence(monkeypatch, [hung, starting, fresh], [True, False, False])
    assert slurm_node._proven("slurmd", PLAN, 7) == {"old_pid": 7, **fresh}
    assert len(sleeps) == 2


def test_proven_fails_with_the_evidence_when_the_same_pid_lingers(monkeypatch):
    same = {"state": "running", "pid": 7, "proc_state": "S", "evidence": "pid 7: answers"}
    _health_sequence(monkeypatch, [same] * 10, [False] * 10)
    with pytest.raises(
        CommandExecutionError, match="no new process answers after 30 s: still pid 7"
    ):
        slurm_node._proven("slurmd", PLAN, 7)


def test_proven_fails_when_the_old_process_never_exits(monkeypatch):
    hung = {"state": "hung", "pid": 7, "proc_state": "T", "evidence": "pid 7 state T (stopped)"}
    _health_sequence(monkeypatch, [hung] * 10, [True] * 10)
    with pytest.raises(CommandExecutionError, match=r"the old process \(pid 7\) still runs"):
        slurm_node._proven("slurmd", PLAN, 7)


# --- health: bounded requests; a hung daemon is evidence, never an exception ---------------


@pytest.fixture
def procs(monkeypatch):
    """Pids and /proc states of the daemons."""
    table = {"munge": (11, "S"), "slurmd": (22, "S"), "slurmctld": (33, "S")}
    monkeypatch.setattr(slurm_node, "_pid", lambda daemon, conf, plan=None: table[daemon][0])

    def process_state(pid):  # the table as the test left it
        return {v[0]: v[1] for v in table.values()}.get(pid)

    monkeypatch.setattr(direct, "process_state", process_state)
    return table


NODE = {"munge": True, "slurmd": True}


def test_health_of_a_healthy_node_asks_each_daemon_within_its_bound(fake_commands, procs):
    health = slurm_node._health("/etc/slurm/slurm.conf", NODE)
    assert {d: h["state"] for d, h in health.items()} == {"munge": "running", "slurmd": "running"}
    assert health["slurmd"]["evidence"] == "pid 22: answers `scontrol show slurmd`"
    bounds = {argv[0] if argv[0] != "scontrol" else argv[1]: t for argv, t in fake_commands.calls}
    assert bounds == {"munge": 3, "unmunge": 3, "show": 5}


def test_health_names_a_sigstopped_slurmd_without_asking_it(fake_commands, procs):
    procs["slurmd"] = (22, "T")
    health = slurm_node._health("/etc/slurm/slurm.conf", NODE)
    assert health["slurmd"] == {
        "state": "hung",
        "pid": 22,
        "proc_state": "T",
        "evidence": "pid 22 state T (stopped)",
    }
    assert not any(argv[:3] == ("scontrol", "show", "slurmd") for argv, _ in fake_commands.calls)


def test_health_a_silent_slurmd_is_hung_after_the_bound(fake_commands, procs):
    fake_commands.answers[("scontrol", "show", "slurmd")] = timeout_error(
        ["scontrol", "show", "slurmd"], 5
    )
    health = slurm_node._health("/etc/slurm/slurm.conf", NODE)
    assert health["slurmd"]["state"] == "hung"
    assert health["slurmd"]["evidence"] == "no answer to `scontrol show slurmd` in 5 s"


def test_health_a_slurmd_answering_an_error_is_hung_with_the_error(fake_commands, procs):
    fake_commands.answers[("scontrol", "show", "slurmd")] = ("Connection refused", 1)
    health = slurm_node._health("/etc/slurm/slurm.conf", NODE)
    assert health["slurmd"]["state"] == "hung"
    assert "Connection refused" in health["slurmd"]["evidence"]


def test_health_a_silent_munged_is_hung_and_slurmd_is_not_blamed(fake_commands, procs):
    fake_commands.answers[("munge",)] = timeout_error(["munge"], 3)
    fake_commands.answers[("scontrol", "show", "slurmd")] = timeout_error(["scontrol"], 5)
    health = slurm_node._health("/etc/slurm/slurm.conf", NODE)
    assert health["munge"]["state"] == "hung"
    assert health["munge"]["evidence"] == "no answer to `munge | unmunge` in 3 s"
    assert health["slurmd"]["state"] == "running"
    assert "not asked: munged does not answer" in health["slurmd"]["evidence"]


def test_health_with_munged_stopped_by_a_signal_asks_nothing(fake_commands, procs):
    procs["munge"] = (11, "T")
    health = slurm_node._health("/etc/slurm/slurm.conf", NODE)
    assert health["munge"]["evidence"] == "pid 11 state T (stopped)"
    assert health["slurmd"]["state"] == "running"
    assert fake_commands.calls == []


def test_health_of_a_stopped_daemon(fake_commands, procs):
    health = slurm_node._health("/etc/slurm/slurm.conf", {"munge": True, "slurmd": False})
    assert health["slurmd"] == {
        "state": "stopped",
        "pid": None,
        "proc_state": None,
        "evidence": "slurmd not running",
    }


@pytest.mark.parametrize(
    ("answer", "state"),
    [
        ("Slurmctld(primary) at n1 is UP", "running"),
        ("Slurmctld(primary) at n1 is DOWN", "hung"),
        (None, "hung"),
    ],
)
def test_health_of_slurmctld_from_scontrol_ping(fake_commands, procs, answer, state):
    fake_commands.answers[("scontrol", "ping")] = (
        timeout_error(["scontrol", "ping"], 5) if answer is None else answer
    )
    health = slurm_node._health("/etc/slurm/slurm.conf", {"munge": True, "slurmctld": True})
    assert health["slurmctld"]["state"] == state


def test_health_of_one_daemon_asks_munge_too_and_returns_that_daemon(loader, fake_commands, procs):
    loader.services.running["slurmd"] = True
    health = slurm_node.health("slurmd")
    assert list(health) == ["slurmd"]
    assert health["slurmd"]["state"] == "running"
    assert loader.services.actions("running") == [("running", "munge"), ("running", "slurmd")]


def test_health_of_a_dead_slurmd_is_stopped_whatever_the_controller_says(
    loader, fake_commands, procs
):
    loader.services.running["slurmd"] = False
    assert slurm_node.health("slurmd")["slurmd"]["state"] == "stopped"


def test_status_reports_boot_enablement_per_daemon(loader, fake_commands, procs, monkeypatch):
    loader.salt["cmd.which"] = MagicMock(
        side_effect=lambda name: None if name == "slurmctld" else f"/usr/sbin/{name}"
    )
    monkeypatch.setattr(direct, "loaded_conf", lambda *a: {})
    fake_commands.answers[("slurmd", "-V")] = "slurm 22.05.8"
    fake_commands.answers[("sinfo", "-V")] = "slurm 22.05.8"
    fake_commands.answers[("munged", "-V")] = "munge-0.5.15"
    loader.services.enabled["slurmd"] = False
    result = slurm_node.status()
    assert result["service_manager"] == "systemd"
    assert result["daemons"] == {"munge": True, "slurmd": True}
    assert result["boot"] == {"munge": True, "slurmd": False}
    assert result["health"]["slurmd"]["state"] == "running"


@pytest.fixture
def probed(loader, monkeypatch, no_logs):
    monkeypatch.setattr(
        slurm_node,
        "status",
        lambda: {"slurm_conf_hash": "sha256:c", "health": {"munge": {"state": "running"}}},
    )
    monkeypatch.setattr(slurm_node, "_conf_node_names", lambda conf: {"n1"})


def test_probe_turns_a_ping_timeout_into_evidence(probed, fake_commands):
    fake_commands.answers[("scontrol", "ping")] = timeout_error(["scontrol", "ping"], 5)
    result = slurm_node.probe()
    assert result["controller_ping"] == {
        "ok": False,
        "output": "no answer to `scontrol ping` in 5 s",
        "timed_out": True,
    }
    assert result["munge_roundtrip"] == {"ok": True, "error": None}


def test_probe_does_not_ping_through_a_hung_munged(probed, fake_commands, monkeypatch):
    monkeypatch.setattr(
        slurm_node,
        "status",
        lambda: {
            "slurm_conf_hash": "sha256:c",
            "health": {"munge": {"state": "hung", "evidence": "pid 11 state T (stopped)"}},
        },
    )
    result = slurm_node.probe()
    assert result["controller_ping"]["ok"] is None
    assert result["munge_roundtrip"] == {"ok": False, "error": "pid 11 state T (stopped)"}
    assert fake_commands.calls == []


# --- job_steps on busy nodes ----------------------------------------------------------------


# --- settings ------------------------------------------------------------------------------


def test_settings_returns_the_plan(loader):
    plan = slurm_node.settings()
    assert plan["role"] == "node"
    assert plan["controller"] == "ctl"
    assert plan["service_manager"] == "systemd"
    assert plan["services"]["munge"] == "munge"
    assert plan["slurm_conf"] == "/etc/slurm/slurm.conf"
    assert plan["daemons"] == ["munge", "slurmd"]
    assert plan["conf_files"] == ["slurm.conf", "gres.conf", "cgroup.conf"]
    assert plan["munge_key_path"] == "/etc/munge/munge.key"
    assert plan["conf_on_master"] is False
    assert slurm_node.settings("controller")["role"] == "controller"
    assert slurm_node.settings("controller")["daemons"] == ["munge", "slurmctld"]


def test_settings_reads_the_slurm_dirs_from_the_conf_the_master_serves(loader):
    _serve(loader, {"slurm.conf": "SlurmdSpoolDir=/data/slurmd\nStateSaveLocation=/data/ctld\n"})
    node = slurm_node.settings("node")
    assert node["conf_on_master"] is True
    assert {"path": "/data/slurmd", "user": "root", "group": "root", "mode": "0755"} in (
        node["dirs"]
    )
    ctl = [d["path"] for d in slurm_node.settings("controller")["dirs"]]
    assert "/data/ctld" in ctl and "/data/slurmd" not in ctl
    loader.salt["cp.get_file_str"].assert_called_with("salt://slurm_files/slurm.conf")


def test_settings_a_bad_path_in_the_served_conf_is_a_clear_error(loader):
    _serve(loader, {"slurm.conf": "SlurmdSpoolDir=spool\n"})
    with pytest.raises(CommandExecutionError, match=r"^the slurm.conf the master serves: "):
        slurm_node.settings("node")


def test_daemon_functions_never_ask_the_file_server(loader):
    slurm_node.daemon_running("slurmd")
    loader.salt["cp.hash_file"].assert_not_called()
    loader.salt["cp.get_file_str"].assert_not_called()


@pytest.mark.parametrize(
    ("pillar", "key"),
    [
        ({}, "slurm:controller"),
        ({"controller": "ctl", "service_manager": "launchd"}, "slurm:service_manager"),
        ({"controller": "ctl", "users": {"munge": {"uid": "x"}}}, "slurm:users:munge:uid"),
        ({"controller": "ctl", "munge_key": {"source": "http"}}, "slurm:munge_key:source"),
        ({"controller": "ctl", "verify": {"timeout": -1}}, "slurm:verify:timeout"),
    ],
)
def test_settings_bad_pillar_raises_command_execution_error_naming_the_key(loader, pillar, key):
    loader.pillar["slurm"] = pillar
    with pytest.raises(CommandExecutionError) as excinfo:
        slurm_node.settings()
    message = str(excinfo.value)
    assert message.startswith("bad slurm pillar: slurm:")
    assert message.startswith(f"bad slurm pillar: {key}")


def test_settings_missing_slurm_pillar(loader):
    loader.pillar.pop("slurm")
    with pytest.raises(CommandExecutionError, match=r"^bad slurm pillar: slurm:controller"):
        slurm_node.settings()


def test_settings_rejects_unknown_role(loader):
    with pytest.raises(SaltInvocationError, match="'bogus'"):
        slurm_node.settings("bogus")


def test_machine_reports_runtime_facts(monkeypatch):
    monkeypatch.setattr(slurm_node, "__salt__", {"pkg.install": object()}, raising=False)
    monkeypatch.setattr(slurm_node, "__grains__", dict(DEBIAN_GRAINS), raising=False)
    monkeypatch.setattr(_minion_plan, "_pid1_name", lambda: "init")
    monkeypatch.setattr(_minion_plan, "account", lambda name: (1, 2) if name == "munge" else None)
    facts = slurm_node._machine()
    assert facts["init_grain"] == "systemd"
    assert facts["pid1_name"] == "init"
    assert facts["accounts"] == {"munge": (1, 2), "slurm": None}
    assert facts["pkg_install_available"] is True
    assert isinstance(facts["systemd_booted"], bool)
    assert isinstance(facts["openrc_booted"], bool)


# --- wait_registered -----------------------------------------------------------------------


# --- hardware / conf_files / sync_conf ------------------------------------------------------


def _completed(stdout):
    return types.SimpleNamespace(stdout=stdout, stderr="", returncode=0)


def test_hardware_from_slurmd_c_with_gpus(loader, monkeypatch):
    outputs = {
        "slurmd": "NodeName=n1 CPUs=8 Boards=1 SocketsPerBoard=1 CoresPerSocket=4 "
        "ThreadsPerCore=2 RealMemory=32000\nUpTime=1-00:00:00\n",
        "nvidia-smi": "GPU 0: NVIDIA A100-SXM4-40GB (UUID: GPU-1)\n",
    }
    monkeypatch.setattr(command, "run", lambda argv, **kw: _completed(outputs[argv[0]]))
    monkeypatch.setattr(slurm_node.hardware_lib, "nvidia_device_files", lambda: ["/dev/nvidia0"])
    loader.grains["id"] = "n1"
    result = slurm_node.hardware()
    assert result["source"] == "slurmd -C"
    assert (result["CPUs"], result["ThreadsPerCore"], result["RealMemory"]) == (8, 2, 32000)
    assert result["gpus"]["count"] == 1 and result["gpus"]["type"] == "a100"
    assert result["minion_id"] == "n1"


def test_hardware_falls_back_to_grains_without_slurmd(loader, monkeypatch):
    loader.salt["cmd.which"] = MagicMock(return_value=None)
    loader.grains.update(id="n1", num_cpus=4, mem_total=7900)
    monkeypatch.setattr(slurm_node.hardware_lib, "nvidia_device_files", lambda: [])
    result = slurm_node.hardware()
    assert result == {
        "NodeName": "n1",
        "CPUs": 4,
        "RealMemory": 7900,
        "source": "grains",
        "gpus": {"count": 0, "type": None, "files": [], "autodetect": None},
        "minion_id": "n1",
    }


def test_hardware_falls_back_to_grains_when_slurmd_c_fails(loader, monkeypatch):
    def run(argv, **kw):
        raise command.CommandFailed(argv, "slurmd -C exited 1: fatal", 1)

    monkeypatch.setattr(command, "run", run)
    monkeypatch.setattr(slurm_node.hardware_lib, "nvidia_device_files", lambda: [])
    loader.salt["cmd.which"] = MagicMock(
        side_effect=lambda n: "/usr/sbin/slurmd" if n == "slurmd" else None
    )
    loader.grains.update(id="n1", num_cpus=4, mem_total=7900)
    assert slurm_node.hardware()["source"] == "grains"


@pytest.fixture
def conf_dir(loader, monkeypatch, tmp_path):
    real_plan = slurm_node._plan

    def plan(role="node"):
        result = real_plan(role)
        result["conf_dir"] = str(tmp_path)
        return result

    monkeypatch.setattr(slurm_node, "_plan", plan)
    monkeypatch.setattr(slurm_node.fsutil, "atomic_write", _write_without_chown)
    return tmp_path


def _write_without_chown(path, data, mode=0o644, uid=None, gid=None):
    with open(path, "w") as handle:
        handle.write(data)


def _serve(loader, files):
    loader.salt["cp.hash_file"] = MagicMock(
        side_effect=lambda url: {"hsum": "x"} if url.rsplit("/", 1)[1] in files else False
    )
    loader.salt["cp.get_file_str"] = MagicMock(side_effect=lambda url: files[url.rsplit("/", 1)[1]])


def test_sync_conf_writes_changed_files_only(loader, conf_dir):
    (conf_dir / "slurm.conf").write_text("ClusterName=old\n")
    _serve(loader, {"slurm.conf": "ClusterName=new\n"})
    result = slurm_node.sync_conf()
    assert result["changed"] == ["slurm.conf"]
    assert (conf_dir / "slurm.conf").read_text() == "ClusterName=new\n"
    assert result["hashes"]["gres.conf"] is None
    assert slurm_node.sync_conf()["changed"] == []
    assert slurm_node.conf_files() == {
        "slurm.conf": "ClusterName=new\n",
        "gres.conf": None,
        "cgroup.conf": None,
    }


def test_sync_conf_removes_our_stale_gres_conf_but_not_the_admins(loader, conf_dir):
    from salt_ext.lib.conf import generate  # noqa: PLC0415

    _serve(loader, {"slurm.conf": "ClusterName=x\n"})
    (conf_dir / "gres.conf").write_text(generate.HEADER + "NodeName=g1 Name=gpu Count=1\n")
    (conf_dir / "cgroup.conf").write_text("# the admin's own\nConstrainCores=yes\n")
    result = slurm_node.sync_conf()
    assert "gres.conf" in result["changed"] and not (conf_dir / "gres.conf").exists()
    assert (conf_dir / "cgroup.conf").exists()


def test_sync_conf_without_slurm_conf_on_the_master_says_what_to_run(loader, conf_dir):
    _serve(loader, {})
    with pytest.raises(CommandExecutionError, match="slurm.render_conf"):
        slurm_node.sync_conf()


def test_stage_conf_on_a_full_disk_leaves_the_live_files_and_nothing_staged(
    loader, conf_dir, monkeypatch
):
    (conf_dir / "slurm.conf").write_text("ClusterName=old\n")
    _serve(loader, {"slurm.conf": "ClusterName=new\n", "cgroup.conf": "ConstrainCores=yes\n"})
    writes = []

    def full_after_one(path, data, mode=0o644, uid=None, gid=None):
        if writes:
            raise OSError(28, "No space left on device")
        writes.append(path)
        _write_without_chown(path, data)

    monkeypatch.setattr(slurm_node.fsutil, "atomic_write", full_after_one)
    with pytest.raises(CommandExecutionError, match=r"No space left on device; nothing changed"):
        slurm_node.stage_conf()
    assert writes  # the first file was staged before the disk filled
    assert sorted(p.name for p in conf_dir.iterdir()) == ["slurm.conf"]
    assert (conf_dir / "slurm.conf").read_text() == "ClusterName=old\n"


def test_staged_files_change_nothing_until_commit_and_discard_drops_them(loader, conf_dir):
    (conf_dir / "slurm.conf").write_text("ClusterName=old\n")
    _serve(loader, {"slurm.conf": "ClusterName=new\n"})
    assert slurm_node.stage_conf()["staged"] == ["slurm.conf"]
    assert (conf_dir / "slurm.conf").read_text() == "ClusterName=old\n"
    assert slurm_node.discard_staged_conf() == [
        "slurm.conf" + slurm_node.STAGED_SUFFIX,
        slurm_node.STAGED_MANIFEST,
    ]
    assert slurm_node.commit_conf()["changed"] == []
    assert (conf_dir / "slurm.conf").read_text() == "ClusterName=old\n"
    slurm_node.stage_conf()
    assert slurm_node.commit_conf()["changed"] == ["slurm.conf"]
    assert sorted(p.name for p in conf_dir.iterdir()) == ["slurm.conf"]
    assert (conf_dir / "slurm.conf").read_text() == "ClusterName=new\n"


# --- munge key rotation: stage, activate, discard -----------------------------------------


def test_probe_quotes_the_journal_of_a_dead_daemons_last_run_not_its_old_log(
    probed, fake_commands, monkeypatch
):
    """Issue 13: diagnose quoted slurmd.log lines of an earlier run for a slurmd that had
    died at start under systemd (a bad option: it never wrote its log)."""
    old = ["[2026-11-27T10:00:00] error: an old run's complaint"]
    monkeypatch.setattr(direct, "log_tail", lambda path, lines=20: old)
    monkeypatch.setattr(
        slurm_node,
        "status",
        lambda: {
            "slurm_conf_hash": "sha256:c",
            "daemons": {"munge": True, "slurmd": False},
            "health": {"munge": {"state": "running"}},
        },
    )
    probed_journal = ["journal: slurmd[120]: slurmd: unrecognized option '--no-such-option'"]
    slurm_node._service.journal["slurmd"] = probed_journal  # noqa: SLF001
    result = slurm_node.probe()
    assert result["logs"]["slurmd_last"] == probed_journal
    assert result["logs"]["munged_last"] == old  # munged runs: its log is not replaced
    assert ("last_run", "munge") not in slurm_node._service.actions("last_run")  # noqa: SLF001


def test_sync_conf_test_mode_lists_changes_and_writes_nothing(loader, conf_dir):
    from salt_ext.lib.conf import generate  # noqa: PLC0415

    (conf_dir / "slurm.conf").write_text("ClusterName=old\n")
    (conf_dir / "gres.conf").write_text(generate.HEADER + "NodeName=g1 Name=gpu Count=1\n")
    _serve(loader, {"slurm.conf": "ClusterName=new\n"})
    result = slurm_node.sync_conf(test=True)
    assert result["changed"] == ["gres.conf", "slurm.conf"]
    assert result["actions"] == {"slurm.conf": "write", "gres.conf": "remove"}
    assert result["previous"]["slurm.conf"] == content_hash(b"ClusterName=old\n")
    assert result["hashes"]["slurm.conf"] == content_hash(b"ClusterName=new\n")
    assert sorted(p.name for p in conf_dir.iterdir()) == ["gres.conf", "slurm.conf"]
    assert (conf_dir / "slurm.conf").read_text() == "ClusterName=old\n"
    assert "ClusterName" not in repr(result)


def test_sync_conf_reports_what_it_did_with_old_and_new_hashes(loader, conf_dir):
    _serve(loader, {"slurm.conf": "ClusterName=new\n"})
    result = slurm_node.sync_conf()
    assert result["actions"] == {"slurm.conf": "write"}
    assert result["previous"]["slurm.conf"] is None
    assert result["hashes"]["slurm.conf"] == content_hash(b"ClusterName=new\n")


def test_sync_conf_refuses_another_conf_dir(loader, conf_dir):
    _serve(loader, {"slurm.conf": "ClusterName=new\n"})
    with pytest.raises(SaltInvocationError, match="conf_dir"):
        slurm_node.sync_conf(conf_dir="/tmp/elsewhere")
    assert not (conf_dir / "slurm.conf").exists()


def test_stale_compares_the_daemons_start_with_the_files(loader, monkeypatch):
    seen = []

    def loaded(daemon, files, conf):
        seen.append((daemon, files, conf))
        return {"stale": files == ["/k"]}

    monkeypatch.setattr(direct, "loaded_conf", loaded)
    assert slurm_node.stale("slurmctld", "/k", conf="/c") is True
    assert slurm_node.stale("slurmctld", ["/old"], conf="/c") is False
    assert seen == [("slurmctld", ["/k"], "/c"), ("slurmctld", ["/old"], "/c")]
    with pytest.raises(SaltInvocationError):
        slurm_node.stale("bash", ["/k"])


def test_daemon_boot_forget_is_only_for_disabling(loader):
    with pytest.raises(SaltInvocationError, match="forget"):
        slurm_node.daemon_boot("slurmrestd", enable=True, manager="sysvinit", forget=True)
