"""
A Slurm node's (or controller's) own view: settings, health, daemon control, verification.

The ``slurm.node`` / ``slurm.controller`` states are built on these functions; admins call
them directly to look at or restart one machine.
"""

import concurrent.futures
import grp
import json
import logging
import os
import pwd
import socket
import time

from salt.exceptions import CommandExecutionError, SaltInvocationError

from salt_ext.lib import (
    cluster_files,
    command,
    confgen,
    daemons,
    fsutil,
    hostlist,
    rollout,
    scontrol,
)
from salt_ext.lib import hardware as hardware_lib
from salt_ext.lib import munge as munge_lib
from salt_ext.lib import settings as settings_lib

__virtualname__ = "slurm_node"

log = logging.getLogger(__name__)

DAEMONS_BY_ROLE = {"node": ("munge", "slurmd"), "controller": ("munge", "slurmctld")}


def __virtual__():
    return __virtualname__


def _account(name):
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        return None
    try:
        gid = grp.getgrnam(name).gr_gid
    except KeyError:
        gid = entry.pw_gid
    return (entry.pw_uid, gid)


def _pid1_name():
    try:
        with open("/proc/1/comm") as handle:
            return handle.read().strip()
    except OSError:
        return None


def _machine():
    return {
        "init_grain": __grains__.get("init"),
        "systemd_booted": os.path.isdir("/run/systemd/system"),
        "pid1_name": _pid1_name(),
        "accounts": {name: _account(name) for name in ("munge", "slurm")},
        "pkg_install_available": "pkg.install" in __salt__,
    }


def settings(role="node"):
    """
    Validate the ``slurm:`` pillar and return this machine's plan for ``role``.

    Raises with the pillar key that is wrong, before anything is changed; the state tree
    renders from this, so bad pillar stops ``state.apply`` at render time.

    role
        ``node`` or ``controller``.

    CLI Example:

    .. code-block:: bash

        salt node1 slurm_node.settings
    """
    if role not in DAEMONS_BY_ROLE:
        raise SaltInvocationError(f"role must be 'node' or 'controller', got {role!r}")
    return _plan(role)


def _plan(role="node"):
    try:
        return settings_lib.plan(__pillar__.get("slurm"), __grains__, role, _machine())
    except settings_lib.SettingsError as err:
        raise CommandExecutionError(f"bad slurm pillar: {err}") from err


def _service_name(daemon, plan):
    return plan["services"]["munge" if daemon == "munge" else daemon]


def daemon_running(daemon, manager=None, conf=None):
    """
    True when ``daemon`` (munge, slurmd, slurmctld) runs under ``manager``.

    CLI Example:

    .. code-block:: bash

        salt node1 slurm_node.daemon_running slurmd
    """
    plan = _plan("controller" if daemon == "slurmctld" else "node")
    manager = manager or plan["service_manager"]
    conf = conf or plan["slurm_conf"]
    if manager == "direct":
        return daemons.pid_of(daemon, conf) is not None
    return bool(__salt__["service.status"](_service_name(daemon, plan)))


def daemon_control(daemon, action, manager=None, conf=None):
    """
    ``start``, ``stop`` or ``restart`` one daemon with the machine's service manager.

    CLI Example:

    .. code-block:: bash

        salt node1 slurm_node.daemon_control slurmd restart
    """
    if action not in ("start", "stop", "restart"):
        raise SaltInvocationError(f"action must be start, stop or restart, got {action!r}")
    if daemon not in daemons.DAEMONS:
        raise SaltInvocationError(
            f"daemon must be one of {', '.join(daemons.DAEMONS)}, got {daemon!r}"
        )
    plan = _plan("controller" if daemon == "slurmctld" else "node")
    manager = manager or plan["service_manager"]
    conf = conf or plan["slurm_conf"]
    if manager == "direct":
        try:
            if action == "stop":
                daemons.stop(daemon, conf)
            else:
                getattr(daemons, action)(daemon, conf)
        except daemons.DaemonError as err:
            raise CommandExecutionError(str(err)) from err
        return True
    service = _service_name(daemon, plan)
    if not __salt__[f"service.{action}"](service):
        raise CommandExecutionError(f"service.{action} {service} failed ({manager})")
    return True


