#!/bin/bash
# PID 1 of the guest kernel (uml-run.sh, qemu-run.sh). The kernel command line passes MODDIR and RUNDIR.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc; mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null; mount -t tmpfs tmpfs /run  # guest-private /run/netns
mkdir -p /dev/shm && mount -t tmpfs shm /dev/shm  # multiprocessing (the peer) needs it
stty -onlcr 2>/dev/null
# the guest kernel's modules live in $MODDIR/<release>; give modprobe (and the kernel's
# request_module, which loads crypto templates) a private root that has them
mkdir -p /run/kmod/lib && ln -s "$MODDIR" /run/kmod/lib/modules
printf '#!/bin/sh\nexec /usr/sbin/modprobe -d /run/kmod "$@"\n' > /run/modprobe && chmod +x /run/modprobe
echo /run/modprobe > /proc/sys/kernel/modprobe
for m in xfrm_user esp4 esp6 veth cbc hmac authenc authencesn echainiv seqiv gcm ctr; do
  /run/modprobe -q $m 2>/dev/null
done
mkdir -p /run/netns
ip link set lo up
echo "guest: kernel $(uname -r), $(nproc) cpu(s)"
( set -a; . "$RUNDIR/env.sh"; set +a; exec /bin/bash "$RUNDIR/cmd.sh" ) < /dev/null
echo $? > "$RUNDIR/rc"
sync
mkfifo /run/hold                  # wait with bash builtins only: once power-off starts, the
echo o > /proc/sysrq-trigger      # root fs (virtiofs under qemu) may vanish before the kernel stops
read -t 60 _ <> /run/hold
