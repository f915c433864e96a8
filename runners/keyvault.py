"""
One-time bootstrap tokens for new machines, run on the master with ``salt-run keyvault.<fn>``.

A token is redeemed once, by the minion id it was issued for, at the ``keyvault`` engine's
HTTPS endpoint (``salt-keyvault-bootstrap`` on the node). The threat model is the docstring of
``salt_ext/lib/keyvault.py``.
"""

import logging
import os

import salt.utils.crypt
from salt.exceptions import SaltRunnerError

from salt_ext.lib import keyvault as kv
from salt_ext.lib import runner_util

log = logging.getLogger(__name__)

__virtualname__ = "keyvault"


def __virtual__():
    return __virtualname__


_errors_as_result = runner_util.errors_as_result("keyvault", kv.KeyVaultError)


def _fire(tag, data):
    runner_util.fire_master_event(__opts__, tag, data)


def _cfg():
    try:
        return kv.settings(__opts__)
    except kv.KeyVaultError as err:
        raise SaltRunnerError(str(err)) from err


def _store(cfg):
    try:
        return kv.open_store(__opts__, cfg)
    except kv.StoreError as err:
        raise SaltRunnerError(f"token store: {err}") from err


def _int_arg(name, value):
    if isinstance(value, bool):
        raise SaltRunnerError(f"{name}: expected a number of seconds, got {value!r}")
    try:
        return int(str(value), 10)
    except ValueError:
        raise SaltRunnerError(f"{name}: expected a number of seconds, got {value!r}") from None


def _open_tty():
    try:
        return os.open("/dev/tty", os.O_WRONLY | os.O_NOCTTY)
    except OSError as err:
        raise SaltRunnerError(
            f"to_tty: salt-run has no controlling terminal ({err.strerror}); run it in a "
            "terminal, or without to_tty=True"
        ) from None


@_errors_as_result
def issue(minion_id, ttl=kv.DEFAULT_TTL, to_tty=False):
    """
    Issue a one-time token that lets machine ``minion_id`` join this master.

    Returns the bundle the node needs: the token string (``<id>.<secret>``, shown this once;
    the master keeps only an encrypted derivative), its expiry, the master public key's
    SHA-256 fingerprint (whatever ``hash_type`` is; the node writes salt-minion's
    ``master_finger`` from it in the minion's ``hash_type``), the endpoint URL and its TLS
    certificate fingerprint, and the ready-to-paste ``salt-keyvault-bootstrap`` command.

    Note: Salt itself records every runner return in the job cache and on the master event
    bus (``salt/run/<jid>/ret``); the token is single-use, bound to ``minion_id`` and short
    lived, and a redeem by anyone else is detected (the real node is refused, reason
    ``consumed``). With ``to_tty=True`` the token and the command are written straight to
    the terminal of ``salt-run`` and left out of the return, so neither the job cache nor
    the return event ever holds them.

    minion_id
        The id the new machine's salt-minion will use.
    ttl
        Seconds the token stays valid (default 300, at most ``keyvault:max_ttl``, 3600 by
        default).
    to_tty
        Print the token and the bootstrap command on ``salt-run``'s terminal (``/dev/tty``)
        instead of returning them (fails when there is no terminal, e.g. through salt-api).

    CLI Example:

    .. code-block:: bash

        salt-run keyvault.issue minion_id=node17 ttl=600
        salt-run keyvault.issue minion_id=node17 to_tty=True
    """
    cfg = _cfg()
    ttl = _int_arg("ttl", ttl)
    if ttl <= 0 or ttl > cfg["max_ttl"]:
        raise SaltRunnerError(
            f"ttl: must be between 1 and keyvault:max_ttl ({cfg['max_ttl']}) seconds, got {ttl}"
        )
    try:
        minion_id = kv.check_minion_id(str(minion_id) if minion_id is not None else None)
    except kv.KeyVaultError as err:
        raise SaltRunnerError(str(err)) from err
    where = kv.paths(__opts__)
    if not os.path.isfile(where["master_pub"]):
        raise SaltRunnerError(f"master public key {where['master_pub']} not found")
    # always SHA-256, whatever this master's hash_type: it is the node's pin; the node
    # writes salt-minion's master_finger itself, in the form of the minion's hash_type
    master_finger = salt.utils.crypt.pem_finger(where["master_pub"], sum_type="sha256")
    tty = _open_tty() if to_tty is True or str(to_tty).lower() == "true" else None
    url = kv.endpoint_url(cfg)
    cert, _ = kv.tls_files(__opts__, cfg)
    tls_finger = kv.cert_finger_file(cert)
    record, token = _store(cfg).issue(minion_id, ttl)
    log.info(
        "keyvault: issued token %s for minion %s, expires %s",
        record["token_id"],
        minion_id,
        kv.iso(record["expires"]),
    )
    _fire(
        "salt/keyvault/issue",
        {"token_id": record["token_id"], "minion_id": minion_id, "expires": record["expires"]},
    )
    bundle = {
        "token_id": record["token_id"],
        "token": token,
        "minion_id": minion_id,
        "expires": kv.iso(record["expires"]),
        "expires_epoch": record["expires"],
        "master_finger": master_finger,
        "url": url,
        "tls_finger": tls_finger,
        "command": kv.bootstrap_command(url, token, minion_id, master_finger, tls_finger),
    }
    known = [
        state
        for state, sub in kv.KEY_DIRS.items()
        if os.path.lexists(os.path.join(where["pki_dir"], sub, minion_id))
    ]
    if known:
        bundle["warning"] = (
            f"a key for {minion_id} is already {known[0]} on this master: the redeem succeeds "
            "only with that same key (pending/accepted), never while rejected or denied"
        )
    if tty is None:
        return bundle
    try:
        os.write(tty, f"token: {token}\ncommand: {bundle['command']}\n".encode())
    finally:
        os.close(tty)
    hidden = "<token: printed on the terminal>"
    bundle["token"] = hidden
    bundle["command"] = kv.bootstrap_command(url, hidden, minion_id, master_finger, tls_finger)
    return bundle


@_errors_as_result
def list_():
    """
    List tokens: id, minion id, state (issued, consumed, revoked, expired), expiry and
    failed attempts. Never secrets.

    CLI Example:

    .. code-block:: bash

        salt-run keyvault.list
    """
    return {"tokens": _store(_cfg()).list()}


@_errors_as_result
def revoke(token_id):
    """
    Revoke an issued token so that it can no longer be redeemed.

    token_id
        The public id (the part before the dot), as ``keyvault.list`` shows it.

    CLI Example:

    .. code-block:: bash

        salt-run keyvault.revoke token_id=k3x9ab
    """
    view, previous = _store(_cfg()).revoke(str(token_id))
    if previous != "issued":
        return {
            "result": False,
            "error": f"token_id: {token_id} is {previous}, not issued; nothing to revoke",
            "token": view,
        }
    log.info("keyvault: revoked token %s (minion %s)", token_id, view["minion_id"])
    _fire("salt/keyvault/revoke", {"token_id": token_id, "minion_id": view["minion_id"]})
    return {"revoked": True, "token": view}


@_errors_as_result
def purge():
    """
    Remove expired, used and revoked tokens from the store.

    A purged token that someone presents later is refused as unknown instead of as
    ``consumed``; purge after you have checked the redeem events.

    CLI Example:

    .. code-block:: bash

        salt-run keyvault.purge
    """
    removed = _store(_cfg()).purge()
    log.info("keyvault: purged %d tokens", len(removed))
    return {"purged": removed}


__func_alias__ = {"list_": "list"}
