"""
KeyVault HTTPS endpoint, run inside salt-master: new machines redeem one-time tokens here.

Configure it in the master config (the threat model is the docstring of
``salt_ext/lib/keyvault.py``):

.. code-block:: yaml

    engines:
      - keyvault:
          address: 10.0.0.1     # default: the master's ``interface``
          port: 4510
    keyvault:
      max_ttl: 3600             # cap for keyvault.issue ttl=
      request_window: 10        # allowed |master clock - request timestamp|, seconds
      # tls_cert: /etc/salt/pki/master/keyvault/cert.pem   (generated when not set)
      # tls_key: /etc/salt/pki/master/keyvault/key.pem

Serves ``POST /v1/redeem`` (JSON, at most 64 KiB) and ``GET /v1/health`` over TLS only.
Every refusal of a redeem is one generic ``403 {"error": "rejected"}``; the reason goes to the
master log and the ``salt/keyvault/redeem/rejected`` event.
"""

import http.server
import json
import logging
import multiprocessing
import os
import queue
import socket
import ssl
import threading
import time

import salt.utils.event

from salt_ext.lib import keyvault as kv

log = logging.getLogger(__name__)

__virtualname__ = "keyvault"

MAX_BODY = 64 * 1024
DRAIN_LIMIT = 1024 * 1024
SOCKET_TIMEOUT = 10
# a whole connection (TLS handshake, headers, body, answer) must be done within this many
# seconds: SOCKET_TIMEOUT bounds each recv only, so a client trickling a byte at a time
# would otherwise keep its slot for ever
CONNECTION_DEADLINE = 15
REAPER_TICK = 0.25
# at most one "connections open, dropping" warning per this many seconds
DROP_LOG_INTERVAL = 10
# one thread per connection: cap them so a flood of idle connections cannot exhaust the
# master (every connection also ends after one request)
MAX_CONNECTIONS = 256
REJECTED = {"error": "rejected"}


def __virtual__():
    return __virtualname__


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

    def __init__(self, opts, cfg, events):
        self.opts = opts
        self.cfg = cfg
        self.events = events
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


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256
    allow_reuse_address = True

    def __init__(self, address, context, vault):
        self.context = context
        self.vault = vault
        self.slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self.deadlines = {}  # socket -> monotonic deadline; the reaper shuts late ones down
        self.deadlines_lock = threading.Lock()
        self.reaper_stop = threading.Event()
        self.dropped = 0
        self.drop_logged = None
        super().__init__(address, Handler)
        self.reaper = threading.Thread(target=self._reap, name="keyvault-reaper", daemon=True)
        self.reaper.start()

    def watch(self, sock):
        with self.deadlines_lock:
            self.deadlines[sock] = time.monotonic() + CONNECTION_DEADLINE

    def unwatch(self, sock):
        with self.deadlines_lock:
            self.deadlines.pop(sock, None)

    def _reap(self):
        while not self.reaper_stop.wait(REAPER_TICK):
            now = time.monotonic()
            with self.deadlines_lock:
                late = [sock for sock, deadline in self.deadlines.items() if deadline <= now]
                for sock in late:
                    del self.deadlines[sock]
            for sock in late:
                log.debug(
                    "keyvault: connection over its %ss deadline, cut off", CONNECTION_DEADLINE
                )
                try:
                    # the plain socket's shutdown: the handler thread's blocking read returns
                    # at once (the TLS object stays with that thread, which closes it)
                    socket.socket.shutdown(sock, socket.SHUT_RDWR)
                except OSError:
                    pass

    def server_close(self):
        self.reaper_stop.set()
        super().server_close()

    def _log_drop(self, peer):
        now = time.monotonic()
        self.dropped += 1
        if self.drop_logged is None or now - self.drop_logged >= DROP_LOG_INTERVAL:
            log.warning(
                "keyvault: %d connections open, dropped %d connection(s) (last from %s)",
                MAX_CONNECTIONS,
                self.dropped,
                peer,
            )
            self.dropped = 0
            self.drop_logged = now

    def process_request(self, request, client_address):
        if not self.slots.acquire(blocking=False):
            self._log_drop(client_address[0])
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except Exception:
            self.slots.release()
            raise

    def process_request_thread(self, request, client_address):
        # the deadline covers the TLS handshake, headers, body and answer
        self.watch(request)
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.unwatch(request)
            self.slots.release()

    def get_request(self):
        sock, addr = super().get_request()
        # the handshake runs in the handler thread, under the socket timeout: a slow or
        # plain-HTTP client never blocks the accept loop
        return self.context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), addr

    def handle_error(self, request, client_address):
        log.debug("keyvault: connection from %s dropped", client_address[0], exc_info=True)


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "saltext-keyvault"
    sys_version = ""
    timeout = SOCKET_TIMEOUT

    def setup(self):
        self.request.settimeout(SOCKET_TIMEOUT)
        self.request.do_handshake()
        super().setup()

    def log_message(self, format, *args):  # noqa: A002 - stdlib signature
        log.debug("keyvault: %s %s", self.client_address[0], format % args)

    def _send(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        # one request per connection: nothing to gain from keep-alive for one-shot
        # bootstraps, and a connection's thread is bounded by one request
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
            # read and drop a body up to DRAIN_LIMIT, so the client sees the 413 and not
            # a reset from closing on unread data; larger bodies are simply cut off
            remaining = length if length <= DRAIN_LIMIT else 0
            while remaining > 0:
                chunk = self.rfile.read(min(65536, remaining))
                if not chunk:
                    break
                remaining -= len(chunk)
            self._send(413, {"error": f"body larger than {MAX_BODY} bytes"})
            return
        raw = self.rfile.read(length)
        try:
            request = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
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


def make_server(opts, address=None, port=None):
    """Build the server (TLS files made if missing); ``start`` serves it forever."""
    cfg = kv.settings(opts)
    if address:
        cfg["address"] = address
    if port:
        cfg["port"] = int(port)
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
    vault = Vault(opts, cfg, EventBus(opts))
    server = Server((cfg["address"], cfg["port"]), context, vault)
    log.info(
        "keyvault: serving https://%s:%s/v1/redeem (certificate %s)",
        cfg["address"],
        cfg["port"],
        kv.cert_finger_file(cert),
    )
    return server


def start(address=None, port=None, **_ignored):
    """
    Run the KeyVault HTTPS endpoint until the master stops.

    address
        Address to listen on (default: the master's ``interface``).
    port
        TCP port (default 4510).

    CLI Example:

    .. code-block:: yaml

        # master config
        engines:
          - keyvault:
              port: 4510
    """
    try:
        server = make_server(__opts__, address, port)
    except (kv.KeyVaultError, OSError) as err:
        log.critical("keyvault engine not started: %s", err)
        raise
    try:
        server.serve_forever(poll_interval=0.5)
    finally:
        server.server_close()
        server.vault.events.close()
