"""The values of Slurm's accounting entities: which fields we manage, how each kind of value
is checked (pillar), parsed (``sacctmgr -P`` output), compared and written back.

Every value has one *normal form*, the same whether it came from pillar or from the cluster,
so comparing is ``==``:

=========  ====================================  =============================================
kind       pillar                                normal form
=========  ====================================  =============================================
count      non-negative integer, null            int, None (no limit)
minutes    ``90``, ``"1-00:00:00"``, ``"2:00"``  int minutes, None (the man page's formats;
           (MaxWall, GrpWall), null              seconds round up, like Slurm)
seconds    ``300``, ``"00:05:00"`` (GraceTime)   int seconds
tres       ``"cpu=4,mem=10G,gres/gpu=2"``        {"cpu": 4, "gres/gpu": 2, "mem": 10240}
           (counts; mem/vmem in MB or K/M/G/T)   ({} no limit)
tresmins   the same with integer minutes         the same
share      integer or ``parent``                 int or "parent"
qoslist    list of QOS names                     sorted tuple
qos        a QOS name, null                      str, None
flags      list of QOS flag names                sorted tuple of canonical names
preempt    cluster, cancel, requeue, suspend,    sorted tuple of lower-case words
mode       gang, within, off (or a list)         (("cluster",) by default)
float      number                                float rounded to 6 places
text       printable text (see TEXT)             str compared case-insensitively (sacctmgr
                                                 stores accounting text in lower case)
=========  ====================================  =============================================

Nothing here imports Salt or runs anything.
"""

import math
import re

NAME_MAX = 64
USER_MAX = 32
TEXT_MAX = 200
# a QOS list goes on one sacctmgr line (3,500 characters at most, with the other options)
QOS_LIST_CHARS = 1_000
TRES_ITEMS_MAX = 32
COUNT_MAX = 2**32 - 2  # Slurm's uint32 limits; INFINITE is 2**32 - 1
TRES_COUNT_MAX = 2**53  # uint64 in Slurm, kept well inside exact float range for YAML input
MINUTES_MAX = 2**32 - 2

# Account and QOS names: sacctmgr lowers them ("the contents of Slurm's database are
# maintained in lower case"), so an upper-case name would drift forever; users too, unless
# slurmdbd runs with Parameters=PreserveCaseUser (not supported here).
NAME_RE = re.compile(r"[a-z_][a-z0-9_.-]*")
# Free text (descriptions, organizations): written between double quotes, so no quote of
# either kind, no backslash, no '=' or ',' (sacctmgr's lists and options), no control char.
TEXT_RE = re.compile(r"[A-Za-z0-9 _.:/@()+&-]+")
# what a value may look like once rendered (a TRES string, a number, a list of names)
TOKEN_RE = re.compile(r"[A-Za-z0-9_./:=,+-]+")

TRES_PLAIN = ("cpu", "mem", "energy", "node", "billing", "vmem", "pages")
TRES_NAMED = ("gres", "license", "bb", "fs")
TRES_SIZED = ("mem", "vmem")  # counts in MB; K/M/G/T/P suffixes accepted and normalised
_TRES_NAME_RE = re.compile(r"[a-z0-9_.-]+(:[a-z0-9_.-]+)?")
_SIZE = {"K": 1 / 1024, "M": 1, "G": 1024, "T": 1024**2, "P": 1024**3}

QOS_FLAGS = (
    "DenyOnLimit",
    "EnforceUsageThreshold",
    "NoDecay",
    "NoReserve",
    "OverPartQOS",
    "PartitionMaxNodes",
    "PartitionMinNodes",
    "PartitionTimeLimit",
    "RequiresReservation",
    "UsageFactorSafe",
)
PREEMPT_MODES = ("cluster", "off", "cancel", "requeue", "suspend", "gang", "within")
ADMIN_LEVELS = {"none": "None", "operator": "Operator", "administrator": "Administrator"}
ADMIN_ALIASES = {"admin": "administrator"}


class BadValue(ValueError):
    """A value is not what its key accepts; the message says what was expected."""


