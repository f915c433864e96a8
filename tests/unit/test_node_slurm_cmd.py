"""``salt_ext.lib.node.slurm_cmd``: hostile input is refused by name, legitimate commands pass.

The threat model in the module docstring names these tests.
"""

import pytest

from salt_ext.lib.node import slurm_cmd
from salt_ext.lib.node.slurm_cmd import GatewayError, build_argv, parse_output

USERS = {"alice": 1001, "bob": 1002, "root": 0, "toor": 0}


@pytest.fixture(autouse=True)
def users(monkeypatch):
    """Known accounts, and a minion running as root (its normal case)."""

    def uid_of(name):
        return USERS[name]  # KeyError like pwd.getpwnam

    monkeypatch.setattr(slurm_cmd, "_uid_of", uid_of)
    monkeypatch.setattr(slurm_cmd.os, "geteuid", lambda: 0)


def _refused(command, args, runas=None, allow_root=False, json=None):
    with pytest.raises(GatewayError) as excinfo:
        build_argv(command, args, runas=runas, allow_root=allow_root, json=json)
    return str(excinfo.value)


def _q(token):
    return repr(token)


# (id, command, args, runas, text the message must contain: the offending token)
HOSTILE = [
    # 1. shell metacharacters
    ("semicolon", "squeue", ["-u", "alice;id"], None, _q("alice;id")),
    ("and-and", "sinfo", ["-N", "&&", "id"], None, _q("&&")),
    ("pipe", "squeue", ["-o", "%i|%t"], None, _q("%i|%t")),
    ("dollar-paren", "scontrol", ["show", "node", "$(id)"], None, _q("$(id)")),
    ("backticks", "scancel", ["`id`"], None, _q("`id`")),
    ("redirect", "sinfo", ["-o", "%N", ">/etc/passwd"], None, _q(">/etc/passwd")),
    ("backslash", "scontrol", ["show", "node", "n1\\"], None, _q("n1\\")),
    ("metachar-in-program", "srun", ["sh", "-c", "id;id"], "alice", _q("id;id")),
    # 2. commands that are not on the list
    ("cmd-bash", "bash", ["-c", "id"], None, _q("bash")),
    ("cmd-sacctmgr", "sacctmgr", ["-i", "delete", "user", "bob"], None, _q("sacctmgr")),
    ("cmd-abs-path", "/usr/bin/sinfo", [], None, _q("/usr/bin/sinfo")),
    ("cmd-dotdot", "../sinfo", [], None, _q("../sinfo")),
    ("cmd-semicolon", "sinfo;id", [], None, _q("sinfo;id")),
    ("cmd-upper", "SINFO", [], None, _q("SINFO")),
    ("cmd-space", "sinfo ", [], None, _q("sinfo ")),
    ("cmd-empty", "", [], None, _q("")),
    ("cmd-not-a-string", ["sinfo"], [], None, _q(["sinfo"])),
    # 3. acting as another user
    ("uid-equals", "sbatch", ["--uid=0", "--wrap", "id"], "alice", _q("--uid=0")),
    ("uid-separate", "srun", ["--uid", "0", "hostname"], "alice", _q("--uid")),
    ("gid", "sbatch", ["--gid=0", "--wrap", "id"], "alice", _q("--gid=0")),
    ("scontrol-uid", "scontrol", ["-u", "0", "hold", "123"], None, _q("-u")),
    ("sbatch-u-root", "sbatch", ["-u", "root", "--wrap", "id"], "alice", _q("-u")),
    ("sacct-uid", "sacct", ["--uid=0"], None, _q("--uid=0")),
    # 4. abbreviations getopt_long / scontrol would accept
    ("uid-prefix", "sbatch", ["--ui=0", "--wrap", "id"], "alice", _q("--ui=0")),
    ("nodes-prefix", "srun", ["--nod=2", "hostname"], "alice", _q("--nod=2")),
    ("format-prefix", "sinfo", ["--form=%N"], None, _q("--form=%N")),
    ("scontrol-rec", "scontrol", ["rec"], None, _q("rec")),
    ("show-entity-prefix", "scontrol", ["show", "hostn", "n1"], None, _q("hostn")),
    (
        "update-key-prefix",
        "scontrol",
        ["update", "NodeName=n1", "Sta=DRAIN", "Reason=x"],
        None,
        _q("Sta=DRAIN"),
    ),
    # 5. parser confusion
    ("option-looking-value", "srun", ["-o", "--uid=0", "hostname"], "alice", _q("--uid=0")),
    ("option-looking-attached", "sinfo", ["--format=-x"], None, _q("-x")),
    ("double-dash", "squeue", ["--", "--uid=0"], None, _q("--")),
    ("flag-with-value", "sinfo", ["--noheader=1"], None, _q("--noheader=1")),
    ("exclusive-user", "srun", ["--exclusive=user", "hostname"], "alice", "--exclusive"),
    ("denied-in-cluster", "sinfo", ["-Nhi5"], None, _q("-Nhi5")),
    ("dash-positional", "scontrol", ["show", "node", "-n1"], None, _q("-n1")),
    # 6. environment tricks
    (
        "export-ld-preload",
        "srun",
        ["--export=ALL,LD_PRELOAD=/x", "hostname"],
        "alice",
        _q("--export=ALL,LD_PRELOAD=/x"),
    ),
    ("get-user-env", "sbatch", ["--get-user-env", "--wrap", "id"], "alice", _q("--get-user-env")),
    (
        "export-file",
        "sbatch",
        ["--export-file=/etc/environment", "--wrap", "id"],
        "alice",
        "--export-file",
    ),
    # 7. hooks and file copies
    ("prolog", "srun", ["--prolog=/bin/sh", "hostname"], "alice", _q("--prolog=/bin/sh")),
    ("task-prolog", "srun", ["--task-prolog", "/tmp/x", "hostname"], "alice", _q("--task-prolog")),
    ("epilog", "srun", ["--epilog=/bin/sh", "hostname"], "alice", _q("--epilog=/bin/sh")),
    ("container", "srun", ["--container=/tmp/b", "hostname"], "alice", _q("--container=/tmp/b")),
    ("bcast", "srun", ["--bcast=/etc/cron.d/x", "hostname"], "alice", _q("--bcast=/etc/cron.d/x")),
    ("propagate", "sbatch", ["--propagate", "--wrap", "id"], "alice", _q("--propagate")),
    ("no-allocate", "srun", ["-Z", "-w", "n1", "hostname"], "alice", _q("-Z")),
    ("jobid-attach", "srun", ["--jobid=99", "hostname"], "alice", _q("--jobid=99")),
    # 8. files in the wrong place
    (
        "output-etc-passwd",
        "sbatch",
        ["--wrap", "sleep 5", "-o", "/etc/passwd"],
        "alice",
        _q("/etc/passwd"),
    ),
    ("chdir-root", "sbatch", ["--chdir=/root", "--wrap", "id"], "alice", _q("/root")),
    ("error-dotdot", "srun", ["-e", "../../etc/x", "hostname"], "alice", _q("../../etc/x")),
    ("input-munge-key", "srun", ["-i/etc/munge/munge.key", "cat"], "alice", "/etc/munge/munge.key"),
    # 9. jobs as root
    ("srun-as-minion-root", "srun", ["hostname"], None, "root"),
    ("sbatch-runas-root", "sbatch", ["--wrap", "id"], "root", _q("root")),
    ("srun-runas-uid0-alias", "srun", ["hostname"], "toor", _q("toor")),
    ("runas-unknown", "sinfo", [], "mallory", _q("mallory")),
    ("runas-injection", "sinfo", [], "alice;id", _q("alice;id")),
    # 10. scontrol changing the cluster or reading files
    ("scontrol-shutdown", "scontrol", ["shutdown"], None, _q("shutdown")),
    ("scontrol-takeover", "scontrol", ["takeover"], None, _q("takeover")),
    ("scontrol-reconfigure", "scontrol", ["reconfigure"], None, _q("reconfigure")),
    ("scontrol-delete", "scontrol", ["delete", "PartitionName=p"], None, _q("delete")),
    ("scontrol-create", "scontrol", ["create", "PartitionName=x", "Nodes=ALL"], None, _q("create")),
    ("scontrol-abort", "scontrol", ["ABORT"], None, _q("ABORT")),
    ("scontrol-write", "scontrol", ["write", "batch_script", "1", "x"], None, _q("write")),
    (
        "update-partition",
        "scontrol",
        ["update", "PartitionName=p", "State=DOWN"],
        None,
        _q("PartitionName=p"),
    ),
    (
        "update-node-down-cpus",
        "scontrol",
        ["update", "NodeName=n1", "State=DOWN", "CPUs=999"],
        None,
        _q("State=DOWN"),
    ),
    (
        "update-node-cpus",
        "scontrol",
        ["update", "NodeName=n1", "State=DRAIN", "Reason=x", "CPUs=999"],
        None,
        _q("CPUs=999"),
    ),
    (
        "update-job-priority",
        "scontrol",
        ["update", "JobId=1", "Priority=99999"],
        None,
        _q("Priority=99999"),
    ),
    ("update-job-nice-negative", "scontrol", ["update", "JobId=1", "Nice=-100"], None, _q("-100")),
    (
        "show-hostlist-file",
        "scontrol",
        ["show", "hostlist", "/etc/munge/munge.key"],
        None,
        _q("/etc/munge/munge.key"),
    ),
    # 11. het-job separator re-opens option parsing
    ("het-separator", "srun", ["hostname", ":", "--prolog=/x", "hostname"], "alice", _q(":")),
    # 12. control characters
    ("newline", "scontrol", ["show", "node", "n1\nid"], None, _q("n1\nid")),
    ("nul", "squeue", ["-u", "alice\x00root"], None, _q("alice\x00root")),
    ("tab", "sinfo", ["-o", "%N\t%t"], None, _q("%N\t%t")),
    ("carriage-return", "scancel", ["123\r"], None, _q("123\r")),
    (
        "bidi",
        "scontrol",
        ["update", "NodeName=n1", "State=DRAIN", "Reason=ok\u202eevil"],
        None,
        "\\u202e",
    ),
    # 13. limits and commands that never end
    (
        "too-many-args",
        "squeue",
        ["-h"] * (slurm_cmd.MAX_ARGS + 1),
        None,
        f"{slurm_cmd.MAX_ARGS + 1} arguments",
    ),
    ("over-long-arg", "squeue", ["-u", "a" * 5000], None, "5000 characters"),
    ("empty-arg", "squeue", ["-u", ""], None, "empty"),
    ("iterate", "squeue", ["-i", "5"], None, _q("-i")),
    ("scancel-interactive", "scancel", ["-i", "123"], None, _q("-i")),
    ("scontrol-interactive", "scontrol", [], None, "subcommand"),
    ("sbatch-script-on-stdin", "sbatch", [], "alice", "--wrap"),
    # 14. other users' secrets
    ("sacct-env-vars", "sacct", ["--env-vars", "-j", "1"], None, _q("--env-vars")),
    ("sacct-batch-script", "sacct", ["-B", "-j", "1"], None, _q("-B")),
    ("scontrol-token", "scontrol", ["token", "username=root"], None, _q("token")),
    # 15. mass action
    ("scancel-sweep", "scancel", ["-p", "batch"], None, "--partition"),
    ("scancel-bare", "scancel", [], None, "job ids"),
    # not a positional where none is taken
    ("squeue-positional", "squeue", ["alice"], None, _q("alice")),
    ("wrap-directive", "sbatch", ["--wrap", "#SBATCH --uid=0"], "alice", _q("#SBATCH --uid=0")),
]


