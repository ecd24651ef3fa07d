#!/bin/sh
# Run inside a VM right before it is turned into a Proxmox template: forget this machine's
# identity so every clone gets its own (machine-id, SSH host keys, cloud-init state, nodeform state).
set -eu
systemctl stop nodeform-agent.service 2>/dev/null || true
rm -rf /var/lib/nodeform/* /etc/nodeform/seed.yaml
truncate -s 0 /etc/machine-id
rm -f /var/lib/dbus/machine-id /etc/ssh/ssh_host_*
cloud-init clean --logs --seed
sync
