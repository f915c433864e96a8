import pytest

from salt_ext.lib.node import scontrol

# one `scontrol show node -o n1` record as Slurm 22.05 prints it; OS= holds spaces and "#1"
_PREFIX = (
    "NodeName=n1 Arch=x86_64 CoresPerSocket=1 CPUAlloc=0 CPUEfctv=1 CPUTot=1 CPULoad=0.00 "
    "AvailableFeatures=(null) ActiveFeatures=(null) Gres=(null) NodeAddr=10.77.0.11 "
    "NodeHostName=n1 Version=22.05.8 "
    "OS=Linux 6.1.0-28-amd64 #1 SMP PREEMPT_DYNAMIC Debian 6.1.119-1 (2024-11-22)  "
    "RealMemory=1000 AllocMem=0 FreeMem=3000 Sockets=1 Boards=1 "
)
_SUFFIX = (
    " ThreadsPerCore=1 TmpDisk=0 Weight=1 Owner=N/A MCS_label=N/A Partitions=debug "
    "BootTime=2026-11-25T13:40:00 SlurmdStartTime=2026-11-25T13:50:00 "
    "LastBusyTime=2026-11-25T13:55:00 ResumeAfterTime=None "
    "CfgTRES=cpu=1,mem=1000M,billing=1 AllocTRES= CapWatts=n/a CurrentWatts=0 AveWatts=0 "
    "ExtSensorsJoules=n/s ExtSensorsWatts=0 ExtSensorsTemp=n/s"
)


def _line(state, reason=None):
    text = f"{_PREFIX}State={state}{_SUFFIX}"
    return f"{text} Reason={reason}" if reason else text


def test_parse_one_line_reads_key_values_around_spaced_os_field():
    record = scontrol.parse_one_line(_line("IDLE"))
    assert record["NodeName"] == "n1"
    assert record["State"] == "IDLE"
    assert record["RealMemory"] == "1000"
    assert record["CfgTRES"] == "cpu=1,mem=1000M,billing=1"
    assert record["AllocTRES"] == ""
    assert record["ExtSensorsTemp"] == "n/s"
    assert "Reason" not in record


def test_parse_one_line_keeps_the_whole_reason():
    reason = "Not responding [slurm@2026-11-25T14:00:00]"
    record = scontrol.parse_one_line(_line("DOWN*+NOT_RESPONDING", reason) + "\n")
    assert record["Reason"] == reason
    assert record["State"] == "DOWN*+NOT_RESPONDING"


def test_node_state_idle_is_usable():
    state = scontrol.node_state(_line("IDLE") + "\n")
    assert state["name"] == "n1"
    assert state["state"] == "IDLE"
    assert state["flags"] == []
    assert state["responding"] is True
    assert state["usable"] is True
    assert state["reason"] is None


def test_node_state_idle_star_is_not_responding():
    state = scontrol.node_state(_line("IDLE*"))
    assert state["state"] == "IDLE"
    assert state["raw_state"] == "IDLE*"
    assert state["responding"] is False
    assert state["usable"] is False


def test_node_state_down_not_responding_keeps_reason():
    reason = "Not responding [slurm@2026-11-25T14:00:00]"
    state = scontrol.node_state(_line("DOWN*+NOT_RESPONDING", reason))
    assert state["state"] == "DOWN"
    assert state["flags"] == ["NOT_RESPONDING"]
    assert state["reason"] == reason
    assert state["responding"] is False
    assert state["usable"] is False


def test_node_state_drained_idle_is_responding_but_not_usable():
    reason = "maintenance [root@2026-11-25T14:05:00]"
    state = scontrol.node_state(_line("IDLE+DRAIN", reason))
    assert state["state"] == "IDLE"
    assert state["flags"] == ["DRAIN"]
    assert state["responding"] is True
    assert state["usable"] is False
    assert state["reason"] == reason
    # the admin's drain: registered and answering, so rollouts do not wait for it
    assert state["registered"] is True and state["drained"] is True


def test_node_state_invalid_registration_is_not_registered():
    state = scontrol.node_state(_line("IDLE+DRAIN+INVALID_REG", "Low RealMemory"))
    assert state["drained"] is True
    assert state["registered"] is False


