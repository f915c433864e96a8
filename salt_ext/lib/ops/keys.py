"""The cluster's munge key: ``slurm.rotate_munge_key`` (the order and its reasons are in
``salt_ext.lib.ops.keyrotation``)."""

import os

from salt_ext.lib.ops import OpError, health, keyrotation


def rotate(ctx, batch_size=10, timeout=120, test=False):
    cfg = ctx.cfg
    if cfg["munge_key"]["source"] != "salt":
        raise OpError(
            "slurm:munge_key:source is 'pillar': this runner only rotates the key it serves "
            f"itself; put a new base64 key under the pillar key "
            f"'{cfg['munge_key']['pillar_key']}' and apply slurm.node and slurm.controller"
        )
    if test:
        return _rotate(ctx, batch_size, timeout, True)
    with ctx.journal.operation("rotate_munge_key") as entry:
        ctx.journal.record(entry, "rotation started")
        return _rotate(ctx, batch_size, timeout)


def _rotate(ctx, batch_size, timeout, test=False):
    controller, node_minions = ctx.cluster()
    keys = ctx.master_keys()
    if os.path.exists(keys.previous):
        raise OpError(
            f"{keys.previous} exists: an earlier rotation did not finish. Check the cluster "
            "with `salt-run slurm.verify`; if it passes on the current key, delete that file "
            "and rotate again"
        )
    return keyrotation.KeyRotation(
        ctx.minions,
        controller,
        node_minions,
        keys,
        verify=lambda: health.verify(ctx, 60),
        batch_size=batch_size,
        timeout=timeout,
        progress=ctx.progress,
    ).run(test=bool(test))
