"""slurm.conf / gres.conf / cgroup.conf rendering from pillar + mine hardware."""

import random

import pytest

from salt_ext.lib.conf import generate, hostlist, model
from salt_ext.lib.node import settings

PILLAR = {"cluster_name": "hpc", "controller": "ctl"}


def cfg(**slurm):
    return settings.validate({**PILLAR, **slurm})


def hw(name, cpus=2, memory=24105, gpus=None, **extra):
    data = {
        "NodeName": name,
        "CPUs": cpus,
        "Boards": 1,
        "SocketsPerBoard": 1,
        "CoresPerSocket": cpus,
        "ThreadsPerCore": 1,
        "RealMemory": memory,
        "gpus": gpus or {"count": 0, "type": None, "files": [], "autodetect": None},
        "minion_id": name,
        "source": "slurmd -C",
    }
    data.update(extra)
    return data


def mine(*nodes):
    return {n["NodeName"]: n for n in nodes}


def lines(text, prefix):
    return [line for line in text.splitlines() if line.startswith(prefix)]


def test_identical_nodes_share_one_hostlist_line():
    out = generate.render(cfg(), mine(hw("n1"), hw("n2"), hw("n3")))
    conf = out["files"]["slurm.conf"]
    assert lines(conf, "NodeName=") == [
        "NodeName=n[1-3] CPUs=2 Boards=1 SocketsPerBoard=1 CoresPerSocket=2 ThreadsPerCore=1 "
        "RealMemory=23552"
    ]
    assert out["node_lines"] == 1
    assert out["nodes"] == {"n1": "n1", "n2": "n2", "n3": "n3"}
    parsed = model.parse(conf)
    assert parsed.get("ClusterName") == "hpc"
    assert parsed.get_all("SlurmctldHost") == ["ctl"]
    assert lines(conf, "PartitionName=") == [
        "PartitionName=main Nodes=ALL MaxTime=INFINITE State=UP Default=YES"
    ]


def test_rendering_is_deterministic_whatever_the_mine_order():
    a = generate.render(cfg(), mine(hw("n2"), hw("n10"), hw("n1")))
    b = generate.render(cfg(), dict(reversed(list(mine(hw("n2"), hw("n10"), hw("n1")).items()))))
    assert a["files"] == b["files"]
    assert lines(a["files"]["slurm.conf"], "NodeName=")[0].startswith("NodeName=n[1-2,10] ")


def test_ten_thousand_nodes_of_four_kinds_make_four_lines():
    kinds = [(32, 128000), (64, 256000), (128, 512000), (16, 64000)]
    nodes = {}
    for i in range(10000):
        cpus, memory = kinds[i % 4]
        name = f"c{i:05d}"
        nodes[name] = hw(name, cpus, memory + (i % 7))  # a few MiB of jitter per node
    out = generate.render(cfg(), nodes)
    node_lines = lines(out["files"]["slurm.conf"], "NodeName=")
    assert out["node_lines"] == len(node_lines) == 4
    expanded = [n for line in node_lines for n in hostlist.expand(line.split()[0][9:])]
    assert sorted(expanded) == sorted(nodes)


@pytest.mark.parametrize(
    "reported, reserve, round_mb, expected",
    [
        (24105, ("percent", 2.0), 256, 23552),
        (24105, ("mb", 1024), 1, 23081),
        (24105, ("mb", 0), 1, 24105),
        (257843, ("percent", 2.0), 1024, 251904),
        (257851, ("percent", 2.0), 1024, 251904),  # same model, slightly different reading
        (900, ("percent", 2.0), 1024, 882),  # smaller than one rounding step: not rounded
        (100, ("mb", 500), 1, 1),  # never below 1
    ],
)
def test_real_memory_reserve_and_rounding(reported, reserve, round_mb, expected):
    assert generate.real_memory(reported, reserve, round_mb) == expected
    assert generate.real_memory(reported, reserve, round_mb) <= reported


