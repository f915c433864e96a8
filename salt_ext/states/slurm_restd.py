"""
States for Slurm's REST API (``slurm:restd:``): the cluster's JWT key and slurmrestd's
files. Used by the SLS tree (``slurm.controller``, ``slurm.dbd``); the key is never an
argument, output or log line: changes show ``sha256:`` fingerprints only.
"""

from salt.exceptions import CommandExecutionError, SaltInvocationError

__virtualname__ = "slurm_restd"


def __virtual__():
    return __virtualname__


def _exec_state(name, fun):
    ret = {"name": name, "result": True, "changes": {}, "comment": ""}
    test = bool(__opts__["test"])
    try:
        done = __salt__[fun](test=test)
    except (CommandExecutionError, SaltInvocationError) as err:
        ret.update(result=False, comment=str(err))
        return ret
    ret["changes"] = done["changes"]
    ret["comment"] = done["comment"]
    if ret["changes"] and test:
        ret["result"] = None
    return ret


def jwt_key(name):
    """
    The cluster's JWT key from the master's file server at ``name``, 0600 slurm:slurm
    (``slurm_restd.jwt_key``). slurmctld and slurmdbd ``watch`` it.

    .. code-block:: yaml

        slurm-jwt-key:
          slurm_restd.jwt_key:
            - name: /etc/slurm/jwt_hs256.key
    """
    return _exec_state(name, "slurm_restd.jwt_key")


def service_files(name):
    """
    slurmrestd's environment file and its service manager's file (systemd drop-in, init
    script) as the pillar says (``slurm_restd.service_files``). slurmrestd ``watch``-es it.

    .. code-block:: yaml

        slurm-restd-files:
          slurm_restd.service_files:
            - name: slurmrestd
    """
    return _exec_state(name, "slurm_restd.service_files")
