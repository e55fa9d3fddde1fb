#!/bin/sh
# REL-6: after qcow2 marks an image corrupt (a fatal corruption: bs->drv = NULL), closing the
# node skips qcow2_close() and the qcow2 state leaks. The fuzzer found it with a snapshot
# whose L1 table is the active one (../regressions/fuzz-339b4220f5e0.*); since the series'
# stable fix "qcow2: Refuse snapshots whose L1 table is the active one" refuses that
# snapshot before anything is written, this reproducer trips the overlap check the way
# iotest 060 does: an L2 entry that points at the active L1 table, then a write there.
# Needs an ASan build (`build.py build --asan`).
# Usage: rel-6-corrupt-leak.sh ASAN_QEMU_IMG [ASAN_QEMU_IO]; exit 1 when LeakSanitizer
# reports the leak.
set -u
IMG=${1:?an ASan build of qemu-img}
IO=${2:-$(dirname "$IMG")/qemu-io}
D=$(mktemp -d)
trap 'rm -rf "$D"' EXIT
"$IMG" create -q -f qcow2 "$D/x.qcow2" 1M
"$IO" -f qcow2 -c 'write -q -P 0x11 0 64k' "$D/x.qcow2"
# The first L2 entry (of the first L2 table) := the active L1 table's cluster, COPIED
python3 - "$D/x.qcow2" <<'PY'
import struct, sys
with open(sys.argv[1], "r+b") as f:
    f.seek(40)
    l1_offset, = struct.unpack(">Q", f.read(8))
    f.seek(l1_offset)
    l2_offset, = struct.unpack(">Q", f.read(8))
    f.seek(l2_offset & 0x00fffffffffffe00)
    f.write(struct.pack(">Q", (1 << 63) | l1_offset))
PY
"$IO" -f qcow2 -c 'write -q -P 0x22 0 512' "$D/x.qcow2" > "$D/log" 2>&1
grep -E 'Marking image as corrupt' "$D/log"
if grep -q 'ERROR: LeakSanitizer' "$D/log"; then
    echo "REL-6: the corrupt image's qcow2 state leaked:"
    grep -E '^SUMMARY' "$D/log"
    exit 1
fi
echo "REL-6 does not show"
