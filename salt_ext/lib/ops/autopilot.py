"""Autopilot: the cluster heals itself through Salt's event bus.

Flow: the ``slurm`` beacon on each machine (``salt_ext/beacons/slurm.py``, rules in
:mod:`salt_ext.lib.node.signals`) fires ``salt/beacon/<id>/slurm/fault`` with cause names;
the master's reactor (``salt://slurm/reactor/autopilot.sls``) runs ``salt-run slurm.heal
node=<id> cause=<…>``; :func:`heal` re-checks with diagnose, decides with :func:`decide`
and applies the smallest fix; every decision is a record in the autopilot log
(``salt-run slurm.autopilot_log``) and an event ``salt/slurm/autopilot/<node>/<action>``.

Threat model and safety rules (each has a unit test in tests/unit/test_ops_autopilot.py):

1. **An event is a hint, never an order.** Any minion can fire any tag with any data (Salt
   does not bind a beacon tag or its ``id`` to the sender), so the event's node and cause
   only say where to look: the cause must be one of :data:`signals.CAUSES` and the node a
   machine of the master's slurm.conf, else the call fails before any minion is asked; what
   is done is decided from the master's own re-check (``slurm.diagnose``'s probe of the
   node and the controller), never from the event. A forged event costs one diagnose at
   most, and changes nothing on a healthy node.
2. **Bounded work per event.** A node gets at most one heal per :data:`COOLDOWN` seconds
   (checked and claimed in the store before any minion call: a flood of events costs a
   file read each), one heal at a time cluster-wide (the cluster lock), and its fixes are
   a fixed, small set (restart one daemon, re-sync the key or conf through the same states
   ``slurm.node`` runs). The beacon itself fires at most once per interval and backs off
   while a fault persists (signals.py). Repeated identical "did nothing" records are
   counted in one log entry, so the log stays bounded (:data:`LOG_KEEP` entries).
3. **Never act while a mutating operation runs.** ``heal`` takes the one cluster lock
   (journal.py) that deploy, apply_conf, rollback_conf, add/remove_node, rotate_munge_key
   and render_conf hold; held by another, it does nothing and logs "skipped". Its own
   journal entry leaves no trace in the operations' history.
4. **Never resume an admin's drain.** After a fix the node is resumed only when Slurm set
   its reason itself (``scontrol.reason_parts``: reason_by ``slurm``, as ``slurm.verify``
   tells them apart) and that reason is one the fix removed (:data:`RESUMABLE`, e.g. "Not
   responding" after a daemon restart). An admin's drain, and the autopilot's own "gave
   up" drain (set as root, so it reads as an admin's), stay: the daemon is still fixed.
5. **Back off per node.** At most ``slurm:autopilot:max_tries`` fixes (default 3) per node
   within ``window`` seconds (600). When one more would be needed, the node is drained
   with reason ``autopilot gave up: <cause>`` and left alone (no diagnose, no fix) until an
   admin resumes it, which re-arms it. A node an admin drained keeps the admin's reason.
6. **Never loop on its own events.** The reactor listens to ``salt/beacon/*/slurm/*``
   only; the autopilot fires ``salt/slurm/autopilot/…`` only. A fix that briefly stops a
   daemon does not count twice: the beacon skips checks during a state run
   (``disable_during_state_run``), the cooldown drops events that arrive during and
   right after a heal, and a heal that finds nothing wrong does nothing and counts no try.
7. **Health checks decide on the node.** A ``health:<check>`` or "health checks pass
   again" event makes the node run its own checks (``slurm_health.run apply=True``); the
   node drains with ``health: <check>: <detail>`` or resumes only the drain it made and
   remembers (salt_ext/lib/node/healthcheck.py), never another drain. A forged event costs
   one run of the node's checks.
8. **Events and records never carry secrets**: cause names, actions, node names, the
   evidence lines of diagnose (hashes at most) and the fix calls' error texts, cut short.

No Salt imports: the runner passes the context (ports, clock, journal) and the store's
directory (the master's cachedir).
"""

import contextlib
import fcntl
import json
import os

from salt_ext.lib.node import signals
from salt_ext.lib.ops import OpError, health, journal
from salt_ext.lib.ops import nodes as node_ops
from salt_ext.lib.util import fsutil

