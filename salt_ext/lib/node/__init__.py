"""One machine: per-OS facts, the daemons under an init system or the ``direct`` manager,
munge credentials, the pillar settings and per-machine plan, ``scontrol`` output, and the
allow-list of Slurm commands behind ``slurm.cmd``.

What the exec and state modules run on a minion; imports only util and conf.
"""
