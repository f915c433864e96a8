{#- The autopilot's reactor (README "Autopilot"): a fault the `slurm` beacon reports on a
    machine becomes `salt-run slurm.heal node=<id> cause=<names>`. The event is only a
    hint: slurm.heal checks the node and the cause, re-checks with diagnose and decides
    itself (salt_ext/lib/ops/autopilot.py). Master config:
      reactor:
        - 'salt/beacon/*/slurm/*':
          - salt://slurm/reactor/autopilot.sls #}
{%- set causes = data.get('causes') if data.get('causes') is iterable else [] %}
{%- if data.get('id') is string and causes is not string %}
slurm-autopilot-heal:
  runner.slurm.heal:
    - args:
      - node: {{ data['id'] | json }}
      - cause: {{ causes | select('string') | join(',') | json }}
{%- endif %}
