"""tenantfpm against PHP-FPM on this machine, side by side in one run.

    make bench          # the full run: bench/RESULTS.md, bench/results.json, bench/comparison.png
    make bench-smoke    # seconds: every scenario once, tiny, into a temporary directory

Every measurement alternates FPM and tenantfpm (which goes first alternates
too), and the report shows medians, min-max and the ratio tenantfpm / FPM.
Nothing in the report is typed in: it is written from this run's numbers.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import importlib.metadata
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import wordpress
import wrk
import wsgi
from report import write_report
from stack import WSGI_USER, Stack, rss_kb, tree_pss_kb
from wrk import summary

from tenantfpm import procfs
from tenantfpm.cgroups import favor
from tenantfpm.wire import fastcgi

SIDES = ("fpm", "tenantfpm")
ADD_CONCURRENCY = 8  # tenants added (and removed) at once in the manager scenario
ADD_ALONE = 10  # of them first added one at a time, each timed to its first response
COLD_SPACING_S = 1.0  # before each cold request of manager(): spaced_cold()
# cold requests per set in manager(): a zygote's PHP start spreads 10-24 ms here
# (docs/performance.md), so a median of 5 moved by several ms from run to run
COLD_N = 9


def log(msg: str) -> None:
    print(msg, flush=True)


def get(url: str, timeout: float = 30) -> tuple[int, float]:
    t = time.perf_counter()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            r.read()
            code = r.status
    except urllib.error.HTTPError as e:
        code = e.code
    return code, (time.perf_counter() - t) * 1000


# --- scenario 1: steady throughput and latency ---------------------------------


def steady(st: Stack, cfg: dict) -> dict:
    """Each page on the static pools: workers that live for ever (max_requests 0), then
    workers recycled every 500 requests on both sides (the leak containment a host wants)."""
    out: dict = {}
    for pool, suffix in (("static", ""), ("recycle", " (max_requests 500)")):
        for page in ("hello.php", "cpu.php", "include.php"):
            key = page + suffix
            log(f"1. steady load on {key}: {cfg['rounds']} rounds x {cfg['seconds']}s per side")
            out[key] = compare(st, pool, page, cfg)
    return out


def steady_fpm_grouped(st: Stack, cfg: dict) -> dict:
    """The same with FPM's static workers in a pair of cgroups like a tenant's
    (Stack.fpm_grouped): what per-pool CPU isolation costs FPM, and where tenantfpm
    stands against FPM given the same isolation."""
    out: dict = {}
    with st.fpm_grouped("static") as kids:
        log(f"1b. FPM's {len(kids)} static workers in a cgroup pair like a tenant's")
        for page in ("hello.php", "include.php"):
            log(f"1b. steady load on {page}: {cfg['rounds']} rounds x {cfg['seconds']}s per side")
            out[page] = compare(st, "static", page, cfg)
    return out


def compare(st: Stack, pool: str, page: str, cfg: dict) -> dict:
    """wrk on `page` of `pool`, FPM and tenantfpm alternating; the master's CPU with it."""
    for side in SIDES:  # warm up opcache and the workers
        wrk.run(st.url(side, pool, page), 1, cfg["connections"])
    runs: dict[str, list[wrk.WrkResult]] = {s: [] for s in SIDES}
    cpu: list[float] = []
    for r in range(cfg["rounds"]):
        for side in (SIDES if r % 2 == 0 else SIDES[::-1]):
            before = master_cpu(st) if side == "tenantfpm" else 0.0
            res = wrk.run(st.url(side, pool, page), cfg["seconds"], cfg["connections"])
            if side == "tenantfpm" and res.requests:
                cpu.append((master_cpu(st) - before) / res.requests * 100_000)
            runs[side].append(res)
    out: dict = {side: wrk.summarize(rs) for side, rs in runs.items()}
    out["master_cpu_s_per_100k"] = summary(cpu) if cpu else None
    r_fpm, r_t = out["fpm"], out["tenantfpm"]
    log(f"   rps {r_fpm['rps']['median']:.0f} vs {r_t['rps']['median']:.0f}, "
        f"p99 {r_fpm['p99_ms']['median']:.2f} vs {r_t['p99_ms']['median']:.2f} ms")
    return out


def master_cpu(st: Stack) -> float:
    assert st.master is not None
    sample = procfs.sample(st.master.pid)
    if sample is None:
        raise RuntimeError("the tenantfpm master is gone")
    return sample.cpu_seconds


# --- scenario 2: ondemand cold start ---------------------------------------


def workers_of(st: Stack, side: str, pool: str) -> int:
    if side == "fpm":
        return len(st.fpm_children(pool))
    return st.status(pool)["total_processes"]


