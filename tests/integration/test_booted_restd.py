"""slurmrestd under real service managers (issue #15, item 3): on booted Debian 12 hosts
with systemd, sysvinit and OpenRC as PID 1, ``slurm:restd`` must leave slurmrestd started
by that manager as its own unprivileged user (Debian's unit runs it as root on a unix socket
only: our systemd drop-in; Debian ships no init script: ours for sysvinit and OpenRC),
listening on the unix socket and the pillar's TCP port, answering 200 with a token from
``salt-run slurm.token`` and 401 without; back after a reboot with no command; and
``slurm.absent`` stops it and removes its files and the JWT key. No mocks.

Shape: slurmrestd lives on the controller, so one cluster (master, sandbox compute node n1,
three booted hosts) whose controller is moved from one kind to the next: for each kind the
pillar names that host the controller and ``salt-run slurm.deploy`` builds it from bare (as
an admin moving the controller would), then the checks, a reboot of that host, and
``slurm.absent`` on it. The process is judged from ``/proc`` (owner, parent, its own
listening sockets), never from the manager's exit code.

Debian's ``slurm-wlm-jwt-plugin`` (and libjwt0, libb64-0d, libjansson4) is not in the
booted hosts' cached repository; the module serves this machine's copies of them as a
second local apt source (``hosts.extra_repo``) rather than rebuilding every image.

Its own bed (name and subnet from ``SXT_BOOTRESTD_BED_NAME`` / ``SXT_BOOTRESTD_BED_SUBNET``).
"""

import http.client
import json
import os
import re
import socket
import time

import pytest

from tests import conftest
from tests.integration.helpers import failed, json_output, salt_run_on_a_terminal, wait_for
from tests.testbed import SandboxCluster, hosts
from tests.testbed.bed import render_pillar

pytestmark = pytest.mark.testbed

KINDS = {"rsys": "systemd", "rsysv": "sysvinit", "rrc": "openrc"}
BED = {
    "name": os.environ.get("SXT_BOOTRESTD_BED_NAME", "sxrb"),
    "subnet": os.environ.get("SXT_BOOTRESTD_BED_SUBNET", "10.59.0"),
}
PORT = 6821  # not the default: the pillar's port is what must be listened on
USER = "slurmrestd"
SOCKET = "/run/slurmrestd/slurmrestd.socket"
ENV_FILE = "/etc/slurm/slurmrestd.env"
KEY = "/etc/slurm/jwt_hs256.key"
LAUNCHER = {
    "systemd": "/etc/systemd/system/slurmrestd.service.d/saltext-slurm.conf",
    "sysvinit": "/etc/init.d/slurmrestd",
    "openrc": "/etc/init.d/slurmrestd",
}
EXTRA_PACKAGES = ["slurm-wlm-jwt-plugin", "libjwt0", "libb64-0d", "libjansson4"]
DIAG = "/slurm/v0.0.38/diag"


def say(request, text):
    conftest.say(request.config, text)


def pillar(controller):
    return render_pillar(
        controller=controller, node_target="n1", restd={"enabled": True, "port": PORT}
    )


@pytest.fixture(scope="module")
def site(host_images, request, tmp_path_factory):
    bed = SandboxCluster(nodes=("n1",), **BED)
    started = time.monotonic()
    try:
        bed.up()
        repo = hosts.extra_repo(EXTRA_PACKAGES, tmp_path_factory.mktemp("extrarepo"))
        with hosts.booted(bed, KINDS):
            for name in KINDS:
                bed.hosts.add_repo(name, repo)
                update = bed.run(name, ["apt-get", "-q", "update"], timeout=120)
                assert update.returncode == 0, (name, update.stdout, update.stderr)
            say(
                request,
                f"\n[booted restd] master, n1 and {len(KINDS)} booted hosts up in "
                f"{time.monotonic() - started:.1f}s",
            )
            yield bed
    finally:
        bed.down(keep_files=False)


def sh(bed, name, *argv, timeout=60):
    return bed.run(name, list(argv), timeout=timeout)


def _status(pid):
    with open(f"/proc/{pid}/status", encoding="utf-8") as handle:
        return dict(line.split(":", 1) for line in handle.read().splitlines() if ":" in line)


