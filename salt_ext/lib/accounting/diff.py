"""Wanted (pillar) against current (cluster): what to add, modify and remove, the drift,
the unmanaged entities, and the batched ``sacctmgr`` command lines that make it so.

Batching: entities that take the same command differ only in the name list
(``add account name=a1,a2,a3 cluster=c parent=p``, ``modify user where name=u1,u2 cluster=c
set DefaultAccount=a``, ``delete qos where name=q1,q2``), so each distinct command is one
line with every name that needs it; the lines of a phase go to ONE ``sacctmgr -i`` process
on its stdin. New accounts and new users are created by Slurm's own bulk interface
instead, ``sacctmgr -i load file=/dev/stdin`` with a flat file (``Cluster -`` / ``Parent -``
/ ``Account -`` / ``User -`` lines): sacctmgr sends each command of a batch to slurmdbd as
its own few requests, and each request/answer pair waits ~40 ms on TCP's delayed ACK
(slurmdbd's protocol writes a length and then a body: Nagle holds the body until the
length is acknowledged; seen with strace on 22.05.8), so 100 accounts with their own
settings took 53 s as 100 ``add`` lines and 1,000 users 74 s — the load file creates them
all in a handful of requests (~3 s), all or nothing (a bad line: exit 1, nothing
committed; checked on slurmdbd). Five phases, in this order, each its own process so a
failure stops the rest:

1. ``qos``: new QOS (without Preempt, which may name a QOS of the same batch), then QOS
   modifications (Preempt of new ones included);
2. ``create`` (the load file, one process per :data:`LOAD_ENTRIES` entities): new
   accounts (parents before children) with their association, new users with every
   association (the default account's first). What
   cannot be said in a load file goes by lines in the next phases instead: a value with a
   ``:`` outside quotes (a typed GRES TRES, ``gres/gpu:a100``: ``:`` separates a load
   line's options), a user whose record has associations on another cluster, and what
   hangs under an account that went by lines. An account whose record exists without an
   association here (another cluster's, or left by a purge) is in the file: load adds the
   association and sets the record's text (checked on slurmdbd);
3. ``accounts``: new accounts not in the file, parents before children; re-parenting in
   the wanted tree's order (a parent is in place before its children move under it);
   record fields (description, organization); association limits;
4. ``users``: new users not in the file (with their default account), new associations of
   existing users, admin levels, default accounts, association limits;
5. ``removals``: user associations, users (their other associations before the one to
   their default account), accounts (children first), QOS.

A line stays under :data:`LINE_MAX` characters and :data:`WORDS_MAX` words (sacctmgr
built without readline reads 4096-byte lines and every build refuses 128 words); a longer
name list is split over several lines of the same phase.
"""

import re

from . import pillar, values

LINE_MAX = 3500
WORDS_MAX = 100
LOAD_PHASE = "create"
LOAD_ENTRIES = 2_000
PHASES = ("qos", LOAD_PHASE, "accounts", "users", "removals")
KINDS = ("qos", "accounts", "users")
_WORD = re.compile(r'(?:[^\s"]+|"[^"]*")+')
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# one load-file option: a double-quoted text or characters without a ":" (the separator)
_LOAD_OPTION = re.compile(r'(?:[^:"]+|"[^"]*")+')
_LOAD_HEAD = re.compile(r"(Cluster|Parent|Account|User) - '([a-z_][a-z0-9_.-]*)'")


_ASSOC_KEYS = tuple(values.SET_NAMES.get(key, key) for key in values.ASSOC_KINDS)
_LOAD_KEYS = {
    "Account": (*_ASSOC_KEYS, "Description", "Organization"),
    "User": (*_ASSOC_KEYS, "DefaultAccount", "AdminLevel"),
}


class UnsafeCommand(ValueError):
    """A command line failed the final check; nothing was run."""


def _empty_changes():
    return {kind: {"added": [], "modified": {}, "removed": []} for kind in KINDS}


