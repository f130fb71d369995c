#!/bin/bash
# Build (once) and print a cached Debian root with an IKEv2 implementation for the interop runs
# (tests/kernel/interop.sh); nothing is installed over the system's packages.
#   tests/kernel/roots.sh sid-strongswan      Debian sid: strongSwan 6.1 (per_cpu_sas), iproute2 7.x
#   tests/kernel/roots.sh trixie-libreswan    Debian 13: Libreswan 5.2
# Cache: $MULTISA_ROOT_CACHE, default ~/.cache/multisa-roots. A complete entry (a .done stamp
# listing its package versions) is reused as it is; a failed build leaves no entry and says why.
# sid moves: if today's sid cannot be bootstrapped, keep the cached root (never rebuilt while
# it is complete) or point MULTISA_ROOT_CACHE at a machine's working one.
set -euo pipefail
WHAT=${1:?usage: roots.sh sid-strongswan|trixie-libreswan}
CACHE=${MULTISA_ROOT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/multisa-roots}
MIRROR=${MULTISA_DEBIAN_MIRROR:-http://deb.debian.org/debian}
export DEBIAN_FRONTEND=noninteractive
case $WHAT in
sid-strongswan)
  SUITE=sid CHECK="strongswan-charon strongswan-swanctl iproute2"
  PKGS=strongswan-charon,strongswan-swanctl,libstrongswan-standard-plugins,libcharon-extra-plugins,iproute2,iputils-ping ;;
trixie-libreswan)
  SUITE=trixie CHECK="libreswan iproute2"
  PKGS=libreswan,iproute2,iputils-ping ;;
*) echo "roots.sh: unknown root $WHAT (sid-strongswan|trixie-libreswan)" >&2; exit 2 ;;
esac
D=$CACHE/$WHAT
if [ ! -f "$D/.done" ]; then
  [ "$(id -u)" = 0 ] || { echo "roots.sh: building $WHAT needs root (debootstrap)" >&2; exit 125; }
  command -v debootstrap > /dev/null || apt-get -qq install -y --no-install-recommends debootstrap > /dev/null \
    || { echo "roots.sh: debootstrap missing and apt-get install debootstrap failed" >&2; exit 125; }
  mkdir -p "$CACHE"; rm -rf "$D.tmp"
  # no daemon may start inside the root while packages are configured
  if ! debootstrap --variant=minbase --include="$PKGS" "$SUITE" "$D.tmp" "$MIRROR" > "$CACHE/$WHAT.log" 2>&1; then
    echo "roots.sh: cannot build $WHAT: debootstrap $SUITE failed ($(grep -E '^(E|W):' "$CACHE/$WHAT.log" | tail -1)); full log: $CACHE/$WHAT.log" >&2
    rm -rf "$D.tmp"; exit 125
  fi
  chroot "$D.tmp" dpkg-query -W $CHECK > "$D.tmp/.done" 2>&1 \
    || { echo "roots.sh: cannot build $WHAT: $(tail -1 "$D.tmp/.done")" >&2; rm -rf "$D.tmp"; exit 125; }
  rm -rf "$D.tmp/var/cache/apt/archives/"*.deb
  rm -rf "$D"; mv "$D.tmp" "$D"
fi
echo "$D"
