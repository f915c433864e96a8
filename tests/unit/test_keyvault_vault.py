"""KeyVault token crypto, store and client checks (no daemons)."""

import io
import json
import multiprocessing
import os
import shlex
import socket
import ssl
import stat
import subprocess
import threading
import time

import pytest
import salt.utils.crypt

from salt_ext.lib.keyvault import client
from salt_ext.lib.keyvault import vault as kv

NOW = 1_800_000_000


@pytest.fixture(scope="module")
def keypair():
    return kv.generate_minion_keypair(2048)


@pytest.fixture(scope="module")
def other_keypair():
    return kv.generate_minion_keypair(2048)


@pytest.fixture
def master(tmp_path, keypair):
    """A fake master: pki dir with master.pem/pub, a store, the pki subdirs."""
    pki = tmp_path / "pki"
    pki.mkdir()
    priv, pub = keypair
    (pki / "master.pem").write_text(priv)
    (pki / "master.pub").write_text(pub)
    store = kv.TokenStore(
        str(tmp_path / "cache" / "keyvault" / "tokens"),
        kv.wrap_key_from_master_pem(str(pki / "master.pem")),
    )
    return {"pki": pki, "store": store, "master_pub": pub}


def _issue(master, minion="node1", ttl=300, now=NOW):
    record, token = master["store"].issue(minion, ttl, now=now)
    return record, token


def _redeem(master, request, now=NOW, window=10):
    return master["store"].redeem(
        request, str(master["pki"]), window=window, now=now, master_pub=master["master_pub"]
    )


# ---------------------------------------------------------------------- tokens and MACs
def test_token_format_and_parse():
    token_id, secret = kv.new_token_id(), kv.new_secret()
    assert len(token_id) == 6 and set(token_id) <= set(kv.TOKEN_ID_ALPHABET)
    assert len(secret) == 43
    parsed_id, raw = kv.parse_token(kv.format_token(token_id, secret))
    assert parsed_id == token_id and len(raw) == 32


@pytest.mark.parametrize(
    "token",
    ["", "abc", "abcdef", "ABCDEF." + "A" * 43, "abcdef." + "A" * 42, "abc.def.ghi", None],
)
def test_parse_token_refuses_garbage_without_echoing_it(token):
    with pytest.raises(kv.KeyVaultError) as err:
        kv.parse_token(token)
    assert "A" * 42 not in str(err.value)


def test_canonical_encoding_is_unambiguous():
    base = {"token_id": "abcdef", "minion_id": "n1", "nonce": "a" * 64, "timestamp": 5}
    one = kv.canonical_request({**base, "minion_id": "n1", "public_key": "Xkey"})
    two = kv.canonical_request({**base, "minion_id": "n1X", "public_key": "key"})
    assert one != two
    assert one.startswith(len(kv.REQUEST_PREFIX).to_bytes(4, "big") + kv.REQUEST_PREFIX)
    # fixed order, length-prefixed
    assert b"\x00\x00\x00\x02n1" in one


def test_request_mac_is_keyed_by_the_token(keypair):
    token = kv.format_token("abcdef", kv.new_secret())
    req = kv.build_request(token, "n1", keypair[1], now=NOW)
    token_id, secret = kv.parse_token(token)
    key = kv.mac_key(secret, token_id)
    assert kv.mac_equal(kv.request_mac(key, req), req["mac"])
    other = kv.mac_key(kv.parse_token(kv.format_token("abcdef", kv.new_secret()))[1], "abcdef")
    assert not kv.mac_equal(kv.request_mac(other, req), req["mac"])
    # the id is part of K: same secret, other id, other key
    assert kv.mac_key(secret, "abcdeg") != key


@pytest.mark.parametrize("given", [None, 5, "", "zz", "é" * 64])
def test_request_mac_equal_rejects_non_hex(given):
    assert not kv.mac_equal("ab" * 32, given)


def test_pem_finger_matches_salt(tmp_path, keypair):
    path = tmp_path / "master.pub"
    path.write_text(keypair[1])
    assert kv.pem_finger(keypair[1]) == salt.utils.crypt.pem_finger(str(path))
    assert kv.pem_finger(keypair[1], "sha512") == salt.utils.crypt.pem_finger(
        str(path), sum_type="sha512"
    )


def test_normalise_finger():
    assert kv.normalise_finger("AABB") == "aa:bb"
    assert kv.normalise_finger(" aa:BB ") == "aa:bb"


@pytest.mark.parametrize(
    "minion_id,ok",
    [
        ("node1", True),
        ("n-1.example.org", True),
        ("a/b", False),
        ("..", False),
        (".", False),
        ("a\\b", False),
        ("a\0b", False),
        ("a b", False),
        ("a\nb", False),
        ("", False),
        ("x" * 256, False),
        ("x" * 200, True),
        ("x" * 201, False),
        ("\u00e9" * 100, True),
        ("\u00e9" * 101, False),
        ("x" * 250, False),
        (None, False),
        ("caf\u00e9", True),  # NFC
        ("cafe\u0301", False),  # the same name in NFD: would be a second minion
        ("\u212b", False),  # ANGSTROM SIGN: NFC is U+00C5
        ("-node", True),
    ],
)
def test_valid_minion_id(minion_id, ok):
    assert kv.valid_minion_id(minion_id) is ok