class _Lines:
    """Command lines grouped by everything but the name list, kept in phase order."""

    def __init__(self):
        self.groups = {phase: {} for phase in PHASES}
        self.load = []  # the load files' lines, in order

    def add(self, phase, order, prefix, name, suffix=""):
        self.groups[phase].setdefault((order, prefix, suffix), []).append(name)

    def render(self):
        result = []
        for phase in PHASES:
            if phase == LOAD_PHASE:
                result += [{"phase": phase, "lines": lines} for lines in self.load]
                continue
            lines = []
            groups = self.groups[phase]
            for order, prefix, suffix in sorted(groups, key=lambda k: k[0]):
                lines += _chunk(prefix, groups[(order, prefix, suffix)], suffix)
            if lines:
                result.append({"phase": phase, "lines": lines})
        return result


def _chunk(prefix, names, suffix):
    lines, current = [], []
    room = LINE_MAX - len(prefix) - len(suffix)
    size = 0
    for name in names:
        if current and size + len(name) + 1 > room:
            lines.append(prefix + ",".join(current) + suffix)
            current, size = [], 0
        current.append(name)
        size += len(name) + 1
    if current:
        lines.append(prefix + ",".join(current) + suffix)
    return [check_line(line) for line in lines]


def check_line(line):
    """Defence in depth: every line is re-checked before it can reach sacctmgr."""
    if _CONTROL.search(line) or len(line) > LINE_MAX + 200:
        raise UnsafeCommand(
            f"refusing a command line with a control character or too long: {line[:80]!r}"
        )
    words = _WORD.findall(line)
    if "".join(words).replace(" ", "") != line.replace(" ", "") or len(words) > WORDS_MAX:
        raise UnsafeCommand(f"refusing an unbalanced or oversized command line: {line[:80]!r}")
    for word in words[1:]:
        if not values.token_ok(word):
            raise UnsafeCommand(f"refusing command word {word[:60]!r}")
    return line


def check_load_line(line):
    """The same last check for a line of the load file: ``<Kind> - '<name>'`` and, on
    ``Account``/``User`` lines only, options joined by ``:``, each one a checked word
    (:func:`values.token_ok`) whose key is one the plan writes for that kind."""
    if _CONTROL.search(line) or len(line) > LINE_MAX or not line.isascii():
        raise UnsafeCommand(
            f"refusing a load-file line with a control character or too long: {line[:80]!r}"
        )
    head = _LOAD_HEAD.match(line)
    if not head:
        raise UnsafeCommand(f"refusing a load-file line of no known kind: {line[:80]!r}")
    rest = line[head.end() :]
    options = _LOAD_OPTION.findall(rest[1:]) if rest else []
    if rest and (rest[0] != ":" or ":".join(options) != rest[1:]):
        raise UnsafeCommand(f"refusing an unbalanced load-file line: {line[:80]!r}")
    allowed = _LOAD_KEYS.get(head.group(1), ())
    if len(options) > WORDS_MAX or not all(
        values.token_ok(word) and word.partition("=")[0] in allowed for word in options
    ):
        raise UnsafeCommand(f"refusing a load-file line's options: {line[:80]!r}")
    return line


def check_load_file(lines, cluster):
    """A whole load file: exactly one ``Cluster`` line, first, naming ``cluster`` (with no
    option: it would change the cluster's root association), then checked lines."""
    if not lines or lines[0] != f"Cluster - '{cluster}'":
        raise UnsafeCommand(f"refusing a load file that does not start with cluster {cluster}")
    for line in lines[1:]:
        if check_load_line(line).startswith("Cluster "):
            raise UnsafeCommand("refusing a load file with a second Cluster line")
    return lines


def _loadable(words):
    """A word says the same in a load file: no ``:`` outside a quoted text."""
    return all(len(_LOAD_OPTION.findall(word)) == 1 for word in words)


