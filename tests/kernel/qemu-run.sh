#!/bin/bash
# Run CMD as root inside a throw-away N-vCPU qemu guest (software emulation, no KVM needed)
# booting trixie-backports' cloud kernel (>= 6.13, full ESP data path) with the host's / as its
# root over virtiofs. Exits with CMD's status; 125 if the guest never reported one.
#   tests/kernel/qemu-run.sh [--smp 2] [--mem 768M] -- CMD [ARGS...]
# Needs: tests/kernel/fetch.sh qemu (apt: qemu-system-x86, virtiofsd; the kernel into a cache).
# Nothing leaves the guest: it has no network card (-nic none).
set -euo pipefail
SMP=2 MEM=768M
while [ $# -gt 0 ]; do case "$1" in
  --smp) SMP=$2; shift 2;; --mem) MEM=$2; shift 2;; --) shift; break;; *) break;; esac; done
[ $# -gt 0 ] || { echo "usage: $0 [--smp N] [--mem M] -- CMD..." >&2; exit 2; }
HERE=$(cd "$(dirname "$0")" && pwd)
D=${MULTISA_KERNEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/multisa-kernels}/qemu
VMLINUZ=$(ls "$D"/root/usr/lib/modules/*/vmlinuz 2>/dev/null | head -1 || true)
[ -n "$VMLINUZ" ] || { echo "qemu-run: no kernel in $D (tests/kernel/fetch.sh qemu)" >&2; exit 125; }
VIRTIOFSD=$(command -v virtiofsd || echo /usr/lib/qemu/virtiofsd)
for t in qemu-system-x86_64 "$VIRTIOFSD"; do
  command -v "$t" > /dev/null || { echo "qemu-run: $t missing (tests/kernel/fetch.sh qemu)" >&2; exit 125; }
done
RUNDIR=$(mktemp -d /tmp/multisa-qemu.XXXXXX)
VPID=
trap 'if [ -n "$VPID" ]; then kill $VPID 2>/dev/null || true; fi; rm -rf "$RUNDIR"' EXIT
export -p | grep -vE '^declare -x (PWD|OLDPWD|SHLVL|_|TERM)=' > "$RUNDIR/env.sh" || true
{ printf 'cd %q || exit 99\nexec' "$PWD"; printf ' %q' "$@"; echo; } > "$RUNDIR/cmd.sh"
SOCK=$RUNDIR/vfsd.sock
if [ "$VIRTIOFSD" = /usr/lib/qemu/virtiofsd ]; then  # qemu 7.2's C daemon
  "$VIRTIOFSD" --socket-path="$SOCK" -o source=/ -o cache=always -o sandbox=chroot > "$RUNDIR/vfsd.log" 2>&1 &
else                                                  # the Rust virtiofsd
  "$VIRTIOFSD" --socket-path="$SOCK" --shared-dir / --cache always --sandbox chroot > "$RUNDIR/vfsd.log" 2>&1 &
fi
VPID=$!
for _ in $(seq 100); do [ -S "$SOCK" ] && break; sleep 0.05; done
set +e
qemu-system-x86_64 -accel tcg -smp "$SMP" -m "$MEM" -nographic -no-reboot -nic none \
  -object memory-backend-memfd,id=mem,size="$MEM",share=on -numa node,memdev=mem \
  -chardev socket,id=vfs,path="$SOCK" -device vhost-user-fs-pci,chardev=vfs,tag=hostroot \
  -kernel "$VMLINUZ" -append "console=ttyS0 quiet panic=-1 root=hostroot rootfstype=virtiofs rw \
init=$HERE/uml-init.sh MODDIR=$D/root/usr/lib/modules RUNDIR=$RUNDIR" < /dev/null 2>&1 \
  | tr -d '\r' | sed -u 's/^Booting from ROM\.\.//; s/\x1bc\x1b\[?7l\x1b\[2J//g; /^\x1b\[0mSeaBIOS/d'
set -e
[ -s "$RUNDIR/rc" ] || { echo "qemu-run: guest did not report an exit status" >&2; exit 125; }
exit "$(cat "$RUNDIR/rc")"