# ------------------------------------------------------------------------------- fields
# Association limits (accounts and each user association): Slurm name -> (kind, format
# field of `sacctmgr show assoc`). Aliases sacctmgr(1) 22.05 accepts map to these names.
ASSOC_LIMITS = {
    "GrpJobs": "count",
    "GrpJobsAccrue": "count",
    "GrpSubmitJobs": "count",
    "GrpTRES": "tres",
    "GrpTRESMins": "tresmins",
    "GrpTRESRunMins": "tresmins",
    "GrpWall": "minutes",
    "MaxJobs": "count",
    "MaxJobsAccrue": "count",
    "MaxSubmitJobs": "count",
    "MaxTRES": "tres",
    "MaxTRESMins": "tresmins",
    "MaxTRESPerNode": "tres",
    "MaxWall": "minutes",
    "Priority": "count",
}
ASSOC_ALIASES = {
    "GrpSubmit": "GrpSubmitJobs",
    "MaxSubmit": "MaxSubmitJobs",
    "MaxTRESPerJob": "MaxTRES",
    "MaxTRESMinsPerJob": "MaxTRESMins",
    "MaxWallDurationPerJob": "MaxWall",
}
# association fields outside `limits:` (pillar key -> Slurm name, kind)
ASSOC_FIELDS = {
    "fairshare": ("Fairshare", "share"),
    "qos": ("QOS", "qoslist"),
    "default_qos": ("DefaultQOS", "qos"),
}
ASSOC_KINDS = {**ASSOC_LIMITS, **{slurm: kind for slurm, kind in ASSOC_FIELDS.values()}}

QOS_LIMITS = {
    "GrpJobs": "count",
    "GrpJobsAccrue": "count",
    "GrpSubmitJobs": "count",
    "GrpTRES": "tres",
    "GrpTRESMins": "tresmins",
    "GrpTRESRunMins": "tresmins",
    "GrpWall": "minutes",
    "MaxJobsAccruePerAccount": "count",
    "MaxJobsAccruePerUser": "count",
    "MaxJobsPerAccount": "count",
    "MaxJobsPerUser": "count",
    "MaxSubmitJobsPerAccount": "count",
    "MaxSubmitJobsPerUser": "count",
    "MaxTRES": "tres",
    "MaxTRESMins": "tresmins",
    "MaxTRESPerAccount": "tres",
    "MaxTRESPerNode": "tres",
    "MaxTRESPerUser": "tres",
    "MaxWall": "minutes",
    "MinPrioThreshold": "count",
    "MinTRES": "tres",
}
QOS_ALIASES = {
    "GrpSubmit": "GrpSubmitJobs",
    "MaxJobsAccruePA": "MaxJobsAccruePerAccount",
    "MaxJobsAccruePU": "MaxJobsAccruePerUser",
    "MaxJobsPA": "MaxJobsPerAccount",
    "MaxJobsPU": "MaxJobsPerUser",
    "MaxSubmitJobsPA": "MaxSubmitJobsPerAccount",
    "MaxSubmitJobsPU": "MaxSubmitJobsPerUser",
    "MaxTRESPerJob": "MaxTRES",
    "MaxTRESMinsPerJob": "MaxTRESMins",
    "MaxTRESPA": "MaxTRESPerAccount",
    "MaxTRESPU": "MaxTRESPerUser",
    "MaxWallDurationPerJob": "MaxWall",
    "MinTRESPerJob": "MinTRES",
}
QOS_FIELDS = {
    "description": ("Description", "text"),
    "priority": ("Priority", "count"),
    "flags": ("Flags", "flags"),
    "preempt": ("Preempt", "qoslist"),
    "preempt_mode": ("PreemptMode", "preemptmode"),
    "grace_time": ("GraceTime", "seconds"),
    "usage_factor": ("UsageFactor", "float"),
}
QOS_KINDS = {**QOS_LIMITS, **{slurm: kind for slurm, kind in QOS_FIELDS.values()}}

# Names written in add/modify commands where the short one is a prefix of other options
# (sacctmgr matches option names by prefix): the long, unambiguous spelling of the man page.
# MinPrioThreshold is the man page's and `show`'s name, but sacctmgr 22.05's add/modify
# compare at most "MinPrioThresh" and refuse it ("Unknown option"; checked on slurmdbd).
SET_NAMES = {
    "MaxTRES": "MaxTRESPerJob",
    "MaxTRESMins": "MaxTRESMinsPerJob",
    "MinTRES": "MinTRESPerJob",
    "MinPrioThreshold": "MinPrioThresh",
}

# Values Slurm gives a new entity when a field is not set; used to decide whether a field
# must be written when the entity is created (a field equal to this is left out).
CREATE_DEFAULTS = {
    "Fairshare": 1,
    "QOS": (),
    "Flags": (),
    "Preempt": (),
    "PreemptMode": ("cluster",),
    "GraceTime": 0,
    "UsageFactor": 1.0,
    "Priority": None,
}


