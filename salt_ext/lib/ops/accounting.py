"""Accounting in the day-2 runners: the dbd host's rows in ``slurm.status``, the ``sacct``
proof in ``slurm.verify``, and what ``slurm.diagnose`` names when job records do not reach
the database. Pure functions over what ``slurm_dbd.probe`` reports."""

import re

from salt_ext.lib.ops import views

_DENIED = re.compile(r"Access denied for user", re.IGNORECASE)
_NO_DB = re.compile(
    r"Can't connect to (local )?(MySQL|MariaDB)? ?server|Connection refused|"
    r"Unable to (initialize|connect)|mysql_real_connect failed",
    re.IGNORECASE,
)
_CTLD_NO_DBD = re.compile(
    r"persistent connection to host|Sending PersistInit msg|slurmdbd.*(refused|unreachable)|"
    r"_open_persist_conn",
    re.IGNORECASE,
)


def enabled(cfg):
    return bool((cfg.get("accounting") or {}).get("enabled"))


def status_rows(cfg, dbd_status):
    """``[{"daemon", "host", "mark", "evidence"}]``: slurmdbd (and mariadb with local
    storage) on the dbd host, from its ``slurm_node.status`` (None: no answer)."""
    acct = cfg["accounting"]
    names = ["mariadb", "slurmdbd"] if acct["storage"]["type"] == "local" else ["slurmdbd"]
    rows = []
    for name in names:
        health = ((dbd_status or {}).get("health") or {}).get(name) or {}
        rows.append(
            {
                "daemon": name,
                "host": acct["host"],
                "mark": views.daemon_mark(dbd_status, name) if dbd_status else None,
                "evidence": health.get("evidence") or ("no answer" if dbd_status is None else ""),
            }
        )
    return rows


def status_line(rows):
    """``accounting on ctl: mariadb ok, slurmdbd DOWN (slurmdbd not running)``."""
    parts = []
    for row in rows:
        word = {True: "ok", views.HUNG: "HUNG", None: "?"}.get(row["mark"], "DOWN")
        parts.append(f"{row['daemon']} {word}" + ("" if word == "ok" else f" ({row['evidence']})"))
    return f"accounting on {rows[0]['host']}: " + ", ".join(parts) if rows else ""


def rows_ok(rows):
    return all(row["mark"] is True for row in rows)


def causes(cfg, dbd_probe, ctl_probe):
    """What keeps job records from the database, each ``{"cause", "evidence", "fix"}``.

    ``dbd_probe``/``ctl_probe``: ``slurm_dbd.probe`` of the dbd host and the
    controller (the same dict when they are one machine; None: no answer)."""
    acct = cfg["accounting"]
    host, found = acct["host"], []
    heal = f"salt-run slurm.deploy (or salt {host} state.apply slurm.dbd)"
    if dbd_probe is None:
        return [
            {
                "cause": f"the dbd host {host} does not answer",
                "evidence": [f"salt: no answer from {host}"],
                "fix": f"start its salt-minion, then {heal}",
            }
        ]
    health = dbd_probe.get("health") or {}
    log = dbd_probe.get("slurmdbd_log") or []
    mariadb = health.get("mariadb")
    if mariadb is not None and mariadb.get("state") != "running":
        found.append(
            {
                "cause": f"MariaDB is {mariadb.get('state')} on {host}",
                "evidence": [mariadb.get("evidence", "")],
                "fix": heal,
            }
        )
    slurmdbd = health.get("slurmdbd") or {}
    # an answer of sacctmgr (slurmdbd queried the database just now) outweighs old lines
    db_answers = (ctl_probe or {}).get("clusters") is not None
    denied = [] if db_answers else [line for line in log if _DENIED.search(line)]
    unreachable = [] if db_answers else [line for line in log if _NO_DB.search(line)]
    if denied:
        found.append(
            {
                "cause": "slurmdbd: the database refuses its user (wrong password?)",
                "evidence": denied[-3:],
                "fix": "check slurm:accounting:storage:password (and user), then " + heal,
            }
        )
    elif unreachable and not (mariadb is not None and mariadb.get("state") != "running"):
        found.append(
            {
                "cause": "slurmdbd cannot reach the database",
                "evidence": unreachable[-3:],
                "fix": "check slurm:accounting:storage (host, port) and the server, then " + heal,
            }
        )
    if slurmdbd and slurmdbd.get("state") != "running":
        found.append(
            {
                "cause": f"slurmdbd is {slurmdbd.get('state')} on {host}",
                "evidence": [slurmdbd.get("evidence", ""), *log[-3:]],
                "fix": heal,
            }
        )
    if ctl_probe is None:
        return found
    reach = ctl_probe.get("reach") or {}
    if reach.get("ok") is False and not (slurmdbd and slurmdbd.get("state") != "running"):
        found.append(
            {
                "cause": "the controller cannot reach slurmdbd",
                "evidence": [reach.get("detail", ""), *(ctl_probe.get("slurmctld_log") or [])[-2:]],
                "fix": "check slurm:accounting:address/port and the network between them",
            }
        )
    elif reach.get("ok") is False:
        # slurmctld queues job records meanwhile (up to MaxDBDMsgs); say it
        lines = [line for line in ctl_probe.get("slurmctld_log") or [] if _CTLD_NO_DBD.search(line)]
        found.append(
            {
                "cause": "slurmctld cannot reach slurmdbd (it queues job records meanwhile)",
                "evidence": [reach.get("detail", ""), *lines[-2:]],
                "fix": heal,
            }
        )
    clusters = ctl_probe.get("clusters")
    if clusters is not None and cfg["cluster_name"].lower() not in clusters:
        found.append(
            {
                "cause": f"cluster {cfg['cluster_name']} is not registered in slurmdbd",
                "evidence": [f"sacctmgr show cluster: {', '.join(clusters) or 'none'}"],
                "fix": f"sacctmgr -i add cluster {cfg['cluster_name']} on the controller, or "
                "salt-run slurm.deploy",
            }
        )
    return found


