"""slurm.controller / slurm.node / slurm.absent against real munged, slurmctld and slurmd,
on the shared bed that ``salt-run slurm.deploy`` built from bare (``provisioned``)."""

import base64
import os

import pytest

from salt_ext.lib.conf import generate
from tests.integration.conftest import BED_PILLAR, COMPUTE
from tests.integration.helpers import (
    apply,
    changed,
    failed,
    sinfo_nodes,
    state_results,
    wait_for,
)

pytestmark = pytest.mark.testbed


def test_bare_nodes_become_idle_and_run_jobs(cluster, provisioned):
    summary = provisioned["summary"]
    assert summary["controller"]["ok"] is True and summary["controller"]["changed"] > 0
    for name in COMPUTE:
        node = summary["nodes"][name]
        assert node["state"] is True and node["changed"] > 0, f"{name}: a bare node must change"
    assert summary["verify"]["result"] is True and not summary["verify"]["failed"], summary
    assert any("munge key created" in step for step in summary["steps"]), summary["steps"]
    assert sinfo_nodes(cluster) == {name: "idle" for name in COMPUTE}
    proc = cluster.run("ctl", ["srun", "-N3", "hostname"], timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert sorted(proc.stdout.split()) == COMPUTE


def test_munge_credentials_from_each_node_decode_on_controller(cluster, provisioned):
    for name in COMPUTE:
        cred = cluster.salt(name, "munge.encode", [f"from-{name}"])[name]
        assert cred.startswith("MUNGE:")
        decoded = cluster.salt("ctl", "munge.decode", [cred])["ctl"]
        assert decoded["ok"] is True, decoded
        assert decoded["payload"] == f"from-{name}"
        assert decoded["encode_host"].startswith(name)


def key_forms(cluster):
    key = (cluster.cluster_files_dir() / "munge.key").read_bytes()
    return (key.hex(), base64.b64encode(key).decode(), repr(key)[2:40])


def test_key_never_appears_in_deploy_output(cluster, provisioned):
    proc = provisioned["proc"]
    text = repr(provisioned["summary"]) + proc.stdout + proc.stderr
    for form in key_forms(cluster):
        assert form not in text


def test_second_apply_changes_nothing(cluster, provisioned):
    ctl = apply(cluster, "ctl", "slurm.controller")["ctl"]
    nodes = apply(cluster, COMPUTE, "slurm.node", tgt_type="list")
    assert changed(ctl) == {}
    for name in COMPUTE:
        assert changed(nodes[name]) == {}, name


def test_status_reports_same_key_and_conf_everywhere(cluster, provisioned):
    status = cluster.salt(["ctl", *COMPUTE], "slurm_node.status", tgt_type="list")
    hashes = {(s["munge_key_hash"], s["slurm_conf_hash"]) for s in status.values()}
    assert len(hashes) == 1 and None not in next(iter(hashes))
    for name in COMPUTE:
        assert status[name]["daemons"]["munge"] is True
        assert status[name]["daemons"]["slurmd"] is True
        assert status[name]["service_manager"] == "direct"
        assert "22.05" in status[name]["versions"]["slurm"]


def test_dry_run_lists_changes_and_changes_nothing(cluster, provisioned):
    conf_path = cluster.cluster_files_dir() / "slurm.conf"
    original = conf_path.read_text()
    conf_path.write_text(original + "# dry-run marker\n")
    try:
        ret = apply(cluster, "n1", "slurm.node", test=True)["n1"]
        conf_state = state_results(ret)["slurm-conf-files"]
        assert conf_state["result"] is None and set(conf_state["changes"]) == {"slurm.conf"}
        on_node = cluster.run("n1", ["cat", "/etc/slurm/slurm.conf"]).stdout
        assert "dry-run marker" not in on_node
    finally:
        conf_path.write_text(original)


def test_a_conf_file_the_master_stops_serving_is_removed_by_the_state(cluster, provisioned):
    """state.apply leaves the same files as slurm.apply_conf: one writer (sync_conf)."""
    gres = cluster.cluster_files_dir() / "gres.conf"
    gres.write_text(generate.HEADER + "# no GPUs on this bed\n")
    try:
        served = apply(cluster, "n1", "slurm.node")["n1"]
        assert not failed(served), failed(served)
        change = changed(served)["slurm-conf-files"]
        assert set(change) == {"gres.conf"} and change["gres.conf"]["old"] is None, change
        assert "no GPUs" in cluster.run("n1", ["cat", "/etc/slurm/gres.conf"]).stdout
    finally:
        gres.unlink(missing_ok=True)
    ret = apply(cluster, "n1", "slurm.node")["n1"]
    assert not failed(ret), failed(ret)
    assert changed(ret)["slurm-conf-files"] == {
        "gres.conf": {"old": change["gres.conf"]["new"], "new": None}
    }
    assert changed(ret)["slurm-slurmd"] == {"restart": "slurmd"}
    assert cluster.run("n1", ["ls", "/etc/slurm"]).stdout.split() == ["slurm.conf"]
    # and the file's text never reaches the state output
    assert "no GPUs" not in repr(served) + repr(ret)
    assert wait_for(lambda: sinfo_nodes(cluster).get("n1") == "idle", timeout=60)


def test_killed_slurmd_is_restarted_by_reapply(cluster, provisioned):
    pid = cluster.run("n2", ["cat", "/run/slurmd.pid"]).stdout.strip()
    assert pid.isdigit()
    os.kill(int(pid), 9)
    assert wait_for(lambda: not os.path.exists(f"/proc/{pid}"), timeout=10)
    ret = apply(cluster, "n2", "slurm.node")["n2"]
    assert not failed(ret), failed(ret)
    assert changed(ret) == {"slurm-slurmd": {"started": "slurmd"}}
    assert wait_for(lambda: sinfo_nodes(cluster).get("n2") == "idle", timeout=60)


def test_wrong_munge_key_fails_naming_the_mismatch(cluster, provisioned):
    bad_key = base64.b64encode(os.urandom(128)).decode()
    cluster.write_pillar(
        BED_PILLAR,
        per_minion={
            "n3": {
                "slurm": {"munge_key": {"source": "pillar"}, "verify": {"timeout": 15}},
                "slurm_munge_key": bad_key,
            }
        },
    )
    try:
        ret = apply(cluster, "n3", "slurm.node")["n3"]
        problems = failed(ret)
        assert set(problems) == {"slurm-node-verified"}, problems
        assert "munge key mismatch" in problems["slurm-node-verified"]
        assert bad_key not in repr(ret)
        # the other nodes are unaffected
        proc = cluster.run("ctl", ["srun", "-N2", "-w", "n1,n2", "hostname"], timeout=60)
        assert sorted(proc.stdout.split()) == ["n1", "n2"], proc.stderr
    finally:
        cluster.write_pillar(BED_PILLAR)
    healed = apply(cluster, "n3", "slurm.node")["n3"]
    assert not failed(healed), failed(healed)
    # the state says which key it put there by hash only, never the key
    assert set(changed(healed)["slurm-munge-key"]) == {"key_hash"}, changed(healed)
    for form in key_forms(cluster):
        assert form not in repr(healed)


@pytest.mark.parametrize(
    ("override", "named_key"),
    [
        ({"users": {"munge": {"uid": "abc"}}}, "slurm:users:munge:uid"),
        ({"service_manager": "upstart"}, "slurm:service_manager"),
        ({"controller": None}, "slurm:controller"),
        ({"verify": {"timeout": -1}}, "slurm:verify:timeout"),
    ],
)
def test_bad_pillar_fails_before_any_change(cluster, provisioned, override, named_key):
    before = cluster.salt("n1", "slurm_node.status")["n1"]
    ret = apply(cluster, "n1", "slurm.node", pillar={"slurm": override})["n1"]
    assert isinstance(ret, list), f"bad pillar must stop rendering, got {ret}"
    assert named_key in "\n".join(ret)
    after = cluster.salt("n1", "slurm_node.status")["n1"]
    assert after == before


def test_absent_removes_daemons_and_key_and_node_comes_back(cluster, provisioned):
    ret = apply(cluster, "n3", "slurm.absent")["n3"]
    assert not failed(ret), failed(ret)
    status = cluster.salt("n3", "slurm_node.status")["n3"]
    assert status["daemons"] == {"munge": False, "slurmd": False, "slurmctld": False}
    assert status["munge_key_hash"] is None and status["slurm_conf_hash"] is None
    assert cluster.run("n3", ["ls", "/etc/munge"]).stdout.strip() == ""
    again = apply(cluster, "n3", "slurm.node")["n3"]
    assert not failed(again), failed(again)
    assert wait_for(lambda: sinfo_nodes(cluster).get("n3") == "idle", timeout=60)


def test_missing_key_on_master_fails_with_how_to_create_one(cluster, provisioned):
    key = cluster.cluster_files_dir() / "munge.key"
    aside = key.with_name("munge.key.aside")
    key.rename(aside)
    try:
        ret = apply(cluster, "n1", "slurm.node")["n1"]
        problems = failed(ret)
        assert "salt-run slurm.create_munge_key" in problems["slurm-munge-key"]
        assert "slurm-slurmd" not in changed(ret)
    finally:
        aside.rename(key)


def test_restart_slurmd_gives_a_new_daemon_and_the_node_stays_idle(cluster, provisioned):
    before = cluster.run("n1", ["cat", "/run/slurmd.pid"]).stdout.strip()
    ret = cluster.salt("n1", "slurm_node.restart", ["slurmd"])["n1"]
    assert ret["restarted"] == ["slurmd"], ret
    after = cluster.run("n1", ["cat", "/run/slurmd.pid"]).stdout.strip()
    assert after.isdigit() and after != before
    # the return proves it: the old pid and the new one that answers
    assert ret["daemons"]["slurmd"]["old_pid"] == int(before), ret
    assert ret["daemons"]["slurmd"]["pid"] == int(after), ret
    assert wait_for(lambda: sinfo_nodes(cluster).get("n1") == "idle", timeout=60)
    bad = cluster.salt("n1", "slurm_node.restart", ["everything"])["n1"]
    assert "what must be one of munge, slurmd, slurmctld, all" in bad


def test_config_change_restarts_slurmd_and_reconfigures_controller(cluster, provisioned):
    conf_path = cluster.cluster_files_dir() / "slurm.conf"
    original = conf_path.read_text()
    before = cluster.run("n2", ["cat", "/run/slurmd.pid"]).stdout.strip()
    ctl_before = cluster.run("ctl", ["cat", "/run/slurmctld.pid"]).stdout.strip()
    conf_path.write_text(original + "# edited by the admin\n")
    try:
        node = apply(cluster, "n2", "slurm.node")["n2"]
        assert not failed(node), failed(node)
        assert changed(node)["slurm-slurmd"] == {"restart": "slurmd"}
        assert cluster.run("n2", ["cat", "/run/slurmd.pid"]).stdout.strip() != before
        ctl = apply(cluster, "ctl", "slurm.controller")["ctl"]
        assert not failed(ctl), failed(ctl)
        assert changed(ctl)["slurm-slurmctld"] == {"reconfigure": "slurmctld"}
        # reconfigure keeps the same slurmctld process
        assert cluster.run("ctl", ["cat", "/run/slurmctld.pid"]).stdout.strip() == ctl_before
    finally:
        conf_path.write_text(original)
        for name, sls in (("ctl", "slurm.controller"), ("n2", "slurm.node")):
            ret = apply(cluster, name, sls)[name]
            assert not failed(ret), failed(ret)
    assert wait_for(lambda: sinfo_nodes(cluster).get("n2") == "idle", timeout=60)
