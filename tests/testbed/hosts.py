"""Booted hosts: Debian 12 containers with a real init as PID 1 (systemd, sysvinit, OpenRC).

The second kind of test-bed machine (issue #13). Sandboxes (bed.py) share the host's dpkg
and have no init; a booted host is ``systemd-nspawn`` over its own root filesystem, with
its init as PID 1, its own address on the bed's bridge, its own salt-minion (Salt in a venv
at /opt/saltext-salt, started by the init at boot) and apt limited to a local repository of
Debian's packages at /srv/localrepo: munge and Slurm are not installed, the product's
``pkg.installed`` installs them.

What is slow to build is cached under :data:`CACHE_ROOT` as ``<kind>-<hash>``, the hash
over the inputs (package lists, mirror, Salt version, :data:`SCRIPT_VERSION`):

- ``base``: ``debootstrap --variant=minbase`` of bookworm plus python3-venv and the tools
  the minion uses, the munge/slurm/sxuser accounts with the cluster's UIDs, Salt's venv;
- ``repo``: .debs of munge, Slurm, MariaDB and the init systems with every dependency
  (the host's apt against a throwaway state dir with an empty dpkg status), indexed by
  ``dpkg-scanpackages``;
- ``systemd`` / ``sysvinit`` / ``openrc``: the base plus that init, installed from the local
  repository, and a salt-minion service enabled at boot; the local repository is the only
  apt source.

Each entry is built in a temp dir and renamed into place; a flock keeps two suites from
building at once; entries of other hashes are deleted. A booted host's root is an overlay
(lower: the image; upper/work: under the bed's state dir), so hosts never change the cache.

Reboot: nspawn exits 133 when its container reboots; each host has a supervisor (a shell
loop in a session of its own) that starts nspawn again on 133 and ends on anything else.
Processes are tracked by pid: the supervisor's session (pid, start time, boot id in the
bed's state file) holds the supervisor and nspawn; the container's PID 1 is the
descendant of nspawn whose innermost pid is 1, and killing it ends its whole pid namespace.
"""

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tests.testbed.bed import (
    REPO,
    SBIN_PATH,
    BedError,
    _boot_id,
    _ip,
    _reap,
    _session_pids,
    _start_time,
    _stat,
    _stop_all,
)

CACHE_ROOT = Path(os.environ.get("SXT_HOST_CACHE", "/var/cache/saltext-slurm-testbed"))
SCRIPT_VERSION = "1"
MIRROR = "http://deb.debian.org/debian"
SUITE = "bookworm"
INITS = ("systemd", "sysvinit", "openrc")
# init packages installed into each image from the local repository
INIT_PACKAGES = {
    "systemd": ["systemd", "systemd-sysv", "dbus"],
    "sysvinit": ["sysvinit-core"],
    "openrc": ["openrc", "sysvinit-core"],
}
# base: what a minimal server has plus what the minion and the tests use
BASE_PACKAGES = [
    "python3",
    "python3-venv",
    "iproute2",
    "iputils-ping",
    "ifupdown",
    "procps",
    "psmisc",
    "lsof",
    "ca-certificates",
]
# in the local repository, with all their dependencies (not installed in any image)
REPO_PACKAGES = [
    "munge",
    "slurmd",
    "slurmctld",
    "slurm-client",
    "slurmdbd",
    "slurmrestd",
    "mariadb-server",
]
# the cluster's accounts, created before the packages so their postinst reuses them
ACCOUNTS = (("munge", 1108, "/var/lib/munge", True), ("slurm", 1109, "/var/lib/slurm", True))
SXUSER_UID = 1110
# PID 1 comm per init kind (/proc/1/comm inside the host)
PID1_COMM = {"systemd": "systemd", "sysvinit": "init", "openrc": "openrc-init"}
REBOOT_EXIT = 133


def _salt_version():
    import salt.version  # noqa: PLC0415

    return salt.version.__version__


def _digest(*parts):
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def _source(*funcs):
    """Source of the build steps: a changed step is a new cache key (no stale image)."""
    import inspect  # noqa: PLC0415

    return [inspect.getsource(f) for f in funcs]


def cache_keys(salt_version=None):
    """``{kind: "<kind>-<hash>"}``: each entry's hash covers its inputs (package lists,
    mirror, Salt version, the code that builds it) and the keys of what it is built from."""
    salt_version = salt_version or _salt_version()
    base = "base-" + _digest(
        SCRIPT_VERSION,
        MIRROR,
        SUITE,
        BASE_PACKAGES,
        ACCOUNTS,
        SXUSER_UID,
        salt_version,
        _source(_build_base, _chroot_mounts),
    )
    repo = "repo-" + _digest(
        SCRIPT_VERSION, MIRROR, SUITE, REPO_PACKAGES, INIT_PACKAGES, _source(_build_repo)
    )
    keys = {"base": base, "repo": repo}
    image_code = _source(_build_image, _chroot_mounts)
    for init in INITS:
        keys[init] = f"{init}-" + _digest(
            SCRIPT_VERSION,
            base,
            repo,
            init,
            INIT_PACKAGES[init],
            SALT_UNIT,
            SALT_INITD,
            SALT_OPENRC,
            TESTBED_SYS_OPENRC,
            image_code,
        )
    return keys


