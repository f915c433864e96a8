"""KeyVault against a real salt-master (engine loaded through the entry point), real minions
in node sandboxes and real HTTPS: the bootstrap works, and every hostile request is refused
with nothing accepted.

Runs on its own small bed (``sxkvi`` on 10.82.0 unless SXT_KV_BED_NAME/SUBNET say otherwise)
with auto-accept off, so a minion can only get in through a token.
"""

import base64
import concurrent.futures
import http.client
import json
import os
import pathlib
import re
import socket
import ssl
import subprocess
import sys
import threading
import time

import pytest
import salt.config
import salt.runner
import salt.utils.event

from salt_ext.lib.keyvault import vault as kv
from tests.integration.helpers import BusLog, salt_run_on_a_terminal, wait_for
from tests.testbed import SandboxCluster

pytestmark = pytest.mark.testbed

BED_NAME = os.environ.get("SXT_KV_BED_NAME", "sxkvi")
BED_SUBNET = os.environ.get("SXT_KV_BED_SUBNET", "10.82.0")
PORT = 4510
NODES = ("k1", "k2")
# rejections logged one by one per source and 10 s before the summary: high enough that the
# tests below that wait for one rejection's event are never summarised (the default, 5, is
# checked in tests/unit/test_engine_keyvault.py)
REJECT_BURST = 50
REQUEST_TIMEOUT = 8
FLOOD_SCRIPT = pathlib.Path(__file__).resolve().parent.parent / "flood.py"

# every secret this module sees that never was in a runner return (tokens printed on the
# terminal, every K, request MACs): none may show up anywhere, at any log level
SECRETS = []
# tokens this module got from a runner return (RunnerClient in this process, like salt-api):
# Salt keeps those in the job cache and on the bus, and the master logs the bus at trace
# (README "Residual risk"); none may show up at info level or above
RETURNED = []


class EventLog(BusLog):
    """The master bus while the module runs, with KeyVault's rejection events."""

    def rejected(self, token_id=None, reason=None, timeout=10):
        """Wait for a ``salt/keyvault/redeem/rejected`` event matching the arguments."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for event in self.snapshot():
                if event["tag"] != "salt/keyvault/redeem/rejected":
                    continue
                data = event["data"]
                if token_id is not None and data.get("token_id") != token_id:
                    continue
                if reason is not None and data.get("reason") != reason:
                    continue
                return data
            time.sleep(0.1)
        return None


class Vault:
    """The test's handle on the bed: issue tokens, talk HTTPS to the engine, look at pki."""

    def __init__(self, bed):
        self.bed = bed
        self.opts = salt.config.master_config(str(bed.master_conf_dir / "master"))
        self.runner = salt.runner.RunnerClient(self.opts)
        self.pki = bed.master_dir / "pki"
        self.host = bed.master_ip
        self.url = f"https://{self.host}:{PORT}/v1/redeem"
        self.keys = [kv.generate_minion_keypair(2048) for _ in range(3)]

    def issue(self, minion_id, ttl=300):
        bundle = self.run("keyvault.issue", minion_id=minion_id, ttl=ttl)
        assert "token" in bundle, bundle
        token_id, secret = kv.parse_token(bundle["token"])
        RETURNED.extend([bundle["token"], bundle["token"].split(".")[1]])
        SECRETS.append(kv.mac_key(secret, token_id).hex())
        return bundle

    def run(self, fun, **kwargs):
        """A runner function in this process (print_event off: returns hold tokens)."""
        return self.runner.cmd(fun, kwarg=kwargs, print_event=False)

    def context(self):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx

    def post(
        self, body, content_type="application/json", method="POST", path="/v1/redeem", source=None
    ):
        """``(status, parsed body)`` of one HTTPS request (``body`` dict or raw bytes), from
        the address ``source`` if given."""
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        conn = http.client.HTTPSConnection(
            self.host,
            PORT,
            context=self.context(),
            timeout=15,
            source_address=(source, 0) if source else None,
        )
        try:
            headers = {"Content-Type": content_type} if content_type else {}
            conn.request(method, path, data if method == "POST" else None, headers)
            resp = conn.getresponse()
            raw = resp.read()
        finally:
            conn.close()
        try:
            return resp.status, json.loads(raw)
        except ValueError:
            return resp.status, raw

    def request(self, bundle, minion_id=None, key=0, **override):
        req = kv.build_request(
            bundle["token"], minion_id or bundle["minion_id"], self.keys[key][1], **override
        )
        SECRETS.append(req["mac"])
        return req

    def accepted_keys(self):
        """``{dir/id: content}`` of every key state dir: what "nothing accepted" compares."""
        out = {}
        for sub in kv.KEY_DIRS.values():
            directory = self.pki / sub
            if directory.is_dir():
                for path in directory.iterdir():
                    out[f"{sub}/{path.name}"] = path.read_text()
        return out

    def wait_healthy(self, timeout=60):
        deadline = time.monotonic() + timeout
        while True:
            try:
                if self.post(b"", method="GET", path="/v1/health")[0] == 200:
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"keyvault engine not up:\n{self.bed.tail_logs([])}")
            time.sleep(0.3)


