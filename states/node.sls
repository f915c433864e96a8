{#- A Slurm compute node: munge + slurmd, cluster key and config, verified at the end. #}
{%- if 'slurm_node.settings' not in salt %}
{#- a clean minion: install the extension from the master, then ask for one more run #}
include:
  - slurm.bootstrap

slurm-extension-just-installed:
  test.fail_without_changes:
    - name: saltext-slurm
    - comment: >-
        saltext-slurm was not installed on this minion; slurm.bootstrap installs it from the
        master now. Apply slurm.node again to provision the node.
    - require:
      - sls: slurm.bootstrap
{%- else %}
{%- from 'slurm/common.jinja' import base with context %}
{%- set s = salt['slurm_node.settings']('node') %}
{{ base(s) }}

slurm-hardware-in-mine:
  slurm_node.hardware_in_mine:
    - require:
      - pkg: slurm-packages

{%- if s.verify.enabled %}

slurm-node-verified:
  slurm_node.node_verified:
    - name: {{ grains['host'] }}
    - timeout: {{ s.verify.timeout }}
    - require:
      - slurm_node: slurm-slurmd
{%- endif %}
{%- endif %}
