#!/bin/busybox sh
# Guest init for the qemu-snap-harness test guest (PID 1 inside the initramfs).
#
# 1. set up /proc, /sys, /dev and the busybox applets;
# 2. insmod the virtio modules listed in /lib/modules/load-order (dependency order);
# 3. print the ready marker on the console (ttyS0);
# 4. run the workload: five times a second, write "COUNTER <n>" to sector 0 of /dev/vda
#    (then fdatasync'ed, so the disk always holds n or n-1 of what the console shows) and
#    then print the same line on the console; a line on the console's input brings the
#    next one at once.
# Tests read the console and the disk to prove that a snapshot restored RAM
# (the counter continues from the saved value) and disk (sector 0 holds the
# saved value).
/bin/busybox mkdir -p /proc /sys /dev /tmp /sbin /usr/bin /usr/sbin
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
echo 0 > /proc/sys/kernel/printk_ratelimit 2>/dev/null

for m in $(cat /lib/modules/load-order); do
    insmod "/lib/modules/$m.ko" || echo "HARNESS-ERROR: insmod $m failed"
done

i=0
while [ ! -b /dev/vda ] && [ $i -lt 30 ]; do
    sleep 0.1
    i=$((i + 1))
done
disk=none
[ -b /dev/vda ] && disk=/dev/vda
nics=$(ls /sys/class/net | grep -v '^lo$' | tr '\n' ',')

# The heartbeat's pause reads the console: a line the rig writes to the console's input
# cuts it short, so that a restored guest proves it runs at once instead of a period later
# (tests/qemu/lib/machine.py VM.heartbeat). Not echoed. Without a terminal: a plain sleep.
if [ -t 0 ]; then
    stty -echo
    pause() { read -t 0.2 line; }
else
    pause() { sleep 0.2; }
fi

echo "HARNESS-READY kernel=$(uname -r) disk=$disk nics=$nics"

n=0
while true; do
    n=$((n + 1))
    if [ "$disk" != none ]; then
        # printf is a shell builtin writing in place (1<> neither truncates nor forks);
        # sync -d is fdatasync(2) of the device: written through before the console line
        { printf 'COUNTER %08d\n' "$n" 1<>"$disk" && sync -d "$disk"; } || \
            echo "HARNESS-ERROR: disk write $n failed"
    fi
    echo "COUNTER $n"
    # a fast heartbeat: a test proves a restored guest runs by its next line (and can ask
    # for it at once, above)
    pause
done
