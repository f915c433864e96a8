"""The keyvault runner and engine through real Salt loaders (no daemons)."""

import errno
import json
import os
import re

import pytest
import salt.config
import salt.loader
import salt.utils.crypt

from salt_ext.lib.keyvault import vault as kv


@pytest.fixture
def runners(tmp_path):
    opts = salt.config.master_config(str(tmp_path / "master"))
    opts["cachedir"] = str(tmp_path / "cache")
    opts["pki_dir"] = str(tmp_path / "pki")
    opts["sock_dir"] = str(tmp_path / "sock")  # no master: events are logged as not sent
    opts["interface"] = "10.1.2.3"
    opts["engines"] = [{"keyvault": {"port": 4599}}]
    opts["keyvault"] = {"max_ttl": 600}
    (tmp_path / "pki").mkdir()
    priv, pub = kv.generate_minion_keypair()
    (tmp_path / "pki" / "master.pem").write_text(priv)
    (tmp_path / "pki" / "master.pub").write_text(pub)
    return salt.loader.runner(opts), opts


def test_issue_returns_a_json_bundle(runners):
    run, opts = runners
    bundle = run["keyvault.issue"](minion_id="node1", ttl=120)
    json.dumps(bundle)  # salt-api returns it as JSON
    assert bundle["url"] == "https://10.1.2.3:4599/v1/redeem"
    assert bundle["master_finger"] == salt.utils.crypt.pem_finger(
        f"{opts['pki_dir']}/master.pub", sum_type="sha256"
    )
    assert bundle["tls_finger"] == kv.cert_finger_file(f"{opts['pki_dir']}/keyvault/cert.pem")
    assert kv.parse_token(bundle["token"])[0] == bundle["token_id"]
    # the token reaches the CLI through a pipe from echo (a builtin): never in any argv
    assert bundle["command"].startswith(f"echo '{bundle['token']}' | salt-keyvault-bootstrap ")
    assert "--token=- " in bundle["command"]
    assert "--minion-id=node1 " in bundle["command"]
    listed = run["keyvault.list"]()["tokens"]
    assert [t["token_id"] for t in listed] == [bundle["token_id"]]
    assert bundle["token"].split(".")[1] not in json.dumps(listed)
    assert run["keyvault.revoke"](token_id=bundle["token_id"])["revoked"] is True
    again = run["keyvault.revoke"](token_id=bundle["token_id"])
    assert again["result"] is False and again["retcode"] == 1
    assert run["keyvault.purge"]() == {"purged": [bundle["token_id"]], "corrupt": []}


@pytest.mark.parametrize(
    "kwargs,named",
    [
        ({"minion_id": "n1", "ttl": 0}, "ttl"),
        ({"minion_id": "n1", "ttl": 601}, "ttl"),
        ({"minion_id": "n1", "ttl": "soon"}, "ttl"),
        ({"minion_id": "../etc"}, "minion_id"),
        ({"minion_id": "a b"}, "minion_id"),
        ({"minion_id": "n" * 250}, "minion_id"),
        ({"minion_id": "cafe\u0301"}, "minion_id"),
        ({"minion_id": "n1", "keep_older": "maybe"}, "keep_older"),
        ({"minion_id": "n1", "to_tty": "sometimes"}, "to_tty"),
    ],
)
def test_issue_refuses_bad_arguments_naming_them(runners, kwargs, named):
    run, _ = runners
    ret = run["keyvault.issue"](**kwargs)
    assert ret["result"] is False and ret["retcode"] == 1
    assert ret["error"].startswith(named)
    assert run["keyvault.list"]()["tokens"] == []


def test_issue_needs_url_when_listening_everywhere(runners):
    run, opts = runners
    opts["engines"] = [{"keyvault": {"address": "0.0.0.0", "port": 4599}}]  # noqa: S104
    ret = run["keyvault.issue"](minion_id="n1")
    assert ret["result"] is False and "keyvault:url" in ret["error"]


def test_engine_loader_finds_keyvault(runners):
    _, opts = runners
    engines = salt.loader.engines(opts, {}, {}, salt.loader.utils(opts))
    assert "keyvault.start" in engines


@pytest.mark.parametrize("hash_type", ["sha512", "sha1", "md5"])
def test_bundle_master_finger_is_sha256_whatever_the_hash_type(runners, hash_type):
    run, opts = runners
    opts["hash_type"] = hash_type
    bundle = run["keyvault.issue"](minion_id="node1", ttl=120)
    assert bundle["master_finger"] == salt.utils.crypt.pem_finger(
        f"{opts['pki_dir']}/master.pub", sum_type="sha256"
    )
    assert kv.valid_sha256_finger(bundle["master_finger"])