# ---------------------------------------------------------------------- store
def test_store_holds_no_secret(master):
    record, token = _issue(master)
    token_id, secret = kv.parse_token(token)
    raw = open(master["store"].path(token_id), "rb").read()
    key = kv.mac_key(secret, token_id)
    for needle in (token.encode(), token.split(".")[1].encode(), key.hex().encode(), secret):
        assert needle not in raw
    assert "wrapped_key" in json.loads(raw)


def test_store_files_are_private(master):
    _, token = _issue(master)
    path = master["store"].path(token.split(".")[0])
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(master["store"].directory).st_mode) == 0o700


def test_wrapped_key_needs_the_master_key(master, tmp_path, other_keypair):
    _, token = _issue(master)
    (tmp_path / "other.pem").write_text(other_keypair[0])
    thief = kv.TokenStore(
        master["store"].directory, kv.wrap_key_from_master_pem(str(tmp_path / "other.pem"))
    )
    req = kv.build_request(token, "node1", other_keypair[1], now=NOW)
    with pytest.raises(kv.Rejected) as err:
        thief.redeem(req, str(master["pki"]), now=NOW)
    assert err.value.reason == "store_error"
    assert not (master["pki"] / "minions").exists()


def test_redeem_accepts_once_and_writes_the_key(master, other_keypair):
    _, token = _issue(master)
    req = kv.build_request(token, "node1", other_keypair[1], now=NOW)
    result = _redeem(master, req)
    assert result["action"] == "write"
    assert (master["pki"] / "minions" / "node1").read_text() == other_keypair[1]
    # the response MAC proves the master holds K
    resp = {"master_pub": master["master_pub"], "response_mac": result["response_mac"]}
    assert kv.check_response(token, req, resp, kv.pem_finger(master["master_pub"]))
    # replay of the good request and a fresh second redeem: both refused
    with pytest.raises(kv.Rejected) as err:
        _redeem(master, req)
    assert err.value.reason == "consumed"
    again = kv.build_request(token, "node1", other_keypair[1], now=NOW)
    with pytest.raises(kv.Rejected, match="consumed"):
        _redeem(master, again)
    assert master["store"].list(now=NOW)[0]["state"] == "consumed"


def test_redeem_wrong_minion(master, other_keypair):
    _, token = _issue(master)
    req = kv.build_request(token, "node2", other_keypair[1], now=NOW)
    with pytest.raises(kv.Rejected) as err:
        _redeem(master, req)
    assert err.value.reason == "wrong_minion"
    assert not (master["pki"] / "minions").exists()


@pytest.mark.parametrize("skew", [-11, 11, -3600])
def test_stale_timestamp_is_refused(master, other_keypair, skew):
    _, token = _issue(master)
    req = kv.build_request(token, "node1", other_keypair[1], now=NOW + skew)
    with pytest.raises(kv.Rejected) as err:
        _redeem(master, req)
    assert err.value.reason == "stale_timestamp"


def test_redeem_expired(master, other_keypair):
    _, token = _issue(master, ttl=60)
    req = kv.build_request(token, "node1", other_keypair[1], now=NOW + 61)
    with pytest.raises(kv.Rejected) as err:
        _redeem(master, req, now=NOW + 61)
    assert err.value.reason == "expired"
    assert master["store"].list(now=NOW + 61)[0]["state"] == "expired"


def test_redeem_reused_nonce_replay(master, other_keypair):
    _, token = _issue(master)
    req = kv.build_request(token, "node1", other_keypair[1], now=NOW + 100)  # stale: refused
    with pytest.raises(kv.Rejected, match="stale_timestamp"):
        _redeem(master, req)
    fresh = kv.build_request(token, "node1", other_keypair[1], now=NOW, nonce=req["nonce"])
    with pytest.raises(kv.Rejected) as err:
        _redeem(master, fresh)
    assert err.value.reason == "replayed_nonce"


def test_five_failures_revoke_the_token(master, other_keypair):
    _, token = _issue(master)
    for _ in range(5):
        bad = kv.build_request(token, "node1", other_keypair[1], now=NOW)
        bad["mac"] = "0" * 64
        with pytest.raises(kv.Rejected, match="bad_mac"):
            _redeem(master, bad)
    good = kv.build_request(token, "node1", other_keypair[1], now=NOW)
    with pytest.raises(kv.Rejected) as err:
        _redeem(master, good)
    assert err.value.reason == "revoked"
    entry = master["store"].list(now=NOW)[0]
    assert entry["state"] == "revoked" and entry["failures"] == 5


