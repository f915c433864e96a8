"""``slurm.deploy`` (and ``slurm.add_node``, which is a deploy of one machine): bring the
cluster to the pillar's description, from bare machines or from a running cluster, in
Slurm's order, and prove it works."""

from salt_ext.lib.conf import generate
from salt_ext.lib.ops import OpError, accounting, conf, health, rollout

# deploy waits longer for minions than the read-only operations: a machine busy installing
# packages answers late, and leaving it out of a deploy is a failure, not a faster report
DEPLOY_PING_WAIT = 5.0


def _targets(ctx, only):
    cfg = ctx.cfg
    answered, silent = ctx.minions.ping(
        cfg["node_target"], cfg["node_target_type"], wait=DEPLOY_PING_WAIT
    )
    targets = sorted((m for m in answered if m != ctx.controller), key=generate.natural_key)
    silent = sorted((m for m in silent if m != ctx.controller), key=generate.natural_key)
    if only:
        missing = sorted(set(only) - set(targets))
        if missing:
            raise OpError(
                f"{', '.join(missing)}: no answer, or not matched by slurm:node_target "
                f"{cfg['node_target']!r}"
            )
        targets = [t for t in targets if t in only]
        silent = []
    if not targets:
        raise OpError(
            f"no minion answers for slurm:node_target {cfg['node_target']!r} "
            f"({cfg['node_target_type']}); nothing to deploy"
        )
    return targets, silent


def _clean_minions(ctx, minions):
    """Minions that answer but have no ``slurm_node`` module: salt-minion only, as a
    freshly installed machine has (a minion that did not answer is left to the steps that
    report it)."""
    found = ctx.minions.call(minions, "sys.list_modules", ["slurm_node"], timeout=30)
    return [m for m in minions if found[m]["ok"] and "slurm_node" not in (found[m]["ret"] or [])]


def _bootstrap(ctx, minions, timeout, step):
    """Install this extension on clean minions from the master (``slurm.bootstrap``, no
    package index): ``{minion: [failure lines]}`` of those where it did not work."""
    clean = _clean_minions(ctx, minions)
    if not clean:
        return {}
    published = ctx.master.publish_extension()
    step(
        f"{', '.join(clean)}: no saltext-slurm on the minion; installing "
        f"{published['version']} from the master (slurm.bootstrap)"
    )
    failed = {}
    for minion, (ok, _, failures) in ctx.apply_state(clean, "slurm.bootstrap", timeout).items():
        if not ok:
            failed[minion] = failures
            step(f"{minion}: extension install FAILED: {'; '.join(failures)[:300]}")
    return failed


def dbd_host(cfg):
    """The accounting dbd host's minion id when it is a machine of its own (not the
    controller), else None."""
    acct = cfg.get("accounting") or {}
    if not acct.get("enabled") or acct.get("host") in (None, cfg["controller"]):
        return None
    return acct["host"]


def deploy(ctx, batch_size=10, timeout=300, only=None):
    """The summary dict: ``result``, ``controller``, ``nodes`` (per minion: prepare,
    state, changed, failures), ``unreachable``, ``rollout``, ``verify``, ``steps``
    (and ``dbd`` when accounting runs on a host of its own).

    With ``slurm:accounting:enabled`` the order is DB -> slurmdbd -> slurmctld -> slurmd:
    on a dbd host of its own ``slurm.dbd`` is applied after the render (its state syncs
    the cluster's slurm.conf like every role's) and before ``slurm.controller``, and a
    failure there stops the deploy as the controller's would; when the dbd host is the
    controller, ``slurm.controller`` runs the dbd role's states itself before slurmctld
    (one state run: its plan's ``roles`` are ``["dbd", "controller"]``), so MariaDB,
    the database, slurmdbd and the cluster's registration come first there too."""
    with ctx.journal.operation("deploy") as entry:
        return _deploy(ctx, batch_size, timeout, only, entry)


