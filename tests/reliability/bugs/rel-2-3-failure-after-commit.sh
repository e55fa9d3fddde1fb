#!/bin/sh
# REL-2 / REL-3: qemu-img snapshot -a / -d report failure although the operation took effect.
# Fails the N-th write to the image file with EIO (blkdebug), for every N, and prints each N
# where qemu-img exits non-zero yet the snapshot was applied (-a: the active layer reads the
# snapshot) or deleted (-d: it is no longer listed).
# Usage: rel-2-3-failure-after-commit.sh [QEMU_IMG [QEMU_IO]]; exit 1 when either shows.
set -eu
IMG=${1:-qemu-img}
IO=${2:-$(dirname "$(command -v "$IMG")")/qemu-io}
D=$(mktemp -d)
trap 'rm -rf "$D"' EXIT
cd "$D"
"$IMG" create -q -f qcow2 base.qcow2 4M
"$IO" -f qcow2 -c 'write -q -P 0x11 0 1M' base.qcow2
"$IMG" snapshot -c s1 base.qcow2
"$IO" -f qcow2 -c 'write -q -P 0x22 0 1M' base.qcow2
"$IMG" snapshot -c s2 base.qcow2

rules() {  # rules N: EIO on the N-th write
    i=1
    : > rules.conf
    while [ "$i" -lt "$1" ]; do
        printf '[set-state]\nevent = "pwritev"\nstate = "%d"\nnew_state = "%d"\n\n' \
            "$i" $((i + 1)) >> rules.conf
        i=$((i + 1))
    done
    printf '[inject-error]\nevent = "pwritev"\nstate = "%d"\nerrno = "5"\nonce = "on"\n' \
        "$1" >> rules.conf
    printf 'immediately = "on"\n' >> rules.conf
}
opts="driver=qcow2,file.driver=blkdebug,file.config=rules.conf,file.image.filename=a.qcow2"
found=0
for n in $(seq 1 24); do
    rules "$n"
    cp base.qcow2 a.qcow2
    if ! "$IMG" snapshot -a s1 --image-opts "$opts" 2>/dev/null; then
        if ! "$IO" -f qcow2 -c 'read -P 0x11 0 1M' a.qcow2 | grep -q 'verification failed'
        then
            echo "REL-2: EIO on write $n: snapshot -a s1 failed, but the active layer reads s1"
            found=1
        fi
    fi
    cp base.qcow2 a.qcow2
    if ! "$IMG" snapshot -d s1 --image-opts "$opts" 2>/dev/null; then
        if ! "$IMG" snapshot -l a.qcow2 | grep -qw s1; then
            echo "REL-3: EIO on write $n: snapshot -d s1 failed, but s1 is gone"
            found=1
        fi
    fi
done
[ "$found" = 0 ] && echo "neither REL-2 nor REL-3 shows"
exit "$found"
