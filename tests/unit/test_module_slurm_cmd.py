"""Loader-mocked tests for ``slurm.cmd`` (dunders injected by hand)."""

import sys
import types
from unittest.mock import MagicMock

import pytest
import salt.minion
import salt.utils.args
import salt.utils.path
from salt.exceptions import CommandExecutionError, SaltInvocationError

from salt_ext.lib.node import slurm_cmd
from salt_ext.lib.util import outcap
from salt_ext.modules import slurm

USERS = {"alice": 1001, "root": 0}


def _ran(stdout="", stderr="", retcode=0):
    return {"retcode": retcode, "stdout": stdout, "stderr": stderr, "pid": 4242}


@pytest.fixture
def loader(monkeypatch):
    """Inject Salt's dunders; returns a namespace to adjust pillar and ``cmd.run_all``."""
    env = types.SimpleNamespace(
        salt={"cmd.run_all": MagicMock(return_value=_ran())},
        pillar={},
        grains={"id": "node1"},
        opts={"test": False},
    )
    monkeypatch.setattr(slurm, "__salt__", env.salt, raising=False)
    monkeypatch.setattr(slurm, "__pillar__", env.pillar, raising=False)
    monkeypatch.setattr(slurm, "__grains__", env.grains, raising=False)
    monkeypatch.setattr(slurm, "__opts__", env.opts, raising=False)
    monkeypatch.setattr(salt.utils.path, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(slurm_cmd, "_uid_of", lambda name: USERS[name])
    monkeypatch.setattr(slurm_cmd.os, "geteuid", lambda: 0)  # the minion runs as root
    return env


def _run_all(loader):
    loader.salt["cmd.run_all"].assert_called_once()
    return loader.salt["cmd.run_all"].call_args


def _supervised(call):
    """(max_bytes, seconds, Slurm argv) from the outcap supervisor argv cmd.run_all got."""
    argv = call.args[0]
    assert argv[:4] == [sys.executable, "-I", "-m", "salt_ext.lib.util.outcap"]
    assert call.kwargs.get("runas") is None  # the supervisor switches to runas itself
    rest = argv[6:]
    if rest[0] == "--runas":
        rest = rest[2:]
    assert rest[0] == "--"
    return int(argv[4]), float(argv[5]), rest[1:]


def _supervisor_runas(call):
    argv = call.args[0]
    return argv[7] if argv[6] == "--runas" else None


# --- how the command is run ----------------------------------------------------------------


def test_argv_reaches_cmd_run_all_as_a_list_without_a_shell(loader):
    slurm.cmd("squeue", "-u", "alice")
    call = _run_all(loader)
    (argv,) = call.args
    assert isinstance(argv, list)
    assert _supervised(call) == (16 * 1024 * 1024, 60, ["/usr/bin/squeue", "--user=alice"])
    assert call.kwargs["python_shell"] is False
    assert _supervisor_runas(call) is None
    assert call.kwargs["timeout"] > 60  # a backstop behind the supervisor's own timeout
    assert call.kwargs["stdin"] == ""
    assert "shell" not in call.kwargs and "env" not in call.kwargs


def test_metacharacters_never_reach_cmd_run_all(loader):
    with pytest.raises(SaltInvocationError, match=r"'alice;id'"):
        slurm.cmd("squeue", "-u", "alice;id")
    loader.salt["cmd.run_all"].assert_not_called()


def test_returns_the_documented_shape(loader):
    loader.salt["cmd.run_all"].return_value = _ran("PARTITION AVAIL\n", "")
    result = slurm.cmd("sinfo")
    assert result == {
        "retcode": 0,
        "stdout": "PARTITION AVAIL\n",
        "stderr": "",
        "data": None,
        "argv": ["/usr/bin/sinfo"],
    }


@pytest.mark.parametrize(
    ("call_args", "call_kwargs"),
    [
        (("squeue", "-u", "alice"), {}),
        ((["squeue", "-u", "alice"],), {}),
        (("squeue", ["-u", "alice"]), {}),
        ((("squeue", "-u", "alice"),), {}),
    ],
    ids=["separate", "one-list", "command-and-list", "tuple"],
)
def test_separate_and_list_forms_run_the_same_argv(loader, call_args, call_kwargs):
    assert slurm.cmd(*call_args, **call_kwargs)["argv"] == ["/usr/bin/squeue", "--user=alice"]


def test_list_and_separate_arguments_do_not_mix(loader):
    with pytest.raises(SaltInvocationError, match="not both"):
        slurm.cmd(["squeue"], "-h")


def test_empty_command_list_lists_the_allowed_commands(loader):
    with pytest.raises(SaltInvocationError, match="sinfo, squeue"):
        slurm.cmd([])


def test_key_value_kwargs_are_put_back_in_order(loader):
    # what Salt makes of `slurm.cmd scontrol update NodeName=n1 State=DRAIN Reason=maint`
    kwargs = {
        "NodeName": "n1",
        "State": "DRAIN",
        "Reason": "disk failing",
        "__pub_fun": "slurm.cmd",
        "__pub_jid": "20240101000000000000",
    }
    result = slurm.cmd("scontrol", "update", **kwargs)
    assert result["argv"] == [
        "/usr/bin/scontrol",
        "update",
        "NodeName=n1",
        "State=DRAIN",
        "Reason=disk failing",
    ]


def test_integers_from_yaml_become_text(loader):
    assert slurm.cmd("scancel", 123)["argv"] == ["/usr/bin/scancel", "123"]
    assert slurm.cmd("scontrol", "update", JobId=5, TimeLimit=30)["argv"][-2:] == [
        "JobId=5",
        "TimeLimit=30",
    ]


@pytest.mark.parametrize("value", [12.1, True, None, {"a": 1}])
def test_yaml_mangled_arguments_are_refused(loader, value):
    with pytest.raises(SaltInvocationError, match="not text") as excinfo:
        slurm.cmd("sstat", "-j", value)
    assert "12.10" in str(excinfo.value)  # says how to pass it verbatim
    loader.salt["cmd.run_all"].assert_not_called()


def test_yaml_mangled_kwarg_is_refused(loader):
    with pytest.raises(SaltInvocationError, match="bool"):
        slurm.cmd("scontrol", "update", NodeName="n1", State="DRAIN", Reason=True)


@pytest.mark.parametrize("name", ["python_shell", "env", "cwd", "shell", "stdin", "group"])
def test_cmd_run_all_arguments_cannot_be_smuggled_in(loader, name):
    with pytest.raises(SaltInvocationError, match=f"{name}="):
        slurm.cmd("sinfo", **{name: "x"})
    loader.salt["cmd.run_all"].assert_not_called()


def test_binary_is_resolved_on_the_minions_path(loader, monkeypatch):
    monkeypatch.setattr(salt.utils.path, "which", lambda name: f"/opt/slurm/bin/{name}")
    assert slurm.cmd("sinfo", runas="alice")["argv"] == ["/opt/slurm/bin/sinfo"]
    assert _supervised(_run_all(loader))[2][0] == "/opt/slurm/bin/sinfo"


def test_missing_binary_is_a_command_execution_error(loader, monkeypatch):
    monkeypatch.setattr(salt.utils.path, "which", lambda name: None)
    with pytest.raises(CommandExecutionError, match="sacct is not installed"):
        slurm.cmd("sacct", "-j", "1")


# --- runas and root ------------------------------------------------------------------------


def test_runas_is_passed_to_the_supervisor(loader):
    slurm.cmd("srun", "-N1", "-w", "n1", "hostname", runas="alice")
    call = _run_all(loader)
    assert _supervisor_runas(call) == "alice"
    assert _supervised(call)[2] == ["/usr/bin/srun", "--nodes=1", "--nodelist=n1", "hostname"]


def test_unknown_runas_user_is_a_clear_error(loader):
    with pytest.raises(SaltInvocationError, match="runas user 'mallory' does not exist"):
        slurm.cmd("sinfo", runas="mallory")
    loader.salt["cmd.run_all"].assert_not_called()


@pytest.mark.parametrize("runas", [None, "root"])
@pytest.mark.parametrize("job", [("srun", "hostname"), ("sbatch", "--wrap", "id")])
def test_jobs_as_root_are_refused_without_pillar(loader, runas, job):
    with pytest.raises(SaltInvocationError, match="slurm:cmd:allow_root"):
        slurm.cmd(*job, runas=runas)
    loader.salt["cmd.run_all"].assert_not_called()


@pytest.mark.parametrize(
    ("pillar", "allowed"),
    [
        ({"slurm": {"cmd": {"allow_root": True}}}, True),
        ({"slurm": {"cmd": {"allow_root": False}}}, False),
        ({"slurm": {"cmd": {"allow_root": "yes"}}}, False),  # only a real true counts
        ({"slurm": {"cmd": {}}}, False),
        ({"slurm": {"controller": "ctl"}}, False),
        ({}, False),
    ],
)
def test_allow_root_comes_from_pillar_only(loader, pillar, allowed):
    loader.pillar.clear()
    loader.pillar.update(pillar)
    if allowed:
        assert slurm.cmd("srun", "hostname")["argv"] == ["/usr/bin/srun", "hostname"]
    else:
        with pytest.raises(SaltInvocationError, match="root"):
            slurm.cmd("srun", "hostname")
    # the caller can never grant it
    with pytest.raises(SaltInvocationError, match="only by pillar slurm:cmd:allow_root"):
        slurm.cmd("srun", "hostname", allow_root=True)


# --- JSON ----------------------------------------------------------------------------------


def test_json_output_is_parsed_into_data(loader):
    loader.salt["cmd.run_all"].return_value = _ran('{"jobs": [{"job_id": 7}]}')
    result = slurm.cmd("squeue", "-u", "alice", "--json")
    assert result["data"] == {"jobs": [{"job_id": 7}]}
    assert result["argv"] == ["/usr/bin/squeue", "--user=alice", "--json"]


def test_json_true_adds_json(loader):
    loader.salt["cmd.run_all"].return_value = _ran('{"nodes": []}')
    result = slurm.cmd("sinfo", json=True)
    assert result["argv"] == ["/usr/bin/sinfo", "--json"]
    assert result["data"] == {"nodes": []}


def test_json_true_for_scontrol_is_rejected_naming_the_commands_that_have_it(loader):
    with pytest.raises(SaltInvocationError, match="sinfo, squeue, sacct"):
        slurm.cmd("scontrol", "show", "node", json=True)


def test_invalid_json_is_a_command_execution_error(loader):
    loader.salt["cmd.run_all"].return_value = _ran("squeue: warning: not json")
    with pytest.raises(CommandExecutionError, match="no valid JSON"):
        slurm.cmd("squeue", json=True)


@pytest.mark.parametrize("json", ["yes", 1, "true"])
def test_json_must_be_a_boolean(loader, json):
    with pytest.raises(SaltInvocationError, match="json must be True or False"):
        slurm.cmd("sinfo", json=json)


# --- errors --------------------------------------------------------------------------------


def test_failure_raises_command_execution_error_with_stderr_and_exit_code(loader):
    loader.salt["cmd.run_all"].return_value = _ran(
        "", "squeue: error: Invalid user: bob\n", retcode=1
    )
    with pytest.raises(CommandExecutionError) as excinfo:
        slurm.cmd("squeue", "-u", "bob")
    message = str(excinfo.value)
    assert "exited 1" in message
    assert "squeue: error: Invalid user: bob" in message
    assert "/usr/bin/squeue --user=bob" in message
    assert excinfo.value.info["retcode"] == 1
    assert excinfo.value.info["stderr"] == "squeue: error: Invalid user: bob\n"


def test_timeout_is_reported(loader):
    # what the supervisor prints when it kills the command's process group
    loader.salt["cmd.run_all"].return_value = _ran(
        "partial",
        "srun: job 5 queued\nslurm.cmd: still running after 5 s (timeout; at most pillar "
        "slurm:cmd:max_seconds); killed /usr/bin/srun and its process group\n",
        retcode=outcap.EXIT_TIMEOUT,
    )
    with pytest.raises(CommandExecutionError, match="still running after 5 s") as excinfo:
        slurm.cmd("srun", "sleep", "60", runas="alice", timeout=5)
    assert str(excinfo.value).startswith("/usr/bin/srun sleep 60: slurm.cmd:")
    assert _supervised(_run_all(loader))[1] == 5


def test_salt_backstop_timeout_is_reported_too(loader):
    # what cmd.run_all returns should it ever kill the supervisor itself
    loader.salt["cmd.run_all"].return_value = _ran(
        "['/usr/bin/srun', 'sleep'] : Timed out after 35 seconds", "", retcode=1
    )
    with pytest.raises(CommandExecutionError, match="Timed out after 35 seconds"):
        slurm.cmd("srun", "sleep", "60", runas="alice", timeout=5)


def test_output_cap_is_reported_naming_the_pillar_key(loader):
    loader.salt["cmd.run_all"].return_value = _ran(
        "n1\nn2\n",
        "\nslurm.cmd: output passed 4096 bytes (pillar slurm:cmd:max_output_bytes); "
        "killed /usr/bin/scontrol and its process group\n",
        retcode=outcap.EXIT_OUTPUT,
    )
    with pytest.raises(CommandExecutionError, match="slurm:cmd:max_output_bytes"):
        slurm.cmd("scontrol", "show", "hostnames", "n[1-60000]")


def test_a_program_exiting_125_is_not_mistaken_for_the_cap(loader):
    loader.salt["cmd.run_all"].return_value = _ran("", "boom\n", retcode=outcap.EXIT_OUTPUT)
    with pytest.raises(CommandExecutionError, match="exited 125: boom"):
        slurm.cmd("srun", "false", runas="alice")


def test_long_stderr_is_shortened_in_the_error(loader):
    loader.salt["cmd.run_all"].return_value = _ran("", "e" * 100_000 + "THE END", retcode=1)
    with pytest.raises(CommandExecutionError) as excinfo:
        slurm.cmd("sinfo")
    # the message and Salt's "Additional info" both quote the end of stderr only
    assert len(str(excinfo.value)) < 5000 and str(excinfo.value).endswith("THE END")


# --- limits from pillar slurm:cmd ---------------------------------------------------------


def test_limits_come_from_pillar(loader):
    loader.pillar["slurm"] = {"cmd": {"max_output_bytes": 4096, "max_seconds": 120}}
    slurm.cmd("sinfo", timeout=120)
    assert _supervised(_run_all(loader))[:2] == (4096, 120)
    with pytest.raises(SaltInvocationError, match="slurm:cmd:max_seconds"):
        slurm.cmd("sinfo", timeout=121)


def test_hostlist_cap_from_pillar_reaches_the_gateway(loader):
    loader.pillar["slurm"] = {"cmd": {"max_hosts": 4}}
    with pytest.raises(SaltInvocationError, match="slurm:cmd:max_hosts"):
        slurm.cmd("squeue", "-w", "n[1-5]")
    loader.salt["cmd.run_all"].assert_not_called()


@pytest.mark.parametrize("value", [0, "big", True, 10**12])
def test_bad_limit_pillar_is_refused_naming_the_key(loader, value):
    loader.pillar["slurm"] = {"cmd": {"max_output_bytes": value}}
    with pytest.raises(SaltInvocationError, match="slurm:cmd:max_output_bytes"):
        slurm.cmd("sinfo")
    loader.salt["cmd.run_all"].assert_not_called()


@pytest.mark.parametrize(
    ("runas", "allowed"), [(None, True), ("alice", False)], ids=["admin", "runas"]
)
def test_mass_actions_only_without_runas(loader, runas, allowed):
    calls = [
        ("scontrol", "update", "NodeName=ALL", "State=DRAIN", "Reason=maintenance"),
        ("scancel", "--user=root,alice"),
    ]
    for call_args in calls:
        if allowed:
            slurm.cmd(*call_args, runas=runas)
        else:
            with pytest.raises(SaltInvocationError, match="runas"):
                slurm.cmd(*call_args, runas=runas)


@pytest.mark.parametrize("timeout", [0, -1, slurm.MAX_TIMEOUT + 1, "60", True, None])
def test_timeout_is_checked(loader, timeout):
    with pytest.raises(SaltInvocationError, match="timeout"):
        slurm.cmd("sinfo", timeout=timeout)


@pytest.mark.parametrize(
    ("call_args", "names", "allowed"),
    [
        (("bash", "-c", "id"), "'bash'", "sinfo, squeue"),
        (("scontrol", "shutdown"), "'shutdown'", "show, ping"),
        (("sbatch", "--uid=0", "--wrap", "id"), "'--uid=0'", "--wrap"),
        (("sinfo", "--ui=0"), "'--ui=0'", "-N/--Node"),
        (("scontrol", "update", "PartitionName=p"), "'PartitionName=p'", "NodeName"),
    ],
)
def test_rejected_input_is_a_salt_invocation_error_naming_what_is_allowed(
    loader, call_args, names, allowed
):
    with pytest.raises(SaltInvocationError) as excinfo:
        slurm.cmd(*call_args, runas="alice")
    assert names in str(excinfo.value)
    assert allowed in str(excinfo.value)
    loader.salt["cmd.run_all"].assert_not_called()


# --- __virtual__ ---------------------------------------------------------------------------


def test_virtual_loads_with_any_slurm_client(monkeypatch):
    monkeypatch.setattr(
        salt.utils.path, "which", lambda name: "/usr/bin/squeue" if name == "squeue" else None
    )
    assert slurm.__virtual__() == "slurm"


def test_virtual_explains_why_it_does_not_load(monkeypatch):
    monkeypatch.setattr(salt.utils.path, "which", lambda name: None)
    loaded, reason = slurm.__virtual__()
    assert loaded is False
    assert "sinfo" in reason and "PATH" in reason


# --- Salt's own argument handling (salt CLI, salt-api) -------------------------------------

PUB = {"jid": "20240101000000000000", "fun": "slurm.cmd", "tgt": "node1"}


def _through_salt(published):
    """What the minion calls slurm.cmd with for the published ``arg`` list."""
    args, kwargs = salt.minion.load_args_and_kwargs(slurm.cmd, published, PUB)
    return slurm.cmd(*args, **kwargs)


def test_salt_cli_key_value_arguments_arrive_in_order(loader):
    # salt node1 slurm.cmd scontrol update NodeName=n1 State=DRAIN 'Reason=disk failing'
    cli = ["scontrol", "update", "NodeName=n1", "State=DRAIN", "Reason=disk failing"]
    result = _through_salt(salt.utils.args.parse_input(cli))
    assert result["argv"] == [
        "/usr/bin/scontrol",
        "update",
        "NodeName=n1",
        "State=DRAIN",
        "Reason=disk failing",
    ]


def test_salt_cli_after_double_dash_with_runas(loader):
    # salt node1 slurm.cmd -- srun -N1 -w n1 hostname runas=alice
    cli = ["srun", "-N1", "-w", "n1", "hostname", "runas=alice"]
    result = _through_salt(salt.utils.args.parse_input(cli))
    assert result["argv"] == ["/usr/bin/srun", "--nodes=1", "--nodelist=n1", "hostname"]
    assert _supervisor_runas(_run_all(loader)) == "alice"


def test_salt_cli_yaml_float_is_refused(loader):
    # salt node1 slurm.cmd -- scancel 12.10   (YAML reads 12.1)
    with pytest.raises(SaltInvocationError, match="float"):
        _through_salt(salt.utils.args.parse_input(["scancel", "12.10"]))
    assert _through_salt(salt.utils.args.parse_input(["scancel", '"12.10"']))["argv"] == [
        "/usr/bin/scancel",
        "12.10",
    ]


def test_salt_api_arg_list_and_kwarg(loader):
    # {"client": "local", "fun": "slurm.cmd", "arg": ["squeue", "-u", "alice", "--json"],
    #  "kwarg": {"runas": "alice"}}
    loader.salt["cmd.run_all"].return_value = _ran('{"jobs": []}')
    published = salt.utils.args.condition_input(
        ["squeue", "-u", "alice", "--json"], {"runas": "alice"}
    )
    result = _through_salt(published)
    assert result["data"] == {"jobs": []}
    assert _supervisor_runas(_run_all(loader)) == "alice"


def test_salt_api_nested_list_keeps_key_values_exactly(loader):
    # {"arg": [["scontrol", "update", "NodeName=n1", "State=RESUME"]]}
    published = salt.utils.args.condition_input(
        [["scontrol", "update", "NodeName=n1", "State=RESUME"]], {}
    )
    assert _through_salt(published)["argv"] == [
        "/usr/bin/scontrol",
        "update",
        "NodeName=n1",
        "State=RESUME",
    ]