@pytest.mark.parametrize(
    ("command", "args", "runas", "names"),
    [case[1:] for case in HOSTILE],
    ids=[case[0] for case in HOSTILE],
)
def test_hostile_input_is_rejected_naming_the_token(command, args, runas, names):
    message = _refused(command, args, runas=runas)
    assert names in message


def test_there_are_more_than_thirty_hostile_cases():
    assert len(HOSTILE) >= 30
    assert len({case[0] for case in HOSTILE}) == len(HOSTILE)


# (command, args, runas, argv that runs)
ALLOWED = [
    (
        "sinfo",
        ["-N", "-h", "-o", "%N %t"],
        None,
        ["sinfo", "--Node", "--noheader", "--format=%N %t"],
    ),
    ("squeue", ["-u", "alice", "--json"], None, ["squeue", "--user=alice", "--json"]),
    ("scontrol", ["show", "node", "n1"], None, ["scontrol", "show", "node", "n1"]),
    (
        "scontrol",
        ["update", "NodeName=n1", "State=DRAIN", 'Reason="maintenance"'],
        None,
        ["scontrol", "update", "NodeName=n1", "State=DRAIN", 'Reason="maintenance"'],
    ),
    (
        "sbatch",
        ["--wrap", "sleep 5", "-o", "/dev/null"],
        "alice",
        ["sbatch", "--wrap=sleep 5", "--output=/dev/null"],
    ),
    ("scancel", ["123"], None, ["scancel", "123"]),
    (
        "sacct",
        ["-j", "123", "-o", "JobID,State"],
        None,
        ["sacct", "--jobs=123", "--format=JobID,State"],
    ),
    (
        "srun",
        ["-N1", "-w", "n1", "hostname"],
        "alice",
        ["srun", "--nodes=1", "--nodelist=n1", "hostname"],
    ),
    ("sstat", ["-j", "12.0"], None, ["sstat", "--jobs=12.0"]),
    ("scontrol", ["ping"], None, ["scontrol", "ping"]),
    ("scontrol", ["version"], None, ["scontrol", "version"]),
    (
        "scontrol",
        ["-o", "show", "job", "123"],
        None,
        ["scontrol", "--oneliner", "show", "job", "123"],
    ),
    ("scontrol", ["show", "nodes"], None, ["scontrol", "show", "node"]),
    ("scontrol", ["SHOW", "Partition", "batch"], None, ["scontrol", "show", "partition", "batch"]),
    (
        "scontrol",
        ["show", "hostnames", "n[1-3]"],
        None,
        ["scontrol", "show", "hostnames", "n[1-3]"],
    ),
    ("scontrol", ["show", "step", "12.0"], None, ["scontrol", "show", "step", "12.0"]),
    ("scontrol", ["hold", "123", "124"], "alice", ["scontrol", "hold", "123", "124"]),
    ("scontrol", ["release", "123"], None, ["scontrol", "release", "123"]),
    ("scontrol", ["requeue", "123_4"], None, ["scontrol", "requeue", "123_4"]),
    ("scontrol", ["listpids"], None, ["scontrol", "listpids"]),
    (
        "scancel",
        ["-u", "alice", "-t", "PENDING"],
        None,
        ["scancel", "--user=alice", "--state=PENDING"],
    ),
    ("scancel", ["-s", "USR1", "123.0"], "alice", ["scancel", "--signal=USR1", "123.0"]),
    ("squeue", ["-u", "root"], None, ["squeue", "--user=root"]),
    (
        "squeue",
        ["-h", "-t", "R,PD", "-p", "batch"],
        None,
        ["squeue", "--noheader", "--states=R,PD", "--partition=batch"],
    ),
    ("sinfo", ["-S", "-t"], None, ["sinfo", "--sort=-t"]),
    ("sinfo", ["-R"], None, ["sinfo", "--list-reasons"]),
    (
        "sacct",
        ["-S", "now-1hours", "-X", "-P"],
        None,
        ["sacct", "--starttime=now-1hours", "--allocations", "--parsable2"],
    ),
    (
        "sbatch",
        ["-J", "nightly", "-t", "1:00:00", "-o", "logs/slurm-%j.out", "job.sh", "--fast"],
        "alice",
        [
            "sbatch",
            "--job-name=nightly",
            "--time=1:00:00",
            "--output=logs/slurm-%j.out",
            "job.sh",
            "--fast",
        ],
    ),
    (
        "srun",
        ["-N2", "--mem=4G", "-G", "gpu:1", "--exclusive", "-l", "hostname"],
        "alice",
        ["srun", "--nodes=2", "--mem=4G", "--gpus=gpu:1", "--exclusive", "--label", "hostname"],
    ),
]


