"""
KeyVault: one-time, minion-bound bootstrap tokens that let a new machine join the Salt master
with trust in both directions (pure Python; the runner, the engine and the node CLI use it).

THREAT MODEL
============

Assets
    The master's key acceptance (``<pki_dir>/minions/<id>``: whoever gets a key in there is a
    minion and receives pillar, possibly secrets), the identity of the master as seen by a
    new node (a node that trusts a fake master runs whatever it is told, as root), and the
    token secrets themselves.

Actors
    The admin (runs ``salt-run keyvault.issue`` on the master, carries the token string to the
    node out of band); the new node (runs ``salt-keyvault-bootstrap``); anyone on the network
    between them (reads, replays, alters, races requests); a local user on the master who can
    read files but is not root; a local user on the new node who is not root (sees every
    process's command line); whoever can read the master's event bus and job cache.

Threats → mitigations → the tests that prove them (``tests/unit/test_keyvault_vault.py`` =
U, ``tests/unit/test_engine_keyvault.py`` = E, ``tests/functional/test_keyvault_loaders.py``
= F, ``tests/integration/test_keyvault.py`` = I):

1. Forged redeem (no secret). The request is authenticated with
   ``HMAC-SHA256(K, canonical request)``, ``K = HMAC-SHA256(secret, "…mac v1|" + token id)``;
   32-byte random secrets; compared with :func:`hmac.compare_digest`. Every MAC alteration
   (first/middle/last hex char, truncated, empty, uppercase) is refused.
   U: ``test_request_mac_*``; I: ``test_mac_tampering_is_rejected[*]``,
   ``test_unknown_token_id_is_rejected``.
2. Ambiguous encodings (two different requests with one MAC). The canonical form is a fixed
   domain-separation prefix plus each field, in a fixed order, as 4-byte big-endian length +
   UTF-8 bytes; no JSON canonicalisation. U: ``test_canonical_encoding_is_unambiguous``.
3. Replay of a captured good request / second redeem. A token is consumed by its first
   success. While the token is issued and unexpired, every nonce that passed the MAC check
   is kept in the token record and refused a second time (at most ``max_failures`` + 1 of
   them, since each refusal after the MAC counts as a failure); once the token is consumed,
   revoked or expired no nonce is kept, as every request for it is refused anyway. The
   timestamp must be within ``request_window`` (default 10 s) of the master's clock.
   U: ``test_redeem_*replay*``, ``test_stale_timestamp*``;
   I: ``test_replay_of_good_request_is_rejected``, ``test_second_redeem_is_rejected``,
   ``test_timestamp_outside_window_is_rejected[*]``, ``test_reused_nonce_is_rejected``.
4. Using a token for another machine. The token is bound to one minion id at issue time and
   the MAC covers the id; the key is written for exactly that id. U:
   ``test_redeem_wrong_minion``; I: ``test_wrong_minion_id_is_rejected``.
5. Hijacking an existing minion id (a key already accepted, pending, rejected or denied).
   Redeem refuses when a *different* key is accepted or pending, and whenever the id is
   rejected or denied (the admin's decision wins); the same key pending is moved to
   accepted. U: ``test_accept_minion_key_*``; I: ``test_key_conflict_is_rejected[*]``.
6. Guessing secrets online. After ``MAX_FAILURES`` (5) authenticated-or-not failures the
   token is revoked; a malformed request that names an issued token counts too (U:
   ``test_malformed_requests_count_towards_revocation``); an attempt on a consumed, revoked
   or expired token is refused without rewriting the store (U:
   ``test_attempts_on_a_dead_token_do_not_rewrite_the_store``). Unauthenticated callers get one
   generic 403 whatever went wrong; the precise reason goes to the log and the
   ``salt/keyvault/redeem/rejected`` event.
   U: ``test_five_failures_revoke_the_token``; I: ``test_five_bad_macs_then_right_one``.
7. Double spend under concurrency (many engine threads, the runner in another process). All
   read-modify-write of the store and the pki writes happen under one ``fcntl.flock``; the
   token is marked consumed before the key is written (a crash in between burns the token,
   never lets it be used twice). U: ``test_concurrent_redeems_one_winner``;
   I: ``test_64_concurrent_redeems_exactly_one_wins``; bench/keyvault.py counts double spends.
8. Theft of the token store. The store never holds the secret, nor ``K`` in the clear: ``K``
   is AES-GCM encrypted (AAD: record version, token id, minion id, created, expires) under
   a wrap key derived with HKDF-SHA256 from the
   master's private key file ``<pki_dir>/master.pem``. A leaked store alone redeems nothing;
   whoever holds master.pem already *is* the master. Records and directories are 0600/0700
   from the first byte (atomic writes). U: ``test_store_holds_no_secret``,
   ``test_store_files_are_private``, ``test_wrapped_key_needs_the_master_key``.
9. Corrupt or tampered store. An unreadable or malformed record, or one whose wrapped key
   does not decrypt, fails closed: the redeem is refused, the log names the file and the
   fault, the client gets the generic 403, nothing is accepted. The immutable fields (token
   id, minion id, created, expires, version) are the AAD of the wrapped key, so changing
   any of them (rebinding a token to another minion, extending its life) makes the record
   fail closed. ``state``, ``failures`` and ``nonces`` change during a token's life and are
   not authenticated: whoever can write the store (root or the salt user on the master)
   could reset them, but could as well write ``<pki_dir>/minions`` directly, and still
   cannot redeem without the secret. U: ``test_corrupt_record_*``,
   ``test_tampered_immutable_field_fails_closed[*]``; I: ``test_corrupt_store_fails_closed``.
10. A fake master / man in the middle towards the node. The node pins the endpoint's TLS
    certificate (SHA-256 of the DER certificate, checked before the request body is sent),
    verifies a response MAC ``HMAC(K, "response" ‖ request nonce ‖ master public key)`` (only
    the holder of ``K`` can produce it), and checks the master public key against the
    ``master_finger`` from the bundle (always SHA-256, whatever the master's ``hash_type``),
    and writes ``master_finger`` into the minion config, computed from that verified key
    with the minion's ``hash_type`` (``--hash-type``: salt-minion compares
    ``pem_finger(minion_master.pub, sum_type=hash_type)`` with it), so salt-minion itself
    refuses another master. E: ``test_master_finger_follows_the_minion_hash_type``,
    ``test_forged_endpoint_with_the_pinned_certificate_is_refused``;
    U: ``test_client_*``; I:
    ``test_wrong_tls_pin_refuses_and_changes_nothing``,
    ``test_forged_master_key_refuses_and_changes_nothing``.
11. Weak or garbage minion keys / oversized or malformed requests. The public key must be
    exactly one PEM block (``BEGIN PUBLIC KEY``, or the PKCS#1 ``BEGIN RSA PUBLIC KEY``)
    with nothing around it; ``minions/<id>`` gets that block only, line endings unified (U:
    ``test_text_around_the_pem_block_is_refused``). Every field is checked
    for type and range before anything else (strings where strings belong, an ASCII
    ``public_key``, ``|timestamp| < 2**53``), so no value reaches the MAC or the clock
    comparison that could raise there: such a request is a plain ``malformed`` rejection,
    never an internal error (U: ``test_hostile_field_values_are_a_counted_plain_rejection``;
    E: ``test_hostile_values_are_a_plain_rejection_not_an_error``). Public keys must be one
    RSA PEM of ≥ 2048 bits; minion ids follow Salt's ``valid_id`` rules, refuse control
    characters and whitespace, must be Unicode NFC (the NFD spelling of ``café`` would be a
    second minion; refused at issue, by the CLI and at redeem, as one validator serves all
    three; U: ``test_nfd_minion_id_is_refused_at_issue_and_redeem``) and are at most 200
    UTF-8 bytes (a longer one could burn the token: the key file's temporary name would
    exceed 255 bytes after the token was consumed); the printed bootstrap command attaches
    every value with ``=`` (``--minion-id=-n1``), so no value is taken for an option (U:
    ``test_bootstrap_command_parses_for_any_valid_id[*]``); the engine caps bodies (413),
    demands JSON (415/400), only serves POST /v1/redeem and GET /v1/health, and times slow
    clients out: the TLS handshake and headers within ``header_timeout`` (3 s), the whole
    request within ``request_timeout`` (15 s); per-address and global connection caps and
    fair admission are threat 14 of ``salt_ext/engines/keyvault.py`` ("connection limits"
    warnings at most every 10 s). Plain HTTP to the port fails the TLS handshake.
    I: ``test_malformed_requests_are_rejected[*]``,
    ``test_plain_http_fails``, ``test_slow_client_is_cut_off``,
    ``test_trickling_headers_are_cut_off_at_the_header_deadline``,
    ``test_trickling_body_is_cut_off_at_the_request_deadline``,
    E: ``test_trickling_headers_are_cut_at_the_header_deadline``,
    ``test_trickling_body_is_cut_at_the_request_deadline``,
    ``test_cap_warnings_are_rate_limited``;
    ``test_weak_public_key_is_rejected``; U: ``test_weak_public_key_is_refused``,
    ``test_malformed_request[*]``, ``test_valid_minion_id[*]``,
    ``test_longest_minion_id_redeems_and_longer_ones_are_refused_at_issue``.
12. Secrets in logs and events. Logs, events and ``keyvault.list`` carry token id, minion id,
    reason and peer only — never the secret, ``K``, the token string or a MAC. Salt itself
    logs every runner return (``salt/runner.py``: ``Runner return: …`` at debug;
    ``salt/output``: ``data = …`` at trace; both in salt-run's output and in the log file
    salt-run shares with the master), stores it in the job cache and publishes it as
    ``salt/run/<jid>/ret``, which the master logs at trace (``salt/utils/event.py``:
    ``get_event() received = …``). So inside ``salt-run`` (``__opts__["__cli"]``: the
    runner runs in salt-run's own process) ``keyvault.issue`` writes the token and the
    command to the controlling terminal (``/dev/tty``) and returns a placeholder, and
    without a terminal issues nothing unless ``to_tty=False`` accepts the exposure.
    I: ``test_issue_in_salt_run_at_trace_leaks_no_form_of_the_secret`` (salt-run -l trace,
    master log at trace, job cache, events; every encoding of the secret and of ``K``),
    ``test_control_a_returned_token_does_reach_the_trace_logs``,
    ``test_salt_run_without_a_terminal_issues_nothing``,
    ``test_no_secret_in_logs_events_or_list``; F:
    ``test_in_salt_run_the_token_goes_to_the_terminal_only``,
    ``test_in_salt_run_without_a_terminal_nothing_is_issued``.
13. Local users on the new node. ``/proc/<pid>/cmdline`` is world-readable: a token in
    ``salt-keyvault-bootstrap``'s argv could be read during key generation or the request
    and redeemed first with the reader's own key. The CLI reads the token from stdin
    (``--token -``, a no-echo prompt on a terminal) or from ``$SALT_KEYVAULT_TOKEN``
    (``/proc/<pid>/environ`` is readable by the owner and root only); the runner's
    ready-to-paste command is ``echo 'ID.SECRET' | salt-keyvault-bootstrap --token=- …``
    (``echo`` is a shell builtin, so the token is in no process's argv). ``--token ID.SECRET``
    still works and warns on stderr. U: ``test_token_is_read_from_stdin_with_dash``,
    ``test_bootstrap_command_keeps_the_token_out_of_argv``,
    ``test_token_on_the_command_line_warns``; I: every bootstrap run uses ``--token -``.
14. Clock step back / records from the future. Expiry is judged by ``max(now, the latest
    master time the store has seen)``: every locked operation raises that high-water mark
    (``<store>/.clock``, 0600, atomic), so after the master clock steps back an expired
    token stays expired; a record created more than 60 s after the mark (never seen by
    this store) fails closed, and so does a damaged ``.clock``; ``keyvault.issue`` refuses
    a token that would be born expired (clock stepped back more than its ttl), naming the
    file. The window for the node's timestamp still uses the real clock. U:
    ``test_clock_step_back_does_not_revive_an_expired_token``,
    ``test_record_created_in_the_future_fails_closed``,
    ``test_issue_after_a_large_step_back_refuses_a_token_born_expired``,
    ``test_corrupt_clock_file_fails_closed``.
15. Forgotten live tokens. Issuing a token revokes the same minion id's older live tokens
    (``revoked_older`` in the return, a ``salt/keyvault/revoke`` event each), so a bundle
    handed out earlier and never used stops working; ``keep_older`` (argument or
    ``keyvault:keep_older``) keeps them. U:
    ``test_a_new_token_revokes_the_older_live_tokens_of_its_minion``,
    ``test_keep_older_leaves_the_older_tokens_live``; F:
    ``test_issue_revokes_the_older_token_of_the_id_unless_kept``; I:
    ``test_a_new_token_revokes_the_older_one_of_its_minion``.
16. Numbers that crash the admin tools. ``keyvault:`` settings are bounded (``max_ttl`` ≤ 7
    days, ``request_window`` ≤ 300 s, ``max_failures`` ≤ 100; the error names the key), the
    ttl is checked before anything is written, and a record whose times are out of range
    (0 … year 9999) or of the wrong type, or whose counters are wrong, is ``corrupt``:
    ``keyvault.list`` shows it with the file and the fault, ``keyvault.purge`` reports and
    keeps it and purges the rest. U: ``test_settings_are_bounded_naming_the_key[*]``,
    ``test_bad_ttl_is_refused_before_anything_is_written[*]``,
    ``test_list_and_purge_report_a_damaged_record_and_go_on[*]``; F:
    ``test_huge_max_ttl_is_a_config_error_and_nothing_is_written``,
    ``test_purge_reports_a_damaged_record_and_purges_the_rest``.

Residual risk (documented in README): through salt-api (also ``salt-run -a <eauth>``, the
Python ``RunnerClient``, or ``to_tty=False``) the return is the only channel, so the token
is in the job cache, on the master event bus (``salt/run/<jid>/ret``: root on the master,
salt-api users subscribed to ``/events``) and, at debug/trace level, in the salt-api and
master logs. Mitigations: single use, bound to one minion id, short TTL, one live token per
id, and interception is *detected*: if someone else redeems first, the real node's redeem
is refused and a ``salt/keyvault/redeem/rejected`` event with reason ``consumed`` fires;
the admin should then ``salt-key -d`` the id and investigate. I:
``test_no_secret_in_logs_events_or_list`` checks such tokens against the master log at
info and above.

Also accepted: an unknown token id is refused slightly faster than a known one with a bad
MAC (no decryption), which tells a prober that a 6-character id exists and nothing more;
ids are public anyway and every attempt on a known id counts towards revocation. The pki
writes are serialised with other redeems, not with a ``salt-key`` run at the same instant.
"""

