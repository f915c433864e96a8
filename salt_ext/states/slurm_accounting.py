"""
Slurm accounting as code: the state that keeps QOS, accounts, users and their limits
equal to pillar ``slurm:accounting`` (see ``pillar/slurm.sls.example``).

.. code-block:: yaml

    slurm-accounting:
      slurm_accounting.managed

It reads the cluster once (five ``sacctmgr -n -P show`` processes), computes the
difference, and with ``test=True`` stops there (result None, the change list, no write).
Otherwise it applies only the difference in batches, QOS first, then accounts (parents
before children), then users, removals last and in reverse, each phase one
``sacctmgr -i`` process, and re-reads to prove the cluster matches.

Besides ``changes`` (grouped ``qos`` / ``accounts`` / ``users``: ``added``, ``modified``,
``removed``, and ``drift``: values someone changed on the cluster that pillar sets
otherwise, corrected or to be corrected), the return carries ``unmanaged`` (entities on
the cluster that pillar does not name, left alone unless ``purge: true``) and ``kept``
(what purge left because it must: a user's default account, a name sacctmgr cannot be
given safely).
"""

from salt.exceptions import CommandExecutionError, SaltInvocationError

from salt_ext.lib.accounting import diff

__virtualname__ = "slurm_accounting"


def __virtual__():
    return __virtualname__


def _counts(changes):
    counts, _total = diff.summary(changes)
    parts = []
    for kind, group in counts.items():
        done = [f"{n} {what}" for what, n in group.items() if n]
        if done:
            parts.append(f"{kind}: {', '.join(done)}")
    return "; ".join(parts)


def managed(name, accounting=None, cluster=None):
    """
    QOS, accounts and users on the cluster are what pillar ``slurm:accounting`` says.

    name
        Any label (the state's ID).
    accounting
        The ``slurm:accounting`` mapping (default: from pillar).
    cluster
        Slurm cluster name (default: pillar ``slurm:cluster_name``).
    """
    ret = {"name": name, "result": True, "changes": {}, "comment": ""}
    test = bool(__opts__["test"])
    try:
        result = __salt__["slurm_accounting.apply"](
            accounting=accounting, cluster=cluster, test=test
        )
    except (CommandExecutionError, SaltInvocationError) as err:
        ret.update(result=False, comment=str(err))
        info = getattr(err, "info", None)
        if isinstance(info, dict) and info.get("phases_done"):
            ret["changes"] = {"phases_done": info["phases_done"]}
        return ret
    changes = diff.compact(result["changes"])
    if result["drift"]:
        changes["drift"] = result["drift"]
    ret["changes"] = changes
    ret["unmanaged"] = {kind: items for kind, items in result["unmanaged"].items() if items}
    ret["kept"] = result["kept"]
    unmanaged = sum(len(items) for items in result["unmanaged"].values())
    tail = f" ({result['processes']} sacctmgr processes"
    tail += f"; {unmanaged} unmanaged left alone)" if unmanaged else ")"
    if not changes:
        ret["comment"] = "accounting matches pillar" + tail
        return ret
    if test:
        ret["result"] = None
        ret["comment"] = f"would change {_counts(result['changes'])}" + tail
    else:
        ret["comment"] = f"changed {_counts(result['changes'])}" + tail
    if result["drift"]:
        ret["comment"] += f"; {len(result['drift'])} value(s) had drifted from pillar"
    return ret