@pytest.mark.parametrize("value", ["abc", "-1", "120%", -5, "5 %x"])
def test_bad_memory_reserve_names_the_key(value):
    with pytest.raises(settings.SettingsError, match="slurm:conf:memory_reserve"):
        cfg(conf={"memory_reserve": value})


def test_gpu_nodes_get_gres_and_a_matching_gres_conf():
    a100 = {
        "count": 4,
        "type": "a100",
        "files": [f"/dev/nvidia{i}" for i in range(4)],
        "autodetect": None,
    }
    out = generate.render(cfg(), mine(hw("g1", gpus=a100), hw("g2", gpus=a100), hw("c1")))
    conf = out["files"]["slurm.conf"]
    assert [line for line in lines(conf, "NodeName=") if "Gres=" in line] == [
        "NodeName=g[1-2] CPUs=2 Boards=1 SocketsPerBoard=1 CoresPerSocket=2 ThreadsPerCore=1 "
        "RealMemory=23552 Gres=gpu:a100:4"
    ]
    assert "Gres" not in next(line for line in lines(conf, "NodeName=c1"))
    assert model.parse(conf).get("GresTypes") == "gpu"
    gres = out["files"]["gres.conf"]
    assert lines(gres, "NodeName=") == ["NodeName=g[1-2] Name=gpu Type=a100 File=/dev/nvidia[0-3]"]


def test_gpu_autodetect_and_untyped_gpus():
    nvml = {"count": 2, "type": "h100", "files": [], "autodetect": "nvml"}
    plain = {"count": 1, "type": None, "files": ["/dev/nvidia0"], "autodetect": None}
    out = generate.render(cfg(), mine(hw("a1", gpus=nvml), hw("b1", gpus=plain)))
    assert "Gres=gpu:h100:2" in lines(out["files"]["slurm.conf"], "NodeName=a1")[0]
    assert "Gres=gpu:1" in lines(out["files"]["slurm.conf"], "NodeName=b1")[0]
    assert lines(out["files"]["gres.conf"], "NodeName=") == [
        "NodeName=a1 AutoDetect=nvml Name=gpu Type=h100 Count=2",
        "NodeName=b1 Name=gpu File=/dev/nvidia0",
    ]


def test_no_gpu_no_gres_conf_and_no_cgroup_conf_without_cgroup_plugins():
    out = generate.render(
        cfg(
            conf={"overrides": {"ProctrackType": "proctrack/linuxproc", "TaskPlugin": "task/none"}}
        ),
        mine(hw("n1")),
    )
    assert out["files"]["gres.conf"] is None
    assert out["files"]["cgroup.conf"] is None


def test_cgroup_conf_defaults_and_pillar_keys():
    out = generate.render(
        cfg(cgroup={"ConstrainSwapSpace": True, "constraincores": None}), mine(hw("n1"))
    )
    assert out["files"]["cgroup.conf"].endswith("ConstrainRAMSpace=yes\nConstrainSwapSpace=yes\n")
    assert "ConstrainCores" not in out["files"]["cgroup.conf"]
    with pytest.raises(generate.ConfGenError, match="unknown cgroup.conf key 'ConstrainCPUs'"):
        generate.render(cfg(cgroup={"ConstrainCPUs": "yes"}), mine(hw("n1")))


def test_groups_give_features_weight_and_options_and_split_lines():
    out = generate.render(
        cfg(
            node_groups={
                "fat": {"nodes": "n[3-4]", "features": ["bigmem"], "weight": 10},
                "ib": {"nodes": "n*", "features": ["ib"]},
                "old": {"nodes": ["n4"], "options": {"State": "FUTURE"}},
            },
        ),
        mine(hw("n1"), hw("n2"), hw("n3"), hw("n4")),
    )
    node_lines = lines(out["files"]["slurm.conf"], "NodeName=")
    assert [line.split()[0] for line in node_lines] == [
        "NodeName=n[1-2]",
        "NodeName=n3",
        "NodeName=n4",
    ]
    assert node_lines[0].endswith("Features=ib")
    assert node_lines[1].endswith("Features=bigmem,ib Weight=10")
    assert node_lines[2].endswith("Features=bigmem,ib Weight=10 State=FUTURE")