def wait_zero(st: Stack, side: str, pool: str, timeout: float = 30) -> None:
    deadline = time.time() + timeout
    while workers_of(st, side, pool) and time.time() < deadline:
        time.sleep(0.1)
    if workers_of(st, side, pool):
        raise RuntimeError(f"{side} {pool} did not get back to zero workers")


def cold_start(st: Stack, cfg: dict) -> dict:
    variants = [("fpm", "ondemand"), ("tenantfpm", "ondemand"),
                ("tenantfpm", "ondemand-nosandbox"), ("tenantfpm", "ondemand-cold")]
    log(f"2. ondemand cold start: {cfg['cold']} first requests and bursts of "
        f"{st.workers} per variant")
    first: dict[str, list[float]] = {f"{s}:{p}": [] for s, p in variants}
    burst: dict[str, list[float]] = {f"{s}:{p}": [] for s, p in variants}
    for i in range(cfg["cold"]):
        for side, pool in (variants if i % 2 == 0 else variants[::-1]):
            key = f"{side}:{pool}"
            wait_zero(st, side, pool)
            if pool == "ondemand-cold":  # no zygote either: one starts for this request
                st.wait_for_no_zygote(pool)
            code, ms = get(st.url(side, pool, "hello.php"))
            assert code == 200, (key, code)
            first[key].append(ms)
            wait_zero(st, side, pool)
            with concurrent.futures.ThreadPoolExecutor(st.workers) as ex:
                got = list(ex.map(lambda _, s=side, p=pool: get(st.url(s, p, "sleep.php?ms=50")),
                                  range(st.workers)))
            assert all(c == 200 for c, _ in got), (key, got)
            burst[key].append(max(ms for _, ms in got))
    out = {k: {"first_ms": summary(first[k]), "burst_max_ms": summary(burst[k])} for k in first}
    # what keeping PHP started costs an idle ondemand tenant: its zygote's memory, and
    # its spare worker's (forked ahead of the next order)
    wait_zero(st, "tenantfpm", "ondemand")
    zygote = st.status("ondemand")["zygote_pid"]
    out["tenantfpm:ondemand"]["idle_zygote_pss_kb"] = tree_pss_kb(zygote) if zygote else None
    log(f"   an idle ondemand tenant's zygote and its spare: PSS "
        f"{out['tenantfpm:ondemand']['idle_zygote_pss_kb']} kB")
    for k, v in out.items():
        log(f"   {k}: first {v['first_ms']['median']:.1f} ms, burst of {st.workers} "
            f"{v['burst_max_ms']['median']:.1f} ms")
    return out


# --- scenario 3: dynamic scale-up ------------------------------------------


def scale_up(st: Stack, cfg: dict) -> dict:
    log(f"3. dynamic scale-up: a step to {st.workers} concurrent slow requests")
    out = {}
    for side in SIDES:
        time.sleep(2)  # back to the idle spare count
        stop = threading.Event()
        errors: list[int] = []

        def client(side: str = side, stop: threading.Event = stop,
                   errors: list[int] = errors) -> None:
            while not stop.is_set():
                code, _ = get(st.url(side, "dynamic", "sleep.php?ms=200"))
                if code != 200:
                    errors.append(code)

        t0 = time.perf_counter()
        threads = [threading.Thread(target=client) for _ in range(st.workers)]
        for t in threads:
            t.start()
        reached = None
        while time.perf_counter() - t0 < 15:
            if busy(st, side, "dynamic") >= st.workers:
                reached = (time.perf_counter() - t0) * 1000
                break
            time.sleep(0.01)
        stop.set()
        for t in threads:
            t.join()
        out[side] = {"to_max_children_ms": reached, "failed": len(errors)}
        log(f"   {side}: all {st.workers} busy after "
            f"{'-' if reached is None else f'{reached:.0f} ms'}, {len(errors)} failed")
    return out


def busy(st: Stack, side: str, pool: str) -> int:
    if side == "tenantfpm":
        return st.status(pool)["active_processes"]
    n = 0
    for pid in st.fpm_children(pool):
        try:
            call = Path(f"/proc/{pid}/syscall").read_text().split()[0]
        except OSError:
            continue
        n += call not in ("43", "288", "232", "7")  # not waiting in accept/epoll/poll
    return n


# --- scenario 4: reload under load ------------------------------------------


