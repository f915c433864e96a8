"""The test bed: a real Salt master plus node sandboxes on one machine.

One implementation for the test suite and ``make demo``. Each node is a network namespace
(own IP on a bridge) plus a private mount and UTS namespace (own hostname, own /etc/munge,
/etc/slurm, spool and log dirs, own tmpfs /run) held open by one long-lived process; the
node's salt-minion and every daemon it starts join that process's namespaces, so they live
inside the node. The master runs on the host, listening on the bridge address.

Why ``nsenter --net=… unshare --mount --uts`` and not ``ip netns exec``: the latter remounts
/sys, which hides the host's cgroup v1 tree, and slurmd then dies with "Unable to initialize
cgroup plugin".

Teardown never kills by name: node processes are found by network namespace (``ip netns
pids``: everything in a node's netns was started by us) and salt-master and salt-api by the
session their leader was started in (pid and start time recorded in the state file), which
every child keeps whatever it renames itself to, also after the leader died. Each is
repeated until nothing is left. :meth:`SandboxCluster.down` also runs at the start of
:meth:`up`, so a run that was killed midway leaves nothing that stops the next one.
"""

import contextlib
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
STATE_ROOT = Path("/var/lib/saltext-slurm-testbed")

# Host paths each node gets a private, initially empty copy of: what a bare machine would
# not have yet, and what must differ between nodes (keys, configs, spools, logs).
PRIVATE_DIRS = (
    "/etc/munge",
    "/etc/slurm",
    "/var/lib/munge",
    "/var/log/munge",
    "/var/lib/slurm",
    "/var/log/slurm",
    "/var/spool/slurmd",
    "/var/spool/slurmctld",
    # accounting (slurm.dbd): MariaDB's data and log; its socket and pid live in /run
    "/var/lib/mysql",
    "/var/log/mysql",
)

# slurm.conf keys this machine needs (DESIGN.md, test bed): no cgroup plugins
BED_CONF_OVERRIDES = {
    "ProctrackType": "proctrack/linuxproc",
    "TaskPlugin": "task/none",
    "JobAcctGatherType": "jobacct_gather/none",
    "SlurmdTimeout": 30,
}


def render_pillar(controller="ctl", **slurm):
    """``slurm:`` pillar for ``slurm.render_conf`` on a bed (overrides from above)."""
    return {
        "cluster_name": "testbed",
        "controller": controller,
        "conf": {"overrides": dict(BED_CONF_OVERRIDES)},
        "partitions": [{"name": "debug", "nodes": "ALL", "default": True}],
        **slurm,
    }


def json_output(stdout):
    """The JSON document of ``salt-run --out=json`` output (progress lines before it are
    skipped). ValueError when there is none."""
    lines = stdout.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith(("{", "[", '"'))), None)
    if start is None:
        raise ValueError("no JSON document in the output")
    return json.loads("\n".join(lines[start:]))


SBIN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


# the master config the README gives for the autopilot (a bed asks for it: autopilot=True)
AUTOPILOT_REACTOR = {
    "reactor": [{"salt/beacon/*/slurm/*": ["salt://slurm/reactor/autopilot.sls"]}],
}


class BedError(RuntimeError):
    """The test bed could not be brought up; the message says which step and why."""


def _ip(*args, check=True):
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise BedError(f"ip {' '.join(args)}: {proc.stderr.strip()}")
    return proc


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child of ours counts as gone
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _reap(pid):
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def _terminate(pids, grace=10.0):
    """SIGTERM ``pids``, wait up to ``grace`` seconds, SIGKILL what is left."""
    pids = [p for p in pids if p != os.getpid()]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        for pid in pids:
            _reap(pid)
        if not any(_alive(p) for p in pids):
            return
        time.sleep(0.1)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for pid in pids:
        _reap(pid)


