"""What the cluster has: one ``sacctmgr -n -P show ...`` per entity kind, parsed into the
same model :mod:`.pillar` builds (normal-form values from :mod:`.values`).

Five reads, each one process: ``show tres`` (the TRES slurmdbd knows: a limit naming another
one, e.g. ``gres/gpu`` without ``AccountingStorageTRES=gres/gpu``, is a pillar error found
before any write), ``show qos``, ``show account``, ``show user`` (the records:
descriptions, default accounts, admin levels) and ``show assoc cluster=<name> WOPLimits``
(every association of this cluster with the limits set *on it*: without ``WOPLimits``
sacctmgr fills unset limits in from the parents, and every user would seem to carry its
account's limits). ``-P`` separates fields with ``|`` and leaves empty fields empty; ``-n``
drops the header, so fields are read by position in the format we asked for.

A line with the wrong number of fields (a ``|`` or a newline inside a hand-made
description) stops the parse with :class:`ParseError` naming the line: guessing which
field is which would attribute a value to the wrong entity.
"""

import re

from . import values

SACCTMGR = "sacctmgr"
QOS_FORMAT = (
    "Name",
    "Priority",
    "Flags",
    "Preempt",
    "PreemptMode",
    "GraceTime",
    "UsageFactor",
    *values.QOS_LIMITS,
    "Description",
)
TRES_FORMAT = ("Type", "Name")
ACCOUNT_FORMAT = ("Account", "Description", "Organization")
USER_FORMAT = ("User", "DefaultAccount", "AdminLevel")
ASSOC_FORMAT = (
    "Cluster",
    "Account",
    "User",
    "Partition",
    "ParentName",
    "Fairshare",
    "QOS",
    "DefaultQOS",
    *values.ASSOC_LIMITS,
)
MAX_OUTPUT_LINES = 1_000_000

_TRES_ITEM = re.compile(r"([a-z][a-z0-9_]*(?:/[^=,|]+)?)=(\d+)([KMGTP]?)")


class ParseError(ValueError):
    """sacctmgr printed something we cannot read without guessing."""


def read_commands(cluster):
    """The argv of each read: ``{kind: argv}``."""
    base = [SACCTMGR, "-n", "-P", "show"]
    return {
        "tres": [*base, "tres", "format=" + ",".join(TRES_FORMAT)],
        "qos": [*base, "qos", "format=" + ",".join(QOS_FORMAT)],
        "accounts": [*base, "account", "format=" + ",".join(ACCOUNT_FORMAT)],
        "users": [*base, "user", "format=" + ",".join(USER_FORMAT)],
        "assocs": [
            *base,
            "assoc",
            f"cluster={cluster}",
            "WOPLimits",
            "format=" + ",".join(ASSOC_FORMAT),
        ],
    }


def _rows(text, fields, what):
    # "\n" only: str.splitlines() also splits on U+2028, U+0085, \x1c-\x1e, which a
    # description made by hand may hold: a forged row (T8)
    lines = [line for line in (text or "").split("\n") if line.strip()]
    if len(lines) > MAX_OUTPUT_LINES:
        raise ParseError(f"sacctmgr show {what}: more than {MAX_OUTPUT_LINES} lines")
    for number, line in enumerate(lines, 1):
        cells = line.split("|")
        if len(cells) != len(fields):
            raise ParseError(
                f"sacctmgr show {what}, line {number}: {len(cells)} fields where "
                f"{len(fields)} were asked for ({line[:120]!r}); a '|' or a line break "
                "inside a value? Fix that entity by hand"
            )
        yield number, dict(zip(fields, cells, strict=True))


def _tres(text, where):
    if not text:
        return {}
    result = {}
    for part in text.split(","):
        match = _TRES_ITEM.fullmatch(part)
        if not match:
            raise ParseError(f"{where}: cannot read TRES {part!r}")
        name, count, unit = match.groups()
        count = int(count)
        if unit and name in values.TRES_SIZED:
            count = int(count * values._SIZE[unit] + 0.999999)  # noqa: SLF001
        result[name] = count
    return result