def test_revoke_and_purge(master):
    record, _ = _issue(master)
    view, previous = master["store"].revoke(record["token_id"], now=NOW)
    assert previous == "issued" and view["state"] == "revoked"
    _issue(master, minion="node2", ttl=10)
    kept, _ = _issue(master, minion="node3", ttl=10_000)
    removed = master["store"].purge(now=NOW + 20)
    assert len(removed["purged"]) == 2 and kept["token_id"] not in removed["purged"]
    assert removed["corrupt"] == []
    assert [t["token_id"] for t in master["store"].list(now=NOW)] == [kept["token_id"]]


def test_weak_public_key_is_refused(master):
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415
    from cryptography.hazmat.primitives.asymmetric import rsa  # noqa: PLC0415

    weak = (
        rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    for pub in (weak, "not a key", "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"):
        _, token = _issue(master)
        with pytest.raises(kv.Rejected) as err:
            _redeem(master, kv.build_request(token, "node1", pub, now=NOW))
        assert err.value.reason == "bad_public_key"


@pytest.mark.parametrize("content", ["not json", "[]", '{"version": 2}', '{"version": 1}', ""])
def test_corrupt_record_fails_closed(master, other_keypair, content, caplog):
    _, token = _issue(master)
    path = master["store"].path(token.split(".")[0])
    with open(path, "w") as handle:
        handle.write(content)
    with pytest.raises(kv.Rejected) as err:
        _redeem(master, kv.build_request(token, "node1", other_keypair[1], now=NOW))
    assert err.value.reason == "store_error" and path in err.value.detail
    assert not (master["pki"] / "minions").exists()
    listed = master["store"].list(now=NOW)
    assert listed[0]["state"] == "corrupt" and path in listed[0]["error"]


def test_corrupt_record_tampered_ciphertext(master, other_keypair):
    _, token = _issue(master)
    path = master["store"].path(token.split(".")[0])
    record = json.loads(open(path).read())
    sealed = bytearray(bytes.fromhex(record["wrapped_key"]["sealed"]))
    sealed[0] ^= 1
    record["wrapped_key"]["sealed"] = sealed.hex()
    open(path, "w").write(json.dumps(record))
    with pytest.raises(kv.Rejected, match="store_error"):
        _redeem(master, kv.build_request(token, "node1", other_keypair[1], now=NOW))


@pytest.mark.parametrize(
    "mutate",
    [
        lambda r: r.pop("mac"),
        lambda r: r.update(token_id="ABC"),  # noqa: S106
        lambda r: r.update(nonce="xyz"),
        lambda r: r.update(timestamp="now"),
        lambda r: r.update(minion_id="../x"),
        lambda r: r.update(public_key=5),
    ],
)
def test_malformed_request(master, other_keypair, mutate):
    _, token = _issue(master)
    req = kv.build_request(token, "node1", other_keypair[1], now=NOW)
    mutate(req)
    with pytest.raises(kv.Rejected) as err:
        _redeem(master, req)
    assert err.value.reason == "malformed"


# ---------------------------------------------------------------------- minion keys
@pytest.mark.parametrize(
    "where,same,outcome",
    [
        ("minions", True, "present"),
        ("minions", False, "key_conflict"),
        ("minions_pre", True, "move"),
        ("minions_pre", False, "key_conflict"),
        ("minions_rejected", True, "key_conflict"),
        ("minions_denied", False, "key_conflict"),
    ],
)
def test_accept_minion_key_states(master, keypair, other_keypair, where, same, outcome):
    existing = other_keypair[1] if same else keypair[1]
    (master["pki"] / where).mkdir()
    (master["pki"] / where / "node1").write_text(existing)
    _, token = _issue(master)
    req = kv.build_request(token, "node1", other_keypair[1], now=NOW)
    if outcome == "key_conflict":
        with pytest.raises(kv.Rejected) as err:
            _redeem(master, req)
        assert err.value.reason == "key_conflict"
        if where != "minions":
            assert not (master["pki"] / "minions" / "node1").exists()
        else:
            assert (master["pki"] / "minions" / "node1").read_text() == existing
        return
    assert _redeem(master, req)["action"] == outcome
    assert kv.same_key((master["pki"] / "minions" / "node1").read_text(), other_keypair[1])
    assert not (master["pki"] / "minions_pre" / "node1").exists()


# ---------------------------------------------------------------------- concurrency
def _redeem_in_process(args):
    directory, pem, pki, request = args
    store = kv.TokenStore(directory, kv.wrap_key_from_master_pem(pem))
    try:
        store.redeem(request, pki)
    except kv.Rejected as err:
        return err.reason
    return "accepted"


def test_concurrent_redeems_one_winner(master, other_keypair):
    _, token = _issue(master, now=int(time.time()))
    requests = [kv.build_request(token, "node1", other_keypair[1]) for _ in range(24)]
    args = [
        (master["store"].directory, str(master["pki"] / "master.pem"), str(master["pki"]), r)
        for r in requests
    ]
    with multiprocessing.get_context("fork").Pool(6) as pool:
        outcomes = pool.map(_redeem_in_process, args)
    assert outcomes.count("accepted") == 1, outcomes
    assert set(outcomes) <= {"accepted", "consumed"}


# ---------------------------------------------------------------------- TLS and client
def test_tls_cert_generation_and_fingerprint(tmp_path):
    cert, key = kv.ensure_tls_cert(str(tmp_path / "tls"), ips=["127.0.0.1"])
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(tmp_path / "tls").st_mode) == 0o700
    finger = kv.cert_finger_file(cert)
    assert len(finger.replace(":", "")) == 64
    # second call keeps the same certificate
    assert kv.ensure_tls_cert(str(tmp_path / "tls")) == (cert, key)
    assert kv.cert_finger_file(cert) == finger
    der = ssl.PEM_cert_to_DER_cert(open(cert).read())
    assert kv.finger_matches(finger, der)
    assert kv.finger_matches(finger.upper().replace(":", ""), der)
    assert not kv.finger_matches("00" * 32, der)
    assert not kv.finger_matches("garbage", der)


