"""Node health checks: pillar ``slurm:health:``, the checks themselves, and the drain /
resume rule of the program Slurm runs as ``HealthCheckProgram``
(``saltext-slurm-healthcheck``, :func:`main`).

Pillar (validated by :func:`validate`, every error names the key):

.. code-block:: yaml

    slurm:
      health:
        interval: 60          # HealthCheckInterval (seconds)
        node_state: ANY       # HealthCheckNodeState
        program: /usr/local/sbin/saltext-slurm-healthcheck   # HealthCheckProgram
        timeout: 45           # seconds for all checks of one run
        checks:
          - {name: scratch, kind: mount, path: /scratch}
          - {name: tmp-space, kind: free_space, path: /tmp, min_mb: 1024}
          - {name: munge, kind: munge}
          - {name: gpus, kind: gpus}
          - {name: ib, kind: command, argv: [/usr/sbin/ibstat, -s], timeout: 10}

``slurm.node`` writes the checks to :data:`CONFIG_PATH` on each node (JSON, no secret).
The program reads it, runs every check (each within its own ``timeout``, all within the
run's), and acts through ``scontrol``:

* a check fails and the node is not drained by someone else: drain it with reason
  ``health: <check name>: <detail>`` and remember that reason in :data:`RECORD_PATH`;
* every check passes and the node is drained with exactly the reason remembered: resume it.

A drain with any other reason (an admin's, the autopilot's "gave up", Slurm's own) is never
changed or resumed. A check's detail goes into the drain reason, the autopilot's log and
its events: a ``command`` check contributes only its program's name, exit code and the last
line of its output cut to 100 characters; a command that prints a secret must not be a
check. No Salt import: the program runs under slurmd, the beacon and the
``slurm_health`` execution module call the same functions.
"""

import argparse
import json
import os
import re
import shutil
import socket
import sys
import threading
import time

from salt_ext.lib.conf import hardware, hostlist, model
from salt_ext.lib.node import munge as munge_lib
from salt_ext.lib.node import scontrol
from salt_ext.lib.util import command, fsutil

CONFIG_PATH = "/etc/slurm/saltext-health.json"
RECORD_PATH = "/run/saltext-slurm/health-drain"
PROGRAM = "saltext-slurm-healthcheck"
DEFAULT_PROGRAM = f"/usr/local/sbin/{PROGRAM}"
REASON_PREFIX = "health: "
REASON_MAX = 200
KINDS = ("mount", "free_space", "munge", "gpus", "command")
NODE_STATES = ("ANY", "IDLE", "ALLOC", "MIXED", "NONDRAINED_IDLE", "CYCLE")
DEFAULTS = {
    "checks": [],
    "interval": 60,
    "node_state": "ANY",
    "program": DEFAULT_PROGRAM,
    "timeout": 45,
}
CHECK_TIMEOUT = 10  # default seconds per check
MAX_TIMEOUT = 55  # slurmd gives HealthCheckProgram 60 s
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,39}")
_SAFE_PATH = re.compile(r"/[A-Za-z0-9._+@,~=/-]*")


class HealthError(ValueError):
    """Bad ``slurm:health`` pillar; the message names the key."""


# ---------------------------------------------------------------------- validation
def _seconds(value, key, low, high):
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise HealthError(
            f"{key}: expected a whole number of seconds from {low} to {high}, got {value!r}"
        )
    return value


def _path(value, key):
    if not isinstance(value, str) or not _SAFE_PATH.fullmatch(value) or len(value) > 1024:
        raise HealthError(f"{key}: expected an absolute path, got {value!r}")
    return os.path.normpath(value)


