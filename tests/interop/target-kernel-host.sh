#!/usr/bin/env bash
# Interop: our NVMe/TCP target (`ulpddp target`) inside a qemu guest, used by the Linux kernel
# host (nvme-tcp) of the same guest through nvme-cli, over the guest's 127.0.0.1.
#
# One VM run (kernel 6.12 by default; KPEER_KERNEL=6.1 for the other). The target serves
# namespace 1 from a 16 MiB random file (file backend) and namespace 2 from 64 MiB of RAM, plus
# a discovery-only port 8009. For each host configuration (no digests; -g -G; -g only with two
# I/O queues; -G with 2 + 2 write queues; -G with SQ flow control disabled, so reads end with
# C2HData SUCCESS; in the second, nvme-cli admin and I/O commands, the volatile write cache
# feature (get, set to 0 and back) and a write with FUA):
#   nvme connect -t tcp ... ; the first 8 MiB of nsid 1 read through /dev/nvmeXnY must equal
#   the file; 4 MiB of fresh random data written (O_DIRECT) to each namespace at 8 MiB and read
#   back (O_DIRECT) must match; for nsid 1 the backing file must hold it too; nvme disconnect.
# With the first configuration, nvme-cli's `id-ctrl`, `id-ns`, `list` and `discover` JSON and
# ours (`ulpddp` host in the guest, same subsystem) are carried out and compared key by key
# (nvme-cli-json-compare.py), and our `read` runs with nvme-cli's flags.
# Then `nvme discover` against 8009 and against 4420 must list the subsystem, and a second
# target that allows only another host NQN must refuse the connect (then accept once listed);
# our host, which takes its identity from /etc/nvme/hostnqn, must get the same answers.
#
# Usage: tests/interop/target-kernel-host.sh   (needs a release build of ulpddp:
#        cargo build --release -p ulpddp; ULPDDP=path overrides the binary; TARGET_KH_LOG=path
#        keeps the guest console log). About 35 s on the 2-core build machine.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
. "$here/kpeer.sh"
bin="${ULPDDP:-${CARGO_TARGET_DIR:-$repo/target}/release/ulpddp}"
[ -x "$bin" ] || { echo "target-kernel-host: $bin missing (cargo build --release -p ulpddp)" >&2; exit 1; }
"$KPEER_HOME/run" --check >/dev/null

work="$(mktemp -d "${TMPDIR:-/tmp}/target-kh.XXXXXX")"
trap 'rm -rf "$work"' EXIT

cat > "$work/guest.sh" <<'EOF'
set -u
nqn=nqn.2024-01.io.ulp-ddp:interop
img=/tmp/ut.img
dd if=/dev/urandom of=$img bs=1048576 count=16 2>/dev/null
RUST_LOG=${UT_LOG:-nvme_tcp_target=debug} ulpddp target --listen 127.0.0.1:4420 --discovery-listen 127.0.0.1:8009 --nqn $nqn \
    --ns file:$img,lba=4096 --ns ram:64M --allow-any-host > /tmp/target.log 2>&1 &
