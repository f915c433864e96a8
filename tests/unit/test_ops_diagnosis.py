"""Cause naming from probe evidence (the bed proves each with a real fault; these pin the rules)."""

import pytest

from salt_ext.lib.ops import diagnosis, views

CTL = {
    "munge_key_hash": "sha256:k",
    "slurm_conf_hash": "sha256:c",
    "time": 1000.0,
    "logs": {"slurmctld": []},
}
IDLE = {"raw_state": "IDLE", "reason": None, "usable": True, "responding": True}
CONF_NODES = {"n1", "n2"}


def probe(**changes):
    base = {
        "daemons": {"munge": True, "slurmd": True},
        "munge_key_hash": "sha256:k",
        "slurm_conf_hash": "sha256:c",
        "hostname": "n1",
        "time": 1001.0,
        "controller_ping": {"ok": True, "output": "Slurmctld(primary) at ctl is UP"},
        "logs": {"slurmd": [], "munged": [], "slurmd_last": [], "munged_last": []},
    }
    base.update(changes)
    return base


def names(causes):
    return [c["cause"] for c in causes]


def test_healthy_node_has_no_cause():
    assert diagnosis.node_causes("n1", "n1", probe(), CTL, IDLE, CONF_NODES, {"ok": True}) == []


@pytest.mark.parametrize(
    "node_probe, state, decoded, expected",
    [
        (None, IDLE, None, ["minion unreachable"]),
        (probe(daemons={"munge": False, "slurmd": True}), IDLE, None, ["munged not running"]),
        (
            probe(munge_key_hash="sha256:other"),
            IDLE,
            {"ok": False, "error": "Invalid credential"},
            ["munge key mismatch"],
        ),
        (probe(daemons={"munge": True, "slurmd": False}), IDLE, None, ["slurmd not running"]),
        (probe(hostname="n1x"), IDLE, None, ["hostname differs from NodeName"]),
        (
            probe(slurm_conf_hash="sha256:old"),
            IDLE,
            None,
            ["slurm.conf differs from the controller's"],
        ),
        (
            probe(controller_ping={"ok": False, "output": "Slurmctld(primary) at ctl is DOWN"}),
            IDLE,
            None,
            ["slurmd cannot reach the controller"],
        ),
        (probe(), IDLE, {"ok": False, "error": "Expired credential"}, ["clock skew"]),
        (probe(time=1400.0), IDLE, None, ["clock skew"]),
        (
            probe(),
            {
                "raw_state": "IDLE+DRAIN",
                "reason": "Low RealMemory (reported:100 < 100.00% of configured:200)",
                "usable": False,
            },
            None,
            ["hardware below slurm.conf"],
        ),
    ],
)
def test_each_fault_is_named(node_probe, state, decoded, expected):
    causes = diagnosis.node_causes("n1", "n1", node_probe, CTL, state, CONF_NODES, decoded)
    assert names(causes) == expected
    assert all(c["evidence"] and c["fix"] for c in causes)


def test_node_missing_from_conf():
    causes = diagnosis.node_causes("n3", "n3", probe(hostname="n3"), CTL, None, CONF_NODES)
    assert names(causes) == ["node missing from slurm.conf"]


def test_key_mismatch_hides_the_unreachable_controller_it_causes():
    causes = diagnosis.node_causes(
        "n1",
        "n1",
        probe(munge_key_hash="sha256:x", controller_ping={"ok": False, "output": "DOWN"}),
        CTL,
        IDLE,
        CONF_NODES,
    )
    assert names(causes) == ["munge key mismatch"]


def test_fix_names_the_minion_and_node():
    causes = diagnosis.node_causes(
        "n2",
        "m-n2",
        probe(daemons={"munge": False, "slurmd": True}, hostname="n2"),
        CTL,
        IDLE,
        CONF_NODES,
    )
    assert causes[0]["fix"].startswith("salt m-n2 ")


