"""The keyvault engine's HTTPS layer on loopback, without a salt-master: statuses, a full
redeem through the node client's pinned POST, and the connection cap."""

import concurrent.futures
import http.client
import io
import json
import multiprocessing
import os
import re
import signal
import socket
import ssl
import threading
import time
from unittest import mock

import pytest
import salt.utils.crypt
import salt.utils.process
import yaml

from salt_ext.engines import keyvault as engine
from salt_ext.lib.keyvault import client
from salt_ext.lib.keyvault import vault as kv
from tests.flood import Flood


class Events:
    def __init__(self):
        self.fired = []

    def fire(self, tag, data):
        self.fired.append((tag, data))


# small limits so the tests can reach them; header_timeout/request_timeout short enough to
# watch a deadline fire within a test
LIMITS = {
    "header_timeout": 1.5,
    "request_timeout": 4,
    "max_connections": 24,
    "max_per_address": 4,
    "workers": 2,
    "reject_log_interval": 1,
    "reject_log_burst": 3,
}


def _serve(tmp_path, **limits):
    pki = tmp_path / "pki"
    pki.mkdir(exist_ok=True)
    if not (pki / "master.pem").exists():
        priv, pub = kv.generate_minion_keypair()
        (pki / "master.pem").write_text(priv)
        (pki / "master.pub").write_text(pub)
    opts = {
        "pki_dir": str(pki),
        "cachedir": str(tmp_path / "cache"),
        "interface": "127.0.0.1",
        "engines": [{"keyvault": {"port": 1}}],
    }
    cfg = kv.settings(opts)
    cert, key = kv.tls_files(opts, cfg)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    events = Events()
    limits = engine.engine_limits({**LIMITS, **limits})
    vault = engine.Vault(opts, cfg, events, limits)
    server = engine.Server(("127.0.0.1", 0), context, vault, limits)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1})
    thread.start()
    info = {
        "opts": opts,
        "port": server.server_address[1],
        "url": f"https://127.0.0.1:{server.server_address[1]}/v1/redeem",
        "tls_finger": kv.cert_finger_file(cert),
        "master_pub": (pki / "master.pub").read_text(),
        "events": events,
        "pki": pki,
        "server": server,
        "limits": limits,
    }

    def stop():
        server.shutdown()
        server.server_close()
        thread.join(5)

    return info, stop


@pytest.fixture
def served(tmp_path):
    info, stop = _serve(tmp_path)
    yield info
    stop()


def _request(served, method, path, body=b"", ctype="application/json", source="127.0.0.1"):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    conn = http.client.HTTPSConnection(
        "127.0.0.1", served["port"], context=ctx, timeout=10, source_address=(source, 0)
    )
    try:
        conn.request(method, path, body or None, {"Content-Type": ctype} if ctype else {})
        resp = conn.getresponse()
        return resp.status, resp.getheader("Connection"), resp.read()
    finally:
        conn.close()


@pytest.mark.parametrize(
    "method,path,body,ctype,status",
    [
        ("GET", "/v1/health", b"", None, 200),
        ("GET", "/v1/redeem", b"", None, 405),
        ("POST", "/v1/health", b"{}", "application/json", 405),
        ("POST", "/nope", b"{}", "application/json", 404),
        ("POST", "/v1/redeem", b"{}", "text/plain", 415),
        ("POST", "/v1/redeem", b"{oops", "application/json", 400),
        ("POST", "/v1/redeem", b"{}", "application/json; charset=utf-8", 403),
        ("POST", "/v1/redeem", b"x" * (engine.MAX_BODY + 1), "application/json", 413),
        ("DELETE", "/v1/redeem", b"", None, 405),
        # a body sent after the headers (http.client does) is read before the answer: closing
        # on it unread would reset the connection and lose the answer
        ("GET", "/v1/redeem", b"{}", "application/json", 405),
        ("PUT", "/v1/redeem", b"{}", "application/json", 405),
        ("GET", "/v1/health", b"x" * 1000, None, 200),
    ],
)
def test_statuses_and_one_request_per_connection(served, method, path, body, ctype, status):
    got, connection, raw = _request(served, method, path, body, ctype)
    assert got == status and connection == "close"
    if status == 403:
        assert json.loads(raw) == {"error": "rejected"}
        assert served["events"].fired[-1][0] == "salt/keyvault/redeem/rejected"


