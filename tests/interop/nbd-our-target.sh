#!/usr/bin/env bash
# Interop: `ulpddp nbd` exports the namespaces of the `ulpddp target` process on loopback, and
# qemu's NBD client (qemu-img, qemu-io) uses them.
#
#  1. Two namespaces (a 32 MiB file with 4 KiB blocks, 16 MiB of RAM with 512-byte blocks)
#     behind `ulpddp nbd` with 2 I/O queues and data digest: qemu-img info shows the sizes;
#     32 MiB of random data written with qemu-img convert and read back must match, and the
#     target's file must hold it; qemu-io's write-zeroes, discard, FUA write and flush verify.
#  2. SIGINT: `ulpddp nbd` exits 0.
#  3. A target that does not allow this host: `ulpddp nbd` fails with the Connect rejection.
#
# Usage: tests/interop/nbd-our-target.sh   (needs cargo build --release -p ulpddp and
#        qemu-utils; ULPDDP=path overrides the binary)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
bin="${ULPDDP:-${CARGO_TARGET_DIR:-$repo/target}/release/ulpddp}"
[ -x "$bin" ] || { echo "nbd-our-target: $bin missing (cargo build --release -p ulpddp)" >&2; exit 1; }
command -v qemu-img >/dev/null || { echo "nbd-our-target: qemu-img missing (qemu-utils)" >&2; exit 1; }

work="$(mktemp -d "${TMPDIR:-/tmp}/nbd-ot.XXXXXX")"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
start=$(date +%s)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
    for _ in $(seq 1 300); do
        if (exec 9<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.05
    done
    return 1
}
md5() { md5sum "$1" | cut -d' ' -f1; }
nqn=nqn.2024-01.io.ulp-ddp:nbd-interop
tport=$(free_port)
nport=$(free_port)
head -c $((32 << 20)) /dev/urandom > "$work/ns.img"
"$bin" target --listen "127.0.0.1:$tport" --no-discovery-port --nqn "$nqn" \
    --ns "file:$work/ns.img,lba=4096" --ns ram:16M,lba=512 --allow-any-host > "$work/target.log" 2>&1 &
pids+=($!)
wait_port "$tport" || { cat "$work/target.log"; echo "target did not start"; exit 1; }

"$bin" nbd -a 127.0.0.1 --trsvcid "$tport" --nqn "$nqn" -i 2 -G --listen "127.0.0.1:$nport" \
    > "$work/nbd.out" 2> "$work/nbd.err" &
npid=$!
pids+=($npid)
wait_port "$nport" || { cat "$work/nbd.out" "$work/nbd.err"; echo "ulpddp nbd did not start"; exit 1; }
cat "$work/nbd.out"
qemu-img info "nbd://127.0.0.1:$nport/ns1" | grep -q "32 MiB" || { echo "ns1 size"; exit 1; }
qemu-img info "nbd://127.0.0.1:$nport/ns2" | grep -q "16 MiB" || { echo "ns2 size"; exit 1; }
for ns in ns1 ns2; do
    size=$([ $ns = ns1 ] && echo 32 || echo 16)
    head -c $((size << 20)) /dev/urandom > "$work/$ns.src"
    qemu-img convert -n -f raw -O raw "$work/$ns.src" "nbd://127.0.0.1:$nport/$ns"
    qemu-img convert -f raw -O raw "nbd://127.0.0.1:$nport/$ns" "$work/$ns.back"
    [ "$(md5 "$work/$ns.back")" = "$(md5 "$work/$ns.src")" ] || { echo "$ns: read back differs"; exit 1; }
    echo "$ns: ${size} MiB written and read back, md5 equal"
done
[ "$(md5 "$work/ns.img")" = "$(md5 "$work/ns1.src")" ] || { echo "the target's file differs"; exit 1; }
out=$(qemu-io -f raw -c "write -z 64k 128k" -c "discard 1M 1M" -c "write -f -P 0xcd 512k 4k" \
    -c "flush" -c "read -P 0 64k 128k" -c "read -P 0xcd 512k 4k" "nbd://127.0.0.1:$nport/ns2" 2>&1)
if echo "$out" | grep -qi "fail\|error"; then echo "$out"; exit 1; fi
echo "qemu-io: write zeroes, discard, FUA write, flush: ok"

kill -INT "$npid"
wait "$npid" || { cat "$work/nbd.err"; echo "ulpddp nbd exited with $? after SIGINT"; exit 1; }
echo "SIGINT: ulpddp nbd exited 0"

# A target that allows only another host.
tport2=$(free_port)
"$bin" target --listen "127.0.0.1:$tport2" --no-discovery-port --nqn "$nqn" --ns ram:8M \
    --allow-host nqn.2014-08.org.nvmexpress:uuid:00000000-0000-0000-0000-000000000000 \
    > "$work/target2.log" 2>&1 &
pids+=($!)
wait_port "$tport2" || { cat "$work/target2.log"; echo "second target did not start"; exit 1; }
if "$bin" nbd -a 127.0.0.1 --trsvcid "$tport2" --nqn "$nqn" --listen "127.0.0.1:$(free_port)" > "$work/refused.out" 2>&1; then
    echo "ulpddp nbd served a target that refuses this host"; exit 1
fi
grep -q "Connect rejected" "$work/refused.out" || { cat "$work/refused.out"; echo "no clear refusal"; exit 1; }
echo "refusing target: $(grep -m1 "Connect rejected" "$work/refused.out")"
echo "nbd-our-target: ok in $(( $(date +%s) - start )) s"
