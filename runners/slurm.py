"""
Cluster-wide Slurm operations, run on the master with ``salt-run slurm.<function>``.
"""

import json
import logging
import math
import os
import shutil
import sys
import time

import salt.cache
import salt.client
import salt.fileserver
import salt.key
import salt.pillar
import salt.utils.minions
from salt.exceptions import SaltRunnerError

from salt_ext.lib import (
    cluster_files,
    clusterops,
    confgen,
    diagnosis,
    fsutil,
    hostlist,
    journal,
    keyrotation,
    rollout,
    runner_util,
    settings,
    slurmconf,
    wheel,
)
from salt_ext.lib import munge as munge_lib

log = logging.getLogger(__name__)

__virtualname__ = "slurm"


def __virtual__():
    return __virtualname__


_errors_as_result = runner_util.errors_as_result("slurm", journal.LockBusy)


def _positive_arg(name, value):
    """A positive number argument, or one line naming it."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = 0
    if not (number > 0 and math.isfinite(number)):
        raise SaltRunnerError(f"{name}: a positive number, got {value!r}")
    return int(number) if number == int(number) else number


def _hostlist_arg(name, value):
    """Expand a hostlist argument, or one line naming it and what is wrong."""
    if value is None or str(value).strip() == "":
        raise SaltRunnerError(f"{name}: give one or more node names (a hostlist like n[1-4])")
    try:
        return hostlist.expand(str(value))
    except (ValueError, TypeError) as err:
        raise SaltRunnerError(f"{name}: {err}") from err


def _journal():
    """The master's cluster lock and operation journal (``<cachedir>/slurm``)."""
    return journal.Journal(os.path.join(__opts__["cachedir"], "slurm"))


def _unfinished(jrnl, say=True):
    """What operations that died left to do: ``(class floor, reasons, stopped minions)``,
    and (with ``say``) a progress line for each."""
    klass, reasons, stopped = "none", [], []
    for entry in jrnl.interrupted():
        steps = entry.get("steps") or [{}]
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(entry.get("started") or 0))
        what = (
            f"slurm.{entry.get('operation')} started {when} (pid {entry.get('pid')}) died "
            f"at step '{steps[-1].get('step', '?')}'"
        )
        pending = entry.get("rollout") or {}
        if pending.get("class") in slurmconf.CLASSES:
            klass = rollout.worse(klass, pending["class"])
            stopped += [m for m in pending.get("stopped") or [] if m not in stopped]
            reasons.append(f"{what}: finishing its rollout ({pending['class']})")
        else:
            reasons.append(f"{what}: it recorded no rollout to finish")
        if say:
            _progress(reasons[-1])
    return klass, reasons, stopped


def _files_dir():
    try:
        return cluster_files.files_dir(__opts__)
    except cluster_files.FilesDirError as err:
        raise SaltRunnerError(str(err)) from err


@_errors_as_result
def create_munge_key(force=False):
    """
    Create the cluster's munge key on the master's file server (``salt://slurm_files/munge.key``).

    The key is random, written atomically with mode 0400 and never printed: the result
    carries its SHA-256 only. An existing key is kept unless ``force=True`` (replacing a
    live cluster's key is ``slurm.rotate_munge_key``'s job, which keeps jobs alive).

    force
        Replace an existing key.

    CLI Example:

    .. code-block:: bash

        salt-run slurm.create_munge_key
    """
    directory = _files_dir()
    path = os.path.join(directory, cluster_files.MUNGE_KEY)
    if os.path.exists(path) and not force:
        return {
            "created": False,
            "path": path,
            "key_hash": munge_lib.key_hash(path),
            "comment": "key exists; kept (force=True replaces it)",
        }
    os.makedirs(directory, mode=0o755, exist_ok=True)
    fsutil.atomic_write(path, munge_lib.new_key(), mode=0o400)
    key_hash = munge_lib.key_hash(path)
    log.info("created munge key %s (%s)", path, key_hash)
    return {"created": True, "path": path, "key_hash": key_hash}


@_errors_as_result
def publish_extension():
    """
    Serve this extension to clean nodes: build a wheel of the saltext-slurm the master runs
    into ``salt://slurm_files/wheels/``, where ``slurm.bootstrap`` (and ``slurm.node`` on a
    minion without the extension) installs it from, with no package index.

    CLI Example:

    .. code-block:: bash

        salt-run slurm.publish_extension
    """
    out_dir = os.path.join(_files_dir(), wheel.WHEEL_DIR)
    path, version = wheel.build(out_dir)
    for name in os.listdir(out_dir):
        if name.endswith(".whl") and name != os.path.basename(path):
            os.unlink(os.path.join(out_dir, name))
    log.info("published saltext-slurm %s as %s", version, path)
    return {
        "version": version,
        "path": path,
        "url": cluster_files.salt_url(f"{wheel.WHEEL_DIR}/{os.path.basename(path)}"),
        "sha256": fsutil.sha256_file(path),
    }


# ---------------------------------------------------------------------- slurm.conf
HISTORY_DIR = ".history"


