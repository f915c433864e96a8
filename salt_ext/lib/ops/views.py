"""Cluster-wide views built from what the minions report: the status table and the
verdicts of ``slurm.verify``. Pure functions over plain data; the runners collect it."""

STATUS_COLUMNS = (
    ("node", "NODE"),
    ("minion", "MINION"),
    ("reachable", "SALT"),
    ("munged", "MUNGED"),
    ("slurmd", "SLURMD"),
    ("state", "STATE"),
    ("reason", "REASON"),
    ("conf", "CONF"),
    ("key", "KEY"),
    ("version", "VERSION"),
)


def _mark(value):
    if value is True:
        return "ok"
    if value is False:
        return "NO"
    return "-" if value is None else str(value)


def _hash_check(value, want):
    if value is None or want is None:
        return None if value is None else "?"
    return value == want


HUNG = "HUNG"
_LABELS = {"munge": "munged"}


def daemon_mark(status, daemon):
    """A status column for ``daemon``: True (runs and answers), False (not running),
    ``"HUNG"`` (runs, does not answer), None (not installed / no status)."""
    if status is None:
        return None
    health = (status.get("health") or {}).get(daemon)
    if health is None:  # a minion without health checks: the process alone
        return (status.get("daemons") or {}).get(daemon)
    return {"running": True, "hung": HUNG}.get(health["state"], False)


def hung_daemons(status, names=("munge", "slurmd", "slurmctld")):
    """``["slurmd hung: pid 123 state T (stopped)", ...]`` from one ``slurm_node.status``."""
    health = (status or {}).get("health") or {}
    return [
        f"{_LABELS.get(name, name)} hung: {health[name]['evidence']}"
        for name in names
        if (health.get(name) or {}).get("state") == "hung"
    ]


def munge_answers(status):
    """The minion answered and its munged is not hung: worth asking for credentials."""
    return status is not None and daemon_mark(status, "munge") is not HUNG


def status_title(controller, ctl):
    """The status table's first line: the controller's slurmctld and conf."""
    if ctl is None:
        text = "no answer"
    else:
        mark = daemon_mark(ctl, "slurmctld")
        text = "slurmctld " + {True: "up", HUNG: "HUNG"}.get(mark, "DOWN")
        hung = hung_daemons(ctl)
        text += f" ({'; '.join(hung)})" if hung else ""
        if ctl.get("slurm_conf_hash"):
            text += f", conf {ctl['slurm_conf_hash'][:19]}…"
    return f"controller {controller}: {text}"


def controller_ok(ctl):
    """The controller answers and none of its daemons hangs or is missing."""
    return bool(ctl) and daemon_mark(ctl, "slurmctld") is True and not hung_daemons(ctl)


def status_rows(controller_status, node_minions, statuses, states):
    """One row per node.

    ``controller_status``: the controller's ``slurm_node.status`` (its hashes are the
    reference); ``statuses``: ``{minion: slurm_node.status or None (no answer)}``;
    ``states``: the controller's ``slurm_controller.cluster_nodes`` (or None)."""
    want_conf = (controller_status or {}).get("slurm_conf_hash")
    want_key = (controller_status or {}).get("munge_key_hash")
    rows = []
    for node, minion in node_minions.items():
        status = statuses.get(minion)
        state = (states or {}).get(node) or {}
        version = ((status or {}).get("versions") or {}).get("slurm")
        rows.append(
            {
                "node": node,
                "minion": minion,
                "reachable": status is not None,
                "munged": daemon_mark(status, "munge"),
                "slurmd": daemon_mark(status, "slurmd"),
                "problems": hung_daemons(status, ("munge", "slurmd")),
                "state": state.get("raw_state") or ("not in slurmctld" if states else None),
                "reason": state.get("reason"),
                "conf": _hash_check((status or {}).get("slurm_conf_hash"), want_conf),
                "key": _hash_check((status or {}).get("munge_key_hash"), want_key),
                "version": version.split()[-1] if version else None,
                "usable": bool(state.get("usable")),
            }
        )
    return rows


def row_ok(row):
    return bool(
        row["reachable"]
        and row["munged"] is True
        and row["slurmd"] is True
        and row["usable"]
        and row["conf"] is True
        and row["key"] is True
    )


def format_table(rows, title=None):
    """Fixed-width text table of status rows (for people; JSON gets the rows)."""
    header = [label for _, label in STATUS_COLUMNS]
    body = [[_mark(row.get(key)) for key, _ in STATUS_COLUMNS] for row in rows]
    widths = [max(len(cell) for cell in column) for column in zip(header, *body, strict=False)]
    lines = [title] if title else []
    for cells in [header, *body]:
        lines.append(
            "  ".join(
                cell.ljust(width) for cell, width in zip(cells, widths, strict=False)
            ).rstrip()
        )
    bad = [row["node"] for row in rows if not row_ok(row)]
    lines += [f"{row['node']}: {problem}" for row in rows for problem in row.get("problems", ())]
    lines.append(
        f"{len(rows) - len(bad)}/{len(rows)} nodes healthy"
        + (f"; look at: {', '.join(bad)} (salt-run slurm.diagnose)" if bad else "")
    )
    return "\n".join(lines)


VERIFY_PAYLOAD = "saltext-slurm verify"


def drained(state):
    """True for a drained node that is otherwise up at the controller: no job starts
    there (:func:`step_check` tells the admin's drain from Slurm's)."""
    return bool(state and state.get("drained") and state.get("registered"))


