"""salt_ext.lib.ops.accounting: the dbd rows of slurm.status and the causes slurm.diagnose
names for accounting, from what slurm_dbd.probe reports."""

from salt_ext.lib.node import settings
from salt_ext.lib.ops import accounting

CFG = settings.validate(
    {"controller": "ctl", "cluster_name": "c1", "accounting": {"enabled": True}}
)


def health(**states):
    return {name: {"state": state, "evidence": f"{name} {state}"} for name, state in states.items()}


def probe(dbd=None, clusters=("c1",), reach=True, log=(), ctld_log=()):
    result = {
        "enabled": True,
        "is_dbd_host": True,
        "health": health(**(dbd or {"mariadb": "running", "slurmdbd": "running"})),
        "slurmdbd_log": list(log),
        "reach": {"ok": reach, "detail": "ctl:6819 answers" if reach else "ctl:6819: refused"},
        "slurmctld_log": list(ctld_log),
    }
    if clusters is None:
        result["clusters_error"] = "sacctmgr: error"
    else:
        result["clusters"] = list(clusters)
    return result


def causes(**kwargs):
    one = probe(**kwargs)
    return [c["cause"] for c in accounting.causes(CFG, one, one)]


def test_healthy_accounting_has_no_cause():
    assert causes() == []


def test_slurmdbd_down_is_named_once_and_not_as_unreachable():
    found = causes(
        dbd={"mariadb": "running", "slurmdbd": "stopped"},
        clusters=None,
        reach=False,
        ctld_log=["error: slurm_persist_conn_open_without_init: failed to open persistent"],
    )
    assert found == [
        "slurmdbd is stopped on ctl",
        "slurmctld cannot reach slurmdbd (it queues job records meanwhile)",
    ]


def test_mariadb_down_is_named():
    found = causes(
        dbd={"mariadb": "stopped", "slurmdbd": "running"},
        clusters=None,
        log=["error: mysql_real_connect failed: 2002 Can't connect to local server"],
    )
    assert found == ["MariaDB is stopped on ctl"]


def test_a_wrong_password_is_named_from_slurmdbds_log():
    found = causes(
        dbd={"mariadb": "running", "slurmdbd": "stopped"},
        clusters=None,
        reach=False,
        log=["error: mysql_real_connect failed: 1045 Access denied for user 'slurm'@'localhost'"],
    )
    assert found[0] == "slurmdbd: the database refuses its user (wrong password?)"
    assert "slurmdbd is stopped on ctl" in found


def test_old_log_lines_do_not_count_when_slurmdbd_answers_from_the_database():
    assert causes(log=["error: mysql_real_connect failed: 2002 Can't connect"]) == []


def test_an_unregistered_cluster_is_named():
    assert causes(clusters=["other"]) == ["cluster c1 is not registered in slurmdbd"]


def test_the_controller_that_cannot_reach_a_running_slurmdbd():
    assert causes(reach=False) == ["the controller cannot reach slurmdbd"]


def test_status_rows_and_line():
    status = {"daemons": {}, "health": health(mariadb="running", slurmdbd="stopped")}
    rows = accounting.status_rows(CFG, status)
    assert [(r["daemon"], r["mark"]) for r in rows] == [("mariadb", True), ("slurmdbd", False)]
    assert not accounting.rows_ok(rows)
    line = accounting.status_line(rows)
    assert line == "accounting on ctl: mariadb ok, slurmdbd DOWN (slurmdbd stopped)"
    assert accounting.status_rows(CFG, None)[0]["evidence"] == "no answer"


def test_managed_follows_the_accounts_users_and_qos_in_pillar():
    assert accounting.managed(CFG) is False
    on = settings.validate(
        {
            "controller": "ctl",
            "accounting": {"enabled": True, "accounts": {"physics": {}}},
        }
    )
    assert accounting.managed(on) is True
    off = settings.validate({"controller": "ctl", "accounting": {"accounts": {"physics": {}}}})
    assert accounting.managed(off) is False, "accounting off: nothing to keep accounts in"


def test_status_line_of_accounts_as_code():
    in_sync = {
        "in_sync": True,
        "total": 0,
        "counts": {},
        "drift": 0,
        "unmanaged": {"accounts": 2},
        "processes": 5,
    }
    report = accounting.sync_report("ctl", {"ok": True, "ret": in_sync, "error": None})
    assert report["line"] == "accounts as code on ctl: in sync with pillar; 2 unmanaged left alone"
    drifted = {
        "in_sync": False,
        "total": 3,
        "counts": {"qos": {"modified": 1}, "users": {"added": 2}},
        "drift": 1,
        "unmanaged": {},
        "processes": 5,
    }
    report = accounting.sync_report("ctl", {"ok": True, "ret": drifted, "error": None})
    assert report["in_sync"] is False and report["drift"] == 1
    assert report["line"] == (
        "accounts as code on ctl: DIFFERS from pillar (3 change(s) to apply: qos: 1 "
        "modified; users: 2 added, 1 value(s) drifted from pillar); salt-run slurm.deploy "
        "applies them"
    )
    failed = accounting.sync_report("ctl", {"ok": False, "ret": "sacctmgr: timeout", "error": "x"})
    assert failed["in_sync"] is None and "NOT CHECKED" in failed["line"]
    assert accounting.sync_report("ctl", None)["in_sync"] is None


def test_deploy_report_counts_the_changes_and_the_drift():
    chunk = {
        "result": True,
        "comment": "changed qos: 1 modified (7 sacctmgr processes)",
        "changes": {
            "qos": {"modified": ["single"]},
            "users": {"added": ["alice", "bob"]},
            "drift": [{"kind": "qos", "name": "single", "field": "MaxJobsPerUser"}],
        },
    }
    report = accounting.deploy_report("ctl", chunk)
    assert (report["changed"], report["drift"], report["result"]) == (3, 1, True)
    missing = accounting.deploy_report("ctl", None)
    assert missing["result"] is False and "not applied" in missing["comment"]
