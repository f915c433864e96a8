"""``slurm:accounting:`` pillar (accounts, users, qos, purge) -> the wanted model.

:func:`validate` checks everything before anything is read from or written to the cluster
and raises :class:`PillarError` listing every problem found, each naming its pillar key
(``slurm:accounting:users:alice:accounts:physics:limits:MaxWall: ...``). Other keys under
``slurm:accounting:`` (the database and slurmdbd settings) belong to the ``slurm.dbd`` side
and are not looked at here.

The wanted model (plain dicts, normal-form values from :mod:`.values`)::

    {"qos":      {name: {SlurmField: value}},                 # only the fields pillar sets
     "accounts": {name: {"parent": name, "Description": text, "Organization": text,
                         "assoc": {SlurmField: value}}},
     "users":    {name: {"DefaultAccount": account, "AdminLevel": level (if set),
                         "assocs": {account: {SlurmField: value}}}},
     "purge": bool}

A field left out of pillar is not managed (whatever the cluster has stays); a limit set to
null is managed and means "no limit".
"""

from . import values

ROOT = "slurm:accounting"
ROOT_ACCOUNT = "root"
ROOT_USER = "root"
DEFAULT_QOS = "normal"  # slurmdbd creates it; always exists, never removed

MAX_QOS = 1_000
MAX_ACCOUNTS = 10_000
MAX_USERS = 100_000
MAX_ACCOUNTS_PER_USER = 1_000
MAX_DEPTH = 32
MAX_ERRORS = 25

ACCOUNT_KEYS = {"parent", "description", "organization", "limits", *values.ASSOC_FIELDS}
ASSOC_KEYS = {"limits", *values.ASSOC_FIELDS}
USER_KEYS = {"default_account", "admin_level", "accounts", *ASSOC_KEYS}
QOS_KEYS = {"limits", *values.QOS_FIELDS}


class PillarError(ValueError):
    """Bad ``slurm:accounting`` pillar; ``errors`` lists each problem with its key."""

    def __init__(self, errors):
        self.errors = list(errors)
        more = "" if len(self.errors) < MAX_ERRORS else " (stopped counting)"
        super().__init__("; ".join(self.errors) + more)


class _Errors:
    def __init__(self):
        self.items = []

    def add(self, message):
        if len(self.items) < MAX_ERRORS:
            self.items.append(message)

    def check(self, func, *args):
        """``func(*args)``, or None after recording its BadValue."""
        try:
            return func(*args)
        except values.BadValue as err:
            self.add(str(err))
            return None


def _mapping(value, key, errors, maximum=None):
    if value is None:
        return {}
    if not isinstance(value, dict):
        errors.add(f"{key}: expected a mapping, got {type(value).__name__}")
        return {}
    if maximum is not None and len(value) > maximum:
        errors.add(f"{key}: at most {maximum} entries, got {len(value)}")
        return {}
    return value


def _unknown(entry, allowed, key, errors):
    for name in entry:
        if name not in allowed:
            errors.add(
                f"{key}:{_safe(name)}: unknown key; expected one of {', '.join(sorted(allowed))}"
            )


def _safe(name):
    text = str(name)
    if values.NAME_RE.fullmatch(text) or text.isidentifier():
        return text[:64]
    return repr(text)[:40]


def _limits(raw, table, aliases, key, errors):
    out = {}
    for name, value in _mapping(raw, key, errors, maximum=64).items():
        canonical = aliases.get(name, name)
        if canonical not in table:
            errors.add(
                f"{key}:{_safe(name)}: unknown limit; expected one of {', '.join(sorted(table))}"
            )
            continue
        if canonical in out:
            errors.add(f"{key}:{_safe(name)}: {canonical} is given twice (alias)")
            continue
        parsed = errors.check(values.parse, table[canonical], value, f"{key}:{name}")
        if parsed is not None or value is None:
            out[canonical] = parsed
    return out


def _assoc(entry, key, errors):
    """Association fields of an account or a user association -> {SlurmField: value}."""
    out = {}
    for pkey, (slurm, kind) in values.ASSOC_FIELDS.items():
        if pkey in entry:
            parsed = errors.check(values.parse, kind, entry[pkey], f"{key}:{pkey}")
            if parsed is not None or entry[pkey] is None:
                out[slurm] = parsed
    out.update(
        _limits(
            entry.get("limits"), values.ASSOC_LIMITS, values.ASSOC_ALIASES, f"{key}:limits", errors
        )
    )
    return out


