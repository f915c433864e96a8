"""slurm.conf as a model: parse, edit, render, diff, and what a change needs to take effect.

``parse(text)`` gives a :class:`Conf`; its ``render()`` returns every line that was not edited
byte for byte (comments, blank lines, spacing, key case, ``Include`` lines), so a conf written
by hand and then managed by Salt only changes where Salt changed it.

Parse rules, each checked against the parser of Slurm 22.05.8 (``scontrol show hostnames``
with a private ``SLURM_CONF``; ``tests/functional/test_slurmconf_vs_scontrol.py`` re-checks
them):

* ``#`` starts a comment unless escaped as ``\\#``; backslash escapes any character
  (``\\\\`` is one backslash), so ``Key=a\\#b`` is ``a#b`` and ``Key=a\\\\#b`` is ``a\\``.
  A line ending in an odd number of backslashes continues on the next line (the comment is cut
  first, so a commented line never continues).
* A logical line holds ``Key=Value`` pairs. Whitespace around ``=`` is allowed
  (``Key = Value``); a value is one whitespace-free word or a double-quoted string, which may
  contain spaces but no ``"`` (``Key="a b"`` is ``a b``; ``Key=""`` is the empty value;
  ``Key=`` is an error). Keys are case-insensitive and made of letters, digits, ``_`` and ``.``.
* Outside record lines Slurm reads ONE pair per line and rejects the file if anything but a
  comment follows it (``MaxJobCount=5 MaxArraySize=7`` is an error), so this model does too.
* A line whose first key is ``NodeName``, ``PartitionName``, ``NodeSet``, ``DownNodes`` or
  ``FrontendName`` is a record: all of its pairs belong to it and must be keys of that kind.
  A record kind later on a line is an error in Slurm as well.
* ``Include <file>`` (any case, at the very start of the line, one file name) is kept verbatim
  and not followed; an indented ``Include`` is a parse error in Slurm.

Where this model is stricter than Slurm (Slurm accepts these, the last value winning or
slurmctld failing later): a plain key set twice (except ``SlurmctldHost``), a key repeated on
one record line, two records of one kind with the same name (names compare case-sensitively,
as Slurm's do; ``DEFAULT`` records may repeat; ``n[1-2]`` vs ``n1,n2`` is not detected), and
the ``Key+=value`` operator syntax, which the parser takes but slurm.conf(5) never documents.

Change classes (``classify``), mildest first. A class covers the changes of the milder ones
in the same diff, so the daemons a class does not restart still have to re-read the file:

* ``none``: nothing Slurm reads changed (comments, spacing, key case).
* ``reconfigure``: ``scontrol reconfigure`` (slurmctld and every slurmd re-read the file).
* ``restart_slurmd``: restart slurmd on every node, and reconfigure slurmctld.
* ``restart_slurmctld``: restart slurmctld, and reconfigure the slurmds.
* ``restart_all``: restart slurmctld and every slurmd (both together: restart_all).
"""

import difflib
import itertools
import re

from salt_ext.lib.conf import hostlist
from salt_ext.lib.conf.params import KEYS, RECORD_KEYS, REMOVED_KEYS

RECORD_KINDS = ("NodeName", "PartitionName", "NodeSet", "DownNodes", "FrontendName")
# plain keys that may appear more than once; order matters (primary controller first)
REPEATABLE = {"slurmctldhost"}
CLASSES = ("none", "reconfigure", "restart_slurmd", "restart_slurmctld", "restart_all")

SLURM_VERSION = "22.05"

_KNOWN = {key.lower(): key for key in KEYS}
_KINDS = {kind.lower(): kind for kind in RECORD_KINDS}
_RECORD_KEYS = {kind: {key.lower(): key for key in keys} for kind, keys in RECORD_KEYS.items()}
_REMOVED = {key.lower(): (key, why) for key, why in REMOVED_KEYS.items()}

# C isspace() in the "C" locale; Python's str.split()/\s would also split on Unicode spaces
_WS = " \t\n\r\f\v"
_W = r"[ \t\n\r\f\v]"
# Slurm's own pair regex (src/common/parse_config.c), with the value kept in one group
_PAIR = re.compile(rf'{_W}*([A-Za-z0-9_.]+){_W}*([-*+/]?)={_W}*("[^"]*"|[^ \t\n\r\f\v]+)(?={_W}|$)')
_KEY_ONLY = re.compile(rf"{_W}*([A-Za-z0-9_.]+){_W}*[-*+/]?={_W}*$")
_ESCAPE = re.compile(r"\\(.?)", re.S)
_KEY_CHARS = re.compile(r"[A-Za-z0-9_.]+")
_EQUALS = itertools.repeat("=")
# whitespace to Python's str.split() but not to C's isspace(), see parse()
_PY_ONLY_SPACE = re.compile("[\x1c-\x1f\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]")

_BLANK, _INCLUDE, _PARAM, _RECORD = range(4)


class ConfError(ValueError):
    """A slurm.conf problem, located: ``"<source> line <N>: <what is wrong>"``."""

    def __init__(self, what, source="slurm.conf", lineno=None, key=None):
        self.what = what
        self.source = source
        self.lineno = lineno
        self.key = key
        where = source if lineno is None else f"{source} line {lineno}"
        super().__init__(f"{where}: {what}")

    def __reduce__(self):
        return (type(self), (self.what, self.source, self.lineno, self.key))


def _did_you_mean(key, choices):
    lower = {choice.lower(): choice for choice in choices}
    close = difflib.get_close_matches(key.lower(), list(lower), n=1, cutoff=0.75)
    return f" (did you mean {lower[close[0]]!r}?)" if close else ""


