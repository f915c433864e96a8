"""salt_ext.lib.conf.model: the slurm.conf model (parse rules as probed on Slurm 22.05.8)."""

import pickle

import pytest

from salt_ext.lib.conf import model
from salt_ext.lib.conf.params import KEYS, RECORD_KEYS, REMOVED_KEYS

CONF = """\
# slurm.conf written by Salt
ClusterName=cluster
SlurmctldHost=ctl(10.77.0.10)
slurmdpidfile=/run/slurmd.pid
SLURMDLOGFILE = /var/log/slurm/slurmd.log   # trailing comment
#SlurmctldLogFile=/commented/out.log
SchedulerParameters=bf_interval=30,bf_window=60
Include /etc/slurm/extra.conf

NodeName=n[1-3] CPUs=1 RealMemory=1000 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""


def _values(tmp_path, text=CONF):
    path = tmp_path / "slurm.conf"
    path.write_text(text)
    return model.read_values(str(path))


def test_read_values_lower_cases_keys_whatever_their_spelling(tmp_path):
    values = _values(tmp_path)
    assert values["clustername"] == "cluster"
    assert values["slurmdpidfile"] == "/run/slurmd.pid"
    assert values["slurmdlogfile"] == "/var/log/slurm/slurmd.log"


def test_read_values_skips_comments(tmp_path):
    assert "slurmctldlogfile" not in _values(tmp_path)


def test_read_values_skips_node_and_partition_lines(tmp_path):
    values = _values(tmp_path)
    assert "nodename" not in values
    assert "partitionname" not in values
    # their other keys must not leak in either
    assert "state" not in values
    assert "cpus" not in values


def test_read_values_keeps_equals_signs_inside_values(tmp_path):
    assert _values(tmp_path)["schedulerparameters"] == "bf_interval=30,bf_window=60"


def test_read_values_ignores_lines_without_a_value(tmp_path):
    assert not any(key.startswith("include") for key in _values(tmp_path))


def test_read_values_only_returns_simple_keys(tmp_path):
    assert set(_values(tmp_path)) == {
        "clustername",
        "slurmctldhost",
        "slurmdpidfile",
        "slurmdlogfile",
        "schedulerparameters",
    }


def test_read_values_missing_file_is_empty(tmp_path):
    assert model.read_values(str(tmp_path / "absent.conf")) == {}


def test_read_values_reads_values_as_slurm_does(tmp_path):
    values = _values(
        tmp_path,
        'MailProg="/usr/bin/my mail"\n'
        "DebugFlags=a\\#b # comment\n"
        "SlurmdSpoolDir=/var/\\\n"
        "spool\n"
        "include /etc/slurm/other.conf\n"
        "this line is garbage\n"
        "FutureKey=1\n"
        "MaxJobCount=1\n"
        "maxjobcount=2\n",
    )
    assert values == {
        "mailprog": "/usr/bin/my mail",
        "debugflags": "a#b",
        "slurmdspooldir": "/var/spool",
        "futurekey": "1",
        "maxjobcount": "2",  # Slurm keeps the last value too
    }


# ---------------------------------------------------------------------------------------------
# parse -> render round trip
# ---------------------------------------------------------------------------------------------
REALISTIC = """\
# slurm.conf -- hand written, then managed
#
ClusterName=cluster
SlurmctldHost=ctl(10.77.0.10)
SlurmctldHost=ctl2   # backup
  slurmdpidfile=/run/slurmd.pid
SLURMDLOGFILE = /var/log/slurm/slurmd.log   # odd spacing
\tProctrackType\t=\tproctrack/cgroup
#SlurmctldLogFile=/commented/out.log
SchedulerParameters=bf_interval=30,bf_window=60
MailProg="/usr/local/bin/mail wrapper"
DebugFlags=a\\#b   # an escaped hash
Include /etc/slurm/accounting.conf
include site.conf

# COMPUTE NODES
NodeName=DEFAULT CPUs=2 RealMemory=1000 State=UNKNOWN
NodeName=n[1-3] \\
    CPUs=4   # continued
