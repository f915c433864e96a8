"""Helpers for reading real state runs and Slurm output in integration tests."""

import base64
import fcntl
import os
import subprocess
import termios
import threading
import time
import uuid

import salt.utils.event

from tests.testbed import bed


def state_results(ret):
    """``{state id: result dict}`` of one minion's state.apply return; fails on render errors."""
    assert isinstance(ret, dict), f"state run did not render: {ret}"
    return {chunk["__id__"]: chunk for chunk in ret.values()}


def changed(ret):
    return {sid: r["changes"] for sid, r in state_results(ret).items() if r["changes"]}


def failed(ret):
    return {sid: r["comment"] for sid, r in state_results(ret).items() if r["result"] is False}


def sinfo_nodes(cluster, node="ctl"):
    """``{node: state}`` from ``sinfo -N`` run on the controller."""
    proc = cluster.run(node, ["sinfo", "-h", "-N", "-o", "%N %t"])
    assert proc.returncode == 0, proc.stderr
    return dict(line.split() for line in proc.stdout.splitlines() if line.strip())


def wait_for(predicate, timeout=60, interval=1.0):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def apply(cluster, target, sls, timeout=300, tgt_type="glob", **kwargs):
    """``state.apply SLS`` on ``target``; returns ``{minion: return}``."""
    return cluster.salt(target, "state.apply", [sls], timeout=timeout, tgt_type=tgt_type, **kwargs)


def salt_run(cluster, fun, cli_timeout=600, **kwargs):
    """``salt-run --out=json FUN key=value...`` on the bed's master.

    Returns ``(return value, CompletedProcess)``; progress lines printed before the JSON
    document are skipped.
    """
    args = [f"{key}={value}" for key, value in kwargs.items()]
    proc = cluster.cli(["salt-run", "--out=json", fun, *args], timeout=cli_timeout)
    return json_output(proc.stdout, (fun, proc.returncode, proc.stderr)), proc


def json_output(stdout, context=None):
    """The JSON document of ``salt-run --out=json`` output (progress lines before it are
    skipped); ``context`` goes into the assertion message when there is none."""
    try:
        return bed.json_output(stdout)
    except ValueError:
        raise AssertionError((context, stdout)) from None


def job_info(cluster, job_id):
    """``scontrol show job JOB_ID`` on the controller."""
    return cluster.run("ctl", ["scontrol", "show", "job", job_id]).stdout


def running_job(cluster, *options, wrap, timeout=30):
    """Submit ``wrap`` as a batch job from the controller (output discarded) and wait until
    it runs; returns its id."""
    argv = ["sbatch", "--parsable", "-o", "/dev/null", "--chdir=/tmp", *options, "--wrap", wrap]
    proc = cluster.run("ctl", argv)
    assert proc.returncode == 0, proc.stderr
    job_id = proc.stdout.strip().split(";")[0]
    assert wait_for(lambda: "JobState=RUNNING" in job_info(cluster, job_id), timeout), job_info(
        cluster, job_id
    )
    return job_id


def held_job(cluster, *options, steps=False, limit=300, timeout=30):
    """A batch job (from the controller) that runs until the test releases it, so the test
    waits for what it means (the job finished) instead of the length of a ``sleep``.

    Returns ``(job id, release)``; ``release()`` creates the file the job (or, with
    ``steps``, each of its ``srun`` steps) polls for. Never released, it exits 1 after
    ``limit`` seconds: ``ExitCode=0:0`` proves it ran until the release."""
    flag = cluster.root / f"release-job-{uuid.uuid4().hex[:12]}"
    poll = f"for i in $(seq {limit * 5}); do [ -e {flag} ] && exit 0; sleep 0.2; done; exit 1"
    job_id = running_job(
        cluster, *options, wrap=f"srun sh -c '{poll}'" if steps else poll, timeout=timeout
    )
    return job_id, flag.touch


