#!/bin/sh
# REL-9: blockdev-reopen of a qcow2 node that was marked corrupt (a fatal corruption drops
# the node's driver) crashes QEMU: bdrv_reopen_queue_child() dereferences bs->drv (SIGSEGV),
# and bdrv_reopen_prepare() asserts it. Fixed by "block: Do not crash reopening a node
# without a driver": the reopen fails with an error.
# Usage: rel-9-reopen-corrupt-node.sh [QEMU_IMG [QEMU_IO [QEMU_SYSTEM]]]; the system
# emulator defaults to qemu-system-x86_64 beside QEMU_IMG. Exit 1 when QEMU crashes.
set -u
IMG=$(command -v "${1:-qemu-img}") || exit 2
DIR=$(cd "$(dirname "$IMG")" && pwd)
IMG=$DIR/$(basename "$IMG")
IO=${2:-$DIR/qemu-io}
SYS=${3:-$DIR/qemu-system-x86_64}
D=$(mktemp -d)
trap 'rm -rf "$D"' EXIT
"$IMG" create -q -f qcow2 "$D/c.qcow2" 1M || exit 2
"$IO" -f qcow2 -c 'write -q -P 0x11 0 64k' "$D/c.qcow2" || exit 2
# The first L2 entry := the active L1 table's cluster: the next write there trips the
# overlap check
sh "$(dirname "$0")/point-l2-at-l1.sh" "$D/c.qcow2" || exit 2
printf '%s\n' \
    '{"execute": "qmp_capabilities"}' \
    '{"execute": "blockdev-add", "arguments": {"driver": "qcow2", "node-name": "n0", "file": {"driver": "file", "node-name": "f0", "filename": "'"$D/c.qcow2"'"}}}' \
    '{"execute": "human-monitor-command", "arguments": {"command-line": "qemu-io n0 \"write -P 0x22 0 512\""}}' \
    '{"execute": "blockdev-reopen", "arguments": {"options": [{"driver": "qcow2", "node-name": "n0", "file": "f0", "read-only": true}]}}' \
    '{"execute": "quit"}' |
    "$SYS" -nodefaults -no-user-config -machine none -display none -qmp stdio \
    > "$D/out" 2>&1
code=$?
if ! grep -q '"fatal": true' "$D/out"; then
    echo "the write did not mark the image corrupt: the reproducer no longer reproduces"
    cat "$D/out"
    exit 2
fi
if [ $code -ne 0 ]; then
    echo "REL-9: blockdev-reopen of the corrupt node crashed QEMU (exit $code)"
    exit 1
fi
grep -o '"desc": "Cannot reopen[^"]*"' "$D/out" || { cat "$D/out"; exit 2; }
echo "REL-9 does not show"
