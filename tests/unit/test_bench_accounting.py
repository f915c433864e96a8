"""bench/accounting.py runs against a fake sacctmgr (the harness, not the figures), and says
"not measured" when no slurmdbd is given."""

from bench import accounting
from tests.unit.fakesacctmgr import FakeSacctmgr


def test_without_slurmdbd_it_says_not_measured(monkeypatch, capsys):
    monkeypatch.delenv(accounting.PREFIX_ENV, raising=False)
    monkeypatch.setenv(accounting.BED_ENV, "0")  # no bed of its own either
    monkeypatch.setattr(accounting, "MICRO_ROUNDS", 1)
    assert accounting.run() is None
    out = capsys.readouterr().out
    assert "plan no-op:" in out
    assert "not measured: no slurmdbd given" in out


def test_an_unregistered_cluster_is_not_measured(monkeypatch, capsys):
    monkeypatch.setattr(accounting, "MICRO_ROUNDS", 1)

    def sacctmgr(argv, stdin=None):
        return "other\n"

    assert accounting.run(sacctmgr=sacctmgr, cluster="cluster") is None
    assert "cluster 'cluster' is not registered" in capsys.readouterr().out


def test_the_harness_against_a_fake(monkeypatch, capsys):
    monkeypatch.setattr(accounting, "N_ACCOUNTS", 12)
    monkeypatch.setattr(accounting, "N_USERS", 40)
    monkeypatch.setattr(accounting, "N_QOS", 3)
    monkeypatch.setattr(accounting, "ROUNDS", 1)
    monkeypatch.setattr(accounting, "MICRO_ROUNDS", 1)
    fake = FakeSacctmgr()
    medians = accounting.run(sacctmgr=fake, cluster="cluster")
    out = capsys.readouterr().out
    assert set(medians) == {
        f"{w}_{k}" for w in ("ours", "lines", "naive") for k in ("empty", "noop")
    }
    assert "no-op re-apply" in out and "naive" in out and "lines" in out
    # ours loaded every account and user in one file; the other two did not
    loads = [c for c in fake.calls if c["argv"][2:3] == ["load"]]
    assert len(loads) == 1 and loads[0]["stdin"].count("User - ") == 40
    # wiped after the run: only the cluster's own entities are left
    assert set(fake.qos) == {"normal"} and set(fake.users) == {"root"}
