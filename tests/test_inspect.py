"""Reading live php-cgi processes running known scripts: the frames must match the source
and PHP-FPM's slow.log (each function at the file:line it was called from)."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from tenantfpm.inspect import Unavailable, read_state, symbols
from tenantfpm.inspect.php import php_version

PHP_CGI = os.path.realpath("/usr/bin/php-cgi")

NESTED = """<?php
class Cart {
    function total() {
        return inner(3);
    }
    static function make() {
        return (new Cart())->total();
    }
}
function inner($n) {
    usleep(5000000);
    return $n;
}
function outer() {
    return Cart::make();
}
echo outer();
"""
INCLUDED = """<?php
function from_include() {
    usleep(5000000);
}
from_include();
"""
MAIN_INCLUDE = """<?php
function load() {
    include __DIR__ . '/included.php';
}
load();
"""
EVAL = """<?php
function run_it() {
    eval('usleep(5000000);');
}
run_it();
"""
TOP = """<?php
$x = 1;
usleep(5000000);
"""


def running(tmp_path: Path, script: str, name: str = "main.php", **extra: str):
    for fname, text in extra.items():
        (tmp_path / fname.replace("_", ".")).write_text(text)
    path = tmp_path / name
    path.write_text(script)
    return subprocess.Popen([PHP_CGI, "-n", "-f", str(path)], stdout=subprocess.DEVNULL)


def frames_of(proc: subprocess.Popen, depth: int = 20, expect: int = 1) -> list[tuple]:
    deadline = time.time() + 10
    while True:
        try:
            state = read_state(proc.pid, PHP_CGI, depth)
        except Unavailable:
            if time.time() > deadline:
                raise
            state = None  # not exec'd yet
        got = ([(f.function, os.path.basename(f.file or ""), f.line) for f in state.frames]
               if state else [])
        if len(got) >= expect or time.time() > deadline:
            return got
        time.sleep(0.05)  # still starting, or not yet in the call


@pytest.fixture
def procs():
    started: list[subprocess.Popen] = []
    yield started
    for p in started:
        p.kill()
        p.wait()


def test_nested_functions_methods_and_static_calls(tmp_path, procs):
    procs.append(p := running(tmp_path, NESTED))
    assert frames_of(p, expect=5) == [
        # PHP-FPM's slow.log: the function (no class) at the line that called it
        ("usleep", "main.php", 11), ("inner", "main.php", 4), ("total", "main.php", 7),
        ("make", "main.php", 15), ("outer", "main.php", 17)]


def test_include_shows_the_included_file(tmp_path, procs):
    procs.append(p := running(tmp_path, MAIN_INCLUDE, included_php=INCLUDED))
    assert frames_of(p, expect=4) == [
        ("usleep", "included.php", 3), ("from_include", "included.php", 5),
        ("[INCLUDE_OR_EVAL]", "main.php", 3), ("load", "main.php", 5)]


def test_eval_frame(tmp_path, procs):
    procs.append(p := running(tmp_path, EVAL))
    # PHP 8.2 names eval'd code after the file and line that evaluates it
    assert frames_of(p, expect=3) == [
        ("usleep", "main.php", 3), ("[INCLUDE_OR_EVAL]", "main.php", 3), ("run_it", "main.php", 5)]


def test_a_call_from_the_top_level_script(tmp_path, procs):
    procs.append(p := running(tmp_path, TOP))
    assert frames_of(p) == [("usleep", "main.php", 3)]


def test_request_info_and_depth(tmp_path, procs):
    procs.append(p := running(tmp_path, NESTED))
    frames_of(p, expect=5)
    state = read_state(p.pid, PHP_CGI, 2)
    assert state.script == str(tmp_path / "main.php")
    assert len(state.frames) == 2
    assert read_state(p.pid, PHP_CGI, 0).frames == []


def test_a_fifo_or_hostile_binary_never_blocks_the_reader(tmp_path):
    """A tenant that puts a FIFO where its runtime was: the master reads nothing, at once."""
    fifo = tmp_path / "php-cgi"
    os.mkfifo(fifo)
    with pytest.raises(Unavailable, match="not a regular file"):
        php_version(str(fifo))
    junk = tmp_path / "junk"
    junk.write_bytes(b"\x7fELF" + b"\xff" * 200)
    with pytest.raises(LookupError, match="not a readable ELF"):
        symbols._read_symbols(str(junk))


def test_not_php_or_gone_is_unavailable(tmp_path):
    with pytest.raises(Unavailable, match="not a PHP binary"):
        php_version("/bin/true")
    p = subprocess.Popen(["/bin/sleep", "5"])
    try:
        with pytest.raises(Unavailable, match="not a PHP binary"):
            read_state(p.pid, "/bin/sleep")
    finally:
        p.kill()
        p.wait()
    q = subprocess.Popen([PHP_CGI, "-n", "-r", "1;"], stdout=subprocess.DEVNULL)
    q.wait()
    with pytest.raises(Unavailable):
        read_state(q.pid, PHP_CGI)  # exited: nothing mapped, nothing guessed
