"""``salt_ext.lib.node.slurm_cmd`` against the installed Slurm 22.05 client binaries (no daemon).

The whitelist may only name real options, and the deny list only real dangers: every option
we allow or deny is in the binary's ``--help``/``--usage`` (sacct prints its help only after
reaching slurmdbd, so its help text is read from the binary itself; srun's ``--uid``/``--gid``
are documented only in its man page), and every spelling is recognised by the binary's own
getopt table (``PROBE --zz-bogus``: getopt complains about the probe, or only about the
bogus option). The Slurm behaviours the threat model relies on are shown here too.

Every command runs with a private SLURM_CONF whose controller is ``localhost:1``: nothing
here can reach a real slurmctld.
"""

import gzip
import os
import re
import shutil
import subprocess

import pytest
import salt.config
import salt.loader

from salt_ext.lib.node import slurm_cmd
from salt_ext.lib.util import outcap

BINARIES = {name: shutil.which(name) for name in slurm_cmd.COMMANDS}
MISSING = sorted(name for name, path in BINARIES.items() if path is None)
pytestmark = pytest.mark.skipif(
    bool(MISSING), reason=f"Slurm client binaries missing: {', '.join(MISSING)}"
)

BOGUS = "--zz-bogus-option"

# one value each rule accepts and Slurm's parsers accept too
SAMPLES = {
    "names": "p",
    "name": "p",
    "users": "root",
    "hostlist": "n1",
    "jobs": "1",
    "job": "1",
    "format": "%N",
    "sort": "N",
    "states": "idle",
    "time": "now",
    "timelimit": "10",
    "count": "1",
    "int": "1",
    "mem": "100",
    "tres": "gpu:1",
    "constraint": "x",
    "dependency": "singleton",
    "array": "1-2",
    "signal": "USR1",
    "text": "x",
    "path": "out.txt",
    "reldir": "work",
}

# squeue's --help says --job/--step, but its getopt table holds "jobs"/"steps" (checked
# below in the binary), and --job only works as an abbreviation of --jobs.
HELP_SPELLING = {("squeue", "--jobs"): "--job", ("squeue", "--steps"): "--step"}

GETOPT_COMPLAINTS = (
    "unrecognized option",
    "is ambiguous",
    "doesn't allow an argument",
    "requires an argument",
    "invalid option",
)


@pytest.fixture(scope="module")
def slurm_env(tmp_path_factory):
    conf = tmp_path_factory.mktemp("gateway_slurm") / "slurm.conf"
    conf.write_text(
        "ClusterName=gwtest\nSlurmctldHost=localhost\nSlurmctldPort=1\nMessageTimeout=1\n"
        "NodeName=localhost\nPartitionName=p Nodes=localhost\n"
    )
    return dict(os.environ, SLURM_CONF=str(conf))