def _extras(extra_keys):
    if isinstance(extra_keys, str):
        extra_keys = (extra_keys,)
    extras = {}
    for item in extra_keys or ():
        key = str(item).strip()
        if not _KEY_CHARS.fullmatch(key):
            raise ConfError(
                f"{key!r} is not a slurm.conf key name (letters, digits, '_' and '.')",
                "slurm:conf:extra_keys",
                key=key,
            )
        extras[key.lower()] = key
    return extras


def _canonical(key, extras, source, lineno):
    lower = key.lower()
    found = _KNOWN.get(lower) or extras.get(lower)
    if found:
        return found
    if not key:
        raise ConfError("empty key", source, lineno, key)
    if lower in _REMOVED:
        name, why = _REMOVED[lower]
        raise ConfError(
            f"{name!r} is not accepted by Slurm {SLURM_VERSION}: {why}", source, lineno, name
        )
    raise ConfError(
        f"unknown slurm.conf key {key!r} for Slurm {SLURM_VERSION}"
        f"{_did_you_mean(key, [*KEYS, *extras.values()])}; "
        "list it in slurm:conf:extra_keys if your Slurm knows it",
        source,
        lineno,
        key,
    )


def canonical_key(key, extra_keys=(), source="slurm.conf", lineno=None):
    """slurm.conf(5) spelling of ``key`` (case-insensitive); ConfError if Slurm does not know it."""
    return _canonical(key, _extras(extra_keys), source, lineno)


def _record_key(kind, key, extras, source, lineno):
    lower = key.lower()
    found = _RECORD_KEYS[kind].get(lower) or extras.get(lower)
    if found:
        return found
    raise ConfError(
        f"unknown {kind} key {key!r} for Slurm {SLURM_VERSION}"
        f"{_did_you_mean(key, [*RECORD_KEYS[kind], *extras.values()])}; "
        "list it in slurm:conf:extra_keys if your Slurm knows it",
        source,
        lineno,
        key,
    )


def _unquote(value):
    # the quoted alternative of Slurm's regex only matches when no other '"' is inside
    if len(value) > 1 and value[0] == '"' and value[-1] == '"' and '"' not in value[1:-1]:
        return value[1:-1]
    return value


def _cut_comment(line):
    """``line`` up to its first ``#`` preceded by an even number of backslashes."""
    backslashes = 0
    for pos, char in enumerate(line):
        if char == "#" and not backslashes % 2:
            return line[:pos]
        backslashes = backslashes + 1 if char == "\\" else 0
    return line


def _physical_lines(text):
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return lines


def _continued(physical, pos):
    """Content of the logical line starting at ``physical[pos]`` (which holds a backslash)
    and the index after its last physical line.

    Slurm cuts the comment of each physical line first, then joins lines ending in an odd
    number of backslashes (dropping that backslash and what follows it), then removes the
    escapes of the joined line.
    """
    parts = []
    last = len(physical)
    while True:
        body = _cut_comment(physical[pos])
        pos += 1
        stripped = body.rstrip(_WS)
        backslashes = len(stripped) - len(stripped.rstrip("\\"))
        if backslashes % 2 == 0:
            parts.append(body)
            break
        parts.append(stripped[:-1])
        if pos == last:
            break
    return _ESCAPE.sub(r"\1", "".join(parts)), pos


def _logical_lines(text):
    """``(first line number, content)`` per logical line; ``content`` is what Slurm's
    tokenizer sees: comment cut, continued lines joined, escapes removed."""
    physical = _physical_lines(text)
    pos = 0
    while pos < len(physical):
        start = pos
        line = physical[pos]
        if "\\" in line:
            content, pos = _continued(physical, pos)
        else:
            pos += 1
            cut = line.find("#")
            content = line if cut < 0 else line[:cut]
        yield start + 1, content


def _is_include(content):
    return content[:7].lower() == "include" and (len(content) == 7 or content[7] in _WS)


def _bad_line(content, source, lineno):
    text = content.strip(_WS)
    if text.startswith("="):
        return ConfError(f"empty key in {text!r}", source, lineno)
    match = _KEY_ONLY.match(content)
    if match:
        key = match.group(1)
        return ConfError(
            f'missing value for key {key!r} (Slurm rejects "{key}="; write {key}="" for empty)',
            source,
            lineno,
            key,
        )
    if _is_include(text):
        return ConfError(
            "Include must start at the beginning of the line (Slurm rejects an indented one)",
            source,
            lineno,
            "Include",
        )
    return ConfError(f"expected Key=Value, got {text!r}", source, lineno)


def _check_operator(match, source, lineno):
    if match.group(2):
        key = match.group(1)
        raise ConfError(
            f"{key}{match.group(2)}= is not supported here, write {key}=<value>",
            source,
            lineno,
            key,
        )


def _render_value(value, key=None, source="slurm.conf"):
    """``value`` written so that Slurm reads it back unchanged."""
    text = value.replace("\\", "\\\\").replace("#", "\\#")
    if value and not any(char in _WS for char in value) and not value.startswith('"'):
        return text
    what = f"{key}={value!r}" if key else repr(value)
    if "\n" in value or "\r" in value:
        raise ConfError(f"{what} cannot be written: a value cannot span lines", source, key=key)
    if '"' in value:
        raise ConfError(
            f"{what} cannot be written: Slurm cannot quote a value holding '\"' together with "
            "whitespace or starting with '\"'",
            source,
            key=key,
        )
    return f'"{text}"'


