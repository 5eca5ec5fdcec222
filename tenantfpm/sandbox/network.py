"""Tenant network namespaces: `none` (loopback only) and `isolated` (loopback + a veth).

One namespace per tenant, shared by its workers, kept alive by bind-mounting
its handle the way `ip netns add` does (in the master's private mount
namespace, so it cannot outlive the master). The namespace is made in a
short-lived thread: unshare(CLONE_NEWNET) moves only that thread, the master's
own thread never leaves the host's network, and pyroute2's synchronous API
runs outside the master's event loop. pyroute2 is imported with the first such
namespace: 22 MB a master whose tenants use the host's network never carries.

`isolated` gives the tenant eth0 = <base>+2/30 with a default route via the
host end <base>+1/30 (interface tf<crc32>). Reaching beyond the host needs
forwarding and NAT, which are the operator's call (docs/security.md, "Isolated network").
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import threading
import zlib
from dataclasses import dataclass

from tenantfpm.sandbox import linux


@dataclass(frozen=True)
class Link:
    host_ifname: str
    host_address: str
    tenant_address: str
    prefixlen: int = 30


def host_ifname(tenant: str) -> str:
    return f"tf{zlib.crc32(tenant.encode()):08x}"  # IFNAMSIZ: 15 characters at most


def link_for(tenant: str, subnet: str, index: int) -> Link:
    """The index-th /30 of the subnet: .1 is the host end, .2 the tenant's."""
    net = ipaddress.IPv4Network(subnet)
    blocks = 1 << (30 - net.prefixlen)
    if index >= blocks:
        raise OSError(f"isolated_subnet {subnet} has no room for another tenant ({blocks} /30s)")
    base = int(net.network_address) + 4 * index
    return Link(host_ifname(tenant), str(ipaddress.IPv4Address(base + 1)),
                str(ipaddress.IPv4Address(base + 2)))


def create(handle: str, link: Link | None) -> None:
    """Make the namespace behind `handle`; raises OSError with the reason."""
    result: list[BaseException] = []

    def work() -> None:
        try:
            _create(handle, link)
        except BaseException as e:  # handed to the caller's thread
            result.append(e)

    t = threading.Thread(target=work, name="netns")
    t.start()
    t.join()
    if result:
        remove(handle)
        e = result[0]
        raise e if isinstance(e, OSError) else OSError(f"network namespace: {e}")


def _create(handle: str, link: Link | None) -> None:
    from pyroute2 import IPRoute

    host_fd = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    host = IPRoute()  # opened before unshare: it stays in the host's namespace
    try:
        linux.unshare(linux.CLONE_NEWNET)
        os.close(os.open(handle, os.O_CREAT | os.O_WRONLY, 0o600))
        linux.mount("/proc/thread-self/ns/net", handle, None, linux.MS_BIND)
        with IPRoute() as ns:
            ns.link("set", index=ns.link_lookup(ifname="lo")[0], state="up")
            if link is None:
                return
            stale = host.link_lookup(ifname=link.host_ifname)
            if stale:  # left by a master that died: its namespace is gone, the name is not
                host.link("del", index=stale[0])
            ns.link("add", ifname="eth0", kind="veth", peer=link.host_ifname)
            ns.link("set", index=ns.link_lookup(ifname=link.host_ifname)[0], net_ns_fd=host_fd)
            eth0 = ns.link_lookup(ifname="eth0")[0]
            ns.addr("add", index=eth0, address=link.tenant_address, prefixlen=link.prefixlen)
            ns.link("set", index=eth0, state="up")
            ns.route("add", gateway=link.host_address)
        idx = host.link_lookup(ifname=link.host_ifname)[0]
        host.addr("add", index=idx, address=link.host_address, prefixlen=link.prefixlen)
        host.link("set", index=idx, state="up")
    finally:
        host.close()
        os.close(host_fd)


def remove(handle: str) -> None:
    """Drop the handle; the kernel frees the namespace (and the veth) with its last worker."""
    with contextlib.suppress(OSError):
        linux.umount2(handle, linux.MNT_DETACH)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(handle)
