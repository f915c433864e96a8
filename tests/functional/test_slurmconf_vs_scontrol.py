"""``salt_ext.lib.conf.model`` against the slurm.conf parser of the installed ``scontrol`` (22.05).

``scontrol show hostnames`` reads slurm.conf (from a private ``SLURM_CONF``) and needs no
daemon: it exits 0 with empty stderr when Slurm accepts the file. Values Slurm read are made
visible through DebugFlags, whose validation prints the value it got ("DebugFlags invalid:
<value>").
"""

import os
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest

from salt_ext.lib.conf import model
from salt_ext.lib.conf.params import KEYS, RECORD_KEYS, REMOVED_KEYS

SCONTROL = shutil.which("scontrol")
pytestmark = pytest.mark.skipif(SCONTROL is None, reason="scontrol (slurm-client) not installed")

HEAD = "ClusterName=x\nSlurmctldHost=localhost\n"
UNRECOGNIZED = re.compile(r"unrecognized key: (\S+)")
SENTINEL = "ZzzNotASlurmKey"


@pytest.fixture(scope="module")
def scontrol(tmp_path_factory):
    """``scontrol(text) -> (returncode, stderr)`` with ``text`` as slurm.conf."""
    base = tmp_path_factory.mktemp("slurm")
    counter = iter(range(10**6))

    def run(text):
        folder = base / str(next(counter))
        folder.mkdir()
        conf = folder / "slurm.conf"
        conf.write_text(text)
        proc = subprocess.run(
            [SCONTROL, "show", "hostnames", "a1"],
            env=dict(os.environ, SLURM_CONF=str(conf)),
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )
        return proc.returncode, proc.stderr

    return run


@pytest.fixture(scope="module")
def include_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("include") / "extra.conf"
    path.write_text("MaxArraySize=1001\n")
    return path


def _debugflags_seen_by_slurm(stderr):
    found = re.search(r"DebugFlags invalid: (.*)", stderr)
    return found.group(1) if found else None


# ---------------------------------------------------------------------------------------------
# (a) the key lists
# ---------------------------------------------------------------------------------------------
def test_every_plain_key_is_known_to_slurm(scontrol):
    # Slurm reports every unrecognized key and keeps parsing, and only "unrecognized key"
    # matters here (some keys reject the value 1); the sentinel at the end proves the whole
    # file was parsed.
    plain = [key for key in KEYS if key not in model.RECORD_KINDS]
    plain = [key for key in plain if key not in ("ClusterName", "SlurmctldHost")]
    body = "".join(f"{key}=1\n" for key in plain)
    _rc, stderr = scontrol(HEAD + body + f"{SENTINEL}=1\n")
    assert UNRECOGNIZED.findall(stderr) == [SENTINEL], stderr


@pytest.mark.parametrize("kind", ["NodeName", "PartitionName", "NodeSet", "DownNodes"])
def test_every_record_key_is_known_to_slurm(scontrol, kind):
    # an unknown key ends the parsing of its line: the sentinel must be the only one reported
    pairs = " ".join(f"{key}=1" for key in RECORD_KEYS[kind][1:])
    text = HEAD + "NodeName=n1\n" + f"{kind}=x1 {pairs} {SENTINEL}=1\n"
    _rc, stderr = scontrol(text)
    assert UNRECOGNIZED.findall(stderr) == [SENTINEL], stderr


def test_frontendname_is_a_known_key_but_needs_a_front_end_build(scontrol):
    # Debian builds Slurm without front-end support: the line is recognised, then refused,
    # so its own keys cannot be probed (they come from slurm.conf(5) only)
    rc, stderr = scontrol(HEAD + "FrontendName=f1\n")
    assert rc != 0
    assert "FrontendName" in stderr and "front-end" in stderr
    assert not UNRECOGNIZED.search(stderr)


@pytest.mark.parametrize("key", sorted(REMOVED_KEYS))
def test_removed_keys_fail_in_slurm_with_the_message_we_give(scontrol, key):
    rc, stderr = scontrol(HEAD + f"{key}=1\n")
    assert rc != 0
    assert f"fatal: {REMOVED_KEYS[key]}" in stderr
    with pytest.raises(model.ConfError, match=re.escape(REMOVED_KEYS[key])):
        model.parse(HEAD + f"{key}=1\n")