def _run(argv, log, **kwargs):
    """Run ``argv`` with output appended to ``log``; raise BedError with its tail on error."""
    log.write(f"\n$ {' '.join(map(str, argv))}\n")
    log.flush()
    proc = subprocess.run(
        [str(a) for a in argv],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        check=False,
        **kwargs,
    )
    if proc.returncode != 0:
        log.flush()
        tail = Path(log.name).read_text(errors="replace").splitlines()[-30:]
        raise BedError(
            f"{argv[0]} failed (rc {proc.returncode}), see {log.name}:\n" + "\n".join(tail)
        )


CHROOT_ENV = {
    "PATH": SBIN_PATH,
    "LANG": "C.UTF-8",
    "HOME": "/root",
    "DEBIAN_FRONTEND": "noninteractive",
}


@contextlib.contextmanager
def _chroot_mounts(root, binds=()):
    """/proc, /dev (and ``binds``: ``(host_dir, dir_in_root, readonly)``) mounted in
    ``root`` for chroot commands; unmounted whatever happens."""
    mounted = []
    try:
        for src, dst, readonly in [("/proc", "/proc", False), ("/dev", "/dev", False), *binds]:
            target = Path(root) / dst.lstrip("/")
            target.mkdir(parents=True, exist_ok=True)
            subprocess.run(["mount", "--bind", str(src), str(target)], check=True)
            mounted.append(target)
            if readonly:
                subprocess.run(["mount", "-o", "remount,bind,ro", str(target)], check=True)
        yield
    finally:
        for target in reversed(mounted):
            subprocess.run(["umount", "-l", str(target)], check=False)


def _chroot(root, argv, log):
    _run(["chroot", root, *argv], log, env=CHROOT_ENV)


def _write(path, text, mode=0o644):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_symlink():
        path.unlink()
    path.write_text(text)
    path.chmod(mode)


def _build_base(tmp, log, salt_version):
    _run(
        [
            "debootstrap",
            "--variant=minbase",
            f"--include={','.join(BASE_PACKAGES)}",
            SUITE,
            tmp,
            MIRROR,
        ],
        log,
    )
    for name, uid, home, _ in ACCOUNTS:
        _chroot(tmp, ["groupadd", "--system", "--gid", str(uid), name], log)
        _chroot(
            tmp,
            ["useradd", "--system", "--uid", str(uid), "--gid", name, "--home-dir", home]
            + ["--shell", "/usr/sbin/nologin", name],
            log,
        )
    _chroot(
        tmp,
        ["useradd", "--uid", str(SXUSER_UID), "--user-group", "--create-home"]
        + ["--shell", "/bin/bash", "sxuser"],
        log,
    )
    # Salt in a venv of the image's own python3 (3.11, as the host's): the host's pip (its
    # index, certificates and constraints) makes the wheels, the image's pip installs them
    wheels = Path(tempfile.mkdtemp(prefix="tmp-wheels-", dir=CACHE_ROOT))
    try:
        _run(
            [sys.executable, "-m", "pip", "wheel", "-q", "-w", wheels, f"salt=={salt_version}"],
            log,
        )
        with _chroot_mounts(tmp, [(wheels, "/tmp/wheels", True)]):
            _chroot(tmp, ["python3", "-m", "venv", "/opt/saltext-salt"], log)
            _chroot(
                tmp,
                ["/opt/saltext-salt/bin/pip", "install", "-q", "--disable-pip-version-check"]
                + ["--no-index", "--find-links=/tmp/wheels", f"salt=={salt_version}"],
                log,
            )
    finally:
        shutil.rmtree(wheels, ignore_errors=True)
    _write(Path(tmp) / "etc" / "resolv.conf", "")
    _chroot(tmp, ["apt-get", "clean"], log)


