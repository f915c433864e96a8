"""``slurm.rotate_jwt_key`` (salt_ext.lib.ops.restd.JwtRotation) against a fake cluster:
the order, every failure branch rolled back (or named when the rollback fails too), and a
master killed at every port call finished by the next run. No Salt, no daemons: the
master's key is a real file (masterfiles.JwtKey), the machines live in a JSON file so a
forked child that dies (as under SIGKILL) leaves them as it left them."""

import base64
import json
import os
import stat

import pytest

from salt_ext.lib.node import settings
from salt_ext.lib.ops import OpError, journal
from salt_ext.lib.ops import restd as restd_ops
from salt_ext.lib.ops.context import Context
from salt_ext.lib.ops.masterfiles import JwtKey
from tests.unit.fakecluster import KILLED, Clock, JsonState

PILLAR = {
    "cluster_name": "fake",
    "controller": "ctl",
    "node_target": "n*",
    "accounting": {"enabled": True, "host": "dbd"},
    "restd": {"enabled": True, "port": 6820},
}
HOSTS = ("ctl", "dbd")
DAEMONS = {"ctl": ("slurmctld", "slurmrestd"), "dbd": ("slurmdbd",)}


class FakeRest(JsonState):
    """The key hosts: each has a key file (its hash) and daemons that loaded the key the
    file held when they last started. ``faults`` (all optional):

    - ``deliver``: ``{host: error}``: writing the key there fails (a read-only /etc/slurm:
      a host that already holds the master's key needs no write and answers fine);
    - ``restart``: ``{(host, daemon): n}``: the next ``n`` restarts fail (-1: every one),
      leaving the daemon stopped;
    - ``check``: how many REST checks fail ("HTTP 500") before they answer;
    - ``silent``: hosts that do not answer at all.
    """

    def __init__(self, root, faults=None):
        self.root = str(root)
        self.files = os.path.join(self.root, "files")
        self.state_path = os.path.join(self.root, "fake.json")
        self.kill_at = None
        self.calls = 0
        os.makedirs(self.files, exist_ok=True)
        if not os.path.exists(self.state_path):
            key = JwtKey(self.files).create()["key_hash"]
            self._save(
                {
                    "hosts": {
                        h: {"key": key, "loaded": {d: key for d in DAEMONS[h]}} for h in HOSTS
                    },
                    "faults": faults or {},
                    "log": [],
                    "previous_modes": [],
                }
            )

    def state(self):
        return self._load()

    def set_faults(self, **faults):
        state = self._load()
        state["faults"] = faults
        self._save(state)

    def log(self):
        return [tuple(e) for e in self._load()["log"]]

    def restarts(self):
        return [(e[1], e[2]) for e in self.log() if e[0] == "slurm_node.daemon_control"]

    def master(self):
        return JwtKey(self.files)

    def consistent(self):
        """Problems: a host key or a daemon's loaded key other than the master's."""
        want = self.master().current_hash()
        problems = []
        for host, machine in self._load()["hosts"].items():
            if machine["key"] != want:
                problems.append(f"{host}: key file {machine['key'][:15]}")
            for daemon, loaded in machine["loaded"].items():
                if loaded != want:
                    problems.append(f"{host}: {daemon} runs {str(loaded)[:15]}")
        return problems

    # ------------------------------------------------------------------ ports
    def files_dir(self):
        return self.files

    def files_changed(self):
        pass

    def context(self, progress=None):
        return Context(
            self,
            self,
            lambda: settings.validate(json.loads(json.dumps(PILLAR))),
            journal.Journal(os.path.join(self.root, "cache"), clock=Clock().time),
            progress=progress,
            clock=Clock(),
        )

    def ping(self, tgt, tgt_type="list", wait=2.0, timeout=30):
        answers = self.call(list(tgt), "test.ping")
        answered = sorted(t for t, a in answers.items() if a["ok"])
        return answered, sorted(set(tgt) - set(answered))

    def call(self, targets, fun, arg=(), timeout=120):
        self.calls += 1
        if self.kill_at is not None and self.calls >= self.kill_at:
            os._exit(KILLED)
        state = self._load()
        out = {}
        for target in targets:
            if target in state["faults"].get("silent", ()):
                out[target] = {"ok": False, "ret": None, "error": "no return (minion down?)"}
                continue
            try:
                ret = getattr(self, "_" + fun.replace(".", "__"))(state, target, *arg)
            except RuntimeError as err:
                out[target] = {"ok": False, "ret": str(err), "error": str(err)}
            else:
                out[target] = {"ok": True, "ret": ret, "error": None}
            state["log"].append([fun, target, *[a for a in arg if a != "restart"]])
        self._save(state)
        return out

    # ------------------------------------------------------------------ functions
    def _test__ping(self, state, target):
        return True

    def _slurm_restd__jwt_key(self, state, target):
        want = self.master().current_hash()
        machine = state["hosts"][target]
        if machine["key"] == want:
            return {"changes": {}, "comment": "in place"}
        error = state["faults"].get("deliver", {}).get(target)
        if error:
            raise RuntimeError(error)
        machine["key"] = want
        return {"changes": {"key_hash": want}, "comment": "written"}

    def _slurm_node__daemon_control(self, state, target, daemon, action):
        assert action == "restart"
        if os.path.exists(self.master().previous):  # not during a rollback
            state["previous_modes"].append(stat.S_IMODE(os.stat(self.master().previous).st_mode))
        machine = state["hosts"][target]
        left = state["faults"].get("restart", {}).get(f"{target}:{daemon}", 0)
        if left:
            state["faults"]["restart"][f"{target}:{daemon}"] = left - 1 if left > 0 else -1
            machine["loaded"][daemon] = None  # stopped
            raise RuntimeError(f"{daemon} did not start: fatal: something")
        machine["loaded"][daemon] = machine["key"]
        return True

    def _slurm_restd__key_hash(self, state, target):
        return state["hosts"][target]["key"]

    def _slurm_restd__check(self, state, target):
        ctl = state["hosts"]["ctl"]
        left = state["faults"].get("check", 0)
        if left:
            state["faults"]["check"] = left - 1
            return {"ok": False, "status": 500, "evidence": "GET /slurm/v0.0.38/diag: HTTP 500"}
        if ctl["loaded"]["slurmrestd"] is None:
            return {"ok": False, "status": None, "evidence": "connection refused"}
        # the token is signed from ctl's key file; slurmctld checks it with what it loaded
        if ctl["loaded"]["slurmctld"] != ctl["key"]:
            return {"ok": False, "status": 500, "evidence": "HTTP 500 jwt_decode failure"}
        return {"ok": True, "status": 200, "evidence": "GET /slurm/v0.0.38/diag as slurmrestd: 200"}


