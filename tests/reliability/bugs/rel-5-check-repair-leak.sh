#!/bin/sh
# REL-5: qemu-img check -r leaks the snapshot table it read, whenever it repaired something
# on an image with snapshots (then it checks a second time and reads the table again).
# Needs a build with AddressSanitizer (LeakSanitizer), e.g. `build.py build --asan`:
# Usage: rel-5-check-repair-leak.sh ASAN_QEMU_IMG [QEMU_IO]; exit 1 when the leak shows.
set -eu
IMG=${1:?an ASan build of qemu-img}
IO=${2:-$(dirname "$(command -v "$IMG")")/qemu-io}
D=$(mktemp -d)
trap 'rm -rf "$D"' EXIT
cd "$D"
"$IMG" create -q -f qcow2 a.qcow2 4M 2>/dev/null
"$IO" -f qcow2 -c 'write -q -P 0x11 0 1M' a.qcow2 2>/dev/null
"$IMG" snapshot -c s1 a.qcow2 2>/dev/null
# a leak to repair: cluster 8 (free in this image) gets refcount 1 (16-bit refcounts; the
# refcount block is at the offset the refcount table's first entry names)
python3 - <<'PY'
import struct
with open("a.qcow2", "r+b") as f:
    d = f.read()
    rt = struct.unpack_from(">Q", d, 48)[0]
    rb = struct.unpack_from(">Q", d, rt)[0]
    size = len(d) // 65536 + 1
    for c in range(1, size):
        if struct.unpack_from(">H", d, rb + 2 * c)[0] == 0:
            break
    else:
        f.truncate((size + 1) * 65536)
        c = size
    f.seek(rb + 2 * c)
    f.write(struct.pack(">H", 1))
PY
"$IMG" check -r leaks a.qcow2 > check.log 2>&1 || true
if grep -q 'ERROR: LeakSanitizer' check.log; then
    echo "REL-5: check -r leaks leaked memory:"
    grep -E 'Direct leak|#2 ' check.log | head -2
    exit 1
fi
echo "REL-5 does not show"
