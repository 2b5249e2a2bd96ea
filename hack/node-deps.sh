#!/usr/bin/env bash
# Installs, when missing, the Debian packages the local cluster's real node
# needs (test/e2e/cluster, docs/local-cluster.md): containerd and runc (the
# container runtime), the CNI plugins (bridge, host-local, loopback),
# iptables and conntrack (kube-proxy), at the versions this was verified with.
# Idempotent and quiet when everything is there.
set -euo pipefail

log() { echo "node-deps: $*" >&2; }

# name=version, as `apt-get install` takes them (Debian 12 bookworm).
PACKAGES=(
  "containerd=1.6.20~ds1-1+deb12u3"
  "runc=1.1.5+ds1-1+deb12u1"
  "containernetworking-plugins=1.1.1+ds1-3+b5"
  "iptables=1.8.9-2"
  "conntrack=1:1.4.7-1+b2"
)

missing=()
for p in "${PACKAGES[@]}"; do
  name=${p%%=*}
  want=${p#*=}
  have=$(dpkg-query -W -f='${Status} ${Version}' "$name" 2>/dev/null || true)
  [[ $have == "install ok installed $want" ]] || missing+=("$p")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0

if [[ $(id -u) -ne 0 ]] && ! command -v sudo >/dev/null; then
  log "ERROR: missing ${missing[*]} and installing them needs root (apt-get install)"; exit 1
fi
SUDO=; [[ $(id -u) -ne 0 ]] && SUDO="sudo -n"
log "installing ${missing[*]} (Debian packages) ..."
$SUDO apt-get update -qq
if ! DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; then
  log "ERROR: apt-get install ${missing[*]} failed; a newer Debian point release may have replaced a pinned version (apt-cache policy <name>), update PACKAGES in $0"
  exit 1
fi
# Debian's containerd package ships a service; there is no init system here,
# and the local cluster runs its own containerd with its own configuration.
log "installed: $(containerd --version 2>/dev/null | awk '{print $3}') runc $(runc --version 2>/dev/null | awk 'NR==1{print $3}')"