def _build_repo(tmp, log):
    """The .debs of REPO_PACKAGES and the init packages with every dependency, downloaded
    by the host's apt against a throwaway state (empty dpkg status, own lists/cache)."""
    work = Path(tempfile.mkdtemp(prefix="sxt-apt-", dir=CACHE_ROOT))
    try:
        (work / "lists" / "partial").mkdir(parents=True)
        (work / "archives" / "partial").mkdir(parents=True)
        (work / "status").write_text("")
        (work / "sources.list").write_text(f"deb {MIRROR} {SUITE} main\n")
        opts = [
            f"-oDir::Etc::sourcelist={work / 'sources.list'}",
            "-oDir::Etc::sourceparts=-",
            f"-oDir::State::lists={work / 'lists'}",
            f"-oDir::State::status={work / 'status'}",
            f"-oDir::Cache={work}",
            f"-oDir::Cache::archives={work / 'archives'}",
            "-oDebug::NoLocking=1",
            "-oAPT::Install-Recommends=false",
            "-oAPT::Get::AllowUnauthenticated=false",
        ]
        _run(["apt-get", *opts, "-q", "update"], log)
        # separate runs: the init systems conflict with each other
        for group in [REPO_PACKAGES, *INIT_PACKAGES.values(), BASE_PACKAGES]:
            _run(
                ["apt-get", *opts, "-q", "-y", "install", "--download-only", *group],
                log,
                env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
            )
        for deb in (work / "archives").glob("*.deb"):
            shutil.move(str(deb), tmp)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    packages = subprocess.run(
        ["dpkg-scanpackages", "--multiversion", ".", "/dev/null"],
        cwd=tmp,
        capture_output=True,
        check=True,
    ).stdout
    (Path(tmp) / "Packages").write_bytes(packages)
    sha = hashlib.sha256(packages).hexdigest()
    (Path(tmp) / "Release").write_text(
        "Origin: saltext-slurm-testbed\nLabel: localrepo\n"
        f"SHA256:\n {sha} {len(packages)} Packages\n"
    )


SALT_UNIT = """[Unit]
Description=Salt minion (test bed)
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
ExecStart=/opt/saltext-salt/bin/salt-minion -c /etc/salt
KillMode=process
Restart=on-failure

[Install]
WantedBy=multi-user.target
"""

SALT_INITD = """#!/bin/sh
### BEGIN INIT INFO
# Provides:          salt-minion
# Required-Start:    $remote_fs $network
# Required-Stop:     $remote_fs $network
# Default-Start:     2 3 4 5
# Default-Stop:      0 1 6
# Short-Description: Salt minion (test bed)
### END INIT INFO
PATH=/sbin:/usr/sbin:/bin:/usr/bin
DAEMON=/opt/saltext-salt/bin/salt-minion
PIDFILE=/run/salt-minion.pid
. /lib/lsb/init-functions

case "$1" in
  start)
    log_daemon_msg "Starting salt-minion" salt-minion
    start-stop-daemon --start --quiet --background --make-pidfile --pidfile "$PIDFILE" \\
        --startas "$DAEMON" -- -c /etc/salt
    log_end_msg $?
    ;;
  stop)
    log_daemon_msg "Stopping salt-minion" salt-minion
    start-stop-daemon --stop --quiet --retry TERM/15/KILL/5 --pidfile "$PIDFILE" \\
        --remove-pidfile
    rc=$?
    [ $rc -eq 1 ] && rc=0
    log_end_msg $rc
    ;;
  restart|force-reload)
    "$0" stop && "$0" start
    ;;
  status)
    status_of_proc -p "$PIDFILE" "$DAEMON" salt-minion
    ;;
  *)
    echo "Usage: $0 {start|stop|restart|force-reload|status}" >&2
    exit 3
    ;;
esac
"""

SALT_OPENRC = """#!/sbin/openrc-run
description="Salt minion (test bed)"
command=/opt/saltext-salt/bin/salt-minion
command_args="-c /etc/salt"
command_background=true
pidfile=/run/salt-minion.pid
retry="TERM/15/KILL/5"

depend() {
    after networking
}
"""


# OpenRC's sysinit leaves a plain sysfs mounted over nspawn's /sys (which is a tmpfs with
# the cgroup v1 tree under /sys/fs/cgroup): slurmd then fails with "No filesystem mounted
# on /sys/fs/cgroup". Unmount that sysfs early in the boot runlevel.
TESTBED_SYS_OPENRC = """#!/sbin/openrc-run
description="Test bed: uncover nspawn's /sys (a sysfs over it hides /sys/fs/cgroup)"

depend() {
    before salt-minion
}

start() {
    n=0
    while [ "$(stat -f -c %T /sys/fs/cgroup)" = sysfs ] && [ $n -lt 3 ] &&
        awk '$5 == "/sys" && $9 == "sysfs" { found = 1 } END { exit !found }' /proc/self/mountinfo
    do
        umount -l /sys
        n=$((n + 1))
    done
    return 0
}
"""