def _read_request(tls):
    """Everything the peer sends: a whole HTTP request (headers + Content-Length body), or
    all bytes until it closes. ``(data, complete)``."""
    data = b""
    while b"\r\n\r\n" not in data:
        try:
            chunk = tls.recv(65536)
        except (ssl.SSLError, OSError):
            chunk = b""
        if not chunk:
            return data, False
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(body) < length:
        chunk = tls.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body, True


def _tls_server(tmp_path, reply):
    """One-connection TLS server with the keyvault cert; answers a complete request with
    ``reply``. ``got`` receives every byte the client sent; ``done`` is set once the
    connection is over (the client closed, or the answer was sent)."""
    cert, key = kv.ensure_tls_cert(str(tmp_path / "srv"))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(4)
    got = []
    done = threading.Event()

    def serve():
        try:
            conn, _ = sock.accept()
            conn.settimeout(10)
            tls = ctx.wrap_socket(conn, server_side=True)
            data, complete = _read_request(tls)
            got.append(data)
            if complete:
                body = json.dumps(reply).encode()
                tls.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                    + body
                )
            tls.close()
        except (ssl.SSLError, OSError) as err:
            got.append(err)
        finally:
            sock.close()
            done.set()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    url = f"https://127.0.0.1:{sock.getsockname()[1]}/v1/redeem"
    return url, kv.cert_finger_file(cert), got, done


def test_client_refuses_wrong_pin_before_sending(tmp_path):
    url, _finger, got, done = _tls_server(tmp_path, {})
    with pytest.raises(client.BootstrapError, match="pinned"):
        client.pinned_post(url, {"secret": "x"}, "00" * 32, timeout=5)
    # strict: the server read until the client closed the connection, and got nothing
    assert done.wait(10)
    assert got == [b""]


def test_client_refuses_forged_master(tmp_path, keypair, other_keypair, capsys):
    # a server with the right pin but without K: the response MAC cannot verify
    url, finger, _, _ = _tls_server(
        tmp_path, {"master_pub": other_keypair[1], "response_mac": "00" * 32}
    )
    token = kv.format_token("abcdef", kv.new_secret())
    pki, conf = tmp_path / "pki", tmp_path / "minion.d"
    args = client.parser().parse_args(
        [
            *("--url", url, "--token", token, "--minion-id", "n1"),
            *("--master-finger", kv.pem_finger(other_keypair[1]), "--tls-finger", finger),
            *("--pki-dir", str(pki), "--config-dir", str(conf), "--timeout", "5"),
        ]
    )
    assert client.main(vars_to_argv(args)) == 1
    err = capsys.readouterr().err
    assert "response MAC" in err and token.split(".")[1] not in err
    assert not (pki / "minion_master.pub").exists() and not conf.exists()
    assert (pki / "minion.pem").exists()  # generated by this run, kept


def vars_to_argv(args):
    out = []
    for name, value in vars(args).items():
        out += [f"--{name.replace('_', '-')}", str(value)]
    return out


def test_client_check_response_master_finger(keypair, other_keypair):
    token = kv.format_token("abcdef", kv.new_secret())
    req = kv.build_request(token, "n1", keypair[1], now=NOW)
    token_id, secret = kv.parse_token(token)
    key = kv.mac_key(secret, token_id)
    resp = {
        "master_pub": other_keypair[1],
        "response_mac": kv.response_mac(key, req["nonce"], other_keypair[1]),
    }
    assert kv.check_response(token, req, resp, kv.pem_finger(other_keypair[1]))
    with pytest.raises(kv.KeyVaultError, match="does not match --master-finger"):
        kv.check_response(token, req, resp, kv.pem_finger(keypair[1]))


def test_client_keypair_formats(tmp_path):
    pub, generated = client.ensure_keypair(str(tmp_path / "pki"))
    assert generated
    priv_path = tmp_path / "pki" / "minion.pem"
    assert stat.S_IMODE(priv_path.stat().st_mode) == 0o400
    assert priv_path.read_text().startswith("-----BEGIN RSA PRIVATE KEY-----")
    assert pub.startswith("-----BEGIN PUBLIC KEY-----")
    again, generated = client.ensure_keypair(str(tmp_path / "pki"))
    assert again == pub and not generated


