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

{%- if s.verify.enabled %}

slurm-controller-verified:
  slurm_node.controller_verified:
    - name: {{ grains['host'] }}
    - timeout: {{ s.verify.timeout }}
    - require:
      - slurm_node: slurm-slurmctld
{%- endif %}
{%- endif %}
