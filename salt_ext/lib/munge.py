"""munge credentials and key fingerprints, as plain Python (no Salt dunders).

The key itself is never returned or logged: callers get its SHA-256 only.
"""

import hashlib
import os

from salt_ext.lib import command, fsutil

DEFAULT_KEY_PATH = "/etc/munge/munge.key"
# munged refuses keys shorter than 32 bytes; `mungekey` makes 1024-bit keys by default.
KEY_BYTES = 128


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
