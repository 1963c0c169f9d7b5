#!/usr/bin/env bash
# Interop: the `ulpddp` host commands against the `ulpddp target` process on loopback, with a
# file-backed namespace.
#
#  1. For four host configurations (no digests; header+data digests over 4 queues; data digest
#     with SQ flow control disabled (C2HData SUCCESS); linear CIDs with small queues):
#     id-ctrl JSON, discover JSON, 8 MiB of fresh random data written at block 1024 (R2T
#     writes: the target takes 8 KiB in-capsule and MAXH2CDATA 16 KiB) and read back, md5.
#  2. Reconnect with data intact: `connect --interactive` keeps a controller open and reads
#     1 MiB (prints its CRC32C); the target process is killed with SIGKILL and started again on
#     the same file; the next read on the same open controller reconnects (new association)
#     and must print the same CRC32C.
#
# Usage: tests/interop/host-our-target.sh   (needs cargo build --release -p ulpddp;
#        ULPDDP=path overrides the binary)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
bin="${ULPDDP:-${CARGO_TARGET_DIR:-$repo/target}/release/ulpddp}"
[ -x "$bin" ] || { echo "host-our-target: $bin missing (cargo build --release -p ulpddp)" >&2; exit 1; }

work="$(mktemp -d "${TMPDIR:-/tmp}/host-ot.XXXXXX")"
tpid=""
cpid=""
cleanup() {
    [ -n "$cpid" ] && kill "$cpid" 2>/dev/null || true
    [ -n "$tpid" ] && { kill "$tpid" && wait "$tpid"; } 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
start=$(date +%s)
nqn=nqn.2024-01.io.ulp-ddp:host-interop
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
head -c $((32 << 20)) /dev/urandom > "$work/ns.img"

start_target() {
    "$bin" target --listen "127.0.0.1:$port" --no-discovery-port --nqn "$nqn" \
        --ns "file:$work/ns.img,lba=4096" --in-capsule-data-size 8K --maxh2cdata 16K --allow-any-host \
        > "$work/target.log" 2>&1 &
    tpid=$!
    for _ in $(seq 1 200); do
        if (exec 9<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
        sleep 0.05
    done
    cat "$work/target.log"
    echo "target did not start"
    return 1
}
md5() { md5sum "$1" | cut -d' ' -f1; }

start_target
configs=(
    "-i 1"
    "-i 4 -g -G"
    "-i 2 -G --disable-sqflow"
    "-i 3 -Q 8 --linear-cids"
)
n=0
for cfg in "${configs[@]}"; do
    n=$((n + 1))
    common=(-a 127.0.0.1 --trsvcid "$port" --nqn "$nqn" $cfg)
    "$bin" id-ctrl "${common[@]}" -o json > "$work/idctrl.json"
    grep -q "\"subnqn\": \"$nqn\"" "$work/idctrl.json" || { cat "$work/idctrl.json"; exit 1; }
    "$bin" discover -a 127.0.0.1 -s "$port" -o json > "$work/disc.json"
    grep -q "\"subnqn\": \"$nqn\"" "$work/disc.json" || { cat "$work/disc.json"; exit 1; }
    head -c $((8 << 20)) /dev/urandom > "$work/w"
    "$bin" write "${common[@]}" --namespace-id 1 --start-block 1024 --data "$work/w"
    "$bin" read "${common[@]}" --namespace-id 1 --start-block 1024 --data-size $((8 << 20)) --data "$work/r"
    [ "$(md5 "$work/r")" = "$(md5 "$work/w")" ] || { echo "config $n ($cfg): read back differs"; exit 1; }
    # The data is in the target's file.
    [ "$(dd if="$work/ns.img" bs=1M skip=4 count=8 2>/dev/null | md5sum | cut -d' ' -f1)" = "$(md5 "$work/w")" ] \
        || { echo "config $n ($cfg): namespace file differs"; exit 1; }
    echo "config $n ($cfg): ok"
done

# Reconnect across a target process restart, on one open controller.
mkfifo "$work/in"
exec 3<>"$work/in"
"$bin" connect -a 127.0.0.1 -s "$port" -n "$nqn" -i 2 -G -k 1 --reconnect-delay 1 \
    --ctrl-loss-tmo 60 --interactive < "$work/in" > "$work/connect.out" 2> "$work/connect.err" &
cpid=$!
wait_lines() { # wait until the output has $1 "read" lines
    for _ in $(seq 1 600); do
        [ "$(grep -c '^read ' "$work/connect.out" || true)" -ge "$1" ] && return 0
        kill -0 "$cpid" 2>/dev/null || break
        sleep 0.1
    done
    cat "$work/connect.out" "$work/connect.err"
    echo "connect --interactive: no answer"
    return 1
}
echo "read 1 1024 255" >&3
wait_lines 1
{ kill -9 "$tpid" && wait "$tpid"; } 2>/dev/null || true
sleep 1.5
start_target
echo "read 1 1024 255" >&3
wait_lines 2
echo "quit" >&3
wait "$cpid" || true
cpid=""
mapfile -t reads < <(grep '^read ' "$work/connect.out")
echo "before the restart: ${reads[0]}"
echo "after the restart:  ${reads[1]}"
[ "${reads[0]}" = "${reads[1]}" ] || { cat "$work/connect.err"; echo "data differs after the restart"; exit 1; }
grep -q "reconnect\|re-established\|lost" "$work/connect.err" || echo "(no reconnect log: RUST_LOG=info shows it)"
echo "host-our-target: ok in $(( $(date +%s) - start )) s"