@pytest.fixture(scope="module")
def kvbed(request):
    bed = SandboxCluster(
        name=BED_NAME,
        nodes=NODES,
        subnet=BED_SUBNET,
        auto_accept=False,
        extra_master_config={
            # request_timeout 8 (default 15, tests/unit/test_engine_keyvault.py): the
            # trickling-body test waits for it; the 64 concurrent redeems take < 3 s
            "engines": [
                {
                    "keyvault": {
                        "port": PORT,
                        "reject_log_burst": REJECT_BURST,
                        "request_timeout": REQUEST_TIMEOUT,
                    }
                }
            ],
            "keyvault": {"max_ttl": 3600, "request_window": 10},
            # every runner return, outputter input and event Salt logs reaches the file
            "log_level_logfile": "trace",
        },
    )
    if os.geteuid() != 0:
        pytest.fail("the test bed needs root")
    try:
        bed.up(start_minions=False)
        yield bed
    finally:
        bed.down()


@pytest.fixture(scope="module")
def vault(kvbed):
    handle = Vault(kvbed)
    handle.wait_healthy()
    handle.events = EventLog(kvbed.master_opts())
    yield handle
    handle.events.stop.set()


@pytest.fixture
def unchanged(vault):
    """Asserts after the test that no key state dir changed."""
    before = vault.accepted_keys()
    yield
    assert vault.accepted_keys() == before


def _refused(vault, request, token_id=None, reason=None):
    status, body = vault.post(request)
    assert (status, body) == (403, {"error": "rejected"})
    if reason is not None:
        event = vault.events.rejected(token_id=token_id, reason=reason)
        ours = [e for e in vault.events.snapshot() if e["tag"].startswith("salt/keyvault/")]
        assert event is not None, (reason, ours[-5:])  # never salt/run/*/ret: tokens
        return event
    return None


def _bootstrap(kvbed, node, bundle, **override):
    """Run salt-keyvault-bootstrap on ``node`` the way the bundle's command does: the token
    on stdin (``--token -``), never in argv."""
    return kvbed.run(node, _bootstrap_argv(kvbed, node, bundle, **override), stdin=bundle["token"])


def _bootstrap_argv(kvbed, node, bundle, **override):
    values = {
        "url": bundle["url"],
        "token": "-",
        "minion-id": bundle["minion_id"],
        "master-finger": bundle["master_finger"],
        "tls-finger": bundle["tls_finger"],
        "pki-dir": str(kvbed.nodes[node].dir / "salt" / "pki"),
        "config-dir": str(kvbed.nodes[node].minion_conf_dir / "minion.d"),
        **override,
    }
    argv = [kvbed.bin("salt-keyvault-bootstrap")]
    for name, value in values.items():
        argv += [f"--{name}", value]
    return argv


def issue_on_a_terminal(kvbed, *args):
    """``salt-run --out=json keyvault.issue ARGS`` on a terminal: ``(token, bundle, stdout,
    stderr)``; the token is what salt-run printed on the terminal."""
    text, out, err, code = salt_run_on_a_terminal(kvbed, "--out=json", "keyvault.issue", *args)
    assert code == 0, (out, err[-3000:])
    token = re.search(r"^token: (\S+)$", text, re.M).group(1)
    bundle = json.loads(out)
    token_id, secret = kv.parse_token(token)
    assert bundle["token_id"] == token_id
    SECRETS.extend([token, token.split(".")[1], kv.mac_key(secret, token_id).hex()])
    command = re.search(r"^command: (.+)$", text, re.M).group(1)
    return token, {**bundle, "token": token, "command": command}, out, err


def secret_forms(token):
    """Every encoding of the token's secret and of K this test looks for, as bytes."""
    token_id, secret = kv.parse_token(token)
    key = kv.mac_key(secret, token_id)
    forms = [token.encode(), token.split(".")[1].encode()]
    for raw in (secret, key):
        forms += [raw, raw.hex().encode(), base64.b64encode(raw), base64.b64encode(raw)[:40]]
        forms += [base64.urlsafe_b64encode(raw).rstrip(b"=")]
    return forms


