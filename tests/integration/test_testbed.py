"""The test bed is a real cluster of separate hosts, and the extension loads in it."""

import json

import pytest

pytestmark = pytest.mark.testbed

COMPUTE = ("n1", "n2", "n3")


def test_minions_answer_ping(cluster):
    answered = cluster.salt(list(COMPUTE), "test.ping", tgt_type="list")
    assert answered == {name: True for name in COMPUTE}


def test_each_node_has_its_own_hostname_and_ip(cluster):
    grains = cluster.salt(list(COMPUTE), "grains.item", ["host", "ipv4"], tgt_type="list")
    for name in COMPUTE:
        assert grains[name]["host"] == name
        assert cluster.nodes[name].ip in grains[name]["ipv4"]
        others = {cluster.nodes[o].ip for o in COMPUTE if o != name}
        assert not others & set(grains[name]["ipv4"])


def test_etc_slurm_is_private_to_each_node(cluster):
    marker = "/etc/slurm/written-by-n1"
    cluster.run("n1", ["sh", "-c", f"echo n1 > {marker}"], check=True)
    try:
        assert cluster.run("n1", ["cat", marker]).stdout.strip() == "n1"
        for other in ("n2", "n3", "ctl"):
            assert cluster.run(other, ["test", "-e", marker]).returncode == 1, other
    finally:
        cluster.run("n1", ["rm", "-f", marker])


def test_nodes_reach_each_other_over_their_own_addresses(cluster):
    target = cluster.nodes["n2"].ip
    proc = cluster.run("n1", ["ping", "-c", "1", "-W", "2", target])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"from {target}" in proc.stdout


def test_extension_modules_are_loaded_on_minions(cluster):
    modules = cluster.salt("n1", "sys.list_modules")["n1"]
    assert "munge" in modules
    runners = cluster.salt("n1", "sys.list_runners")["n1"]
    assert "slurm" in runners
    functions = cluster.salt("n1", "sys.list_functions", ["munge"])["n1"]
    assert set(functions) >= {"munge.encode", "munge.decode", "munge.key_hash"}


def test_salt_run_finds_the_extension_runner(cluster):
    proc = cluster.cli(["salt-run", "--out=json", "doc.runner"])
    assert proc.returncode == 0, proc.stderr
    assert "slurm.create_munge_key" in json.loads(proc.stdout)
