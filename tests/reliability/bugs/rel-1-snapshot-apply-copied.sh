#!/bin/sh
# REL-1: qemu-img snapshot -a interrupted after the L1 switch leaves OFLAG_COPIED set on an L2
# table the applied snapshot shares; the next guest write changes the snapshot.
# Usage: rel-1-snapshot-apply-copied.sh [QEMU_IMG [QEMU_IO]]   (default: the ones in PATH)
# Exit 1 when the bug shows (the snapshot changed), 0 when it does not.
set -eu
IMG=${1:-qemu-img}
IO=${2:-$(dirname "$(command -v "$IMG")")/qemu-io}
D=$(mktemp -d)
trap 'rm -rf "$D"' EXIT
cd "$D"
"$IMG" create -q -f qcow2 a.qcow2 4M
"$IO" -f qcow2 -c 'write -q -P 0x11 0 1M' a.qcow2
"$IMG" snapshot -c s1 a.qcow2
"$IO" -f qcow2 -c 'write -q -P 0x22 0 1M' a.qcow2
# An EIO on the 4th write to the image file: the one after the active L1 table got the
# snapshot's entries (stale COPIED flags included), before qcow2_snapshot_goto() fixes them.
# A power failure in the same window (three flushes wide) leaves the same image.
cat > rules.conf <<'RULES'
[set-state]
event = "pwritev"
state = "1"
new_state = "2"

[set-state]
event = "pwritev"
state = "2"
new_state = "3"

[set-state]
event = "pwritev"
state = "3"
new_state = "4"

[inject-error]
event = "pwritev"
state = "4"
errno = "5"
once = "on"
immediately = "on"
RULES
"$IMG" snapshot -a s1 --image-opts \
    "driver=qcow2,file.driver=blkdebug,file.config=rules.conf,file.image.filename=a.qcow2" \
    || echo "(snapshot -a failed, as injected)"
"$IMG" check a.qcow2 | grep -E '^ERROR OFLAG_COPIED L2' || true
# The guest writes to its disk (no check -r in between, as after a host crash and restart)
"$IO" -f qcow2 -c 'write -q -P 0x33 0 64k' a.qcow2
"$IMG" convert -l snapshot.name=s1 -O raw a.qcow2 s1.raw
if "$IO" -f raw -c 'read -q -P 0x11 0 1M' s1.raw >/dev/null 2>&1 && \
   ! "$IO" -f raw -c 'read -P 0x11 0 1M' s1.raw | grep -q 'Pattern verification failed'; then
    echo "REL-1 does not show: snapshot s1 still reads 0x11"
    exit 0
fi
echo "REL-1: snapshot s1 changed after a write to the active layer:"
"$IO" -f raw -c 'read -v 0 16' s1.raw | head -1
exit 1
