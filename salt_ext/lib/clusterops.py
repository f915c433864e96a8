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


def status_rows(controller_status, node_minions, statuses, states):
    """One row per node.

    ``controller_status``: the controller's ``slurm_node.status`` (its hashes are the
    reference); ``statuses``: ``{minion: slurm_node.status or None (no answer)}``;
    ``states``: the controller's ``slurm_node.cluster_nodes`` (or None)."""
    want_conf = (controller_status or {}).get("slurm_conf_hash")
    want_key = (controller_status or {}).get("munge_key_hash")
    rows = []
    for node, minion in node_minions.items():
        status = statuses.get(minion)
        state = (states or {}).get(node) or {}
        daemons = (status or {}).get("daemons", {})
        version = ((status or {}).get("versions") or {}).get("slurm")
        rows.append(
            {
                "node": node,
                "minion": minion,
                "reachable": status is not None,
                "munged": daemons.get("munge") if status else None,
                "slurmd": daemons.get("slurmd") if status else None,
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
        and row["munged"]
        and row["slurmd"]
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
    lines.append(
        f"{len(rows) - len(bad)}/{len(rows)} nodes healthy"
        + (f"; look at: {', '.join(bad)} (salt-run slurm.diagnose)" if bad else "")
    )
    return "\n".join(lines)


VERIFY_PAYLOAD = "saltext-slurm verify"


def drained(state):
    """True for a node the admin drained that is otherwise up at the controller."""
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
    if decoded is None:
        checks["munge node->controller"] = {"ok": False, "evidence": f"encode failed: {encode}"}
    else:
        ok = bool(decoded.get("ok")) and decoded.get("payload") == VERIFY_PAYLOAD
        checks["munge node->controller"] = {
            "ok": ok,
            "evidence": (
                f"controller decoded {node}'s credential (encode_host {decoded.get('encode_host')})"
                if ok
                else f"controller could not decode {node}'s credential: "
                f"{decoded.get('error') or decoded.get('status')}"
            ),
        }
    ok = bool(reverse and reverse.get("ok"))
    checks["munge controller->node"] = {
        "ok": ok,
        "evidence": (
            f"{node} decoded the controller's credential"
            if ok
            else f"{node} could not decode the controller's credential: "
            f"{(reverse or {}).get('error') or (reverse or {}).get('status') or 'no answer'}"
        ),
    }
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


def step_check(node, step, state=None):
    """The ``job step`` check from ``slurm_node.job_steps``' result for ``node``; a node
    the admin drained (``state`` from ``slurm_node.cluster_nodes``) gets none: no job can
    start there, and that is the admin's choice, not a fault."""
    if drained(state):
        return {
            "ok": True,
            "evidence": f"skipped: {node} is drained ({state.get('reason')}); no job starts there",
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
        lines.append(
            f"{node:<12} {'ok' if not bad else 'FAILED'}  "
            f"({len(checks) - len(bad)}/{len(checks)} checks)"
        )
        lines += [f"    {name}: {c['evidence']}" for name, c in bad.items()]
    lines.append(f"checks: {', '.join(names)}")
    lines.append(comment)
    return "\n".join(lines)
