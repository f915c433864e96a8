"""Read-only operations: ``slurm.status``, ``slurm.verify``, ``slurm.diagnose``.

Each starts with one ping round: a minion that does not answer is reported at once (as
unreachable, a failure) and left out of every later call, so one dead node costs the
ping round's few seconds, not a call timeout per step.
"""

from salt_ext.lib.conf import hostlist
from salt_ext.lib.ops import OpError, accounting, diagnosis, views
from salt_ext.lib.ops import restd as restd_ops


def status(ctx):
    """``{"result", "title", "controller": {...}, "nodes": [rows]}``."""
    controller, node_minions = ctx.cluster()
    answered, _ = ctx.reachable([controller, *node_minions.values()])
    statuses = ctx.returns(answered, "slurm_node.status")
    states = (
        ctx.one(controller, "slurm_controller.cluster_nodes") if controller in answered else None
    )
    rows = views.status_rows(statuses.get(controller), node_minions, statuses, states)
    ctl = statuses.get(controller)
    result = {
        "result": all(views.row_ok(r) for r in rows) and views.controller_ok(ctl),
        "title": views.status_title(controller, ctl),
        "controller": {"minion": controller, "status": ctl},
        "nodes": rows,
    }
    if accounting.enabled(ctx.cfg):
        host = ctx.cfg["accounting"]["host"]
        if host in statuses or host == controller:
            dbd_status = statuses.get(host)
        else:
            dbd_status = ctx.one(host, "slurm_node.status") if ctx.reachable([host])[0] else None
        acct_rows = accounting.status_rows(ctx.cfg, dbd_status)
        result["accounting"] = acct_rows
        result["title"] += "\n" + accounting.status_line(acct_rows)
        result["result"] = result["result"] and accounting.rows_ok(acct_rows)
        if accounting.managed(ctx.cfg):
            # accounts / users / QOS as code: one test=True read on the controller
            answer = (
                ctx.minions.call([controller], accounting.CHECK_FUN, [], 120)[controller]
                if controller in answered
                else None
            )
            sync = accounting.sync_report(controller, answer)
            result["accounts_as_code"] = sync
            result["title"] += "\n" + sync["line"]
            # a cluster that differs from pillar (or could not be read) is not a green
            # status; unmanaged entities alone are reported, not a failure
            result["result"] = result["result"] and sync["in_sync"] is True
    if restd_ops.enabled(ctx.cfg):
        row = restd_ops.status_row(ctx.cfg, ctl)
        result["restd"] = row
        result["title"] += "\n" + restd_ops.status_line(row)
        result["result"] = result["result"] and row["mark"] is True
    return result


def munge_to_controller(ctx, controller, node_minions, targets, timeout):
    """Each target encodes a credential; the controller decodes them all in one call.
    Returns ``({minion: credential or None}, {NodeName: decode result})``."""
    if not targets:
        return {}, {}
    by_minion = {m: n for n, m in node_minions.items()}
    encoded = ctx.returns(targets, "munge.encode", [views.VERIFY_PAYLOAD], timeout)
    credentials = {by_minion[m]: c for m, c in encoded.items() if isinstance(c, str)}
    if not credentials:
        return encoded, {}
    return encoded, ctx.one(controller, "munge.decode_all", [credentials], timeout) or {}


def verify(ctx, timeout=60):
    """``{"result", "comment", "failed": {node: {check: evidence}}, "nodes": {...}}``."""
    controller, node_minions = ctx.cluster()
    ctx.progress(f"verifying {len(node_minions)} nodes against {controller}")
    answered, _ = ctx.reachable([controller, *node_minions.values()])
    if controller not in answered:
        raise OpError(f"the controller {controller} does not answer test.ping")
    targets = [m for m in answered if m != controller]
    statuses = ctx.returns([controller, *targets], "slurm_node.status")
    ctl = statuses.get(controller)
    if ctl is None:
        raise OpError(f"the controller {controller} did not answer slurm_node.status")
    # a hung munged would only spend munge's own timeout: its node fails "daemons" already
    talking = [m for m in targets if views.munge_answers(statuses.get(m))]
    encoded, decoded = munge_to_controller(ctx, controller, node_minions, talking, timeout)
    ctl_credential = ctx.one(controller, "munge.encode", [views.VERIFY_PAYLOAD])
    reverse = (
        ctx.returns(talking, "munge.decode", [ctl_credential], timeout)
        if ctl_credential and talking
        else {}
    )
    states = ctx.one(controller, "slurm_controller.cluster_nodes") or {}
    # a job step only where everything else passed and the controller can place one: a
    # step on a broken or DOWN node would only wait out its timeout
    nodes = {
        node: views.verify_node(
            node,
            minion,
            statuses.get(minion),
            ctl,
            encoded.get(minion),
            decoded.get(node),
            reverse.get(minion),
            None,
        )
        for node, minion in node_minions.items()
    }
    ready = [
        node
        for node, checks in nodes.items()
        if all(c["ok"] for name, c in checks.items() if name != "job step")
        and not views.drained(states.get(node))
        and (states.get(node) or {}).get("usable", True)
    ]
    steps = {}
    if ready:
        steps = (
            ctx.one(controller, "slurm_controller.job_steps", [ready, timeout], timeout + 30) or {}
        )
    acct = None
    if accounting.enabled(ctx.cfg):
        # a finished job must reach the database: sacct shows it COMPLETED|0:0
        acct = ctx.one(controller, "slurm_dbd.job_recorded", [timeout], timeout + 90) or {
            "ok": False,
            "job": None,
            "evidence": f"no answer from {controller} to slurm_dbd.job_recorded",
        }
    rest = restd_ops.verify(ctx, timeout) if restd_ops.enabled(ctx.cfg) else None
    failed = {}
    for node, checks in nodes.items():
        if "job step" in checks:  # an unreachable node has only its "reachable" check
            step = steps.get(node) or {"ok": False, "output": "not run: the checks above failed"}
            checks["job step"] = views.step_check(node, step, states.get(node))
        bad = {name: c["evidence"] for name, c in checks.items() if not c["ok"]}
        if bad:
            failed[node] = bad
    result = {
        "result": not failed,
        "comment": (
            f"{len(nodes)} nodes verified"
            if not failed
            else f"{len(failed)} of {len(nodes)} nodes failed: {', '.join(failed)}"
        ),
        "failed": failed,
        "nodes": nodes,
    }
    for key, label, check in (("accounting", "accounting", acct), ("restd", "REST API", rest)):
        if check is not None:
            result[key] = check
            result["result"] = result["result"] and check["ok"]
            word = label if check["ok"] else f"{label} FAILED"
            result["comment"] += f"; {word}: {check['evidence']}"
    ctx.progress(result["comment"])
    return result