def test_full_redeem_through_the_node_client(served):
    store = kv.open_store(served["opts"])
    _, token = store.issue("node9", 60)
    minion_pub = kv.generate_minion_keypair()[1]
    request = kv.build_request(token, "node9", minion_pub)
    status, response = client.pinned_post(served["url"], request, served["tls_finger"])
    assert status == 200
    master_pub = kv.check_response(token, request, response, kv.pem_finger(served["master_pub"]))
    assert master_pub == served["master_pub"]
    assert (served["pki"] / "minions" / "node9").read_text() == minion_pub
    tags = [tag for tag, _ in served["events"].fired]
    assert tags == ["salt/keyvault/redeem/accepted", "salt/key"]
    status, _ = client.pinned_post(served["url"], request, served["tls_finger"])
    assert status == 403
    assert served["events"].fired[-1][1]["reason"] == "consumed"


def _connect(served, source, timeout=5):
    sock = socket.socket()
    sock.bind((source, 0))
    sock.settimeout(timeout)
    sock.connect(("127.0.0.1", served["port"]))
    return sock


def _closed_by_server(sock, timeout):
    sock.settimeout(timeout)
    try:
        return sock.recv(10) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def _legitimate(served, source, count=10):
    """``count`` health checks and one full redeem from ``source``: their statuses."""
    statuses = []
    for _ in range(count):
        try:
            statuses.append(_request(served, "GET", "/v1/health", ctype=None, source=source)[0])
        except OSError as err:
            statuses.append(type(err).__name__)
    store = kv.open_store(served["opts"])
    _, token = store.issue(f"legit-{len(store.list())}", 60)
    request = kv.build_request(
        token, f"legit-{len(store.list()) - 1}", kv.generate_minion_keypair()[1]
    )
    try:
        statuses.append(
            _request(served, "POST", "/v1/redeem", json.dumps(request).encode(), source=source)[0]
        )
    except OSError as err:
        statuses.append(type(err).__name__)
    return statuses


def test_idle_flood_from_one_address_does_not_starve_another(served):
    """300 idle connections from 127.0.0.3, re-opened as soon as they are cut: the
    per-address cap keeps them to a few slots, and 127.0.0.2 is served."""
    with Flood("127.0.0.1", served["port"], "127.0.0.3", 300) as flood:
        statuses = _legitimate(served, "127.0.0.2")
    assert statuses == [200] * 11, statuses
    assert flood.cut > 0  # the flood was being cut, not just parked


def test_trickling_tls_flood_does_not_starve_another_address(served):
    with Flood("127.0.0.1", served["port"], "127.0.0.3", 300, trickle=0.2) as flood:
        time.sleep(0.5)
        statuses = _legitimate(served, "127.0.0.2")
    assert statuses == [200] * 11, statuses
    assert flood.cut > 0


@pytest.fixture
def patient(tmp_path):
    """A server whose header deadline does not fire while a test looks at its sockets."""
    info, stop = _serve(tmp_path, header_timeout=10, request_timeout=15)
    yield info
    stop()


