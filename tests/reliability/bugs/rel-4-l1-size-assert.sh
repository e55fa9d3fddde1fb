#!/bin/sh
# REL-4: qemu-img snapshot -a/-d abort on a snapshot whose l1_table_offset is the active L1
# table's offset while its l1_size differs (here 0): qcow2_update_snapshot_refcount()
# asserts l1_size == s->l1_size. The image is the fuzzer's minimised input
# (../regressions/fuzz-d6c829af328a.*): one snapshot s1, otherwise valid.
# Usage: rel-4-l1-size-assert.sh [QEMU_IMG]; exit 1 when qemu-img is killed by a signal.
set -u
IMG=${1:-qemu-img}
HERE=$(cd "$(dirname "$0")" && pwd)
D=$(mktemp -d)
trap 'rm -rf "$D"' EXIT
found=0
for op in -a -d; do
    gzip -dc "$HERE/../regressions/fuzz-d6c829af328a.qcow2.gz" > "$D/x.qcow2"
    "$IMG" snapshot "$op" s1 "$D/x.qcow2"
    rc=$?
    if [ "$rc" -ge 128 ]; then
        echo "REL-4: qemu-img snapshot $op s1 died with exit $rc (signal $((rc - 128)))"
        found=1
    fi
done
exit "$found"
