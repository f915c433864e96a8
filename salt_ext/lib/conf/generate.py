"""slurm.conf, gres.conf and cgroup.conf from the ``slurm:`` pillar plus the nodes' hardware.

Input: the validated pillar (``settings.validate``) and ``{minion_id: slurm_node.hardware()}``
from the Salt mine. Output: the three files' text, deterministic (same input, same bytes),
so re-rendering an unchanged cluster is a no-op and every diff is a real change.

Order of precedence for slurm.conf, lowest first: our defaults (``DEFAULT_PARAMS``), the
admin's base file (``slurm:conf:base``), the pillar's cluster_name / controller, then
``slurm:conf:overrides``. Keys the base file sets that we do not model pass through
unchanged (:mod:`.model` keeps unedited lines byte-identical).

Nodes with identical hardware (CPUs, boards, sockets, cores, threads, GPUs), features,
weight and options share one NodeName line whose names are hostlist-compressed, as long as
their memory lies within ``memory_tolerance`` (a percentage) below the largest of them:
10,000 nodes of 4 models with ±1 % memory jitter make 4 lines. The line's RealMemory is its
smallest member's reading minus ``memory_reserve``, rounded down to ``memory_round_mb``, so
no member drains with "Low RealMemory", not even after a reboot that costs a few MiB.

Grouping sorts each hardware kind by memory, largest first, and starts a new group at the
first node more than the tolerance below the current group's largest; it depends only on the
readings, never on the mine's order. A node more than the tolerance below the typical
(median) memory of the largest group of its kind is "far below" (a missing or failed DIMM):
it lands on a line of its own and ``render`` returns a warning naming it.

With ``SelectTypeParameters=CR_*_Memory`` and no DefMemPerCPU/DefMemPerNode/DefMemPerGPU
from the admin, ``DefMemPerCPU`` is the smallest RealMemory/CPUs over all NodeName lines
(floored), so a job without ``--mem`` gets memory for its CPUs only and a second job fits
beside it, and a default job on every CPU still fits on every node.
"""

import fnmatch
import re
import statistics
from itertools import repeat
from operator import itemgetter

from salt_ext.lib.conf import hostlist, model
from salt_ext.lib.conf.hardware import TOPOLOGY_KEYS

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

# slurm.conf keys of a default memory policy; any of them from the admin disables ours
MEMORY_DEFAULT_KEYS = ("DefMemPerCPU", "DefMemPerNode", "DefMemPerGPU")
MAX_TOLERANCE = 25  # percent; more would hide a failed DIMM and waste a quarter of a node
_HW_KEYS = tuple(key for key in TOPOLOGY_KEYS if key != "RealMemory")
_MISSING = object()

_GLOB = re.compile(r"[*?]")
_DIGITS = re.compile(r"(\d+)")
_DIGIT_CHARS = "0123456789"
# a name part natural_order's string keys cannot order like natural_key: digits, control chars
_NOT_PLAIN_PREFIX = re.compile(r"[\x00-\x1f0-9]")


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


def parse_tolerance(value, key="slurm:conf:memory_tolerance"):
    """``"3%"`` / ``3`` -> 3.0 (percent, 0 to MAX_TOLERANCE)."""
    if not isinstance(value, bool) and isinstance(value, (int, float, str)):
        text = str(value).strip()
        try:
            percent = float(text[:-1] if text.endswith("%") else text)
        except ValueError:
            percent = None
        if percent is not None and 0 <= percent <= MAX_TOLERANCE:
            return percent
    raise ConfGenError(
        f"{key}: expected a percentage from 0 to {MAX_TOLERANCE} like '3%', got {value!r}"
    )


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
    # one compiled pattern for all globs: called for every node and partition
    pattern = re.compile("|".join(fnmatch.translate(g) for g in globs)).match if globs else None
    if pattern is None:
        return exact.__contains__
    if not exact:
        return pattern
    return lambda name: name in exact or pattern(name) is not None


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
    parse_tolerance(conf.get("memory_tolerance", 0))
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
        return model.parse(model.render_pairs(pairs) + "\n", key, extra_keys).records()[0]
    except model.ConfError as err:
        raise ConfGenError(str(err)) from None