def test_idle_newcomers_from_the_same_address_never_cut_a_client_that_spoke(patient):
    """The flood shares 127.0.0.2 with the real client (one NAT, or the attacker on the
    node): a full address cuts its connections that never sent a byte to make room, never
    one that has started its TLS handshake (only one silent for STALE_AFTER). So a real
    client is only at risk between its connect and its ClientHello (bench: "same
    address"); an attacker trickling bytes from the client's own address is not handled."""
    cap = patient["limits"]["max_per_address"]
    idle = [_connect(patient, "127.0.0.2") for _ in range(cap - 1)]
    talking = _tls_connect(patient, "127.0.0.2")
    try:
        newcomers = [_connect(patient, "127.0.0.2") for _ in range(cap * 3)]
        time.sleep(0.3)
        assert all(_closed_by_server(sock, 0.5) for sock in idle)
        talking.sendall(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert talking.recv(100).startswith(b"HTTP/1.1 200 ")
        assert sum(not _closed_by_server(sock, 0.1) for sock in newcomers) == cap - 1
    finally:
        for sock in idle + newcomers:
            sock.close()
        talking.close()


def test_per_address_cap_cuts_the_oldest_connection_that_never_spoke(patient):
    cap = patient["limits"]["max_per_address"]
    idle = [_connect(patient, "127.0.0.3") for _ in range(cap)]
    try:
        time.sleep(0.3)
        newcomer = _connect(patient, "127.0.0.3")
        assert _closed_by_server(idle[0], 3)
        assert not any(_closed_by_server(sock, 0.2) for sock in idle[1:])
        assert not _closed_by_server(newcomer, 0.2)
        newcomer.close()
    finally:
        for sock in idle:
            sock.close()


def test_a_source_using_all_its_slots_back_to_back_is_never_reset(served):
    """max_per_address clients on one address, each sending its next request as soon as it
    has its answer: a connection whose answer was just sent no longer holds a slot, even
    before the accept loop has noticed the worker closed it."""
    cap = served["limits"]["max_per_address"]

    def client(_):
        return [
            _request(served, "GET", "/v1/health", ctype=None, source="127.0.0.3")[0]
            for _ in range(15)
        ]

    with concurrent.futures.ThreadPoolExecutor(cap) as pool:
        statuses = [status for got in pool.map(client, range(cap)) for status in got]
    assert statuses == [200] * (15 * cap)


def test_global_cap_takes_room_from_the_heaviest_address(tmp_path):
    """Full (8 slots: 4 from .3, 4 from .4): a connection from .5 gets in by cutting one of
    the heaviest address's connections, not by being refused."""
    served, stop = _serve(tmp_path, max_connections=8, header_timeout=10, request_timeout=15)
    socks = []
    try:
        socks = [_connect(served, f"127.0.0.{3 + i // 4}") for i in range(8)]
        time.sleep(0.3)
        newcomer = _connect(served, "127.0.0.5")
        assert not _closed_by_server(newcomer, 0.3)
        assert sum(_closed_by_server(sock, 0.3) for sock in socks) == 1
        assert _request(served, "GET", "/v1/health", ctype=None, source="127.0.0.6")[0] == 200
        newcomer.close()
    finally:
        for sock in socks:
            sock.close()
        stop()


def _tls_connect(served, source="127.0.0.1"):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx.wrap_socket(_connect(served, source, timeout=10))


def _trickle_until_cut(tls, data, every, give_up):
    started = time.monotonic()
    try:
        for byte in data:
            tls.sendall(bytes([byte]))
            time.sleep(every)
            if time.monotonic() - started > give_up:
                return None
    except OSError:
        return time.monotonic() - started
    tls.settimeout(give_up)
    try:
        tls.recv(10)
    except (ssl.SSLError, OSError):
        pass
    return time.monotonic() - started


def test_trickling_headers_are_cut_at_the_header_deadline(served):
    """A byte every 0.2 s never trips any per-recv timeout; the handshake+header deadline
    (1.5 s here) still ends the connection."""
    tls = _tls_connect(served)
    header = b"POST /v1/redeem HTTP/1.1\r\nContent-Type: application/json\r\n" + b"X" * 200
    cut_after = _trickle_until_cut(tls, header, 0.2, 8)
    tls.close()
    assert cut_after is not None and 1.2 < cut_after < 3, cut_after


def test_trickling_body_is_cut_at_the_request_deadline(served):
    """Headers at once, then the body a byte every 0.2 s: cut at the whole-request deadline
    (4 s here), not at the header deadline."""
    tls = _tls_connect(served)
    tls.sendall(
        b"POST /v1/redeem HTTP/1.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: 1000\r\n\r\n"
    )
    cut_after = _trickle_until_cut(tls, b"[" * 1000, 0.2, 12)
    tls.close()
    assert cut_after is not None and 3.5 < cut_after < 6, cut_after


def test_cap_warnings_are_rate_limited(served, caplog):
    cap = served["limits"]["max_per_address"]
    with caplog.at_level("WARNING", logger=engine.log.name):
        socks = [_connect(served, "127.0.0.3") for _ in range(cap * 4)]
        time.sleep(0.5)
        for sock in socks:
            sock.close()
    drops = [r for r in caplog.records if "connection limit" in r.getMessage()]
    assert len(drops) == 1, [r.getMessage() for r in drops]


@pytest.mark.parametrize("body", [b"[" * 65536, b"{" * 65536, b'{"a":' * 13000 + b"1"])
def test_deeply_nested_json_is_a_400(served, body):
    status, connection, raw = _request(served, "POST", "/v1/redeem", body)
    assert (status, connection) == (400, "close")
    assert json.loads(raw) == {"error": "body is not JSON"}


def test_any_json_parser_failure_is_a_400(served, monkeypatch):
    def broken(_raw):
        raise MemoryError

    monkeypatch.setattr(engine.json, "loads", broken)
    assert _request(served, "POST", "/v1/redeem", b"{}")[0] == 400


def _rejections(served, caplog):
    lines = [
        r.getMessage() for r in caplog.records if "keyvault: redeem rejected" in r.getMessage()
    ]
    events = [d for t, d in served["events"].fired if t == "salt/keyvault/redeem/rejected"]
    return lines, events


def test_rejections_are_logged_once_per_burst_then_summarised(served, caplog):
    """12 bad requests from one source: the first 3 (the burst) are logged and evented one
    by one, the other 9 in one summary line and one summary event after the interval; a
    second source still gets its first rejection logged at once."""
    with caplog.at_level("WARNING", logger=engine.log.name):
        for _ in range(12):
            assert _request(served, "POST", "/v1/redeem", b"{}")[0] == 403
        lines, events = _rejections(served, caplog)
        assert len(lines) == 3 and len(events) == 3, lines
        assert _request(served, "POST", "/v1/redeem", b"{}", source="127.0.0.2")[0] == 403
        assert len(_rejections(served, caplog)[0]) == 4
        time.sleep(served["limits"]["reject_log_interval"] + 0.6)
    summaries = [r.getMessage() for r in caplog.records if "more rejection" in r.getMessage()]
    assert len(summaries) == 1, summaries
    assert "9 more rejection(s) from 127.0.0.1" in summaries[0] and "malformed: 9" in summaries[0]
    fired = [d for t, d in served["events"].fired if t == "salt/keyvault/redeem/rejected/summary"]
    assert len(fired) == 1
    assert fired[0]["source"] == "127.0.0.1" and fired[0]["count"] == 9
    assert fired[0]["reasons"] == {"malformed": 9}


def test_rejection_table_is_bounded():
    events = Events()
    log = engine.RejectionLog(events, interval=10, burst=2, clock=lambda: 0.0)
    with mock.patch.object(engine.log, "warning") as warning:
        for index in range(20000):
            peer = f"2001:db8:{index // 65536:x}:{index % 65536:x}::1"
            log.rejected("malformed", "", None, None, peer)
    assert len(log.sources) <= engine.MAX_REJECT_SOURCES
    assert warning.call_count <= engine.MAX_REJECT_LINES
    log.clock = lambda: 11.0
    with mock.patch.object(engine.log, "warning") as warning:
        log.tick()
    assert warning.call_count <= engine.MAX_SUMMARY_LINES + 1
    assert len(events.fired) <= engine.MAX_REJECT_LINES + engine.MAX_SUMMARY_LINES + 1
    assert sum(d.get("count", 1) for _, d in events.fired) == 20000
    assert not log.sources


@pytest.mark.parametrize(
    "peer,key",
    [
        ("10.0.0.7", "10.0.0.7"),
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"),
        ("::ffff:10.0.0.7", "10.0.0.7"),
        ("fe80::1%eth0", "fe80::/64"),
    ],
)
def test_source_key_groups_an_ipv6_64(peer, key):
    assert engine.source_key(peer) == key


@pytest.mark.parametrize(
    "name,value",
    [
        ("max_per_address", 0),
        ("max_connections", -1),
        ("workers", "4"),
        ("header_timeout", 0),
        ("request_timeout", True),
        ("reject_log_burst", 1.5),
    ],
)
def test_bad_engine_limits_name_the_key(name, value):
    with pytest.raises(kv.KeyVaultError, match=f"engines:keyvault:{name}"):
        engine.engine_limits({name: value})


def test_default_deadlines():
    # README "KeyVault": 3 s for handshake and headers, 15 s for the whole request
    limits = engine.engine_limits({})
    assert (limits["header_timeout"], limits["request_timeout"]) == (3, 15)


def test_header_timeout_above_request_timeout_is_refused():
    with pytest.raises(kv.KeyVaultError, match="header_timeout"):
        engine.engine_limits({"header_timeout": 20, "request_timeout": 15})


def _engine_process_with_dead_event_child(sock_dir, ready):
    """What the engine process does at exit when the event child died first: events are
    still queued (more than a pipe holds), then the process ends normally."""
    bus = engine.EventBus({"sock_dir": sock_dir, "transport": "zeromq"})
    os.kill(bus.process.pid, signal.SIGKILL)
    bus.process.join(5)
    for index in range(64):
        bus.fire(f"test/{index}", {"pad": "x" * 4096})
    time.sleep(0.5)  # the feeder thread is now blocked writing into the full pipe
    ready.set()


def test_engine_exits_promptly_when_the_event_child_died_first(tmp_path):
    ctx = multiprocessing.get_context("fork")
    ready = ctx.Event()
    proc = ctx.Process(target=_engine_process_with_dead_event_child, args=(str(tmp_path), ready))
    started = time.monotonic()
    proc.start()
    assert ready.wait(20)
    proc.join(10)
    try:
        assert proc.exitcode is not None, "the engine process hangs at exit (queue feeder)"
        assert time.monotonic() - started < 10
    finally:
        if proc.is_alive():
            proc.kill()
            proc.join(5)


@pytest.mark.parametrize("field,raw", [("public_key", '"\\ud800"'), ("timestamp", "1" + "0" * 400)])
def test_hostile_values_are_a_plain_rejection_not_an_error(served, caplog, field, raw):
    store = kv.open_store(served["opts"])
    record, token = store.issue("node7", 60)
    request = kv.build_request(token, "node7", kv.generate_minion_keypair()[1])
    body = json.dumps({**request, field: "@@"}).replace('"@@"', raw).encode()
    with caplog.at_level("WARNING"):
        status, _, reply = _request(served, "POST", "/v1/redeem", body)
    assert status == 403 and json.loads(reply) == {"error": "rejected"}
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]
    tag, data = served["events"].fired[-1]
    assert tag == "salt/keyvault/redeem/rejected" and data["reason"] == "malformed"
    assert data["token_id"] == record["token_id"]
    assert store.list()[0]["failures"] == 1