def restart(what="all"):
    """
    Restart munge, slurmd (or slurmctld on the controller), or all of this machine's daemons.

    what
        ``munge``, ``slurmd``, ``slurmctld`` or ``all`` (munge first: Slurm daemons need it).

    CLI Example:

    .. code-block:: bash

        salt node1 slurm_node.restart slurmd
    """
    choices = ("munge", "slurmd", "slurmctld", "all")
    if what not in choices:
        raise SaltInvocationError(f"what must be one of {', '.join(choices)}, got {what!r}")
    if what == "all":
        targets = ["munge"] + [d for d in ("slurmctld", "slurmd") if _installed(d)]
    else:
        targets = [what]
    for daemon in targets:
        daemon_control(daemon, "restart")
    return {"restarted": targets}


def _installed(daemon):
    return __salt__["cmd.which"](daemons.DAEMONS[daemon]["argv"][0]) is not None


def _version(argv):
    try:
        proc = command.run(argv, timeout=10, check=False)
    except command.CommandFailed:
        return None
    text = (proc.stdout or proc.stderr).strip().splitlines()
    return text[0] if text else None


def status():
    """
    This machine's Slurm health: daemons, munge key hash, slurm.conf hash, versions.

    Never returns the key, only ``sha256:…`` of it, so outputs can be compared across nodes.

    CLI Example:

    .. code-block:: bash

        salt 'node*' slurm_node.status
    """
    plan = _plan("node")
    conf = plan["slurm_conf"]
    result = {"service_manager": plan["service_manager"], "daemons": {}}
    for daemon in daemons.DAEMONS:
        if not _installed(daemon):
            continue
        result["daemons"][daemon] = daemon_running(daemon, plan["service_manager"], conf)
    try:
        result["munge_key_hash"] = munge_lib.key_hash(plan["munge_key_path"])
    except FileNotFoundError:
        result["munge_key_hash"] = None
    conf_hash = fsutil.sha256_file(conf)
    result["slurm_conf_hash"] = f"sha256:{conf_hash}" if conf_hash else None
    # files on disk are intent, not proof: did each daemon start after its files changed?
    conf_paths = [os.path.join(plan["conf_dir"], name) for name in cluster_files.CONF_FILES]
    result["loaded"] = {
        daemon: daemons.loaded_conf(daemon, conf_paths, conf)
        for daemon in ("slurmd", "slurmctld")
        if result["daemons"].get(daemon)
    }
    result["accounts"] = {name: _account(name) for name in ("munge", "slurm")}
    result["host"] = __grains__.get("host")
    result["versions"] = {
        "slurm": _version(["slurmd", "-V"]) or _version(["sinfo", "-V"]),
        "munge": _version(["munged", "-V"]),
    }
    return result


def hardware():
    """
    This node's hardware as slurmd will register it, for ``slurm.render_conf``.

    From ``slurmd -C`` (CPUs, Boards, SocketsPerBoard, CoresPerSocket, ThreadsPerCore,
    RealMemory); before slurmd is installed, CPUs and RealMemory from grains. GPUs from
    ``nvidia-smi -L`` or the ``/dev/nvidiaN`` files, with ``autodetect: nvml`` when this
    node's Slurm has the NVML plugin. ``slurm.node`` sends this to the Salt mine.

    CLI Example:

    .. code-block:: bash

        salt node1 slurm_node.hardware
    """
    result = None
    if __salt__["cmd.which"]("slurmd"):
        try:
            proc = command.run(["slurmd", "-C"], timeout=30)
            result = hardware_lib.parse_slurmd_c(proc.stdout)
            result["source"] = "slurmd -C"
        except (command.CommandFailed, hardware_lib.HardwareError) as err:
            log.warning("slurmd -C failed, using grains: %s", err)
    if result is None:
        try:
            result = hardware_lib.from_grains(__grains__)
        except hardware_lib.HardwareError as err:
            raise CommandExecutionError(str(err)) from err
        result["source"] = "grains"
    smi = None
    if __salt__["cmd.which"]("nvidia-smi"):
        try:
            smi = command.run(["nvidia-smi", "-L"], timeout=30).stdout
        except command.CommandFailed as err:
            log.warning("nvidia-smi -L failed, counting /dev/nvidia*: %s", err)
    result["gpus"] = hardware_lib.gpus(
        smi,
        hardware_lib.nvidia_device_files(),
        hardware_lib.autodetect_plugin(hardware_lib.PLUGIN_DIRS),
    )
    result["minion_id"] = __grains__["id"]
    return result


