#!/bin/bash
# Run CMD as root inside a throw-away User-Mode Linux kernel (Debian's user-mode-linux, 6.1)
# that has the full ESP data path; the host's / is the guest's root (hostfs). Exits with CMD's
# status; 125 if the guest never reported one. Needs: apt-get install user-mode-linux kmod.
#   tests/kernel/uml-run.sh [--mem 512M] -- CMD [ARGS...]
# Nothing leaves the guest: its network stack is its own (no network device is attached).
set -euo pipefail
MEM=512M
while [ $# -gt 0 ]; do case "$1" in
  --mem) MEM=$2; shift 2;; --) shift; break;; *) break;; esac; done
[ $# -gt 0 ] || { echo "usage: $0 [--mem M] -- CMD..." >&2; exit 2; }
KERNEL=${MULTISA_UML_KERNEL:-/usr/bin/linux.uml}
MODDIR=${MULTISA_UML_MODDIR:-/usr/lib/uml/modules}
[ -x "$KERNEL" ] || { echo "uml-run: $KERNEL missing (apt-get install user-mode-linux kmod)" >&2; exit 125; }
command -v modprobe > /dev/null || { echo "uml-run: modprobe missing (apt-get install kmod)" >&2; exit 125; }
HERE=$(cd "$(dirname "$0")" && pwd)
RUNDIR=$(mktemp -d /tmp/multisa-uml.XXXXXX)
trap 'rm -rf "$RUNDIR"' EXIT
export -p | grep -vE '^declare -x (PWD|OLDPWD|SHLVL|_|TERM)=' > "$RUNDIR/env.sh" || true
{ printf 'cd %q || exit 99\nexec' "$PWD"; printf ' %q' "$@"; echo; } > "$RUNDIR/cmd.sh"
set +e
"$KERNEL" mem="$MEM" rootfstype=hostfs rootflags=/ rw init="$HERE/uml-init.sh" \
  MODDIR="$MODDIR" RUNDIR="$RUNDIR" quiet con=null con0=null,fd:1 < /dev/null 2>&1 \
  | grep -avE '^(Checking|Core dump limits|	(soft|hard) - |Failed to initialize ubd|mmapper_init|SELinux: )'
set -e
[ -s "$RUNDIR/rc" ] || { echo "uml-run: guest did not report an exit status" >&2; exit 125; }
exit "$(cat "$RUNDIR/rc")"
