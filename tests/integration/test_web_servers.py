"""A php tenant behind the two web servers hosts run, each configured as its documentation
says for PHP-FPM: nginx with Debian's fastcgi-php snippet, Apache httpd with
mod_proxy_fcgi's `SetHandler "proxy:unix:...|fcgi://localhost"`."""

from __future__ import annotations

import contextlib
import http.cookiejar
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from tests.integration.conftest import SLOW, terminate

PAGE = """<?php
header("X-Tenant: web");
setcookie("seen", "yes");
if (isset($_GET["code"])) { http_response_code((int)$_GET["code"]); }
echo $_SERVER["REQUEST_METHOD"], " ", $_SERVER["SCRIPT_NAME"], " ",
     json_encode($_GET), " ", json_encode($_POST), " ", $_COOKIE["seen"] ?? "-";
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.time() + 20
    while time.time() < deadline:
        if proc.poll() is not None:
            said = log.read_text() if log.exists() else ""
            raise AssertionError(f"{proc.args[0]} exited: {said}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise AssertionError(f"{proc.args[0]} did not listen on {port}")


def nginx_conf(base: Path, http: str) -> list[str]:
    """An nginx of the test's own under `base` (pid, logs, temp files there), `http` the
    body of its http block; the command that runs it in the foreground."""
    conf = base / "nginx.conf"
    conf.write_text(f"""
worker_processes 1;
daemon off;
user www-data;
pid {base}/nginx.pid;
error_log {base}/nginx-error.log;
events {{ worker_connections 64; }}
http {{
    access_log off;
    include /etc/nginx/mime.types;
    client_body_temp_path {base}/body;
    fastcgi_temp_path {base}/fastcgi;
    proxy_temp_path {base}/proxy;
    uwsgi_temp_path {base}/uwsgi;
    scgi_temp_path {base}/scgi;
{http}
}}
""")
    return ["nginx", "-c", str(conf), "-p", str(base)]


def nginx(base: Path, root: Path, sock: str, port: int) -> tuple[list[str], Path]:
    # Debian's snippet includes fastcgi.conf relative to the configuration's directory
    (base / "fastcgi.conf").write_text(Path("/etc/nginx/fastcgi.conf").read_text())
    argv = nginx_conf(base, f"""
    server {{
        listen 127.0.0.1:{port};
        root {root};
        index index.php;
        location ~ \\.php$ {{
            include /etc/nginx/snippets/fastcgi-php.conf;
            fastcgi_pass unix:{sock};
        }}
    }}""")
    return argv, base / "nginx-error.log"


def apache(base: Path, root: Path, sock: str, port: int) -> tuple[list[str], Path]:
    mods = "/usr/lib/apache2/modules"
    conf = base / "httpd.conf"
    conf.write_text(f"""
ServerRoot {base}
ServerName localhost
Listen 127.0.0.1:{port}
PidFile {base}/httpd.pid
DefaultRuntimeDir {base}
Mutex file:{base}
User www-data
Group www-data
ErrorLog {base}/httpd-error.log
LoadModule mpm_event_module {mods}/mod_mpm_event.so
LoadModule authz_core_module {mods}/mod_authz_core.so
LoadModule dir_module {mods}/mod_dir.so
LoadModule proxy_module {mods}/mod_proxy.so
LoadModule proxy_fcgi_module {mods}/mod_proxy_fcgi.so
DocumentRoot "{root}"
DirectoryIndex index.php
<Directory "{root}">
    Require all granted
</Directory>
<FilesMatch "\\.php$">
    SetHandler "proxy:unix:{sock}|fcgi://localhost"
