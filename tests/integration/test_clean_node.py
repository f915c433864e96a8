"""A minion with only salt-minion (no saltext-slurm) becomes a node from the master alone."""

import subprocess

import pytest

from tests.integration.helpers import apply, changed, failed, sinfo_nodes, wait_for
from tests.testbed.bed import REPO

pytestmark = pytest.mark.testbed

CLEAN_VENV = REPO / ".venv-clean"
NODE = "n3"


def _pip(*args):
    return subprocess.run(
        [str(CLEAN_VENV / "bin" / "python"), "-m", "pip", *args],
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.fixture
def clean_minion(cluster, provisioned):
    if not (CLEAN_VENV / "bin" / "salt-minion").exists():
        pytest.fail(f"{CLEAN_VENV} missing: run `make setup` (a venv with Salt only)")
    _pip("uninstall", "-y", "saltext-slurm")
    ret = apply(cluster, NODE, "slurm.absent")[NODE]
    assert not failed(ret), failed(ret)
    cluster.start_minion(NODE, venv=CLEAN_VENV)
    cluster.wait_for_minions([NODE])
    try:
        yield NODE
    finally:
        _pip("uninstall", "-y", "saltext-slurm")
        cluster.start_minion(NODE)
        cluster.wait_for_minions([NODE])
        # the node is a provisioned node again whatever the test did: later modules use it
        restored = apply(cluster, NODE, "slurm.node")[NODE]
        assert not failed(restored), failed(restored)


def test_clean_minion_becomes_a_node_from_the_master(cluster, clean_minion):
    modules = cluster.salt(clean_minion, "sys.list_modules")[clean_minion]
    assert "slurm_node" not in modules and "munge" not in modules
    # worst case: the master holds a fresh file list without the wheel (it answers from that
    # cache for fileserver_list_cache_time, 20 s); publishing must make the wheel visible anyway
    (cluster.master_dir / "cache" / "file_lists" / "roots" / "base.p").unlink(missing_ok=True)
    listed = cluster.salt(clean_minion, "cp.list_master", prefix="slurm_files/wheels/")
    assert clean_minion in listed, listed
    published = cluster.cli(["salt-run", "--out=json", "slurm.publish_extension"])
    assert published.returncode == 0, published.stderr

    first = apply(cluster, clean_minion, "slurm.node")[clean_minion]
    assert set(failed(first)) == {"slurm-extension-just-installed"}, failed(first)
    assert "Apply slurm.node again" in failed(first)["slurm-extension-just-installed"]
    assert "slurm-extension" in changed(first)
    assert _pip("show", "saltext-slurm").returncode == 0

    second = apply(cluster, clean_minion, "slurm.node")[clean_minion]
    assert not failed(second), failed(second)
    assert wait_for(lambda: sinfo_nodes(cluster).get(clean_minion) == "idle", timeout=60)
    third = apply(cluster, clean_minion, "slurm.node")[clean_minion]
    assert changed(third) == {}