def restd_processes(bed, name):
    """Every slurmrestd in host ``name``'s pid namespace, read from this machine's /proc:
    ``[{"pid" (here), "nspid" (in the host), "ppid" (here), "uids", "gids"}]``."""
    pid1 = bed.hosts.pid1(name)
    pidns = os.readlink(f"/proc/{pid1}/ns/pid")
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.readlink(f"/proc/{entry}/ns/pid") != pidns:
                continue
            with open(f"/proc/{entry}/comm", encoding="utf-8") as handle:
                if handle.read().strip() != "slurmrestd":
                    continue
            status = _status(entry)
        except OSError:
            continue
        found.append(
            {
                "pid": int(entry),
                "nspid": int(status["NSpid"].split()[-1]),
                "ppid": int(status["PPid"]),
                "uids": [int(x) for x in status["Uid"].split()],
                "gids": [int(x) for x in status["Gid"].split()],
            }
        )
    return found


def listening(pid):
    """``(TCP ports, unix socket paths)`` the process ``pid`` itself listens on: its socket
    fds matched against its network namespace's tables."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[len("socket:[") : -1])
    ports = set()
    for table in ("tcp", "tcp6"):
        with open(f"/proc/{pid}/net/{table}", encoding="utf-8") as handle:
            for line in handle.read().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    paths = set()
    with open(f"/proc/{pid}/net/unix", encoding="utf-8") as handle:
        for line in handle.read().splitlines()[1:]:
            fields = line.split()
            # Num RefCount Protocol Flags Type St Inode Path; flag 0x10000: listening
            if len(fields) >= 8 and fields[6] in inodes and int(fields[3], 16) & 0x10000:
                paths.add(fields[7])
    return ports, paths


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout):
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.unix_path)


def rest(bed, name, token=None, user="sxuser", via="tcp", path=DIAG):
    """``(status, body)`` of GET ``path`` on host ``name``: over TCP to its address and the
    pillar's port, or over its unix socket (reached through its PID 1's root). The token
    goes in a header from memory."""
    if via == "tcp":
        conn = http.client.HTTPConnection(bed.hosts.hosts[name].ip, PORT, timeout=20)
    else:
        conn = _UnixConnection(f"/proc/{bed.hosts.pid1(name)}/root{SOCKET}", timeout=20)
    headers = {"X-SLURM-USER-NAME": user, "X-SLURM-USER-TOKEN": token} if token else {}
    try:
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        return response.status, response.read().decode(errors="replace")
    finally:
        conn.close()


def answers(bed, name, via="tcp"):
    try:
        return rest(bed, name, via=via)[0] == 401
    except OSError:
        return False


def accepted(status, body):
    """200 and no ``errors`` (slurmrestd 22.05 may answer a refused token with 200 and the
    error in the body)."""
    try:
        errors = json.loads(body).get("errors")
    except ValueError:
        return False
    return status == 200 and not errors


def token(bed):
    text, out, err, code = salt_run_on_a_terminal(
        bed, "--out=json", "slurm.token", "user=sxuser", "lifespan=900", timeout=120
    )
    assert code == 0, (out, err[-2000:])
    return re.search(r"^token: (\S+)$", text, re.M).group(1)


def exists(bed, name, path):
    return sh(bed, name, "test", "-e", path).returncode == 0


def manager_owns(bed, name, init, nspid):
    """The manager's own record of slurmrestd names the process we found."""
    if init == "systemd":
        main = sh(bed, name, "systemctl", "show", "-p", "MainPID", "--value", "slurmrestd")
        return main.stdout.strip() == str(nspid), main.stdout
    pidfile = sh(bed, name, "cat", "/run/slurmrestd/slurmrestd.pid").stdout.strip()
    if init == "openrc":
        status = sh(bed, name, "rc-service", "slurmrestd", "status")
        return status.returncode == 0 and pidfile == str(nspid), (status.stdout, pidfile)
    return pidfile == str(nspid), pidfile


def boot_links(bed, name, init):
    """What starts slurmrestd at boot (empty: nothing)."""
    if init == "systemd":
        state = sh(bed, name, "systemctl", "is-enabled", "slurmrestd").stdout.strip()
        return [] if state in ("disabled", "") else [state]
    pattern = "/etc/runlevels/*/slurmrestd" if init == "openrc" else "/etc/rc[0-6S].d/*slurmrestd"
    listed = sh(bed, name, "sh", "-c", f"ls -d {pattern} 2>/dev/null")
    return listed.stdout.split()