def _check_hardware(minion, data):
    if not isinstance(data, dict) or not isinstance(data.get("NodeName"), str):
        raise ConfGenError(f"mine data of {minion}: not slurm_node.hardware output: {data!r}")
    for key in ("CPUs", "RealMemory"):
        if isinstance(data.get(key), bool) or not isinstance(data.get(key), int):
            raise ConfGenError(f"mine data of {minion}: {key} missing or not a number")


def _node_pairs(data, groups):
    """NodeName pairs of a node but RealMemory: ``(hardware pairs, the rest)``.

    ``groups``: ``(name, settings, record)`` of the node groups the node is in."""
    head = tuple((k, str(data[k])) for k in _HW_KEYS if k in data)
    tail = []
    gpus = data.get("gpus") or {}
    if gpus.get("count"):
        gres = f"gpu:{gpus['type']}:{gpus['count']}" if gpus.get("type") else f"gpu:{gpus['count']}"
        tail.append(("Gres", gres))
    features, weight, weight_from, options, option_from = [], None, None, {}, {}
    for gname, group, record in groups:
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
        tail.append(("Features", ",".join(features)))
    if weight is not None:
        tail.append(("Weight", str(weight)))
    tail += sorted(options.items())
    return head, tuple(tail)


def _kinds(order, node_data, groups, members):
    """``{(hardware pairs, rest): [(reported memory, node), ...]}``, nodes in ``order``."""
    kinds = {}
    cache = {}  # nodes of one model in the same groups: pairs built once
    hardware_values = itemgetter(*_HW_KEYS)
    membership = {}  # node -> indexes of its groups, for nodes in any
    for index, found in enumerate(members):
        for node in found:
            membership[node] = (*membership.get(node, ()), index)
    for node in order:
        data = node_data[node]
        in_groups = membership.get(node, ())
        try:
            gpus = data.get("gpus")
            signature = (
                hardware_values(data),
                (gpus.get("count"), gpus.get("type")) if gpus else None,
                in_groups,
            )
            entries = cache.get(signature)
        except (KeyError, TypeError, AttributeError):  # odd mine data: no shortcut
            entries = signature = None
        if entries is None:
            entries = kinds.setdefault(_node_pairs(data, [groups[i] for i in in_groups]), [])
            if signature is not None:
                cache[signature] = entries
        entries.append((data["RealMemory"], node))
    return kinds


def memory_groups(entries, tolerance):
    """``[(memory, node), ...]`` of one hardware kind in groups, largest memory first.

    A group starts at its largest member and takes every node at most ``tolerance`` percent
    below it; the first node further below starts the next group. Each group keeps the
    order of ``entries``.
    """
    readings = list(map(itemgetter(0), entries))
    if min(readings) >= max(readings) * (1 - tolerance / 100):
        return [entries]  # the usual case: one model, one group
    group_of = {}
    groups = []
    floor = None
    for value in sorted(set(readings), reverse=True):
        if floor is None or value < floor:
            floor = value * (1 - tolerance / 100)
            groups.append([])
        group_of[value] = len(groups) - 1
    for entry in entries:
        groups[group_of[entry[0]]].append(entry)
    return groups


