"""``python -m tests.testbed up|down|status|logs [--name BED]`` — the demo cluster (or, with
``--name``, any running bed, e.g. the suite's ``sxt``) from the shell."""

import argparse
import json
import sys

from tests.testbed.bed import STATE_ROOT, SandboxCluster, render_pillar

DEMO = {"name": "sxdemo", "nodes": ("ctl", "n1", "n2", "n3"), "subnet": "10.78.0"}
DEMO_PILLAR = render_pillar(controller="ctl", node_target="n*")


def _provision(bed):
    """The demo cluster from bare the way the README tells an admin: the pillar, then
    ``salt-run slurm.deploy``; its progress, the rendered NodeName lines, sinfo, a job."""
    print(f"\nprovisioning: salt-run slurm.deploy (pillar: {DEMO_PILLAR})")
    summary, proc = bed.deploy(DEMO_PILLAR)
    print(proc.stderr, end="")
    ok = proc.returncode == 0 and summary.get("result") is True
    print(f"\nslurm.deploy: {summary.get('comment')} (exit code {proc.returncode})")
    conf = bed.cluster_files_dir() / "slurm.conf"
    if conf.exists():
        node_lines = [ln for ln in conf.read_text().splitlines() if ln.startswith("NodeName=")]
        print(f"\nrendered {conf}:\n  " + "\n  ".join(node_lines))
    for argv in (["sinfo"], ["srun", "-N3", "hostname"]):
        proc = bed.run("ctl", argv, timeout=60)
        print(f"\nctl$ {' '.join(argv)}\n{proc.stdout}{proc.stderr}", end="")
        ok = ok and proc.returncode == 0
    print("\nlogs: make demo-logs    status: make demo-status    remove: make demo-down")
    return 0 if ok else 1


def bed_named(name):
    """The demo bed, or the bed ``name`` as its state file describes it (nodes, subnet):
    ``down``/``status``/``logs`` of a suite's bed must not act on the demo instead."""
    if name == DEMO["name"]:
        return SandboxCluster(**DEMO)
    try:
        state = json.loads((STATE_ROOT / name / "bed.json").read_text())
    except (OSError, ValueError):
        return SandboxCluster(name=name)  # down() finds what is left by name prefix
    subnet = state["master_ip"].rsplit(".", 1)[0]
    return SandboxCluster(name=name, nodes=tuple(state["nodes"]), subnet=subnet)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m tests.testbed")
    parser.add_argument("action", choices=["up", "down", "status", "logs"])
    parser.add_argument(
        "--name", default=DEMO["name"], help="bed name (default: the demo, %(default)s)"
    )
    args = parser.parse_args(argv)
    if args.action == "up" and args.name != DEMO["name"]:
        parser.error("up builds the demo bed only (the suite brings up its own)")
    bed = bed_named(args.name)
    if args.action == "up":
        bed.up()
        print(f"test bed '{bed.name}' up in {bed.startup_seconds:.1f}s")
        print(f"  salt-master  {bed.master_ip}  config: {bed.master_conf_dir}")
        for node in bed.nodes.values():
            print(f"  node {node.name:<6} {node.ip:<12} salt-minion pid {node.minion_pid}")
        return _provision(bed)
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
    for host in bed.hosts.hosts.values():
        state = "running" if bed.hosts.running(host.name) else "off"
        print(
            f"  host {host.name:<6} {host.ip:<12} {host.init:<8} {state:<7} "
            f"ping={'yes' if ping.get(host.name) else 'NO'}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