# ------------------------------------------------------------------------ checking input
def check_name(value, key, maximum=NAME_MAX):
    """A Slurm account, user, QOS or cluster name as sacctmgr stores it, or BadValue."""
    if not isinstance(value, str):
        raise BadValue(f"{key}: expected a name, got {type(value).__name__} {value!r}")
    if not value or len(value) > maximum:
        raise BadValue(f"{key}: a name of 1-{maximum} characters, got {_show(value)}")
    if not NAME_RE.fullmatch(value):
        lower = value.lower()
        hint = (
            f" (sacctmgr stores names in lower case: write {lower!r})"
            if lower != value and NAME_RE.fullmatch(lower)
            else ""
        )
        raise BadValue(
            f"{key}: {_show(value)} is not a safe name: lower-case letters, digits, '_', "
            f"'.' and '-', starting with a letter or '_'{hint}"
        )
    return value


def check_text(value, key):
    """Free text for a description or organization."""
    if not isinstance(value, str):
        raise BadValue(f"{key}: expected text, got {type(value).__name__} {value!r}")
    if not value.strip() or len(value) > TEXT_MAX:
        raise BadValue(f"{key}: text of 1-{TEXT_MAX} characters, got {_show(value)}")
    if not TEXT_RE.fullmatch(value) or value != value.strip() or "  " in value:
        raise BadValue(
            f"{key}: {_show(value)} has a character sacctmgr could misread: use letters, "
            "digits, single spaces and _ . : / @ ( ) + & - (no quotes, '=', ',' or "
            "control characters)"
        )
    return value


def _show(value):
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _int(value, key, maximum, what="a non-negative integer"):
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise BadValue(f"{key}: expected {what}, got {_show(value)}")
    text = str(value).strip()
    if not (text.isascii() and text.isdigit()) or len(text) > 20:
        raise BadValue(f"{key}: expected {what}, got {_show(value)}")
    number = int(text)
    if number > maximum:
        raise BadValue(f"{key}: at most {maximum}, got {number}")
    return number


def parse_count(value, key):
    if value is None:
        return None
    return _int(value, key, COUNT_MAX)


_DURATION_RE = re.compile(
    r"(?:(?P<days>\d{1,6})-(?P<dh>\d{1,6})(?::(?P<dm>\d{1,6})(?::(?P<ds>\d{1,6}))?)?)"
    r"|(?:(?P<h>\d{1,6}):(?P<m>\d{1,6}):(?P<s>\d{1,6}))"
    r"|(?:(?P<mm>\d{1,9}):(?P<ss>\d{1,6}))"
    r"|(?P<min>\d{1,10})"
)


