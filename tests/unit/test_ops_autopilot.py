"""The autopilot's rules (salt_ext/lib/ops/autopilot.py docstring), with a fake clock and a
fake cluster behind the context's ports; and the beacon's rules (lib/node/signals.py)."""

import os
import stat
import threading

import pytest

from salt_ext.lib.node import scontrol, settings, signals
from salt_ext.lib.ops import OpError, autopilot, health, journal
from salt_ext.lib.ops.context import Context
from tests.unit.fakecluster import Clock

POL = {"enabled": True, "max_tries": 3, "window": 600}


def state(raw="IDLE", reason=None, usable=True, drained=False):
    parts = scontrol.reason_parts(reason)
    return {
        "raw_state": raw,
        "reason": reason,
        "usable": usable,
        "responding": "*" not in raw,
        "registered": usable or drained,
        "drained": drained,
        **parts,
    }


ADMIN_DRAIN = state(
    "IDLE+DRAIN", "BIOS update [alice@2026-11-28T10:00:00]", usable=False, drained=True
)
SLURM_DOWN = state("DOWN*", "Not responding [slurm@2026-11-28T10:00:00]", usable=False)
GAVE_UP = state(
    "IDLE+DRAIN",
    "autopilot gave up: slurmd not running [root@2026-11-28T10:00:00]",
    usable=False,
    drained=True,
)


# ---------------------------------------------------------------------- decide
def test_lock_held_means_no_action():
    d = autopilot.decide(["slurmd not running"], state(), {}, 0, POL, {"operation": "deploy"})
    assert d["action"] == "skip" and d["fixes"] == []
    assert "slurm.deploy holds the cluster lock" in d["comment"]


@pytest.mark.parametrize(
    ("diagnosed", "fixes"),
    [
        (["slurmd not running"], ["restart slurmd"]),
        (["slurmd hung"], ["restart slurmd"]),
        (["munged not running"], ["restart munge"]),
        (["munged not running", "slurmd not running"], ["restart munge", "restart slurmd"]),
        # a key sync runs slurm.node's munged state: it restarts munged itself
        (["munged not running", "munge key mismatch"], ["sync key"]),
        (["slurm.conf differs from the controller's", "slurmd not running"], ["sync conf"]),
        (["slurmctld not running"], ["restart slurmctld"]),
    ],
)
def test_smallest_fix_for_each_cause(diagnosed, fixes):
    d = autopilot.decide(diagnosed, state(), {}, 0, POL)
    assert d["action"] == "fix" and d["fixes"] == fixes and d["cause"] == diagnosed[0]


def test_causes_for_a_person_are_not_touched():
    d = autopilot.decide(["clock skew", "slurmctld hung"], state(), {}, 0, POL)
    assert d["action"] == "none" and d["fixes"] == []
    assert d["comment"].startswith("needs a person: clock skew")


def test_nothing_found_does_nothing():
    d = autopilot.decide([], state(), {}, 0, POL)
    assert d == {
        "action": "none",
        "fixes": [],
        "cause": None,
        "comment": "no fault found: nothing to do",
        "rearm": False,
    }


def test_three_tries_in_the_window_then_give_up():
    clock = Clock()
    t0 = clock.now
    history = {"tries": [t0, t0 + 60, t0 + 120]}
    d = autopilot.decide(["slurmd not running"], state(), history, t0 + 180, POL)
    assert d["action"] == "give_up"
    assert "draining with reason 'autopilot gave up: slurmd not running'" in d["comment"]
    # tries older than the window no longer count
    d = autopilot.decide(["slurmd not running"], state(), history, t0 + 650, POL)
    assert d["action"] == "fix"


def test_give_up_keeps_an_admins_drain():
    history = {"tries": [0, 1, 2]}
    d = autopilot.decide(["slurmd not running"], ADMIN_DRAIN, history, 3, POL)
    assert d["action"] == "give_up" and "the admin's drain stays" in d["comment"]


def test_after_giving_up_the_node_is_left_alone_until_resumed():
    history = {"gave_up": {"at": 0, "cause": "slurmd not running"}, "tries": [0, 1, 2]}
    d = autopilot.decide(["slurmd not running"], GAVE_UP, history, 5000, POL)
    assert d["action"] == "skip" and "resume it to re-arm" in d["comment"]
    # state unknown (controller silent): still left alone
    assert autopilot.decide(["slurmd not running"], None, history, 5000, POL)["action"] == "skip"
    # an admin resumed it: re-armed, with a fresh try count
    d = autopilot.decide(["slurmd not running"], state(), history, 10, POL)
    assert d["action"] == "fix" and d["rearm"] is True


