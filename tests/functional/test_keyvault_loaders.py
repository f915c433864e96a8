"""The keyvault runner and engine through real Salt loaders (no daemons)."""

import json

import pytest
import salt.config
import salt.loader
import salt.utils.crypt

from salt_ext.lib import keyvault as kv


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
    assert "--token - " in bundle["command"]
    assert "--minion-id node1" in bundle["command"]
    listed = run["keyvault.list"]()["tokens"]
    assert [t["token_id"] for t in listed] == [bundle["token_id"]]
    assert bundle["token"].split(".")[1] not in json.dumps(listed)
    assert run["keyvault.revoke"](token_id=bundle["token_id"])["revoked"] is True
    again = run["keyvault.revoke"](token_id=bundle["token_id"])
    assert again["result"] is False and again["retcode"] == 1
    assert run["keyvault.purge"]()["purged"] == [bundle["token_id"]]


@pytest.mark.parametrize(
    "kwargs,named",
    [
        ({"minion_id": "n1", "ttl": 0}, "ttl"),
        ({"minion_id": "n1", "ttl": 601}, "ttl"),
        ({"minion_id": "n1", "ttl": "soon"}, "ttl"),
        ({"minion_id": "../etc"}, "minion_id"),
        ({"minion_id": "a b"}, "minion_id"),
        ({"minion_id": "n" * 250}, "minion_id"),
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
