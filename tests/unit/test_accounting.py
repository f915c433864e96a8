"""salt_ext.lib.accounting: pillar validation, parsing of sacctmgr 22.05 ``-n -P`` output,
the diff, batching, test mode, idempotence and the threat model (T1-T10 in the package
docstring), against a fake sacctmgr (tests/unit/fakesacctmgr.py)."""

import copy
import re

import pytest

from salt_ext.lib.accounting import current, diff, engine, pillar, values
from tests.unit import sacctmgr_captured as captured
from tests.unit.fakesacctmgr import FakeSacctmgr

CLUSTER = "cluster"

PILLAR = {
    "qos": {
        "high": {
            "description": "High priority",
            "priority": 100,
            "flags": ["DenyOnLimit"],
            "preempt": ["low"],
            "limits": {"MaxJobsPerUser": 1, "MaxWall": "2-00:00:00", "MaxTRESPerUser": "cpu=64"},
        },
        "low": {"priority": 1, "usage_factor": 0.5, "limits": {"GrpTRES": "cpu=512,mem=1T"}},
    },
    "accounts": {
        "science": {"description": "Science", "organization": "uni", "fairshare": 100},
        "physics": {
            "parent": "science",
            "fairshare": 50,
            "qos": ["normal", "high"],
            "default_qos": "normal",
            "limits": {"GrpTRES": "cpu=256,gres/gpu=8", "MaxJobs": 20, "MaxWall": "1-00:00:00"},
        },
        "chemistry": {"parent": "science"},
    },
    "users": {
        "alice": {"accounts": ["physics"]},
        "bob": {
            "default_account": "chemistry",
            "admin_level": "operator",
            "accounts": {"chemistry": {}, "physics": {"limits": {"MaxJobs": 5}}},
        },
    },
}


def _pillar(**over):
    data = copy.deepcopy(PILLAR)
    data.update(over)
    return data


def _writes(fake):
    return [call for call in fake.calls if "-i" in call["argv"]]


# ------------------------------------------------------------------------ validation
@pytest.mark.parametrize(
    ("mutate", "key"),
    [
        (
            lambda p: p["users"]["alice"].update(qos=["gold"]),
            "slurm:accounting:users:alice:accounts:physics:qos: QOS 'gold' is not defined",
        ),
        (
            lambda p: p["accounts"]["physics"].update(parent="nowhere"),
            "slurm:accounting:accounts:physics:parent: account 'nowhere' does not exist",
        ),
        (
            lambda p: p["accounts"]["physics"]["limits"].update(GrpTRES="cpu=abc"),
            "slurm:accounting:accounts:physics:limits:GrpTRES: cpu: expected a whole count",
        ),
        (
            lambda p: p["accounts"]["physics"]["limits"].update(MaxTRES="gpu:x=1"),
            "slurm:accounting:accounts:physics:limits:MaxTRES: 'gpu:x' is not a TRES",
        ),
        (
            lambda p: p["qos"]["high"]["limits"].update(MaxWall="2 days"),
            "slurm:accounting:qos:high:limits:MaxWall: '2 days' is not a duration",
        ),
        (
            lambda p: p["accounts"]["physics"].update(colour="blue"),
            "slurm:accounting:accounts:physics:colour: unknown key",
        ),
        (
            lambda p: p["accounts"]["physics"]["limits"].update(MaxCPUs=4),
            "slurm:accounting:accounts:physics:limits:MaxCPUs: unknown limit",
        ),
        (
            lambda p: p["users"]["bob"].pop("default_account"),
            "slurm:accounting:users:bob:default_account: required",
        ),
        (
            lambda p: p["users"]["bob"]["accounts"].update(biology={}),
            "slurm:accounting:users:bob:accounts:biology: account 'biology' is not defined",
        ),
        (
            lambda p: p["accounts"]["physics"].update(default_qos="low"),
            "slurm:accounting:accounts:physics:default_qos: 'low' is not in this association's",
        ),
        (
            lambda p: p["qos"]["high"].update(preempt=["ghost"]),
            "slurm:accounting:qos:high:preempt: QOS 'ghost' is not defined",
        ),
        (
            lambda p: p["accounts"].update(root={}),
            "slurm:accounting:accounts:root: the root account is the cluster's own",
        ),
        (
            lambda p: p["accounts"]["science"].update(parent="physics"),
            "slurm:accounting:accounts:science:parent: the parents form a loop",
        ),
        (
            lambda p: p["qos"]["low"]["limits"].update(GrpJobs=True),
            "slurm:accounting:qos:low:limits:GrpJobs: expected a non-negative integer",
        ),
        (
            lambda p: p["qos"]["low"]["limits"].update(GrpJobs=-3),
            "slurm:accounting:qos:low:limits:GrpJobs: expected a non-negative integer",
        ),
        (lambda p: p.update(purge="yes"), "slurm:accounting:purge: expected true or false"),
    ],
)
def test_bad_pillar_names_the_key(mutate, key):
    data = _pillar()
    mutate(data)
    with pytest.raises(pillar.PillarError) as err:
        pillar.validate(data)
    assert key in str(err.value)


