{#- Remove a node's (or controller's) Slurm presence: daemons stopped and disabled at boot,
    key and config gone, packages of both roles purged (munge removed) only when
    slurm:absent:purge_packages is true (after every daemon is dead). On the dbd host
    also slurmdbd and the local MariaDB stopped, slurmdbd.conf removed, and MariaDB's data
    directory only with slurm:absent:purge_database; on the controller with slurm:restd
    slurmrestd stopped first and its files and the JWT key removed. #}
{%- set s = salt['slurm_node.settings']('node') %}
{#- the Slurm daemons of both roles first, munge (which they need) last #}
{%- set daemons = s.stop_order | reject('equalto', 'munge') | list %}

{%- for daemon in s.stop_order %}
slurm-absent-{{ daemon }}:
  slurm_node.daemon_dead:
    - name: {{ daemon }}
    - manager: {{ s.service_manager }}
    - conf: {{ s.slurm_conf }}
{%- if daemon == 'slurmrestd' %}
    # its init script (ours) is removed below: no boot links may be left pointing at it
    - forget_boot: True
{%- endif %}
{%- endfor %}

{%- set files = [s.munge_key_path] %}
{%- for conf in s.conf_files %}{% do files.append(s.conf_dir ~ '/' ~ conf) %}{% endfor %}
{#- the dbd host: slurmdbd.conf (it holds the DB password) #}
{%- if s.accounting.is_dbd_host %}{% do files.append(s.accounting.slurmdbd_conf) %}{% endif %}
{#- slurm:restd: the JWT key (controller and dbd host), slurmrestd's env file, drop-in and
    init script (the controller) #}
{%- if s.restd.enabled and (s.restd.is_host or s.accounting.is_dbd_host) %}{% do files.append(s.restd.jwt_key) %}{% endif %}
{%- if s.restd.is_host %}{% for path in s.restd.files %}{% do files.append(path) %}{% endfor %}{% endif %}
{%- for path in files %}
{{ ('slurm-absent-file-' ~ path) | json }}:
  file.absent:
    - name: {{ path | json }}
    - require:
{%- for daemon in s.stop_order %}
      - slurm_node: slurm-absent-{{ daemon }}
{%- endfor %}
{%- endfor %}

{%- if s.purge_database_dir %}

{#- slurm:absent:purge_database on the dbd host: MariaDB's data, once MariaDB is dead #}
{{ ('slurm-absent-database-' ~ s.purge_database_dir) | json }}:
  file.absent:
    - name: {{ s.purge_database_dir | json }}
    - require:
      - slurm_node: slurm-absent-mariadb
{%- endif %}

{%- if s.purge_packages %}
{%- set packages = s.packages[:] %}
{%- for pkg in salt['slurm_node.settings']('controller').packages %}
{%-   if pkg not in packages %}{% do packages.append(pkg) %}{% endif %}
{%- endfor %}

slurm-absent-packages:
  pkg.purged:
    - pkgs: {{ packages | reject('equalto', 'munge') | list | json }}
    - require:
{%- for daemon in ['munge'] + daemons %}
      - slurm_node: slurm-absent-{{ daemon }}
{%- endfor %}

{#- munge is removed, not purged: Debian's munge postrm purge runs `deluser --system munge`,
    which fails (and the purge with it) for the cluster-wide UID the account has (>= 1000,
    slurm:munge_uid), and would drop the account every node must agree on #}
slurm-absent-munge-package:
  pkg.removed:
    - name: munge
    - require:
      - pkg: slurm-absent-packages
{%- endif %}
