"""Shared fixtures: the session-wide test bed and daemon logs on failure."""

import os
import shutil
import sys
import tempfile
import time

import pytest
import salt._logging.impl as salt_logging

from tests.testbed import SandboxCluster
from tests.testbed.bed import STATE_ROOT

# Salt buffers log records in a "deferred" stderr handler until a daemon configures logging,
# and flushes it at exit into a stream pytest has closed. Hand records to pytest's capture.
salt_logging.shutdown_temp_handler()

TESTBED_NODES = ("ctl", "n1", "n2", "n3")
# Two checkouts can run their suites side by side with different values of these
# (every namespace, interface and directory of a bed carries its name).
TESTBED_NAME = os.environ.get("SXT_BED_NAME", "sxt")
TESTBED_SUBNET = os.environ.get("SXT_BED_SUBNET", "10.77.0")

# The salt-api eauth ACL (tests/integration/test_salt_api.py, README "salt-api (REST)"):
# slurmops may run only the listed runners, and slurm.cmd on the compute nodes only as
# sxuser; slurmview may only read status. The master reads external_auth only when it
# starts, so the session bed carries it from the start; SandboxCluster.start_salt_api
# writes the users file.
SALT_API_ACL = {
    "slurmops": [
        {
            "@runner": [
                "^slurm\\.status$",
                "^slurm\\.verify$",
                "^slurm\\.diagnose$",
                "^slurm\\.drain$",
                "^slurm\\.resume$",
            ]
        },
        {"n*": [{"^slurm\\.cmd$": {"kwargs": {"runas": "^sxuser$"}}}]},
    ],
    "slurmview": [{"@runner": ["^slurm\\.status$"]}],
    # issues bootstrap tokens for new machines, nothing else
    "bootstrap": [{"@runner": ["^keyvault\\.issue$", "^keyvault\\.list$"]}],
}
SALT_API_EAUTH = {
    "external_auth": {
        "file": {
            "^filename": str(STATE_ROOT / TESTBED_NAME / "salt-api" / "users"),
            "^filetype": "text",
            "^hashtype": "sha256",
            **SALT_API_ACL,
        }
    }
}


def _testbed_unavailable():
    if os.geteuid() != 0:
        return "the test bed needs root (network namespaces, bind mounts)"
    for tool in ("ip", "nsenter", "unshare", "munged", "slurmd", "slurmctld"):
        if shutil.which(tool, path="/usr/sbin:/usr/bin:/sbin:/bin") is None:
            return f"{tool} not installed (run `make setup`)"
    return None


# `make test` runs two pytest-xdist workers (``-n 2``), one per lane; a module runs whole
# on one lane and the modules of one bed share a lane. The suite mostly waits on daemons
# (the CPUs are ~40 % busy with one lane), so two lanes cut it by about a third.
# Lane "ops": the day-2 runners and the bed-recovery tests on their own beds, slurmrestd on
# booted hosts, plus the unit tests; lane "beds": the shared bed's modules, the other booted
# hosts, the other own-bed modules and the functional tests (balanced by the per-lane
# seconds printed at the end).
OPS_LANE_MODULES = (
    "tests/integration/test_slurm_ops.py",
    "tests/integration/test_testbed_recovery.py",
    "tests/integration/test_autopilot.py",
    "tests/integration/test_booted_restd.py",
)


def lane_of(nodeid):
    module = nodeid.split("::", 1)[0]
    if module in OPS_LANE_MODULES or module.startswith("tests/unit/"):
        return "ops"
    return "beds"


def pytest_xdist_make_scheduler(config, log):
    """One work unit per lane (xdist's scope scheduling, the scope being the lane): each
    worker runs one lane's modules in order. (xdist's own ``--dist loadgroup`` marks do not
    group under pytest 9: it rewrites ``item._nodeid``, which pytest 9 no longer reads.)"""
    from xdist.scheduler import LoadScopeScheduling  # noqa: PLC0415 - only under xdist

    class LaneScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid):
            return lane_of(nodeid)

    return LaneScheduling(config, log)


_NOTES = pytest.StashKey[str]()


def pytest_configure(config):
    # one file for the lines the beds print as they go (xdist workers' output is not shown):
    # the controller creates it, workers inherit the variable, the summary prints it
    if not hasattr(config, "workerinput") and "SXT_SUITE_NOTES" not in os.environ:
        STATE_ROOT.mkdir(parents=True, exist_ok=True)
        fd, path = tempfile.mkstemp(prefix="suite-notes-", dir=STATE_ROOT)
        os.close(fd)
        os.environ["SXT_SUITE_NOTES"] = path
        config.stash[_NOTES] = path