COOLDOWN = 4  # seconds between two heals of one node (the beacon's interval is >= 1)
LOG_KEEP = 500
GIVE_UP_PREFIX = "autopilot gave up: "
REGISTER_WAIT = 30  # seconds a fixed node gets to answer the controller again

# diagnose's cause (or the beacon's, for the controller) -> the fix the autopilot applies
FIX_OF = {
    "munged not running": "restart munge",
    "munged hung": "restart munge",
    "munge key mismatch": "sync key",
    signals.KEY_DIFFERS: "sync key",
    "slurmd not running": "restart slurmd",
    "slurmd hung": "restart slurmd",
    # the controller's own heal (its beacon); on a compute node's report a hung slurmctld
    # is the controller's fault, left to the controller's heal or a person
    "slurmctld not running": "restart slurmctld",
    "slurm.conf differs from the controller's": "sync conf",
    signals.CONF_DIFFERS: "sync conf",
}
# fixes in the order they run; a sync includes the restart it needs (the watch in the SLS)
FIX_ORDER = ("sync key", "restart munge", "sync conf", "restart slurmd", "restart slurmctld")
INCLUDES = {"sync key": {"restart munge"}, "sync conf": {"restart slurmd", "restart slurmctld"}}
# Slurm's own reasons (lower case prefixes) that the fixes remove: a node down or drained
# by Slurm for one of these is resumed once fixed
RESUMABLE = ("not responding", "node unexpectedly rebooted")


# ---------------------------------------------------------------------- policy
def policy(cfg):
    """The validated ``slurm:autopilot`` settings (salt_ext.lib.node.settings)."""
    auto = cfg["autopilot"]
    return {
        "enabled": auto["enabled"],
        "max_tries": auto["max_tries"],
        "window": auto["window"],
    }


def check_cause(cause):
    """The event's cause(s): a name or a comma-separated list of :data:`signals.CAUSES`."""
    if cause is None or cause == "":
        return []
    names = cause if isinstance(cause, (list, tuple)) else str(cause).split(",")
    names = [str(n).strip() for n in names if str(n).strip()]
    unknown = [n for n in names if not signals.is_cause(n)]
    if unknown:
        raise OpError(
            f"cause: {unknown[0][:80]!r} is not one the autopilot knows "
            f"({', '.join(signals.CAUSES)}, {signals.HEALTH_PREFIX}<check name>)"
        )
    return names


# ---------------------------------------------------------------------- the decision
def tries_in_window(history, now, window):
    return [t for t in (history or {}).get("tries", []) if now - t < window]


def own_give_up(state):
    """The node carries the autopilot's own "gave up" drain."""
    return bool(state) and (state.get("reason") or "").startswith(GIVE_UP_PREFIX)


def admin_drained(state):
    return bool(state and state.get("drained") and state.get("reason_by") == "admin")


def decide(diagnosed, state, history, now, pol, lock_holder=None):
    """The smallest action for one node.

    ``diagnosed``: cause names from the master's re-check; ``state``: the node's Slurm
    state (``scontrol.node_state`` form, None if unknown); ``history``: the node's record
    in the store; ``pol``: :func:`policy`; ``lock_holder``: the cluster lock's holder
    (None: free). Returns ``{"action": "skip" | "none" | "fix" | "give_up", "fixes":
    [...], "cause": str or None, "comment": str, "rearm": bool}``.
    """
    history = history or {}
    decision = {"action": "none", "fixes": [], "cause": None, "comment": "", "rearm": False}
    if lock_holder is not None:
        op = lock_holder.get("operation", "?")
        return {**decision, "action": "skip", "comment": f"slurm.{op} holds the cluster lock"}
    if history.get("gave_up"):
        if state is None or own_give_up(state):
            return {
                **decision,
                "action": "skip",
                "comment": "gave up on this node earlier; resume it to re-arm the autopilot",
            }
        decision["rearm"] = True  # an admin resumed it (or changed the reason): start over
        history = {}
    fixable = [c for c in diagnosed if c in FIX_OF]
    other = [c for c in diagnosed if c not in FIX_OF]
    if not fixable:
        if other:
            return {
                **decision,
                "cause": other[0],
                "comment": f"needs a person: {'; '.join(other)} (salt-run slurm.diagnose)",
            }
        return {**decision, "comment": "no fault found: nothing to do"}
    fixes = {FIX_OF[c] for c in fixable}
    for fix in list(fixes):
        fixes -= INCLUDES.get(fix, set())
    decision["fixes"] = [f for f in FIX_ORDER if f in fixes]
    decision["cause"] = fixable[0]
    if len(tries_in_window(history, now, pol["window"])) >= pol["max_tries"]:
        decision["action"] = "give_up"
        decision["comment"] = (
            f"{pol['max_tries']} fixes within {pol['window']} s did not last: "
            + (
                "the admin's drain stays; the autopilot stops here"
                if admin_drained(state)
                else f"draining with reason '{GIVE_UP_PREFIX}{fixable[0]}'"
            )
        )
        return decision
    decision["action"] = "fix"
    decision["comment"] = ", ".join(decision["fixes"])
    if other:
        decision["comment"] += f" (also found, for a person: {'; '.join(other)})"
    return decision