import base64
import contextlib
import datetime
import errno
import fcntl
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import shlex
import string
import struct
import time
import unicodedata

from cryptography import x509
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.x509.oid import NameOID

from salt_ext.lib.util import fsutil

log = logging.getLogger(__name__)

TOKEN_ID_ALPHABET = string.ascii_lowercase + string.digits
TOKEN_ID_LENGTH = 6
SECRET_BYTES = 32
NONCE_BYTES = 32
MIN_RSA_BITS = 2048
MAX_FAILURES = 5
DEFAULT_TTL = 300
DEFAULT_MAX_TTL = 3600
DEFAULT_WINDOW = 10
DEFAULT_PORT = 4510
MAX_PUBLIC_KEY_CHARS = 16384
MAX_MINION_ID_BYTES = 200
MAX_TIMESTAMP = 2**53  # |timestamp| below this: exact as a float, no OverflowError
# upper bounds of the master's keyvault: settings: a token living longer than a week is no
# longer a bootstrap token, and every bound keeps each record's numbers small
MAX_TTL_LIMIT = 7 * 86400
MAX_WINDOW_LIMIT = 300
MAX_FAILURES_LIMIT = 100
# record times must be datetime-printable (iso()) for list/purge to work: 0 .. 9999-12-31
MAX_EPOCH = 253402300799
# what keyvault.issue returns instead of a token it printed on salt-run's terminal
HIDDEN_TOKEN = "<token: printed on the terminal>"  # noqa: S105 - a placeholder, no secret
CLOCK_FILE = ".clock"  # the store's high-water mark of the master clock (threat 14)
MAX_CLOCK_SKEW = 60  # a record may be this much newer than the highest time seen

