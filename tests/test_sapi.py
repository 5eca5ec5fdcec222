"""The PHP SAPI and zygote (sapi/) driven directly, as the master drives it: real PHP, real
FastCGI on a real socket, no sandbox. Runs against the -O2 build and, when `make test`
built it (TENANTFPM_PHP_ASAN), the AddressSanitizer + UBSan build, whose reports fail it."""

from __future__ import annotations

import array
import contextlib
import hashlib
import json
import os
import signal
import socket
import struct
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tenantfpm import procfs
from tenantfpm.config.model import PHP_ENGINE_BINARY, PHP_SAPI_BINARY
from tenantfpm.master.zygote import channel, receive
from tenantfpm.runtimes.php import scan_dir
from tenantfpm.wire import fastcgi
from tests.procs import children_of, minor_faults
from tests.spares import (
    killed_spare_is_never_reported_and_is_replaced,
    master_ends,
    spare_of,
    spares_that_keep_dying_are_given_up,
    the_next_order_goes_to_the_spare,
    the_spare_ends_with_its_zygote,
    wait_for,
)

# the SAPI's program (linked against libphp8.2-embed), and the SAPI as a library run
# inside Debian's php-cgi binary (runtime.engine = "php-cgi", the default)
ENGINE_LIBRARY = PHP_SAPI_BINARY + ".so"
BINARIES = [pytest.param(PHP_SAPI_BINARY, id="O2"),
            pytest.param(ENGINE_LIBRARY, id="php-cgi")]
if os.environ.get("TENANTFPM_PHP_ASAN"):
    BINARIES.append(pytest.param(os.environ["TENANTFPM_PHP_ASAN"], id="asan"))

SCRIPTS = {
    "hello.php": '<?php header("X-Hello: 1"); setcookie("c", "v"); '
                 'usleep((int)($_GET["ms"] ?? 0) * 1000); echo "pid=", getmypid(), '
                 '" sapi=", PHP_SAPI, " user=", getenv("USER");',
    "status.php": '<?php http_response_code((int)$_GET["code"]); echo "code";',
    "ini.php": '<?php echo ini_get("memory_limit"), " ", ini_get("precision"), " ", '
               'var_export(ini_set("memory_limit", "1G"), true);',
    "upload.php": '<?php $f = $_FILES["f"]; echo $f["error"], " ", $f["size"], " ", '
                  'md5_file($f["tmp_name"]), " ", $_POST["k"];',
    "finish.php": '<?php echo "early"; fastcgi_finish_request(); usleep(600000); '
                  'file_put_contents($_GET["mark"], "done");',
    "stream.php": '<?php echo str_repeat("a", 100); flush(); usleep(500000); echo "b";',
    "sleep.php": '<?php usleep((int)$_GET["ms"] * 1000); echo "slept";',
    "warn.php": '<?php trigger_error("tenant warning", E_USER_WARNING); echo "ok";',
    "server.php": '<?php echo $_SERVER["PATH_INFO"] ?? "-", " ", $_SERVER["SCRIPT_FILENAME"];',
    "note.txt": "not php",
}
# every way a script reads the environment, or hands it to a process it starts
HOST_PID_READERS = {
    "getenv": 'echo getenv("TENANTFPM_WORKER_PID");',
    "getenv-all": 'echo getenv()["TENANTFPM_WORKER_PID"] ?? "";',
    "server": 'echo $_SERVER["TENANTFPM_WORKER_PID"] ?? "";',
    "exec": 'echo exec("printenv TENANTFPM_WORKER_PID");',
    "shell_exec": 'echo trim(shell_exec("printenv TENANTFPM_WORKER_PID"));',
    "popen": '$p = popen("printenv TENANTFPM_WORKER_PID", "r"); echo trim(fgets($p));',
    "proc_open": '$p = proc_open(["printenv", "TENANTFPM_WORKER_PID"], [1 => ["pipe", "w"]],'
                 ' $pipes); echo trim(stream_get_contents($pipes[1]));',
}


