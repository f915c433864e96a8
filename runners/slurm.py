"""
Cluster-wide Slurm operations, run on the master with ``salt-run slurm.<function>``.

This module translates: arguments in (checked, one line naming a bad one), results out
(a text table for an admin at the terminal, data otherwise; ``retcode`` 1 on any
failure). What the operations do lives in ``salt_ext.lib.ops``; this module gives it Salt
behind its ports: :class:`SaltMinions` (LocalClient) and :class:`SaltMaster` (file server,
mine, pillar).
"""

import logging
import math
import os
import sys
import time

import salt.cache
import salt.client
import salt.fileserver
import salt.key
import salt.utils.minions
from salt.exceptions import SaltRunnerError

from salt_ext import runner_support
from salt_ext.lib.conf import cluster_files, hostlist
from salt_ext.lib.node import restd as restd_lib
from salt_ext.lib.node import settings
from salt_ext.lib.ops import (
    OpError,
    autopilot,
    conf,
    context,
    diagnosis,
    extension_wheel,
    health,
    journal,
    keys,
    ports,
    views,
)
from salt_ext.lib.ops import deploy as deploy_op
from salt_ext.lib.ops import nodes as node_ops
from salt_ext.lib.ops import restd as restd_ops
from salt_ext.lib.ops.nodes import REMOVE_REASON
from salt_ext.lib.util import fsutil

log = logging.getLogger(__name__)

__virtualname__ = "slurm"


def __virtual__():
    return __virtualname__


_errors_as_result = runner_support.errors_as_result("slurm", journal.LockBusy, OpError)


# ---------------------------------------------------------------------- the ports
class SaltMinions:
    """The operations layer's minions port over Salt's LocalClient: failures as data."""

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
                error = ports.minion_error(ret.get("ret"))
                result[target] = {"ok": False, "ret": ret.get("ret"), "error": error}
            else:
                result[target] = {"ok": True, "ret": ret.get("ret"), "error": None}
        return result

    def apply_state(self, targets, sls, timeout, sls_id=None, report=()):
        with salt.client.LocalClient(mopts=self.opts) as client:
            if sls_id:
                returns = client.cmd(
                    targets, "state.sls_id", [sls_id, sls], tgt_type="list", timeout=timeout
                )
            else:
                returns = client.cmd(
                    targets, "state.apply", [sls], tgt_type="list", timeout=timeout
                )
        result = {}
        for target in targets:
            ret = returns.get(target)
            if ret is None:
                result[target] = (False, 0, ["no return (minion down?)"])
                if report:
                    result[target] += ({},)
                continue
            failures = _state_failures(ret)
            changed = (
                sum(1 for c in ret.values() if isinstance(c, dict) and c.get("changes"))
                if isinstance(ret, dict)
                else 0
            )
            result[target] = (not failures, changed, failures)
            if report:
                result[target] += (_state_reports(ret, report),)
        return result

    def ping(self, tgt, tgt_type="list", wait=context.PING_WAIT, timeout=30):
        """One test.ping round that ends as soon as every targeted minion answered, or
        ``wait`` s after it began and 1 s after the last answer (see the ops docstring)."""
        answered = []
        with salt.client.LocalClient(mopts=self.opts) as client:
            pub = client.run_job(tgt, "test.ping", tgt_type=tgt_type, timeout=timeout)
            expected = set((pub or {}).get("minions") or [])
            if not expected:
                return [], []
            started = last = time.monotonic()
            for ret in client.get_iter_returns(
                pub["jid"],
                set(expected),
                timeout=timeout,
                tgt=tgt,
                tgt_type=tgt_type,
                block=False,
                gather_job_timeout=1,
            ):
                now = time.monotonic()
                for minion, data in (ret or {}).items():
                    if isinstance(data, dict) and data.get("ret") is True and minion in expected:
                        answered.append(minion)
                        last = now
                if set(answered) >= expected:
                    break
                if now - started > timeout or (now - started > wait and now - last > 1.0):
                    break
                time.sleep(0.02)
        silent = sorted(expected - set(answered))
        return sorted(set(answered)), silent


def _state_reports(ret, ids):
    """``{state ID: {"result", "comment", "changes"}}`` of the chunks named in ``ids``."""
    if not isinstance(ret, dict):
        return {}
    return {
        chunk["__id__"]: {k: chunk.get(k) for k in ("result", "comment", "changes")}
        for chunk in ret.values()
        if isinstance(chunk, dict) and chunk.get("__id__") in ids
    }


