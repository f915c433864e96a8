"""Hostlist: compress + expand of 100,000 names, ours against python-hostlist.

The names: 4 prefixes, zero padded to 6 digits, every 97th number missing. One round is
compress(names) then expand(result); the median of 5 rounds is reported for ours and for
python-hostlist (``collect_hostlist`` / ``expand_hostlist``) measured in the same run.
"""

import statistics
import time

from salt_ext.lib.conf import hostlist

N_NAMES = 100_000
ROUNDS = 5
PREFIXES = ("node", "gpu", "r1c", "login-")


def _names():
    per = N_NAMES // len(PREFIXES)
    names = []
    for prefix in PREFIXES:
        num = 1
        while len(names) < per * (PREFIXES.index(prefix) + 1):
            if num % 97:
                names.append(f"{prefix}{num:06d}")
            num += 1
    return names


def _median(compress, expand, names):
    times = []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        back = expand(compress(names))
        times.append(time.perf_counter() - started)
    assert sorted(back) == sorted(names), "round trip lost names"
    return statistics.median(times)


def run():
    names = _names()
    print(f"\n[hostlist] compress + expand of {len(names):,} names ({ROUNDS} runs)")
    ours = _median(hostlist.compress, hostlist.expand, names)
    print(f"  ours (salt_ext.lib.conf.hostlist):   median {ours:7.4f} s")
    try:
        import hostlist as python_hostlist  # noqa: PLC0415 -- optional, measured only
    except ImportError:
        print("  python-hostlist: not installed (pip install python-hostlist) -- ours only")
        return
    theirs = _median(python_hostlist.collect_hostlist, python_hostlist.expand_hostlist, names)
    print(f"  python-hostlist:                median {theirs:7.4f} s")
    print(f"  ratio ours / python-hostlist:   {ours / theirs:.2f}x (target <= 0.5x)")


if __name__ == "__main__":
    run()
