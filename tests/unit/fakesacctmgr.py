"""A fake ``sacctmgr`` (Slurm 22.05) for unit tests: an in-memory accounting database that
understands the commands saltext-slurm writes and prints ``show`` output the way the real
one does with ``-n -P``:

- fields separated by ``|``, no trailing ``|`` (``-P``), no header (``-n``), unset fields
  empty;
- the cluster's root association (account root, no user, no parent, QOS normal) and the
  root user's association, as ``sacctmgr add cluster`` leaves them;
- QOS ``normal`` as slurmdbd creates it (``normal|...|0||...|cluster|00:00:00|1.000000``);
- durations as ``[D-]HH:MM:SS``, memory TRES with a unit when it divides (``mem=10G``),
  descriptions and organizations in lower case (sacctmgr lowers them), a new account's
  description = its name and organization = its parent (or its name under root);
- ``WOPLimits``: only limits set on the association itself.

Commands come as argv (``sacctmgr -n -P show ...``) or, with ``-i`` and no command, one
per line on stdin; a failing line sets exit code 1 and the rest still run, as in
sacctmgr's own loop. ``sacctmgr -i load file=/dev/stdin`` reads a flat file (``Cluster -
'c'`` first, ``Parent - 'p'`` sections of ``Account -`` / ``User -`` lines with
``:Key=value`` options) and, as the real one does, commits all of it or nothing (exit 1).
Errors the real one makes that our ordering must avoid are modelled:
unknown QOS/parent/account, deleting a user's default account while other associations
remain, deleting an account that still has children or users, duplicate adds ("Nothing
new added").
"""

import copy
import re

from salt_ext.lib.util import command

QOS_COUNT = {
    "Priority",
    "GrpJobs",
    "GrpJobsAccrue",
    "GrpSubmitJobs",
    "MaxJobsAccruePerAccount",
    "MaxJobsAccruePerUser",
    "MaxJobsPerAccount",
    "MaxJobsPerUser",
    "MaxSubmitJobsPerAccount",
    "MaxSubmitJobsPerUser",
    "MinPrioThreshold",
    "MaxJobs",
    "MaxJobsAccrue",
    "MaxSubmitJobs",
}
TRES = {
    "GrpTRES",
    "GrpTRESMins",
    "GrpTRESRunMins",
    "MaxTRES",
    "MaxTRESMins",
    "MaxTRESPerAccount",
    "MaxTRESPerNode",
    "MaxTRESPerUser",
    "MinTRES",
}
WALL = {"GrpWall", "MaxWall"}
ASSOC_FIELDS = {
    "Fairshare",
    "QOS",
    "DefaultQOS",
    "GrpJobs",
    "GrpJobsAccrue",
    "GrpSubmitJobs",
    "GrpTRES",
    "GrpTRESMins",
    "GrpTRESRunMins",
    "GrpWall",
    "MaxJobs",
    "MaxJobsAccrue",
    "MaxSubmitJobs",
    "MaxTRES",
    "MaxTRESMins",
    "MaxTRESPerNode",
    "MaxWall",
    "Priority",
}


def _tokens(line):
    """sacctmgr's _get_command: split on white space outside quotes, quotes kept."""
    words, i = [], 0
    while i < len(line):
        if line[i].isspace():
            i += 1
            continue
        start, dq, sq = i, False, False
        while i < len(line):
            c = line[i]
            if c == '"':
                dq = not dq
            elif c == "'":
                sq = not sq
            elif c.isspace() and not dq and not sq:
                break
            i += 1
        words.append(line[start:i])
    return words


def _load_options(rest):
    """A load-file line's options: ``:`` outside quotes separates them."""
    words, word, quote = [], "", None
    for c in rest:
        if c in "\"'" and quote in (None, c):
            quote = None if quote else c
        if c == ":" and quote is None:
            if word:
                words.append(word)
            word = ""
            continue
        word += c
    if word:
        words.append(word)
    return words


def _strip(value, lower=False):
    """sacctmgr's strip_quotes."""
    if value[:1] in ('"', "'"):
        quote = value[0]
        end = value.find(quote, 1)
        value = value[1:] if end < 0 else value[1:end]
    value = value.replace('"', "`").replace("'", "`")
    return value.lower() if lower else value


def _hms(minutes):
    days, rest = divmod(minutes * 60, 86400)
    h, rest = divmod(rest, 3600)
    m, s = divmod(rest, 60)
    return f"{days}-{h:02d}:{m:02d}:{s:02d}" if days else f"{h:02d}:{m:02d}:{s:02d}"


