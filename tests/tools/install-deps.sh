#!/usr/bin/env bash
# Installs (as root) or lists (otherwise) the system tools kube-vrrp's tests need.
# Usage: tests/tools/install-deps.sh [--check]
#   --check  only report what is missing (exit 1 if anything is).
set -euo pipefail

# command → Debian package
declare -A PKG=(
  [ip]=iproute2
  [keepalived]=keepalived
  [tcpdump]=tcpdump
  [tshark]=tshark
  [ping]=iputils-ping
  [curl]=curl
  [unzip]=unzip
  [ps]=procps
  [python3]=python3
  [pip3]=python3-pip
  [debootstrap]=debootstrap
)

missing_pkgs=()
for cmd in "${!PKG[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing_pkgs+=("${PKG[$cmd]}")
done

if [ ${#missing_pkgs[@]} -eq 0 ]; then
  echo "install-deps: all system tools present"
  exit 0
fi

if [ "${1:-}" = "--check" ] || [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: missing tools; install them with:" >&2
  echo "  sudo apt-get update && sudo apt-get install -y ${missing_pkgs[*]}" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
# tshark asks whether non-root users may capture; answer no without a prompt.
echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections 2>/dev/null || true
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing_pkgs[@]}" >/dev/null
echo "install-deps: installed ${missing_pkgs[*]}"