def _run(env, argv, timeout=20):
    assert "gateway_slurm" in env["SLURM_CONF"]  # the private conf, never the real cluster
    proc = subprocess.run(
        argv,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    return proc.stdout + proc.stderr


def _strings(path, minimum=3):
    with open(path, "rb") as handle:
        data = handle.read()
    return [m.decode() for m in re.findall(rb"[\x20-\x7e\t]{%d,}" % minimum, data)]


def _man(command):
    path = f"/usr/share/man/man1/{command}.1.gz"
    if not os.path.exists(path):
        return ""
    with gzip.open(path, "rt", errors="replace") as handle:
        troff = handle.read()
    # \fB--uid\fR: drop font changes, unescape dashes
    return re.sub(r"\\f(\(..|\[[^\]]*\]|.)", "", troff).replace("\\-", "-")


@pytest.fixture(scope="module")
def help_text(slurm_env):
    texts = {}
    for command, path in BINARIES.items():
        if command == "sacct":
            # "Slurm accounting storage is disabled" comes before option parsing
            texts[command] = "\n".join(_strings(path))
        else:
            texts[command] = _run(slurm_env, [path, "--help"]) + _run(slurm_env, [path, "--usage"])
    return texts


def _mentions(text, spelling):
    return re.search(rf"(?<![\w-]){re.escape(spelling)}(?![\w-])", text) is not None


def _same_line(text, short, long):
    return any(_mentions(line, short) and _mentions(line, long) for line in text.splitlines())


def _option_cases(skip=()):
    for command, spec in slurm_cmd.COMMANDS.items():
        if command in skip:
            continue
        for option in spec.options:
            yield pytest.param(command, option, id=f"{command}{option.long}")


def _denied_cases():
    for command, spec in slurm_cmd.COMMANDS.items():
        for spelling in spec.denied:
            yield pytest.param(command, spelling, id=f"{command}{spelling}")


def _probe(env, command, args):
    """getopt's complaints about ``args`` (empty when the binary recognised them)."""
    argv = [BINARIES[command], *args]
    if command == "sbatch":
        argv.append("--wrap=true")  # otherwise sbatch reads a script from stdin
    output = _run(env, [*argv, BOGUS])
    spelled = args[0].split("=")[0]
    complaints = [
        line
        for line in output.splitlines()
        if any(c in line for c in GETOPT_COMPLAINTS)
        and (f"'{spelled}" in line or f"-- '{spelled.lstrip('-')}'" in line)
    ]
    return complaints, output


# --- the whitelist names real options ------------------------------------------------------


@pytest.mark.parametrize(("command", "option"), list(_option_cases()))
def test_whitelisted_option_is_in_the_help(help_text, command, option):
    text = help_text[command]
    spelling = HELP_SPELLING.get((command, option.long), option.long)
    assert _mentions(text, spelling), f"{command} help does not mention {spelling}"
    if option.short:
        assert _same_line(text, option.short, spelling), (
            f"{command} help has no line with both {option.short} and {spelling}"
        )


@pytest.mark.parametrize(("command", "long"), list(HELP_SPELLING))
def test_long_names_the_help_misspells_are_in_the_getopt_table(command, long):
    assert long[2:] in _strings(BINARIES[command])


# sacct talks to slurmdbd before it parses options: its help text above is all we can check
@pytest.mark.parametrize(("command", "option"), list(_option_cases(skip=("sacct",))))
def test_whitelisted_option_is_recognised_by_the_binary(slurm_env, command, option):
    value = SAMPLES.get(option.rule)
    forms = [[option.long] if value is None else [f"{option.long}={value}"]]
    if option.short:
        forms.append([option.short] if value is None else [option.short, value])
    for args in forms:
        complaints, output = _probe(slurm_env, command, args)
        assert not complaints, f"{command} {args}: {output}"


# --- the deny list names real options ------------------------------------------------------


@pytest.mark.parametrize(("command", "spelling"), list(_denied_cases()))
def test_denied_option_exists(help_text, slurm_env, command, spelling):
    documented = _mentions(help_text[command], spelling) or _mentions(_man(command), spelling)
    assert documented, f"{command}: {spelling} is in neither --help nor the man page"
    if command == "sacct":
        return
    probe = [f"{spelling}=x"] if spelling.startswith("--") else [spelling]
    complaints = [c for c in _probe(slurm_env, command, probe)[0] if "unrecognized" in c]
    assert not complaints, f"{command} does not know {spelling}: {complaints}"


# --- scontrol ------------------------------------------------------------------------------


def _scontrol_commands(help_text):
    text = help_text["scontrol"]
    block = text.split("Valid <COMMAND> values are:")[1].split("<ENTITY> may be")[0]
    return {m.group(1) for m in re.finditer(r"^ {5}([a-z_]+)\b", block, re.M)}


def test_scontrol_subcommands_we_allow_or_refuse_exist(help_text):
    known = _scontrol_commands(help_text)
    assert set(slurm_cmd.SCONTROL_SUBCOMMANDS) <= known
    assert set(slurm_cmd.SCONTROL_DENIED) <= known


def test_every_scontrol_subcommand_is_decided(help_text):
    """A subcommand Slurm adds later is refused by default; this lists today's leftovers."""
    undecided = _scontrol_commands(help_text) - set(slurm_cmd.SCONTROL_SUBCOMMANDS)
    undecided -= set(slurm_cmd.SCONTROL_DENIED)
    # interactive-mode settings and harmless lookups, simply not offered
    assert undecided <= {
        "all",
        "cluster",
        "completing",
        "details",
        "errnumstr",
        "exit",
        "help",
        "hide",
        "holdu",  # the same as uhold
        "oneliner",
        "pidinfo",
        "quiet",
        "quit",
        "verbose",
    }


def test_scontrol_show_entities_exist(help_text):
    block = help_text["scontrol"].split("<ENTITY> may be")[1].split("<ID>")[0]
    entities = {e.lower() for e in re.findall(r'"([A-Za-z_]+)"', block)}
    assert set(slurm_cmd.SCONTROL_SHOW) <= entities


@pytest.mark.parametrize(
    "tokens",
    [
        ["NodeName=gw-absent", "State=RESUME", "Reason=x"],
        *(
            ["JobId=4294967000", f"{key}={value}"]
            for key, value in (
                ("TimeLimit", "10"),
                ("Comment", "x"),
                ("JobName", "x"),
                ("Dependency", "singleton"),
                ("Nice", "10"),
            )
        ),
    ],
)
def test_scontrol_update_keys_we_allow_are_accepted_by_scontrol(slurm_env, tokens):
    output = _run(slurm_env, [BINARIES["scontrol"], "update", *tokens])
    assert "not supported" not in output and "Invalid input" not in output, output


def test_scontrol_update_rejects_an_unknown_key_itself(slurm_env):
    output = _run(slurm_env, [BINARIES["scontrol"], "update", "JobId=4294967000", "Bogus=1"])
    assert "Update of this parameter is not supported: Bogus=1" in output


def test_node_states_we_allow_are_valid_node_states(slurm_env):
    output = _run(slurm_env, [BINARIES["scontrol"], "update", "NodeName=gw-absent", "State=BOGUS"])
    valid = output.split("Valid states are:")[1].split("\n")[0].split()
    assert set(slurm_cmd.NODE_STATES) <= {state.upper() for state in valid}


def test_scontrol_abbreviates_subcommands_so_we_match_whole_words(slurm_env):
    output = _run(slurm_env, [BINARIES["scontrol"], "versio"])
    assert output.startswith("slurm")
    with pytest.raises(slurm_cmd.GatewayError):
        slurm_cmd.build_argv("scontrol", ["versio"])


def test_scontrol_show_hostlist_reads_files_so_ids_cannot_be_paths(slurm_env, tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("topsecret\n")
    output = _run(slurm_env, [BINARIES["scontrol"], "show", "hostlist", str(secret)])
    assert "topsecret" in output
    with pytest.raises(slurm_cmd.GatewayError):
        slurm_cmd.build_argv("scontrol", ["show", "hostlist", str(secret)])


# --- issue #11: what Slurm does with the input the gateway now refuses ---------------------


def _man_section(command, start, end):
    text = _man(command)
    return text.split(start, 1)[1].split(end, 1)[0]


@pytest.mark.parametrize("command", ["sbatch", "srun"])
def test_filename_patterns_are_the_ones_the_man_page_lists(command):
    section = _man_section(
        command,
        "filename pattern\nsrun allows" if command == "srun" else ".SH filename pattern",
        "Some examples",
    )
    listed = set(re.findall(r"^%(.)$", section, re.M))
    assert listed == {"%", *slurm_cmd.FILENAME_PATTERNS}, listed


def _supervised(env, argv, max_bytes, seconds):
    """outcap's exit code for ``argv`` run with the private SLURM_CONF (env(1) execs)."""
    argv = ["env", f"SLURM_CONF={env['SLURM_CONF']}", *argv]
    with open(os.devnull, "wb") as out, open(os.devnull, "wb") as err:
        return outcap.supervise(argv, max_bytes, seconds, out, err)


def test_scontrol_never_finishes_a_range_ending_at_ulong_max(slurm_env):
    # 2^64-1 ends hostlist.c's range loop never; a 1 GB address-space cap makes the growth
    # end in an abort instead of eating the machine
    expr = "a[18446744073709551615]b[1]"
    argv = ["prlimit", "--as=1000000000", BINARIES["scontrol"], "show", "hostnames", expr]
    code = _supervised(slurm_env, argv, 1_000_000, 10)
    assert code in (outcap.EXIT_TIMEOUT, 128 + 6, 128 + 11), code  # killed, abort, segfault
    with pytest.raises(slurm_cmd.GatewayError, match="18446744073709551615"):
        slurm_cmd.build_argv("scontrol", ["show", "hostnames", expr])


def test_scontrol_expands_a_hostlist_product_in_full(slurm_env):
    expr = "a[0-65535]b[0-9999]"
    argv = [BINARIES["scontrol"], "show", "hostnames", expr]
    assert _supervised(slurm_env, argv, 1_000_000, 30) == outcap.EXIT_OUTPUT
    with pytest.raises(slurm_cmd.GatewayError, match="655360000 hosts"):
        slurm_cmd.build_argv("scontrol", ["show", "hostnames", expr])


def test_scontrol_agrees_with_our_count_up_to_the_cap(slurm_env):
    expr = f"n[1-{slurm_cmd.Limits().max_hosts}]"
    output = _run(slurm_env, [BINARIES["scontrol"], "show", "hostnames", expr])
    assert len(output.split()) == slurm_cmd.Limits().max_hosts
    slurm_cmd.build_argv("scontrol", ["show", "hostnames", expr])


# --- parsing behaviour the gateway mirrors -------------------------------------------------


def test_getopt_accepts_abbreviations_so_we_match_options_exactly(slurm_env):
    complaints, output = _probe(slurm_env, "squeue", ["--partitio=p"])
    assert not complaints and BOGUS in output
    with pytest.raises(slurm_cmd.GatewayError, match="abbreviations"):
        slurm_cmd.build_argv("squeue", ["--partitio=p"])


@pytest.mark.parametrize("command", [c for c, s in slurm_cmd.COMMANDS.items() if not s.permute])
def test_srun_and_sbatch_stop_parsing_at_the_program(slurm_env, command):
    program = "hostname" if command == "srun" else "/nonexistent/job.sh"
    output = _run(slurm_env, [BINARIES[command], "--quiet", program, BOGUS], timeout=60)
    assert "unrecognized option" not in output, output


@pytest.mark.parametrize(
    ("command", "positional"),
    [
        (command, "1" if command in ("scancel",) else "ping")
        for command, spec in slurm_cmd.COMMANDS.items()
        if spec.permute and command != "sacct"
    ],
)
def test_other_commands_take_options_after_positionals(slurm_env, command, positional):
    output = _run(slurm_env, [BINARIES[command], positional, BOGUS])
    assert f"unrecognized option '{BOGUS}'" in output, output


# --- JSON ----------------------------------------------------------------------------------


def test_json_commands_document_json(help_text):
    for command in slurm_cmd.JSON_COMMANDS:
        assert _mentions(help_text[command], "--json"), command


def test_scontrol_2205_has_no_json(slurm_env):
    output = _run(slurm_env, [BINARIES["scontrol"], "--json", "show", "config"])
    assert "unrecognized option '--json'" in output


# --- end to end through Salt's loader and cmd.run_all --------------------------------------


@pytest.fixture
def minion_mods(tmp_path, slurm_env, monkeypatch):
    monkeypatch.setenv("SLURM_CONF", slurm_env["SLURM_CONF"])
    opts = salt.config.minion_config(str(tmp_path / "minion"))
    opts["cachedir"] = str(tmp_path / "cache")
    opts["file_client"] = "local"
    return salt.loader.minion_mods(opts)


def test_slurm_cmd_runs_through_the_real_loader(minion_mods):
    result = minion_mods["slurm.cmd"]("scontrol", "show", "hostnames", "n[1-3]")
    assert result["stdout"].split() == ["n1", "n2", "n3"]
    assert result["argv"] == [BINARIES["scontrol"], "show", "hostnames", "n[1-3]"]
    assert result["data"] is None


@pytest.fixture
def capped_minion_mods(tmp_path, slurm_env, monkeypatch):
    monkeypatch.setenv("SLURM_CONF", slurm_env["SLURM_CONF"])
    opts = salt.config.minion_config(str(tmp_path / "minion"))
    opts["cachedir"] = str(tmp_path / "cache")
    opts["file_client"] = "local"
    opts["pillar"] = {"slurm": {"cmd": {"max_output_bytes": 4096}}}
    return salt.loader.minion_mods(opts)


def test_slurm_cmd_output_cap_kills_the_real_command(capped_minion_mods):
    from salt.exceptions import CommandExecutionError  # noqa: PLC0415

    with pytest.raises(CommandExecutionError, match="output passed 4096 bytes"):
        capped_minion_mods["slurm.cmd"]("scontrol", "show", "hostnames", "n[1-60000]")
    small = capped_minion_mods["slurm.cmd"]("scontrol", "show", "hostnames", "n[1-3]")
    assert small["stdout"].split() == ["n1", "n2", "n3"]


def test_slurm_cmd_failure_carries_stderr(minion_mods):
    from salt.exceptions import CommandExecutionError  # noqa: PLC0415

    with pytest.raises(CommandExecutionError, match="exited 1"):
        minion_mods["slurm.cmd"]("scontrol", "listpids", "4294967000")


@pytest.mark.parametrize("command", [c for c in slurm_cmd.COMMANDS if c != "sacct"])
@pytest.mark.parametrize("args", [["--gw-no-such-option=1"], ["-%"]])
def test_the_probe_notices_options_the_binary_does_not_know(slurm_env, command, args):
    complaints, output = _probe(slurm_env, command, args)
    assert complaints, output