@pytest.mark.parametrize(
    "raw", ["DOWN*+NOT_RESPONDING", "IDLE*", "DOWN*+DRAIN", "UNKNOWN", "FUTURE"]
)
def test_node_state_not_registered(raw):
    assert scontrol.node_state(_line(raw))["registered"] is False


def test_node_state_mixed_is_usable():
    assert scontrol.node_state(_line("MIXED"))["usable"] is True


@pytest.mark.parametrize("stdout", ["", "\n", "  \n\n"])
def test_node_state_empty_output_is_unusable_and_unknown(stdout):
    state = scontrol.node_state(stdout)
    assert state["state"] is None
    assert state["usable"] is False
    assert state["responding"] is False


def test_node_state_reads_only_the_first_record():
    state = scontrol.node_state(_line("IDLE") + "\n" + _line("DOWN*").replace("n1", "n2"))
    assert state["name"] == "n1"
    assert state["usable"] is True


def test_is_telling_is_case_insensitive():
    assert scontrol.is_telling("slurmd: error: PROTOCOL AUTHENTICATION ERROR")
    assert not scontrol.is_telling("slurmd: debug: slurmd started")


@pytest.mark.parametrize(
    ("evidence", "cause"),
    [
        (
            ["slurmd: error: slurm_receive_msg [10.77.0.10:6817]: Protocol authentication error"],
            "munge key mismatch with the controller (authentication failed)",
        ),
        (
            ["slurmd: error: Munge decode failed: Invalid credential"],
            "munge key mismatch with the controller (authentication failed)",
        ),
        (
            [
                "scontrol show node -o n1 exited 1: slurm_load_node error: "
                "Zero Bytes were transmitted or received"
            ],
            "munge key mismatch with the controller (slurmctld drops this node's requests: "
            "Zero Bytes were transmitted or received)",
        ),
        (
            [
                "slurmd: error: Error connecting slurm stream socket at 10.77.0.10:6817: "
                "Connection refused"
            ],
            "slurmd cannot reach the controller",
        ),
        (
            [
                "slurmd: error: Munge encode failed: Failed to connect to "
                '"/run/munge/munge.socket.2": Connection refused'
            ],
            "munged is not running",
        ),
        (
            [
                "slurmd: error: Node configuration differs from hardware: "
                "Low RealMemory (reported:1000 < 100.00% of configured:64000)"
            ],
            "node hardware is below what slurm.conf declares",
        ),
        (
            ["slurmd: fatal: Unable to determine this slurmd's NodeName"],
            "node did not register with the controller in time",
        ),
        (
            ["slurmd: error: Node n9 not found in slurm.conf"],
            "node missing from slurm.conf (hostname does not match a NodeName)",
        ),
    ],
)
def test_diagnose_names_cause_from_evidence(evidence, cause):
    assert scontrol.diagnose(evidence, None) == cause


def test_diagnose_zero_bytes_with_refused_connection_is_not_a_key_mismatch():
    evidence = [
        "slurm_load_node error: Zero Bytes were transmitted or received",
        "slurmd: error: Error connecting slurm stream socket at 10.77.0.10:6817: "
        "Connection refused",
    ]
    assert scontrol.diagnose(evidence, None) == "slurmd cannot reach the controller"


def test_diagnose_unrelated_munged_log_line_does_not_blame_munged():
    # _evidence() labels munged's lines "munged: "; an old munged error next to slurmd's
    # refused connection to the controller must not read as "munged is not running"
    evidence = [
        "slurmd: error: Error connecting slurm stream socket at 10.77.0.10:6817: "
        "Connection refused",
        'munged: 2026-11-25 13:50:01 +0000 Error:    Failed to check keyfile "/etc/munge/munge.key"'
        ": No such file or directory",
    ]
    assert scontrol.diagnose(evidence, None) == "slurmd cannot reach the controller"


def test_diagnose_falls_back_to_the_controllers_reason():
    state = scontrol.node_state(_line("DOWN*+NOT_RESPONDING", "Not responding [slurm@x]"))
    assert scontrol.diagnose([], state) == "node DOWN: Not responding [slurm@x]"