def _build_image(tmp, log, init, base, repo):
    _run(["cp", "-a", "--reflink=auto", f"{base}/.", tmp], log)
    root = Path(tmp)
    _write(root / "etc/apt/sources.list", "deb [trusted=yes] file:/srv/localrepo ./\n")
    for extra in (root / "etc/apt/sources.list.d").glob("*"):
        extra.unlink()
    _write(
        root / "etc/apt/apt.conf.d/90testbed",
        'APT::Install-Recommends "false";\nAcquire::Languages "none";\n',
    )
    _write(root / "usr/sbin/policy-rc.d", "#!/bin/sh\nexit 101\n", 0o755)
    with _chroot_mounts(tmp, [(repo, "/srv/localrepo", True)]):
        _chroot(tmp, ["apt-get", "-q", "update"], log)
        _chroot(tmp, ["apt-get", "-q", "-y", "install", *INIT_PACKAGES[init]], log)
    (root / "usr/sbin/policy-rc.d").unlink()
    _write(root / "etc/salt/minion.d/.keep", "")
    if init == "systemd":
        _write(root / "etc/systemd/system/salt-minion.service", SALT_UNIT)
        _chroot(tmp, ["systemctl", "enable", "networking.service", "salt-minion.service"], log)
        for unit in ("apt-daily.timer", "apt-daily-upgrade.timer", "getty@tty1.service"):
            _chroot(tmp, ["systemctl", "mask", unit], log)
    elif init == "sysvinit":
        _write(root / "etc/init.d/salt-minion", SALT_INITD, 0o755)
        _chroot(tmp, ["update-rc.d", "networking", "defaults"], log)
        _chroot(tmp, ["update-rc.d", "salt-minion", "defaults"], log)
    else:
        _write(root / "etc/init.d/salt-minion", SALT_OPENRC, 0o755)
        _chroot(tmp, ["rc-update", "add", "salt-minion", "default"], log)
        _write(root / "etc/init.d/testbed-sys", TESTBED_SYS_OPENRC, 0o755)
        _chroot(tmp, ["rc-update", "add", "testbed-sys", "boot"], log)
    if init in ("sysvinit", "openrc"):
        # no gettys on a container's console; inittab ignores commands over 127 chars
        inittab = root / "etc/inittab"
        if inittab.exists():
            lines = [
                f"#{line}" if line[:1].isdigit() and ":respawn:" in line else line
                for line in inittab.read_text().splitlines()
            ]
            inittab.write_text("\n".join(lines) + "\n")
        # mountkernfs.sh mounts a fresh sysfs over nspawn's /sys, which hides
        # /sys/fs/cgroup (slurmd: "No filesystem mounted on /sys/fs/cgroup")
        kernfs = root / "etc/init.d/mountkernfs.sh"
        text = kernfs.read_text()
        guarded = 'mountpoint -q /sys || domount "$MNTMODE" sysfs'
        if guarded not in text:
            text = text.replace('\tdomount "$MNTMODE" sysfs', "\t" + guarded, 1)
            if guarded not in text:
                raise BedError("mountkernfs.sh: sysfs mount line not found to guard")
            kernfs.write_text(text)
    _chroot(tmp, ["apt-get", "clean"], log)


def _mounts_under(path):
    """Mount points at or below ``path`` (deepest first)."""
    prefix = str(path).rstrip("/")
    with open("/proc/self/mountinfo") as handle:
        points = [line.split()[4] for line in handle]
    found = [p for p in points if p == prefix or p.startswith(prefix + "/")]
    return sorted(set(found), key=len, reverse=True)


def _rmtree_unmounted(path):
    """Delete ``path`` after unmounting whatever a killed build left mounted below it (its
    chroot's /proc, /dev binds); never deletes through a mount that stays."""
    for point in _mounts_under(path):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False)
    if _mounts_under(path):
        raise BedError(f"{path}: still has mounts {_mounts_under(path)}, not deleting it")
    shutil.rmtree(path, ignore_errors=True)


def _gc(keys):
    """Delete entries of other keys, except an image a running host still uses (lowerdir of
    a mounted overlay: a suite of another checkout may be running)."""
    keep = set(keys.values())
    with open("/proc/self/mountinfo") as handle:
        in_use = handle.read()
    keep |= {e.name for e in CACHE_ROOT.iterdir() if f"lowerdir={e}," in in_use}
    for entry in CACHE_ROOT.iterdir():
        kind = entry.name.split("-", 1)[0]
        stale_tmp = entry.name.startswith(("tmp-", "sxt-apt-"))
        if (
            (kind in keys and entry.name not in keep)
            or stale_tmp
            or entry.name.startswith(".checked")
        ):
            if entry.is_dir() and not entry.is_symlink():
                _rmtree_unmounted(entry)
            else:
                entry.unlink(missing_ok=True)


