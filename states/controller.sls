{#- The Slurm controller: munge + slurmctld with the cluster's key and config. #}
{%- if 'slurm_node.settings' not in salt %}
{#- a clean minion: install the extension from the master, then ask for one more run #}
include:
  - slurm.bootstrap

slurm-extension-just-installed:
  test.fail_without_changes:
    - name: saltext-slurm
    - comment: >-
        saltext-slurm was not installed on this minion; slurm.bootstrap installs it from the
        master now. Apply slurm.controller again to provision the controller.
    - require:
      - sls: slurm.bootstrap
{%- else %}
{%- from 'slurm/common.jinja' import base with context %}
{%- set s = salt['slurm_node.settings']('controller') %}
{{ base(s) }}

slurm-dir-/var/spool/slurmctld:
  file.directory:
    - name: /var/spool/slurmctld
    - user: slurm
    - group: slurm
    - mode: '0700'
    - makedirs: True

slurm-slurmctld:
  slurm_node.daemon_running:
    - name: slurmctld
    - manager: {{ s.service_manager }}
    - conf: {{ s.slurm_conf }}
    - require:
      - slurm_node: slurm-munged
      - file: slurm-dir-/var/spool/slurmctld
      - file: slurm-dir-/var/log/slurm
    - watch:
      - file: slurm-conf-*

{%- if s.service_manager != 'direct' %}

slurm-slurmctld-boot:
  slurm_node.daemon_enabled:
    - name: slurmctld
    - manager: {{ s.service_manager }}
    - require:
      - pkg: slurm-packages
{%- endif %}

{%- if s.verify.enabled %}

slurm-controller-verified:
  slurm_node.controller_verified:
    - name: {{ grains['host'] }}
    - timeout: {{ s.verify.timeout }}
    - require:
      - slurm_node: slurm-slurmctld
{%- endif %}
{%- endif %}
