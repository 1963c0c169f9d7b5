#!/usr/bin/env bash
# Interop: `ulpddp ublk` serves a namespace of our target as a Linux ublk block device, inside
# a qemu guest whose kernel (6.12) has the ublk driver; the kernel's ext4 is the client.
#
# One VM run. In the guest, `ulpddp target` serves a 64 MiB file (4 KiB blocks) on 127.0.0.1
# and `ulpddp ublk` (2 I/O queues, data digest) turns it into /dev/ublkb0:
#  1. the block device has the namespace's size, 4 KiB logical blocks, 2 hardware queues and a
#     write-back cache (Flush/FUA passed through); a second `ulpddp ublk` asking for the same
#     device id fails with "already in use";
#  2. mkfs.ext4 (this machine's mke2fs, copied in), mount, three files of random data, md5,
#     unmount, mount again, md5 must match; fstrim sends discards (Dataset Management) and the
#     files still match;
#  3. target restart during I/O: an O_DIRECT copy of 8 MiB into the filesystem is running when
#     the target process is killed (SIGKILL) and started again on the same file; the copy must
#     succeed, and after a remount every file must still match;
#  4. Ctrl-C during I/O: raw O_DIRECT writes to /dev/ublkb0 run while `ulpddp ublk` gets
#     SIGINT; the writer must end (not hang), the command must exit 0 and remove the device,
#     and every write the writer saw acknowledged must be in the target's file.
#  5. (between 2 and 3) a short fio job with verification (random 16 KiB writes, QD 8 in each
#     of two threads with a file each, crc32c verify) in the filesystem; this machine's fio is
#     copied in.
# Before the VM: on this machine (no ublk driver) `ulpddp ublk` must fail with a hint to NBD.
#
# Usage: tests/interop/ublk-our-target.sh   (needs cargo build --release -p ulpddp;
#        ULPDDP=path overrides the binary; UBLK_LOG=path keeps the guest console log)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
. "$here/kpeer.sh"
bin="${ULPDDP:-${CARGO_TARGET_DIR:-$repo/target}/release/ulpddp}"
[ -x "$bin" ] || { echo "ublk-our-target: $bin missing (cargo build --release -p ulpddp)" >&2; exit 1; }
"$KPEER_HOME/run" --check >/dev/null
mke2fs="$(command -v mke2fs || echo /sbin/mke2fs)"
[ -x "$mke2fs" ] || { echo "ublk-our-target: mke2fs (e2fsprogs) missing" >&2; exit 1; }
fio="$(command -v fio || true)"
[ -n "$fio" ] || { echo "ublk-our-target: fio missing (apt-get install fio)" >&2; exit 1; }
start=$(date +%s)

if [ ! -e /dev/ublk-control ]; then
    if out=$("$bin" ublk --nqn nqn.2024-01.io.ulp-ddp:none 2>&1); then
        echo "ulpddp ublk succeeded without a ublk driver"; exit 1
    fi
    echo "$out" | grep -q "ublk driver is not loaded.*ulpddp nbd" \
        || { echo "$out"; echo "no hint without a ublk driver"; exit 1; }
    echo "no ublk driver on this machine: clear error with the NBD hint"
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/ublk-ot.XXXXXX")"
trap 'rm -rf "$work"' EXIT