# ---------------------------------------------------------------------- the real bootstrap
def test_fresh_minion_bootstraps_and_is_accepted(kvbed, vault):
    _, bundle, _, _ = issue_on_a_terminal(kvbed, "minion_id=k1", "ttl=120")
    assert bundle["url"] == vault.url
    assert bundle["command"].startswith(f"echo '{bundle['token']}' | salt-keyvault-bootstrap ")
    assert not (kvbed.nodes["k1"].dir / "salt" / "pki" / "minion.pem").exists()
    run = _bootstrap(kvbed, "k1", bundle)
    assert run.returncode == 0, run.stderr
    assert "systemctl restart salt-minion" in run.stdout
    assert "warning" not in run.stderr
    assert bundle["token"].split(".")[1] not in run.stdout + run.stderr
    assert (vault.pki / "minions" / "k1").exists()
    kvbed.start_minion("k1")
    kvbed.wait_for_minions(["k1"], timeout=60)
    assert kvbed.salt("k1", "test.ping") == {"k1": True}
    assert kvbed.salt("k1", "config.get", ["master_finger"]) == {"k1": bundle["master_finger"]}
    keys = json.loads(kvbed.cli(["salt-key", "-L", "--out=json"]).stdout)
    assert keys["minions"] == ["k1"] and keys["minions_pre"] == []
    assert vault.events.rejected(token_id=bundle["token_id"], timeout=0.5) is None


def test_pending_minion_with_same_key_is_moved_to_accepted(kvbed, vault):
    kvbed.start_minion("k2")  # no token yet: its key lands in minions_pre
    deadline = time.monotonic() + 60
    while not (vault.pki / "minions_pre" / "k2").exists():
        assert time.monotonic() < deadline, kvbed.tail_logs(["k2"])
        time.sleep(0.5)
    bundle = vault.issue("k2")
    run = _bootstrap(kvbed, "k2", bundle)
    assert run.returncode == 0, run.stderr
    assert not (vault.pki / "minions_pre" / "k2").exists()
    # the waiting minion's next authentication is accepted, no restart and no salt-key
    kvbed.wait_for_minions(["k2"], timeout=60)


def test_issue_in_salt_run_at_trace_leaks_no_form_of_the_secret(kvbed, vault):
    """``salt-run -l trace keyvault.issue`` with the master's log file at trace: the token
    reaches the admin's terminal and nothing else -- not salt-run's stdout or stderr, not the
    master log (salt-run logs there too: "Runner return", the outputter's data), not the job
    cache, not any event."""
    start = len(vault.events.snapshot())
    text, out, err, code = salt_run_on_a_terminal(
        kvbed, "-l", "trace", "--out=json", "keyvault.issue", "minion_id=h-trace"
    )
    assert code == 0, (out, err[-3000:])
    token = re.search(r"^token: (\S+)$", text, re.M).group(1)
    token_id, secret = kv.parse_token(token)
    SECRETS.extend([token, token.split(".")[1], kv.mac_key(secret, token_id).hex()])
    assert f"echo '{token}' | salt-keyvault-bootstrap --token=- " in text
    bundle = json.loads(out)
    assert bundle["token_id"] == token_id and bundle["token"] == kv.HIDDEN_TOKEN
    assert "Runner return" in err  # trace really was on: the return was logged, token-free
    log = kvbed.master_log.read_bytes()
    assert b"Runner return" in log and token_id.encode() in log

    def our_return():
        run_rets = [
            e
            for e in vault.events.snapshot()[start:]
            if re.fullmatch(r"salt/run/\d+/ret", e["tag"])
        ]
        return any(token_id in json.dumps(e["data"], default=str) for e in run_rets)

    assert wait_for(our_return, timeout=10, interval=0.1)  # the return event reached the bus
    events = vault.events.snapshot()[start:]
    haystacks = {
        "salt-run stdout": out.encode(),
        "salt-run stderr": err.encode(),
        "master log": log,
        "events": json.dumps(events, default=repr).encode(),
    }
    cache = kvbed.master_dir / "cache"
    jobs = [p for p in cache.rglob("*") if p.is_file()]
    assert any(token_id.encode() in p.read_bytes() for p in jobs if "jobs" in p.parts)
    haystacks.update({str(p.relative_to(cache)): p.read_bytes() for p in jobs})
    forms = secret_forms(token)
    for name, data in haystacks.items():
        leaked = [index for index, form in enumerate(forms) if form in data]
        assert not leaked, f"secret material in {name}: secret_forms indexes {leaked}"
    # and the token printed on the terminal is real
    assert vault.post(kv.build_request(token, "h-trace", vault.keys[0][1]))[0] == 200