def test_resume_only_slurms_own_reason_that_the_fix_removed():
    assert autopilot.should_resume(SLURM_DOWN) is True
    assert autopilot.should_resume(ADMIN_DRAIN) is False
    assert autopilot.should_resume(GAVE_UP) is False
    assert autopilot.should_resume(state()) is False
    kill_task = state("DRAIN", "Kill task failed [slurm@2026-11-28T10:00:00]", usable=False)
    assert autopilot.should_resume(kill_task) is False  # Slurm's, but no fix removed it
    # an admin who writes Slurm's words is still an admin (the user tells)
    fake = state("DOWN", "Not responding [alice@2026-11-28T10:00:00]", usable=False)
    assert autopilot.should_resume(fake) is False


def test_event_cause_is_checked_against_the_known_names():
    assert autopilot.check_cause("slurmd not running,munged not running") == [
        "slurmd not running",
        "munged not running",
    ]
    assert autopilot.check_cause(None) == []
    with pytest.raises(OpError, match="^cause: 'rm -rf /'"):
        autopilot.check_cause("rm -rf /")


# ---------------------------------------------------------------------- the store
def test_store_is_private_bounded_and_counts_repeats(tmp_path):
    store = autopilot.Store(str(tmp_path / "slurm"), Clock())
    rec = {"at": 1, "node": "n1", "action": "skip", "comment": "x", "cause": None}
    store.record(dict(rec))
    store.record({**rec, "at": 2})
    log = store.log()
    assert len(log) == 1 and log[0]["count"] == 2 and log[0]["last_at"] == 2
    assert stat.S_IMODE(os.stat(store.path).st_mode) == 0o600
    for i in range(autopilot.LOG_KEEP + 20):
        store.record({**rec, "action": "fix", "at": i, "result": True, "comment": str(i)})
    assert len(store.log(limit=0)) == autopilot.LOG_KEEP
    assert store.node("n1")["last_action"]["action"] == "fix"


def test_claim_bounds_heals_per_node(tmp_path):
    store = autopilot.Store(str(tmp_path), Clock())
    assert store.claim("n1", 100) is True
    assert store.claim("n1", 101) is False  # a flood of events: one heal per cooldown
    assert store.claim("n2", 101) is True
    assert store.claim("n1", 100 + autopilot.COOLDOWN) is True


# ---------------------------------------------------------------------- heal, end to end
class FakeMinions:
    """The controller's view of n1/n2 and what the fixes do to it."""

    def __init__(self, states, restart_works=True):
        self.states = states
        self.calls = []
        self.restart_works = restart_works
        self.daemon_running = True
        self.health = {}

    def call(self, targets, fun, arg=(), timeout=120):
        (target,) = targets
        self.calls.append((fun, target, list(arg)))
        if fun == "slurm_controller.cluster_nodes":
            return {target: {"ok": True, "ret": dict(self.states), "error": None}}
        if fun == "slurm_health.run":
            return {target: {"ok": True, "ret": self.health[target], "error": None}}
        if fun == "slurm_node.daemon_running":
            return {target: {"ok": True, "ret": self.daemon_running, "error": None}}
        if fun == "slurm_node.restart":
            if not self.restart_works:
                return {target: {"ok": False, "ret": None, "error": "slurmd did not start"}}
            current = self.states[target]
            if current["drained"]:
                self.states[target] = {**current, "registered": True, "responding": True}
            elif current["reason_by"] != "slurm":
                self.states[target] = state()
            return {target: {"ok": True, "ret": {"restarted": arg}, "error": None}}
        if fun == "slurm_controller.update_nodes":
            nodes, what, reason = arg
            if what == "RESUME":
                self.states[nodes] = state()
            else:
                self.states[nodes] = state(
                    "IDLE+DRAIN", f"{reason} [root@2026-11-28T10:00:00]", False, True
                )
            return {target: {"ok": True, "ret": [nodes], "error": None}}
        raise AssertionError(fun)

    def apply_state(self, targets, sls, timeout, sls_id=None, report=()):
        self.calls.append(("state", targets[0], [sls, sls_id]))
        return {targets[0]: (True, 1, []) + (({},) if report else ())}


class FakeMaster:
    def mine_hardware(self, *a, **k):
        return {}