def should_resume(state):
    """Resume after a fix: Slurm itself holds the node down or drained for a reason the fix
    removed. Never an admin's drain, never the autopilot's own give-up."""
    if not state or state.get("usable"):
        return False
    if state.get("reason_by") != "slurm" or own_give_up(state):
        return False
    return (state.get("reason_text") or state.get("reason") or "").lower().startswith(RESUMABLE)


# ---------------------------------------------------------------------- the store
class Store:
    """Per-node history and the log, in ``<directory>/autopilot.json`` (0600), changed
    under its own flock (heals of several nodes may write in turn)."""

    def __init__(self, directory, clock):
        self.directory = directory
        self.clock = clock
        self.path = os.path.join(directory, "autopilot.json")
        self.lock_path = os.path.join(directory, "autopilot.lock")

    def _read(self):
        try:
            with open(self.path, encoding="utf-8") as handle:
                data = json.load(handle)
        except (OSError, ValueError):
            data = None
        if not isinstance(data, dict):
            data = {}
        data.setdefault("nodes", {})
        data.setdefault("log", [])
        return data

    @contextlib.contextmanager
    def _edit(self):
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            data = self._read()
            yield data
            del data["log"][:-LOG_KEEP]
            fsutil.atomic_write(self.path, json.dumps(data, sort_keys=True) + "\n", 0o600)
        finally:
            os.close(fd)

    def node(self, name):
        return dict(self._read()["nodes"].get(name) or {})

    def nodes(self):
        return self._read()["nodes"]

    def log(self, node=None, limit=50):
        entries = [e for e in self._read()["log"] if node is None or e.get("node") == node]
        return entries[-limit:] if limit else entries

    def claim(self, name, now, cooldown=COOLDOWN):
        """Start a heal of ``name`` unless one started less than ``cooldown`` s ago."""
        with self._edit() as data:
            entry = data["nodes"].setdefault(name, {})
            last = entry.get("last_heal")
            if isinstance(last, (int, float)) and 0 <= now - last < cooldown:
                return False
            entry["last_heal"] = now
            return True

    def update(self, name, **fields):
        with self._edit() as data:
            data["nodes"].setdefault(name, {}).update(fields)

    def add_try(self, name, now, window):
        with self._edit() as data:
            entry = data["nodes"].setdefault(name, {})
            entry["tries"] = [t for t in entry.get("tries", []) if now - t < window] + [now]

    def rearm(self, name):
        with self._edit() as data:
            entry = data["nodes"].setdefault(name, {})
            entry.pop("gave_up", None)
            entry["tries"] = []

    def record(self, rec):
        """Append ``rec`` to the log; the same "did nothing" as the node's last entry only
        counts up (a node whose fault waits for a person does not fill the log)."""
        with self._edit() as data:
            last = next((e for e in reversed(data["log"]) if e.get("node") == rec["node"]), None)
            quiet = rec["action"] in ("skip", "none")
            if (
                quiet
                and last
                and last["action"] == rec["action"]
                and last.get("comment") == rec.get("comment")
            ):
                last["count"] = last.get("count", 1) + 1
                last["last_at"] = rec["at"]
                return last
            data["log"].append(rec)
            if not quiet:
                data["nodes"].setdefault(rec["node"], {})["last_action"] = {
                    k: rec[k] for k in ("at", "action", "cause", "result", "comment")
                }
            return rec