MAC_KEY_INFO = b"saltext-slurm keyvault mac v1|"
REQUEST_PREFIX = b"saltext-slurm keyvault request v1"
RESPONSE_PREFIX = b"saltext-slurm keyvault response v1"
WRAP_INFO = b"saltext-slurm keyvault store wrap v1"
WRAP_AAD_PREFIX = b"saltext-slurm keyvault record v2"
RECORD_VERSION = 2
REQUEST_FIELDS = ("token_id", "minion_id", "nonce", "timestamp", "public_key")

_TOKEN_ID_RE = re.compile(r"\A[a-z0-9]{6}\Z")
_NONCE_RE = re.compile(r"\A[0-9a-f]{64}\Z")
_HEX_FINGER_RE = re.compile(r"\A[0-9a-f]{64}\Z")

STATES = ("issued", "consumed", "revoked", "expired")
# the hash_type values salt-minion accepts for master_finger (hashlib names)
HASH_TYPES = ("md5", "sha1", "sha224", "sha256", "sha384", "sha512")


class KeyVaultError(Exception):
    """Bad input or configuration; the message names the argument or key."""


class StoreError(KeyVaultError):
    """The token store (or one record) is unreadable or corrupt: callers fail closed."""


class Rejected(KeyVaultError):
    """A redeem is refused. ``reason`` is a short code for logs/events, ``detail`` says more;
    neither ever reaches an unauthenticated client."""

    def __init__(self, reason, detail="", token_id=None, minion_id=None):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
        self.token_id = token_id
        self.minion_id = minion_id


# ---------------------------------------------------------------------- tokens and ids
def new_token_id():
    return "".join(secrets.choice(TOKEN_ID_ALPHABET) for _ in range(TOKEN_ID_LENGTH))


def new_secret():
    """32 random bytes, base64url without padding (43 characters)."""
    return _b64(secrets.token_bytes(SECRET_BYTES))


def _b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def format_token(token_id, secret):
    return f"{token_id}.{secret}"


def valid_token_id(token_id):
    return isinstance(token_id, str) and bool(_TOKEN_ID_RE.match(token_id))


def parse_token(token):
    """``"<id>.<secret>"`` → ``(token_id, secret bytes)``; KeyVaultError names what is wrong
    (never echoing the secret)."""
    if not isinstance(token, str) or token.count(".") != 1:
        raise KeyVaultError("token: expected '<id>.<secret>' (as printed by keyvault.issue)")
    token_id, secret = token.split(".")
    if not valid_token_id(token_id):
        raise KeyVaultError("token: the id part must be 6 characters [a-z0-9]")
    try:
        raw = _unb64(secret)
    except (ValueError, TypeError):
        raw = b""
    if len(raw) != SECRET_BYTES or not re.fullmatch(r"[A-Za-z0-9_-]{43}", secret):
        raise KeyVaultError("token: the secret part is not 32 bytes of base64url")
    return token_id, raw


def valid_minion_id(minion_id):
    """Salt's ``valid_id`` rules (no path separators or NUL, not ``.``/``..``, stays inside
    the pki dir) plus no whitespace or control characters (ids end up in log lines), Unicode
    in NFC form only (NFC and NFD spellings of one name would be two minions), and at
    most :data:`MAX_MINION_ID_BYTES` UTF-8 bytes: the atomic write's temporary name
    (``.<id>.XXXXXXXX``) must fit the 255-byte file name limit, or a redeem would burn the
    token and then fail to write the key."""
    if not isinstance(minion_id, str) or not minion_id:
        return False
    try:
        size = len(minion_id.encode("utf-8"))
    except UnicodeEncodeError:  # lone surrogates
        return False
    if size > MAX_MINION_ID_BYTES:
        return False
    if minion_id in (".", "..") or any(c in minion_id for c in ("/", "\\", "\0")):
        return False
    # one name, one minion: NFC "café" and NFD "café" are different file names in pki_dir
    if not unicodedata.is_normalized("NFC", minion_id):
        return False
    return all(c.isprintable() and not c.isspace() for c in minion_id)