def _state_failures(ret):
    """Failed state comments of one state.apply return (a render error counts as one)."""
    if not isinstance(ret, dict):
        return [" ".join(map(str, ret)) if isinstance(ret, list) else str(ret)]
    return [
        f"{chunk.get('__id__', sid)}: {chunk.get('comment')}"
        for sid, chunk in ret.items()
        if isinstance(chunk, dict) and chunk.get("result") is False
    ]


class SaltMaster:
    """The operations layer's master port: file server, mine."""

    def __init__(self, opts, functions):
        self.opts = opts
        self.functions = functions

    def files_dir(self):
        try:
            return cluster_files.files_dir(self.opts)
        except cluster_files.FilesDirError as err:
            raise OpError(str(err)) from err

    def files_changed(self):
        # new or removed files must be visible to cp.list_master on the minions now: the
        # master answers file lists from a cache up to fileserver_list_cache_time (20 s) old,
        # which fileserver.update does not drop
        self.functions["fileserver.update"]()
        self.functions["fileserver.clear_file_list_cache"]()

    def read_salt_file(self, url):
        found = salt.fileserver.Fileserver(self.opts).find_file(url[len("salt://") :], "base")
        path = found.get("path")
        if not path:
            raise OpError(f"slurm:conf:base: {url} not found on the master's file server")
        with open(path, encoding="utf-8") as handle:
            return handle.read()

    def mine_hardware(self, target="*", tgt_type="glob"):
        # what Salt's mine.get runner does, with its MasterMinion destroyed afterwards (the
        # runner leaves it to the garbage collector: an "unclosed MasterMinion" warning each)
        with runner_support.remote_funcs(self.opts) as funcs:
            load = {"id": self.opts["id"], "fun": "slurm_node.hardware", "tgt": target}
            return funcs._mine_get({**load, "tgt_type": tgt_type}, skip_verify=True) or {}

    def minion_grains(self, minion):
        # the master's minion data cache (minion_data_cache, on by default)
        try:
            return salt.cache.factory(self.opts).fetch("grains", minion) or {}
        except Exception as err:  # noqa: BLE001 - a cache backend's own errors
            log.warning("no cached grains for %s: %s", minion, err)
            return {}

    def publish_extension(self):
        out_dir = os.path.join(self.files_dir(), extension_wheel.WHEEL_DIR)
        path, version = extension_wheel.build(out_dir)
        for name in os.listdir(out_dir):
            if name.endswith(".whl") and name != os.path.basename(path):
                os.unlink(os.path.join(out_dir, name))
        # the minions' next cp.list_master must see the new wheel, not a cached file list
        self.files_changed()
        log.info("published saltext-slurm %s as %s", version, path)
        return {
            "version": version,
            "path": path,
            "url": cluster_files.salt_url(f"{extension_wheel.WHEEL_DIR}/{os.path.basename(path)}"),
            "sha256": fsutil.sha256_file(path),
        }

    def forget_hardware(self, minion):
        # Salt's own runner: drops the one mine function from the master's cache
        __salt__["cache.clear_mine_func"](
            tgt=minion, tgt_type="list", clear_mine_func_flag="slurm_node.hardware"
        )


def _pillar_of(minion):
    """The minion's pillar as the master compiles it (Salt's ``pillar.show_pillar``);
    None for a minion the master has no data of."""
    minion_id, _, _ = salt.utils.minions.get_minion_data(minion, __opts__)
    if minion_id is None:
        return None
    return __salt__["pillar.show_pillar"](minion_id)


def _accepted_minions():
    with salt.key.get_key(__opts__) as keyring:
        return sorted(keyring.list_keys().get("minions", []))


def _cluster_settings(master, pillar_minion=None):
    """Validated ``slurm:`` pillar as the controller sees it.

    The pillar is compiled for ``pillar_minion`` if given; otherwise for a minion that has
    hardware in the mine, and then again for the controller it names (its view wins).
    """
    if pillar_minion:
        candidates = [pillar_minion]
    else:
        # minions with hardware in the mine run slurm.node; before any did, any accepted
        # minion that has the slurm pillar will do (the controller's view is taken below)
        candidates = sorted(master.mine_hardware()) or _accepted_minions()[:20]
    pillar = None
    for minion in candidates:
        pillar = _pillar_of(minion)
        if pillar and pillar.get("slurm"):
            break
    if not pillar or not pillar.get("slurm"):
        raise OpError(
            "no slurm: pillar found"
            + (f" for minion {pillar_minion}" if pillar_minion else " for any minion in the mine")
            + "; assign the slurm pillar (pillar/slurm.sls.example) and apply slurm.node, "
            "or pass pillar_minion=<controller id>"
        )
    try:
        cfg = settings.validate(pillar["slurm"])
    except settings.SettingsError as err:
        raise OpError(f"bad slurm pillar: {err}") from err
    if not pillar_minion and cfg["controller"] not in candidates:
        controller_pillar = _pillar_of(cfg["controller"])
        if controller_pillar and controller_pillar.get("slurm"):
            try:
                cfg = settings.validate(controller_pillar["slurm"])
            except settings.SettingsError as err:
                raise OpError(f"bad slurm pillar of {cfg['controller']}: {err}") from err
    _check_dbd_pillar(cfg)
    return cfg


