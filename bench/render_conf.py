"""render_conf on synthetic mines: NodeName lines for memory jitter, and speed at 100,000 nodes.

The nodes look like mine data from ``slurm_node.hardware``: 4 hardware models, a GPU node
group, 8 partitions. Nodes of one model report slightly different memory, as real machines
do; the grouping part prints the NodeName lines and slurm.conf bytes for 10,000 nodes with

* ``±1 %``: normal-ish jitter (sigma 0.4 %, clipped to ±1 %) of a few hundred GB,
* the same plus 3 nodes missing one of their 16 DIMMs (they get lines of their own and a
  warning each),
* ``±64 MiB`` and ``±512 MiB``: uniform jitter in MiB.

The speed part times ``generate.render`` plus re-parsing the result (what the runner does to
classify the change) for 100,000 nodes (±1 % jitter with missing DIMMs), median of 5 runs.
Both parts also run in a subprocess on the salt_ext of ``BASELINE`` (the commit before the
grouping and the speed-up) when git can export it, so lines, bytes and the speed ratio are
compared within one run.
"""

import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time

try:
    from salt_ext.lib.conf import generate, model
    from salt_ext.lib.node import settings
except ImportError:  # BASELINE's flat salt_ext.lib, when _baseline_figures runs this module
    from salt_ext.lib import confgen as generate
    from salt_ext.lib import settings
    from salt_ext.lib import slurmconf as model

N_NODES = 10_000
N_SPEED = 100_000
ROUNDS = 5
BASELINE = "410a408"  # last commit before the render speed-up (issue #11 item 14)
KINDS = (  # (prefix, CPUs, sockets, cores per socket, threads, RealMemory MiB, GPUs)
    ("c", 64, 2, 16, 2, 257_843, 0),
    ("m", 128, 2, 32, 2, 1_031_000, 0),
    ("g", 64, 2, 32, 1, 515_700, 4),
    ("s", 16, 1, 8, 2, 64_300, 0),
)
BROKEN = 3  # nodes missing one of 16 DIMMs
DIMMS = 16


def _percent(rng, memory):
    return round(memory * max(-0.01, min(0.01, rng.gauss(0, 0.004))))


def _mib(limit):
    return lambda rng, memory: rng.randint(-limit, limit)


JITTERS = (
    ("±1 %", _percent, 0),
    (f"±1 % + {BROKEN} nodes missing a DIMM", _percent, BROKEN),
    ("±64 MiB", _mib(64), 0),
    ("±512 MiB", _mib(512), 0),
)


def mine(n_nodes, jitter=_percent, broken=BROKEN):
    """``{name: hardware}`` for ``n_nodes``; ``broken`` of them miss one DIMM."""
    rng = random.Random(n_nodes)  # noqa: S311 -- reproducible bench data
    nodes = {}
    for i in range(n_nodes):
        prefix, cpus, sockets, cores, threads, memory, gpus = KINDS[i % len(KINDS)]
        name = f"{prefix}{i // len(KINDS):05d}"
        reported = memory + jitter(rng, memory)
        if broken and i % (n_nodes // broken) == n_nodes // broken // 2:
            reported -= memory // DIMMS
        nodes[name] = {
            "NodeName": name,
            "CPUs": cpus,
            "Boards": 1,
            "SocketsPerBoard": sockets,
            "CoresPerSocket": cores,
            "ThreadsPerCore": threads,
            "RealMemory": reported,
            "gpus": {
                "count": gpus,
                "type": "a100" if gpus else None,
                "files": [f"/dev/nvidia{n}" for n in range(gpus)],
                "autodetect": None,
            },
        }
    return nodes


def cluster_settings():
    partitions = [{"name": "all", "nodes": "ALL", "default": True}]
    partitions += [
        {"name": f"{p}-{q}", "nodes": f"{p}*"} for p, *_ in KINDS for q in ("short", "long")
    ][:7]
    return settings.validate(
        {
            "cluster_name": "bench",
            "controller": "ctl",
            "partitions": partitions,
            "node_groups": {"gpu": {"nodes": "g*", "features": ["a100"], "weight": 10}},
        }
    )


def speed_runs(n_nodes=N_SPEED, rounds=ROUNDS):
    """Seconds of render + re-parse for ``n_nodes``, one per round."""
    cfg, nodes = cluster_settings(), mine(n_nodes)
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        out = generate.render(cfg, nodes)
        model.parse(out["files"]["slurm.conf"])
        times.append(time.perf_counter() - started)
    return times


def figures():
    """``{"lines": [[NodeName lines, slurm.conf bytes, warnings] per JITTERS], "median": s}``."""
    cfg = cluster_settings()
    lines = []
    for _label, jitter, broken in JITTERS:
        out = generate.render(cfg, mine(N_NODES, jitter, broken))
        lines.append(
            [out["node_lines"], len(out["files"]["slurm.conf"]), len(out.get("warnings", ()))]
        )
    return {"lines": lines, "median": statistics.median(speed_runs())}


def _baseline_figures():
    """``figures()`` on the BASELINE commit's salt_ext (this bench's code), or None."""
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with tempfile.TemporaryDirectory() as tmp:
        archive = subprocess.run(
            ["git", "-C", repo, "archive", BASELINE, "salt_ext"],
            capture_output=True,
            check=False,
        )
        if archive.returncode:
            return None
        subprocess.run(["tar", "-x", "-C", tmp], input=archive.stdout, check=True)
        # the old salt_ext comes first on sys.path, this bench module from the repo after it
        code = (
            f"import sys, json; sys.path[:0] = [{tmp!r}, {repo!r}]; "
            "from bench import render_conf as b; print(json.dumps(b.figures()))"
        )
        proc = subprocess.run(
            [sys.executable, "-c", code], cwd=tmp, capture_output=True, text=True, check=False
        )
        if proc.returncode:
            return None
        return json.loads(proc.stdout.splitlines()[-1])


def run():
    cfg = cluster_settings()
    print(
        f"\n[render_conf] {N_NODES:,} nodes of {len(KINDS)} models, "
        f"{len(cfg['partitions'])} partitions: NodeName lines by memory jitter; "
        f"{N_SPEED:,} nodes: render + re-parse, median of {ROUNDS} runs"
    )
    new = figures()
    old = _baseline_figures()
    for index, (label, _jitter, _broken) in enumerate(JITTERS):
        lines, size, warnings = new["lines"][index]
        before = ""
        if old:
            before = (
                f"  (before: {old['lines'][index][0]:3d} lines, {old['lines'][index][1]:7,} bytes)"
            )
        print(f"  {label:32s} {lines:3d} lines, {size:7,} bytes, {warnings} warnings{before}")
    print(f"  100,000 nodes, this tree:  median {new['median']:7.4f} s (target <= 1 s)")
    if old is None:
        print(f"  100,000 nodes, {BASELINE}:    not measured (git archive failed)")
    else:
        print(
            f"  100,000 nodes, {BASELINE}:    median {old['median']:7.4f} s "
            f"-> {old['median'] / new['median']:.1f}x faster now"
        )


if __name__ == "__main__":
    run()