def conf_files():
    """
    This machine's Slurm config files (slurm.conf, gres.conf, cgroup.conf) as text, None
    for an absent file. ``slurm.apply_conf`` compares them with the new version to decide
    between ``scontrol reconfigure`` and restarts.

    CLI Example:

    .. code-block:: bash

        salt ctl slurm_node.conf_files
    """
    return cluster_files.read_conf_files(_plan("node")["conf_dir"])


STAGED_SUFFIX = ".saltext-new"
STAGED_MANIFEST = ".saltext-staged.json"


def sync_conf():
    """
    Fetch the cluster's slurm.conf (and gres.conf / cgroup.conf when the master serves
    them) from ``salt://slurm_files/`` and write each atomically, mode 0644: ``stage_conf``
    then ``commit_conf``. No daemon is touched: ``slurm.apply_conf`` decides whether to
    reconfigure or restart. A gres.conf or cgroup.conf the master no longer serves is
    removed if saltext-slurm wrote it.

    Returns ``{"changed": [names], "hashes": {name: "sha256:..." or None}}``.

    CLI Example:

    .. code-block:: bash

        salt 'n*' slurm_node.sync_conf
    """
    stage_conf()
    return commit_conf()


def stage_conf():
    """
    First half of a push: fetch the master's conf files and write those that differ
    beside the live ones (``<name>.saltext-new``), plus a manifest of what
    ``commit_conf`` will do. Nothing a daemon reads changes. A failure (a full disk, the
    master unreachable) removes what was staged and says so: this machine is unchanged.

    CLI Example:

    .. code-block:: bash

        salt 'n*' slurm_node.stage_conf
    """
    conf_dir = _plan("node")["conf_dir"]
    discard_staged_conf()
    actions, hashes = {}, {}
    try:
        for name in cluster_files.CONF_FILES:
            path = os.path.join(conf_dir, name)
            url = f"{cluster_files.FILES_PREFIX}/{name}"
            # asks the file server directly; cp.list_master may lag behind a new file
            if not __salt__["cp.hash_file"](cluster_files.salt_url(name)):
                if name == "slurm.conf":
                    raise CommandExecutionError(
                        f"the master serves no salt://{url}; run `salt-run slurm.render_conf` first"
                    )
                if _managed_by_us(path):
                    actions[name] = "remove"
                hashes[name] = None
                continue
            text = __salt__["cp.get_file_str"](cluster_files.salt_url(name))
            if text is False or text is None:
                raise CommandExecutionError(f"could not fetch salt://{url} from the master")
            new_hash = fsutil.sha256_bytes(text.encode())
            if fsutil.sha256_file(path) != new_hash:
                os.makedirs(conf_dir, mode=0o755, exist_ok=True)
                fsutil.atomic_write(path + STAGED_SUFFIX, text, mode=0o644, uid=0, gid=0)
                actions[name] = "write"
            hashes[name] = f"sha256:{new_hash}"
        if actions:
            manifest = json.dumps({"actions": actions, "hashes": hashes})
            fsutil.atomic_write(os.path.join(conf_dir, STAGED_MANIFEST), manifest, mode=0o600)
    except OSError as err:
        discard_staged_conf()
        raise CommandExecutionError(
            f"cannot stage the conf files in {conf_dir}: {err.strerror or err}; "
            "nothing changed on this machine"
        ) from err
    except CommandExecutionError:
        discard_staged_conf()
        raise
    return {"staged": sorted(actions), "hashes": hashes}


