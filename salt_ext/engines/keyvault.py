"""
KeyVault HTTPS endpoint, run inside salt-master: new machines redeem one-time tokens here.

Configure it in the master config (the threat model is the docstring of
``salt_ext/lib/keyvault/vault.py``; the threats of this network layer are below):

.. code-block:: yaml

    engines:
      - keyvault:
          address: 10.0.0.1     # default: the master's ``interface``
          port: 4510
          # header_timeout: 3   request_timeout: 15   max_per_address: 8
          # max_connections: 1024   workers: 4
          # reject_log_burst: 5   reject_log_interval: 10
    keyvault:
      max_ttl: 3600             # cap for keyvault.issue ttl=
      request_window: 10        # allowed |master clock - request timestamp|, seconds
      # tls_cert: /etc/salt/pki/master/keyvault/cert.pem   (generated when not set)
      # tls_key: /etc/salt/pki/master/keyvault/key.pem

Serves ``POST /v1/redeem`` (JSON, at most 64 KiB) and ``GET /v1/health`` over TLS only.
Every refusal of a redeem is one generic ``403 {"error": "rejected"}``; the reason goes to the
master log and the ``salt/keyvault/redeem/rejected`` event.

Threats to the endpoint itself (continuing the numbering of ``salt_ext/lib/keyvault/vault.py``;
E = ``tests/unit/test_engine_keyvault.py``, I = ``tests/integration/test_keyvault.py``,
B = ``bench/keyvault.py``):

14. Starvation without a token: idle or trickling connections holding every slot (a thread
    per connection capped at 256 let 256 idle sockets, re-opened as soon as cut, refuse 90 of
    90 real redeems). One accept loop does the TLS handshakes and reads without blocking;
    a connection must complete handshake and headers within ``header_timeout`` (3 s) and
    the whole request within ``request_timeout`` (15 s); each source (IPv4 address, IPv6
    /64) holds at most ``max_per_address`` (8) connections whose request is not complete;
    a newcomer replaces its own source's oldest
    connection that never sent a byte (or was silent for 1 s), and when all
    ``max_connections`` (1024) are in use a lighter source takes a slot from the heaviest
    one; complete requests are answered by ``workers`` threads taking them round-robin per
    source; refused connections are reset (no TIME_WAIT) and reported in one warning per
    10 s. E: ``test_idle_flood_from_one_address_does_not_starve_another``,
    ``test_trickling_tls_flood_does_not_starve_another_address``,
    ``test_idle_newcomers_from_the_same_address_never_cut_a_client_that_spoke``,
    ``test_per_address_cap_cuts_the_oldest_connection_that_never_spoke``,
    ``test_global_cap_takes_room_from_the_heaviest_address``,
    ``test_trickling_headers_are_cut_at_the_header_deadline``,
    ``test_trickling_body_is_cut_at_the_request_deadline``,
    ``test_cap_warnings_are_rate_limited``, ``test_bad_engine_limits_name_the_key[*]``;
    I: ``test_node_bootstraps_during_an_idle_flood_from_another_node``,
    ``test_trickling_headers_are_cut_off_at_the_header_deadline``,
    ``test_trickling_body_is_cut_off_at_the_request_deadline``; B: the "flood" figure.
    Residual: a flood from the node's own source (same host or NAT, or its IPv6 /64)
    shares its slots; idle sockets give way to a node that sends its ClientHello, but
    sockets trickling a byte more often than every second keep them, and the node gets
    through only by retrying (``salt-keyvault-bootstrap --retry-for``). Full TLS handshakes
    at a high rate from many sources cost CPU and are only bounded by the caps.
15. Log and event flooding: one client produced 708 WARNING lines and 708 bus events per
    second. :class:`RejectionLog` logs and events the first ``reject_log_burst`` (5)
    rejections of a source per ``reject_log_interval`` (10 s) and summarises the rest in one
    line and one ``salt/keyvault/redeem/rejected/summary`` event per source and interval;
    at most 4,096 sources are tracked (the rest count together), 100 single lines and 17
    summaries per interval. E: ``test_rejections_are_logged_once_per_burst_then_summarised``,
    ``test_rejection_table_is_bounded``, ``test_source_key_groups_an_ipv6_64[*]``;
    I: ``test_a_burst_of_rejections_is_summarised``.
16. Parser failures that drop the connection without an answer (64 KiB of ``[`` raised
    RecursionError): any exception from the JSON parser is a 400. E:
    ``test_deeply_nested_json_is_a_400[*]``, ``test_any_json_parser_failure_is_a_400``.
17. Transient failures on the node (a flood, a master restart) versus retrying into an
    attack: ``salt-keyvault-bootstrap`` retries connection failures, timeouts and HTTP
    429/502/503/504 with exponential backoff and jitter for at most ``--retry-for`` seconds,
    each time with a fresh nonce and timestamp, and never after a 403, a pin mismatch or a
    failed response check. E: ``test_bootstrap_retries_a_busy_endpoint_with_a_fresh_request``,
    ``test_bootstrap_never_retries_a_403``, ``test_bootstrap_never_retries_a_pin_mismatch``,
    ``test_bootstrap_never_retries_a_failed_response_check``,
    ``test_bootstrap_gives_up_on_connection_errors_after_retry_for``.
"""

