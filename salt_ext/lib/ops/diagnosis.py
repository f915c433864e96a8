"""Why is a node not working? Causes named from evidence, most fundamental first.

Input is what the runner collects: the node's ``slurm_node.probe`` (None when its minion
did not answer), the controller's probe, the controller's view of the node (``scontrol
show node``), the NodeNames in the master's slurm.conf, and the controller's decode of a
credential the node's munged made. Each cause comes with the evidence lines that show it
and the command that fixes it. The failure modes are those of the seed fix guides; every
one is produced by a real fault in tests/integration/test_slurm_ops.py.
"""

from salt_ext.lib.node import scontrol

CLOCK_SKEW_LIMIT = 30  # seconds; munge credentials live 300 s, Slurm warns well before

FIXES = {
    "minion unreachable": "check salt-minion on the node and its network path to the master",
    "munged not running": "salt NODE slurm_node.restart munge (or state.apply slurm.node)",
    "munged hung": "salt NODE slurm_node.restart munge",
    "munge key mismatch": "salt NODE state.apply slurm.node (restores the cluster key)",
    "slurmd not running": "salt NODE slurm_node.restart slurmd (or state.apply slurm.node)",
    "slurmd hung": "salt NODE slurm_node.restart slurmd",
    "slurmctld hung": "salt CONTROLLER slurm_node.restart slurmctld",
    "munged hung on the controller": "salt CONTROLLER slurm_node.restart munge",
    "hostname differs from NodeName": (
        "set the hostname back, or re-render: salt-run slurm.render_conf; salt-run slurm.apply_conf"
    ),
    "node missing from slurm.conf": "salt-run slurm.render_conf; salt-run slurm.apply_conf",
    "slurm.conf differs from the controller's": "salt-run slurm.apply_conf",
    "slurmd cannot reach the controller": (
        "check routing/firewall from the node to the controller's SlurmctldPort (6817)"
    ),
    "clock skew": "synchronise clocks (chrony/ntpd) on the node and the controller",
    "hardware below slurm.conf": (
        "salt-run slurm.render_conf (from the node's real hardware); salt-run slurm.apply_conf; "
        "then salt-run slurm.resume NODE"
    ),
}
SKEW_WORDS = ("expired credential", "rewound credential")
LOW_WORDS = ("low realmemory", "low socket", "low cpu", "low tmpdisk")


def _cause(name, evidence):
    return {"cause": name, "evidence": [e for e in evidence if e], "fix": FIXES.get(name, "")}


def _hung(name, daemon, where, health, log_lines):
    """A "<daemon> hung" cause from one ``slurm_node.status`` health entry; the fix
    continues a process a signal stopped before it restarts anything."""
    cause = _cause(name, [f"{daemon} on {where}: {health.get('evidence')}", *log_lines])
    if health.get("proc_state") in ("T", "t") and health.get("pid"):
        cause["fix"] = (
            f"it was stopped by a signal: kill -CONT {health['pid']} on {where}; "
            f"or restart it: {cause['fix']}"
        )
    return cause


def _health(probe, daemon):
    return ((probe or {}).get("health") or {}).get(daemon) or {}


def controller_causes(ctl):
    """Causes on the controller itself (a hung slurmctld or munged there): they stop every
    node, so each node's report carries them first."""
    where = (ctl or {}).get("hostname") or (ctl or {}).get("host") or "the controller"
    logs = (ctl or {}).get("logs") or {}
    causes = []
    for name, daemon, key, log_key in (
        ("munged hung on the controller", "munged", "munge", "munged_last"),
        ("slurmctld hung", "slurmctld", "slurmctld", "slurmctld_last"),
    ):
        health = _health(ctl, key)
        if health.get("state") == "hung":
            cause = _hung(name, daemon, where, health, logs.get(log_key, [])[-2:])
            cause["fix"] = cause["fix"].replace("salt CONTROLLER", f"salt {where}")
            causes.append(cause)
    return causes