def validate(health):
    """``slurm:health`` merged over :data:`DEFAULTS` and checked."""
    if health is None:
        health = {}
    if not isinstance(health, dict):
        raise HealthError(f"slurm:health: expected a mapping, got {type(health).__name__}")
    unknown = sorted(set(health) - set(DEFAULTS))
    if unknown:
        raise HealthError(f"slurm:health:{unknown[0]}: unknown key ({', '.join(DEFAULTS)})")
    cfg = {**DEFAULTS, **health}
    cfg["interval"] = _seconds(cfg["interval"], "slurm:health:interval", 1, 86400)
    cfg["timeout"] = _seconds(cfg["timeout"], "slurm:health:timeout", 1, MAX_TIMEOUT)
    if cfg["node_state"] not in NODE_STATES:
        raise HealthError(
            f"slurm:health:node_state: expected one of {', '.join(NODE_STATES)}, "
            f"got {cfg['node_state']!r}"
        )
    cfg["program"] = _path(cfg["program"], "slurm:health:program")
    checks = cfg["checks"] or []
    if not isinstance(checks, list):
        raise HealthError("slurm:health:checks: expected a list of checks")
    seen = set()
    cfg["checks"] = []
    for index, check in enumerate(checks):
        one = _check(check, index)
        if one["name"] in seen:
            raise HealthError(f"slurm:health:checks:{index}:name: {one['name']!r} is used twice")
        seen.add(one["name"])
        cfg["checks"].append(one)
    return cfg


def _check(check, index):
    key = f"slurm:health:checks:{index}"
    if not isinstance(check, dict):
        raise HealthError(f"{key}: expected a mapping with name and kind")
    name = check.get("name")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise HealthError(
            f"{key}:name: expected letters, digits, '_', '.', '-' (up to 40), got {name!r}"
        )
    key = f"slurm:health:checks:{index} ({name})"
    kind = check.get("kind")
    if kind not in KINDS:
        raise HealthError(f"{key}:kind: expected one of {', '.join(KINDS)}, got {kind!r}")
    allowed = {"name", "kind", "timeout"} | {
        "mount": {"path"},
        "free_space": {"path", "min_mb"},
        "munge": set(),
        "gpus": set(),
        "command": {"argv"},
    }[kind]
    unknown = sorted(set(check) - allowed)
    if unknown:
        raise HealthError(
            f"{key}:{unknown[0]}: not a key of a {kind} check ({', '.join(sorted(allowed))})"
        )
    one = {
        "name": name,
        "kind": kind,
        "timeout": _seconds(check.get("timeout", CHECK_TIMEOUT), f"{key}:timeout", 1, MAX_TIMEOUT),
    }
    if kind in ("mount", "free_space"):
        one["path"] = _path(check.get("path"), f"{key}:path")
    if kind == "free_space":
        min_mb = check.get("min_mb")
        if isinstance(min_mb, bool) or not isinstance(min_mb, int) or min_mb < 1:
            raise HealthError(f"{key}:min_mb: expected a whole number of MiB >= 1, got {min_mb!r}")
        one["min_mb"] = min_mb
    if kind == "command":
        argv = check.get("argv")
        if (
            not isinstance(argv, list)
            or not argv
            or not all(isinstance(a, str) and "\0" not in a for a in argv)
            or not argv[0].startswith("/")
        ):
            raise HealthError(
                f"{key}:argv: expected a list of strings starting with an absolute program "
                f"path (no shell), got {argv!r}"
            )
        one["argv"] = list(argv)
    return one


def node_config(health, node, slurm_conf):
    """What :data:`CONFIG_PATH` holds on ``node`` (the validated checks and run bound)."""
    return {
        "node": node,
        "slurm_conf": slurm_conf,
        "timeout": health["timeout"],
        "checks": health["checks"],
    }


# ---------------------------------------------------------------------- the checks
def mount_points(mountinfo="/proc/self/mountinfo"):
    """Mount points of this mount namespace."""
    points = set()
    with open(mountinfo, encoding="utf-8", errors="replace") as handle:
        for line in handle:
            fields = line.split()
            if len(fields) > 4:
                points.add(re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), fields[4]))
    return points


def check_mount(check, mountinfo="/proc/self/mountinfo"):
    if check["path"] in mount_points(mountinfo):
        return True, f"{check['path']} is mounted"
    return False, f"{check['path']} is not mounted"


def check_free_space(check):
    try:
        stat = os.statvfs(check["path"])
    except OSError as err:
        return False, f"{check['path']}: {err.strerror}"
    free_mb = stat.f_bavail * stat.f_frsize // (1024 * 1024)
    ok = free_mb >= check["min_mb"]
    return ok, f"{check['path']} has {free_mb} MiB free ({'>=' if ok else '<'} {check['min_mb']})"


