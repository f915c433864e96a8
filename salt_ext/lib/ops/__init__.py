"""The operations layer: everything ``salt-run slurm.*`` does to a cluster, as plain Python.

Layers, each importing only the ones below it::

    runners/slurm.py        arguments in, results out; Salt's clients behind the ports
    salt_ext/lib/ops/       orchestration: deploy, apply_conf / rollback, add / remove node,
                            rotate the munge key, drain / resume, status, verify, diagnose;
                            and its pieces: rollout, keyrotation, journal (lock + record),
                            views (rows, checks), diagnosis, extension_wheel
    salt_ext/lib/node/      one machine: settings, services, munge, scontrol, ...
    salt_ext/lib/conf/      slurm.conf model and generator, host lists, hardware facts
    salt_ext/lib/util/      command, fsutil, outcap

The layer talks to the world through two ports and a clock (:mod:`.ports`), so unit tests
drive every operation against a fake cluster: a master killed at any step, minions that do
not answer, timeouts, two operations at once.

- **Minions**: ``call`` a function on a list of minions (failures come back as data),
  ``apply_state``, and ``ping`` (one round; minions that do not answer are named at once
  and left out of every later call of the operation, so one dead node costs seconds).
- **Master**: the directory the file server serves cluster files from, telling the file
  server it changed, the nodes' hardware in the mine, and files on the file server.
- **Clock**: ``monotonic``/``sleep``/``time``.

Errors an admin can act on are :class:`OpError`: one line, naming the argument or the
machine; the runner turns it into ``result: False`` and exit code 1.
"""


class OpError(RuntimeError):
    """What the admin asked for cannot be done; the message says why in one line."""