def ensure_images(inits=INITS, log_path=None):
    """Build what is missing of the cache (base, repo, ``inits`` images) and delete
    entries of other keys. Returns ``{kind: Path}``. Holds ``CACHE_ROOT/.lock``."""
    keys = cache_keys()
    CACHE_ROOT.mkdir(parents=True, exist_ok=True)
    log_path = Path(log_path or CACHE_ROOT / "build.log")
    with open(CACHE_ROOT / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        _gc(keys)
        paths = {kind: CACHE_ROOT / key for kind, key in keys.items()}
        with open(log_path, "a") as log:

            def build(kind, func, *args):
                if paths[kind].is_dir():
                    return
                tmp = Path(tempfile.mkdtemp(prefix=f"tmp-{kind}-", dir=CACHE_ROOT))
                try:
                    func(str(tmp), log, *args)
                    tmp.chmod(0o755)
                    tmp.rename(paths[kind])
                finally:
                    if tmp.exists():
                        _rmtree_unmounted(tmp)

            build("base", _build_base, _salt_version())
            build("repo", _build_repo)
            for init in inits:
                build(init, _build_image, init, paths["base"], paths["repo"])
        return paths


# ---------------------------------------------------------------------------- hosts
@dataclass
class Host:
    name: str
    init: str
    ip: str
    dir: Path

    @property
    def root(self):
        return self.dir / "root"

    @property
    def machine(self):
        return self.dir.parents[1].name + "-" + self.name

    @property
    def veth(self):
        return ("vb-" + self.machine)[:15]


def _children(pid):
    out = []
    for entry in os.listdir("/proc"):
        fields = _stat(entry) if entry.isdigit() else None
        if fields and int(fields[1]) == pid:
            out.append(int(entry))
    return out


def _descendants(pids):
    found, todo = [], list(pids)
    while todo:
        pid = todo.pop()
        for child in _children(pid):
            found.append(child)
            todo.append(child)
    return found


def _container_init(pids):
    """The container's PID 1 among the descendants of ``pids``: innermost pid 1."""
    for pid in _descendants(pids):
        try:
            with open(f"/proc/{pid}/status") as handle:
                for line in handle:
                    if line.startswith("NSpid:"):
                        ns = line.split()[1:]
                        if len(ns) > 1 and ns[-1] == "1":
                            return pid
        except OSError:
            continue
    return None


def _mounted(path):
    with open("/proc/self/mountinfo") as handle:
        return any(line.split()[4] == str(path) for line in handle)


class Hosts:
    """The booted hosts of one :class:`SandboxCluster` (``cluster.hosts``)."""

    def __init__(self, cluster):
        self.cluster = cluster
        self.hosts = {}
        self.leaders = {}  # name -> supervisor session leader {"pid","start","boot"}
        self.images = None
        self.last_reboot = {}

    # ------------------------------------------------------------------ state
    def state(self):
        return {
            name: {"init": h.init, "ip": h.ip, "leader": self.leaders.get(name)}
            for name, h in self.hosts.items()
        }

    def load(self, state):
        for name, info in (state or {}).items():
            self.hosts[name] = self._host(name, info["init"], info["ip"])
            if info.get("leader"):
                self.leaders[name] = info["leader"]

    def _host(self, name, init, ip=None):
        if ip is None:
            used = {n.ip for n in self.cluster.nodes.values()} | {h.ip for h in self.hosts.values()}
            ip = next(
                f"{self.cluster.subnet}.{i}"
                for i in range(100, 250)
                if f"{self.cluster.subnet}.{i}" not in used
            )
        return Host(name=name, init=init, ip=ip, dir=self.cluster.root / "booted" / name)

    # ------------------------------------------------------------------ boot
    def add(self, name, init="systemd"):
        if init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {init!r}")
        if name in self.cluster.nodes or name in self.hosts:
            raise BedError(f"{name} already exists on bed {self.cluster.name}")
        self.images = self.images or ensure_images()
        host = self._host(name, init)
        self.hosts[name] = host
        if host.dir.exists():
            self._unmount(host)
            _rmtree_unmounted(host.dir)
        self.boot(name)
        return host

    def _prepare(self, host):
        """Overlay root over the image, then the host's own files written into it."""
        for sub in ("upper", "work", "root"):
            (host.dir / sub).mkdir(parents=True, exist_ok=True)
        if not _mounted(host.root):
            image = self.images[host.init] if self.images else ensure_images()[host.init]
            subprocess.run(
                [
                    "mount",
                    "-t",
                    "overlay",
                    "overlay",
                    "-o",
                    f"lowerdir={image},upperdir={host.dir / 'upper'},workdir={host.dir / 'work'}",
                    str(host.root),
                ],
                check=True,
            )
        root = host.root
        cluster = self.cluster
        _write(root / "etc/hostname", host.name + "\n")
        _write(root / "etc/hosts", cluster.hosts_file().read_text())
        _write(root / "etc/resolv.conf", cluster.resolv_conf().read_text())
        _write(
            root / "etc/network/interfaces.d/host0",
            f"auto host0\niface host0 inet static\n    address {host.ip}/24\n",
        )
        minion = {
            "id": host.name,
            "master": cluster.master_ip,
            "master_port": cluster.ret_port,
            "publish_port": cluster.publish_port,
            "log_level_logfile": "info",
            "acceptance_wait_time": 1,
            "acceptance_wait_time_max": 2,
            "random_reauth_delay": 0,
            "recon_default": 200,
            "recon_max": 1000,
            "ipv6": False,
            "grains_cache": False,
        }
        _write(root / "etc/salt/minion.d/testbed.conf", json.dumps(minion, indent=2))

    def _nspawn_argv(self, host):
        argv = [
            "systemd-nspawn",
            "-q",
            "-D",
            str(host.root),
            "-M",
            host.machine,
            f"--hostname={host.name}",
            "--register=no",
            "--keep-unit",
            f"--network-bridge={self.cluster.bridge}",
            f"--bind-ro={self.images['repo'] if self.images else ensure_images()['repo']}"
            ":/srv/localrepo",
            "--resolv-conf=off",
            "--timezone=off",
            "--link-journal=no",
        ]
        if host.init == "systemd":
            argv.append("-b")
        elif host.init == "sysvinit":
            argv += ["--setenv=SELINUX_INIT=YES", "/sbin/init"]
        else:
            argv += ["/sbin/openrc-init"]
        return argv

    def boot(self, name):
        """Start host ``name`` (prepared root, supervisor, nspawn); does not wait."""
        host = self.hosts[name]
        if self.running(name):
            return
        self.images = self.images or ensure_images()
        self._prepare(host)
        _ip("link", "delete", host.veth, check=False)  # stale from a killed run
        nspawn = " ".join(f"'{a}'" for a in self._nspawn_argv(host))
        # restart nspawn on reboot (exit 133), end on anything else
        script = (
            f'while :; do {nspawn}; rc=$?; echo "nspawn exit $rc $(date +%s)"; '
            f'[ "$rc" = {REBOOT_EXIT} ] || exit "$rc"; '
            f"ip link delete {host.veth} 2>/dev/null; done"
        )
        with open(host.dir / "console.log", "ab") as log:
            proc = subprocess.Popen(
                ["/bin/sh", "-c", script],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env={"PATH": SBIN_PATH, "LANG": "C.UTF-8"},
            )
        self.leaders[name] = {"pid": proc.pid, "start": _start_time(proc.pid), "boot": _boot_id()}
        self.cluster._save_state()  # noqa: SLF001

    def running(self, name):
        return bool(_session_pids(self.leaders.get(name) or {}))

    def sync_hosts_files(self):
        """Every running host's /etc/hosts = the bed's hosts file (written into its root)."""
        text = self.cluster.hosts_file().read_text()
        for host in self.hosts.values():
            if _mounted(host.root):
                _write(host.root / "etc/hosts", text)

    def pid1(self, name, timeout=20):
        """Host pid of the container's init (waits for it to appear)."""
        deadline = time.monotonic() + timeout
        while True:
            session = _session_pids(self.leaders.get(name) or {})
            pid = _container_init(session) if session else None
            if pid:
                return pid
            if not session or time.monotonic() > deadline:
                raise BedError(f"host {name}: not running\n{self.console(name)}")
            time.sleep(0.05)

    def console(self, name, lines=30):
        path = self.hosts[name].dir / "console.log"
        with contextlib.suppress(OSError):
            return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def nsenter(self, name):
        return ["nsenter", "-t", str(self.pid1(name)), "-m", "-u", "-i", "-n", "-p", "--"]

    # ------------------------------------------------------------------ power
    SHUTDOWN = {
        "systemd": {"reboot": ["systemctl", "reboot"], "poweroff": ["systemctl", "poweroff"]},
        "sysvinit": {"reboot": ["/sbin/reboot"], "poweroff": ["/sbin/poweroff"]},
        "openrc": {
            "reboot": ["openrc-shutdown", "-r", "now"],
            "poweroff": ["openrc-shutdown", "-p", "now"],
        },
    }

    def _power(self, name, action):
        host = self.hosts[name]
        self.cluster.run(name, self.SHUTDOWN[host.init][action], timeout=30)

    def poweroff(self, name, timeout=60):
        old = self.pid1(name)
        self._power(name, "poweroff")
        deadline = time.monotonic() + timeout
        while self.running(name):
            if time.monotonic() > deadline:
                raise BedError(f"host {name}: still running {timeout}s after poweroff")
            time.sleep(0.1)
        _reap(self.leaders[name]["pid"])
        del old

    def reboot(self, names, timeout=120):
        """Reboot ``names`` (each in its own init's way, all at once); ``{name: seconds from
        the reboot command until its minion answers again}``. ``self.last_reboot`` also has
        the seconds until the new PID 1 appeared (``{name: {"init": s, "minion": s}}``)."""
        from salt.exceptions import SaltClientError  # noqa: PLC0415

        old = {name: self.pid1(name) for name in names}
        started = time.monotonic()
        for name in names:
            self._power(name, "reboot")
        phases = {name: {} for name in names}
        deadline = started + timeout
        while any("minion" not in p for p in phases.values()):
            for name in names:
                if "init" in phases[name]:
                    continue
                session = _session_pids(self.leaders.get(name) or {})
                if not session:
                    raise BedError(f"host {name}: supervisor ended on reboot\n{self.console(name)}")
                pid = _container_init(session)
                if pid and pid != old[name]:
                    phases[name]["init"] = round(time.monotonic() - started, 1)
            waiting = [n for n, p in phases.items() if "init" in p and "minion" not in p]
            if waiting:
                try:
                    answered = self.cluster._ping(waiting, timeout=1)  # noqa: SLF001
                except SaltClientError:
                    answered = {}
                for name in waiting:
                    if answered.get(name) is True:
                        phases[name]["minion"] = round(time.monotonic() - started, 1)
            if time.monotonic() > deadline:
                raise BedError(f"reboot of {names}: not back after {timeout}s: {phases}")
            time.sleep(0.2)
        self.last_reboot = phases
        return {name: p["minion"] for name, p in phases.items()}

    def add_repo(self, name, repo_dir):
        """Serve the repository ``repo_dir`` (:func:`extra_repo`) to host ``name`` as a
        second local apt source at :data:`EXTRA_REPO` (on its disk: survives a reboot);
        the caller runs ``apt-get update`` in it."""
        root = self.hosts[name].root
        target = root / EXTRA_REPO.lstrip("/")
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(repo_dir, target)
        _write(
            root / "etc/apt/sources.list.d/saltext-extra.list",
            f"deb [trusted=yes] file:{EXTRA_REPO} ./\n",
        )

    # ------------------------------------------------------------------ teardown
    def stop(self, name):
        """Kill host ``name`` at once: supervisor, nspawn and the container's pid namespace
        (SIGKILL to its PID 1); then its veth and overlay mount go."""
        host = self.hosts.get(name)
        leader = self.leaders.pop(name, None) or {}
        session = _session_pids(leader)
        if session:
            supervisor = leader["pid"]
            with contextlib.suppress(ProcessLookupError):
                os.kill(supervisor, 9)  # no restart on the way down
            init = _container_init(session)
            if init:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(init, 9)
            _stop_all(lambda: _session_pids(leader), grace=5)
            _reap(supervisor)
        if host is not None:
            _ip("link", "delete", host.veth, check=False)
            self._unmount(host)

    def _unmount(self, host):
        for _ in range(3):
            if not _mounted(host.root):
                return
            subprocess.run(["umount", str(host.root)], capture_output=True, check=False)
            if _mounted(host.root):
                time.sleep(0.2)
        if _mounted(host.root):
            subprocess.run(["umount", "-l", str(host.root)], check=False)

    def remove(self, name):
        self.stop(name)
        host = self.hosts.pop(name, None)
        if host is not None:
            _rmtree_unmounted(host.dir)
        self.cluster.cli(["salt-key", "-y", "-d", name])
        self.cluster._save_state()  # noqa: SLF001

    def down(self):
        for name in list(self.hosts):
            self.stop(name)
        # overlays of hosts this process does not know (killed run, no state)
        hosts_dir = self.cluster.root / "booted"
        if hosts_dir.is_dir():
            for entry in hosts_dir.iterdir():
                self._unmount(self._host(entry.name, "systemd", "0"))
        self.hosts.clear()
        self.leaders.clear()

    # ------------------------------------------------------------------ logs
    def log_paths(self):
        paths = {}
        for name, host in self.hosts.items():
            paths[f"{name}/console"] = host.dir / "console.log"
            upper = host.dir / "upper"
            for rel in ("var/log/salt/minion", "var/log/munge/munged.log"):
                paths[f"{name}/{rel}"] = upper / rel
            slurm_logs = upper / "var/log/slurm"
            if slurm_logs.is_dir():
                for log_file in sorted(slurm_logs.iterdir()):
                    paths[f"{name}/var/log/slurm/{log_file.name}"] = log_file
            if host.init == "systemd":
                paths[f"{name}/journal"] = host.dir / "journal.txt"
        return paths

    def refresh_journals(self):
        """Write each systemd host's recent journal to ``journal.txt`` (for log_paths)."""
        for name, host in self.hosts.items():
            if host.init == "systemd" and self.running(name):
                with contextlib.suppress(Exception):
                    proc = self.cluster.run(name, ["journalctl", "--no-pager", "-n", "200"])
                    (host.dir / "journal.txt").write_text(proc.stdout)


# --------------------------------------------------------------------- extra packages
HOST_ARCHIVES = Path("/var/cache/apt/archives")
EXTRA_REPO = "/srv/extrarepo"
_INFO = Path("/var/lib/dpkg/info")
# control files of an installed package that go back into its repacked .deb
_CONTROL_FILES = (
    "shlibs",
    "symbols",
    "triggers",
    "conffiles",
    "md5sums",
    "preinst",
    "postinst",
    "prerm",
    "postrm",
)


def _installed(package):
    proc = subprocess.run(
        ["dpkg-query", "-W", "-f=${Status}\t${Version}\t${Architecture}", package],
        capture_output=True,
        text=True,
        check=False,
    )
    fields = proc.stdout.split("\t")
    if proc.returncode != 0 or len(fields) != 3 or not fields[0].endswith(" installed"):
        raise BedError(f"{package}: not installed on this machine, no .deb to take")
    return fields[1], fields[2]


def _repack(package, version, arch, dest):
    """The installed ``package`` as a .deb (what dpkg-repack does): its files from dpkg's
    list, its control fields from dpkg's status, its control files from dpkg's info."""
    info = next((p for p in (f"{package}:{arch}", package) if (_INFO / f"{p}.list").exists()), None)
    if info is None:
        raise BedError(f"{package}: dpkg has no file list for it")
    work = Path(tempfile.mkdtemp(prefix="sxt-repack-"))
    work.chmod(0o755)  # the .deb's "./"
    try:
        for line in (_INFO / f"{info}.list").read_text().splitlines():
            src = Path(line)
            if line in ("/.", "") or (src.is_dir() and not src.is_symlink()):
                (work / line.lstrip("/")).mkdir(parents=True, exist_ok=True)
                continue
            target = work / line.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target, follow_symlinks=False)
        (work / "DEBIAN").mkdir()
        status = subprocess.run(
            ["dpkg-query", "-s", package], capture_output=True, text=True, check=True
        ).stdout
        control = [ln for ln in status.splitlines() if not ln.startswith(("Status:", "Conffiles:"))]
        (work / "DEBIAN" / "control").write_text("\n".join(c for c in control if c.strip()) + "\n")
        for name in _CONTROL_FILES:
            src = _INFO / f"{info}.{name}"
            if src.exists():
                shutil.copy2(src, work / "DEBIAN" / name)
        out = Path(dest) / f"{package}_{version.replace(':', '%3a')}_{arch}.deb"
        subprocess.run(
            ["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", str(work), str(out)],
            capture_output=True,
            check=True,
        )
        return out
    finally:
        shutil.rmtree(work, ignore_errors=True)