class Zygote:
    """The master's side of the protocol, by hand."""

    def __init__(self, binary: str, root: Path, ini: Path, *args: str) -> None:
        self.sock_path = str(root.parent / "php.sock")
        self.listener, self.ctl, theirs, self.stderr_r, stderr_w = master_ends(self.sock_path)
        env = {"USER": "tenant", "PATH": "/usr/bin:/bin",
               "ASAN_OPTIONS": "detect_leaks=0:abort_on_error=0:exitcode=99"}
        # PHP dlopen()s shared extensions with RTLD_DEEPBIND, which ASan's runtime refuses:
        # under ASan, PHP runs with its built-in extensions only
        conf_d = "" if "asan" in binary else scan_dir()
        env["PHP_INI_SCAN_DIR"] = conf_d or ""
        lst, ctl_fd = self.listener.fileno(), theirs.fileno()

        def fds() -> None:
            os.dup2(lst, 0)
            os.dup2(ctl_fd, 3)

        if binary.endswith(".so"):  # as the master starts it (runtimes/php.py)
            env["LD_PRELOAD"] = binary
            binary = PHP_ENGINE_BINARY
        self.proc = subprocess.Popen([binary, "-c", str(ini), "-a", "memory_limit",
                                      "-t", "400", *args], preexec_fn=fds, pass_fds=(3,),
                                     env=env, stderr=stderr_w, stdout=stderr_w)
        os.close(stderr_w)
        theirs.close()
        assert self.recv() == ["ready"]
        self.workers: dict[int, socket.socket] = {}

    def recv(self, timeout: float = 20) -> list[str]:
        self.ctl.settimeout(timeout)
        data = self.ctl.recv(128)
        return [data.decode()]

    def fork(self, max_requests: int = 0, answer: bool = True) -> int:
        """One worker; its pid (the kernel's word, via its hello). answer=False: the
        master's answer to the hello waits for answer_hello()."""
        ours, theirs = channel()
        out_r, out_w = os.pipe()
        self.ctl.sendmsg([f"fork {max_requests}".encode()],
                         [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                           array.array("i", [theirs.fileno(), out_w, out_w]))])
        theirs.close()
        os.close(out_w)
        threading.Thread(target=self._drain, args=(out_r,), daemon=True).start()
        deadline = time.time() + 20
        msgs: list = []
        while not msgs and time.time() < deadline:
            time.sleep(0.01)
            msgs, _closed = receive(ours, 1)
        assert msgs and msgs[0].kind == "hello", msgs
        pid = msgs[0].sender
        if answer:
            ours.send(f"pid {pid}".encode())
        self.workers[pid] = ours
        return pid

    def answer_hello(self, pid: int) -> None:
        self.workers[pid].send(f"pid {pid}".encode())

    output = b""

    def _drain(self, fd: int) -> None:
        while chunk := os.read(fd, 65536):
            Zygote.output += chunk
        os.close(fd)

    def request(self, uri: str, method: str = "GET", body: bytes = b"",
                headers: tuple = (), extra: dict | None = None) -> fastcgi.Response:
        params = fastcgi.cgi_params(str(self.root), uri, method, body, headers)
        params.update(extra or {})
        return fastcgi.request(self.sock_path, params, body, timeout=20)

    def close(self) -> str:
        for pid in self.workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.ctl.close()
        rc = self.proc.wait(timeout=20)
        errors = b""
        while True:
            try:
                chunk = os.read(self.stderr_r, 65536)
            except OSError:
                break
            if not chunk:
                break
            errors += chunk
        os.close(self.stderr_r)
        self.listener.close()
        text = (errors + Zygote.output).decode(errors="replace")
        assert rc == 0, text
        assert "AddressSanitizer" not in text and "runtime error" not in text, text
        return text


def start_zygote(binary: str, where: Path, *args: str, ini_extra: str = "") -> Zygote:
    """SCRIPTS in `where`/www, a php.ini beside it, and a zygote serving them."""
    root = where / "www"
    root.mkdir(parents=True)
    for name, text in SCRIPTS.items():
        (root / name).write_text(text)
    ini = where / "php.ini"
    ini.write_text("memory_limit = 64M\nupload_max_filesize = 16M\npost_max_size = 20M\n"
                   f"upload_tmp_dir = {where}\nlog_errors = 1\ndisplay_errors = 0\n"
                   + ini_extra)
    Zygote.output = b""
    z = Zygote(binary, root, ini, *args)
    z.root = root
    return z


