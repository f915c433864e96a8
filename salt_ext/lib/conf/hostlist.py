"""Slurm hostlist expressions: ``expand`` and ``compress``, identical to Slurm 22.05's scontrol.

``expand(expr)`` gives what ``scontrol show hostnames EXPR`` prints, ``compress(names)``
gives what ``scontrol show hostlist NAME,NAME,…`` prints. This is our own Python, written
from the rules of Slurm's ``src/common/hostlist.c`` (one-dimensional clusters):

* A host name is split into a prefix and a numeric suffix: the suffix is the run of
  trailing ASCII digits (``host_prefix_end``), its width is its length in characters
  (zero padding included). A name without trailing digits is a "single host" that never
  joins anything.
* Compressing keeps the input order and duplicates, nothing is sorted
  (``hostlist_push_host`` -> ``hostlist_push_range``): a name extends the previous range
  only if the prefixes are equal, its number is the previous range's ``hi + 1`` and the
  widths are compatible (``_width_equiv`` / ``_zero_padded``: 9 and 10 join as ``[9-10]``,
  9 and 010 do not).
* Output (``hostlist_ranged_string`` / ``_get_bracketed_list``): consecutive ranges with
  the same prefix share one bracket, ``[lo-hi,…]``, each number printed with its range's
  width; a lone single number has no brackets; different prefixes are joined by ``,``.
* Expanding (``_hostlist_create_bracketed``, ``_push_range_list``): tokens are separated
  by ``,``, space or tab outside brackets; a token's last bracket group must end the token
  (Slurm rejects ``n[1-2]x``); earlier groups are part of the prefix and multiply out, the
  second-last group varying slowest, the last group fastest
  (``a[1-2]b[3-4]c[5-6]`` -> a1b3c5 a1b3c6 a2b3c5 a2b3c6 a1b4c5 …). The width of
  ``lo-hi`` is the length of ``lo``; ``lo-`` means ``lo``; a range over 65,536 hosts, or
  prefix groups over 65,536 hosts in total, are rejected as Slurm does.

Deliberate differences, all on input Slurm itself mangles:

* Invalid input raises ``ValueError`` naming the offending part: unbalanced or nested
  brackets (Slurm turns ``n[1-2`` into ``n]``), empty or non-digit range items (Slurm's
  ``strtoul`` accepts `` 1`` and ``+1`` and pads them), reversed ranges (``n[5-3]``),
  text after the last bracket, and, in ``compress``, names that are empty or contain
  brackets or separators.
* Numbers are exact. Slurm stores them in an ``unsigned long`` and silently turns any
  suffix above 18446744073709551615 into that value (``n99999999999999999999999`` ->
  ``n00018446744073709551615``) and expands a range ending at that value to nothing;
  here such names stay as they are.
"""

import re

__all__ = ["compress", "count", "expand"]

_DIGITS = "0123456789"
_SEPARATORS = "\t, "
MAX_HOSTS = 4 * 1024 * 1024  # one bracket expression; guards memory, no Slurm counterpart
_MAX_RANGE = 64 * 1024  # hostlist.c MAX_RANGE: hosts in one lo-hi range
_MAX_PREFIX_CNT = 64 * 1024  # hosts in the bracket groups of a prefix (22.05 value)

_SPLIT = re.compile(r"[\t, ]+")
# a token: runs of non-separator, non-bracket characters and complete [ ] groups
_TOKEN = re.compile(r"(?:[^\t, \[\]]|\[[^\[\]]*\])+")
_GROUP = re.compile(r"\[([^\[\]]*)\]")
_BAD_NAME = re.compile(r"[\t, \[\]]")


def _zero_padded(num, width):
    """Zeros needed to print ``num`` in ``width`` characters (hostlist.c ``_zero_padded``)."""
    return max(width - len(str(num)), 0)


def _width_equiv(n, wn, m, wm):
    """hostlist.c ``_width_equiv``: ``(compatible, wn, wm)`` with the adjusted widths."""
    if wn == wm:
        return True, wn, wm
    npad = _zero_padded(n, wn)
    nmpad = _zero_padded(n, wm)
    mpad = _zero_padded(m, wm)
    mnpad = _zero_padded(m, wn)
    if npad != nmpad and mpad != mnpad:
        return False, wn, wm
    if npad != nmpad:
        return True, wn, wn
    return True, wm, wm


def compress(names):
    """The ``scontrol show hostlist`` string of ``names`` (an iterable of host names).

    Order and duplicates are kept: ``["n3", "n1", "n2", "n1"]`` -> ``"n[3,1-2,1]"``.
    """
    if isinstance(names, str):
        raise TypeError("compress() takes a list of host names, not a string")
    # ranges: [prefix, lo, hi, width]; lo is None for a name without trailing digits
    ranges = []
    append = ranges.append
    # the tail range, kept in locals for speed (t_hi = -2: no number follows it)
    t_prefix = t_range = None
    t_lo = t_width = 0
    t_hi = -2
    rstrip = str.rstrip
    for name in names:
        prefix = rstrip(name, _DIGITS)
        plen = len(prefix)
        width = len(name) - plen
        if not width:
            if not name or _BAD_NAME.search(name):
                raise ValueError(f"invalid host name {name!r}")
            t_prefix, t_hi = None, -2
            append([name, None, None, 0])
            continue
        num = int(name[plen:])
        if num == t_hi + 1 and prefix == t_prefix:
            if width == t_width:
                t_hi = t_range[2] = num
                continue
            ok, t_width, _ = _width_equiv(t_lo, t_width, num, width)
            if ok:
                t_hi = t_range[2] = num
                t_range[3] = t_width
                continue
        if prefix != t_prefix and _BAD_NAME.search(prefix):
            raise ValueError(f"invalid host name {name!r}")
        t_prefix, t_lo, t_hi, t_width = prefix, num, num, width
        t_range = [prefix, num, num, width]
        append(t_range)
    return _ranged_string(ranges)


