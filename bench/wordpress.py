"""Scenario 8: WordPress, Debian's `wordpress` package on MariaDB, the same site behind both.

One copy of the site and one database serve php-fpm's pool and a tenantfpm tenant
(same php.ini, same worker count, nginx set up as WordPress documents it for php-fpm, a
server block per side). The home page is measured with workers that live for ever, then
with both sides recycling them every 50 requests; PSS per worker after the load.
Then the CPU one request takes on each side (`cpu_per_request`), with the tenant on
the project's SAPI on each of its engines (Debian's php-cgi binary, the default, and
libphp8.2-embed), and on php-cgi exec'd in the same sandbox: what the sandbox costs,
and what Debian's libphp build costs against the executables php-fpm and php-cgi are.

Everything (mariadbd's data and socket, the site, nginx) lives under the Stack's
directory and goes with it.
"""

from __future__ import annotations

import contextlib
import http.client
import secrets
import shutil
import statistics
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import wrk
from stack import FPM_USER, PHP_INI, WORDPRESS_USER, Stack, free_port, nginx_config
from wrk import summary

WP_SRC = Path("/usr/share/wordpress")  # Debian's wordpress package
POOL = "wordpress"
MARKER = b"Hello world!"  # the post a fresh install has: the page is WordPress's, rendered
VARIANTS = {"max_requests 0": 0, "max_requests 50": 50}
# the tenant for cpu_per_request: its runtime and, for the SAPI, its engine
TENANT_VARIANTS = {"php": ("php", "php-cgi"), "php (libphp)": ("php", "libphp"),
                   "php-cgi": ("php-cgi", None)}
INTERP_PAGE = "tfpm-interp.php"  # PHP's interpreter alone: calls, properties, small arrays
INTERP = """<?php
function fib($n) { return $n < 2 ? 1 : fib($n - 1) + fib($n - 2); }
final class Point { public function __construct(public int $x = 1) {}
                    public function x(): int { return $this->x; } }
$s = fib(25);
$p = new Point();
for ($i = 0; $i < 600000; $i++) { $s += $p->x(); }
$a = [];
for ($i = 0; $i < 2000; $i++) { $a["k$i"] = $i; }
for ($r = 0; $r < 50; $r++) { foreach ($a as $k => $v) { $s += isset($a[$k]) ? $v : 0; } }
echo $s;
"""

INSTALL = """<?php
// a fresh WordPress install from the command line, as its web installer does it
$_SERVER['HTTP_HOST'] = 'localhost';
$_SERVER['REQUEST_URI'] = '/';
define('WP_INSTALLING', true);
require $argv[1] . '/wp-load.php';
function wp_new_blog_notification() {}  // pluggable: no mail to send from here
require_once ABSPATH . 'wp-admin/includes/upgrade.php';
$r = wp_install('tenantfpm bench', 'admin', 'admin@example.invalid', true, '',
                'bench-' . bin2hex(random_bytes(8)));
echo is_wp_error($r) ? 'error: ' . $r->get_error_message() : 'installed';
"""


def wp_config(db_socket: Path) -> str:
    keys = "".join(f"define('{k}', '{secrets.token_hex(24)}');\n" for k in (
        "AUTH_KEY", "SECURE_AUTH_KEY", "LOGGED_IN_KEY", "NONCE_KEY", "AUTH_SALT",
        "SECURE_AUTH_SALT", "LOGGED_IN_SALT", "NONCE_SALT"))
    return f"""<?php
define('DB_NAME', 'wordpress');
define('DB_USER', 'wp');
define('DB_PASSWORD', 'bench');
define('DB_HOST', 'localhost:{db_socket}');
define('DB_CHARSET', 'utf8mb4');
define('DB_COLLATE', '');
{keys}$table_prefix = 'wp_';
// one site served on two ports (FPM's and tenantfpm's): each answers as itself
define('WP_HOME', 'http://' . ($_SERVER['HTTP_HOST'] ?? 'localhost'));
define('WP_SITEURL', WP_HOME);
define('DISABLE_WP_CRON', true);  // no loopback HTTP request from inside a page view
define('AUTOMATIC_UPDATER_DISABLED', true);
define('WP_HTTP_BLOCK_EXTERNAL', true);
if (!defined('ABSPATH')) define('ABSPATH', __DIR__ . '/');
require_once ABSPATH . 'wp-settings.php';
"""


