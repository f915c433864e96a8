"""A test run killed midway leaves nothing that stops the next one."""

import os
import signal
import subprocess
import sys

import pytest

from tests.testbed import SandboxCluster
from tests.testbed.bed import REPO, _alive, _ip

pytestmark = pytest.mark.testbed

BED = {
    "name": os.environ.get("SXT_KILL_BED_NAME", "sxk"),
    "nodes": ("k1",),
    "subnet": os.environ.get("SXT_KILL_BED_SUBNET", "10.76.0"),
}


def _start_and_get_killed():
    """Bring a bed up in a child process, then SIGKILL the child (no teardown runs)."""
    code = (
        "from tests.testbed import SandboxCluster\n"
        f"bed = SandboxCluster(**{BED!r})\n"
        "bed.up()\n"
        "print('UP', bed.master_proc.pid, bed.nodes['k1'].minion_pid, flush=True)\n"
        "import time; time.sleep(600)\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    try:
        line = child.stdout.readline().split()
        assert line and line[0] == "UP", f"child bed did not come up: {line}"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    return int(line[1]), int(line[2])


def test_second_run_after_a_killed_run_starts_clean():
    master_pid, minion_pid = _start_and_get_killed()
    # the killed run left its daemons, namespace and bridge behind
    assert _alive(master_pid) and _alive(minion_pid)
    assert f"{BED['name']}-k1" in _ip("netns", "list").stdout

    bed = SandboxCluster(**BED)
    new_pids = []
    try:
        bed.up()  # no "File exists" for namespace, bridge or ports
        new_pids = [bed.master_proc.pid, bed.nodes["k1"].minion_pid, bed.nodes["k1"].holder_pid]
        assert not _alive(master_pid) and not _alive(minion_pid)
        assert bed.salt("k1", "grains.get", ["host"]) == {"k1": "k1"}
    finally:
        bed.down(keep_files=False)
    assert f"{BED['name']}-" not in _ip("netns", "list").stdout
    assert _ip("link", "show", f"{BED['name']}-br", check=False).returncode != 0
    assert new_pids and not any(_alive(pid) for pid in new_pids)
    assert not os.path.exists(bed.root)