def test_conflicting_group_weights_name_both_groups():
    with pytest.raises(generate.ConfGenError, match="node n1: slurm:node_groups a and b"):
        generate.render(
            cfg(node_groups={"a": {"nodes": "n1", "weight": 1}, "b": {"nodes": "n*", "weight": 2}}),
            mine(hw("n1")),
        )


def test_partitions_from_pillar_with_groups_hostlists_and_options():
    out = generate.render(
        cfg(
            node_groups={"gpu": {"nodes": "g*"}},
            partitions=[
                {"name": "cpu", "nodes": "c[1-2]", "default": True},
                {"name": "gpu", "groups": ["gpu"], "options": {"MaxTime": 60}},
                {"name": "all", "nodes": "ALL", "options": {"Hidden": True}},
            ],
        ),
        mine(hw("c1"), hw("c2"), hw("g1")),
    )
    assert lines(out["files"]["slurm.conf"], "PartitionName=") == [
        "PartitionName=cpu Nodes=c[1-2] MaxTime=INFINITE State=UP Default=YES",
        "PartitionName=gpu Nodes=g1 MaxTime=60 State=UP",
        "PartitionName=all Nodes=ALL MaxTime=INFINITE State=UP Hidden=YES",
    ]
    assert out["partitions"] == ["cpu", "gpu", "all"]


def test_partition_matching_no_node_is_an_error():
    with pytest.raises(
        generate.ConfGenError, match="slurm:partitions:0: partition 'x' matches no node"
    ):
        generate.render(cfg(partitions=[{"name": "x", "nodes": "zz[1-2]"}]), mine(hw("n1")))


def test_base_file_keys_pass_through_and_overrides_win():
    base = (
        "# site base\n"
        "SchedulerType=sched/builtin\n"
        "SlurmctldTimeout=120   # keep\n"
        "PrologFlags=Contain\n"
        "PartitionName=long Nodes=ALL MaxTime=7-0\n"
    )
    out = generate.render(
        cfg(conf={"overrides": {"SlurmctldTimeout": 300, "PrologFlags": None}}),
        mine(hw("n1")),
        base,
    )
    conf = out["files"]["slurm.conf"]
    assert "# site base\nSchedulerType=sched/builtin\n" in conf  # untouched, not our default
    parsed = model.parse(conf)
    assert parsed.get("SlurmctldTimeout") == "300"
    assert parsed.get("PrologFlags") is None
    assert "PartitionName=long Nodes=ALL MaxTime=7-0" in conf  # base partition kept
    assert out["partitions"] == ["long"]


@pytest.mark.parametrize(
    "base, message",
    [
        ("SchedulerType=a\nschedulertype=b\n", "line 2: duplicate key"),
        ("SchedulerType=a\nthis is garbage\n", "line 2"),
        ("SchedulerTyp=a\n", "unknown slurm.conf key 'SchedulerTyp'"),
        ("ClusterName=other\n", "ClusterName=other but slurm:cluster_name is 'hpc'"),
        ("SlurmctldHost=head1\n", "SlurmctldHost=head1 but slurm:controller is 'ctl'"),
        ("NodeName=n[1-2] CPUs=4\n", r"NodeName=n\[1-2\] also defines n1"),
    ],
)
def test_bad_base_files_fail_naming_line_or_key(base, message):
    with pytest.raises((generate.ConfGenError, model.ConfError), match=message):
        generate.render(cfg(), mine(hw("n1")), base, "salt://site/base.conf")


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"SchedulerTyp": "x"}, "unknown slurm.conf key 'SchedulerTyp'"),
        ({"SchedulerType": "a", "schedulertype": "b"}, "same slurm.conf key"),
        ({"NodeName": "n1"}, "NodeName lines come from the mine"),
    ],
)
def test_bad_overrides_name_the_key(overrides, message):
    with pytest.raises(generate.ConfGenError, match=message):
        generate.render(cfg(conf={"overrides": overrides}), mine(hw("n1")))