class MariaDB:
    """A private mariadbd: its own data directory and socket, no TCP."""

    def __init__(self, base: Path, log: Callable[[str], None]) -> None:
        self.data = base / "mariadb"
        self.sock_dir = base / "mysqld"  # bound into the tenant at the same path
        self.sock = self.sock_dir / "mysqld.sock"
        self.log = log
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> MariaDB:
        for d in (self.data, self.sock_dir):
            d.mkdir()
            shutil.chown(d, "mysql", "mysql")
        self.sock_dir.chmod(0o755)
        self.log("   MariaDB: a private data directory")
        subprocess.run(["mariadb-install-db", "--no-defaults", f"--datadir={self.data}",
                        "--user=mysql", "--auth-root-authentication-method=socket",
                        "--skip-test-db"], check=True, capture_output=True)
        self.proc = subprocess.Popen(
            ["mariadbd", "--no-defaults", f"--datadir={self.data}", f"--socket={self.sock}",
             "--skip-networking", "--user=mysql", f"--pid-file={self.data}/mariadbd.pid",
             f"--log-error={self.data}/error.log", "--innodb-buffer-pool-size=128M"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 60
        while self.sql("SELECT 1", check=False).returncode != 0:
            if self.proc.poll() is not None or time.time() > deadline:
                raise RuntimeError("mariadbd did not start: "
                                   + (self.data / "error.log").read_text()[-2000:])
            time.sleep(0.2)
        self.sql("CREATE DATABASE wordpress; CREATE USER 'wp'@'localhost' IDENTIFIED BY "
                 "'bench'; GRANT ALL ON wordpress.* TO 'wp'@'localhost';")
        return self

    def sql(self, statements: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(["mariadb", "--no-defaults", f"--socket={self.sock}", "-uroot",
                               "-e", statements], check=check, capture_output=True, text=True)

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def install_site(st: Stack, db: MariaDB) -> Path:
    """The package's files copied into a root of the bench's own (links followed: the
    package points wp-config.php and wp-content into /etc and /var/lib), configured for
    the private database, then installed."""
    root = st.www / POOL
    shutil.copytree(WP_SRC, root, ignore_dangling_symlinks=True)
    (root / "wp-config.php").write_text(wp_config(db.sock))
    script = st.base / "wp-install.php"
    script.write_text(INSTALL)
    out = subprocess.run(["php8.2", "-c", PHP_INI, str(script), str(root)],
                         capture_output=True, text=True, timeout=120)
    if "installed" not in out.stdout:
        raise RuntimeError(f"WordPress did not install: {out.stdout[-1500:]}"
                           f"{out.stderr[-1500:]}")
    return root


@contextlib.contextmanager
def nginx(st: Stack, root: Path) -> Iterator[tuple[Path, dict[str, int]]]:
    """nginx with WordPress's documented php-fpm setup, one server per side (the sockets
    it passes to may come later)."""
    base = st.base / "nginx-wordpress"
    base.mkdir()
    ports, servers = {}, []
    for side in ("fpm", "tenantfpm"):
        ports[side] = free_port()
        servers.append(f"""
    server {{
        listen 127.0.0.1:{ports[side]};
        root {root};
        index index.php;
        location / {{ try_files $uri $uri/ /index.php?$args; }}
        location ~ \\.php$ {{
            try_files $uri =404;
            fastcgi_pass unix:{st.socket_of(side, POOL)};
            include /etc/nginx/fastcgi_params;
            fastcgi_param SCRIPT_FILENAME $document_root$fastcgi_script_name;
        }}
    }}""")
    (base / "nginx.conf").write_text(nginx_config(base, servers))
    proc = subprocess.Popen(["nginx", "-c", str(base / "nginx.conf"), "-p", str(base)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 30
        while not all(st.port_open(p) for p in ports.values()):
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError("nginx for WordPress did not start: "
                                   + (base / "nginx-error.log").read_text()[-1500:])
            time.sleep(0.05)
        yield root, ports
    finally:
        proc.terminate()
        proc.wait(30)


def set_pools(st: Stack, root: Path, db: MariaDB, max_requests: int, first: bool,
              runtime: str = "php", engine: str | None = None) -> None:
    """FPM's pool (its config reloaded) and the tenant (added, then replaced) with
    `max_requests`, `runtime` and the SAPI's `engine` (its default when None); returns
    once both have their static workers."""
    fpm_pool = (f"[{POOL}]\nuser = {FPM_USER}\ngroup = {FPM_USER}\n"
                f"listen = {st.socket_of('fpm', POOL)}\nlisten.mode = 0666\npm = static\n"
                f"pm.max_children = {st.workers}\npm.max_requests = {max_requests}\n")
    text = st.fpm_conf.read_text().split(f"\n[{POOL}]\n")[0]
    st.fpm_conf.write_text(text + "\n" + fpm_pool)
    st.reload_fpm()
    site = st.base / f"{POOL}.toml"
    site.write_text(f'name = "{POOL}"\nuser = "{WORDPRESS_USER}"\nroot = "{root}"\n'
                    f'[listen]\nowner = "nobody"\ngroup = "nogroup"\nmode = "0660"\n'
                    f'[pm]\nmode = "static"\nmax_children = {st.workers}\n'
                    f"max_requests = {max_requests}\n"
                    f'[runtime]\ntype = "{runtime}"\n'
                    + (f'engine = "{engine}"\n' if engine else "") +
                    f'[isolation]\nbinds = [{{ source = "{db.sock_dir}", readonly = false }}]\n')
    st.client.call("POST", "/v1/tenants", {"path": str(site), "replace": not first})
    st.wait_for(lambda: len(st.fpm_children(POOL)) == st.workers,
                f"php-fpm's {POOL} pool with max_requests {max_requests}")


def check_page(url: str) -> None:
    """The page is WordPress's home page, whole: a benchmark of an error page is none."""
    with urllib.request.urlopen(url, timeout=30) as r:
        body = r.read()
        if r.status != 200 or MARKER not in body:
            raise RuntimeError(f"{url}: {r.status}, not WordPress's home page: {body[:300]!r}")


def run(st: Stack, cfg: dict, log: Callable[[str], None]) -> dict:
    out: dict = {"version": wp_version()}
    log(f"8. WordPress {out['version']} (Debian's package) on MariaDB: the home page, "
        f"{cfg['wp_rounds']} rounds x {cfg['wp_seconds']}s per side and variant")
    with MariaDB(st.base, log) as db, nginx(st, install_site(st, db)) as (root, ports):
        urls = {side: f"http://127.0.0.1:{ports[side]}/" for side in ports}
        sides = list(urls)
        for i, (label, max_requests) in enumerate(VARIANTS.items()):
            set_pools(st, root, db, max_requests, first=i == 0)
            for url in urls.values():
                check_page(url)
                wrk.run(url, max(1, cfg["seconds"] // 5), cfg["connections"])  # opcache
            runs: dict[str, list[wrk.WrkResult]] = {s: [] for s in urls}
            # more and shorter rounds than the steady pages: at 40-80 req/s a round is a
            # few hundred requests, and the machine's speed drifts by 10% between rounds
            for r in range(cfg["wp_rounds"]):
                for side in (sides if r % 2 == 0 else sides[::-1]):
                    runs[side].append(wrk.run(urls[side], cfg["wp_seconds"],
                                              cfg["connections"]))
            out[label] = {side: wrk.summarize(rs) for side, rs in runs.items()}
            if max_requests == 0:
                out["pss_kb"] = {side: summary([float(x) for x in st.workers_pss(side, POOL)])
                                 for side in sides}
            f, t = out[label]["fpm"], out[label]["tenantfpm"]
            log(f"   {label}: rps {f['rps']['median']:.1f} vs {t['rps']['median']:.1f}, "
                f"p99 {f['p99_ms']['median']:.1f} vs {t['p99_ms']['median']:.1f} ms, errors "
                f"{f['errors']} vs {t['errors']}")
        log(f"   PSS per worker: {out['pss_kb']['fpm']['median']:.0f} vs "
            f"{out['pss_kb']['tenantfpm']['median']:.0f} kB")
        out["cpu_per_request"] = cpu_per_request(st, root, db, ports, 20 * cfg["seconds"], log)
        st.client.call("DELETE", f"/v1/tenants/{POOL}")
    return out


def cpu_per_request(st: Stack, root: Path, db: MariaDB, ports: dict[str, int], n: int,
                    log: Callable[[str], None]) -> dict:
    """CPU time of the workers per request, FPM's against the tenant's,
    over `n` requests to each side, one at a time and alternating (so the machine's
    speed, which drifts, is the same for both), for the home page and for a page that
    is PHP's interpreter alone. The tenant on the project's SAPI on the php-cgi
    binary's engine (the default), on libphp's, and php-cgi exec'd in the same sandbox:
    php-cgi is the same PIE build of PHP as php-fpm, so its ratio is what the sandbox
    costs; the SAPI's on libphp adds what Debian's libphp costs (a shared library:
    PHP's calls between its own functions go through the PLT, its globals through the
    GOT, where the executables call and load directly)."""
    (root / INTERP_PAGE).write_text(INTERP)
    (root / INTERP_PAGE).chmod(0o644)
    out: dict = {"requests": n}
    for label, (runtime, engine) in TENANT_VARIANTS.items():
        set_pools(st, root, db, 0, first=False, runtime=runtime, engine=engine)
        out[label] = {}
        for page in ("/", "/" + INTERP_PAGE):
            r = paired_cpu(st, ports, page, n)
            out[label][page] = r
            log(f"   CPU per request, tenant on {label}, {page}: FPM {r['fpm_ms']:.2f} ms, "
                f"tenantfpm {r['tenantfpm_ms']:.2f} ms ({r['ratio']:.3f}x)")
    return out


def paired_cpu(st: Stack, ports: dict[str, int], path: str, n: int) -> dict:
    def worker_pids(side: str) -> list[int]:
        return sorted(st.fpm_children(POOL) if side == "fpm"
                      else [p["pid"] for p in st.status(POOL)["processes"]])

    conns = {side: http.client.HTTPConnection("127.0.0.1", port, timeout=60)
             for side, port in ports.items()}

    def get(side: str) -> float:
        t = time.perf_counter()
        conns[side].request("GET", path)
        r = conns[side].getresponse()
        r.read()
        if r.status != 200:
            raise RuntimeError(f"{side} {path}: HTTP {r.status}")
        return (time.perf_counter() - t) * 1000

    try:
        for _ in range(max(8, n // 10)):  # every worker's opcache and realpath cache
            for side in conns:
                get(side)
        pids = {side: worker_pids(side) for side in conns}
        before = {side: cpu_seconds(p) for side, p in pids.items()}
        wall: dict[str, list[float]] = {side: [] for side in conns}
        sides = list(conns)
        for i in range(n):
            for side in (sides if i % 2 == 0 else sides[::-1]):
                wall[side].append(get(side))
        after = {side: cpu_seconds(p) for side, p in pids.items()}
        if {side: worker_pids(side) for side in conns} != pids:
            raise RuntimeError(f"{path}: a worker was replaced while its CPU time was counted")
    finally:
        for c in conns.values():
            c.close()
    ms = {side: (after[side] - before[side]) / n * 1000 for side in conns}
    return {"fpm_ms": ms["fpm"], "tenantfpm_ms": ms["tenantfpm"],
            "ratio": ms["tenantfpm"] / ms["fpm"],
            "wall_ms": {side: statistics.median(w) for side, w in wall.items()}}


def cpu_seconds(pids: list[int]) -> float:
    """Time these (single-threaded) processes have run on a CPU, in ns as the scheduler
    counts it (/proc/PID/schedstat), not in utime's 10 ms ticks."""
    return sum(int(Path(f"/proc/{pid}/schedstat").read_text().split()[0])
               for pid in pids) / 1e9


def wp_version() -> str:
    for line in (WP_SRC / "wp-includes" / "version.php").read_text().splitlines():
        if line.startswith("$wp_version"):
            return line.split("'")[1]
    return "?"
