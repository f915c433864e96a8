"""Node health checks (salt_ext/lib/node/healthcheck.py): pillar validation, each check
kind, the time bounds, and the drain / resume rule of saltext-slurm-healthcheck."""

import json
import os
import subprocess
import sys
import time

import pytest

from salt_ext.lib.conf import generate
from salt_ext.lib.node import healthcheck as hc
from salt_ext.lib.node import scontrol, settings
from salt_ext.lib.util import command


# ---------------------------------------------------------------------- validation
def test_defaults_mean_no_checks_and_no_slurm_conf_keys():
    cfg = hc.validate(None)
    assert cfg["checks"] == [] and generate.health_params(cfg) == {}


def test_valid_checks_and_the_slurm_conf_keys_they_bring():
    cfg = hc.validate(
        {
            "interval": 30,
            "checks": [
                {"name": "scratch", "kind": "mount", "path": "/scratch/"},
                {"name": "tmp", "kind": "free_space", "path": "/tmp", "min_mb": 10},
                {"name": "munge", "kind": "munge"},
                {"name": "gpus", "kind": "gpus"},
                {"name": "ib", "kind": "command", "argv": ["/bin/true"], "timeout": 3},
            ],
        }
    )
    assert cfg["checks"][0] == {
        "name": "scratch",
        "kind": "mount",
        "path": "/scratch",
        "timeout": hc.CHECK_TIMEOUT,
    }
    assert cfg["checks"][4]["argv"] == ["/bin/true"] and cfg["checks"][4]["timeout"] == 3
    assert generate.health_params(cfg) == {
        "HealthCheckProgram": hc.DEFAULT_PROGRAM,
        "HealthCheckInterval": "30",
        "HealthCheckNodeState": "ANY",
    }


@pytest.mark.parametrize(
    ("health", "key"),
    [
        ({"checks": "mount /x"}, "slurm:health:checks:"),
        ({"checks": [{"kind": "munge"}]}, "slurm:health:checks:0:name:"),
        ({"checks": [{"name": "a b", "kind": "munge"}]}, "slurm:health:checks:0:name:"),
        ({"checks": [{"name": "x", "kind": "disk"}]}, "slurm:health:checks:0 (x):kind:"),
        ({"checks": [{"name": "x", "kind": "mount"}]}, "slurm:health:checks:0 (x):path:"),
        ({"checks": [{"name": "x", "kind": "mount", "path": "rel"}]}, "(x):path:"),
        (
            {"checks": [{"name": "x", "kind": "free_space", "path": "/t", "min_mb": "1G"}]},
            "(x):min_mb:",
        ),
        # no shell: a command line as a string, or a relative program, is refused
        ({"checks": [{"name": "x", "kind": "command", "argv": "ibstat | grep"}]}, "(x):argv:"),
        ({"checks": [{"name": "x", "kind": "command", "argv": ["ibstat"]}]}, "(x):argv:"),
        ({"checks": [{"name": "x", "kind": "munge", "timeout": 600}]}, "(x):timeout:"),
        ({"checks": [{"name": "x", "kind": "munge", "path": "/x"}]}, "(x):path: not a key"),
        (
            {"checks": [{"name": "x", "kind": "munge"}, {"name": "x", "kind": "munge"}]},
            "slurm:health:checks:1:name: 'x' is used twice",
        ),
        ({"timeout": 0}, "slurm:health:timeout:"),
        ({"node_state": "BUSY"}, "slurm:health:node_state:"),
        ({"program": "healthcheck"}, "slurm:health:program:"),
        ({"every": 5}, "slurm:health:every: unknown key"),
    ],
)
def test_bad_pillar_names_the_key(health, key):
    with pytest.raises(hc.HealthError, match=None) as err:
        hc.validate(health)
    assert key in str(err.value)


def test_settings_validate_the_health_pillar():
    cfg = settings.validate({"controller": "ctl"})
    assert cfg["health"]["checks"] == []
    with pytest.raises(settings.SettingsError, match=r"slurm:health:checks:0 \(x\):kind"):
        settings.validate({"controller": "ctl", "health": {"checks": [{"name": "x"}]}})