def _far_below(groups, tolerance):
    """Warnings for nodes more than ``tolerance`` below their kind's typical memory."""
    if not tolerance or len(groups) < 2:
        return []
    # the typical memory is that of the kind's largest group (ties: the larger memory)
    reference = max(groups, key=lambda group: (len(group), max(map(itemgetter(0), group))))
    typical = statistics.median_low(map(itemgetter(0), reference))
    floor = typical * (1 - tolerance / 100)
    warnings = []
    for group in groups:
        low = [(memory, node) for memory, node in group if memory < floor]
        if group is reference or not low:
            continue
        readings = sorted({memory for memory, _ in low})
        below = [f"{100 * (typical - m) / typical:.1f}" for m in (readings[-1], readings[0])]
        shown = readings[0] if len(readings) == 1 else f"{readings[0]}-{readings[-1]}"
        warnings.append(
            f"NodeName {hostlist.compress([node for _, node in low])}: {shown} MiB, "
            f"{'-'.join(dict.fromkeys(below))} % below the {typical} MiB typical of the "
            f"{len(reference)} node(s) of the same hardware and node groups (a missing or "
            "failed DIMM?); it gets a NodeName line of its own. If it is another model, give "
            "it a feature in slurm:node_groups"
        )
    return warnings


def _node_records(kinds, reserve, round_mb, tolerance, ordered):
    """``([(members, pairs), ...] in node order, warnings)``; members in node order."""
    lines = {}
    warnings = []
    for (head, tail), entries in kinds.items():
        groups = memory_groups(entries, tolerance)
        warnings += _far_below(groups, tolerance)
        for group in groups:
            memory = real_memory(min(map(itemgetter(0), group)), reserve, round_mb)
            pairs = (*head, ("RealMemory", str(memory)), *tail)
            nodes = list(map(itemgetter(1), group))
            # groups whose RealMemory rounds to one value share a line
            lines[pairs] = ordered(lines[pairs] + nodes) if pairs in lines else nodes
    records = [(members, pairs) for pairs, members in lines.items()]
    first = ordered([members[0] for members, _ in records])
    rank = {node: index for index, node in enumerate(first)}
    records.sort(key=lambda record: rank[record[0][0]])
    return records, warnings


def _natural_order(names):
    """``names`` sorted by ``natural_key`` (n9 before n10); equal keys keep their order."""
    names = list(names)
    prefixes = list(map(str.rstrip, names, repeat(_DIGIT_CHARS)))
    if _NOT_PLAIN_PREFIX.search("".join(prefixes)):
        return sorted(names, key=natural_key)
    # Every name is a digit-free prefix and an optional number, so one string per name sorts
    # as natural_key does, in C: the prefix, then (if there is a number) NUL, a character
    # counting the digits without leading zeros, those digits. NUL sorts a prefix before
    # its longer versions; the count orders numbers of different lengths.
    numbers = [
        name[len(prefix) :].lstrip("0") for prefix, name in zip(prefixes, names, strict=True)
    ]
    keys = [
        prefix if len(prefix) == len(name) else f"{prefix}\0{chr(32 + len(number))}{number}"
        for prefix, name, number in zip(prefixes, names, numbers, strict=True)
    ]
    return [names[i] for i in sorted(range(len(names)), key=keys.__getitem__)]