def render_pairs(pairs):
    """``[("NodeName", "n[1-3]"), ("CPUs", "2")]`` -> ``"NodeName=n[1-3] CPUs=2"``.

    Values with whitespace (or empty) are double-quoted; ``#`` and ``\\`` are escaped.
    """
    return " ".join(f"{key}={_render_value(str(value), key)}" for key, value in pairs)


def _trailing_comment(raw):
    """The comment of a line's last physical line, with the whitespace before it."""
    last = raw.rsplit("\n", 1)[-1].rstrip("\r")
    body = _cut_comment(last)
    if len(body) == len(last):
        return ""
    return last[len(body.rstrip(_WS)) :].rstrip(_WS)


class Record:
    """One NodeName/PartitionName/NodeSet/DownNodes/FrontendName line.

    ``pairs`` holds canonical keys; the first pair is ``(kind, name)``. Changing ``pairs`` of
    a record returned by :meth:`Conf.records` is allowed: ``render`` then writes that line anew.
    """

    __slots__ = ("kind", "pairs")
    __hash__ = None

    def __init__(self, kind, pairs):
        self.kind = kind
        self.pairs = list(pairs)

    @property
    def name(self):
        return self.pairs[0][1]

    def get(self, key):
        """Value of ``key`` (case-insensitive) on this line, or None."""
        lower = key.lower()
        for name, value in self.pairs:
            if name.lower() == lower:
                return value
        return None

    def __eq__(self, other):
        if not isinstance(other, Record):
            return NotImplemented
        return self.kind == other.kind and self.pairs == other.pairs

    def __repr__(self):
        return f"Record({self.kind!r}, {self.pairs!r})"


def _is_default(name):
    return name.upper() == "DEFAULT"


class _Line:
    """One logical line. ``raw`` is its exact text without the final newline (several
    physical lines when continued); None once edited.

    A record line parsed the fast way keeps ``(canonical keys, values)`` in ``lazy`` and
    builds its pairs, and its :class:`Record`, only when asked (parsing 10,000 node lines
    should not build objects nobody looks at).
    """

    __slots__ = (
        "raw",
        "lineno",
        "type",
        "key",
        "value",
        "pairs",
        "lazy",
        "record",
        "orig",
        "comment",
    )

    def __init__(self, raw, lineno, kind=_BLANK, key=None, value=None, pairs=None, lazy=None):
        self.raw = raw
        self.lineno = lineno
        self.type = kind
        self.key = key  # canonical key; for a record line its kind
        self.value = value  # plain value; Include file name
        self.pairs = pairs
        self.lazy = lazy
        self.record = None
        self.orig = None  # the pairs as parsed, once ``record`` was handed out
        self.comment = ""  # trailing comment kept when an edited line is written anew

    def current_pairs(self):
        if self.record is not None:
            return self.record.pairs
        if self.pairs is None:
            keys, values = self.lazy
            self.pairs = list(zip(keys, values, strict=True))
        return self.pairs

    def get_record(self):
        if self.record is None:
            self.record = Record(self.key, self.current_pairs())
            if self.raw is not None:
                self.orig = list(self.record.pairs)
        return self.record

    def record_name(self):
        if self.record is None and self.pairs is None:
            return self.lazy[1][0]
        return self.current_pairs()[0][1]

    def text(self, source):
        if self.raw is not None and (self.record is None or self.record.pairs == self.orig):
            return self.raw
        if self.type == _PARAM:
            return f"{self.key}={_render_value(self.value, self.key, source)}{self.comment}"
        if self.raw is not None:
            self.comment = _trailing_comment(self.raw)
        return f"{render_pairs(self.current_pairs())}{self.comment}"


