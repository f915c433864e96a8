"""
What a Slurm cluster's controller knows and does, asked with the Slurm client commands
(``scontrol``, ``squeue``, ``srun``): node states, jobs on a node, drain/resume, test job
steps, ``scontrol reconfigure``, and a node's own registration.

Run these on the controller, except :func:`node_state` and :func:`wait_registered`, which
a node runs to ask the controller about itself. The machine's own daemons are
``slurm_node``'s; the munge key is ``munge``'s; slurmdbd is ``slurm_dbd``'s.
"""

import concurrent.futures
import logging
import time

from salt.exceptions import CommandExecutionError, SaltInvocationError

from salt_ext.lib.conf import hostlist, model
from salt_ext.lib.node import direct, scontrol
from salt_ext.lib.util import command
from salt_ext.modules import _minion_plan as minion_plan

__virtualname__ = "slurm_controller"

log = logging.getLogger(__name__)


def __virtual__():
    return __virtualname__


def _plan(role="node"):
    return minion_plan.plan(__pillar__, __grains__, role, minion_plan.machine(__grains__, __salt__))


def reconfigure():
    """
    ``scontrol reconfigure``: slurmctld and every slurmd re-read slurm.conf, no restart.

    CLI Example:

    .. code-block:: bash

        salt ctl slurm_controller.reconfigure
    """
    try:
        command.run(["scontrol", "reconfigure"], timeout=60)
    except command.CommandFailed as err:
        raise CommandExecutionError(str(err)) from err
    return True


def up(timeout=60):
    """
    Wait until ``scontrol ping`` reports the primary slurmctld UP.

    Returns ``{"ok": bool, "output": last scontrol ping output, "waited": seconds}``.

    CLI Example:

    .. code-block:: bash

        salt ctl slurm_controller.up timeout=30
    """
    started = time.monotonic()
    output = ""
    while True:
        output = scontrol.ping(15)["output"]
        waited = round(time.monotonic() - started, 1)
        if "is UP" in output:
            return {"ok": True, "output": output, "waited": waited}
        if waited > timeout:
            return {"ok": False, "output": output, "waited": waited}
        time.sleep(1)


def cluster_nodes():
    """
    Every node the controller knows, with its state: ``{NodeName: {"state", "flags",
    "reason", "reason_by", "responding", "usable", "cpus", "cpus_alloc", ...}}``
    (``scontrol show node -o``); ``reason_by`` tells a reason Slurm set itself (``slurm``)
    from an admin's (``admin``).

    CLI Example:

    .. code-block:: bash

        salt ctl slurm_controller.cluster_nodes
    """
    try:
        proc = command.run(["scontrol", "show", "node", "-o"], timeout=30)
    except command.CommandFailed as err:
        raise CommandExecutionError(str(err)) from err
    return scontrol.node_states(proc.stdout, _slurm_user())


def _slurm_user():
    conf = _plan("node")["slurm_conf"]
    return model.read_values(conf).get("slurmuser") or scontrol.DEFAULT_SLURM_USER


def node_jobs(node, pending=False, running_only=False):
    """
    Ids of the jobs running (or completing) on ``node``, as the controller sees them.

    pending
        Instead, the pending jobs that ask for ``node`` by name (``--nodelist``): they can
        never start once the node leaves slurm.conf.
    running_only
        Only jobs in state RUNNING.

    CLI Example:

    .. code-block:: bash

        salt ctl slurm_controller.node_jobs n3
        salt ctl slurm_controller.node_jobs n3 pending=True
    """
    if pending:
        argv = ["squeue", "-h", "-t", "PENDING", "-o", "%i|%n"]
    else:
        states = "RUNNING" if running_only else "RUNNING,CONFIGURING,COMPLETING,SUSPENDED"
        argv = ["squeue", "-h", "-w", node, "-t", states, "-o", "%i"]
    try:
        proc = command.run(argv, timeout=30)
    except command.CommandFailed as err:
        raise CommandExecutionError(str(err)) from err
    lines = [line.strip() for line in proc.stdout.splitlines() if line.strip()]
    if not pending:
        return lines
    asking = []
    for line in lines:
        job, _, requested = line.partition("|")
        if requested and node in hostlist.expand(requested):
            asking.append(job)
    return asking