def commit_conf():
    """
    Second half of a push: put the files ``stage_conf`` staged in place (renames, which
    need no free space) and remove the ones the master stopped serving.

    Returns ``{"changed": [names], "hashes": {name: "sha256:..." or None}}``.

    CLI Example:

    .. code-block:: bash

        salt 'n*' slurm_node.commit_conf
    """
    conf_dir = _plan("node")["conf_dir"]
    manifest_path = os.path.join(conf_dir, STAGED_MANIFEST)
    try:
        with open(manifest_path, encoding="utf-8") as handle:
            manifest = json.load(handle)
    except FileNotFoundError:
        current = cluster_files.read_conf_files(conf_dir)
        return {
            "changed": [],
            "hashes": {
                n: (f"sha256:{fsutil.sha256_bytes(t)}" if t is not None else None)
                for n, t in current.items()
            },
        }
    changed = []
    for name, action in sorted(manifest["actions"].items()):
        if name not in cluster_files.CONF_FILES:
            continue
        path = os.path.join(conf_dir, name)
        if action == "write":
            os.replace(path + STAGED_SUFFIX, path)
        elif os.path.exists(path):
            os.unlink(path)
        changed.append(name)
    os.unlink(manifest_path)
    fsutil.fsync_dir(conf_dir)
    return {"changed": changed, "hashes": manifest["hashes"]}


def discard_staged_conf():
    """
    Remove what ``stage_conf`` staged (the live files stay as they are).

    CLI Example:

    .. code-block:: bash

        salt 'n*' slurm_node.discard_staged_conf
    """
    conf_dir = _plan("node")["conf_dir"]
    removed = []
    for name in [*(n + STAGED_SUFFIX for n in cluster_files.CONF_FILES), STAGED_MANIFEST]:
        path = os.path.join(conf_dir, name)
        if os.path.exists(path):
            os.unlink(path)
            removed.append(name)
    return removed


def _managed_by_us(path):
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read(len(confgen.HEADER)) == confgen.HEADER
    except OSError:
        return False


def reconfigure():
    """
    ``scontrol reconfigure``: slurmctld and every slurmd re-read slurm.conf, no restart.

    CLI Example:

    .. code-block:: bash

        salt ctl slurm_node.reconfigure
    """
    try:
        command.run(["scontrol", "reconfigure"], timeout=60)
    except command.CommandFailed as err:
        raise CommandExecutionError(str(err)) from err
    return True


def controller_up(timeout=60):
    """
    Wait until ``scontrol ping`` reports the primary slurmctld UP.

    Returns ``{"ok": bool, "output": last scontrol ping output, "waited": seconds}``.

    CLI Example:

    .. code-block:: bash

        salt ctl slurm_node.controller_up timeout=30
    """
    started = time.monotonic()
    output = ""
    while True:
        proc = command.run(["scontrol", "ping"], timeout=15, check=False)
        output = (proc.stdout + proc.stderr).strip()
        waited = round(time.monotonic() - started, 1)
        if "is UP" in output:
            return {"ok": True, "output": output, "waited": waited}
        if waited > timeout:
            return {"ok": False, "output": output, "waited": waited}
        time.sleep(1)


def probe(lines=200):
    """
    Evidence for ``slurm.diagnose`` from this node's side: :func:`status` plus the clock,
    whether this hostname is a NodeName in the local slurm.conf, ``scontrol ping`` from
    here (can slurmd's host reach slurmctld?), a local munge round trip, and the telling
    lines of the slurmd and munged logs.

    CLI Example:

    .. code-block:: bash

        salt n1 slurm_node.probe
    """
    result = status()
    plan = _plan("node")
    conf = plan["slurm_conf"]
    result["time"] = time.time()
    result["hostname"] = socket.gethostname().split(".")[0]
    try:
        names = _conf_node_names(conf)
    except (OSError, ValueError):
        names = None
    result["in_local_conf"] = None if names is None else result["hostname"] in names
    try:
        roundtrip = munge_roundtrip()
    except CommandExecutionError as err:
        roundtrip = {"ok": False, "error": str(err)}
    result["munge_roundtrip"] = roundtrip
    ping = (
        command.run(["scontrol", "ping"], timeout=20, check=False)
        if result["slurm_conf_hash"]
        else None
    )
    result["controller_ping"] = (
        None
        if ping is None
        else {"ok": "is UP" in ping.stdout, "output": (ping.stdout + ping.stderr).strip()[-300:]}
    )
    logs = {}
    for label, path in (
        ("slurmd", daemons.spec("slurmd", conf)["log"]),
        ("munged", daemons.DAEMONS["munge"]["log"]),
        ("slurmctld", daemons.spec("slurmctld", conf)["log"]),
    ):
        tail = daemons.log_tail(path, lines)
        if not tail:
            continue
        logs[label] = [line for line in tail if scontrol.is_telling(line)][-8:]
        logs[label + "_last"] = tail[-3:]
    result["logs"] = logs
    return result