@pytest.mark.parametrize(("command", "args", "runas", "argv"), ALLOWED)
def test_allowed_commands_build_the_expected_argv(command, args, runas, argv):
    assert build_argv(command, args, runas=runas) == argv


def test_unknown_command_lists_the_allowed_commands():
    message = _refused("bash", [])
    for name in ("sinfo", "squeue", "scontrol", "sacct", "sstat", "srun", "sbatch", "scancel"):
        assert name in message


def test_unknown_option_message_lists_the_allowed_options():
    message = _refused("sinfo", ["--bogus"])
    assert "'--bogus'" in message
    assert "-N/--Node" in message and "-o/--format" in message


def test_abbreviated_option_is_rejected():
    message = _refused("sbatch", ["--ui=0", "--wrap", "id"], runas="alice")
    assert "abbreviations are not accepted" in message


def test_every_denied_option_says_why():
    for command, spec in slurm_cmd.COMMANDS.items():
        for spelling, reason in spec.denied.items():
            token = spelling + "=x" if spelling.startswith("--") else spelling
            message = _refused(command, [token], runas="alice")
            assert repr(token) in message, (command, spelling)
            assert reason in message, (command, spelling)


def test_every_scontrol_subcommand_we_refuse_says_why():
    for word, reason in slurm_cmd.SCONTROL_DENIED.items():
        message = _refused("scontrol", [word])
        assert reason in message
        assert "show" in message and "update" in message  # the allowed list


