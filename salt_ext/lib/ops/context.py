"""What every operation of one runner call shares: the ports, the settings (compiled once),
the master's files, the journal, progress lines, and the cluster's shape."""

from salt_ext.lib.conf import generate, model
from salt_ext.lib.ops import OpError
from salt_ext.lib.ops.masterfiles import ConfStore, JwtKey, MasterKeys
from salt_ext.lib.ops.ports import Clock

# a minion that has not answered test.ping this long after the round began (and 1 s after
# the last answer) is reported unreachable and skipped: healthy minions answer in well
# under a second, and a dead one must not cost every later call a full timeout
PING_WAIT = 2.0


class Context:
    """One runner call's view of the cluster.

    ``settings`` is a callable returning the validated ``slurm:`` pillar; it is called at
    most once. ``journal`` is a :class:`salt_ext.lib.ops.journal.Journal`.
    """

    def __init__(self, minions, master, settings, journal, progress=None, clock=None):
        self.minions = minions
        self.master = master
        self._settings = settings
        self._cfg = None
        self.journal = journal
        self.progress = progress or (lambda message: None)
        self.clock = clock or Clock()

    @property
    def cfg(self):
        if self._cfg is None:
            self._cfg = self._settings()
        return self._cfg

    @property
    def controller(self):
        return self.cfg["controller"]

    @property
    def extra_keys(self):
        return tuple(self.cfg["conf"]["extra_keys"])

    def conf_store(self):
        return ConfStore(self.master.files_dir(), self.master.files_changed, self.clock)

    def master_keys(self):
        return MasterKeys(self.master.files_dir(), self.master.files_changed)

    def jwt_key(self):
        return JwtKey(self.master.files_dir(), self.master.files_changed)

    # ------------------------------------------------------------------ the cluster
    def node_minions(self, conf_text):
        """NodeName -> minion id for every node ``conf_text`` defines but the controller
        (the mine's hardware names the minion; else the minion has the node's name)."""
        by_name = {
            data.get("NodeName"): minion
            for minion, data in self.master.mine_hardware().items()
            if isinstance(data, dict)
        }
        try:
            nodes = model.conf_nodes(conf_text, self.extra_keys)
        except model.ConfError as err:
            raise OpError(f"the master's slurm.conf does not parse: {err}") from err
        return {node: by_name.get(node, node) for node in nodes if node != self.controller}

    def cluster(self):
        """``(controller, {NodeName: minion})`` from the master's slurm.conf, or from the
        mine before any conf exists."""
        conf = self.conf_store().read()["slurm.conf"]
        if conf is not None:
            return self.controller, self.node_minions(conf)
        hardware = self.master.mine_hardware(self.cfg["node_target"], self.cfg["node_target_type"])
        nodes = {
            data["NodeName"]: minion
            for minion, data in hardware.items()
            if isinstance(data, dict) and data.get("NodeName")
        }
        return self.controller, {n: nodes[n] for n in sorted(nodes, key=generate.natural_key)}

    # ------------------------------------------------------------------ calls
    def reachable(self, targets, wait=PING_WAIT):
        """One ping round over ``targets``: ``(answered, silent)`` in the targets' order,
        with a progress line naming the silent ones."""
        targets = list(dict.fromkeys(targets))
        if not targets:
            return [], []
        answered, _ = self.minions.ping(targets, "list", wait=wait)
        answered = set(answered)
        silent = [t for t in targets if t not in answered]
        if silent:
            self.progress(
                f"no answer to test.ping from {', '.join(silent)} within {wait:g} s: "
                "reported as unreachable and skipped"
            )
        return [t for t in targets if t in answered], silent

    def returns(self, targets, fun, arg=(), timeout=60):
        """``{minion: return or None}``: None for a minion that failed or did not answer."""
        if not targets:
            return {}
        answers = self.minions.call(list(targets), fun, arg, timeout)
        return {t: (a["ret"] if a["ok"] else None) for t, a in answers.items()}

    def one(self, target, fun, arg=(), timeout=60):
        """The return of ``fun`` on one minion, or None."""
        return self.returns([target], fun, arg, timeout).get(target)

    def apply_state(self, targets, sls, timeout, sls_id=None, report=()):
        return self.minions.apply_state(list(targets), sls, timeout, sls_id=sls_id, report=report)