def reloads(st: Stack, cfg: dict) -> dict:
    n, seconds = cfg["reloads"], cfg["reload_seconds"]
    log(f"4. {n} reloads during {seconds}s of load")
    out = {}
    variants = [("fpm", "default"), ("fpm", "tuned"), ("tenantfpm", "default")]
    for side, how in variants:
        if side == "fpm":
            st.set_fpm_control_timeout(0 if how == "default" else 10)
        result: list[wrk.WrkResult] = []
        t = threading.Thread(target=lambda s=side, into=result: into.append(
            wrk.run(st.url(s, "static", "sleep.php?ms=20"), seconds, cfg["connections"])))
        t.start()
        time.sleep(seconds / (n + 2))
        for _ in range(n):
            st.reload_fpm() if side == "fpm" else st.reload_tenantfpm("static")
            time.sleep(seconds / (n + 2))
        t.join()
        r = result[0]
        key = f"{side}:{how}"
        out[key] = {"requests": r.requests, "failed": r.errors}
        log(f"   {key}: {r.errors} failed of {r.requests}")
    st.set_fpm_control_timeout(0)
    return out


# --- scenario 5: the manager's own cost --------------------------------------


def manager(st: Stack, steady_result: dict, cfg: dict) -> dict:
    log(f"5. manager overhead: master RSS with 1 (this run) and {cfg['tenants']} tenants")
    assert st.master is not None
    rss_now = rss_kb(st.master.pid)
    fpm_rss = rss_kb(int((st.base / "fpm.pid").read_text()))
    cpu = steady_result["hello.php"]["master_cpu_s_per_100k"]
    window = cfg["idle_window"]
    # medians of COLD_N: one cold request is at the mercy of the page cache and the scheduler
    cold_one_each, cold_warm_one = spaced_cold(st, ["ondemand-cold"] * COLD_N)
    cold_one = statistics.median(cold_one_each)
    idle_one = idle_master_cpu(st, window)
    added: list[float] = []
    first: list[float] = []
    warm_adds: list[bool] = []
    users: list[str] = []
    n = cfg["tenants"]
    serial = min(ADD_ALONE, n)

    def add(i: int) -> Path:
        site = st.base / f"many{i}.toml"
        root = st.www / f"many{i}"  # a root each: no two tenants may share one
        root.mkdir()
        root.chmod(0o755)
        (root / "hello.php").write_text("<?php echo 'hello';")
        site.write_text(f'name = "many{i}"\nuser = "{users[i]}"\nroot = "{root}"\n'
                        '[pm]\nmode = "ondemand"\nmax_children = 2\n'
                        'process_idle_timeout = "2s"\nzygote_idle_timeout = "2s"\n')
        return site

    def add_among_many(i: int) -> None:
        site = add(i)
        t = time.perf_counter()
        st.client.call("POST", "/v1/tenants", {"path": str(site), "replace": False})
        added.append((time.perf_counter() - t) * 1000)
        if (len(added) + serial) % 1000 == 0:
            log(f"   {len(added) + serial} of {n} tenants added")

    def add_alone(i: int) -> float:
        """One add on a quiet master, timed until the tenant's first response (the
        request goes straight to its socket)."""
        site = add(i)
        time.sleep(0.2)  # the previous one's probe worker has settled
        t = time.perf_counter()
        st.client.call("POST", "/v1/tenants", {"path": str(site), "replace": False})
        hello_fastcgi(st, f"many{i}")
        took = (time.perf_counter() - t) * 1000
        warm_adds.append(warm_started(st, f"many{i}"))
        return took

    try:
        for i in range(n):
            u = f"tfpmb{i:05d}"
            # ordinary users sharing one group (a host has far fewer system ids than this),
            # without subordinate ids: /etc/subuid's range runs out after about 9,000 users
            subprocess.run(["useradd", "--no-create-home", "--no-user-group", "--gid", "nogroup",
                            "-K", "SUB_UID_COUNT=0", "-K", "SUB_GID_COUNT=0",
                            "--shell", "/usr/sbin/nologin", u], check=True)
            users.append(u)
            if (i + 1) % 2000 == 0:
                log(f"   {i + 1} of {n} users made")
        first = [add_alone(i) for i in range(serial)]
        log(f"   add to first response, one at a time: median "
            f"{statistics.median(first):.1f} ms of {serial}")
        # as a control panel adds them: a few at once (each add waits for its probe worker)
        with concurrent.futures.ThreadPoolExecutor(ADD_CONCURRENCY) as ex:
            list(ex.map(add_among_many, range(serial, n)))
        time.sleep(cfg["settle"])  # the probe workers and their zygotes time out (2 s each)
        rss_many = rss_kb(st.master.pid)
        idle_many = idle_master_cpu(st, window)
        cold_many_each, cold_warm = spaced_cold(st, [f"many{i}" for i in range(min(COLD_N, n))])
        cold_many = statistics.median(cold_many_each)
    finally:
        log(f"   removing the {len(users)} tenants and their users")

        def remove(i: int) -> None:
            with contextlib.suppress(Exception):  # cleanup goes on
                st.client.call("DELETE", f"/v1/tenants/many{i}")

        with concurrent.futures.ThreadPoolExecutor(ADD_CONCURRENCY) as ex:
            list(ex.map(remove, range(len(users))))
        for i in range(0, len(users), 500):  # one /proc scan per 500 users, not per user
            subprocess.run(["pkill", "-KILL", "-u", ",".join(users[i:i + 500])], check=False)
        for u in users:
            subprocess.run(["userdel", u], check=False)
    fpm_many = st.fpm_with_pools(cfg["tenants"])
    log(f"   php-fpm master with {cfg['tenants']} idle ondemand pools: {fpm_many} kB")
    out = {"master_rss_kb_4_tenants": rss_now, "fpm_master_rss_kb_3_pools": fpm_rss,
           "fpm_master_rss_kb_many_pools": fpm_many,
           f"master_rss_kb_{cfg['tenants'] + 4}_tenants": rss_many,
           "add_ms": summary(added) if added else None,
           "add_to_first_response_ms": summary(first) if first else None,
           "add_from_warm_php": sum(warm_adds), "add_alone_n": len(first),
           "add_concurrency": ADD_CONCURRENCY,
           "master_cpu_s_per_100k_hello": cpu,
           "idle_master_cpu_percent_4_tenants": idle_one,
           f"idle_master_cpu_percent_{cfg['tenants'] + 4}_tenants": idle_many,
           "cold_request_ms_4_tenants": cold_one,
           f"cold_request_ms_{cfg['tenants'] + 4}_tenants": cold_many,
           "cold_from_warm_php_4_tenants": [cold_warm_one, len(cold_one_each)],
           f"cold_from_warm_php_{cfg['tenants'] + 4}_tenants": [cold_warm, len(cold_many_each)]}
    log(f"   master RSS {rss_now} kB -> {rss_many} kB with {cfg['tenants']} more tenants"
        + (f"; add median {out['add_ms']['median']:.0f} ms, {ADD_CONCURRENCY} at once"
           if added else ""))
    log(f"   idle master CPU {idle_one:.2f} % -> {idle_many:.2f} % of a core; a cold request "
        f"(no worker, no zygote) {cold_one:.1f} ms -> {cold_many:.1f} ms; from the warm PHP: "
        f"{cold_warm_one} of {len(cold_one_each)}, {cold_warm} of {len(cold_many_each)}")
    return out