class Conf:
    """A parsed slurm.conf; build one with :func:`parse` (``Conf()`` is an empty file)."""

    def __init__(self, source="slurm.conf", extra_keys=()):
        self.source = source
        self._extras = _extras(extra_keys)
        self._lines = []
        self._plain = {}  # lower-case key -> [_Line, ...] in file order
        self._named = {}  # (kind, name) -> _Line, DEFAULT records left out

    # -- keys -----------------------------------------------------------------------------
    def _plain_key(self, key):
        canon = _canonical(str(key), self._extras, self.source, None)
        if canon in RECORD_KINDS:
            raise ConfError(
                f"{canon} lines are records: use records()/add_record()/remove_records()",
                self.source,
                key=canon,
            )
        return canon

    def _kind(self, kind):
        found = _KINDS.get(str(kind).lower())
        if not found:
            raise ConfError(
                f"unknown record kind {kind!r}{_did_you_mean(str(kind), RECORD_KINDS)}; "
                f"records are {', '.join(RECORD_KINDS)}",
                self.source,
                key=kind,
            )
        return found

    def _value(self, key, value):
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise ConfError(
                f"value for {key} must be text or a number as Slurm spells it, got {value!r}",
                self.source,
                key=key,
            )
        value = str(value)
        _render_value(value, key, self.source)  # refuse what cannot be written back
        return value

    # -- plain parameters -----------------------------------------------------------------
    def get(self, key):
        """Value of a plain key, or None; for SlurmctldHost the first (primary) one."""
        lines = self._plain.get(self._plain_key(key).lower())
        return lines[0].value if lines else None

    def get_all(self, key):
        """Every value of a plain key in file order (SlurmctldHost may have several)."""
        return [line.value for line in self._plain.get(self._plain_key(key).lower(), ())]

    def params(self):
        """``(canonical key, value)`` of the plain parameters in file order."""
        return [(line.key, line.value) for line in self._lines if line.type == _PARAM]

    def set(self, key, value):
        """Set a plain key: in place if present (the line keeps its trailing comment), else
        on a new line after the last plain parameter before the first record line.

        For SlurmctldHost a list replaces every occurrence (primary first); a single value
        replaces only the primary. Setting the value a line already has leaves it untouched.
        """
        canon = self._plain_key(key)
        lower = canon.lower()
        existing = self._plain.get(lower, [])
        if isinstance(value, (list, tuple)):
            if lower not in REPEATABLE:
                raise ConfError(f"{canon} takes one value, not a list", self.source, key=canon)
            values = [self._value(canon, item) for item in value]
        else:
            values = [self._value(canon, value)]
            if existing:
                self._edit(existing[0], canon, values[0])
                return
        for line, item in zip(existing, values, strict=False):
            self._edit(line, canon, item)
        if len(existing) > len(values):
            self._drop(existing[len(values) :])
        elif len(values) > len(existing):
            pos = self._lines.index(existing[-1]) + 1 if existing else self._param_end()
            added = [_Line(None, None, _PARAM, canon, item) for item in values[len(existing) :]]
            self._lines[pos:pos] = added
        self._reindex()

    def remove(self, key):
        """Remove every line of a plain key (no-op when absent)."""
        lines = self._plain.get(self._plain_key(key).lower())
        if lines:
            self._drop(lines)
            self._reindex()

    @staticmethod
    def _edit(line, canon, value):
        if line.value == value:
            return  # unchanged: keep the line byte-identical
        if line.raw is not None:
            line.comment = _trailing_comment(line.raw)
            line.raw = None
        line.key = canon
        line.value = value

    def _drop(self, lines):
        gone = {id(line) for line in lines}
        self._lines = [line for line in self._lines if id(line) not in gone]

    def _reindex(self):
        self._plain = {}
        for line in self._lines:
            if line.type == _PARAM:
                self._plain.setdefault(line.key.lower(), []).append(line)

    def _param_end(self):
        """Where a new plain key goes: after the last plain/Include line before any record,
        else just above the comment lines that introduce the first record."""
        first_record = len(self._lines)
        last_plain = None
        for pos, line in enumerate(self._lines):
            if line.type == _RECORD:
                first_record = pos
                break
            if line.type in (_PARAM, _INCLUDE):
                last_plain = pos
        if last_plain is not None:
            return last_plain + 1
        pos = first_record
        if pos < len(self._lines):
            while pos > 0 and self._lines[pos - 1].type == _BLANK:
                if not self._lines[pos - 1].raw.strip(_WS):
                    break  # a blank line ends the introducing comment block
                pos -= 1
        return pos

    # -- records --------------------------------------------------------------------------
    def records(self, kind=None):
        """Records in file order, all of them or those of one kind."""
        kind = None if kind is None else self._kind(kind)
        return [
            line.get_record()
            for line in self._lines
            if line.type == _RECORD and (kind is None or line.key == kind)
        ]

    def add_record(self, kind, pairs):
        """Add a record after the last one of its kind (else at the end); returns it.

        ``pairs``: ``[(kind, name), (key, value), ...]`` or a dict in that order.
        """
        kind = self._kind(kind)
        items = list(pairs.items()) if hasattr(pairs, "items") else [tuple(p) for p in pairs]
        if not items or str(items[0][0]).lower() != kind.lower():
            raise ConfError(f"a {kind} record starts with ({kind!r}, name)", self.source)
        canon_pairs = []
        for key, value in items:
            canon = _record_key(kind, str(key), self._extras, self.source, None)
            if any(canon == seen for seen, _value in canon_pairs):
                raise ConfError(f"duplicate key {canon!r} in new {kind}", self.source, key=canon)
            canon_pairs.append((canon, self._value(canon, value)))
        name = canon_pairs[0][1]
        if not _is_default(name) and (kind, name) in self._named:
            other = self._named[(kind, name)].lineno
            where = f" on line {other}" if other else ""
            raise ConfError(
                f"duplicate {kind} {name!r} (already defined{where})", self.source, key=kind
            )
        line = _Line(None, None, _RECORD, kind, pairs=canon_pairs)
        pos = len(self._lines)
        for back in range(len(self._lines) - 1, -1, -1):
            other = self._lines[back]
            if other.type == _RECORD and other.key == kind:
                pos = back + 1
                break
        self._lines.insert(pos, line)
        if not _is_default(name):
            self._named[(kind, name)] = line
        return line.get_record()

    def remove_records(self, kind, names=None):
        """Remove the records of ``kind`` named in ``names`` (None: all); returns how many."""
        kind = self._kind(kind)
        wanted = None if names is None else {names} if isinstance(names, str) else set(names)
        kept = []
        removed = 0
        for line in self._lines:
            if line.type == _RECORD and line.key == kind:
                name = line.record_name()
                if wanted is None or name in wanted:
                    removed += 1
                    if self._named.get((kind, name)) is line:
                        del self._named[(kind, name)]
                    continue
            kept.append(line)
        self._lines = kept
        return removed

    # -- output ---------------------------------------------------------------------------
    def render(self):
        """The file: untouched lines as read, edited/added ones in canonical form."""
        if not self._lines:
            return ""
        source = self.source
        return "\n".join([line.text(source) for line in self._lines]) + "\n"

    def __repr__(self):
        return f"<Conf {self.source}: {len(self._lines)} lines>"