def say(config, text):
    """A line for the person running the suite (bed start times, phases): printed now
    without xdist, and in the summary in any case."""
    path = os.environ.get("SXT_SUITE_NOTES")
    if path:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(text.strip("\n") + "\n")
    if not hasattr(config, "workerinput"):
        capture = config.pluginmanager.getplugin("capturemanager")
        with capture.global_and_fixture_disabled():
            sys.stderr.write(text + "\n")


def sandbox_bed(config, **kwargs):
    """A SandboxCluster up for a fixture (a generator: yields the bed, then takes it down
    even when tests fail or the run is interrupted; a run killed midway is cleaned up by
    the next ``up()``)."""
    reason = _testbed_unavailable()
    if reason:
        pytest.fail(f"test bed unavailable: {reason}")
    bed = SandboxCluster(**kwargs)
    try:
        bed.up()
        say(
            config,
            f"\n[testbed] {bed.name}: master + {len(bed.nodes)} node minions up in "
            f"{bed.startup_seconds:.1f}s (target <= 60s)",
        )
        _SHARED_BEDS.append(bed)
        yield bed
    finally:
        if bed in _SHARED_BEDS:
            _SHARED_BEDS.remove(bed)
        bed.down()


@pytest.fixture(scope="session")
def cluster(request):
    """Master on the host plus nodes ctl, n1, n2, n3, each with its own salt-minion: the
    bed the integration modules of the "beds" lane share."""
    yield from sandbox_bed(
        request.config,
        name=TESTBED_NAME,
        nodes=TESTBED_NODES,
        subnet=TESTBED_SUBNET,
        extra_master_config=SALT_API_EAUTH,
    )


_SHARED_BEDS = []


@pytest.fixture(scope="session")
def host_images(request):
    """The booted hosts' cache (base root, local apt repository, one image per init; see
    tests/testbed/hosts.py): built once on a fresh machine, checked in a second otherwise."""
    from tests.testbed import hosts  # noqa: PLC0415

    started = time.monotonic()
    paths = hosts.ensure_images()
    say(
        request.config,
        f"\n[testbed] booted-host images ready in {time.monotonic() - started:.1f}s "
        f"({', '.join(p.name for p in paths.values())})",
    )
    return paths


@pytest.fixture(autouse=True, scope="module")
def _fresh_salt_client_per_module():
    """Each test module starts with a new LocalClient for the shared bed. A module that runs
    Salt's loaders in this process against another master (test_keyvault's RunnerClient for
    its own bed) leaves the cached client unable to find its jobs: every call then answers
    False ("jid does not exist"), as seen when test_provision ran after test_keyvault."""
    for bed in _SHARED_BEDS:
        bed._local = None  # noqa: SLF001 - the bed's own cache, reset by its owner
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        # "cluster" is the shared bed; "kvbed" the KeyVault module's, "site" the booted one's
        for name in ("cluster", "kvbed", "site"):
            bed = item.funcargs.get(name) if name in getattr(item, "fixturenames", ()) else None
            if bed is not None:
                report.sections.append(("test bed daemon logs (last lines)", bed.tail_logs()))


_MODULE_SECONDS = {}


def pytest_runtest_logreport(report):
    # setup includes the module's share of a shared bed's start: it is the module's cost
    module = report.nodeid.split("::", 1)[0]
    _MODULE_SECONDS[module] = _MODULE_SECONDS.get(module, 0.0) + report.duration


def pytest_terminal_summary(terminalreporter, config):
    """What the beds said, and seconds per test module and per lane, slowest first, so the
    suite's budget is visible."""
    path = config.stash.get(_NOTES, None)
    if path:
        try:
            with open(path, encoding="utf-8") as handle:
                notes = [line for line in handle.read().splitlines() if line.strip()]
            os.unlink(path)
        except OSError:
            notes = []
        if notes:
            terminalreporter.section("test beds")
            for line in notes:
                terminalreporter.write_line(line)
    if not _MODULE_SECONDS:
        return
    terminalreporter.section("seconds per test module")
    lanes = {}
    for module, seconds in sorted(_MODULE_SECONDS.items(), key=lambda kv: -kv[1]):
        terminalreporter.write_line(f"{seconds:8.1f}  {module}")
        lanes[lane_of(module)] = lanes.get(lane_of(module), 0.0) + seconds
    terminalreporter.write_line(f"{sum(_MODULE_SECONDS.values()):8.1f}  total")
    for lane, seconds in sorted(lanes.items()):
        terminalreporter.write_line(f"{seconds:8.1f}  lane {lane}")
