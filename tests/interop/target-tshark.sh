#!/usr/bin/env bash
# Interop oracle: Wireshark's NVMe/TCP dissector checks a loopback session between our host
# tools and `ulpddp target` on this machine, with header/data digest verification on.
#
# The session (captured on lo with dumpcap): for each host configuration (no digests; -g -G;
# -G with disable_sqflow so reads end with C2HData SUCCESS; -g): write 256 KiB (R2T + H2CData)
# and 4 KiB (in-capsule), read them back and compare, then discover. tshark must decode NVMe/TCP
# PDUs, find verified header and data digests, and report no bad digest, no malformed packet
# and no expert error.
#
# Usage: tests/interop/target-tshark.sh   (needs root for the capture, tshark/dumpcap, and a
#        release build of ulpddp; ULPDDP=path overrides the binary). About 10 s.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
bin="${ULPDDP:-${CARGO_TARGET_DIR:-$repo/target}/release/ulpddp}"
[ -x "$bin" ] || { echo "target-tshark: $bin missing (cargo build --release -p ulpddp)" >&2; exit 1; }
command -v tshark >/dev/null && command -v dumpcap >/dev/null || { echo "target-tshark: tshark/dumpcap missing" >&2; exit 1; }

work="$(mktemp -d "${TMPDIR:-/tmp}/target-tshark.XXXXXX")"
tpid="" cpid=""
cleanup() {
    [ -n "$cpid" ] && kill "$cpid" 2>/dev/null || true
    [ -n "$tpid" ] && kill "$tpid" 2>/dev/null || true
    wait 2>/dev/null || true
    [ -n "${KEEP:-}" ] && cp "$work/cap.pcapng" "$KEEP"; rm -rf "$work"
}
trap cleanup EXIT
nqn=nqn.2024-01.io.ulp-ddp:tshark

"$bin" target --listen 127.0.0.1:0 --no-discovery-port --nqn "$nqn" --ns ram:64M --allow-any-host > "$work/target.out" 2>&1 &
tpid=$!
for _ in $(seq 100); do
    grep -q "listening on" "$work/target.out" 2>/dev/null && break
    sleep 0.1
done
port=$(sed -n 's/^listening on 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$work/target.out" | head -n 1)
[ -n "$port" ] || { cat "$work/target.out"; echo "target did not start"; exit 1; }

dumpcap -q -i lo -f "tcp port $port" -w "$work/cap.pcapng" > "$work/dumpcap.out" 2>&1 &
cpid=$!
for _ in $(seq 100); do
    [ -s "$work/cap.pcapng" ] && break
    sleep 0.1
done
sleep 0.5

md5() { md5sum "$1" | cut -d' ' -f1; }
head -c $((256 << 10)) /dev/urandom > "$work/big"
head -c 4096 /dev/urandom > "$work/small"
for cfg in "" "-g -G" "-G --disable-sqflow" "-g"; do
    common=(-a 127.0.0.1 --trsvcid "$port" --nqn "$nqn" $cfg)
    "$bin" write "${common[@]}" --namespace-id 1 --start-block 0 --data "$work/big"
    "$bin" write "${common[@]}" --namespace-id 1 --start-block 1024 --data "$work/small"
    "$bin" read "${common[@]}" --namespace-id 1 --start-block 0 --data-size $((256 << 10)) --data "$work/rbig"
    "$bin" read "${common[@]}" --namespace-id 1 --start-block 1024 --data-size 4096 --data "$work/rsmall"
    [ "$(md5 "$work/rbig")" = "$(md5 "$work/big")" ] || { echo "read back differs ($cfg)"; exit 1; }
    [ "$(md5 "$work/rsmall")" = "$(md5 "$work/small")" ] || { echo "read back differs ($cfg)"; exit 1; }
    "$bin" discover -a 127.0.0.1 -s "$port" $cfg > /dev/null
    echo "session ok: ${cfg:-no digests}"
done
sleep 0.5
kill -INT "$cpid"; wait "$cpid" || true; cpid=""

ts() {
    tshark -r "$work/cap.pcapng" -d "tcp.port==$port,nvme-tcp" \
        -o nvme-tcp.check_hdgst:TRUE -o nvme-tcp.check_ddgst:TRUE "$@" 2>/dev/null
}
pdus=$(ts -Y nvme-tcp | wc -l)
hdgst_ok=$(ts -Y 'nvme-tcp.hdgst.status == 1' | wc -l)
ddgst_ok=$(ts -Y 'nvme-tcp.ddgst.status == 1' | wc -l)
bad_filter='nvme-tcp.hdgst.status == 0 || nvme-tcp.ddgst.status == 0 || _ws.malformed || _ws.expert.severity == error'
bad=$(ts -Y "$bad_filter" | wc -l)
echo "tshark: $pdus frames with NVMe/TCP, $hdgst_ok with a good header digest, $ddgst_ok with a good data digest, $bad bad"
if [ "$bad" -ne 0 ]; then
    ts -Y "$bad_filter" | head -n 20
    exit 1
fi
[ "$pdus" -gt 0 ] && [ "$hdgst_ok" -gt 0 ] && [ "$ddgst_ok" -gt 0 ]
