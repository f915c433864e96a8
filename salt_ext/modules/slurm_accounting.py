"""
Slurm accounting as code: QOS, accounts, users and their limits from the
``slurm:accounting`` pillar, kept in slurmdbd through ``sacctmgr`` (argument lists and
stdin, never a shell). Run it where ``sacctmgr`` reaches slurmdbd (the controller or the
dbd host).

The work is :mod:`salt_ext.lib.accounting`: validation before anything runs, one read per
entity kind, the diff, batched writes (one ``sacctmgr -i`` per phase), a re-read that
proves the cluster now matches. The state ``slurm_accounting.managed`` wraps :func:`apply`.
"""

import salt.utils.data
from salt.exceptions import CommandExecutionError, SaltInvocationError

from salt_ext.lib.accounting import current, diff, engine, pillar
from salt_ext.lib.util import command

__virtualname__ = "slurm_accounting"

DEFAULT_CLUSTER = "cluster"  # slurm:cluster_name's default (lib.node.settings.DEFAULTS)


def __virtual__():
    return __virtualname__


def _plain(value):
    """Tuples -> lists, recursively (what Salt serialises the same on every transport)."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


def _pillar(key, default):
    # __pillar__ holds plain values; pillar.get returns Salt 3008's redacted form
    value = salt.utils.data.traverse_dict_and_list(__pillar__, key, None)
    return default if value is None else value


def _cluster(cluster):
    return cluster or _pillar("slurm:cluster_name", DEFAULT_CLUSTER)


def show(cluster=None):
    """
    The cluster's QOS, accounts (with their association: parent, fairshare, QOS, limits)
    and users (default account, admin level, associations), as the state compares them:
    five ``sacctmgr -n -P show`` processes (the TRES slurmdbd knows included), the
    association limits as set on each association (``WOPLimits``), not inherited.

    cluster
        Slurm cluster name (default: pillar ``slurm:cluster_name``, else ``cluster``).

    CLI Example:

    .. code-block:: bash

        salt ctl slurm_accounting.show
    """
    try:
        return _plain(current.read(engine.command_runner(), _cluster(cluster)))
    except command.CommandFailed as err:
        raise CommandExecutionError(str(err)) from err
    except current.ParseError as err:
        raise CommandExecutionError(str(err)) from err


def apply(accounting=None, cluster=None, test=False):
    """
    Make the cluster's QOS, accounts and users what pillar ``slurm:accounting`` says and
    return what changed: ``changes`` (``qos``/``accounts``/``users``: ``added``,
    ``modified``, ``removed``), ``drift`` (values on the cluster that differed from
    pillar), ``unmanaged`` (on the cluster, not in pillar; removed only with
    ``purge: true``), ``kept`` (what purge would remove but must not), ``commands`` (the
    sacctmgr lines per phase) and ``processes`` (sacctmgr processes started).

    accounting
        The ``slurm:accounting`` mapping (default: from pillar).
    cluster
        Slurm cluster name (default: pillar ``slurm:cluster_name``, else ``cluster``).
    test
        Compute and return the changes without writing anything.

    CLI Example:

    .. code-block:: bash

        salt ctl slurm_accounting.apply test=True
    """
    if accounting is None:
        accounting = _pillar("slurm:accounting", {})
    try:
        result = engine.sync(accounting, _cluster(cluster), engine.command_runner(), test=test)
    except pillar.PillarError as err:
        raise SaltInvocationError(str(err)) from err
    except engine.ApplyError as err:
        raise CommandExecutionError(str(err), info=_plain(err.result)) from err
    except (command.CommandFailed, current.ParseError) as err:
        raise CommandExecutionError(str(err)) from err
    return _plain(result)


def check(accounting=None, cluster=None):
    """
    How far the cluster is from pillar ``slurm:accounting``, without writing anything (a
    ``test=True`` apply, summarised): ``in_sync``, ``total`` (changes an apply would
    make), ``counts`` (``qos``/``accounts``/``users``: ``added``, ``modified``,
    ``removed``), ``drift`` (values someone changed on the cluster), ``unmanaged`` (per
    kind, on the cluster and not in pillar), ``processes``. What ``slurm.status`` shows.

    accounting
        The ``slurm:accounting`` mapping (default: from pillar).
    cluster
        Slurm cluster name (default: pillar ``slurm:cluster_name``, else ``cluster``).

    CLI Example:

    .. code-block:: bash

        salt ctl slurm_accounting.check
    """
    return diff.digest(apply(accounting=accounting, cluster=cluster, test=True))
