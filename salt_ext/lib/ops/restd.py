"""Slurm's REST API in the runners: ``slurm.token``, ``slurm.rotate_jwt_key``, the
slurmrestd row of ``slurm.status``, the REST call of ``slurm.verify`` and what
``slurm.diagnose`` names. The key and tokens never leave this module except a token to the
runner, which writes it to the admin's terminal (see :mod:`salt_ext.lib.node.restd`)."""

import re

from salt_ext.lib.node import restd as restd_lib
from salt_ext.lib.ops import OpError, views

# what slurmctld/slurmdbd log and slurmrestd answers when a token's signature does not fit
_AUTH_FAILED = re.compile(
    r"Authentication failure|Invalid authentication credential|jwt|Protocol authentication",
    re.IGNORECASE,
)


def enabled(cfg):
    return bool((cfg.get("restd") or {}).get("enabled"))


def key_hosts(cfg):
    """The machines that hold the JWT key: the controller, and the dbd host with
    accounting on."""
    hosts = [cfg["controller"]]
    acct = cfg.get("accounting") or {}
    if acct.get("enabled") and acct.get("host") not in hosts:
        hosts.append(acct["host"])
    return hosts


def token(ctx, user, lifespan):
    """A user's token, signed on the master with the key it serves: no minion makes it,
    so no job return (the master's job cache) holds it. ``{"token", "user", "expires"}``."""
    if not enabled(ctx.cfg):
        raise OpError("the REST API is off: set slurm:restd:enabled: true and deploy")
    try:
        user = restd_lib.check_user(user)
        lifespan = restd_lib.check_lifespan(lifespan)
    except restd_lib.RestdError as err:
        raise OpError(str(err)) from err
    made = restd_lib.sign(ctx.jwt_key().read(), user, lifespan, now=ctx.clock.time())
    return {"token": made, "user": user, "expires": restd_lib.claims(made)["exp"]}


# ---------------------------------------------------------------------- status / verify
def status_row(cfg, ctl_status):
    """``{"daemon", "host", "mark", "evidence"}`` for slurmrestd from the controller's
    ``slurm_node.status`` (None: no answer)."""
    health = ((ctl_status or {}).get("health") or {}).get("slurmrestd") or {}
    return {
        "daemon": "slurmrestd",
        "host": cfg["controller"],
        "port": cfg["restd"]["port"],
        "mark": views.daemon_mark(ctl_status, "slurmrestd") if ctl_status else None,
        "evidence": health.get("evidence") or ("no answer" if ctl_status is None else ""),
    }


def status_line(row):
    """``REST API on ctl:6820: slurmrestd ok``."""
    word = {True: "ok", views.HUNG: "HUNG", None: "?"}.get(row["mark"], "DOWN")
    line = f"REST API on {row['host']}:{row['port']}: slurmrestd {word}"
    return line if word == "ok" else f"{line} ({row['evidence']})"


def verify(ctx, timeout=60):
    """One authenticated REST call on the controller: ``{"ok", "evidence"}``."""
    controller = ctx.controller
    answer = ctx.one(controller, "slurm_restd.check", [], timeout)
    if answer is None:
        return {"ok": False, "evidence": f"no answer from {controller} to slurm_restd.check"}
    return {"ok": bool(answer.get("ok")), "evidence": answer.get("evidence", "")}


# ---------------------------------------------------------------------- diagnose
def causes(cfg, master_hash, probes):
    """What keeps the REST API from working, each ``{"cause", "evidence", "fix"}``.

    ``master_hash``: ``sha256:`` of the master's key; ``probes``: ``{minion:
    slurm_restd.probe or None}`` for :func:`key_hosts`."""
    controller = cfg["controller"]
    heal = "salt-run slurm.deploy"
    found = []
    for host in key_hosts(cfg):
        probe = probes.get(host)
        if probe is None:
            found.append(
                {
                    "cause": f"{host} does not answer slurm_restd.probe",
                    "evidence": [f"salt: no probe answer from {host}"],
                    "fix": f"start its salt-minion, then {heal}",
                }
            )
            continue
        if master_hash and probe.get("key_hash") != master_hash:
            found.append(
                {
                    "cause": f"JWT key mismatch on {host}",
                    "evidence": [
                        f"{host}: {probe.get('key_path') or restd_lib.KEY_PATH} is "
                        f"{probe.get('key_hash') or 'missing'}",
                        f"master: {master_hash}",
                    ],
                    "fix": f"{heal} (or salt-run slurm.rotate_jwt_key)",
                }
            )
    ctl = probes.get(controller)
    if not ctl:
        return found
    health = ctl.get("health") or {}
    if health.get("state") and health["state"] != "running":
        found.append(
            {
                "cause": f"slurmrestd refused to start on {controller}"
                if ctl.get("why")
                else f"slurmrestd is {health['state']} on {controller}",
                "evidence": [health.get("evidence", ""), *(ctl.get("why") or [])],
                "fix": heal,
            }
        )
    check = ctl.get("check")
    if check and not check.get("ok"):
        keys_agree = all(
            (probes.get(h) or {}).get("key_hash") == master_hash for h in key_hosts(cfg)
        )
        if check.get("status") in (401, 403, 500) or _AUTH_FAILED.search(check["evidence"]):
            cause = (
                "JWT key mismatch: slurmctld refuses tokens made with the key its file holds "
                "(it runs with an older key)"
                if keys_agree
                else "JWT key mismatch: a token made with the controller's key is refused"
            )
            found.append(
                {
                    "cause": cause,
                    "evidence": [check["evidence"]],
                    "fix": f"salt {controller} slurm_node.restart slurmctld, or "
                    "salt-run slurm.rotate_jwt_key",
                }
            )
        else:
            found.append(
                {
                    "cause": f"slurmrestd on {controller} does not answer a REST call",
                    "evidence": [check["evidence"]],
                    "fix": heal,
                }
            )
    return found