def test_extra_keys_let_newer_slurm_keys_through():
    out = generate.render(
        cfg(conf={"overrides": {"BrandNewKey": "1"}, "extra_keys": ["BrandNewKey"]}),
        mine(hw("n1")),
    )
    assert "BrandNewKey=1" in out["files"]["slurm.conf"]


def test_empty_mine_is_an_error_telling_what_to_do():
    with pytest.raises(generate.ConfGenError, match="apply slurm.node on the compute nodes first"):
        generate.render(cfg(), {})


def test_two_minions_with_one_hostname_are_refused():
    a, b = hw("n1"), hw("n1")
    with pytest.raises(generate.ConfGenError, match="both report NodeName n1"):
        generate.render(cfg(), {"m1": a, "m2": b})


@pytest.mark.parametrize(
    "slurm, key",
    [
        ({"node_target": ""}, "slurm:node_target"),
        ({"node_target_type": "regex"}, "slurm:node_target_type"),
        ({"conf": {"base": "relative/path"}}, "slurm:conf:base"),
        ({"conf": {"overrides": ["a"]}}, "slurm:conf:overrides"),
        ({"conf": {"history": 0}}, "slurm:conf:history"),
        ({"partitions": {"name": "x"}}, "slurm:partitions"),
        ({"partitions": [{"name": "x", "groups": ["nope"]}]}, "slurm:partitions:0:groups"),
        ({"partitions": [{"name": "x"}, {"name": "x"}]}, "slurm:partitions:1"),
        ({"partitions": [{"name": "x", "maxtime": 5}]}, "slurm:partitions:0: unknown setting"),
        ({"node_groups": {"g": {"nodes": "n[1-"}}}, "slurm:node_groups:g:nodes"),
        ({"node_groups": {"g": {"nodes": "n1", "weight": "heavy"}}}, "slurm:node_groups:g:weight"),
        ({"cgroup": ["x"]}, "slurm:cgroup"),
    ],
)
def test_bad_render_pillar_fails_validation_naming_the_key(slurm, key):
    with pytest.raises(settings.SettingsError, match=key):
        cfg(**slurm)


def jittered(count, kinds, spread, seed=7):
    """``count`` nodes of ``kinds`` [(prefix, cpus, memory)], memory within ±``spread``."""
    rng = random.Random(seed)  # noqa: S311 -- reproducible test data
    nodes = {}
    for i in range(count):
        prefix, cpus, memory = kinds[i % len(kinds)]
        name = f"{prefix}{i // len(kinds):05d}"
        nodes[name] = hw(name, cpus, memory + round(memory * rng.uniform(-spread, spread)))
    return nodes


KINDS = [("c", 64, 257_843), ("m", 128, 1_031_000), ("g", 32, 515_700), ("s", 16, 64_300)]


def node_memory(conf):
    """``{node: RealMemory}`` from the NodeName lines of ``conf``."""
    memory = {}
    for record in model.parse(conf).records("NodeName"):
        for node in hostlist.expand(record.name):
            memory[node] = int(record.get("RealMemory"))
    return memory