def test_settings_validation():
    assert kv.settings({})["request_window"] == 10
    with pytest.raises(kv.KeyVaultError, match="keyvault:max_ttl"):
        kv.settings({"keyvault": {"max_ttl": 0}})
    with pytest.raises(kv.KeyVaultError, match="tls_key"):
        kv.settings({"keyvault": {"tls_cert": "/x"}})
    cfg = kv.settings({"interface": "10.0.0.1", "engines": [{"keyvault": {"port": 4600}}]})
    assert kv.endpoint_url(cfg) == "https://10.0.0.1:4600/v1/redeem"
    with pytest.raises(kv.KeyVaultError, match="keyvault:url"):
        kv.endpoint_url(kv.settings({"interface": "0.0.0.0"}))  # noqa: S104


# ---------------------------------------------------------------------- token input (finding 1)
def _cli_args(token):
    argv = ["--url", "https://127.0.0.1:1/v1/redeem", "--minion-id", "n1"]
    argv += ["--master-finger", "00" * 32, "--tls-finger", "00" * 32]
    return client.parser().parse_args(argv + (["--token", token] if token is not None else []))


class _Stdin(io.StringIO):
    def __init__(self, text, tty=False):
        super().__init__(text)
        self.tty = tty

    def isatty(self):
        return self.tty


def test_token_is_read_from_stdin_with_dash():
    token = kv.format_token("abcdef", kv.new_secret())
    args, err = _cli_args("-"), io.StringIO()
    assert client.resolve_token(args, stdin=_Stdin(token + "\n"), err=err, environ={}) == token
    assert args.token == token and err.getvalue() == ""


def test_token_is_prompted_without_echo_on_a_tty(monkeypatch):
    token = kv.format_token("abcdef", kv.new_secret())
    monkeypatch.setattr(client.getpass, "getpass", lambda prompt: token)
    args = _cli_args("-")
    assert client.resolve_token(args, stdin=_Stdin("", tty=True), environ={}) == token


def test_token_from_the_environment():
    token = kv.format_token("abcdef", kv.new_secret())
    args, err = _cli_args(None), io.StringIO()
    environ = {"SALT_KEYVAULT_TOKEN": token}
    assert client.resolve_token(args, stdin=_Stdin(""), err=err, environ=environ) == token
    assert err.getvalue() == ""
    with pytest.raises(client.BootstrapError, match="SALT_KEYVAULT_TOKEN"):
        client.resolve_token(_cli_args(None), stdin=_Stdin(""), environ={})
    with pytest.raises(client.BootstrapError, match="no token"):
        client.resolve_token(_cli_args("-"), stdin=_Stdin(""), environ={})


def test_token_on_the_command_line_warns():
    token = kv.format_token("abcdef", kv.new_secret())
    args, err = _cli_args(token), io.StringIO()
    assert client.resolve_token(args, stdin=_Stdin(""), err=err, environ={}) == token
    assert "visible to every local user" in err.getvalue()
    assert token not in err.getvalue()


def test_bootstrap_command_keeps_the_token_out_of_argv(tmp_path):
    """Run the runner's ready-to-paste command in a real shell against a stub CLI that
    records its argv and stdin: the token arrives on stdin only."""
    token = kv.format_token("abcdef", kv.new_secret())
    command = kv.bootstrap_command(
        "https://10.0.0.1:4510/v1/redeem", token, "node1", "aa:" * 31 + "aa", "bb:" * 31 + "bb"
    )
    assert token in command and command.startswith(f"echo '{token}' | salt-keyvault-bootstrap ")
    assert "--token=- " in command
    stub = tmp_path / "bin" / "salt-keyvault-bootstrap"
    stub.parent.mkdir()
    stub.write_text(
        '#!/bin/sh\nprintf "%s\\n" "$@" > "$OUT/argv"\ncat > "$OUT/stdin"\n'
        'cat /proc/$$/cmdline > "$OUT/cmdline"\n'
    )
    stub.chmod(0o755)
    env = {"PATH": f"{stub.parent}:/usr/bin:/bin", "OUT": str(tmp_path)}
    subprocess.run(["bash", "-c", command], env=env, check=True, timeout=10)
    assert (tmp_path / "stdin").read_text().strip() == token
    assert token not in (tmp_path / "argv").read_text()
    assert token.encode() not in (tmp_path / "cmdline").read_bytes()
    hidden = kv.bootstrap_command("https://h:1/v1/redeem", "<token: it's elsewhere>", "n", "a", "b")
    assert shlex.split(hidden)[1] == "<token: it's elsewhere>"


# ---------------------------------------------------------------------- hostile field values
@pytest.mark.parametrize(
    "field,value",
    [
        ("public_key", "\ud800"),
        ("public_key", "-----BEGIN PUBLIC KEY-----\n\u00e9\n-----END PUBLIC KEY-----\n"),
        ("timestamp", 10**400),
        ("timestamp", -(2**53)),
        ("timestamp", 2.5),
        ("minion_id", "node\ud800"),
        ("nonce", ["a" * 64]),
        ("mac", 5),
    ],
)
def test_hostile_field_values_are_a_counted_plain_rejection(master, other_keypair, field, value):
    record, token = _issue(master)
    req = kv.build_request(token, "node1", other_keypair[1], now=NOW)
    req[field] = value
    with pytest.raises(kv.Rejected) as err:
        _redeem(master, req)
    assert err.value.reason == "malformed" and err.value.token_id == record["token_id"]
    assert master["store"].list(now=NOW)[0]["failures"] == 1
    assert not (master["pki"] / "minions").exists()