def test_every_problem_is_reported_at_once():
    data = _pillar()
    data["accounts"]["physics"]["parent"] = "nowhere"
    data["users"]["alice"]["qos"] = ["gold"]
    with pytest.raises(pillar.PillarError) as err:
        pillar.validate(data)
    assert len(err.value.errors) == 2


def test_bad_pillar_fails_before_any_sacctmgr_process():
    fake = FakeSacctmgr()
    with pytest.raises(pillar.PillarError):
        engine.sync({"accounts": {"a": {"parent": "b"}}}, CLUSTER, fake)
    assert fake.calls == []


def test_values_normal_forms():
    assert values.parse("minutes", "1-00:00:00", "k") == 1440
    assert values.parse("minutes", "2:30", "k") == 3  # 2 min 30 s rounds up, like Slurm
    assert values.parse("minutes", 90, "k") == 90
    assert values.parse("minutes", "1-12", "k") == 36 * 60
    assert values.parse("tres", "cpu=4,mem=10G,gres/gpu:a100=2", "k") == {
        "cpu": 4,
        "mem": 10240,
        "gres/gpu:a100": 2,
    }
    assert values.parse("seconds", "00:05:00", "k") == 300
    assert values.parse("seconds", 120, "k") == 120
    assert values.parse("qoslist", ["b", "a", "a"], "k") == ("a", "b")
    assert values.parse("flags", ["noreserve", "DenyOnLimit"], "k") == ("DenyOnLimit", "NoReserve")
    assert values.render("tres", {"cpu": 4}, {"cpu": 2, "mem": 5}) == "cpu=4,mem=-1"


def test_other_accounting_keys_are_left_to_the_dbd_side():
    # slurm:accounting also holds the database settings (slice 1); they are not refused here
    assert pillar.validate({"enabled": True, "storage_host": "db1", "users": {}})["users"] == {}


# ------------------------------------------------------------------------ parsing
# Real sacctmgr 22.05.8 output (tests/unit/sacctmgr_captured.py says how it was captured).


def _outputs():
    outputs = dict(captured.APPLIED)
    outputs["assocs"] += captured.PARTITION_ASSOC_LINE
    return outputs


def captured_tres():
    return [line.replace("|", "/").rstrip("/") for line in captured.EMPTY["tres"].splitlines()]


def test_format_field_counts_match_the_captures():
    for kind, fields in (
        ("tres", current.TRES_FORMAT),
        ("qos", current.QOS_FORMAT),
        ("accounts", current.ACCOUNT_FORMAT),
        ("users", current.USER_FORMAT),
        ("assocs", current.ASSOC_FORMAT),
    ):
        for line in captured.APPLIED[kind].splitlines():
            assert line.count("|") == len(fields) - 1, (kind, line)


def test_parse_real_output():
    model = current.parse(_outputs(), captured.CLUSTER)
    assert model["tres"] == ["billing", "cpu", "energy", "fs/disk", "mem", "node", "pages", "vmem"]
    assert model["qos"]["high"]["MaxWall"] == 2880
    assert model["qos"]["high"]["MaxTRESPerUser"] == {"cpu": 64}
    assert model["qos"]["high"]["Preempt"] == ("low",)
    assert model["qos"]["high"]["Flags"] == ("DenyOnLimit",)
    assert model["qos"]["high"]["Description"] == "high priority"  # sacctmgr lowered it
    assert model["qos"]["low"]["GrpTRES"] == {"cpu": 512, "mem": 1024 * 1024}  # "mem=1T"
    assert model["qos"]["normal"]["PreemptMode"] == ("cluster",)
    assert model["accounts"]["root"]["parent"] is None
    assert model["accounts"]["physics"]["parent"] == "science"
    physics = model["accounts"]["physics"]["assoc"]
    assert physics["GrpTRES"] == {"cpu": 256, "node": 8}
    assert physics["MaxWall"] == 1440 and physics["MaxJobs"] == 20
    assert physics["QOS"] == ("high", "normal") and physics["DefaultQOS"] == "normal"
    # WOPLimits: a user association shows only what is set on it, not its account's
    assert model["users"]["alice"]["assocs"]["physics"]["MaxJobs"] is None
    assert model["users"]["alice"]["assocs"]["physics"]["QOS"] == ()
    assert model["users"]["bob"]["assocs"]["physics"]["MaxJobs"] == 5
    assert model["users"]["alice"]["DefaultAccount"] == "physics"
    assert model["users"]["bob"]["AdminLevel"] == "Operator"
    assert model["partition_assocs"] == [["alice", "physics", "gpu"]]
    # the captured state is the captured pillar: nothing to do
    wanted = pillar.validate(captured.PILLAR)
    assert diff.plan(wanted, model, captured.CLUSTER)["commands"] == []


def test_the_pillar_applied_from_empty_writes_what_ran_on_slurmdbd():
    model = current.parse(captured.EMPTY, captured.CLUSTER)
    wanted = pillar.validate(captured.PILLAR)
    planned = diff.plan(wanted, model, captured.CLUSTER)
    assert ["\n".join(p["lines"]) + "\n" for p in planned["commands"]] == captured.WRITES
    # and the argv each batch went to (the load file by sacctmgr's `load`)
    fake = FakeSacctmgr(cluster=captured.CLUSTER, tres=captured_tres())
    engine.sync(captured.PILLAR, captured.CLUSTER, fake)
    assert [c["argv"] for c in fake.calls if c["stdin"] is not None] == captured.WRITE_ARGVS
    # without the load file: the `add` lines that ran first (both left the same APPLIED)
    lines = diff.plan(wanted, model, captured.CLUSTER, bulk=False)
    assert ["\n".join(p["lines"]) + "\n" for p in lines["commands"]] == captured.WRITES_LINES