def cluster_healthy(cluster):
    """``salt-run slurm.status`` says every node is healthy (reachable, munged and slurmd
    up and answering, same conf and key as the controller, usable) and sinfo shows every
    compute node idle: the cheap check after a targeted repair."""
    data, proc = salt_run(cluster, "slurm.status")
    rows = {row["node"]: row for row in data.get("nodes", [])}
    return (
        proc.returncode == 0
        and data.get("result") is True
        and sinfo_nodes(cluster) == dict.fromkeys(rows, "idle")
        and bool(rows)
    )


class BusLog:
    """Every event on the master bus while the module runs (re-subscribes after a restart)."""

    def __init__(self, opts):
        self.opts = opts
        self.events = []
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.reconnect = threading.Event()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        self.ready.wait(20)

    def _run(self):
        while not self.stop.is_set():
            self.reconnect.clear()
            bus = salt.utils.event.get_master_event(self.opts, self.opts["sock_dir"], listen=True)
            try:
                bus.subscribe("")
                self.ready.set()
                while not self.stop.is_set() and not self.reconnect.is_set():
                    event = bus.get_event(wait=0.5, full=True, auto_reconnect=True)
                    if event:
                        with self.lock:
                            self.events.append(event)
            except Exception:  # noqa: BLE001 - the master restarted; subscribe again
                time.sleep(0.5)
            finally:
                bus.destroy()

    def resubscribe(self, timeout=30):
        """After a master restart: subscribe again and prove it with a probe event."""
        self.ready.clear()
        self.reconnect.set()
        assert self.ready.wait(timeout)
        tag = f"test/keyvault/probe/{time.monotonic_ns()}"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with salt.utils.event.get_master_event(
                self.opts, self.opts["sock_dir"], listen=False
            ) as bus:
                bus.fire_event({}, tag)
            time.sleep(0.5)
            if any(e["tag"] == tag for e in self.snapshot()):
                return
        raise AssertionError("event listener did not come back after the master restart")

    def snapshot(self):
        with self.lock:
            return list(self.events)


def spellings(secret):
    """The forms a leaked secret (str or bytes) may take in a text: as is, hex, base64 (also
    URL-safe, and at other byte offsets inside a longer text)."""
    raw = secret if isinstance(secret, bytes) else secret.encode()
    forms = {
        raw.hex(),
        raw.hex().upper(),
        base64.b64encode(raw).decode().rstrip("="),
        base64.urlsafe_b64encode(raw).decode().rstrip("="),
        base64.b64encode(b"x" + raw).decode()[4:-4],
        base64.b64encode(b"xy" + raw).decode()[4:-4],
    }
    if not isinstance(secret, bytes):
        forms.add(secret)
    return {f for f in forms if f}


def leaks(text, secret):
    """The spellings of ``secret`` found in ``text`` (sorted; empty when none)."""
    return sorted(form for form in spellings(secret) if form in text)


def salt_run_on_a_terminal(cluster, *args, timeout=300):
    """``salt-run ARGS`` as an admin runs it: a (pseudo-)terminal as its controlling terminal,
    stdout and stderr as pipes. Returns ``(terminal text, stdout, stderr, returncode)``."""
    argv = [cluster.bin("salt-run"), "-c", str(cluster.master_conf_dir), *args]
    env = {**os.environ, "PATH": f"{cluster.venv / 'bin'}:/usr/sbin:/usr/bin:/sbin:/bin"}
    master_fd, slave_fd = os.openpty()
    chunks = []

    def read_terminal():
        while True:
            try:
                data = os.read(master_fd, 65536)
            except OSError:  # EIO: every holder of the terminal closed it
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=read_terminal, daemon=True)
    reader.start()
    try:
        proc = subprocess.Popen(  # noqa: S603 - argument list, no shell
            argv,
            stdin=slave_fd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            cwd="/",
            start_new_session=True,
            # the new session's controlling terminal: what /dev/tty opens in salt-run
            preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0),  # noqa: PLW1509
        )
    finally:
        os.close(slave_fd)
    out, err = proc.communicate(timeout=timeout)
    reader.join(10)
    os.close(master_fd)
    text = b"".join(chunks).decode(errors="replace").replace("\r\n", "\n")
    return text, out.decode(errors="replace"), err.decode(errors="replace"), proc.returncode
