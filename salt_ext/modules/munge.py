"""
Cross-node munge checks: make a credential here, decode it there.

The key's content never leaves this module: :func:`key_hash` returns its SHA-256 only.
"""

from salt.exceptions import CommandExecutionError

from salt_ext.lib.node import munge as munge_lib
from salt_ext.lib.util import command

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