def test_control_a_returned_token_does_reach_the_trace_logs(kvbed, vault):
    """The haystacks above do catch a token: with ``to_tty=False`` (the return holds it)
    salt-run's trace output and the master log have it, as Salt logs runner returns."""
    text, out, err, code = salt_run_on_a_terminal(
        kvbed, "-l", "trace", "--out=json", "keyvault.issue", "minion_id=h-ctl", "to_tty=False"
    )
    assert code == 0 and "token:" not in text
    token = json.loads(out)["token"]
    RETURNED.extend([token, token.split(".")[1]])
    assert "Runner return: {'fun': 'runner.keyvault.issue'" in err
    assert token in err and token in kvbed.master_log.read_text(errors="replace")
    vault.run("keyvault.revoke", token_id=token.split(".")[0])


def test_salt_run_without_a_terminal_issues_nothing(kvbed, vault):
    before = {t["token_id"] for t in vault.run("keyvault.list")["tokens"]}
    proc = kvbed.cli(["salt-run", "--out=json", "keyvault.issue", "minion_id=h-notty"])
    assert proc.returncode == 1
    assert "to_tty" in json.loads(proc.stdout)["error"]
    assert {t["token_id"] for t in vault.run("keyvault.list")["tokens"]} == before


def test_a_new_token_revokes_the_older_one_of_its_minion(kvbed, vault):
    first = vault.issue("h-multi")
    second_token, second, _, _ = issue_on_a_terminal(kvbed, "minion_id=h-multi")
    assert second["revoked_older"] == [first["token_id"]]
    states = {t["token_id"]: t for t in vault.run("keyvault.list")["tokens"]}
    assert states[first["token_id"]]["state"] == "revoked"
    assert second["token_id"] in states[first["token_id"]]["revoke_reason"]
    revoked = [
        e
        for e in vault.events.snapshot()
        if e["tag"] == "salt/keyvault/revoke" and e["data"]["token_id"] == first["token_id"]
    ]
    assert revoked and revoked[0]["data"]["minion_id"] == "h-multi"
    _refused(vault, vault.request(first), first["token_id"], "revoked")
    assert vault.post(kv.build_request(second_token, "h-multi", vault.keys[0][1]))[0] == 200
    # keep_older=True: two live tokens, both usable
    third = vault.run("keyvault.issue", minion_id="h-multi2", keep_older=True)
    fourth = vault.run("keyvault.issue", minion_id="h-multi2", keep_older=True)
    for bundle in (third, fourth):
        RETURNED.extend([bundle["token"], bundle["token"].split(".")[1]])
    assert fourth["revoked_older"] == []
    states = {t["token_id"]: t["state"] for t in vault.run("keyvault.list")["tokens"]}
    assert states[third["token_id"]] == states[fourth["token_id"]] == "issued"


# ---------------------------------------------------------------------- hostile requests
@pytest.mark.usefixtures("unchanged")
def test_unknown_token_id_is_rejected(vault):
    bundle = {"token": kv.format_token("zzzzzz", kv.new_secret()), "minion_id": "h-unknown"}
    _refused(vault, vault.request(bundle), "zzzzzz", "unknown_token")


def test_replay_of_good_request_is_rejected(vault):
    bundle = vault.issue("h-replay")
    good = vault.request(bundle)
    assert vault.post(good)[0] == 200
    with_key = vault.accepted_keys()
    _refused(vault, good, bundle["token_id"], "consumed")
    assert vault.accepted_keys() == with_key


def test_second_redeem_is_rejected(vault):
    bundle = vault.issue("h-second")
    assert vault.post(vault.request(bundle))[0] == 200
    before = vault.accepted_keys()
    _refused(vault, vault.request(bundle, key=1), bundle["token_id"], "consumed")
    assert vault.accepted_keys() == before
    assert (vault.pki / "minions" / "h-second").read_text() == vault.keys[0][1]


@pytest.mark.usefixtures("unchanged")
def test_expired_token_is_rejected(vault):
    bundle = vault.issue("h-expired", ttl=1)
    time.sleep(2.1)
    _refused(vault, vault.request(bundle), bundle["token_id"], "expired")


@pytest.mark.usefixtures("unchanged")
def test_revoked_token_is_rejected(kvbed, vault):
    bundle = vault.issue("h-revoked")
    proc = kvbed.cli(
        ["salt-run", "--out=json", "keyvault.revoke", f"token_id={bundle['token_id']}"]
    )
    assert proc.returncode == 0 and json.loads(proc.stdout)["revoked"] is True
    _refused(vault, vault.request(bundle), bundle["token_id"], "revoked")
    events = [e for e in vault.events.snapshot() if e["tag"] == "salt/keyvault/revoke"]
    assert any(e["data"]["token_id"] == bundle["token_id"] for e in events)