def _reason_cause(node, state, logs, ctl_logs):
    """Why Slurm holds a node that shows no other fault: a reason Slurm set itself, or an
    admin's drain (reported, not a fault of the machine)."""
    reason = state.get("reason") or ""
    parts = scontrol.reason_parts(reason)
    by = state.get("reason_by") or parts["reason_by"]
    text = state.get("reason_text") or parts["reason_text"]
    what = "drained" if state.get("drained") else (state.get("state") or "down").lower()
    seen = f"slurmctld: {node} {state.get('raw_state')}: {reason}"
    if by == "slurm":
        return {
            "cause": f"{what} by Slurm: {text}",
            "evidence": [seen, *ctl_logs[-2:], *[f"slurmd: {ln}" for ln in logs[-3:]]],
            "fix": (
                "Slurm set this reason itself: find the cause in slurmctld.log on the "
                f"controller and slurmd.log on {node}, fix it, then salt-run slurm.resume {node}"
            ),
        }
    who = parts["reason_user"] or state.get("reason_user") or "an admin"
    return {
        "cause": f"{what} by an admin: {text}",
        "evidence": [seen],
        "fix": f"{who} set this on purpose; salt-run slurm.resume {node} once that work is done",
    }


def node_causes(node, minion, probe, ctl, state, conf_nodes, decoded=None):
    """Causes for one node, most fundamental first (empty: nothing wrong found)."""
    causes = []
    state = state or {}
    reason = state.get("reason") or ""
    if probe is None:
        return [
            _cause(
                "minion unreachable",
                [
                    f"salt: no answer from minion {minion} to slurm_node.probe",
                    f"controller sees {node} as {state.get('raw_state') or 'unknown'}",
                ],
            )
        ]
    logs = probe.get("logs") or {}
    ctl_logs = [
        line for line in ((ctl or {}).get("logs") or {}).get("slurmctld", []) if node in line
    ]
    daemons = probe.get("daemons") or {}
    causes += controller_causes(ctl)
    ctl_hung = bool(causes)
    if daemons.get("munge") is False:
        causes.append(
            _cause(
                "munged not running",
                ["munged: not running on the node", *logs.get("munged_last", [])[-2:]],
            )
        )
    elif _health(probe, "munge").get("state") == "hung":
        causes.append(
            _hung(
                "munged hung",
                "munged",
                node,
                _health(probe, "munge"),
                logs.get("munged_last", [])[-2:],
            )
        )
    key, ctl_key = probe.get("munge_key_hash"), (ctl or {}).get("munge_key_hash")
    decode_error = ((decoded or {}).get("error") or (decoded or {}).get("status") or "").lower()
    if (key and ctl_key and key != ctl_key) or "invalid credential" in decode_error:
        causes.append(
            _cause(
                "munge key mismatch",
                [
                    f"munge.key on {node}: {key}; on the controller: {ctl_key}",
                    f"controller decoding {node}'s credential: {decode_error}" if decoded else "",
                    *[f"slurmd: {line}" for line in logs.get("slurmd", [])[-2:]],
                ],
            )
        )
    if daemons.get("slurmd") is False:
        causes.append(
            _cause(
                "slurmd not running",
                ["slurmd: not running on the node", *logs.get("slurmd_last", [])[-3:]],
            )
        )
    elif _health(probe, "slurmd").get("state") == "hung":
        causes.append(
            _hung(
                "slurmd hung",
                "slurmd",
                node,
                _health(probe, "slurmd"),
                logs.get("slurmd_last", [])[-3:],
            )
        )
    hostname = probe.get("hostname") or probe.get("host")
    if node in conf_nodes and hostname and hostname != node:
        causes.append(
            _cause(
                "hostname differs from NodeName",
                [
                    f"minion {minion} has hostname {hostname!r}; "
                    f"slurm.conf defines NodeName {node}",
                    *[
                        f"slurmd: {line}"
                        for line in logs.get("slurmd", [])
                        if "nodename" in line.lower()
                    ][-1:],
                ],
            )
        )
    if node not in conf_nodes:
        causes.append(
            _cause(
                "node missing from slurm.conf",
                [
                    f"{node} has hardware in the mine but no NodeName line in the "
                    "master's slurm.conf",
                    *[
                        f"slurmd: {line}"
                        for line in logs.get("slurmd", [])
                        if "nodename" in line.lower()
                    ][-1:],
                ],
            )
        )
    conf, ctl_conf = probe.get("slurm_conf_hash"), (ctl or {}).get("slurm_conf_hash")
    if conf != ctl_conf:
        causes.append(
            _cause(
                "slurm.conf differs from the controller's",
                [
                    f"slurm.conf on {node}: {conf}; on the controller: {ctl_conf}",
                    *[line for line in ctl_logs if "different slurm.conf" in line.lower()][-1:],
                ],
            )
        )
    ping = probe.get("controller_ping") or {}
    munge_causes = ("munge key mismatch", "munged not running", "munged hung")
    key_ok = not any(c["cause"] in munge_causes for c in causes)
    # ok None: not asked (munged does not answer); a hung controller explains it already
    if ping and ping.get("ok") is False and key_ok and not ctl_hung:
        causes.append(
            _cause(
                "slurmd cannot reach the controller",
                [
                    f"scontrol ping from {node}: {ping.get('output')}",
                    *[
                        f"slurmd: {line}"
                        for line in logs.get("slurmd", [])
                        if "contact" in line.lower()
                    ][-1:],
                ],
            )
        )
    skew = None
    if probe.get("time") and (ctl or {}).get("time"):
        skew = probe["time"] - ctl["time"]
    skew_lines = [
        line
        for line in ctl_logs + logs.get("slurmd", [])
        if any(w in line.lower() for w in SKEW_WORDS)
    ]
    if any(w in decode_error for w in SKEW_WORDS) or (
        skew is not None and abs(skew) > CLOCK_SKEW_LIMIT
    ):
        causes.append(
            _cause(
                "clock skew",
                [
                    f"controller decoding {node}'s credential: {decode_error}"
                    if decode_error
                    else "",
                    f"node clock - controller clock = {skew:+.0f} s" if skew is not None else "",
                    *skew_lines[-2:],
                ],
            )
        )
    if any(w in reason.lower() for w in LOW_WORDS):
        causes.append(
            _cause(
                "hardware below slurm.conf",
                [f"slurmctld: {node} {state.get('raw_state')}: {reason}"],
            )
        )
    for cause in causes:
        cause["fix"] = (
            cause["fix"]
            .replace("salt NODE", f"salt {minion}")
            .replace("resume NODE", f"resume {node}")
        )
    if not causes and reason:
        causes.append(_reason_cause(node, state, logs.get("slurmd", []), ctl_logs))
    elif not causes and not state.get("usable", True):
        causes.append(
            {
                "cause": f"node {state.get('raw_state')}",
                "evidence": [*logs.get("slurmd", [])[-3:]],
                "fix": f"see the evidence; salt-run slurm.resume {node} once it is fixed",
            }
        )
    return causes


def needs_look(state):
    """True for nodes ``slurm.diagnose`` examines: down*, drained, unknown, not responding."""
    if not state:
        return True
    return not state.get("usable", False)


def format_report(report):
    lines = []
    for node, entry in report.items():
        if not entry["causes"]:
            lines.append(f"{node}: {entry['state'] or '-'}: no fault found")
            continue
        lines.append(f"{node}: {entry['state'] or '-'}")
        for cause in entry["causes"]:
            lines.append(f"  cause: {cause['cause']}")
            lines += [f"    | {line}" for line in cause["evidence"]]
            lines.append(f"    fix: {cause['fix']}")
    return "\n".join(lines) if lines else "every node is up; nothing to diagnose"