@pytest.fixture(params=BINARIES)
def zygote(request, tmp_path):
    z = start_zygote(request.param, tmp_path)
    yield z
    z.close()


def test_serves_with_headers_cookies_and_fpm_identity(zygote):
    a, b = zygote.fork(), zygote.fork()
    for _ in range(6):
        r = zygote.request("/hello.php")
        assert r.status == 200 and ("X-Hello", "1") in r.headers
        assert ("Set-Cookie", "c=v") in r.headers
        assert b"sapi=fpm-fcgi user=tenant" in r.body
    # two requests that overlap are served by both workers (a busy worker does not
    # accept), whichever of them reached accept() first: each sees its own getmypid()
    got: list[fastcgi.Response] = []
    both = [threading.Thread(target=lambda: got.append(zygote.request("/hello.php?ms=400")))
            for _ in range(2)]
    for t in both:
        t.start()
    for t in both:
        t.join()
    assert {r.body.split()[0] for r in got} == {f"pid={a}".encode(), f"pid={b}".encode()}


def test_the_php_cgi_engine_runs_under_the_sapi_and_leaves_no_trace(tmp_path):
    """The php-cgi binary's engine, not libphp's; what the zygote took over is invisible
    to scripts and to the processes they start."""
    z = start_zygote(ENGINE_LIBRARY, tmp_path)
    try:
        (z.root / "env.php").write_text(
            '<?php echo json_encode([getenv("LD_PRELOAD"), $_SERVER["LD_PRELOAD"] ?? null, '
            'exec("printenv LD_PRELOAD"), PHP_SAPI, PHP_VERSION]);')
        pid = z.fork()
        for p in (z.proc.pid, pid):
            assert os.readlink(f"/proc/{p}/exe") == os.path.realpath(PHP_ENGINE_BINARY)
            assert Path(f"/proc/{p}/comm").read_text() == "tenantfpm-php\n"
            maps = Path(f"/proc/{p}/maps").read_text()
            assert "tenantfpm-php.so" in maps and "libphp" not in maps
        r = z.request("/env.php")
        assert r.status == 200, r.body
        got = json.loads(r.body)
        assert got[:4] == [False, None, "", "fpm-fcgi"]
        assert got[4].startswith(PHP_ENGINE_BINARY.rsplit("php-cgi", 1)[1] + ".")
    finally:
        z.close()


def test_status_codes_missing_script_and_limit_extensions(zygote):
    zygote.fork()
    r = zygote.request("/status.php?code=201")
    assert r.status == 201 and ("Status", "201 Created") in r.headers
    r = zygote.request("/nope.php")
    assert r.status == 404 and r.body == b"File not found.\n"
    assert b"Primary script unknown" in r.stderr
    r = zygote.request("/note.txt")
    assert r.status == 403 and r.body == b"Access denied.\n"
    r = zygote.request("/server.php/extra/info")  # cgi.fix_pathinfo, as FPM
    assert r.body == f"/extra/info {zygote.root}/server.php".encode()
    # Apache httpd's mod_proxy_fcgi names the script "proxy:fcgi://host/path"
    r = zygote.request("/server.php", extra={
        "SCRIPT_FILENAME": f"proxy:fcgi://localhost{zygote.root}/server.php"})
    assert r.status == 200 and r.body == f"- {zygote.root}/server.php".encode()


def test_ini_locked_keys_and_php_value(zygote):
    zygote.fork()
    r = zygote.request("/ini.php")
    assert r.body == b"64M 14 false"  # [ini] keys: ini_set() cannot change them
    r = zygote.request("/ini.php", extra={"PHP_VALUE": "memory_limit=9M\nprecision=5",
                                          "PHP_ADMIN_VALUE": "memory_limit = 10M"})
    assert r.body == b"64M 5 false"  # nor the web server; other keys it may set
    assert zygote.request("/ini.php").body == b"64M 14 false"  # for that request only