def test_unexplained_down_node_reports_its_state_and_reason():
    state = {"raw_state": "DOWN", "reason": "admin test", "usable": False}
    causes = diagnosis.node_causes("n1", "n1", probe(), CTL, state, CONF_NODES)
    assert names(causes) == ["down by an admin: admin test"]
    state = {"raw_state": "DOWN*", "state": "DOWN", "reason": None, "usable": False}
    causes = diagnosis.node_causes("n1", "n1", probe(), CTL, state, CONF_NODES)
    assert names(causes) == ["node DOWN*"] and "slurm.resume n1" in causes[0]["fix"]


# ---------------------------------------------------------------------- hung daemons
def health(munge="running", slurmd="running", **extra):
    def entry(state, pid):
        if state == "hung-T":
            return {
                "state": "hung",
                "pid": pid,
                "proc_state": "T",
                "evidence": f"pid {pid} state T (stopped)",
            }
        if state == "hung":
            return {
                "state": "hung",
                "pid": pid,
                "proc_state": "S",
                "evidence": "no answer to `scontrol show slurmd` in 5 s",
            }
        return {"state": state, "pid": pid, "proc_state": "S", "evidence": f"pid {pid}: answers"}

    return {"munge": entry(munge, 11), "slurmd": entry(slurmd, 22), **extra}


def test_a_stopped_slurmd_is_hung_with_evidence_and_a_fix_that_continues_it():
    node = probe(health=health(slurmd="hung-T"), hostname="n2", logs={"slurmd_last": ["last line"]})
    causes = diagnosis.node_causes("n2", "m2", node, CTL, IDLE, {"n1", "n2"})
    assert names(causes) == ["slurmd hung"]
    assert causes[0]["evidence"] == ["slurmd on n2: pid 22 state T (stopped)", "last line"]
    assert causes[0]["fix"] == (
        "it was stopped by a signal: kill -CONT 22 on n2; "
        "or restart it: salt m2 slurm_node.restart slurmd"
    )
    assert "resume" not in causes[0]["fix"]


def test_a_silent_slurmd_is_hung_and_its_fix_is_a_restart():
    causes = diagnosis.node_causes(
        "n1", "n1", probe(health=health(slurmd="hung")), CTL, IDLE, CONF_NODES
    )
    assert names(causes) == ["slurmd hung"]
    assert "no answer to `scontrol show slurmd` in 5 s" in causes[0]["evidence"][0]
    assert causes[0]["fix"] == "salt n1 slurm_node.restart slurmd"


def test_a_hung_munged_is_named_and_the_unasked_ping_blames_nothing_else():
    node = probe(
        health=health(munge="hung-T"),
        hostname="n3",
        controller_ping={"ok": None, "output": "not asked: munged does not answer"},
    )
    causes = diagnosis.node_causes("n3", "n3", node, CTL, IDLE, {"n3"}, None)
    assert names(causes) == ["munged hung"]
    assert "kill -CONT 11 on n3" in causes[0]["fix"]
    # a failed ping with munged hung is munged's doing, not the network's
    node["controller_ping"] = {"ok": False, "output": "no answer to `scontrol ping` in 5 s"}
    assert names(diagnosis.node_causes("n3", "n3", node, CTL, IDLE, {"n3"})) == ["munged hung"]


def test_not_running_wins_over_hung_for_the_same_daemon():
    node = probe(daemons={"munge": True, "slurmd": False}, health=health(slurmd="stopped"))
    assert names(diagnosis.node_causes("n1", "n1", node, CTL, IDLE, CONF_NODES)) == [
        "slurmd not running"
    ]