def check_munge(check):
    try:
        credential = munge_lib.encode("healthcheck", timeout=check["timeout"])
        decoded = munge_lib.decode(credential, timeout=check["timeout"])
    except command.CommandFailed as err:
        return False, f"munged does not answer: {str(err)[:120]}"
    if not decoded["ok"]:
        return False, f"munge round trip failed: {decoded.get('error', '')[:120]}"
    return True, "munged answers"


def conf_gpus(conf_text, node):
    """The GPU count slurm.conf's Gres gives ``node`` (0 without a gpu Gres)."""
    conf = model.parse(conf_text)
    count = 0
    for record in conf.records("NodeName"):
        if record.name.upper() == "DEFAULT" or node not in hostlist.expand(record.name):
            continue
        count = 0
        for gres in re.sub(r"\([^)]*\)", "", record.get("Gres") or "").split(","):
            parts = gres.split(":")
            if parts[0] == "gpu":
                number = parts[-1] if len(parts) > 1 else "1"
                count += int(number) if number.isdigit() else 1
    return count


def check_gpus(check, node, slurm_conf, dev_dir="/dev"):
    try:
        with open(slurm_conf, encoding="utf-8") as handle:
            want = conf_gpus(handle.read(), node)
    except (OSError, ValueError) as err:
        return False, f"cannot read {slurm_conf}: {str(err)[:120]}"
    have = len(hardware.nvidia_device_files(dev_dir))
    if shutil.which("nvidia-smi"):
        proc = command.run(["nvidia-smi", "-L"], timeout=check["timeout"], check=False)
        listed = hardware.parse_nvidia_smi_l(proc.stdout) if proc.returncode == 0 else []
        have = len(listed) if proc.returncode == 0 else have
    if have == want:
        return True, f"{have} GPU(s) as slurm.conf says"
    return False, f"{have} GPU(s) found, slurm.conf's Gres says {want}"


def check_command(check):
    try:
        proc = command.run(check["argv"], timeout=check["timeout"], check=False)
    except command.CommandFailed as err:
        return False, str(err)[:160]
    if proc.returncode == 0:
        return True, f"{os.path.basename(check['argv'][0])} exited 0"
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [""]
    return (
        False,
        f"{os.path.basename(check['argv'][0])} exited {proc.returncode} {tail[0][:100]}".rstrip(),
    )


def _one(check, config):
    kind = check["kind"]
    if kind == "mount":
        return check_mount(check)
    if kind == "free_space":
        return check_free_space(check)
    if kind == "munge":
        return check_munge(check)
    if kind == "gpus":
        return check_gpus(check, config["node"], config["slurm_conf"])
    return check_command(check)


def run_checks(config, runner=_one, clock=time.monotonic):
    """Every check of ``config``, each in a thread bounded by its timeout and by what is
    left of the run's ``timeout`` (a hung statvfs on a dead NFS mount fails the check, it
    does not hang the program). ``[{"name", "kind", "ok", "detail"}]``."""
    deadline = clock() + config.get("timeout", DEFAULTS["timeout"])
    results = []
    for check in config.get("checks", []):
        left = deadline - clock()
        base = {"name": check["name"], "kind": check["kind"]}
        if left <= 0:
            results.append({**base, "ok": False, "detail": "not run: the run's time was up"})
            continue
        bound = min(check["timeout"], left)
        box = {"check": {**check, "timeout": bound}}

        def target(box=box):
            try:
                box["out"] = runner(box["check"], config)
            except Exception as err:  # noqa: BLE001 - a check that crashes has failed
                box["out"] = (False, f"check failed: {type(err).__name__}: {str(err)[:100]}")

        thread = threading.Thread(target=target, daemon=True)
        thread.start()
        thread.join(bound + 0.5)  # command checks time out themselves; 0.5 s for their end
        ok, detail = box.get("out", (False, f"timed out after {bound:g} s"))
        results.append({**base, "ok": bool(ok), "detail": " ".join(str(detail).split())})
    return results


# ---------------------------------------------------------------------- drain / resume
def reason_for(result):
    return f"{REASON_PREFIX}{result['name']}: {result['detail']}"[:REASON_MAX]


