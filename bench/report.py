"""RESULTS.md and comparison.png, written from one run's results.json: no number typed in."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

TARGETS = {
    "throughput": "throughput ratio >= 1.00",
    "p99": "p99 ratio <= 1.05",
    "cold": "ondemand first request <= 3 ms (the zygote up)",
    "reload": "zero failed requests across reloads",
    "cpu": "master <= 3% of one core at full load",
    "rss": "10,000 tenants with master RSS <= 150 MB",
    "idle": "idle master <= 2% of a core with the many tenants",
    "add": "`add` of an ondemand tenant to its first response <= 50 ms",
    "cold_many": "a cold request with the many tenants within 1.2x of the one-tenant figure",
    "wp": "WordPress req/s >= 1.00x FPM's, and >= 0.95x with max_requests 50 on both",
    "wp_pss": "PSS per worker after WordPress <= 1.10x FPM's",
    "uwsgi": "WSGI req/s >= 0.7x uWSGI",
    "flup": "WSGI req/s >= 2x flup",
}


def _r(a: float, b: float) -> str:
    return f"{b / a:.2f}" if a else "-"


def _mm(d: dict, fmt: str = "{:.0f}") -> str:
    return f"{fmt.format(d['median'])} ({fmt.format(d['min'])}-{fmt.format(d['max'])})"


def _ok(good: bool) -> str:
    return "met" if good else "**missed**"


def _cold_n(mg: dict, n_many: int) -> str:
    """How many cold requests each set's median is of ([warm, n] in the results)."""
    many = mg.get(f"cold_from_warm_php_{n_many}_tenants")
    return str(many[1]) if many else "5"  # runs before the count was recorded sent 5


def _cold_warm(mg: dict, n_many: int) -> str:
    """How many of those cold starts came from the warm PHP, where the run counted it."""
    one = mg.get("cold_from_warm_php_4_tenants")
    many = mg.get(f"cold_from_warm_php_{n_many}_tenants")
    if one is None or many is None:
        return ""
    return (f"; from the warm PHP: {one[0]} of {one[1]} zygotes with 4 tenants, {many[0]} of "
            f"{many[1]} with {n_many}")


def _add_line(mg: dict) -> str:
    alone, among = mg.get("add_to_first_response_ms"), mg.get("add_ms")
    if not alone:
        return ""
    warm = mg.get("add_from_warm_php")
    line = (f"- `add` of one ondemand tenant (validate, register, start its zygote and a "
            f"probe worker, wait until it serves), then its first request, straight to its "
            f"socket, one tenant at a time: {_mm(alone, '{:.1f}')} ms ({TARGETS['add']}: "
            f"{_ok(alone['median'] <= 50)}).")
    if warm is not None:
        line += (f" {warm} of the {mg.get('add_alone_n')} zygotes came from the warm PHP "
                 "(the master's `warm_php`: PHP exec'd ahead, its extensions loaded; the "
                 "others exec'd PHP themselves).")
    if among:
        line += (f" The add alone, {mg['add_concurrency']} at once while the many tenants "
                 f"went in: {_mm(among)} ms.")
    return line


def _grouped_section(res: dict) -> list[str]:
    grouped = res.get("steady_fpm_grouped")
    if not grouped:
        return []
    lines = ["### 1b. FPM given a tenant's CPU isolation", "",
             "FPM's static workers moved into a pair of cgroups like a tenant's (a parent "
             "weighing what tenantfpm's tenants' parent weighs, the pool weighing its "
             "max_children), as on a host that gives each PHP-FPM pool a CPU group of its "
             "own; tenantfpm as above.", "",
             "| page | FPM req/s, grouped | vs FPM ungrouped (above) | tenantfpm req/s | "
             "ratio | FPM p99 ms | tenantfpm p99 ms | ratio |", "|---|---|---|---|---|---|---|---|"]
    for page, d in grouped.items():
        f, t = d["fpm"], d["tenantfpm"]
        alone = res["steady"].get(page, {}).get("fpm")
        lines.append(f"| {page} | {_mm(f['rps'])} | "
                     f"{_r(alone['rps']['median'], f['rps']['median']) if alone else '-'} | "
                     f"{_mm(t['rps'])} | {_r(f['rps']['median'], t['rps']['median'])} | "
                     f"{_mm(f['p99_ms'], '{:.2f}')} | {_mm(t['p99_ms'], '{:.2f}')} | "
                     f"{_r(f['p99_ms']['median'], t['p99_ms']['median'])} |")
    lines += ["", "Not a target: it shows what part of the steady-load gap is the "
                  "per-tenant CPU group (docs/performance.md, the decision).", ""]
    return lines