def test_multipart_upload_of_5mb(zygote):
    zygote.fork()
    data = os.urandom(5 << 20)
    body = (b"--XX\r\nContent-Disposition: form-data; name=\"f\"; filename=\"a.bin\"\r\n"
            b"Content-Type: application/octet-stream\r\n\r\n" + data +
            b"\r\n--XX\r\nContent-Disposition: form-data; name=\"k\"\r\n\r\nv\r\n--XX--\r\n")
    r = zygote.request("/upload.php", "POST", body,
                       (("Content-Type", "multipart/form-data; boundary=XX"),))
    assert r.body == f"0 {len(data)} {hashlib.md5(data).hexdigest()} v".encode()


def test_finish_request_answers_while_the_script_goes_on(zygote, tmp_path):
    zygote.fork()
    mark = tmp_path / "mark"
    t = time.monotonic()
    r = zygote.request(f"/finish.php?mark={mark}")
    assert r.body == b"early" and time.monotonic() - t < 0.5 and not mark.exists()
    deadline = time.time() + 10
    while not mark.exists() and time.time() < deadline:
        time.sleep(0.05)
    assert mark.read_text() == "done"


def test_a_connection_not_kept_ends_with_the_response(zygote, tmp_path):
    # nginx without fastcgi_keep_conn answers its client when the worker ends its side of
    # the connection, not at END_REQUEST: that end must come with the response, here
    # while the script sleeps on after fastcgi_finish_request()
    zygote.fork()
    params = fastcgi.cgi_params(str(zygote.root), f"/finish.php?mark={tmp_path / 'mark'}")
    msg = fastcgi.encode_request(params)
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(zygote.sock_path)
        s.settimeout(10)
        s.sendall(msg)
        t = time.monotonic()
        got = b""
        while chunk := s.recv(65536):
            got += chunk
        assert b"early" in got and time.monotonic() - t < 0.4  # the script sleeps 0.6 s


def test_flush_streams_before_the_end(zygote):
    zygote.fork()
    params = fastcgi.cgi_params(str(zygote.root), "/stream.php")
    msg = fastcgi.encode_request(params)
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(zygote.sock_path)
        s.sendall(msg)
        t = time.monotonic()
        first = s.recv(65536)
        assert b"aaaa" in first and time.monotonic() - t < 0.4  # before the usleep ends


def test_warnings_reach_stderr_in_fpms_words(zygote):
    zygote.fork()
    r = zygote.request("/warn.php")
    assert r.body == b"ok" and b"PHP message: PHP Warning:  tenant warning" in r.stderr
    deadline = time.time() + 5
    while b"NOTICE: PHP message: PHP Warning:  tenant warning" not in Zygote.output:
        assert time.time() < deadline, Zygote.output
        time.sleep(0.05)


def test_garbage_and_silent_connections_are_dropped(zygote):
    zygote.fork()
    with socket.socket(socket.AF_UNIX) as s:  # not FastCGI at all
        s.connect(zygote.sock_path)
        s.sendall(b"GET / HTTP/1.0\r\n\r\n" + os.urandom(4096))
        s.settimeout(5)
        assert s.recv(100) == b""
    with socket.socket(socket.AF_UNIX) as s:  # says nothing: dropped after -t 400 ms
        s.connect(zygote.sock_path)
        s.settimeout(5)
        t = time.monotonic()
        assert s.recv(100) == b""
        assert 0.3 < time.monotonic() - t < 3
    assert zygote.request("/hello.php").status == 200  # the worker is still there


def test_a_trickled_head_is_dropped_at_its_one_deadline(zygote):
    """-t bounds the whole head, not each read: a byte every 100 ms (each read within the
    400 ms) is dropped once the head's 400 ms are over (issue 36, attack 13)."""
    zygote.fork()
    begin = fastcgi.Record(fastcgi.BEGIN_REQUEST, 1, struct.pack(">HB5x", 1, 0)).encode()
    params_head = struct.pack(">BBHHBx", 1, fastcgi.PARAMS, 1, 1000, 0)  # 1,000 bytes to come
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(zygote.sock_path)
        s.sendall(begin + params_head)
        s.settimeout(0.1)
        dropped = False
        for _ in range(40):  # 4 s of trickling, far past the head's 400 ms
            try:
                s.send(b"\x01")
                if s.recv(100) == b"":
                    dropped = True
                    break
            except TimeoutError:
                continue
            except OSError:  # reset or broken pipe: dropped as well
                dropped = True
                break
        assert dropped, "the worker held a trickling client past its head deadline"
    assert zygote.request("/hello.php").status == 200  # the worker is still there


