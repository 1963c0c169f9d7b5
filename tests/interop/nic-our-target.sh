#!/usr/bin/env bash
# Interop: the `ulpddp` host through the software NIC (`--soft-nic`: two network namespaces of
# its own, TUN devices, the ULP DDP engine on the live kernel TCP connection) against the
# `ulpddp target` process on loopback — the two commands the README shows.
#
#  1. Write 8 MiB of random data and read it back (md5) for: offload on with data digest;
#     offload on without digests; offload off (same path, no engine); GSO super-packets passed
#     on unsplit with both digests; drop + reorder + duplicate + delay faults.
#  2. perf, 128 KiB reads with data digest, no faults: at least 95% of the C2HData bytes the
#     host received were placed by the device (JSON `nic.placed_bytes`).
#  3. Payload corruption with the TCP checksum fixed: the read fails with a data digest error;
#     it never returns wrong data.
#  4. Nothing is left behind: no new network namespace once the commands ended.
#
# Needs root (the NIC creates namespaces and TUN devices). Usage: tests/interop/nic-our-target.sh
# (needs cargo build --release -p ulpddp; ULPDDP=path overrides the binary)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
bin="${ULPDDP:-${CARGO_TARGET_DIR:-$repo/target}/release/ulpddp}"
[ -x "$bin" ] || { echo "nic-our-target: $bin missing (cargo build --release -p ulpddp)" >&2; exit 1; }

work="$(mktemp -d "${TMPDIR:-/tmp}/nic-ot.XXXXXX")"
tpid=""
cleanup() {
    [ -n "$tpid" ] && { kill "$tpid" && wait "$tpid"; } 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
start=$(date +%s)
nqn=nqn.2024-01.io.ulp-ddp:nic-interop
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$bin" target --listen "127.0.0.1:$port" --no-discovery-port --nqn "$nqn" \
    --ns "ram:64M,lba=4096" --allow-any-host > "$work/target.log" 2>&1 &
tpid=$!
for _ in $(seq 50); do
    python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 0.2)" 2>/dev/null && break
    sleep 0.1
done
md5() { md5sum "$1" | cut -d' ' -f1; }
if command -v lsns >/dev/null; then lsns -t net -n -o NS | sort > "$work/ns.before"; fi
common=(-a 127.0.0.1 --trsvcid "$port" --nqn "$nqn" --soft-nic)

configs=(
    "-G"
    ""
    "-G --soft-nic-offload off"
    "-g -G --soft-nic-gso"
    "-G --fault-drop 0.01 --fault-reorder 0.01 --fault-duplicate 0.01 --fault-delay 0.005 --fault-seed 7"
)
n=0
for cfg in "${configs[@]}"; do
    n=$((n + 1))
    head -c $((8 << 20)) /dev/urandom > "$work/w"
    # shellcheck disable=SC2086
    "$bin" write "${common[@]}" $cfg --start-block $((n * 2048)) --data "$work/w"
    # shellcheck disable=SC2086
    "$bin" read "${common[@]}" $cfg --start-block $((n * 2048)) --data-size $((8 << 20)) --data "$work/r"
    [ "$(md5 "$work/r")" = "$(md5 "$work/w")" ] || { echo "config '$cfg': data differs"; exit 1; }
    echo "config '$cfg' ok: md5 $(md5 "$work/r")"
done

"$bin" perf --target "127.0.0.1:$port" --nqn "$nqn" --soft-nic --rw read --bs 128k --qd 8 \
    --ddgst --size 32M --span 32M --verify --json > "$work/perf.json"
python3 - "$work/perf.json" <<'PY'
import json, sys
job = json.load(open(sys.argv[1]))["jobs"][0]
nic = job["nic"]
placed, copied = nic["placed_bytes"], nic["copied_bytes"]
share = placed / max(1, placed + copied)
print(f"perf through the NIC: {job['mib_s']:.1f} MiB/s, placed {share:.1%} of C2HData bytes, "
      f"{nic['ddgst_offloaded_pdus']} digests verified by the device")
assert job["verify_errors"] == 0 and job["io_errors"] == 0, job
assert share >= 0.95, f"only {share:.1%} placed"
PY

head -c $((8 << 20)) /dev/urandom > "$work/w"
"$bin" write "${common[@]}" -G --start-block 0 --data "$work/w"
# Header digests on as well: a flip that lands in a PDU header (rare) then resets the queue,
# which re-issues the read, instead of failing it with a protocol error.
if "$bin" read "${common[@]}" -g -G --fault-corrupt 0.005 --fault-seed 3 --start-block 0 \
    --data-size $((8 << 20)) --data "$work/r" 2> "$work/corrupt.err"; then
    [ "$(md5 "$work/r")" = "$(md5 "$work/w")" ] || { echo "corrupted read returned wrong data"; exit 1; }
    echo "corruption: no corrupted byte reached a read (data correct)"
else
    grep -qi "digest" "$work/corrupt.err" || { cat "$work/corrupt.err"; echo "corrupted read failed without a digest error"; exit 1; }
    echo "corruption: the read failed with a data digest error: $(grep -m1 -i digest "$work/corrupt.err")"
fi

# The NIC's namespaces are held by its file descriptors only: once the commands ended, the
# set of network namespaces on the machine is what it was before.
if command -v lsns >/dev/null; then
    lsns -t net -n -o NS | sort > "$work/ns.after"
    comm -13 "$work/ns.before" "$work/ns.after" > "$work/ns.new"
    [ ! -s "$work/ns.new" ] || { echo "network namespaces left behind:"; cat "$work/ns.new"; exit 1; }
fi
echo "nic-our-target: ok in $(( $(date +%s) - start )) s"