@pytest.mark.parametrize("spread", [0.01, 64 / 64_300, 512 / 64_300])
def test_memory_jitter_of_one_model_makes_one_line_per_model(spread):
    nodes = jittered(10_000, KINDS, spread)
    out = generate.render(cfg(), nodes)
    assert out["node_lines"] == 4, lines(out["files"]["slurm.conf"], "NodeName=")
    assert out["warnings"] == []
    memory = node_memory(out["files"]["slurm.conf"])
    assert sorted(memory) == sorted(nodes)
    reserve = ("percent", 2.0)
    for prefix, _cpus, _memory in KINDS:
        group = [n for n in nodes if n.startswith(prefix)]
        lowest = min(nodes[n]["RealMemory"] for n in group)
        # the group gets its smallest member minus the reserve: none drains, none is short
        assert {memory[n] for n in group} == {generate.real_memory(lowest, reserve, 256)}
        assert all(
            memory[n] <= generate.real_memory(nodes[n]["RealMemory"], reserve, 256) for n in group
        )


def test_a_node_missing_a_dimm_gets_its_own_line_and_a_warning_naming_it():
    nodes = jittered(400, KINDS, 0.01)
    nodes["c00042"]["RealMemory"] -= 257_843 // 16  # one of 16 DIMMs gone
    nodes["c00043"]["RealMemory"] -= 257_843 // 16 + 50
    out = generate.render(cfg(), nodes)
    node_lines = lines(out["files"]["slurm.conf"], "NodeName=")
    assert out["node_lines"] == 5, node_lines
    assert any(line.startswith("NodeName=c[00042-00043] ") for line in node_lines), node_lines
    assert len(out["warnings"]) == 1, out["warnings"]
    warning = out["warnings"][0]
    assert warning.startswith("NodeName c[00042-00043]: ")
    assert "below the" in warning and "DIMM" in warning and "slurm:node_groups" in warning
    memory = node_memory(out["files"]["slurm.conf"])
    healthy = min(
        nodes[n]["RealMemory"] for n in nodes if n.startswith("c") and n not in ("c00042", "c00043")
    )
    assert memory["c00001"] == generate.real_memory(healthy, ("percent", 2.0), 256)


def test_memory_grouping_ignores_mine_order_and_a_new_node_moves_no_other_group():
    nodes = jittered(200, KINDS, 0.01)
    forward = generate.render(cfg(), nodes)
    backward = generate.render(cfg(), dict(reversed(list(nodes.items()))))
    assert forward["files"] == backward["files"]
    before = node_memory(forward["files"]["slurm.conf"])
    grown = dict(nodes)
    grown["c99999"] = hw("c99999", 64, 257_843 + 1_000)  # one more node of model c
    after = node_memory(generate.render(cfg(), grown)["files"]["slurm.conf"])
    assert {n: after[n] for n in before} == before
    assert after["c99999"] == before["c00000"]


def test_memory_tolerance_zero_groups_only_equal_real_memory():
    out = generate.render(
        cfg(conf={"memory_tolerance": "0%"}),
        mine(hw("n1", memory=24105), hw("n2", memory=24100), hw("n3", memory=23000)),
    )
    assert [line.split()[0] for line in lines(out["files"]["slurm.conf"], "NodeName=")] == [
        "NodeName=n[1-2]",
        "NodeName=n3",
    ]
    assert out["warnings"] == []


@pytest.mark.parametrize("value", ["abc", "-1%", "30%", True, None, "3 %%", [3]])
def test_bad_memory_tolerance_names_the_key(value):
    with pytest.raises(settings.SettingsError, match="slurm:conf:memory_tolerance"):
        cfg(conf={"memory_tolerance": value})


@pytest.mark.parametrize("value, percent", [("3%", 3.0), (2, 2.0), ("0.5%", 0.5), (0, 0.0)])
def test_memory_tolerance_accepts_percentages(value, percent):
    assert generate.parse_tolerance(value) == percent


def test_default_mem_per_cpu_fits_a_default_job_on_every_cpu_of_every_node():
    out = generate.render(
        cfg(),
        mine(hw("n1", cpus=4, memory=24105), hw("n2", cpus=8, memory=64000), hw("n3")),
    )
    conf = model.parse(out["files"]["slurm.conf"])
    per_cpu = int(conf.get("DefMemPerCPU"))
    # n1: RealMemory 23552 over 4 CPUs is the smallest ratio
    assert per_cpu == 23552 // 4
    for record in conf.records("NodeName"):
        assert per_cpu * int(record.get("CPUs")) <= int(record.get("RealMemory"))