def render(cfg, hardware, base_text=None, base_source="slurm:conf:base", jwt_key=None):
    """Render the cluster's files. ``hardware`` is ``{minion_id: slurm_node.hardware()}``.

    Returns ``{"files": {"slurm.conf": text, "gres.conf": text|None, "cgroup.conf":
    text|None}, "nodes": {NodeName: minion_id}, "node_lines": int, "partitions": [...],
    "warnings": [text, ...]}`` (warnings: nodes far below their model's memory, a default
    memory policy we could not derive). Raises ``ConfGenError`` / ``model.ConfError``
    naming the key, line or node.
    """
    conf_cfg = cfg["conf"]
    extra_keys = tuple(conf_cfg.get("extra_keys") or ())
    reserve = parse_reserve(conf_cfg.get("memory_reserve", 0))
    tolerance = parse_tolerance(conf_cfg.get("memory_tolerance", 0))
    conf = model.parse(base_text or "", base_source, extra_keys)

    # -- nodes from the mine
    names = {}
    node_data = {}
    for minion in sorted(hardware):
        data = hardware[minion]
        try:
            node = data["NodeName"]
            # exact types (bool is an int subclass); the full check names what is wrong
            plain = type(node) is str and type(data["CPUs"]) is type(data["RealMemory"]) is int
        except (KeyError, TypeError):
            plain = False
        if not plain:
            _check_hardware(minion, data)
        if node in names:
            raise ConfGenError(
                f"minions {names[node]} and {minion} both report NodeName {node}; "
                "hostnames must be unique"
            )
        names[node] = minion
        node_data[node] = data
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
    order = _natural_order(names)
    rank = {node: index for index, node in enumerate(order)}

    def ordered(nodes):
        return sorted(nodes, key=rank.__getitem__)

    compressed = {}  # partitions often list the same nodes (short/long of one model)

    def node_list(nodes):
        nodes = tuple(nodes)
        if nodes not in compressed:
            compressed[nodes] = hostlist.compress(nodes)
        return compressed[nodes]

    groups = []
    for gname, group in sorted((cfg.get("node_groups") or {}).items()):
        record = _check_record(
            "NodeName",
            "x",
            group.get("options") or {},
            f"slurm:node_groups:{gname}:options",
            extra_keys,
        )
        groups.append((gname, group, record))
    members = [
        set(filter(matcher(group.get("nodes"), f"slurm:node_groups:{gname}:nodes"), order))
        for gname, group, _ in groups
    ]
    kinds = _kinds(order, node_data, groups, members)
    gpu_nodes = ordered(
        [
            node
            for (_, tail), entries in kinds.items()
            if tail[:1] and tail[0][0] == "Gres"
            for _, node in entries
        ]
    )
    node_records, warnings = _node_records(
        kinds,
        reserve,
        conf_cfg["memory_round_mb"],
        tolerance,
        ordered,
    )

    # -- plain parameters
    for key, value in DEFAULT_PARAMS:
        if conf.get(key) is None:
            conf.set(key, value)
    _pin(conf, "ClusterName", cfg["cluster_name"], "slurm:cluster_name", base_source)
    _accounting(conf, cfg.get("accounting") or {}, base_source)
    _restd(conf, cfg.get("restd") or {}, base_source, jwt_key or JWT_KEY_PATH)
    hosts = conf.get_all("SlurmctldHost")
    if not hosts:
        conf.set("SlurmctldHost", cfg["controller"])
    elif hosts[0].split("(")[0] != cfg["controller"]:
        raise ConfGenError(
            f"{base_source}: SlurmctldHost={hosts[0]} but slurm:controller is "
            f"{cfg['controller']!r}; make them agree"
        )
    if gpu_nodes:
        types = [t for t in (conf.get("GresTypes") or "").split(",") if t]
        if "gpu" not in types:
            conf.set("GresTypes", ",".join(types + ["gpu"]))
    for key, value in health_params(cfg.get("health")).items():
        conf.set(key, value)
    overrides = conf_cfg.get("overrides") or {}
    # an admin's memory policy, even an override removing one (null), is theirs to keep
    admin_memory = any(conf.get(key) is not None for key in MEMORY_DEFAULT_KEYS) or any(
        str(key).lower() in {k.lower() for k in MEMORY_DEFAULT_KEYS} for key in overrides
    )
    _apply_overrides(conf, overrides, extra_keys)

    # -- records
    for nodes, pairs in node_records:
        conf.add_record("NodeName", [("NodeName", node_list(nodes)), *pairs])
    if not admin_memory and "memory" in (conf.get("SelectTypeParameters") or "").lower():
        per_cpu, problem = _default_mem_per_cpu(conf)
        if per_cpu:
            conf.set("DefMemPerCPU", str(per_cpu))
        elif problem:
            warnings.append(problem)
    partitions = _partitions(cfg, conf, order, groups, members, node_list, extra_keys)

    files = {
        "slurm.conf": HEADER + conf.render(),
        "gres.conf": _gres_conf(gpu_nodes, node_data),
        "cgroup.conf": _cgroup_conf(cfg.get("cgroup"), conf),
    }
    return {
        "files": files,
        "nodes": {node: names[node] for node in order},
        "node_lines": len(node_records),
        "partitions": partitions,
        "warnings": warnings,
    }


