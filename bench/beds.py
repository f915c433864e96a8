"""One home for the test beds the benchmarks bring up: ``with torn_down(bed): bed.up() ...``
takes the bed down when the block ends -- normally, by an exception, and also when the
process gets SIGTERM (``make bench`` killed, a CI job's timeout) or SIGINT (Ctrl-C).

Python runs no ``finally`` when SIGTERM ends it (the default action kills the process),
so the master, the minions and the node namespaces a bench started would stay up. For the
duration of the block SIGTERM and SIGINT raise ``SystemExit(128 + signal)`` instead (a
``BaseException``: a bench's ``except Exception`` that reports and goes on does not catch
it), the ``finally`` takes the bed down, and the process exits with the usual 143/130.
While the bed goes down, further SIGTERM/SIGINT are ignored so a second signal does not
cut the teardown short (SIGKILL still ends it; the next ``up()`` of that bed cleans up).
"""

import contextlib
import signal
import threading

SIGNALS = (signal.SIGTERM, signal.SIGINT)


def _exit(signum, frame):
    raise SystemExit(128 + signum)


@contextlib.contextmanager
def _handlers(handler):
    """``handler`` for :data:`SIGNALS` inside the block (main thread only: Python allows
    signal handlers nowhere else), the previous ones back afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, handler) for sig in SIGNALS}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@contextlib.contextmanager
def torn_down(bed, keep_files=False):
    """Yield ``bed``; afterwards ``bed.down(keep_files=keep_files)``, whatever ended the
    block (SIGTERM and SIGINT included)."""
    with _handlers(_exit):
        try:
            yield bed
        finally:
            with _handlers(signal.SIG_IGN):
                bed.down(keep_files=keep_files)