@pytest.mark.usefixtures("unchanged")
def test_wrong_minion_id_is_rejected(vault):
    bundle = vault.issue("h-right")
    _refused(vault, vault.request(bundle, minion_id="h-wrong"), bundle["token_id"], "wrong_minion")


def _flip(mac, index):
    chars = list(mac)
    chars[index] = "0" if chars[index] != "0" else "1"
    return "".join(chars)


MAC_TAMPERING = {
    "first-char": lambda mac: _flip(mac, 0),
    "middle-char": lambda mac: _flip(mac, 32),
    "last-char": lambda mac: _flip(mac, 63),
    "truncated": lambda mac: mac[:-2],
    "extended": lambda mac: mac + "00",
    "empty": lambda mac: "",
    "uppercase": lambda mac: mac.upper() if mac.upper() != mac else "A" + mac[1:].upper(),
    "all-zero": lambda mac: "0" * 64,
}


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize("tamper", sorted(MAC_TAMPERING))
def test_mac_tampering_is_rejected(vault, tamper):
    bundle = vault.issue(f"h-mac-{tamper}")
    req = vault.request(bundle)
    req["mac"] = MAC_TAMPERING[tamper](req["mac"])
    _refused(vault, req, bundle["token_id"], "bad_mac")


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize(
    "field,value",
    [("minion_id", "h-other"), ("nonce", "1" * 64), ("timestamp", 1), ("public_key", 2)],
)
def test_altered_field_breaks_the_mac(vault, field, value):
    bundle = vault.issue(f"h-field-{field}")
    req = vault.request(bundle)
    req[field] = vault.keys[1][1] if value == 2 else value
    if field == "timestamp":
        req[field] = req["timestamp"] + 1
    _refused(vault, req, bundle["token_id"], "bad_mac")


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize("skew", [-30, 30], ids=["past", "future"])
def test_timestamp_outside_window_is_rejected(vault, skew):
    bundle = vault.issue(f"h-ts{skew}")
    req = vault.request(bundle, now=time.time() + skew)
    _refused(vault, req, bundle["token_id"], "stale_timestamp")


@pytest.mark.usefixtures("unchanged")
def test_reused_nonce_is_rejected(vault):
    bundle = vault.issue("h-nonce")
    first = vault.request(bundle, now=time.time() - 60)  # refused (stale), nonce now known
    _refused(vault, first, bundle["token_id"], "stale_timestamp")
    again = vault.request(bundle, nonce=first["nonce"])
    _refused(vault, again, bundle["token_id"], "replayed_nonce")


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize("where", ["minions", "minions_pre", "minions_rejected", "minions_denied"])
def test_key_conflict_is_rejected(vault, where):
    minion_id = f"h-conflict-{where}"
    directory = vault.pki / where
    directory.mkdir(exist_ok=True)
    (directory / minion_id).write_text(vault.keys[2][1])
    try:
        before = vault.accepted_keys()
        bundle = vault.issue(minion_id)
        _refused(vault, vault.request(bundle, key=0), bundle["token_id"], "key_conflict")
        assert vault.accepted_keys() == before
    finally:
        (directory / minion_id).unlink()


@pytest.mark.usefixtures("unchanged")
def test_weak_public_key_is_rejected(vault):
    bundle = vault.issue("h-weakkey")
    req = kv.build_request(
        bundle["token"], "h-weakkey", "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"
    )
    _refused(vault, req, bundle["token_id"], "bad_public_key")


MALFORMED = {
    "not-json": (b"{not json", "application/json", "POST", "/v1/redeem", 400),
    "json-array": (b"[1, 2]", "application/json", "POST", "/v1/redeem", 403),
    "missing-mac": (None, "application/json", "POST", "/v1/redeem", 403),
    "oversized": (b"{" + b" " * (70 * 1024) + b"}", "application/json", "POST", "/v1/redeem", 413),
    "text-plain": (b"{}", "text/plain", "POST", "/v1/redeem", 415),
    "no-content-type": (b"{}", None, "POST", "/v1/redeem", 415),
    "form": (b"a=b", "application/x-www-form-urlencoded", "POST", "/v1/redeem", 415),
    "get-redeem": (b"", None, "GET", "/v1/redeem", 405),
    "post-elsewhere": (b"{}", "application/json", "POST", "/v1/issue", 404),
    "put-redeem": (b"{}", "application/json", "PUT", "/v1/redeem", 405),
    "path-traversal": (b"{}", "application/json", "POST", "/v1/../redeem", 404),
}


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_requests_are_rejected(vault, case):
    body, ctype, method, path, status = MALFORMED[case]
    if body is None:
        bundle = vault.issue("h-malformed")
        req = vault.request(bundle)
        del req["mac"]
        body = json.dumps(req).encode()
    if method in ("GET", "PUT"):
        conn = http.client.HTTPSConnection(vault.host, PORT, context=vault.context(), timeout=15)
        conn.request(method, path, body or None, {"Content-Type": ctype} if ctype else {})
        got = conn.getresponse().status
        conn.close()
    else:
        got = vault.post(body, content_type=ctype, path=path)[0]
    assert got == status