def health_params(health):
    """slurm.conf's health check keys for the validated ``slurm:health``
    (salt_ext/lib/node/healthcheck.py): none without checks; overrides still win."""
    if not health or not health.get("checks"):
        return {}
    return {
        "HealthCheckProgram": health["program"],
        "HealthCheckInterval": str(health["interval"]),
        "HealthCheckNodeState": health["node_state"],
    }


def _default_mem_per_cpu(conf):
    """``(DefMemPerCPU, None)``: the smallest RealMemory/CPUs over the NodeName lines,
    floored, so a job with the default on every CPU fits on every node; or ``(None, why)``."""
    defaults = {}
    lowest = None
    for record in conf.records("NodeName"):
        values = dict(record.pairs[1:])
        if record.name.upper() == "DEFAULT":
            defaults.update(values)  # applies to the lines after it, as in Slurm
            continue
        node = {**defaults, **values}
        try:
            memory = int(node["RealMemory"])
            if "CPUs" in node:
                cpus = int(node["CPUs"])
            else:  # Slurm counts the topology then
                cpus = int(node.get("Boards", 1)) * int(
                    node.get("SocketsPerBoard", node.get("Sockets", 1))
                )
                cpus *= int(node.get("CoresPerSocket", 1)) * int(node.get("ThreadsPerCore", 1))
        except (KeyError, ValueError):
            cpus = memory = 0
        if cpus < 1 or memory // cpus < 1:
            return None, (
                f"DefMemPerCPU not rendered: NodeName={record.name} gives no RealMemory and "
                "CPUs to derive it from; set DefMemPerCPU (or DefMemPerNode) in "
                "slurm:conf:overrides"
            )
        lowest = memory // cpus if lowest is None else min(lowest, memory // cpus)
    return lowest, None


# with slurm:accounting:enabled: jobs' usage gathered from /proc (needs no cgroup plugin)
DEFAULT_JOBACCT_GATHER = "jobacct_gather/linux"
# with accounts / users / QOS as code (slurm:accounting:managed, set by settings.validate):
# a job needs an association, and the limits of associations and QOS hold
DEFAULT_ENFORCE = "associations,limits,qos"


def _accounting(conf, acct, base_source):
    """slurm.conf's side of ``slurm:accounting:``: slurmctld sends job records to slurmdbd
    on the dbd host. The base file may set the same values, not others; overrides win.
    With accounts / users / QOS as code (``managed``), ``AccountingStorageEnforce`` (unless
    the base file or an override sets it): without it slurmctld ignores the limits."""
    if not acct.get("enabled"):
        return
    _pin(
        conf,
        "AccountingStorageType",
        "accounting_storage/slurmdbd",
        "slurm:accounting:enabled",
        base_source,
    )
    _pin(conf, "AccountingStorageHost", acct["address"], "slurm:accounting:address", base_source)
    _pin(conf, "AccountingStoragePort", str(acct["port"]), "slurm:accounting:port", base_source)
    if conf.get("JobAcctGatherType") is None:
        conf.set("JobAcctGatherType", DEFAULT_JOBACCT_GATHER)
    if acct.get("managed") and conf.get("AccountingStorageEnforce") is None:
        conf.set("AccountingStorageEnforce", DEFAULT_ENFORCE)


# slurm:restd: where slurmctld (and slurmdbd) read the cluster's JWT key: beside slurm.conf,
# in the machine's conf dir (the node side, salt_ext.lib.node.restd, takes it from here)
JWT_KEY_NAME = "jwt_hs256.key"
DEFAULT_CONF_DIR = "/etc/slurm"


def jwt_key_path(conf_dir=DEFAULT_CONF_DIR):
    """The JWT key's path in ``conf_dir`` (Ubuntu <= 20.04: /etc/slurm-llnl)."""
    return f"{conf_dir}/{JWT_KEY_NAME}"