</FilesMatch>
""")
    return ["/usr/sbin/apache2", "-f", str(conf), "-DFOREGROUND"], base / "httpd-error.log"


@pytest.mark.parametrize("server", [nginx, apache], ids=["nginx", "apache-mod_proxy_fcgi"])
def test_php_tenant_behind_a_web_server_configured_as_for_php_fpm(env, users, server):
    env.add(env.site("web", users[0], '[pm]\nmode = "static"\nmax_children = 2\n'))
    root = env.base / "srv" / "web"
    (root / "page.php").write_text(PAGE)
    (root / "page.php").chmod(0o644)
    (root / "finish.php").write_text(
        f'<?php echo "early"; fastcgi_finish_request(); usleep({int(3_000_000 * SLOW)});')
    (root / "finish.php").chmod(0o644)
    base = env.base / server.__name__
    base.mkdir()
    port = free_port()
    argv, _log = server(base, root, env.socket("web"), port)
    with open(base / "startup.log", "w") as said:  # what it prints before its own log opens
        proc = subprocess.Popen(argv, stdout=said, stderr=subprocess.STDOUT)
    try:
        wait_port(port, proc, base / "startup.log")
        url = f"http://127.0.0.1:{port}"
        jar = http.cookiejar.CookieJar()
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
        with opener.open(f"{url}/page.php?a=1", timeout=10) as r:
            assert r.status == 200 and r.headers["X-Tenant"] == "web"
            assert r.read() == b'GET /page.php {"a":"1"} [] -'
        form = urllib.parse.urlencode({"k": "v"}).encode()
        with opener.open(f"{url}/page.php", data=form, timeout=10) as r:
            assert r.read() == b'POST /page.php [] {"k":"v"} yes'  # the cookie came back
        with pytest.raises(urllib.error.HTTPError) as e:
            opener.open(f"{url}/page.php?code=418", timeout=10)
        assert e.value.code == 418
        with urllib.request.urlopen(f"{url}/", timeout=10) as r:  # the index, through PHP
            assert r.read().startswith(b"hello pid=")
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(f"{url}/missing.php", timeout=10)
        assert e.value.code == 404
        # fastcgi_finish_request(): the client has its answer while the script goes on (nginx
        # without fastcgi_keep_conn answers when the worker ends its side of the connection)
        started = time.monotonic()
        with urllib.request.urlopen(f"{url}/finish.php", timeout=10) as r:
            assert r.read() == b"early"
        took = time.monotonic() - started
        assert took < 1.5 * SLOW, f"the answer waited for the script after finish ({took:.2f}s)"
    finally:
        terminate(proc)


def test_the_server_block_add_prints_serves_the_site_as_it_is(env, users):
    """`tenantfpm nginx NAME` (the block `add` printed), pasted into nginx unchanged: the
    index, static files, a front controller's pretty URLs, PATH_INFO, a missing script,
    and nginx's body limit taken from the tenant's post_max_size."""
    env.add(env.site("blk", users[0], 'domains = ["blk.test"]\n'
                                      '[pm]\nmode = "static"\nmax_children = 2\n'
                                      '[ini]\npost_max_size = "1M"\nupload_max_filesize = "1M"\n'))
    root = env.base / "srv" / "blk"
    (root / "style.css").write_text("body { color: red }\n")
    (root / "info.php").write_text('<?php echo $_SERVER["PATH_INFO"] ?? "-", " ", '
                                   '$_SERVER["SCRIPT_NAME"], " ", strlen(file_get_contents('
                                   '"php://input"));')
    for f in ("style.css", "info.php"):
        (root / f).chmod(0o644)
    base = env.base / "nginx-block"
    base.mkdir()
    port = free_port()
    block = env.cli("nginx", "blk", "--listen", f"127.0.0.1:{port}").stdout
    (base / "blk.conf").write_text(block)
    (base / "fastcgi_params").write_text(Path("/etc/nginx/fastcgi_params").read_text())
    argv = nginx_conf(base, f"    include {base}/blk.conf;")
    with open(base / "startup.log", "w") as said:
        proc = subprocess.Popen(argv, stdout=said, stderr=subprocess.STDOUT)
    try:
        wait_port(port, proc, base / "startup.log")

        def get(path: str, data: bytes | None = None) -> tuple[int, bytes, str]:
            req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data,
                                         headers={"Host": "blk.test"})
            try:
                with urllib.request.urlopen(req, timeout=10) as r:
                    return r.status, r.read(), r.headers.get("Content-Type", "")
            except urllib.error.HTTPError as e:
                return e.code, e.read(), e.headers.get("Content-Type", "")

        status, body, _ = get("/")
        assert status == 200 and body.startswith(b"hello pid=")  # index.php, not a 403
        status, body, ctype = get("/style.css")
        assert (status, body) == (200, b"body { color: red }\n") and ctype == "text/css"
        status, body, _ = get("/shop/item/7")  # no such file: the front controller
        assert status == 200 and body.startswith(b"hello pid=")
        assert get("/info.php/a/b")[:2] == (200, b"/a/b /info.php 0")
        assert get("/missing.php")[0] == 404
        assert get("/info.php", b"x" * 1000)[:2] == (200, b" /info.php 1000")  # PATH_INFO ""
        assert get("/info.php", b"x" * (2 << 20))[0] == 413  # past post_max_size: nginx says
    finally:
        terminate(proc)
