#!/bin/bash
# Run CMD as root inside a throw-away User-Mode Linux kernel that has the full ESP data path;
# the host's / is the guest's root (hostfs). Exits with CMD's status; 125 if the guest never
# reported one.
#   tests/kernel/uml-run.sh [--kernel uml|uml613] [--mem 512M] -- CMD [ARGS...]
# uml    : Debian bookworm's user-mode-linux (6.1)   apt-get install user-mode-linux kmod
# uml613 : sid's user-mode-linux (>= 6.13: XFRMA_SA_DIR/SA_PCPU), unpacked by fetch.sh uml613
# Nothing leaves the guest: its network stack is its own (no network device is attached).
set -euo pipefail
MEM=512M WHICH=uml
while [ $# -gt 0 ]; do case "$1" in
  --mem) MEM=$2; shift 2;; --kernel) WHICH=$2; shift 2;; --) shift; break;; *) break;; esac; done
[ $# -gt 0 ] || { echo "usage: $0 [--kernel uml|uml613] [--mem M] -- CMD..." >&2; exit 2; }
HERE=$(cd "$(dirname "$0")" && pwd)
LAUNCH=()
case $WHICH in
uml)
  KERNEL=${MULTISA_UML_KERNEL:-/usr/bin/linux.uml}
  MODDIR=${MULTISA_UML_MODDIR:-/usr/lib/uml/modules}
  [ -x "$KERNEL" ] || { echo "uml-run: $KERNEL missing (apt-get install user-mode-linux kmod)" >&2; exit 125; } ;;
uml613)
  D=${MULTISA_KERNEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/multisa-kernels}/uml613
  [ -x "$D/linux.uml" ] || { echo "uml-run: $D/linux.uml missing (tests/kernel/fetch.sh uml613)" >&2; exit 125; }
  KERNEL=$D/linux.uml MODDIR=$D/root/usr/lib/uml/modules
  # the interpreter path fetch.sh patched into linux.uml; sid's glibc for the kernel process only
  ln -sfn "$D/root/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2" /tmp/.multisa-uml613-ld
  LAUNCH=(env "LD_LIBRARY_PATH=$D/root/usr/lib/x86_64-linux-gnu") ;;
*) echo "uml-run: unknown kernel $WHICH (uml|uml613)" >&2; exit 2 ;;
esac
command -v modprobe > /dev/null || { echo "uml-run: modprobe missing (apt-get install kmod)" >&2; exit 125; }
RUNDIR=$(mktemp -d /tmp/multisa-uml.XXXXXX)
trap 'rm -rf "$RUNDIR"' EXIT
export -p | grep -vE '^declare -x (PWD|OLDPWD|SHLVL|_|TERM)=' > "$RUNDIR/env.sh" || true
{ printf 'cd %q || exit 99\nexec' "$PWD"; printf ' %q' "$@"; echo; } > "$RUNDIR/cmd.sh"
set +e
"${LAUNCH[@]}" "$KERNEL" mem="$MEM" rootfstype=hostfs rootflags=/ rw init="$HERE/uml-init.sh" \
  MODDIR="$MODDIR" RUNDIR="$RUNDIR" quiet con=null con0=null,fd:1 < /dev/null 2>&1 \
  | grep -avE '^(Checking|Core dump limits|	(soft|hard) - |Failed to initialize ubd|mmapper_init|SELinux: )'
set -e
[ -s "$RUNDIR/rc" ] || { echo "uml-run: guest did not report an exit status" >&2; exit 125; }
exit "$(cat "$RUNDIR/rc")"