cat > "$work/guest.sh" <<'EOF'
set -u
nqn=nqn.2024-01.io.ulp-ddp:ublk
img=/tmp/ns.img
dev=/dev/ublkb0
mnt=/mnt/d
dd if=/dev/zero of=$img bs=1048576 count=64 2>/dev/null
start_target() {
    ulpddp target --listen 127.0.0.1:4420 --no-discovery-port --nqn $nqn \
        --ns file:$img,lba=4096 --allow-any-host >> /tmp/target.log 2>&1 &
    tpid=$!
    kpeer_wait_listen 4420 || { cat /tmp/target.log; kpeer_fail "target does not listen"; }
}
show() { echo "--- ublk stdout"; cat /tmp/ublk.out; echo "--- ublk stderr"; tail -n 40 /tmp/ublk.err; }
md5() { md5sum "$1" | cut -d' ' -f1; }
start_target
[ -e /dev/ublk-control ] || kpeer_fail "no /dev/ublk-control: ublk_drv not loaded"
RUST_LOG=nvme_tcp_host=info,nvme_tcp_blk=info ulpddp ublk -a 127.0.0.1 --trsvcid 4420 --nqn $nqn -i 2 -G \
    --reconnect-delay 1 --ctrl-loss-tmo 60 --dev-id 0 > /tmp/ublk.out 2> /tmp/ublk.err &
upid=$!
i=0
while [ ! -b $dev ] || ! grep -q "$dev" /tmp/ublk.out; do
    i=$((i + 1))
    [ $i -le 300 ] || { show; kpeer_fail "$dev did not appear"; }
    kill -0 $upid 2>/dev/null || { show; kpeer_fail "ulpddp ublk exited"; }
    sleep 0.1
done
cat /tmp/ublk.out

# 1. Geometry from Identify, one hardware queue per I/O queue, write-back cache.
q=/sys/block/ublkb0
[ "$(cat $q/size)" = 131072 ] || kpeer_fail "size $(cat $q/size) sectors, expected 131072"
[ "$(cat $q/queue/logical_block_size)" = 4096 ] || kpeer_fail "logical block $(cat $q/queue/logical_block_size)"
[ "$(ls $q/mq | wc -l)" = 2 ] || kpeer_fail "$(ls $q/mq | wc -l) hardware queues, expected 2"
[ "$(cat $q/queue/write_cache)" = "write back" ] || kpeer_fail "write cache: $(cat $q/queue/write_cache)"
if timeout 60 ulpddp ublk -a 127.0.0.1 --trsvcid 4420 --nqn $nqn --dev-id 0 > /tmp/second.out 2>&1; then
    kpeer_fail "a second device with id 0 was created"
fi
grep -q "already in use" /tmp/second.out || { cat /tmp/second.out; kpeer_fail "no 'already in use' error"; }
echo "RESULT geometry ok, second device refused"

# 2. ext4: write, remount, verify.
mkfs.ext4 -q -F -t ext4 $dev || { show; kpeer_fail "mkfs.ext4"; }
mkdir -p $mnt
mount -t ext4 $dev $mnt || kpeer_fail "mount"
for f in a b c; do
    dd if=/dev/urandom of=$mnt/$f bs=1048576 count=2 2>/dev/null
done
(cd $mnt && md5sum a b c) > /tmp/sums
umount $mnt || kpeer_fail "umount"
mount -t ext4 $dev $mnt || kpeer_fail "mount again"
(cd $mnt && md5sum -c /tmp/sums) || kpeer_fail "files differ after a remount"
# Discard through the filesystem: NVMe Dataset Management (Deallocate) of the free blocks.
[ "$(cat $q/queue/discard_max_bytes)" -gt 0 ] || kpeer_fail "no discard support"
[ "$(cat $q/queue/write_zeroes_max_bytes)" -gt 0 ] || kpeer_fail "no write zeroes support"
fstrim $mnt || kpeer_fail "fstrim"
discards=$(awk '{print $12}' $q/stat)
[ "${discards:-0}" -gt 0 ] || { cat $q/stat; kpeer_fail "fstrim sent no discard"; }
(cd $mnt && md5sum -c /tmp/sums) > /dev/null || kpeer_fail "files differ after fstrim"
echo "RESULT ext4 write/remount/verify ok, fstrim: $discards discards"

