#!/usr/bin/env bash
# Interop: our userspace NVMe/TCP host (the `ulpddp` host commands) on this machine against the
# Linux kernel target (nvmet-tcp) in qemu, reached through --hostfwd.
#
# One VM run (kernel 6.12 by default; KPEER_KERNEL=6.1 for the other), namespace 1 = a 16 MiB
# random image made here. For each host configuration below (no digests; header+data digests
# with 4 I/O queues; data digest with disable_sqflow so the target completes reads with the
# C2HData SUCCESS flag; linear CIDs with small queues so writes go through R2T):
#   id-ctrl / id-ns / list (JSON, checked), read of the first 8 MiB compared with the image,
#   multi-queue write of 4 MiB of fresh random data at 8 MiB + read back, md5 compared.
# Before that: discover (JSON, the subsystem must be listed) and connect --interactive.
# After the host is done, the guest computes the md5 of the written region of its namespace
# file, and that has to match what the host wrote last.
#
# Usage: tests/interop/host-kernel-target.sh   (needs a release build of ulpddp:
#        cargo build --release -p ulpddp; ULPDDP=path overrides the binary)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
. "$here/kpeer.sh"
bin="${ULPDDP:-${CARGO_TARGET_DIR:-$repo/target}/release/ulpddp}"
[ -x "$bin" ] || { echo "host-kernel-target: $bin missing (cargo build --release -p ulpddp)" >&2; exit 1; }
"$KPEER_HOME/run" --check >/dev/null

work="$(mktemp -d "${TMPDIR:-/tmp}/host-kt.XXXXXX")"
trap 'rm -rf "$work"' EXIT
head -c $((16 << 20)) /dev/urandom > "$work/ns.img"

# The host side, run by `run` once the target is up ($KPEER_HOSTFWD_PORT, $KPEER_NQN).
cat > "$work/host.sh" <<'EOF'
#!/usr/bin/env bash
set -euo pipefail
bin=$1 work=$2
port=$KPEER_HOSTFWD_PORT nqn=$KPEER_NQN
md5() { md5sum "$1" | cut -d' ' -f1; }
head -c $((8 << 20)) "$work/ns.img" > "$work/want8"
# Discovery through the same port (nvmet serves the discovery subsystem on every port).
"$bin" discover -a 127.0.0.1 -s "$port" -o json > "$work/disc.json"
grep -q "\"subnqn\": \"$nqn\"" "$work/disc.json" || { cat "$work/disc.json"; echo "discover: $nqn not listed"; exit 1; }
"$bin" discover -a 127.0.0.1 -s "$port"
# connect keeps the controller open and runs commands from stdin.
printf 'id-ns 1\nread 1 0 15\nflush 1\nquit\n' \
    | "$bin" connect -a 127.0.0.1 -s "$port" -n "$nqn" -i 2 --interactive > "$work/connect.out"
