"""Accounts as code (issue 15): 100 accounts / 1,000 users / 10 QOS applied from empty and
the no-op re-apply, ours (one read per entity kind, one ``sacctmgr -i`` per phase) beside
the naive way (one ``sacctmgr`` process per entity: one ``add`` each from empty, one
``show`` each to check on the re-apply), in the same run; medians of ``ROUNDS``.
Targets: from empty <= 30 s, no-op <= 2 s.

The real part needs a slurmdbd that ``sacctmgr`` reaches. It is given either

- as a function argument: ``run(bed=<tests.testbed bed>, controller="ctl")`` runs sacctmgr
  inside the bed's controller (``bed.run``), or ``run(sacctmgr=<callable argv, stdin ->
  stdout>)``;
- or from the environment: ``BENCH_ACCOUNTING_PREFIX`` is an argv prefix that runs a
  command where slurmdbd is reachable (``"nsenter -t 4242 --mount --uts --net"``, ``"ssh
  ctl"``; ``"-"`` for this machine), ``BENCH_ACCOUNTING_CLUSTER`` the cluster name
  (default ``cluster``).

Without either, ``make bench`` (``python -m bench accounting``) brings up its own sandbox
bed (master + ``ctl`` + ``n1``; name/subnet ``BENCH_ACCOUNTING_BED_NAME`` /
``BENCH_ACCOUNTING_BED_SUBNET``, default ``sxab`` / ``10.60.0``), measures ``slurm.deploy``
from bare without accounting, then from bare again with accounting on (MariaDB, slurmdbd,
the cluster registered; the ratio of the two), and runs the comparison against that
slurmdbd; ``BENCH_ACCOUNTING_BED=0`` skips the bed (then ``not measured: <reason>``). It
removes (purge) every account, user and QOS that is not the cluster's own before and
after each round: point it at a throw-away accounting database only.

The pure-Python part always runs: the diff (validation + plan) for that size from empty
and for the no-op, medians of ``MICRO_ROUNDS``.
"""

import os
import secrets
import shlex
import shutil
import statistics
import subprocess
import time

from bench import beds
from salt_ext.lib.accounting import current, diff, engine, pillar
from salt_ext.lib.util import command

ROUNDS = 3
# the naive way takes ~1,100 sacctmgr processes per pass; on a busy machine
# BENCH_ACCOUNTING_NAIVE_ROUNDS=1 measures it once (the figure then says so)
NAIVE_ROUNDS = int(os.environ.get("BENCH_ACCOUNTING_NAIVE_ROUNDS", "0")) or None
MICRO_ROUNDS = 7
N_ACCOUNTS, N_USERS, N_QOS = 100, 1000, 10
PREFIX_ENV = "BENCH_ACCOUNTING_PREFIX"
CLUSTER_ENV = "BENCH_ACCOUNTING_CLUSTER"
BED_ENV = "BENCH_ACCOUNTING_BED"
BED_NAME = os.environ.get("BENCH_ACCOUNTING_BED_NAME", "sxab")
BED_SUBNET = os.environ.get("BENCH_ACCOUNTING_BED_SUBNET", "10.60.0")
BED_CLUSTER = "benchacct"


def wanted_pillar(accounts=None, users=None, qos=None):
    """The benchmark's ``slurm:accounting``: a two-level tree, each account with its own
    description, QOS list and limits; each user in one account."""
    accounts, users, qos = accounts or N_ACCOUNTS, users or N_USERS, qos or N_QOS
    return {
        "qos": {
            f"bq{i:02d}": {"priority": i * 10, "limits": {"MaxJobsPerUser": i + 1}}
            for i in range(qos)
        },
        "accounts": {
            f"bacct{i:03d}": {
                "parent": "root" if i < 10 else f"bacct{i % 10:03d}",
                "description": f"Bench account {i}",
                "fairshare": 10 + i,
                "qos": ["normal", f"bq{i % qos:02d}"],
                "limits": {"GrpTRES": f"cpu={64 + i}", "MaxWall": "1-00:00:00"},
            }
            for i in range(accounts)
        },
        "users": {
            f"buser{i:04d}": {"accounts": [f"bacct{i % accounts:03d}"]} for i in range(users)
        },
    }


def _empty_model():
    return {"qos": {}, "accounts": {}, "users": {}, "partition_assocs": [], "account_records": {}}


def _as_current(wanted):
    """The model the cluster would hold once ``wanted`` is applied (for the no-op diff)."""
    model = _empty_model()
    model["qos"] = {name: dict(fields) for name, fields in wanted["qos"].items()}
    for name, account in wanted["accounts"].items():
        model["accounts"][name] = {**account, "assoc": dict(account["assoc"])}
    for name, user in wanted["users"].items():
        model["users"][name] = {
            "DefaultAccount": user["DefaultAccount"],
            "AdminLevel": user.get("AdminLevel", "None"),
            "assocs": {acct: dict(assoc) for acct, assoc in user["assocs"].items()},
        }
    return model