# ---------------------------------------------------------------------------------------------
# (b) made-up keys
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("line", "key"),
    [
        ("SchedulerTyp=sched/backfill", "SchedulerTyp"),
        ("NodeName=n1 CPU=2", "CPU"),
        ("PartitionName=p Nodes=n1 MaxTim=5", "MaxTim"),
    ],
)
def test_made_up_keys_are_rejected_by_both(scontrol, line, key):
    rc, stderr = scontrol(HEAD + "NodeName=n1\n" + line + "\n")
    assert rc != 0
    assert UNRECOGNIZED.findall(stderr) == [key], stderr
    with pytest.raises(model.ConfError) as caught:
        model.parse(HEAD + "NodeName=n1\n" + line + "\n")
    assert caught.value.key == key
    assert caught.value.lineno == 4


# ---------------------------------------------------------------------------------------------
# (c) what we render is what Slurm accepts
# ---------------------------------------------------------------------------------------------
def test_a_conf_edited_and_rendered_by_us_is_accepted_by_slurm(scontrol, include_file):
    original = (
        "# written by hand\n"
        "ClusterName=x\n"
        "SlurmctldHost=localhost   # primary\n"
        "SLURMDLOGFILE = /var/log/slurm/slurmd.log\n"
        'MailProg="/usr/bin/mail wrapper"\n'
        f"Include {include_file}\n"
        "\n"
        "NodeName=DEFAULT CPUs=1 RealMemory=1000 State=UNKNOWN\n"
        "NodeName=n[1-2] \\\n"
        "    CPUs=2\n"
        "PartitionName=debug Nodes=n[1-2] Default=YES MaxTime=INFINITE State=UP\n"
    )
    assert scontrol(original) == (0, "")
    conf = model.parse(original)
    conf.set("SlurmctldHost", ["localhost", "backup(10.0.0.2)"])
    conf.set("SlurmdLogFile", "/var/log/slurm/slurmd #1.log")
    conf.set("MailProg", "/usr/bin/mail")
    conf.set("SchedulerParameters", "bf_interval=30,bf_window=60")
    conf.set("UsePAM", 0)
    conf.remove("MaxJobCount")
    conf.add_record("NodeName", [("NodeName", "n3"), ("CPUs", 4), ("Features", "big,fast")])
    conf.add_record(
        "NodeName", [("NodeName", "n4"), ("State", "DOWN"), ("Reason", "disk failed #42")]
    )
    conf.add_record(
        "PartitionName",
        [("PartitionName", "big"), ("Nodes", "n[3-4]"), ("MaxTime", "60"), ("State", "UP")],
    )
    conf.records("PartitionName")[0].pairs.append(("MaxNodes", "2"))
    rendered = conf.render()
    assert scontrol(rendered) == (0, "")
    again = model.parse(rendered)
    assert again.get("SlurmdLogFile") == "/var/log/slurm/slurmd #1.log"
    assert again.records("NodeName")[-1].get("Reason") == "disk failed #42"


# ---------------------------------------------------------------------------------------------
# (d) the parse rules, decided by probing Slurm, still agree with Slurm
# ---------------------------------------------------------------------------------------------
VALUE_CASES = [
    "DebugFlags=foo",
    "debugflags=foo",
    "   DebugFlags=foo",
    "DebugFlags = foo",
    "DebugFlags =foo",
    "DebugFlags= foo",
    "DebugFlags\t=\tfoo",
    "DebugFlags=foo   # a comment",
    'DebugFlags="foo bar"',
    'DebugFlags="foo"',
    'DebugFlags="a"b',
    'DebugFlags="a',
    "DebugFlags=foo#bar",
    "DebugFlags=foo\\#bar",
    "DebugFlags=foo\\\\#bar",
    "DebugFlags=fo\\o",
    'DebugFlags="a \\#b"',
    'DebugFlags="a #b"',
    "DebugFlags=foo\\\nbar",
    "DebugFlags=foo\\   \nbar",
    "DebugFlags=a\\\\\\\nb",
    "DebugFlags=a\\\n#b",
    "DebugFlags=a\\\nb\\\nc",
    "DebugFlags=foo\r",
    "# comment \\\nDebugFlags=foo",
]


