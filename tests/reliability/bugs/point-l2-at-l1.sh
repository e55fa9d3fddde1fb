#!/bin/sh
# Corrupt a qcow2 image as iotest 060 does, for the reproducers here (REL-6, REL-9): its
# first L2 entry := the active L1 table's cluster, COPIED; the next write of guest cluster 0
# trips the metadata overlap check, a fatal corruption. Usage: point-l2-at-l1.sh IMAGE
exec python3 - "${1:?a qcow2 image}" <<'PY'
import struct
import sys

with open(sys.argv[1], "r+b") as f:
    f.seek(40)
    l1_offset, = struct.unpack(">Q", f.read(8))
    f.seek(l1_offset)
    l2_offset, = struct.unpack(">Q", f.read(8))
    f.seek(l2_offset & 0x00fffffffffffe00)
    f.write(struct.pack(">Q", (1 << 63) | l1_offset))
PY
