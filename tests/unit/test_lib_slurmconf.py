from salt_ext.lib import slurmconf

CONF = """\
# slurm.conf written by Salt
ClusterName=cluster
SlurmctldHost=ctl(10.77.0.10)
slurmdpidfile=/run/slurmd.pid
SLURMDLOGFILE = /var/log/slurm/slurmd.log   # trailing comment
#SlurmctldLogFile=/commented/out.log
SchedulerParameters=bf_interval=30,bf_window=60
Include /etc/slurm/extra.conf

NodeName=n[1-3] CPUs=1 RealMemory=1000 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""


def _values(tmp_path, text=CONF):
    path = tmp_path / "slurm.conf"
    path.write_text(text)
    return slurmconf.read_values(str(path))


def test_read_values_lower_cases_keys_whatever_their_spelling(tmp_path):
    values = _values(tmp_path)
    assert values["clustername"] == "cluster"
    assert values["slurmdpidfile"] == "/run/slurmd.pid"
    assert values["slurmdlogfile"] == "/var/log/slurm/slurmd.log"


def test_read_values_skips_comments(tmp_path):
    assert "slurmctldlogfile" not in _values(tmp_path)


def test_read_values_skips_node_and_partition_lines(tmp_path):
    values = _values(tmp_path)
    assert "nodename" not in values
    assert "partitionname" not in values
    # their other keys must not leak in either
    assert "state" not in values
    assert "cpus" not in values


def test_read_values_keeps_equals_signs_inside_values(tmp_path):
    assert _values(tmp_path)["schedulerparameters"] == "bf_interval=30,bf_window=60"


def test_read_values_ignores_lines_without_a_value(tmp_path):
    assert not any(key.startswith("include") for key in _values(tmp_path))


def test_read_values_only_returns_simple_keys(tmp_path):
    assert set(_values(tmp_path)) == {
        "clustername",
        "slurmctldhost",
        "slurmdpidfile",
        "slurmdlogfile",
        "schedulerparameters",
    }


def test_read_values_missing_file_is_empty(tmp_path):
    assert slurmconf.read_values(str(tmp_path / "absent.conf")) == {}