import collections
import errno
import http.server
import io
import ipaddress
import json
import logging
import multiprocessing
import os
import queue
import re
import resource
import selectors
import socket
import ssl
import struct
import threading
import time

import salt.utils.event

from salt_ext.lib.keyvault import vault as kv

log = logging.getLogger(__name__)

__virtualname__ = "keyvault"

MAX_BODY = 64 * 1024
# larger announced bodies (up to this) are read and dropped so the client sees its 413
# rather than a reset from closing on unread data
DRAIN_LIMIT = 1024 * 1024
MAX_HEADER = 16 * 1024
REJECTED = {"error": "rejected"}

# engine options (``engines: - keyvault: {...}``) and their defaults; see README "KeyVault"
DEFAULT_LIMITS = {
    # TLS handshake + request line + headers must arrive within this many seconds of the
    # accept: the idle and trickling floods hold a slot for at most this long
    "header_timeout": 3,
    # the whole request (body included) must be in within this; the answer's write too
    "request_timeout": 15,
    "max_connections": 1024,
    "max_per_address": 8,
    "workers": 4,
    "reject_log_interval": 10,
    "reject_log_burst": 5,
}
_INT_LIMITS = ("max_connections", "max_per_address", "workers", "reject_log_burst")
TICK = 0.1
ACCEPT_BATCH = 128
# a connection that sent something within this long is never cut to make room for a
# newcomer from its own address (an attacker's idle sockets are, at once)
STALE_AFTER = 1.0
# the "connection limit" warning: at most one per this many seconds
DROP_LOG_INTERVAL = 10
# bounds of the rejection log, whatever the number of sources (an IPv6 /64 is one source,
# but an attacker may hold many /64s or many IPv4 addresses)
MAX_REJECT_SOURCES = 4096
MAX_REJECT_LINES = 100
MAX_SUMMARY_LINES = 16
MAX_SUMMARY_TOKENS = 10
OTHER_SOURCES = "other sources"
_LINGER_RESET = struct.pack("ii", 1, 0)


def __virtual__():
    return __virtualname__


def source_key(address):
    """What the per-address cap and the rejection log count as one source: an IPv4 address,
    or an IPv6 address's /64 (one host usually holds a whole /64; an IPv4-mapped address
    counts as the IPv4 one)."""
    try:
        ip = ipaddress.ip_address(str(address).split("%", 1)[0])
    except ValueError:
        return str(address)
    if ip.version == 6:
        if ip.ipv4_mapped:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


def engine_limits(config):
    """The engine's connection and logging limits from its config entry, defaults filled
    in; KeyVaultError names a bad key."""
    limits = dict(DEFAULT_LIMITS)
    for name, default in DEFAULT_LIMITS.items():
        value = config.get(name, default)
        if name in _INT_LIMITS:
            good = isinstance(value, int) and not isinstance(value, bool) and value > 0
            kind = "a positive integer"
        else:
            good = isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0
            kind = "a positive number of seconds"
        if not good:
            raise kv.KeyVaultError(f"engines:keyvault:{name}: must be {kind}, got {value!r}")
        limits[name] = value
    if limits["header_timeout"] > limits["request_timeout"]:
        raise kv.KeyVaultError(
            "engines:keyvault:header_timeout: must not exceed request_timeout "
            f"({limits['header_timeout']} > {limits['request_timeout']})"
        )
    return limits