@pytest.fixture
def fake(tmp_path):
    return FakeRest(tmp_path / "c")


def rotate(cluster):
    lines = []
    report = restd_ops.rotate(cluster.context(progress=lines.append), timeout=30)
    return report, lines


def rolled_back(cluster, report, old):
    """The failed run put everything back on ``old`` and proved it."""
    assert report["result"] is False, report
    assert report["rolled_back"]["result"] is True, report["rolled_back"]
    assert "rolled back" in report["comment"], report["comment"]
    assert cluster.master().current_hash() == old
    assert not os.path.exists(cluster.master().previous)
    assert cluster.consistent() == [], cluster.consistent()
    # proven after the rollback: both hosts' key hashes, then a REST call, last
    assert cluster.log()[-3:] == [
        ("slurm_restd.key_hash", "ctl"),
        ("slurm_restd.key_hash", "dbd"),
        ("slurm_restd.check", "ctl"),
    ], cluster.log()[-3:]
    assert report["check"]["ok"] is True


def test_rotation_delivers_then_restarts_in_order_proves_and_drops_the_old_key(fake):
    old = fake.master().current_hash()
    report, lines = rotate(fake)
    assert report["result"] is True, report
    new = fake.master().current_hash()
    assert new != old and report["key_hash"] == {"old": old, "new": new}
    assert not os.path.exists(fake.master().previous)
    assert fake.consistent() == []
    assert fake.restarts() == [("dbd", "slurmdbd"), ("ctl", "slurmctld"), ("ctl", "slurmrestd")]
    funs = [e[0] for e in fake.log()]
    assert funs.index("slurm_restd.jwt_key") < funs.index("slurm_node.daemon_control")
    assert funs[-1] == "slurm_restd.check"
    # the previous key was kept 0600 while the daemons restarted
    assert fake.state()["previous_modes"] == [0o600] * 3
    assert "earlier tokens are refused" in report["comment"]
    assert lines == report["steps"]


