{#- A Slurm compute node: munge + slurmd, cluster key and config, verified at the end. #}
{%- from 'slurm/common.jinja' import base with context %}
{%- set s = salt['slurm_node.settings']('node') %}
{{ base(s) }}

slurm-dir-/var/spool/slurmd:
  file.directory:
    - name: /var/spool/slurmd
    - user: root
    - group: root
    - mode: '0755'
    - makedirs: True

slurm-slurmd:
  slurm_node.daemon_running:
    - name: slurmd
    - manager: {{ s.service_manager }}
    - conf: {{ s.slurm_conf }}
    - require:
      - slurm_node: slurm-munged
      - file: slurm-dir-/var/spool/slurmd
      - file: slurm-dir-/var/log/slurm
    - watch:
      - file: slurm-conf-*

{%- if s.verify.enabled %}

slurm-node-verified:
  slurm_node.node_verified:
    - name: {{ grains['host'] }}
    - timeout: {{ s.verify.timeout }}
    - require:
      - slurm_node: slurm-slurmd
{%- endif %}
