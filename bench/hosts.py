"""Booted hosts (issue 13): bare -> idle on one real systemd machine (packages installed by
``pkg.installed`` from the bed's local repository) against one sandbox node (packages
shared with the host), 4 real machines in parallel against one, and reboot -> idle.

"Bare" on a real machine is ``slurm.absent`` with ``purge_packages`` (daemons stopped and
disabled, key and config gone, packages purged; munge removed), so the next
``slurm.node`` installs the packages again; on a sandbox it is ``slurm.absent`` plus empty
private directories. "Idle" is ``sinfo`` on the controller showing the node idle (the
state itself waits for that: ``slurm-node-verified``). Medians of ``ROUNDS`` in one run.
"""

import statistics
import time

from bench import beds
from bench.provision import _make_bare
from tests.testbed import SandboxCluster, hosts
from tests.testbed.bed import render_pillar

ROUNDS = 3
REAL = ("r1", "r2", "r3", "r4")
SANDBOX = "sb"
PURGE = {"slurm": {"absent": {"purge_packages": True}}}


def _failed(ret):
    if not isinstance(ret, dict):
        return [f"no state run: {ret}"]
    return [f"{r['__id__']}: {r['comment']}" for r in ret.values() if r["result"] is False]


def _apply(bed, names, sls, **kwargs):
    rets = bed.salt(list(names), "state.apply", [sls], tgt_type="list", timeout=600, **kwargs)
    for name in names:
        problems = _failed(rets.get(name, "no answer"))
        if problems:
            raise RuntimeError(f"{sls} on {name}:\n" + "\n".join(problems))


def _sinfo(bed):
    proc = bed.run("ctl", ["sinfo", "-h", "-N", "-o", "%N %t"])
    return dict(line.split() for line in proc.stdout.splitlines() if line.strip())


def _until_idle(bed, names, timeout=180):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = _sinfo(bed)
        if all(states.get(n) == "idle" for n in names):
            return
        time.sleep(0.5)
    raise RuntimeError(f"{names} not idle after {timeout}s: {_sinfo(bed)}")


def _bare_to_idle(bed, names):
    """Seconds from ``state.apply slurm.node`` on bare ``names`` to all idle."""
    started = time.monotonic()
    _apply(bed, names, "slurm.node")
    _until_idle(bed, names)
    return time.monotonic() - started


def _make_real_bare(bed, names):
    _apply(bed, names, "slurm.absent", pillar=PURGE)


def _slurmd_pid(bed, name):
    return bed.salt(name, "slurm_node.status")[name]["health"].get("slurmd", {}).get("pid")


def run():
    bed = SandboxCluster(name="sxbh", nodes=("ctl", SANDBOX), subnet="10.72.0")
    with beds.torn_down(bed):
        bed.up()
        hosts.ensure_images()
        with hosts.booted(bed, dict.fromkeys(REAL, "systemd")):
            print(f"\n[hosts] master, ctl, {SANDBOX} and {len(REAL)} booted systemd hosts up")
            nodes = [SANDBOX, *REAL]
            bed.write_pillar(render_pillar(node_target=",".join(nodes), node_target_type="list"))
            proc = bed.cli(["salt-run", "--out=json", "slurm.deploy"], timeout=900)
            if proc.returncode != 0:
                raise RuntimeError(f"slurm.deploy failed:\n{proc.stdout[-4000:]}")
            sandbox, real, four, reboot = [], [], [], []
            for _ in range(ROUNDS):
                _make_bare(bed, [SANDBOX])
                sandbox.append(_bare_to_idle(bed, [SANDBOX]))
                _make_real_bare(bed, ["r1"])
                real.append(_bare_to_idle(bed, ["r1"]))
                _make_real_bare(bed, REAL)
                four.append(_bare_to_idle(bed, REAL))
                before = _slurmd_pid(bed, "r1")
                started = time.monotonic()
                bed.reboot(["r1"])
                deadline = time.monotonic() + 180
                while _slurmd_pid(bed, "r1") in (None, before) and time.monotonic() < deadline:
                    time.sleep(0.5)
                _until_idle(bed, ["r1"])
                reboot.append(time.monotonic() - started)
            sb, one, many, rb = (statistics.median(v) for v in (sandbox, real, four, reboot))
            print(f"  bare -> idle, one sandbox node:          median {sb:6.2f} s")
            print(
                f"  bare -> idle, one real systemd machine:  median {one:6.2f} s  "
                f"({one / sb:.2f}x the sandbox: packages installed from the local repository)"
            )
            print(
                f"  bare -> idle, 4 real machines at once:   median {many:6.2f} s  "
                f"({many / one:.2f}x one machine)"
            )
            print(f"  reboot -> idle, one real systemd machine: median {rb:6.2f} s")


if __name__ == "__main__":
    run()
