"""
munge on this machine: credentials (make one here, decode it there), the local round trip,
and the key's rotation steps (stage the master's new key beside the live one, swap it in
and restart munged, or discard it).

The key's content never leaves this module: functions return its SHA-256 only.
"""

import os

from salt.exceptions import CommandExecutionError, SaltInvocationError

from salt_ext.lib.node import munge as munge_lib
from salt_ext.lib.util import command, fsutil
from salt_ext.modules import _minion_plan as minion_plan

__virtualname__ = "munge"


def __virtual__():
    return __virtualname__


def encode(payload="", socket=None):
    """
    Return a munge credential for ``payload`` from this machine's munged.

    payload
        String to embed in the credential (default empty).
    socket
        munged socket path, when not the default.

    CLI Example:

    .. code-block:: bash

        salt 'node*' munge.encode payload=hello
    """
    try:
        return munge_lib.encode(str(payload), socket=socket)
    except command.CommandFailed as err:
        raise CommandExecutionError(str(err)) from err


def decode(credential, socket=None):
    """
    Decode a munge credential made on any node with this machine's munged.

    Returns unmunge's metadata (``status``, ``encode_host``, ``uid``, ``gid``, ``payload``)
    and ``ok``: ``False`` with ``error`` when the credential does not decode (for example
    ``Invalid credential`` when the nodes' keys differ).

    credential
        The credential string printed by ``munge.encode`` / ``munge -n``.

    CLI Example:

    .. code-block:: bash

        salt ctl munge.decode "$(salt --out=newline_values_only node1 munge.encode)"
    """
    if not credential or not str(credential).startswith("MUNGE:"):
        raise CommandExecutionError("credential must be a munge credential ('MUNGE:...')")
    try:
        return munge_lib.decode(str(credential).strip(), socket=socket)
    except command.CommandFailed as err:
        raise CommandExecutionError(str(err)) from err


def decode_all(credentials, socket=None):
    """
    Decode several credentials at once: ``{label: credential}`` -> ``{label: decode result}``.
    ``slurm.verify`` sends every node's credential to the controller in one call.

    CLI Example:

    .. code-block:: bash

        salt ctl munge.decode_all '{"n1": "MUNGE:...", "n2": "MUNGE:..."}'
    """
    if not isinstance(credentials, dict):
        raise CommandExecutionError("credentials must be a mapping of label -> credential")
    result = {}
    for label, credential in credentials.items():
        try:
            result[label] = decode(credential, socket=socket)
        except CommandExecutionError as err:
            result[label] = {"ok": False, "error": str(err)}
    return result


def key_hash(path=munge_lib.DEFAULT_KEY_PATH):
    """
    Return ``sha256:<hex>`` of this machine's munge key (never the key itself).

    path
        Key file (default ``/etc/munge/munge.key``).

    CLI Example:

    .. code-block:: bash

        salt '*' munge.key_hash
    """
    try:
        return munge_lib.key_hash(path)
    except OSError as err:
        raise CommandExecutionError(str(err)) from err


def _plan(role="node"):
    return minion_plan.plan(__pillar__, __grains__, role, minion_plan.machine(__grains__, __salt__))


def roundtrip():
    """
    Encode and decode a credential with the local munged (``munge -n | unmunge``).

    CLI Example:

    .. code-block:: bash

        salt node1 munge.roundtrip
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
    owner = minion_plan.account("munge")
    if owner is None:
        raise CommandExecutionError("account 'munge' does not exist; apply slurm.node first")
    return plan, owner


def stage_key(expected_hash):
    """
    Download the cluster's (new) munge key from the master and put it beside the live key,
    0400 munge:munge, without touching the live key or munged. ``slurm.rotate_munge_key``
    stages on every machine before it swaps anywhere. Refuses a key whose hash is not
    ``expected_hash``. Returns hashes only.

    CLI Example:

    .. code-block:: bash

        salt 'n*' munge.stage_key sha256:0f3a...
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
        munge_lib.write_key(staged, key, uid, gid)
    except OSError as err:
        raise CommandExecutionError(f"could not stage the munge key at {staged}: {err}") from err
    return {"staged": got}


def activate_key(expected_hash):
    """
    Swap the staged munge key in (one atomic rename) and restart munged, then prove it with
    a local munge round trip. Does nothing when the live key already has ``expected_hash``
    (munged is restarted only if it does not run). Returns hashes only.

    CLI Example:

    .. code-block:: bash

        salt 'n*' munge.activate_key sha256:0f3a...
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
                "run munge.stage_key first"
            )
        os.replace(staged, path)
        fsutil.fsync_dir(os.path.dirname(path))
        swapped = True
    elif os.path.exists(staged):
        os.unlink(staged)
    manager = plan["service_manager"]
    if swapped or not __salt__["slurm_node.daemon_running"]("munge", manager, plan["slurm_conf"]):
        __salt__["slurm_node.daemon_control"](
            "munge", "restart" if swapped else "start", manager, plan["slurm_conf"]
        )
    local = roundtrip()
    if not local["ok"]:
        raise CommandExecutionError(
            f"munged with key {expected_hash}: local round trip failed: {local['error']}"
        )
    return {"key_hash": expected_hash, "swapped": swapped, "previous": live}


def discard_staged_key():
    """
    Remove a staged munge key (an aborted rotation). The live key is not touched.

    CLI Example:

    .. code-block:: bash

        salt '*' munge.discard_staged_key
    """
    staged = munge_lib.staged_path(_plan("node")["munge_key_path"])
    try:
        os.unlink(staged)
    except FileNotFoundError:
        return False
    return True