def _check_dbd_pillar(cfg):
    """With accounting on, the dbd host's own pillar must hold the DB password (it may be
    the only minion that gets it): checked here, before any operation changes anything."""
    acct = cfg["accounting"]
    if not acct["enabled"]:
        return
    pillar = _pillar_of(acct["host"])
    try:
        settings.require_password(
            settings.validate((pillar or {}).get("slurm") or {"controller": cfg["controller"]})
        )
    except settings.SettingsError as err:
        raise OpError(f"bad slurm pillar of {acct['host']}: {err}") from err


def _progress(message):
    """A line of progress: on stderr for the admin watching ``salt-run`` (stdout stays the
    result, so ``--out=json`` parses), in the master log, and on the master's event bus
    under the job's own runner tag ``salt/run/<jid>/progress`` (beside Salt's ``new`` and
    ``ret`` events of the same job, for salt-api clients following one job) and as
    ``salt/slurm/progress`` carrying the ``jid`` (one tag for reactors following every
    operation). Not through ``__jid_event__``: ``salt-run`` prints those events on stdout."""
    log.info("slurm: %s", message)
    print(f"[slurm {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)
    jid = runner_support.current_jid()
    data = {"message": message, "jid": jid}
    # one line of many: a bus that is down is worth a debug line, not a warning per step
    if jid:
        runner_support.fire_master_event(
            __opts__, f"salt/run/{jid}/progress", data, level=logging.DEBUG
        )
    runner_support.fire_master_event(__opts__, "salt/slurm/progress", data, level=logging.DEBUG)


def _ctx(pillar_minion=None):
    """The operations' context for this runner call (the pillar is compiled once, lazily)."""
    master = SaltMaster(__opts__, __salt__)
    return context.Context(
        SaltMinions(__opts__),
        master,
        lambda: _cluster_settings(master, pillar_minion),
        journal.Journal(os.path.join(__opts__["cachedir"], "slurm")),
        progress=_progress,
    )


# ---------------------------------------------------------------------- arguments
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


def _human():
    """True for an admin at ``salt-run`` without ``--out``: they get a text table."""
    return __opts__.get("__cli") == "salt-run" and not __opts__.get("output")


def _table(result, text):
    """At the terminal the table; a failure keeps ``result: False`` so the exit code is 1."""
    if not _human():
        return result
    return text if result["result"] else {"result": False, "report": text}


# ---------------------------------------------------------------------- master files
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
    result = _ctx().master_keys().create(force=bool(force))
    if result["created"]:
        log.info("created munge key %s (%s)", result["path"], result["key_hash"])
    return result


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
    return SaltMaster(__opts__, __salt__).publish_extension()


# ---------------------------------------------------------------------- slurm.conf
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
    result = conf.render(_ctx(pillar_minion), dry=bool(test or dry_run))
    for warning in result["warnings"]:
        log.warning("slurm.render_conf: %s", warning)
    return result


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
    return conf.apply(_ctx(pillar_minion), batch_size, timeout, test=bool(test))


@_errors_as_result
def conf_history():
    """
    Previous versions of the rendered files kept for ``slurm.rollback_conf``, newest first.

    CLI Example:

    .. code-block:: bash

        salt-run slurm.conf_history
    """
    return conf.history(_ctx())


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
    batch_size = _positive_arg("batch_size", batch_size)
    timeout = _positive_arg("timeout", timeout)
    return conf.rollback(_ctx(pillar_minion), version, bool(apply), batch_size, timeout)


# ---------------------------------------------------------------------- day 2
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
    ctx = _ctx(pillar_minion)
    result = health.status(ctx)
    autopilot.annotate(result["nodes"], _autopilot_store(), time.time(), autopilot.policy(ctx.cfg))
    return _table(result, views.format_table(result["nodes"], result.pop("title")))


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
    timeout = _positive_arg("timeout", timeout)
    result = health.verify(_ctx(pillar_minion), timeout)
    return _table(result, views.format_verify(result["nodes"], result["comment"]))


@_errors_as_result
def drain(nodes=None, reason=None, pillar_minion=None):
    """
    Drain nodes: running jobs finish, no new ones start. ``reason`` is required (Slurm
    shows it in ``sinfo -R``).

    CLI Example:

    .. code-block:: bash

        salt-run slurm.drain 'n[1-2]' reason='BIOS update'
    """
    names = _hostlist_arg("nodes", nodes)
    return node_ops.set_state(_ctx(pillar_minion), names, "DRAIN", reason)


@_errors_as_result
def resume(nodes=None, reason=None, pillar_minion=None):
    """
    Return drained (or down) nodes to service.

    CLI Example:

    .. code-block:: bash

        salt-run slurm.resume 'n[1-2]'
    """
    names = _hostlist_arg("nodes", nodes)
    return node_ops.set_state(_ctx(pillar_minion), names, "RESUME", reason)


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
    summary = deploy_op.deploy(_ctx(pillar_minion), batch_size, timeout, only)
    return _table(summary, _deploy_table(summary))


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
    wanted = _hostlist_arg("nodes", nodes) if nodes else None
    timeout = _positive_arg("timeout", timeout)
    report = health.diagnose(_ctx(pillar_minion), wanted, timeout)
    text = diagnosis.format_report(report["nodes"])
    if report.get("accounting"):
        acct = report["accounting"]
        text += "\n" + diagnosis.format_report(
            {
                f"accounting ({acct['host']})": {
                    "minion": acct["host"],
                    "state": None,
                    "causes": acct["causes"],
                }
            }
        )
    if report.get("restd"):
        rest = report["restd"]
        text += "\n" + diagnosis.format_report(
            {
                f"REST API ({rest['host']})": {
                    "minion": rest["host"],
                    "state": None,
                    "causes": rest["causes"],
                }
            }
        )
    return _table(report, text)


@_errors_as_result
def add_node(minion, batch_size=10, timeout=300, pillar_minion=None):
    """
    Add machines (matched by ``slurm:node_target``) to the cluster: the extension if the
    minion has only salt-minion, packages, key and hardware on them, slurm.conf re-rendered,
    the running cluster restarted once in Slurm's order for the new node definitions, then
    ``slurm.node`` on them and a cluster-wide verify.

    minion
        One minion id, or a hostlist of them (``n[5-8]``, ``n5,gpu1``): one rollout for all.

    CLI Example:

    .. code-block:: bash

        salt-run slurm.add_node n5
        salt-run slurm.add_node 'n[5-8]'
    """
    return deploy(
        batch_size=batch_size,
        timeout=timeout,
        pillar_minion=pillar_minion,
        only=_hostlist_arg("minion", minion),
    )


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
    return node_ops.remove(_ctx(pillar_minion), str(node), timeout, reason)


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
    batch_size = _positive_arg("batch_size", batch_size)
    timeout = _positive_arg("timeout", timeout)
    return keys.rotate(_ctx(pillar_minion), batch_size, timeout, test=bool(test))


# ---------------------------------------------------------------------- autopilot
def _autopilot_store():
    return autopilot.Store(os.path.join(__opts__["cachedir"], "slurm"), time)


def _fire(tag, data):
    runner_support.fire_master_event(__opts__, tag, data)


@_errors_as_result
def heal(node=None, cause=None, pillar_minion=None):
    """
    The autopilot's fix for one node (the reactor runs it on a ``slurm`` beacon event; an
    admin may run it too). Re-checks the node with ``slurm.diagnose`` (the controller: its
    daemons and files against the master's) and applies the smallest fix: restart munged,
    slurmd or slurmctld, or re-sync the munge key or slurm.conf through ``slurm.node``'s
    own states; then resumes the node only if Slurm itself set it down for a reason the fix
    removed (never an admin's drain). Does nothing while another operation holds the
    cluster lock, at most one heal per node every few seconds, and at most
    ``slurm:autopilot:max_tries`` fixes per node in ``window`` seconds: one more and the
    node is drained with reason ``autopilot gave up: <cause>`` and left alone until an
    admin resumes it. Each decision is logged (``slurm.autopilot_log``) and sent as
    ``salt/slurm/autopilot/<node>/<action>``. Exits 1 when the node still has a fault.

    node
        The node's name or minion id (or the controller's).
    cause
        What the beacon saw (comma-separated cause names): a hint, checked, never trusted.

    CLI Example:

    .. code-block:: bash

        salt-run slurm.heal node=n2
    """
    if node is None or str(node).strip() == "":
        raise SaltRunnerError("node: give the node's name or minion id")
    result = autopilot.heal(_ctx(pillar_minion), _autopilot_store(), str(node), cause, _fire)
    log.info("slurm.heal %s: %s: %s", result["node"], result["action"], result["comment"])
    return result


@_errors_as_result
def autopilot_log(node=None, limit=50):
    """
    What the autopilot did, oldest first: per event the node, the cause, the action (fix,
    give_up, skip, none), the fixes run with their outcome, whether the node was resumed
    or drained. Repeated identical "did nothing" entries are counted, not repeated.

    node
        Only this node's entries.
    limit
        The last this many entries (0: all that are kept, up to 500).

    CLI Example:

    .. code-block:: bash

        salt-run slurm.autopilot_log
        salt-run slurm.autopilot_log node=n2 --out=json
    """
    try:
        limit = int(limit)
    except (TypeError, ValueError):
        raise SaltRunnerError(f"limit: a whole number, got {limit!r}") from None
    if limit < 0:
        raise SaltRunnerError(f"limit: a whole number, got {limit!r}")
    entries = _autopilot_store().log(str(node) if node else None, limit)
    result = {"result": True, "entries": entries}

    def when(stamp):
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp))

    return _table(result, autopilot.format_log(entries, when))


