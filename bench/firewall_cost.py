"""What the tenant firewall (tenantfpm/netguard.py) costs a connection over loopback.

Every TCP connection a web server opens to a FastCGI listener passes the
firewall's output rule once (its SYN); the rest of the connection does not
match. This times connect()+accept()+close() to a loopback listener, in
alternating rounds without and with the table, the table holding `--tenants`
uids and ports (as a host with that many TCP tenants would), connecting as root
(like nginx, a uid not in the set) to a port in the set. Run as root:
`.venv/bin/python bench/firewall_cost.py`.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import threading
import time

from tenantfpm.netguard import NetGuard


def serve(listener: socket.socket) -> None:
    while True:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        conn.close()


def connects_per_second(port: int, n: int) -> float:
    t = time.perf_counter()
    for _ in range(n):
        with socket.create_connection(("127.0.0.1", port)):
            pass
    return n / (time.perf_counter() - t)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=5000, help="connections per round")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--tenants", type=int, default=1000)
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root (nftables)")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4096)
    port = listener.getsockname()[1]
    threading.Thread(target=serve, args=(listener,), daemon=True).start()
    guard = NetGuard("tenantfpm-bench-firewall")
    uids = set(range(200000, 200000 + args.tenants))
    ports = set(range(40000, 40000 + args.tenants - 1)) | {port}  # ours protected too
    rates: dict[str, list[float]] = {"without": [], "with": []}
    try:
        connects_per_second(port, 500)  # warm up
        for _ in range(args.rounds):
            guard.remove()
            rates["without"].append(connects_per_second(port, args.n))
            guard.update(uids, ports)
            rates["with"].append(connects_per_second(port, args.n))
    finally:
        guard.remove()
        listener.close()
    without, with_ = (statistics.median(rates[k]) for k in ("without", "with"))
    print(f"loopback connect+close by a non-tenant uid, {args.n} x {args.rounds} rounds, "
          f"table with {args.tenants} uids and ports:")
    print(f"  without the table: {without:8.0f}/s   with it: {with_:8.0f}/s   "
          f"ratio {with_ / without:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