def test_render_sets_the_health_check_keys_only_with_checks():
    from tests.unit.test_conf_generate import hw, mine  # noqa: PLC0415

    base = settings.validate({"controller": "ctl"})
    plain = generate.render(base, mine(hw("n1")))["files"]["slurm.conf"]
    assert "HealthCheck" not in plain
    base["health"] = hc.validate({"checks": [{"name": "m", "kind": "munge"}], "interval": 20})
    text = generate.render(base, mine(hw("n1")))["files"]["slurm.conf"]
    assert f"HealthCheckProgram={hc.DEFAULT_PROGRAM}" in text
    assert "HealthCheckInterval=20" in text and "HealthCheckNodeState=ANY" in text


# ---------------------------------------------------------------------- the checks
def test_mount_check_reads_this_namespaces_mount_table(tmp_path):
    info = tmp_path / "mountinfo"
    info.write_text(
        "22 1 0:21 / / rw - ext4 /dev/sda1 rw\n"
        "40 22 0:40 / /scratch\\040space rw - tmpfs tmpfs rw\n"
    )
    ok, detail = hc.check_mount({"path": "/scratch space"}, str(info))
    assert ok and detail == "/scratch space is mounted"
    ok, detail = hc.check_mount({"path": "/data"}, str(info))
    assert not ok and detail == "/data is not mounted"
    # the real table of this process has /
    assert hc.check_mount({"path": "/"})[0]


def test_free_space_check(tmp_path):
    ok, detail = hc.check_free_space({"path": str(tmp_path), "min_mb": 1})
    assert ok, detail
    ok, detail = hc.check_free_space({"path": str(tmp_path), "min_mb": 10**12})
    assert not ok and f"< {10**12}" in detail
    ok, detail = hc.check_free_space({"path": str(tmp_path / "gone"), "min_mb": 1})
    assert not ok and "No such file" in detail


def test_munge_check_round_trips_through_munged(monkeypatch):
    monkeypatch.setattr(hc.munge_lib, "encode", lambda payload, timeout: "MUNGE:cred:")
    monkeypatch.setattr(hc.munge_lib, "decode", lambda cred, timeout: {"ok": True})
    assert hc.check_munge({"timeout": 5}) == (True, "munged answers")
    monkeypatch.setattr(
        hc.munge_lib, "decode", lambda cred, timeout: {"ok": False, "error": "Invalid credential"}
    )
    assert hc.check_munge({"timeout": 5}) == (False, "munge round trip failed: Invalid credential")

    def down(payload, timeout):
        raise command.CommandFailed(["munge"], "munge: Failed to access socket")

    monkeypatch.setattr(hc.munge_lib, "encode", down)
    ok, detail = hc.check_munge({"timeout": 5})
    assert not ok and detail.startswith("munged does not answer: munge: Failed to access")


CONF = (
    "NodeName=DEFAULT CPUs=4\n"
    "NodeName=g[1-2] Gres=gpu:a100:2\n"
    "NodeName=g3 Gres=gpu:1,gpu:t4:2(S:0)\n"
    "NodeName=c1\n"
    "PartitionName=p Nodes=ALL\n"
)


@pytest.mark.parametrize(("node", "want"), [("g2", 2), ("g3", 3), ("c1", 0), ("zz", 0)])
def test_gpu_count_from_slurm_confs_gres(node, want):
    assert hc.conf_gpus(CONF, node) == want


def test_gpu_check_counts_device_files(tmp_path, monkeypatch):
    conf = tmp_path / "slurm.conf"
    conf.write_text(CONF)
    dev = tmp_path / "dev"
    dev.mkdir()
    for name in ("nvidia0", "nvidiactl", "nvidia-uvm"):
        (dev / name).touch()
    monkeypatch.setattr(hc.shutil, "which", lambda name: None)
    check = {"timeout": 5}
    ok, detail = hc.check_gpus(check, "g1", str(conf), str(dev))
    assert not ok and detail == "1 GPU(s) found, slurm.conf's Gres says 2"
    (dev / "nvidia1").touch()
    assert hc.check_gpus(check, "g1", str(conf), str(dev)) == (
        True,
        "2 GPU(s) as slurm.conf says",
    )
    ok, detail = hc.check_gpus(check, "g1", str(tmp_path / "none.conf"), str(dev))
    assert not ok and detail.startswith("cannot read")