def check_ttl(ttl, limit=MAX_TTL_LIMIT, limit_name="the limit"):
    """A token lifetime in whole seconds, 1 .. ``limit``: checked before anything is written
    (an expiry beyond year 9999 would crash every later list and purge)."""
    if not isinstance(ttl, int) or isinstance(ttl, bool) or not 0 < ttl <= limit:
        raise KeyVaultError(
            f"ttl: must be a whole number of seconds between 1 and {limit_name} ({limit}), "
            f"got {ttl!r}"
        )
    return ttl


def check_minion_id(minion_id, name="minion_id"):
    if not valid_minion_id(minion_id):
        raise KeyVaultError(
            f"{name}: {minion_id!r} is not a valid minion id (no '/', '\\', NUL, whitespace, "
            f"control characters, '.' or '..'; Unicode in NFC form; 1-{MAX_MINION_ID_BYTES} "
            "bytes in UTF-8)"
        )
    return minion_id


# ---------------------------------------------------------------------- MACs
def mac_key(secret, token_id):
    """K = HMAC-SHA256(secret, prefix + token id): what both ends MAC with."""
    if isinstance(secret, str):
        secret = _unb64(secret)
    return hmac.new(secret, MAC_KEY_INFO + token_id.encode(), hashlib.sha256).digest()


def _lp(value):
    data = value if isinstance(value, bytes) else str(value).encode("utf-8")
    return struct.pack(">I", len(data)) + data


def canonical_request(fields):
    """Domain prefix + every field of :data:`REQUEST_FIELDS` in order, length-prefixed."""
    return _lp(REQUEST_PREFIX) + b"".join(_lp(fields[name]) for name in REQUEST_FIELDS)


def request_mac(key, fields):
    return hmac.new(key, canonical_request(fields), hashlib.sha256).hexdigest()


def response_mac(key, nonce, master_pub):
    message = _lp(RESPONSE_PREFIX) + _lp(nonce) + _lp(master_pub)
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def mac_equal(expected_hex, given):
    """Constant-time comparison; anything that is not a str compares unequal."""
    if not isinstance(given, str):
        return False
    try:
        given_bytes = given.encode("ascii")
    except UnicodeEncodeError:
        return False
    return hmac.compare_digest(expected_hex.encode("ascii"), given_bytes)


def new_nonce():
    return secrets.token_hex(NONCE_BYTES)


def build_request(token, minion_id, public_key, now=None, nonce=None):
    """The JSON body the node sends: every field plus its MAC."""
    token_id, secret = parse_token(token)
    fields = {
        "token_id": token_id,
        "minion_id": minion_id,
        "nonce": nonce or new_nonce(),
        "timestamp": int(time.time() if now is None else now),
        "public_key": public_key,
    }
    fields["mac"] = request_mac(mac_key(secret, token_id), fields)
    return fields


def check_response(token, request, response, master_finger):
    """Node side: the response must carry a MAC only the master can make and a master key
    whose SHA-256 fingerprint (``pem_finger``) is the bundle's ``master_finger``, whatever
    either side's ``hash_type``. Returns the master public key PEM."""
    token_id, secret = parse_token(token)
    if not isinstance(response, dict):
        raise KeyVaultError("response: not a JSON object")
    master_pub = response.get("master_pub")
    if not isinstance(master_pub, str) or "PUBLIC KEY" not in master_pub:
        raise KeyVaultError("response: no master public key")
    expected = response_mac(mac_key(secret, token_id), request["nonce"], master_pub)
    if not mac_equal(expected, response.get("response_mac")):
        raise KeyVaultError(
            "response MAC does not verify: this endpoint does not hold the token's key "
            "(not the master that issued it)"
        )
    if not valid_sha256_finger(master_finger):
        raise KeyVaultError("--master-finger: not a SHA-256 fingerprint")
    got = pem_finger(master_pub, "sha256")
    if not hmac.compare_digest(got, normalise_finger(master_finger)):
        raise KeyVaultError(
            f"master public key fingerprint {got} does not match --master-finger "
            f"{normalise_finger(master_finger)}"
        )
    return master_pub


# ---------------------------------------------------------------------- fingerprints
def _colon(hexdigest):
    return ":".join(hexdigest[i : i + 2] for i in range(0, len(hexdigest), 2))


def normalise_finger(finger):
    """``AA:bb…`` or ``aabb…`` → lower-case colon form, as Salt prints ``master_finger``."""
    if not isinstance(finger, str):
        return ""
    bare = finger.strip().lower().replace(":", "")
    return _colon(bare)


_COLON_FINGER_RE = re.compile(r"\A[0-9a-f]{2}(:[0-9a-f]{2}){31}\Z")


def valid_sha256_finger(finger):
    """A SHA-256 fingerprint as Salt prints it (``aa:bb:…``, 32 pairs) or as 64 bare hex
    digits, any case."""
    if not isinstance(finger, str):
        return False
    text = finger.strip().lower()
    return bool(_COLON_FINGER_RE.match(text) or _HEX_FINGER_RE.match(text))


def pem_finger(pem, hash_type="sha256"):
    """Exactly ``salt.utils.crypt.pem_finger(path, sum_type=hash_type)`` of a file holding
    ``pem``: the hash of the base64 lines (non-blank lines minus the first and last)."""
    if isinstance(pem, str):
        pem = pem.encode()
    lines = [line for line in pem.splitlines(keepends=True) if line.strip()]
    body = b"".join(lines[1:-1]).replace(b"\r\n", b"\n")
    return _colon(hashlib.new(hash_type, body).hexdigest())


def cert_finger(cert):
    """SHA-256 of a certificate's DER encoding (PEM or DER input), colon form."""
    if isinstance(cert, str):
        cert = cert.encode()
    if cert.lstrip().startswith(b"-----BEGIN"):
        cert = x509.load_pem_x509_certificate(cert).public_bytes(serialization.Encoding.DER)
    return _colon(hashlib.sha256(cert).hexdigest())


def finger_matches(expected, der_cert):
    """Constant-time check of a peer certificate (DER) against a pinned fingerprint."""
    want = normalise_finger(expected).replace(":", "")
    if not _HEX_FINGER_RE.match(want):
        return False
    return hmac.compare_digest(hashlib.sha256(der_cert).hexdigest(), want)


# ---------------------------------------------------------------------- keys
PEM_MARKERS = (
    ("-----BEGIN PUBLIC KEY-----", "-----END PUBLIC KEY-----"),  # what salt-minion writes
    ("-----BEGIN RSA PUBLIC KEY-----", "-----END RSA PUBLIC KEY-----"),  # PKCS#1
)


def normalise_public_key(pem):
    """The PEM block alone, ``\n`` line endings and one final newline: what goes into
    ``minions/<id>``. Salt compares a minion's presented key with that file after
    ``salt.crypt.clean_key`` (strip, unify line endings), so the text is kept as the minion
    has it, never re-encoded. KeyVaultError when anything surrounds the block."""
    if not isinstance(pem, str):
        raise KeyVaultError("public_key: not a PEM string")
    lines = pem.strip().splitlines()
    if len(lines) < 3 or not any(
        lines[0] == begin and lines[-1] == end for begin, end in PEM_MARKERS
    ):
        raise KeyVaultError(
            "public_key: must be a PEM block from -----BEGIN PUBLIC KEY----- to -----END "
            "PUBLIC KEY----- (or the RSA PUBLIC KEY variant) and nothing else"
        )
    return "\n".join(lines) + "\n"


