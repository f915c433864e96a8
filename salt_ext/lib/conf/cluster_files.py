"""Where the master keeps the cluster's files (munge.key, slurm.conf) on its file server.

Nodes read them as ``salt://<files_prefix>/<name>``; runners write them into the matching
directory of the master's ``file_roots``. One home for that mapping so state and runner agree.
"""

import os

from salt_ext.lib.conf import generate
from salt_ext.lib.util import fsutil

FILES_PREFIX = "slurm_files"
MUNGE_KEY = "munge.key"
SLURM_CONF = "slurm.conf"
# the rendered config files, on the master's file server and in each node's conf dir
CONF_FILES = ("slurm.conf", "gres.conf", "cgroup.conf")


class FilesDirError(ValueError):
    """The master has no place to keep cluster files."""


def files_dir(opts):
    """Directory on the master that serves ``salt://slurm_files/``.

    ``slurm_files_dir`` in the master config wins; otherwise ``<first base file_root>/slurm_files``.
    """
    configured = opts.get("slurm_files_dir")
    if configured:
        return configured
    roots = (opts.get("file_roots") or {}).get("base") or []
    if not roots:
        raise FilesDirError(
            "the master has no file_roots:base entry; set slurm_files_dir in the master config"
        )
    return os.path.join(roots[0], FILES_PREFIX)


def salt_url(name):
    """``salt://`` URL under which nodes read cluster file ``name``."""
    return f"salt://{FILES_PREFIX}/{name}"


def read_conf_files(directory):
    """``{name: text or None}`` for each of :data:`CONF_FILES` in ``directory``."""
    files = {}
    for name in CONF_FILES:
        try:
            with open(os.path.join(directory, name), encoding="utf-8") as handle:
                files[name] = handle.read()
        except FileNotFoundError:
            files[name] = None
    return files


def managed_by_us(path):
    """True when the file at ``path`` was rendered by ``slurm.render_conf`` (its header)."""
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read(len(generate.HEADER)) == generate.HEADER
    except OSError:
        return False


def plan_sync(directory, served):
    """What bringing ``directory`` to the master's conf files takes, without touching it.

    ``served`` is ``{name: text, or None when the master does not serve it}`` for
    :data:`CONF_FILES`. Returns ``{"actions": {name: "write" | "remove"}, "hashes": {name:
    "sha256:..." of the served file or None}, "previous": {name: "sha256:..." of the file
    here or None}}``. A file the master stopped serving is removed only when saltext-slurm
    wrote it (an admin's own cgroup.conf stays).
    """
    actions, hashes, previous = {}, {}, {}
    for name in CONF_FILES:
        path = os.path.join(directory, name)
        local = fsutil.sha256_file(path)
        previous[name] = f"sha256:{local}" if local else None
        text = served.get(name)
        if text is None:
            hashes[name] = None
            if local and managed_by_us(path):
                actions[name] = "remove"
            continue
        new = fsutil.sha256_bytes(text.encode())
        hashes[name] = f"sha256:{new}"
        if local != new:
            actions[name] = "write"
    return {"actions": actions, "hashes": hashes, "previous": previous}