class RejectionLog:
    """One log line and one ``salt/keyvault/redeem/rejected`` event per rejection, for the
    first ``burst`` rejections of a source in each ``interval``; the rest of that source's
    rejections in the interval become one summary line and one
    ``salt/keyvault/redeem/rejected/summary`` event when it ends (count, reasons, up to 10
    token ids). Bounded whatever the number of sources: at most ``MAX_REJECT_SOURCES``
    sources are tracked (later ones count together as "other sources"), at most
    ``MAX_REJECT_LINES`` single lines and ``MAX_SUMMARY_LINES`` + 1 summaries per interval."""

    def __init__(self, events, interval, burst, clock=time.monotonic):
        self.events = events
        self.interval = interval
        self.burst = burst
        self.clock = clock
        self.lock = threading.Lock()
        self.window = clock()
        self.sources = {}  # source -> {"logged", "count", "reasons", "tokens"}
        self.logged = 0

    def rejected(self, reason, detail, token_id, minion_id, peer):
        """Log and event one rejection now, or count it for the summary."""
        source = source_key(peer)
        with self.lock:
            due = self._roll()
            entry = self.sources.get(source)
            if entry is None:
                # the last slot is the shared "other sources" entry
                if len(self.sources) >= MAX_REJECT_SOURCES - 1:
                    source = OTHER_SOURCES
                    entry = self.sources.get(source)
                if entry is None:
                    entry = self.sources[source] = {
                        "logged": 0,
                        "count": 0,
                        "reasons": collections.Counter(),
                        "tokens": set(),
                    }
            now = entry["logged"] < self.burst and self.logged < MAX_REJECT_LINES
            if now:
                entry["logged"] += 1
                self.logged += 1
            else:
                entry["count"] += 1
                entry["reasons"][reason] += 1
                if token_id and len(entry["tokens"]) < MAX_SUMMARY_TOKENS:
                    entry["tokens"].add(token_id)
        self._summarise(due)
        if not now:
            return
        log.warning(
            "keyvault: redeem rejected: reason %s, token %s, minion %s, peer %s: %s",
            reason,
            token_id,
            minion_id,
            peer,
            detail,
        )
        self.events.fire(
            "salt/keyvault/redeem/rejected",
            {
                "reason": reason,
                "detail": detail,
                "token_id": token_id,
                "minion_id": minion_id,
                "peer": peer,
            },
        )

    def tick(self):
        """Called periodically: writes the summaries of an interval that has ended."""
        with self.lock:
            due = self._roll()
        self._summarise(due)

    def _roll(self):
        now = self.clock()
        if now - self.window < self.interval:
            return []
        due = [(source, entry) for source, entry in self.sources.items() if entry["count"]]
        self.sources = {}
        self.logged = 0
        self.window = now
        return due

    def _summarise(self, due):
        due.sort(key=lambda item: item[1]["count"], reverse=True)
        for source, entry in due[:MAX_SUMMARY_LINES]:
            reasons = dict(entry["reasons"].most_common())
            log.warning(
                "keyvault: %d more rejection(s) from %s in the last %ss (reasons: %s; tokens: %s)",
                entry["count"],
                source,
                self.interval,
                ", ".join(f"{reason}: {count}" for reason, count in reasons.items()),
                ", ".join(sorted(entry["tokens"])) or "none",
            )
            self.events.fire(
                "salt/keyvault/redeem/rejected/summary",
                {
                    "source": source,
                    "count": entry["count"],
                    "reasons": reasons,
                    "token_ids": sorted(entry["tokens"]),
                    "interval": self.interval,
                },
            )
        rest = due[MAX_SUMMARY_LINES:]
        if rest:
            count = sum(entry["count"] for _, entry in rest)
            reasons = collections.Counter()
            for _, entry in rest:
                reasons.update(entry["reasons"])
            log.warning(
                "keyvault: %d more rejection(s) from %d other source(s) in the last %ss "
                "(reasons: %s)",
                count,
                len(rest),
                self.interval,
                ", ".join(f"{reason}: {n}" for reason, n in reasons.most_common()),
            )
            self.events.fire(
                "salt/keyvault/redeem/rejected/summary",
                {
                    "source": f"{len(rest)} {OTHER_SOURCES}",
                    "count": count,
                    "reasons": dict(reasons.most_common()),
                    "token_ids": [],
                    "interval": self.interval,
                },
            )


class EventBus:
    """Events leave through a child process that owns the master-bus connection.

    A fire costs ~0.6 ms of CPU inside Salt's event client (it starts a thread per
    publish); in the engine process that time would compete for the GIL with every TLS
    handshake. Handler threads only queue ``(tag, data)``; the child sends them in order.
    It exits when the engine does (it watches its parent's pid)."""

    def __init__(self, opts, backlog=10000):
        self.opts = opts
        ctx = multiprocessing.get_context("fork")
        self.queue = ctx.Queue(maxsize=backlog)
        # never wait at exit for the feeder thread to flush: if the child died first, nobody
        # reads the pipe and the flush would block the engine's exit for ever (events not
        # yet sent are lost; their log lines stay)
        self.queue.cancel_join_thread()
        self.process = ctx.Process(
            target=_send_events, args=(opts, self.queue, os.getpid()), daemon=True
        )
        self.process.start()

    def close(self, timeout=2):
        """Stop the child and drop what is still queued, without blocking."""
        self.queue.close()
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(timeout)

    def fire(self, tag, data):
        try:
            self.queue.put_nowait((tag, data))
        except queue.Full:
            log.warning("keyvault: event backlog full, %s dropped (the log line stays)", tag)