@pytest.mark.usefixtures("unchanged")
def test_plain_http_fails(vault):
    conn = http.client.HTTPConnection(vault.host, PORT, timeout=15)
    with pytest.raises((http.client.HTTPException, ConnectionError)):
        conn.request("POST", "/v1/redeem", b"{}", {"Content-Type": "application/json"})
        conn.getresponse()
    conn.close()


@pytest.mark.usefixtures("unchanged")
def test_slow_client_is_cut_off(vault):
    raw = socket.create_connection((vault.host, PORT), timeout=30)
    tls = vault.context().wrap_socket(raw)
    tls.sendall(b"POST /v1/redeem HTTP/1.1\r\nContent-Type: application/json\r\n")
    started = time.monotonic()
    assert tls.recv(1024) == b""  # the server hangs up on a request that never finishes
    assert time.monotonic() - started < 15
    tls.close()


def _trickle(vault, head, data, every):
    """Send ``head``, then ``data`` a byte every ``every`` seconds: seconds until the server
    hung up (None: it never did within 30 s)."""
    raw = socket.create_connection((vault.host, PORT), timeout=30)
    tls = vault.context().wrap_socket(raw)
    started = time.monotonic()
    tls.settimeout(every)
    cut = None
    try:
        tls.sendall(head)
        for byte in data:
            try:
                tls.sendall(bytes([byte]))
                if tls.recv(1024) == b"":
                    cut = time.monotonic() - started
                    break
            except TimeoutError:
                continue
            except OSError:
                cut = time.monotonic() - started
                break
            if time.monotonic() - started > 30:
                break
    except OSError:
        cut = time.monotonic() - started
    tls.close()
    return cut


@pytest.mark.usefixtures("unchanged")
def test_trickling_headers_are_cut_off_at_the_header_deadline(vault):
    """A byte every second never trips a per-recv timeout; the handshake+header deadline
    (header_timeout, 3 s by default) ends the connection."""
    cut = _trickle(vault, b"", b"POST /v1/redeem HTTP/1.1\r\nX-Slow: " + b"a" * 40, 1)
    assert cut is not None and 2 < cut < 6, cut


@pytest.mark.usefixtures("unchanged")
def test_trickling_body_is_cut_off_at_the_request_deadline(vault):
    """Headers at once, then the body a byte every 2 s: the whole-request deadline
    (request_timeout, REQUEST_TIMEOUT on this bed) ends the connection."""
    head = (
        b"POST /v1/redeem HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
    )
    cut = _trickle(vault, head, b"[" * 100, 2)
    assert cut is not None and REQUEST_TIMEOUT - 2 < cut < REQUEST_TIMEOUT + 4, cut


def test_wrong_tls_pin_refuses_and_changes_nothing(kvbed, vault):
    node_pki = kvbed.nodes["k1"].dir / "salt" / "pki"
    before = (vault.accepted_keys(), (node_pki / "minion_master.pub").read_text())
    bundle = vault.issue("k1")
    run = _bootstrap(kvbed, "k1", bundle, **{"tls-finger": "ab" * 32})
    assert run.returncode == 1
    assert "pinned --tls-finger" in run.stderr
    assert bundle["token"].split(".")[1] not in run.stdout + run.stderr
    assert (vault.accepted_keys(), (node_pki / "minion_master.pub").read_text()) == before
    # the token was never sent: it is still issued
    listed = {t["token_id"]: t for t in vault.run("keyvault.list")["tokens"]}
    assert listed[bundle["token_id"]]["state"] == "issued"


def test_forged_master_key_refuses_and_changes_nothing(kvbed, vault):
    node_dir = kvbed.nodes["k2"]
    pki = node_dir.dir / "salt" / "pki"
    before = (
        vault.accepted_keys(),
        (pki / "minion_master.pub").read_text(),
        (node_dir.minion_conf_dir / "minion.d" / "keyvault.conf").read_text(),
    )
    bundle = vault.issue("k2")
    forged = kv.pem_finger(vault.keys[0][1])  # the fingerprint of some other "master"
    run = _bootstrap(kvbed, "k2", bundle, **{"master-finger": forged})
    assert run.returncode == 1
    assert "does not match --master-finger" in run.stderr
    after = (
        vault.accepted_keys(),
        (pki / "minion_master.pub").read_text(),
        (node_dir.minion_conf_dir / "minion.d" / "keyvault.conf").read_text(),
    )
    # the master did accept its (already accepted, same) key; the node wrote nothing
    assert after == before