def _shape(keys, extras):
    """``(kind, canonical keys)`` for the keys of a line as written, or None."""
    lower = keys[0].lower()
    kind = _KINDS.get(lower)
    if kind is None:
        canon = _KNOWN.get(lower) or extras.get(lower)
        return (None, (canon,)) if canon and len(keys) == 1 else None
    known = _RECORD_KEYS[kind]
    canon = [kind]
    for key in keys[1:]:
        lower = key.lower()
        found = known.get(lower) or extras.get(lower)
        if found is None:
            return None
        canon.append(found)
    if len(set(canon)) != len(canon):
        return None  # a repeated key: the slow path says which
    return kind, tuple(canon)


def _slow_pairs(content, extras, source, lineno):
    """Pairs of a line by Slurm's regex, with a ConfError for whatever Slurm would reject."""
    first = _PAIR.match(content)
    if first is None:
        raise _bad_line(content, source, lineno)
    _check_operator(first, source, lineno)
    key = first.group(1)
    lower = key.lower()
    kind = _KINDS.get(lower)
    if kind is None:
        canon = _KNOWN.get(lower) or extras.get(lower) or _canonical(key, extras, source, lineno)
        rest = content[first.end() :].strip(_WS)
        if rest:
            raise ConfError(
                f"Slurm reads one Key=Value per line (except on {', '.join(RECORD_KINDS)} "
                f"lines); unexpected {rest!r} after {key}",
                source,
                lineno,
                canon,
            )
        return None, [(canon, _unquote(first.group(3)))]
    pairs = [(kind, _unquote(first.group(3)))]
    end = first.end()
    for match in _PAIR.finditer(content, end):
        if match.start() != end:
            break
        _check_operator(match, source, lineno)
        if match.group(1).lower() in _KINDS:
            raise ConfError(
                f"{match.group(1)} must start its own line, found it inside a {kind} line",
                source,
                lineno,
                match.group(1),
            )
        canon = _record_key(kind, match.group(1), extras, source, lineno)
        if any(canon == seen for seen, _value in pairs):
            raise ConfError(
                f"duplicate key {canon!r} in {kind} {pairs[0][1]!r}", source, lineno, canon
            )
        pairs.append((canon, _unquote(match.group(3))))
        end = match.end()
    rest = content[end:].strip(_WS)
    if rest:
        raise ConfError(f"expected Key=Value, got {rest!r}", source, lineno)
    return kind, pairs


def parse(text, source="slurm.conf", extra_keys=()):
    """Parse slurm.conf text into a :class:`Conf`; ConfError on anything Slurm would reject."""
    conf = Conf(source, extra_keys)
    extras = conf._extras
    lines = conf._lines
    plain = conf._plain
    named = conf._named
    first_seen = {}  # lower-case plain key -> line number
    # The fast path: a quote-free line whose words are all Key=Value with known keys is split
    # with str.split, which equals Slurm's regex there unless the text holds characters that
    # only Python counts as whitespace (then every line takes the slow path). Lines of one
    # shape (the same keys as written, e.g. all NodeName lines) are checked once.
    fast = not _PY_ONLY_SPACE.search(text)
    shapes = {}
    physical = _physical_lines(text)
    pos = 0
    count = len(physical)
    while pos < count:
        lineno = pos + 1
        raw = physical[pos]
        if "\\" in raw:
            content, pos = _continued(physical, pos)
            raw = "\n".join(physical[lineno - 1 : pos])
        else:
            pos += 1
            cut = raw.find("#")
            content = raw if cut < 0 else raw[:cut]
        shape = None
        if fast and '"' not in content:
            words = content.split()
            if not words:
                lines.append(_Line(raw, lineno))
                continue
            keys, _eq, values = zip(*map(str.partition, words, _EQUALS), strict=True)
            if "" not in values:  # every word has "=" and a value
                shape = shapes.get(keys, False)
                if shape is False:
                    shape = shapes[keys] = _shape(keys, extras)
        if shape is not None:
            kind, canon = shape
            if kind is not None:
                line = _Line(raw, lineno, _RECORD, kind, lazy=(canon, values))
                name = values[0]
            else:
                canon, value = canon[0], values[0]
        else:
            if not content.strip(_WS):
                lines.append(_Line(raw, lineno))
                continue
            if _is_include(content):
                words = content[7:].split()
                if len(words) > 1:
                    raise ConfError(
                        f"Include takes one file name, got {' '.join(words)!r}",
                        source,
                        lineno,
                        "Include",
                    )
                lines.append(_Line(raw, lineno, _INCLUDE, "Include", words[0] if words else ""))
                continue
            kind, pairs = _slow_pairs(content, extras, source, lineno)
            if kind is not None:
                line = _Line(raw, lineno, _RECORD, kind, pairs=pairs)
                name = pairs[0][1]
            else:
                canon, value = pairs[0]
        if kind is None:
            lower = canon.lower()
            if lower in first_seen and lower not in REPEATABLE:
                raise ConfError(
                    f"duplicate key {canon!r} (first set on line {first_seen[lower]})",
                    source,
                    lineno,
                    canon,
                )
            first_seen.setdefault(lower, lineno)
            line = _Line(raw, lineno, _PARAM, canon, value)
            plain.setdefault(lower, []).append(line)
        elif name.upper() != "DEFAULT":
            other = named.get((kind, name))
            if other is not None:
                raise ConfError(
                    f"duplicate {kind} {name!r} (first defined on line {other.lineno})",
                    source,
                    lineno,
                    kind,
                )
            named[(kind, name)] = line
        lines.append(line)
    return conf


def read_values(path):
    """``{lower-case key: value}`` of the plain ``Key=Value`` lines of a slurm.conf file
    (see :func:`values`). Missing file -> ``{}``."""
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            text = handle.read()
    except FileNotFoundError:
        return {}
    return values(text)