def test_a_hung_slurmctld_is_named_first_on_every_node_instead_of_an_unreachable_controller():
    ctl = {
        **CTL,
        "hostname": "ctl",
        "health": {
            "munge": {"state": "running"},
            "slurmctld": {
                "state": "hung",
                "pid": 5,
                "proc_state": "T",
                "evidence": "pid 5 state T (stopped)",
            },
        },
    }
    node = probe(controller_ping={"ok": False, "output": "no answer to `scontrol ping` in 5 s"})
    causes = diagnosis.node_causes("n1", "n1", node, ctl, None, CONF_NODES)
    assert names(causes) == ["slurmctld hung"]
    assert causes[0]["evidence"][0] == "slurmctld on ctl: pid 5 state T (stopped)"
    assert "kill -CONT 5 on ctl" in causes[0]["fix"]
    assert "salt ctl slurm_node.restart slurmctld" in causes[0]["fix"]
    ctl["health"]["munge"] = {"state": "hung", "pid": 4, "proc_state": "S", "evidence": "no answer"}
    assert names(diagnosis.node_causes("n1", "n1", node, ctl, None, CONF_NODES)) == [
        "munged hung on the controller",
        "slurmctld hung",
    ]


@pytest.mark.parametrize(
    "reason, extra, expected",
    [
        ("Kill task failed [slurm@2026-11-28T03:40:00]", {}, "drained by Slurm: Kill task failed"),
        ("Duplicate jobid [slurm@2026-11-28T03:40:00]", {}, "drained by Slurm: Duplicate jobid"),
        ("disk swap [root@2026-11-28T03:40:00]", {}, "drained by an admin: disk swap"),
        # parsed by slurm_controller.cluster_nodes with the cluster's SlurmUser
        (
            "Not responding [root@2026-11-28T03:40:00]",
            {"reason_by": "slurm", "reason_text": "Not responding"},
            "drained by Slurm: Not responding",
        ),
    ],
)
def test_slurms_own_drain_is_told_from_an_admins(reason, extra, expected):
    state = {"raw_state": "IDLE+DRAIN", "drained": True, "reason": reason, "usable": False, **extra}
    causes = diagnosis.node_causes("n1", "n1", probe(), CTL, state, CONF_NODES)
    assert names(causes) == [expected]
    assert reason in causes[0]["evidence"][0]
    if "Slurm" in expected:
        assert "slurmctld.log" in causes[0]["fix"] and "slurm.resume n1" in causes[0]["fix"]
    else:
        assert causes[0]["fix"].startswith("root set this on purpose")


def test_down_by_slurm_not_responding():
    state = {
        "raw_state": "DOWN*",
        "state": "DOWN",
        "reason": "Not responding [slurm@t]",
        "usable": False,
    }
    causes = diagnosis.node_causes("n1", "n1", probe(), CTL, state, CONF_NODES)
    assert names(causes) == ["down by Slurm: Not responding"]


def test_report_text():
    text = diagnosis.format_report(
        {
            "n1": {
                "state": "IDLE",
                "causes": [{"cause": "munged not running", "evidence": ["e"], "fix": "f"}],
            }
        }
    )
    assert "n1: IDLE" in text and "cause: munged not running" in text and "| e" in text
    assert diagnosis.format_report({}) == "every node is up; nothing to diagnose"


# ---------------------------------------------------------------------- status / verify
STATUS = {
    "daemons": {"munge": True, "slurmd": True},
    "munge_key_hash": "sha256:k",
    "slurm_conf_hash": "sha256:c",
    "versions": {"slurm": "slurm-wlm 22.05.8"},
    "accounts": {"munge": [1108, 1108], "slurm": [1109, 1109]},
}


def test_status_rows_compare_with_the_controller():
    statuses = {"n1": STATUS, "n2": {**STATUS, "slurm_conf_hash": "sha256:x"}, "n3": None}
    states = {"n1": IDLE, "n2": IDLE}
    rows = views.status_rows(STATUS, {"n1": "n1", "n2": "n2", "n3": "n3"}, statuses, states)
    by = {r["node"]: r for r in rows}
    assert by["n1"]["conf"] is True and views.row_ok(by["n1"])
    assert by["n2"]["conf"] is False and not views.row_ok(by["n2"])
    assert by["n3"]["reachable"] is False and by["n3"]["state"] == "not in slurmctld"
    text = views.format_table(rows, "controller ctl")
    assert "1/3 nodes healthy; look at: n2, n3" in text
    assert by["n1"]["version"] == "22.05.8"


