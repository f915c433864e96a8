"""``python -m bench``: run every benchmark and print medians and ratios from this run."""

import sys

from bench import (
    accounting,
    autopilot,
    hostlist,
    hosts,
    keyvault,
    ops,
    provision,
    render_conf,
    scale,
)

BENCHMARKS = {
    "hostlist": hostlist.run,
    "render_conf": render_conf.run,
    "provision": provision.run,
    "ops": ops.run,
    "keyvault": keyvault.run,
    "scale": scale.run,
    "hosts": hosts.run,
    "accounting": accounting.run,
    "autopilot": autopilot.run,
}


def main(argv=None):
    """``python -m bench`` runs every benchmark; ``python -m bench keyvault ops`` only those."""
    names = (sys.argv[1:] if argv is None else argv) or list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        print(f"unknown benchmark(s) {unknown}; choose from {sorted(BENCHMARKS)}")
        return 2
    print(f"saltext-slurm benchmarks (python {sys.version.split()[0]})")
    for name in names:
        BENCHMARKS[name]()
    return 0


if __name__ == "__main__":
    sys.exit(main())