grep -q "read 65536 bytes" "$work/connect.out" || { cat "$work/connect.out"; echo "connect --interactive failed"; exit 1; }
configs=(
    "-i 1"
    "-i 4 -g -G"
    "-i 2 -G --disable-sqflow"
    "-i 3 -g -Q 8 --linear-cids"
)
n=0
for cfg in "${configs[@]}"; do
    n=$((n + 1))
    echo "== host config $n: $cfg"
    common=(-a 127.0.0.1 --trsvcid "$port" --nqn "$nqn" $cfg)
    "$bin" id-ctrl "${common[@]}" -o json > "$work/idctrl.json"
    grep -q "\"subnqn\": \"$nqn\"" "$work/idctrl.json" || { cat "$work/idctrl.json"; echo "id-ctrl: subnqn missing"; exit 1; }
    "$bin" id-ns "${common[@]}" --namespace-id 1 -o json > "$work/idns.json"
    grep -q '"ds": 12' "$work/idns.json" || { cat "$work/idns.json"; echo "id-ns: not 4 KiB LBAs"; exit 1; }
    grep -q '"nsze": 4096' "$work/idns.json" || { cat "$work/idns.json"; echo "id-ns: not 16 MiB"; exit 1; }
    "$bin" list "${common[@]}"
    # Pre-existing data: the first 8 MiB must equal the image.
    "$bin" read "${common[@]}" --namespace-id 1 --start-block 0 --data-size $((8 << 20)) --data "$work/got8"
    [ "$(md5 "$work/got8")" = "$(md5 "$work/want8")" ] || { echo "read of the image differs"; exit 1; }
    # Fresh data: write 4 MiB at block 2048 (8 MiB) over several queues, read it back.
    head -c $((4 << 20)) /dev/urandom > "$work/w"
    "$bin" write "${common[@]}" --namespace-id 1 --start-block 2048 --data "$work/w"
    "$bin" read "${common[@]}" --namespace-id 1 --start-block 2048 --block-count 1023 --data "$work/r"
    [ "$(md5 "$work/r")" = "$(md5 "$work/w")" ] || { echo "write/read back differs"; exit 1; }
    echo "config $n ok: md5 $(md5 "$work/w")"
done
md5 "$work/w" > "$work/last.md5"
EOF
chmod +x "$work/host.sh"

# The guest side: after the host finished, report the md5 of the region it wrote.
cat > "$work/guest.sh" <<'EOF'
kpeer_wait_host || exit $?
echo "GUEST-MD5 $(dd if="$KPEER_NS1_PATH" bs=1048576 skip=8 count=4 2>/dev/null | md5sum | cut -d' ' -f1)"
EOF

start=$(date +%s)
log="$work/console.log"
"$KPEER_HOME/run" --hostfwd auto --ns-image "$work/ns.img" --ns-fill zero -l "$log" \
    --pcap "$work/trace.pcap" --script "$work/guest.sh" -- "$work/host.sh" "$bin" "$work"
guest=$(sed -n 's/.*GUEST-MD5 \([0-9a-f]\{32\}\).*/\1/p' "$log" | tail -n 1)
host=$(cat "$work/last.md5")
echo "guest md5 of the written region: $guest, host wrote: $host"
[ -n "$guest" ] && [ "$guest" = "$host" ]
# Third-party oracle: Wireshark's NVMe/TCP dissector checks every header and data digest of the
# captured traffic (both directions) and flags data it cannot match to a command.
if command -v tshark >/dev/null; then
    bad=$(tshark -r "$work/trace.pcap" -d tcp.port==4420,nvme-tcp \
        -o nvme-tcp.check_hdgst:TRUE -o nvme-tcp.check_ddgst:TRUE \
        -Y 'nvme-tcp.hdgst.status == 0 || nvme-tcp.ddgst.status == 0 || _ws.malformed' 2>/dev/null | wc -l)
    good=$(tshark -r "$work/trace.pcap" -d tcp.port==4420,nvme-tcp \
        -o nvme-tcp.check_hdgst:TRUE -o nvme-tcp.check_ddgst:TRUE \
        -Y 'nvme-tcp.ddgst.status == 1' 2>/dev/null | wc -l)
    h2c=$(tshark -r "$work/trace.pcap" -d tcp.port==4420,nvme-tcp \
        -o nvme-tcp.check_hdgst:TRUE -o nvme-tcp.check_ddgst:TRUE \
        -Y 'nvme-tcp.type == 6 && nvme-tcp.ddgst.status == 1' 2>/dev/null | wc -l)
    echo "tshark: $good PDUs with a verified data digest ($h2c H2CData sent by our host)," \
        "$bad with a bad digest or malformed"
    [ "$bad" -eq 0 ] && [ "$good" -gt 0 ] && [ "$h2c" -gt 0 ]
else
    echo "tshark not installed: digest oracle skipped"
fi
echo "host-kernel-target: ok in $(( $(date +%s) - start )) s"