# ---------------------------------------------------------------------- rotation
def rotate(ctx, timeout=120):
    """A new JWT key on the master, delivered to the controller and the dbd host; slurmdbd
    restarted (it reads the key only at start), slurmctld restarted (``scontrol
    reconfigure`` does not reload it either), slurmrestd
    restarted; then one REST call with a token of the new key must answer. Every earlier
    token is refused afterwards. ``{"result", "key_hash": {"old", "new"}, "steps",
    "check"}``."""
    cfg = ctx.cfg
    if not enabled(cfg):
        raise OpError("the REST API is off (slurm:restd:enabled is false): no key to rotate")
    hosts = key_hosts(cfg)
    answered, silent = ctx.reachable(hosts)
    if silent:
        raise OpError(
            f"{', '.join(silent)} do(es) not answer: nothing changed; the key must change on "
            "every machine that holds it"
        )
    with ctx.journal.operation("rotate_jwt_key") as entry:
        return _rotate(ctx, cfg, hosts, timeout, entry)


def _rotate(ctx, cfg, hosts, timeout, entry):
    steps = []

    def step(message):
        steps.append(message)
        ctx.progress(message)

    jwt = ctx.jwt_key()
    old = jwt.current_hash()
    ctx.journal.record(entry, "writing a new JWT key on the master")
    new = jwt.create(force=True)["key_hash"]
    step(f"new JWT key on the master ({new[:19]}…), was {(old or 'none')[:19]}…")
    result = {"result": False, "key_hash": {"old": old, "new": new}, "steps": steps}
    ctx.journal.record(entry, f"delivering the JWT key to {', '.join(hosts)}")
    delivered = ctx.minions.call(hosts, "slurm_restd.jwt_key", [], timeout)
    failed = {h: a["error"] for h, a in delivered.items() if not a["ok"]}
    if failed:
        for host, error in failed.items():
            step(f"{host}: key delivery FAILED: {str(error)[:300]}")
        result["comment"] = (
            f"the new key did not reach {', '.join(failed)}; run slurm.rotate_jwt_key again "
            "(or slurm.deploy) to finish"
        )
        return result
    step(f"key delivered to {', '.join(hosts)}")
    restarts = []
    acct = cfg.get("accounting") or {}
    if acct.get("enabled"):
        restarts.append((acct["host"], "slurm_node.daemon_control", ["slurmdbd", "restart"]))
    # scontrol reconfigure does not reload the key in 22.05 (seen on the bed: tokens of the
    # new key refused with HTTP 500 afterwards): slurmctld restarts
    restarts.append((cfg["controller"], "slurm_node.daemon_control", ["slurmctld", "restart"]))
    restarts.append((cfg["controller"], "slurm_node.daemon_control", ["slurmrestd", "restart"]))
    ctx.journal.record(entry, "restarting slurmdbd, slurmctld and slurmrestd")
    for host, fun, arg in restarts:
        answer = ctx.minions.call([host], fun, arg, timeout)[host]
        what = " ".join([fun.split(".")[1], *arg])
        if not answer["ok"]:
            step(f"{host}: {what} FAILED: {str(answer['error'])[:300]}")
            result["comment"] = f"{what} failed on {host}; fix it and run slurm.deploy"
            return result
        step(f"{host}: {what}")
    check = verify(ctx, timeout)
    result["check"] = check
    step(f"REST call with a token of the new key: {check['evidence']}")
    result["result"] = bool(check["ok"])
    result["comment"] = (
        "JWT key rotated on " + ", ".join(hosts) + "; earlier tokens are refused"
        if check["ok"]
        else "the key was delivered but a REST call with it failed: " + check["evidence"]
    )
    return result