@pytest.mark.parametrize(
    "args",
    [
        ["-o", "%N %t"],
        ["-o%N %t"],
        ["--format", "%N %t"],
        ["--format=%N %t"],
    ],
)
def test_option_forms_are_canonicalised(args):
    assert build_argv("sinfo", args) == ["sinfo", "--format=%N %t"]


def test_clustered_short_options_are_split_like_getopt():
    assert build_argv("sinfo", ["-Nho%N"]) == ["sinfo", "--Node", "--noheader", "--format=%N"]


def test_options_after_positionals_are_options_for_permuting_commands():
    # scontrol permutes its argv (slurm_controller.node_state relies on it)
    assert build_argv("scontrol", ["show", "node", "-o", "n1"]) == [
        "scontrol",
        "--oneliner",
        "show",
        "node",
        "n1",
    ]


@pytest.mark.parametrize(
    ("command", "args", "value"),
    [
        ("sinfo", ["-o", "-h"], "-h"),
        ("squeue", ["-u", "--uid=0"], "--uid=0"),
        ("sbatch", ["-J", "--uid=0", "--wrap", "id"], "--uid=0"),
        ("squeue", ["--user=-alice"], "-alice"),
    ],
)
def test_value_that_looks_like_an_option_is_rejected(command, args, value):
    message = _refused(command, args, runas="alice")
    assert repr(value) in message
    assert "looks like an option" in message