@pytest.fixture
def world(tmp_path, monkeypatch):
    clock = Clock()
    minions = FakeMinions({"n1": state(), "n2": state()})
    conf = "NodeName=n1 CPUs=1\nNodeName=n2 CPUs=1\nPartitionName=p Nodes=ALL\n"
    pillar = {"controller": "ctl", "autopilot": {"enabled": True}}
    ctx = Context(
        minions,
        FakeMaster(),
        lambda: settings.validate(pillar),
        journal.Journal(str(tmp_path / "slurm"), clock=clock.time),
        clock=clock,
    )
    ctx.cluster = lambda: ("ctl", {"n1": "n1", "n2": "n2"})
    diagnosed = {"n1": [], "n2": []}

    def fake_diagnose(_ctx, nodes, timeout=30):
        return {
            "nodes": {
                n: {"causes": [{"cause": c, "evidence": [f"{n}: {c}"]} for c in diagnosed[n]]}
                for n in nodes
            }
        }

    monkeypatch.setattr(health, "diagnose", fake_diagnose)
    store = autopilot.Store(str(tmp_path / "slurm"), clock)
    events = []
    world = {
        "ctx": ctx,
        "clock": clock,
        "minions": minions,
        "diagnosed": diagnosed,
        "store": store,
        "events": events,
        "conf": conf,
        "pillar": pillar,
    }
    world["heal"] = lambda node, cause="slurmd not running": autopilot.heal(
        ctx, store, node, cause, fire=lambda tag, data: events.append((tag, data))
    )
    return world


def fixes_run(world):
    return [c for c in world["minions"].calls if c[0] in ("slurm_node.restart", "state")]


def test_heal_restarts_slurmd_and_resumes_a_node_slurm_marked_down(world):
    world["diagnosed"]["n2"] = ["slurmd not running"]
    world["minions"].states["n2"] = dict(SLURM_DOWN)

    result = world["heal"]("n2")
    assert result["result"] is True and result["action"] == "fix", result
    assert fixes_run(world) == [("slurm_node.restart", "n2", ["slurmd"])]
    rec = world["store"].log()[-1]
    assert rec["resumed"] is True and rec["cause"] == "slurmd not running"
    assert world["events"][-1][0] == "salt/slurm/autopilot/n2/fix"
    assert world["store"].node("n2")["tries"] == [world["clock"].now]


def test_heal_keeps_an_admins_drain(world):
    world["diagnosed"]["n1"] = ["slurmd not running"]
    world["minions"].states["n1"] = dict(ADMIN_DRAIN)
    result = world["heal"]("n1")
    assert result["result"] is True, result
    assert fixes_run(world) == [("slurm_node.restart", "n1", ["slurmd"])]
    assert not any(c[2][1:2] == ["RESUME"] for c in world["minions"].calls)
    assert world["minions"].states["n1"]["reason_by"] == "admin"
    assert "the admin's drain stays" in result["comment"]


def test_heal_does_nothing_while_an_operation_holds_the_lock(world):
    world["diagnosed"]["n2"] = ["slurmd not running"]
    with world["ctx"].journal.operation("rotate_munge_key"):
        # the runner is another thread in the master's reactor: its own lock holder
        out = {}
        thread = threading.Thread(target=lambda: out.update(world["heal"]("n2")))
        thread.start()
        thread.join()
    assert out["action"] == "skip" and out["result"] is False
    assert "slurm.rotate_munge_key holds the cluster lock" in out["comment"]
    # the same shape as every other heal result: the record that went to the log
    assert out["record"]["action"] == "skip" and out["record"]["node"] == "n2"
    assert fixes_run(world) == [] and world["minions"].calls == []
    # the heal left no entry in the operations' history
    assert [e["operation"] for e in world["ctx"].journal.history()] == ["rotate_munge_key"]


def test_heal_backs_off_then_drains_and_stops(world):
    world["minions"].restart_works = False
    world["diagnosed"]["n1"] = ["slurmd not running"]
    clock = world["clock"]
    results = []
    for _ in range(3):
        results.append(world["heal"]("n1"))
        clock.now += 60
    assert [r["action"] for r in results] == ["fix"] * 3
    assert all(r["result"] is False for r in results)
    gave_up = world["heal"]("n1")
    assert gave_up["action"] == "give_up" and gave_up["result"] is False
    assert (
        world["minions"].states["n1"]["reason"].startswith("autopilot gave up: slurmd not running")
    )
    assert len(fixes_run(world)) == 3
    # and stops: later events change nothing and probe nothing
    calls = len(world["minions"].calls)
    clock.now += 60
    later = world["heal"]("n1")
    assert later["action"] == "skip" and len(fixes_run(world)) == 3
    assert [c[0] for c in world["minions"].calls[calls:]] == ["slurm_controller.cluster_nodes"]
    # the admin resumes it: re-armed
    world["minions"].states["n1"] = state()
    world["minions"].restart_works = True
    clock.now += 60
    assert world["heal"]("n1")["action"] == "fix"


