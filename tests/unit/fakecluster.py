"""A fake cluster behind the operations layer's ports (``salt_ext.lib.ops.ports``).

It models what the operations must get right, not Salt: each machine has files on disk,
daemons that run or not, and the files each daemon *loaded* when it last started (or
reconfigured). The truth an operation is judged by is :meth:`FakeCluster.converged`: every
daemon runs what the master serves.

The state lives in a JSON file, so an operation can run in a forked child that the fake
kills with ``os._exit`` at a chosen call (as SIGKILL would kill the master: no ``finally``
runs, the journal stays as the child left it), and the parent then sees what the child
did to the machines.
"""

import fnmatch
import json
import os

from salt_ext.lib.conf import cluster_files, hostlist, model
from salt_ext.lib.node import settings
from salt_ext.lib.ops import OpError, journal
from salt_ext.lib.ops.context import Context
from salt_ext.lib.ops.masterfiles import MasterKeys
from salt_ext.lib.util import fsutil

CONTROLLER = "ctl"
NODES = ("n1", "n2", "n3")
PILLAR = {"cluster_name": "fake", "controller": CONTROLLER, "node_target": "n*"}
KILLED = 137


def hardware(name, cpus=2, memory=4000):
    return {
        "NodeName": name,
        "CPUs": cpus,
        "Boards": 1,
        "SocketsPerBoard": 1,
        "CoresPerSocket": cpus,
        "ThreadsPerCore": 1,
        "RealMemory": memory,
        "gpus": {"count": 0, "type": None, "files": [], "autodetect": None},
        "minion_id": name,
        "source": "slurmd -C",
    }


def _hash(text):
    return f"sha256:{fsutil.sha256_bytes(text)}" if text is not None else None