nodename=gpu1 gres=gpu:1 Features="fast disk"
PartitionName=DEFAULT MaxTime=60
PartitionName=debug Nodes=n[1-3] Default=YES State=UP
PartitionName=gpu Nodes=gpu1
"""


@pytest.mark.parametrize(
    "text",
    [
        REALISTIC,
        REALISTIC.replace("\n", "\r\n"),
        "",
        "# only a comment\n\n",
        "ClusterName=c\nSlurmctldHost=ctl",  # no final newline: render adds one
    ],
    ids=["realistic", "crlf", "empty", "comments-only", "no-final-newline"],
)
def test_render_without_edits_returns_the_input_byte_for_byte(text):
    expected = text if not text or text.endswith("\n") else text + "\n"
    assert model.parse(text).render() == expected


def test_parse_reads_plain_values_and_records_of_a_realistic_conf():
    conf = model.parse(REALISTIC)
    assert conf.params() == [
        ("ClusterName", "cluster"),
        ("SlurmctldHost", "ctl(10.77.0.10)"),
        ("SlurmctldHost", "ctl2"),
        ("SlurmdPidFile", "/run/slurmd.pid"),
        ("SlurmdLogFile", "/var/log/slurm/slurmd.log"),
        ("ProctrackType", "proctrack/cgroup"),
        ("SchedulerParameters", "bf_interval=30,bf_window=60"),
        ("MailProg", "/usr/local/bin/mail wrapper"),
        ("DebugFlags", "a#b"),
    ]
    assert [(r.kind, r.name) for r in conf.records()] == [
        ("NodeName", "DEFAULT"),
        ("NodeName", "n[1-3]"),
        ("NodeName", "gpu1"),
        ("PartitionName", "DEFAULT"),
        ("PartitionName", "debug"),
        ("PartitionName", "gpu"),
    ]
    gpu = conf.records("nodename")[2]
    assert gpu.pairs == [("NodeName", "gpu1"), ("Gres", "gpu:1"), ("Features", "fast disk")]
    assert gpu.get("features") == "fast disk"
    assert gpu.get("CPUs") is None
    assert conf.records("NodeName")[1].pairs == [("NodeName", "n[1-3]"), ("CPUs", "4")]


@pytest.mark.parametrize(
    ("line", "value"),
    [
        ("MailProg=/bin/mail", "/bin/mail"),
        ("MailProg = /bin/mail", "/bin/mail"),
        ("MailProg\t=\t/bin/mail  # comment", "/bin/mail"),
        ('MailProg="/bin/my mail"', "/bin/my mail"),
        ('MailProg=""', ""),
        ('MailProg="a"b', '"a"b'),  # not a quoted string: the quote is part of the value
        ('MailProg="a', '"a'),
        ("MailProg=a#b", "a"),
        ("MailProg=a\\#b", "a#b"),
        ("MailProg=a\\\\#b", "a\\"),
        ("MailProg=f\\oo", "foo"),
        ('MailProg="a \\#b"', "a #b"),
        ("MailProg=a\\\nb", "ab"),
        ("MailProg=a\\   \nb", "ab"),
        ("MailProg=a\\\\\\\nb", "a\\b"),
        ("MailProg=a\\\n#b", "a"),
        ("MailProg=a\r", "a"),
        ("MailProg=a\xa0b", "a\xa0b"),  # not whitespace to Slurm (C isspace)
    ],
)
def test_values_are_read_as_slurm_reads_them(line, value):
    assert model.parse(line + "\n").get("MailProg") == value


def test_a_commented_line_never_continues():
    conf = model.parse("# a comment \\\nClusterName=c\n")
    assert conf.get("ClusterName") == "c"


def test_python_only_whitespace_table_is_complete():
    python_spaces = {chr(c) for c in range(0x110000) if chr(c).isspace()} - set(" \t\n\r\f\v")
    assert all(model._PY_ONLY_SPACE.match(char) for char in python_spaces)


def test_fast_and_slow_parsing_paths_agree():
    # a character only Python calls whitespace anywhere in the text turns the fast path off
    slow = model.parse(REALISTIC + "# \xa0\n")
    fast = model.parse(REALISTIC)
    assert slow.params() == fast.params()
    assert slow.records() == fast.records()


# ---------------------------------------------------------------------------------------------
# editing plain keys
# ---------------------------------------------------------------------------------------------
BASE = """\
# header
ClusterName=c
SLURMDLOGFILE = /var/log/old.log   # keep me
MaxJobCount=10000

