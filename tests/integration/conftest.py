"""Integration fixtures: the cluster shared by the integration modules, deployed from bare
by ``salt-run slurm.deploy`` as the README tells an admin."""

import pytest

from tests.integration.helpers import BusLog
from tests.testbed.bed import render_pillar

COMPUTE = ["n1", "n2", "n3"]
PILLAR = {"cluster_name": "testbed", "controller": "ctl"}
# the shared bed's pillar: the conf rendered from the nodes' hardware (n* are the nodes)
BED_PILLAR = render_pillar(**PILLAR, node_target="n*")


@pytest.fixture(scope="session")
def provisioned(cluster):
    """Controller + 3 nodes from bare (empty /etc/munge, /etc/slurm, spools, /run) by
    ``salt-run slurm.deploy``; its JSON summary and the CompletedProcess."""
    summary, proc = cluster.deploy(BED_PILLAR)
    assert proc.returncode == 0 and summary["result"] is True, (
        summary.get("comment"),
        summary.get("steps"),
        proc.stderr[-3000:],
        cluster.tail_logs(),
    )
    return {"summary": summary, "proc": proc}


@pytest.fixture(scope="module")
def bus(cluster):
    """Every event on the master's bus while the module runs (the module's own bed when it
    defines ``cluster``), for the searches that no secret reached an event."""
    log = BusLog(cluster.master_opts())
    yield log
    log.stop.set()