def test_command_check_runs_argv_without_a_shell(tmp_path):
    marker = tmp_path / "touched"
    ok, detail = hc.check_command({"argv": ["/bin/true"], "timeout": 5})
    assert ok and detail == "true exited 0"
    # shell syntax is an argument, never interpreted
    ok, _ = hc.check_command({"argv": ["/bin/echo", f"; touch {marker}"], "timeout": 5})
    assert ok and not marker.exists()
    ok, detail = hc.check_command(
        {"argv": ["/bin/sh", "-c", "echo link down >&2; exit 3"], "timeout": 5}
    )
    assert not ok and detail == "sh exited 3 link down"
    ok, detail = hc.check_command({"argv": ["/bin/sleep", "5"], "timeout": 1})
    assert not ok and "timed out after 1s" in detail
    ok, detail = hc.check_command({"argv": [str(tmp_path / "nope")], "timeout": 1})
    assert not ok and "command not found" in detail


def test_each_check_and_the_whole_run_are_bounded():
    checks = [
        {"name": "hangs", "kind": "mount", "path": "/nfs", "timeout": 1},
        {"name": "fine", "kind": "munge", "timeout": 5},
        {"name": "slow", "kind": "munge", "timeout": 5},
        {"name": "late", "kind": "munge", "timeout": 5},
    ]
    bounds = {}

    def runner(check, _config):
        bounds[check["name"]] = check["timeout"]
        time.sleep({"hangs": 30, "fine": 0.1, "slow": 3}.get(check["name"], 0))
        return True, "ok"

    started = time.monotonic()
    results = hc.run_checks({"timeout": 2, "checks": checks}, runner=runner)
    assert time.monotonic() - started < 3.5
    assert [(r["name"], r["ok"]) for r in results] == [
        ("hangs", False),
        ("fine", True),
        ("slow", False),
        ("late", False),
    ]
    assert results[0]["detail"] == "timed out after 1 s"
    assert results[2]["detail"].startswith("timed out after 0.")
    assert results[3]["detail"] == "not run: the run's time was up"
    # a check is told the time it has (a command check's subprocess timeout)
    assert bounds["hangs"] == 1 and bounds["slow"] < 0.5 and "late" not in bounds


def test_a_check_that_crashes_has_failed():
    def runner(check, _config):
        raise KeyError("path")

    (result,) = hc.run_checks({"checks": [{"name": "x", "kind": "mount", "timeout": 1}]}, runner)
    assert result == {
        "name": "x",
        "kind": "mount",
        "ok": False,
        "detail": "check failed: KeyError: 'path'",
    }


# ---------------------------------------------------------------------- drain / resume
def node(raw="IDLE", reason=None):
    line = f"NodeName=n1 State={raw}" + (f" Reason={reason}" if reason else "")
    return scontrol.node_state(line)


FAIL = [{"name": "scratch", "ok": False, "detail": "/scratch is not mounted"}]
PASS = [{"name": "scratch", "ok": True, "detail": "/scratch is mounted"}]
OURS = "health: scratch: /scratch is not mounted"


def test_a_failing_check_drains_with_its_name():
    d = hc.act(FAIL, node(), None)
    assert d["action"] == "drain" and d["reason"] == OURS and d["record"] == OURS


def test_already_drained_for_the_check_does_nothing():
    d = hc.act(FAIL, node("IDLE+DRAIN", f"{OURS} [root@2026-11-29T10:00:00]"), OURS)
    assert d["action"] is None and d["record"] == OURS


def test_passing_again_resumes_only_its_own_drain():
    d = hc.act(PASS, node("IDLE+DRAIN", f"{OURS} [root@2026-11-29T10:00:00]"), OURS)
    assert d["action"] == "resume" and d["record"] is None


def test_an_admins_drain_is_never_resumed_nor_overwritten():
    admin = node("IDLE+DRAIN", "disk swap [alice@2026-11-29T10:00:00]")
    assert hc.act(PASS, admin, None)["action"] is None
    d = hc.act(FAIL, admin, None)
    assert d["action"] is None and "drained by someone else (disk swap)" in d["comment"]
    # an admin who wrote a health-looking reason is not the program: no record, no resume
    lookalike = node("IDLE+DRAIN", f"{OURS} [alice@2026-11-29T10:00:00]")
    assert hc.act(PASS, lookalike, None)["action"] is None
    # the admin replaced the program's reason: the record is forgotten, nothing resumed
    d = hc.act(PASS, admin, OURS)
    assert d["action"] is None and d["record"] is None