NODE_STATES = ("DRAIN", "RESUME", "UNDRAIN")


def update_nodes(nodes, state, reason=None):
    """
    ``scontrol update NodeName=NODES State=STATE [Reason=REASON]`` on the controller.

    nodes
        A hostlist (``n[1-4]``) or a list of node names.
    state
        ``DRAIN`` (needs a reason), ``RESUME`` or ``UNDRAIN``.

    CLI Example:

    .. code-block:: bash

        salt ctl slurm_controller.update_nodes 'n[1-2]' DRAIN reason='disk replacement'
    """
    state = str(state).upper()
    if state not in NODE_STATES:
        raise SaltInvocationError(f"state must be one of {', '.join(NODE_STATES)}, got {state!r}")
    names = nodes if isinstance(nodes, list) else hostlist.expand(str(nodes))
    if not names or not all(isinstance(n, str) and n and n.strip() == n for n in names):
        raise SaltInvocationError(f"nodes: expected node names or a hostlist, got {nodes!r}")
    if state == "DRAIN" and not (reason and str(reason).strip()):
        raise SaltInvocationError("reason: Slurm needs a reason to drain a node")
    argv = ["scontrol", "update", f"NodeName={hostlist.compress(names)}", f"State={state}"]
    if reason:
        if "\n" in str(reason):
            raise SaltInvocationError("reason: one line only")
        argv.append(f"Reason={reason}")
    try:
        command.run(argv, timeout=30)
    except command.CommandFailed as err:
        raise CommandExecutionError(str(err)) from err
    return {name: state for name in names}


VERIFY_STEP_MB = scontrol.TEST_STEP_MB
VERIFY_STEP_MEM = f"{VERIFY_STEP_MB}M"


def _busy(node, state):
    """A node with no room for a test step: ``{"ok", "busy": True, "jobs", "output"}`` when
    jobs run there (healthy, just full), ``ok`` False when nothing runs yet it is full;
    None when a step fits."""
    fits, figures = scontrol.step_room(state or {}, VERIFY_STEP_MB)
    if fits:
        return None
    try:
        jobs = node_jobs(node, running_only=True)
    except CommandExecutionError as err:
        return {"ok": False, "busy": True, "jobs": [], "output": f"{figures}; squeue: {err}"}
    if not jobs:
        return {
            "ok": False,
            "busy": True,
            "jobs": [],
            "output": f"no room for a job step ({figures}) yet no job runs there "
            f"(state {(state or {}).get('raw_state')})",
        }
    return {
        "ok": True,
        "busy": True,
        "jobs": jobs,
        "output": f"busy: {figures} by running job(s) {', '.join(jobs)}",
    }


def _states(nodes):
    try:
        states = cluster_nodes()
    except CommandExecutionError as err:
        log.warning("job_steps: cannot read node states, trying steps anyway: %s", err)
        return {}
    return {node: states.get(node) for node in nodes}