def verify_node(node, minion, status, controller_status, encode, decoded, reverse, step):
    """Checks for one node; each is ``{"ok": bool, "evidence": str}``.

    ``encode``: the node's ``munge.encode`` result (credential or None); ``decoded``: the
    controller's decode of it; ``reverse``: the node's decode of the controller's
    credential; ``step``: the controller's ``job_steps`` result for the node."""
    checks = {}
    if status is None:
        checks["reachable"] = {"ok": False, "evidence": f"minion {minion} did not answer"}
        return checks
    checks["reachable"] = {"ok": True, "evidence": f"minion {minion} answered"}
    checks["daemons"] = daemons_check(node, status)
    if munge_answers(status):
        checks["munge node->controller"] = _to_controller(node, encode, decoded)
        checks["munge controller->node"] = _from_controller(node, reverse)
    else:  # the runner does not ask a munged that hangs: it would only time out
        for name in ("munge node->controller", "munge controller->node"):
            checks[name] = {"ok": False, "evidence": f"not tried: munged on {node} is hung"}
    for label, key in (
        ("munge key hash", "munge_key_hash"),
        ("slurm.conf hash", "slurm_conf_hash"),
    ):
        mine, theirs = status.get(key), controller_status.get(key)
        checks[label] = {
            "ok": mine is not None and mine == theirs,
            "evidence": f"{node} {mine} vs controller {theirs}",
        }
    for account in ("munge", "slurm"):
        mine = (status.get("accounts") or {}).get(account)
        theirs = (controller_status.get("accounts") or {}).get(account)
        checks[f"{account} uid/gid"] = {
            "ok": mine is not None and list(mine) == list(theirs or []),
            "evidence": f"{node} {_ids(mine)} vs controller {_ids(theirs)}",
        }
    checks["job step"] = step_check(node, step)
    return checks


def _to_controller(node, encode, decoded):
    if decoded is None:
        return {"ok": False, "evidence": f"encode failed: {encode}"}
    ok = bool(decoded.get("ok")) and decoded.get("payload") == VERIFY_PAYLOAD
    return {
        "ok": ok,
        "evidence": (
            f"controller decoded {node}'s credential (encode_host {decoded.get('encode_host')})"
            if ok
            else f"controller could not decode {node}'s credential: "
            f"{decoded.get('error') or decoded.get('status')}"
        ),
    }


def _from_controller(node, reverse):
    ok = bool(reverse and reverse.get("ok"))
    return {
        "ok": ok,
        "evidence": (
            f"{node} decoded the controller's credential"
            if ok
            else f"{node} could not decode the controller's credential: "
            f"{(reverse or {}).get('error') or (reverse or {}).get('status') or 'no answer'}"
        ),
    }


def daemons_check(node, status):
    """munged and slurmd run and answer (``slurm_node.status``' health)."""
    marks = {name: daemon_mark(status, name) for name in ("munge", "slurmd")}
    bad = hung_daemons(status, ("munge", "slurmd")) + [
        f"{_LABELS.get(name, name)} not running" for name, mark in marks.items() if not mark
    ]
    if bad:
        return {"ok": False, "evidence": f"{node}: {'; '.join(bad)}"}
    return {"ok": True, "evidence": f"{node}: munged and slurmd run and answer"}


def step_check(node, step, state=None):
    """The ``job step`` check from ``slurm_controller.job_steps``' result for ``node``.

    A node the admin drained (``state`` from ``slurm_controller.cluster_nodes``) gets none: no
    job can start there, and that is the admin's choice, not a fault. A node Slurm drained
    for its own reason (Kill task failed, Duplicate jobid, ...) fails, whatever an earlier
    step showed. A busy node (all CPUs allocated to running jobs) passes as ``busy``."""
    if drained(state):
        text = state.get("reason_text") or state.get("reason")
        if state.get("reason_by") == "slurm":
            return {
                "ok": False,
                "evidence": f"{node} drained by Slurm: {text} ({state.get('reason')}); "
                "salt-run slurm.diagnose",
            }
        return {
            "ok": True,
            "evidence": f"skipped: {node} is drained ({state.get('reason')}); no job starts there",
        }
    if state and not state.get("usable") and not step:
        return {
            "ok": False,
            "evidence": f"not run: {node} is {state.get('raw_state') or state.get('state')} at the "
            f"controller ({state.get('reason') or 'no reason given'}); salt-run slurm.diagnose",
        }
    if step and step.get("busy"):
        return {
            "ok": bool(step.get("ok")),
            "busy": True,
            "jobs": list(step.get("jobs") or []),
            "evidence": f"{node} {step.get('output')}",
        }
    return {
        "ok": bool(step and step.get("ok")),
        "evidence": f"srun -w {node} hostname: {(step or {}).get('output', 'not run')}",
    }


def _ids(pair):
    return "missing" if not pair else f"{pair[0]}:{pair[1]}"


def format_verify(nodes, comment):
    """Text view of ``slurm.verify``: one line per node, evidence for failed checks only."""
    names = list(next(iter(nodes.values()), {}))
    lines = []
    for node, checks in nodes.items():
        bad = {name: c for name, c in checks.items() if not c["ok"]}
        busy = [c for c in checks.values() if c.get("busy") and c["ok"]]
        lines.append(
            f"{node:<12} {'ok' if not bad else 'FAILED'}  "
            f"({len(checks) - len(bad)}/{len(checks)} checks)"
            + "".join(f"  busy: job(s) {', '.join(c['jobs'])}" for c in busy)
        )
        lines += [f"    {name}: {c['evidence']}" for name, c in bad.items()]
    lines.append(f"checks: {', '.join(names)}")
    lines.append(comment)
    return "\n".join(lines)