def _duration_seconds(value, key):
    """Seconds of a duration in sacctmgr's formats: <min>, <min>:<sec>, <hr>:<min>:<sec>,
    <days>-<hr>[:<min>[:<sec>]]; an int is minutes."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise BadValue(f"{key}: expected a duration, got {_show(value)}")
    if isinstance(value, int):
        if value < 0:
            raise BadValue(f"{key}: expected a duration, got {value}")
        return value * 60
    match = _DURATION_RE.fullmatch(value.strip())
    if not match:
        raise BadValue(
            f"{key}: {_show(value)} is not a duration: minutes, MM:SS, HH:MM:SS, "
            "D-HH, D-HH:MM or D-HH:MM:SS"
        )
    g = {k: int(v) for k, v in match.groupdict().items() if v is not None}
    if "days" in g:
        return ((g["days"] * 24 + g["dh"]) * 60 + g.get("dm", 0)) * 60 + g.get("ds", 0)
    if "h" in g:
        return (g["h"] * 60 + g["m"]) * 60 + g["s"]
    if "mm" in g:
        return g["mm"] * 60 + g["ss"]
    return g["min"] * 60


def parse_minutes(value, key):
    if value is None:
        return None
    if isinstance(value, str) and value.strip().upper() in ("UNLIMITED", "INFINITE"):
        return None
    minutes = math.ceil(_duration_seconds(value, key) / 60)
    if minutes > MINUTES_MAX:
        raise BadValue(f"{key}: at most {MINUTES_MAX} minutes, got {minutes}")
    return minutes


def parse_seconds(value, key):
    if value is None:
        return 0
    if isinstance(value, int) and not isinstance(value, bool):
        if not 0 <= value <= COUNT_MAX:
            raise BadValue(f"{key}: 0-{COUNT_MAX} seconds, got {value}")
        return value
    seconds = _duration_seconds(value, key)
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        seconds //= 60  # a bare number is seconds here (GraceTime), not minutes
    if seconds > COUNT_MAX:
        raise BadValue(f"{key}: at most {COUNT_MAX} seconds, got {seconds}")
    return seconds


def parse_tres(value, key, minutes=False):
    """``type[/name]=count[,...]`` -> {tres: int}; None or '' -> {} (no limit)."""
    if value is None or value == "":
        return {}
    if isinstance(value, dict):
        items = [(str(k), v) for k, v in value.items()]
    elif isinstance(value, str):
        if len(value) > 1024:
            raise BadValue(f"{key}: a TRES list of at most 1024 characters")
        items = []
        for part in value.split(","):
            name, sep, count = part.partition("=")
            if not sep:
                raise BadValue(
                    f"{key}: {_show(part)} is not a TRES limit: expected type[/name]=count "
                    "(e.g. cpu=64,mem=256G,gres/gpu=4)"
                )
            items.append((name.strip(), count.strip()))
    else:
        raise BadValue(f"{key}: expected a TRES list like 'cpu=64,gres/gpu=4'")
    if len(items) > TRES_ITEMS_MAX:
        raise BadValue(f"{key}: at most {TRES_ITEMS_MAX} TRES in one limit")
    result = {}
    for name, count in items:
        tres = _tres_name(name, key)
        if tres in result:
            raise BadValue(f"{key}: {tres} is given twice")
        result[tres] = _tres_count(tres, count, key, minutes)
    return result


def _tres_name(name, key):
    kind, slash, sub = name.partition("/")
    if kind in TRES_PLAIN and not slash:
        return kind
    if kind in TRES_NAMED and slash and _TRES_NAME_RE.fullmatch(sub):
        return name
    raise BadValue(
        f"{key}: {_show(name)} is not a TRES: one of {', '.join(TRES_PLAIN)}, or "
        f"{'/NAME, '.join(TRES_NAMED)}/NAME (e.g. gres/gpu, gres/gpu:a100, license/matlab)"
    )


def _tres_count(tres, count, key, minutes):
    what = f"{tres}: expected {'a whole number of minutes' if minutes else 'a whole count'}"
    if isinstance(count, bool):
        raise BadValue(f"{key}: {what}, got {count!r}")
    text = str(count).strip()
    factor = 1
    if tres in TRES_SIZED and text[-1:].upper() in _SIZE:
        factor = _SIZE[text[-1:].upper()]
        text = text[:-1]
    if text == "-1" or text.upper() in ("INFINITE", "UNLIMITED"):
        raise BadValue(f"{key}: {tres}: leave it out to have no limit (got {count!r})")
    if not (text.isascii() and text.isdigit()) or len(text) > 19:
        raise BadValue(f"{key}: {what}, got {_show(count)}")
    number = math.ceil(int(text) * factor)
    if number > TRES_COUNT_MAX:
        raise BadValue(f"{key}: {tres}: at most {TRES_COUNT_MAX}, got {number}")
    return number


def parse_share(value, key):
    if isinstance(value, str) and value.strip().lower() == "parent":
        return "parent"
    if value is None:
        return 1
    return _int(value, key, COUNT_MAX, "an integer or 'parent'")


def parse_qoslist(value, key):
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        value = value.split(",")
    if not isinstance(value, (list, tuple)):
        raise BadValue(f"{key}: expected a list of QOS names, got {_show(value)}")
    if len(value) > 256:
        raise BadValue(f"{key}: at most 256 QOS")
    names = [check_name(name, f"{key}[{i}]") for i, name in enumerate(value)]
    if len(",".join(set(names))) > QOS_LIST_CHARS:
        raise BadValue(f"{key}: the QOS names together are longer than {QOS_LIST_CHARS} characters")
    return tuple(sorted(set(names)))


def parse_qos(value, key):
    if value is None or value == "":
        return None
    return check_name(value, key)


def parse_flags(value, key):
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        value = value.split(",")
    if not isinstance(value, (list, tuple)):
        raise BadValue(f"{key}: expected a list of QOS flags, got {_show(value)}")
    by_lower = {flag.lower(): flag for flag in QOS_FLAGS}
    flags = []
    for i, flag in enumerate(value):
        if not isinstance(flag, str) or flag.strip().lower() not in by_lower:
            raise BadValue(
                f"{key}[{i}]: {_show(flag)} is not a QOS flag: one of {', '.join(QOS_FLAGS)}"
            )
        flags.append(by_lower[flag.strip().lower()])
    return tuple(sorted(set(flags)))


def parse_preemptmode(value, key):
    if value is None or value == "":
        return ("cluster",)
    if isinstance(value, str):
        value = value.split(",")
    if not isinstance(value, (list, tuple)) or not value:
        raise BadValue(f"{key}: expected a preempt mode, got {_show(value)}")
    modes = []
    for mode in value:
        if not isinstance(mode, str) or mode.strip().lower() not in PREEMPT_MODES:
            raise BadValue(
                f"{key}: {_show(mode)} is not a preempt mode: one of {', '.join(PREEMPT_MODES)}"
            )
        modes.append(mode.strip().lower())
    return tuple(sorted(set(modes)))


def parse_float(value, key):
    if value is None or value == "":
        return 1.0
    if isinstance(value, bool):
        raise BadValue(f"{key}: expected a number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise BadValue(f"{key}: expected a number, got {_show(value)}") from None
    if not math.isfinite(number) or not 0 <= number <= 1e9:
        raise BadValue(f"{key}: expected a number from 0 to 1e9, got {_show(value)}")
    return round(number, 6)


def parse_text(value, key):
    if value is None or value == "":
        return None
    return check_text(value, key)


def parse_admin(value, key):
    word = str(value).strip().lower() if isinstance(value, str) else None
    word = ADMIN_ALIASES.get(word, word)
    if word not in ADMIN_LEVELS:
        raise BadValue(f"{key}: expected none, operator or administrator, got {_show(value)}")
    return ADMIN_LEVELS[word]


PARSERS = {
    "count": parse_count,
    "minutes": parse_minutes,
    "seconds": parse_seconds,
    "tres": parse_tres,
    "tresmins": lambda value, key: parse_tres(value, key, minutes=True),
    "share": parse_share,
    "qoslist": parse_qoslist,
    "qos": parse_qos,
    "flags": parse_flags,
    "preemptmode": parse_preemptmode,
    "float": parse_float,
    "text": parse_text,
}


def parse(kind, value, key):
    """Pillar (or sacctmgr output) value of ``kind`` -> normal form; BadValue naming key."""
    return PARSERS[kind](value, key)


# --------------------------------------------------------------------------- rendering
def render(kind, value, old=None):
    """The sacctmgr value that sets a field from ``old`` to ``value`` (both normal form)."""
    if kind in ("count", "minutes", "qos"):
        return "-1" if value is None else str(value)
    if kind in ("seconds", "share"):
        return str(value)
    if kind in ("tres", "tresmins"):
        parts = [f"{tres}={count}" for tres, count in sorted(value.items())]
        parts += [f"{tres}=-1" for tres in sorted(old or {}) if tres not in value]
        return ",".join(parts)
    if kind == "qoslist":
        # sacctmgr 22.05 clears a QOS list with an empty value; it refuses QOS='' ("You
        # gave me an empty qos list") and QOS=-1 ("a bad qos '1'"), checked on slurmdbd
        return ",".join(value)
    if kind == "flags":
        return ",".join(value) if value else "-1"
    if kind == "preemptmode":
        return ",".join(value)
    if kind == "float":
        return f"{value:g}"
    if kind == "text":
        return f'"{value}"'
    raise KeyError(kind)


def shown(kind, value):
    """A normal-form value as an admin reads it in a change list (JSON-friendly)."""
    if value is None:
        return None
    if kind in ("tres", "tresmins"):
        return ",".join(f"{tres}={count}" for tres, count in sorted(value.items()))
    if kind in ("qoslist", "flags", "preemptmode"):
        return list(value)
    return value


def same(kind, left, right):
    if kind == "text":
        return (left or "").lower() == (right or "").lower()
    return left == right


def token_ok(token):
    """A rendered ``Key=value`` token: safe characters only, or a double-quoted TEXT."""
    key, sep, value = token.partition("=")
    if not sep:
        return bool(TOKEN_RE.fullmatch(token))
    if value.startswith('"'):
        return (
            len(value) >= 3
            and value.endswith('"')
            and TEXT_RE.fullmatch(value[1:-1]) is not None
            and re.fullmatch(r"[A-Za-z]+", key) is not None
        )
    return bool(TOKEN_RE.fullmatch(token))