def idle_master_cpu(st: Stack, seconds: float) -> float:
    """The master's CPU while no tenant has a request, in % of one core."""
    before = master_cpu(st)
    time.sleep(seconds)
    return (master_cpu(st) - before) / seconds * 100


def spaced_cold(st: Stack, pools: list[str]) -> tuple[list[float], int]:
    """A cold request to each pool in turn, COLD_SPACING_S apart, in ms; and how many of
    their zygotes came from the warm PHP. Spaced, each finds the warm PHP the one before
    took replaced (it takes about 30 ms); back to back, every other one started PHP
    itself (33-54 ms against 15-29 ms): a burst's figure, not the master's scaling."""
    took, warm = [], 0
    for pool in pools:
        time.sleep(COLD_SPACING_S)
        took.append(cold_fastcgi(st, pool))
        warm += warm_started(st, pool)
    return took, warm


def cold_fastcgi(st: Stack, pool: str) -> float:
    """One request to an ondemand tenant with no worker and no zygote left, straight to its
    socket (no web server in between), in ms: the master wakes, a zygote starts (from the
    warm PHP when one is ready), forks."""
    deadline = time.time() + 60
    while time.time() < deadline:
        s = st.status(pool)
        if s["total_processes"] == 0 and s["zygote_pid"] is None:
            break
        time.sleep(0.1)
    t = time.perf_counter()
    hello_fastcgi(st, pool)
    return (time.perf_counter() - t) * 1000


def warm_started(st: Stack, pool: str) -> bool:
    """Whether the tenant's latest zygote came from the master's warm PHP (its log says)."""
    log = st.base / "log" / pool / "error.log"
    lines = [ln for ln in log.read_text().splitlines() if " started (generation " in ln]
    return bool(lines) and "from a warm PHP" in lines[-1]


def hello_fastcgi(st: Stack, pool: str) -> None:
    """hello.php straight to the tenant's socket (no web server in between), checked."""
    root = str(st.docroot(pool))  # many{i} live under the same www directory
    r = fastcgi.request(str(st.base / "run" / f"{pool}.sock"),
                        fastcgi.cgi_params(root, "/hello.php"), timeout=30)
    assert r.complete and r.status == 200, (pool, r.stdout[:200])