# ---------------------------------------------------------------------- salt-run: the terminal
@pytest.fixture
def fake_tty(monkeypatch):
    """``/dev/tty`` as a pipe (``{"read": fn}``), or absent (``{"read": None}``) when the
    test sets ``absent``; every other path opens as usual."""
    real_open = os.open
    state = {"absent": False, "read_fd": None}

    def fake_open(path, flags, *args, **kwargs):
        if path == "/dev/tty":
            if state["absent"]:
                raise OSError(errno.ENXIO, "No such device or address")
            read_fd, write_fd = os.pipe()
            state["read_fd"] = read_fd
            return write_fd
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", fake_open)
    state["read"] = lambda: os.read(state["read_fd"], 65536).decode()
    return state


def test_in_salt_run_the_token_goes_to_the_terminal_only(runners, fake_tty):
    run, opts = runners
    opts["__cli"] = "salt-run"
    bundle = run["keyvault.issue"](minion_id="node1")
    printed = fake_tty["read"]()
    token = re.search(r"^token: (\S+)$", printed, re.M).group(1)
    assert kv.parse_token(token)[0] == bundle["token_id"]
    assert token.split(".")[1] not in json.dumps(bundle)
    assert bundle["token"] == kv.HIDDEN_TOKEN
    assert f"echo '{token}' | salt-keyvault-bootstrap " in printed


def test_in_salt_run_without_a_terminal_nothing_is_issued(runners, fake_tty):
    run, opts = runners
    opts["__cli"] = "salt-run"
    fake_tty["absent"] = True
    ret = run["keyvault.issue"](minion_id="node1")
    assert ret["result"] is False and ret["error"].startswith("to_tty")
    assert "to_tty=False" in ret["error"]
    assert run["keyvault.list"]()["tokens"] == []
    # explicitly accepted: the token is in the return
    bundle = run["keyvault.issue"](minion_id="node1", to_tty="False")
    assert kv.parse_token(bundle["token"])[0] == bundle["token_id"]


def test_issue_revokes_the_older_token_of_the_id_unless_kept(runners):
    run, opts = runners
    first = run["keyvault.issue"](minion_id="node1")
    assert first["revoked_older"] == []
    second = run["keyvault.issue"](minion_id="node1")
    assert second["revoked_older"] == [first["token_id"]]
    third = run["keyvault.issue"](minion_id="node1", keep_older=True)
    assert third["revoked_older"] == []
    states = {t["token_id"]: t["state"] for t in run["keyvault.list"]()["tokens"]}
    assert states == {first["token_id"]: "revoked", second["token_id"]: "issued"} | {
        third["token_id"]: "issued"
    }
    opts["keyvault"]["keep_older"] = True
    assert run["keyvault.issue"](minion_id="node1")["revoked_older"] == []


def test_huge_max_ttl_is_a_config_error_and_nothing_is_written(runners):
    run, opts = runners
    opts["keyvault"]["max_ttl"] = 10**12
    ret = run["keyvault.issue"](minion_id="node1", ttl=10**11)
    assert ret["result"] is False and ret["error"].startswith("keyvault:max_ttl")
    assert not os.path.exists(os.path.join(opts["cachedir"], "keyvault"))


def test_purge_reports_a_damaged_record_and_purges_the_rest(runners):
    run, opts = runners
    damaged = run["keyvault.issue"](minion_id="node1")
    dead = run["keyvault.issue"](minion_id="node2")
    run["keyvault.revoke"](token_id=dead["token_id"])
    path = os.path.join(opts["cachedir"], "keyvault", "tokens", f"{damaged['token_id']}.json")
    with open(path) as handle:
        record = json.load(handle)
    record["expires"] = 10**20
    with open(path, "w") as handle:
        json.dump(record, handle)
    listed = {t["token_id"]: t for t in run["keyvault.list"]()["tokens"]}
    assert listed[damaged["token_id"]]["state"] == "corrupt"
    ret = run["keyvault.purge"]()
    assert ret["purged"] == [dead["token_id"]]
    assert [c["token_id"] for c in ret["corrupt"]] == [damaged["token_id"]]
    assert "expires" in ret["corrupt"][0]["error"]
