"""A connection flood against the KeyVault engine, for tests and bench/keyvault.py (stdlib
only, so it also runs as a script inside a test-bed node: ``python tests/flood.py ...``).

``count`` connections from ``source``, each re-opened as soon as the server cuts it: idle
(never a byte), or ``trickle``: the next byte of a real TLS ClientHello on every connection
every ``trickle`` seconds. As a script it prints ``ready`` once all connections were opened,
runs until its standard input closes (or ``--seconds``), then prints its counts as JSON.
"""

import argparse
import json
import selectors
import socket
import ssl
import sys
import threading
import time


def client_hello():
    """The first flight of a real TLS client."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing)
    try:
        tls.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


class Flood:
    """The flood in a thread (``with Flood(...) as flood:``); ``opened``/``cut`` count
    connections opened and connections the server closed or reset."""

    def __init__(self, host, port, source, count, trickle=None, limit=600):
        self.host, self.port, self.source, self.count = host, port, source, count
        self.trickle, self.limit = trickle, limit
        self.hello = client_hello() if trickle else b""
        self.opened = self.cut = self.failed = 0
        self.stop = threading.Event()
        self.full = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        self.full.wait(30)
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(30)

    def _open(self, sel, socks):
        sock = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET)
        try:
            if self.source:
                sock.bind((self.source, 0))
            sock.setblocking(False)
            sock.connect_ex((self.host, self.port))
        except OSError:
            sock.close()
            self.failed += 1
            return
        sel.register(sock, selectors.EVENT_READ)
        socks[sock] = 0
        self.opened += 1

    def run(self):
        """Flood until ``stop`` is set or ``limit`` seconds have passed."""
        sel = selectors.DefaultSelector()
        socks = {}  # socket -> bytes of the hello sent on it
        started = last_trickle = time.monotonic()
        try:
            while not self.stop.is_set() and time.monotonic() - started < self.limit:
                while len(socks) < self.count:
                    before = len(socks)
                    self._open(sel, socks)
                    if len(socks) == before:
                        time.sleep(0.01)  # out of ports or descriptors: back off a little
                        break
                if len(socks) >= self.count:
                    self.full.set()
                for key, _ in sel.select(0.05):
                    try:
                        data = key.fileobj.recv(4096)
                    except OSError:
                        data = b""
                    if not data:
                        sel.unregister(key.fileobj)
                        key.fileobj.close()
                        del socks[key.fileobj]
                        self.cut += 1
                if self.trickle and time.monotonic() - last_trickle >= self.trickle:
                    last_trickle = time.monotonic()
                    for sock, sent in list(socks.items()):
                        if sent < len(self.hello):
                            try:
                                sock.send(self.hello[sent : sent + 1])
                                socks[sock] = sent + 1
                            except OSError:
                                pass
        finally:
            self.full.set()
            for sock in socks:
                sock.close()
            sel.close()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--source", default="", help="address to connect from (default: any)")
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--trickle", type=float, default=None)
    parser.add_argument("--seconds", type=float, default=120, help="stop after this at most")
    args = parser.parse_args(argv)
    flood = Flood(args.host, args.port, args.source, args.count, args.trickle, args.seconds)
    with flood:
        print("ready", flush=True)
        # stdin closing is the stop signal: the caller never has to kill this process
        sys.stdin.read()
    print(json.dumps({"opened": flood.opened, "cut": flood.cut, "failed": flood.failed}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
