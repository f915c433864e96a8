{#- Remove a node's (or controller's) Slurm presence: daemons stopped and disabled at boot,
    key and config gone, packages of both roles purged (munge removed) only when
    slurm:absent:purge_packages is true (after every daemon is dead). #}
{%- set s = salt['slurm_node.settings']('node') %}

{%- for daemon in ['slurmd', 'slurmctld', 'munge'] %}
slurm-absent-{{ daemon }}:
  slurm_node.daemon_dead:
    - name: {{ daemon }}
    - manager: {{ s.service_manager }}
    - conf: {{ s.slurm_conf }}
{%- endfor %}

{%- for path in [s.munge_key_path, s.slurm_conf, s.conf_dir ~ '/gres.conf',
                 s.conf_dir ~ '/cgroup.conf'] %}
slurm-absent-file-{{ path }}:
  file.absent:
    - name: {{ path }}
    - require:
      - slurm_node: slurm-absent-munge
      - slurm_node: slurm-absent-slurmd
      - slurm_node: slurm-absent-slurmctld
{%- endfor %}

{%- if s.purge_packages %}
{%- set packages = s.packages[:] %}
{%- for pkg in salt['slurm_node.settings']('controller').packages %}
{%-   if pkg not in packages %}{% do packages.append(pkg) %}{% endif %}
{%- endfor %}

slurm-absent-packages:
  pkg.purged:
    - pkgs: {{ packages | reject('equalto', 'munge') | list | json }}
    - require:
      - slurm_node: slurm-absent-munge
      - slurm_node: slurm-absent-slurmd
      - slurm_node: slurm-absent-slurmctld

{#- munge is removed, not purged: Debian's munge postrm purge runs `deluser --system munge`,
    which fails (and the purge with it) for the cluster-wide UID the account has (>= 1000,
    slurm:munge_uid), and would drop the account every node must agree on #}
slurm-absent-munge-package:
  pkg.removed:
    - name: munge
    - require:
      - pkg: slurm-absent-packages
{%- endif %}