def test_a_flood_of_events_costs_one_heal(world):
    world["diagnosed"]["n2"] = ["slurmd not running"]
    results = [world["heal"]("n2") for _ in range(50)]
    assert [r["action"] for r in results].count("fix") == 1
    assert len(fixes_run(world)) == 1
    assert {r["comment"] for r in results[1:]} == {
        f"a heal of n2 started less than {autopilot.COOLDOWN} s ago"
    }


def test_a_forged_event_on_a_healthy_node_changes_nothing(world):
    result = world["heal"]("n1", "munge key differs from the master's")
    assert result["action"] == "none" and result["result"] is True
    assert fixes_run(world) == []
    assert world["store"].node("n1").get("tries") is None


def test_bad_node_or_cause_fails_before_any_call(world):
    with pytest.raises(OpError, match="^node: 'n9'"):
        world["heal"]("n9")
    with pytest.raises(OpError, match="^cause: "):
        world["heal"]("n1", "something else")
    assert world["minions"].calls == []


def test_heal_is_off_unless_the_pillar_enables_it(world):
    world["pillar"]["autopilot"]["enabled"] = False
    world["ctx"]._cfg = None  # noqa: SLF001 - compiled again from the changed pillar
    world["diagnosed"]["n1"] = ["slurmd not running"]
    assert world["heal"]("n1")["action"] == "off"
    assert world["minions"].calls == []


def test_conf_drift_is_fixed_by_slurm_nodes_own_state(world):
    world["diagnosed"]["n1"] = ["slurm.conf differs from the controller's"]
    result = world["heal"]("n1", "slurm.conf differs from the master's")
    assert result["action"] == "fix", result
    assert fixes_run(world) == [("state", "n1", ["slurm.node", "slurm-slurmd"])]


def test_records_and_events_carry_no_secret(world):
    world["diagnosed"]["n1"] = ["munge key mismatch"]
    world["heal"]("n1", "munge key differs from the master's")
    text = repr(world["store"].log()) + repr(world["events"])
    assert "munge.key" not in text or "sha256" in text
    assert set(world["events"][-1][1]) <= {
        "at",
        "node",
        "minion",
        "event",
        "diagnosed",
        "evidence",
        "action",
        "cause",
        "result",
        "comment",
        "fixes",
        "steps",
        "state_after",
        "resumed",
        "drained",
    }


# ---------------------------------------------------------------------- the beacon's rules
def test_signals_name_faults_without_values():
    running = {"munge": True, "slurmd": False}
    found = signals.faults(running, ("sha256:a", "sha256:b"), ("sha256:c", "sha256:c"))
    assert found == ["slurmd not running", signals.KEY_DIFFERS]
    assert signals.faults({"munge": True}, (None, "sha256:b")) == [signals.KEY_DIFFERS]
    assert signals.faults({"munge": True}, ("sha256:a", None)) == []  # master silent
    assert signals.event(found, "node") == {"tag": "fault", "causes": found, "role": "node"}


def test_signals_fire_at_once_then_back_off():
    memory = {}
    fired = [t for t in range(0, 2000) if signals.due(memory, ["slurmd not running"], t, 5)]
    assert fired[:6] == [0, 5, 10, 15, 20, 25]
    gaps = [b - a for a, b in zip(fired, fired[1:], strict=False)]
    assert max(gaps) == signals.MAX_SPACING and gaps == sorted(gaps)
    # a new fault set fires at once; no fault resets
    assert signals.due(memory, ["munged not running"], 2000, 5) is True
    assert signals.due(memory, [], 2001, 5) is False and memory == {}


def test_status_shows_last_action_and_backoff(world):
    from salt_ext.lib.ops import views  # noqa: PLC0415

    world["diagnosed"]["n2"] = ["slurmd not running"]
    world["heal"]("n2")
    rows = [{"node": "n1"}, {"node": "n2"}]
    autopilot.annotate(rows, world["store"], world["clock"].now, POL)
    assert rows[0]["autopilot"] is None
    assert rows[1]["autopilot"].startswith("fix restart slurmd") and "[1/3]" in rows[1]["autopilot"]
    full = dict.fromkeys(("reachable", "munged", "slurmd", "usable", "conf", "key"), True)
    table = views.format_table([{**full, **r} for r in rows])
    assert "AUTOPILOT" in table.splitlines()[0]
    assert "AUTOPILOT" not in views.format_table([{**full, "node": "n1"}])
    off = [{"node": "n2"}]
    assert autopilot.annotate(off, world["store"], 0, {**POL, "enabled": False}) == off
    assert "autopilot" not in off[0]