def act(results, state, record):
    """What the program does: ``{"action": "drain" | "resume" | None, "reason", "record",
    "comment"}``. ``state``: the node's ``scontrol.node_state`` (None: unknown);
    ``record``: the reason of the drain this program made last (None: none). ``record``
    in the answer is what to remember next (None: forget)."""
    failed = [r for r in results if not r["ok"]]
    current = (state or {}).get("reason_text") if (state or {}).get("drained") else None
    ours = record is not None and current == record
    if failed:
        reason = reason_for(failed[0])
        if state is None:
            return {
                "action": None,
                "reason": None,
                "record": record,
                "comment": "node state unknown: nothing done",
            }
        if current is not None and not ours:
            return {
                "action": None,
                "reason": None,
                "record": None,
                "comment": f"drained by someone else ({current}): left as it is",
            }
        if current == reason:
            return {
                "action": None,
                "reason": reason,
                "record": reason,
                "comment": "already drained for this check",
            }
        return {"action": "drain", "reason": reason, "record": reason, "comment": reason}
    if ours:
        return {
            "action": "resume",
            "reason": None,
            "record": None,
            "comment": f"every check passes again: resumed (was: {record})",
        }
    if record is not None and state is not None:
        return {
            "action": None,
            "reason": None,
            "record": None,
            "comment": "the health drain is gone (resumed or changed by someone else)",
        }
    return {"action": None, "reason": None, "record": record, "comment": "every check passes"}


def read_record(path=RECORD_PATH):
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read().strip() or None
    except OSError:
        return None


def write_record(record, path=RECORD_PATH):
    if record is None:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        return
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    fsutil.atomic_write(path, record + "\n", 0o644)


def read_config(path=CONFIG_PATH):
    """The node's checks (None when the file is absent: no checks configured)."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except FileNotFoundError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("checks"), list):
        raise HealthError(f"{path}: not a health check configuration")
    return data


def node_state(node, timeout=15):
    proc = command.run(["scontrol", "show", "node", node, "-o"], timeout=timeout, check=False)
    if proc.returncode != 0:
        return None
    state = scontrol.node_state(proc.stdout)
    return state if state.get("name") == node else None


def apply(decision, node, timeout=15):
    if decision["action"] == "drain":
        argv = [
            "scontrol",
            "update",
            f"NodeName={node}",
            "State=DRAIN",
            f"Reason={decision['reason']}",
        ]
    elif decision["action"] == "resume":
        argv = ["scontrol", "update", f"NodeName={node}", "State=RESUME"]
    else:
        return
    command.run(argv, timeout=timeout)


def run(config_path=CONFIG_PATH, record_path=RECORD_PATH, do_apply=True):
    """One run: ``{"node", "results", "failed", "action", "comment"}`` (the beacon calls it
    with ``do_apply=False``: checks only, no scontrol)."""
    config = read_config(config_path)
    if config is None:
        return {
            "node": None,
            "results": [],
            "failed": [],
            "action": None,
            "comment": "no health checks configured",
            "record": read_record(record_path),
        }
    node = config.get("node") or socket.gethostname().split(".")[0]
    results = run_checks(config)
    out = {
        "node": node,
        "results": results,
        "failed": [r["name"] for r in results if not r["ok"]],
        "action": None,
        "record": read_record(record_path),
    }
    if not do_apply:
        out["comment"] = "checked only"
        return out
    decision = act(results, node_state(node), out["record"])
    apply(decision, node)
    write_record(decision["record"], record_path)
    out.update(action=decision["action"], comment=decision["comment"], record=decision["record"])
    return out


def main(argv=None):
    """``saltext-slurm-healthcheck [--config PATH] [--check-only]``: Slurm's
    HealthCheckProgram. Prints one line per check; exits 1 when a check failed."""
    parser = argparse.ArgumentParser(prog=PROGRAM, description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=CONFIG_PATH)
    parser.add_argument("--check-only", action="store_true", help="no drain / resume")
    args = parser.parse_args(argv)
    # slurmd may run the program with an empty environment: scontrol / munge still resolve
    os.environ.setdefault("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    try:
        out = run(args.config, do_apply=not args.check_only)
    except (HealthError, command.CommandFailed, OSError) as err:
        print(f"{PROGRAM}: {err}", file=sys.stderr)
        return 2
    for result in out["results"]:
        print(f"{'ok  ' if result['ok'] else 'FAIL'} {result['name']}: {result['detail']}")
    if out.get("action"):
        print(f"{out['action']}: {out['comment']}")
    return 1 if out["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