def _tres_out(tres):
    order = {"cpu": 1, "mem": 2, "energy": 3, "node": 4, "billing": 5}
    parts = []
    for name in sorted(tres, key=lambda n: (order.get(n, 100), n)):
        count = tres[name]
        if name == "mem" and count and count % (1024 * 1024) == 0:
            parts.append(f"mem={count // (1024 * 1024)}T")  # as the real one: mem=1T
        elif name == "mem" and count and count % 1024 == 0:
            parts.append(f"mem={count // 1024}G")
        else:
            parts.append(f"{name}={count}")
    return ",".join(parts)


class SacctmgrError(Exception):
    pass


class FakeSacctmgr:
    """``run(argv, stdin=None) -> stdout``; ``calls`` records every process."""

    # `sacctmgr show tres` of slurmdbd 22.05 (captured), plus gres/gpu as if slurm.conf had
    # AccountingStorageTRES=gres/gpu
    KNOWN_TRES = ("cpu", "mem", "energy", "node", "billing", "fs/disk", "vmem", "pages", "gres/gpu")

    def __init__(self, cluster="cluster", tres=KNOWN_TRES):
        self.cluster = cluster
        self.tres = list(tres)
        self.calls = []
        self.fail_on = None  # a substring: a line containing it fails
        self.qos = {}
        self.accounts = {}  # name -> {"Description", "Organization"}
        self.users = {}  # name -> {"DefaultAccount", "AdminLevel"}
        self.assocs = []  # {"Cluster", "Account", "User", "Partition", "ParentName", fields}
        self._seed_qos("normal", {"Description": "Normal QOS default"})
        self.accounts["root"] = {"Description": "default root account", "Organization": "root"}
        self.assocs.append(self._assoc("root", "", "", QOS=("normal",)))
        self.users["root"] = {"DefaultAccount": "root", "AdminLevel": "Administrator"}
        self.assocs.append(self._assoc("root", "root", ""))  # user rows: no ParentName

    # ------------------------------------------------------------------ helpers
    def _assoc(self, account, user, parent, partition="", **fields):
        row = {
            "Cluster": self.cluster,
            "Account": account,
            "User": user,
            "Partition": partition,
            "ParentName": parent,
        }
        row.update({f: None for f in ASSOC_FIELDS})
        row["Fairshare"] = 1
        row["QOS"] = ()
        row.update(fields)
        return row

    def _seed_qos(self, name, fields):
        base = {
            "Description": name,
            "Priority": 0,
            "Flags": (),
            "Preempt": (),
            "PreemptMode": "cluster",
            "GraceTime": 0,
            "UsageFactor": 1.0,
        }
        self.qos[name] = {**base, **fields}

    def assoc(self, account, user=""):
        for row in self.assocs:
            if row["Account"] == account and row["User"] == user and not row["Partition"]:
                return row
        return None

    def add_partition_assoc(self, user, account, partition):
        self.assocs.append(self._assoc(account, user, "", partition=partition))

    # ------------------------------------------------------------------ process
    def __call__(self, argv, stdin=None):
        self.calls.append({"argv": list(argv), "stdin": stdin})
        opts, words = [], list(argv[1:])
        while words and words[0].startswith("-"):
            opts.append(words.pop(0))
        if words[:1] == ["load"]:
            if "-i" not in opts or words[1:] != ["file=/dev/stdin"]:
                raise AssertionError(f"unexpected load command {argv}")
            return self._load(argv, stdin or "")
        if words:
            lines = [words]
        else:
            if "-i" not in opts:
                raise AssertionError("sacctmgr reading stdin without -i would wait for a y/N")
            lines = [_tokens(line) for line in (stdin or "").splitlines()]
        out, errors = [], []
        for line in lines:
            if not line or line[0].startswith("#"):
                continue
            try:
                if self.fail_on and self.fail_on in " ".join(line):
                    raise SacctmgrError(f" Problem with {' '.join(line)}")
                out.append(self._command(line))
            except SacctmgrError as err:
                errors.append(str(err))
        stdout = "".join(part for part in out if part)
        if errors:
            raise command.CommandFailed(argv, "; ".join(errors), 1, stdout, "\n".join(errors))
        return stdout

    def _load(self, argv, text):
        """Real load (22.05 file_functions.c) adds what is new and MODIFIES what exists:
        an existing account's text and association, an existing user's DefaultAccount /
        AdminLevel and association; a line without `` - `` is skipped; only ``\\n`` ends
        a line (fgets)."""
        saved = copy.deepcopy((self.qos, self.accounts, self.users, self.assocs))
        parent, lines = None, text.split("\n")
        try:
            if not lines or not re.fullmatch(rf"Cluster - '{self.cluster}'", lines[0]):
                raise SacctmgrError(" No cluster line or another cluster first")
            for number, line in enumerate(lines[1:], 2):
                if self.fail_on and self.fail_on in line:
                    raise SacctmgrError(f" Problem with line({number})")
                if " - " not in line:
                    continue
                head = re.match(r"(Parent|Account|User) - '([^']+)'", line)
                if not head:
                    raise SacctmgrError(f" Problem with line({number})")
                kind, name = head.groups()
                if kind == "Parent":
                    if not self.assoc(name):
                        raise SacctmgrError(f"  line({number}) You need to add this parent")
                    parent = name
                    continue
                opts = self._options(_load_options(line[head.end() :]))
                if kind == "Account":
                    self._load_account(name, parent, opts)
                else:
                    self._load_user(name, parent, opts)
        except SacctmgrError as err:
            self.qos, self.accounts, self.users, self.assocs = saved
            raise command.CommandFailed(argv, str(err), 1, "", str(err)) from None
        return " Adding ...\n"

    def _load_account(self, name, parent, opts):
        if not self.assoc(name):
            self._add_account({**opts, "name": name, "parent": parent})
            opts = {k: v for k, v in opts.items() if k in ("description", "organization")}
        if opts:  # an existing record's text (checked on slurmdbd 22.05.8), an association
            self._modify_account({"name": name}, opts)

    def _load_user(self, name, account, opts):
        record = {k: opts.pop(k) for k in ("defaultaccount", "adminlevel") if k in opts}
        if not self.assoc(account, name):
            self._add_user({**opts, **record, "name": name, "account": account})
            opts = {}
        elif opts:
            self._modify_user({"name": name, "account": account}, opts)
        if record and name in self.users:  # load's _mod_user: an existing user changes too
            self._modify_user({"name": name}, record)

    def _command(self, words):
        verb, entity, rest = words[0].lower(), words[1].lower(), words[2:]
        if verb in ("show", "list"):
            return self._show(entity, rest)
        if verb in ("add", "create"):
            getattr(self, f"_add_{entity}")(self._options(rest))
            return " Adding ...\n"
        if verb == "modify":
            where, sets = self._where_set(rest)
            getattr(self, f"_modify_{entity}")(where, sets)
            return " Modified ...\n"
        if verb in ("delete", "remove"):
            where, _ = self._where_set(rest)
            getattr(self, f"_delete_{entity}")(where)
            return " Deleting ...\n"
        raise SacctmgrError(f"invalid keyword: {verb}")

    def _options(self, words):
        opts = {}
        for word in words:
            key, sep, value = word.partition("=")
            if not sep:
                raise SacctmgrError(f" Unknown option: {word}")
            opts[key.lower()] = value
        return opts

    def _where_set(self, words):
        where, sets, target = {}, {}, None
        for word in words:
            if word.lower() == "where":
                target = where
                continue
            if word.lower() == "set":
                target = sets
                continue
            key, sep, value = word.partition("=")
            if not sep or target is None:
                raise SacctmgrError(f" Unknown condition: {word}")
            target[key.lower()] = value
        return where, sets

    # ------------------------------------------------------------------ values
    def _value(self, field, text, old=None):
        if field in ("Description", "Organization"):
            return _strip(text, lower=True)
        if field in QOS_COUNT:
            number = int(text)
            return None if number == -1 else number
        if field in WALL:
            if not text.lstrip("-").isdigit():
                raise SacctmgrError(f" Bad MaxWall time format: {text}")
            number = int(text)
            return None if number == -1 else number
        if field in TRES:
            tres = dict(old or {})
            for part in text.split(","):
                name, _, count = part.partition("=")
                if not re.fullmatch(
                    r"(cpu|mem|node|energy|billing|gres/[a-z0-9:]+|license/\w+)", name
                ):
                    raise SacctmgrError(f" Unknown TRES '{name}'")
                if int(count) == -1:
                    tres.pop(name, None)
                else:
                    tres[name] = int(count)
            return tres
        if field in ("QOS", "Preempt"):
            if text in ("''", "-1"):  # what the real one refuses (checked on slurmdbd)
                raise SacctmgrError(" error: You gave me an empty qos list")
            names = tuple(sorted({name for name in text.split(",") if name}))
            for name in names:
                if name not in self.qos:
                    raise SacctmgrError(f" Unknown QOS '{name}'")
            return names
        if field == "DefaultQOS":
            if text == "-1":
                return None
            if text not in self.qos:
                raise SacctmgrError(f" Unknown QOS '{text}'")
            return text
        if field == "Flags":
            return () if text == "-1" else tuple(sorted(text.split(",")))
        if field == "Fairshare":
            return "parent" if text.lower() == "parent" else int(text)
        if field == "GraceTime":
            return int(text)
        if field == "UsageFactor":
            return float(text)
        if field == "PreemptMode":
            return text.lower()
        raise SacctmgrError(f" Unknown option: {field}={text}")

    _CANON = {
        name.lower(): name
        for name in [
            *QOS_COUNT,
            *TRES,
            *WALL,
            *ASSOC_FIELDS,
            "Description",
            "Organization",
            "Preempt",
            "Flags",
            "GraceTime",
            "UsageFactor",
            "PreemptMode",
            "Parent",
            "DefaultAccount",
            "AdminLevel",
        ]
    }

    _LONG = {
        "maxtresperjob": "maxtres",
        "maxtresminsperjob": "maxtresmins",
        "mintresperjob": "mintres",
    }

    def _canon(self, key):
        key = self._LONG.get(key, key)
        if key not in self._CANON:
            raise SacctmgrError(f" Unknown option: {key}")
        return self._CANON[key]

    # ------------------------------------------------------------------ add
    def _add_qos(self, opts):
        names = opts.pop("name").split(",")
        fields = {self._canon(k): self._value(self._canon(k), v) for k, v in opts.items()}
        new = [n for n in names if n not in self.qos]
        if not new:
            raise SacctmgrError(" Nothing new added.")
        for name in new:
            base = {
                "Description": name,
                "Priority": 0,
                "Flags": (),
                "Preempt": (),
                "PreemptMode": "cluster",
                "GraceTime": 0,
                "UsageFactor": 1.0,
            }
            self.qos[name] = {**base, **fields}

    def _add_account(self, opts):
        names = opts.pop("name").split(",")
        cluster = opts.pop("cluster", self.cluster)
        parent = _strip(opts.pop("parent", "root"))
        if cluster != self.cluster:
            raise SacctmgrError(f" This cluster '{cluster}' doesn't exist.")
        if not self.assoc(parent):
            raise SacctmgrError(f" error: Parent account '{parent}' doesn't exist on cluster")
        record = {
            k: _strip(opts.pop(k), lower=True) for k in ("description", "organization") if k in opts
        }
        fields = {self._canon(k): self._value(self._canon(k), v) for k, v in opts.items()}
        added = False
        for name in names:
            if name not in self.accounts:
                self.accounts[name] = {
                    "Description": record.get("description", name),
                    "Organization": record.get(
                        "organization", parent if parent != "root" else name
                    ),
                }
            if not self.assoc(name):
                self.assocs.append(self._assoc(name, "", parent, **fields))
                added = True
        if not added:
            raise SacctmgrError(" Nothing new added.")

    def _add_user(self, opts):
        names = opts.pop("name").split(",")
        account = opts.pop("account")
        cluster = opts.pop("cluster", self.cluster)
        default = opts.pop("defaultaccount", None)
        admin = opts.pop("adminlevel", "None")
        if cluster != self.cluster or not self.assoc(account):
            raise SacctmgrError(f" error: account '{account}' doesn't exist on cluster")
        fields = {self._canon(k): self._value(self._canon(k), v) for k, v in opts.items()}
        added = False
        for name in names:
            if name not in self.users:
                if default is None:
                    default = account
                self.users[name] = {"DefaultAccount": default, "AdminLevel": admin}
            if not self.assoc(account, name):
                self.assocs.append(self._assoc(account, name, "", **fields))
                added = True
        if not added:
            raise SacctmgrError(" Nothing new added.")

    # ------------------------------------------------------------------ modify
    def _modify_qos(self, where, sets):
        names = where["name"].split(",")
        for name in names:
            if name not in self.qos:
                raise SacctmgrError(" Nothing modified")
            for key, value in sets.items():
                if key == "flags-":  # Flags-=A,B removes those flags
                    drop = set(value.split(","))
                    self.qos[name]["Flags"] = tuple(
                        f for f in self.qos[name]["Flags"] if f not in drop
                    )
                    continue
                field = self._canon(key)
                self.qos[name][field] = self._value(field, value, self.qos[name].get(field))

    def _modify_account(self, where, sets):
        names = where.pop("name").split(",")
        for name in names:
            if name not in self.accounts:
                raise SacctmgrError(" Nothing modified")
            for key, value in sets.items():
                field = self._canon(key)
                if field in ("Description", "Organization"):
                    self.accounts[name][field] = self._value(field, value)
                    continue
                row = self.assoc(name)
                if field == "Parent":
                    if not self.assoc(value):
                        raise SacctmgrError(f" Parent '{value}' doesn't exist")
                    row["ParentName"] = value
                    continue
                row[field] = self._value(field, value, row[field])

    def _modify_user(self, where, sets):
        names = where.pop("name").split(",")
        account = where.pop("account", None)
        for name in names:
            if name not in self.users:
                raise SacctmgrError(" Nothing modified")
            for key, value in sets.items():
                field = self._canon(key)
                if field == "AdminLevel":
                    self.users[name]["AdminLevel"] = value
                elif field == "DefaultAccount":
                    if not self.assoc(value, name):
                        raise SacctmgrError(f" User {name} has no association to {value}")
                    self.users[name]["DefaultAccount"] = value
                else:
                    rows = [
                        r
                        for r in self.assocs
                        if r["User"] == name and (account is None or r["Account"] == account)
                    ]
                    for row in rows:
                        row[field] = self._value(field, value, row[field])

    # ------------------------------------------------------------------ delete
    def _delete_qos(self, where):
        for name in where["name"].split(","):
            if name == "normal":
                raise SacctmgrError(" refusing to delete normal in the fake")
            self.qos.pop(name, None)

    def _delete_user(self, where):
        account = where.get("account")
        for name in where["name"].split(","):
            if name == "root":
                raise SacctmgrError(" the fake never lets the root user go")
            rows = [
                r
                for r in self.assocs
                if r["User"] == name and (account is None or r["Account"] == account)
            ]
            others = [r for r in self.assocs if r["User"] == name and r not in rows]
            default = self.users[name]["DefaultAccount"]
            # the real one also refuses a whole user with several associations, one of
            # them the default (sacctmgr 22.05.8, checked on slurmdbd)
            if (others or (account is None and len(rows) > 1)) and default in {
                r["Account"] for r in rows
            }:
                raise SacctmgrError(
                    " You can not remove the default account of a user while they have "
                    "other associations"
                )
            self.assocs = [r for r in self.assocs if r not in rows]
            if not others:
                self.users.pop(name, None)

    def _delete_account(self, where):
        for name in where["name"].split(","):
            if name == "root":
                raise SacctmgrError(" the fake never lets root go")
            children = [
                r
                for r in self.assocs
                if (r["User"] and r["Account"] == name)
                or (not r["User"] and r["ParentName"] == name)
            ]
            if children:
                raise SacctmgrError(f" account {name} still has associations under it")
            self.assocs = [r for r in self.assocs if not (r["Account"] == name and not r["User"])]
            self.accounts.pop(name, None)

    # ------------------------------------------------------------------ show
    def _show(self, entity, words):
        fmt, cond = None, {}
        for word in words:
            key, sep, value = word.partition("=")
            if key.lower() == "format":
                fmt = value.split(",")
            elif sep:
                cond[key.lower()] = value
        if entity == "tres":
            rows = [{"Type": t.partition("/")[0], "Name": t.partition("/")[2]} for t in self.tres]
        elif entity == "qos":
            rows = [
                # the real one prints QOS in creation (id) order
                {"Name": n, **f}
                for n, f in self.qos.items()
                if n == cond.get("name", n)
            ]
        elif entity == "account":
            rows = [{"Account": n, **f} for n, f in sorted(self.accounts.items())]
        elif entity == "user":
            rows = [{"User": n, **f} for n, f in sorted(self.users.items())]
        elif entity == "cluster":
            rows = [{"Cluster": self.cluster}]
        elif entity in ("assoc", "association", "associations"):
            cluster = cond.get("cluster")
            rows = [
                r
                for r in self.assocs
                if (cluster is None or r["Cluster"] == cluster)
                and r["Account"] == cond.get("account", r["Account"])
                and r["User"] == cond.get("user", r["User"])
            ]
        else:
            raise SacctmgrError(f" Unknown entity {entity}")
        return "".join("|".join(self._cell(f, row.get(f)) for f in fmt) + "\n" for row in rows)

    def _cell(self, field, value):
        if value is None or value in ((), {}):
            if field == "PreemptMode":
                return "cluster"
            return ""
        if field in WALL:
            return _hms(value)
        if field in TRES:
            return _tres_out(value)
        if field == "GraceTime":
            return f"{value // 3600:02d}:{value % 3600 // 60:02d}:{value % 60:02d}"
        if field == "UsageFactor":
            return f"{value:.6f}"
        if isinstance(value, tuple):
            return ",".join(value)
        return str(value)