def _send_events(opts, events, parent):
    bus = None
    while True:
        try:
            tag, data = events.get(timeout=2)
        except queue.Empty:
            if os.getppid() != parent:
                return
            continue
        try:
            if bus is None:
                bus = salt.utils.event.get_master_event(opts, opts["sock_dir"], listen=False)
            bus.fire_event(data, tag)
        except Exception as err:  # pylint: disable=broad-except
            log.warning("keyvault: event %s not sent: %s", tag, err)
            bus = None


class Vault:
    """The redeem logic behind the HTTP layer: store + pki dir + events + log lines."""

    def __init__(self, opts, cfg, events, limits=None):
        self.opts = opts
        self.cfg = cfg
        self.events = events
        limits = limits or DEFAULT_LIMITS
        self.rejections = RejectionLog(
            events, limits["reject_log_interval"], limits["reject_log_burst"]
        )
        where = kv.paths(opts)
        self.pki_dir = where["pki_dir"]
        with open(where["master_pub"], encoding="utf-8") as handle:
            self.master_pub = handle.read()
        self.store = kv.open_store(opts, cfg)

    def redeem(self, request, peer):
        """``(HTTP status, body)``; never raises."""
        claimed = request.get("minion_id") if isinstance(request, dict) else None
        claimed = claimed if kv.valid_minion_id(claimed) else None
        try:
            result = self.store.redeem(
                request, self.pki_dir, self.cfg["request_window"], master_pub=self.master_pub
            )
        except kv.Rejected as err:
            token_id = err.token_id if kv.valid_token_id(err.token_id) else None
            self._rejected(err.reason, err.detail, token_id, err.minion_id or claimed, peer)
            return 403, REJECTED
        except Exception as err:  # pylint: disable=broad-except
            # fail closed: whatever broke, nothing was accepted by this request
            log.error("keyvault: redeem failed closed (%s: %s)", type(err).__name__, err)
            self._rejected("internal_error", type(err).__name__, None, claimed, peer)
            return 403, REJECTED
        log.info(
            "keyvault: redeem accepted: token %s, minion %s (%s), peer %s",
            result["token_id"],
            result["minion_id"],
            result["action"],
            peer,
        )
        event = {
            "token_id": result["token_id"],
            "minion_id": result["minion_id"],
            "action": result["action"],
            "peer": peer,
        }
        self.events.fire("salt/keyvault/redeem/accepted", event)
        self.events.fire(
            "salt/key",
            {"act": "accept", "id": result["minion_id"], "result": True, "source": "keyvault"},
        )
        return 200, {
            "minion_id": result["minion_id"],
            "master_pub": self.master_pub,
            "response_mac": result["response_mac"],
        }

    def _rejected(self, reason, detail, token_id, minion_id, peer):
        if reason == "consumed":
            detail = (
                f"{detail}; if this is the real {minion_id}, the token may have been "
                f"intercepted: salt-key -d {minion_id} and investigate"
            )
        self.rejections.rejected(reason, detail, token_id, minion_id, peer)


# connection phases, in order
NEW, HANDSHAKE, HEADERS, BODY, DRAIN, QUEUED, CLOSED = range(7)
_CONTENT_LENGTH = re.compile(rb"^content-length[ \t]*:[ \t]*([^\r\n]*)", re.I | re.M)
_HEADER_END = re.compile(rb"\r?\n\r?\n")