def test_the_fake_prints_what_real_sacctmgr_printed():
    """The fake is anchored to reality: from the same empty database, the same pillar
    leaves it printing what the real sacctmgr printed (association rows in any order:
    the real one prints the tree, the fake in creation order)."""
    fake = FakeSacctmgr(cluster=captured.CLUSTER, tres=captured_tres())
    before = {kind: fake(argv) for kind, argv in current.read_commands(fake.cluster).items()}
    assert before == captured.EMPTY
    engine.sync(captured.PILLAR, captured.CLUSTER, fake)
    after = {kind: fake(argv) for kind, argv in current.read_commands(fake.cluster).items()}
    assert sorted(after.pop("assocs").splitlines()) == sorted(
        captured.APPLIED["assocs"].splitlines()
    )
    assert after == {k: v for k, v in captured.APPLIED.items() if k != "assocs"}


def test_read_commands_one_per_kind_with_woplimits():
    argvs = current.read_commands(CLUSTER)
    assert set(argvs) == {"tres", "qos", "accounts", "users", "assocs"}
    assert all(argv[:4] == ["sacctmgr", "-n", "-P", "show"] for argv in argvs.values())
    assert "WOPLimits" in argvs["assocs"] and f"cluster={CLUSTER}" in argvs["assocs"]


def test_a_tres_slurmdbd_does_not_know_fails_before_any_write():
    fake = FakeSacctmgr(tres=captured_tres())  # no gres/gpu: no AccountingStorageTRES
    with pytest.raises(
        pillar.PillarError,
        match="slurm:accounting:accounts:physics:limits:GrpTRES: gres/gpu is not a TRES",
    ):
        engine.sync(_pillar(), CLUSTER, fake)
    assert _writes(fake) == []


def test_clearing_a_qos_list_writes_an_empty_value():
    # sacctmgr 22.05 refuses QOS='' and QOS=-1; QOS= clears the list
    fake = FakeSacctmgr()
    engine.sync(_pillar(), CLUSTER, fake)
    data = _pillar()
    data["accounts"]["physics"]["qos"] = []
    del data["accounts"]["physics"]["default_qos"]
    result = engine.sync(data, CLUSTER, fake)
    assert result["commands"][0]["lines"] == [
        "modify account where name=physics cluster=cluster set QOS="
    ]
    assert fake.assoc("physics")["QOS"] == ()


def test_purging_a_user_with_several_associations_removes_the_others_first():
    fake = FakeSacctmgr()
    engine.sync(_pillar(), CLUSTER, fake)
    data = _pillar(purge=True)
    del data["users"]["bob"]
    result = engine.sync(data, CLUSTER, fake)
    assert result["commands"][-1]["lines"][:2] == [
        "delete user where name=bob account=physics cluster=cluster",
        "delete user where name=bob cluster=cluster",
    ]
    assert "bob" not in fake.users


def test_a_leftover_user_record_gets_its_admin_level():
    # the user record outlived its associations: `add user` ignores AdminLevel then
    fake = FakeSacctmgr()
    fake.users["bob"] = {"DefaultAccount": "", "AdminLevel": "None"}
    planned = engine.sync(_pillar(), CLUSTER, fake, test=True)
    users = next(p["lines"] for p in planned["commands"] if p["phase"] == "users")
    assert "modify user where name=bob set AdminLevel=Operator" in users


def test_a_shifted_line_stops_the_parse():  # T8
    outputs = _outputs()
    outputs["accounts"] += "evil|has a | pipe|org\n"
    with pytest.raises(current.ParseError, match="line 5: 4 fields where 3"):
        current.parse(outputs, CLUSTER)


# ------------------------------------------------------------------------ diff + apply
def test_apply_from_empty_then_second_run_is_a_no_op():
    fake = FakeSacctmgr()
    first = engine.sync(_pillar(), CLUSTER, fake)
    assert first["applied"]
    assert first["changes"]["qos"]["added"] == ["high", "low"]
    assert first["changes"]["accounts"]["added"] == ["science", "chemistry", "physics"]
    assert first["changes"]["users"]["added"] == ["alice", "bob"]
    assert fake.assoc("physics")["ParentName"] == "science"
    assert fake.assoc("physics", "bob")["MaxJobs"] == 5
    assert fake.users["bob"] == {"DefaultAccount": "chemistry", "AdminLevel": "Operator"}
    assert fake.qos["high"]["Preempt"] == ("low",)
    calls = len(fake.calls)
    second = engine.sync(_pillar(), CLUSTER, fake)
    assert second["commands"] == [] and second["drift"] == []
    assert diff.summary(second["changes"])[1] == 0
    assert len(fake.calls) - calls == 5  # the five reads, no write