def write_report(res: dict, out: Path) -> None:
    (out / "RESULTS.md").write_text("\n".join(report_lines(res)))
    _plot(res, out / "comparison.png")


_VERDICT = re.compile(r"\b(met|\*\*missed\*\*)\b")


def target_lines(res: dict) -> list[str]:
    """Each target's line of the report, with its figure and verdict: the section of
    docs/performance.md that says where each target stands (tests/test_docs.py keeps it
    the same as bench/results.json's)."""
    return [line.lstrip("- ") for line in report_lines(res) if _VERDICT.search(line)]


def report_lines(res: dict) -> list[str]:
    m, cfg = res["machine"], res["config"]
    lines = [
        "# tenantfpm vs PHP-FPM",
        "",
        f"Written by `{res['command']}` (bench/run.py) in {res['duration_s']} s; every number "
        "below comes from that run (results.json has them all).",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_kb'] // 1024} MB, "
        f"kernel {m['kernel']}; PHP {m['php']} (php-fpm8.2, and php-cgi8.2's engine under "
        f"tenantfpm's own SAPI: the same FPM php.ini and conf.d, opcache on); {m['nginx']} "
        "in front of both; wrk as the client.",
        f"Pools: {cfg['workers']} workers each, static unless said; wrk with "
        f"{cfg['connections']} connections, {cfg['seconds']} s per measurement, "
        f"{cfg['rounds']} rounds, FPM and tenantfpm alternating. Medians, (min-max).",
        "Where a target is missed, the cause found and the fix proposed are in "
        "docs/performance.md.",
        "",
        "## 1. Steady load",
        "",
        "| page | FPM req/s | tenantfpm req/s | ratio | FPM p99 ms | tenantfpm p99 ms | ratio "
        "| p50 ms FPM / tenantfpm |",
        "|---|---|---|---|---|---|---|---|",
    ]
    worst_rps, worst_p99 = 9.0, 0.0
    for page, d in res["steady"].items():
        f, t = d["fpm"], d["tenantfpm"]
        worst_rps = min(worst_rps, t["rps"]["median"] / f["rps"]["median"])
        worst_p99 = max(worst_p99, t["p99_ms"]["median"] / f["p99_ms"]["median"])
        lines.append(f"| {page} | {_mm(f['rps'])} | {_mm(t['rps'])} | "
                     f"{_r(f['rps']['median'], t['rps']['median'])} | "
                     f"{_mm(f['p99_ms'], '{:.2f}')} | {_mm(t['p99_ms'], '{:.2f}')} | "
                     f"{_r(f['p99_ms']['median'], t['p99_ms']['median'])} | "
                     f"{f['p50_ms']['median']:.2f} / {t['p50_ms']['median']:.2f} |")
    lines += ["", f"Targets: {TARGETS['throughput']}: worst {worst_rps:.2f}, "
                  f"{_ok(worst_rps >= 1.0)}; {TARGETS['p99']}: worst {worst_p99:.2f}, "
                  f"{_ok(worst_p99 <= 1.05)}.", ""]
    lines += _grouped_section(res)
    lines += ["## 2. Ondemand cold start", "",
              "| variant | first request ms | burst of "
              f"{cfg['workers']} from zero, slowest ms |", "|---|---|---|"]
    cold_t = None
    for k, v in res["cold_start"].items():
        lines.append(f"| {k} | {_mm(v['first_ms'], '{:.1f}')} | "
                     f"{_mm(v['burst_max_ms'], '{:.1f}')} |")
        if k == "tenantfpm:ondemand":
            cold_t = v["first_ms"]["median"]
    cold = res["cold_start"]
    if "tenantfpm:ondemand-cold" in cold:
        lines += ["", "`tenantfpm:ondemand` keeps the tenant's zygote (PHP started) while it "
                      "is idle, and a spare worker forked ahead: together they cost "
                      f"{cold['tenantfpm:ondemand'].get('idle_zygote_pss_kb')} kB of PSS. "
                      "`tenantfpm:ondemand-cold` has `zygote_idle_timeout = 1s`: its first "
                      "request starts a zygote too (PHP's module startup, from the warm PHP "
                      "when one is ready), "
                      f"{cold['tenantfpm:ondemand-cold']['first_ms']['median']:.1f} ms."]
    lines += ["", f"Target: {TARGETS['cold']} (sandboxed tenantfpm): {cold_t:.1f} ms, "
                  f"{_ok(cold_t is not None and cold_t <= 3)}.",
              "The master runs with `cgroup_favordynmods = true` (cgroup2 was "
              f"{'already' if m.get('favordynmods_before') else 'not'} mounted with "
              "favordynmods before the run): a worker joins its cgroup without waiting for an "
              "RCU grace period. Without it, that join took 8-16 ms of each cold start here.",
              ""]
    lines += ["## 3. Dynamic scale-up", "", "| | ms until all max_children busy | failed |",
              "|---|---|---|"]
    for side, v in res["scale_up"].items():
        ms = v["to_max_children_ms"]
        lines.append(f"| {side} | {'not reached' if ms is None else f'{ms:.0f}'} | "
                     f"{v['failed']} |")
    lines += ["", "## 4. Reload under load", "",
              f"{cfg['reloads']} reloads during {cfg['reload_seconds']} s of wrk on a 20 ms page.",
              "", "| | requests | failed (socket errors + non-2xx) |", "|---|---|---|"]
    for k, v in res["reloads"].items():
        label = {"fpm:default": "FPM, kill -USR2, process_control_timeout = 0",
                 "fpm:tuned": "FPM, kill -USR2, process_control_timeout = 10",
                 "tenantfpm:default": "tenantfpm reload"}.get(k, k)
        lines.append(f"| {label} | {v['requests']} | {v['failed']} |")
    t_fail = res["reloads"]["tenantfpm:default"]["failed"]
    lines += ["", f"Target: {TARGETS['reload']} (tenantfpm): {t_fail}, {_ok(t_fail == 0)}.", ""]
    mg = res["manager"]
    cpu = mg["master_cpu_s_per_100k_hello"]
    many = next(k for k in mg if k.startswith("master_rss_kb_") and k != "master_rss_kb_4_tenants")
    n_many = int(many.split("_")[3])
    rps = res["steady"]["hello.php"]["tenantfpm"]["rps"]["median"]
    core_pct = (cpu["median"] * rps / 100_000 * 100) if cpu else None
    lines += ["## 5. The manager's own cost", "",
              f"- master CPU per 100k requests (hello.php): "
              f"{_mm(cpu, '{:.3f}') + ' s' if cpu else '-'}; at {rps:.0f} req/s that is "
              f"{core_pct:.2f}% of one core ({TARGETS['cpu']}: "
              f"{_ok(core_pct is not None and core_pct <= 3)}).",
              f"- master RSS: {mg['master_rss_kb_4_tenants'] // 1024} MB with 4 tenants, "
              f"{mg[many] // 1024} MB with {n_many}; php-fpm master with 3 pools: "
              f"{mg['fpm_master_rss_kb_3_pools'] // 1024} MB, with {n_many - 4} idle "
              f"ondemand pools: {mg['fpm_master_rss_kb_many_pools'] // 1024} MB.",
              _add_line(mg),
              f"- {TARGETS['rss']}: measured with {n_many} tenants, "
              + ("" if n_many >= 10_000 else "not 10,000: the run had fewer; ")
              + f"{mg[many] // 1024} MB, {_ok(mg[many] / 1024 <= 150)} at {n_many}."]
    idle_k = f"idle_master_cpu_percent_{n_many}_tenants"
    cold_k = f"cold_request_ms_{n_many}_tenants"
    if idle_k in mg:
        idle, cold1, coldn = mg[idle_k], mg["cold_request_ms_4_tenants"], mg[cold_k]
        lines += [f"- idle master CPU: {mg['idle_master_cpu_percent_4_tenants']:.2f}% of one "
                  f"core with 4 tenants, {idle:.2f}% with {n_many} ({TARGETS['idle']}: "
                  f"{_ok(idle <= 2)}): an idle ondemand pool has no timer, its socket wakes it.",
                  f"- a cold request (no worker, no zygote: one starts for it; the median of "
                  f"{_cold_n(mg, n_many)}, to distinct tenants among the many, a second apart), "
                  "straight to the "
                  f"tenant's socket: {cold1:.1f} ms with 4 tenants, {coldn:.1f} ms with "
                  f"{n_many} ({TARGETS['cold_many']}: {_ok(coldn <= 1.2 * cold1)})"
                  + _cold_warm(mg, n_many) + "."]
    lines += [""]
    mem = res["memory"]
    lines += ["## 6. Memory per worker after the include-heavy page", "",
              "| opcache | FPM PSS kB | tenantfpm PSS kB | ratio |", "|---|---|---|---|"]
    for key, label in (("shm_only", "shared memory only"), ("file_cache", "+ file_cache")):
        f, t = mem[key]["fpm"], mem[key]["tenantfpm"]
        lines.append(f"| {label} | {_mm(f)} | {_mm(t)} | {_r(f['median'], t['median'])} |")
    lines += ["", "FPM's workers share one opcache segment made by their master; a tenantfpm "
              "tenant's workers share the one its zygote made.", ""]
    lines += _wsgi(res)
    lines += _wordpress(res)
    lines += ["![throughput and latency](comparison.png)", ""]
    return lines


