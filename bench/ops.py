"""Day-2 runners: ``slurm.deploy`` of 4 nodes from bare, and ``slurm.status`` /
``slurm.verify`` / ``slurm.rotate_munge_key`` wall time with 1 and with 4 nodes (target:
4 nodes <= 2x one node); ``slurm.status`` / ``verify`` / ``diagnose`` with one of the 4
nodes' minions dead against all healthy (target: <= 2x, issue 12 item 7).

Each figure is the wall time of the real ``salt-run`` command (process start included, as
an admin sees it), median of the runs, measured in the same test bed in one run.
"""

import shutil
import statistics
import time

from bench import beds
from bench.provision import NODES, _make_bare
from tests.testbed import SandboxCluster
from tests.testbed.bed import render_pillar

ROUNDS = 3
FUNS = ("slurm.status", "slurm.verify", "slurm.rotate_munge_key")


def _timed(bed, *argv, fails=False):
    started = time.monotonic()
    proc = bed.cli(["salt-run", "--out=json", *argv])
    elapsed = time.monotonic() - started
    if (proc.returncode != 0) != fails:
        raise RuntimeError(f"salt-run {' '.join(argv)} failed:\n{proc.stdout}{proc.stderr[-3000:]}")
    return elapsed


def _median_of(bed, *argv, fails=False):
    return statistics.median(_timed(bed, *argv, fails=fails) for _ in range(ROUNDS))


DEAD_FUNS = ("slurm.status", "slurm.verify", "slurm.diagnose")


def _one_dead(bed, node):
    """status/verify/diagnose medians with every minion up, then with ``node``'s minion
    stopped (each run must fail then: a dead node is never a green result)."""
    healthy = {fun: _median_of(bed, fun) for fun in DEAD_FUNS}
    bed.stop_minion(node)
    try:
        dead = {fun: _median_of(bed, fun, fails=True) for fun in DEAD_FUNS}
    finally:
        bed.start_minion(node)
        bed.wait_for_minions([node])
    return healthy, dead


def run():
    bed = SandboxCluster(name="sxbn", nodes=("ctl", *NODES), subnet="10.74.0")
    with beds.torn_down(bed):
        bed.up()
        print(
            f"\n[ops] test bed: master + {len(bed.nodes)} minions up in {bed.startup_seconds:.1f}s"
        )
        bed.write_pillar(render_pillar(node_target="b*"))
        _make_bare(bed, ["ctl", *NODES])
        bed.salt("*", "mine.flush")
        for path in bed.cluster_files_dir().iterdir():
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        deploy = _timed(bed, "slurm.deploy")
        again = _timed(bed, "slurm.deploy")
        four = {fun: _median_of(bed, fun) for fun in FUNS}
        healthy, dead = _one_dead(bed, NODES[-1])
        bed.write_pillar(render_pillar(node_target="b1"))
        _timed(bed, "slurm.deploy")  # the cluster shrinks to one node (ordered restart)
        one = {fun: _median_of(bed, fun) for fun in FUNS}
        print(f"  deploy, 4 nodes from bare:   {deploy:6.2f} s; again (no change): {again:6.2f} s")
        for fun in FUNS:
            print(
                f"  {fun:<22} 1 node: median {one[fun]:5.2f} s   4 nodes: median "
                f"{four[fun]:5.2f} s   ratio {four[fun] / one[fun]:.2f}x (target <= 2x)"
            )
        for fun in DEAD_FUNS:
            print(
                f"  {fun:<22} 4 healthy: median {healthy[fun]:5.2f} s   {NODES[-1]}'s minion "
                f"dead: median {dead[fun]:5.2f} s   ratio {dead[fun] / healthy[fun]:.2f}x "
                "(target <= 2x)"
            )


if __name__ == "__main__":
    run()
