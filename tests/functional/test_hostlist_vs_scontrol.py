"""Property test: ``salt_ext.lib.conf.hostlist`` against the installed ``scontrol`` (22.05).

``scontrol show hostlist`` / ``show hostnames`` need a slurm.conf but no daemon. Each
random list is compressed by us and by scontrol, then scontrol's string is expanded by us
and by scontrol; random multi-group bracket expressions are expanded by both as well.
"""

import os
import random
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest

from salt_ext.lib.conf import hostlist

SCONTROL = shutil.which("scontrol")
pytestmark = pytest.mark.skipif(SCONTROL is None, reason="scontrol (slurm-client) not installed")

N_LISTS = 1200
N_EXPRS = 300
SEED = 20220513


@pytest.fixture(scope="module")
def run_scontrol(tmp_path_factory):
    conf = tmp_path_factory.mktemp("slurm") / "slurm.conf"
    conf.write_text(
        "ClusterName=x\nSlurmctldHost=localhost\nNodeName=localhost\n"
        "PartitionName=p Nodes=localhost\n"
    )
    env = dict(os.environ, SLURM_CONF=str(conf))

    def run(what, arg):
        proc = subprocess.run(
            [SCONTROL, "show", what, arg], env=env, capture_output=True, text=True, check=False
        )
        assert proc.returncode == 0 and not proc.stderr, (what, arg, proc.stdout, proc.stderr)
        return proc.stdout

    return run


def _number(rng):
    kind = rng.random()
    if kind < 0.6:
        return rng.randint(0, 30)
    if kind < 0.85:
        return rng.randint(0, 1200)
    if kind < 0.95:
        return rng.randint(0, 10**12)
    return rng.randint(0, 2**64 - 100)  # unsigned long; Slurm mishandles 2**64-1 and up


def _suffix(rng, num):
    digits = str(num)
    pad = rng.choice((0, 0, 0, 1, 2, 3, 8)) if rng.random() < 0.4 else 0
    return "0" * pad + digits


PREFIXES = ("n", "node", "cn", "x1y", "rack2-n", "r01c", "a.b-", "gpu_", "")
PLAIN = ("login", "head", "a", "b", "ctl-a", "x1y")


def _random_names(rng):
    names = []
    for _ in range(rng.randint(1, 6)):  # runs of consecutive numbers
        prefix = rng.choice(PREFIXES)
        start = _number(rng)
        width = rng.choice((0, 0, len(str(start)) + 1, 3, 4))
        for num in range(start, start + rng.randint(1, 12)):
            names.append(f"{prefix}{num:0{width}d}")
    for _ in range(rng.randint(0, 8)):  # strays: other numbers, paddings, plain names
        if rng.random() < 0.25:
            names.append(rng.choice(PLAIN))
        else:
            names.append(rng.choice(PREFIXES) + _suffix(rng, _number(rng)))
    names = [n for n in names if n] or ["n1"]
    mode = rng.random()
    if mode < 0.3:
        rng.shuffle(names)
    elif mode < 0.5:
        names += rng.sample(names, k=min(len(names), rng.randint(1, 4)))  # duplicates
    return names


def _random_expr(rng):
    """Bracket expressions with 1-3 groups per token; text only between groups."""
    tokens = []
    for _ in range(rng.randint(1, 3)):
        text = rng.choice(("n", "rack", "a", "x1y", "c-", ""))
        for g in range(rng.randint(1, 3)):
            if g:
                text += rng.choice(("b", "-x", "0", "s1", ""))
            items = []
            for _ in range(rng.randint(1, 3)):
                lo = rng.randint(0, 120)
                lo_s = _suffix(rng, lo)
                if rng.random() < 0.6:
                    items.append(f"{lo_s}-{lo + rng.randint(0, 4)}")
                else:
                    items.append(lo_s)
            text += "[" + ",".join(items) + "]"
        tokens.append(text)
    return rng.choice((",", " ", ", ")).join(tokens)


def _check_list(run_scontrol, names):
    joined = ",".join(names)
    theirs = run_scontrol("hostlist", joined).strip()
    ours = hostlist.compress(names)
    problems = []
    if ours != theirs:
        problems.append(f"compress({names!r}):\n  ours:     {ours}\n  scontrol: {theirs}")
    their_names = run_scontrol("hostnames", theirs).split()
    our_names = hostlist.expand(theirs)
    if our_names != their_names:
        problems.append(f"expand({theirs!r}):\n  ours:     {our_names}\n  scontrol: {their_names}")
    if their_names != names:
        problems.append(f"scontrol round trip of {names!r} gave {their_names!r}")
    return problems


def _check_expr(run_scontrol, expr):
    their_names = run_scontrol("hostnames", expr).split()
    our_names = hostlist.expand(expr)
    if our_names != their_names:
        return [f"expand({expr!r}):\n  ours:     {our_names}\n  scontrol: {their_names}"]
    return []


def test_compress_and_expand_match_scontrol(run_scontrol):
    rng = random.Random(SEED)  # noqa: S311 -- reproducible test data
    lists = [_random_names(rng) for _ in range(N_LISTS)]
    exprs = [_random_expr(rng) for _ in range(N_EXPRS)]
    assert len(lists) >= 1000
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda names: _check_list(run_scontrol, names), lists))
        results += list(pool.map(lambda expr: _check_expr(run_scontrol, expr), exprs))
    problems = [p for r in results for p in r]
    assert not problems, f"{len(problems)} mismatches, first 10:\n" + "\n".join(problems[:10])
