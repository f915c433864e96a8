"""slurm.conf, gres.conf and cgroup.conf from the ``slurm:`` pillar plus the nodes' hardware.

Input: the validated pillar (``settings.validate``) and ``{minion_id: slurm_node.hardware()}``
from the Salt mine. Output: the three files' text, deterministic (same input, same bytes),
so re-rendering an unchanged cluster is a no-op and every diff is a real change.

Order of precedence for slurm.conf, lowest first: our defaults (``DEFAULT_PARAMS``), the
admin's base file (``slurm:conf:base``), the pillar's cluster_name / controller, then
``slurm:conf:overrides``. Keys the base file sets that we do not model pass through
unchanged (``slurmconf`` keeps unedited lines byte-identical).

Nodes with identical hardware, features, weight and options share one NodeName line whose
names are hostlist-compressed, so 10,000 nodes of 4 kinds make 4 lines. RealMemory is what
slurmd reports minus ``memory_reserve`` rounded down to ``memory_round_mb``: a node whose
memory reads a few MiB lower after a reboot never drains with "Low RealMemory", and nodes of
one model whose readings differ slightly still share a line.
"""

import fnmatch
import re

from salt_ext.lib import hostlist, slurmconf
from salt_ext.lib.hardware import TOPOLOGY_KEYS

HEADER = (
    "# Managed by saltext-slurm: written by `salt-run slurm.render_conf`.\n"
    "# Change the slurm: pillar (or the base file it names) and render again;\n"
    "# edits made here are overwritten.\n"
)

# Used only where neither the base file nor the overrides set the key.
DEFAULT_PARAMS = (
    ("AuthType", "auth/munge"),
    ("CredType", "cred/munge"),
    ("SlurmUser", "slurm"),
    ("SlurmctldPort", "6817"),
    ("SlurmdPort", "6818"),
    ("StateSaveLocation", "/var/spool/slurmctld"),
    ("SlurmdSpoolDir", "/var/spool/slurmd"),
    ("SlurmctldPidFile", "/run/slurmctld.pid"),
    ("SlurmdPidFile", "/run/slurmd.pid"),
    ("SlurmctldLogFile", "/var/log/slurm/slurmctld.log"),
    ("SlurmdLogFile", "/var/log/slurm/slurmd.log"),
    ("ProctrackType", "proctrack/cgroup"),
    ("TaskPlugin", "task/cgroup,task/affinity"),
    ("SchedulerType", "sched/backfill"),
    ("SelectType", "select/cons_tres"),
    ("SelectTypeParameters", "CR_Core_Memory"),
    ("ReturnToService", "2"),
    ("MpiDefault", "none"),
)

DEFAULT_PARTITION_OPTIONS = (("MaxTime", "INFINITE"), ("State", "UP"))

# cgroup.conf(5), Slurm 22.05
CGROUP_KEYS = (
    "AllowedKmemSpace",
    "AllowedRAMSpace",
    "AllowedSwapSpace",
    "CgroupAutomount",
    "CgroupMountpoint",
    "CgroupPlugin",
    "ConstrainCores",
    "ConstrainDevices",
    "ConstrainKmemSpace",
    "ConstrainRAMSpace",
    "ConstrainSwapSpace",
    "IgnoreSystemd",
    "IgnoreSystemdOnFailure",
    "MaxKmemPercent",
    "MaxRAMPercent",
    "MaxSwapPercent",
    "MemorySwappiness",
    "MinKmemSpace",
    "MinRAMSpace",
)
DEFAULT_CGROUP = (("ConstrainCores", "yes"), ("ConstrainRAMSpace", "yes"))

_GLOB = re.compile(r"[*?]")
_DIGITS = re.compile(r"(\d+)")


class ConfGenError(ValueError):
    """Pillar or mine data we cannot render from; names the key or node."""


def natural_key(name):
    return [int(part) if part.isdigit() else part for part in _DIGITS.split(name)]


def conf_value(value):
    """A pillar value as slurm.conf text (YAML's true/false become YES/NO)."""
    if isinstance(value, bool):
        return "YES" if value else "NO"
    if isinstance(value, (list, tuple)):
        return ",".join(conf_value(v) for v in value)
    return str(value)