def _stat(pid):
    """Fields of ``/proc/PID/stat`` after the command name (field 3, the state, first), or
    ``None`` when the process is gone."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()
    except OSError:
        return None


def _start_time(pid):
    """Start time of ``pid`` in clock ticks since boot (stat field 22); ``None`` if gone."""
    fields = _stat(pid)
    return int(fields[19]) if fields else None


def _boot_id():
    with open("/proc/sys/kernel/random/boot_id") as handle:
        return handle.read().strip()


def _session_pids(leader):
    """Live pids of the session a daemon of ours leads (``leader``: ``{"pid", "start",
    "boot"}`` as recorded when it was started with ``start_new_session=True``).

    Every child keeps the leader's session and process group, whatever it renames itself
    to (Salt's EventPublisher, MWorkers) and after the leader died; the kernel keeps a pid
    allocated while any process uses it as a session or group id, so no stranger can hold
    it while one of ours lives. A stranger can have it only after all of ours are gone:
    then a live ``leader`` pid started at another time, a start before the recorded one,
    or another boot says it is not ours."""
    pgid, start = leader.get("pid"), leader.get("start")
    if not pgid or start is None or leader.get("boot") != _boot_id():
        return []
    current = _start_time(pgid)
    if current is not None and current != start:
        return []  # the pid was reused: our session is gone
    found = []
    for entry in os.listdir("/proc"):
        fields = _stat(entry) if entry.isdigit() else None
        if (
            fields
            and fields[0] != "Z"
            and int(fields[2]) == pgid
            and int(fields[3]) == pgid
            and int(fields[19]) >= start
        ):
            found.append(int(entry))
    return found


def _netns_pids(names):
    """Pids of every process in the network namespaces ``names`` (``ip netns pids``): a
    node's minion and every daemon it started, renamed or in a session of its own."""
    pids = []
    for netns in names:
        out = _ip("netns", "pids", netns, check=False).stdout.split()
        pids.extend(int(p) for p in out if p.isdigit())
    return pids


def _stop_all(find, grace=10.0, rounds=5):
    """Terminate what ``find()`` returns until it returns nothing: a process forked while
    the others stop (a respawned worker, a job step) is found in the next round."""

    def live():
        return [pid for pid in find() if pid != os.getpid() and _alive(pid)]

    for _ in range(rounds):
        pids = live()
        if not pids:
            return
        _terminate(pids, grace=grace)
    left = live()
    if left:
        raise BedError(f"processes {left} survived {rounds} rounds of SIGTERM/SIGKILL")


@dataclass
class Node:
    name: str
    ip: str
    netns: str
    veth: str
    dir: Path
    holder_pid: int = 0
    minion_pid: int = 0
    minion_proc: subprocess.Popen = field(default=None, repr=False)

    @property
    def minion_conf_dir(self):
        return self.dir / "salt" / "conf"

    @property
    def minion_log(self):
        return self.dir / "salt" / "minion.log"

    def private_dir(self, path):
        """Host directory that backs ``path`` inside this node."""
        return self.dir / "fs" / path.strip("/").replace("/", "__")


class SandboxCluster:
    """A salt-master on the host and ``nodes`` sandboxes with their own salt-minion.

    ``name`` prefixes every namespace, interface and directory, so a demo and a test run
    can exist side by side (give them different ``subnet`` values too).
    """

    def __init__(
        self,
        name="sxt",
        nodes=("ctl", "n1", "n2", "n3"),
        subnet="10.77.0",
        venv=None,
        auto_accept=True,
        master_ports=(4505, 4506),
        extra_master_config=None,
        log_level="info",
        autopilot=False,
    ):
        if len(name) > 6:
            raise ValueError("bed name must be at most 6 characters (interface name limit)")
        self.name = name
        self.subnet = subnet
        self.master_ip = f"{subnet}.1"
        self.bridge = f"{name}-br"
        self.root = STATE_ROOT / name
        self.venv = Path(venv or sys.prefix)
        self.auto_accept = auto_accept
        self.publish_port, self.ret_port = master_ports
        # merged over the generated master config (e.g. engines and keyvault settings, or
        # external_auth, which the master reads only when it starts)
        self.extra_master_config = dict(extra_master_config or {})
        if autopilot:  # the reactor that runs slurm.heal on the slurm beacon's events
            self.extra_master_config = {**AUTOPILOT_REACTOR, **self.extra_master_config}
        # the master's and minions' log file level (a secrets test raises it: a leak at
        # any level must show)
        self.log_level = log_level
        self.nodes = {}
        for index, node in enumerate(nodes, start=10):
            self.nodes[node] = Node(
                name=node,
                ip=f"{subnet}.{index}",
                netns=f"{name}-{node}",
                veth=f"ve-{name}-{index}",
                dir=self.root / "nodes" / node,
            )
        self.master_proc = None
        self.api_proc = None
        # session leaders of salt-master and salt-api: {"pid", "start", "boot"}
        self._leaders = {}
        self.startup_seconds = None
        self._local = None
        from tests.testbed.hosts import Hosts  # noqa: PLC0415 - hosts imports this module

        # booted hosts (hosts.py): containers with a real init, added by add_host()
        self.hosts = Hosts(self)

    # ------------------------------------------------------------------ paths
    @property
    def master_dir(self):
        return self.root / "master"

    @property
    def master_conf_dir(self):
        return self.master_dir / "conf"

    @property
    def master_log(self):
        return self.master_dir / "master.log"

    @property
    def file_root(self):
        """The master's first ``file_roots:base`` dir (cluster files live under it)."""
        return self.master_dir / "srv" / "salt"

    @property
    def pillar_root(self):
        return self.master_dir / "srv" / "pillar"

    @property
    def api_dir(self):
        """salt-api's certificate, key and users file (its config is in ``master.d``)."""
        return self.root / "salt-api"

    @property
    def api_log(self):
        return self.master_dir / "api.log"

    @property
    def state_file(self):
        return self.root / "bed.json"

    def bin(self, name):
        return str(self.venv / "bin" / name)

    # ------------------------------------------------------------------ lifecycle
    def up(self, timeout=120, start_minions=True):
        """Tear down any leftovers of a previous run, then start master and nodes.

        ``start_minions=False`` brings up the master and the node sandboxes only (e.g. for
        key-bootstrap tests that start each minion themselves)."""
        started = time.monotonic()
        self.down(keep_files=False)
        self.root.mkdir(parents=True, exist_ok=True)
        self._write_master_config()
        self._create_network()
        self._start_master()
        for node in self.nodes.values():
            self._start_holder(node)
        for node in self.nodes.values():
            self._wait_holder(node)
            if start_minions:
                self.start_minion(node.name)
        self._save_state()
        self._wait_master()
        if start_minions:
            self.wait_for_minions(list(self.nodes), timeout=timeout)
        self.startup_seconds = time.monotonic() - started
        return self

    def down(self, keep_files=True):
        """Stop everything this bed started (by pid) and remove its namespaces and bridge."""
        self._local = None
        state = self._load_state()
        # booted hosts first (their veths hang on the bridge): this object's, and those a
        # killed run recorded in the state file
        self.hosts.load(state.get("hosts"))
        self.hosts.down()
        netns_prefix = f"{self.name}-"
        listed = _ip("netns", "list", check=False).stdout.split("\n")
        stale = [line.split()[0] for line in listed if line.startswith(netns_prefix)]
        # the sandboxes are thrown away: 3 s for a clean exit is plenty (a salt-minion
        # takes 3-7 s to stop, which helps nothing here), then SIGKILL
        _stop_all(lambda: _netns_pids(stale), grace=3)
        for daemon in ("api", "master"):
            self._stop_daemon(daemon, state)
        for netns in stale:
            _ip("netns", "delete", netns, check=False)
        # a namespace the kernel keeps a while (a socket's last reference) keeps its veth on
        # the host, and the next up() fails with "File exists": delete them by name
        for node in self.nodes.values():
            if _ip("link", "show", node.veth, check=False).returncode == 0:
                _ip("link", "delete", node.veth, check=False)
        if _ip("link", "show", self.bridge, check=False).returncode == 0:
            _ip("link", "delete", self.bridge, check=False)
        for node in self.nodes.values():
            node.holder_pid = node.minion_pid = 0
            node.minion_proc = None
        if self.state_file.exists():
            self.state_file.unlink()
        if not keep_files and self.root.exists():
            shutil.rmtree(self.root)

    def __enter__(self):
        return self.up()

    def __exit__(self, *exc):
        self.down()

    # ------------------------------------------------------------------ master
    def _write_master_config(self):
        for path in (self.master_conf_dir, self.file_root, self.pillar_root):
            path.mkdir(parents=True, exist_ok=True)
        states_root = self.master_dir / "states"
        states_root.mkdir(exist_ok=True)
        (states_root / "slurm").symlink_to(REPO / "states")
        config = {
            "id": f"{self.name}-master",
            "root_dir": str(self.master_dir),
            "conf_file": str(self.master_conf_dir / "master"),
            "pki_dir": str(self.master_dir / "pki"),
            "cachedir": str(self.master_dir / "cache"),
            "sock_dir": str(self.master_dir / "sock"),
            "pidfile": str(self.master_dir / "master.pid"),
            "log_file": str(self.master_log),
            "log_level_logfile": self.log_level,
            "interface": self.master_ip,
            "publish_port": self.publish_port,
            "ret_port": self.ret_port,
            "user": "root",
            "auto_accept": self.auto_accept,
            "worker_threads": 4,
            "file_roots": {"base": [str(self.file_root), str(states_root)]},
            "pillar_roots": {"base": [str(self.pillar_root)]},
            "keep_jobs_seconds": 3600,
            "enable_ssh_minions": False,
            **self.extra_master_config,
        }
        with open(self.master_conf_dir / "master", "w") as handle:
            json.dump(config, handle, indent=2)  # JSON is YAML

    def _spawn_master_daemon(self, daemon, stdout_path):
        """Start ``salt-DAEMON`` (``master``, ``api``) on the master's config in a session
        of its own; its leader's pid and start time are how ``down()`` finds every process
        of it again (see :func:`_session_pids`; by pid, never by name)."""
        with open(stdout_path, "ab") as log:
            proc = subprocess.Popen(
                [self.bin(f"salt-{daemon}"), "-c", str(self.master_conf_dir), "-l", "warning"],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env={**os.environ, "PATH": f"{self.venv / 'bin'}:{SBIN_PATH}"},
            )
        self._leaders[daemon] = {
            "pid": proc.pid,
            "start": _start_time(proc.pid),
            "boot": _boot_id(),
        }
        return proc

    def _start_master(self):
        self.master_proc = self._spawn_master_daemon("master", self.master_dir / "master.stdout")
        self._save_state()

    def _stop_daemon(self, daemon, state=None):
        """Stop the salt-master (``daemon="master"``) or salt-api (``"api"``) and every
        process of its session, from the leader recorded when it started (this object's,
        else the state file's: a bed left by a killed run)."""
        attr = f"{daemon}_proc"
        proc = getattr(self, attr)
        leader = self._leaders.pop(daemon, None)
        if leader is None:
            leader = (self._load_state() if state is None else state).get(daemon) or {}
        _stop_all(lambda: _session_pids(leader), grace=15)
        if proc is not None:
            _reap(proc.pid)
            setattr(self, attr, None)

    def _wait_master(self, timeout=60):
        """Wait until the master takes connections, so clients never see a half-up master."""
        sock = self.master_dir / "sock"
        needed = [
            sock / "publish_pull.ipc",
            sock / "master_event_pub.ipc",
            self.master_dir / "cache" / ".root_key",
        ]
        deadline = time.monotonic() + timeout
        while True:
            if self.master_proc is not None and self.master_proc.poll() is not None:
                raise BedError(f"salt-master exited:\n{self.tail_logs([])}")
            if all(p.exists() for p in needed):
                with (
                    contextlib.suppress(OSError),
                    socket.create_connection((self.master_ip, self.ret_port), timeout=1),
                ):
                    return
            if time.monotonic() > deadline:
                raise BedError(f"salt-master not ready after {timeout}s:\n{self.tail_logs([])}")
            time.sleep(0.2)

    def restart_master(self, timeout=60):
        """Stop the salt-master (every process of its session, see :func:`_session_pids`)
        and start it again."""
        self._stop_daemon("master")
        self._local = None
        self._start_master()
        self._wait_master(timeout)

    # ------------------------------------------------------------------ salt-api
    def start_salt_api(self, users, port=8000, timeout=60):
        """Start a real ``salt-api`` (rest_cherrypy) for this bed on ``https://master_ip:port``.

        ``users`` is ``{name: password}`` for the ``file`` eauth: written as SHA-256 hex
        digests to ``api_dir/users``, where the bed's ``external_auth`` (constructor
        ``extra_master_config``: the master reads it only at start) must point with
        ``^filename``, ``^filetype: text``, ``^hashtype: sha256``. TLS with a self-signed
        certificate for the master's IP (``api_dir/cert.pem``, what clients pass to
        ``--cacert``) rather than ``disable_ssl``: the bed then runs the configuration the
        README tells admins to run, and curl really verifies the server. The config goes to
        ``master.d/salt-api.conf`` (salt-api reads the master's config; the running master
        needs none of it). Returns the base URL.
        """
        import hashlib  # noqa: PLC0415

        self.stop_salt_api()
        self.api_dir.mkdir(parents=True, exist_ok=True)
        cert, key = self._write_api_cert()
        users_file = self.api_dir / "users"
        eauth = self.extra_master_config.get("external_auth", {}).get("file", {})
        if eauth.get("^filename") != str(users_file):
            raise BedError(
                f"salt-api: external_auth:file:^filename must be {users_file} in the bed's "
                f"extra_master_config (the master reads it only at start), got {eauth or None}"
            )
        users_file.write_text(
            "".join(
                f"{name}:{hashlib.sha256(password.encode()).hexdigest()}\n"
                for name, password in users.items()
            )
        )
        users_file.chmod(0o600)
        include_dir = self.master_conf_dir / "master.d"
        include_dir.mkdir(exist_ok=True)
        config = {
            "rest_cherrypy": {
                "host": self.master_ip,
                "port": port,
                "ssl_crt": str(cert),
                "ssl_key": str(key),
            },
            "netapi_enable_clients": ["local", "runner"],
            # under root_dir: Salt prepends root_dir to any other path
            "api_logfile": str(self.api_log),
            "api_pidfile": str(self.master_dir / "api.pid"),
        }
        (include_dir / "salt-api.conf").write_text(json.dumps(config, indent=2))
        self.api_proc = self._spawn_master_daemon("api", self.api_dir / "api.stdout")
        self._save_state()
        deadline = time.monotonic() + timeout
        while True:
            if self.api_proc.poll() is not None:
                raise BedError(f"salt-api exited:\n{self.tail_logs([])}")
            with contextlib.suppress(OSError):
                socket.create_connection((self.master_ip, port), timeout=1).close()
                return f"https://{self.master_ip}:{port}"
            if time.monotonic() > deadline:
                raise BedError(f"salt-api not listening after {timeout}s:\n{self.tail_logs([])}")
            time.sleep(0.2)

    def stop_salt_api(self):
        """Stop the salt-api this bed started (every process of its session, by pid)."""
        self._stop_daemon("api")
        if self.state_file.exists():
            self._save_state()

    def _write_api_cert(self):
        """Self-signed certificate and key (0600) for the master's IP: the same helper that
        makes the KeyVault endpoint's certificate."""
        from salt_ext.lib.keyvault import vault  # noqa: PLC0415

        cert, key = vault.ensure_tls_cert(str(self.api_dir), ips=[self.master_ip])
        return Path(cert), Path(key)

    def master_opts(self):
        import salt.config  # noqa: PLC0415 - salt is heavy; only when talking to the master

        return salt.config.client_config(str(self.master_conf_dir / "master"))

    # ------------------------------------------------------------------ network
    def _create_network(self):
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("addr", "add", f"{self.master_ip}/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        for node in self.nodes.values():
            _ip("netns", "add", node.netns)
            _ip(
                "link",
                "add",
                node.veth,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                node.netns,
            )
            _ip("link", "set", node.veth, "master", self.bridge, "up")
            _ip("-n", node.netns, "addr", "add", f"{node.ip}/24", "dev", "eth0")
            _ip("-n", node.netns, "link", "set", "eth0", "up")
            _ip("-n", node.netns, "link", "set", "lo", "up")
            _ip("-n", node.netns, "route", "add", "default", "via", self.master_ip)

    def hosts_file(self):
        lines = ["127.0.0.1 localhost", f"{self.master_ip} salt saltmaster"]
        lines += [f"{n.ip} {n.name}" for n in self.nodes.values()]
        lines += [f"{h.ip} {h.name}" for h in self.hosts.hosts.values()]
        path = self.root / "hosts"
        path.write_text("\n".join(lines) + "\n")  # same inode: the nodes' bind mounts see it
        return path

    def address(self, name):
        """IP of sandbox node or booted host ``name``."""
        if name in self.hosts.hosts:
            return self.hosts.hosts[name].ip
        return self.nodes[name].ip

    def resolv_conf(self):
        """The nodes' /etc/resolv.conf: no DNS in a sandbox (its network ends at the bridge),
        names come from /etc/hosts. A name lookup that asks DNS (e.g. Salt's ``fqdn_ip6``
        grain, ``getent hosts``) is refused at once instead of waiting 10 s for the host's
        unreachable name server; that wait came twice in every salt-minion start."""
        path = self.root / "resolv.conf"
        path.write_text(
            "# test bed node: no DNS, names come from /etc/hosts\n"
            "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n"
        )
        return path

    # ------------------------------------------------------------------ nodes
    def _start_holder(self, node):
        hosts = self.hosts_file()
        resolv = self.resolv_conf()
        node.dir.mkdir(parents=True, exist_ok=True)
        ready = node.dir / "ready"
        script = ["set -e", f"hostname {node.name}"]
        for path in PRIVATE_DIRS:
            backing = node.private_dir(path)
            backing.mkdir(parents=True, exist_ok=True)
            os.makedirs(path, exist_ok=True)  # mount point; harmless on the host
            script.append(f"mount --bind {backing} {path}")
        script += [
            f"mount --bind {hosts} /etc/hosts",
            f"mount --bind {resolv} /etc/resolv.conf",
            "mount -t tmpfs -o mode=0755 tmpfs /run",
            "mkdir -p /run/lock",
            f"touch {ready}",
            "exec sleep infinity",
        ]
        log = open(node.dir / "holder.log", "ab")  # noqa: SIM115
        proc = subprocess.Popen(
            [
                "nsenter",
                f"--net=/var/run/netns/{node.netns}",
                "unshare",
                "--mount",
                "--uts",
                "--propagation",
                "private",
                "/bin/sh",
                "-c",
                "\n".join(script),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        node.holder_pid = proc.pid

    def _wait_holder(self, node, timeout=20):
        ready = node.dir / "ready"
        deadline = time.monotonic() + timeout
        while not ready.exists():
            if not _alive(node.holder_pid) or time.monotonic() > deadline:
                log = (node.dir / "holder.log").read_text(errors="replace")
                raise BedError(f"node {node.name}: sandbox did not come up:\n{log}")
            time.sleep(0.05)

    def nsenter(self, node_name):
        """Argument prefix that runs a command inside node ``node_name`` (a sandbox, or a
        booted host: the namespaces of its PID 1)."""
        if node_name in self.hosts.hosts:
            return self.hosts.nsenter(node_name)
        node = self.nodes[node_name]
        return ["nsenter", "-t", str(node.holder_pid), "--mount", "--uts", "--net", "--"]

    def minion_config(self, node, venv=None):
        sdir = node.dir / "salt"
        return {
            "id": node.name,
            "master": self.master_ip,
            "master_port": self.ret_port,
            "publish_port": self.publish_port,
            "root_dir": str(sdir),
            "conf_file": str(node.minion_conf_dir / "minion"),
            "pki_dir": str(sdir / "pki"),
            "cachedir": str(sdir / "cache"),
            "sock_dir": str(sdir / "sock"),
            "pidfile": str(sdir / "minion.pid"),
            "log_file": str(node.minion_log),
            "log_level_logfile": self.log_level,
            "user": "root",
            "acceptance_wait_time": 1,
            "acceptance_wait_time_max": 2,
            "random_reauth_delay": 0,
            "recon_default": 200,
            "recon_max": 1000,
            "ipv6": False,
            "grains_cache": False,
        }

    def start_minion(self, node_name, venv=None, extra_config=None):
        """Start (or restart) the salt-minion inside node ``node_name``.

        ``venv`` runs the minion from another virtualenv (e.g. one without this extension).
        """
        node = self.nodes[node_name]
        if node.minion_pid and _alive(node.minion_pid):
            _terminate([node.minion_pid])
        node.minion_conf_dir.mkdir(parents=True, exist_ok=True)
        config = {**self.minion_config(node), **(extra_config or {})}
        with open(node.minion_conf_dir / "minion", "w") as handle:
            json.dump(config, handle, indent=2)
        venv_bin = Path(venv or self.venv) / "bin"
        log = open(node.dir / "minion.stdout", "ab")  # noqa: SIM115
        proc = subprocess.Popen(
            [
                *self.nsenter(node_name),
                str(venv_bin / "salt-minion"),
                "-c",
                str(node.minion_conf_dir),
                "-l",
                "warning",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd="/",
            env={"PATH": f"{venv_bin}:{SBIN_PATH}", "LANG": "C.UTF-8", "HOME": "/root"},
        )
        log.close()
        node.minion_proc = proc
        node.minion_pid = proc.pid
        return proc

    def stop_minion(self, node_name):
        node = self.nodes[node_name]
        if node.minion_pid:
            _terminate([node.minion_pid])
        node.minion_pid = 0

    # ------------------------------------------------------------------ state file
    def _save_state(self):
        state = {
            "master": self._leaders.get("master"),
            "api": self._leaders.get("api"),
            "nodes": {n.name: {"holder": n.holder_pid, "ip": n.ip} for n in self.nodes.values()},
            "hosts": self.hosts.state(),
            "master_ip": self.master_ip,
            "root": str(self.root),
        }
        self.state_file.write_text(json.dumps(state, indent=2))

    def _load_state(self):
        try:
            return json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return {}

    def attach(self):
        """Re-attach to a running bed (e.g. ``make demo`` then ``python -m tests.testbed``)."""
        state = self._load_state()
        if not state:
            raise BedError(f"no running test bed '{self.name}' ({self.state_file} missing)")
        for name, info in state["nodes"].items():
            self.nodes[name].holder_pid = info["holder"]
        self.hosts.load(state.get("hosts"))
        return self

    # ------------------------------------------------------------------ booted hosts
    def add_host(self, name, init="systemd", timeout=120):
        """Boot a Debian 12 container with ``init`` (systemd, sysvinit, openrc) as PID 1 on
        this bed's bridge (see hosts.py); waits for its minion; returns the Host."""
        return self.add_hosts({name: init}, timeout=timeout)[name]

    def add_hosts(self, spec, timeout=120):
        """Boot ``{name: init}`` in parallel; waits for every minion."""
        added = {name: self.hosts.add(name, init) for name, init in spec.items()}
        self.hosts_file()
        self.hosts.sync_hosts_files()
        self.wait_for_minions(list(spec), timeout=timeout)
        return added

    def reboot(self, names, timeout=120):
        """Reboot booted hosts; ``{name: seconds until its minion answers again}``."""
        return self.hosts.reboot(list(names), timeout=timeout)

    def poweroff(self, name, timeout=60):
        self.hosts.poweroff(name, timeout=timeout)

    def boot(self, name, timeout=120):
        """Boot a powered-off host again (its disk, the overlay's upper dir, is kept)."""
        self.hosts.boot(name)
        self.wait_for_minions([name], timeout=timeout)

    def remove(self, name):
        """Stop a booted host and delete its disk and minion key."""
        self.hosts.remove(name)
        self.hosts_file()
        self.hosts.sync_hosts_files()

    # ------------------------------------------------------------------ talking to it
    def run(self, node_name, argv, timeout=60, check=False, stdin=None):
        """Run ``argv`` inside node ``node_name``; returns ``CompletedProcess`` (text)."""
        return subprocess.run(
            [*self.nsenter(node_name), *argv],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=check,
            input=stdin,
            cwd="/",
            env={"PATH": SBIN_PATH, "LANG": "C.UTF-8", "HOME": "/root"},
        )

    def cli(self, argv, timeout=300, check=False):
        """Run a salt CLI (``salt``, ``salt-run``, ``salt-key``, …) against this master."""
        name, *rest = argv
        return subprocess.run(
            [self.bin(name), "-c", str(self.master_conf_dir), *rest],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=check,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "PATH": f"{self.venv / 'bin'}:{SBIN_PATH}"},
        )

    def _client(self):
        import salt.client  # noqa: PLC0415

        if self._local is None:
            self._local = salt.client.LocalClient(mopts=self.master_opts())
        return self._local

    def salt(self, target, fun, arg=(), timeout=120, tgt_type="glob", **kwarg):
        """``salt TARGET FUN ARG...`` through the master; returns ``{minion: return}``."""
        # LocalClient prints "No minions matched the target" itself; keep stdout clean
        with contextlib.redirect_stdout(io.StringIO()):
            return self._client().cmd(
                target,
                fun,
                arg=list(arg),
                kwarg=kwarg or None,
                timeout=timeout,
                tgt_type=tgt_type,
            )

    def _ping(self, names, timeout=2):
        """``test.ping`` on ``names`` that gives up on a silent minion after ``timeout``
        seconds and one second of ``saltutil.find_job`` (Salt's default gather_job_timeout
        adds 10 s to every round a just-started minion is not connected yet)."""
        with contextlib.redirect_stdout(io.StringIO()):
            return self._client().cmd(
                names, "test.ping", timeout=timeout, tgt_type="list", gather_job_timeout=1
            )

    def wait_for_minions(self, names, timeout=120):
        from salt.exceptions import AuthenticationError, SaltClientError  # noqa: PLC0415

        deadline = time.monotonic() + timeout
        missing = set(names)
        while missing:
            for name in list(missing):
                if name in self.hosts.hosts:
                    if not self.hosts.running(name):
                        raise BedError(f"host {name} is not running:\n{self.hosts.console(name)}")
                    continue
                pid = self.nodes[name].minion_pid
                if pid and not _alive(pid):
                    raise BedError(f"salt-minion of {name} exited:\n{self.tail_logs([name])}")
            if self.master_proc is not None and self.master_proc.poll() is not None:
                raise BedError(f"salt-master exited:\n{self.tail_logs([])}")
            try:
                answered = self._ping(sorted(missing))
            except (SaltClientError, AuthenticationError):  # master still starting
                self._local = None  # it caches the master's root key, re-read it next time
                answered = {}
            missing -= {m for m, ok in answered.items() if ok is True}
            if missing and time.monotonic() > deadline:
                raise BedError(
                    f"minions {sorted(missing)} did not answer within {timeout}s:\n"
                    + self.tail_logs(sorted(missing))
                )
            if missing:
                time.sleep(0.5)

    # ------------------------------------------------------------------ cluster files
    def write_pillar(self, slurm, per_minion=None, refresh=True):
        """Serve ``{"slurm": slurm}`` to every minion; ``per_minion`` adds pillar data for
        single minions (merged over the common part), e.g. ``{"n3": {"slurm": {...}}}``.
        Every minion's in-memory pillar is refreshed before this returns, unless
        ``refresh=False`` (enough when only runners, which compile pillar themselves, and
        state runs, which do too, read the change)."""
        for old in self.pillar_root.glob("*.sls"):
            old.unlink()
        files = {"slurm.sls": {"slurm": slurm}}
        top = {"base": {"*": ["slurm"]}}
        for minion, data in (per_minion or {}).items():
            files[f"minion_{minion}.sls"] = data
            top["base"][minion] = [f"minion_{minion}"]
        files["top.sls"] = top
        for name, data in files.items():
            (self.pillar_root / name).write_text(json.dumps(data, indent=2))
        # execution modules read the minion's in-memory pillar: refresh it now
        if refresh:
            self.salt("*", "saltutil.refresh_pillar", wait=True, timeout=60)

    def cluster_files_dir(self):
        path = self.file_root / "slurm_files"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def write_slurm_conf(self, text):
        (self.cluster_files_dir() / "slurm.conf").write_text(text)

    def deploy(self, pillar, timeout=900):
        """Bare machines -> Slurm cluster the way the README tells an admin: the ``slurm:``
        pillar on the master, then ``salt-run slurm.deploy`` (munge key, hardware in the
        mine, rendered slurm.conf, controller, nodes, ``slurm.verify``). The one way a bed
        becomes a cluster: no second conf generator in the tests.

        Returns ``(summary, CompletedProcess)``; ``summary`` is the runner's JSON return."""
        self.write_pillar(pillar)
        proc = self.cli(["salt-run", "--out=json", "slurm.deploy"], timeout=timeout)
        try:
            summary = json_output(proc.stdout)
        except ValueError as exc:
            raise BedError(
                f"slurm.deploy gave no JSON (rc={proc.returncode}): {exc}\n"
                f"{proc.stdout[-3000:]}{proc.stderr[-3000:]}"
            ) from exc
        return summary, proc

    # ------------------------------------------------------------------ diagnosis
    def log_paths(self):
        """Every log this bed produces: master, and per node minion, munged, slurm daemons."""
        paths = {"master": self.master_log, "master.stdout": self.master_dir / "master.stdout"}
        if self.api_dir.is_dir():
            paths["master.salt-api"] = self.api_log
            paths["master.salt-api.stdout"] = self.api_dir / "api.stdout"
        for node in self.nodes.values():
            paths[f"{node.name}/minion"] = node.minion_log
            paths[f"{node.name}/minion.stdout"] = node.dir / "minion.stdout"
            for log_dir in ("/var/log/munge", "/var/log/slurm", "/var/log/mysql"):
                backing = node.private_dir(log_dir)
                if backing.is_dir():
                    for log_file in sorted(backing.iterdir()):
                        paths[f"{node.name}{log_dir}/{log_file.name}"] = log_file
        paths.update(self.hosts.log_paths())
        return paths

    def tail_logs(self, nodes=None, lines=40):
        """Last ``lines`` of each log (all nodes, or ``nodes``) as one printable string."""
        out = []
        self.hosts.refresh_journals()
        for label, path in self.log_paths().items():
            owner = label.split("/", 1)[0]
            if nodes is not None and owner not in nodes and not owner.startswith("master"):
                continue
            try:
                text = Path(path).read_text(errors="replace").splitlines()[-lines:]
            except OSError:
                continue
            if text:
                out.append(f"----- {label} ({path}) -----")
                out.extend(text)
        return "\n".join(out)
