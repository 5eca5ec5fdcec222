"""Worker spawn latency with and without the sandbox, on this machine, in one run.

    sudo .venv/bin/python bench/spawn_latency.py [-n 200] [--network none|isolated]

For each sample: spawn() one php-cgi worker on the tenant's socket exactly as
the master does (same Plan, same code), send one FastCGI request, time the
answer, kill the worker, reap it. Plain and sandboxed samples alternate so
drift hits both alike. Reported: the median and p90 of the time the master
spends inside spawn() (its loop is blocked that long) and of fork-to-first-
response (what an ondemand pool's first visitor waits for, besides php-cgi's
own start-up). With --network, a third variant alternates with them: the
sandbox in that network mode (the worker joins the tenant's network namespace),
to weigh a safer default than `host` for new tenants.
"""

from __future__ import annotations

import argparse
import os
import pwd
import shutil
import signal
import statistics
import tempfile
import time

from tenantfpm import cgroups, runtimes
from tenantfpm.config.loader import load_site
from tenantfpm.config.model import GlobalConfig
from tenantfpm.config.tenant import resolve
from tenantfpm.listen import close_listener, open_listener, path_inode
from tenantfpm.sandbox import namespaces
from tenantfpm.sandbox.spawn import Plan, spawn
from tenantfpm.sandbox.tenant import TenantSandbox
from tenantfpm.wire import fastcgi


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=200, help="samples per variant")
    ap.add_argument("--network", choices=("host", "none", "isolated"), default="host",
                    help="also time the sandbox in this network mode")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: spawning workers as another user needs it")
    user = "nobody"
    pwd.getpwnam(user)
    base = tempfile.mkdtemp(prefix="tfpm-bench-")
    try:
        run(base, user, args.n, args.network)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def run(base: str, user: str, n: int, network: str = "host") -> None:
    os.chmod(base, 0o755)
    root = os.path.join(base, "srv")
    os.makedirs(root, mode=0o755)
    with open(os.path.join(root, "index.php"), "w") as f:
        f.write('<?php echo "ok";')
    site_file = os.path.join(base, "b.toml")
    with open(site_file, "w") as f:
        # an exec'd worker: the spawn path this measures (php tenants fork from a zygote)
        f.write(f'name = "bench"\nuser = "{user}"\nroot = "{root}"\n'
                '[runtime]\ntype = "php-cgi"\n')
    conf = GlobalConfig.model_validate({
        "paths": {"run_dir": f"{base}/run", "log_dir": f"{base}/log",
                  "tenants_dir": f"{base}/t", "state_dir": f"{base}/s"},
        "master": {"cgroup_parent": "tenantfpm-bench"}})
    namespaces.isolate_master_mounts()  # the tenant's /tmp mount goes away with us
    tenant = resolve(load_site(site_file, "/nonexistent"), conf)
    driver = cgroups.detect(conf.master.cgroup_parent)
    cg = driver.tenant(tenant.name)
    box = TenantSandbox(tenant)
    netted = _with_network(tenant, network)
    net_box = TenantSandbox(netted)
    sock = None
    try:
        cg.create()
        sock = open_listener(tenant.listen, owner="root", group="root", mode="0666",
                             backlog=511, allowed_clients=[])
        runtimes.prepare(tenant)
        sandbox = box.prepare(tenant, 0, conf.master.isolated_subnet)
        variants = {"plain": (_no_isolation(tenant), None), "sandbox": (tenant, sandbox)}
        if network != "host":
            variants[f"net-{network}"] = (netted, net_box.prepare(
                netted, 0, conf.master.isolated_subnet))
        params = fastcgi.cgi_params(root, "/index.php")
        results: dict[str, tuple[list[float], list[float]]] = {k: ([], []) for k in variants}
        print(f"{n} samples each, alternating; php-cgi {os.path.realpath('/usr/bin/php-cgi')}")
        for i in range(n):
            for name, (variant, t_iso) in variants.items():
                argv, env = runtimes.command(variant, 0)
                plan = Plan(argv=argv, env=env, cwd=tenant.cwd, uid=tenant.uid, gid=tenant.gid,
                            listen_fd=sock.fileno(), catch_output=False,
                            cgroup_procs=cg.join_files(), sandbox=t_iso)
                t0 = time.perf_counter()
                child = spawn(plan)
                t1 = time.perf_counter()
                r = fastcgi.request(str(tenant.listen), params, timeout=10)
                t2 = time.perf_counter()
                if r.body != b"ok":
                    raise SystemExit(f"{name}: unexpected answer {r.stdout[:200]!r}")
                os.kill(child.pid, signal.SIGKILL)
                os.waitpid(child.pid, 0)
                os.close(child.errpipe)
                results[name][0].append((t1 - t0) * 1000)
                results[name][1].append((t2 - t0) * 1000)
            if (i + 1) % 50 == 0:
                print(f"  {i + 1}/{n}", flush=True)
        print(f"{'':10}{'spawn() median':>16}{'p90':>8}{'first answer median':>22}{'p90':>8}")
        for name, (calls, firsts) in results.items():
            print(f"{name:10}{statistics.median(calls):>13.2f} ms{_p90(calls):>8.2f}"
                  f"{statistics.median(firsts):>19.2f} ms{_p90(firsts):>8.2f}")
        for name in list(results)[1:]:
            ratio = statistics.median(results[name][1]) / statistics.median(results["plain"][1])
            print(f"{name} / plain, first answer: {ratio:.2f}x")
    finally:
        if sock is not None:
            close_listener(sock, tenant.listen, path_inode(tenant.listen))
        box.release()
        net_box.release()
        cg.remove()
        driver.cleanup()


def _no_isolation(tenant):
    site = tenant.site.model_copy(update={
        "isolation": tenant.site.isolation.model_copy(update={"enabled": False})})
    return type(tenant)(**{**tenant.__dict__, "site": site})


def _with_network(tenant, network: str):
    site = tenant.site.model_copy(update={
        "isolation": tenant.site.isolation.model_copy(update={"network": network})})
    return type(tenant)(**{**tenant.__dict__, "site": site})


def _p90(values: list[float]) -> float:
    return statistics.quantiles(values, n=10)[-1]


if __name__ == "__main__":
    main()