def load_rsa_public_key(pem):
    """Parse one RSA public key PEM (SubjectPublicKeyInfo or PKCS#1) of ≥ 2048 bits."""
    if not isinstance(pem, str) or not pem.strip() or len(pem) > MAX_PUBLIC_KEY_CHARS:
        raise KeyVaultError("public_key: not a PEM string")
    if pem.count("-----BEGIN") != 1:
        raise KeyVaultError("public_key: expected exactly one PEM block")
    try:
        key = serialization.load_pem_public_key(pem.encode())
    except (ValueError, TypeError) as err:
        raise KeyVaultError(f"public_key: does not parse ({type(err).__name__})") from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise KeyVaultError("public_key: not an RSA key (Salt minion keys are RSA)")
    if key.key_size < MIN_RSA_BITS:
        raise KeyVaultError(f"public_key: {key.key_size} bits, at least {MIN_RSA_BITS} needed")
    return key


def _spki(key):
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def same_key(pem_a, pem_b):
    try:
        a = serialization.load_pem_public_key(pem_a.encode())
        b = serialization.load_pem_public_key(pem_b.encode())
    except (ValueError, TypeError):
        return False
    return _spki(a) == _spki(b)


def generate_minion_keypair(bits=2048):
    """``(private PEM, public PEM)`` in the formats ``salt.crypt.gen_keys`` writes."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    priv = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    pub = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return priv.decode(), pub.decode()


KEY_DIRS = {
    "accepted": "minions",
    "pending": "minions_pre",
    "rejected": "minions_rejected",
    "denied": "minions_denied",
}


def check_minion_key(pki_dir, minion_id, public_key):
    """What accepting ``public_key`` for ``minion_id`` would do: ``"write"``, ``"move"`` (the
    same key is pending), ``"present"`` (already accepted); Rejected on a conflict."""
    check_minion_id(minion_id)
    state = {}
    for name, sub in KEY_DIRS.items():
        path = os.path.join(pki_dir, sub, minion_id)
        if os.path.lexists(path):
            try:
                with open(path, encoding="utf-8") as handle:
                    state[name] = handle.read()
            except (OSError, UnicodeDecodeError):
                state[name] = ""
    for name in ("rejected", "denied"):
        if name in state:
            raise Rejected("key_conflict", f"a key for {minion_id} is {name} on the master")
    if "accepted" in state:
        if same_key(state["accepted"], public_key):
            return "present"
        raise Rejected("key_conflict", f"a different key is already accepted for {minion_id}")
    if "pending" in state:
        if same_key(state["pending"], public_key):
            return "move"
        raise Rejected("key_conflict", f"a different key is pending for {minion_id}")
    return "write"


def accept_minion_key(pki_dir, minion_id, public_key, action):
    """Write the key into ``<pki_dir>/minions/<id>`` (Salt's localfs_key layout)."""
    directory = os.path.join(pki_dir, "minions")
    os.makedirs(directory, mode=0o750, exist_ok=True)
    if action != "present":
        text = public_key if public_key.endswith("\n") else public_key + "\n"
        fsutil.atomic_write(os.path.join(directory, minion_id), text, mode=0o644)
    if action == "move":
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(pki_dir, "minions_pre", minion_id))


# ---------------------------------------------------------------------- TLS
def _lock(path):
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def _unlock(fd):
    try:
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def ensure_tls_cert(directory, hostnames=(), ips=()):
    """Self-signed ECDSA P-256 certificate + key in ``directory`` (``cert.pem``,
    ``key.pem`` 0600), generated once under a lock; returns ``(cert_path, key_path)``."""
    import ipaddress  # noqa: PLC0415

    os.makedirs(directory, mode=0o700, exist_ok=True)
    cert_path = os.path.join(directory, "cert.pem")
    key_path = os.path.join(directory, "key.pem")
    fd = _lock(os.path.join(directory, ".lock"))
    try:
        if os.path.exists(cert_path) and os.path.exists(key_path):
            return cert_path, key_path
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "saltext-slurm keyvault")])
        now = datetime.datetime.now(datetime.timezone.utc)
        alt = [x509.DNSName(h) for h in ("localhost", *hostnames) if h]
        for ip in ips:
            with contextlib.suppress(ValueError):
                alt.append(x509.IPAddress(ipaddress.ip_address(ip)))
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=3650))
            .add_extension(x509.SubjectAlternativeName(alt), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(key, hashes.SHA256())
        )
        fsutil.atomic_write(
            key_path,
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
            mode=0o600,
        )
        fsutil.atomic_write(cert_path, cert.public_bytes(serialization.Encoding.PEM), mode=0o644)
        log.info(
            "keyvault: generated TLS certificate %s (%s)", cert_path, cert_finger_file(cert_path)
        )
        return cert_path, key_path
    finally:
        _unlock(fd)


def cert_finger_file(path):
    with open(path, "rb") as handle:
        return cert_finger(handle.read())


# ---------------------------------------------------------------------- the store
def wrap_key_from_master_pem(path):
    """AES-256 key for the store, derived from the master's private key file."""
    try:
        with open(path, "rb") as handle:
            material = handle.read()
    except OSError as err:
        raise StoreError(f"cannot read the master key {path}: {err.strerror}") from None
    if not material.strip():
        raise StoreError(f"master key {path} is empty")
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=WRAP_INFO).derive(material)


def iso(epoch):
    return datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )


def record_aad(record):
    """AES-GCM associated data of a record's wrapped key: every immutable field, so a
    record whose token id, minion id, creation or expiry was changed does not unwrap.
    ``state``, ``failures`` and ``nonces`` change during the token's life and are not
    covered (see threat 9)."""
    return b"".join(
        _lp(part)
        for part in (
            WRAP_AAD_PREFIX,
            str(record["version"]),
            record["token_id"],
            record["minion_id"],
            str(record["created"]),
            str(record["expires"]),
        )
    )