def values(text):
    """``{lower-case key: value}`` of the plain ``Key=Value`` lines of slurm.conf ``text``.

    Lenient on purpose (daemon pid/log file lookup must not fail on a conf Slurm itself would
    warn about): unknown keys are kept, malformed lines skipped, a repeated key keeps its last
    value (as Slurm does). Values are read as Slurm reads them (quotes removed, ``\\#``
    unescaped). Record lines are skipped; ``Include`` files are not followed.
    """
    found = {}
    for _lineno, content in _logical_lines(text or ""):
        if _is_include(content):
            continue
        match = _PAIR.match(content)
        if match is None:
            continue
        key = match.group(1).lower()
        if key not in _KINDS:
            found[key] = _unquote(match.group(3))
    return found


def _split_keepends(text):
    return re.findall(r"[^\n]*\n|[^\n]+", text or "")


def unified_diff(old_text, new_text, name="slurm.conf"):
    """Unified diff ``a/<name>`` -> ``b/<name>``; ``""`` when the texts are equal."""
    if (old_text or "") == (new_text or ""):
        return ""
    out = []
    for line in difflib.unified_diff(
        _split_keepends(old_text), _split_keepends(new_text), f"a/{name}", f"b/{name}"
    ):
        out.append(line if line.endswith("\n") else f"{line}\n\\ No newline at end of file\n")
    return "".join(out)


# ---------------------------------------------------------------------------------------------
# What a change needs. Quotes are slurm.conf(5) of Slurm 22.05; "ours" marks our own, more
# cautious reading (which daemon loads what was checked with `nm -D` on Debian's 22.05.8
# slurmd and slurmctld binaries). Keys not listed follow the DESCRIPTION default:
# "Changes to the configuration file take effect upon restart of Slurm daemons, daemon receipt
# of the SIGHUP signal, or execution of the command "scontrol reconfigure" unless otherwise
# noted." -> reconfigure.
# ---------------------------------------------------------------------------------------------
_KEY_CLASS = {}


def _rule(cls, keys, why=None):
    for key in keys:
        if key not in KEYS:  # a typo in the table must fail at import, not go unnoticed
            raise ValueError(f"not a slurm.conf key: {key}")
        _KEY_CLASS[key.lower()] = (cls, why)


# "A restart of slurmctld is required for changes to this parameter to take effect."
# (AccountingStorageEnforce, MaxJobCount, PowerPlugin, SchedulerType, SelectTypeParameters,
# StateSaveLocation); MaxNodeCount: "The slurmctld daemon must be restarted for changes to
# this parameter to take effect."
_rule(
    "restart_slurmctld",
    (
        "AccountingStorageEnforce",
        "MaxJobCount",
        "MaxNodeCount",
        "PowerPlugin",
        "SchedulerType",
        "SelectTypeParameters",
        "StateSaveLocation",
    ),
)
# "A restart of slurmctld and the slurmd daemons is required" (GresTypes, PluginDir);
# SelectType: "A restart of slurmctld and slurmd is required for changes to this parameter".
_rule("restart_all", ("GresTypes", "PluginDir", "SelectType"))
# AuthType: "All Slurm daemons and commands must be terminated prior to changing the value of
# AuthType and later restarted."
_rule("restart_all", ("AuthType",))
# SwitchType: "All Slurm daemons, commands and running jobs must be restarted for a change in
# SwitchType to take effect."
_rule("restart_all", ("SwitchType",))
# CoreSpecPlugin: "A restart of the slurmd daemons is required for changes to this parameter"
_rule("restart_slurmd", ("CoreSpecPlugin",))
# SlurmctldHost: "A restart of slurmctld is required for changes to this parameter to take
# effect." and RELOCATING CONTROLLERS: "1. Stop the Slurm daemons 2. Modify the slurm.conf
# file appropriately 3. Distribute the updated slurm.conf file to all nodes 4. Restart the
# Slurm daemons" -- every slurmd must learn where the controller is. The deprecated names
# ("Deprecated option, see SlurmctldHost.") and SlurmctldAddr (the address slurmds use to
# reach slurmctld) follow it (ours).
_rule(
    "restart_all",
    (
        "SlurmctldHost",
        "SlurmctldAddr",
        "ControlMachine",
        "ControlAddr",
        "BackupController",
        "BackupAddr",
    ),
)
# SlurmctldPort / SlurmdPort: "A restart of slurmctld is required for changes to this
# parameter to take effect." Ours: restart_all, because slurmd listens on SlurmdPort and
# sends to SlurmctldPort, and only reads either at start.
_rule("restart_all", ("SlurmctldPort", "SlurmdPort"))
# CredType, ProctrackType, JobContainerType: "A restart of slurmctld is required for changes
# to this parameter to take effect." Ours: restart_all, since slurmd loads the same plugins
# at start (credentials are verified, processes tracked and job containers made by slurmd).
_rule("restart_all", ("CredType", "ProctrackType", "JobContainerType"))
# Ours: plugins both daemons (or slurmd and commands) load at start -> restart_all.
# TaskPlugin is loaded by slurmd only, but slurmctld decides placement from its value.
_rule(
    "restart_all",
    (
        "AuthAltTypes",
        "AuthAltParameters",
        "AuthInfo",
        "CryptoType",
        "JobAcctGatherType",
        "LaunchType",
        "NodeFeaturesPlugins",
        "PrEpPlugins",
        "RoutePlugin",
        "TaskPlugin",
        "TopologyPlugin",
    ),
)
# Ours: plugins and settings only slurmd (and the slurmstepds it starts) load at start.
# MpiDefault/MpiParams are not here: 22.05's slurmd re-reads MPI settings on reconfigure.
_rule(
    "restart_slurmd",
    (
        "AcctGatherEnergyType",
        "AcctGatherFilesystemType",
        "AcctGatherInfinibandType",
        "AcctGatherInterconnectType",
        "AcctGatherProfileType",
        "PlugStackConfig",
        "SlurmdParameters",
        "SlurmdPidFile",
        "SlurmdSpoolDir",
    ),
)
# Ours: plugins and settings only slurmctld loads at start.
_rule(
    "restart_slurmctld",
    (
        "AccountingStorageBackupHost",
        "AccountingStorageHost",
        "AccountingStoragePort",
        "AccountingStorageType",
        "BurstBufferType",
        "ExtSensorsType",
        "JobCompType",
        "JobSubmitPlugins",
        "MCSPlugin",
        "PreemptType",
        "PrioritySiteFactorPlugin",
        "PriorityType",
        "SlurmctldPidFile",
        "SlurmctldPlugstack",
    ),
)
# Ours: the daemons switch user only at start.
_rule("restart_all", ("SlurmUser", "SlurmdUser"))
# Ours. slurm.conf(5) says nothing here, but slurmctld (22.05.8 binary) stops with "CLUSTER
# NAME MISMATCH. slurmctld has been started with "ClusterName=...", but read "..." from the
# state files in StateSaveLocation." until StateSaveLocation/clustername is removed.
_rule(
    "restart_all",
    ("ClusterName",),
    "restart slurmctld and all slurmd; WARNING: slurmctld refuses to start while "
    "StateSaveLocation/clustername holds the old name (CLUSTER NAME MISMATCH); delete that "
    "file only if renaming the cluster is intended",
)

