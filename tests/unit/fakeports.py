"""Pieces the unit tests' fake clusters share."""


class PingViaCall:
    """The minions port's ``ping`` answered through the fake's own ``call("test.ping")``,
    so a fake's unreachable minions are silent in the ping round too."""

    def ping(self, tgt, tgt_type="list", wait=2.0, timeout=30):
        targets = list(tgt)
        answers = self.call(targets, "test.ping")
        answered = sorted(t for t, a in answers.items() if a["ok"])
        return answered, sorted(set(targets) - set(answered))