def test_option_without_its_value_is_rejected():
    assert "needs a value" in _refused("squeue", ["-u"])


def test_srun_program_arguments_belong_to_the_program():
    # srun stops parsing at the program (checked against 22.05 in the functional tests)
    argv = build_argv("srun", ["-N1", "hostname", "-f", "--uid=0"], runas="alice")
    assert argv == ["srun", "--nodes=1", "hostname", "-f", "--uid=0"]


def test_sbatch_script_and_wrap_do_not_mix():
    assert "--wrap" in _refused("sbatch", ["--wrap", "id", "job.sh"], runas="alice")


def test_squeue_u_is_a_read_filter():
    assert build_argv("squeue", ["-u", "bob"], runas="alice") == ["squeue", "--user=bob"]


def test_srun_u_is_unbuffered_not_a_user():
    argv = build_argv("srun", ["-u", "hostname"], runas="alice")
    assert argv == ["srun", "--unbuffered", "hostname"]


@pytest.mark.parametrize("command,args", [("srun", ["hostname"]), ("sbatch", ["--wrap", "id"])])
@pytest.mark.parametrize("runas", [None, "root", "toor"])
def test_srun_and_sbatch_refuse_root_without_allow_root(command, args, runas):
    message = _refused(command, args, runas=runas)
    assert "root" in message
    assert "slurm:cmd:allow_root" in message


@pytest.mark.parametrize("command,args", [("srun", ["hostname"]), ("sbatch", ["--wrap", "id"])])
@pytest.mark.parametrize("runas", [None, "root"])
def test_srun_and_sbatch_run_as_root_when_allowed(command, args, runas):
    assert build_argv(command, args, runas=runas, allow_root=True)[0] == command


def test_srun_without_runas_on_a_minion_not_running_as_root(monkeypatch):
    monkeypatch.setattr(slurm_cmd.os, "geteuid", lambda: 1001)
    assert build_argv("srun", ["hostname"]) == ["srun", "hostname"]


def test_root_is_fine_for_read_only_commands():
    assert build_argv("squeue", [], runas="root") == ["squeue"]


@pytest.mark.parametrize("path", ["out.txt", "logs/slurm-%j.out", "/dev/null", "a/b.c/d_%A_%a.log"])
def test_output_paths_must_be_relative(path):
    assert build_argv("sbatch", ["--wrap", "id", "-o", path], runas="alice")[-1] == (
        f"--output={path}"
    )


@pytest.mark.parametrize("path", ["/tmp/x", "../x", "a/../../x", "~/x", "/dev/null/.."])
def test_absolute_or_climbing_output_paths_are_refused(path):
    assert repr(path) in _refused("sbatch", ["--wrap", "id", "-o", path], runas="alice")


def test_chdir_takes_no_dev_null():
    assert "'/dev/null'" in _refused("srun", ["-D", "/dev/null", "pwd"], runas="alice")


# --- scontrol update -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tokens", "expected"),
    [
        (
            ["nodename=n[1-2]", "state=drain", "reason=disk failing"],
            ["NodeName=n[1-2]", "State=DRAIN", "Reason=disk failing"],
        ),
        (["NodeName=n1", "State=RESUME"], ["NodeName=n1", "State=RESUME"]),
        (["NodeName=n1", "State=UNDRAIN"], ["NodeName=n1", "State=UNDRAIN"]),
        (["JobId=123", "TimeLimit=30"], ["JobId=123", "TimeLimit=30"]),
        (
            ["jobid=123_4", "Comment=rerun", "Dependency=afterok:120", "Nice=10"],
            ["JobId=123_4", "Comment=rerun", "Dependency=afterok:120", "Nice=10"],
        ),
        (["JobId=5", "JobName=renamed"], ["JobId=5", "JobName=renamed"]),
    ],
)
def test_scontrol_update_only_whitelisted_keys(tokens, expected):
    assert build_argv("scontrol", ["update", *tokens]) == ["scontrol", "update", *expected]


@pytest.mark.parametrize(
    ("tokens", "names", "allowed"),
    [
        (["NodeName=n1", "State=DRAIN", "Reason=x", "Weight=5"], "'Weight=5'", "Reason"),
        (["JobId=1", "UserId=0"], "'UserId=0'", "TimeLimit"),
        (["NodeName=n1", "State=FUTURE"], "'State=FUTURE'", "UNDRAIN"),
        (["ReservationName=r", "Users=bob"], "'ReservationName=r'", "NodeName"),
        (["NodeName=n1", "State=DRAIN", "Reason=a", "Reason=b"], "'Reason=b'", "twice"),
        (["NodeName", "State=DRAIN"], "'NodeName'", "Key=Value"),
        (["JobId=1.0", "TimeLimit=5"], "'1.0'", "job id"),
        (["JobId=1"], "TimeLimit", "at least one"),
        (["NodeName=n1", "Reason=x"], "State=", "give"),
    ],
)
def test_scontrol_update_refusals_name_the_token_and_what_is_allowed(tokens, names, allowed):
    message = _refused("scontrol", ["update", *tokens])
    assert names in message
    assert allowed in message