# ---------------------------------------------------------------------- the heal
def _resolve(node, controller, node_minions):
    """``(NodeName, minion, role)`` for a NodeName or minion id of the master's slurm.conf."""
    if node in (None, ""):
        raise OpError("node: give the node's name or minion id")
    node = str(node)
    if node == controller:
        return controller, controller, "controller"
    if node in node_minions:
        return node, node_minions[node], "node"
    by_minion = {m: n for n, m in node_minions.items()}
    if node in by_minion:
        return by_minion[node], node, "node"
    raise OpError(f"node: {node[:80]!r} is neither the controller nor a node of slurm.conf")


def _controller_causes(ctx, controller):
    """The controller's own faults from its ``slurm_node.status`` against the master's
    files (diagnose covers compute nodes; its controller causes name a hung slurmctld)."""
    status = ctx.one(controller, "slurm_node.status")
    if status is None:
        return ["minion unreachable"], []
    daemons = status.get("daemons") or {}
    running = {d: daemons.get(d) for d in ("munge", "slurmctld") if d in daemons}
    served_conf = ctx.conf_store().read().get("slurm.conf")
    conf_hash = f"sha256:{fsutil.sha256_bytes(served_conf)}" if served_conf else None
    try:
        key_hash = ctx.master_keys().current_hash()
    except (OSError, OpError):
        key_hash = None
    found = signals.faults(
        running,
        (status.get("munge_key_hash"), key_hash),
        (status.get("slurm_conf_hash"), conf_hash),
    )
    evidence = [f"{controller}: {c}" for c in found]
    return found, evidence


def _recheck_daemons(ctx, minion, hint, diagnosed, evidence):
    """A daemon the event says is down and diagnose does not name (its probe leaves out a
    daemon whose binary cannot run: "not installed") is asked about directly, the way the
    beacon asks; the master's answer counts, not the event's."""
    for daemon, cause in (("munge", "munged not running"), ("slurmd", "slurmd not running")):
        if cause in hint and cause not in diagnosed:
            if ctx.one(minion, "slurm_node.daemon_running", [daemon]) is False:
                diagnosed = [cause, *diagnosed]
                evidence = [f"{minion}: slurm_node.daemon_running {daemon}: False", *evidence]
    return diagnosed, evidence


def _node_state(ctx, controller, name):
    states = ctx.one(controller, "slurm_controller.cluster_nodes")
    return (states or {}).get(name) if states is not None else None


def _apply_fix(ctx, fix, minion, role, timeout=120):
    """One fix on ``minion``: ``(ok, text)``."""
    if fix.startswith("restart "):
        daemon = fix.split()[1]
        answer = ctx.minions.call([minion], "slurm_node.restart", [daemon], timeout)[minion]
        return answer["ok"], (
            f"{daemon} restarted" if answer["ok"] else f"restart {daemon}: {answer['error']}"
        )
    sls = "slurm.controller" if role == "controller" else "slurm.node"
    sid = {
        "sync key": "slurm-munged",
        "sync conf": "slurm-slurmctld" if role == "controller" else "slurm-slurmd",
    }[fix]
    ok, changed, failures = ctx.apply_state([minion], sls, timeout, sls_id=sid)[minion]
    return ok, (
        f"state.sls_id {sid} {sls}: {changed} change(s)"
        if ok
        else f"state.sls_id {sid} {sls}: {'; '.join(map(str, failures))}"
    )


def _wait_registered(ctx, controller, name, timeout=REGISTER_WAIT):
    deadline = ctx.clock.monotonic() + timeout
    while True:
        state = _node_state(ctx, controller, name)
        if (state and state.get("responding") and state.get("registered")) or (
            state and should_resume(state)
        ):
            return state
        if ctx.clock.monotonic() > deadline:
            return state
        ctx.clock.sleep(1)


