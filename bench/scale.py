"""Scale: ``slurm.status``, ``slurm.verify`` and a no-op ``slurm.deploy`` at 4, 8 and 16
sandbox nodes in one test bed, in one run (issue 14 item 5).

Targets: 16 nodes <= 2x of 4 nodes for status and verify, <= 3x for the no-op deploy.
Each figure is the wall time of the real ``salt-run`` command (process start included),
median of ``ROUNDS`` runs. The cluster grows by ``slurm.deploy`` itself (pillar
``node_target`` lists the nodes), as an admin would grow it.

CPU per node: the CPU seconds the master spends on one call, divided by the number of
nodes — the salt-run process (where a runner executes) plus the salt-master daemons (every
process of the master's session, reaped children included), read from /proc before and
after. A runner that does per-node work in the master grows this figure; fan-out through
the minions keeps it flat or falling.
"""

import os
import resource
import statistics
import time

from bench import beds
from tests.testbed import SandboxCluster
from tests.testbed.bed import _session_pids, _stat, render_pillar

ROUNDS = 3
SIZES = (4, 8, 16)
NODES = tuple(f"s{i:02d}" for i in range(1, max(SIZES) + 1))
FUNS = ("slurm.status", "slurm.verify", "slurm.deploy")
TARGETS = {"slurm.status": 2.0, "slurm.verify": 2.0, "slurm.deploy": 3.0}
TICK = os.sysconf("SC_CLK_TCK")


def _master_cpu(bed):
    """CPU seconds of the salt-master's session so far (live processes and reaped ones)."""
    total = 0
    for pid in _session_pids(bed._leaders.get("master") or {}):  # noqa: SLF001 - bench reads its bed
        fields = _stat(pid)
        if fields:
            # utime, stime, cutime, cstime: /proc/PID/stat fields 14-17
            total += sum(int(v) for v in fields[11:15])
    return total / TICK


def _children_cpu():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _call(bed, fun):
    """One ``salt-run fun``: (wall seconds, master CPU seconds). Fails loudly unless it
    succeeded: a slow answer that is also wrong measures nothing."""
    cpu0, kids0 = _master_cpu(bed), _children_cpu()
    started = time.monotonic()
    proc = bed.cli(["salt-run", "--out=json", fun], timeout=900)
    wall = time.monotonic() - started
    cpu = _master_cpu(bed) - cpu0 + _children_cpu() - kids0
    if proc.returncode != 0:
        raise RuntimeError(f"salt-run {fun} failed:\n{proc.stdout[-4000:]}{proc.stderr[-3000:]}")
    return wall, cpu


def _grow_to(bed, size):
    nodes = ",".join(NODES[:size])
    bed.write_pillar(render_pillar(node_target=nodes, node_target_type="list"))
    started = time.monotonic()
    _call(bed, "slurm.deploy")
    return time.monotonic() - started


def run():
    bed = SandboxCluster(name="sxsc", nodes=("ctl", *NODES), subnet="10.73.0")
    with beds.torn_down(bed):
        bed.up(timeout=300)
        print(
            f"\n[scale] test bed: master + {len(bed.nodes)} minions up in "
            f"{bed.startup_seconds:.1f}s"
        )
        bed.cli(["salt-run", "slurm.create_munge_key"], check=True)
        wall, cpu = {}, {}
        for size in SIZES:
            grow = _grow_to(bed, size)
            print(f"  slurm.deploy growing the cluster to {size:2d} nodes: {grow:6.2f} s")
            for fun in FUNS:
                runs = [_call(bed, fun) for _ in range(ROUNDS)]
                wall[fun, size] = statistics.median(r[0] for r in runs)
                cpu[fun, size] = statistics.median(r[1] for r in runs) / size
        for fun in FUNS:
            label = "slurm.deploy (no-op)" if fun == "slurm.deploy" else fun
            cells = "   ".join(f"{size:2d} nodes {wall[fun, size]:6.2f} s" for size in SIZES)
            ratio = wall[fun, SIZES[-1]] / wall[fun, SIZES[0]]
            print(
                f"  {label:<21} {cells}   {SIZES[-1]}/{SIZES[0]}: {ratio:.2f}x "
                f"(target <= {TARGETS[fun]:.0f}x)"
            )
            per_node = "   ".join(f"{size:2d}: {cpu[fun, size]:5.2f}" for size in SIZES)
            print(f"  {'':<21} master CPU s per node per call   {per_node}")


if __name__ == "__main__":
    run()
