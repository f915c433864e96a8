"""Where the master keeps the cluster's files (munge.key, slurm.conf) on its file server.

Nodes read them as ``salt://<files_prefix>/<name>``; runners write them into the matching
directory of the master's ``file_roots``. One home for that mapping so state and runner agree.
"""

import os

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