def test_scontrol_drain_needs_a_reason():
    assert "Reason" in _refused("scontrol", ["update", "NodeName=n1", "State=DRAIN"])


def test_scontrol_show_takes_one_id():
    assert "'n2'" in _refused("scontrol", ["show", "node", "n1", "n2"])
    assert "'x'" in _refused("scontrol", ["show", "daemons", "x"])
    assert "hostlist" in _refused("scontrol", ["show", "hostnames"])


def test_scontrol_job_control_needs_job_ids():
    assert "job ids" in _refused("scontrol", ["hold"])
    assert "'alice'" in _refused("scontrol", ["hold", "alice"])


# --- JSON ----------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["sinfo", "squeue", "sacct"])
def test_json_true_adds_json_where_slurm_has_it(command):
    assert build_argv(command, [], json=True) == [command, "--json"]
    assert build_argv(command, ["--json"], json=True) == [command, "--json"]


@pytest.mark.parametrize(
    ("command", "args"),
    [("scontrol", ["show", "node"]), ("sstat", ["-j", "1"]), ("scancel", ["1"])],
)
def test_json_true_is_refused_where_slurm_2205_has_no_json(command, args):
    message = _refused(command, args, json=True)
    assert "sinfo, squeue, sacct" in message


def test_json_option_is_not_accepted_by_scontrol():
    assert "'--json'" in _refused("scontrol", ["--json", "show", "node"])


def test_json_false_contradicting_json_argument():
    assert "--json" in _refused("squeue", ["--json"], json=False)


def test_parse_output_parses_only_when_json_was_asked_for():
    assert parse_output("squeue", ["--json"], '{"jobs": []}') == {"jobs": []}
    assert parse_output("squeue", ["--noheader"], "123 R") is None
    assert parse_output("scontrol", ["--json"], "{}") is None
    assert parse_output("bash", ["--json"], "{}") is None


def test_parse_output_raises_on_broken_json():
    with pytest.raises(ValueError):
        parse_output("sinfo", ["--json"], "sinfo: error: boom")


# --- limits --------------------------------------------------------------------------------


def test_limits_are_inclusive():
    assert len(build_argv("squeue", ["-h"] * slurm_cmd.MAX_ARGS)) == slurm_cmd.MAX_ARGS + 1
    reason = "x" * (slurm_cmd.MAX_ARG_LEN - len("Reason="))
    build_argv("scontrol", ["update", "NodeName=n1", "State=DRAIN", f"Reason={reason}"])


def test_arguments_must_be_a_list_not_a_string():
    assert "not the string" in _refused("squeue", "-u alice")


def test_non_string_argument_is_refused():
    assert "int" in _refused("scancel", [123])


def test_long_argument_is_shortened_in_the_message():
    message = _refused("squeue", ["-u", "a" * 5000])
    assert len(message) < 300


# --- issue #11: filename patterns, hostlist and width caps, mass actions ---------------------

LIMITS = slurm_cmd.Limits()