@pytest.mark.parametrize("line", VALUE_CASES)
def test_values_we_read_are_the_values_slurm_reads(scontrol, line):
    _rc, stderr = scontrol(HEAD + line + "\n")
    theirs = _debugflags_seen_by_slurm(stderr)
    assert theirs is not None, stderr
    assert model.parse(HEAD + line + "\n").get("DebugFlags") == theirs


REJECTED = [
    "MaxJobCount=5 MaxArraySize=7",  # one plain pair per line
    "MaxJobCount=5 garbage",
    "garbage",
    "=foo",
    "MaxJobCount=",
    "Debug-Flags=foo",
    "MaxJobCount=5 NodeName=n2",  # records start their own line
    "NodeName=n2 MaxJobCount=5",
    "NodeName=n2 NodeName=n3",
    "NodeName=n2 CPUs=1 garbage",
    'DebugFlags=a"b c"',
    "DebugFlags=a\\ b",  # an escaped space is still a separator
    "DebugFlags=foo \\\n  MaxJobCount=5",
    "   Include /dev/null",  # Include must start the line
    "Include /dev/null extra",
    "Include=/dev/null",
]


@pytest.mark.parametrize("line", REJECTED)
def test_lines_slurm_rejects_we_reject(scontrol, line):
    rc, stderr = scontrol(HEAD + "NodeName=n1\n" + line + "\n")
    assert rc != 0 and ("Parse error" in stderr or "unrecognized key" in stderr), stderr
    with pytest.raises(model.ConfError):
        model.parse(HEAD + "NodeName=n1\n" + line + "\n")


def _accepted_cases(include_file):
    return [
        "MaxJobCount=5   # comment",
        "MaxJobCount = 5",
        'DebugFlags=""',
        f"Include {include_file}",
        f"include {include_file}",
        f"INCLUDE\t{include_file}   # comment",
        "NodeName=n2 CPUs=1 RealMemory=100 \\\n    State=UNKNOWN",
        'NodeName=n2 Reason="two words" State=DOWN',
        "NodeName=n2\nPartitionName=p Nodes=n[1-2] MaxTime=INFINITE",
        "NodeName=DEFAULT CPUs=1\nNodeName=n2\nNodeName=DEFAULT CPUs=2\nNodeName=n3",
        "PartitionName=debug Nodes=n1\nPartitionName=DEBUG Nodes=n1",
        "SlurmctldHost=backup1\nSlurmctldHost=backup2",
    ]


def test_lines_slurm_accepts_we_accept(scontrol, include_file):
    cases = _accepted_cases(include_file)
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda line: scontrol(HEAD + "NodeName=n1\n" + line + "\n"), cases))
    for line, result in zip(cases, results, strict=True):
        assert result == (0, ""), (line, result)
        text = HEAD + "NodeName=n1\n" + line + "\n"
        assert model.parse(text).render() == text


STRICTER = [
    "MaxJobCount=5\nMaxJobCount=6",  # Slurm: the last one wins
    "MaxJobCount=5\nmaxjobcount=6",
    "NodeName=n2 CPUs=1 CPUs=2",
    "NodeName=n2\nNodeName=n2",  # only slurmctld notices
    "PartitionName=p Nodes=n1\nPartitionName=p Nodes=n1",
    "MaxJobCount+=5",  # undocumented operator syntax
]


@pytest.mark.parametrize("line", STRICTER)
def test_where_we_are_stricter_than_slurm(scontrol, line):
    # documents the decisions in slurmconf's docstring; if Slurm starts refusing one of
    # these, move it to REJECTED
    assert scontrol(HEAD + "NodeName=n1\n" + line + "\n") == (0, "")
    with pytest.raises(model.ConfError):
        model.parse(HEAD + "NodeName=n1\n" + line + "\n")