def test_drift_is_reported_by_test_mode_and_corrected_by_apply():
    fake = FakeSacctmgr()
    engine.sync(_pillar(), CLUSTER, fake)
    fake.qos["high"]["MaxJobsPerUser"] = 4  # by hand
    fake.assoc("physics")["GrpTRES"] = {"cpu": 1000, "mem": 10}
    fake.accounts["science"]["Description"] = "changed by hand"
    before = len(_writes(fake))
    dry = engine.sync(_pillar(), CLUSTER, fake, test=True)
    assert len(_writes(fake)) == before  # T: test mode writes nothing
    drift = {(d["kind"], d["name"], d["field"]): (d["cluster"], d["pillar"]) for d in dry["drift"]}
    assert drift[("qos", "high", "MaxJobsPerUser")] == (4, 1)
    assert drift[("accounts", "physics", "GrpTRES")] == ("cpu=1000,mem=10", "cpu=256,gres/gpu=8")
    assert drift[("accounts", "science", "Description")] == ("changed by hand", "Science")
    lines = [line for phase in dry["commands"] for line in phase["lines"]]
    assert (
        "modify account where name=physics cluster=cluster set GrpTRES=cpu=256,gres/gpu=8,mem=-1"
        in lines
    )
    engine.sync(_pillar(), CLUSTER, fake)
    assert fake.qos["high"]["MaxJobsPerUser"] == 1
    assert fake.assoc("physics")["GrpTRES"] == {"cpu": 256, "gres/gpu": 8}
    assert engine.sync(_pillar(), CLUSTER, fake)["drift"] == []


def test_a_null_limit_clears_it_and_an_absent_one_is_not_managed():
    fake = FakeSacctmgr()
    engine.sync(_pillar(), CLUSTER, fake)
    fake.assoc("chemistry")["MaxJobs"] = 7  # chemistry's pillar says nothing about MaxJobs
    assert engine.sync(_pillar(), CLUSTER, fake, test=True)["drift"] == []
    data = _pillar()
    data["accounts"]["chemistry"]["limits"] = {"MaxJobs": None}
    result = engine.sync(data, CLUSTER, fake)
    assert result["changes"]["accounts"]["modified"]["chemistry"]["MaxJobs"] == {
        "old": 7,
        "new": None,
    }
    assert fake.assoc("chemistry")["MaxJobs"] is None


def test_unmanaged_entities_are_reported_and_left_without_purge():
    fake = FakeSacctmgr()
    engine.sync(_pillar(), CLUSTER, fake)
    fake(
        "sacctmgr -i".split(),
        "add qos name=legacy\nadd account name=old cluster=cluster\n"
        "add user name=mallory cluster=cluster account=old\n",
    )
    result = engine.sync(_pillar(), CLUSTER, fake)
    assert result["unmanaged"]["qos"] == ["legacy"]
    assert result["unmanaged"]["accounts"] == ["old"]
    assert result["unmanaged"]["users"] == ["mallory"]
    assert result["commands"] == []
    assert "legacy" in fake.qos and fake.assoc("old", "mallory")


def test_purge_removes_unmanaged_in_reverse_order_but_never_protected():
    fake = FakeSacctmgr()
    engine.sync(_pillar(), CLUSTER, fake)
    fake(
        "sacctmgr -i".split(),
        "add qos name=legacy\nadd account name=old cluster=cluster\n"
        "add account name=oldchild cluster=cluster parent=old\n"
        "add user name=mallory cluster=cluster account=oldchild\n"
        "add user name=trent cluster=cluster account=old\n"
        "add account name=kept cluster=cluster\n",
    )
    result = engine.sync(_pillar(purge=True), CLUSTER, fake)
    assert result["changes"]["users"]["removed"] == ["mallory", "trent"]
    assert result["changes"]["accounts"]["removed"] == ["oldchild", "kept", "old"]
    assert result["changes"]["qos"]["removed"] == ["legacy"]
    removals = [p for p in result["commands"] if p["phase"] == "removals"][0]["lines"]
    assert removals[0].startswith("delete user") and removals[-1].startswith("delete qos")
    assert removals.index("delete account where name=oldchild cluster=cluster") < removals.index(
        "delete account where name=kept,old cluster=cluster"
    )
    # T6: root account, root user, normal QOS remain
    assert fake.assoc("root") and fake.assoc("root", "root") and "normal" in fake.qos
    assert "old" not in fake.accounts and "legacy" not in fake.qos
    assert engine.sync(_pillar(purge=True), CLUSTER, fake)["commands"] == []


def test_purge_keeps_an_account_that_stays_a_users_default():
    fake = FakeSacctmgr()
    engine.sync(_pillar(), CLUSTER, fake)
    fake(
        "sacctmgr -i".split(),
        "add account name=house cluster=cluster\n"
        "modify user where name=root cluster=cluster set DefaultAccount=root\n"
        "add user name=root cluster=cluster account=house\n"
        "modify user where name=root cluster=cluster set DefaultAccount=house\n",
    )
    result = engine.sync(_pillar(purge=True), CLUSTER, fake, test=True)
    assert {"kind": "accounts", "name": "house", "why": "a user's default account"} in result[
        "kept"
    ]
    assert "house" not in result["changes"]["accounts"]["removed"]
    assert all(
        "root" not in line.split("name=")[-1].split()[0].split(",")
        for p in result["commands"]
        for line in p["lines"]
        if line.startswith("delete")
    )