def test_a_silent_host_or_no_key_changes_nothing(fake, tmp_path):
    old = fake.master().current_hash()
    fake.set_faults(silent=["dbd"])
    with pytest.raises(OpError, match="dbd do\\(es\\) not answer: nothing changed"):
        rotate(fake)
    assert fake.master().current_hash() == old and fake.restarts() == []
    bare = FakeRest(tmp_path / "bare")
    os.unlink(bare.master().path)
    with pytest.raises(OpError, match="no JWT key yet"):
        rotate(bare)


def test_delivery_failing_on_one_host_puts_the_old_key_back_where_it_arrived(fake):
    old = fake.master().current_hash()
    fake.set_faults(deliver={"dbd": "/etc/slurm: Read-only file system"})
    report, _ = rotate(fake)
    rolled_back(fake, report, old)
    assert report["failed"]["step"].startswith("deliver the new key")
    assert report["failed"]["dbd"] == "/etc/slurm: Read-only file system"
    assert "Read-only file system" in report["comment"]
    # ctl had got the new key: it got the old one back; no daemon had loaded the new
    # key, so none was restarted
    delivered = [e for e in fake.log() if e[0] == "slurm_restd.jwt_key"]
    assert delivered == [("slurm_restd.jwt_key", "ctl"), ("slurm_restd.jwt_key", "dbd")] * 2
    assert fake.restarts() == []


def test_slurmdbd_restart_failing_restarts_only_it_again_on_the_old_key(fake):
    old = fake.master().current_hash()
    fake.set_faults(restart={"dbd:slurmdbd": 1})
    report, _ = rotate(fake)
    rolled_back(fake, report, old)
    assert report["failed"] == {
        "step": "restart slurmdbd",
        "dbd": "slurmdbd did not start: fatal: something",
    }
    assert fake.restarts() == [("dbd", "slurmdbd"), ("dbd", "slurmdbd")]


def test_slurmctld_restart_failing_restarts_what_was_restarted(fake):
    old = fake.master().current_hash()
    fake.set_faults(restart={"ctl:slurmctld": 1})
    report, _ = rotate(fake)
    rolled_back(fake, report, old)
    assert report["failed"]["step"] == "restart slurmctld"
    # slurmrestd was never restarted: it stays as it was
    assert fake.restarts() == [("dbd", "slurmdbd"), ("ctl", "slurmctld")] * 2


def test_the_proof_failing_rolls_everything_back(fake):
    old = fake.master().current_hash()
    fake.set_faults(check=1)
    report, _ = rotate(fake)
    rolled_back(fake, report, old)
    assert report["failed"]["step"].startswith("a REST call with a token of the new key")
    assert report["failed"]["ctl"] == "GET /slurm/v0.0.38/diag: HTTP 500"
    three = [("dbd", "slurmdbd"), ("ctl", "slurmctld"), ("ctl", "slurmrestd")]
    assert fake.restarts() == three * 2


def test_a_failing_rollback_names_each_hosts_key_and_the_command(fake):
    old = fake.master().current_hash()
    fake.set_faults(restart={"ctl:slurmctld": -1})
    report, _ = rotate(fake)
    assert report["result"] is False
    back = report["rolled_back"]
    assert back["result"] is False and back["comment"].startswith("restart slurmctld"), back
    # both hosts hold the old key again (delivery worked); slurmctld does not run
    assert back["holds"] == {"ctl": old, "dbd": old}
    comment = report["comment"]
    assert "rollback FAILED" in comment and "salt-run slurm.deploy" in comment, comment
    assert "rolled back" not in comment
    assert f"ctl holds {old}" in comment and f"dbd holds {old}" in comment
    assert f"the master holds {old}" in comment
    assert fake.master().current_hash() == old


def test_a_failing_rollback_delivery_names_the_host_still_on_the_new_key(fake):
    old = fake.master().current_hash()
    fake.set_faults(check=1)
    state = fake.state()
    original = fake._slurm_restd__check

    def check_then_break(state, target):
        answer = original(state, target)
        # after the failed proof, ctl's /etc/slurm turns read-only
        state["faults"]["deliver"] = {"ctl": "Read-only file system"}
        return answer

    fake._slurm_restd__check = check_then_break
    report, _ = rotate(fake)
    new = report["key_hash"]["new"]
    assert state and report["rolled_back"]["holds"] == {"ctl": new, "dbd": old}, report
    assert f"ctl holds {new}" in report["comment"] and "slurm.deploy" in report["comment"]