class TokenStore:
    """One JSON file per token in ``directory`` (0700), every read-modify-write under an
    exclusive ``flock`` of ``directory/.lock``, every write atomic with mode 0600."""

    def __init__(self, directory, wrap_key, max_failures=MAX_FAILURES):
        self.directory = directory
        self.wrap_key = wrap_key
        self.max_failures = max_failures
        os.makedirs(directory, mode=0o700, exist_ok=True)
        with contextlib.suppress(OSError):
            os.chmod(directory, 0o700)

    # -- locking and records
    @contextlib.contextmanager
    def locked(self):
        fd = _lock(os.path.join(self.directory, ".lock"))
        try:
            yield
        finally:
            _unlock(fd)

    def path(self, token_id):
        return os.path.join(self.directory, f"{token_id}.json")

    # -- the clock's high-water mark (threat 14)
    def clock_path(self):
        return os.path.join(self.directory, CLOCK_FILE)

    def high_water(self):
        """The latest master time this store has seen (0 before the first locked operation);
        StoreError naming the file when it is damaged (redeems then fail closed)."""
        path = self.clock_path()
        try:
            with open(path, "rb") as handle:
                raw = handle.read(64)
        except FileNotFoundError:
            return 0
        except OSError as err:
            raise StoreError(f"clock file {path} unreadable: {err.strerror}") from None
        try:
            mark = int(raw.decode("ascii").strip(), 10)
        except (UnicodeDecodeError, ValueError):
            mark = -1
        if not 0 <= mark <= MAX_EPOCH:
            raise StoreError(
                f"clock file {path} is corrupt (not a time); check the master clock, then "
                "remove the file"
            )
        return mark

    def _advance(self, now):
        """Under the lock: raise the mark to ``now`` and return the time every expiry is
        judged by, ``max(now, mark)``: a clock stepped back cannot make a token young again."""
        mark = self.high_water()
        if int(now) > mark:
            fsutil.atomic_write(self.clock_path(), f"{int(now)}\n", mode=0o600)
            return now
        return max(now, mark)

    def _read(self, token_id, now):
        """The record, None when absent; StoreError (naming file and fault) when corrupt or
        created after ``now`` (the effective time) plus :data:`MAX_CLOCK_SKEW`."""
        path = self.path(token_id)
        try:
            with open(path, "rb") as handle:
                raw = handle.read()
        except FileNotFoundError:
            return None
        except OSError as err:
            raise StoreError(f"token record {path} unreadable: {err.strerror}") from None
        try:
            record = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as err:
            raise StoreError(f"token record {path} is not valid JSON ({err})") from None
        problem = _record_problem(record, token_id, now)
        if problem:
            raise StoreError(f"token record {path} is corrupt: {problem}")
        return record

    def _write(self, record):
        data = json.dumps(record, sort_keys=True).encode()
        fsutil.atomic_write(self.path(record["token_id"]), data, mode=0o600)

    def _wrap(self, record, key):
        nonce = secrets.token_bytes(12)
        sealed = AESGCM(self.wrap_key).encrypt(nonce, key, record_aad(record))
        return {"nonce": nonce.hex(), "sealed": sealed.hex()}

    def _unwrap(self, record):
        try:
            wrapped = record["wrapped_key"]
            return AESGCM(self.wrap_key).decrypt(
                bytes.fromhex(wrapped["nonce"]),
                bytes.fromhex(wrapped["sealed"]),
                record_aad(record),
            )
        except (InvalidTag, ValueError, KeyError, TypeError):
            raise StoreError(
                f"token record {self.path(record['token_id'])}: the wrapped key does not "
                "decrypt (tampered record, or master.pem changed since issue)"
            ) from None

    # -- admin operations
    def issue(self, minion_id, ttl, now=None, keep_older=False):
        """New token for ``minion_id``; returns ``(record, token string)``. The string is the
        only place the secret ever exists. Unless ``keep_older``, the minion's older live
        tokens are revoked (one live token per id): ``record["superseded"]`` lists them."""
        check_minion_id(minion_id)
        check_ttl(ttl)
        now = int(time.time() if now is None else now)
        secret = new_secret()
        with self.locked():
            mark = self.high_water()
            if now + ttl <= mark:
                raise KeyVaultError(
                    f"ttl: a token issued now would expire at {iso(now + ttl)}, before "
                    f"{iso(mark)}, the latest master time this store has seen (the master "
                    f"clock was stepped back {mark - now}s): check the clock, then wait or "
                    f"use a longer ttl; {self.clock_path()} holds that time"
                )
            effective = self._advance(now)
            for _ in range(20):
                token_id = new_token_id()
                if not os.path.exists(self.path(token_id)):
                    break
            else:
                raise StoreError("could not find a free token id (store full?)")
            record = {
                "version": RECORD_VERSION,
                "token_id": token_id,
                "minion_id": minion_id,
                "created": now,
                "expires": now + int(ttl),
                "state": "issued",
                "failures": 0,
                "nonces": [],
            }
            record["wrapped_key"] = self._wrap(record, mac_key(secret, token_id))
            # the new token first: a failure here leaves the older ones as they were
            self._write(record)
            superseded = [] if keep_older else self._supersede(record, effective)
        return dict(record, superseded=superseded), format_token(token_id, secret)

    def _supersede(self, new, now):
        """Under the lock: revoke the live tokens of ``new``'s minion id other than ``new``."""
        revoked = []
        for token_id in self._token_ids():
            if token_id == new["token_id"]:
                continue
            try:
                record = self._read(token_id, now)
            except StoreError:
                continue  # unreadable: it cannot be redeemed either (threat 9)
            if (
                record is not None
                and record["minion_id"] == new["minion_id"]
                and record["state"] == "issued"
                and now <= record["expires"]
            ):
                record["state"] = "revoked"
                record["revoked_at"] = int(now)
                record["revoke_reason"] = f"superseded by {new['token_id']}"
                self._write(record)
                revoked.append(token_id)
        return revoked

    def _token_ids(self):
        return [
            name[: -len(".json")]
            for name in sorted(os.listdir(self.directory))
            if name.endswith(".json") and not name.startswith(".")
        ]

    def revoke(self, token_id, reason="revoked by admin", now=None):
        if not valid_token_id(token_id):
            raise KeyVaultError(f"token_id: {token_id!r} is not a token id (6 chars [a-z0-9])")
        now = time.time() if now is None else now
        with self.locked():
            now = self._advance(now)
            record = self._read(token_id, now)
            if record is None:
                raise KeyVaultError(f"token_id: no token {token_id}")
            previous = record["state"]
            if previous == "issued":
                record["state"] = "revoked"
                record["revoked_at"] = int(now)
                record["revoke_reason"] = reason
                self._write(record)
            return public_view(record, now), previous

    def list(self, now=None):
        """Every token as :func:`public_view`; a corrupt record is listed as such (``state``
        ``corrupt``, ``error`` naming the file and the fault) and the others still are."""
        now = max(time.time() if now is None else now, self.high_water())
        out = []
        for token_id in self._token_ids():
            try:
                record = self._read(token_id, now)
            except StoreError as err:
                out.append({"token_id": token_id, "state": "corrupt", "error": str(err)})
                continue
            if record is not None:
                out.append(public_view(record, now))
        return out

    def purge(self, now=None):
        """Remove expired, consumed and revoked tokens. Returns ``{"purged": [ids],
        "corrupt": [{"token_id", "error"}]}``: a corrupt record is reported and kept (it is
        evidence for the admin), the others are purged all the same."""
        now = time.time() if now is None else now
        removed, corrupt = [], []
        with self.locked():
            for entry in self.list(self._advance(now)):
                if entry["state"] == "corrupt":
                    corrupt.append({"token_id": entry["token_id"], "error": entry["error"]})
                elif entry["state"] in ("expired", "consumed", "revoked"):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(self.path(entry["token_id"]))
                    removed.append(entry["token_id"])
        return {"purged": removed, "corrupt": corrupt}

    # -- redeem
    def redeem(self, request, pki_dir, window=DEFAULT_WINDOW, now=None, master_pub=None):
        """Check ``request`` and, on success, consume the token and accept the key, all under
        the store lock. Returns ``{"minion_id", "token_id", "action", "response_mac"}``;
        raises :class:`Rejected` (reason code) otherwise."""
        clock = time.time() if now is None else now  # the node's timestamp is judged by it
        try:
            fields = _request_fields(request)
        except Rejected as err:
            self._count_malformed(err, clock)
            raise
        token_id = fields["token_id"]
        with self.locked():
            try:
                now = self._advance(clock)  # expiry is judged by the high-water mark too
                record = self._read(token_id, now)
                if record is None:
                    raise Rejected("unknown_token", token_id=token_id)
                key = self._unwrap(record)
            except StoreError as err:
                raise Rejected("store_error", str(err), token_id=token_id) from None
            bound = record["minion_id"]
            expected = request_mac(key, fields)
            if not mac_equal(expected, request.get("mac")):
                self._fail(record, "bad_mac", "request MAC does not verify", now)
            # authenticated from here on
            if record["state"] == "consumed":
                raise Rejected("consumed", "token already used", token_id, bound)
            if record["state"] == "revoked":
                raise Rejected("revoked", record.get("revoke_reason", ""), token_id, bound)
            if now > record["expires"]:
                raise Rejected("expired", f"expired at {iso(record['expires'])}", token_id, bound)
            # an issued token keeps every authenticated nonce; at most max_failures + 1 of
            # them, since every authenticated refusal below counts as a failure
            if fields["nonce"] in record["nonces"]:
                self._fail(record, "replayed_nonce", "nonce already used with this token", now)
            record["nonces"].append(fields["nonce"])
            if fields["minion_id"] != bound:
                self._fail(record, "wrong_minion", f"token is bound to {bound}", now)
            if abs(clock - fields["timestamp"]) > window:
                self._fail(
                    record,
                    "stale_timestamp",
                    f"timestamp {fields['timestamp']} is {clock - fields['timestamp']:+.0f}s "
                    f"from the master's clock (window {window}s)",
                    now,
                )
            try:
                public_key = normalise_public_key(fields["public_key"])
                load_rsa_public_key(public_key)
            except KeyVaultError as err:
                self._fail(record, "bad_public_key", str(err), now)
            try:
                action = check_minion_key(pki_dir, bound, public_key)
            except Rejected as err:
                self._fail(record, err.reason, err.detail, now)
            # consume first: a crash before the key is written burns the token, never
            # leaves it usable twice
            record["state"] = "consumed"
            record["consumed_at"] = int(now)
            self._write(record)
            accept_minion_key(pki_dir, bound, public_key, action)
        result = {"minion_id": bound, "token_id": token_id, "action": action}
        if master_pub is not None:
            result["response_mac"] = response_mac(key, fields["nonce"], master_pub)
        return result

    def _count_malformed(self, err, now):
        """A malformed request that names a known, issued token counts as a failure of that
        token (raises the counted Rejected); anything else is left to the caller."""
        if not valid_token_id(err.token_id):
            return
        with self.locked():
            try:
                now = self._advance(now)
                record = self._read(err.token_id, now)
            except StoreError:
                return
            if record is not None:
                self._fail(record, err.reason, err.detail, now)

    def _fail(self, record, reason, detail, now=None):
        """Count a failure against an issued, unexpired token (revoking it at
        ``max_failures``) and raise Rejected. A consumed, revoked or expired token can never
        succeed again: it is refused without writing the store (no write amplification
        under the global lock)."""
        now = time.time() if now is None else now
        if record["state"] != "issued" or now > record["expires"]:
            raise Rejected(
                reason, detail, token_id=record["token_id"], minion_id=record["minion_id"]
            )
        record["failures"] = int(record.get("failures", 0)) + 1
        if record["failures"] >= self.max_failures:
            record["state"] = "revoked"
            record["revoked_at"] = int(now)
            record["revoke_reason"] = f"{record['failures']} failed attempts"
            detail = f"{detail}; token revoked after {record['failures']} failed attempts"
        self._write(record)
        raise Rejected(reason, detail, token_id=record["token_id"], minion_id=record["minion_id"])