# Options the man page marks individually; every other option change is a reconfigure.
_OPTION_CLASS = {
    # SchedulerParameters no_backup_scheduling: "A restart of slurmctld is required for
    # changes to this parameter to take effect."
    "schedulerparameters": {"no_backup_scheduling": "restart_slurmctld"},
    # SlurmctldParameters enable_configless: "A restart of slurmctld is required for changes
    # to this parameter to take effect."
    "slurmctldparameters": {"enable_configless": "restart_slurmctld"},
}

# NODE CONFIGURATION: "Changes in node configuration (e.g. adding nodes, changing their
# processor count, etc.) require restarting both the slurmctld daemon and the slurmd
# daemons." FrontendName lines describe slurmd hosts too (ours). Partitions, node sets and
# DownNodes are re-read by slurmctld on reconfigure (the DESCRIPTION default).
_RECORD_CLASS = {
    "NodeName": ("restart_all", "node definitions: restart slurmctld and all slurmd"),
    "FrontendName": ("restart_all", "frontend definitions: restart slurmctld and all slurmd"),
    "PartitionName": ("reconfigure", None),
    "NodeSet": ("reconfigure", None),
    "DownNodes": ("reconfigure", None),
}
_INCLUDE_WHY = "included files are not read here: restart slurmctld and all slurmd"

_LABEL = {
    "none": "no action",
    "reconfigure": "reconfigure",
    "restart_slurmd": "restart slurmd",
    "restart_slurmctld": "restart slurmctld",
    "restart_all": "restart slurmctld and all slurmd",
}
_UNSET = "(unset)"


def worse_class(one, two):
    """The change class that does what both ``one`` and ``two`` need."""
    if {one, two} == {"restart_slurmd", "restart_slurmctld"}:
        return "restart_all"
    return one if CLASSES.index(one) >= CLASSES.index(two) else two


def _show(value):
    if value is None:
        return _UNSET
    if isinstance(value, tuple):
        return ", ".join(_show(item) for item in value) if value else _UNSET
    if not value or any(char in _WS for char in value):
        return f'"{value}"'
    return value


def _options(value):
    options = {}
    for item in (value or "").split(","):
        part = item.strip()
        if part:
            options[part.split("=", 1)[0].strip().lower()] = part
    return options


def _plain_change(lower, old, new):
    """``(class, parenthetical)`` for one changed plain key."""
    if lower in _OPTION_CLASS:
        before, after = _options(old), _options(new)
        changed = sorted(
            name for name in before.keys() | after.keys() if before.get(name) != after.get(name)
        )
        cls, why = "reconfigure", None
        for name in changed:
            option_cls = _OPTION_CLASS[lower].get(name)
            if option_cls:
                cls = worse_class(cls, option_cls)
                why = f"{_LABEL[cls]}: {name} changed"
        return cls, why or _LABEL[cls]
    cls, why = _KEY_CLASS.get(lower, ("reconfigure", None))
    return cls, why or _LABEL[cls]


def _summary(conf):
    plain = {}
    for key, value in conf.params():
        lower = key.lower()
        if lower in REPEATABLE:
            name, values = plain.get(lower, (key, ()))
            plain[lower] = (name, (*values, value.strip()))
        else:
            plain[lower] = (key, value.strip())
    records = {kind: {} for kind in RECORD_KINDS}
    defaults = dict.fromkeys(RECORD_KINDS, 0)
    for line in conf._lines:
        if line.type != _RECORD:
            continue
        if line.record is None and line.pairs is None:
            keys, values = line.lazy  # no need to build the pairs of 10,000 equal node lines
        else:
            keys, values = zip(*line.current_pairs(), strict=True)
        ident = (values[0], 0)
        if _is_default(ident[0]):
            # DEFAULT lines may repeat and apply to the lines after them: compare by position
            defaults[line.key] += 1
            ident = ("DEFAULT", defaults[line.key])
        records[line.key][ident] = (tuple(keys), tuple(values))
    includes = [line.value for line in conf._lines if line.type == _INCLUDE]
    return plain, records, includes