def test_malformed_requests_count_towards_revocation(master, other_keypair):
    _, token = _issue(master)
    for _ in range(5):
        req = kv.build_request(token, "node1", other_keypair[1], now=NOW)
        req["timestamp"] = 10**400
        with pytest.raises(kv.Rejected, match="malformed"):
            _redeem(master, req)
    with pytest.raises(kv.Rejected) as err:
        _redeem(master, kv.build_request(token, "node1", other_keypair[1], now=NOW))
    assert err.value.reason == "revoked"


def test_longest_minion_id_redeems_and_longer_ones_are_refused_at_issue(master, other_keypair):
    longest = "n" * kv.MAX_MINION_ID_BYTES
    _, token = _issue(master, minion=longest)
    assert _redeem(master, kv.build_request(token, longest, other_keypair[1], now=NOW))
    assert (master["pki"] / "minions" / longest).read_text() == other_keypair[1]
    for too_long in ("n" * 201, "n" * 250):
        with pytest.raises(kv.KeyVaultError, match="^minion_id: .*200 bytes"):
            master["store"].issue(too_long, 60, now=NOW)


@pytest.mark.parametrize(
    "wrap",
    [
        lambda pem: "hello\n" + pem,
        lambda pem: pem + "extra text\n",
        lambda pem: pem.replace("-----END PUBLIC KEY-----", "-----END RSA PUBLIC KEY-----"),
        lambda pem: "x" + pem,
    ],
)
def test_text_around_the_pem_block_is_refused(master, other_keypair, wrap):
    _, token = _issue(master)
    req = kv.build_request(token, "node1", wrap(other_keypair[1]), now=NOW)
    with pytest.raises(kv.Rejected) as err:
        _redeem(master, req)
    assert err.value.reason == "bad_public_key"
    assert not (master["pki"] / "minions").exists()


def test_stored_key_is_the_normalised_pem_block(master, other_keypair):
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415

    pem = other_keypair[1]
    messy = "\n\n  " + pem.replace("\n", "\r\n") + "\r\n\n"
    _, token = _issue(master)
    assert _redeem(master, kv.build_request(token, "node1", messy, now=NOW))
    assert (master["pki"] / "minions" / "node1").read_text() == pem
    # the PKCS#1 variant is accepted too, stored as sent
    pkcs1 = (
        serialization.load_pem_public_key(pem.encode())
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.PKCS1)
        .decode()
    )
    _, token = _issue(master, minion="node2")
    assert _redeem(master, kv.build_request(token, "node2", pkcs1, now=NOW))
    assert (master["pki"] / "minions" / "node2").read_text() == pkcs1


@pytest.mark.parametrize("state", ["consumed", "revoked", "expired"])
def test_attempts_on_a_dead_token_do_not_rewrite_the_store(master, other_keypair, state):
    record, token = _issue(master, ttl=60)
    now = NOW
    if state == "consumed":
        _redeem(master, kv.build_request(token, "node1", other_keypair[1], now=NOW))
    elif state == "revoked":
        master["store"].revoke(record["token_id"])
    else:
        now = NOW + 120
    path = master["store"].path(record["token_id"])
    before = (os.stat(path).st_ino, open(path, "rb").read())
    for mutate in ({"mac": "0" * 64}, {"timestamp": 10**400}, {"public_key": "\ud800"}):
        req = {**kv.build_request(token, "node1", other_keypair[1], now=now), **mutate}
        with pytest.raises(kv.Rejected):
            _redeem(master, req, now=now)
    assert (os.stat(path).st_ino, open(path, "rb").read()) == before


@pytest.mark.parametrize("option", ["--master-finger", "--tls-finger"])
@pytest.mark.parametrize(
    "value", ["zz" * 32, "\u00e9" * 64, "ab" * 31, "ab:" * 32, "a:bc" * 16, "ab" * 32 + "x"]
)
def test_bad_fingerprint_is_refused_before_anything_happens(tmp_path, capsys, option, value):
    token = kv.format_token("abcdef", kv.new_secret())
    pki, conf = tmp_path / "pki", tmp_path / "minion.d"
    values = {"--master-finger": "ab" * 32, "--tls-finger": "cd:" * 31 + "cd", option: value}
    argv = ["--url", "https://127.0.0.1:9/v1/redeem", "--token", token, "--minion-id", "n1"]
    for name, given in values.items():
        argv += [name, given]
    argv += ["--pki-dir", str(pki), "--config-dir", str(conf), "--timeout", "2"]
    assert client.main(argv) == 1
    err = capsys.readouterr().err
    assert f"{option}: expected a SHA-256 fingerprint" in err and "Traceback" not in err
    assert not pki.exists() and not conf.exists()