@pytest.mark.parametrize("hash_type", ["sha256", "sha512", "md5"])
def test_master_finger_follows_the_minion_hash_type(served, tmp_path, hash_type):
    """The bundle pins the master key by SHA-256; the drop-in's master_finger is what
    salt-minion computes with its own hash_type (salt.crypt compares
    pem_finger(minion_master.pub, sum_type=hash_type) with it)."""
    store = kv.open_store(served["opts"])
    _, token = store.issue("node5", 60)
    pki, conf = tmp_path / "node-pki", tmp_path / "minion.d"
    argv = ["--url", served["url"], "--token", token, "--minion-id", "node5"]
    argv += ["--master-finger", salt.utils.crypt.pem_finger(str(served["pki"] / "master.pub"))]
    argv += ["--tls-finger", served["tls_finger"], "--hash-type", hash_type]
    argv += ["--pki-dir", str(pki), "--config-dir", str(conf)]
    assert client.main(argv) == 0
    written = yaml.safe_load((conf / "keyvault.conf").read_text())
    master_pub = str(pki / "minion_master.pub")
    assert written["master_finger"] == salt.utils.crypt.pem_finger(master_pub, sum_type=hash_type)


def test_forged_endpoint_with_the_pinned_certificate_is_refused(served, tmp_path, capsys):
    """An endpoint the node is pinned to (right TLS certificate) that does not hold K: it
    answers 200 with the real master public key and a response MAC it cannot make. The node
    refuses and writes nothing but the keypair it generated."""
    store = kv.open_store(served["opts"])
    _, token = store.issue("node6", 60)
    vault = served["server"].vault

    def forged(request, peer):
        return 200, {
            "minion_id": request.get("minion_id"),
            "master_pub": vault.master_pub,
            "response_mac": kv.response_mac(b"\0" * 32, request["nonce"], vault.master_pub),
        }

    calls = []
    vault.redeem = lambda request, peer: calls.append(1) or forged(request, peer)
    pki, conf = tmp_path / "node-pki", tmp_path / "minion.d"
    argv = ["--url", served["url"], "--token", "-", "--minion-id", "node6"]
    argv += ["--master-finger", kv.pem_finger(served["master_pub"])]
    argv += ["--tls-finger", served["tls_finger"]]
    argv += ["--pki-dir", str(pki), "--config-dir", str(conf)]
    with mock.patch("sys.stdin", io.StringIO(token + "\n")):
        assert client.main(argv) == 1
    err = capsys.readouterr().err
    assert "response MAC does not verify" in err and token.split(".")[1] not in err
    assert len(calls) == 1  # a failed response check is never retried
    assert sorted(p.name for p in pki.iterdir()) == ["minion.pem", "minion.pub"]
    assert not conf.exists()
    assert not (served["pki"] / "minions").exists()
    assert kv.public_view(json.loads(open(store.path(token[:6])).read()))["state"] == "issued"