# 5. fio with verification on the filesystem.
mkdir $mnt/fio
fio --name=verify --thread --directory=$mnt/fio --size=4M --rw=randwrite --bs=16k \
    --ioengine=libaio --iodepth=8 --numjobs=2 --direct=1 --verify=crc32c --do_verify=1 \
    --verify_fatal=1 --group_reporting > /tmp/fio.out 2>&1 || { cat /tmp/fio.out; kpeer_fail "fio verify"; }
grep -E "WRITE:|READ:" /tmp/fio.out
rm -r $mnt/fio
echo "RESULT fio randwrite + crc32c verify ok"

# 3. Target restart during I/O.
dd if=/dev/urandom of=/tmp/big.src bs=1048576 count=8 2>/dev/null
dd if=/tmp/big.src of=$mnt/big bs=65536 oflag=direct 2>/tmp/dd3.err &
ddpid=$!
i=0
while [ "$(stat -c %s $mnt/big 2>/dev/null || echo 0)" -lt 1048576 ]; do
    i=$((i + 1))
    [ $i -le 600 ] || kpeer_fail "the copy does not progress"
    sleep 0.05
done
kill -9 $tpid
wait $tpid 2>/dev/null
echo "target killed with $(stat -c %s $mnt/big) bytes copied"
sleep 1
start_target
wait $ddpid || { cat /tmp/dd3.err; show; kpeer_fail "the copy failed across the target restart"; }
sync
umount $mnt || kpeer_fail "umount after the restart"
mount -t ext4 $dev $mnt || kpeer_fail "mount after the restart"
(cd $mnt && md5sum -c /tmp/sums) || kpeer_fail "old files differ after the restart"
[ "$(md5 $mnt/big)" = "$(md5 /tmp/big.src)" ] || kpeer_fail "the copy differs after the restart"
umount $mnt
grep -q "reconnected\|re-established" /tmp/ublk.err || { show; kpeer_fail "no reconnect logged"; }
echo "RESULT target restart during I/O: no acknowledged write lost"

# 4. Ctrl-C during I/O.
dd if=/dev/urandom of=/tmp/raw.src bs=65536 count=256 2>/dev/null
dd if=/tmp/raw.src of=$dev bs=65536 oflag=direct 2>/tmp/dd4.err &
ddpid=$!
sleep 0.3
kill -INT $upid
wait $upid
urc=$?
wait $ddpid
echo "writer exit status $?: $(tail -n 3 /tmp/dd4.err | tr '\n' ' ')"
[ $urc = 0 ] || { show; kpeer_fail "ulpddp ublk exited with $urc after SIGINT"; }
[ ! -e $q ] || kpeer_fail "$dev still exists after SIGINT"
grep -q "removed" /tmp/ublk.out || { show; kpeer_fail "no removal message"; }
n=$(sed -n 's/^\([0-9]*\)+[0-9]* records out$/\1/p' /tmp/dd4.err)
[ -n "$n" ] || { cat /tmp/dd4.err; kpeer_fail "cannot tell what the writer wrote"; }
if [ "$n" -gt 0 ]; then
    [ "$(dd if=$img bs=65536 count=$n 2>/dev/null | md5sum)" = "$(dd if=/tmp/raw.src bs=65536 count=$n 2>/dev/null | md5sum)" ] \
        || kpeer_fail "acknowledged writes missing from the target's file"
fi
echo "RESULT Ctrl-C during I/O: $n acknowledged 64 KiB writes in the file, device removed"
kill $tpid
EOF

log="${UBLK_LOG:-$work/console.log}"
KPEER_EXTRA_MODULES=ublk_drv "$KPEER_HOME/run" --no-target -t 300 -l "$log" \
    --add "$bin:/usr/local/bin/ulpddp" --add "$mke2fs:/usr/local/bin/mkfs.ext4" --add "$fio" \
    --script "$work/guest.sh" || { grep -a "RESULT\|kpeer" "$log" | tail -n 20; exit 1; }
grep -a "RESULT" "$log"
echo "ublk-our-target: ok in $(( $(date +%s) - start )) s"