def parse_reserve(value, key="slurm:conf:memory_reserve"):
    """``"2%"`` -> ("percent", 2.0); ``512`` / ``"512"`` -> ("mb", 512)."""
    text = str(value).strip()
    try:
        if text.endswith("%"):
            percent = float(text[:-1])
            if not 0 <= percent < 100:
                raise ValueError
            return ("percent", percent)
        number = int(text)
        if number < 0:
            raise ValueError
        return ("mb", number)
    except ValueError:
        raise ConfGenError(
            f"{key}: expected a percentage like '2%' or MiB like 512, got {value!r}"
        ) from None


def real_memory(reported, reserve, round_mb):
    """RealMemory for slurm.conf: ``reported`` minus the reserve, rounded down to
    ``round_mb``; never more than reported and never below 1."""
    kind, amount = reserve
    cut = reported * amount / 100 if kind == "percent" else amount
    memory = int(reported - cut)
    if round_mb > 1 and memory >= round_mb:
        memory -= memory % round_mb
    return max(1, min(memory, reported))


def _as_list(value):
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return list(value)


def matcher(expr, key):
    """Node-name predicate for pillar ``nodes:`` values: ALL, globs, hostlists, lists."""
    items = _as_list(expr)
    if not items or not all(isinstance(i, str) and i.strip() for i in items):
        raise ConfGenError(f"{key}: expected ALL, a hostlist, a glob or a list of them")
    exact, globs = set(), []
    for raw in items:
        item = raw.strip()
        if item.upper() == "ALL":
            globs.append("*")
        elif _GLOB.search(item):
            globs.append(item)
        else:
            try:
                exact.update(hostlist.expand(item))
            except ValueError as err:
                raise ConfGenError(f"{key}: bad hostlist {item!r}: {err}") from None
    return lambda name: name in exact or any(fnmatch.fnmatchcase(name, g) for g in globs)


def check_settings(cfg):
    """Shape checks of the keys only the renderer reads (called by settings.validate)."""
    conf = cfg["conf"]
    if conf.get("base") is not None and not isinstance(conf["base"], str):
        raise ConfGenError(
            f"slurm:conf:base: expected a salt:// URL or an absolute path, got {conf['base']!r}"
        )
    if conf.get("base") and not (
        conf["base"].startswith("salt://") or conf["base"].startswith("/")
    ):
        raise ConfGenError(
            f"slurm:conf:base: expected a salt:// URL or an absolute path, got {conf['base']!r}"
        )
    if not isinstance(conf.get("overrides") or {}, dict):
        raise ConfGenError("slurm:conf:overrides: expected a mapping of slurm.conf keys")
    extra = conf.get("extra_keys") or []
    if not isinstance(extra, list) or not all(isinstance(k, str) for k in extra):
        raise ConfGenError("slurm:conf:extra_keys: expected a list of key names")
    parse_reserve(conf.get("memory_reserve", 0))
    for key in ("memory_round_mb", "history"):
        value = conf.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfGenError(f"slurm:conf:{key}: expected a whole number >= 1, got {value!r}")
    if not isinstance(cfg.get("node_target"), str) or not cfg["node_target"]:
        raise ConfGenError(f"slurm:node_target: expected a Salt target, got {cfg['node_target']!r}")
    groups = cfg.get("node_groups") or {}
    if not isinstance(groups, dict):
        raise ConfGenError("slurm:node_groups: expected a mapping of group name -> settings")
    for name, group in groups.items():
        key = f"slurm:node_groups:{name}"
        if not isinstance(group, dict):
            raise ConfGenError(f"{key}: expected a mapping with nodes, features, weight, options")
        unknown = set(group) - {"nodes", "features", "weight", "options"}
        if unknown:
            raise ConfGenError(
                f"{key}: unknown setting(s) {', '.join(sorted(unknown))} "
                "(expected nodes, features, weight, options)"
            )
        matcher(group.get("nodes"), f"{key}:nodes")
        weight = group.get("weight")
        if weight is not None and (isinstance(weight, bool) or not isinstance(weight, int)):
            raise ConfGenError(f"{key}:weight: expected a whole number, got {weight!r}")
        if not isinstance(group.get("options") or {}, dict):
            raise ConfGenError(f"{key}:options: expected a mapping of NodeName keys")
    partitions = cfg.get("partitions")
    if partitions is not None:
        if not isinstance(partitions, list):
            raise ConfGenError("slurm:partitions: expected a list of partitions")
        seen = set()
        for index, part in enumerate(partitions):
            key = f"slurm:partitions:{index}"
            if not isinstance(part, dict) or not isinstance(part.get("name"), str):
                raise ConfGenError(f"{key}: expected a mapping with at least a name")
            if part["name"] in seen:
                raise ConfGenError(f"{key}: partition {part['name']!r} is listed twice")
            seen.add(part["name"])
            unknown = set(part) - {"name", "nodes", "groups", "default", "options"}
            if unknown:
                raise ConfGenError(
                    f"{key}: unknown setting(s) {', '.join(sorted(unknown))} "
                    "(expected name, nodes, groups, default, options)"
                )
            for group in _as_list(part.get("groups")):
                if group not in groups:
                    raise ConfGenError(
                        f"{key}:groups: no node group {group!r} in slurm:node_groups"
                    )
            if not isinstance(part.get("options") or {}, dict):
                raise ConfGenError(f"{key}:options: expected a mapping of PartitionName keys")
    cgroup = cfg.get("cgroup")
    if cgroup is not None and not isinstance(cgroup, dict):
        raise ConfGenError("slurm:cgroup: expected a mapping of cgroup.conf keys")