def diagnose(ctx, nodes=None, timeout=30):
    """``{"result", "nodes": {node: {"minion", "state", "causes"}}}``; ``nodes`` is a list
    of NodeNames (all nodes with a fault or a Slurm state worth a look when None)."""
    controller, node_minions = ctx.cluster()
    conf_nodes = set(node_minions)
    hardware = ctx.master.mine_hardware(ctx.cfg["node_target"], ctx.cfg["node_target_type"])
    for minion, data in hardware.items():
        if isinstance(data, dict) and data.get("NodeName") not in conf_nodes:
            node_minions[data["NodeName"]] = minion  # provisioned, but not in slurm.conf
    if nodes:
        unknown = set(nodes) - set(node_minions)
        if unknown:
            raise OpError(
                f"nodes: {hostlist.compress(sorted(unknown))} neither in slurm.conf nor in the mine"
            )
        node_minions = {n: m for n, m in node_minions.items() if n in set(nodes)}
    targets = list(dict.fromkeys([controller, *node_minions.values()]))
    ctx.progress(f"probing {len(targets)} machines")
    answered, _ = ctx.reachable(targets)
    answers = ctx.minions.call(answered, "slurm_node.probe", [], timeout) if answered else {}
    probes = {m: a["ret"] for m, a in answers.items() if a["ok"]}
    ctl = probes.get(controller)
    if ctl is None:
        raise OpError(
            f"the controller's minion {controller} "
            + (
                f"answers test.ping but slurm_node.probe failed: {answers[controller]['error']}"
                if controller in answers
                else "does not answer; start there: is salt-minion running, and slurmctld "
                "(salt-run slurm.status)?"
            )
        )
    states = ctx.one(controller, "slurm_controller.cluster_nodes") or {}
    reachable = [m for m in node_minions.values() if views.munge_answers(probes.get(m))]
    _, decoded = munge_to_controller(ctx, controller, node_minions, reachable, timeout)
    report = {}
    for node, minion in node_minions.items():
        if minion in answers and minion not in probes:
            causes = [_probe_failed(minion, answers[minion]["error"])]
        else:
            causes = diagnosis.node_causes(
                node,
                minion,
                probes.get(minion),
                ctl,
                states.get(node),
                conf_nodes,
                decoded.get(node),
            )
        if causes or diagnosis.needs_look(states.get(node)) or nodes:
            report[node] = {
                "minion": minion,
                "state": (states.get(node) or {}).get("raw_state"),
                "causes": causes,
            }
    faulty = [n for n, entry in report.items() if entry["causes"]]
    ctx.progress(f"{len(faulty)} of {len(node_minions)} nodes with a fault")
    result = {"result": not faulty, "nodes": report}
    if accounting.enabled(ctx.cfg):
        host = ctx.cfg["accounting"]["host"]
        probes_acct = {}
        wanted = list(dict.fromkeys([controller, host]))
        up, _ = ctx.reachable(wanted)
        if up:
            answers = ctx.minions.call(up, "slurm_dbd.probe", [], timeout)
            probes_acct = {m: a["ret"] for m, a in answers.items() if a["ok"]}
        found = accounting.causes(ctx.cfg, probes_acct.get(host), probes_acct.get(controller))
        result["accounting"] = {"host": host, "causes": found}
        result["result"] = result["result"] and not found
        ctx.progress(f"accounting: {len(found)} fault(s)")
    if restd_ops.enabled(ctx.cfg):
        hosts = restd_ops.key_hosts(ctx.cfg)
        up, _ = ctx.reachable(hosts)
        answers = ctx.minions.call(up, "slurm_restd.probe", [], timeout) if up else {}
        probes = {
            h: (answers.get(h) or {}).get("ret") if (answers.get(h) or {}).get("ok") else None
            for h in hosts
        }
        found = restd_ops.causes(ctx.cfg, ctx.jwt_key().current_hash(), probes)
        dead = restd_ops.unfinished_rotation(ctx)
        if dead:
            found.insert(0, dead)  # the likely reason for a key mismatch below it
        result["restd"] = {"host": controller, "causes": found}
        result["result"] = result["result"] and not found
        ctx.progress(f"REST API: {len(found)} fault(s)")
    return result


def _probe_failed(minion, error):
    """A minion that answers test.ping but whose probe failed is no unreachable minion."""
    return {
        "cause": "probe failed on the minion",
        "evidence": [
            f"salt: minion {minion} answers test.ping",
            f"slurm_node.probe failed: {str(error)[:300]}",
        ],
        "fix": f"salt {minion} slurm_node.probe, and read the minion log there",
    }