def _epoch_problem(record, name):
    value = record.get(name)
    if not isinstance(value, int) or isinstance(value, bool):
        return f"{name} is not an integer"
    if not 0 <= value <= MAX_EPOCH:
        return f"{name} {value} is not a time between 1970 and 9999"
    return None


def _record_problem(record, token_id, now):
    if not isinstance(record, dict):
        return "not a JSON object"
    if record.get("version") != RECORD_VERSION:
        return (
            f"unknown version {record.get('version')!r} (version {RECORD_VERSION} expected; a "
            "token issued before an upgrade must be issued again)"
        )
    if record.get("token_id") != token_id:
        return f"token_id {record.get('token_id')!r} does not match the file name"
    if not valid_minion_id(record.get("minion_id")):
        return "bad minion_id"
    for name in ("created", "expires", *(n for n in ("consumed_at", "revoked_at") if n in record)):
        problem = _epoch_problem(record, name)
        if problem:
            return problem
    if record["expires"] < record["created"]:
        return "expires is before created"
    if record["created"] > now + MAX_CLOCK_SKEW:
        # never seen by this store's clock: not issued here, or the mark was removed
        return (
            f"created {iso(record['created'])} is in the future (the latest master time seen "
            f"is {iso(int(now))})"
        )
    failures = record.get("failures")
    if not isinstance(failures, int) or isinstance(failures, bool) or failures < 0:
        return "failures is not a count"
    if not isinstance(record.get("revoke_reason", ""), str):
        return "revoke_reason is not a string"
    if record.get("state") not in ("issued", "consumed", "revoked"):
        return f"unknown state {record.get('state')!r}"
    if not isinstance(record.get("nonces"), list):
        return "nonces is not a list"
    wrapped = record.get("wrapped_key")
    if not isinstance(wrapped, dict) or not {"nonce", "sealed"} <= set(wrapped):
        return "wrapped_key missing"
    return None