def _check_record(kind, name, options, key, extra_keys):
    """Validate pillar options for a record by parsing the line they make."""
    pairs = [(kind, name)] + [(k, conf_value(v)) for k, v in options.items()]
    try:
        return slurmconf.parse(slurmconf.render_pairs(pairs) + "\n", key, extra_keys).records()[0]
    except slurmconf.ConfError as err:
        raise ConfGenError(str(err)) from None


def _check_hardware(minion, data):
    if not isinstance(data, dict) or not isinstance(data.get("NodeName"), str):
        raise ConfGenError(f"mine data of {minion}: not slurm_node.hardware output: {data!r}")
    for key in ("CPUs", "RealMemory"):
        if isinstance(data.get(key), bool) or not isinstance(data.get(key), int):
            raise ConfGenError(f"mine data of {minion}: {key} missing or not a number")


def _node_pairs(data, cfg, groups, reserve):
    pairs = [(k, str(data[k])) for k in TOPOLOGY_KEYS if k in data and k != "RealMemory"]
    pairs.append(
        (
            "RealMemory",
            str(real_memory(data["RealMemory"], reserve, cfg["conf"]["memory_round_mb"])),
        )
    )
    gpus = data.get("gpus") or {}
    if gpus.get("count"):
        gres = f"gpu:{gpus['type']}:{gpus['count']}" if gpus.get("type") else f"gpu:{gpus['count']}"
        pairs.append(("Gres", gres))
    features, weight, weight_from, options, option_from = [], None, None, {}, {}
    for gname, group, match, record in groups:
        if not match(data["NodeName"]):
            continue
        features += [f for f in _as_list(group.get("features")) if f not in features]
        if group.get("weight") is not None:
            if weight is not None and weight != group["weight"]:
                raise ConfGenError(
                    f"node {data['NodeName']}: slurm:node_groups {weight_from} and {gname} "
                    f"give different weights ({weight} and {group['weight']})"
                )
            weight, weight_from = group["weight"], gname
        for key, value in record.pairs[1:]:
            if key in options and options[key] != value:
                raise ConfGenError(
                    f"node {data['NodeName']}: slurm:node_groups {option_from[key]} and {gname} "
                    f"set {key} differently ({options[key]} and {value})"
                )
            options[key], option_from[key] = value, gname
    if features:
        pairs.append(("Features", ",".join(features)))
    if weight is not None:
        pairs.append(("Weight", str(weight)))
    pairs += sorted(options.items())
    return tuple(pairs)


def _nodes_value(names):
    return hostlist.compress(sorted(names, key=natural_key))