JWT_KEY_PATH = jwt_key_path()


def _restd(conf, restd, base_source, jwt_key=JWT_KEY_PATH):
    """slurm.conf's side of ``slurm:restd:``: JWT as the alternative authentication, which
    slurmctld checks the tokens slurmrestd forwards with."""
    if not restd.get("enabled"):
        return
    _pin(conf, "AuthAltTypes", "auth/jwt", "slurm:restd:enabled", base_source)
    _pin(
        conf,
        "AuthAltParameters",
        f"jwt_key={jwt_key}",
        "slurm:restd:enabled",
        base_source,
    )


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
            canonical = model.canonical_key(str(key), extra_keys, source="slurm:conf:overrides")
        except model.ConfError as err:
            raise ConfGenError(str(err)) from None
        if canonical.lower() in seen:
            raise ConfGenError(
                f"slurm:conf:overrides: {key!r} and {seen[canonical.lower()]!r} are the same "
                "slurm.conf key (keys are case-insensitive)"
            )
        seen[canonical.lower()] = key
        if canonical in model.RECORD_KINDS:
            raise ConfGenError(
                f"slurm:conf:overrides: {canonical} lines come from the mine and "
                "slurm:partitions / slurm:node_groups, not from overrides"
            )
        if value is None:
            conf.remove(canonical)
        elif isinstance(value, list) and canonical.lower() in model.REPEATABLE:
            conf.set(canonical, [conf_value(v) for v in value])
        else:
            conf.set(canonical, conf_value(value))


def _partitions(cfg, conf, order, groups, members, node_list, extra_keys):
    wanted = cfg.get("partitions")
    if wanted is None:
        if conf.records("PartitionName"):
            return [r.name for r in conf.records("PartitionName")]
        wanted = [{"name": "main", "nodes": "ALL", "default": True}]
    group_members = {gname: found for (gname, _, _), found in zip(groups, members, strict=True)}
    conf.remove_records("PartitionName", [p["name"] for p in wanted])
    selected = {}  # nodes expression -> its nodes: partitions often share one (short/long)

    def select(expr, key):
        ident = repr(expr)
        if ident not in selected:
            selected[ident] = list(filter(matcher(expr, key), order))
        return selected[ident]

    for index, part in enumerate(wanted):
        key = f"slurm:partitions:{index}"
        if part.get("groups"):
            chosen = set().union(*(group_members[g] for g in _as_list(part["groups"])))
            if part.get("nodes"):
                chosen.update(select(part["nodes"], f"{key}:nodes"))
            nodes = node_list([n for n in order if n in chosen])
        elif isinstance(part.get("nodes"), str) and part["nodes"].upper() == "ALL":
            nodes = "ALL"
        elif part.get("nodes") is None:
            nodes = "ALL"
        else:
            nodes = node_list(select(part["nodes"], f"{key}:nodes"))
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


def _gres_conf(gpu_nodes, node_data):
    lines = {}
    line_of = {}  # GPU settings -> pairs: nodes of one model share them
    for node in gpu_nodes:
        gpus = node_data[node]["gpus"]
        files = tuple(gpus.get("files") or ())
        settings = (gpus.get("autodetect"), gpus.get("type"), files, gpus["count"])
        pairs = line_of.get(settings)
        if pairs is None:
            pairs = [("AutoDetect", gpus["autodetect"])] if gpus.get("autodetect") else []
            pairs.append(("Name", "gpu"))
            if gpus.get("type"):
                pairs.append(("Type", gpus["type"]))
            if files and not gpus.get("autodetect"):
                pairs.append(("File", hostlist.compress(files)))
            else:
                pairs.append(("Count", str(gpus["count"])))
            pairs = line_of[settings] = tuple(pairs)
        lines.setdefault(pairs, []).append(node)
    if not lines:
        return None
    # members are in node order already, and so are the lines by their first member
    body = [
        model.render_pairs([("NodeName", hostlist.compress(members)), *pairs])
        for pairs, members in lines.items()
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
