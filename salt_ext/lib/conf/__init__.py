"""Slurm's configuration as data: host lists, the slurm.conf model (parse, edit, render,
diff), its parameter names, the generator of slurm.conf / gres.conf / cgroup.conf from
pillar and hardware, the nodes' hardware facts, and where the cluster files live.

Pure functions over text and dicts; imports only :mod:`salt_ext.lib.util`.
"""
