{#- The accounting host: munge, MariaDB (local storage) + the database and its user,
    slurmdbd.conf (0600 slurm) and slurmdbd. On a controller that is the dbd host,
    slurm.controller runs the same states before slurmctld. #}
{%- if 'slurm_node.settings' not in salt %}
{#- a clean minion: install the extension from the master, then ask for one more run #}
include:
  - slurm.bootstrap

slurm-extension-just-installed:
  test.fail_without_changes:
    - name: saltext-slurm
    - comment: >-
        saltext-slurm was not installed on this minion; slurm.bootstrap installs it from the
        master now. Apply slurm.dbd again to provision the accounting host.
    - require:
      - sls: slurm.bootstrap
{%- else %}
{%- from 'slurm/common.jinja' import base with context %}
{%- set s = salt['slurm_node.settings']('dbd') %}
{%- if not s.accounting.enabled %}

slurm-dbd-accounting-off:
  test.fail_without_changes:
    - name: slurm:accounting:enabled
    - comment: >-
        Accounting is off (slurm:accounting:enabled is false); set it to true (and
        slurm:accounting:storage:password) to run slurmdbd here.
{%- else %}
{{ base(s) }}
{%- endif %}
{%- endif %}
