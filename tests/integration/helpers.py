"""Helpers for reading real state runs and Slurm output in integration tests."""

import json
import time


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
    lines = proc.stdout.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith(("{", "[", '"'))), None)
    assert start is not None, (fun, proc.returncode, proc.stdout, proc.stderr)
    return json.loads("\n".join(lines[start:])), proc


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
