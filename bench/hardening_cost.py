"""What two of issue 36's answers cost hello.php, side by side with PHP-FPM (the static
pool, 4 workers, nginx in front, wrk with 8 connections, alternating rounds):

- `--what access`: access.log off, then on. FPM's workers write the file themselves;
  tenantfpm's write their lines to a pipe the master reads and writes to access.log
  under the tenant's rate limit and size cap (no tenant process holds the root-owned
  log).
- `--what tcp`: both sides on unix sockets, then both on TCP on 127.0.0.1 (which
  carries no descriptors: what docs/security.md advises for tenants whose users have
  a shell, so that none can hand its web server a socket whose close blocks).

    .venv/bin/python bench/hardening_cost.py --what access [--rounds 6] [--seconds 5]

`--second-only` measures access.log on (or TCP) alone: bench/version_pairs.sh runs it
for two versions in alternation to give the change's cost as a mean over many runs.

Prints each side's median req/s in both settings, tenantfpm/FPM for each, and what the
second setting costs each side. PYTHONPATH=<another checkout> measures that one's
tenantfpm instead."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import wrk
from stack import Stack

SETTINGS = {"access": ({"access_log": False}, {"access_log": True}),
            "tcp": ({"tcp": False}, {"tcp": True})}


def measure(options: dict[str, bool], rounds: int, seconds: float) -> dict[str, float]:
    got: dict[str, list[float]] = {"fpm": [], "tenantfpm": []}
    with Stack(4, log=lambda *a: None, **options) as st:
        for side in got:  # warm both up
            wrk.run(st.url(side, "static", "hello.php"), 2, 8)
        for i in range(rounds):
            order = ("fpm", "tenantfpm") if i % 2 == 0 else ("tenantfpm", "fpm")
            for side in order:
                got[side].append(wrk.run(st.url(side, "static", "hello.php"), seconds, 8).rps)
    return {side: statistics.median(v) for side, v in got.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--what", choices=sorted(SETTINGS), required=True)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--second-only", action="store_true",
                    help="measure the second setting alone (comparing two versions in it)")
    args = ap.parse_args()
    if args.second_only:
        got = measure(SETTINGS[args.what][1], args.rounds, args.seconds)
        print(json.dumps({"what": args.what, "second": got,
                          "ratio_second": got["tenantfpm"] / got["fpm"]}, indent=2))
        return
    first, second = (measure(o, args.rounds, args.seconds) for o in SETTINGS[args.what])
    print(json.dumps({
        "what": args.what, "first": first, "second": second,
        "ratio_first": first["tenantfpm"] / first["fpm"],
        "ratio_second": second["tenantfpm"] / second["fpm"],
        "cost_fpm": 1 - second["fpm"] / first["fpm"],
        "cost_tenantfpm": 1 - second["tenantfpm"] / first["tenantfpm"],
    }, indent=2))


if __name__ == "__main__":
    main()
