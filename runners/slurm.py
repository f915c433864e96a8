"""
Cluster-wide Slurm operations, run on the master with ``salt-run slurm.<function>``.
"""

import functools
import json
import logging
import os
import shutil
import sys
import time

import salt.client
import salt.fileserver
import salt.pillar
import salt.utils.event
import salt.utils.minions
from salt.exceptions import SaltRunnerError

from salt_ext.lib import cluster_files, confgen, fsutil, rollout, settings, slurmconf, wheel
from salt_ext.lib import munge as munge_lib

log = logging.getLogger(__name__)

__virtualname__ = "slurm"


def __virtual__():
    return __virtualname__


def _errors_as_result(func):
    """Runner entry points: a ``SaltRunnerError`` becomes ``{"result": False, "error":
    message}`` instead of Salt's traceback dump, and any ``result: False`` carries
    ``retcode: 1``, which ``salt-run`` turns into its exit status."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            ret = func(*args, **kwargs)
        except SaltRunnerError as err:
            log.error("slurm.%s: %s", func.__name__, err)
            ret = {"result": False, "error": str(err)}
        if isinstance(ret, dict) and ret.get("result") is False:
            ret["retcode"] = 1
        return ret

    return wrapper


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
    try:
        with salt.utils.event.get_master_event(__opts__, __opts__["sock_dir"], listen=False) as bus:
            bus.fire_event({"message": message}, "salt/slurm/progress")
    except Exception as err:  # pylint: disable=broad-except
        log.debug("progress event not sent: %s", err)


def _pillar_of(minion):
    minion_id, grains, _ = salt.utils.minions.get_minion_data(minion, __opts__)
    if minion_id is None:
        return None
    return salt.pillar.Pillar(__opts__, grains or {}, minion_id, "base").compile_pillar()


def _mine_hardware(target="*", tgt_type="glob"):
    return __salt__["mine.get"](target, "slurm_node.hardware", tgt_type) or {}


def _cluster_settings(pillar_minion=None):
    """Validated ``slurm:`` pillar as the controller sees it.

    The pillar is compiled for ``pillar_minion`` if given; otherwise for a minion that has
    hardware in the mine, and then again for the controller it names (its view wins).
    """
    candidates = [pillar_minion] if pillar_minion else sorted(_mine_hardware())
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


def _current_files(directory):
    current = {}
    for name in rollout.CONF_FILES:
        try:
            with open(os.path.join(directory, name), encoding="utf-8") as handle:
                current[name] = handle.read()
        except FileNotFoundError:
            current[name] = None
    return current


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
    reconfigure, restart_slurmd, restart_slurmctld, restart_all) with reasons.
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
    current = _current_files(directory)
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
    }
    if not diff:
        result["comment"] = "the master's files are up to date"
        return result
    if dry:
        result["comment"] = "test run: nothing written"
        return result
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
    cfg = _cluster_settings(pillar_minion)
    new_files = _current_files(_files_dir())
    if new_files["slurm.conf"] is None:
        raise SaltRunnerError("the master has no slurm.conf; run `salt-run slurm.render_conf`")
    try:
        node_minions = _node_minions(cfg, new_files["slurm.conf"])
    except slurmconf.ConfError as err:
        raise SaltRunnerError(f"the master's slurm.conf does not parse: {err}") from err
    report = rollout.Rollout(
        _Minions(__opts__),
        cfg["controller"],
        node_minions,
        new_files,
        batch_size=batch_size,
        timeout=timeout,
        progress=_progress,
        extra_keys=cfg["conf"]["extra_keys"],
    ).run(test=bool(test))
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
        files = _current_files(os.path.join(directory, HISTORY_DIR, version))
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
    directory = _files_dir()
    versions = _history_versions(directory)
    if not versions:
        raise SaltRunnerError("no previous version kept; nothing to roll back to")
    version = str(version) if version else versions[0]
    if version not in versions:
        raise SaltRunnerError(f"no version {version}; kept: {', '.join(versions)}")
    restored = _current_files(os.path.join(directory, HISTORY_DIR, version))
    current = _current_files(directory)
    cfg = _cluster_settings(pillar_minion)
    _save_history(directory, current, cfg["conf"]["history"], f"rollback to {version}")
    _write_files(directory, restored, current)
    _progress(f"restored version {version} on the master")
    if not apply:
        return {"restored": version, "applied": False}
    report = apply_conf(batch_size=batch_size, timeout=timeout, pillar_minion=pillar_minion)
    report["restored"] = version
    return report
