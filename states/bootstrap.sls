{#- Install saltext-slurm on a minion that has only salt-minion, from the wheel the master
    serves (salt-run slurm.publish_extension), with no package index. Uses Salt core
    states only: the extension is not there yet. #}
{%- set wheels = salt['cp.list_master'](prefix='slurm_files/wheels/') | select('match', '.*\.whl$') | list %}
{%- if not wheels %}
slurm-extension-wheel-missing:
  test.fail_without_changes:
    - name: saltext-slurm
    - comment: >-
        no saltext-slurm wheel on the master's file server (salt://slurm_files/wheels/):
        run `salt-run slurm.publish_extension` on the master first
{%- else %}
{%- set wheel = wheels | first %}
{%- set version = (wheel | replace('slurm_files/wheels/saltext_slurm-', '')).split('-')[0] %}

slurm-extension-wheel:
  file.managed:
    - name: /var/cache/saltext-slurm/wheels/{{ wheel.split('/') | last }}
    - source: salt://{{ wheel }}
    - makedirs: True
    - mode: '0644'

slurm-extension:
  pip.installed:
    - name: saltext-slurm=={{ version }}
    - bin_env: {{ grains['pythonexecutable'] }}
    - find_links: /var/cache/saltext-slurm/wheels
    - no_index: True
    - no_deps: True
    - reload_modules: True
    - require:
      - file: slurm-extension-wheel
{%- endif %}