def _cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_a_path_of_slashes_costs_the_worker_next_to_nothing(zygote):
    """400,000 slashes in SCRIPT_FILENAME: no such script, found without a stat() per
    slash (quadratic: 1.8 s of CPU before; issue 36, attack 13). Counted in the worker's
    CPU time, the work it did, not in how long the answer took."""
    pid = zygote.fork()
    before = _cpu(pid)
    r = zygote.request("/x.php", extra={"SCRIPT_FILENAME": "/" * 400_000})
    assert r.complete and r.status == 404
    assert _cpu(pid) - before < 0.3
    # PATH_INFO is still split off a real script (cgi.fix_pathinfo)
    r = zygote.request("/hello.php//extra/path", extra={
        "SCRIPT_FILENAME": str(zygote.root / "hello.php") + "//extra/path"})
    assert r.status == 200


def test_stop_lets_the_running_request_finish_and_max_requests_recycles(zygote):
    pid = zygote.fork()
    got = []
    t = threading.Thread(target=lambda: got.append(zygote.request("/sleep.php?ms=800")))
    t.start()
    time.sleep(0.3)
    os.kill(pid, signal.SIGTERM)  # a graceful retire, mid-request
    t.join()
    assert got[0].body == b"slept"  # not cut short, unlike FPM's children
    assert zygote.recv() == [f"exit {pid} 0"]  # no PID namespace here: the same number
    del zygote.workers[pid]
    short = zygote.fork(max_requests=2)
    for _ in range(2):
        assert zygote.request("/hello.php").status == 200
    assert zygote.recv() == [f"exit {short} 0"]  # served its two, then left on its own
    del zygote.workers[short]


def test_kept_connection_skips_an_unread_body(zygote):
    """nginx's fastcgi_keep_conn: a request whose body PHP never read, then another."""
    zygote.fork()

    def request(rid: int, uri: str, body: bytes) -> bytes:
        params = fastcgi.cgi_params(str(zygote.root), uri, "POST" if body else "GET", body,
                                    (("Content-Type", "application/json"),) if body else ())
        return fastcgi.encode_request(params, body, rid, keep=True)

    with socket.socket(socket.AF_UNIX) as s:
        s.connect(zygote.sock_path)
        s.settimeout(10)
        for rid, body in ((1, b'{"x": "' + b"y" * 200_000 + b'"}'), (2, b"")):
            s.sendall(request(rid, "/hello.php", body))
            reader, out, done = fastcgi.RecordReader(), b"", False
            while not done:
                data = s.recv(65536)
                assert data, f"connection closed during request {rid}"
                for rec in reader.feed(data):
                    assert rec.request_id == rid
                    out += rec.content if rec.type == fastcgi.STDOUT else b""
                    done = done or rec.type == fastcgi.END_REQUEST
            assert b"sapi=fpm-fcgi" in out


def test_a_new_worker_serves_before_its_host_pid_is_known(zygote):
    """An ondemand first request does not wait for the master's answer to the worker's
    hello, nor do the requests after it: without an access.log, a worker whose scripts
    read no environment never waits for it (HELLO_WAIT_MS is 5 s)."""
    pid = zygote.fork(max_requests=2, answer=False)
    for code in (201, 202):
        t = time.monotonic()
        r = zygote.request(f"/status.php?code={code}")
        assert r.status == code and time.monotonic() - t < 1
    assert zygote.recv() == [f"exit {pid} 0"]
    del zygote.workers[pid]


