"""Node lifecycle on a running cluster: ``slurm.drain`` / ``slurm.resume`` and
``slurm.remove_node`` (drain, wait for jobs, out of slurm.conf in Slurm's order,
``slurm.absent`` on the machine)."""

from salt_ext.lib.conf import hostlist
from salt_ext.lib.ops import OpError, conf

REMOVE_REASON = "being removed (slurm.remove_node)"
# after RESUME slurmctld flags the node NOT_RESPONDING until its next ping (~1 s)
RESUME_SETTLE = 15


def set_state(ctx, names, state, reason=None):
    """DRAIN or RESUME the NodeNames ``names`` (checked against the master's slurm.conf);
    ``{"result": True, "nodes": {node: {"state", "reason"}}}``."""
    if state == "DRAIN" and (reason is None or not str(reason).strip()):
        raise OpError("reason: required to drain (Slurm shows it in `sinfo -R`)")
    controller, node_minions = ctx.cluster()
    unknown = [n for n in names if n not in node_minions]
    if unknown:
        raise OpError(f"nodes: {hostlist.compress(unknown)} not in the master's slurm.conf")
    answer = ctx.minions.call(
        [controller], "slurm_controller.update_nodes", [hostlist.compress(names), state, reason], 60
    )[controller]
    if not answer["ok"]:
        raise OpError(f"{controller}: {answer['error']}")
    changed = answer["ret"]
    deadline = ctx.clock.monotonic() + (RESUME_SETTLE if state == "RESUME" else 0)
    while True:
        states = ctx.one(controller, "slurm_controller.cluster_nodes") or {}
        settled = all(states.get(n, {}).get("responding", True) for n in changed)
        if settled or ctx.clock.monotonic() > deadline:
            break
        ctx.clock.sleep(1)
    return {
        "result": True,
        "nodes": {
            n: {
                "state": states.get(n, {}).get("raw_state"),
                "reason": states.get(n, {}).get("reason"),
            }
            for n in changed
        },
    }


def remove(ctx, node, timeout=600, reason=REMOVE_REASON, apply_timeout=120):
    with ctx.journal.operation("remove_node"):
        return _remove(ctx, node, timeout, reason, apply_timeout)


def _remove(ctx, node, timeout, reason, apply_timeout):
    controller, node_minions = ctx.cluster()
    if node not in node_minions:
        raise OpError(f"node: {node} is not a NodeName in the master's slurm.conf")
    minion = node_minions[node]
    drained = set_state(ctx, [node], "DRAIN", reason)
    ctx.progress(f"{node} drained ({drained['nodes'][node]['state']}); waiting for its jobs")
    deadline = ctx.clock.monotonic() + float(timeout)
    while True:
        jobs = ctx.one(controller, "slurm_controller.node_jobs", [node])
        if jobs == []:
            break
        if ctx.clock.monotonic() > deadline:
            return {
                "result": False,
                "comment": f"{node} still runs jobs {', '.join(jobs or ['?'])} after {timeout} s; "
                "it stays drained. Run again with a longer timeout, or scancel them.",
            }
        ctx.clock.sleep(2)
    stranded = ctx.one(controller, "slurm_controller.node_jobs", [node, True])
    ctx.progress(
        f"{node} has no running jobs; removing it from slurm.conf"
        + (
            f" (pending jobs {', '.join(stranded)} ask for it by name and cannot start after)"
            if stranded
            else ""
        )
    )
    ctx.master.forget_hardware(minion)
    rendered = conf.render(ctx)
    applied = conf.apply(ctx, timeout=apply_timeout)
    if applied.get("result") is not True:
        return {
            "result": False,
            "comment": f"apply_conf failed: {applied.get('comment')}",
            "apply_conf": applied,
        }
    absent = ctx.apply_state([minion], "slurm.absent", 300)[minion]
    ctx.progress(f"{node} removed" + ("" if absent[0] else f" (slurm.absent: {absent[2]})"))
    return {
        "result": True,
        "comment": (
            f"{node} removed from slurm.conf ({rendered['class']}); leave minion {minion} out "
            "of slurm:node_target, or slurm.deploy will add it back"
            + (
                f". Pending jobs {', '.join(stranded)} asked for {node} by name and cannot "
                "start: scancel them, or `scontrol update JobId=<id> ReqNodeList=` another node"
                if stranded
                else ""
            )
        ),
        "pending_jobs": stranded or [],
        "absent": {"ok": absent[0], "failures": absent[2]},
    }
