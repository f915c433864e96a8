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
    dead = unfinished_rotation(ctx)
    if dead:
        # the hosts may hold either key: a token could be refused at random
        raise OpError(f"{dead['cause']}: {dead['fix']}, then ask for a token again")
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
def unfinished_rotation(ctx):
    """A ``slurm.rotate_jwt_key`` whose master died before it proved or rolled back (the
    journal's interrupted entry), as a diagnose cause; None when there is none."""
    dead = [e for e in ctx.journal.unfinished() if e.get("operation") == OPERATION]
    if not dead:
        return None
    jwt = ctx.jwt_key()
    return {
        "cause": "an unfinished JWT key rotation",
        "evidence": [
            _died(dead[-1]),
            f"master: {_short(jwt.current_hash())}, previous key "
            f"{_short(jwt.previous_hash())} kept until the rotation is proven",
        ],
        "fix": "salt-run slurm.rotate_jwt_key (it finishes the rotation or rolls it back)",
    }


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
OPERATION = "rotate_jwt_key"


def rotate(ctx, timeout=120):
    """A new JWT key everywhere, crash-safe (the order and its reasons:
    :class:`JwtRotation`). ``{"result", "key_hash": {"old", "new"}, "steps", "check",
    "comment"}``; on a failure also ``failed`` and ``rolled_back``."""
    cfg = ctx.cfg
    if not enabled(cfg):
        raise OpError("the REST API is off (slurm:restd:enabled is false): no key to rotate")
    hosts = key_hosts(cfg)
    _, silent = ctx.reachable(hosts)
    if silent:
        raise OpError(
            f"{', '.join(silent)} do(es) not answer: nothing changed; the key must change on "
            "every machine that holds it"
        )
    if ctx.jwt_key().current_hash() is None:
        raise OpError(
            "the master has no JWT key yet: nothing to rotate; `salt-run slurm.deploy` with "
            "slurm:restd:enabled makes and delivers one"
        )
    with ctx.journal.operation(OPERATION) as entry:
        return JwtRotation(ctx, hosts, timeout, entry).run()


class _Failed(Exception):
    """A step of the rotation or of its rollback failed: ``step`` and ``{where: evidence}``."""

    def __init__(self, step, failed):
        super().__init__(step)
        self.step = step
        self.failed = failed

    def text(self):
        return f"{self.step}: " + "; ".join(f"{k}: {v}" for k, v in self.failed.items())