class _EngineProcess(salt.utils.process.SignalHandlingProcess):
    """The engine as salt-master runs it: a SignalHandlingProcess (Salt's SIGTERM handler)
    running ``start()``."""

    def __init__(self, opts, child_pid, **kwargs):
        super().__init__(**kwargs)
        self.opts = opts
        self.child_pid = child_pid

    def run(self):
        engine.__opts__ = self.opts
        server = engine.make_server(self.opts)
        self.child_pid.value = server.vault.events.process.pid
        try:
            server.serve_forever(poll_interval=0.5)
        finally:
            server.server_close()
            server.vault.events.close()


def _gone(pid, timeout):
    """True once ``pid`` has exited (absent, or a zombie nobody reaped yet)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as handle:
                if handle.read().rsplit(")", 1)[1].split()[0] in ("Z", "X"):
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.1)
    return False


def test_engine_exits_promptly_on_sigterm(tmp_path):
    pki = tmp_path / "pki"
    pki.mkdir()
    priv, pub = kv.generate_minion_keypair()
    (pki / "master.pem").write_text(priv)
    (pki / "master.pub").write_text(pub)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    opts = {
        "pki_dir": str(pki),
        "cachedir": str(tmp_path / "cache"),
        "sock_dir": str(tmp_path / "sock"),
        "interface": "127.0.0.1",
        "engines": [{"keyvault": {"port": port}}],
    }
    child_pid = multiprocessing.get_context("fork").Value("i", 0)
    proc = _EngineProcess(opts, child_pid)
    proc.start()
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "engine did not start"
                time.sleep(0.2)
        assert child_pid.value > 0
        started = time.monotonic()
        os.kill(proc.pid, signal.SIGTERM)
        proc.join(10)
        assert proc.exitcode is not None, "the engine did not exit on SIGTERM"
        assert time.monotonic() - started < 5
        assert _gone(child_pid.value, 5), "the event child outlived the engine"
    finally:
        if proc.is_alive():
            proc.kill()
            proc.join(5)


# ---------------------------------------------------------------------- bootstrap retries
def _bootstrap_argv(served, tmp_path, token, minion_id, **override):
    values = {
        "url": served["url"],
        "token": token,
        "minion-id": minion_id,
        "master-finger": kv.pem_finger(served["master_pub"]),
        "tls-finger": served["tls_finger"],
        "pki-dir": str(tmp_path / "node-pki"),
        "config-dir": str(tmp_path / "minion.d"),
        "timeout": "5",
        "retry-for": "30",
        **override,
    }
    return [item for name, value in values.items() for item in (f"--{name}", value)]


class Counting:
    """Wraps the vault's redeem: counts calls, answers ``first`` for the first ``times``."""

    def __init__(self, vault, first=None, times=0):
        self.real, self.first, self.times, self.calls = vault.redeem, first, times, 0
        vault.redeem = self

    def __call__(self, request, peer):
        self.calls += 1
        if self.calls <= self.times:
            return self.first
        return self.real(request, peer)