def _wsgi(res: dict) -> list[str]:
    w, m = res["wsgi"], res["machine"]
    t = w["tenantfpm"]["rps"]["median"]
    lines = ["## 7. Python: a hello-world WSGI app", "",
             f"The same app file and interpreter (Python {m['python']}, {m['python_executable']}) "
             f"for all three, {res['config']['workers']} worker processes each, nginx in front "
             f"with the same location block; tenantfpm sandboxed, uWSGI {m['uwsgi']} "
             f"(`--fastcgi-socket`, `--master --processes`) and flup {m['flup']} "
             "(`fcgi_fork.WSGIServer`, prefork) as they come from PyPI.", "",
             "| server | req/s | p50 ms | p99 ms | tenantfpm ÷ server (req/s) | errors |",
             "|---|---|---|---|---|---|"]
    for side in ("tenantfpm", "uwsgi", "flup"):
        d = w[side]
        lines.append(f"| {side} | {_mm(d['rps'])} | {d['p50_ms']['median']:.2f} | "
                     f"{_mm(d['p99_ms'], '{:.2f}')} | "
                     f"{_r(d['rps']['median'], t) if side != 'tenantfpm' else '-'} | "
                     f"{d['errors']} |")
    vs_uwsgi = t / w["uwsgi"]["rps"]["median"]
    vs_flup = t / w["flup"]["rps"]["median"]
    lines += ["", f"Targets: {TARGETS['uwsgi']}: {vs_uwsgi:.2f}, {_ok(vs_uwsgi >= 0.7)}; "
                  f"{TARGETS['flup']}: {vs_flup:.2f}, {_ok(vs_flup >= 2)}.", ""]
    return lines