def _record_diff(before, after):
    """``["CPUs 2 -> 4", ...]`` between two versions ``(keys, values)`` of a record line."""
    if before == after:
        return []
    old = {key: value.strip() for key, value in zip(*before, strict=True)}
    new = {key: value.strip() for key, value in zip(*after, strict=True)}
    del old[before[0][0]], new[after[0][0]]  # the name: same by construction
    return [
        f"{key} {_show(old.get(key))} -> {_show(new.get(key))}"
        for key in [*old, *(key for key in new if key not in old)]
        if old.get(key) != new.get(key)
    ]


def classify(old_text, new_text, extra_keys=()):
    """What it takes for slurm.conf ``old_text`` -> ``new_text`` to take effect.

    Returns ``{"class": one of CLASSES, "reasons": [sentence, ...]}``. Both texts are parsed
    (ConfError on unknown keys); ``None`` means the file is absent.
    """
    if old_text is None and new_text is None:
        return {"class": "none", "reasons": []}
    if old_text is None or new_text is None:
        if new_text is not None:
            parse(new_text, "slurm.conf (new)", extra_keys)  # still refuse unknown keys
        what = "created" if old_text is None else "removed"
        return {"class": "restart_all", "reasons": [f"file {what} ({_LABEL['restart_all']})"]}
    old_plain, old_records, old_includes = _summary(parse(old_text, "slurm.conf (old)", extra_keys))
    new_plain, new_records, new_includes = _summary(parse(new_text, "slurm.conf (new)", extra_keys))
    total = "none"
    reasons = []
    for lower in [*old_plain, *(key for key in new_plain if key not in old_plain)]:
        old = old_plain.get(lower, (None, None))
        new = new_plain.get(lower, (None, None))
        if old[1] == new[1]:
            continue
        cls, why = _plain_change(lower, old[1], new[1])
        total = worse_class(total, cls)
        reasons.append(f"{new[0] or old[0]} {_show(old[1])} -> {_show(new[1])} ({why})")
    for kind in RECORD_KINDS:
        before, after = old_records[kind], new_records[kind]
        cls, why = _RECORD_CLASS[kind]
        why = why or _LABEL[cls]
        found = []
        for ident in [*before, *(name for name in after if name not in before)]:
            label = f"{kind} {ident[0]}"
            if ident not in after:
                found.append(f"{label} removed ({why})")
            elif ident not in before:
                found.append(f"{label} added ({why})")
            else:
                changes = _record_diff(before[ident], after[ident])
                if changes:
                    found.append(f"{label}: {', '.join(changes)} ({why})")
        if not found and list(before) != list(after):
            found.append(f"{kind} lines reordered ({why})")
        if found:
            total = worse_class(total, cls)
            reasons.extend(found)
    if old_includes != new_includes:
        total = worse_class(total, "restart_all")
        reasons.append(
            f"Include {_show(tuple(old_includes))} -> {_show(tuple(new_includes))} ({_INCLUDE_WHY})"
        )
    return {"class": total, "reasons": reasons}


# other files in the slurm.conf directory: what any change to them needs
_FILE_CLASS = {
    # gres.conf: GRES definitions are read by slurmd at start and must match slurmctld's view
    "gres.conf": (
        "restart_all",
        "slurmd reads GRES definitions at start and they must match slurmctld's: restart "
        "slurmctld and all slurmd",
    ),
    # cgroup.conf: read by slurmd (and the slurmstepds it starts) at start
    "cgroup.conf": ("restart_slurmd", "slurmd reads it at start: restart slurmd"),
}
_UNKNOWN_FILE = (
    "restart_all",
    "unknown file, assuming the worst: restart slurmctld and all slurmd",
)


def _meaningful(text):
    """Lines as Slurm's parser sees them, whitespace collapsed, empty ones dropped."""
    return [
        " ".join(content.split())
        for _n, content in _logical_lines(text or "")
        if content.strip(_WS)
    ]


def classify_files(changes, extra_keys=()):
    """Combine the classes of several files' changes.

    ``changes``: ``{"slurm.conf": (old, new), "gres.conf": (old, new), ...}``, ``None`` for an
    absent file. Returns ``{"class": ..., "reasons": ["<file>: <reason>", ...]}``; the class is
    the most severe one (restart_slurmd with restart_slurmctld -> restart_all).
    """
    total = "none"
    reasons = []
    for name, (old, new) in changes.items():
        base = name.rsplit("/", 1)[-1]
        if base == "slurm.conf":
            result = classify(old, new, extra_keys)
        else:
            cls, why = _FILE_CLASS.get(base, _UNKNOWN_FILE)
            result = {"class": "none", "reasons": []}
            if _meaningful(old) != _meaningful(new):
                if old is None:
                    what = "created"
                elif new is None:
                    what = "removed"
                else:
                    what = "changed"
                result = {"class": cls, "reasons": [f"file {what} ({why})"]}
        total = worse_class(total, result["class"])
        reasons.extend(f"{name}: {reason}" for reason in result["reasons"])
    return {"class": total, "reasons": reasons}


def conf_nodes(conf_text, extra_keys=()):
    """NodeNames a slurm.conf defines, hostlists expanded, DEFAULT skipped, in file order."""
    conf = parse(conf_text, "slurm.conf", extra_keys)
    names = []
    for record in conf.records("NodeName"):
        if record.name.upper() != "DEFAULT":
            names += hostlist.expand(record.name)
    return names