# accounts / users / QOS as code (slurm:accounting:managed): the controller's SLS state
# and the exec function slurm.status asks
MANAGED_STATE = "slurm-accounting"
CHECK_FUN = "slurm_accounting.check"


def managed(cfg):
    return bool((cfg.get("accounting") or {}).get("managed"))


def _counts_text(counts):
    parts = []
    for kind, group in counts.items():
        parts.append(f"{kind}: " + ", ".join(f"{n} {what}" for what, n in group.items()))
    return "; ".join(parts)


def sync_report(host, answer):
    """``slurm.status``'s view of ``slurm_accounting.check`` on ``host`` (``answer``:
    ``{"ok", "ret", "error"}`` of the call): ``{"host", "in_sync", "total", "drift",
    "unmanaged", "counts", "line"}``; ``in_sync`` is None when the check did not run."""
    if not answer or not answer.get("ok") or not isinstance(answer.get("ret"), dict):
        error = " ".join(str((answer or {}).get("error") or (answer or {}).get("ret")).split())
        return {
            "host": host,
            "in_sync": None,
            "error": error[:500],
            "line": f"accounts as code on {host}: NOT CHECKED ({error[:200]})",
        }
    digest = answer["ret"]
    report = {"host": host, **digest}
    unmanaged = sum(digest.get("unmanaged", {}).values())
    tail = f"; {unmanaged} unmanaged left alone" if unmanaged else ""
    if digest["in_sync"]:
        report["line"] = f"accounts as code on {host}: in sync with pillar{tail}"
    else:
        drift = f", {digest['drift']} value(s) drifted from pillar" if digest["drift"] else ""
        report["line"] = (
            f"accounts as code on {host}: DIFFERS from pillar ({digest['total']} change(s) "
            f"to apply: {_counts_text(digest['counts'])}{drift}){tail}; "
            "salt-run slurm.deploy applies them"
        )
    return report


def deploy_report(host, chunk):
    """``slurm.deploy``'s account of the controller's ``slurm-accounting`` state (its
    ``{"result", "comment", "changes"}``; None: it did not run): ``{"host", "result",
    "changed", "drift", "comment"}``."""
    if not chunk:
        return {
            "host": host,
            "result": False,
            "changed": 0,
            "drift": 0,
            "comment": "not applied (a state it requires failed)",
        }
    changes = dict(chunk.get("changes") or {})
    drift = changes.pop("drift", None) or []
    groups = {k: v for k, v in changes.items() if isinstance(v, dict)}
    changed = sum(len(items) for group in groups.values() for items in group.values())
    return {
        "host": host,
        "result": chunk.get("result"),
        "changed": changed,
        "drift": len(drift),
        "comment": chunk.get("comment") or "",
    }