class _LoadFile:
    """New accounts and users as ``sacctmgr load`` files: ``Parent - 'p'`` sections,
    accounts in the wanted tree's order (a parent is created before its section), then the
    users: every new user's default association first (it creates the user with
    ``DefaultAccount``), then their other associations. At most :data:`LOAD_ENTRIES`
    entities a file (sacctmgr's load looks each new entity up in the lists it builds, so
    its time grows with the square of a file's size, and a file is all or nothing): files
    run in order, so a later one finds the parents an earlier one made."""

    def __init__(self, cluster):
        self.cluster = cluster
        self.sections = ({}, {}, {})  # accounts, users' defaults, users' other accounts
        self.accounts = set()  # created by the files

    def account(self, name, parent, words):
        self.sections[0].setdefault(parent, []).append(_load_entry("Account", name, words))
        self.accounts.add(name)

    def user(self, name, account, words, default=False):
        section = self.sections[1 if default else 2]
        section.setdefault(account, []).append(_load_entry("User", name, words))

    def files(self):
        entries = [
            (parent, entry)
            for section in self.sections
            for parent, entries in section.items()
            for entry in entries
        ]
        files = []
        for start in range(0, len(entries), LOAD_ENTRIES):
            lines, parent = [f"Cluster - '{self.cluster}'"], None
            for section_parent, entry in entries[start : start + LOAD_ENTRIES]:
                if section_parent != parent:
                    lines.append(f"Parent - '{section_parent}'")
                    parent = section_parent
                lines.append(entry)
            files.append(check_load_file(lines, self.cluster))
        return files


def _load_entry(kind, name, words):
    return f"{kind} - '{name}'" + "".join(f":{word}" for word in words)


def _settings(fields, kinds, old=None, skip=()):
    """``Key=value`` words for ``fields`` (normal form), in a stable order, as one string."""
    return " ".join(_words(fields, kinds, old, skip))


def _words(fields, kinds, old=None, skip=()):
    """The words of :func:`_settings`, as a list."""
    words = []
    for key in sorted(fields):
        if key in skip:
            continue
        before = (old or {}).get(key)
        if kinds[key] == "flags" and not fields[key] and before:
            words.append(f"Flags-={','.join(before)}")  # remove exactly the flags set now
            continue
        name = values.SET_NAMES.get(key, key)
        words.append(f"{name}={values.render(kinds[key], fields[key], before)}")
    return words


def _create_fields(fields):
    """Fields worth writing on creation (None / Slurm's own default are left out)."""
    return {
        key: value
        for key, value in fields.items()
        if value is not None and value != {} and values.CREATE_DEFAULTS.get(key, 0) != value
    }


def _compare(wanted, current, kinds):
    """{field: (old, new)} for the managed fields that differ."""
    out = {}
    for key, new in wanted.items():
        old = current.get(key, values.parse(kinds[key], None, key) if key in kinds else None)
        if not values.same(kinds.get(key, "text"), old, new):
            out[key] = (old, new)
    return out


def _record(changes, drift, kind, name, field, old, new, value_kind):
    entry = {"old": values.shown(value_kind, old), "new": values.shown(value_kind, new)}
    changes[kind]["modified"].setdefault(name, {})[field] = entry
    drift.append(
        {
            "kind": kind,
            "name": name,
            "field": field,
            "cluster": entry["old"],
            "pillar": entry["new"],
        }
    )


def _safe_name(name):
    return isinstance(name, str) and bool(values.NAME_RE.fullmatch(name)) and len(name) <= 64


def _unmanaged(kind, have, want, protected, purge, unmanaged, kept, keep=()):
    """The ``kind`` entities the cluster has and pillar does not (``protected`` aside):
    each listed in ``unmanaged``; with ``purge`` the ones that may go are returned (sorted),
    those that stay (in ``keep``: a user's default account; a name sacctmgr cannot be given
    safely) are listed in ``kept`` with why."""
    leaving = []
    for name in sorted(set(have) - set(want)):
        if name == protected:
            continue
        unmanaged[kind].append(name)
        if not purge:
            continue
        if name in keep:
            kept.append({"kind": kind, "name": name, "why": "a user's default account"})
        elif not _safe_name(name):
            kept.append({"kind": kind, "name": name, "why": "name sacctmgr cannot be given safely"})
        else:
            leaving.append(name)
    return leaving


