#!/bin/sh
# Runs inside the throwaway VM (virtme-ng): the host's filesystem read-only, with
# writable overlays over /etc, /tmp, /var... that vanish with the VM.
# virtme hides the host's /etc/shadow behind an empty file mount; useradd must be able
# to rewrite it (the VM's copy only: the overlay upper dir lives in the VM's memory)
if mountpoint -q /etc/shadow 2>/dev/null || grep -q " /etc/shadow " /proc/mounts; then
    umount /etc/shadow
    : > /etc/shadow
    chmod 640 /etc/shadow
fi
echo ">> in the VM: kernel $(uname -r), $(stat -fc %T /sys/fs/cgroup) at /sys/fs/cgroup" \
     "($(cat /sys/fs/cgroup/cgroup.controllers 2>/dev/null || echo v1 hierarchies))"
cd "$1"
shift
# unbuffered: each test's line leaves the VM when it is printed, timed by run.py
export PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 HYPOTHESIS_STORAGE_DIRECTORY=/tmp/hypothesis
rc=0
.venv/bin/pytest -p no:cacheprovider "$@" || rc=$?
echo "$rc" > "$VM_RESULT"