def test_diagnose_falls_back_to_no_answer_when_not_responding_without_reason():
    state = scontrol.node_state(_line("IDLE*"))
    assert scontrol.diagnose(["slurmd: debug: nothing telling"], state) == (
        "controller gets no answer from slurmd"
    )


def test_diagnose_without_evidence_or_state_says_not_registered():
    assert scontrol.diagnose([], None) == "node did not register with the controller in time"


# --- who set the reason; room for a test step; scontrol ping --------------------------------
@pytest.mark.parametrize(
    ("reason", "slurm_user", "by", "text", "user"),
    [
        (
            "Kill task failed [slurm@2026-11-28T03:40:00]",
            "slurm",
            "slurm",
            "Kill task failed",
            "slurm",
        ),
        (
            "Duplicate jobid [slurm@2026-11-28T03:40:00]",
            "slurm",
            "slurm",
            "Duplicate jobid",
            "slurm",
        ),
        ("disk swap [root@2026-11-28T03:40:00]", "slurm", "admin", "disk swap", "root"),
        # an admin's reason that reads like Slurm's: the user tells
        ("Not responding [root@2026-11-28T03:40:00]", "slurm", "admin", "Not responding", "root"),
        # slurmctld running as root: only the text tells
        ("Not responding [root@2026-11-28T03:40:00]", "root", "slurm", "Not responding", "root"),
        (
            "Node unexpectedly rebooted [root@t]",
            "root",
            "slurm",
            "Node unexpectedly rebooted",
            "root",
        ),
        ("BIOS update [root@t]", "root", "admin", "BIOS update", "root"),
        ("batch job complete failure", "slurm", "slurm", "batch job complete failure", None),
        ("my own words", "slurm", "admin", "my own words", None),
        (None, "slurm", None, None, None),
    ],
)
def test_reason_parts(reason, slurm_user, by, text, user):
    parts = scontrol.reason_parts(reason, slurm_user)
    assert (parts["reason_by"], parts["reason_text"], parts["reason_user"]) == (by, text, user)


def test_node_states_carry_resources_and_who_set_the_reason():
    text = _line("IDLE+DRAIN", "Low RealMemory [slurmsvc@2026-11-28T03:40:00]")
    state = scontrol.node_states(text, slurm_user="slurmsvc")["n1"]
    assert state["reason_by"] == "slurm" and state["reason_text"] == "Low RealMemory"
    assert state["reason_time"] == "2026-11-28T03:40:00"
    assert (state["cpus"], state["cpus_alloc"], state["memory"], state["memory_alloc"]) == (
        1,
        0,
        1000,
        0,
    )
    assert scontrol.node_state(text)["reason_by"] == "admin"  # slurmsvc is not SlurmUser here


@pytest.mark.parametrize(
    ("figures", "fits"),
    [
        ({"cpus": 2, "cpus_alloc": 0, "memory": 1000, "memory_alloc": 0}, True),
        ({"cpus": 2, "cpus_alloc": 1, "memory": 1000, "memory_alloc": 500}, True),
        ({"cpus": 2, "cpus_alloc": 2, "memory": 1000, "memory_alloc": 100}, False),
        ({"cpus": 2, "cpus_alloc": 1, "memory": 1000, "memory_alloc": 990}, False),
        ({}, True),
    ],
)
def test_step_room(figures, fits):
    ok, text = scontrol.step_room(figures, 32)
    assert ok is fits
    if figures:
        assert f"{figures['cpus_alloc']}/{figures['cpus']} CPUs" in text


@pytest.mark.parametrize(
    ("output", "host", "ok"),
    [
        ("Slurmctld(primary) at ctl is UP\n", "ctl", True),
        ("Slurmctld(primary) at ctl is DOWN\n", "ctl", False),
        # a backup controller judges its own line
        ("Slurmctld(primary) at c1 is DOWN\nSlurmctld(backup) at c2 is UP\n", "c2", True),
        ("Slurmctld(primary) at c1 is UP\nSlurmctld(backup) at c2 is DOWN\n", "c2", False),
        ("Slurmctld(primary) at ctl is UP\n", "n1", True),
        ("slurm_ping error: Unable to contact slurm controller\n", "n1", False),
        ("", "n1", False),
    ],
)
def test_ping_answer(output, host, ok):
    assert scontrol.ping_answer(output, host)[0] is ok
