"""The master's record of cluster-changing operations: one lock and one journal.

Why: a runner is a process that can die anywhere (the admin's ssh drops, the master is
killed, the OOM killer picks it). Files pushed before a daemon restart look "applied" on
disk while the daemons still run the old config, and slurmd stopped for a ``restart_all``
stays stopped. So, as dpkg and apt do:

- **Lock.** Every operation that changes the cluster (deploy, apply_conf, rollback_conf,
  add/remove_node, rotate_munge_key, render_conf when it writes) holds one ``flock`` on
  the master for its whole run. A second one is refused at once, naming the holder
  (operation, pid, host, since when). The kernel drops the lock when the holder dies, so a
  dead holder never blocks anyone; a hung one is named so the admin can end it. Nested
  calls in one process (deploy -> apply_conf) share the lock.
- **Journal.** The operation writes where it is *before* each step that changes
  something (atomically, 0600). A finished operation is moved to the history. An entry
  still marked running when the lock is free belongs to a run that died: the next
  mutating operation reads it and finishes the job first (``interrupted()``); for a
  rollout that means the same change class again and starting slurmd wherever it was
  stopped.
- **Applied.** After a rollout converged, the journal records which file hashes the
  daemons loaded. Together with each daemon's start time against its file's mtime this
  answers "does the cluster run what the master serves" without trusting files on disk.

No Salt imports: the runner passes the directory (the master's cachedir) and the clock.
"""

import contextlib
import fcntl
import json
import os
import socket
import threading
import time

from salt_ext.lib.util import fsutil

HISTORY = 20
_local = threading.local()


class LockBusy(RuntimeError):
    """Another operation holds the cluster lock; ``holder`` says which."""

    def __init__(self, holder, now):
        self.holder = holder or {}
        since = self.holder.get("started")
        age = f", {int(now - since)} s ago" if isinstance(since, (int, float)) else ""
        when = (
            time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(since))
            if isinstance(since, (int, float))
            else "an unknown time"
        )
        super().__init__(
            f"slurm.{self.holder.get('operation', '?')} is running (pid "
            f"{self.holder.get('pid', '?')} on {self.holder.get('host', '?')}, since {when}{age}); "
            "wait for it to finish. If that process is hung, end it: the next operation "
            "finishes its work"
        )


def _read_json(path):
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        # a torn or hand-edited journal must not block every operation: treat as empty,
        # the level-triggered checks (daemon start vs file time) still catch stale daemons
        return None
    return data if isinstance(data, dict) else None