class Connection:
    """One client connection, owned by the accept loop until it is queued for a worker."""

    __slots__ = (
        "sock",
        "peer",
        "source",
        "accepted",
        "active",
        "state",
        "buf",
        "body_at",
        "need",
        "drain",
        "events",
    )

    def __init__(self, sock, peer, now):
        self.sock = sock  # the TLS socket once the handshake starts
        self.peer = peer
        self.source = source_key(peer[0])
        self.accepted = now
        self.active = None  # monotonic time of the last bytes received; None: never
        self.state = NEW
        self.buf = bytearray()
        self.body_at = 0
        self.need = 0
        self.drain = 0
        self.events = 0

    def has_spoken(self):
        """Received something, or has bytes waiting (the ClientHello of a real client is
        there from the moment it is accepted)."""
        if self.active is not None:
            return True
        try:
            return bool(self.sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            return True  # reset or closed: let its own read event deal with it


class Server:
    """The HTTPS endpoint: one accept loop (non-blocking TLS handshakes, header and body
    reads, every deadline) and a small worker pool that answers complete requests.

    Why not a thread per connection: a thousand idle or trickling sockets would hold a
    thousand threads (or, capped, every slot) and starve real nodes. Here a connection
    costs a file descriptor and a few hundred bytes until its request is complete, is cut at
    ``header_timeout`` if it has not sent its headers by then, and each source (IPv4
    address, or IPv6 /64) holds at most ``max_per_address`` connections whose request is
    not complete yet. When a source is
    at its cap, a newcomer from it replaces that source's oldest connection that never sent
    a byte (or has been silent for ``STALE_AFTER``); when all ``max_connections`` are in
    use, a newcomer from a lighter source replaces a connection of the heaviest one. Complete
    requests wait in one queue per source and workers take them round-robin, so one source
    cannot fill the workers' backlog either."""

    def __init__(self, address, context, vault, limits=None):
        self.context = context
        self.vault = vault
        self.limits = dict(limits or DEFAULT_LIMITS)
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.socket = socket.socket(family, socket.SOCK_STREAM)
        try:
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.socket.bind(address)
            # the kernel's accept queue is where a real node waits behind a flood: keep it
            # deep (capped by net.core.somaxconn) and drain it every loop
            self.socket.listen(4096)
            self.socket.setblocking(False)
        except OSError:
            self.socket.close()
            raise
        self.server_address = self.socket.getsockname()
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.socket, selectors.EVENT_READ, None)
        self.wake_r, self.wake_w = socket.socketpair()
        self.wake_r.setblocking(False)
        self.wake_w.setblocking(False)
        self.selector.register(self.wake_r, selectors.EVENT_READ, "wake")
        # source -> {Connection: None}, oldest first: connections whose request is not complete
        # yet (what the per-address cap counts: a complete request holds no slot there, so
        # a client's next connection never waits for the worker's close to be noticed)
        self.conns = {}
        self.total = 0  # every open connection, complete requests included (the global cap)
        self.finished = collections.deque()  # connections the workers are done with
        self.pending = collections.OrderedDict()  # source -> deque of complete requests
        self.pending_cv = threading.Condition()
        self.stopping = False
        self.stopped = threading.Event()
        self.stopped.set()
        self.closed = False
        self.dropped = collections.Counter()
        self.drop_logged = None
        self.workers = [
            threading.Thread(target=self._work, name=f"keyvault-worker-{n}", daemon=True)
            for n in range(self.limits["workers"])
        ]
        for worker in self.workers:
            worker.start()

    # ------------------------------------------------------------------ the accept loop
    def serve_forever(self, poll_interval=0.5):
        """Serve until :meth:`shutdown`."""
        self.stopped.clear()
        last_sweep = 0.0
        try:
            while not self.stopping:
                for key, mask in self.selector.select(min(poll_interval, TICK)):
                    try:
                        if key.data is None:
                            self._accept()
                        elif key.data == "wake":
                            self._woken()
                        else:
                            self._io(key.data, mask)
                    except Exception:  # pylint: disable=broad-except
                        # a bug must cost one connection, never the endpoint
                        log.exception("keyvault: accept loop error")
                        if isinstance(key.data, Connection):
                            self._close(key.data)
                now = time.monotonic()
                if now - last_sweep >= TICK:
                    last_sweep = now
                    self._sweep(now)
                    self.vault.rejections.tick()
                    self._log_drops(now)
        finally:
            self.stopped.set()

    def shutdown(self):
        """Stop :meth:`serve_forever` and wait for it to return."""
        self.stopping = True
        self._wake()
        self.stopped.wait()

    def server_close(self):
        """Close the listening socket, every connection and the workers."""
        if self.closed:
            return
        self.closed = True
        self.stopping = True
        with self.pending_cv:
            queued = [conn for requests in self.pending.values() for conn in requests]
            self.pending.clear()
            self.pending_cv.notify_all()
        for conn in queued:
            conn.sock.close()
        for conns in list(self.conns.values()):
            for conn in list(conns):
                self._close(conn)
        self.selector.close()
        self.socket.close()
        self.wake_r.close()
        self.wake_w.close()

    def _wake(self):
        try:
            self.wake_w.send(b"x")
        except OSError:
            pass

    def _woken(self):
        try:
            while self.wake_r.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass
        while self.finished:
            self._forget(self.finished.popleft())

    def _accept(self):
        now = time.monotonic()
        for _ in range(ACCEPT_BATCH):
            try:
                sock, peer = self.socket.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as err:
                if err.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    log.warning("keyvault: cannot accept: %s", err)
                    return
                continue
            sock.setblocking(False)
            conn = Connection(sock, peer, now)
            if not self._admit(conn, now):
                self.dropped[conn.source] += 1
                self._reset(sock)
                continue
            self.conns.setdefault(conn.source, {})[conn] = None
            self.total += 1
            conn.events = selectors.EVENT_READ
            self.selector.register(sock, selectors.EVENT_READ, conn)

    def _admit(self, conn, now):
        """Make room for ``conn`` if the caps allow it (cutting another connection)."""
        own = self.conns.get(conn.source, {})
        if len(own) >= self.limits["max_per_address"]:
            victim = self._victim(own, now, stale_only=True)
            if victim is None:
                return False
            self._cut(victim)
        if self.total < self.limits["max_connections"]:
            return True
        # full: a lighter source takes a slot from the heaviest one (max-min fairness)
        if not self.conns:
            return False  # every slot holds a complete request: they end within ms
        mine = len(self.conns.get(conn.source, ()))
        heaviest = max(self.conns.values(), key=len)
        victim = None
        if len(heaviest) > mine + 1:
            victim = self._victim(heaviest, now, stale_only=False)
        if victim is None and mine:
            victim = self._victim(self.conns[conn.source], now, stale_only=True)
        if victim is None:
            return False
        self._cut(victim)
        return True

    def _victim(self, conns, now, stale_only):
        """The connection of one source to cut first: one that never sent a byte (oldest
        first), else the one silent for longest (if ``stale_only``: silent for at least
        ``STALE_AFTER``). Complete requests are not in ``conns``: never cut."""
        silent, silent_since = None, None
        for conn in conns:
            if not conn.has_spoken():
                return conn
            # bytes waiting but not read yet: it spoke when it was accepted
            since = conn.active if conn.active is not None else conn.accepted
            if silent is None or since < silent_since:
                silent, silent_since = conn, since
        if silent is not None and (not stale_only or now - silent_since >= STALE_AFTER):
            return silent
        return None

    def _cut(self, conn):
        self.dropped[conn.source] += 1
        self._close(conn, reset=True)

    def _reset(self, sock):
        # RST instead of FIN: no TIME_WAIT and no further packets for a connection we refuse
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
        except OSError:
            pass
        sock.close()

    def _close(self, conn, reset=False):
        try:
            self.selector.unregister(conn.sock)
        except (KeyError, ValueError):
            pass
        if reset:
            self._reset(conn.sock)
        conn.sock.close()
        self._forget(conn)

    def _unlist(self, conn):
        conns = self.conns.get(conn.source)
        if conns is not None and conn in conns:
            del conns[conn]
            if not conns:
                del self.conns[conn.source]

    def _forget(self, conn):
        if conn.state == CLOSED:
            return
        self._unlist(conn)
        conn.state = CLOSED
        self.total -= 1

    def _sweep(self, now):
        header_by = now - self.limits["header_timeout"]
        request_by = now - self.limits["request_timeout"]
        for conns in list(self.conns.values()):
            for conn in list(conns):
                if conn.accepted <= request_by or (
                    conn.state < BODY and conn.accepted <= header_by
                ):
                    log.debug(
                        "keyvault: connection from %s over its deadline, cut off", conn.peer[0]
                    )
                    self._close(conn)

    def _log_drops(self, now):
        if not self.dropped:
            return
        if self.drop_logged is not None and now - self.drop_logged < DROP_LOG_INTERVAL:
            return
        top, count = self.dropped.most_common(1)[0]
        log.warning(
            "keyvault: connection limits (%d per address, %d in all): dropped or cut %d "
            "connection(s) from %d source(s) since the last warning, most from %s (%d)",
            self.limits["max_per_address"],
            self.limits["max_connections"],
            sum(self.dropped.values()),
            len(self.dropped),
            top,
            count,
        )
        self.dropped = collections.Counter()
        self.drop_logged = now

    def _want(self, conn, events):
        if conn.events != events:
            conn.events = events
            self.selector.modify(conn.sock, events, conn)

    def _io(self, conn, mask):
        conn.active = time.monotonic()
        if conn.state == NEW:
            # wrapping detaches the plain socket object from its descriptor: register the
            # TLS socket in its place
            self.selector.unregister(conn.sock)
            conn.sock = self.context.wrap_socket(
                conn.sock, server_side=True, do_handshake_on_connect=False
            )
            self.selector.register(conn.sock, conn.events, conn)
            conn.state = HANDSHAKE
        try:
            if conn.state == HANDSHAKE:
                conn.sock.do_handshake()
                conn.state = HEADERS
            self._read(conn)
        except ssl.SSLWantReadError:
            self._want(conn, selectors.EVENT_READ)
        except ssl.SSLWantWriteError:
            self._want(conn, selectors.EVENT_WRITE)
        except (ssl.SSLError, OSError) as err:
            log.debug("keyvault: connection from %s dropped: %s", conn.peer[0], err)
            self._close(conn)

    def _read(self, conn):
        # SSLWant*Error ends the loop: nothing more to read for now
        while conn.state != QUEUED:
            data = conn.sock.recv(65536)
            if not data:
                self._close(conn)
                return
            if conn.state == DRAIN:
                conn.drain -= len(data)
                if conn.drain <= 0:
                    self._queue(conn)
                continue
            conn.buf += data
            if conn.state == HEADERS:
                self._headers(conn)
            if conn.state == BODY and len(conn.buf) - conn.body_at >= conn.need:
                del conn.buf[conn.body_at + conn.need :]
                self._queue(conn)

    def _headers(self, conn):
        end = _HEADER_END.search(conn.buf)
        if end is None:
            if len(conn.buf) > MAX_HEADER:
                # the handler sees an oversized request line or header block and answers it
                self._queue(conn)
            return
        conn.body_at = end.end()
        head = bytes(conn.buf[: conn.body_at])
        found = _CONTENT_LENGTH.search(head)
        try:
            length = int(found.group(1).strip()) if found else None
        except ValueError:
            length = None
        # every method's announced body is read before the answer (not only POST's): closing
        # on unread data would reset the connection and lose the answer with it
        if len(head) > MAX_HEADER or length is None or length < 0 or length > DRAIN_LIMIT:
            del conn.buf[conn.body_at :]
            self._queue(conn)  # the handler answers (411 / 413 / 431 / 405 / ...)
        elif length <= MAX_BODY:
            conn.need = length
            conn.state = BODY
        else:
            conn.drain = length - (len(conn.buf) - conn.body_at)
            del conn.buf[conn.body_at :]
            conn.state = DRAIN
            if conn.drain <= 0:
                self._queue(conn)

    def _queue(self, conn):
        """The request is complete (or will be answered with an error): hand it over."""
        try:
            self.selector.unregister(conn.sock)
        except (KeyError, ValueError):
            pass
        conn.state = QUEUED
        self._unlist(conn)
        with self.pending_cv:
            self.pending.setdefault(conn.source, collections.deque()).append(conn)
            self.pending_cv.notify()

    # ------------------------------------------------------------------ the workers
    def _next(self):
        """The next request, round-robin over sources; None when the server closes."""
        with self.pending_cv:
            while not self.pending and not self.closed:
                self.pending_cv.wait()
            if self.closed:
                return None
            source, requests = next(iter(self.pending.items()))
            conn = requests.popleft()
            if requests:
                self.pending.move_to_end(source)
            else:
                del self.pending[source]
            return conn

    def _work(self):
        while True:
            conn = self._next()
            if conn is None:
                return
            try:
                remaining = conn.accepted + self.limits["request_timeout"] - time.monotonic()
                if remaining <= 0:
                    data = _answer(503, {"error": "busy, try again"})
                else:
                    data = Handler(bytes(conn.buf), conn.peer, self).response()
                if data:
                    conn.sock.settimeout(max(0.5, remaining))
                    conn.sock.sendall(data)
            except Exception as err:  # pylint: disable=broad-except
                log.debug("keyvault: answer to %s not sent: %s", conn.peer[0], err)
            finally:
                conn.sock.close()
                self.finished.append(conn)
                self._wake()