tpid=$!
kpeer_wait_listen 4420 || { cat /tmp/target.log; kpeer_fail "target does not listen"; }
kpeer_wait_listen 8009 || { cat /tmp/target.log; kpeer_fail "discovery port does not listen"; }
md5() { md5sum | cut -d' ' -f1; }
dd if=/dev/zero of=/tmp/z4k bs=4096 count=1 2>/dev/null
fail=0
n=0
for opts in "" "-g -G" "-g -i 2" "-G -i 2 -W 2" "-G --disable-sqflow"; do
    n=$((n + 1))
    echo "== kernel host config $n: nvme connect -t tcp -a 127.0.0.1 -s 4420 -n $nqn $opts"
    if ! nvme connect -t tcp -a 127.0.0.1 -s 4420 -n $nqn $opts; then
        echo "RESULT config=$n connect FAILED"; fail=1; continue
    fi
    dev1=$(kpeer_nsdev $nqn 1) || { echo "RESULT config=$n no nsid 1"; fail=1; nvme disconnect -n $nqn; continue; }
    dev2=$(kpeer_nsdev $nqn 2) || { echo "RESULT config=$n no nsid 2"; fail=1; nvme disconnect -n $nqn; continue; }
    ctrl=$(basename "$(dirname "$(readlink -f /sys/block/$(basename $dev1)/device)")" 2>/dev/null || true)
    nq=$(ls -d /sys/class/nvme/*/ 2>/dev/null | wc -l)
    want=$(dd if=$img bs=1048576 count=8 2>/dev/null | md5)
    got=$(dd if=$dev1 bs=1048576 count=8 iflag=direct 2>/dev/null | md5)
    r1=ok; [ "$got" = "$want" ] || r1=MISMATCH
    dd if=/dev/urandom of=/tmp/w.bin bs=1048576 count=4 2>/dev/null
    w=$(md5 < /tmp/w.bin)
    res=""
    for dev in $dev1 $dev2; do
        dd if=/tmp/w.bin of=$dev bs=1048576 seek=8 oflag=direct conv=fsync 2>/dev/null || res="$res write-error($dev)"
        back=$(dd if=$dev bs=1048576 skip=8 count=4 iflag=direct 2>/dev/null | md5)
        [ "$back" = "$w" ] || res="$res readback-mismatch($dev)"
    done
    file=$(dd if=$img bs=1048576 skip=8 count=4 2>/dev/null | md5)
    [ "$file" = "$w" ] || res="$res backing-file-mismatch"
    nvme list 2>/dev/null | grep -i ulp || true
    if [ $n = 1 ]; then
        # nvme-cli's JSON and ours for the same subsystem, compared key by key on the build
        # machine (nvme-cli-json-compare.py). Our host finds its identity in /etc/nvme.
        o=$KPEER_OUT_DIR
        cdev=/dev/$(ls /sys/class/nvme | head -n 1)
        nvme id-ctrl $cdev -o json > $o/cli-id-ctrl.json || res="$res cli-id-ctrl"
        nvme id-ns $dev1 -o json > $o/cli-id-ns.json || res="$res cli-id-ns"
        nvme list -o json > $o/cli-list.json || res="$res cli-list"
        nvme discover -t tcp -a 127.0.0.1 -s 8009 -o json > $o/cli-discover.json || res="$res cli-discover"
        ulpddp id-ctrl -a 127.0.0.1 -s 4420 -n $nqn -o json > $o/our-id-ctrl.json || res="$res our-id-ctrl"
        ulpddp id-ns -a 127.0.0.1 -s 4420 -n $nqn --namespace-id 1 -o json > $o/our-id-ns.json || res="$res our-id-ns"
        ulpddp list -a 127.0.0.1 -o json > $o/our-list.json || res="$res our-list"
        ulpddp discover -a 127.0.0.1 -s 8009 -o json > $o/our-discover.json || res="$res our-discover"
        # nvme-cli's read/write flags on our host: -n nsid -s slba -c nlb (0's based) -d file.
        ulpddp read -a 127.0.0.1 --trsvcid 4420 --nqn $nqn -n 1 -s 3 -c 1 -d /tmp/r2.bin 2> /tmp/r2.err || res="$res our-read"
        grep -qx 'read: Success' /tmp/r2.err || res="$res read-success-line"
        [ "$(dd if=$img bs=4096 skip=3 count=2 2>/dev/null | md5)" = "$(md5 < /tmp/r2.bin)" ] || res="$res our-read-data"
    fi
    if [ $n = 2 ]; then
        # Admin and I/O commands through nvme-cli on the same controller.
        cdev=/dev/$(ls /sys/class/nvme | head -n 1)
        nvme id-ctrl $cdev | grep -E '^(mn|sn|subnqn|ioccsz|mdts|cntlid|kas|sgls|oncs) ' || res="$res id-ctrl"
        nvme id-ns $dev1 | grep -E '^(nsze|lbaf +0)' || res="$res id-ns"
        nvme ns-descs $dev1 || res="$res ns-descs"
        nvme get-feature $cdev -f 7 || res="$res get-feature"
        nvme smart-log $cdev | grep -E 'data_units|host_(read|write)_commands' || res="$res smart-log"
        nvme flush $dev1 || res="$res flush"
        nvme write-zeroes $dev2 -s 0 -c 7 || res="$res write-zeroes"
        dd if=$dev2 bs=4096 count=1 iflag=direct 2>/dev/null | cmp -s - /tmp/z4k || res="$res zeroes-not-zero"
        dd if=/tmp/w.bin of=$dev2 bs=4096 count=1 oflag=direct conv=fsync 2>/dev/null
        nvme dsm $dev2 --ad -s 0 -b 8 || res="$res dsm"
        dd if=$dev2 bs=4096 count=1 iflag=direct 2>/dev/null | cmp -s - /tmp/z4k || res="$res deallocated-not-zero"
        nvme error-log $cdev -e 1 | head -n 12 || true
        # Volatile write cache: the host sees one, the feature follows Set Features, and a
        # write with FUA completes.
        wc=$(cat /sys/block/$(basename $dev1)/queue/write_cache)
        [ "$wc" = "write back" ] || res="$res write_cache=$wc"
        # nvme-cli prints the value as %#010x: 0x00000001, but 00000000 for zero.
        vwc() { nvme get-feature $cdev -f 6 2>&1 | sed -n 's/.*[Cc]urrent value: *\([0-9a-fA-Fx]\+\).*/\1/p'; }
        v=$(vwc); echo "VWC=$v"; [ -n "$v" ] && [ $((v)) = 1 ] || res="$res vwc-default=$v"
        nvme set-feature $cdev -f 6 -v 0 || res="$res set-vwc"
        v=$(vwc); echo "VWC=$v"; [ -n "$v" ] && [ $((v)) = 0 ] || res="$res vwc-after-set=$v"
        dd if=/tmp/w.bin of=$dev1 bs=4096 count=1 oflag=direct 2>/dev/null || res="$res write-wce0"
        nvme set-feature $cdev -f 6 -v 1 || res="$res set-vwc1"
        dd if=/tmp/w.bin of=/tmp/w4k bs=4096 count=1 2>/dev/null
        nvme write $dev1 -s 0 -c 0 -z 4096 -d /tmp/w4k --force-unit-access || res="$res fua-write"
        dd if=$dev1 bs=4096 count=1 iflag=direct 2>/dev/null | cmp -s - /tmp/w4k || res="$res fua-readback"
    fi
    echo "RESULT config=$n opts='$opts' read8MiB=$r1 write+readback(ns1,ns2)=${res:-ok} ($dev1 $dev2)"
    [ "$r1" = ok ] && [ -z "$res" ] || fail=1
    nvme disconnect -n $nqn || fail=1
done
for port in 8009 4420; do
    echo "== nvme discover -t tcp -a 127.0.0.1 -s $port"
    if nvme discover -t tcp -a 127.0.0.1 -s $port > /tmp/disc.txt 2>&1 && grep -q "subnqn: *$nqn" /tmp/disc.txt; then
        cat /tmp/disc.txt
        echo "RESULT discover port=$port ok"
    else
        cat /tmp/disc.txt
        echo "RESULT discover port=$port FAILED"; fail=1
    fi
done
kill $tpid 2>/dev/null; wait $tpid
echo "---- target output ----"; cat /tmp/target.log

# Access control: a subsystem that allows another host refuses this one (Connect Invalid
# Host), and accepts it once listed.
me=$(cat /etc/nvme/hostnqn)
for allow in nqn.2014-08.org.nvmexpress:uuid:00000000-0000-0000-0000-000000000000 "$me"; do
    ulpddp target --listen 127.0.0.1:4421 --no-discovery-port --nqn $nqn --ns ram:8M \
        --allow-host "$allow" > /tmp/target2.log 2>&1 &
    t2=$!
    kpeer_wait_listen 4421 || kpeer_fail "second target does not listen"
    if nvme connect -t tcp -a 127.0.0.1 -s 4421 -n $nqn > /tmp/conn.txt 2>&1; then
        got=allowed; nvme disconnect -n $nqn > /dev/null
    else
        got=refused
    fi
    want=refused; [ "$allow" = "$me" ] && want=allowed
    cat /tmp/conn.txt
    echo "RESULT access-control allow=$allow host=$me: $got (want $want)"
    [ "$got" = "$want" ] || fail=1
    # Our host, without -q, connects as /etc/nvme/hostnqn too.
    if ulpddp id-ctrl -a 127.0.0.1 -s 4421 -n $nqn > /dev/null 2> /tmp/ours.err; then ours=allowed; else ours=refused; fi
    echo "RESULT access-control (ulpddp host, /etc/nvme/hostnqn) allow=$allow: $ours (want $want)"
    [ "$ours" = "$want" ] || { cat /tmp/ours.err; fail=1; }
    kill $t2; wait $t2
done
echo "---- kernel log (nvme) ----"; dmesg | grep -i nvme | tail -60
exit $fail
EOF

start=$(date +%s)
log="$work/console.log"
rc=0
mkdir -p "$work/out"
"$KPEER_HOME/run" --no-target --nvme-cli --add "$bin:/usr/local/bin/ulpddp" \
    --script "$work/guest.sh" -l "$log" --out "$work/out" || rc=$?
grep -a 'RESULT\|==' "$log" | sed 's/^/  /' || true
if [ "$rc" = 0 ]; then
    echo "== nvme-cli JSON vs ulpddp JSON (same subsystem)"
    python3 "$here/nvme-cli-json-compare.py" "$work/out" || rc=1
fi
if [ -n "${TARGET_KH_LOG:-}" ]; then cp "$log" "$TARGET_KH_LOG"; fi
echo "target-kernel-host: rc=$rc after $(( $(date +%s) - start ))s"
exit $rc