def test_resumed_by_someone_else_forgets_the_record():
    d = hc.act(PASS, node(), OURS)
    assert d["action"] is None and d["record"] is None


def test_unknown_node_state_does_nothing():
    assert hc.act(FAIL, None, None)["action"] is None


def test_long_details_are_cut_and_whitespace_joined():
    result = {"name": "ib", "ok": False, "detail": "x" * 500}
    assert len(hc.reason_for(result)) == hc.REASON_MAX


class FakeSlurm:
    """scontrol show / update for n1, as the program calls them."""

    def __init__(self, raw="IDLE", reason=None):
        self.raw, self.reason, self.updates = raw, reason, []

    def __call__(self, argv, timeout=60, check=True, **_):
        if argv[:3] == ["scontrol", "show", "node"]:
            line = f"NodeName=n1 State={self.raw}"
            if self.reason:
                line += f" Reason={self.reason}"
            return subprocess.CompletedProcess(argv, 0, line + "\n", "")
        if argv[:2] == ["scontrol", "update"]:
            self.updates.append(argv[2:])
            if "State=DRAIN" in argv:
                self.raw = "IDLE+DRAIN"
                self.reason = argv[-1].split("=", 1)[1] + " [root@2026-11-29T10:00:00]"
            else:
                self.raw, self.reason = "IDLE", None
            return subprocess.CompletedProcess(argv, 0, "", "")
        return command.run.__wrapped__(argv, timeout=timeout, check=check)  # pragma: no cover


def test_program_drains_then_resumes_through_scontrol(tmp_path, monkeypatch):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    config = tmp_path / "health.json"
    config.write_text(
        json.dumps(
            {
                "node": "n1",
                "slurm_conf": "/etc/slurm/slurm.conf",
                "timeout": 10,
                "checks": [
                    {
                        "name": "scratch",
                        "kind": "free_space",
                        "path": str(scratch),
                        "min_mb": 1,
                        "timeout": 5,
                    }
                ],
            }
        )
    )
    record = str(tmp_path / "run" / "health-drain")
    slurm = FakeSlurm()
    monkeypatch.setattr(hc.command, "run", slurm)
    assert hc.run(str(config), record)["action"] is None
    os.rmdir(scratch)
    out = hc.run(str(config), record)
    assert out["action"] == "drain" and out["failed"] == ["scratch"]
    assert slurm.updates[-1][:2] == ["NodeName=n1", "State=DRAIN"]
    assert slurm.updates[-1][2].startswith("Reason=health: scratch: ")
    assert hc.read_record(record).startswith("health: scratch: ")
    # check only (the beacon): no scontrol update
    assert hc.run(str(config), record, do_apply=False)["failed"] == ["scratch"]
    assert len(slurm.updates) == 1
    scratch.mkdir()
    out = hc.run(str(config), record)
    assert out["action"] == "resume" and slurm.updates[-1] == ["NodeName=n1", "State=RESUME"]
    assert hc.read_record(record) is None


def test_no_config_file_means_no_checks(tmp_path):
    out = hc.run(str(tmp_path / "absent.json"), str(tmp_path / "rec"))
    assert out["failed"] == [] and out["comment"] == "no health checks configured"


def test_console_script_is_declared_and_prints_each_check(tmp_path):
    with open(os.path.join(os.path.dirname(__file__), "..", "..", "setup.cfg")) as handle:
        assert "saltext-slurm-healthcheck = salt_ext.lib.node.healthcheck:main" in handle.read()
    config = tmp_path / "health.json"
    config.write_text(
        json.dumps(
            {"node": "n1", "checks": [{"name": "root", "kind": "mount", "path": "/", "timeout": 5}]}
        )
    )
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "salt_ext.lib.node.healthcheck",
            "--config",
            str(config),
            "--check-only",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0 and proc.stdout == "ok   root: / is mounted\n", proc.stderr