def _answer(status, body):
    """A complete response for the statuses the workers send without a handler."""
    data = json.dumps(body).encode()
    reason = http.server.BaseHTTPRequestHandler.responses.get(status, ("",))[0]
    return (
        f"HTTP/1.1 {status} {reason}\r\nServer: saltext-keyvault\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(data)}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n"
    ).encode() + data


class Handler(http.server.BaseHTTPRequestHandler):
    """Parses one complete, already received request and writes its answer into a buffer
    (the stdlib's request-line and header parsing and error answers, without its socket)."""

    protocol_version = "HTTP/1.1"
    server_version = "saltext-keyvault"
    sys_version = ""

    def __init__(self, raw, client_address, server):  # pylint: disable=super-init-not-called
        self.rfile = io.BytesIO(raw)
        self.wfile = io.BytesIO()
        self.client_address = client_address
        self.server = server
        self.close_connection = True

    def response(self):
        """The bytes to send back (empty: close without an answer)."""
        self.handle_one_request()
        return self.wfile.getvalue()

    def log_message(self, format, *args):  # noqa: A002 - stdlib signature
        log.debug("keyvault: %s %s", self.client_address[0], format % args)

    def _send(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        # one request per connection: nothing to gain from keep-alive for one-shot
        # bootstraps, and the accept loop's deadlines are per connection
        self.send_header("Connection", "close")
        self.close_connection = True
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == "/v1/health":
            self._send(200, {"status": "ok"})
        elif self.path == "/v1/redeem":
            self._send(405, {"error": "method not allowed"})
        else:
            self._send(404, {"error": "not found"})

    def do_POST(self):
        if self.path != "/v1/redeem":
            status = 405 if self.path == "/v1/health" else 404
            self._send(
                status,
                {"error": "method not allowed" if status == 405 else "not found"},
            )
            return
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if ctype != "application/json":
            self._send(415, {"error": "Content-Type must be application/json"})
            return
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            self._send(411, {"error": "Content-Length required"})
            return
        if length < 0 or length > MAX_BODY:
            # the accept loop read and dropped such a body (up to DRAIN_LIMIT)
            self._send(413, {"error": f"body larger than {MAX_BODY} bytes"})
            return
        raw = self.rfile.read(length)
        try:
            request = json.loads(raw)
        except Exception:  # pylint: disable=broad-except
            # not only ValueError: 64 KiB of "[" is a RecursionError, and whatever else the
            # parser raises is still the client's bad body, never a dropped connection
            self._send(400, {"error": "body is not JSON"})
            return
        status, body = self.server.vault.redeem(request, self.client_address[0])
        self._send(status, body)

    def _not_allowed(self):
        self._send(405, {"error": "method not allowed"})

    do_PUT = do_DELETE = do_PATCH = do_HEAD = _not_allowed  # noqa: N815


def _wait_for(path, timeout=60):
    deadline = time.monotonic() + timeout
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.5)


