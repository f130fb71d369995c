#!/bin/bash
# A real IKEv2 implementation against the reference peer (or itself) on a real per-CPU kernel.
#   tests/kernel/interop.sh strongswan6 --direction peer-initiates|charon-initiates|charon-pair \
#       --out DIR [--tier uml613|qemu] [--smp N]
# Builds or reuses the cached sid root (tests/kernel/roots.sh sid-strongswan) and the tier's
# kernel (tests/kernel/fetch.sh), boots the guest, runs charon 6.1 chrooted in one netns
# (per_cpu_sas = yes, start_action = trap, keys logged) and `multisa peer ... --resource-info
# --dataplane kernel` (or a second charon) in the other, sends traffic from every CPU, and
# leaves in DIR: capture.pcap, ikev2_decryption_table, esp_sa, charon.xfrm-sa.json,
# peer.xfrm-sa.json (charon2.xfrm-sa.json for charon-pair), charon.ip-s-xfrm-state.txt,
# swanctl-list-sas.txt, charon.log, peer.log (charon2.log), run.json.
# Exit: 0 done; 2 usage; 125 a root/kernel could not be had (the reason on stderr).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
IMPL=${1:-}; shift || true
DIRECTION= OUT= TIER=uml613 SMP=2
while [ $# -gt 0 ]; do case "$1" in
  --direction) DIRECTION=$2; shift 2;; --out) OUT=$2; shift 2;; --tier) TIER=$2; shift 2;;
  --smp) SMP=$2; shift 2;;
  *) echo "interop.sh: unknown argument $1" >&2; exit 2;; esac; done
usage() { echo "usage: $0 strongswan6 --direction peer-initiates|charon-initiates|charon-pair --out DIR [--tier uml613|qemu]" >&2; exit 2; }
[ "$IMPL" = strongswan6 ] || usage
case $DIRECTION in peer-initiates|charon-initiates|charon-pair) ;; *) usage;; esac
[ -n "$OUT" ] || usage
mkdir -p "$OUT"; OUT=$(cd "$OUT" && pwd)
ROOTFS=$("$HERE/roots.sh" sid-strongswan) || exit 125
"$HERE/fetch.sh" "$TIER" > /dev/null || { echo "interop.sh: cannot fetch the $TIER kernel" >&2; exit 125; }
command -v dumpcap > /dev/null || { echo "interop.sh: dumpcap missing (apt-get install tshark)" >&2; exit 125; }
cd "$HERE/../.."
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
CMD=(python3 -m tests.kernel.interop_guest "$IMPL" --direction "$DIRECTION" --root "$ROOTFS" --out "$OUT")
case $TIER in
uml613) "$HERE/uml-run.sh" --kernel uml613 --mem 768M -- "${CMD[@]}" ;;
qemu)   "$HERE/qemu-run.sh" --smp "$SMP" --mem 1G -- "${CMD[@]}" ;;
*) echo "interop.sh: unknown tier $TIER (uml613|qemu)" >&2; exit 2 ;;
esac