def _conf_node_names(conf_path):
    """NodeNames a slurm.conf file defines (hostlists expanded)."""
    with open(conf_path, encoding="utf-8") as handle:
        return set(rollout.conf_nodes(handle.read()))


def cluster_nodes():
    """
    Every node the controller knows, with its state: ``{NodeName: {"state", "flags",
    "reason", "responding", "usable"}}`` (``scontrol show node -o``).

    CLI Example:

    .. code-block:: bash

        salt ctl slurm_node.cluster_nodes
    """
    try:
        proc = command.run(["scontrol", "show", "node", "-o"], timeout=30)
    except command.CommandFailed as err:
        raise CommandExecutionError(str(err)) from err
    return scontrol.node_states(proc.stdout)


def node_jobs(node, pending=False):
    """
    Ids of the jobs running (or completing) on ``node``, as the controller sees them.

    pending
        Instead, the pending jobs that ask for ``node`` by name (``--nodelist``): they can
        never start once the node leaves slurm.conf.

    CLI Example:

    .. code-block:: bash

        salt ctl slurm_node.node_jobs n3
        salt ctl slurm_node.node_jobs n3 pending=True
    """
    if pending:
        argv = ["squeue", "-h", "-t", "PENDING", "-o", "%i|%n"]
    else:
        states = "RUNNING,CONFIGURING,COMPLETING,SUSPENDED"
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

        salt ctl slurm_node.update_nodes 'n[1-2]' DRAIN reason='disk replacement'
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


VERIFY_STEP_MEM = "32M"


def job_steps(nodes, timeout=60):
    """
    Run one real job step on each node (``srun -w NODE -N1 hostname``, 32 MB, so it fits
    beside running jobs), all at once, and report ``{node: {"ok": bool, "output": ...}}``;
    ok means the step ran and printed the node's own hostname.

    CLI Example:

    .. code-block:: bash

        salt ctl slurm_node.job_steps '[n1, n2]'
    """
    if isinstance(nodes, str):
        nodes = [n for n in nodes.split(",") if n]

    def step(node):
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
            # without a memory request the step asks for the node's whole memory (no
            # DefMemPerCPU) and, with CR_Core_Memory, waits until the node has no job at all
            f"--mem={VERIFY_STEP_MEM}",
            "--quit-on-interrupt",
            "hostname",
        ]
        try:
            proc = command.run(argv, timeout=timeout, check=False)
        except command.CommandFailed as err:
            return node, {"ok": False, "output": str(err)}
        output = (proc.stdout.strip() or proc.stderr.strip())[-500:]
        return node, {"ok": proc.returncode == 0 and proc.stdout.strip() == node, "output": output}

    with concurrent.futures.ThreadPoolExecutor(max_workers=min(32, max(1, len(nodes)))) as pool:
        return dict(pool.map(step, nodes))


def munge_roundtrip():
    """
    Encode and decode a credential with the local munged (``munge -n | unmunge``).

    CLI Example:

    .. code-block:: bash

        salt node1 slurm_node.munge_roundtrip
    """
    try:
        decoded = munge_lib.decode(munge_lib.encode("saltext-slurm"))
    except command.CommandFailed as err:
        raise CommandExecutionError(str(err)) from err
    return {"ok": decoded["ok"], "status": decoded.get("status"), "error": decoded.get("error")}


def _key_target(expected_hash):
    plan = _plan("node")
    if plan["munge_key_source"].startswith("pillar:"):
        raise CommandExecutionError(
            "slurm:munge_key:source is 'pillar': the key comes from pillar, which a rotation "
            "cannot change; put the new key in the pillar and apply slurm.node"
        )
    if not (isinstance(expected_hash, str) and expected_hash.startswith("sha256:")):
        raise SaltInvocationError(f"expected_hash: want 'sha256:<hex>', got {expected_hash!r}")
    owner = _account("munge")
    if owner is None:
        raise CommandExecutionError("account 'munge' does not exist; apply slurm.node first")
    return plan, owner


