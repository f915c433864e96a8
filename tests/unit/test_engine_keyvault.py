"""The keyvault engine's HTTPS layer on loopback, without a salt-master: statuses, a full
redeem through the node client's pinned POST, and the connection cap."""

import http.client
import io
import json
import multiprocessing
import os
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
from salt_ext.lib import keyvault as kv
from salt_ext.lib import keyvault_client as client


class Events:
    def __init__(self):
        self.fired = []

    def fire(self, tag, data):
        self.fired.append((tag, data))


@pytest.fixture
def served(tmp_path, monkeypatch):
    monkeypatch.setattr(engine, "MAX_CONNECTIONS", 4)
    pki = tmp_path / "pki"
    pki.mkdir()
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
    server = engine.Server(("127.0.0.1", 0), context, engine.Vault(opts, cfg, events))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1})
    thread.start()
    yield {
        "opts": opts,
        "port": server.server_address[1],
        "url": f"https://127.0.0.1:{server.server_address[1]}/v1/redeem",
        "tls_finger": kv.cert_finger_file(cert),
        "master_pub": pub,
        "events": events,
        "pki": pki,
        "server": server,
    }
    server.shutdown()
    server.server_close()
    thread.join(5)


def _request(served, method, path, body=b"", ctype="application/json"):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    conn = http.client.HTTPSConnection("127.0.0.1", served["port"], context=ctx, timeout=10)
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


def test_connection_cap_drops_extra_idle_connections(served):
    idle = [socket.create_connection(("127.0.0.1", served["port"])) for _ in range(4)]
    try:
        time.sleep(0.3)
        extra = socket.create_connection(("127.0.0.1", served["port"]), timeout=5)
        assert extra.recv(10) == b""  # closed at once, no handshake
        extra.close()
    finally:
        for sock in idle:
            sock.close()
    time.sleep(0.3)
    assert _request(served, "GET", "/v1/health", ctype=None)[0] == 200


def _tls_connect(served):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    raw = socket.create_connection(("127.0.0.1", served["port"]), timeout=10)
    return ctx.wrap_socket(raw)


def test_trickling_client_is_cut_off_at_the_connection_deadline(served, monkeypatch):
    """One byte every 0.3 s never trips the per-recv timeout; the per-connection deadline
    (2 s here) still ends the connection at about the deadline."""
    monkeypatch.setattr(engine, "CONNECTION_DEADLINE", 2, raising=False)
    tls = _tls_connect(served)
    started = time.monotonic()
    header = b"POST /v1/redeem HTTP/1.1\r\nContent-Type: application/json\r\n" + b"X" * 200
    cut_after = None
    try:
        for byte in header:
            tls.sendall(bytes([byte]))
            time.sleep(0.3)
            if time.monotonic() - started > 8:
                break
    except OSError:
        cut_after = time.monotonic() - started
    if cut_after is None:
        tls.settimeout(1)
        try:
            assert tls.recv(10) == b""
        except (ssl.SSLError, OSError):
            pass
        cut_after = time.monotonic() - started
    tls.close()
    assert 1.5 < cut_after < 4, cut_after


def test_drop_warnings_are_rate_limited(served, caplog):
    idle = [socket.create_connection(("127.0.0.1", served["port"])) for _ in range(4)]
    try:
        time.sleep(0.3)
        with caplog.at_level("WARNING", logger=engine.log.name):
            for _ in range(6):
                extra = socket.create_connection(("127.0.0.1", served["port"]), timeout=5)
                assert extra.recv(10) == b""
                extra.close()
    finally:
        for sock in idle:
            sock.close()
    drops = [r for r in caplog.records if "dropped" in r.getMessage()]
    assert len(drops) == 1, [r.getMessage() for r in drops]


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

    vault.redeem = forged
    pki, conf = tmp_path / "node-pki", tmp_path / "minion.d"
    argv = ["--url", served["url"], "--token", "-", "--minion-id", "node6"]
    argv += ["--master-finger", kv.pem_finger(served["master_pub"])]
    argv += ["--tls-finger", served["tls_finger"]]
    argv += ["--pki-dir", str(pki), "--config-dir", str(conf)]
    with mock.patch("sys.stdin", io.StringIO(token + "\n")):
        assert client.main(argv) == 1
    err = capsys.readouterr().err
    assert "response MAC does not verify" in err and token.split(".")[1] not in err
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