def check_running(bed, name, init, made):
    """slurmrestd runs under ``init`` as its own user on the socket and the pillar port,
    401 without a token and 200 with ``made``, over TCP and the socket. Returns its pid."""
    logs = lambda: bed.tail_logs([name])  # noqa: E731 - only on failure
    procs = restd_processes(bed, name)
    assert len(procs) == 1, (procs, logs())
    proc = procs[0]
    uid = int(sh(bed, name, "id", "-u", USER).stdout)
    gid = int(sh(bed, name, "id", "-g", USER).stdout)
    slurm_uid = int(sh(bed, name, "id", "-u", "slurm").stdout)
    assert uid not in (0, slurm_uid)
    # real, effective, saved and filesystem ids: all its own user's, none root's
    assert proc["uids"] == [uid] * 4 and proc["gids"] == [gid] * 4, (proc, uid, gid)
    # started by the init: its parent is the host's PID 1, and the manager's record names it
    assert proc["ppid"] == bed.hosts.pid1(name), proc
    owned, said = manager_owns(bed, name, init, proc["nspid"])
    assert owned, (init, proc, said)
    ports, paths = listening(proc["pid"])
    assert ports == {PORT} and paths == {SOCKET}, (ports, paths)
    for via in ("tcp", "unix"):
        status, body = rest(bed, name, via=via)
        assert status == 401, (via, status, body[:300])
        status, body = rest(bed, name, made, via=via)
        assert accepted(status, body), (via, status, body[:500], logs())
    return proc["pid"]


@pytest.mark.parametrize("name", list(KINDS))
def test_restd_runs_as_its_user_under_each_manager_comes_back_at_boot_and_absent_removes_it(
    site, name, request
):
    init = KINDS[name]
    site.write_pillar(pillar(name))

    # deploy: this host becomes the controller, from bare
    started = time.monotonic()
    proc = site.cli(["salt-run", "--out=json", "slurm.deploy"], timeout=900)
    deployed = json_output(proc.stdout, (proc.stdout[-3000:], proc.stderr[-3000:]))
    deploy_s = time.monotonic() - started
    assert proc.returncode == 0 and deployed["result"] is True, (
        deployed.get("comment"),
        deployed.get("steps"),
        proc.stderr[-3000:],
        site.tail_logs([name]),
    )
    assert sh(site, name, "cat", "/proc/1/comm").stdout.strip() == hosts.PID1_COMM[init]
    assert exists(site, name, LAUNCHER[init]) and exists(site, name, ENV_FILE)
    key = sh(site, name, "stat", "-c", "%a %U:%G", KEY).stdout.strip()
    assert key == "600 slurm:slurm", key
    made = token(site)
    first = check_running(site, name, init, made)
    assert boot_links(site, name, init), "slurmrestd is not enabled at boot"

    # a reboot: back and answering with no command
    pid1 = site.hosts.pid1(name)
    started = time.monotonic()
    site.reboot([name])
    assert site.hosts.pid1(name) != pid1
    assert wait_for(lambda: answers(site, name), 90, 0.5), site.tail_logs([name])
    reboot_s = time.monotonic() - started
    second = check_running(site, name, init, made)
    assert second != first

    # slurm.absent: stopped (the process gone), its files and the key removed, not at boot
    started = time.monotonic()
    ret = site.salt(name, "state.apply", ["slurm.absent"], timeout=300)[name]
    absent_s = time.monotonic() - started
    assert not failed(ret), (failed(ret), site.tail_logs([name]))
    assert wait_for(lambda: not restd_processes(site, name), 10, 0.2), restd_processes(site, name)
    for path in (LAUNCHER[init], ENV_FILE, KEY):
        assert not exists(site, name, path), path
    assert boot_links(site, name, init) == []
    assert not answers(site, name)
    if init == "systemd":
        # systemd forgot the drop-in (reloaded after its removal)
        shown = sh(
            site, name, "systemctl", "show", "-p", "DropInPaths,NeedDaemonReload", "slurmrestd"
        )
        assert "saltext-slurm" not in shown.stdout and "NeedDaemonReload=no" in shown.stdout, (
            shown.stdout
        )
    say(
        request,
        f"\n[booted restd] {name} ({init}): deploy as controller {deploy_s:.1f}s; reboot -> "
        f"REST answering {reboot_s:.1f}s; slurm.absent {absent_s:.1f}s",
    )
