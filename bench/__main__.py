"""``python -m bench``: run every benchmark and print medians and ratios from this run."""

import sys

from bench import provision


def main():
    print(f"saltext-slurm benchmarks (python {sys.version.split()[0]})")
    provision.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