def test_a_managed_users_extra_association_is_removed_after_the_default_moves():
    fake = FakeSacctmgr()
    engine.sync(_pillar(), CLUSTER, fake)
    data = _pillar()
    data["users"]["bob"] = {"accounts": ["physics"]}  # chemistry (bob's default) goes
    result = engine.sync(data, CLUSTER, fake)
    assert result["changes"]["users"]["modified"]["bob"]["associations"] == {
        "added": [],
        "removed": ["chemistry"],
    }
    assert fake.users["bob"]["DefaultAccount"] == "physics"
    assert fake.assoc("chemistry", "bob") is None


def test_a_failing_load_commits_nothing_and_stops_the_rest():
    fake = FakeSacctmgr()
    fake.fail_on = "Account - 'physics'"
    with pytest.raises(engine.ApplyError, match="phase 'create'") as err:
        engine.sync(_pillar(), CLUSTER, fake)
    assert err.value.result["phases_done"] == ["qos"]
    # all or nothing, as sacctmgr's load: not even the lines before the bad one
    assert "science" not in fake.accounts and "alice" not in fake.users


def test_a_failing_line_phase_stops_the_rest():
    fake = FakeSacctmgr()
    engine.sync(_pillar(), CLUSTER, fake)
    data = _pillar()
    data["accounts"]["physics"]["fairshare"] = 7
    data["users"]["alice"]["admin_level"] = "Operator"
    fake.fail_on = "modify account"
    with pytest.raises(engine.ApplyError, match="phase 'accounts'") as err:
        engine.sync(data, CLUSTER, fake)
    assert err.value.result["phases_done"] == []
    assert fake.users["alice"]["AdminLevel"] == "None"  # the users phase never ran


def test_reparenting_follows_the_wanted_tree():
    fake = FakeSacctmgr()
    data = {"accounts": {"a": {}, "b": {"parent": "a"}}}
    engine.sync(data, CLUSTER, fake)
    flipped = {"accounts": {"b": {}, "a": {"parent": "b"}}}
    result = engine.sync(flipped, CLUSTER, fake)
    lines = result["commands"][0]["lines"]
    assert lines == [
        "modify account where name=b cluster=cluster set Parent=root",
        "modify account where name=a cluster=cluster set Parent=b",
    ]
    assert fake.assoc("a")["ParentName"] == "b"


# ------------------------------------------------------------------------ batching
def _big(accounts=100, users=1000, qos=10):
    return {
        "qos": {f"q{i}": {"priority": i, "limits": {"MaxJobsPerUser": i + 1}} for i in range(qos)},
        "accounts": {
            f"acct{i:03d}": {
                "parent": "root" if i < 10 else f"acct{i % 10:03d}",
                "description": f"Account {i}",
                "fairshare": 10,
                "qos": ["normal", f"q{i % qos}"],
                "limits": {"GrpTRES": f"cpu={64 + i}", "MaxWall": "1-00:00:00"},
            }
            for i in range(accounts)
        },
        "users": {f"user{i:04d}": {"accounts": [f"acct{i % accounts:03d}"]} for i in range(users)},
    }


def test_a_thousand_users_take_a_bounded_number_of_processes():
    fake = FakeSacctmgr()
    result = engine.sync(_big(), CLUSTER, fake)
    writes = _writes(fake)
    # 5 reads, the QOS lines, ONE load file for every account and user, 5 reads to prove
    # convergence
    assert [c["argv"] for c in writes] == [engine.APPLY, engine.LOAD]
    assert result["processes"] == len(fake.calls) == 12
    assert len(fake.users) == 1001 and len(fake.accounts) == 101 and len(fake.qos) == 11
    load = writes[1]["stdin"].splitlines()
    assert len([line for line in load if line.startswith("User - ")]) == 1000
    assert len([line for line in load if line.startswith("Account - ")]) == 100
    assert all(diff.check_load_line(line) == line for line in load)
    again = engine.sync(_big(), CLUSTER, fake)
    assert again["processes"] == 5 and again["commands"] == []


def test_without_the_load_file_a_thousand_users_are_a_hundred_lines():
    fake = FakeSacctmgr()
    model = current.read(fake, CLUSTER)
    result = diff.plan(pillar.validate(_big()), model, CLUSTER, bulk=False)
    phases = {p["phase"]: p["lines"] for p in result["commands"]}
    assert list(phases) == ["qos", "accounts", "users"]
    assert len(phases["users"]) <= 100 and len(phases["accounts"]) == 100
    assert all(len(line) <= diff.LINE_MAX for lines in phases.values() for line in lines)


def test_long_name_lists_are_split_into_lines():
    fake = FakeSacctmgr()
    data = {
        "accounts": {"a": {}},
        "users": {f"user{i:05d}": {"accounts": ["a"]} for i in range(3000)},
    }
    model = current.read(fake, CLUSTER)
    result = diff.plan(pillar.validate(data), model, CLUSTER, bulk=False)
    users = [p for p in result["commands"] if p["phase"] == "users"][0]["lines"]
    assert 1 < len(users) <= 12
    assert sum(line.count("user") - 1 for line in users) == 3000  # every name, once
    assert all(len(line) <= diff.LINE_MAX for line in users)


