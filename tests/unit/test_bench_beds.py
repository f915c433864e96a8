"""bench/beds.py: a bench killed by SIGTERM or SIGINT still takes its bed down (a child
process with a fake bed gets the signal; its teardown must have run)."""

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from bench import beds

CHILD = textwrap.dedent(
    """
    import sys, time
    from bench import beds

    class Bed:
        def __init__(self, path):
            self.path = path

        def up(self):
            self.write("up")

        def down(self, keep_files=True):
            self.write(f"down-begin keep_files={keep_files}")
            time.sleep(float(sys.argv[2]))  # a slow teardown: a second signal must not cut it
            self.write("down-end")

        def write(self, line):
            with open(self.path, "a") as handle:
                handle.write(line + "\\n")

    bed = Bed(sys.argv[1])
    try:
        with beds.torn_down(bed, keep_files=False):
            bed.up()
            print("ready", flush=True)
            time.sleep(60)
    except Exception:  # what a bench does to report and go on: must not swallow the signal
        bed.write("swallowed")
    """
)


def start(tmp_path, teardown_seconds=0.0):
    marks = tmp_path / "marks"
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(marks), str(teardown_seconds)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],  # the repository: ``bench`` imports
    )
    assert proc.stdout.readline().strip() == "ready"
    return proc, marks


def lines(path):
    return path.read_text().splitlines() if path.exists() else []


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_takes_the_bed_down_and_the_process_ends(tmp_path, sig, code):
    proc, marks = start(tmp_path)
    proc.send_signal(sig)
    assert proc.wait(timeout=30) == code
    assert lines(marks) == ["up", "down-begin keep_files=False", "down-end"]


def test_a_second_sigterm_does_not_cut_the_teardown_short(tmp_path):
    proc, marks = start(tmp_path, teardown_seconds=1.0)
    proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 10
    while "down-begin keep_files=False" not in lines(marks) and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 143
    assert lines(marks)[-1] == "down-end", lines(marks)


def test_a_normal_end_or_an_error_tears_down_and_restores_the_handlers():
    class Bed:
        downs = []

        def down(self, keep_files=True):
            self.downs.append(keep_files)
            # no signal may cut the teardown short
            assert signal.getsignal(signal.SIGTERM) == signal.SIG_IGN

    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    with beds.torn_down(Bed(), keep_files=True):
        assert signal.getsignal(signal.SIGTERM) is beds._exit  # noqa: SLF001
    with pytest.raises(RuntimeError), beds.torn_down(Bed()):
        raise RuntimeError("bench failed")
    assert Bed.downs == [True, False]
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before