@pytest.mark.parametrize("reader", HOST_PID_READERS)
def test_whatever_reads_the_environment_waits_for_the_host_pid(zygote, reader):
    """... but every reader of TENANTFPM_WORKER_PID sees it, the answer 0.3 s late."""
    (zygote.root / "env.php").write_text("<?php " + HOST_PID_READERS[reader])
    pid = zygote.fork(max_requests=1, answer=False)
    got: list = []
    t = threading.Thread(target=lambda: got.append(zygote.request("/env.php")))
    t.start()
    time.sleep(0.3)
    assert not got  # waiting for the answer
    zygote.answer_hello(pid)
    t.join()
    assert got[0].status == 200 and got[0].body == str(pid).encode(), got[0]
    assert zygote.recv() == [f"exit {pid} 0"]
    del zygote.workers[pid]


def start_spare_zygote(binary: str, tmp_path: Path, name: str, ini_extra: str = "") -> Zygote:
    """A zygote that keeps a spare (-s 0: forked as soon as it has none and no order
    waits), in its own directory."""
    return start_zygote(binary, tmp_path / name, "-s", "0", ini_extra=ini_extra)


@pytest.fixture(params=BINARIES)
def spare_zygote(request, tmp_path):
    z = start_spare_zygote(request.param, tmp_path, "z")
    yield z
    z.close()


def test_the_next_order_goes_to_the_spare_and_another_is_forked(spare_zygote):
    z = spare_zygote
    (z.root / "env.php").write_text("<?php " + HOST_PID_READERS["exec"])

    def serves_as(pid: int) -> bool:
        r = z.request("/hello.php")
        return (r.status == 200 and f"pid={pid} sapi=fpm-fcgi user=tenant".encode() in r.body
                and z.request("/env.php").body == str(pid).encode())  # the hello answered

    the_next_order_goes_to_the_spare(z, serves_as)


def test_a_killed_spare_is_never_reported_and_is_replaced(spare_zygote):
    killed_spare_is_never_reported_and_is_replaced(
        spare_zygote, lambda: spare_zygote.request("/status.php?code=202").status == 202)


@pytest.mark.parametrize("binary", BINARIES)
def test_the_spare_ends_with_its_zygote(binary, tmp_path):
    def close_killed(z: Zygote) -> None:
        z.ctl.close()
        z.listener.close()
        os.close(z.stderr_r)

    the_spare_ends_with_its_zygote(lambda name: start_spare_zygote(binary, tmp_path, name),
                                   close_killed)


def test_spares_that_keep_dying_are_given_up(spare_zygote):
    z = spare_zygote

    def stderr() -> bytes:
        os.set_blocking(z.stderr_r, False)  # the zygote's own stderr
        return os.read(z.stderr_r, 65536)

    spares_that_keep_dying_are_given_up(
        z, lambda: z.request("/status.php?code=203").status == 203, stderr)


# the system call an idle spare waits in for its order, by the machine's numbering
RECVMSG = {"x86_64": 47, "aarch64": 212}[os.uname().machine]


def spare_waits(pid: int) -> None:
    """Until the spare waits in recvmsg for its order (rehearsed, when it rehearses)."""
    def waiting() -> bool:
        call = procfs.read_syscall(pid)
        return call is not None and call[0] == RECVMSG
    wait_for(f"spare {pid} to wait for its order", waiting)


def faults_once_idle(pid: int) -> int:
    """The worker's minor faults so far, once it waits in accept for its next connection."""
    wait_for(f"worker {pid} to wait in accept", lambda: procfs.is_idle_in_accept(pid))
    return minor_faults(pid)


def first_request_faults(z: Zygote, pid: int) -> int:
    """The page faults (copies of the zygote's pages, mostly) of a fresh worker's first
    request, from its first accept to its next."""
    before = faults_once_idle(pid)
    assert z.request("/hello.php").status == 200
    return faults_once_idle(pid) - before


def forked_worker_faults(binary: str, tmp_path: Path) -> int:
    z = start_zygote(binary, tmp_path / "forked")
    try:
        return first_request_faults(z, z.fork())
    finally:
        z.close()