def test_what_a_load_file_cannot_say_goes_by_lines():
    """A typed GRES (``:`` separates a load line's options), a user record with
    associations elsewhere, and what hangs under an account that went by lines: all `add`
    lines, after the load file. An account record without an association here is loaded
    (its text set by the file)."""
    fake = FakeSacctmgr()
    fake.accounts["old"] = {"Description": "stale", "Organization": "old"}
    fake.users["ghost"] = {"DefaultAccount": "plain", "AdminLevel": "None"}
    data = {
        "accounts": {
            "gpu": {"limits": {"GrpTRES": "gres/gpu:a100=2"}},
            "sub": {"parent": "gpu"},
            "old": {"description": "Old one"},
            "plain": {"description": "Plain: one"},
        },
        "users": {
            "carol": {"accounts": ["sub"]},
            "dave": {"accounts": ["plain", "gpu"], "default_account": "plain"},
            "ghost": {"accounts": ["plain"]},
            "erin": {"accounts": ["plain"]},
        },
    }
    fake.tres.append("gres/gpu:a100")
    result = engine.sync(data, CLUSTER, fake)
    phases = {p["phase"]: p["lines"] for p in result["commands"]}
    assert phases["create"] == [
        f"Cluster - '{CLUSTER}'",
        "Parent - 'root'",
        "Account - 'old':Description=\"Old one\"",
        "Account - 'plain':Description=\"Plain: one\"",
        "Parent - 'plain'",
        "User - 'erin':DefaultAccount=plain",
    ]
    assert fake.accounts["old"]["Description"] == "old one"
    made_by_lines = " ".join(phases["accounts"] + phases["users"])
    for name in ("gpu", "sub", "carol", "dave", "ghost"):
        assert re.search(rf"name=([a-z0-9,]*,)?{name}[ ,]", made_by_lines), name
    assert fake.assoc("sub")["ParentName"] == "gpu"
    assert fake.users["dave"]["DefaultAccount"] == "plain"


# ------------------------------------------------------------------------ threats
HOSTILE = [
    # T1 newline -> a second command on stdin
    ("users", "alice\ndelete account physics", "is not a safe name"),
    ("text", "Physics\ndelete account science", "has a character sacctmgr could misread"),
    # T2 comma -> two entities
    ("users", "alice,root", "is not a safe name"),
    ("accounts", "tmp,root", "is not a safe name"),
    # T3 space / '=' -> another option
    ("accounts", "a cluster=other", "is not a safe name"),
    ("text", "x parent=root", "has a character sacctmgr could misread"),
    # T4 quotes
    ("text", 'Physics" parent="root', "has a character sacctmgr could misread"),
    ("text", "it's", "has a character sacctmgr could misread"),
    ("qos", "hi'gh", "is not a safe name"),
    # T5 case folding onto a protected name
    ("accounts", "Root", "write 'root'"),
    ("users", "Alice", "write 'alice'"),
    # T9 lengths
    ("users", "u" * 33, "a name of 1-32 characters"),
    ("text", "x" * 201, "text of 1-200 characters"),
    # '#', '!!' and leading '-' cannot start a name
    ("accounts", "#comment", "is not a safe name"),
    ("accounts", "-1", "is not a safe name"),
]


@pytest.mark.parametrize(("where", "value", "message"), HOSTILE)
def test_hostile_values_are_refused_before_any_process(where, value, message):
    data = {"accounts": {"a": {}}}
    if where == "users":
        data["users"] = {value: {"accounts": ["a"]}}
    elif where == "accounts":
        data["accounts"][value] = {}
    elif where == "qos":
        data["qos"] = {value: {}}
    else:
        data["accounts"]["a"]["description"] = value
    fake = FakeSacctmgr()
    with pytest.raises(pillar.PillarError, match=message):
        engine.sync(data, CLUSTER, fake)
    assert fake.calls == []


@pytest.mark.parametrize(
    "limit",
    [
        "cpu=abc",
        "gpu:x=1",
        "cpu=1\nmem=2",
        "cpu=-1",
        "cpu=4 parent=root",
        "cpu=1,cpu=2",
        "gres/gpu=1.5",
        "mem=10X",
        ",".join(f"gres/g{i}=1" for i in range(40)),
    ],
)
def test_hostile_tres_is_refused(limit):  # T1, T3, T9, T10
    with pytest.raises(pillar.PillarError, match="slurm:accounting:accounts:a:limits:GrpTRES"):
        pillar.validate({"accounts": {"a": {"limits": {"GrpTRES": limit}}}})


def test_counts_are_bounded():  # T9
    with pytest.raises(pillar.PillarError, match="at most 1000 entries"):
        pillar.validate({"qos": {f"q{i}": {} for i in range(1001)}})
    with pytest.raises(pillar.PillarError, match="at most 4294967294"):
        pillar.validate({"accounts": {"a": {"limits": {"MaxJobs": 2**40}}}})