def _median(func, rounds):
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        func()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def micro():
    """Diff computation for the benchmark's size, pure Python (no sacctmgr)."""
    raw = wanted_pillar()
    wanted = pillar.validate(raw)
    applied = _as_current(wanted)
    from_empty = diff.plan(wanted, _empty_model(), "cluster")
    lines = sum(len(p["lines"]) for p in from_empty["commands"])
    print(
        f"\n[accounting] diff of {N_ACCOUNTS} accounts / {N_USERS:,} users / {N_QOS} QOS, "
        f"pure Python ({MICRO_ROUNDS} runs)"
    )
    t_validate = _median(lambda: pillar.validate(raw), MICRO_ROUNDS)
    t_empty = _median(lambda: diff.plan(wanted, _empty_model(), "cluster"), MICRO_ROUNDS)
    t_noop = _median(lambda: diff.plan(wanted, applied, "cluster"), MICRO_ROUNDS)
    noop = diff.plan(wanted, applied, "cluster")
    assert noop["commands"] == [], "the no-op diff is not empty"
    print(f"  validate pillar:                 median {t_validate * 1000:8.1f} ms")
    print(
        f"  plan from empty:                 median {t_empty * 1000:8.1f} ms "
        f"({lines} sacctmgr lines in {len(from_empty['commands'])} processes)"
    )
    print(f"  plan no-op:                      median {t_noop * 1000:8.1f} ms (0 lines)")


def _env_runner():
    prefix = os.environ.get(PREFIX_ENV)
    if not prefix:
        return None
    argv0 = [] if prefix.strip() == "-" else shlex.split(prefix)

    def run(argv, stdin=None):
        return command.run([*argv0, *argv], stdin=stdin, timeout=600).stdout

    return run


def _bed_runner(bed, controller):
    def run(argv, stdin=None):
        proc = bed.run(controller, argv, timeout=600, stdin=stdin)
        if proc.returncode:
            raise command.CommandFailed(
                argv, f"{' '.join(argv[:4])} exited {proc.returncode}: {proc.stderr.strip()}",
                proc.returncode, proc.stdout, proc.stderr,
            )  # fmt: skip
        return proc.stdout

    return run


def _naive_lines(plan_result):
    """Our batched lines split back into one command per entity."""
    per_entity = []
    for phase in plan_result["commands"]:
        for line in phase["lines"]:
            words = diff._WORD.findall(line)  # noqa: SLF001 -- the same tokenizer
            at = next(i for i, w in enumerate(words) if w.startswith("name="))
            for name in words[at][len("name=") :].split(","):
                per_entity.append([*words[:at], f"name={name}", *words[at + 1 :]])
    return per_entity


def _naive_apply(run, lines):
    for words in lines:
        run([current.SACCTMGR, "-i", *[w.replace('"', "") for w in words]])


def _naive_check(run, wanted, cluster):
    show = [current.SACCTMGR, "-n", "-P", "show"]
    for name in wanted["qos"]:
        run([*show, "qos", f"name={name}", "format=" + ",".join(current.QOS_FORMAT)])
    fmt = "format=" + ",".join(current.ASSOC_FORMAT)
    for name in wanted["accounts"]:
        run([*show, "assoc", f"cluster={cluster}", f"account={name}", "WOPLimits", fmt])
    for name in wanted["users"]:
        run([*show, "assoc", f"cluster={cluster}", f"user={name}", "WOPLimits", fmt])


def _wipe(run, cluster):
    engine.sync({"purge": True}, cluster, run)


def real(run, cluster):
    """Ours vs naive against a real slurmdbd; returns the medians (seconds)."""
    raw = wanted_pillar()
    wanted = pillar.validate(raw)
    naive = _naive_lines(diff.plan(wanted, _empty_model(), cluster))
    print(
        f"\n[accounting] {N_ACCOUNTS} accounts / {N_USERS:,} users / {N_QOS} QOS on slurmdbd "
        f"(cluster {cluster}, ours {ROUNDS} rounds, naive {NAIVE_ROUNDS or ROUNDS})"
    )
    times = {key: [] for key in ("ours_empty", "ours_noop", "naive_empty", "naive_noop")}
    processes = {}
    for round_no in range(ROUNDS):
        _wipe(run, cluster)
        started = time.monotonic()
        result = engine.sync(raw, cluster, run)
        times["ours_empty"].append(time.monotonic() - started)
        processes["ours_empty"] = result["processes"]
        started = time.monotonic()
        result = engine.sync(raw, cluster, run)
        times["ours_noop"].append(time.monotonic() - started)
        processes["ours_noop"] = result["processes"]
        assert result["commands"] == [], "the re-apply changed something"
        # each round's figures at once: the naive pass after it can take minutes
        print(
            f"  round {round_no + 1}: ours from empty {times['ours_empty'][-1]:.2f} s, "
            f"no-op {times['ours_noop'][-1]:.2f} s",
            flush=True,
        )
        if round_no >= (NAIVE_ROUNDS or ROUNDS):
            continue
        _wipe(run, cluster)
        started = time.monotonic()
        _naive_apply(run, naive)
        times["naive_empty"].append(time.monotonic() - started)
        started = time.monotonic()
        _naive_check(run, wanted, cluster)
        times["naive_noop"].append(time.monotonic() - started)
    _wipe(run, cluster)
    med = {key: statistics.median(values) for key, values in times.items()}
    processes["naive_empty"] = len(naive)
    processes["naive_noop"] = N_QOS + N_ACCOUNTS + N_USERS
    for what, target in (("empty", 30), ("noop", 2)):
        label = "from empty" if what == "empty" else "no-op re-apply"
        ours, theirs = med[f"ours_{what}"], med[f"naive_{what}"]
        print(
            f"  {label:<15} ours  median {ours:7.2f} s ({processes[f'ours_{what}']} processes)"
            f"  naive median {theirs:7.2f} s ({processes[f'naive_{what}']} processes)"
            f"  naive/ours {theirs / ours:6.1f}x  (target ours <= {target} s)"
        )
    return med