# ---------------------------------------------------------------------- REST API (JWT)
@_errors_as_result
def token(user=None, lifespan=restd_lib.DEFAULT_LIFESPAN, to_tty=None, pillar_minion=None):
    """
    A JSON Web Token for Slurm's REST API (slurmrestd) as ``user``, valid ``lifespan``
    seconds: the ``X-SLURM-USER-TOKEN`` header, with ``X-SLURM-USER-NAME: <user>``.

    The token is signed on the master with the cluster's JWT key (HS256, the claims
    ``scontrol token`` makes: ``iat``, ``exp``, ``sun``), so no minion makes it and no job
    return (which the master's job cache keeps) holds it. In ``salt-run`` it goes to the
    terminal (``/dev/tty``) only and the return says ``<token: printed on the terminal>``:
    Salt logs runner returns at debug, keeps them in the job cache and publishes them as
    ``salt/run/<jid>/ret``. ``to_tty=False`` returns it (and puts it in all of those).

    user
        The Slurm user the token speaks for (a login name on the cluster).
    lifespan
        Seconds the token stays valid (default 1800, at most 604800).

    CLI Example:

    .. code-block:: bash

        salt-run slurm.token user=alice lifespan=3600
    """
    if user is None:
        raise SaltRunnerError("user: give the Slurm user the token is for (user=alice)")
    asked = runner_support.bool_arg("to_tty", to_tty)
    in_salt_run = __opts__.get("__cli") == "salt-run"
    tty = (
        runner_support.open_tty(asked, "the token")
        if (in_salt_run if asked is None else asked)
        else None
    )
    try:
        made = restd_ops.token(_ctx(pillar_minion), str(user), lifespan)
    except BaseException:
        if tty is not None:
            os.close(tty)
        raise
    expires = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(made["expires"]))
    log.info("slurm: issued a REST API token for %s, expires %s", made["user"], expires)
    result = {"result": True, "user": made["user"], "expires": expires, "token": made["token"]}
    if tty is None:
        return result
    try:
        os.write(tty, f"token: {made['token']}\n".encode())
    finally:
        os.close(tty)
    result["token"] = "<token: printed on the terminal>"  # noqa: S105 - a placeholder
    return result


@_errors_as_result
def rotate_jwt_key(timeout=120, pillar_minion=None):
    """
    Replace the cluster's JWT key: a new random key on the master (never printed),
    delivered to the controller and the dbd host (0600 slurm), slurmdbd restarted (it reads
    the key only at start; SIGHUP does not reload it), slurmctld restarted (``scontrol
    reconfigure`` does not reload the key in 22.05), slurmrestd
    restarted, then every host must hold the new key and one REST call with a token of it
    must answer. Every token made before is refused afterwards. Until that proof the old
    key stays on the master (``jwt_hs256.key.previous``, 0600); any failure before it puts
    the old key back on the master and every host, restarts what was restarted, proves a
    token of the old key works and exits 1 ("rolled back"); a failed rollback is reported
    with each host's key hash and the command to run. A run that died is finished by the
    next one. Holds the cluster lock. Output shows ``sha256:`` fingerprints only.

    CLI Example:

    .. code-block:: bash

        salt-run slurm.rotate_jwt_key
    """
    timeout = _positive_arg("timeout", timeout)
    return restd_ops.rotate(_ctx(pillar_minion), timeout)