class Journal:
    """Lock and journal under ``directory`` (created 0700)."""

    def __init__(self, directory, clock=time.time):
        self.directory = directory
        self.clock = clock
        self.lock_path = os.path.join(directory, "operation.lock")
        self.path = os.path.join(directory, "journal.json")

    # ------------------------------------------------------------------ lock
    def _held(self):
        held = getattr(_local, "held", None)
        if held is None:
            held = _local.held = {}
        return held

    @contextlib.contextmanager
    def operation(self, name, history=True, **data):
        """Hold the cluster lock and a journal entry for ``name``; nested calls in this
        thread join the outer operation. Raises :class:`LockBusy`. ``history=False``: a
        short operation that keeps its own record (``slurm.heal``, see autopilot.py)
        leaves no entry in the history when it ends (a busy autopilot would push the
        admin's operations out of it)."""
        held = self._held()
        if self.lock_path in held:
            held[self.lock_path]["depth"] += 1
            try:
                yield held[self.lock_path]["entry"]
            finally:
                held[self.lock_path]["depth"] -= 1
            return
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise LockBusy(self._current(), self.clock()) from None
            entry = self._begin(name, data)
            if not history:
                entry["no_history"] = True
            held[self.lock_path] = {"depth": 1, "entry": entry}
            try:
                yield entry
            except BaseException as err:
                # an error before anything changed is a plain failure; after a change
                # (``dirty``) the entry stays "running": what the step did is unknown, so
                # the next operation treats it as interrupted and finishes it
                if not entry.get("dirty"):
                    self._finish(entry, f"failed: {type(err).__name__}: {err}"[:500])
                raise
            else:
                self._finish(entry)
            finally:
                del held[self.lock_path]
        finally:
            os.close(fd)  # releases the flock

    # ------------------------------------------------------------------ journal
    def _load(self):
        return _read_json(self.path) or {}

    def _save(self, data):
        fsutil.atomic_write(self.path, json.dumps(data, indent=1, sort_keys=True) + "\n", 0o600)

    def _current(self):
        current = self._load().get("current")
        return current if isinstance(current, dict) else None

    def _begin(self, name, data):
        journal = self._load()
        previous = journal.get("current")
        if isinstance(previous, dict) and previous.get("state") == "running":
            # the holder died; keep its entry for interrupted() until it is resolved
            previous["state"] = "interrupted"
            journal["interrupted"] = [*self._interrupted(journal), previous][-HISTORY:]
        entry = {
            "operation": name,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": self.clock(),
            "state": "running",
            "steps": [],
            **data,
        }
        journal["current"] = entry
        self._save(journal)
        return entry

    def record(self, entry, step=None, **data):
        """Write ``step`` (a short text) and/or fields into the running ``entry``; the
        journal on disk says it before the caller acts on it."""
        if step:
            entry["steps"].append({"at": self.clock(), "step": step})
            del entry["steps"][:-50]
        entry.update(data)
        journal = self._load()
        journal["current"] = entry
        self._save(journal)

    def _finish(self, entry, state="done"):
        entry["finished"] = self.clock()
        journal = self._load()
        journal["current"] = None
        entry["state"] = state
        if not entry.get("no_history"):
            journal["history"] = ([entry] + list(journal.get("history") or []))[:HISTORY]
        self._save(journal)

    @staticmethod
    def _interrupted(journal):
        entries = journal.get("interrupted")
        return [e for e in entries if isinstance(e, dict)] if isinstance(entries, list) else []

    def interrupted(self):
        """Entries of operations that died after changing something, oldest first (call
        it while holding the lock); empty when there are none."""
        return self._interrupted(self._load())

    def unfinished(self):
        """:meth:`interrupted` for a read-only look (diagnose, a token) without the lock:
        also the current entry when it still says running while nobody holds the lock
        (its holder died; the next operation will mark it interrupted)."""
        journal = self._load()
        entries = self._interrupted(journal)
        current = journal.get("current")
        if isinstance(current, dict) and current.get("state") == "running" and not self._busy():
            entries.append(current)
        return entries

    def _busy(self):
        """Whether a live process holds the lock (taken and dropped at once when free)."""
        if self.lock_path in self._held():
            return True
        try:
            fd = os.open(self.lock_path, os.O_RDWR)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        else:
            fcntl.flock(fd, fcntl.LOCK_UN)
            return False
        finally:
            os.close(fd)

    def resolve_interrupted(self, how, operation=None):
        """The interrupted operations (only those named ``operation``, when given) were
        finished by the current one: into history."""
        journal = self._load()
        entries = self._interrupted(journal)
        if operation is not None:
            journal["interrupted"] = [e for e in entries if e.get("operation") != operation]
            entries = [e for e in entries if e.get("operation") == operation]
        else:
            journal["interrupted"] = []
        if not entries:
            return
        for entry in entries:
            entry["resolved"] = {"at": self.clock(), "how": how}
        journal["history"] = (entries[::-1] + list(journal.get("history") or []))[:HISTORY]
        self._save(journal)

    def tracker(self, entry):
        """What a rollout (``rollout.Rollout(tracker=…)``) records into ``entry``."""
        return _EntryTracker(self, entry)

    def set_applied(self, files):
        """The daemons run ``files`` (``{name: "sha256:…" or None}``) as of now."""
        journal = self._load()
        journal["applied"] = {"files": dict(files), "at": self.clock()}
        self._save(journal)

    def applied(self):
        """``{"files": {...}, "at": t}`` of the last converged rollout, or None."""
        applied = self._load().get("applied")
        return applied if isinstance(applied, dict) else None

    def history(self):
        """Finished operations, newest first, with the current/interrupted one on top."""
        journal = self._load()
        top = [journal["current"]] if isinstance(journal.get("current"), dict) else []
        return top + self._interrupted(journal)[::-1] + list(journal.get("history") or [])


class _EntryTracker:
    """A rollout's view of the running operation's journal entry."""

    def __init__(self, jrnl, entry):
        self.journal = jrnl
        self.entry = entry

    def record(self, step=None, **data):
        self.journal.record(self.entry, step, **data)

    def set_applied(self, files):
        self.journal.set_applied(files)