def test_no_key_bytes_in_the_report_the_progress_or_the_journal(fake):
    keys = [fake.master().read()]
    fake.set_faults(restart={"ctl:slurmctld": 1})
    report, lines = rotate(fake)
    assert report["rolled_back"]["result"] is True
    report2, lines2 = rotate(fake)
    assert report2["result"] is True
    keys.append(fake.master().read())
    with open(os.path.join(fake.root, "cache", "journal.json")) as handle:
        text = json.dumps([report, report2, lines, lines2]) + handle.read()
    for key in keys:
        for spelling in (key.hex(), base64.b64encode(key).decode()[:40], key.decode("latin-1")):
            assert spelling not in text


def killed_at(cluster, call):
    pid = os.fork()
    if pid == 0:
        cluster.kill_at = call
        try:
            restd_ops.rotate(cluster.context(), timeout=30)
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) == KILLED


def test_the_master_killed_at_any_call_is_finished_by_the_next_run(tmp_path):
    reference = FakeRest(tmp_path / "reference")
    rotate(reference)
    total = reference.calls
    assert total >= 7
    for call in range(1, total + 1):
        cluster = FakeRest(tmp_path / f"k{call}")
        old = cluster.master().current_hash()
        assert killed_at(cluster, call), call
        report, _ = rotate(cluster)
        assert report["result"] is True, (call, report)
        assert cluster.consistent() == [], (call, cluster.consistent())
        assert not os.path.exists(cluster.master().previous), call
        assert cluster.master().current_hash() != old, call
        assert not cluster.context().journal.interrupted(), call


def test_a_dead_rotation_is_finished_with_its_own_key_and_rolled_back_if_that_fails(tmp_path):
    # killed after the new key reached the hosts and slurmdbd restarted (calls: ping,
    # deliver, slurmdbd; it dies at the 4th): the next run delivers the same key, restarts
    # everything, proves
    cluster = FakeRest(tmp_path / "resume")
    old = cluster.master().current_hash()
    assert killed_at(cluster, 4)
    unproven = cluster.master().current_hash()
    assert cluster.master().previous_hash() == old and unproven != old
    report, lines = rotate(cluster)
    assert report["result"] is True and report["key_hash"] == {"old": old, "new": unproven}
    assert any("died at step" in line and "finishing it" in line for line in lines), lines
    assert "finished the rotation a dead run had begun" in report["comment"]
    # the same, but the finishing run fails before any restart: it still restarts every
    # daemon on the way back (the dead run may have restarted any of them)
    cluster = FakeRest(tmp_path / "resume-fails")
    old = cluster.master().current_hash()
    assert killed_at(cluster, 4)
    cluster.set_faults(restart={"dbd:slurmdbd": 1})
    report, _ = rotate(cluster)
    rolled_back(cluster, report, old)
    assert cluster.restarts()[-3:] == [
        ("dbd", "slurmdbd"),
        ("ctl", "slurmctld"),
        ("ctl", "slurmrestd"),
    ]
    assert not cluster.context().journal.interrupted()


def test_an_unfinished_rotation_is_a_cause_and_no_token_is_signed_until_it_is_finished(tmp_path):
    cluster = FakeRest(tmp_path / "dead")
    assert restd_ops.unfinished_rotation(cluster.context()) is None
    assert killed_at(cluster, 4)  # the new key reached the hosts, slurmdbd restarted
    dead = restd_ops.unfinished_rotation(cluster.context())
    assert dead["cause"] == "an unfinished JWT key rotation"
    assert "died at step" in dead["evidence"][0] and "slurm.rotate_jwt_key" in dead["fix"]
    assert "sha256:" in dead["evidence"][1]
    with pytest.raises(OpError, match="unfinished JWT key rotation"):
        restd_ops.token(cluster.context(), "alice", 60)
    report, _ = rotate(cluster)
    assert report["result"] is True
    assert restd_ops.unfinished_rotation(cluster.context()) is None
    assert restd_ops.token(cluster.context(), "alice", 60)["user"] == "alice"
