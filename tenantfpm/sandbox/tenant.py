"""What a tenant's workers share, set up by the master: /tmp, network namespace, the plan.

Per worker is only what spawn.py does; these pieces live as long as the
tenant's pool (a reload keeps them), and go with it.
"""

from __future__ import annotations

import contextlib
import os

from tenantfpm import runtimes
from tenantfpm.config.tenant import Tenant
from tenantfpm.sandbox import linux, network, rootfs
from tenantfpm.sandbox.spawn import Sandbox


class TenantSandbox:
    def __init__(self, tenant: Tenant) -> None:
        self.tenant = tenant
        self.netns: str | None = None
        self.link: network.Link | None = None
        self.link_index: int | None = None  # which /30 of isolated_subnet it holds
        self.tmp_mounted: int | None = None  # size it was mounted with

    @property
    def tmp(self) -> str:
        return os.path.join(self.tenant.run_dir, "tmp")

    @property
    def new_root(self) -> str:
        return os.path.join(self.tenant.run_dir, "root")

    def prepare(self, tenant: Tenant, link_index: int, subnet: str) -> None:
        """Make (or update for a reload) the shared pieces, and plan the worker's root once
        (a bind whose source is missing fails the start here; planning mounts /tmp)."""
        old = self.tenant
        self.tenant = tenant
        iso = tenant.site.isolation
        os.makedirs(tenant.run_dir, mode=0o755, exist_ok=True)
        os.makedirs(self.new_root, mode=0o755, exist_ok=True)
        if self.netns is not None and old.site.isolation.network != iso.network:
            self._drop_network()
        if iso.network != "host" and self.netns is None:
            handle = os.path.join(tenant.run_dir, "netns")
            link = (network.link_for(tenant.name, subnet, link_index)
                    if iso.network == "isolated" else None)
            network.create(handle, link)
            self.netns, self.link = handle, link
            self.link_index = link_index if link else None
        self.plan()

    def plan(self) -> Sandbox:
        """The sequence a zygote or worker runs, planned when one starts rather than kept:
        it is about 3 kB, and 10,000 idle tenants need none of it. /tmp is mounted again
        if the tenant rested."""
        tenant = self.tenant
        iso = tenant.site.isolation
        self._mount_tmp(iso.tmp_size)
        runtime = runtimes.of(tenant)
        spec = rootfs.RootSpec(
            new_root=self.new_root, tenant_root=tenant.site.root, user=tenant.site.user,
            uid=tenant.uid, gid=tenant.gid, group=tenant.group_name, tmp_source=self.tmp,
            ini_source=runtime.ini_source(tenant), hide_processes=iso.hide_processes,
            queries_one_at_a_time=tenant.listen.is_unix,
            binds=[(b.source, b.target or b.source, b.readonly) for b in iso.binds]
            + runtime.binds(tenant))
        return Sandbox(hostname=iso.hostname or tenant.name, root=spec,
                       steps=rootfs.plan(spec), pid_namespace=iso.hide_processes,
                       netns=self.netns)

    def _mount_tmp(self, size: int) -> None:
        if self.tmp_mounted == size:
            return
        os.makedirs(self.tmp, mode=0o755, exist_ok=True)
        flags = linux.MS_NOSUID | linux.MS_NODEV
        if self.tmp_mounted is not None:  # a reload changed tmp_size: resize in place
            linux.mount("tmpfs", self.tmp, "tmpfs", flags | linux.MS_REMOUNT, f"size={size}")
        else:
            if os.path.ismount(self.tmp):  # ours from an earlier start of this master
                linux.umount2(self.tmp, linux.MNT_DETACH)
            linux.mount("tmpfs", self.tmp, "tmpfs", flags, f"size={size},mode=1777")
        self.tmp_mounted = size

    def _drop_network(self) -> None:
        if self.netns is not None:
            network.remove(self.netns)
        self.netns = self.link = self.link_index = None

    def rest(self) -> None:
        """The tenant has no process left: its /tmp goes, and its next start gets a fresh
        one (as after a reboot). Every sandbox start copies the master's mount table into a
        new namespace: it keeps the active tenants' mounts only, not one per idle tenant."""
        if self.tmp_mounted is not None:
            with contextlib.suppress(OSError):
                linux.umount2(self.tmp, linux.MNT_DETACH)
            self.tmp_mounted = None

    def release(self) -> None:
        """The pool is gone: its /tmp and its network namespace handle go too."""
        self._drop_network()
        self.rest()
