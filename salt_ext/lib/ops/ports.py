"""The ports of the operations layer (see the package docstring), and the real clock.

The Salt-backed minions and master live in the runner (``runners/slurm.py``); the fakes in
``tests/unit/fakecluster.py``. Both implement exactly these methods.
"""

import time

_UNHANDLED = "The minion function caused an exception"


def minion_error(text):
    """A failed minion call's error as the operations report it: Salt's ``ERROR: `` prefix
    (a ``CommandExecutionError``) dropped, and of an unhandled exception -- for which Salt
    sends the whole traceback -- the exception's own line."""
    text = str(text)
    if text.startswith("ERROR: "):
        text = text[len("ERROR: ") :]
    if text.startswith(_UNHANDLED):
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        if len(lines) > 1:
            return f"exception on the minion: {lines[-1]}"
    return text


class Clock:
    """Wall and monotonic time; tests pass one whose ``sleep`` advances a counter."""

    monotonic = staticmethod(time.monotonic)
    sleep = staticmethod(time.sleep)
    time = staticmethod(time.time)


class Minions:  # pragma: no cover - documents the interface
    """What the operations need from the minions."""

    def call(self, targets, fun, arg=(), timeout=120):
        """``{minion: {"ok": bool, "ret": return, "error": str or None}}`` for every target;
        a minion that did not answer is ``ok: False`` with an error saying so."""
        raise NotImplementedError

    def apply_state(self, targets, sls, timeout, sls_id=None, report=()):
        """``{minion: (ok, changed count, [failure lines])}`` for every target; with
        ``report`` (state IDs) a fourth item ``{state ID: {"result", "comment",
        "changes"}}`` for those of them that ran."""
        raise NotImplementedError

    def ping(self, tgt, tgt_type="list", wait=2.0, timeout=30):
        """One ``test.ping`` round: ``(answered, silent)`` as sorted lists of minion ids.
        Minions still silent ``wait`` seconds after the round started and 1 s after the
        last answer are silent; ``timeout`` bounds the whole round."""
        raise NotImplementedError


class Master:  # pragma: no cover - documents the interface
    """What the operations need from the master itself."""

    def files_dir(self):
        """Directory served as ``salt://slurm_files/`` (raises ``OpError`` when none)."""
        raise NotImplementedError

    def files_changed(self):
        """The file server must see new or removed files now (``fileserver.update``)."""
        raise NotImplementedError

    def read_salt_file(self, url):
        """Text of a ``salt://`` file on the master's file server (``OpError`` if absent)."""
        raise NotImplementedError

    def mine_hardware(self, target="*", tgt_type="glob"):
        """``{minion: slurm_node.hardware data}`` from the mine."""
        raise NotImplementedError

    def minion_grains(self, minion):
        """The grains the master has cached for ``minion`` (``{}`` when none)."""
        raise NotImplementedError

    def forget_hardware(self, minion):
        """Drop ``minion``'s hardware from the mine (works when the machine is gone)."""
        raise NotImplementedError

    def publish_extension(self):
        """Serve a wheel of this extension at ``salt://slurm_files/wheels/`` for minions
        that have only salt-minion (``slurm.bootstrap`` installs it); returns
        ``{"version", "path", "url", "sha256"}``."""
        raise NotImplementedError
