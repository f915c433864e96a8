"""
One-time bootstrap tokens for new machines, run on the master with ``salt-run keyvault.<fn>``.

A token is redeemed once, by the minion id it was issued for, at the ``keyvault`` engine's
HTTPS endpoint (``salt-keyvault-bootstrap`` on the node). The threat model is the docstring of
``salt_ext/lib/keyvault/vault.py``.
"""

import logging
import os

import salt.utils.crypt
from salt.exceptions import SaltRunnerError

from salt_ext import runner_support
from salt_ext.lib.keyvault import vault as kv

log = logging.getLogger(__name__)

__virtualname__ = "keyvault"


def __virtual__():
    return __virtualname__


_errors_as_result = runner_support.errors_as_result("keyvault", kv.KeyVaultError)


def _fire(tag, data):
    runner_support.fire_master_event(__opts__, tag, data)


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


@_errors_as_result
def issue(minion_id, ttl=kv.DEFAULT_TTL, to_tty=None, keep_older=None):
    """
    Issue a one-time token that lets machine ``minion_id`` join this master.

    Returns the bundle the node needs: the token string (``<id>.<secret>``, shown this once;
    the master keeps only an encrypted derivative), its expiry, the master public key's
    SHA-256 fingerprint (whatever ``hash_type`` is; the node writes salt-minion's
    ``master_finger`` from it in the minion's ``hash_type``), the endpoint URL and its TLS
    certificate fingerprint, and the ready-to-paste ``salt-keyvault-bootstrap`` command.

    In ``salt-run`` the token and the command go straight to salt-run's terminal
    (``/dev/tty``) and the return shows a placeholder instead: Salt logs every runner return
    (``Runner return: …`` at debug, the outputter's data at trace), keeps it in the job
    cache and publishes it as ``salt/run/<jid>/ret``, so a returned token would be in all of
    them. Through salt-api (or the Python ``RunnerClient``) there is no terminal: the
    return holds the token, which is then in the job cache and on the event bus (residual
    risk in the README); it is single-use, bound to ``minion_id`` and short lived, and a
    redeem by anyone else is detected (the real node is refused, reason ``consumed``).

    Issuing a token revokes the older live tokens of the same minion id (listed in
    ``revoked_older``), so only the last bundle works; ``keep_older=True`` (or
    ``keyvault:keep_older: true`` in the master config) keeps them.

    minion_id
        The id the new machine's salt-minion will use.
    ttl
        Seconds the token stays valid (default 300, at most ``keyvault:max_ttl``, 3600 by
        default).
    to_tty
        Print the token and the bootstrap command on ``salt-run``'s terminal (``/dev/tty``)
        instead of returning them. Default: on when running inside ``salt-run`` (which then
        refuses to issue without a terminal), off elsewhere. ``to_tty=False`` in salt-run
        returns the token, and with it puts it in salt-run's debug log and the job cache.
    keep_older
        Keep this minion id's older live tokens instead of revoking them (default:
        ``keyvault:keep_older``, false).

    CLI Example:

    .. code-block:: bash

        salt-run keyvault.issue minion_id=node17 ttl=600
        salt-run keyvault.issue minion_id=node17 to_tty=False --out=json
    """
    cfg = _cfg()
    try:
        ttl = kv.check_ttl(_int_arg("ttl", ttl), cfg["max_ttl"], "keyvault:max_ttl")
        minion_id = kv.check_minion_id(str(minion_id) if minion_id is not None else None)
    except kv.KeyVaultError as err:
        raise SaltRunnerError(str(err)) from err
    keep_older = runner_support.bool_arg("keep_older", keep_older)
    keep_older = cfg["keep_older"] if keep_older is None else keep_older
    asked = runner_support.bool_arg("to_tty", to_tty)
    # salt-run runs the runner in its own process, the one place with a terminal to use
    in_salt_run = __opts__.get("__cli") == "salt-run"
    where = kv.paths(__opts__)
    if not os.path.isfile(where["master_pub"]):
        raise SaltRunnerError(f"master public key {where['master_pub']} not found")
    # always SHA-256, whatever this master's hash_type: it is the node's pin; the node
    # writes salt-minion's master_finger itself, in the form of the minion's hash_type
    master_finger = salt.utils.crypt.pem_finger(where["master_pub"], sum_type="sha256")
    tty = (
        runner_support.open_tty(asked, "the token")
        if (in_salt_run if asked is None else asked)
        else None
    )
    try:
        url = kv.endpoint_url(cfg)
        cert, _ = kv.tls_files(__opts__, cfg)
        tls_finger = kv.cert_finger_file(cert)
        record, token = _store(cfg).issue(minion_id, ttl, keep_older=keep_older)
    except BaseException:
        if tty is not None:
            os.close(tty)
        raise
    log.info(
        "keyvault: issued token %s for minion %s, expires %s",
        record["token_id"],
        minion_id,
        kv.iso(record["expires"]),
    )
    for older in record["superseded"]:
        log.info("keyvault: revoked token %s (superseded by %s)", older, record["token_id"])
        _fire("salt/keyvault/revoke", {"token_id": older, "minion_id": minion_id})
    _fire(
        "salt/keyvault/issue",
        {
            "token_id": record["token_id"],
            "minion_id": minion_id,
            "expires": record["expires"],
            "revoked_older": record["superseded"],
        },
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
        "revoked_older": record["superseded"],
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
    hidden = kv.HIDDEN_TOKEN
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
    ``consumed``; purge after you have checked the redeem events. A damaged record is kept
    and listed under ``corrupt`` (token id and fault); the others are purged all the same.

    CLI Example:

    .. code-block:: bash

        salt-run keyvault.purge
    """
    result = _store(_cfg()).purge()
    log.info("keyvault: purged %d tokens", len(result["purged"]))
    for entry in result["corrupt"]:
        log.warning("keyvault: kept damaged token record: %s", entry["error"])
    return result


__func_alias__ = {"list_": "list"}