@pytest.mark.parametrize(
    "line",
    [
        "add user name=a\ndelete account name=b",
        'add account name=a Description="x" y"',
        "delete user where name=a,b cluster=c ; rm",
        "add account name=a Description='x'",
    ],
)
def test_the_last_check_refuses_a_bad_line(line):  # T1, T3, T4: defence in depth
    with pytest.raises(diff.UnsafeCommand):
        diff.check_line(line)


@pytest.mark.parametrize(
    "line",
    [
        "User - 'a'\nAccount - 'b'",  # a second line
        "User - 'a':MaxJobs=1\x00",
        "Account - 'a,b'",  # two names
        "Account - 'a':Description=\"x:y",  # unbalanced quote
        "Account - 'a':Description='x'",  # single quotes are not ours
        "Account - 'a'::MaxJobs=1",  # an empty option
        "Account - 'a':MaxJobs=1 Parent=root",  # a space outside quotes
        "Coordinator - 'a'",  # a kind we never write
        "Cluster - 'c':GrpTRES=cpu=1",  # would change the cluster's root association
        "Parent - 'root':MaxJobs=1",
        "User - 'u':Coordinator=root",  # keys the plan never writes
        "User - 'u':Partition=debug",
        "Account - 'a':RawUsage=0",
        "Account - 'a':b",
        "Account - 'a':Description=\"caf\u00e9\"",  # not ASCII
        "Account - 'a'" + ":MaxJobs=1" * 101,
        "Account - 'a':Description=\"" + "x" * 3600 + '"',
    ],
)
def test_the_last_check_refuses_a_bad_load_line(line):  # T1, T3, T4 for the load file
    with pytest.raises(diff.UnsafeCommand):
        diff.check_load_line(line)


@pytest.mark.parametrize(
    "lines",
    [
        [],
        ["Parent - 'root'", "Account - 'a'"],  # no Cluster line first
        ["Cluster - 'other'", "Parent - 'root'", "Account - 'a'"],
        ["Cluster - 'cluster'", "Parent - 'root'", "Cluster - 'other'", "Account - 'a'"],
    ],
)
def test_a_load_file_names_our_cluster_once_first(lines):  # T11
    with pytest.raises(diff.UnsafeCommand):
        diff.check_load_file(lines, CLUSTER)


def test_a_big_first_run_is_split_into_load_files_in_order():
    """sacctmgr's load is all or nothing and slower than linear in a file's size: files of
    at most LOAD_ENTRIES entities, run in order, each starting with the cluster and the
    section's parent again; a later file's parents are made by an earlier one."""
    fake = FakeSacctmgr()
    data = {
        "accounts": {f"a{i}": {"parent": "root" if i == 0 else f"a{i - 1}"} for i in range(5)},
        "users": {f"u{i:05d}": {"accounts": [f"a{i % 5}"]} for i in range(4500)},
    }
    result = engine.sync(data, CLUSTER, fake)
    files = [p["lines"] for p in result["commands"] if p["phase"] == diff.LOAD_PHASE]
    assert len(files) == 3
    for lines in files:
        assert lines[0] == f"Cluster - '{CLUSTER}'" and lines[1].startswith("Parent - ")
        assert len([line for line in lines if line.startswith(("User", "Account"))]) <= 2000
    assert sum(line.startswith("User - ") for lines in files for line in lines) == 4500
    assert len(fake.users) == 4501 and fake.assoc("a4")["ParentName"] == "a3"
    loads = [c for c in fake.calls if c["argv"] == engine.LOAD]
    assert [c["stdin"].splitlines() for c in loads] == files


def test_a_line_too_long_for_sacctmgr_is_a_pillar_error_before_any_write():
    licenses = [f"license/l{i:02d}{'x' * 40}" for i in range(18)]
    fake = FakeSacctmgr(tres=[*FakeSacctmgr.KNOWN_TRES, *licenses])
    limits = {
        name: ",".join(f"{tres}=1" for tres in licenses)  # 900 characters each
        for name in ("GrpTRES", "MaxTRES", "GrpTRESMins", "MaxTRESMins")
    }
    with pytest.raises(pillar.PillarError, match="slurm:accounting: refusing"):
        engine.sync({"accounts": {"a": {"limits": limits}}}, CLUSTER, fake)
    assert _writes(fake) == []


@pytest.mark.parametrize("value", ["\u00b2", "cpu=\u00b2", "\u0663"])
def test_digits_are_ascii_digits(value):  # T10: "²".isdigit() but int("²") raises
    key = "GrpTRES" if "=" in value else "MaxJobs"
    with pytest.raises(pillar.PillarError, match=f"limits:{key}"):
        pillar.validate({"accounts": {"a": {"limits": {key: value}}}})


def test_a_qos_list_is_bounded_in_characters():
    qos = {f"q{i:03d}{'x' * 56}": {} for i in range(40)}
    with pytest.raises(pillar.PillarError, match="longer than 1000 characters"):
        pillar.validate({"qos": qos, "accounts": {"a": {"qos": sorted(qos)}}})


@pytest.mark.parametrize("levels, ok", [(pillar.MAX_DEPTH, True), (pillar.MAX_DEPTH + 1, False)])
def test_the_tree_depth_bound_is_what_the_message_says(levels, ok):
    accounts = {f"a{i}": {"parent": "root" if i == 0 else f"a{i - 1}"} for i in range(levels)}
    if ok:
        pillar.validate({"accounts": accounts})
    else:
        with pytest.raises(pillar.PillarError, match=f"deeper than {pillar.MAX_DEPTH}"):
            pillar.validate({"accounts": accounts})


