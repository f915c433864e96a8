"""KeyVault redeems over HTTPS against the real engine inside a real salt-master.

64 concurrent clients, each request on a fresh TLS connection (what salt-keyvault-bootstrap
does). Every token is raced by ``RACERS`` clients at once (adjacent in the work queue, each
with its own nonce, all valid): exactly one may win, any second success is a double spend.
Targets: >= 200 redeems/s, p99 < 100 ms, 0 double spends. Two loads: closed loop (64
clients, each sends again as soon as it has its answer: throughput, and latency that is
mostly queueing, ~64 / rate by Little's law) and open loop at 200 requests/s offered on a
fixed schedule (latency counted from the scheduled start, so queueing is not hidden).

Tokens are issued through the same store the runner uses (``kv.open_store`` on the master's
opts), not one ``salt-run`` process per token; the engine only ever talks to the bed's
bridge address.
"""

import collections
import concurrent.futures
import http.client
import json
import queue
import ssl
import statistics
import threading
import time

from salt_ext.lib import keyvault as kv
from tests.testbed import SandboxCluster

CLIENTS = 64
TOKENS = 300
RACERS = 4
ROUNDS = 3
PORT = 4510


def _context():
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _one_round(bed, opts, round_no, public_key, rate=None):
    """Closed loop (``rate=None``: 64 clients, each sends its next request as soon as the
    last one is answered) or open loop (requests start on a fixed schedule of ``rate`` per
    second, latency counted from the scheduled start so queueing is never hidden)."""
    store = kv.open_store(opts)
    tokens = [store.issue(f"bench-{round_no}-{i}", ttl=600)[1] for i in range(TOKENS)]
    work = queue.Queue()
    for index, token in enumerate(tokens):
        for _ in range(RACERS):
            work.put((index, token))
    begin = time.perf_counter() + 0.2
    scheduled = iter(begin + n / rate for n in range(work.qsize())) if rate else None
    ctx = _context()
    results = []
    lock = threading.Lock()

    def client():
        while True:
            try:
                index, token = work.get_nowait()
            except queue.Empty:
                return
            if scheduled is not None:
                with lock:
                    started = next(scheduled)
                time.sleep(max(0.0, started - time.perf_counter()))
            body = json.dumps(
                kv.build_request(token, f"bench-{round_no}-{index}", public_key)
            ).encode()
            if scheduled is None:
                started = time.perf_counter()
            conn = http.client.HTTPSConnection(bed.master_ip, PORT, context=ctx, timeout=30)
            try:
                conn.request("POST", "/v1/redeem", body, {"Content-Type": "application/json"})
                resp = conn.getresponse()
                resp.read()
                status = resp.status
            except OSError as err:
                status = f"error {type(err).__name__}"
            finally:
                conn.close()
            with lock:
                results.append((index, status, time.perf_counter() - started))

    with concurrent.futures.ThreadPoolExecutor(CLIENTS) as pool:
        for future in [pool.submit(client) for _ in range(CLIENTS)]:
            future.result()
    elapsed = time.perf_counter() - begin
    wins = collections.Counter(index for index, status, _ in results if status == 200)
    latencies = sorted(lat for _, _, lat in results)
    errors = [s for _, s, _ in results if s not in (200, 403)]
    return {
        "requests": len(results),
        "rate": len(results) / elapsed,
        "p50": latencies[len(latencies) // 2] * 1000,
        "p99": latencies[int(len(latencies) * 0.99) - 1] * 1000,
        "double_spends": sum(n - 1 for n in wins.values() if n > 1),
        "unredeemed": TOKENS - len(wins),
        "errors": len(errors),
    }


def run():
    bed = SandboxCluster(
        name="sxkb",
        nodes=(),
        subnet="10.82.1",
        auto_accept=False,
        extra_master_config={"engines": [{"keyvault": {"port": PORT}}]},
    )
    try:
        bed.up(start_minions=False)
        import salt.config  # noqa: PLC0415

        opts = salt.config.master_config(str(bed.master_conf_dir / "master"))
        deadline = time.monotonic() + 60
        while True:
            try:
                conn = http.client.HTTPSConnection(bed.master_ip, PORT, context=_context())
                conn.request("GET", "/v1/health")
                if conn.getresponse().status == 200:
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)
        public_key = kv.generate_minion_keypair(2048)[1]
        print(
            f"\n[keyvault] {CLIENTS} concurrent HTTPS clients, {TOKENS} tokens x {RACERS} "
            f"racing redeems per round, {ROUNDS} rounds (engine in salt-master on "
            f"{bed.master_ip})"
        )
        summary = {}
        for label, rate in (("closed loop", None), ("open loop 200/s", 200)):
            print(f"  {label}:")
            rounds = []
            for round_no in range(ROUNDS):
                figures = _one_round(bed, opts, f"{rate}-{round_no}", public_key, rate)
                rounds.append(figures)
                print(
                    f"    round {round_no + 1}: {figures['requests']} requests, "
                    f"{figures['rate']:6.1f} req/s, p50 {figures['p50']:5.1f} ms, "
                    f"p99 {figures['p99']:6.1f} ms, double spends {figures['double_spends']}, "
                    f"unredeemed tokens {figures['unredeemed']}, transport errors "
                    f"{figures['errors']}"
                )
            med = {k: statistics.median(r[k] for r in rounds) for k in ("rate", "p50", "p99")}
            spends = sum(r["double_spends"] for r in rounds)
            print(
                f"    median: {med['rate']:.1f} redeems/s"
                + (" (target >= 200)" if rate is None else f" (offered {rate}/s)")
                + f", p50 {med['p50']:.1f} ms, p99 {med['p99']:.1f} ms (target < 100), "
                f"double spends {spends} (target 0)"
            )
            if rate is None:
                print(
                    f"    (closed loop: latency ~ {CLIENTS} in flight / rate, Little's law; "
                    f"p99 < 100 ms would need > {CLIENTS * 10} redeems/s)"
                )
            summary[label] = {"rounds": rounds, "median": med, "double_spends": spends}
        return summary
    finally:
        bed.down(keep_files=False)


if __name__ == "__main__":
    run()
