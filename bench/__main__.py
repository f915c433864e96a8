"""``python -m bench``: run every benchmark and print medians and ratios from this run."""

import sys

from bench import hostlist, ops, provision, render_conf


def main():
    print(f"saltext-slurm benchmarks (python {sys.version.split()[0]})")
    hostlist.run()
    render_conf.run()
    provision.run()
    ops.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