def _raise_fd_limit(limits):
    """Room for every connection the limits allow, plus what the master process holds."""
    wanted = limits["max_connections"] + 256
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
        if soft < wanted:
            limits["max_connections"] = max(16, soft - 256)
            log.warning(
                "keyvault: open file limit %s: max_connections lowered to %d",
                soft,
                limits["max_connections"],
            )


def make_server(opts, address=None, port=None, **options):
    """Build the server (TLS files made if missing); ``start`` serves it forever.
    ``options`` override the engine's config entry (the limits in ``DEFAULT_LIMITS``)."""
    cfg = kv.settings(opts)
    if address:
        cfg["address"] = address
    if port:
        cfg["port"] = int(port)
    limits = engine_limits({**kv.engine_config(opts), **options})
    driver = opts.get("keys.cache_driver") or "localfs_key"
    if driver != "localfs_key":
        raise kv.KeyVaultError(
            f"keys.cache_driver is {driver!r}: the keyvault engine writes accepted keys into "
            "<pki_dir>/minions and needs the default localfs_key driver"
        )
    _wait_for(kv.paths(opts)["master_pem"])
    cert, key = kv.tls_files(opts, cfg)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    _raise_fd_limit(limits)
    vault = Vault(opts, cfg, EventBus(opts), limits)
    server = Server((cfg["address"], cfg["port"]), context, vault, limits)
    log.info(
        "keyvault: serving https://%s:%s/v1/redeem (certificate %s; %s)",
        cfg["address"],
        cfg["port"],
        kv.cert_finger_file(cert),
        ", ".join(f"{name} {value}" for name, value in limits.items()),
    )
    return server


def start(address=None, port=None, **options):
    """
    Run the KeyVault HTTPS endpoint until the master stops.

    address
        Address to listen on (default: the master's ``interface``).
    port
        TCP port (default 4510).
    header_timeout, request_timeout, max_connections, max_per_address, workers,
    reject_log_interval, reject_log_burst
        Connection and logging limits (defaults in ``DEFAULT_LIMITS``; README "KeyVault").

    CLI Example:

    .. code-block:: yaml

        # master config
        engines:
          - keyvault:
              port: 4510
              max_per_address: 8
    """
    try:
        server = make_server(__opts__, address, port, **options)
    except (kv.KeyVaultError, OSError) as err:
        log.critical("keyvault engine not started: %s", err)
        raise
    try:
        server.serve_forever(poll_interval=0.5)
    finally:
        server.server_close()
        server.vault.events.close()