# nodes
NodeName=n1 CPUs=1
PartitionName=p Nodes=n1
"""


def test_set_replaces_in_place_keeps_the_comment_and_leaves_other_lines_alone():
    conf = model.parse(BASE)
    conf.set("slurmdlogfile", "/var/log/new.log")
    assert conf.render() == BASE.replace(
        "SLURMDLOGFILE = /var/log/old.log   # keep me", "SlurmdLogFile=/var/log/new.log   # keep me"
    )


def test_set_to_the_current_value_leaves_the_line_byte_identical():
    conf = model.parse(BASE)
    conf.set("SlurmdLogFile", "/var/log/old.log")
    assert conf.render() == BASE


def test_set_appends_a_new_key_after_the_last_plain_parameter():
    conf = model.parse(BASE)
    conf.set("SchedulerType", "sched/backfill")
    conf.set("MaxArraySize", 1001)
    assert conf.render() == BASE.replace(
        "MaxJobCount=10000\n",
        "MaxJobCount=10000\nSchedulerType=sched/backfill\nMaxArraySize=1001\n",
    )


def test_set_without_plain_parameters_goes_above_the_comment_introducing_the_records():
    conf = model.parse("# header\n\n# nodes\nNodeName=n1\n")
    conf.set("ClusterName", "c")
    assert conf.render() == "# header\n\nClusterName=c\n# nodes\nNodeName=n1\n"


def test_set_on_an_empty_conf_and_without_records():
    conf = model.Conf()
    conf.set("ClusterName", "c")
    conf.set("SlurmctldHost", "ctl")
    assert conf.render() == "ClusterName=c\nSlurmctldHost=ctl\n"
    assert model.parse("# only\n").render() == "# only\n"


@pytest.mark.parametrize(
    ("value", "written"),
    [
        ("/usr/bin/my mail", 'MailProg="/usr/bin/my mail"'),
        ("a#b", "MailProg=a\\#b"),
        ("a\\b", "MailProg=a\\\\b"),
        ("", 'MailProg=""'),
        ('a"b', 'MailProg=a"b'),
    ],
)
def test_set_writes_values_so_that_slurm_reads_them_back(value, written):
    conf = model.Conf()
    conf.set("MailProg", value)
    assert conf.render() == written + "\n"
    assert model.parse(conf.render()).get("MailProg") == value


@pytest.mark.parametrize("value", ['"quoted"', 'a "b c"', "two\nlines", True, None, ["a"]])
def test_set_refuses_values_that_cannot_be_written(value):
    with pytest.raises(model.ConfError, match="MailProg"):
        model.Conf().set("MailProg", value)


def test_remove_deletes_every_occurrence_and_ignores_absent_keys():
    conf = model.parse("SlurmctldHost=a\nClusterName=c\nSlurmctldHost=b\n")
    conf.remove("slurmctldhost")
    conf.remove("MaxJobCount")
    assert conf.render() == "ClusterName=c\n"
    assert conf.get("SlurmctldHost") is None
    assert conf.get_all("SlurmctldHost") == []


def test_slurmctldhost_may_repeat_and_keeps_its_order():
    conf = model.parse("SlurmctldHost=a\nslurmctldhost=b\nSLURMCTLDHOST=c\n")
    assert conf.get("SlurmctldHost") == "a"
    assert conf.get_all("slurmctldhost") == ["a", "b", "c"]


@pytest.mark.parametrize(
    ("new", "expected"),
    [
        (["x", "y"], "SlurmctldHost=x # primary\nClusterName=c\nSlurmctldHost=y\n"),
        (["x"], "SlurmctldHost=x # primary\nClusterName=c\n"),
        (
            ["x", "y", "z"],
            "SlurmctldHost=x # primary\nClusterName=c\nSlurmctldHost=y\nSlurmctldHost=z\n",
        ),
        ([], "ClusterName=c\n"),
        ("x", "SlurmctldHost=x # primary\nClusterName=c\nSlurmctldHost=b\n"),
    ],
    ids=["same-count", "fewer", "more", "none", "single-value-replaces-primary"],
)
def test_set_slurmctldhost_list_replaces_all_occurrences(new, expected):
    conf = model.parse("SlurmctldHost=a # primary\nClusterName=c\nSlurmctldHost=b\n")
    conf.set("SlurmctldHost", new)
    assert conf.render() == expected


def test_set_list_on_a_single_valued_key_is_an_error():
    with pytest.raises(model.ConfError, match="ClusterName takes one value"):
        model.Conf().set("ClusterName", ["a", "b"])


@pytest.mark.parametrize("call", ["get", "get_all", "set", "remove"])
def test_plain_key_access_checks_the_key(call):
    conf = model.parse(BASE)
    args = ("SchedulerTyp", "x") if call == "set" else ("SchedulerTyp",)
    with pytest.raises(model.ConfError, match="did you mean 'SchedulerType'"):
        getattr(conf, call)(*args)
    args = ("NodeName", "x") if call == "set" else ("NodeName",)
    with pytest.raises(model.ConfError, match="NodeName lines are records"):
        getattr(conf, call)(*args)


def test_get_is_case_insensitive_and_none_when_unset():
    conf = model.parse(BASE)
    assert conf.get("maxjobcount") == "10000"
    assert conf.get("SchedulerType") is None


# ---------------------------------------------------------------------------------------------
# records
# ---------------------------------------------------------------------------------------------
NODES = """\
NodeName=n1 CPUs=1
NodeName=n2 CPUs=1
PartitionName=p Nodes=n[1-2]
# tail
"""


def test_add_record_goes_after_the_last_record_of_its_kind():
    conf = model.parse(NODES)
    record = conf.add_record("nodename", [("NodeName", "n3"), ("cpus", 2), ("RealMemory", "1000")])
    assert record == model.Record(
        "NodeName", [("NodeName", "n3"), ("CPUs", "2"), ("RealMemory", "1000")]
    )
    assert conf.render() == NODES.replace(
        "NodeName=n2 CPUs=1\n", "NodeName=n2 CPUs=1\nNodeName=n3 CPUs=2 RealMemory=1000\n"
    )


def test_add_record_of_a_new_kind_goes_at_the_end_and_takes_a_dict():
    conf = model.parse(NODES)
    conf.add_record("NodeSet", {"NodeSet": "big", "Nodes": "n[1-2]"})
    assert conf.render() == NODES + "NodeSet=big Nodes=n[1-2]\n"
    assert [r.name for r in conf.records("NodeSet")] == ["big"]


def test_add_record_quotes_values_with_spaces():
    conf = model.Conf()
    conf.add_record("NodeName", [("NodeName", "n1"), ("Reason", "bad disk")])
    assert conf.render() == 'NodeName=n1 Reason="bad disk"\n'


@pytest.mark.parametrize(
    ("kind", "pairs", "message"),
    [
        ("NodeName", [("CPUs", "1")], r"a NodeName record starts with \('NodeName', name\)"),
        ("NodeName", [], r"starts with \('NodeName', name\)"),
        (
            "NodeName",
            [("NodeName", "n1")],
            "duplicate NodeName 'n1' \\(already defined on line 1\\)",
        ),
        (
            "NodeName",
            [("NodeName", "n9"), ("CPU", "1")],
            "unknown NodeName key 'CPU'.*did you mean 'CPUs'",
        ),
        ("NodeName", [("NodeName", "n9"), ("CPUs", "1"), ("cpus", "2")], "duplicate key 'CPUs'"),
        ("Nodes", [("NodeName", "n9")], "unknown record kind 'Nodes'"),
    ],
)
def test_add_record_errors(kind, pairs, message):
    conf = model.parse(NODES)
    with pytest.raises(model.ConfError, match=message):
        conf.add_record(kind, pairs)
    assert conf.render() == NODES


def test_default_records_may_repeat():
    conf = model.parse("NodeName=DEFAULT CPUs=1\nNodeName=n1\nnodename=default CPUs=2\n")
    conf.add_record("NodeName", [("NodeName", "DEFAULT"), ("CPUs", "4")])
    assert [r.name for r in conf.records()] == ["DEFAULT", "n1", "default", "DEFAULT"]


def test_remove_records_by_name_or_all_of_a_kind():
    conf = model.parse(NODES)
    assert conf.remove_records("NodeName", ["n1"]) == 1
    assert conf.render() == NODES.replace("NodeName=n1 CPUs=1\n", "")
    conf.add_record("NodeName", [("NodeName", "n1")])  # the name is free again
    assert conf.remove_records("NodeName", "absent") == 0
    assert conf.remove_records("NodeName") == 2
    assert conf.render() == "PartitionName=p Nodes=n[1-2]\n# tail\n"


def test_editing_the_pairs_of_a_record_rewrites_only_that_line():
    text = "NodeName=n1 CPUs=1  # first\nnodename=n2 cpus=1  # second\n"
    conf = model.parse(text)
    record = conf.records("NodeName")[1]
    record.pairs[1] = ("CPUs", "8")
    assert conf.render() == "NodeName=n1 CPUs=1  # first\nNodeName=n2 CPUs=8  # second\n"


def test_records_of_an_unknown_kind_is_an_error():
    with pytest.raises(model.ConfError, match="did you mean 'NodeSet'"):
        model.parse(NODES).records("NodeSets")


# ---------------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "lineno", "key", "message"),
    [
        (
            "ClusterName=c\nthis is garbage\n",
            2,
            None,
            "slurm.conf line 2: expected Key=Value, got 'this is garbage'",
        ),
        (
            "# x\nSchedulerTyp=sched/backfill\n",
            2,
            "SchedulerTyp",
            "slurm.conf line 2: unknown slurm.conf key 'SchedulerTyp' for Slurm 22.05 (did you "
            "mean 'SchedulerType'?); list it in slurm:conf:extra_keys if your Slurm knows it",
        ),
        (
            "Frobnicate=1\n",
            1,
            "Frobnicate",
            "slurm.conf line 1: unknown slurm.conf key 'Frobnicate' for Slurm 22.05; list it in "
            "slurm:conf:extra_keys if your Slurm knows it",
        ),
        (
            "ClusterName=c\nSchedulerType=a\n\nschedulertype=b\n",
            4,
            "SchedulerType",
            "slurm.conf line 4: duplicate key 'SchedulerType' (first set on line 2)",
        ),
        (
            "PartitionName=debug\nPartitionName=debug Nodes=ALL\n",
            2,
            "PartitionName",
            "slurm.conf line 2: duplicate PartitionName 'debug' (first defined on line 1)",
        ),
        (
            "NodeName=n1\n# c\nNodeName=n1 CPUs=2\n",
            3,
            "NodeName",
            "slurm.conf line 3: duplicate NodeName 'n1' (first defined on line 1)",
        ),
        ("=value\n", 1, None, "slurm.conf line 1: empty key in '=value'"),
        (
            "MaxJobCount=\n",
            1,
            "MaxJobCount",
            "slurm.conf line 1: missing value for key 'MaxJobCount'",
        ),
        (
            "MaxJobCount=5 MaxArraySize=7\n",
            1,
            "MaxJobCount",
            "slurm.conf line 1: Slurm reads one Key=Value per line",
        ),
        (
            "MaxJobCount=5 NodeName=n1\n",
            1,
            "MaxJobCount",
            "unexpected 'NodeName=n1' after MaxJobCount",
        ),
        (
            "NodeName=n1 PartitionName=p\n",
            1,
            "PartitionName",
            "slurm.conf line 1: PartitionName must start its own line",
        ),
        (
            "NodeName=n1 \\\n  CPU=1\n",
            1,
            "CPU",
            "slurm.conf line 1: unknown NodeName key 'CPU' for Slurm 22.05 (did you mean 'CPUs'?)",
        ),
        ("PartitionName=p MaxTim=5\n", 1, "MaxTim", "did you mean 'MaxTime'"),
        ("NodeSet=s Features=a\n", 1, "Features", "did you mean 'Feature'"),
        ("NodeName=n1 CPUs=1 cpus=2\n", 1, "CPUs", "duplicate key 'CPUs' in NodeName 'n1'"),
        ("NodeName=n1 CPUs=1 garbage\n", 1, None, "expected Key=Value, got 'garbage'"),
        ('NodeName=n1 Reason="a b" c"\n', 1, None, "expected Key=Value, got 'c\"'"),
        (
            "  Include /etc/x.conf\n",
            1,
            "Include",
            "Include must start at the beginning of the line",
        ),
        (
            "Include a.conf b.conf\n",
            1,
            "Include",
            "Include takes one file name, got 'a.conf b.conf'",
        ),
        ("Include=a.conf\n", 1, "Include", "unknown slurm.conf key 'Include'"),
        ("MaxJobCount+=5\n", 1, "MaxJobCount", "MaxJobCount+= is not supported here"),
        ("Debug-Flags=x\n", 1, None, "expected Key=Value, got 'Debug-Flags=x'"),
        (
            "SallocDefaultCommand=bash\n",
            1,
            "SallocDefaultCommand",
            "'SallocDefaultCommand' is not accepted by Slurm 22.05: SallocDefaultCommand has "
            "been removed",
        ),
    ],
)
def test_parse_errors_name_the_line_and_key(text, lineno, key, message):
    with pytest.raises(model.ConfError) as caught:
        model.parse(text)
    assert message in str(caught.value)
    assert caught.value.lineno == lineno
    assert caught.value.key == key
    assert caught.value.source == "slurm.conf"


def test_parse_errors_use_the_given_source_name():
    with pytest.raises(model.ConfError, match=r"^base.conf line 4: expected Key=Value"):
        model.parse("A=1\n" * 0 + "\n\n\nthis is garbage\n", source="base.conf")


def test_partition_names_are_case_sensitive_like_slurms():
    conf = model.parse("PartitionName=debug\nPartitionName=DEBUG\n")
    assert [r.name for r in conf.records()] == ["debug", "DEBUG"]


def test_conf_error_is_a_value_error_and_survives_pickling():
    err = model.ConfError("bad", "x.conf", 3, "Key")
    assert isinstance(err, ValueError)
    assert str(err) == "x.conf line 3: bad"
    copy = pickle.loads(pickle.dumps(err))  # noqa: S301 -- our own bytes
    assert (str(copy), copy.source, copy.lineno, copy.key) == (str(err), "x.conf", 3, "Key")


def test_canonical_key_spelling_and_error_format():
    assert model.canonical_key("schedulertype") == "SchedulerType"
    assert model.canonical_key("USEPAM") == "UsePAM"
    with pytest.raises(model.ConfError) as caught:
        model.canonical_key("SchedulerTyp", source="overrides")
    assert str(caught.value) == (
        "overrides: unknown slurm.conf key 'SchedulerTyp' for Slurm 22.05 (did you mean "
        "'SchedulerType'?); list it in slurm:conf:extra_keys if your Slurm knows it"
    )
    assert caught.value.lineno is None
    assert caught.value.key == "SchedulerTyp"


def test_extra_keys_let_newer_keys_through_with_their_given_spelling():
    text = "FutureParam=1\nNodeName=n1 Topology=x\n"
    with pytest.raises(model.ConfError):
        model.parse(text)
    conf = model.parse(text, extra_keys=["futureparam", "Topology"])
    assert conf.params() == [("futureparam", "1")]
    assert conf.records()[0].get("topology") == "x"
    assert conf.render() == text
    assert model.canonical_key("FUTUREPARAM", ["FutureParam"]) == "FutureParam"


def test_extra_keys_must_look_like_keys():
    with pytest.raises(model.ConfError, match="slurm:conf:extra_keys: 'bad key'"):
        model.parse("", extra_keys=["bad key"])


# ---------------------------------------------------------------------------------------------
# render_pairs, unified_diff
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("pairs", "text"),
    [
        ([("NodeName", "n[1-3]"), ("CPUs", "2")], "NodeName=n[1-3] CPUs=2"),
        ([("NodeName", "n1"), ("Reason", "disk failed")], 'NodeName=n1 Reason="disk failed"'),
        ([("NodeName", "n1"), ("Reason", "tab\there")], 'NodeName=n1 Reason="tab\there"'),
        ([("NodeName", "n1"), ("Reason", "")], 'NodeName=n1 Reason=""'),
        ([("NodeName", "n1"), ("Reason", "a#1")], "NodeName=n1 Reason=a\\#1"),
        ([("NodeName", "n1"), ("CPUs", 4)], "NodeName=n1 CPUs=4"),
    ],
)
def test_render_pairs(pairs, text):
    assert model.render_pairs(pairs) == text
    assert model.parse(text + "\n").records()[0].pairs == [(k, str(v)) for k, v in pairs]


def test_unified_diff():
    assert model.unified_diff(BASE, BASE) == ""
    diff = model.unified_diff("A=1\nB=2\n", "A=1\nB=3\n", name="gres.conf")
    assert diff.splitlines()[:2] == ["--- a/gres.conf", "+++ b/gres.conf"]
    assert "-B=2\n+B=3\n" in diff
    assert "\\ No newline at end of file" in model.unified_diff("A=1\n", "A=1\nB=2")


# ---------------------------------------------------------------------------------------------
# classify
# ---------------------------------------------------------------------------------------------
CLUSTER = """\
ClusterName=cluster
SlurmctldHost=ctl
SchedulerType=sched/builtin
SchedulerParameters=bf_interval=30
SlurmctldParameters=cloud_dns
SlurmdSpoolDir=/var/spool/slurmd
StateSaveLocation=/var/spool/slurmctld
NodeName=DEFAULT RealMemory=1000
NodeName=n[1-3] CPUs=2
PartitionName=debug Nodes=n[1-3] MaxTime=60
"""


def _change(old, new):
    assert old in CLUSTER
    return CLUSTER.replace(old, new)


@pytest.mark.parametrize(
    ("new", "cls", "reasons"),
    [
        (CLUSTER, "none", []),
        (
            "# a comment now\n"
            + CLUSTER.replace("ClusterName=cluster", "clustername = cluster  # hi"),
            "none",
            [],
        ),
        (
            _change("MaxTime=60", "MaxTime=INFINITE"),
            "reconfigure",
            ["PartitionName debug: MaxTime 60 -> INFINITE (reconfigure)"],
        ),
        (
            _change("SchedulerType=sched/builtin", "SchedulerType=sched/backfill"),
            "restart_slurmctld",
            ["SchedulerType sched/builtin -> sched/backfill (restart slurmctld)"],
        ),
        (
            _change("NodeName=n[1-3] CPUs=2", "NodeName=n[1-3] CPUs=4"),
            "restart_all",
            ["NodeName n[1-3]: CPUs 2 -> 4 (node definitions: restart slurmctld and all slurmd)"],
        ),
        (
            _change("SlurmdSpoolDir=/var/spool/slurmd", "SlurmdSpoolDir=/srv/slurmd"),
            "restart_slurmd",
            ["SlurmdSpoolDir /var/spool/slurmd -> /srv/slurmd (restart slurmd)"],
        ),
        (
            CLUSTER.replace("SlurmdSpoolDir=/var/spool/slurmd", "SlurmdSpoolDir=/srv/d").replace(
                "StateSaveLocation=/var/spool/slurmctld", "StateSaveLocation=/srv/ctld"
            ),
            "restart_all",  # restart_slurmd + restart_slurmctld
            [
                "SlurmdSpoolDir /var/spool/slurmd -> /srv/d (restart slurmd)",
                "StateSaveLocation /var/spool/slurmctld -> /srv/ctld (restart slurmctld)",
            ],
        ),
        (
            _change("bf_interval=30", "bf_interval=60,bf_window=120"),
            "reconfigure",
            ["SchedulerParameters bf_interval=30 -> bf_interval=60,bf_window=120 (reconfigure)"],
        ),
        (
            _change("bf_interval=30", "bf_interval=30,no_backup_scheduling"),
            "restart_slurmctld",
            [
                "SchedulerParameters bf_interval=30 -> bf_interval=30,no_backup_scheduling "
                "(restart slurmctld: no_backup_scheduling changed)"
            ],
        ),
        (
            _change(
                "SlurmctldParameters=cloud_dns", "SlurmctldParameters=cloud_dns,enable_configless"
            ),
            "restart_slurmctld",
            None,
        ),
        (
            _change("SlurmctldParameters=cloud_dns", "SlurmctldParameters=idle_on_node_suspend"),
            "reconfigure",
            None,
        ),
        (_change("ClusterName=cluster", "ClusterName=other"), "restart_all", None),
        (
            CLUSTER + "MaxJobCount=20000\n",
            "restart_slurmctld",
            ["MaxJobCount (unset) -> 20000 (restart slurmctld)"],
        ),
        (
            _change("SchedulerParameters=bf_interval=30\n", ""),
            "reconfigure",
            ["SchedulerParameters bf_interval=30 -> (unset) (reconfigure)"],
        ),
        (
            CLUSTER + "NodeName=n4 CPUs=2\n",
            "restart_all",
            ["NodeName n4 added (node definitions: restart slurmctld and all slurmd)"],
        ),
        (
            _change("PartitionName=debug Nodes=n[1-3] MaxTime=60\n", ""),
            "reconfigure",
            ["PartitionName debug removed (reconfigure)"],
        ),
        (
            _change(
                "NodeName=DEFAULT RealMemory=1000\nNodeName=n[1-3] CPUs=2\n",
                "NodeName=n[1-3] CPUs=2\nNodeName=DEFAULT RealMemory=1000\n",
            ),
            "restart_all",
            ["NodeName lines reordered (node definitions: restart slurmctld and all slurmd)"],
        ),
        (
            _change("SlurmctldHost=ctl\n", "SlurmctldHost=ctl\nSlurmctldHost=backup\n"),
            "restart_all",
            ["SlurmctldHost ctl -> ctl, backup (restart slurmctld and all slurmd)"],
        ),
        (CLUSTER + "CoreSpecPlugin=core_spec/none\n", "restart_slurmd", None),
        (CLUSTER + "GresTypes=gpu\n", "restart_all", None),
        (CLUSTER + "MpiDefault=pmix\n", "reconfigure", None),
        (CLUSTER + "ProctrackType=proctrack/cgroup\n", "restart_all", None),
        (
            CLUSTER + "Include /etc/slurm/nodes.conf\n",
            "restart_all",
            [
                "Include (unset) -> /etc/slurm/nodes.conf (included files are not read here: "
                "restart slurmctld and all slurmd)"
            ],
        ),
    ],
)
def test_classify(new, cls, reasons):
    result = model.classify(CLUSTER, new)
    assert result["class"] == cls
    if reasons is not None:
        assert result["reasons"] == reasons
    assert bool(result["reasons"]) == (cls != "none")


def test_classify_cluster_name_change_warns_about_the_state_save_check():
    (reason,) = model.classify(CLUSTER, _change("ClusterName=cluster", "ClusterName=x"))["reasons"]
    assert reason.startswith("ClusterName cluster -> x (restart slurmctld and all slurmd;")
    assert "CLUSTER NAME MISMATCH" in reason
    assert "StateSaveLocation/clustername" in reason


def test_classify_refuses_unknown_keys_on_either_side():
    with pytest.raises(model.ConfError, match=r"^slurm.conf \(new\) line 11: unknown"):
        model.classify(CLUSTER, CLUSTER + "SchedulerTyp=x\n")
    with pytest.raises(model.ConfError, match=r"^slurm.conf \(old\) line 1: unknown"):
        model.classify("Bogus=1\n", CLUSTER)
    assert model.classify(CLUSTER + "Bogus=1\n", CLUSTER, extra_keys=["Bogus"])["class"] == (
        "reconfigure"
    )


@pytest.mark.parametrize(
    ("old", "new", "cls"),
    [(None, None, "none"), (None, CLUSTER, "restart_all"), (CLUSTER, None, "restart_all")],
)
def test_classify_absent_files(old, new, cls):
    assert model.classify(old, new)["class"] == cls


GRES = "# gres\nName=gpu File=/dev/nvidia0\n"
CGROUP = "ConstrainCores=yes\n"


@pytest.mark.parametrize(
    ("changes", "cls", "reasons"),
    [
        (
            {
                "slurm.conf": (CLUSTER, CLUSTER),
                "gres.conf": (GRES, GRES),
                "cgroup.conf": (None, None),
            },
            "none",
            [],
        ),
        ({"gres.conf": (GRES, "# reworded\n\nName=gpu   File=/dev/nvidia0 # x\n")}, "none", []),
        (
            {"gres.conf": (GRES, GRES.replace("nvidia0", "nvidia1"))},
            "restart_all",
            [
                "gres.conf: file changed (slurmd reads GRES definitions at start and they must "
                "match slurmctld's: restart slurmctld and all slurmd)"
            ],
        ),
        ({"gres.conf": (None, GRES)}, "restart_all", None),
        (
            {"cgroup.conf": (CGROUP, None)},
            "restart_slurmd",
            ["cgroup.conf: file removed (slurmd reads it at start: restart slurmd)"],
        ),
        (
            {
                "slurm.conf": (CLUSTER, _change("MaxTime=60", "MaxTime=120")),
                "cgroup.conf": (CGROUP, "ConstrainCores=no\n"),
            },
            "restart_slurmd",
            [
                "slurm.conf: PartitionName debug: MaxTime 60 -> 120 (reconfigure)",
                "cgroup.conf: file changed (slurmd reads it at start: restart slurmd)",
            ],
        ),
        (
            {
                "slurm.conf": (
                    CLUSTER,
                    _change("SchedulerType=sched/builtin", "SchedulerType=sched/backfill"),
                ),
                "cgroup.conf": (None, CGROUP),
            },
            "restart_all",
            None,
        ),
        ({"/etc/slurm/topology.conf": ("a\n", "b\n")}, "restart_all", None),
    ],
)
def test_classify_files(changes, cls, reasons):
    result = model.classify_files(changes)
    assert result["class"] == cls
    if reasons is not None:
        assert result["reasons"] == reasons
    assert bool(result["reasons"]) == (cls != "none")


# ---------------------------------------------------------------------------------------------
# key tables, speed
# ---------------------------------------------------------------------------------------------
def test_key_tables_are_consistent():
    lower = [key.lower() for key in KEYS]
    assert len(lower) == len(set(lower))
    assert set(model.RECORD_KINDS) <= set(KEYS)
    assert set(RECORD_KEYS) == set(model.RECORD_KINDS)
    for kind, keys in RECORD_KEYS.items():
        assert keys[0] == kind
        assert len({key.lower() for key in keys}) == len(keys)
    assert not {key.lower() for key in REMOVED_KEYS} & set(lower)
    assert model.CLASSES[0] == "none" and model.CLASSES[-1] == "restart_all"


def _big_conf(nodes=9000, partitions=990):
    lines = ["ClusterName=c\n", "SlurmctldHost=ctl\n"]
    lines += [
        f"NodeName=n{i} CPUs=4 RealMemory=1000 State=UNKNOWN  # rack {i // 40}\n"
        for i in range(nodes)
    ]
    lines += [f"PartitionName=p{i} Nodes=n[{i}-{i + 9}] MaxTime=60\n" for i in range(partitions)]
    return "".join(lines)


def test_a_10000_line_conf_round_trips():
    # speed is measured by `make bench` (bench/render_conf.py), not asserted here
    text = _big_conf()
    assert model.parse(text).render() == text


def test_many_edits_keep_the_records_right():
    conf = model.parse(_big_conf(nodes=2000, partitions=10))
    for i in range(2000, 4000):
        conf.add_record("NodeName", [("NodeName", f"n{i}"), ("CPUs", "4")])
    conf.remove_records("NodeName", [f"n{i}" for i in range(0, 4000, 2)])
    assert [r.name for r in conf.records("NodeName")] == [f"n{i}" for i in range(1, 4000, 2)]


def test_conf_nodes_expands_hostlists_and_skips_default():
    text = "NodeName=DEFAULT CPUs=2\nNodeName=n[1-2] RealMemory=5\nNodeName=g01\n"
    assert model.conf_nodes("ClusterName=x\nSlurmctldHost=ctl\n" + text) == ["n1", "n2", "g01"]