def _load_user(load, name, want, caccounts):
    """A new user and all their associations into the load file, when every account is
    there by then and every value can be said in the file; False (nothing added) else."""
    if not all(acct in caccounts or acct in load.accounts for acct in want["assocs"]):
        return False
    default = want["DefaultAccount"]
    admin = want.get("AdminLevel", "None")
    head = [f"DefaultAccount={default}"] + ([f"AdminLevel={admin}"] if admin != "None" else [])
    words = {
        account: _words(_create_fields(assoc), values.ASSOC_KINDS)
        for account, assoc in want["assocs"].items()
    }
    if not all(_loadable(ws) for ws in words.values()):
        return False
    load.user(name, default, head + words[default], default=True)
    for account in sorted(words):
        if account != default:
            load.user(name, account, words[account])
    return True


def plan(wanted, current, cluster, bulk=True):
    """The whole difference; see the module docstring. ``wanted`` from
    :func:`.pillar.validate`, ``current`` from :func:`.current.parse`. ``bulk=False``
    writes every creation as ``add`` lines (no load file)."""
    values.check_name(cluster, "slurm:cluster_name")
    lines = _Lines()
    load = _LoadFile(cluster) if bulk else None
    changes = _empty_changes()
    drift = []
    unmanaged = {"qos": [], "accounts": [], "users": [], "associations": []}
    kept = []
    at = f" cluster={cluster}"

    # ------------------------------------------------------------------ QOS
    qkinds = values.QOS_KINDS
    for name in sorted(wanted["qos"]):
        fields = wanted["qos"][name]
        if name not in current["qos"]:
            changes["qos"]["added"].append(name)
            create = _create_fields(fields)
            words = _settings(create, qkinds, skip=("Preempt",))
            lines.add("qos", 0, "add qos name=", name, f" {words}" if words else "")
            if create.get("Preempt"):
                lines.add(
                    "qos",
                    1,
                    "modify qos where name=",
                    name,
                    f" set Preempt={values.render('qoslist', create['Preempt'])}",
                )
            continue
        diff = _compare(fields, current["qos"][name], qkinds)
        if diff:
            for field, (old, new) in diff.items():
                _record(changes, drift, "qos", name, field, old, new, qkinds[field])
            words = _settings(
                {k: new for k, (_o, new) in diff.items()},
                qkinds,
                {k: old for k, (old, _n) in diff.items()},
            )
            lines.add("qos", 1, "modify qos where name=", name, f" set {words}")

    # ------------------------------------------------------------- accounts
    akinds = values.ASSOC_KINDS
    waccounts, caccounts = wanted["accounts"], current["accounts"]
    records = current.get("account_records", {})
    for name in sorted(waccounts, key=lambda n: (pillar.depth(waccounts, n), n)):
        want = waccounts[name]
        level = pillar.depth(waccounts, name)
        have = caccounts.get(name)
        text = {k: want[k] for k in ("Description", "Organization") if k in want}
        if have is None:
            changes["accounts"]["added"].append(name)
            create = {**_create_fields(want["assoc"]), **text}
            words = _words(create, {**akinds, "Description": "text", "Organization": "text"})
            parent = want["parent"]
            if (
                load is not None
                and (parent in caccounts or parent in load.accounts)
                and _loadable(words)
            ):
                # a record left from another cluster (or a purge) gets its association
                # here and the file's description/organization (checked on slurmdbd)
                load.account(name, parent, words)
                continue
            lines.add(
                "accounts",
                (0, level),
                "add account name=",
                name,
                f"{at} parent={parent}" + "".join(f" {word}" for word in words),
            )
            if name in records:  # the record exists (another cluster): fix its text too
                have = {**records[name], "assoc": dict(want["assoc"]), "parent": want["parent"]}
            else:
                continue
        if have.get("parent") != want["parent"]:
            _record(
                changes,
                drift,
                "accounts",
                name,
                "Parent",
                have.get("parent"),
                want["parent"],
                "qos",
            )
            lines.add(
                "accounts",
                (1, level),
                "modify account where name=",
                name,
                f"{at} set Parent={want['parent']}",
            )
        for field, (old, new) in _compare(text, have, {}).items():
            _record(changes, drift, "accounts", name, field, old, new, "text")
            lines.add(
                "accounts",
                (2, 0),
                "modify account where name=",
                name,
                f" set {field}={values.render('text', new)}",
            )
        diff = _compare(want["assoc"], have.get("assoc") or {}, akinds)
        if diff:
            for field, (old, new) in diff.items():
                _record(changes, drift, "accounts", name, field, old, new, akinds[field])
            words = _settings(
                {k: new for k, (_o, new) in diff.items()},
                akinds,
                {k: old for k, (old, _n) in diff.items()},
            )
            lines.add("accounts", (3, 0), "modify account where name=", name, f"{at} set {words}")

    # ---------------------------------------------------------------- users
    wusers, cusers = wanted["users"], current["users"]
    for name in sorted(wusers):
        want = wusers[name]
        have = cusers.get(name)
        default = want["DefaultAccount"]
        if have is None:
            changes["users"]["added"].append(name)
            first = _create_fields(want["assocs"][default])
            admin = want.get("AdminLevel", "None")
            record = current.get("user_records", {}).get(name)
            if load is not None and not record and _load_user(load, name, want, caccounts):
                continue
            words = _settings(first, akinds)
            suffix = f"{at} account={default} DefaultAccount={default}"
            suffix += f" AdminLevel={admin}" if admin != "None" else ""
            lines.add(
                "users", (0, 0), "add user name=", name, suffix + (f" {words}" if words else "")
            )
            if record and record.get("AdminLevel", "None") != admin:
                # the user record outlived its associations here (or has some on another
                # cluster): `add user` then adds the association only and ignores
                # AdminLevel (sacctmgr 22.05.8, checked on slurmdbd)
                lines.add(
                    "users", (2, 0), "modify user where name=", name, f" set AdminLevel={admin}"
                )
            for account in sorted(want["assocs"]):
                if account != default:
                    words = _settings(_create_fields(want["assocs"][account]), akinds)
                    lines.add(
                        "users",
                        (1, 0),
                        "add user name=",
                        name,
                        f"{at} account={account}" + (f" {words}" if words else ""),
                    )
            continue
        added = sorted(set(want["assocs"]) - set(have["assocs"]))
        removed = sorted(set(have["assocs"]) - set(want["assocs"]))
        if name == pillar.ROOT_USER and pillar.ROOT_ACCOUNT in removed:
            removed.remove(pillar.ROOT_ACCOUNT)  # root's own association stays
        for account in added:
            words = _settings(_create_fields(want["assocs"][account]), akinds)
            lines.add(
                "users",
                (1, 0),
                "add user name=",
                name,
                f"{at} account={account}" + (f" {words}" if words else ""),
            )
        if added or removed:
            assoc = changes["users"]["modified"].setdefault(name, {})
            assoc["associations"] = {"added": added, "removed": removed}
            for account in removed:
                drift.append(
                    {
                        "kind": "users",
                        "name": name,
                        "field": "association",
                        "cluster": account,
                        "pillar": None,
                    }
                )
                if _safe_name(account):
                    lines.add(
                        "removals",
                        (0, 0),
                        "delete user where name=",
                        name,
                        f" account={account}{at}",
                    )
        if "AdminLevel" in want and want["AdminLevel"] != have.get("AdminLevel"):
            _record(
                changes,
                drift,
                "users",
                name,
                "AdminLevel",
                have.get("AdminLevel"),
                want["AdminLevel"],
                "qos",
            )
            lines.add(
                "users",
                (2, 0),
                "modify user where name=",
                name,
                f" set AdminLevel={want['AdminLevel']}",
            )
        if have.get("DefaultAccount") != default:
            _record(
                changes,
                drift,
                "users",
                name,
                "DefaultAccount",
                have.get("DefaultAccount"),
                default,
                "qos",
            )
            lines.add(
                "users",
                (3, 0),
                "modify user where name=",
                name,
                f"{at} set DefaultAccount={default}",
            )
        for account in sorted(set(want["assocs"]) & set(have["assocs"])):
            diff = _compare(want["assocs"][account], have["assocs"][account], akinds)
            if not diff:
                continue
            for field, (old, new) in diff.items():
                _record(
                    changes, drift, "users", name, f"{account}:{field}", old, new, akinds[field]
                )
            words = _settings(
                {k: new for k, (_o, new) in diff.items()},
                akinds,
                {k: old for k, (old, _n) in diff.items()},
            )
            lines.add(
                "users",
                (4, 0),
                "modify user where name=",
                name,
                f" account={account}{at} set {words}",
            )

    # ------------------------------------------------------ unmanaged / purge
    purge = wanted["purge"]
    leaving_users = set(
        _unmanaged("users", cusers, wusers, pillar.ROOT_USER, purge, unmanaged, kept)
    )
    # accounts that stay someone's default (the cluster's default accounts) are never removed
    defaults = {pillar.ROOT_ACCOUNT}
    for name, user in cusers.items():
        if name not in leaving_users:
            defaults.add(
                wusers[name]["DefaultAccount"] if name in wusers else user.get("DefaultAccount")
            )
    leaving_accounts = _unmanaged(
        "accounts", caccounts, waccounts, pillar.ROOT_ACCOUNT, purge, unmanaged, kept, defaults
    )
    for user, account, partition in current.get("partition_assocs", []):
        unmanaged["associations"].append({"user": user, "account": account, "partition": partition})
    for name in sorted(leaving_users):
        changes["users"]["removed"].append(name)
        # sacctmgr 22.05 refuses `delete user where name=X cluster=C` for a user with
        # several associations there, one of them the default ("You can not remove the
        # default account of a user"; checked on slurmdbd): the others go first
        default = cusers[name].get("DefaultAccount")
        for account in sorted(cusers[name]["assocs"]):
            if account != default and _safe_name(account):
                lines.add(
                    "removals", (1, 0), "delete user where name=", name, f" account={account}{at}"
                )
        lines.add("removals", (1, 1), "delete user where name=", name, at)
    cdepth = {
        name: {"parent": acc.get("parent") or pillar.ROOT_ACCOUNT}
        for name, acc in caccounts.items()
    }
    for name in sorted(leaving_accounts, key=lambda n: (-pillar.depth(cdepth, n), n)):
        changes["accounts"]["removed"].append(name)
        lines.add(
            "removals", (2, -pillar.depth(cdepth, name)), "delete account where name=", name, at
        )
    for name in _unmanaged(
        "qos", current["qos"], wanted["qos"], pillar.DEFAULT_QOS, purge, unmanaged, kept
    ):
        changes["qos"]["removed"].append(name)
        lines.add("removals", (3, 0), "delete qos where name=", name)

    if load is not None:
        lines.load = load.files()
    return {
        "changes": changes,
        "drift": drift,
        "unmanaged": unmanaged,
        "kept": kept,
        "commands": lines.render(),
    }


def summary(changes):
    """``{"qos": {"added": 2, ...}, ...}`` counts, and the total."""
    counts = {
        kind: {what: len(items) for what, items in group.items()} for kind, group in changes.items()
    }
    return counts, sum(n for group in counts.values() for n in group.values())


def digest(result):
    """A short account of a :func:`.engine.sync` result (what ``slurm.status`` and
    ``slurm.deploy`` print): ``{"in_sync", "total", "counts", "drift", "unmanaged",
    "processes"}``; ``counts`` and ``unmanaged`` keep only the non-zero numbers."""
    counts, total = summary(result["changes"])
    return {
        "in_sync": not result["commands"],
        "total": total,
        "counts": {
            kind: {what: n for what, n in group.items() if n}
            for kind, group in counts.items()
            if any(group.values())
        },
        "drift": len(result["drift"]),
        "unmanaged": {kind: len(items) for kind, items in result["unmanaged"].items() if items},
        "processes": result.get("processes", 0),
    }


def compact(changes):
    """Only the non-empty groups (what a state puts in ``changes``)."""
    out = {}
    for kind, group in changes.items():
        kept = {what: items for what, items in group.items() if items}
        if kept:
            out[kind] = kept
    return out