class JwtRotation:
    """One ``slurm.rotate_jwt_key``. slurmctld and slurmdbd read the key only at start, so
    a host with the new key file but a daemon not restarted, or the reverse, refuses
    every token; the order keeps a way back at every point:

    1. every key host answers (checked by :func:`rotate`, before any change);
    2. the master keeps its key as ``jwt_hs256.key.previous`` (0600) and writes a new one;
       the journal says so first (``dirty``: a master that dies from here on leaves an
       entry the next run finishes);
    3. the new key to every key host (one parallel call); slurmdbd, slurmctld and
       slurmrestd restarted, one at a time;
    4. proof: every host holds the new key's hash and a REST call with a token signed
       from the controller's key answers. Only then is the previous key deleted.

    Any failure in 3-4 puts the previous key back on the master and on every host, restarts
    what this run restarted (the daemons not restarted still run the old key from memory)
    and proves the old key the same way: ``result: False``, "rolled back". When the
    rollback fails too, the report names each host's key hash and the command that
    finishes it.

    A master that died mid-rotation leaves the previous key on disk: the next run finishes
    that rotation (delivers the unproven key, restarts every daemon, proves it) instead of
    making another key, with the same rollback; which daemons the dead run restarted is
    unknown, so a rollback then restarts all of them.
    """

    def __init__(self, ctx, hosts, timeout, entry):
        self.ctx = ctx
        self.cfg = ctx.cfg
        self.hosts = hosts
        self.timeout = timeout
        self.entry = entry
        self.jwt = ctx.jwt_key()
        self.steps = []
        self.report = {"result": False, "steps": self.steps}

    # ------------------------------------------------------------------ plumbing
    def _step(self, message):
        self.steps.append(message)
        self.ctx.progress(message)

    def _record(self, step, **data):
        self.ctx.journal.record(self.entry, step, **data)

    def _restarts(self):
        """``(host, daemon)`` in order: slurmdbd (it reads the key only at start; SIGHUP
        does not reload it), slurmctld (``scontrol reconfigure`` does not reload the key in
        22.05: tokens of the new key were refused with HTTP 500 on the bed), slurmrestd."""
        acct = self.cfg.get("accounting") or {}
        order = [(acct["host"], "slurmdbd")] if acct.get("enabled") else []
        controller = self.cfg["controller"]
        return [*order, (controller, "slurmctld"), (controller, "slurmrestd")]

    def _dead_runs(self):
        """Entries of rotations whose master died (the journal's interrupted ones)."""
        return [e for e in self.ctx.journal.interrupted() if e.get("operation") == OPERATION]

    # ------------------------------------------------------------------ the run
    def run(self):
        dead = self._dead_runs()
        old, new, resumed = self._begin(dead)
        # the daemons a dead run may have restarted are unknown: a rollback restarts all
        self.unknown_restarts = bool(dead) or resumed
        self.report["key_hash"] = {"old": old, "new": new}
        restarted = []
        try:
            self._deliver(new, "the new key")
            for host, daemon in self._restarts():
                restarted.append((host, daemon))
                self._restart(host, daemon)
            self._prove(new, "the new key")
        except _Failed as err:
            return self._fail(err, old, restarted)
        except Exception as err:  # noqa: BLE001 - any failure before the proof rolls back
            return self._fail(
                _Failed("rotation", {"error": f"{type(err).__name__}: {err}"[:300]}), old, restarted
            )
        self._record("proven: deleting the previous key on the master")
        self.jwt.commit()
        self._resolve(dead, "finished by a later slurm.rotate_jwt_key")
        self._step(f"proven; the previous key {_short(old)} deleted on the master")
        self.report["result"] = True
        self.report["comment"] = (
            f"JWT key {_short(old)} -> {_short(new)} on {', '.join(self.hosts)}; "
            "earlier tokens are refused"
            + ("; it finished the rotation a dead run had begun" if resumed else "")
        )
        return self.report

    def _begin(self, dead):
        """``(old, new, resumed)``: a new key on the master with the old one kept, or the
        key pair a dead run left."""
        old, new = self.jwt.previous_hash(), self.jwt.current_hash()
        where = _died(dead[-1]) if dead else "an earlier slurm.rotate_jwt_key stopped"
        if old is not None and old != new:
            self._step(
                f"{where}: finishing it: {_short(new)} to every host, {_short(old)} kept on "
                "the master until proven"
            )
            self._record("finishing an unfinished rotation", dirty=True, key_hash=[old, new])
            return old, new, True
        if old is not None:  # it died between keeping the old key and writing a new one
            self._step(f"{where} before it made a new key: starting again")
            self.jwt.commit()
        elif dead:
            self._step(
                f"{where}: the master holds no second key; a new rotation puts every host "
                "on one key"
            )
        old = new
        self._record(
            "writing a new JWT key on the master (the previous one kept until proven)",
            dirty=True,
        )
        new = self.jwt.begin()
        self._record("new key written", key_hash=[old, new])
        self._step(f"new JWT key on the master ({_short(new)}), {_short(old)} kept until proven")
        return old, new, False

    def _deliver(self, key_hash, what):
        self._record(f"delivering {what} to {', '.join(self.hosts)}")
        answers = self.ctx.minions.call(self.hosts, "slurm_restd.jwt_key", [], self.timeout)
        failed = {h: str(a.get("error"))[:300] for h, a in answers.items() if not a.get("ok")}
        failed.update({h: "no answer" for h in self.hosts if h not in answers})
        if failed:
            raise _Failed(f"deliver {what} ({_short(key_hash)})", failed)
        self._step(f"{what} ({_short(key_hash)}) on {', '.join(self.hosts)}")

    def _restart(self, host, daemon):
        self._record(f"restarting {daemon} on {host}")
        answer = self.ctx.minions.call(
            [host], "slurm_node.daemon_control", [daemon, "restart"], self.timeout
        ).get(host) or {"ok": False, "error": "no answer"}
        if not answer.get("ok"):
            raise _Failed(f"restart {daemon}", {host: str(answer.get("error"))[:300]})
        self._step(f"{host}: {daemon} restarted")

    def _hashes(self):
        """``{host: key hash, None (no key) or "no answer"}``."""
        answers = self.ctx.minions.call(self.hosts, "slurm_restd.key_hash", [], self.timeout)
        return {
            h: (answers[h]["ret"] if (answers.get(h) or {}).get("ok") else "no answer")
            for h in self.hosts
        }

    def _prove(self, key_hash, what):
        """Every host holds ``key_hash`` and a REST call with a token signed from the
        controller's key file (so: of ``key_hash``) answers."""
        self._record(f"proving {what}")
        wrong = {h: f"holds {got}" for h, got in self._hashes().items() if got != key_hash}
        if wrong:
            raise _Failed(f"every host holds {what} ({_short(key_hash)})", wrong)
        check = verify(self.ctx, self.timeout)
        self.report["check"] = check
        if not check["ok"]:
            raise _Failed(
                f"a REST call with a token of {what} ({_short(key_hash)})",
                {self.cfg["controller"]: check["evidence"]},
            )
        self._step(f"REST call with a token of {what} ({_short(key_hash)}): {check['evidence']}")

    # ------------------------------------------------------------------ failure
    def _fail(self, err, old, restarted):
        self._step(f"FAILED: {err.text()}")
        self.report["failed"] = {"step": err.step, **err.failed}
        back = self.report["rolled_back"] = self._roll_back(old, restarted)
        if back["result"]:
            self._resolve(self._dead_runs(), "rolled back by a later slurm.rotate_jwt_key")
            self.report["comment"] = (
                f"JWT key NOT rotated, rolled back: {err.text()}. Every host and the master "
                f"hold {_short(old)} again and a REST call with a token of it answers; tokens "
                "made before still work. Fix the cause and run slurm.rotate_jwt_key again"
            )
        else:
            holds = "; ".join(f"{h} holds {k}" for h, k in back["holds"].items())
            master = self.jwt.current_hash()
            if self.jwt.previous_hash():
                master = f"{master} (and {self.jwt.previous_hash()} as previous)"
            self.report["comment"] = (
                f"JWT key NOT rotated: {err.text()}. The rollback FAILED too: "
                f"{back['comment']}. Now: the master holds {master}; {holds}. Fix that, then "
                "run `salt-run slurm.deploy` (it delivers the master's key and restarts the "
                "daemons that started before their key file changed), then "
                "`salt-run slurm.verify`"
            )
        return self.report

    def _roll_back(self, old, restarted):
        restarts = self._restarts() if self.unknown_restarts else restarted
        self._step(f"rolling back to {_short(old)}")
        try:
            self._record("rolling back: the previous key back on the master", dirty=True)
            self.jwt.restore()
            self._deliver(old, "the old key")
            for host, daemon in restarts:
                self._restart(host, daemon)
            self._prove(old, "the old key")
        except _Failed as err:
            return {"result": False, "comment": err.text(), "holds": self._safe_hashes()}
        except Exception as err:  # noqa: BLE001 - reported with each host's key
            return {
                "result": False,
                "comment": f"{type(err).__name__}: {err}"[:300],
                "holds": self._safe_hashes(),
            }
        self._step(f"rolled back: {_short(old)} on the master and {', '.join(self.hosts)}, proven")
        return {"result": True, "comment": f"{_short(old)} everywhere again, proven by a REST call"}

    def _safe_hashes(self):
        try:
            return self._hashes()
        except Exception as err:  # noqa: BLE001 - the report must still be made
            return {h: f"unknown ({type(err).__name__})" for h in self.hosts}

    def _resolve(self, dead, how):
        if dead:
            self.ctx.journal.resolve_interrupted(how, operation=OPERATION)


def _short(key_hash):
    return f"{key_hash[:19]}…" if key_hash else "none"


def _died(entry):
    steps = entry.get("steps") or [{}]
    return (
        f"slurm.rotate_jwt_key (pid {entry.get('pid')}) died at step '{steps[-1].get('step', '?')}'"
    )