def _list(text):
    return tuple(sorted({word for word in text.split(",") if word})) if text else ()


def cell(kind, text, where):
    """One output field -> normal form (lenient about names: the cluster may hold any)."""
    text = text.strip()
    try:
        if kind in ("tres", "tresmins"):
            return _tres(text, where)
        if kind == "qoslist":
            return _list(text)
        if kind == "flags":
            known = {flag.lower(): flag for flag in values.QOS_FLAGS}
            return tuple(sorted({known.get(w.lower(), w) for w in _list(text)}))
        if kind == "preemptmode":
            return tuple(sorted({w.lower() for w in _list(text)})) or ("cluster",)
        if kind == "qos":
            return text or None
        if kind == "text":
            return text or None
        if kind == "share":
            return "parent" if text.lower() == "parent" else int(text or 1)
        return values.parse(kind, text or None, where)
    except (values.BadValue, ValueError) as err:
        raise ParseError(f"{where}: cannot read {text!r}: {err}") from None


def parse(outputs, cluster):
    """``{kind: stdout}`` of :func:`read_commands` -> the current model::

        {"qos": {name: {Field: value}},
         "accounts": {name: {"Description", "Organization", "parent", "assoc"}},
         "users": {name: {"DefaultAccount", "AdminLevel", "assocs": {account: {...}}}},
         "partition_assocs": [[user, account, partition], ...]}

    ``accounts``/``users`` hold only entities with an association on ``cluster`` (plus
    ``records``: every account and user name in the database, any cluster); an account's
    ``assoc`` and ``parent`` come from its account association (user field empty).
    """
    tres = set()
    for _number, row in _rows(outputs.get("tres", ""), TRES_FORMAT, "tres"):
        tres.add(f"{row['Type']}/{row['Name']}" if row["Name"] else row["Type"])
    qos = {}
    for number, row in _rows(outputs["qos"], QOS_FORMAT, "qos"):
        where = f"sacctmgr show qos, line {number}"
        qos[row["Name"]] = {
            field: cell(kind, row[field], f"{where} {field}")
            for field, kind in values.QOS_KINDS.items()
        }
    records = {}
    for _number, row in _rows(outputs["accounts"], ACCOUNT_FORMAT, "account"):
        records[row["Account"]] = {
            "Description": row["Description"] or None,
            "Organization": row["Organization"] or None,
        }
    users_rec = {}
    for _number, row in _rows(outputs["users"], USER_FORMAT, "user"):
        users_rec[row["User"]] = {
            "DefaultAccount": row["DefaultAccount"] or None,
            "AdminLevel": row["AdminLevel"] or "None",
        }
    accounts, users, partition_assocs = {}, {}, []
    for number, row in _rows(outputs["assocs"], ASSOC_FORMAT, "assoc"):
        if row["Cluster"] != cluster:
            continue
        where = f"sacctmgr show assoc, line {number}"
        assoc = {
            field: cell(kind, row[field], f"{where} {field}")
            for field, kind in values.ASSOC_KINDS.items()
        }
        account, user = row["Account"], row["User"]
        if row["Partition"]:
            partition_assocs.append([user, account, row["Partition"]])
            continue
        if not user:
            entry = accounts.setdefault(account, dict(records.get(account, {})))
            entry["parent"] = row["ParentName"] or None
            entry["assoc"] = assoc
        else:
            entry = users.setdefault(
                user,
                {
                    **users_rec.get(user, {"DefaultAccount": None, "AdminLevel": "None"}),
                    "assocs": {},
                },
            )
            entry["assocs"][account] = assoc
    return {
        "qos": qos,
        "accounts": accounts,
        "users": users,
        "partition_assocs": partition_assocs,
        "records": {"accounts": sorted(records), "users": sorted(users_rec)},
        "account_records": records,
        "user_records": users_rec,
        "tres": sorted(tres),
    }


def read(run, cluster):
    """Run the five reads with ``run(argv) -> stdout`` and parse them."""
    outputs = {kind: run(argv) for kind, argv in read_commands(cluster).items()}
    return parse(outputs, cluster)
