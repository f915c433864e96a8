"""The rendered conf files: ``slurm.render_conf``, ``slurm.apply_conf``,
``slurm.rollback_conf``, ``slurm.conf_history``, and finishing what an interrupted
operation left (the journal's interrupted entries) before anything else."""

import time

from salt_ext.lib.conf import cluster_files, generate, model
from salt_ext.lib.node import settings
from salt_ext.lib.ops import OpError, rollout
from salt_ext.lib.util import fsutil


def _read_base(ctx, base):
    if not base:
        return None
    if base.startswith("salt://"):
        return ctx.master.read_salt_file(base)
    try:
        with open(base, encoding="utf-8") as handle:
            return handle.read()
    except OSError as err:
        raise OpError(f"slurm:conf:base: cannot read {base}: {err}") from err


def compare(current, files, extra_keys):
    """``(verdict, unified diff)`` of the files on the master against ``files``."""
    changes = {n: (current.get(n), files.get(n)) for n in cluster_files.CONF_FILES}
    try:
        verdict = model.classify_files(
            {n: (o, new) for n, (o, new) in changes.items() if o is not None or new is not None},
            extra_keys,
        )
    except model.ConfError as err:
        # the file on the master was edited by hand into something we cannot read
        verdict = {"class": "restart_all", "reasons": [f"current file unreadable ({err})"]}
    diff = "".join(
        model.unified_diff(o or "", n or "", name)
        for name, (o, n) in changes.items()
        if (o or "") != (n or "")
    )
    return verdict, diff


def jwt_key_path(ctx):
    """Where the controller keeps the JWT key (slurm.conf's ``jwt_key=``): in its conf dir,
    known from its cached grains (Ubuntu <= 20.04: /etc/slurm-llnl); the default one when
    the master has none cached or the OS is one we do not know."""
    grains = ctx.master.minion_grains(ctx.cfg["controller"]) or {}
    try:
        return generate.jwt_key_path(settings.conf_dir(grains))
    except settings.SettingsError:
        return generate.JWT_KEY_PATH


def render(ctx, dry=False):
    """Render from the pillar and the mine; write (unless ``dry``) with history."""
    cfg = ctx.cfg
    hardware = ctx.master.mine_hardware(cfg["node_target"], cfg["node_target_type"])
    base = _read_base(ctx, cfg["conf"]["base"])
    jwt_key = jwt_key_path(ctx) if cfg["restd"]["enabled"] else None
    try:
        rendered = generate.render(
            cfg, hardware, base, cfg["conf"]["base"] or "slurm:conf:base", jwt_key=jwt_key
        )
    except (generate.ConfGenError, model.ConfError) as err:
        raise OpError(f"nothing written: {err}") from err
    store = ctx.conf_store()
    current = store.read()
    verdict, diff = compare(current, rendered["files"], ctx.extra_keys)
    result = {
        "written": False,
        "class": verdict["class"],
        "reasons": verdict["reasons"],
        "diff": diff,
        "nodes": len(rendered["nodes"]),
        "node_lines": rendered["node_lines"],
        "partitions": rendered["partitions"],
        "files": {n: f"sha256:{fsutil.sha256_bytes(t)}" for n, t in rendered["files"].items() if t},
        "warnings": rendered["warnings"],
    }
    if not diff:
        result["comment"] = "the master's files are up to date"
        return result
    if dry:
        result["comment"] = "test run: nothing written"
        return result
    with ctx.journal.operation("render_conf") as entry:
        ctx.journal.record(entry, "write the rendered files on the master")
        saved = store.save_history(current, cfg["conf"]["history"], result["files"])
        store.write(rendered["files"], current)
    result.update(written=True, previous=saved)
    result["comment"] = (
        f"written to {store.directory}; roll it out with `salt-run slurm.apply_conf` "
        f"(change class {verdict['class']})"
    )
    return result


def unfinished(ctx, say=True):
    """What operations that died left to do: ``(class floor, reasons, stopped minions)``,
    and (with ``say``) a progress line for each."""
    klass, reasons, stopped = "none", [], []
    for entry in ctx.journal.interrupted():
        steps = entry.get("steps") or [{}]
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(entry.get("started") or 0))
        what = (
            f"slurm.{entry.get('operation')} started {when} (pid {entry.get('pid')}) died "
            f"at step '{steps[-1].get('step', '?')}'"
        )
        pending = entry.get("rollout") or {}
        if pending.get("class") in model.CLASSES:
            klass = rollout.worse(klass, pending["class"])
            stopped += [m for m in pending.get("stopped") or [] if m not in stopped]
            reasons.append(f"{what}: finishing its rollout ({pending['class']})")
        else:
            reasons.append(f"{what}: it recorded no rollout to finish")
        if say:
            ctx.progress(reasons[-1])
    return klass, reasons, stopped


def run_rollout(ctx, node_minions, new_files, batch_size, timeout, entry, test=False):
    """One ``rollout.Rollout`` that first finishes what an interrupted operation left
    (its class; slurmd on the nodes it had stopped) and records itself in the journal."""
    floor, reasons, _ = unfinished(ctx)
    applied = ctx.journal.applied()
    report = rollout.Rollout(
        ctx.minions,
        ctx.controller,
        node_minions,
        new_files,
        batch_size=batch_size,
        timeout=timeout,
        progress=ctx.progress,
        extra_keys=ctx.extra_keys,
        tracker=ctx.journal.tracker(entry) if entry is not None else None,
        floor=(floor, reasons),
        applied_files=(applied or {}).get("files"),
    ).run(test=bool(test))
    if report["result"] is True and reasons:
        ctx.journal.resolve_interrupted(f"finished by a rollout ({report['class']})")
        report["finished_interrupted"] = reasons
    return report


def apply(ctx, batch_size=10, timeout=120, test=False):
    """``slurm.apply_conf``: the master's files to the controller and every node."""
    new_files = ctx.conf_store().read()
    if new_files["slurm.conf"] is None:
        raise OpError("the master has no slurm.conf; run `salt-run slurm.render_conf`")
    node_minions = ctx.node_minions(new_files["slurm.conf"])
    if test:
        return run_rollout(ctx, node_minions, new_files, batch_size, timeout, None, test=True)
    with ctx.journal.operation("apply_conf") as entry:
        return run_rollout(ctx, node_minions, new_files, batch_size, timeout, entry)


def history(ctx):
    """Kept versions, newest first, with their files' hashes."""
    store = ctx.conf_store()
    return [
        {
            "version": version,
            "files": {
                n: f"sha256:{fsutil.sha256_bytes(t)}"
                for n, t in store.read(version).items()
                if t is not None
            },
        }
        for version in store.versions()
    ]


def rollback(ctx, version=None, apply_it=True, batch_size=10, timeout=120):
    """Put a kept version back on the master (the replaced one is kept too), then roll
    it out."""
    with ctx.journal.operation("rollback_conf"):
        store = ctx.conf_store()
        versions = store.versions()
        if not versions:
            raise OpError("no previous version kept; nothing to roll back to")
        version = str(version) if version else versions[0]
        if version not in versions:
            raise OpError(f"version: no version {version}; kept: {', '.join(versions)}")
        restored = store.read(version)
        current = store.read()
        store.save_history(current, ctx.cfg["conf"]["history"], f"rollback to {version}")
        store.write(restored, current)
        ctx.progress(f"restored version {version} on the master")
        if not apply_it:
            return {"result": True, "restored": version, "applied": False}
        report = apply(ctx, batch_size=batch_size, timeout=timeout)
        report["restored"] = version
        return report