def _numstr(lo, hi, width):
    if lo == hi:
        return f"{lo:0{width}d}"
    return f"{lo:0{width}d}-{hi:0{width}d}"


def _ranged_string(ranges):
    """hostlist.c ``hostlist_ranged_string`` / ``_get_bracketed_list`` for 1-D lists."""
    out = []
    i = 0
    n = len(ranges)
    while i < n:
        prefix, lo, hi, width = ranges[i]
        if lo is None:
            out.append(prefix)
            i += 1
            continue
        j = i + 1
        while j < n and ranges[j][1] is not None and ranges[j][0] == prefix:
            j += 1
        if j == i + 1 and lo == hi:
            out.append(prefix + f"{lo:0{width}d}")
        else:
            nums = ",".join([_numstr(r[1], r[2], r[3]) for r in ranges[i:j]])
            out.append(f"{prefix}[{nums}]")
        i = j
    return ",".join(out)


def _is_digits(text):
    return text.isascii() and text.isdigit()


def _parse_ranges(text, token):
    """``"1-3,7,010-011"`` -> ``[(1, 3, 1), (7, 7, 1), (10, 11, 3)]`` (hostlist.c
    ``_parse_range_list`` / ``_parse_single_range``)."""
    ranges = []
    for item in text.split(","):
        lo_s, dash, hi_s = item.partition("-")
        if not _is_digits(lo_s) or (hi_s and not _is_digits(hi_s)):
            raise ValueError(f"invalid range {item!r} in {token!r}")
        lo = int(lo_s)
        hi = int(hi_s) if hi_s else lo
        if lo > hi:
            raise ValueError(f"reversed range {item!r} in {token!r}")
        if hi - lo + 1 > _MAX_RANGE:
            raise ValueError(f"too many hosts in range {item!r} in {token!r}")
        ranges.append((lo, hi, len(lo_s)))
    return ranges


def _render(prefix, lo, hi, width):
    if width <= len(str(lo)):
        if "%" in prefix:
            return [prefix + str(i) for i in range(lo, hi + 1)]
        fmt = prefix + "%d"
    else:
        fmt = prefix.replace("%", "%%") + f"%0{width}d"
    return [fmt % i for i in range(lo, hi + 1)]


def _token_groups(token):
    """A bracketed token's text parts, parsed groups and host count (nothing expanded)."""
    parts = _GROUP.split(token)  # [text, group, text, group, …, text]
    if parts[-1]:
        raise ValueError(f"text {parts[-1]!r} after the last bracket in {token!r}")
    groups = [_parse_ranges(parts[g], token) for g in range(1, len(parts), 2)]
    total = 1
    for rng in groups:
        total *= sum(hi - lo + 1 for lo, hi, _ in rng)
    return parts, groups, total


def _expand_token(token, out):
    parts, groups, total = _token_groups(token)
    if total > MAX_HOSTS:
        # scontrol prints nothing for such products; we refuse instead of eating memory
        raise ValueError(f"{token!r} expands to {total} hosts (more than {MAX_HOSTS})")
    # earlier groups belong to the prefix; the second-last group varies slowest and the
    # first one fastest (hostlist.c _push_range_list recurses from the right)
    prefixes = [parts[0]]
    for index, rng in enumerate(groups[:-1]):
        if sum(hi - lo + 1 for lo, hi, _ in rng) > _MAX_PREFIX_CNT:
            raise ValueError(
                f"too many hosts in prefix range [{parts[2 * index + 1]}] of {token!r}"
            )
        text = parts[2 * index + 2]
        nums = [f"{i:0{w}d}{text}" for lo, hi, w in rng for i in range(lo, hi + 1)]
        prefixes = [p + num for num in nums for p in prefixes]
    for prefix in prefixes:
        for lo, hi, width in groups[-1]:
            out.extend(_render(prefix, lo, hi, width))


def _tokens(expr):
    """The tokens of ``expr`` as ``(token, bracketed)``; a stray bracket raises."""
    pos = 0
    end = len(expr)
    while pos < end:
        while pos < end and expr[pos] in _SEPARATORS:
            pos += 1
        if pos == end:
            break
        m = _TOKEN.match(expr, pos)
        stop = m.end() if m else pos
        if stop == end or expr[stop] in _SEPARATORS:
            token = m.group()
            yield token, "[" in token
            pos = stop
            continue
        # a stray bracket: name the chunk of text around it
        lo = stop
        while lo > 0 and expr[lo - 1] not in _SEPARATORS:
            lo -= 1
        hi = stop
        while hi < end and expr[hi] not in _SEPARATORS:
            hi += 1
        raise ValueError(f"unbalanced bracket in {expr[lo:hi]!r}")


def count(expr):
    """How many names ``expand(expr)`` gives, computed without expanding anything.

    Raises ``ValueError`` where :func:`expand` would, except for the size caps: this is
    what callers use to refuse an expression before something expands it.
    """
    if "[" not in expr and "]" not in expr:
        return sum(1 for t in _SPLIT.split(expr) if t)
    return sum(_token_groups(token)[2] if bracketed else 1 for token, bracketed in _tokens(expr))


def expand(expr):
    """The host names of a hostlist expression, as ``scontrol show hostnames`` lists them.

    Order and duplicates are kept: ``"n[001-003,7]"`` -> ``["n001", "n002", "n003", "n7"]``.
    """
    if "[" not in expr and "]" not in expr:
        return [t for t in _SPLIT.split(expr) if t]
    out = []
    for token, bracketed in _tokens(expr):
        if bracketed:
            _expand_token(token, out)
        else:
            out.append(token)
    return out
