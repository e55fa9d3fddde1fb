#!/bin/sh
# REL-7 / REL-8: when the flush that ends savevm's VM state fails (a metadata write of the
# vmstate area, or the flush itself), save_snapshot() fails without an error (HMP savevm
# prints nothing: it looks like success, and no snapshot is listed), and the block node's
# reference held by the VM state channel is never dropped: at quit, bdrv_close_all()
# asserts (SIGABRT).
# Fails the N-th write to the image file with EIO (blkdebug) during savevm in a guest-less
# qemu-system-x86_64, for N = 1..40, and prints each N where either shows.
# Usage: rel-7-8-savevm-vmstate-flush.sh [QEMU_IMG [QEMU_IO [QEMU_SYSTEM]]]; the system
# emulator defaults to qemu-system-x86_64 beside QEMU_IMG. Exit 1 when either shows.
set -u
IMG=$(command -v "${1:-qemu-img}") || exit 2
DIR=$(cd "$(dirname "$IMG")" && pwd)
IMG=$DIR/$(basename "$IMG")
SYS=${3:-$DIR/qemu-system-x86_64}
case $SYS in /*) ;; *) SYS=$(pwd)/$SYS ;; esac
D=$(mktemp -d)
trap 'rm -rf "$D"' EXIT
cd "$D" || exit 2
"$IMG" create -q -f qcow2 disk.qcow2 4M || exit 2

rules() {  # rules N: EIO on the N-th write (plain or write-zeroes)
    : > rules.conf
    for ev in pwritev pwritev_zero; do
        i=1
        while [ "$i" -lt "$1" ]; do
            printf '[set-state]\nevent = "%s"\nstate = "%d"\nnew_state = "%d"\n\n' \
                "$ev" "$i" $((i + 1)) >> rules.conf
            i=$((i + 1))
        done
        printf '[inject-error]\nevent = "%s"\nstate = "%d"\nerrno = "5"\nonce = "on"\n' \
            "$ev" "$1" >> rules.conf
        printf 'immediately = "on"\n\n' >> rules.conf
    done
}

silent=0 aborted=0 n=1
while [ "$n" -le 40 ]; do
    cp disk.qcow2 run.qcow2
    rules "$n"
    printf 'savevm vm1\ninfo snapshots\nquit\n' | "$SYS" -nodefaults -no-user-config \
        -machine pc -accel tcg -display none -m 16 -S -monitor stdio \
        -blockdev "driver=qcow2,node-name=disk0,file.driver=blkdebug,file.config=rules.conf,file.image.driver=file,file.image.filename=run.qcow2" \
        > out.txt 2>&1
    code=$?
    if ! grep -q "Error" out.txt &&
            grep -q "There is no snapshot available" out.txt; then
        echo "REL-7: EIO at write $n: savevm printed no error, yet no snapshot was made"
        silent=1
    fi
    if [ "$code" -ge 128 ] || grep -q "bdrv_close_all: Assertion" out.txt; then
        echo "REL-8: EIO at write $n: QEMU exited $code at quit: $(grep Assertion out.txt)"
        aborted=1
    fi
    n=$((n + 1))
done
[ "$silent" = 0 ] && [ "$aborted" = 0 ] && exit 0
exit 1
