"""One definition of each master-worker format (tenantfpm/wire/), checked across the two
languages: the generated C header is current, and the C codecs (sapi/wire_probe.c drives
them) read what Python writes and write what Python reads."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from tenantfpm.pyworker import accesslog
from tenantfpm.sandbox import warm
from tenantfpm.wire import accessformat, cheader, order, scoreboard
from tenantfpm.wire.fds import HOST_PID_ENV
from tests.test_warm_order import _plan, records

SAPI = Path(__file__).parent.parent / "sapi"


@pytest.fixture(scope="module")
def probe(tmp_path_factory) -> str:
    """The probe built from this checkout (`make test` builds it; else built here)."""
    built = os.environ.get("TENANTFPM_WIRE_PROBE")
    if built:
        return built
    out = tmp_path_factory.mktemp("probe")
    r = subprocess.run(["make", "-s", "-C", str(SAPI), "probe", f"OUT={out}"],
                       capture_output=True, text=True)
    if r.returncode:
        pytest.skip(f"wire-probe does not build here: {r.stderr[-300:]}")
    return str(out / "wire-probe")


def run(probe: str, *args: str, data: bytes = b"", fds: tuple[int, ...] = ()) -> tuple[int, str]:
    r = subprocess.run([probe, *args], input=data, capture_output=True, pass_fds=fds,
                       timeout=30)
    assert not r.stderr, r.stderr.decode(errors="replace")  # the sanitizers say nothing
    return r.returncode, r.stdout.decode("utf-8", "surrogateescape")


def test_the_c_header_is_generated_from_the_definitions():
    """`make wire` after changing tenantfpm/wire/."""
    assert (SAPI / "wire.h").read_text() == cheader.header()


def test_a_slot_the_c_worker_writes_is_what_the_master_reads(probe):
    fd, reader = scoreboard.Board.create()
    try:
        want = scoreboard.Slot(
            state=scoreboard.RUNNING, requests=7, accepted=9, request_start=1234.5,
            content_length=42, last_duration=0.25, last_cpu=0.125, last_cpu_percent=50.0,
            last_memory=3 << 20, last_status=404, method="PÖST", uri="/a?b=ü",
            script="/srv/a/index.php", fatal="")
        args = [str(getattr(want, name)) for name, _, _ in scoreboard.NUMBERS if name != "pad"]
        texts = [getattr(want, name) for name, _ in scoreboard.TEXTS]
        assert run(probe, "slot", f"/proc/self/fd/{fd}", *args, *texts, fds=(fd,))[0] == 0
        assert reader.read() == want
        # a text longer than its field: both writers keep what fits and a NUL
        long = dict(zip((n for n, _ in scoreboard.TEXTS), texts, strict=True))
        long["uri"] = "/" + "x" * 5000
        assert run(probe, "slot", f"/proc/self/fd/{fd}", *args, *long.values(), fds=(fd,))[0] == 0
        from_c = reader.read()
        board = scoreboard.Board(fd)
        board.publish(scoreboard.Slot(**{**want.__dict__, "uri": long["uri"]}), texts=True)
        board.close()
        assert from_c == reader.read()
        assert from_c.uri == long["uri"][:1023]
    finally:
        reader.close()
        os.close(fd)


def _expected(plan, message: bytes) -> list[str]:
    """What the C parser should have understood of warm.order(plan)."""
    box = plan.sandbox
    out = [f"argv {a}" for a in plan.argv]
    out += [f"env {k}={v}" for k, v in {**plan.env, HOST_PID_ENV: "4242"}.items()]
    out += [f"cwd {plan.cwd}", f"hostname {box.hostname}", f"new_root {box.root.new_root}",
            f"netns {box.netns}", f"uid {plan.uid}", f"gid {plan.gid}", "nofile 1024 4096",
            "core_dumps 0", f"policy {os.SCHED_BATCH}", "caught 1",
            f"pass_fds {len(plan.pass_fds)}"]
    (filt,) = [v for t, v in records(message) if t == order.TAGS["SECCOMP"]]
    out.append(f"seccomp {len(filt)}")
    out += [f"cgroup {c}" for c in plan.cgroup_procs]
    for s in box.steps:
        flags = warm.rootfs.bind_flags(s) if s.op == "bind" else s.flags
        out.append(f"step {s.op} {s.target} source={s.source or '(none)'} "
                   f"fstype={s.fstype or '(none)'} data={s.data or '(none)'} "
                   f"content={len(s.content.encode())} flags={flags} "
                   f"nofollow={int(s.nofollow)} kind={s.kind if s.nofollow else 'dir'}")
    return out


def test_an_order_python_encodes_is_what_the_c_side_parses(probe):
    plan = _plan()
    message = warm.order(plan, caught=True, host_pid=4242, nofile=(1024, 4096))
    code, out = run(probe, "order", data=message)
    assert code == 0
    assert out.splitlines() == _expected(plan, message)


def test_both_sides_hold_the_same_bounds(probe):
    base = warm.order(_plan(), caught=True, host_pid=4242, nofile=None)
    for name, record_name in (("CGROUPS", "CGROUP"), ("ARGS", "ARGV"), ("ENV", "ENV")):
        have = sum(1 for t, _ in records(base) if t == order.TAGS[record_name])
        value = "X=y" if record_name == "ENV" else "/x"
        room = order.BOUNDS[name] - have
        assert run(probe, "order", data=base + order.record(record_name, value) * room)[0] == 0
        assert run(probe, "order",
                   data=base + order.record(record_name, value) * (room + 1))[0] == 1
    # and what Python will not encode, C would not take
    many = _plan(cgroup_procs=[f"/c{i}" for i in range(order.BOUNDS["CGROUPS"] + 1)])
    assert warm.order(many, caught=True, host_pid=1, nofile=None) is None
    assert run(probe, "order", data=order.record("PASS_FDS", "9") + base)[0] == 1


FORMATS = [
    '%R - %u %t "%m %r%Q%q" %s %f %{mili}d %{kilo}M %C%%',
    "%{REMOTE_ADDR}e %{HTTP_HOST}e %{NOPE}e %n %p %P %l",
    "%{micro}d %{microseconds}d %{milliseconds}d %d %{bytes}M %{mega}M %M",
    "%{%Y-%m-%d}t [%{Content-Type}o] [%{X-None}o] %{X-Powered-By}o",
    "plain text, no codes",
]
PARAMS = {"REMOTE_ADDR": "10.0.0.1", "REQUEST_METHOD": "GET", "REQUEST_URI": "/x/y?a=1",
          "QUERY_STRING": "a=1", "SCRIPT_FILENAME": "/srv/a/index.php", "CONTENT_LENGTH": "12",
          "HTTP_HOST": "shop.example", "REMOTE_USER": "bob\x1b[31m\x7f\tx\u009b1m\u00e9"}
HEADERS = [("Content-Type", "text/html"), ("X-Powered-By", "PHP/8.2")]


@pytest.fixture
def utc():
    before = os.environ.get("TZ")
    os.environ["TZ"] = "UTC"
    time.tzset()
    yield
    if before is None:
        os.environ.pop("TZ")
    else:
        os.environ["TZ"] = before
    time.tzset()


@pytest.mark.parametrize("fmt", FORMATS)
def test_both_access_log_writers_write_the_same_line(probe, utc, fmt):
    entry = accesslog.Entry(dict(PARAMS), status=201, started=1765000000.0, duration=0.25,
                            cpu=0.1, memory=5 << 20, pool="shop", pid=4242, ppid=17,
                            headers=HEADERS)
    python = accesslog.render(accesslog.compile_format(fmt), entry) + "\n"
    args = [fmt, "shop", "201", "1765000000", "0.25", "0.1", str(5 << 20), "4242", "17",
            *(f"{k}={v}" for k, v in PARAMS.items()), *(f"o:{k}={v}" for k, v in HEADERS)]
    code, c = run(probe, "access", *args)
    assert code == 0
    assert c == python


@pytest.mark.parametrize("fmt", ["%R %z", "%{x}", "100%", "%{H}o" * 9])
def test_both_writers_refuse_the_same_formats(probe, fmt):
    with pytest.raises(ValueError):
        accessformat.parse(fmt)
    assert run(probe, "access", fmt, "p", "200", "0", "0", "0", "0", "1", "1")[0] == 1
    ok = "%{H}o" * accessformat.MAX_HEADERS
    accessformat.parse(ok)
    assert run(probe, "access", ok, "p", "200", "0", "0", "0", "0", "1", "1")[0] == 0
