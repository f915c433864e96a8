"""Booted hosts (issue #13): Debian 12 containers with systemd, sysvinit or OpenRC as PID 1,
their own salt-minion and apt limited to the bed's local repository. No mocks."""

import os
import time

import pytest

from tests.conftest import say
from tests.testbed import hosts
from tests.testbed.bed import _ip, _session_pids

pytestmark = pytest.mark.testbed

KINDS = {"bsys": "systemd", "bsysv": "sysvinit", "brc": "openrc"}


@pytest.fixture(scope="module")
def booted(cluster, host_images, request):
    started = time.monotonic()
    with hosts.booted(cluster, KINDS):
        say(
            request.config,
            f"\n[booted hosts] {', '.join(KINDS)} booted, minions up in "
            f"{time.monotonic() - started:.1f}s",
        )
        yield cluster


def _sh(cluster, name, *argv):
    return cluster.run(name, list(argv), timeout=60)


def test_each_kind_boots_with_its_init_as_pid1(booted):
    for name, init in KINDS.items():
        comm = _sh(booted, name, "cat", "/proc/1/comm").stdout.strip()
        assert comm == hosts.PID1_COMM[init], (name, comm)
        assert _sh(booted, name, "hostname").stdout.strip() == name
    pings = booted.salt(list(KINDS), "test.ping", tgt_type="list")
    assert pings == dict.fromkeys(KINDS, True)
    # the minion runs under the init (started at boot), not from the test bed
    for name in KINDS:
        procs = _sh(booted, name, "ps", "-eo", "pid,comm,args").stdout
        assert "salt-minion" in procs, (name, procs)


def test_apt_sees_only_the_local_repository_and_there_is_no_route_out(booted):
    for name in KINDS:
        sources = _sh(booted, name, "apt-get", "indextargets", "--format", "$(URI)").stdout
        assert sources.strip() and all(
            line.startswith("file:/srv/localrepo") for line in sources.split()
        ), (name, sources)
        routes = _sh(booted, name, "ip", "route").stdout
        assert "default" not in routes, (name, routes)
        started = time.monotonic()
        probe = _sh(
            booted,
            name,
            "/opt/saltext-salt/bin/python",
            "-c",
            "import socket; socket.create_connection(('151.101.2.132', 80), timeout=3)",
        )
        assert probe.returncode != 0 and "unreachable" in probe.stderr, (name, probe.stderr)
        assert time.monotonic() - started < 3
        # the bed's nodes and the other hosts resolve and answer
        assert _sh(booted, name, "ping", "-c1", "-W2", "ctl").returncode == 0, name
        other = next(n for n in KINDS if n != name)
        assert _sh(booted, name, "getent", "hosts", other).returncode == 0, (name, other)


def test_munge_is_not_preinstalled_and_pkg_install_gets_it_from_the_local_repo(booted):
    for name in KINDS:
        for pkg in ("munge", "slurmd", "slurmctld"):
            query = _sh(booted, name, "dpkg-query", "-W", "-f=${Status}", pkg)
            assert "install ok installed" not in query.stdout, (name, pkg)
        assert _sh(booted, name, "id", "-u", "munge").stdout.strip() == "1108"
    ret = booted.salt(list(KINDS), "pkg.install", ["munge"], tgt_type="list", timeout=300)
    for name in KINDS:
        assert isinstance(ret.get(name), dict) and "munge" in ret[name], (name, ret.get(name))
        query = _sh(booted, name, "dpkg-query", "-W", "-f=${Status}", "munge")
        assert "install ok installed" in query.stdout, name
        # the package's postinst reused the account created with the cluster's UID
        stat = _sh(booted, name, "stat", "-c", "%u", "/etc/munge/munge.key")
        assert stat.stdout.strip() == "1108", (name, stat.stdout, stat.stderr)


def test_reboot_brings_each_minion_back(booted, request):
    before = {name: booted.hosts.pid1(name) for name in KINDS}
    seconds = booted.reboot(list(KINDS))
    say(
        request.config,
        f"\n[booted hosts] reboot -> minion answers (s): {seconds}; "
        f"phases: {booted.hosts.last_reboot}",
    )
    for name, init in KINDS.items():
        assert booted.hosts.pid1(name) != before[name]
        comm = _sh(booted, name, "cat", "/proc/1/comm").stdout.strip()
        assert comm == hosts.PID1_COMM[init], (name, comm)
        # the disk survived the reboot: munge is still installed
        query = _sh(booted, name, "dpkg-query", "-W", "-f=${Status}", "munge")
        assert "install ok installed" in query.stdout, name


def test_poweroff_ends_the_host_and_boot_starts_it_again_with_its_disk(booted):
    name = "brc"
    host = booted.hosts.hosts[name]
    booted.poweroff(name)
    assert not booted.hosts.running(name)
    assert _ip("link", "show", host.veth, check=False).returncode != 0
    started = time.monotonic()
    booted.boot(name)
    assert time.monotonic() - started < 30
    assert _sh(booted, name, "cat", "/proc/1/comm").stdout.strip() == "openrc-init"
    query = _sh(booted, name, "dpkg-query", "-W", "-f=${Status}", "munge")
    assert "install ok installed" in query.stdout


def test_remove_leaves_no_process_veth_or_mount(booted):
    found = {}
    for name in KINDS:
        leader = booted.hosts.leaders[name]
        pid1 = booted.hosts.pid1(name)
        found[name] = (dict(leader), pid1, os.readlink(f"/proc/{pid1}/ns/pid"))
    for name in KINDS:
        host = booted.hosts.hosts[name]
        booted.remove(name)
        leader, pid1, pidns = found[name]
        assert _session_pids(leader) == []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    assert os.readlink(f"/proc/{entry}/ns/pid") != pidns, (name, entry)
                except OSError:
                    continue
        assert _ip("link", "show", host.veth, check=False).returncode != 0
        with open("/proc/self/mountinfo") as handle:
            assert str(host.root) not in handle.read()
        assert not host.dir.exists()
        assert name not in booted.hosts_file().read_text().split()