def stage_munge_key(expected_hash):
    """
    Download the cluster's (new) munge key from the master and put it beside the live key,
    0400 munge:munge, without touching the live key or munged. ``slurm.rotate_munge_key``
    stages on every machine before it swaps anywhere. Refuses a key whose hash is not
    ``expected_hash``. Returns hashes only.

    CLI Example:

    .. code-block:: bash

        salt 'n*' slurm_node.stage_munge_key sha256:0f3a...
    """
    plan, (uid, gid) = _key_target(expected_hash)
    try:
        key = munge_lib.fetch_key(plan["munge_key_source"], __salt__["cp.cache_file"], None)
    except munge_lib.KeySourceError as err:
        raise CommandExecutionError(str(err)) from err
    got = munge_lib.key_hash_bytes(key)
    if got != expected_hash:
        raise CommandExecutionError(
            f"the master served munge key {got}, expected {expected_hash} (changed meanwhile?)"
        )
    staged = munge_lib.staged_path(plan["munge_key_path"])
    try:
        fsutil.atomic_write(staged, key, mode=munge_lib.KEY_MODE, uid=uid, gid=gid)
    except OSError as err:
        raise CommandExecutionError(f"could not stage the munge key at {staged}: {err}") from err
    return {"staged": got}


def activate_munge_key(expected_hash):
    """
    Swap the staged munge key in (one atomic rename) and restart munged, then prove it with
    a local munge round trip. Does nothing when the live key already has ``expected_hash``
    (munged is restarted only if it does not run). Returns hashes only.

    CLI Example:

    .. code-block:: bash

        salt 'n*' slurm_node.activate_munge_key sha256:0f3a...
    """
    plan, _ = _key_target(expected_hash)
    path = plan["munge_key_path"]
    staged = munge_lib.staged_path(path)
    try:
        live = munge_lib.key_hash(path)
    except FileNotFoundError:
        live = None
    swapped = False
    if live != expected_hash:
        try:
            ready = munge_lib.key_hash(staged)
        except FileNotFoundError:
            ready = None
        if ready != expected_hash:
            raise CommandExecutionError(
                f"no staged munge key {expected_hash} here (staged: {ready}); "
                "run slurm_node.stage_munge_key first"
            )
        os.replace(staged, path)
        fsutil.fsync_dir(os.path.dirname(path))
        swapped = True
    elif os.path.exists(staged):
        os.unlink(staged)
    manager = plan["service_manager"]
    if swapped or not daemon_running("munge", manager, plan["slurm_conf"]):
        daemon_control("munge", "restart" if swapped else "start", manager, plan["slurm_conf"])
    roundtrip = munge_roundtrip()
    if not roundtrip["ok"]:
        raise CommandExecutionError(
            f"munged with key {expected_hash}: local round trip failed: {roundtrip['error']}"
        )
    return {"key_hash": expected_hash, "swapped": swapped, "previous": live}


def discard_staged_munge_key():
    """
    Remove a staged munge key (an aborted rotation). The live key is not touched.

    CLI Example:

    .. code-block:: bash

        salt '*' slurm_node.discard_staged_munge_key
    """
    staged = munge_lib.staged_path(_plan("node")["munge_key_path"])
    try:
        os.unlink(staged)
    except FileNotFoundError:
        return False
    return True


def node_state(name=None):
    """
    The node's state as the controller sees it (``scontrol show node NAME``).

    Returns ``{"state": "IDLE", "flags": [...], "reason": ..., "responding": bool}``.

    CLI Example:

    .. code-block:: bash

        salt node1 slurm_node.node_state
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
        (daemon, daemons.spec(daemon, plan["slurm_conf"])["log"]),
        ("munged", daemons.DAEMONS["munge"]["log"]),
    ):
        tail = daemons.log_tail(path, 300)
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

        salt node1 slurm_node.wait_registered timeout=30
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
