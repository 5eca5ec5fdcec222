"""What access.log costs hello.php, side by side with PHP-FPM: FPM writes its file from
each worker; tenantfpm's workers write their lines to a pipe the master reads and writes
to access.log under the tenant's rate limit and size cap (issue 36: no tenant process
holds the root-owned log).

    .venv/bin/python bench/access_log_cost.py [--rounds 6] [--seconds 5]

Both sides: the static pool, 4 workers, nginx in front, wrk with 8 connections,
alternating rounds. Prints each side's median req/s with access.log off and on, the
ratio tenantfpm/FPM for each, and what turning access.log on costs each side. Run it
against another checkout's tenantfpm (PYTHONPATH=<that checkout>) to compare versions."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import wrk
from stack import Stack


def measure(access: bool, rounds: int, seconds: float) -> dict[str, float]:
    got: dict[str, list[float]] = {"fpm": [], "tenantfpm": []}
    with Stack(4, log=lambda *a: None, access_log=access) as st:
        for side in got:  # warm both up
            wrk.run(st.url(side, "static", "hello.php"), 2, 8)
        for i in range(rounds):
            order = ("fpm", "tenantfpm") if i % 2 == 0 else ("tenantfpm", "fpm")
            for side in order:
                got[side].append(wrk.run(st.url(side, "static", "hello.php"), seconds, 8).rps)
    return {side: statistics.median(v) for side, v in got.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--seconds", type=float, default=5.0)
    args = ap.parse_args()
    off = measure(False, args.rounds, args.seconds)
    on = measure(True, args.rounds, args.seconds)
    report = {
        "off": off, "on": on,
        "ratio_off": off["tenantfpm"] / off["fpm"],
        "ratio_on": on["tenantfpm"] / on["fpm"],
        "cost_fpm": 1 - on["fpm"] / off["fpm"],
        "cost_tenantfpm": 1 - on["tenantfpm"] / off["tenantfpm"],
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
