#!/bin/sh
# Provisioning of the test VMs (see Vagrantfile): make sure the machine runs the wanted
# cgroup hierarchy, then run the project's own test command on it.
set -eu
want="$1"  # v1 | v2
have=v1
[ "$(stat -fc %T /sys/fs/cgroup)" = cgroup2fs ] && have=v2

if [ "$want" != "$have" ]; then
    flag="systemd.unified_cgroup_hierarchy=$([ "$want" = v1 ] && echo 0 || echo 1)"
    echo ">> this machine runs cgroup $have; setting $flag for the next boot"
    sed -i "s/^GRUB_CMDLINE_LINUX=\"[^\"]*/& $flag/" /etc/default/grub
    update-grub
    echo ">> reboot needed: run 'vagrant reload $want --provision' (make vagrant-test does)"
    exit 0
fi

echo ">> cgroup $have: $(cat /sys/fs/cgroup/cgroup.controllers 2>/dev/null || ls /sys/fs/cgroup)"
export DEBIAN_FRONTEND=noninteractive
command -v make >/dev/null || { apt-get update -qq && apt-get install -y -qq make; }
cd /vagrant
make test