def _qos(raw, errors):
    wanted = {}
    for name, raw_entry in _mapping(raw, f"{ROOT}:qos", errors, MAX_QOS).items():
        key = f"{ROOT}:qos:{_safe(name)}"
        if errors.check(values.check_name, name, f"{ROOT}:qos: QOS name") is None:
            continue
        entry = _mapping(raw_entry, key, errors)
        _unknown(entry, QOS_KEYS, key, errors)
        fields = {}
        for pkey, (slurm, kind) in values.QOS_FIELDS.items():
            if pkey in entry:
                parsed = errors.check(values.parse, kind, entry[pkey], f"{key}:{pkey}")
                if parsed is not None or entry[pkey] is None:
                    fields[slurm] = parsed
        fields.update(
            _limits(
                entry.get("limits"), values.QOS_LIMITS, values.QOS_ALIASES, f"{key}:limits", errors
            )
        )
        wanted[name] = fields
    return wanted


def _accounts(raw, errors):
    wanted = {}
    for name, raw_entry in _mapping(raw, f"{ROOT}:accounts", errors, MAX_ACCOUNTS).items():
        key = f"{ROOT}:accounts:{_safe(name)}"
        if errors.check(values.check_name, name, f"{ROOT}:accounts: account name") is None:
            continue
        if name == ROOT_ACCOUNT:
            errors.add(f"{key}: the root account is the cluster's own; it is not managed here")
            continue
        entry = _mapping(raw_entry, key, errors)
        _unknown(entry, ACCOUNT_KEYS, key, errors)
        account = {"parent": ROOT_ACCOUNT, "assoc": _assoc(entry, key, errors)}
        if entry.get("parent") is not None:
            parent = errors.check(values.check_name, entry["parent"], f"{key}:parent")
            if parent:
                account["parent"] = parent
        for pkey, slurm in (("description", "Description"), ("organization", "Organization")):
            if entry.get(pkey) is not None:
                text = errors.check(values.check_text, entry[pkey], f"{key}:{pkey}")
                if text:
                    account[slurm] = text
        wanted[name] = account
    return wanted


def _user_accounts(raw, key, errors):
    if isinstance(raw, list):
        if len(raw) > MAX_ACCOUNTS_PER_USER:
            errors.add(f"{key}: at most {MAX_ACCOUNTS_PER_USER} accounts")
            return {}
        result = {}
        for i, name in enumerate(raw):
            if errors.check(values.check_name, name, f"{key}[{i}]") is not None:
                result[name] = {}
        return result
    return _mapping(raw, key, errors, MAX_ACCOUNTS_PER_USER)


def _users(raw, errors):
    wanted = {}
    for name, raw_entry in _mapping(raw, f"{ROOT}:users", errors, MAX_USERS).items():
        key = f"{ROOT}:users:{_safe(name)}"
        if (
            errors.check(values.check_name, name, f"{ROOT}:users: user name", values.USER_MAX)
            is None
        ):
            continue
        entry = _mapping(raw_entry, key, errors)
        _unknown(entry, USER_KEYS, key, errors)
        shared = _assoc(entry, key, errors)  # user-level fields: every association's default
        accounts = _user_accounts(entry.get("accounts"), f"{key}:accounts", errors)
        if not accounts:
            errors.add(f"{key}:accounts: a user needs at least one account")
            continue
        assocs = {}
        for account, raw_assoc in accounts.items():
            akey = f"{key}:accounts:{_safe(account)}"
            if errors.check(values.check_name, account, f"{key}:accounts: account name") is None:
                continue
            assoc_entry = _mapping(raw_assoc, akey, errors)
            _unknown(assoc_entry, ASSOC_KEYS, akey, errors)
            assocs[account] = {**shared, **_assoc(assoc_entry, akey, errors)}
        user = {"assocs": assocs}
        default = entry.get("default_account")
        if default is None:
            if len(accounts) > 1:
                errors.add(f"{key}:default_account: required when a user has several accounts")
            default = next(iter(accounts))
        elif default not in accounts:
            errors.add(f"{key}:default_account: {_safe(default)} is not one of the user's accounts")
        user["DefaultAccount"] = default
        if entry.get("admin_level") is not None:
            level = errors.check(values.parse_admin, entry["admin_level"], f"{key}:admin_level")
            if level:
                user["AdminLevel"] = level
        wanted[name] = user
    return wanted


def _check_qos_refs(fields, known, key, errors):
    for slurm, pkey in (("QOS", "qos"), ("Preempt", "preempt")):
        for qos in fields.get(slurm) or ():
            if qos not in known:
                errors.add(f"{key}:{pkey}: QOS {qos!r} is not defined under {ROOT}:qos")
    default = fields.get("DefaultQOS")
    if default:
        if default not in known:
            errors.add(f"{key}:default_qos: QOS {default!r} is not defined under {ROOT}:qos")
        elif fields.get("QOS") and default not in fields["QOS"]:
            errors.add(f"{key}:default_qos: {default!r} is not in this association's qos list")