# (id, command, args, runas, text the message must contain)
HOSTILE_11 = [
    # 1. filename patterns must not build '/' or '..' (job names feed %x)
    (
        "jobname-dotdot-output-x",
        "sbatch",
        ["-J", "../../../etc/cron.d/x", "-o", "%x", "--wrap=id"],
        "alice",
        _q("../../../etc/cron.d/x"),
    ),
    ("jobname-slash", "srun", ["--job-name=a/b", "-o", "%x", "id"], "alice", _q("a/b")),
    ("jobname-dot", "srun", ["-J", ".", "-o", "%x%x/y", "id"], "alice", _q(".")),
    ("jobname-dotdot-input", "srun", ["-J", "..", "-i", "%x/x", "cat"], "alice", _q("..")),
    ("output-x-default-name", "sbatch", ["-o", "%x/o", "--wrap=id"], "alice", "--job-name"),
    ("output-x-program-name", "srun", ["-e", "x%x", "id"], "alice", "--job-name"),
    ("unknown-pattern", "sbatch", ["-o", "%q", "--wrap=id"], "alice", _q("%q")),
    ("trailing-percent", "sbatch", ["-o", "out%", "--wrap=id"], "alice", _q("out%")),
    ("pattern-wide", "srun", ["-o", "%11j", "id"], "alice", _q("%11j")),
    ("pattern-huge-width", "srun", ["-o", "%10000000j", "id"], "alice", _q("%10000000j")),
    ("update-jobname-slash", "scontrol", ["update", "JobId=1", "JobName=../x"], None, _q("../x")),
    # 2. hostlists sized before Slurm expands them
    (
        "hostnames-ulong-max",
        "scontrol",
        ["show", "hostnames", "a[18446744073709551615]b[1]"],
        None,
        "18446744073709551615",
    ),
    (
        "hostnames-product",
        "scontrol",
        ["show", "hostnames", "a[0-65535]b[0-9999]"],
        None,
        "655360000 hosts",
    ),
    ("hostlist-product", "scontrol", ["show", "hostlist", "a[0-65535]b[0-9999]"], None, "hosts"),
    ("nodelist-product", "squeue", ["-w", "a[0-65535]b[0-9999]"], None, "-w/--nodelist"),
    ("sinfo-nodes-product", "sinfo", ["-n", "a[0-65535]b[0-9999]"], None, "-n/--nodes"),
    ("srun-nodelist-product", "srun", ["-w", "n[1-9999]x[1-99]", "id"], "alice", "hosts"),
    (
        "update-nodename-product",
        "scontrol",
        ["update", "NodeName=a[0-65535]b[0-9999]", "State=RESUME"],
        None,
        "hosts",
    ),
    ("hostlist-broken", "scontrol", ["show", "node", "n[5-3]"], None, "'5-3'"),
    # 3. format widths
    ("sinfo-width", "sinfo", ["-o", "%10000000N"], None, "10000000"),
    ("squeue-width", "squeue", ["-o", "%10000000A"], None, "-o/--format"),
    ("squeue-width-dot", "squeue", ["--format=%.10000000i"], None, "10000000"),
    ("squeue-Format-width", "squeue", ["-O", "JobID:10000000"], None, "-O/--Format"),
    ("sinfo-Format-width", "sinfo", ["--Format=NodeList:.99999"], None, "99999"),
    ("sacct-width", "sacct", ["-o", "JobID%10000000"], None, "10000000"),
    ("sstat-width", "sstat", ["-j", "1", "-o", "JobID%-10000000"], None, "10000000"),
    # 4. mass actions through a pinned runas
    ("scancel-user-list", "scancel", ["--user=root,alice"], "alice", _q("root,alice")),
    ("scancel-other-user", "scancel", ["-u", "bob"], "alice", _q("bob")),
    ("scancel-other-user-with-id", "scancel", ["-u", "bob", "12"], "alice", _q("bob")),
    (
        "drain-all-runas",
        "scontrol",
        ["update", "NodeName=ALL", "State=DRAIN", "Reason=x"],
        "alice",
        _q("ALL"),
    ),
    (
        "drain-all-lowercase-runas",
        "scontrol",
        ["update", "nodename=all", "State=DRAIN", "Reason=x"],
        "alice",
        _q("all"),
    ),
    (
        "drain-many-runas",
        "scontrol",
        ["update", f"NodeName=n[1-{LIMITS.runas_max_nodes + 1}]", "State=DRAIN", "Reason=x"],
        "alice",
        f"{LIMITS.runas_max_nodes + 1} nodes",
    ),
]


@pytest.mark.parametrize(
    ("command", "args", "runas", "names"),
    [case[1:] for case in HOSTILE_11],
    ids=[case[0] for case in HOSTILE_11],
)
def test_issue_11_hostile_input_is_rejected_naming_the_token(command, args, runas, names):
    message = _refused(command, args, runas=runas)
    assert names in message


@pytest.mark.parametrize(
    ("command", "args", "argv_tail"),
    [
        ("sbatch", ["-J", "nightly", "-o", "%x-%j.out", "--wrap=id"], "--output=%x-%j.out"),
        ("sbatch", ["-J", "my run 2", "-o", "logs/%x/%A_%a.%N", "--wrap=id"], None),
        ("srun", ["-J", "n", "-o", "%u-%4j-%J-%s-%n-%t-%10a.%%x", "id"], None),
        ("srun", ["-o", "out-%%x", "id"], None),  # %%x is the text %x, not the job name
        ("srun", ["-i", "none", "-o", "0", "-e", "all", "cat"], None),
        ("sbatch", ["-D", "work", "-J", "a.b", "-o", ".%x", "--wrap=id"], None),
    ],
)
def test_filename_patterns_that_stay_inside_are_allowed(command, args, argv_tail):
    argv = build_argv(command, args, runas="alice")
    if argv_tail:
        assert argv_tail in argv


def test_job_name_key_of_scontrol_update_follows_the_same_rule():
    assert build_argv("scontrol", ["update", "JobId=1", "JobName=ok name"])[-1] == (
        "JobName=ok name"
    )


def test_widths_up_to_the_cap_are_allowed():
    width = LIMITS.max_format_width
    assert build_argv("sinfo", ["-o", f"%{width}N"]) == ["sinfo", f"--format=%{width}N"]
    assert build_argv("squeue", ["-O", f"JobID:{width}"])[-1] == f"--Format=JobID:{width}"
    assert "1" in _refused("sinfo", ["-o", f"%{width + 1}N"])