def _request_fields(request):
    """Shape check before any store access; Rejected("malformed") names the field."""
    if not isinstance(request, dict):
        raise Rejected("malformed", "body is not a JSON object")
    for name in (*REQUEST_FIELDS, "mac"):
        if name not in request:
            raise Rejected("malformed", f"missing field {name}")
    token_id = request["token_id"]
    if not valid_token_id(token_id):
        raise Rejected("malformed", "token_id is not 6 characters [a-z0-9]")
    if not valid_minion_id(request["minion_id"]):
        raise Rejected("malformed", "minion_id is not a valid minion id", token_id=token_id)
    nonce = request["nonce"]
    if not isinstance(nonce, str) or not _NONCE_RE.match(nonce):
        raise Rejected("malformed", "nonce is not 64 lower-case hex chars", token_id=token_id)
    stamp = request["timestamp"]
    if not isinstance(stamp, int) or isinstance(stamp, bool) or not abs(stamp) < MAX_TIMESTAMP:
        raise Rejected("malformed", "timestamp is not an integer below 2**53", token_id=token_id)
    pub = request["public_key"]
    if not isinstance(pub, str) or len(pub) > MAX_PUBLIC_KEY_CHARS or not pub.isascii():
        raise Rejected("malformed", "public_key is not an ASCII PEM string", token_id=token_id)
    if not isinstance(request["mac"], str):
        raise Rejected("malformed", "mac is not a string", token_id=token_id)
    return {name: request[name] for name in REQUEST_FIELDS}


def public_view(record, now=None):
    """What ``keyvault.list`` shows: never the wrapped key or nonces."""
    now = int(time.time() if now is None else now)
    state = record["state"]
    if state == "issued" and now > record["expires"]:
        state = "expired"
    view = {
        "token_id": record["token_id"],
        "minion_id": record["minion_id"],
        "state": state,
        "created": iso(record["created"]),
        "expires": iso(record["expires"]),
        "expires_epoch": record["expires"],
        "failures": record["failures"],
    }
    for name in ("consumed_at", "revoked_at"):
        if name in record:
            view[name] = iso(record[name])
    if "revoke_reason" in record:
        view["revoke_reason"] = record["revoke_reason"]
    return view


# ---------------------------------------------------------------------- configuration
def settings(opts):
    """The master's ``keyvault:`` settings with defaults; KeyVaultError names a bad key."""
    raw = opts.get("keyvault") or {}
    if not isinstance(raw, dict):
        raise KeyVaultError("keyvault: must be a mapping in the master config")
    cfg = {
        "max_ttl": raw.get("max_ttl", DEFAULT_MAX_TTL),
        "request_window": raw.get("request_window", DEFAULT_WINDOW),
        "max_failures": raw.get("max_failures", MAX_FAILURES),
        "keep_older": raw.get("keep_older", False),
        "tls_cert": raw.get("tls_cert"),
        "tls_key": raw.get("tls_key"),
        "url": raw.get("url"),
    }
    limits = {
        "max_ttl": MAX_TTL_LIMIT,
        "request_window": MAX_WINDOW_LIMIT,
        "max_failures": MAX_FAILURES_LIMIT,
    }
    for name, limit in limits.items():
        value = cfg[name]
        if not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= limit:
            raise KeyVaultError(
                f"keyvault:{name}: must be a whole number from 1 to {limit}, got {value!r}"
            )
    if not isinstance(cfg["keep_older"], bool):
        raise KeyVaultError(
            f"keyvault:keep_older: must be true or false, got {cfg['keep_older']!r}"
        )
    if bool(cfg["tls_cert"]) != bool(cfg["tls_key"]):
        raise KeyVaultError("keyvault:tls_cert and keyvault:tls_key must be set together")
    engine = engine_config(opts)
    cfg["address"] = engine.get("address") or opts.get("interface") or "0.0.0.0"  # noqa: S104
    cfg["port"] = engine.get("port", DEFAULT_PORT)
    if not isinstance(cfg["port"], int) or not 0 < cfg["port"] < 65536:
        raise KeyVaultError(f"engines:keyvault:port: not a TCP port: {cfg['port']!r}")
    return cfg


def engine_config(opts):
    engines = opts.get("engines") or []
    if isinstance(engines, dict):
        engines = [{k: v} for k, v in engines.items()]
    for entry in engines:
        if entry == "keyvault":
            return {}
        if isinstance(entry, dict) and "keyvault" in entry:
            return entry["keyvault"] or {}
    return {}


def paths(opts):
    """Where everything lives for a master with ``opts``."""
    pki_dir = opts["pki_dir"]
    return {
        "pki_dir": pki_dir,
        "master_pem": os.path.join(pki_dir, "master.pem"),
        "master_pub": os.path.join(pki_dir, "master.pub"),
        "tls_dir": os.path.join(pki_dir, "keyvault"),
        "store": os.path.join(opts["cachedir"], "keyvault", "tokens"),
    }


def tls_files(opts, cfg=None):
    """Configured ``(cert, key)`` or the generated pair (made now if missing)."""
    cfg = cfg or settings(opts)
    if cfg["tls_cert"]:
        for name in ("tls_cert", "tls_key"):
            if not os.path.isfile(cfg[name]):
                raise KeyVaultError(f"keyvault:{name}: {cfg[name]} does not exist")
        return cfg["tls_cert"], cfg["tls_key"]
    address = cfg["address"]
    ips = [address] if address not in ("0.0.0.0", "::", "") else []  # noqa: S104
    return ensure_tls_cert(paths(opts)["tls_dir"], ips=ips)


def open_store(opts, cfg=None):
    cfg = cfg or settings(opts)
    where = paths(opts)
    directory = where["store"]
    try:
        os.makedirs(os.path.dirname(directory), mode=0o700, exist_ok=True)
    except OSError as err:
        if err.errno != errno.EEXIST:
            raise StoreError(f"cannot create {directory}: {err.strerror}") from None
    return TokenStore(directory, wrap_key_from_master_pem(where["master_pem"]), cfg["max_failures"])


def endpoint_url(cfg):
    if cfg.get("url"):
        if not str(cfg["url"]).startswith("https://"):
            raise KeyVaultError(f"keyvault:url: must start with https://, got {cfg['url']!r}")
        return str(cfg["url"])
    address = cfg["address"]
    if address in ("0.0.0.0", "::", ""):  # noqa: S104
        raise KeyVaultError(
            "the keyvault engine listens on all addresses: set keyvault:url in the master "
            "config to the https://host:port/v1/redeem nodes should use"
        )
    host = f"[{address}]" if ":" in address else address
    return f"https://{host}:{cfg['port']}/v1/redeem"


def bootstrap_command(url, token, minion_id, master_finger, tls_finger):
    """The ready-to-paste node command. The token goes through a pipe from ``echo`` (a shell
    builtin, so it is in no process's argv) into ``--token=-``. Every value is attached with
    ``=``: a minion id such as ``-n1`` would otherwise be parsed as an option."""
    quoted = "'" + str(token).replace("'", "'\\''") + "'"
    options = {
        "token": "-",
        "url": url,
        "minion-id": minion_id,
        "master-finger": master_finger,
        "tls-finger": tls_finger,
    }
    return f"echo {quoted} | " + shlex.join(
        ["salt-keyvault-bootstrap", *(f"--{name}={value}" for name, value in options.items())]
    )