class Clock:
    """Time that only moves when someone sleeps."""

    def __init__(self):
        self.now = 1_000_000.0

    def monotonic(self):
        return self.now

    def time(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


class JsonState:
    """A fake's state in one JSON file (``state_path``), so a forked run that is killed
    leaves it where a real cluster would be."""

    state_path = None

    def _load(self):
        with open(self.state_path, encoding="utf-8") as handle:
            return json.load(handle)

    def _save(self, state):
        fsutil.atomic_write(self.state_path, json.dumps(state, indent=1))


class FakeCluster(JsonState):
    """The machines (minions port) and the master (master port) of one fake cluster."""

    def __init__(self, root, nodes=NODES, cpus=2):
        self.root = str(root)
        os.makedirs(self.root, exist_ok=True)
        self.state_path = os.path.join(self.root, "fake.json")
        self.files_path = os.path.join(self.root, "files")
        self.calls = 0
        self.kill_at = None  # die (os._exit) at this call number, in a forked child
        if not os.path.exists(self.state_path):
            machines = {
                m: {
                    "up": True,
                    "files": {},
                    "key": None,
                    "daemons": {"munge": False, "slurmd": False},
                    "loaded": {},
                    "started": {},
                    "written": 0,
                    "hardware": hardware(m, cpus),
                }
                for m in (CONTROLLER, *nodes)
            }
            machines[CONTROLLER]["daemons"] = {"munge": False, "slurmctld": False}
            self._save({"tick": 0, "machines": machines, "mine": {}, "log": []})

    def edit(self):
        """``with cluster.edit() as state:`` change machines between operations."""
        cluster = self

        class _Edit:
            def __enter__(self):
                self.state = cluster._load()
                return self.state

            def __exit__(self, *exc):
                if exc[0] is None:
                    cluster._save(self.state)

        return _Edit()

    def _tick(self):
        self.calls += 1
        if self.kill_at is not None and self.calls >= self.kill_at:
            os._exit(KILLED)  # the master dies here: no finally, no journal update

    def log(self):
        return self._load()["log"]

    # ------------------------------------------------------------------ the truth
    def master_files(self):
        return cluster_files.read_conf_files(self.files_path)

    def converged(self):
        """``(True, [])`` when every daemon runs what the master serves, else the reasons."""
        want = self.master_files()["slurm.conf"]
        key = MasterKeys(self.files_path).current_hash()
        state = self._load()
        problems = []
        for minion, machine in state["machines"].items():
            for daemon, running in machine["daemons"].items():
                if not running:
                    problems.append(f"{minion}: {daemon} not running")
                elif daemon != "munge" and machine["loaded"].get(daemon) != want:
                    problems.append(f"{minion}: {daemon} runs an older slurm.conf")
            if machine["key"] != key:
                problems.append(f"{minion}: munge key differs")
        return not problems, problems

    # ------------------------------------------------------------------ minions port
    def ping(self, tgt, tgt_type="list", wait=2.0, timeout=30):
        self._tick()
        state = self._load()
        if tgt_type == "list":
            targets = list(tgt)
        else:  # the glob of slurm:node_target
            targets = [m for m in state["machines"] if fnmatch.fnmatch(m, str(tgt))]
        answered = sorted(t for t in targets if state["machines"].get(t, {}).get("up"))
        return answered, sorted(set(targets) - set(answered))

    def call(self, targets, fun, arg=(), timeout=120):
        self._tick()
        state = self._load()
        out = {}
        for target in targets:
            machine = state["machines"].get(target)
            if not machine or not machine["up"]:
                out[target] = {"ok": False, "ret": None, "error": "no return (minion down?)"}
                continue
            state["tick"] += 1
            try:
                ret = getattr(self, "_" + fun.replace(".", "__"))(state, target, *arg)
            except RuntimeError as err:
                out[target] = {"ok": False, "ret": str(err), "error": str(err)}
            else:
                out[target] = {"ok": True, "ret": ret, "error": None}
        state["log"].append([fun, list(targets), [a for a in arg if isinstance(a, str)]])
        self._save(state)
        return out

    def apply_state(self, targets, sls, timeout, sls_id=None, report=()):
        out = self._apply_state(targets, sls, sls_id)
        # no accounts as code here: the reported states did not run
        return {t: ran + ({},) for t, ran in out.items()} if report else out

    def _apply_state(self, targets, sls, sls_id):
        self._tick()
        state = self._load()
        out = {}
        for target in targets:
            machine = state["machines"][target]
            if not machine["up"]:
                out[target] = (False, 0, ["no return (minion down?)"])
                continue
            state["tick"] += 1
            if sls == "slurm.bootstrap":
                installed = state.get("published", False)
                machine["extension"] = machine.get("extension", True) or installed
                out[target] = (installed, int(installed), [] if installed else ["no wheel"])
                continue
            if not machine.get("extension", True):
                out[target] = (False, 0, [f"{sls}: 'slurm_node.settings' is not available"])
                continue
            changed = self._state(state, target, sls, sls_id)
            out[target] = (True, changed, [])
        state["log"].append([f"state {sls_id or sls}", list(targets), []])
        self._save(state)
        return out

    def _state(self, state, target, sls, sls_id):
        machine = state["machines"][target]
        if sls_id == "slurm-hardware-in-mine":
            changed = state["mine"].get(target) != machine["hardware"]
            state["mine"][target] = machine["hardware"]
            return int(changed)
        if sls == "slurm.absent":
            machine.update(files={}, key=None, loaded={}, started={})
            machine["daemons"] = {d: False for d in machine["daemons"]}
            state["mine"].pop(target, None)
            return 1
        # slurm.node / slurm.controller: files and key from the master, then each daemon
        # running, restarted when a file it watches changed (service.running watch)
        changed = 0
        files = {n: t for n, t in self.master_files().items() if t is not None}
        key = MasterKeys(self.files_path).current_hash()
        conf_changed = machine["files"] != files
        if conf_changed:
            machine["files"] = files
            machine["written"] = state["tick"]
            changed += 1
        if machine["key"] != key:
            machine["key"] = key
            machine["daemons"]["munge"] = False  # restarted below on the new key
            changed += 1
        for daemon in machine["daemons"]:
            if not machine["daemons"][daemon] or (conf_changed and daemon != "munge"):
                self._start(state, machine, daemon)
                changed += 1
        return changed

    # ------------------------------------------------------------------ master port
    def files_dir(self):
        return self.files_path

    def files_changed(self):
        """The fake file server reads the directory directly."""

    def read_salt_file(self, url):
        raise OpError(f"slurm:conf:base: {url} not found on the master's file server")

    # the master's cached grains per minion (tests set it; none cached by default)
    cached_grains = {}

    def minion_grains(self, minion):
        return dict(self.cached_grains.get(minion) or {})

    def mine_hardware(self, target="*", tgt_type="glob"):
        mine = self._load()["mine"]
        return {m: h for m, h in mine.items() if fnmatch.fnmatch(m, str(target))}

    def forget_hardware(self, minion):
        with self.edit() as state:
            state["mine"].pop(minion, None)

    def publish_extension(self):
        with self.edit() as state:
            state["published"] = True
        return {"version": "0.0.0", "path": "wheel", "url": "salt://wheel", "sha256": "0"}

    # ------------------------------------------------------------------ context
    def context(self, progress=None, clock=None, pillar=None):
        return Context(
            self,
            self,
            lambda: settings.validate(dict(pillar or PILLAR)),
            journal.Journal(os.path.join(self.root, "cache"), clock=(clock or Clock()).time),
            progress=progress,
            clock=clock or Clock(),
        )

    # ------------------------------------------------------------------ functions
    @staticmethod
    def _start(state, machine, daemon):
        machine["daemons"][daemon] = True
        machine["started"][daemon] = state["tick"]
        if daemon != "munge":
            machine["loaded"][daemon] = machine["files"].get("slurm.conf")

    def _ctl(self, state):
        return state["machines"][CONTROLLER]

    def _status(self, state, target):
        machine = state["machines"][target]
        conf = machine["files"].get("slurm.conf")
        return {
            "daemons": dict(machine["daemons"]),
            "munge_key_hash": machine["key"],
            "slurm_conf_hash": _hash(conf),
            "loaded": {
                d: {"stale": machine["started"].get(d, 0) < machine["written"]}
                for d in ("slurmd", "slurmctld")
                if machine["daemons"].get(d)
            },
            "accounts": {"munge": [1108, 1108], "slurm": [1109, 1109]},
            "versions": {"slurm": "slurm 22.05.8"},
        }

    def _sys__list_modules(self, state, target, pattern="*"):
        have = state["machines"][target].get("extension", True)
        return ["slurm_node"] if have and fnmatch.fnmatch("slurm_node", pattern) else []

    def _slurm_node__status(self, state, target):
        return self._status(state, target)

    def _slurm_node__probe(self, state, target):
        return {**self._status(state, target), "logs": {}}

    def _slurm_node__conf_files(self, state, target):
        files = state["machines"][target]["files"]
        return {n: files.get(n) for n in cluster_files.CONF_FILES}

    def _slurm_node__stage_conf(self, state, target):
        machine = state["machines"][target]
        if machine.get("disk_full"):
            raise RuntimeError("cannot stage the conf files in /etc/slurm: No space left on device")
        machine["staged"] = True
        return {"staged": ["slurm.conf"], "hashes": {}}

    def _slurm_node__discard_staged_conf(self, state, target):
        state["machines"][target].pop("staged", None)
        return []

    def _slurm_node__commit_conf(self, state, target):
        machine = state["machines"][target]
        if not machine.pop("staged", False):
            return {"changed": [], "hashes": {}}
        files = {n: t for n, t in self.master_files().items() if t is not None}
        changed = sorted(
            n for n in set(files) | set(machine["files"]) if files.get(n) != machine["files"].get(n)
        )
        if changed:
            machine["files"] = files
            machine["written"] = state["tick"]
        return {"changed": changed, "hashes": {n: _hash(t) for n, t in files.items()}}

    def _slurm_node__daemon_control(self, state, target, daemon, action):
        machine = state["machines"][target]
        if action in ("stop", "restart"):
            machine["daemons"][daemon] = False
        if action in ("start", "restart"):
            self._start(state, machine, daemon)
        return {"daemon": daemon, "action": action, "running": machine["daemons"][daemon]}

    def _slurm_controller__reconfigure(self, state, target):
        ctl = self._ctl(state)
        if not ctl["daemons"].get("slurmctld"):
            raise RuntimeError("slurmctld is not running")
        ctl["loaded"]["slurmctld"] = ctl["files"].get("slurm.conf")
        ctl["started"]["slurmctld"] = state["tick"]
        for machine in state["machines"].values():
            if machine["daemons"].get("slurmd"):
                machine["loaded"]["slurmd"] = machine["files"].get("slurm.conf")
                machine["started"]["slurmd"] = state["tick"]
        return True

    def _slurm_controller__up(self, state, target, *args):
        up = self._ctl(state)["daemons"].get("slurmctld")
        return {"ok": bool(up), "output": "UP" if up else "DOWN"}

    def _registered(self, state, minion):
        machine = state["machines"][minion]
        return bool(
            machine["daemons"].get("slurmd")
            and machine["daemons"].get("munge")
            and machine["key"] == self._ctl(state)["key"]
            and self._ctl(state)["daemons"].get("slurmctld")
        )

    def _slurm_controller__wait_registered(self, state, target, *args):
        if self._registered(state, target):
            return {"ok": True}
        return {"ok": False, "cause": "not registered", "evidence": ["slurmd not up"]}

    def _slurm_controller__cluster_nodes(self, state, target):
        conf = self._ctl(state)["loaded"].get("slurmctld") or ""
        nodes = {}
        for minion in _names(conf):
            if minion in state["machines"]:
                up = self._registered(state, minion)
                nodes[minion] = {
                    "raw_state": "IDLE" if up else "DOWN*",
                    "usable": up,
                    "responding": up,
                    "registered": up,
                    "drained": False,
                    "reason": None if up else "Not responding",
                }
        return nodes

    def _munge__encode(self, state, target, payload):
        machine = state["machines"][target]
        if not machine["daemons"].get("munge"):
            raise RuntimeError("munged not running")
        return f"cred|{machine['key']}|{target}|{payload}"

    def _decode(self, machine, credential):
        _, key, host, payload = credential.split("|", 3)
        if not machine["daemons"].get("munge"):
            return {"ok": False, "error": "munged not running"}
        if key != machine["key"]:
            return {"ok": False, "error": "Invalid credential"}
        return {"ok": True, "payload": payload, "encode_host": host}

    def _munge__decode_all(self, state, target, credentials):
        machine = state["machines"][target]
        return {node: self._decode(machine, cred) for node, cred in credentials.items()}

    def _munge__decode(self, state, target, credential):
        return self._decode(state["machines"][target], credential)

    def _slurm_controller__update_nodes(self, state, target, nodes, node_state, reason=None):
        names = hostlist.expand(nodes)
        for name in names:
            state.setdefault("admin", {})[name] = [node_state, reason]
        return names

    def _slurm_controller__node_jobs(self, state, target, node, pending=False):
        return [] if pending else list(state.get("jobs", {}).get(node, []))

    def _slurm_controller__job_steps(self, state, target, nodes, timeout=60):
        return {n: {"ok": self._registered(state, n), "output": n} for n in nodes}


def _names(conf):
    try:
        return model.conf_nodes(conf)
    except model.ConfError:
        return []
