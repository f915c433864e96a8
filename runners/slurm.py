"""
Cluster-wide Slurm operations, run on the master with ``salt-run slurm.<function>``.
"""

import logging
import os

from salt.exceptions import SaltRunnerError

from salt_ext.lib import cluster_files, fsutil, wheel
from salt_ext.lib import munge as munge_lib

log = logging.getLogger(__name__)

__virtualname__ = "slurm"


def __virtual__():
    return __virtualname__


def _files_dir():
    try:
        return cluster_files.files_dir(__opts__)
    except cluster_files.FilesDirError as err:
        raise SaltRunnerError(str(err)) from err


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