def _wordpress(res: dict) -> list[str]:
    w, cfg = res["wordpress"], res["config"]
    lines = ["## 8. WordPress", "",
             f"WordPress {w['version']} from Debian's `wordpress` package, freshly installed "
             "(its one post), on a private MariaDB; one copy of the site and one database "
             f"behind both, {cfg['workers']} static workers each, nginx as WordPress documents "
             f"it for php-fpm. wrk on the home page, {cfg['wp_rounds']} rounds of "
             f"{cfg['wp_seconds']} s per side, alternating.", "",
             "| workers | FPM req/s | tenantfpm req/s | ratio | FPM p99 ms | tenantfpm p99 ms "
             "| ratio | errors FPM / tenantfpm |", "|---|---|---|---|---|---|---|---|"]
    ratios = {}
    for label in ("max_requests 0", "max_requests 50"):
        f, t = w[label]["fpm"], w[label]["tenantfpm"]
        ratios[label] = t["rps"]["median"] / f["rps"]["median"]
        lines.append(f"| {label} | {_mm(f['rps'], '{:.1f}')} | {_mm(t['rps'], '{:.1f}')} | "
                     f"{ratios[label]:.3f} | {_mm(f['p99_ms'], '{:.1f}')} | "
                     f"{_mm(t['p99_ms'], '{:.1f}')} | "
                     f"{_r(f['p99_ms']['median'], t['p99_ms']['median'])} | "
                     f"{f['errors']} / {t['errors']} |")
    pf, pt = w["pss_kb"]["fpm"]["median"], w["pss_kb"]["tenantfpm"]["median"]
    met = ratios["max_requests 0"] >= 1.0 and ratios["max_requests 50"] >= 0.95
    lines += ["", f"PSS per worker after the load (max_requests 0): FPM {pf:.0f} kB, tenantfpm "
                  f"{pt:.0f} kB, {_r(pf, pt)}x.", "",
              f"Targets: {TARGETS['wp']}: {ratios['max_requests 0']:.3f} and "
              f"{ratios['max_requests 50']:.3f}, {_ok(met)}; {TARGETS['wp_pss']}: "
              f"{_r(pf, pt)}, {_ok(pt <= 1.10 * pf)}.", ""]
    return lines + _cpu_per_request(w["cpu_per_request"])