def test_verify_node_names_each_failed_check_with_evidence():
    ok_decode = {"ok": True, "payload": views.VERIFY_PAYLOAD, "encode_host": "n1"}
    good = views.verify_node(
        "n1", "n1", STATUS, STATUS, "MUNGE:x", ok_decode, {"ok": True}, {"ok": True, "output": "n1"}
    )
    assert all(c["ok"] for c in good.values()), good
    bad_status = {**STATUS, "accounts": {"munge": [1108, 1108], "slurm": [2000, 2000]}}
    bad = views.verify_node(
        "n1",
        "n1",
        bad_status,
        STATUS,
        "MUNGE:x",
        {"ok": False, "error": "Invalid credential"},
        None,
        None,
    )
    failed = {k: c["evidence"] for k, c in bad.items() if not c["ok"]}
    assert set(failed) == {
        "munge node->controller",
        "munge controller->node",
        "slurm uid/gid",
        "job step",
    }
    assert "2000:2000 vs controller 1109:1109" in failed["slurm uid/gid"]
    assert "Invalid credential" in failed["munge node->controller"]
    assert views.verify_node("n1", "n1", None, STATUS, None, None, None, None) == {
        "reachable": {"ok": False, "evidence": "minion n1 did not answer"}
    }


HUNG_SLURMD = {
    **STATUS,
    "health": {
        "munge": {"state": "running", "pid": 1, "evidence": "pid 1: answers"},
        "slurmd": {
            "state": "hung",
            "pid": 2,
            "proc_state": "T",
            "evidence": "pid 2 state T (stopped)",
        },
    },
}


def test_status_rows_show_a_hung_daemon_as_hung_with_its_evidence():
    stopped = {**STATUS, "health": {**HUNG_SLURMD["health"], "slurmd": {"state": "stopped"}}}
    statuses = {"n1": HUNG_SLURMD, "n2": stopped, "n3": STATUS}
    states = {"n1": IDLE, "n2": IDLE, "n3": IDLE}
    rows = views.status_rows(STATUS, {"n1": "n1", "n2": "n2", "n3": "n3"}, statuses, states)
    by = {r["node"]: r for r in rows}
    assert by["n1"]["slurmd"] == "HUNG" and by["n1"]["munged"] is True
    assert by["n1"]["problems"] == ["slurmd hung: pid 2 state T (stopped)"]
    assert by["n2"]["slurmd"] is False
    # a minion without health checks: the process alone
    assert by["n3"]["slurmd"] is True and views.row_ok(by["n3"])
    assert not views.row_ok(by["n1"]) and not views.row_ok(by["n2"])
    text = views.format_table(rows)
    assert "n1: slurmd hung: pid 2 state T (stopped)" in text
    assert "1/3 nodes healthy; look at: n1, n2" in text
    assert "HUNG" in next(line for line in text.splitlines() if line.startswith("n1 "))


def test_status_title_and_controller_ok():
    ctl = {
        **STATUS,
        "slurm_conf_hash": "sha256:0123456789abcdef",
        "health": {
            "munge": {"state": "running"},
            "slurmctld": {"state": "running"},
        },
    }
    assert (
        views.status_title("ctl", ctl) == "controller ctl: slurmctld up, conf sha256:0123456789ab…"
    )
    assert views.controller_ok(ctl)
    ctl["health"]["slurmctld"] = {
        "state": "hung",
        "evidence": "no answer to `scontrol ping` in 5 s",
    }
    title = views.status_title("ctl", ctl)
    assert "slurmctld HUNG (slurmctld hung: no answer to `scontrol ping` in 5 s)" in title
    assert not views.controller_ok(ctl)
    assert views.status_title("ctl", None) == "controller ctl: no answer"
    assert not views.controller_ok(None)
    old = {**STATUS, "daemons": {"munge": True, "slurmctld": False}}
    assert "slurmctld DOWN" in views.status_title("ctl", old)