def render(cfg, hardware, base_text=None, base_source="slurm:conf:base"):
    """Render the cluster's files. ``hardware`` is ``{minion_id: slurm_node.hardware()}``.

    Returns ``{"files": {"slurm.conf": text, "gres.conf": text|None, "cgroup.conf":
    text|None}, "nodes": {NodeName: minion_id}, "node_lines": int, "partitions": [...]}``.
    Raises ``ConfGenError`` / ``slurmconf.ConfError`` naming the key, line or node.
    """
    conf_cfg = cfg["conf"]
    extra_keys = tuple(conf_cfg.get("extra_keys") or ())
    reserve = parse_reserve(conf_cfg.get("memory_reserve", 0))
    conf = slurmconf.parse(base_text or "", base_source, extra_keys)

    # -- nodes from the mine
    names = {}
    for minion in sorted(hardware):
        data = hardware[minion]
        _check_hardware(minion, data)
        node = data["NodeName"]
        if node in names:
            raise ConfGenError(
                f"minions {names[node]} and {minion} both report NodeName {node}; "
                "hostnames must be unique"
            )
        names[node] = minion
    if not names and not [r for r in conf.records("NodeName") if r.name.upper() != "DEFAULT"]:
        raise ConfGenError(
            f"no node hardware in the Salt mine for slurm:node_target {cfg['node_target']!r}: "
            "apply slurm.node on the compute nodes first (it sends slurm_node.hardware to "
            "the mine), or run `salt NODES mine.send slurm_node.hardware`"
        )
    for record in conf.records("NodeName"):
        clash = [n for n in hostlist.expand(record.name) if n in names]
        if clash:
            raise ConfGenError(
                f"{base_source}: NodeName={record.name} also defines {', '.join(clash[:5])}, "
                "which the mine reports; remove those nodes from the base file"
            )

    groups = []
    for gname, group in sorted((cfg.get("node_groups") or {}).items()):
        record = _check_record(
            "NodeName",
            "x",
            group.get("options") or {},
            f"slurm:node_groups:{gname}:options",
            extra_keys,
        )
        groups.append(
            (gname, group, matcher(group.get("nodes"), f"slurm:node_groups:{gname}:nodes"), record)
        )

    classes = {}
    for node, minion in names.items():
        pairs = _node_pairs(hardware[minion], cfg, groups, reserve)
        classes.setdefault(pairs, []).append(node)
    node_records = sorted(
        ((sorted(members, key=natural_key), pairs) for pairs, members in classes.items()),
        key=lambda item: natural_key(item[0][0]),
    )

    # -- plain parameters
    for key, value in DEFAULT_PARAMS:
        if conf.get(key) is None:
            conf.set(key, value)
    _pin(conf, "ClusterName", cfg["cluster_name"], "slurm:cluster_name", base_source)
    hosts = conf.get_all("SlurmctldHost")
    if not hosts:
        conf.set("SlurmctldHost", cfg["controller"])
    elif hosts[0].split("(")[0] != cfg["controller"]:
        raise ConfGenError(
            f"{base_source}: SlurmctldHost={hosts[0]} but slurm:controller is "
            f"{cfg['controller']!r}; make them agree"
        )
    if any(hardware[m].get("gpus", {}).get("count") for m in names.values()):
        types = [t for t in (conf.get("GresTypes") or "").split(",") if t]
        if "gpu" not in types:
            conf.set("GresTypes", ",".join(types + ["gpu"]))
    _apply_overrides(conf, conf_cfg.get("overrides") or {}, extra_keys)

    # -- records
    for members, pairs in node_records:
        conf.add_record("NodeName", [("NodeName", _nodes_value(members)), *pairs])
    partitions = _partitions(cfg, conf, names, groups, extra_keys)

    files = {
        "slurm.conf": HEADER + conf.render(),
        "gres.conf": _gres_conf(names, hardware),
        "cgroup.conf": _cgroup_conf(cfg.get("cgroup"), conf),
    }
    return {
        "files": files,
        "nodes": dict(sorted(names.items(), key=lambda item: natural_key(item[0]))),
        "node_lines": len(node_records),
        "partitions": partitions,
    }


def _pin(conf, key, value, pillar_key, base_source):
    current = conf.get(key)
    if current is not None and current != value:
        raise ConfGenError(
            f"{base_source}: {key}={current} but {pillar_key} is {value!r}; make them agree"
        )
    if current is None:
        conf.set(key, value)


def _apply_overrides(conf, overrides, extra_keys):
    seen = {}
    for key, value in overrides.items():
        try:
            canonical = slurmconf.canonical_key(str(key), extra_keys, source="slurm:conf:overrides")
        except slurmconf.ConfError as err:
            raise ConfGenError(str(err)) from None
        if canonical.lower() in seen:
            raise ConfGenError(
                f"slurm:conf:overrides: {key!r} and {seen[canonical.lower()]!r} are the same "
                "slurm.conf key (keys are case-insensitive)"
            )
        seen[canonical.lower()] = key
        if canonical in slurmconf.RECORD_KINDS:
            raise ConfGenError(
                f"slurm:conf:overrides: {canonical} lines come from the mine and "
                "slurm:partitions / slurm:node_groups, not from overrides"
            )
        if value is None:
            conf.remove(canonical)
        elif isinstance(value, list) and canonical.lower() in slurmconf.REPEATABLE:
            conf.set(canonical, [conf_value(v) for v in value])
        else:
            conf.set(canonical, conf_value(value))