def _cpu_per_request(c: dict) -> list[str]:
    """Where WordPress's time goes: the same pages with the tenant on each runtime."""
    lines = ["### CPU per request, and what it is spent on", "",
             f"Workers' CPU time (schedstat) over {c['requests']} requests to each side, one at "
             "a time and alternating, `max_requests = 0`. The tenant runs the project's SAPI "
             "on the php-cgi binary's engine (`php`, the default), on Debian's libphp8.2.so "
             "(`php (libphp)`), then php-cgi exec'd in the same sandbox (`php-cgi`, the same "
             "PIE build of PHP as php-fpm): php-cgi's ratio is the sandbox's cost, libphp's "
             "adds the library build's. `tfpm-interp.php` is PHP's interpreter alone (calls, "
             "properties, small arrays).", "",
             "| page | tenant on | FPM ms | tenantfpm ms | ratio | wall ms FPM / tenantfpm |",
             "|---|---|---|---|---|---|"]
    for runtime in (k for k in c if k != "requests"):
        for page, r in c[runtime].items():
            lines.append(f"| `{page}` | {runtime} | {r['fpm_ms']:.2f} | {r['tenantfpm_ms']:.2f} | "
                         f"{r['ratio']:.3f} | {r['wall_ms']['fpm']:.1f} / "
                         f"{r['wall_ms']['tenantfpm']:.1f} |")
    return [*lines, ""]


def _plot(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pages = list(res["steady"])
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    x = range(len(pages))
    for i, side in enumerate(("fpm", "tenantfpm")):
        rps = [res["steady"][p][side]["rps"]["median"] for p in pages]
        p99 = [res["steady"][p][side]["p99_ms"]["median"] for p in pages]
        a.bar([v + i * 0.4 for v in x], rps, 0.4, label=side)
        b.bar([v + i * 0.4 for v in x], p99, 0.4, label=side)
    for ax, title in ((a, "requests/s (higher is better)"),
                      (b, "p99 latency, ms (lower is better)")):
        ax.set_xticks([v + 0.2 for v in x], pages)
        ax.set_title(title)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":  # the target lines of a results.json, as docs/performance.md has them
    print("\n".join(target_lines(json.loads(Path(sys.argv[1]).read_text()))))
