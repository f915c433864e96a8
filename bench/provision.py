"""Provisioning: one node bare -> idle, 4 nodes in parallel bare -> idle, no-op re-apply.

"Bare" means the node sandbox's private /etc/munge, /etc/slurm, spools, logs and /run are
emptied and its daemons stopped (slurm.absent), as on a machine that never had Slurm; the
packages stay installed (dpkg is shared by the sandboxes of this one machine).
"""

import shutil
import statistics
import time

from bench import beds
from tests.testbed import SandboxCluster
from tests.testbed.bed import PRIVATE_DIRS, render_pillar

NODES = ("b1", "b2", "b3", "b4")
ROUNDS = 3


def _failed(ret):
    if not isinstance(ret, dict):
        return ["render error: " + " ".join(map(str, ret))]
    return [f"{r['__id__']}: {r['comment']}" for r in ret.values() if r["result"] is False]


def _make_bare(bed, names):
    rets = bed.salt(list(names), "state.apply", ["slurm.absent"], tgt_type="list", timeout=300)
    for name in names:
        assert not _failed(rets[name]), (name, _failed(rets[name]))
        node = bed.nodes[name]
        for path in PRIVATE_DIRS:
            # empty the directory, keep it: it is the source of the node's bind mount
            for child in node.private_dir(path).iterdir():
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child)
                else:
                    child.unlink()
        bed.run(name, ["sh", "-c", "rm -rf /run/munge /run/slurmd.pid"], check=True)


def _timed_apply(bed, names):
    started = time.monotonic()
    rets = bed.salt(list(names), "state.apply", ["slurm.node"], tgt_type="list", timeout=300)
    elapsed = time.monotonic() - started
    for name in names:
        problems = _failed(rets.get(name, ["no answer"]))
        if problems:
            raise RuntimeError(f"{name} failed:\n" + "\n".join(problems) + bed.tail_logs([name]))
    return elapsed, rets


def run():
    bed = SandboxCluster(name="sxbn", nodes=("ctl", *NODES), subnet="10.74.0")
    with beds.torn_down(bed):
        bed.up()
        print(
            f"\n[provision] test bed: master + {len(bed.nodes)} minions up in "
            f"{bed.startup_seconds:.1f}s"
        )
        summary, proc = bed.deploy(render_pillar(controller="ctl", node_target="b*"))
        assert summary["result"] is True, (summary.get("comment"), proc.stderr[-3000:])
        one, four, noop = [], [], []
        for _ in range(ROUNDS):
            _make_bare(bed, ["b1"])
            one.append(_timed_apply(bed, ["b1"])[0])
            _make_bare(bed, NODES)
            four.append(_timed_apply(bed, NODES)[0])
        for _ in range(5):
            elapsed, rets = _timed_apply(bed, ["b1"])
            changes = [r for r in rets["b1"].values() if r["changes"]]
            assert not changes, changes
            noop.append(elapsed)
        one_m, four_m, noop_m = (statistics.median(v) for v in (one, four, noop))
        print(f"  one node bare -> idle:              median {one_m:6.2f} s  ({ROUNDS} runs)")
        print(
            f"  4 nodes in parallel bare -> idle:   median {four_m:6.2f} s  "
            f"ratio to one node {four_m / one_m:.2f}x (target <= 1.5x)"
        )
        print(
            f"  no-op re-apply, one node:           median {noop_m:6.2f} s  "
            f"(target <= 3 s; 0 changes each time)"
        )
