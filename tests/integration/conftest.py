"""Integration fixtures: the provisioned cluster shared by the integration modules."""

import pytest

from tests.integration.helpers import failed

COMPUTE = ["n1", "n2", "n3"]
PILLAR = {"cluster_name": "testbed", "controller": "ctl"}


@pytest.fixture(scope="session")
def provisioned(cluster):
    """Controller + 3 nodes from bare (empty /etc/munge, /etc/slurm, spools, /run)."""
    results = cluster.provision(controller="ctl", pillar=PILLAR)
    for name in ["ctl", *COMPUTE]:
        assert not failed(results[name]), (name, failed(results[name]))
    return results
