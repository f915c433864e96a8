"""The cluster files the master serves (``salt://slurm_files/``): the rendered conf files
with their history, and the munge key. One writer for each, used by every operation."""

import json
import os
import shutil
import time

from salt_ext.lib.conf import cluster_files
from salt_ext.lib.node import munge as munge_lib
from salt_ext.lib.node import restd as restd_lib
from salt_ext.lib.ops import OpError
from salt_ext.lib.util import fsutil

HISTORY_DIR = ".history"


class ConfStore:
    """The rendered files in ``directory`` and the versions they replaced
    (``.history/<stamp>/``). ``changed`` tells the file server (new/removed files must be
    visible to the minions at once)."""

    def __init__(self, directory, changed=lambda: None, clock=time):
        self.directory = directory
        self.changed = changed
        self.clock = clock

    def read(self, version=None):
        """``{name: text or None}`` of the current files, or of a kept ``version``."""
        if version is None:
            return cluster_files.read_conf_files(self.directory)
        return cluster_files.read_conf_files(os.path.join(self.directory, HISTORY_DIR, version))

    def versions(self):
        """Kept versions, newest first."""
        try:
            names = os.listdir(os.path.join(self.directory, HISTORY_DIR))
        except FileNotFoundError:
            return []
        return sorted((n for n in names if not n.endswith(".tmp")), reverse=True)

    def save_history(self, current, keep, note):
        """Copy ``current`` into a new version (complete or not at all); keep the newest
        ``keep``. Returns the version, or None when there was nothing to keep."""
        if not any(current.values()):
            return None
        history = os.path.join(self.directory, HISTORY_DIR)
        os.makedirs(history, mode=0o755, exist_ok=True)
        now = self.clock.time()
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now)) + f".{time.time_ns() % 10**9:09d}"
        staging = os.path.join(history, stamp + ".tmp")
        os.makedirs(staging, mode=0o755)
        for name, text in current.items():
            if text is not None:
                fsutil.atomic_write(os.path.join(staging, name), text, mode=0o644)
        fsutil.atomic_write(
            os.path.join(staging, "meta.json"), json.dumps({"replaced_by": note}, indent=1) + "\n"
        )
        os.rename(staging, os.path.join(history, stamp))
        for old in self.versions()[keep:]:
            shutil.rmtree(os.path.join(history, old), ignore_errors=True)
        return stamp

    def write(self, files, current):
        """Make the directory hold exactly ``files`` (None: no such file)."""
        os.makedirs(self.directory, mode=0o755, exist_ok=True)
        for name in cluster_files.CONF_FILES:
            path = os.path.join(self.directory, name)
            if files.get(name) is not None:
                if files[name] != current.get(name):
                    fsutil.atomic_write(path, files[name], mode=0o644)
            elif current.get(name) is not None:
                os.unlink(path)
        self.changed()


class _RotatedKey:
    """A secret file on the master that a rotation replaces: during the rotation the key
    it replaced stays beside it (``<name>.previous``, same mode) until the new one is
    proven on the cluster, so a failure -- or a master that died -- can put it back. Only
    ``sha256:`` hashes leave this class."""

    MODE = 0o400

    def __init__(self, directory, name, changed=lambda: None):
        self.directory = directory
        self.path = os.path.join(directory, name)
        self.previous = self.path + ".previous"
        self.changed = changed

    @staticmethod
    def _new_key():
        raise NotImplementedError

    @staticmethod
    def _hash(path):
        raise NotImplementedError

    def previous_hash(self):
        """``sha256:`` of the kept previous key, or None when no rotation is unfinished."""
        try:
            return self._hash(self.previous)
        except FileNotFoundError:
            return None

    def begin(self):
        """Keep the current key as previous, write a new one; the new key's hash. Each
        write is atomic: a master that dies in between holds the same key twice."""
        with open(self.path, "rb") as handle:
            fsutil.atomic_write(self.previous, handle.read(), mode=self.MODE)
        fsutil.atomic_write(self.path, self._new_key(), mode=self.MODE)
        self.changed()
        return self._hash(self.path)

    def restore(self):
        """The previous key back as the current one; its hash."""
        os.replace(self.previous, self.path)
        fsutil.fsync_dir(os.path.dirname(self.path))
        self.changed()
        return self._hash(self.path)

    def commit(self):
        """The rotation is proven: forget the previous key."""
        os.unlink(self.previous)
        fsutil.fsync_dir(os.path.dirname(self.path))


class MasterKeys(_RotatedKey):
    """The master's munge key and, during a rotation, the previous key beside it
    (``munge.key.previous``, 0400). Only ``sha256:`` hashes leave this class."""

    def __init__(self, directory, changed=lambda: None):
        super().__init__(directory, cluster_files.MUNGE_KEY, changed)

    _new_key = staticmethod(munge_lib.new_key)
    _hash = staticmethod(munge_lib.key_hash)

    def create(self, force=False):
        """A new random key unless one exists (or ``force``)."""
        if os.path.exists(self.path) and not force:
            return {
                "created": False,
                "path": self.path,
                "key_hash": munge_lib.key_hash(self.path),
                "comment": "key exists; kept (force=True replaces it)",
            }
        os.makedirs(self.directory, mode=0o755, exist_ok=True)
        fsutil.atomic_write(self.path, munge_lib.new_key(), mode=0o400)
        return {"created": True, "path": self.path, "key_hash": munge_lib.key_hash(self.path)}

    def current_hash(self):
        try:
            return munge_lib.key_hash(self.path)
        except FileNotFoundError as err:
            raise OpError(
                f"the master has no munge key ({self.path}); `salt-run slurm.deploy` creates one"
            ) from err


class JwtKey(_RotatedKey):
    """The cluster's JWT key on the master (``slurm_files/jwt_hs256.key``, 0600): made
    here, served to the controller and the dbd host, used here to sign users' tokens.
    During ``slurm.rotate_jwt_key`` the replaced key stays as ``jwt_hs256.key.previous``
    (0600) until a REST call proves the new one. Only ``sha256:`` hashes leave this class
    (and tokens, through :func:`restd.sign`)."""

    MODE = restd_lib.KEY_MODE

    def __init__(self, directory, changed=lambda: None):
        super().__init__(directory, restd_lib.KEY_NAME, changed)

    _new_key = staticmethod(restd_lib.new_key)
    _hash = staticmethod(restd_lib.key_hash)

    def create(self, force=False):
        """A new random key unless one exists (or ``force``): ``{"created", "key_hash"}``."""
        if os.path.exists(self.path) and not force:
            return {"created": False, "key_hash": restd_lib.key_hash(self.path)}
        os.makedirs(self.directory, mode=0o755, exist_ok=True)
        fsutil.atomic_write(self.path, restd_lib.new_key(), mode=restd_lib.KEY_MODE)
        self.changed()
        return {"created": True, "key_hash": restd_lib.key_hash(self.path)}

    def current_hash(self):
        try:
            return restd_lib.key_hash(self.path)
        except FileNotFoundError:
            return None

    def read(self):
        try:
            return restd_lib.read_key(self.path)
        except FileNotFoundError as err:
            raise OpError(
                f"the master has no JWT key ({self.path}); `salt-run slurm.deploy` with "
                "slurm:restd:enabled creates one"
            ) from err
        except restd_lib.RestdError as err:
            raise OpError(str(err)) from err