def _deploy(ctx, batch_size, timeout, only, entry):
    started = ctx.clock.monotonic()
    controller = ctx.controller
    summary = {"result": False, "controller": {}, "nodes": {}, "steps": []}

    def step(message):
        summary["steps"].append(message)
        ctx.progress(message)

    key = ctx.master_keys().create()
    step(
        f"munge key {'created' if key.get('created') else 'present'} "
        f"({key.get('key_hash', '')[:19]}…)"
    )
    if ctx.cfg.get("restd", {}).get("enabled"):
        jwt = ctx.jwt_key().create()
        step(f"JWT key {'created' if jwt['created'] else 'present'} ({jwt['key_hash'][:19]}…)")
    targets, silent = _targets(ctx, only)
    nodes = {m: {"prepare": None, "state": None, "changed": 0, "failures": []} for m in targets}
    summary["nodes"] = nodes
    current = ctx.conf_store().read()["slurm.conf"]
    known = set(ctx.node_minions(current).values()) if current else set()
    for minion in silent:
        if minion in known:
            # a node of the cluster whose minion is silent is a failure, not a quiet omission
            summary.setdefault("unreachable", []).append(minion)
            step(f"{minion}: FAILED: its minion does not answer (it is in slurm.conf)")
        else:
            step(f"WARNING: {minion} matches slurm:node_target but does not answer; left out")
    dbd = dbd_host(ctx.cfg)
    not_installed = _bootstrap(ctx, [controller, *([dbd] if dbd else []), *targets], timeout, step)
    for machine in (controller, dbd):
        if machine and machine in not_installed:
            summary["comment"] = f"{machine}: saltext-slurm could not be installed"
            return summary
    for minion, failures in not_installed.items():
        if minion in nodes:
            nodes[minion].update(prepare=False, failures=failures)
    ready = [m for m in targets if m not in not_installed]
    for batch in rollout.batches(ready, batch_size):
        for minion, (ok, changed, failures) in ctx.apply_state(
            batch, "slurm.node", timeout, sls_id="slurm-hardware-in-mine"
        ).items():
            nodes[minion].update(prepare=ok, changed=changed, failures=failures)
            step(
                f"{minion}: prepared (packages, accounts, hardware in mine)"
                if ok
                else f"{minion}: prepare FAILED: {'; '.join(failures)[:300]}"
            )
    rendered = conf.render(ctx)
    summary["rendered"] = {k: rendered[k] for k in ("class", "written", "nodes", "warnings")}
    step(
        f"slurm.conf rendered: {rendered['nodes']} nodes, {rendered['node_lines']} "
        f"NodeName lines, change {rendered['class']}"
    )
    for warning in rendered["warnings"]:
        step(f"WARNING: {warning}")
    _roll_out_to_running_cluster(ctx, rendered["class"], batch_size, timeout, entry, step, summary)
    if dbd:
        ok, changed, failures = ctx.apply_state([dbd], "slurm.dbd", timeout)[dbd]
        summary["dbd"] = {"minion": dbd, "ok": ok, "changed": changed, "failures": failures}
        if not ok:
            step(f"dbd host {dbd} FAILED: {'; '.join(failures)[:500]}")
            summary["comment"] = f"dbd host {dbd} failed; the controller and nodes were not touched"
            return summary
        step(f"dbd host {dbd}: ok ({changed} changed)")
    managed = accounting.managed(ctx.cfg)
    ran = ctx.apply_state(
        [controller],
        "slurm.controller",
        timeout,
        report=(accounting.MANAGED_STATE,) if managed else (),
    )[controller]
    ok, changed, failures = ran[:3]
    if managed:
        # accounts / users / QOS as code ran in the controller's state (after the
        # cluster's registration): say what it changed and what had drifted
        acct = accounting.deploy_report(controller, ran[3].get(accounting.MANAGED_STATE))
        summary["accounting"] = acct
        step(f"accounts as code on {controller}: {acct['comment']}")
    summary["controller"] = {
        "minion": controller,
        "ok": ok,
        "changed": changed,
        "failures": failures,
    }
    if not ok:
        step(f"controller {controller} FAILED: {'; '.join(failures)[:500]}")
        summary["comment"] = f"controller {controller} failed; nodes were not touched after step 3"
        return summary
    step(f"controller {controller}: ok ({changed} changed)")
    for batch in rollout.batches([m for m in targets if nodes[m]["prepare"]], batch_size):
        for minion, (ok, changed, failures) in ctx.apply_state(
            batch, "slurm.node", timeout
        ).items():
            nodes[minion].update(
                state=ok, changed=nodes[minion]["changed"] + changed, failures=failures
            )
            step(
                f"{minion}: ok ({changed} changed)"
                if ok
                else f"{minion}: FAILED: {'; '.join(failures)[:300]}"
            )
    checked = health.verify(ctx, 60)
    summary["verify"] = {"result": checked["result"], "failed": checked["failed"]}
    bad = sorted(m for m, n in nodes.items() if not (n["prepare"] and n["state"]))
    bad += summary.get("unreachable", [])
    rolled = summary.get("rollout", {}).get("result") is not False
    summary["result"] = bool(checked["result"]) and not bad and rolled
    summary["seconds"] = round(ctx.clock.monotonic() - started, 1)
    summary["comment"] = (
        f"{len(targets)} nodes deployed and verified in {summary['seconds']} s"
        if summary["result"]
        else ("" if rolled else "rollout failed (run slurm.deploy again to finish it); ")
        + f"failed nodes: {', '.join(bad) or 'none'}; verify: {checked['comment']}"
    )
    if summary["result"] and summary.get("finishing"):
        # the node states started whatever the interrupted run had left stopped
        ctx.journal.resolve_interrupted("finished by slurm.deploy")
    step(summary["comment"])
    return summary


