"""Cause naming from probe evidence (the bed proves each with a real fault; these pin the rules)."""

import pytest

from salt_ext.lib import clusterops, diagnosis

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
    assert names(causes) == ["node DOWN: admin test"]


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
    rows = clusterops.status_rows(STATUS, {"n1": "n1", "n2": "n2", "n3": "n3"}, statuses, states)
    by = {r["node"]: r for r in rows}
    assert by["n1"]["conf"] is True and clusterops.row_ok(by["n1"])
    assert by["n2"]["conf"] is False and not clusterops.row_ok(by["n2"])
    assert by["n3"]["reachable"] is False and by["n3"]["state"] == "not in slurmctld"
    text = clusterops.format_table(rows, "controller ctl")
    assert "1/3 nodes healthy; look at: n2, n3" in text
    assert by["n1"]["version"] == "22.05.8"


def test_verify_node_names_each_failed_check_with_evidence():
    ok_decode = {"ok": True, "payload": clusterops.VERIFY_PAYLOAD, "encode_host": "n1"}
    good = clusterops.verify_node(
        "n1", "n1", STATUS, STATUS, "MUNGE:x", ok_decode, {"ok": True}, {"ok": True, "output": "n1"}
    )
    assert all(c["ok"] for c in good.values()), good
    bad_status = {**STATUS, "accounts": {"munge": [1108, 1108], "slurm": [2000, 2000]}}
    bad = clusterops.verify_node(
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
    assert clusterops.verify_node("n1", "n1", None, STATUS, None, None, None, None) == {
        "reachable": {"ok": False, "evidence": "minion n1 did not answer"}
    }


def test_job_step_is_skipped_on_a_node_the_admin_drained():
    admin = {"drained": True, "registered": True, "reason": "BIOS update"}
    check = clusterops.step_check("n2", None, admin)
    assert check["ok"] is True and "skipped: n2 is drained (BIOS update)" in check["evidence"]
    # drained for bad hardware (INVALID_REG): not the admin's choice, the step must run
    invalid = {"drained": True, "registered": False, "reason": "Low RealMemory"}
    assert clusterops.step_check("n2", None, invalid)["ok"] is False
    assert clusterops.step_check("n2", {"ok": True, "output": "n2"})["ok"] is True