def _partitions(cfg, conf, names, groups, extra_keys):
    wanted = cfg.get("partitions")
    if wanted is None:
        if conf.records("PartitionName"):
            return [r.name for r in conf.records("PartitionName")]
        wanted = [{"name": "main", "nodes": "ALL", "default": True}]
    group_match = {gname: match for gname, _, match, _ in groups}
    conf.remove_records("PartitionName", [p["name"] for p in wanted])
    for index, part in enumerate(wanted):
        key = f"slurm:partitions:{index}"
        if part.get("groups"):
            members = [n for n in names if any(group_match[g](n) for g in _as_list(part["groups"]))]
            if part.get("nodes"):
                extra = matcher(part["nodes"], f"{key}:nodes")
                members += [n for n in names if extra(n) and n not in members]
            nodes = _nodes_value(members) if members else ""
        elif isinstance(part.get("nodes"), str) and part["nodes"].upper() == "ALL":
            nodes = "ALL"
        elif part.get("nodes") is None:
            nodes = "ALL"
        else:
            match = matcher(part["nodes"], f"{key}:nodes")
            members = [n for n in names if match(n)]
            nodes = _nodes_value(members) if members else ""
        if not nodes:
            raise ConfGenError(f"{key}: partition {part['name']!r} matches no node")
        options = dict(DEFAULT_PARTITION_OPTIONS)
        options.update({k: conf_value(v) for k, v in (part.get("options") or {}).items()})
        if part.get("default"):
            options["Default"] = "YES"
        record = _check_record("PartitionName", part["name"], options, f"{key}:options", extra_keys)
        conf.add_record(
            "PartitionName",
            [
                ("PartitionName", part["name"]),
                ("Nodes", nodes),
                *[p for p in record.pairs[1:] if p[0] != "Nodes"],
            ],
        )
    return [r.name for r in conf.records("PartitionName")]


def _gres_conf(names, hardware):
    lines = {}
    for node, minion in names.items():
        gpus = hardware[minion].get("gpus") or {}
        if not gpus.get("count"):
            continue
        pairs = []
        if gpus.get("autodetect"):
            pairs.append(("AutoDetect", gpus["autodetect"]))
        pairs.append(("Name", "gpu"))
        if gpus.get("type"):
            pairs.append(("Type", gpus["type"]))
        if gpus.get("files") and not gpus.get("autodetect"):
            pairs.append(("File", hostlist.compress(gpus["files"])))
        else:
            pairs.append(("Count", str(gpus["count"])))
        lines.setdefault(tuple(pairs), []).append(node)
    if not lines:
        return None
    body = [
        slurmconf.render_pairs([("NodeName", _nodes_value(members)), *pairs])
        for pairs, members in sorted(
            lines.items(), key=lambda i: natural_key(min(i[1], key=natural_key))
        )
    ]
    return HEADER + "\n".join(body) + "\n"


def _cgroup_conf(pillar_cgroup, conf):
    uses_cgroup = any(
        "cgroup" in (conf.get(key) or "")
        for key in ("ProctrackType", "TaskPlugin", "JobAcctGatherType")
    )
    if not pillar_cgroup and not uses_cgroup:
        return None
    values = dict(DEFAULT_CGROUP)
    known = {k.lower(): k for k in CGROUP_KEYS}
    for key, value in (pillar_cgroup or {}).items():
        canonical = known.get(str(key).lower())
        if canonical is None:
            raise ConfGenError(
                f"slurm:cgroup: unknown cgroup.conf key {key!r} (Slurm 22.05 knows "
                f"{', '.join(CGROUP_KEYS)})"
            )
        if value is None:
            values.pop(canonical, None)
        else:
            values[canonical] = (
                conf_value(value).lower() if isinstance(value, bool) else conf_value(value)
            )
    return HEADER + "".join(f"{key}={value}\n" for key, value in values.items())
