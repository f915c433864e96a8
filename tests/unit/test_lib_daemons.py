import copy
import os

import pytest

from salt_ext.lib import daemons


@pytest.fixture
def slurm_conf(tmp_path):
    pidfile = tmp_path / "run" / "slurmd.pid"
    pidfile.parent.mkdir()
    conf = tmp_path / "slurm.conf"
    conf.write_text(
        "ClusterName=cluster\n"
        f"SlurmdPidFile={pidfile}\n"
        f"slurmdlogfile={tmp_path / 'slurmd.log'}  # lower case works too\n"
        "NodeName=n1 CPUs=1 RealMemory=1000 State=UNKNOWN\n"
    )
    return conf


def test_spec_reads_pid_and_log_paths_from_slurm_conf_and_passes_it(slurm_conf, tmp_path):
    info = daemons.spec("slurmd", str(slurm_conf))
    assert info["pidfile"] == str(tmp_path / "run" / "slurmd.pid")
    assert info["log"] == str(tmp_path / "slurmd.log")
    assert info["argv"] == ["slurmd", "-f", str(slurm_conf)]


def test_spec_without_conf_uses_builtin_paths():
    info = daemons.spec("slurmctld")
    assert info["pidfile"] == "/run/slurmctld.pid"
    assert info["argv"] == ["slurmctld"]


def test_spec_keeps_defaults_for_keys_the_conf_does_not_set(tmp_path):
    conf = tmp_path / "slurm.conf"
    conf.write_text("ClusterName=cluster\n")
    info = daemons.spec("slurmd", str(conf))
    assert info["pidfile"] == "/run/slurmd.pid"
    assert info["log"] == "/var/log/slurm/slurmd.log"


def test_spec_munge_ignores_slurm_conf(slurm_conf):
    info = daemons.spec("munge", str(slurm_conf))
    assert info["argv"] == ["munged"]
    assert info["pidfile"] == "/run/munge/munged.pid"


def test_spec_does_not_modify_the_daemon_table(slurm_conf):
    before = copy.deepcopy(daemons.DAEMONS)
    daemons.spec("slurmd", str(slurm_conf))
    daemons.spec("slurmd", str(slurm_conf))
    assert daemons.DAEMONS == before


def test_spec_unknown_daemon_raises_value_error():
    with pytest.raises(ValueError, match="unknown daemon 'slurmdbd'"):
        daemons.spec("slurmdbd")


def _pidfile(tmp_path):
    return tmp_path / "run" / "slurmd.pid"


def test_pid_of_missing_pidfile_is_none(slurm_conf):
    assert daemons.pid_of("slurmd", str(slurm_conf)) is None


@pytest.mark.parametrize("content", ["garbage\n", "", "\n"])
def test_pid_of_unreadable_pidfile_is_none(slurm_conf, tmp_path, content):
    _pidfile(tmp_path).write_text(content)
    assert daemons.pid_of("slurmd", str(slurm_conf)) is None


def test_pid_of_live_pid_of_another_program_is_none(slurm_conf, tmp_path):
    # this test process is alive but is not slurmd: a reused pid must not count
    _pidfile(tmp_path).write_text(f"{os.getpid()}\n")
    assert daemons.pid_of("slurmd", str(slurm_conf)) is None


def test_pid_of_returns_pid_when_comm_matches(slurm_conf, tmp_path, monkeypatch):
    pid = os.getpid()
    _pidfile(tmp_path).write_text(f"{pid}\n")
    monkeypatch.setattr(daemons, "_comm", lambda p: "slurmd" if p == pid else None)
    assert daemons.pid_of("slurmd", str(slurm_conf)) == pid


def test_comm_of_missing_process_is_none():
    assert daemons._comm(2**22 + 12345) is None


def test_log_tail_returns_last_lines(tmp_path):
    log = tmp_path / "slurmd.log"
    log.write_text("".join(f"line {i}\n" for i in range(50)))
    assert daemons.log_tail(str(log), 3) == ["line 47", "line 48", "line 49"]


def test_log_tail_of_short_file_returns_all_lines(tmp_path):
    log = tmp_path / "slurmd.log"
    log.write_text("only\n")
    assert daemons.log_tail(str(log)) == ["only"]


def test_log_tail_missing_file_is_empty(tmp_path):
    assert daemons.log_tail(str(tmp_path / "nope.log")) == []