def test_widths_cap_comes_from_limits():
    limits = slurm_cmd.Limits(max_format_width=20)
    build_argv("sinfo", ["-o", "%20N"], limits=limits)
    message = _refused_with(limits, "sinfo", ["-o", "%21N"])
    assert "slurm:cmd:max_format_width" in message


def _refused_with(limits, command, args, runas=None):
    with pytest.raises(GatewayError) as excinfo:
        build_argv(command, args, runas=runas, limits=limits)
    return str(excinfo.value)


def test_hostlist_cap_is_inclusive_and_comes_from_limits():
    build_argv("scontrol", ["show", "hostnames", f"n[1-{LIMITS.max_hosts}]"])
    limits = slurm_cmd.Limits(max_hosts=4)
    build_argv("squeue", ["-w", "n[1-4]"], limits=limits)
    message = _refused_with(limits, "squeue", ["-w", "n[1-2],m[1-3]"])
    assert "5 hosts" in message and "slurm:cmd:max_hosts" in message


def test_hostlist_numbers_are_bounded_where_slurm_overflows():
    build_argv("scontrol", ["show", "hostnames", "n[4294967294-4294967295]"])
    assert "4294967296" in _refused("scontrol", ["show", "hostnames", "n4294967296"])


# --- 4. mass actions: root without runas is the admin; a runas caller acts for one person ---


@pytest.mark.parametrize(
    "args",
    [["--user=root,alice"], ["-u", "bob", "-t", "PENDING"]],
)
def test_admin_without_runas_keeps_scancel_by_user(args):
    assert build_argv("scancel", args)[0] == "scancel"


@pytest.mark.parametrize(
    ("args", "argv"),
    [
        (["-u", "alice"], ["scancel", "--user=alice"]),
        (["-u", "alice", "-t", "PENDING"], ["scancel", "--user=alice", "--state=PENDING"]),
        (["12", "13"], ["scancel", "12", "13"]),
    ],
)
def test_runas_scancel_targets_its_own_jobs(args, argv):
    assert build_argv("scancel", args, runas="alice") == argv


def test_runas_scancel_refusal_says_the_rule():
    message = _refused("scancel", ["-u", "bob"], runas="alice")
    assert "runas" in message and "'alice'" in message


def test_admin_without_runas_may_drain_every_node():
    argv = build_argv("scontrol", ["update", "NodeName=ALL", "State=DRAIN", "Reason=x"])
    assert argv[2] == "NodeName=ALL"


def test_runas_may_update_up_to_the_node_cap():
    n = LIMITS.runas_max_nodes
    argv = build_argv("scontrol", ["update", f"NodeName=n[1-{n}]", "State=RESUME"], runas="alice")
    assert argv[2] == f"NodeName=n[1-{n}]"
    limits = slurm_cmd.Limits(runas_max_nodes=1)
    message = _refused_with(
        limits, "scontrol", ["update", "NodeName=n[1-2]", "State=RESUME"], runas="alice"
    )
    assert "slurm:cmd:runas_max_nodes" in message


# --- limits from pillar --------------------------------------------------------------------


def test_limits_from_pillar_defaults_and_overrides():
    assert slurm_cmd.limits_from_pillar(None) == slurm_cmd.Limits()
    assert slurm_cmd.limits_from_pillar({"allow_root": True}) == slurm_cmd.Limits()
    limits = slurm_cmd.limits_from_pillar({"max_hosts": 10, "max_output_bytes": 4096})
    assert limits.max_hosts == 10 and limits.max_output_bytes == 4096


@pytest.mark.parametrize(
    ("pillar", "key"),
    [
        ({"max_hosts": 0}, "slurm:cmd:max_hosts"),
        ({"max_hosts": "many"}, "slurm:cmd:max_hosts"),
        ({"max_format_width": True}, "slurm:cmd:max_format_width"),
        ({"max_output_bytes": -1}, "slurm:cmd:max_output_bytes"),
        ({"max_seconds": 10**9}, "slurm:cmd:max_seconds"),
        ({"runas_max_nodes": 1.5}, "slurm:cmd:runas_max_nodes"),
        ("yes", "slurm:cmd"),
    ],
)
def test_bad_limit_pillar_names_the_key(pillar, key):
    with pytest.raises(GatewayError, match=key):
        slurm_cmd.limits_from_pillar(pillar)


def test_chdir_patterns_follow_the_same_rules():
    assert "--job-name" in _refused("sbatch", ["-D", "%x", "--wrap=id"], runas="alice")
    assert "'%q'" in _refused("sbatch", ["-D", "%q", "--wrap=id"], runas="alice")


def test_zero_padded_host_numbers_are_judged_by_value():
    build_argv("scontrol", ["show", "hostnames", "n[000000000001-000000000002]"])