def test_a_row_separator_inside_a_field_forges_no_row():  # T8: only "\n" ends a row
    """str.splitlines() would cut this row in two at U+2028, the second one a made-up
    account "ghost"; read on "\n" only, it is one row with too many fields: stop."""
    fake = FakeSacctmgr()
    fake.accounts["root"]["Organization"] = "dept\u2028ghost|forged|org"
    with pytest.raises(current.ParseError, match="5 fields where 3"):
        current.read(fake, CLUSTER)
    fake.accounts["root"]["Organization"] = "dept\u2028ghost"  # no '|': one odd value
    assert "ghost" not in current.read(fake, CLUSTER)["account_records"]


def test_unsafe_names_from_the_cluster_never_reach_a_command():  # T7
    fake = FakeSacctmgr()
    engine.sync({"accounts": {"a": {}}}, CLUSTER, fake)
    fake.users["Evil User"] = {"DefaultAccount": "a", "AdminLevel": "None"}
    fake.assocs.append(fake._assoc("a", "Evil User", ""))  # noqa: SLF001 -- hand-made row
    result = engine.sync({"accounts": {"a": {}}, "purge": True}, CLUSTER, fake)
    assert result["unmanaged"]["users"] == ["Evil User"]
    assert {
        "kind": "users",
        "name": "Evil User",
        "why": "name sacctmgr cannot be given safely",
    } in result["kept"]
    assert all("Evil" not in (c["stdin"] or "") for c in fake.calls)


def test_every_written_word_is_checked():
    fake = FakeSacctmgr()
    result = engine.sync(_pillar(), CLUSTER, fake, test=True)
    for phase in result["commands"]:
        check = diff.check_load_line if phase["phase"] == diff.LOAD_PHASE else diff.check_line
        for line in phase["lines"]:
            assert check(line) == line
    assert "Account - 'science':Description=\"Science\":" in (
        "\n".join(result["commands"][1]["lines"]) + " "
    )


def test_qos_flags_and_per_job_tres_are_written_unambiguously():
    fake = FakeSacctmgr()
    data = {"qos": {"q": {"flags": ["NoReserve", "DenyOnLimit"], "limits": {"MaxTRES": "cpu=8"}}}}
    first = engine.sync(data, CLUSTER, fake)
    assert first["commands"][0]["lines"] == [
        "add qos name=q Flags=DenyOnLimit,NoReserve MaxTRESPerJob=cpu=8"
    ]
    data["qos"]["q"]["flags"] = []
    second = engine.sync(data, CLUSTER, fake)
    assert second["commands"][0]["lines"] == [
        "modify qos where name=q set Flags-=DenyOnLimit,NoReserve"
    ]
    assert fake.qos["q"]["Flags"] == ()


@pytest.mark.parametrize("cluster", ["tux WOPLimits", "tux,other", "Tux", "tux\nadd qos name=x"])
def test_a_hostile_cluster_name_is_refused_before_any_read(cluster):  # T1-T3, T5
    fake = FakeSacctmgr()
    with pytest.raises(pillar.PillarError, match="slurm:cluster_name"):
        engine.sync({}, cluster, fake)
    assert fake.calls == []


def test_a_write_sacctmgr_accepted_but_did_not_make_is_an_error():
    fake = FakeSacctmgr()
    engine.sync(_pillar(), CLUSTER, fake)
    fake.qos["high"]["Priority"] = 5
    fake._modify_qos = lambda where, sets: None  # noqa: SLF001 -- says yes, does nothing
    with pytest.raises(engine.ApplyError, match="still differs from pillar: modify qos"):
        engine.sync(_pillar(), CLUSTER, fake)


def test_a_user_made_between_the_read_and_the_load_gets_pillars_values():
    """The race the load file has (someone's script adds user X after our read): real load
    modifies an existing user (DefaultAccount, AdminLevel) instead of failing, as the fake
    does; X then holds what pillar says, and the re-read proves it."""
    fake = FakeSacctmgr()
    read = current.read

    def racing_read(run, cluster):
        model = read(run, cluster)
        if "bob" not in fake.users:  # the first read: bob appears right after it
            fake("sacctmgr -i add account name=other cluster=cluster".split())
            fake("sacctmgr -i add user name=bob cluster=cluster account=other".split())
            fake("sacctmgr -i modify user where name=bob set AdminLevel=Operator".split())
        return model

    data = {"accounts": {"other": {}, "physics": {}}, "users": {"bob": {"accounts": ["physics"]}}}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(current, "read", racing_read)
        with pytest.raises(engine.ApplyError, match="still differs"):
            engine.sync(data, CLUSTER, fake)
    # load set bob's default to physics; the re-read then sees his extra association (and
    # the admin level pillar does not manage): reported, the next run removes it
    assert fake.users["bob"]["DefaultAccount"] == "physics"
    assert engine.sync(data, CLUSTER, fake)["commands"]
    assert engine.sync(data, CLUSTER, fake)["commands"] == []