def test_fingerprint_forms():
    assert kv.valid_sha256_finger("AB" * 32) and kv.valid_sha256_finger(" " + "ab:" * 31 + "ab")
    assert not kv.valid_sha256_finger(None) and not kv.valid_sha256_finger("")


@pytest.mark.parametrize(
    "change",
    [
        {"minion_id": "node2"},
        {"expires": NOW + 86400},
        {"created": NOW - 1},
    ],
    ids=["minion_id", "expires", "created"],
)
def test_tampered_immutable_field_fails_closed(master, other_keypair, change):
    _, token = _issue(master)
    path = master["store"].path(token.split(".")[0])
    record = json.loads(open(path).read())
    record.update(change)
    open(path, "w").write(json.dumps(record))
    minion = change.get("minion_id", "node1")
    with pytest.raises(kv.Rejected) as err:
        _redeem(master, kv.build_request(token, minion, other_keypair[1], now=NOW))
    assert err.value.reason == "store_error"
    assert not (master["pki"] / "minions").exists()


def test_mutable_fields_stay_mutable(master, other_keypair):
    """state/failures are not in the AAD (by design): a reset failure count still unwraps."""
    record, token = _issue(master)
    path = master["store"].path(record["token_id"])
    stored = json.loads(open(path).read())
    stored["failures"] = 3
    open(path, "w").write(json.dumps(stored))
    assert _redeem(master, kv.build_request(token, "node1", other_keypair[1], now=NOW))


# ---------------------------------------------------------------------- bounds (item 8)
@pytest.mark.parametrize(
    "key,value",
    [
        ("max_ttl", 10**12),
        ("max_ttl", kv.MAX_TTL_LIMIT + 1),
        ("request_window", kv.MAX_WINDOW_LIMIT + 1),
        ("max_failures", kv.MAX_FAILURES_LIMIT + 1),
        ("max_ttl", "3600"),
        ("keep_older", "yes"),
    ],
)
def test_settings_are_bounded_naming_the_key(key, value):
    with pytest.raises(kv.KeyVaultError, match=f"keyvault:{key}"):
        kv.settings({"keyvault": {key: value}})
    assert kv.settings({"keyvault": {"max_ttl": kv.MAX_TTL_LIMIT}})["max_ttl"] == kv.MAX_TTL_LIMIT


@pytest.mark.parametrize("ttl", [10**12, kv.MAX_TTL_LIMIT + 1, 0, -5, "60", 2.5, True])
def test_bad_ttl_is_refused_before_anything_is_written(master, ttl):
    with pytest.raises(kv.KeyVaultError, match="ttl"):
        master["store"].issue("node1", ttl, now=NOW)
    assert [n for n in os.listdir(master["store"].directory) if n.endswith(".json")] == []


def _damage(master, token_id, **fields):
    path = master["store"].path(token_id)
    record = json.loads(open(path).read())
    record.update(fields)
    with open(path, "w") as handle:
        json.dump(record, handle)


@pytest.mark.parametrize(
    "fields",
    [
        {"expires": 10**20},
        {"expires": "soon"},
        {"created": -(10**20)},
        {"consumed_at": 10**20, "state": "consumed"},
        {"consumed_at": "yesterday", "state": "consumed"},
        {"revoked_at": -(10**20), "state": "revoked"},
        {"revoked_at": 1.5, "state": "revoked"},
        {"revoke_reason": ["x"], "state": "revoked"},
        {"failures": -1},
    ],
)
def test_list_and_purge_report_a_damaged_record_and_go_on(master, fields):
    bad, _ = _issue(master, minion="node1")
    good, _ = _issue(master, minion="node2")
    dead, _ = _issue(master, minion="node3", ttl=10)
    _damage(master, bad["token_id"], **fields)
    listed = {t["token_id"]: t for t in master["store"].list(now=NOW + 20)}
    assert listed[bad["token_id"]]["state"] == "corrupt"
    assert bad["token_id"] in listed[bad["token_id"]]["error"]
    assert listed[good["token_id"]]["state"] == "issued"
    result = master["store"].purge(now=NOW + 20)
    assert result["purged"] == [dead["token_id"]]
    assert [c["token_id"] for c in result["corrupt"]] == [bad["token_id"]]
    assert os.path.exists(master["store"].path(bad["token_id"]))


