"""munge credentials and key fingerprints, as plain Python (no Salt dunders).

The key itself is never returned or logged: callers get its SHA-256 only.
"""

import base64
import binascii
import hashlib
import os

from salt_ext.lib.util import command, fsutil

# munge's own places (munged's compiled-in defaults, the same on every OS we support)
KEY_DIR = "/etc/munge"
STATE_DIR = "/var/lib/munge"  # also the munge account's home
LOG_DIR = "/var/log/munge"
DEFAULT_KEY_PATH = f"{KEY_DIR}/munge.key"
# munged refuses keys shorter than 32 bytes; `mungekey` makes 1024-bit keys by default.
KEY_BYTES = 128
MIN_KEY_BYTES = 32
KEY_MODE = 0o400
# a rotation puts the next key beside the live one first (same directory, so the swap is
# one atomic rename) and swaps only once every machine holds it
STAGED_PREFIX = ".staged."


class KeySourceError(ValueError):
    """The cluster's key cannot be had from its source; the message says what to do."""


def fetch_key(source, cache_file, pillar_value):
    """Key bytes from ``salt://…`` or ``pillar:<key>``.

    ``cache_file(url)`` downloads a ``salt://`` file and returns the local path (falsy when
    the master has none); the copy is deleted here, so the minion cache keeps no second copy
    of the cluster's root credential. ``pillar_value(key)`` returns the plain pillar value.
    """
    if source.startswith("pillar:"):
        pillar_key = source.split(":", 1)[1]
        value = pillar_value(pillar_key)
        if not value:
            raise KeySourceError(
                f"pillar key '{pillar_key}' holds no munge key for this minion "
                "(slurm:munge_key:source is 'pillar'); deliver it base64-encoded, e.g. "
                "through the file_tree ext_pillar"
            )
        try:
            key = base64.b64decode(str(value).strip(), validate=True)
        except (binascii.Error, ValueError) as err:
            raise KeySourceError(
                f"pillar key '{pillar_key}': munge key is not valid base64"
            ) from err
    else:
        cached = cache_file(source)
        if not cached:
            raise KeySourceError(
                f"{source} not found on the master's file server; create it with "
                "`salt-run slurm.create_munge_key` (or put your cluster's key there, mode 0400)"
            )
        try:
            with open(cached, "rb") as handle:
                key = handle.read()
        finally:
            os.unlink(cached)
    if len(key) < MIN_KEY_BYTES:
        raise KeySourceError(f"{source}: munge key shorter than {MIN_KEY_BYTES} bytes")
    return key


def write_key(path, key, uid, gid):
    """Put key bytes at ``path``, 0400 ``uid``:``gid`` from the first byte, in one atomic
    rename; the directory is created 0700 when missing. The one writer of a munge key: the
    ``slurm_node.munge_key`` state writes the live key with it, a rotation the staged one."""
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    fsutil.atomic_write(path, key, mode=KEY_MODE, uid=uid, gid=gid)


def staged_path(key_path=DEFAULT_KEY_PATH):
    """Where a rotation stages the next key for ``key_path``."""
    directory, name = os.path.split(key_path)
    return os.path.join(directory, STAGED_PREFIX + name)


def key_hash(path=DEFAULT_KEY_PATH):
    """``sha256:<hex>`` of the key at ``path``; ``FileNotFoundError`` when absent."""
    digest = fsutil.sha256_file(path)
    if digest is None:
        raise FileNotFoundError(f"munge key {path} does not exist")
    return f"sha256:{digest}"


def key_hash_bytes(data):
    """``sha256:<hex>`` of key material held in memory."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def new_key():
    """Fresh random key material (bytes)."""
    return os.urandom(KEY_BYTES)


def _socket_args(socket):
    return ["--socket", socket] if socket else []


def encode(payload="", socket=None, timeout=10):
    """Return a munge credential for ``payload`` from the local munged."""
    argv = ["munge", *_socket_args(socket), "--string", payload]
    return command.run(argv, timeout=timeout).stdout.strip()


def decode(credential, socket=None, timeout=10):
    """Decode ``credential`` with the local munged.

    Returns a dict with ``status`` (``Success (0)`` when valid), ``encode_host``, ``uid``,
    ``gid``, ``payload`` and the rest of unmunge's metadata. A credential made with another
    key comes back with a non-success status and ``ok: False`` rather than an exception, so
    callers can report "key mismatch" with the evidence.
    """
    argv = ["unmunge", *_socket_args(socket)]
    proc = command.run(argv, stdin=credential + "\n", timeout=timeout, check=False)
    return parse_unmunge(proc.stdout, proc.stderr, proc.returncode)


def parse_unmunge(stdout, stderr="", returncode=0):
    """Parse ``unmunge`` output: ``KEY: value`` metadata, blank line, payload."""
    meta = {}
    lines = stdout.splitlines()
    body_start = len(lines)
    for index, line in enumerate(lines):
        if not line.strip():
            body_start = index + 1
            break
        key, _, value = line.partition(":")
        meta[key.strip().lower().replace(" ", "_")] = value.strip()
    meta["payload"] = "\n".join(lines[body_start:])
    meta["ok"] = returncode == 0 and meta.get("status", "").startswith("Success")
    if not meta["ok"]:
        meta["error"] = stderr.strip() or meta.get("status", f"unmunge exited {returncode}")
    return meta