def job_steps(nodes, timeout=60):
    """
    Run one real job step on each node (``srun -w NODE -N1 hostname``, 32 MB, so it fits
    beside running jobs), all at once, and report ``{node: {"ok": bool, "output": ...}}``;
    ok means the step ran and printed the node's own hostname.

    A node whose CPUs (or memory) are all allocated cannot start a step; it gets none and
    is reported ``busy`` (``ok`` with ``"busy": True`` and the running jobs' ids) when jobs
    run there, and fails when none does. So does a node a step could not start on because
    a job took it meanwhile.

    CLI Example:

    .. code-block:: bash

        salt ctl slurm_controller.job_steps '[n1, n2]'
    """
    if isinstance(nodes, str):
        nodes = [n for n in nodes.split(",") if n]
    states = _states(nodes)

    def step(node):
        busy = _busy(node, states.get(node))
        if busy is not None:
            return node, busy
        # --immediate: srun gives up (and releases its pending allocation) by itself when
        # the node cannot be allocated in time, instead of being killed with a live job
        argv = [
            "srun",
            "-w",
            node,
            "-N1",
            "-n1",
            f"--immediate={max(1, int(timeout) - 10)}",
            f"--time={max(1, int(timeout) // 60 + 1)}",
            # a small memory request: the step fits beside jobs that leave some free
            f"--mem={VERIFY_STEP_MEM}",
            "--quit-on-interrupt",
            "hostname",
        ]
        try:
            proc = command.run(argv, timeout=timeout, check=False)
        except command.CommandFailed as err:
            return node, {"ok": False, "output": str(err)}
        output = (proc.stdout.strip() or proc.stderr.strip())[-500:]
        ok = proc.returncode == 0 and proc.stdout.strip() == node
        if not ok:
            # a job may have taken the node between the look and the step
            busy = _busy(node, _states([node]).get(node))
            if busy is not None and busy["ok"]:
                return node, busy
        return node, {"ok": ok, "output": output}

    with concurrent.futures.ThreadPoolExecutor(max_workers=min(32, max(1, len(nodes)))) as pool:
        return dict(pool.map(step, nodes))


def node_state(name=None):
    """
    The node's state as the controller sees it (``scontrol show node NAME``).

    Returns ``{"state": "IDLE", "flags": [...], "reason": ..., "responding": bool}``.

    CLI Example:

    .. code-block:: bash

        salt node1 slurm_controller.node_state
    """
    name = name or __grains__["host"]
    try:
        proc = command.run(["scontrol", "show", "node", "-o", name], timeout=15)
    except command.CommandFailed as err:
        raise CommandExecutionError(str(err)) from err
    return scontrol.node_state(proc.stdout)


def _evidence(plan, daemon):
    """Log lines that explain a failure: known causes first, then other errors."""
    lines = []
    for label, path in (
        (daemon, direct.spec(daemon, plan["slurm_conf"])["log"]),
        ("munged", direct.DAEMONS["munge"]["log"]),
    ):
        tail = direct.log_tail(path, 300)
        telling = [line for line in tail if scontrol.is_telling(line)]
        errors = [line for line in tail if "error" in line.lower() and line not in telling]
        lines += [f"{label}: {line}" for line in (telling[-6:] + errors[-3:])]
    return lines


def wait_registered(name=None, timeout=60):
    """
    Wait until the controller lists this node and it is neither down nor unresponsive. A
    node the admin drained counts as registered (it answers; the drain is theirs to lift);
    one drained for registering bad hardware (``INVALID_REG``, e.g. Low RealMemory) does not.

    Returns ``{"ok": bool, "state": ..., "waited": seconds, "evidence": [log lines],
    "cause": short reason}``. A key mismatch with the controller shows up as
    ``Protocol authentication error`` / ``Invalid credential``; the cause says so.

    CLI Example:

    .. code-block:: bash

        salt node1 slurm_controller.wait_registered timeout=30
    """
    plan = _plan("node")
    name = name or __grains__["host"]
    started = time.monotonic()
    last, error, rejected = None, None, 0
    while True:
        try:
            proc = command.run(["scontrol", "show", "node", "-o", name], timeout=15)
            last, error, rejected = scontrol.node_state(proc.stdout), None, 0
            if last["registered"]:
                return {"ok": True, "state": last, "waited": round(time.monotonic() - started, 1)}
        except command.CommandFailed as err:
            error = str(err)
            # a rejected credential does not heal by waiting; a restarting controller does
            rejected = rejected + 1 if "Zero Bytes" in error else 0
        if time.monotonic() - started > timeout or rejected >= 5:
            break
        time.sleep(1)
    evidence = ([error] if error else []) + _evidence(plan, "slurmd")
    return {
        "ok": False,
        "state": last,
        "waited": round(time.monotonic() - started, 1),
        "evidence": evidence,
        "cause": scontrol.diagnose(evidence, last),
    }
