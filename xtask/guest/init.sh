#!/bin/sh
# /init of the xtask VM, run by busybox ash as PID 1. xtask/src/initramfs.rs puts it in the
# initramfs beside:
#   /lib/modules/<name>.ko, /lib/modules/load.order   modules to load, dependencies first
#   /xtask/run.conf   the run's settings (xtask/src/vm.rs writes it):
#                       CWD, KEEP (host /tmp paths to keep visible), SHARE (a writable host
#                       dir, or empty), MODPARAMS_<module>, and `export`s of the guest's env
#   /xtask/args       the command line, shell-quoted
# It loads the modules, mounts the host's / read-only over 9p (tag hostroot), chroots into it,
# prints KHARNESS_STARTED (the guest is up: what follows is the run's), runs the command there
# as root in CWD, prints KHARNESS_EXIT=<status> and powers off.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t devtmpfs dev /dev
exec </dev/console >/dev/console 2>&1
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t tmpfs tmp /tmp
. /xtask/run.conf

for m in $(cat /lib/modules/load.order); do
  eval "params=\${MODPARAMS_$m:-}"
  # $params unquoted: "p1=v p2=v" are separate arguments
  insmod /lib/modules/$m.ko $params || echo "KHARNESS: insmod $m failed"
done
# virtio_gpu registers its DRM device a moment after insmod returns
i=0; while [ ! -e /dev/dri ] && [ $i -lt 50 ]; do usleep 100000; i=$((i+1)); done
echo "KHARNESS: kernel $(uname -r), up $(cut -d' ' -f1 /proc/uptime)s, modules: $(cut -d' ' -f1 /proc/modules | tr '\n' ' ')"
echo "KHARNESS: /dev/dri: $(ls /dev/dri 2>&1 | tr '\n' ' ') /dev/video*: $(ls /dev/video* 2>/dev/null | tr '\n' ' ')"

fail() { echo "KHARNESS: $*"; echo "KHARNESS_EXIT=126"; poweroff -f; }
R=/newroot
# a 9p tag can be mounted only once: everything else of the host is reached through binds
mount -t 9p -o ro,trans=virtio,version=9p2000.L,msize=512000,cache=loose hostroot $R \
  || fail "mount hostroot failed"
# a fresh /tmp for the guest, with the host /tmp paths the run needs bound back (read-only)
mount -o bind $R/tmp /hosttmp
mount -t tmpfs -o mode=1777 tmp $R/tmp
for p in $KEEP; do mkdir -p $R$p && mount -o bind /hosttmp${p#/tmp} $R$p; done
mount -t devtmpfs dev $R/dev
mkdir -p $R/dev/pts $R/dev/shm
mount -t devpts -o newinstance,ptmxmode=0666 devpts $R/dev/pts
mount -t tmpfs -o mode=1777 shm $R/dev/shm
mount -t proc proc $R/proc
mount -t sysfs sys $R/sys
mount -t debugfs debugfs $R/sys/kernel/debug 2>/dev/null
mount -t tmpfs -o mode=755 run $R/run
if [ -n "$SHARE" ]; then
  # cache=mmap: writable MAP_SHARED works (cache=none gives EINVAL)
  mkdir -p $R$SHARE 2>/dev/null
  mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000,cache=mmap share $R$SHARE \
    || fail "mount share failed"
fi
echo "KHARNESS: host root mounted, up $(cut -d' ' -f1 /proc/uptime)s"

eval "set -- $(cat /xtask/args)"
echo "KHARNESS_STARTED"
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
  chroot $R /bin/sh -c 'cd "$0" || exit 126; exec "$@"' "$CWD" "$@"
rc=$?
echo
echo "KHARNESS: done, up $(cut -d' ' -f1 /proc/uptime)s"
echo "KHARNESS_EXIT=$rc"
sync
poweroff -f