def _progress(message):
    """A line of progress: on stderr for the admin watching ``salt-run`` (stdout stays the
    result, so ``--out=json`` parses), in the master log, and as a ``salt/slurm/progress``
    event on the master's event bus for salt-api clients and reactors."""
    log.info("slurm: %s", message)
    print(f"[slurm {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)
    # one line of many: a bus that is down is worth a debug line, not a warning per step
    runner_util.fire_master_event(
        __opts__, "salt/slurm/progress", {"message": message}, level=logging.DEBUG
    )


def _pillar_of(minion):
    minion_id, grains, _ = salt.utils.minions.get_minion_data(minion, __opts__)
    if minion_id is None:
        return None
    return salt.pillar.Pillar(__opts__, grains or {}, minion_id, "base").compile_pillar()


def _accepted_minions():
    with salt.key.get_key(__opts__) as keys:
        return sorted(keys.list_keys().get("minions", []))


def _mine_hardware(target="*", tgt_type="glob"):
    return __salt__["mine.get"](target, "slurm_node.hardware", tgt_type) or {}


def _cluster_settings(pillar_minion=None):
    """Validated ``slurm:`` pillar as the controller sees it.

    The pillar is compiled for ``pillar_minion`` if given; otherwise for a minion that has
    hardware in the mine, and then again for the controller it names (its view wins).
    """
    if pillar_minion:
        candidates = [pillar_minion]
    else:
        # minions with hardware in the mine run slurm.node; before any did, any accepted
        # minion that has the slurm pillar will do (the controller's view is taken below)
        candidates = sorted(_mine_hardware()) or _accepted_minions()[:20]
    pillar = None
    for minion in candidates:
        pillar = _pillar_of(minion)
        if pillar and pillar.get("slurm"):
            break
    if not pillar or not pillar.get("slurm"):
        raise SaltRunnerError(
            "no slurm: pillar found"
            + (f" for minion {pillar_minion}" if pillar_minion else " for any minion in the mine")
            + "; assign the slurm pillar (pillar/slurm.sls.example) and apply slurm.node, "
            "or pass pillar_minion=<controller id>"
        )
    try:
        cfg = settings.validate(pillar["slurm"])
    except settings.SettingsError as err:
        raise SaltRunnerError(f"bad slurm pillar: {err}") from err
    if not pillar_minion and cfg["controller"] not in candidates:
        controller_pillar = _pillar_of(cfg["controller"])
        if controller_pillar and controller_pillar.get("slurm"):
            try:
                cfg = settings.validate(controller_pillar["slurm"])
            except settings.SettingsError as err:
                raise SaltRunnerError(f"bad slurm pillar of {cfg['controller']}: {err}") from err
    return cfg


def _read_base(base):
    if not base:
        return None
    if base.startswith("salt://"):
        found = salt.fileserver.Fileserver(__opts__).find_file(base[len("salt://") :], "base")
        path = found.get("path")
        if not path:
            raise SaltRunnerError(f"slurm:conf:base: {base} not found on the master's file server")
    else:
        path = base
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except OSError as err:
        raise SaltRunnerError(f"slurm:conf:base: cannot read {path}: {err}") from err


def _save_history(directory, current, keep, note):
    """Copy the current files into ``.history/<stamp>/``; keep the newest ``keep``."""
    if not any(current.values()):
        return None
    history = os.path.join(directory, HISTORY_DIR)
    os.makedirs(history, mode=0o755, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + f".{time.time_ns() % 10**9:09d}"
    target = os.path.join(history, stamp)
    staging = target + ".tmp"
    os.makedirs(staging, mode=0o755)
    for name, text in current.items():
        if text is not None:
            fsutil.atomic_write(os.path.join(staging, name), text, mode=0o644)
    fsutil.atomic_write(
        os.path.join(staging, "meta.json"), json.dumps({"replaced_by": note}, indent=1) + "\n"
    )
    os.rename(staging, target)
    versions = _history_versions(directory)
    for old in versions[keep:]:
        shutil.rmtree(os.path.join(history, old), ignore_errors=True)
    return stamp


def _history_versions(directory):
    history = os.path.join(directory, HISTORY_DIR)
    try:
        names = [n for n in os.listdir(history) if not n.endswith(".tmp")]
    except FileNotFoundError:
        return []
    return sorted(names, reverse=True)


def _write_files(directory, files, current):
    os.makedirs(directory, mode=0o755, exist_ok=True)
    for name in rollout.CONF_FILES:
        path = os.path.join(directory, name)
        if files.get(name) is not None:
            if files[name] != current.get(name):
                fsutil.atomic_write(path, files[name], mode=0o644)
        elif current.get(name) is not None:
            os.unlink(path)
    # new or removed files must be visible to cp.list_master on the minions now
    __salt__["fileserver.update"]()


def _compare(current, files, extra_keys):
    changes = {n: (current.get(n), files.get(n)) for n in rollout.CONF_FILES}
    try:
        verdict = slurmconf.classify_files(
            {n: (o, new) for n, (o, new) in changes.items() if o is not None or new is not None},
            extra_keys,
        )
    except slurmconf.ConfError as err:
        # the file on the master was edited by hand into something we cannot read
        verdict = {"class": "restart_all", "reasons": [f"current file unreadable ({err})"]}
    diff = "".join(
        slurmconf.unified_diff(o or "", n or "", name)
        for name, (o, n) in changes.items()
        if (o or "") != (n or "")
    )
    return verdict, diff


@_errors_as_result
def render_conf(test=False, dry_run=False, pillar_minion=None):
    """
    Render slurm.conf (+ gres.conf for GPU nodes, cgroup.conf when cgroup plugins are used)
    from the ``slurm:`` pillar and the nodes' hardware in the Salt mine, and write them
    atomically to the master's file server (``salt://slurm_files/``), keeping the previous
    versions (``slurm:conf:history``, default 5) for ``slurm.rollback_conf``.

    Returns the unified diff against the files there now and the change class (none,
    reconfigure, restart_slurmd, restart_slurmctld, restart_all) with reasons, and
    ``warnings`` (e.g. nodes far below their model's memory: a missing DIMM?).
    Nothing reaches the nodes until ``slurm.apply_conf`` (or ``state.apply slurm.node``).

    test / dry_run
        Show the diff and class; write nothing.
    pillar_minion
        Minion whose pillar holds the ``slurm:`` settings (default: the controller's).

    CLI Example:

    .. code-block:: bash

        salt-run slurm.render_conf test=True
        salt-run slurm.render_conf
    """
    dry = bool(test or dry_run)
    cfg = _cluster_settings(pillar_minion)
    hardware = _mine_hardware(cfg["node_target"], cfg["node_target_type"])
    base = _read_base(cfg["conf"]["base"])
    extra_keys = tuple(cfg["conf"]["extra_keys"])
    try:
        rendered = confgen.render(cfg, hardware, base, cfg["conf"]["base"] or "slurm:conf:base")
    except (confgen.ConfGenError, slurmconf.ConfError) as err:
        raise SaltRunnerError(f"nothing written: {err}") from err
    directory = _files_dir()
    current = cluster_files.read_conf_files(directory)
    verdict, diff = _compare(current, rendered["files"], extra_keys)
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
    for warning in rendered["warnings"]:
        log.warning("slurm.render_conf: %s", warning)
    if not diff:
        result["comment"] = "the master's files are up to date"
        return result
    if dry:
        result["comment"] = "test run: nothing written"
        return result
    jrnl = _journal()
    with jrnl.operation("render_conf") as entry:
        jrnl.record(entry, "write the rendered files on the master")
        saved = _save_history(directory, current, cfg["conf"]["history"], result["files"])
        _write_files(directory, rendered["files"], current)
    result.update(written=True, previous=saved)
    result["comment"] = (
        f"written to {directory}; roll it out with `salt-run slurm.apply_conf` "
        f"(change class {verdict['class']})"
    )
    log.info("slurm.render_conf wrote %s (%s)", directory, verdict["class"])
    return result


class _Minions:
    """``rollout.Rollout``'s view of the cluster: LocalClient calls, failures as data."""

    def __init__(self, opts):
        self.opts = opts

    def call(self, targets, fun, arg=(), timeout=120):
        with salt.client.LocalClient(mopts=self.opts) as client:
            returns = client.cmd(
                list(targets),
                fun,
                arg=list(arg),
                tgt_type="list",
                timeout=timeout,
                full_return=True,
            )
        result = {}
        for target in targets:
            ret = returns.get(target)
            if ret is None:
                result[target] = {"ok": False, "ret": None, "error": "no return (minion down?)"}
            elif ret.get("retcode", 0) != 0 or (
                isinstance(ret.get("ret"), str) and ret["ret"].startswith("ERROR")
            ):
                result[target] = {"ok": False, "ret": ret.get("ret"), "error": str(ret.get("ret"))}
            else:
                result[target] = {"ok": True, "ret": ret.get("ret"), "error": None}
        return result


def _node_minions(cfg, conf_text):
    """NodeName -> minion id for every node slurm.conf defines (mine data, else same name)."""
    by_name = {
        data.get("NodeName"): minion
        for minion, data in _mine_hardware().items()
        if isinstance(data, dict)
    }
    nodes = rollout.conf_nodes(conf_text, tuple(cfg["conf"]["extra_keys"]))
    return {node: by_name.get(node, node) for node in nodes if node != cfg["controller"]}


@_errors_as_result
def apply_conf(batch_size=10, timeout=120, test=False, pillar_minion=None):
    """
    Roll the master's current slurm.conf / gres.conf / cgroup.conf out to the controller
    and every node it defines, in the order the change needs: ``scontrol reconfigure`` when
    that is enough (running jobs untouched), else stop slurmd on the nodes, restart
    slurmctld, start slurmd in batches. Ends when every node has the new conf hash and is
    registered and not down. The first failure stops it and names the nodes and why;
    ``salt-run slurm.rollback_conf`` restores the previous version.

    batch_size
        Nodes whose slurmd is (re)started at a time.
    timeout
        Seconds each node (and slurmctld) may take to come back.
    test
        Only report the change class and diff against the controller's files.

    CLI Example:

    .. code-block:: bash

        salt-run slurm.apply_conf
        salt-run slurm.apply_conf batch_size=50 test=True
    """
    batch_size = _positive_arg("batch_size", batch_size)
    timeout = _positive_arg("timeout", timeout)
    cfg = _cluster_settings(pillar_minion)
    new_files = cluster_files.read_conf_files(_files_dir())
    if new_files["slurm.conf"] is None:
        raise SaltRunnerError("the master has no slurm.conf; run `salt-run slurm.render_conf`")
    try:
        node_minions = _node_minions(cfg, new_files["slurm.conf"])
    except slurmconf.ConfError as err:
        raise SaltRunnerError(f"the master's slurm.conf does not parse: {err}") from err
    jrnl = _journal()
    if test:
        return _rollout(cfg, node_minions, new_files, batch_size, timeout, jrnl, None, test=True)
    with jrnl.operation("apply_conf") as entry:
        return _rollout(cfg, node_minions, new_files, batch_size, timeout, jrnl, entry)


def _rollout(cfg, node_minions, new_files, batch_size, timeout, jrnl, entry, test=False):
    """One ``rollout.Rollout`` that first finishes what an interrupted operation left
    (its class; slurmd on the nodes it had stopped) and records itself in the journal."""
    floor, reasons, _ = _unfinished(jrnl)
    applied = jrnl.applied()
    report = rollout.Rollout(
        _Minions(__opts__),
        cfg["controller"],
        node_minions,
        new_files,
        batch_size=batch_size,
        timeout=timeout,
        progress=_progress,
        extra_keys=cfg["conf"]["extra_keys"],
        tracker=jrnl.tracker(entry) if entry is not None else None,
        floor=(floor, reasons),
        applied_files=(applied or {}).get("files"),
    ).run(test=bool(test))
    if report["result"] is True and reasons:
        jrnl.resolve_interrupted(f"finished by a rollout ({report['class']})")
        report["finished_interrupted"] = reasons
    return report


@_errors_as_result
def conf_history():
    """
    Previous versions of the rendered files kept for ``slurm.rollback_conf``, newest first.

    CLI Example:

    .. code-block:: bash

        salt-run slurm.conf_history
    """
    directory = _files_dir()
    result = []
    for version in _history_versions(directory):
        files = cluster_files.read_conf_files(os.path.join(directory, HISTORY_DIR, version))
        result.append(
            {
                "version": version,
                "files": {
                    n: f"sha256:{fsutil.sha256_bytes(t)}" for n, t in files.items() if t is not None
                },
            }
        )
    return result


@_errors_as_result
def rollback_conf(version=None, apply=True, batch_size=10, timeout=120, pillar_minion=None):
    """
    Put a previous version of the rendered files back (default: the newest one kept) and
    roll it out with ``slurm.apply_conf``. The version being replaced is kept in the
    history too, so a rollback can itself be undone.

    version
        A version from ``slurm.conf_history``.
    apply
        False only restores the files on the master.

    CLI Example:

    .. code-block:: bash

        salt-run slurm.rollback_conf
        salt-run slurm.rollback_conf version=20261125T101500.123456789
    """
    with _journal().operation("rollback_conf"):
        return _rollback_conf(version, apply, batch_size, timeout, pillar_minion)


def _rollback_conf(version, apply, batch_size, timeout, pillar_minion):
    directory = _files_dir()
    versions = _history_versions(directory)
    if not versions:
        raise SaltRunnerError("no previous version kept; nothing to roll back to")
    version = str(version) if version else versions[0]
    if version not in versions:
        raise SaltRunnerError(f"no version {version}; kept: {', '.join(versions)}")
    restored = cluster_files.read_conf_files(os.path.join(directory, HISTORY_DIR, version))
    current = cluster_files.read_conf_files(directory)
    cfg = _cluster_settings(pillar_minion)
    _save_history(directory, current, cfg["conf"]["history"], f"rollback to {version}")
    _write_files(directory, restored, current)
    _progress(f"restored version {version} on the master")
    if not apply:
        return {"restored": version, "applied": False}
    report = apply_conf(batch_size=batch_size, timeout=timeout, pillar_minion=pillar_minion)
    report["restored"] = version
    return report


# ---------------------------------------------------------------------- day 2
def _human():
    """True for an admin at ``salt-run`` without ``--out``: they get a text table."""
    return __opts__.get("__cli") == "salt-run" and not __opts__.get("output")


def _cluster(cfg):
    """(controller minion, {NodeName: minion}) from the master's slurm.conf, or from the
    mine before any conf exists."""
    conf = cluster_files.read_conf_files(_files_dir())["slurm.conf"]
    if conf is not None:
        try:
            return cfg["controller"], _node_minions(cfg, conf)
        except slurmconf.ConfError as err:
            raise SaltRunnerError(f"the master's slurm.conf does not parse: {err}") from err
    hardware = _mine_hardware(cfg["node_target"], cfg["node_target_type"])
    nodes = {
        data["NodeName"]: minion for minion, data in hardware.items() if isinstance(data, dict)
    }
    return cfg["controller"], {n: nodes[n] for n in sorted(nodes, key=confgen.natural_key)}


def _munge_to_controller(minions, controller, node_minions, targets, timeout):
    """Each target encodes a credential; the controller decodes them all in one call.
    Returns ``({minion: credential or None}, {NodeName: decode result})``."""
    if not targets:
        return {}, {}
    by_minion = {m: n for n, m in node_minions.items()}
    encoded = _returns(minions, targets, "munge.encode", [clusterops.VERIFY_PAYLOAD], timeout)
    credentials = {by_minion[m]: c for m, c in encoded.items() if isinstance(c, str)}
    if not credentials:
        return encoded, {}
    decoded = _returns(minions, [controller], "munge.decode_all", [credentials], timeout)
    return encoded, decoded[controller] or {}


def _returns(minions, targets, fun, arg=(), timeout=60):
    """``{minion: return or None}``: None for a minion that did not answer or failed."""
    answers = minions.call(targets, fun, arg, timeout)
    return {t: (a["ret"] if a["ok"] else None) for t, a in answers.items()}


@_errors_as_result
def status(pillar_minion=None):
    """
    One row per node: minion reachable, munged, slurmd, Slurm state and reason, slurm.conf
    and munge key hash equal to the controller's, Slurm version. A text table at the
    terminal; data with ``--out=json`` (or through salt-api).

    CLI Example:

    .. code-block:: bash

        salt-run slurm.status
        salt-run slurm.status --out=json
    """
    cfg = _cluster_settings(pillar_minion)
    controller, node_minions = _cluster(cfg)
    minions = _Minions(__opts__)
    statuses = _returns(minions, [controller, *node_minions.values()], "slurm_node.status")
    states = _returns(minions, [controller], "slurm_node.cluster_nodes")[controller]
    rows = clusterops.status_rows(statuses.get(controller), node_minions, statuses, states)
    ctl = statuses.get(controller)
    healthy = all(clusterops.row_ok(r) for r in rows) and clusterops.controller_ok(ctl)
    title = clusterops.status_title(controller, ctl)
    if _human():
        text = clusterops.format_table(rows, title)
        return text if healthy else {"result": False, "report": text}
    return {"result": healthy, "controller": {"minion": controller, "status": ctl}, "nodes": rows}


@_errors_as_result
def verify(pillar_minion=None, timeout=60):
    """
    Prove the cluster works, node by node: a munge credential made on the node decodes on
    the controller and one made on the controller decodes on the node; munge key and
    slurm.conf hashes and the munge/slurm UIDs equal the controller's; a real job step
    runs on the node (``srun -w NODE hostname``). Exits non-zero on any failure, naming
    the node, the check and the evidence.

    CLI Example:

    .. code-block:: bash

        salt-run slurm.verify
    """
    result = _verify(pillar_minion, timeout)
    if _human():
        text = clusterops.format_verify(result["nodes"], result["comment"])
        return text if result["result"] else {"result": False, "report": text}
    return result


def _verify(pillar_minion, timeout):
    cfg = _cluster_settings(pillar_minion)
    controller, node_minions = _cluster(cfg)
    minions = _Minions(__opts__)
    targets = list(dict.fromkeys(node_minions.values()))
    _progress(f"verifying {len(node_minions)} nodes against {controller}")
    statuses = _returns(minions, [controller, *targets], "slurm_node.status")
    ctl = statuses.get(controller)
    if ctl is None:
        raise SaltRunnerError(f"the controller {controller} did not answer slurm_node.status")
    # a hung munged would only spend munge's own timeout: its node fails "daemons" already
    talking = [m for m in targets if clusterops.munge_answers(statuses.get(m))]
    encoded, decoded = _munge_to_controller(minions, controller, node_minions, talking, timeout)
    ctl_credential = _returns(minions, [controller], "munge.encode", [clusterops.VERIFY_PAYLOAD])[
        controller
    ]
    reverse = (
        _returns(minions, talking, "munge.decode", [ctl_credential], timeout)
        if ctl_credential and talking
        else {}
    )
    states = _returns(minions, [controller], "slurm_node.cluster_nodes")[controller] or {}
    # a job step only where everything else passed: a step on a broken node would hang
    nodes = {
        node: clusterops.verify_node(
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
        and not clusterops.drained(states.get(node))
    ]
    steps = {}
    if ready:
        steps = (
            _returns(minions, [controller], "slurm_node.job_steps", [ready, timeout], timeout + 30)[
                controller
            ]
            or {}
        )
    failed = {}
    for node, checks in nodes.items():
        if "job step" in checks:  # an unreachable node has only its "reachable" check
            step = steps.get(node) or {"ok": False, "output": "not run: the checks above failed"}
            checks["job step"] = clusterops.step_check(node, step, states.get(node))
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
    _progress(result["comment"])
    return result


def _set_node_state(nodes, state, reason, pillar_minion):
    names = _hostlist_arg("nodes", nodes)
    if state == "DRAIN" and (reason is None or not str(reason).strip()):
        raise SaltRunnerError("reason: required to drain (Slurm shows it in `sinfo -R`)")
    cfg = _cluster_settings(pillar_minion)
    _, node_minions = _cluster(cfg)
    unknown = [n for n in names if n not in node_minions]
    if unknown:
        raise SaltRunnerError(f"nodes: {hostlist.compress(unknown)} not in the master's slurm.conf")
    controller = cfg["controller"]
    answer = _Minions(__opts__).call(
        [controller], "slurm_node.update_nodes", [nodes, state, reason], 60
    )[controller]
    if not answer["ok"]:
        raise SaltRunnerError(f"{controller}: {answer['error']}")
    # after RESUME slurmctld flags the node NOT_RESPONDING until its next ping (~1 s)
    deadline = time.monotonic() + (15 if state == "RESUME" else 0)
    while True:
        states = (
            _returns(_Minions(__opts__), [controller], "slurm_node.cluster_nodes")[controller] or {}
        )
        settled = all(states.get(n, {}).get("responding", True) for n in answer["ret"])
        if settled or time.monotonic() > deadline:
            break
        time.sleep(1)
    return {
        "result": True,
        "nodes": {
            n: {
                "state": states.get(n, {}).get("raw_state"),
                "reason": states.get(n, {}).get("reason"),
            }
            for n in answer["ret"]
        },
    }


@_errors_as_result
def drain(nodes=None, reason=None, pillar_minion=None):
    """
    Drain nodes: running jobs finish, no new ones start. ``reason`` is required (Slurm
    shows it in ``sinfo -R``).

    CLI Example:

    .. code-block:: bash

        salt-run slurm.drain 'n[1-2]' reason='BIOS update'
    """
    return _set_node_state(nodes, "DRAIN", reason, pillar_minion)


@_errors_as_result
def resume(nodes=None, reason=None, pillar_minion=None):
    """
    Return drained (or down) nodes to service.

    CLI Example:

    .. code-block:: bash

        salt-run slurm.resume 'n[1-2]'
    """
    return _set_node_state(nodes, "RESUME", reason, pillar_minion)


def _state_failures(ret):
    """Failed state comments of one state.apply return (a render error counts as one)."""
    if not isinstance(ret, dict):
        return [" ".join(map(str, ret)) if isinstance(ret, list) else str(ret)]
    return [
        f"{chunk.get('__id__', sid)}: {chunk.get('comment')}"
        for sid, chunk in ret.items()
        if isinstance(chunk, dict) and chunk.get("result") is False
    ]


def _apply_states(targets, sls, timeout, sls_id=None):
    """``state.apply``/``state.sls_id`` on ``targets``; ``{minion: (ok, changed, failures)}``."""
    with salt.client.LocalClient(mopts=__opts__) as client:
        if sls_id:
            returns = client.cmd(
                targets, "state.sls_id", [sls_id, sls], tgt_type="list", timeout=timeout
            )
        else:
            returns = client.cmd(targets, "state.apply", [sls], tgt_type="list", timeout=timeout)
    result = {}
    for target in targets:
        ret = returns.get(target)
        if ret is None:
            result[target] = (False, 0, ["no return (minion down?)"])
            continue
        failures = _state_failures(ret)
        changed = (
            sum(1 for c in ret.values() if isinstance(c, dict) and c.get("changes"))
            if isinstance(ret, dict)
            else 0
        )
        result[target] = (not failures, changed, failures)
    return result


def _node_targets(cfg, controller):
    with salt.client.LocalClient(mopts=__opts__) as client:
        answered = client.cmd(
            cfg["node_target"], "test.ping", tgt_type=cfg["node_target_type"], timeout=30
        )
    return sorted(
        (m for m, ok in answered.items() if ok is True and m != controller), key=confgen.natural_key
    )


@_errors_as_result
def deploy(batch_size=10, timeout=300, pillar_minion=None, only=None):
    """
    Bring the whole cluster to the pillar's description, from bare machines or from a
    running cluster, and prove it works:

    1. the munge key on the master (created if missing, never printed);
    2. nodes (``slurm:node_target``): accounts, packages, hardware into the mine;
    3. ``slurm.render_conf``;
    4. a running cluster gets the new files in Slurm's order (``slurm.apply_conf``);
    5. the controller: ``state.apply slurm.controller`` (a failure stops the deploy);
    6. nodes: ``state.apply slurm.node`` in batches (a failed node is reported, the others go on);
    7. ``slurm.verify``.

    Progress is printed per step and node and sent as ``salt/slurm/progress`` events.
    Running it again changes nothing.

    only
        Minion ids: prepare and apply ``slurm.node`` on these nodes only (the rest of the
        cluster still gets the new slurm.conf in order); used by ``slurm.add_node``.

    CLI Example:

    .. code-block:: bash

        salt-run slurm.deploy batch_size=20
    """
    batch_size = _positive_arg("batch_size", batch_size)
    timeout = _positive_arg("timeout", timeout)
    if only is not None and (
        not isinstance(only, (list, tuple)) or not all(isinstance(m, str) for m in only)
    ):
        raise SaltRunnerError(f"only: a list of minion ids, got {only!r}")
    jrnl = _journal()
    with jrnl.operation("deploy") as entry:
        summary = _deploy(batch_size, timeout, pillar_minion, only, jrnl, entry)
    if _human():
        text = _deploy_table(summary)
        return text if summary["result"] else {"result": False, "report": text}
    return summary


def _deploy(batch_size, timeout, pillar_minion, only, jrnl, entry):
    started = time.monotonic()
    cfg = _cluster_settings(pillar_minion)
    controller = cfg["controller"]
    minions = _Minions(__opts__)
    summary = {"result": False, "controller": {}, "nodes": {}, "steps": []}

    def step(message):
        summary["steps"].append(message)
        _progress(message)

    key = create_munge_key()
    step(
        f"munge key {'created' if key.get('created') else 'present'} "
        f"({key.get('key_hash', '')[:19]}…)"
    )
    targets = _node_targets(cfg, controller)
    if only:
        missing = sorted(set(only) - set(targets))
        if missing:
            raise SaltRunnerError(
                f"{', '.join(missing)}: no answer, or not matched by slurm:node_target "
                f"{cfg['node_target']!r}"
            )
        targets = [t for t in targets if t in only]
    if not targets:
        raise SaltRunnerError(
            f"no minion answers for slurm:node_target {cfg['node_target']!r} "
            f"({cfg['node_target_type']}); nothing to deploy"
        )
    nodes = {m: {"prepare": None, "state": None, "changed": 0, "failures": []} for m in targets}
    summary["nodes"] = nodes
    if not only:
        # a node of the cluster whose minion is silent is a failure, not a quiet omission
        conf = cluster_files.read_conf_files(_files_dir())["slurm.conf"]
        known = _node_minions(cfg, conf).values() if conf else []
        for minion in sorted(set(known) - set(targets) - {controller}, key=confgen.natural_key):
            summary.setdefault("unreachable", []).append(minion)
            step(f"{minion}: FAILED: its minion does not answer (it is in slurm.conf)")
    for batch in rollout.batches(targets, batch_size):
        for minion, (ok, changed, failures) in _apply_states(
            batch, "slurm.node", timeout, sls_id="slurm-hardware-in-mine"
        ).items():
            nodes[minion].update(prepare=ok, changed=changed, failures=failures)
            step(
                f"{minion}: prepared (packages, accounts, hardware in mine)"
                if ok
                else f"{minion}: prepare FAILED: {'; '.join(failures)[:300]}"
            )
    rendered = render_conf(pillar_minion=pillar_minion)
    if rendered.get("result") is False:
        raise SaltRunnerError(f"render_conf: {rendered['error']}")
    step(
        f"slurm.conf rendered: {rendered['nodes']} nodes, {rendered['node_lines']} "
        f"NodeName lines, change {rendered['class']}"
    )
    for warning in rendered["warnings"]:
        step(f"WARNING: {warning}")
    ctl_status = _returns(minions, [controller], "slurm_node.status")[controller]
    running = bool(ctl_status and ctl_status["daemons"].get("slurmctld"))
    floor, _, stopped = _unfinished(jrnl, say=False)
    conf_files = cluster_files.read_conf_files(_files_dir())
    if running:
        # every node of the new conf that already runs slurmd (not only this run's targets),
        # and those an interrupted rollout stopped
        live = {}
        by_minion = {m: n for n, m in _node_minions(cfg, conf_files["slurm.conf"]).items()}
        statuses = _returns(minions, list(by_minion), "slurm_node.status")
        for minion, status_ in statuses.items():
            if (
                minion in by_minion
                and status_
                and (status_["daemons"].get("slurmd") or minion in stopped)
            ):
                live[by_minion[minion]] = minion
        # only the controller here: a stale or drifted slurmd is the node state's to fix
        # below, and a rollout now would stop at the very node that state is about to heal
        stale, _ = rollout.stale_floor(
            controller, {controller: ctl_status}, (jrnl.applied() or {}).get("files")
        )
        if {rendered["class"], floor, stale} != {"none"}:
            step(f"rolling the change out to the running cluster ({len(live)} nodes)")
            report = _rollout(cfg, live, conf_files, batch_size, min(timeout, 120), jrnl, entry)
            summary["rollout"] = report
            if report["result"] is False:
                # slurmd is running again where the rollout stopped it; the states below
                # may heal the node it stopped at, and the next deploy finishes the rollout
                step(f"rollout FAILED: {report['comment']}")
    ok, changed, failures = _apply_states([controller], "slurm.controller", timeout)[controller]
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
        for minion, (ok, changed, failures) in _apply_states(batch, "slurm.node", timeout).items():
            nodes[minion].update(
                state=ok, changed=nodes[minion]["changed"] + changed, failures=failures
            )
            step(
                f"{minion}: ok ({changed} changed)"
                if ok
                else f"{minion}: FAILED: {'; '.join(failures)[:300]}"
            )
    checked = _verify(pillar_minion, 60)
    summary["verify"] = {
        "result": checked.get("result"),
        "failed": checked.get("failed", checked.get("error")),
    }
    bad = sorted(m for m, n in nodes.items() if not (n["prepare"] and n["state"]))
    bad += summary.get("unreachable", [])
    rolled = summary.get("rollout", {}).get("result") is not False
    summary["result"] = bool(checked.get("result")) and not bad and rolled
    summary["seconds"] = round(time.monotonic() - started, 1)
    summary["comment"] = (
        f"{len(targets)} nodes deployed and verified in {summary['seconds']} s"
        if summary["result"]
        else ("" if rolled else "rollout failed (run slurm.deploy again to finish it); ")
        + f"failed nodes: {', '.join(bad) or 'none'}; "
        f"verify: {checked.get('comment') or checked.get('error')}"
    )
    if summary["result"] and floor != "none":
        # the node states started whatever the interrupted run had left stopped
        jrnl.resolve_interrupted("finished by slurm.deploy")
    step(summary["comment"])
    return summary


def _deploy_table(summary):
    lines = [f"{'MINION':<12} {'PREPARE':<8} {'STATE':<6} {'CHANGED':<8} FAILURES"]
    verify_failed = summary.get("verify", {}).get("failed") or {}
    for minion, node in summary["nodes"].items():
        mark = {True: "ok", False: "FAILED", None: "-"}
        failures = "; ".join(node["failures"])[:120]
        lines.append(
            f"{minion:<12} {mark[node['prepare']]:<8} {mark[node['state']]:<6} "
            f"{node['changed']:<8} {failures}"
        )
    for minion in summary.get("unreachable", []):
        lines.append(f"{minion:<12} {'FAILED':<8} {'-':<6} {'-':<8} minion does not answer")
    if isinstance(verify_failed, dict):
        for node, checks in verify_failed.items():
            lines.append(f"verify {node}: " + "; ".join(f"{k}: {v}" for k, v in checks.items()))
    lines.append(summary["comment"])
    return "\n".join(lines)


@_errors_as_result
def diagnose(nodes=None, pillar_minion=None, timeout=30):
    """
    Name the cause, with evidence lines and the fix, for every node that is down*,
    drained, unknown or not responding, or whose machine shows a fault (daemon stopped,
    key or slurm.conf different from the controller's, unreachable minion, hardware in
    the mine but no NodeName line). Causes recognised: minion unreachable, munged not
    running, munge key mismatch, slurmd not running, hostname differs from NodeName, node
    missing from slurm.conf, slurm.conf differs from the controller's, slurmd cannot reach
    the controller, clock skew, hardware below slurm.conf (Low RealMemory).

    nodes
        Only these nodes (hostlist), healthy or not.

    CLI Example:

    .. code-block:: bash

        salt-run slurm.diagnose
        salt-run slurm.diagnose nodes='n[3-4]' --out=json
    """
    cfg = _cluster_settings(pillar_minion)
    controller, node_minions = _cluster(cfg)
    conf_nodes = set(node_minions)
    hardware = _mine_hardware(cfg["node_target"], cfg["node_target_type"])
    for minion, data in hardware.items():
        if isinstance(data, dict) and data.get("NodeName") not in conf_nodes:
            node_minions[data["NodeName"]] = minion  # provisioned, but not in slurm.conf
    if nodes:
        wanted = set(_hostlist_arg("nodes", nodes))
        unknown = wanted - set(node_minions)
        if unknown:
            raise SaltRunnerError(
                f"nodes: {', '.join(sorted(unknown))} neither in slurm.conf nor in the mine"
            )
        node_minions = {n: m for n, m in node_minions.items() if n in wanted}
    minions = _Minions(__opts__)
    targets = list(dict.fromkeys([controller, *node_minions.values()]))
    _progress(f"probing {len(targets)} machines")
    probes = _returns(minions, targets, "slurm_node.probe", [], timeout)
    ctl = probes.get(controller)
    if ctl is None:
        raise SaltRunnerError(
            f"the controller's minion {controller} does not answer; start there: is salt-minion "
            "running, and slurmctld (salt-run slurm.status)?"
        )
    states = _returns(minions, [controller], "slurm_node.cluster_nodes")[controller] or {}
    reachable = [m for m in node_minions.values() if clusterops.munge_answers(probes.get(m))]
    _, decoded = _munge_to_controller(minions, controller, node_minions, reachable, timeout)
    report = {}
    for node, minion in node_minions.items():
        causes = diagnosis.node_causes(
            node, minion, probes.get(minion), ctl, states.get(node), conf_nodes, decoded.get(node)
        )
        if causes or diagnosis.needs_look(states.get(node)) or nodes:
            report[node] = {
                "minion": minion,
                "state": (states.get(node) or {}).get("raw_state"),
                "causes": causes,
            }
    faulty = [n for n, entry in report.items() if entry["causes"]]
    _progress(f"{len(faulty)} of {len(node_minions)} nodes with a fault")
    if _human():
        text = diagnosis.format_report(report)
        return text if not faulty else {"result": False, "report": text}
    return {"result": not faulty, "nodes": report}


@_errors_as_result
def add_node(minion, batch_size=10, timeout=300, pillar_minion=None):
    """
    Add a machine (matched by ``slurm:node_target``) to the cluster: packages, key and
    hardware on it, slurm.conf re-rendered, the running cluster restarted in Slurm's order
    for the new node definition, then ``slurm.node`` on it and a cluster-wide verify.

    CLI Example:

    .. code-block:: bash

        salt-run slurm.add_node n5
    """
    result = deploy(
        batch_size=batch_size, timeout=timeout, pillar_minion=pillar_minion, only=[minion]
    )
    return result


REMOVE_REASON = "being removed (slurm.remove_node)"


def _forget_hardware(minion):
    """Drop ``slurm_node.hardware`` from ``minion``'s mine data on the master (works when
    the machine itself is gone)."""
    cache = salt.cache.factory(__opts__)
    # the master keeps mine data in bank "mine", one key per minion (masterapi._mine_delete)
    data = cache.fetch("mine", minion) or {}
    if isinstance(data, dict) and "slurm_node.hardware" in data:
        data.pop("slurm_node.hardware")
        cache.store("mine", minion, data)


@_errors_as_result
def remove_node(node, timeout=600, reason=REMOVE_REASON, pillar_minion=None):
    """
    Take a node out of the cluster without killing jobs: drain it, wait for its running
    jobs to finish (up to ``timeout`` seconds; on timeout nothing else changes and the node
    stays drained), drop it from the mine and slurm.conf, roll the new conf out in Slurm's
    order, then ``slurm.absent`` on the machine (skipped if it does not answer).

    CLI Example:

    .. code-block:: bash

        salt-run slurm.remove_node n4 timeout=3600
    """
    timeout = _positive_arg("timeout", timeout)
    with _journal().operation("remove_node"):
        return _remove_node(node, timeout, reason, pillar_minion)


def _remove_node(node, timeout, reason, pillar_minion):
    cfg = _cluster_settings(pillar_minion)
    controller, node_minions = _cluster(cfg)
    if node not in node_minions:
        raise SaltRunnerError(f"node: {node} is not a NodeName in the master's slurm.conf")
    minion = node_minions[node]
    drained = _set_node_state(node, "DRAIN", reason, pillar_minion)
    _progress(f"{node} drained ({drained['nodes'][node]['state']}); waiting for its jobs")
    minions = _Minions(__opts__)
    deadline = time.monotonic() + float(timeout)
    while True:
        jobs = _returns(minions, [controller], "slurm_node.node_jobs", [node])[controller]
        if jobs == []:
            break
        if time.monotonic() > deadline:
            return {
                "result": False,
                "comment": f"{node} still runs jobs {', '.join(jobs or ['?'])} after {timeout} s; "
                "it stays drained. Run again with a longer timeout, or scancel them.",
            }
        time.sleep(2)
    stranded = _returns(minions, [controller], "slurm_node.node_jobs", [node, True])[controller]
    _progress(
        f"{node} has no running jobs; removing it from slurm.conf"
        + (
            f" (pending jobs {', '.join(stranded)} ask for it by name and cannot start after)"
            if stranded
            else ""
        )
    )
    _forget_hardware(minion)
    rendered = render_conf(pillar_minion=pillar_minion)
    if rendered.get("result") is False:
        raise SaltRunnerError(f"render_conf: {rendered['error']}")
    applied = apply_conf(timeout=120, pillar_minion=pillar_minion)
    if applied.get("result") is not True:
        return {
            "result": False,
            "comment": f"apply_conf failed: {applied.get('comment')}",
            "apply_conf": applied,
        }
    absent = _apply_states([minion], "slurm.absent", 300)[minion]
    _progress(f"{node} removed" + ("" if absent[0] else f" (slurm.absent: {absent[2]})"))
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


class _MasterKeys:
    """The master's side of a rotation: ``munge.key`` and, until verified, the previous
    key beside it (``munge.key.previous``, 0400). Hashes only leave this class."""

    def __init__(self, directory):
        self.path = os.path.join(directory, cluster_files.MUNGE_KEY)
        self.previous = self.path + ".previous"

    def current_hash(self):
        try:
            return munge_lib.key_hash(self.path)
        except FileNotFoundError as err:
            raise SaltRunnerError(
                f"the master has no munge key ({self.path}); `salt-run slurm.deploy` creates one"
            ) from err

    def begin(self):
        with open(self.path, "rb") as handle:
            fsutil.atomic_write(self.previous, handle.read(), mode=0o400)
        fsutil.atomic_write(self.path, munge_lib.new_key(), mode=0o400)
        __salt__["fileserver.update"]()
        return munge_lib.key_hash(self.path)

    def restore(self):
        os.replace(self.previous, self.path)
        fsutil.fsync_dir(os.path.dirname(self.path))
        __salt__["fileserver.update"]()
        return munge_lib.key_hash(self.path)

    def commit(self):
        os.unlink(self.previous)


@_errors_as_result
def rotate_munge_key(batch_size=10, timeout=120, test=False, pillar_minion=None):
    """
    Replace the cluster's munge key with a new random one while running jobs keep running.

    Every machine must answer and hold the master's current key first (else nothing
    changes). The new key is made on the master (never printed), staged on every machine,
    then swapped in and munged restarted on all machines in one parallel call; slurmd and
    slurmctld keep running, and so do jobs. Every node must register again, then
    ``slurm.verify`` must pass; only then is the old key (kept meanwhile as
    ``munge.key.previous`` on the master) deleted. Any failure after the new key was made
    puts the old key back the same way and exits non-zero, naming the nodes and evidence.
    Output carries ``sha256:`` fingerprints only.

    Needs ``slurm:munge_key:source: salt`` (with ``pillar``, change the pillar and apply
    ``slurm.node`` instead).

    batch_size
        Nodes waited for (and restarted if needed) at a time after the swap.
    timeout
        Seconds a node may take to register again.
    test
        Only check that the cluster is ready for a rotation; change nothing.

    CLI Example:

    .. code-block:: bash

        salt-run slurm.rotate_munge_key
        salt-run slurm.rotate_munge_key test=True
    """
    cfg = _cluster_settings(pillar_minion)
    if cfg["munge_key"]["source"] != "salt":
        raise SaltRunnerError(
            "slurm:munge_key:source is 'pillar': this runner only rotates the key it serves "
            f"itself; put a new base64 key under the pillar key "
            f"'{cfg['munge_key']['pillar_key']}' and apply slurm.node and slurm.controller"
        )
    controller, node_minions = _cluster(cfg)
    keys = _MasterKeys(_files_dir())
    if test:
        return _rotate(controller, node_minions, keys, batch_size, timeout, pillar_minion, True)
    jrnl = _journal()
    with jrnl.operation("rotate_munge_key") as entry:
        jrnl.record(entry, "rotation started")
        return _rotate(controller, node_minions, keys, batch_size, timeout, pillar_minion)


def _rotate(controller, node_minions, keys, batch_size, timeout, pillar_minion, test=False):
    if os.path.exists(keys.previous):
        raise SaltRunnerError(
            f"{keys.previous} exists: an earlier rotation did not finish. Check the cluster "
            "with `salt-run slurm.verify`; if it passes on the current key, delete that file "
            "and rotate again"
        )
    report = keyrotation.KeyRotation(
        _Minions(__opts__),
        controller,
        node_minions,
        keys,
        verify=lambda: _verify(pillar_minion, 60),
        batch_size=batch_size,
        timeout=timeout,
        progress=_progress,
    ).run(test=bool(test))
    return report