def extra_repo(packages, dest):
    """A local apt repository in ``dest`` with ``packages`` at the versions installed on
    this machine: apt's cached .deb when there is one, else repacked from the installed
    files. For packages the cached ``repo`` image lacks (a new REPO_PACKAGES entry would
    rebuild every image); ``Hosts.add_repo`` serves it to a host."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for package in packages:
        version, arch = _installed(package)
        name = f"{package}_{version.replace(':', '%3a')}_{arch}.deb"
        cached = HOST_ARCHIVES / name
        if cached.exists():
            shutil.copy2(cached, dest / name)
        else:
            _repack(package, version, arch, dest)
    index = subprocess.run(
        ["dpkg-scanpackages", "--multiversion", ".", "/dev/null"],
        cwd=dest,
        capture_output=True,
        check=True,
    ).stdout
    (dest / "Packages").write_bytes(index)
    return dest


@contextlib.contextmanager
def booted(cluster, spec):
    """Boot ``spec`` (``{name: init}``) on ``cluster``; always removes them."""
    try:
        yield cluster.add_hosts(spec)
    finally:
        for name in spec:
            with contextlib.suppress(Exception):
                cluster.remove(name)


def _main(argv):
    if argv[:1] == ["build"]:
        started = time.monotonic()
        paths = ensure_images()
        for kind, path in paths.items():
            print(f"{kind:9} {path}")
        print(f"cache ready in {time.monotonic() - started:.1f}s")
        return 0
    print("usage: python -m tests.testbed.hosts build", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))

__all__ = ["INITS", "Host", "Hosts", "booted", "cache_keys", "ensure_images", "REPO"]