def test_verify_fails_a_hung_daemon_with_evidence():
    ok_decode = {"ok": True, "payload": views.VERIFY_PAYLOAD, "encode_host": "n1"}
    checks = views.verify_node(
        "n1", "n1", HUNG_SLURMD, STATUS, "MUNGE:x", ok_decode, {"ok": True}, None
    )
    assert checks["daemons"] == {
        "ok": False,
        "evidence": "n1: slurmd hung: pid 2 state T (stopped)",
    }
    not_running = {**STATUS, "daemons": {"munge": False, "slurmd": True}}
    checks = views.verify_node(
        "n1", "n1", not_running, STATUS, "MUNGE:x", ok_decode, {"ok": True}, None
    )
    assert checks["daemons"]["evidence"] == "n1: munged not running"


def test_verify_does_not_blame_the_munge_round_trips_on_the_key_when_munged_hangs():
    hung_munge = {
        **STATUS,
        "health": {
            "munge": {
                "state": "hung",
                "pid": 1,
                "proc_state": "T",
                "evidence": "pid 1 state T (stopped)",
            },
            "slurmd": {"state": "running", "pid": 2, "evidence": "pid 2: not asked"},
        },
    }
    assert not views.munge_answers(hung_munge) and not views.munge_answers(None)
    assert views.munge_answers(STATUS) and views.munge_answers(HUNG_SLURMD)
    checks = views.verify_node("n3", "n3", hung_munge, STATUS, None, None, None, None)
    failed = {k: c["evidence"] for k, c in checks.items() if not c["ok"]}
    assert failed == {
        "daemons": "n3: munged hung: pid 1 state T (stopped)",
        "munge node->controller": "not tried: munged on n3 is hung",
        "munge controller->node": "not tried: munged on n3 is hung",
        "job step": "srun -w n3 hostname: not run",
    }


def test_a_node_slurm_drained_itself_fails_the_job_step_check():
    state = {
        "drained": True,
        "registered": True,
        "reason": "Duplicate jobid [slurm@2026-11-28T03:40:00]",
        "reason_text": "Duplicate jobid",
        "reason_by": "slurm",
    }
    # even when a step ran before the drain
    check = views.step_check("n2", {"ok": True, "output": "n2"}, state)
    assert check["ok"] is False
    assert check["evidence"].startswith("n2 drained by Slurm: Duplicate jobid")


def test_a_busy_node_passes_as_busy_with_its_jobs():
    step = {"ok": True, "busy": True, "jobs": ["12", "13"], "output": "busy: 2/2 CPUs ... 12, 13"}
    check = views.step_check("n1", step)
    assert check == {
        "ok": True,
        "busy": True,
        "jobs": ["12", "13"],
        "evidence": "n1 busy: 2/2 CPUs ... 12, 13",
    }
    full_idle = {"ok": False, "busy": True, "jobs": [], "output": "no room ... yet no job runs"}
    assert views.step_check("n1", full_idle)["ok"] is False
    text = views.format_verify({"n1": {"job step": check}}, "1 nodes verified")
    assert text.splitlines()[0].split() == [
        "n1",
        "ok",
        "(1/1",
        "checks)",
        "busy:",
        "job(s)",
        "12,",
        "13",
    ]


def test_job_step_is_skipped_on_a_node_the_admin_drained():
    admin = {"drained": True, "registered": True, "reason": "BIOS update"}
    check = views.step_check("n2", None, admin)
    assert check["ok"] is True and "skipped: n2 is drained (BIOS update)" in check["evidence"]
    # drained for bad hardware (INVALID_REG): not the admin's choice, the step must run
    invalid = {"drained": True, "registered": False, "reason": "Low RealMemory"}
    assert views.step_check("n2", None, invalid)["ok"] is False
    assert views.step_check("n2", {"ok": True, "output": "n2"})["ok"] is True


def test_no_job_step_on_a_node_the_controller_shows_down():
    down = {
        "state": "IDLE",
        "raw_state": "IDLE*",
        "usable": False,
        "registered": False,
        "drained": False,
        "reason": None,
    }
    check = views.step_check("n2", None, down)
    assert check == {
        "ok": False,
        "evidence": "not run: n2 is IDLE* at the controller (no reason given); "
        "salt-run slurm.diagnose",
    }
