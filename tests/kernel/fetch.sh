#!/bin/bash
# Fetch and unpack a throw-away test kernel into a cache dir (nothing is installed over the
# system's packages; apt runs with private lists for the other Debian suite).
#   tests/kernel/fetch.sh uml613   sid's user-mode-linux (>= 6.13: XFRMA_SA_DIR, XFRMA_SA_PCPU)
#   tests/kernel/fetch.sh qemu     trixie-backports' cloud kernel (>= 6.13) + qemu/virtiofsd (apt)
# Prints the cache dir of the kernel on success. Cache: $MULTISA_KERNEL_CACHE, default
# ~/.cache/multisa-kernels. Idempotent: a complete cache entry is reused as it is.
set -euo pipefail
WHAT=${1:?usage: fetch.sh uml613|qemu}
CACHE=${MULTISA_KERNEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/multisa-kernels}
export DEBIAN_FRONTEND=noninteractive
mkdir -p "$CACHE"

alt_apt() { # private apt lists for one other Debian suite
  local d=$CACHE/apt-$1; mkdir -p "$d/lists/partial" "$d/cache/archives/partial"
  printf 'deb http://deb.debian.org/debian %s main\n' "$1" > "$d/sources.list"
  ALT=(-o "Dir::Etc::SourceList=$d/sources.list" -o Dir::Etc::SourceParts=/dev/null
       -o "Dir::State::Lists=$d/lists" -o "Dir::Cache=$d/cache" -o Dir::State::Status=/dev/null
       -o APT::Sandbox::User=root)
  apt-get -qq "${ALT[@]}" update > /dev/null
}

case $WHAT in
uml613)
  D=$CACHE/uml613
  if [ ! -x "$D/linux.uml" ]; then
    alt_apt sid
    rm -rf "$D.tmp"; mkdir -p "$D.tmp/debs"
    (cd "$D.tmp/debs" && apt-get -qq "${ALT[@]}" download user-mode-linux/sid libc6/sid > /dev/null)
    for f in "$D.tmp"/debs/*.deb; do dpkg -x "$f" "$D.tmp/root"; done
    # sid's linux.uml needs sid's glibc: its ELF interpreter path is patched in place (same
    # length: UML must stay at its link address) to a short symlink made by uml-run.sh
    python3 - "$D.tmp/root/usr/bin/linux.uml" "$D.tmp/linux.uml" <<'PY'
import sys
b = open(sys.argv[1], "rb").read()
old, new = b"/lib64/ld-linux-x86-64.so.2\0", b"/tmp/.multisa-uml613-ld"
i = b.index(old)
open(sys.argv[2], "wb").write(b[:i] + new.ljust(len(old), b"\0") + b[i + len(old):])
PY
    chmod +x "$D.tmp/linux.uml"
    rm -rf "$D.tmp/debs"; rm -rf "$D"; mv "$D.tmp" "$D"
  fi
  echo "$D" ;;
qemu)
  command -v qemu-system-x86_64 > /dev/null && [ -x /usr/lib/qemu/virtiofsd ] \
    || apt-get -qq install -y --no-install-recommends qemu-system-x86 > /dev/null
  [ -x /usr/lib/qemu/virtiofsd ] || command -v virtiofsd > /dev/null \
    || apt-get -qq install -y --no-install-recommends virtiofsd > /dev/null
  D=$CACHE/qemu
  if ! ls "$D"/root/usr/lib/modules/*/vmlinuz > /dev/null 2>&1; then
    alt_apt trixie-backports
    rm -rf "$D.tmp"; mkdir -p "$D.tmp/debs"
    IMG=$(apt-cache "${ALT[@]}" depends linux-image-cloud-amd64/trixie-backports 2>/dev/null \
          | awk '/Depends: linux-image-[0-9]/{print $2}' | head -1)
    PKGS=$(apt-cache "${ALT[@]}" depends "$IMG" | awk '/Depends: linux-(binary|modules)-[0-9]/{print $2}')
    (cd "$D.tmp/debs" && apt-get -qq "${ALT[@]}" download $IMG $PKGS > /dev/null)
    for f in "$D.tmp"/debs/*.deb; do dpkg -x "$f" "$D.tmp/root"; done
    ln -sfn usr/lib "$D.tmp/root/lib"
    depmod -b "$D.tmp/root" "$(ls "$D.tmp/root/usr/lib/modules")" 2> /dev/null
    rm -rf "$D.tmp/debs"; rm -rf "$D"; mv "$D.tmp" "$D"
  fi
  echo "$D" ;;
*) echo "fetch.sh: unknown kernel $WHAT (uml613|qemu)" >&2; exit 2 ;;
esac