def _check_tree(accounts, errors):
    for name, account in accounts.items():
        seen, parent, depth = {name}, account["parent"], 0
        while parent != ROOT_ACCOUNT:
            if parent not in accounts:
                errors.add(
                    f"{ROOT}:accounts:{name}:parent: account {parent!r} does not exist "
                    f"(define it under {ROOT}:accounts, or use root)"
                )
                break
            if parent in seen or depth + 2 > MAX_DEPTH:  # ``name`` and ``parent`` levels
                errors.add(
                    f"{ROOT}:accounts:{name}:parent: the parents form a loop or are "
                    f"deeper than {MAX_DEPTH}"
                )
                break
            seen.add(parent)
            parent, depth = accounts[parent]["parent"], depth + 1


def validate(accounting):
    """Check ``slurm:accounting`` (a mapping or None) -> the wanted model, or PillarError."""
    errors = _Errors()
    accounting = _mapping(accounting, ROOT, errors)
    purge = accounting.get("purge", False)
    if not isinstance(purge, bool):
        errors.add(f"{ROOT}:purge: expected true or false, got {purge!r}")
    qos = _qos(accounting.get("qos"), errors)
    accounts = _accounts(accounting.get("accounts"), errors)
    users = _users(accounting.get("users"), errors)
    known_qos = set(qos) | {DEFAULT_QOS}
    for name, fields in qos.items():
        _check_qos_refs(fields, known_qos, f"{ROOT}:qos:{name}", errors)
    _check_tree(accounts, errors)
    for name, account in accounts.items():
        _check_qos_refs(account["assoc"], known_qos, f"{ROOT}:accounts:{name}", errors)
    for name, user in users.items():
        for account, assoc in user["assocs"].items():
            akey = f"{ROOT}:users:{name}:accounts:{account}"
            if account not in accounts and account != ROOT_ACCOUNT:
                errors.add(f"{akey}: account {account!r} is not defined under {ROOT}:accounts")
            _check_qos_refs(assoc, known_qos, akey, errors)
    if errors.items:
        raise PillarError(errors.items)
    return {"qos": qos, "accounts": accounts, "users": users, "purge": purge is True}


def manages(accounting):
    """Whether ``slurm:accounting`` (raw pillar or validated) asks for accounts as code:
    any QOS, account or user declared, or ``purge: true`` (then the database holds exactly
    what pillar declares, nothing when it declares nothing). The one place this is
    decided: the controller's SLS applies ``slurm_accounting.managed`` and ``render_conf``
    sets ``AccountingStorageEnforce`` exactly when it is true."""
    if not isinstance(accounting, dict):
        return False
    declared = any(accounting.get(kind) for kind in ("qos", "accounts", "users"))
    return bool(declared or accounting.get("purge") is True)


def depth(accounts, name):
    """How far ``name`` is below root in the wanted (or current) tree: root's children 1."""
    level = 0
    while name != ROOT_ACCOUNT and name in accounts and level <= MAX_DEPTH + 1:
        name, level = accounts[name]["parent"], level + 1
    return level


def check_tres(wanted, known):
    """:class:`PillarError` naming each pillar key whose limit names a TRES that slurmdbd
    does not know (``known``: ``sacctmgr show tres``, e.g. ``gres/gpu`` needs
    ``AccountingStorageTRES=gres/gpu`` in slurm.conf); sacctmgr would refuse that line
    after the lines before it were applied."""
    if not known:
        return
    known = set(known)
    errors = _Errors()

    def check(fields, key):
        for field, value in sorted(fields.items()):
            if isinstance(value, dict):
                for tres in sorted(set(value) - known):
                    errors.add(
                        f"{key}:limits:{field}: {tres} is not a TRES slurmdbd knows (it "
                        f"knows {', '.join(sorted(known))}; a gres/license TRES needs "
                        "AccountingStorageTRES in slurm.conf, e.g. slurm:conf:overrides)"
                    )

    for name, fields in wanted["qos"].items():
        check(fields, f"{ROOT}:qos:{name}")
    for name, account in wanted["accounts"].items():
        check(account["assoc"], f"{ROOT}:accounts:{name}")
    for name, user in wanted["users"].items():
        for account, assoc in user["assocs"].items():
            check(assoc, f"{ROOT}:users:{name}:accounts:{account}")
    if errors.items:
        raise PillarError(errors.items)