def heal(ctx, store, node, cause=None, fire=lambda tag, data: None):
    """Look at one node and apply the smallest fix (see the module docstring).

    ``fire(tag, data)`` sends an event on the master's bus. Returns ``{"result", "node",
    "action", "comment", "record"}``: ``result`` True when the node has no fault the
    autopilot handles afterwards.
    """
    hint = check_cause(cause)
    pol = policy(ctx.cfg)
    controller, node_minions = ctx.cluster()
    name, minion, role = _resolve(node, controller, node_minions)
    if not pol["enabled"]:
        return {
            "result": True,
            "node": name,
            "action": "off",
            "comment": "the autopilot is off (slurm:autopilot:enabled is false)",
        }
    now = ctx.clock.time()
    if not store.claim(name, now):
        return {
            "result": False,
            "node": name,
            "action": "skip",
            "comment": f"a heal of {name} started less than {COOLDOWN} s ago",
        }
    base = {"at": now, "node": name, "minion": minion, "event": hint}
    try:
        with ctx.journal.operation("heal", history=False, node=name):
            return _heal(ctx, store, pol, base, controller, role, fire)
    except journal.LockBusy as err:
        decision = decide([], None, store.node(name), now, pol, lock_holder=err.holder)
        rec = {**base, "action": "skip", "cause": None, "result": False, **_text(decision)}
        return _recorded(store, fire, name, rec)


def _text(decision):
    return {"comment": decision["comment"], "fixes": decision["fixes"]}


def _heal(ctx, store, pol, base, controller, role, fire):
    name = base["node"]
    history = store.node(name)
    health_hint = [c for c in base["event"] if signals.is_health(c)]
    if role == "node" and health_hint:
        if history.get("gave_up"):
            health_hint = []  # left alone until an admin resumes it
        elif len(health_hint) == len(base["event"]):
            return _heal_health(ctx, store, base, fire)
    result = _heal_faults(ctx, store, pol, base, controller, role, fire, history)
    if health_hint:
        _heal_health(ctx, store, {**base, "event": health_hint}, fire)
    return result


def _heal_health(ctx, store, base, fire):
    """A health check's event: the node runs its checks and applies the drain / resume
    rule itself (``slurm_health.run apply=True``, salt_ext/lib/node/healthcheck.py: it
    only ever resumes the drain it made, which only the node remembers)."""
    name, minion = base["node"], base["minion"]
    out = ctx.one(minion, "slurm_health.run", [True], timeout=90)
    rec = {**base, "fixes": [], "diagnosed": [], "evidence": []}
    if not isinstance(out, dict):
        rec.update(
            action="none",
            cause=base["event"][0],
            result=False,
            comment=f"slurm_health.run on {minion}: {str(out)[:200] if out else 'no answer'}",
        )
    else:
        failed = [r for r in out.get("results") or [] if not r.get("ok")]
        action = out.get("action") or "none"
        rec.update(
            action=action if action in ("drain", "resume") else "none",
            cause=(
                f"{signals.HEALTH_PREFIX}{failed[0]['name']}"
                if failed
                else signals.HEALTH_PASSES
                if action == "resume"
                else None
            ),
            diagnosed=[f"{signals.HEALTH_PREFIX}{r['name']}" for r in failed],
            evidence=[f"{minion}: {r['name']}: {str(r.get('detail'))[:200]}" for r in failed][:12],
            result=action in ("drain", "resume") or not failed,
            comment=str(out.get("comment") or "")[:300],
        )
        if action == "drain":
            rec["drained"] = out.get("record")
        if action == "resume":
            rec["resumed"] = True
    return _recorded(store, fire, name, rec)


def _recorded(store, fire, name, rec):
    """Keep ``rec`` in the autopilot log, send it as ``salt/slurm/autopilot/<node>/<action>``
    and return heal's result."""
    rec = store.record(rec)
    fire(f"salt/slurm/autopilot/{name}/{rec['action']}", rec)
    return {
        "result": rec["result"],
        "node": name,
        "action": rec["action"],
        "comment": rec["comment"],
        "record": rec,
    }


