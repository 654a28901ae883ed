"""Every test here needs a real SLURM cluster (tests/slurm/cluster.sh exports SLURM_CONF).

Without one the tests are skipped, unless XRM_REQUIRE_SLURM is set (``make test-slurm``):
then a skip would hide that nothing was tested, so they fail instead.
"""
import os
import subprocess

import pytest

HAVE_CLUSTER = "SLURM_CONF" in os.environ


def pytest_collection_modifyitems(config, items):
    """Skip this folder's tests when there is no cluster and none is required."""
    if HAVE_CLUSTER or os.environ.get("XRM_REQUIRE_SLURM"):
        return
    skip = pytest.mark.skip(reason="needs a SLURM cluster: run `make test-slurm`")
    here = os.path.dirname(__file__)
    for item in items:
        if str(item.fspath).startswith(here):
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def require_cluster():
    """Fail, rather than skip, a required SLURM test that runs without a cluster."""
    if not HAVE_CLUSTER:
        pytest.fail("SLURM_CONF is not set: run these tests through tests/slurm/cluster.sh")


@pytest.fixture
def node_cpus() -> int:
    """The CPUs of the cluster's one node, as sinfo reports them."""
    result = subprocess.run(["sinfo", "--noheader", "--Node", "--format=%c"], capture_output=True, text=True, check=True)
    return int(result.stdout.split()[0])