def test_bootstrap_retries_a_busy_endpoint_with_a_fresh_request(served, tmp_path, capsys):
    store = kv.open_store(served["opts"])
    _, token = store.issue("node21", 60)
    seen = []
    counting = Counting(served["server"].vault, (503, {"error": "busy"}), times=2)
    real = counting.real

    def recording(request, peer):
        seen.append(request["nonce"])
        return real(request, peer)

    counting.real = recording
    assert client.main(_bootstrap_argv(served, tmp_path, token, "node21")) == 0
    assert counting.calls == 3
    assert "HTTP 503 (busy); attempt 2, retrying in" in capsys.readouterr().err
    assert (served["pki"] / "minions" / "node21").exists()
    assert len(seen) == 1  # the two 503s never reached the store


def test_bootstrap_never_retries_a_403(served, tmp_path, capsys):
    store = kv.open_store(served["opts"])
    _, token = store.issue("node22", 60)
    counting = Counting(served["server"].vault)
    assert client.main(_bootstrap_argv(served, tmp_path, token, "node23")) == 1
    assert counting.calls == 1
    assert "refused the token" in capsys.readouterr().err


def test_bootstrap_never_retries_a_pin_mismatch(served, tmp_path, monkeypatch):
    store = kv.open_store(served["opts"])
    _, token = store.issue("node24", 60)
    calls = []
    real = client.pinned_post
    monkeypatch.setattr(client, "pinned_post", lambda *a, **k: calls.append(1) or real(*a, **k))
    argv = _bootstrap_argv(served, tmp_path, token, "node24", **{"tls-finger": "ab" * 32})
    assert client.main(argv) == 1
    assert len(calls) == 1


