#!/bin/sh
# REL-6: after qcow2 marks an image corrupt (a fatal corruption: bs->drv = NULL), closing the
# node skips qcow2_close() and the qcow2 state leaks. The image is the fuzzer's minimised
# input (../regressions/fuzz-339b4220f5e0.*): snapshot s1's L1 table is the active one, so
# applying it trips the metadata overlap check.
# Needs an ASan build of qemu-img (`build.py build --asan`).
# Usage: rel-6-corrupt-leak.sh ASAN_QEMU_IMG; exit 1 when LeakSanitizer reports the leak.
set -u
IMG=${1:?an ASan build of qemu-img}
HERE=$(cd "$(dirname "$0")" && pwd)
D=$(mktemp -d)
trap 'rm -rf "$D"' EXIT
gzip -dc "$HERE/../regressions/fuzz-339b4220f5e0.qcow2.gz" > "$D/x.qcow2"
"$IMG" snapshot -a s1 "$D/x.qcow2" > "$D/log" 2>&1
grep -E 'Marking image as corrupt|Could not apply' "$D/log"
if grep -q 'ERROR: LeakSanitizer' "$D/log"; then
    echo "REL-6: the corrupt image's qcow2 state leaked:"
    grep -E '^SUMMARY' "$D/log"
    exit 1
fi
echo "REL-6 does not show"