def _heal_faults(ctx, store, pol, base, controller, role, fire, history):
    name, minion, now = base["node"], base["minion"], base["at"]
    state = _node_state(ctx, controller, name) if role == "node" else None
    if history.get("gave_up") and (state is None or own_give_up(state)):
        diagnosed, evidence = [], []  # left alone: no probe until an admin resumes it
    elif role == "controller":
        diagnosed, evidence = _controller_causes(ctx, controller)
    else:
        report = health.diagnose(ctx, [name]).get("nodes", {}).get(name) or {}
        diagnosed = [c["cause"] for c in report.get("causes", [])]
        evidence = [line for c in report.get("causes", []) for line in c["evidence"]][:12]
        diagnosed, evidence = _recheck_daemons(ctx, minion, base["event"], diagnosed, evidence)
    decision = decide(diagnosed, state, history, now, pol)
    if decision["rearm"]:
        store.rearm(name)
    rec = {
        **base,
        "diagnosed": diagnosed,
        "evidence": [str(e)[:300] for e in evidence],
        "action": decision["action"],
        "cause": decision["cause"],
        "result": decision["action"] == "none" and not decision["cause"],
        **_text(decision),
    }
    if decision["action"] == "give_up":
        reason = GIVE_UP_PREFIX + decision["cause"]
        if not admin_drained(state) and role == "node":
            node_ops.set_state(ctx, [name], "DRAIN", reason)
            rec["drained"] = reason
        store.update(name, gave_up={"at": now, "cause": decision["cause"]})
        rec["result"] = False
    elif decision["action"] == "fix":
        store.add_try(name, now, pol["window"])
        steps, ok = [], True
        for fix in decision["fixes"]:
            done, text = _apply_fix(ctx, fix, minion, role)
            steps.append({"fix": fix, "ok": done, "text": str(text)[:400]})
            ok = ok and done
            if not done:
                break
        rec["steps"] = steps
        if ok and role == "node":
            after = _wait_registered(ctx, controller, name)
            if should_resume(after):
                node_ops.set_state(ctx, [name], "RESUME")
                rec["resumed"] = True
                after = _node_state(ctx, controller, name)
            rec["state_after"] = (after or {}).get("raw_state")
            ok = bool(after and after.get("registered"))
            if admin_drained(after):
                rec["comment"] += f"; the admin's drain stays ({after.get('reason')})"
        rec["result"] = ok
    return _recorded(store, fire, name, rec)


# ---------------------------------------------------------------------- views
def node_summary(history, now, pol):
    """One status cell: the last action and the backoff (tries in the window)."""
    if not history:
        return None
    tries = len(tries_in_window(history, now, pol["window"]))
    if history.get("gave_up"):
        return f"gave up ({history['gave_up'].get('cause')})"
    last = history.get("last_action")
    text = f"{last['action']} {last.get('comment') or ''}".strip()[:40] if last else "-"
    return f"{text} [{tries}/{pol['max_tries']}]" if tries else text


def annotate(rows, store, now, pol):
    """``slurm.status`` rows get an ``autopilot`` cell (last action, backoff) when the
    autopilot is on."""
    if not pol["enabled"]:
        return rows
    histories = store.nodes()
    for row in rows:
        row["autopilot"] = node_summary(histories.get(row["node"]), now, pol)
    return rows


def format_log(entries, clock_fmt):
    lines = []
    for e in entries:
        count = f" (x{e['count']}, last {clock_fmt(e['last_at'])})" if e.get("count") else ""
        mark = "ok" if e.get("result") else "--" if e["action"] in ("skip", "none") else "FAILED"
        lines.append(
            f"{clock_fmt(e['at'])} {e['node']:<10} {e['action']:<8} {mark:<6} "
            f"{e.get('cause') or '-'}: {e.get('comment')}{count}"
        )
        for step in e.get("steps") or []:
            lines.append(f"    {step['fix']}: {'ok' if step['ok'] else 'FAILED'} {step['text']}")
        if e.get("resumed"):
            lines.append(
                "    resumed (the health drain it made)"
                if e["action"] == "resume"
                else "    resumed (Slurm's own reason, removed by the fix)"
            )
        if e.get("drained"):
            lines.append(f"    drained: {e['drained']}")
    return "\n".join(lines) if lines else "the autopilot has done nothing yet"