def test_bootstrap_never_retries_a_failed_response_check(served, tmp_path):
    store = kv.open_store(served["opts"])
    _, token = store.issue("node25", 60)
    counting = Counting(served["server"].vault)
    argv = _bootstrap_argv(served, tmp_path, token, "node25")
    argv[argv.index("--master-finger") + 1] = kv.pem_finger(kv.generate_minion_keypair()[1])
    assert client.main(argv) == 1
    assert counting.calls == 1


def test_bootstrap_gives_up_on_connection_errors_after_retry_for(served, tmp_path, capsys):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]  # nothing listens there once the probe is closed
    store = kv.open_store(served["opts"])
    _, token = store.issue("node26", 60)
    argv = _bootstrap_argv(
        served, tmp_path, token, "node26", url=f"https://127.0.0.1:{closed}/v1/redeem"
    )
    argv[argv.index("--retry-for") + 1] = "2"
    started = time.monotonic()
    assert client.main(argv) == 1
    err = capsys.readouterr().err
    attempts = int(re.search(r"gave up after (\d+) attempt", err).group(1))
    assert attempts >= 2 and "cannot connect" in err and "--retry-for 2" in err
    assert time.monotonic() - started < 10  # bounded: not a perf figure, a runaway guard


def test_bootstrap_retry_for_zero_is_one_attempt(served, tmp_path, capsys):
    store = kv.open_store(served["opts"])
    _, token = store.issue("node27", 60)
    counting = Counting(served["server"].vault, (503, {"error": "busy"}), times=5)
    argv = _bootstrap_argv(served, tmp_path, token, "node27", **{"retry-for": "0"})
    assert client.main(argv) == 1
    assert counting.calls == 1
    assert "gave up after 1 attempt(s)" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["-1", "abc", "1e9"])
def test_bad_retry_for_is_refused(value, capsys):
    with pytest.raises(SystemExit):
        client.parser().parse_args(
            [
                "--url",
                "x",
                "--minion-id",
                "n",
                "--master-finger",
                "x",
                "--tls-finger",
                "x",
                "--retry-for",
                value,
            ]
        )
    assert "--retry-for" in capsys.readouterr().err


def test_backoff_doubles_with_jitter_and_is_capped():
    lows = [client.backoff(n, rng=lambda: 0.0) for n in range(1, 10)]
    highs = [client.backoff(n, rng=lambda: 1.0) for n in range(1, 10)]
    assert highs[:4] == [0.5, 1.0, 2.0, 4.0] and max(highs) == client.BACKOFF_MAX
    assert all(low == high / 2 for low, high in zip(lows, highs, strict=True))
