#!/bin/busybox sh
# kdlab rxe VM: guest /init (PID 1), run from the initramfs that
# kdreal.testbed.setup() builds. It mounts the host's root read-only over 9p
# with a tmpfs overlay on top, mounts the writable work directory and the
# control directory, chroots into the host root to run /run/kdlab-rxe-vm/cmd.sh,
# stores the exit code in the control directory and powers the VM off.
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
# Modules in dependency order (crc32_generic first: rxe computes its ICRC via crypto "crc32").
for m in $(cat /mods/order); do insmod "/mods/$m" || echo "kdlab-rxe-vm: insmod $m failed"; done
O=trans=virtio,version=9p2000.L,msize=512000
if ! mount -t 9p -o "$O,ro,cache=loose" hostroot /lower; then
  echo "kdlab-rxe-vm: 9p mount of the host root failed"; poweroff -f
fi
mount -t tmpfs -o size=50% rw /rw
mkdir -p /rw/u /rw/w
if ! mount -t overlay overlay -o lowerdir=/lower,upperdir=/rw/u,workdir=/rw/w /host; then
  echo "kdlab-rxe-vm: overlay failed; read-only root with a tmpfs /tmp"
  mount --bind /lower /host
  mount -t tmpfs tmp /host/tmp
fi
mount -t tmpfs run /host/run
mount -t proc proc /host/proc
mount -t sysfs sys /host/sys
mount -o bind /dev /host/dev
mkdir -p /host/dev/shm /host/dev/pts
mount -t tmpfs shm /host/dev/shm
mount -t devpts pts /host/dev/pts
mount -t 9p -o "$O" ctl /ctl
RW=$(cat /ctl/rwdir)
if [ -n "$RW" ]; then mkdir -p "/host$RW"; mount -t 9p -o "$O" rwdir "/host$RW"; fi
mkdir -p /host/run/kdlab-rxe-vm
mount --bind /ctl /host/run/kdlab-rxe-vm
stty -F /dev/console -onlcr 2>/dev/null  # plain \n on the serial console
chroot /host /bin/bash /run/kdlab-rxe-vm/cmd.sh
echo $? > /ctl/rc
sync
poweroff -f