def test_default_mem_per_cpu_counts_base_file_nodes_and_their_defaults():
    base = "NodeName=DEFAULT CPUs=16 RealMemory=32000\nNodeName=old[1-2]\n"
    out = generate.render(cfg(), mine(hw("n1")), base)
    assert model.parse(out["files"]["slurm.conf"]).get("DefMemPerCPU") == str(32000 // 16)


@pytest.mark.parametrize(
    "conf_settings, base, expected",
    [
        ({"overrides": {"DefMemPerCPU": 1000}}, None, ("DefMemPerCPU", "1000")),
        ({"overrides": {"DefMemPerNode": 4000}}, None, ("DefMemPerNode", "4000")),
        ({}, "DefMemPerGPU=8000\n", ("DefMemPerGPU", "8000")),
        ({"overrides": {"DefMemPerCPU": None}}, None, ("DefMemPerCPU", None)),
        ({"overrides": {"SelectTypeParameters": "CR_Core"}}, None, ("DefMemPerCPU", None)),
    ],
)
def test_admin_memory_policy_is_left_alone(conf_settings, base, expected):
    out = generate.render(cfg(conf=conf_settings), mine(hw("n1")), base)
    conf = model.parse(out["files"]["slurm.conf"])
    key, value = expected
    assert conf.get(key) == value
    others = {"DefMemPerCPU", "DefMemPerNode", "DefMemPerGPU"} - {key}
    assert all(conf.get(other) is None for other in others)


def test_no_default_mem_per_cpu_when_a_node_has_no_real_memory():
    out = generate.render(cfg(), mine(hw("n1")), "NodeName=old1 CPUs=4\n")
    assert model.parse(out["files"]["slurm.conf"]).get("DefMemPerCPU") is None
    assert any("DefMemPerCPU" in w and "old1" in w for w in out["warnings"]), out["warnings"]


@pytest.mark.parametrize("seed", range(5))
def test_natural_order_sorts_as_natural_key_does(seed):
    rng = random.Random(seed)  # noqa: S311 -- reproducible test data
    pool = ["n", "ab", "a", "b", "x-", "n-", "nn", "N", "é"]
    names = [
        rng.choice(pool) + rng.choice(["", "0", "00", "9", "09", "10", "010", "123456789012"])
        for _ in range(300)
    ]
    assert generate._natural_order(names) == sorted(names, key=generate.natural_key)
    # digits inside the name: the general path
    mixed = [*names, "r1n2", "r1n10", "r10n1"]
    assert generate._natural_order(mixed) == sorted(mixed, key=generate.natural_key)


@pytest.mark.parametrize(
    "data, message",
    [
        (["n1"], "not slurm_node.hardware output"),
        ({"CPUs": 2, "RealMemory": 1}, "not slurm_node.hardware output"),
        ({**hw("n1"), "CPUs": True}, "CPUs missing or not a number"),
        ({**hw("n1"), "RealMemory": "1024"}, "RealMemory missing or not a number"),
        ({k: v for k, v in hw("n1").items() if k != "RealMemory"}, "RealMemory missing"),
    ],
)
def test_bad_mine_data_names_the_minion(data, message):
    with pytest.raises(generate.ConfGenError, match=f"mine data of m9: .*{message}"):
        generate.render(cfg(), {"m1": hw("n1"), "m9": data})


def test_nodes_missing_topology_keys_still_group_by_what_they_report():
    bare = {k: v for k, v in hw("n3").items() if k not in ("Boards", "ThreadsPerCore")}
    out = generate.render(cfg(), mine(hw("n1"), hw("n2"), bare))
    assert [line.split()[0] for line in lines(out["files"]["slurm.conf"], "NodeName=")] == [
        "NodeName=n[1-2]",
        "NodeName=n3",
    ]
    assert "Boards" not in lines(out["files"]["slurm.conf"], "NodeName=n3")[0]


def test_another_memory_size_on_purpose_is_silenced_by_a_node_group_feature():
    nodes = mine(*[hw(f"a{i}", memory=512_000) for i in range(4)])
    nodes.update(mine(*[hw(f"b{i}", memory=256_000) for i in range(2)]))
    out = generate.render(cfg(), nodes)
    assert out["node_lines"] == 2
    assert [w.split(":")[0] for w in out["warnings"]] == ["NodeName b[0-1]"]
    grouped = generate.render(
        cfg(node_groups={"half": {"nodes": "b*", "features": ["m256"]}}), nodes
    )
    assert grouped["node_lines"] == 2 and grouped["warnings"] == []


def test_memory_groups_start_a_group_below_the_tolerance_of_the_largest():
    entries = [(1000, "a"), (900, "b"), (975, "c"), (1000, "d"), (960, "e"), (500, "f")]
    assert generate.memory_groups(entries, 3) == [
        [(1000, "a"), (975, "c"), (1000, "d")],  # within 3 % of 1000, in the given order
        [(960, "e")],  # more than 3 % below 1000: starts the next group
        [(900, "b")],
        [(500, "f")],
    ]
    assert generate.memory_groups(entries, 0) == [
        [(1000, "a"), (1000, "d")],
        [(975, "c")],
        [(960, "e")],
        [(900, "b")],
        [(500, "f")],
    ]
    assert generate.memory_groups(entries, 25) == [entries[:5], [(500, "f")]]


def test_accounting_on_adds_the_slurmdbd_keys_and_a_gather_plugin():
    from salt_ext.lib.node import settings  # noqa: PLC0415

    pillar = {
        "controller": "ctl",
        "cluster_name": "c1",
        "accounting": {"enabled": True, "address": "10.0.0.5", "port": 7000},
    }
    hardware = {"n1": {"NodeName": "n1", "CPUs": 2, "RealMemory": 4000}}
    text = generate.render(settings.validate(pillar), hardware)["files"]["slurm.conf"]
    lines = text.splitlines()
    for line in (
        "AccountingStorageType=accounting_storage/slurmdbd",
        "AccountingStorageHost=10.0.0.5",
        "AccountingStoragePort=7000",
        "JobAcctGatherType=jobacct_gather/linux",
        "ClusterName=c1",
    ):
        assert line in lines, text
    off = generate.render(settings.validate({"controller": "ctl"}), hardware)["files"]
    assert "AccountingStorage" not in off["slurm.conf"]
    assert "JobAcctGatherType" not in off["slurm.conf"]
    # accounting on without accounts / users / QOS in pillar: no enforcement (every user
    # may still submit without an association)
    assert "AccountingStorageEnforce" not in text


def test_accounts_as_code_enforce_associations_limits_and_qos_unless_overridden():
    from salt_ext.lib.node import settings  # noqa: PLC0415

    hardware = {"n1": {"NodeName": "n1", "CPUs": 2, "RealMemory": 4000}}
    qos = {"single": {"limits": {"MaxJobsPerUser": 1}}}
    pillar = {"controller": "ctl", "accounting": {"enabled": True, "qos": qos}}
    text = generate.render(settings.validate(pillar), hardware)["files"]["slurm.conf"]
    assert "AccountingStorageEnforce=associations,limits,qos" in text.splitlines(), text
    pillar["conf"] = {"overrides": {"AccountingStorageEnforce": "associations"}}
    text = generate.render(settings.validate(pillar), hardware)["files"]["slurm.conf"]
    assert "AccountingStorageEnforce=associations" in text.splitlines(), text
    pillar["conf"] = {"overrides": {"AccountingStorageEnforce": None}}
    text = generate.render(settings.validate(pillar), hardware)["files"]["slurm.conf"]
    assert "AccountingStorageEnforce" not in text
