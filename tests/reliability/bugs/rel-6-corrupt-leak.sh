#!/bin/sh
# REL-6: after qcow2 marked an image corrupt (a fatal corruption), it dropped its driver from
# the node (bs->drv = NULL), so closing the node skipped qcow2_close(): the qcow2 state leaked,
# and the cache clean coroutine, never stopped, woke up on the freed state (a use-after-free,
# cache-clean-interval after the close). The fuzzer found the leak with a snapshot whose L1
# table is the active one (../regressions/fuzz-339b4220f5e0.*); since the stable fix for
# REL-4 refuses that snapshot before anything is written, this reproducer trips the overlap
# check the way iotest 060 does: an L2 entry that points at the active L1 table, then a write
# there. Fixed by "qcow2: Free the state of an image that was marked corrupt".
# Needs an ASan build (`build.py build --asan`).
# Usage: rel-6-corrupt-leak.sh ASAN_QEMU_IMG [ASAN_QEMU_IO]; exit 1 when LeakSanitizer
# reports the leak or AddressSanitizer the use-after-free, 0 when neither shows.
set -u
IMG=${1:?an ASan build of qemu-img}
IO=${2:-$(dirname "$IMG")/qemu-io}
D=$(mktemp -d)
trap 'rm -rf "$D"' EXIT
"$IMG" create -q -f qcow2 "$D/x.qcow2" 1M
"$IO" -f qcow2 -c 'write -q -P 0x11 0 64k' "$D/x.qcow2"
# The first L2 entry := the active L1 table's cluster: the next write there trips the
# overlap check
sh "$(dirname "$0")/point-l2-at-l1.sh" "$D/x.qcow2" || exit 2
cp "$D/x.qcow2" "$D/y.qcow2"
shows=0
# The leak: at exit
ASAN_OPTIONS=detect_leaks=1 "$IO" -f qcow2 -c 'write -q -P 0x22 0 512' "$D/x.qcow2" \
    > "$D/leak.log" 2>&1
grep -E 'Marking image as corrupt' "$D/leak.log"
if grep -q 'ERROR: LeakSanitizer' "$D/leak.log"; then
    echo "REL-6: the corrupt image's qcow2 state leaked:"
    grep -E '^SUMMARY' "$D/leak.log"
    shows=1
fi
# The use-after-free: close, then let a one-second cache clean timer run out
ASAN_OPTIONS=detect_leaks=0 "$IO" --image-opts -c 'write -q -P 0x22 0 512' -c close \
    -c 'sleep 1500' "driver=qcow2,file.filename=$D/y.qcow2,cache-clean-interval=1" \
    > "$D/uaf.log" 2>&1
if grep -q 'ERROR: AddressSanitizer' "$D/uaf.log"; then
    echo "REL-6: the cache clean coroutine ran on the closed image's freed state:"
    grep -E '^SUMMARY|ERROR: AddressSanitizer' "$D/uaf.log"
    shows=1
fi
if ! grep -q 'Marking image as corrupt' "$D/uaf.log"; then
    echo "the write did not mark the image corrupt: the reproducer no longer reproduces"
    cat "$D/uaf.log"
    exit 2
fi
[ $shows = 1 ] && exit 1
echo "REL-6 does not show"
