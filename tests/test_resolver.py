"""Name lookups under the filter of a tenant behind a unix socket, for real.

That filter refuses sendmsg/sendmmsg (seccomp.passing_rules: no descriptor leaves over a
FastCGI connection), and glibc's resolver sends the A and AAAA queries of a getaddrinfo()
together with sendmmsg. The sandbox's resolv.conf asks for one query at a time
(rootfs.resolver_steps); this runs a lookup under the real filter against a DNS server
on loopback, in a network and mount namespace of its own (the host's resolv.conf and
port 53 untouched), with and without that resolv.conf.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tenantfpm.sandbox import rootfs

LOOKUP = r'''
import os, socket, struct, sys, threading
from tenantfpm.sandbox import linux, privileges, seccomp

resolv = sys.argv[1]
linux.unshare(linux.CLONE_NEWNS | linux.CLONE_NEWNET)
linux.mount(None, "/", None, linux.MS_REC | linux.MS_PRIVATE)
linux.mount(resolv, "/etc/resolv.conf", None, linux.MS_BIND)
os.system("ip link set lo up")

server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
server.bind(("127.0.0.1", 53))

def answer():
    """A and AAAA for any name: the question echoed, one record."""
    while True:
        q, peer = server.recvfrom(512)
        end = q.index(b"\0", 12) + 5
        qtype = struct.unpack_from("!H", q, end - 4)[0]
        rdata = (socket.inet_pton(socket.AF_INET6, "2001:db8::7") if qtype == 28
                 else socket.inet_aton("192.0.2.7"))
        head = q[:2] + struct.pack("!HHHHH", 0x8180, 1, 1, 0, 0)
        rr = struct.pack("!HHHIH", 0xC00C, qtype, 1, 60, len(rdata)) + rdata
        server.sendto(head + q[12:end] + rr, peer)

threading.Thread(target=answer, daemon=True).start()
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    try:
        privileges.no_new_privs()
        seccomp.install(channel=False, unix_listener=True)
        found = socket.getaddrinfo("shop.test", 80, proto=socket.IPPROTO_TCP)
        said = " ".join(sorted(a[4][0] for a in found))
    except OSError as e:
        said = "error %s" % e
    os.write(w, said.encode())
    os._exit(0)
os.close(w)
print(os.read(r, 512).decode())
os.waitpid(pid, 0)
'''


def lookup(tmp_path: Path, resolv_conf: str) -> str:
    f = tmp_path / "resolv.conf"
    f.write_text(resolv_conf)
    r = subprocess.run([sys.executable, "-c", LOOKUP, str(f)], capture_output=True, text=True,
                       timeout=60, cwd=Path(__file__).parent.parent)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


@pytest.mark.skipif(os.geteuid() != 0, reason="namespaces and a mount need root")
def test_getaddrinfo_works_under_the_filter_with_the_sandboxs_resolv_conf(tmp_path):
    class Host:
        def kind(self, path: str) -> str | None:
            return "file"

        def text(self, path: str) -> str | None:
            return "nameserver 127.0.0.1\noptions timeout:1 attempts:1"

    (step,) = rootfs.resolver_steps(Host(), one_at_a_time=True)
    assert lookup(tmp_path, step.content) == "192.0.2.7 2001:db8::7"
    # the host's own, as a bind would show it: the A and AAAA go out in one sendmmsg,
    # which the filter refuses, and glibc gives up
    assert lookup(tmp_path, "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n"
                  ).startswith("error")