# ASan's shadow memory faults in pages of its own (118 against 217 with the rehearsal):
# that build is here for memory errors, which the other spare tests run it for
@pytest.mark.parametrize("binary", BINARIES[:2])
def test_a_spare_rehearses_a_request_while_it_waits(binary, tmp_path):
    """The spare runs PHP's request start and end before its order (sapi/rehearse.c), so
    its first request copies few of the zygote's pages: the ondemand first request does
    not wait for them. Counted in page faults, not time: about 40 against 170 here."""
    forked = forked_worker_faults(binary, tmp_path)
    z = start_spare_zygote(binary, tmp_path, "z")
    try:
        spare_waits(spare_of(z))
        rehearsed = first_request_faults(z, z.fork())
    finally:
        z.close()
    assert rehearsed < forked / 2, (rehearsed, forked)


@pytest.mark.parametrize("binary", BINARIES)
def test_a_spare_does_not_rehearse_what_a_request_would_leave_behind(binary, tmp_path):
    """With session.auto_start a request start opens a session (a file in save_path): a
    spare that rehearsed would leave one behind each time. It does not rehearse then, and
    only the request's own session is written."""
    sessions = tmp_path / "sessions"
    sessions.mkdir()
    forked = forked_worker_faults(binary, tmp_path)
    z = start_spare_zygote(binary, tmp_path, "z",
                           f"session.auto_start = 1\nsession.save_path = {sessions}\n")
    try:
        spare_waits(spare_of(z))
        assert not list(sessions.iterdir())
        unrehearsed = first_request_faults(z, z.fork())
    finally:
        z.close()
    assert len(list(sessions.iterdir())) == 1
    assert unrehearsed > forked / 2, (unrehearsed, forked)


def pids_cgroup() -> Path | None:
    """A cgroup directory with the pids controller: v1's hierarchy, or v2's root."""
    if Path("/sys/fs/cgroup/pids/pids.max").exists() or Path("/sys/fs/cgroup/pids").is_dir():
        return Path("/sys/fs/cgroup/pids")
    root = Path("/sys/fs/cgroup")
    if "pids" in (root / "cgroup.subtree_control").read_text(errors="replace").split():
        return root
    return None


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.skipif(os.geteuid() != 0 or pids_cgroup() is None, reason="a pids cgroup: root")
def test_a_refused_spare_fork_waits_for_the_next_order(spare_zygote):
    """At the tenant's pids limit the spare's fork fails; retrying it at each look would
    copy the zygote's memory map for nothing (the kernel checks the limit late): the
    zygote tries again after the next order."""
    z = spare_zygote
    spare_of(z)
    group = pids_cgroup() / f"tenantfpm-test-spare-{os.getpid()}"
    group.mkdir()
    try:
        (group / "pids.max").write_text("2")
        for pid in (z.proc.pid, spare_of(z)):
            (group / "cgroup.procs").write_text(str(pid))  # the zygote and its spare: full
        refused = lambda: int((group / "pids.events").read_text().split()[1])  # noqa: E731
        pid = z.fork()  # handed to the spare; the next spare's fork is refused
        assert z.request("/status.php?code=204").status == 204
        wait_for("the refused fork", refused)
        before = cpu_seconds(z.proc.pid)
        time.sleep(1)
        assert refused() == 1  # not tried again at each look
        assert cpu_seconds(z.proc.pid) - before < 0.1
        assert children_of(z.proc.pid) == {pid}
        os.kill(pid, signal.SIGKILL)
        assert z.recv() == [f"exit {pid} {signal.SIGKILL}"]
        del z.workers[pid]
        again = z.fork()  # forked at the order (room for one), then one more try
        assert z.request("/status.php?code=205").status == 205
        wait_for("the spare's second try", lambda: refused() == 2)
        time.sleep(0.5)
        assert refused() == 2 and children_of(z.proc.pid) == {again}
    finally:
        for pid in (group / "cgroup.procs").read_text().split():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL) if int(pid) != z.proc.pid else None
        parent = group.parent / "cgroup.procs"
        for pid in (group / "cgroup.procs").read_text().split():
            with contextlib.suppress(OSError):
                parent.write_text(pid)
        wait_for("an empty group", lambda: not (group / "cgroup.procs").read_text().split())
        group.rmdir()
