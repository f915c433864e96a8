"""render_conf for 10,000 synthetic nodes: 4 hardware classes, 8 partitions.

The nodes look like mine data from ``slurm_node.hardware`` (with a few MiB of memory
jitter between nodes of one model, as real machines have). One round is
``confgen.render`` plus re-parsing the result (what the runner does to classify the
change); the median of 5 rounds is reported with the node-line count.
"""

import statistics
import time

from salt_ext.lib import confgen, settings, slurmconf

N_NODES = 10_000
ROUNDS = 5
KINDS = (  # (prefix, CPUs, sockets, cores per socket, threads, RealMemory MiB, GPUs)
    ("c", 64, 2, 16, 2, 257_843, 0),
    ("m", 128, 2, 32, 2, 1_031_000, 0),
    ("g", 64, 2, 32, 1, 515_700, 4),
    ("s", 16, 1, 8, 2, 64_300, 0),
)


def _mine():
    nodes = {}
    for i in range(N_NODES):
        prefix, cpus, sockets, cores, threads, memory, gpus = KINDS[i % len(KINDS)]
        name = f"{prefix}{i // len(KINDS):05d}"
        nodes[name] = {
            "NodeName": name,
            "CPUs": cpus,
            "Boards": 1,
            "SocketsPerBoard": sockets,
            "CoresPerSocket": cores,
            "ThreadsPerCore": threads,
            "RealMemory": memory + i % 13,
            "gpus": {
                "count": gpus,
                "type": "a100" if gpus else None,
                "files": [f"/dev/nvidia{n}" for n in range(gpus)],
                "autodetect": None,
            },
        }
    return nodes


def _settings():
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


def run():
    cfg, mine = _settings(), _mine()
    print(
        f"\n[render_conf] {N_NODES:,} nodes, {len(KINDS)} hardware classes, "
        f"{len(cfg['partitions'])} partitions ({ROUNDS} runs)"
    )
    times = []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        out = confgen.render(cfg, mine)
        slurmconf.parse(out["files"]["slurm.conf"])
        times.append(time.perf_counter() - started)
    print(f"  render + re-parse:  median {statistics.median(times):7.4f} s (target <= 1 s)")
    print(f"  NodeName lines:     {out['node_lines']} (target <= 16)")
    print(
        f"  slurm.conf size:    {len(out['files']['slurm.conf']):,} bytes, "
        f"gres.conf {len(out['files']['gres.conf'] or ''):,} bytes"
    )


if __name__ == "__main__":
    run()
