"""Scenario 8: WordPress, Debian's `wordpress` package on MariaDB, the same site behind both.

One copy of the site and one database serve php-fpm's pool and a tenantfpm tenant
(same php.ini, same worker count, nginx set up as WordPress documents it for php-fpm, a
server block per side). The home page is measured with workers that live for ever, then
with both sides recycling them every 50 requests; PSS per worker after the load.

Everything (mariadbd's data and socket, the site, nginx) lives under the Stack's
directory and goes with it.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
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


def set_pools(st: Stack, root: Path, db: MariaDB, max_requests: int, first: bool) -> None:
    """FPM's pool (its config reloaded) and the tenant (added, then replaced) with
    `max_requests`; returns once both have their static workers."""
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
        f"{cfg['rounds']} rounds x {cfg['seconds']}s per side and variant")
    with MariaDB(st.base, log) as db, nginx(st, install_site(st, db)) as (root, ports):
        urls = {side: f"http://127.0.0.1:{ports[side]}/" for side in ports}
        sides = list(urls)
        for i, (label, max_requests) in enumerate(VARIANTS.items()):
            set_pools(st, root, db, max_requests, first=i == 0)
            for url in urls.values():
                check_page(url)
                wrk.run(url, max(1, cfg["seconds"] // 5), cfg["connections"])  # opcache
            runs: dict[str, list[wrk.WrkResult]] = {s: [] for s in urls}
            for r in range(cfg["rounds"]):
                for side in (sides if r % 2 == 0 else sides[::-1]):
                    runs[side].append(wrk.run(urls[side], cfg["seconds"], cfg["connections"]))
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
        st.client.call("DELETE", f"/v1/tenants/{POOL}")
    return out


def wp_version() -> str:
    for line in (WP_SRC / "wp-includes" / "version.php").read_text().splitlines():
        if line.startswith("$wp_version"):
            return line.split("'")[1]
    return "?"