# ---------------------------------------------------------------------- one live token per id
def test_a_new_token_revokes_the_older_live_tokens_of_its_minion(master, other_keypair):
    expired, _ = _issue(master, minion="node1", ttl=10, now=NOW - 20)
    used, used_token = _issue(master, minion="node1")
    _redeem(master, kv.build_request(used_token, "node1", other_keypair[1], now=NOW))
    (master["pki"] / "minions" / "node1").unlink()
    first, first_token = _issue(master, minion="node1")
    assert first["superseded"] == []  # the consumed and the expired token are left alone
    other, _ = _issue(master, minion="node2")
    second, second_token = _issue(master, minion="node1")
    assert second["superseded"] == [first["token_id"]]
    states = {t["token_id"]: t for t in master["store"].list(now=NOW)}
    assert states[first["token_id"]]["state"] == "revoked"
    assert second["token_id"] in states[first["token_id"]]["revoke_reason"]
    assert states[used["token_id"]]["state"] == "consumed"
    assert states[expired["token_id"]]["state"] == "expired"
    assert states[other["token_id"]]["state"] == "issued"
    with pytest.raises(kv.Rejected) as err:
        _redeem(master, kv.build_request(first_token, "node1", other_keypair[1], now=NOW))
    assert err.value.reason == "revoked"
    assert _redeem(master, kv.build_request(second_token, "node1", other_keypair[1], now=NOW))


def test_keep_older_leaves_the_older_tokens_live(master):
    first, _ = _issue(master, minion="node1")
    second, _ = master["store"].issue("node1", 300, now=NOW, keep_older=True)
    assert second["superseded"] == []
    assert {t["state"] for t in master["store"].list(now=NOW)} == {"issued"}


# ---------------------------------------------------------------------- printed command (item 11)
@pytest.mark.parametrize("minion_id", ["-evil", "--help", "-", "node1"])
def test_bootstrap_command_parses_for_any_valid_id(minion_id):
    token = kv.format_token("abcdef", kv.new_secret())
    command = kv.bootstrap_command("https://10.0.0.1:4510/v1/redeem", token, minion_id, "a", "b")
    echo, _, cli = command.partition(" | ")
    argv = shlex.split(cli)
    assert argv[0] == "salt-keyvault-bootstrap"
    args = client.parser().parse_args(argv[1:])
    assert (args.minion_id, args.token, args.url) == (
        minion_id,
        "-",
        "https://10.0.0.1:4510/v1/redeem",
    )
    assert (args.master_finger, args.tls_finger) == ("a", "b")


def test_nfd_minion_id_is_refused_at_issue_and_redeem(master, other_keypair):
    with pytest.raises(kv.KeyVaultError, match="minion_id"):
        master["store"].issue("cafe\u0301", 300, now=NOW)
    _, token = _issue(master, minion="caf\u00e9")
    req = kv.build_request(token, "cafe\u0301", other_keypair[1], now=NOW)
    with pytest.raises(kv.Rejected) as err:
        _redeem(master, req)
    assert err.value.reason == "malformed"
    assert not (master["pki"] / "minions").exists()


# ---------------------------------------------------------------------- clock (item 12)
def test_record_created_in_the_future_fails_closed(master, tmp_path, other_keypair):
    elsewhere = kv.TokenStore(str(tmp_path / "elsewhere"), master["store"].wrap_key)
    record, token = elsewhere.issue("node1", 300, now=NOW + 3600)
    os.rename(elsewhere.path(record["token_id"]), master["store"].path(record["token_id"]))
    req = kv.build_request(token, "node1", other_keypair[1], now=NOW)
    with pytest.raises(kv.Rejected) as err:
        _redeem(master, req)
    assert err.value.reason == "store_error" and "future" in err.value.detail
    assert not (master["pki"] / "minions").exists()
    listed = master["store"].list(now=NOW)
    assert listed[0]["state"] == "corrupt" and "future" in listed[0]["error"]


def test_clock_step_back_does_not_revive_an_expired_token(master, other_keypair):
    record, token = _issue(master, ttl=60)
    _issue(master, minion="node2", now=NOW + 120)  # the master saw NOW + 120 once
    stepped_back = NOW + 30
    req = kv.build_request(token, "node1", other_keypair[1], now=stepped_back)
    with pytest.raises(kv.Rejected) as err:
        _redeem(master, req, now=stepped_back)
    assert err.value.reason == "expired"
    assert not (master["pki"] / "minions").exists()
    listed = {t["token_id"]: t for t in master["store"].list(now=stepped_back)}
    assert listed[record["token_id"]]["state"] == "expired"
    clock = os.path.join(master["store"].directory, kv.CLOCK_FILE)
    assert stat.S_IMODE(os.stat(clock).st_mode) == 0o600
    assert int(open(clock).read()) == NOW + 120


def test_issue_after_a_large_step_back_refuses_a_token_born_expired(master):
    _issue(master, now=NOW + 7200)
    with pytest.raises(kv.KeyVaultError, match="clock"):
        master["store"].issue("node2", 300, now=NOW)
    record, _ = master["store"].issue("node2", 300, now=NOW + 7000)  # expires after the mark
    assert record["expires"] == NOW + 7300


def test_corrupt_clock_file_fails_closed(master, other_keypair):
    _, token = _issue(master)
    with open(os.path.join(master["store"].directory, kv.CLOCK_FILE), "w") as handle:
        handle.write("garbage")
    with pytest.raises(kv.Rejected) as err:
        _redeem(master, kv.build_request(token, "node1", other_keypair[1], now=NOW))
    assert err.value.reason == "store_error" and kv.CLOCK_FILE in err.value.detail
    assert not (master["pki"] / "minions").exists()