@pytest.mark.usefixtures("unchanged")
def test_five_bad_macs_then_right_one(vault):
    bundle = vault.issue("h-fivebad")
    for _ in range(5):
        bad = vault.request(bundle)
        bad["mac"] = _flip(bad["mac"], 10)
        _refused(vault, bad)
    event = _refused(vault, vault.request(bundle), bundle["token_id"], "revoked")
    assert event["minion_id"] == "h-fivebad"
    listed = {t["token_id"]: t for t in vault.run("keyvault.list")["tokens"]}
    assert listed[bundle["token_id"]]["state"] == "revoked"
    assert listed[bundle["token_id"]]["failures"] == 5


def test_64_concurrent_redeems_exactly_one_wins(vault):
    bundle = vault.issue("h-race")
    requests = [vault.request(bundle, key=i % 3) for i in range(64)]
    barrier = threading.Barrier(64)

    def fire(index):
        barrier.wait()
        # 8 loopback sources x 8: as many nodes would, within the engine's per-address cap
        return vault.post(requests[index], source=f"127.0.0.{2 + index % 8}")[0]

    with concurrent.futures.ThreadPoolExecutor(64) as pool:
        statuses = list(pool.map(fire, range(64)))
    assert statuses.count(200) == 1, statuses
    assert statuses.count(403) == 63
    winner = requests[statuses.index(200)]
    assert (vault.pki / "minions" / "h-race").read_text() == winner["public_key"]


def test_restart_master_between_issue_and_redeem(kvbed, vault):
    bundle = vault.issue("h-restart")
    kvbed.restart_master()
    vault.wait_healthy()
    vault.events.resubscribe()
    assert vault.post(vault.request(bundle))[0] == 200
    assert (vault.pki / "minions" / "h-restart").exists()


@pytest.mark.usefixtures("unchanged")
def test_corrupt_store_fails_closed(kvbed, vault):
    bundle = vault.issue("h-corrupt")
    record = kvbed.master_dir / "cache" / "keyvault" / "tokens" / f"{bundle['token_id']}.json"
    record.write_text('{"version": 2, "token_id": "tr')
    event = _refused(vault, vault.request(bundle), bundle["token_id"], "store_error")
    assert str(record) in event["detail"]
    log = kvbed.master_log.read_text()
    assert re.search(
        rf"reason store_error, token {bundle['token_id']}.*{re.escape(str(record))}", log
    )
    assert "Traceback" not in log.split(bundle["token_id"], 1)[1]
    listed = {t["token_id"]: t for t in vault.run("keyvault.list")["tokens"]}
    assert listed[bundle["token_id"]]["state"] == "corrupt"