# --- scenario 6: memory per busy worker ---------------------------------------


def memory_per_worker(st: Stack, cfg: dict) -> dict:
    log("6. memory per worker (PSS) after include-heavy load, without and with "
        "opcache.file_cache")
    out: dict = {}
    for file_cache in (False, True):
        if file_cache:
            st.set_file_cache(True)
        key = "file_cache" if file_cache else "shm_only"
        out[key] = {}
        for side in SIDES:
            wrk.run(st.url(side, "static", "include.php"), cfg["seconds"], cfg["connections"])
            pss = st.workers_pss(side, "static")
            if file_cache:  # the setting took: the workers wrote their cache files
                cache = st.docroot("static") / (".opcache-fpm" if side == "fpm"
                                                 else ".opcache-tfpm")
                if not any(p.is_file() for p in cache.rglob("*")):
                    raise RuntimeError(f"{side}: opcache.file_cache left {cache} empty")
            out[key][side] = summary([float(x) for x in pss])
            log(f"   {key} {side}: median PSS {out[key][side]['median']:.0f} kB over "
                f"{len(pss)} workers")
    st.set_file_cache(False)
    return out


# --- main ------------------------------------------------------------------


def _in_repo(path: str) -> str:
    """A path inside the checkout as the reader's checkout would have it."""
    repo = Path(__file__).resolve().parent.parent
    p = Path(path)
    return str(p.relative_to(repo)) if p.is_relative_to(repo) else path


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")),
               platform.processor())
    mem = Path("/proc/meminfo").read_text().splitlines()[0].split()[1]
    php = subprocess.run(["php-cgi8.2", "-v"], capture_output=True, text=True).stdout.split()[1]
    nginx = subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr.strip()
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_kb": int(mem),
            "kernel": platform.release(), "php": php, "nginx": nginx,
            "python": platform.python_version(), "python_executable": _in_repo(sys.executable),
            "uwsgi": subprocess.run([str(Path(sys.executable).with_name("uwsgi")), "--version"],
                                    capture_output=True, text=True).stdout.strip(),
            "flup": importlib.metadata.version("flup"),
            "favordynmods_before": (m := favor.current()) is not None and m.favored}


def _stopped(signum: int, _frame: object) -> None:
    raise SystemExit(f"stopped by signal {signum}")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--smoke", action="store_true", help="every scenario once, tiny")
    ap.add_argument("--out", required=True, help="where RESULTS.md, results.json and the PNG go")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root (the tenants' users, namespaces and cgroups need it)")
    # a bench stopped with kill takes down what it started, as ^C does: the `with` blocks'
    # exits end php-fpm, nginx, MariaDB and the master, and remove the users and cgroups
    signal.signal(signal.SIGTERM, _stopped)
    cfg = ({"rounds": 1, "seconds": 1, "connections": 4, "cold": 1, "reloads": 2,
            "reload_seconds": 3, "tenants": 3, "workers": 2, "settle": 5,
            "idle_window": 1, "wp_rounds": 1, "wp_seconds": 1} if args.smoke else
           {"rounds": 5, "seconds": 10, "connections": 8, "cold": 5, "reloads": 20,
            "reload_seconds": 12, "tenants": 10000, "workers": 4, "settle": 12,
            "idle_window": 10, "wp_rounds": 8, "wp_seconds": 8})
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    results: dict = {"config": cfg, "machine": machine(),
                     "command": "make bench-smoke" if args.smoke else "make bench"}
    log(f">> setting up php-fpm, tenantfpm and nginx ({cfg['workers']} workers per pool)")
    with Stack(cfg["workers"], log) as st:
        results["steady"] = steady(st, cfg)
        results["steady_fpm_grouped"] = steady_fpm_grouped(st, cfg)
        results["cold_start"] = cold_start(st, cfg)
        results["scale_up"] = scale_up(st, cfg)
        results["reloads"] = reloads(st, cfg)
        results["memory"] = memory_per_worker(st, cfg)
        results["wsgi"] = wsgi.run(st, cfg, WSGI_USER, log)
        results["wordpress"] = wordpress.run(st, cfg, log)
        results["manager"] = manager(st, results["steady"], cfg)
    results["duration_s"] = round(time.time() - started)
    (out / "results.json").write_text(json.dumps(results, indent=2, sort_keys=True))
    write_report(results, out)
    log(f">> done in {results['duration_s']} s: {out}/RESULTS.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