def test_a_daemon_diagnose_misses_is_asked_about_directly(world):
    # diagnose's probe leaves out a slurmd whose binary cannot run; Slurm shows it down
    world["diagnosed"]["n1"] = ["node IDLE+NOT_RESPONDING"]
    world["minions"].daemon_running = False
    result = world["heal"]("n1", "slurmd not running")
    assert result["action"] == "fix" and result["record"]["diagnosed"][0] == "slurmd not running"
    # the event alone proves nothing: the node's own answer decides
    world["minions"].daemon_running = True
    world["clock"].now += 60
    world["diagnosed"]["n2"] = []
    assert world["heal"]("n2", "slurmd not running")["action"] == "none"


# ---------------------------------------------------------------------- health checks
def health_answer(action, failed=(), comment=""):
    results = [
        {"name": n, "kind": "mount", "ok": False, "detail": f"/{n} is not mounted"} for n in failed
    ]
    record = f"health: {failed[0]}: /{failed[0]} is not mounted" if failed else None
    return {
        "node": "n1",
        "results": results,
        "failed": list(failed),
        "action": action,
        "record": record,
        "comment": comment or (record or ""),
    }


def test_health_causes_are_known_event_causes():
    assert autopilot.check_cause("health:scratch,health checks pass again") == [
        "health:scratch",
        "health checks pass again",
    ]
    with pytest.raises(OpError, match="not one the autopilot knows"):
        autopilot.check_cause("health:a b")
    with pytest.raises(OpError, match="not one the autopilot knows"):
        autopilot.check_cause("health:")


def test_a_failing_health_check_is_drained_by_the_node_and_logged(world):
    world["minions"].health["n1"] = health_answer("drain", ["scratch"])
    result = world["heal"]("n1", "health:scratch")
    assert result["action"] == "drain" and result["result"] is True
    # the node decides (it runs its checks with apply); no diagnose, no daemon fix
    assert ("slurm_health.run", "n1", [True]) in world["minions"].calls
    assert fixes_run(world) == []
    rec = world["store"].log("n1")[-1]
    assert rec["cause"] == "health:scratch"
    assert rec["drained"] == "health: scratch: /scratch is not mounted"
    assert world["events"][-1][0] == "salt/slurm/autopilot/n1/drain"
    assert "drained: health: scratch" in autopilot.format_log([rec], str)


def test_health_passing_again_resumes_through_the_node(world):
    world["minions"].health["n1"] = health_answer("resume", comment="every check passes again")
    result = world["heal"]("n1", "health checks pass again")
    assert result["action"] == "resume" and result["result"] is True
    rec = world["store"].log("n1")[-1]
    assert rec["cause"] == "health checks pass again" and rec["resumed"] is True


def test_a_forged_health_event_changes_nothing_the_node_does_not_find(world):
    # the node's own checks pass and it remembers no drain: nothing done, nothing resumed
    world["minions"].health["n1"] = health_answer(None, comment="every check passes")
    result = world["heal"]("n1", "health checks pass again")
    assert result["action"] == "none" and result["result"] is True
    assert not any(c[0] == "slurm_controller.update_nodes" for c in world["minions"].calls)


def test_health_events_wait_for_the_lock_and_a_gave_up_node(world):
    out = {}
    with world["ctx"].journal.operation("apply_conf"):
        thread = threading.Thread(target=lambda: out.update(world["heal"]("n1", "health:scratch")))
        thread.start()
        thread.join()
    assert out["action"] == "skip" and "slurm.apply_conf holds the cluster lock" in out["comment"]
    assert not any(c[0] == "slurm_health.run" for c in world["minions"].calls)
    world["store"].update("n1", gave_up={"at": 0, "cause": "slurmd not running"})
    world["minions"].states["n1"] = dict(GAVE_UP)
    world["clock"].sleep(60)
    world["heal"]("n1", "health:scratch")
    assert not any(c[0] == "slurm_health.run" for c in world["minions"].calls)


def test_signals_report_health_checks():
    assert signals.faults({}, health=(["scratch"], False)) == ["health:scratch"]
    assert signals.faults({}, health=([], True)) == ["health checks pass again"]
    assert signals.faults({}, health=([], False)) == []
    event = signals.event(["health:scratch", "health:bad name!"], "node")
    assert event["causes"] == ["health:scratch"]