def _flood_from(kvbed, node, count):
    """A flood of ``count`` idle connections from ``node``'s address (stops when its stdin
    closes)."""
    proc = subprocess.Popen(
        [*kvbed.nsenter(node), sys.executable, str(FLOOD_SCRIPT)]
        + ["--host", kvbed.master_ip, "--port", str(PORT), "--count", str(count)]
        + ["--seconds", "120"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline().strip() == "ready"
    return proc


def _flood_counts(proc):
    out, _ = proc.communicate("", timeout=60)
    return json.loads(out.strip().splitlines()[-1])


def test_node_bootstraps_during_an_idle_flood_from_another_node(kvbed, vault):
    """300 idle connections from k2's address, re-opened as soon as the engine cuts them:
    k1 still bootstraps on its first attempt (no retry), and the engine says so in one
    rate-limited warning, not one per connection."""
    log_before = len(kvbed.master_log.read_text(errors="replace"))
    flood = _flood_from(kvbed, "k2", 300)
    try:
        time.sleep(1)
        bundle = vault.issue("k1")
        run = _bootstrap(kvbed, "k1", bundle, **{"retry-for": "0"})
    finally:
        counts = _flood_counts(flood)
    assert run.returncode == 0, run.stderr
    assert "accepted by the master as k1" in run.stdout
    assert counts["cut"] > 0, counts
    ip = kvbed.nodes["k2"].ip
    log = kvbed.master_log.read_text(errors="replace")[log_before:]
    warnings = [line for line in log.splitlines() if "keyvault: connection limits" in line]
    assert 1 <= len(warnings) <= 3 and ip in warnings[0], warnings


_BAD_REQUESTS = """
import concurrent.futures, http.client, ssl, sys
host, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
def bad(_):
    conn = http.client.HTTPSConnection(host, port, context=ctx, timeout=15)
    try:
        conn.request("POST", "/v1/redeem", b"{}", {"Content-Type": "application/json"})
        return conn.getresponse().status
    finally:
        conn.close()
with concurrent.futures.ThreadPoolExecutor(8) as pool:
    print(sorted(set(pool.map(bad, range(count)))))
"""


def test_a_burst_of_rejections_is_summarised(kvbed, vault):
    """3 x REJECT_BURST bad requests from k2 within a few seconds: at most REJECT_BURST per
    10 s window are logged and evented one by one (at most two windows), the rest come as
    one summary line and event per window; every rejection is counted exactly once."""
    count = 3 * REJECT_BURST
    ip = kvbed.nodes["k2"].ip
    log_before = len(kvbed.master_log.read_text(errors="replace"))
    run = kvbed.run(
        "k2", [sys.executable, "-c", _BAD_REQUESTS, kvbed.master_ip, str(PORT), str(count)]
    )
    assert run.returncode == 0 and run.stdout.strip() == "[403]", run.stderr

    def mine(event):
        data = event["data"]
        return data.get("peer") == ip or data.get("source") == ip

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        ours = [e for e in vault.events.snapshot() if mine(e)]
        single = [e for e in ours if e["tag"] == "salt/keyvault/redeem/rejected"]
        summary = [e for e in ours if e["tag"] == "salt/keyvault/redeem/rejected/summary"]
        if len(single) + sum(e["data"]["count"] for e in summary) >= count:
            break
        time.sleep(0.5)
    assert len(single) + sum(e["data"]["count"] for e in summary) == count
    assert len(single) <= 2 * REJECT_BURST and 1 <= len(summary) <= 2
    assert all(e["data"]["reasons"] == {"malformed": e["data"]["count"]} for e in summary)
    log = kvbed.master_log.read_text(errors="replace")[log_before:]
    lines = [line for line in log.splitlines() if f"peer {ip}:" in line]
    summaries = [line for line in log.splitlines() if f"more rejection(s) from {ip} " in line]
    assert len(lines) == len(single) and len(summaries) == len(summary)


def test_minions_still_answer(kvbed):
    kvbed.wait_for_minions(list(NODES), timeout=60)
    keys = json.loads(kvbed.cli(["salt-key", "-L", "--out=json"]).stdout)
    assert {"k1", "k2"} <= set(keys["minions"]) and keys["minions_pre"] == []


# ---------------------------------------------------------------------- no secret leaks
def test_no_secret_in_logs_events_or_list(kvbed, vault):
    assert len(SECRETS) > 40 and len(RETURNED) > 40  # bare names: never print the secrets
    listing = kvbed.cli(["salt-run", "--out=json", "keyvault.list"])
    assert listing.returncode == 0
    run_ret = re.compile(r"\Asalt/run/\d+/ret\Z")
    events = vault.events.snapshot()
    ours = [e for e in events if e["tag"].startswith("salt/keyvault/")]
    assert {e["tag"] for e in ours} >= {
        "salt/keyvault/issue",
        "salt/keyvault/revoke",
        "salt/keyvault/redeem/accepted",
        "salt/keyvault/redeem/rejected",
    }
    log = kvbed.master_log.read_text(errors="replace")
    chatty = re.compile(r"\]\[(TRACE|GARBAGE|DEBUG|PROFILE) *\]\[")
    log_at_info = "\n".join(line for line in log.splitlines() if not chatty.search(line))
    assert "get_event() received" in log  # the master really logged the bus at trace
    common = {
        "master stdout": (kvbed.master_dir / "master.stdout").read_text(errors="replace"),
        "keyvault.list": listing.stdout + listing.stderr,
        "events other than salt/run/*/ret": json.dumps(
            [e for e in events if not run_ret.match(e["tag"])], default=str
        ),
        "store": "".join(
            p.read_text()
            for p in (kvbed.master_dir / "cache" / "keyvault" / "tokens").glob("*.json")
        ),
    }
    checks = [
        (
            "SECRETS",
            SECRETS,
            {**common, "master log": log, "events": json.dumps(events, default=str)},
        ),
        ("RETURNED", RETURNED, {**common, "master log at info and above": log_at_info}),
    ]
    for label, secrets, haystacks in checks:
        for name, text in haystacks.items():
            leaked = [index for index, secret in enumerate(secrets) if secret in text]
            assert not leaked, f"secret material in {name}: {label} indexes {leaked}"