def _reachable(run):
    try:
        out = run([current.SACCTMGR, "-n", "-P", "show", "cluster", "format=Cluster"])
    except (command.CommandFailed, OSError, subprocess.SubprocessError) as err:
        return None, "sacctmgr cannot reach slurmdbd: " + " ".join(str(err).split())[:300]
    clusters = [line.strip() for line in out.splitlines() if line.strip()]
    return clusters, None


def _timed_deploy(bed):
    from bench.ops import _timed  # noqa: PLC0415 - needs the test bed's packages

    return _timed(bed, "slurm.deploy")


def deploy_ratio(bed):
    """``slurm.deploy`` from bare without accounting, then from bare with it (MariaDB's
    data directory empty too); prints both and the ratio, returns the cluster name."""
    from bench.provision import _make_bare  # noqa: PLC0415
    from tests.testbed.bed import BED_CONF_OVERRIDES, render_pillar  # noqa: PLC0415

    overrides = {k: v for k, v in BED_CONF_OVERRIDES.items() if k != "JobAcctGatherType"}
    base = render_pillar(cluster_name=BED_CLUSTER, node_target="n1")
    base["conf"] = {"overrides": overrides}

    def bare():
        _make_bare(bed, ["ctl", "n1"])
        bed.salt("*", "mine.flush")
        for path in bed.cluster_files_dir().iterdir():
            shutil.rmtree(path) if path.is_dir() else path.unlink()

    bed.write_pillar(base)
    bare()
    without = _timed_deploy(bed)
    password = "Bench-" + secrets.token_hex(12)
    per_minion = {"ctl": {"slurm": {"accounting": {"storage": {"password": password}}}}}
    bed.write_pillar({**base, "accounting": {"enabled": True}}, per_minion=per_minion)
    bare()
    with_acct = _timed_deploy(bed)
    print(
        f"\n[accounting] slurm.deploy from bare (ctl + n1, one run each): without accounting "
        f"{without:6.2f} s, with accounting (MariaDB + slurmdbd + cluster registered) "
        f"{with_acct:6.2f} s, ratio {with_acct / without:.2f}x"
    )
    return BED_CLUSTER


def _own_bed():
    from tests.testbed import SandboxCluster  # noqa: PLC0415

    return SandboxCluster(name=BED_NAME, nodes=("ctl", "n1"), subnet=BED_SUBNET)


def run(bed=None, controller="ctl", sacctmgr=None, cluster=None):
    micro()
    if bed is None and sacctmgr is None and not os.environ.get(PREFIX_ENV):
        if os.environ.get(BED_ENV, "1") != "0":
            own = _own_bed()
            with beds.torn_down(own):
                own.up()
                print(
                    f"\n[accounting] test bed {BED_NAME}: master + 2 minions up in "
                    f"{own.startup_seconds:.1f}s"
                )
                name = deploy_ratio(own)
                return _measure(own, "ctl", None, name)
    return _measure(bed, controller, sacctmgr, cluster)


def _measure(bed, controller, sacctmgr, cluster):
    runner = sacctmgr or (_bed_runner(bed, controller) if bed is not None else _env_runner())
    if runner is None:
        print(
            "\n[accounting] against slurmdbd: not measured: no slurmdbd given (pass bed= / "
            f"sacctmgr= to bench.accounting.run, or set {PREFIX_ENV})"
        )
        return None
    clusters, why = _reachable(runner)
    cluster = cluster or os.environ.get(CLUSTER_ENV, "cluster")
    if why is None and cluster not in clusters:
        why = f"cluster {cluster!r} is not registered in slurmdbd (it has {clusters})"
    if why:
        print(f"\n[accounting] against slurmdbd: not measured: {why}")
        return None
    return real(runner, cluster)


if __name__ == "__main__":
    run()
