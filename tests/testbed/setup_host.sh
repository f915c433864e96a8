#!/usr/bin/env bash
# Prepare a fresh Debian 12 machine (as root) for the test bed and the demo:
# the munge and slurm accounts with the cluster's UIDs, then Debian's munge/Slurm packages.
# Idempotent: a second run changes nothing and does not touch the network.
set -euo pipefail

MUNGE_UID=${MUNGE_UID:-1108}
SLURM_UID=${SLURM_UID:-1109}
PACKAGES=(munge slurmd slurmctld slurm-client iproute2 util-linux procps iputils-ping
          libfaketime python3-venv
          mariadb-server slurmdbd  # accounting (slurm.dbd; slurmdbd pulls slurm-wlm-mysql-plugin)
          slurmrestd slurm-wlm-jwt-plugin  # REST API (slurm:restd; auth/jwt is not in basic-plugins)
          systemd-container debootstrap dpkg-dev)  # the last three: booted hosts (hosts.py)

if [ "$(id -u)" != 0 ]; then
    echo "setup_host.sh: must run as root (namespaces, packages, accounts)" >&2
    exit 1
fi

# The accounts come first, with the cluster's IDs, so the packages' postinst reuses them
# (the test bed's nodes share this /etc/passwd, as every node of a real cluster must agree).
ensure_account() {  # name uid home
    local name=$1 uid=$2 home=$3 current
    if ! getent group "$name" >/dev/null; then
        groupadd --system --gid "$uid" "$name"
    fi
    if ! getent passwd "$name" >/dev/null; then
        useradd --system --uid "$uid" --gid "$name" --home-dir "$home" \
            --shell /usr/sbin/nologin "$name"
        return
    fi
    current=$(id -u "$name")
    [ "$current" = "$uid" ] && return
    if pgrep -u "$name" >/dev/null; then
        echo "setup_host.sh: $name has uid $current, want $uid, and processes run as it;" \
             "stop them and run again" >&2
        exit 1
    fi
    local old_gid
    old_gid=$(getent group "$name" | cut -d: -f3)
    groupmod --gid "$uid" "$name"
    usermod --uid "$uid" --gid "$uid" "$name"
    for dir in /etc/munge /var/lib/munge /var/log/munge /run/munge /var/lib/slurm \
               /var/log/slurm /var/spool/slurmd /var/spool/slurmctld; do
        [ -e "$dir" ] || continue
        find "$dir" -xdev -uid "$current" -exec chown -h "$uid" {} +
        find "$dir" -xdev -gid "$old_gid" -exec chgrp -h "$uid" {} +
    done
}
ensure_account munge "$MUNGE_UID" /var/lib/munge
ensure_account slurm "$SLURM_UID" /var/lib/slurm

missing=()
for pkg in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
        || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup_host.sh: installing ${missing[*]}"
    apt-get update -q
    # No init system here: keep the packages' postinst from starting munged/slurmd on the host.
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod 0755 /usr/sbin/policy-rc.d
        trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# A host daemon the install may have left anyway (a policy-rc.d someone else placed that
# allows starts, a postinst that bypasses invoke-rc.d): the sandboxes run their own
# mariadbd/slurmdbd, so none may run on the host. Stopped by its pid file, never by name.
for pidfile in /run/mysqld/mysqld.pid /run/slurmdbd.pid; do
    [ -r "$pidfile" ] || continue
    pid=$(head -n1 "$pidfile" 2>/dev/null || true)
    case "$pid" in ''|*[!0-9]*) continue ;; esac
    comm=$(cat "/proc/$pid/comm" 2>/dev/null || true)
    case "$comm" in
        mariadbd|mysqld|slurmdbd)
            echo "setup_host.sh: stopping the host's $comm (pid $pid) that the install started"
            kill "$pid"
            for _ in $(seq 50); do [ -e "/proc/$pid" ] || break; sleep 0.2; done ;;
    esac
done

# An ordinary user for job tests (slurm.cmd refuses srun/sbatch as root). Like every user of
# a real cluster it exists on all nodes: the sandboxes share this /etc/passwd.
if ! getent passwd sxuser >/dev/null; then
    useradd --uid 1110 --user-group --create-home --shell /bin/bash sxuser
fi