def _roll_out_to_running_cluster(ctx, rendered_class, batch_size, timeout, entry, step, summary):
    """A running cluster gets the new files in Slurm's order before the states run when
    the change needs it: the render changed something, the controller holds other files
    than the master serves (an earlier run rendered and died, or someone edited them),
    it runs a stale conf, or an interrupted operation left a rollout unfinished."""
    controller = ctx.controller
    floor, reasons, stopped = conf.unfinished(ctx, say=False)
    summary["finishing"] = bool(reasons)
    ctl_status = ctx.one(controller, "slurm_node.status")
    if not (ctl_status and ctl_status["daemons"].get("slurmctld")):
        return
    conf_files = ctx.conf_store().read()
    behind = ctl_status.get("slurm_conf_hash") != rollout.file_hash(conf_files["slurm.conf"])
    # every node of the new conf that already runs slurmd (not only this run's targets),
    # and those an interrupted rollout stopped
    by_minion = {m: n for n, m in ctx.node_minions(conf_files["slurm.conf"]).items()}
    answered, _ = ctx.reachable(list(by_minion))
    statuses = ctx.returns(answered, "slurm_node.status")
    live = {
        by_minion[minion]: minion
        for minion, status in statuses.items()
        if status and (status["daemons"].get("slurmd") or minion in stopped)
    }
    # only the controller here: a stale or drifted slurmd is the node state's to fix
    # below, and a rollout now would stop at the very node that state is about to heal
    stale, _ = rollout.stale_floor(
        controller, {controller: ctl_status}, (ctx.journal.applied() or {}).get("files")
    )
    if {rendered_class, floor, stale} == {"none"} and not behind:
        return
    step(f"rolling the change out to the running cluster ({len(live)} nodes)")
    report = conf.run_rollout(ctx, live, conf_files, batch_size, min(timeout, 120), entry)
    summary["rollout"] = report
    if report["result"] is False:
        # slurmd is running again where the rollout stopped it; the states below
        # may heal the node it stopped at, and the next deploy finishes the rollout
        step(f"rollout FAILED: {report['comment']}")
