"""``python -m tests.testbed up|down|status|logs`` — the demo cluster from the shell."""

import argparse
import sys

from tests.testbed.bed import SandboxCluster

DEMO = {"name": "sxdemo", "nodes": ("ctl", "n1", "n2", "n3"), "subnet": "10.78.0"}


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m tests.testbed")
    parser.add_argument("action", choices=["up", "down", "status", "logs"])
    args = parser.parse_args(argv)
    bed = SandboxCluster(**DEMO)
    if args.action == "up":
        bed.up()
        print(f"test bed '{bed.name}' up in {bed.startup_seconds:.1f}s")
        print(f"  salt-master  {bed.master_ip}  config: {bed.master_conf_dir}")
        for node in bed.nodes.values():
            print(f"  node {node.name:<6} {node.ip:<12} salt-minion pid {node.minion_pid}")
        return 0
    if args.action == "down":
        bed.down(keep_files=False)
        print(f"test bed '{bed.name}' removed")
        return 0
    bed.attach()
    if args.action == "logs":
        print(bed.tail_logs())
        return 0
    ping = bed.salt("*", "test.ping", timeout=10)
    for node in bed.nodes.values():
        print(f"  node {node.name:<6} {node.ip:<12} ping={'yes' if ping.get(node.name) else 'NO'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
