"""
States for the accounting host: slurmdbd.conf (0600 slurm, fingerprints only in changes),
the database and its user on the local MariaDB, and the cluster registered in slurmdbd.
The DB password is never an argument: the ``slurm_dbd`` exec module reads it from the
minion's pillar.

Used by the SLS tree ``slurm.dbd`` / ``slurm.controller`` (states/common.jinja).
"""

from salt.exceptions import CommandExecutionError, SaltInvocationError

__virtualname__ = "slurm_dbd"


def __virtual__():
    return __virtualname__


def _ret(name):
    return {"name": name, "result": True, "changes": {}, "comment": ""}


def _exec_state(state_name, fun, changes_of, **kwargs):
    """A state over an exec function that takes ``test`` and returns changes + comment."""
    ret = _ret(state_name)
    test = bool(__opts__["test"])
    try:
        done = __salt__[fun](test=test, **kwargs)
    except (CommandExecutionError, SaltInvocationError) as err:
        ret.update(result=False, comment=str(err))
        return ret
    ret["changes"] = changes_of(done)
    ret["comment"] = done["comment"]
    if ret["changes"] and test:
        ret["result"] = None
    return ret


def conf(name):
    """
    slurmdbd.conf at ``name`` is what the ``slurm:accounting:`` pillar says, 0600
    slurm:slurm, written atomically (``slurm_dbd.conf``). The DB password is read from
    the minion's pillar by the module itself: it is no argument of this state, and the
    changes show fingerprints (the file's SHA-256 with the password blanked) only.
    slurmdbd ``watch``-es this state.

    name
        The path (``accounting:slurmdbd_conf`` of ``slurm_node.settings``); another path
        is refused.

    .. code-block:: yaml

        slurm-dbd-conf:
          slurm_dbd.conf:
            - name: /etc/slurm/slurmdbd.conf
    """
    ret = _ret(name)
    wanted = __salt__["slurm_node.settings"]("dbd")["accounting"]["slurmdbd_conf"]
    if name != wanted:
        ret.update(result=False, comment=f"slurmdbd.conf lives at {wanted}, not {name}")
        return ret
    return _exec_state(name, "slurm_dbd.conf", lambda done: done["changes"])


def database(name, user):
    """
    The accounting database ``name`` and its user ``user`` (the pillar's password, only
    the privileges slurmdbd needs, on that database only) on the local MariaDB
    (``slurm_dbd.database``). The password is no argument: the module reads it.

    .. code-block:: yaml

        slurm-dbd-database:
          slurm_dbd.database:
            - name: slurm_acct_db
            - user: slurm
    """
    ret = _ret(name)
    storage = __salt__["slurm_node.settings"]("dbd")["accounting"]["storage"]
    if (name, user) != (storage["database"], storage["user"]):
        ret.update(
            result=False,
            comment=f"the pillar names database {storage['database']} and user "
            f"{storage['user']}, not {name} / {user}",
        )
        return ret
    return _exec_state(name, "slurm_dbd.database", lambda done: done["changes"])


def cluster_registered(name):
    """
    The cluster ``name`` is in slurmdbd's database: ``sacctmgr -i add cluster`` only when
    ``sacctmgr show cluster`` lacks it.

    .. code-block:: yaml

        slurm-dbd-cluster:
          slurm_dbd.cluster_registered:
            - name: testbed
    """
    return _exec_state(
        name,
        "slurm_dbd.cluster_registered",
        lambda done: {"cluster": f"{name} registered"} if done["changed"] else {},
        name=name,
    )
