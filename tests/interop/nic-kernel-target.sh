#!/usr/bin/env bash
# Interop: our host through the software NIC (`--soft-nic`, the ULP DDP engine on the live
# kernel TCP connection) against the Linux kernel target (nvmet-tcp) in qemu.
#
# The NIC's target-side namespace relays to the VM's forwarded port, so the TCP connection
# that crosses the NIC (and its faults) runs between the relay's kernel socket and the host's;
# the kernel target produces every PDU (one VM boot, kernel 6.12 unless KPEER_KERNEL says
# otherwise; namespace 1 = a 16 MiB random image made here):
#   1. read the first 8 MiB, offload on, data digest on and off: md5 equals the image;
#   2. write 4 MiB of fresh random data and read it back (md5), offload on, data digest;
#   3. the same read with drop/reorder/duplicate faults: data correct;
#   4. perf 128 KiB reads with data digest: at least 95% of C2HData bytes placed.
#
# Needs root. Usage: tests/interop/nic-kernel-target.sh  (needs cargo build --release -p ulpddp;
# ULPDDP=path overrides the binary)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
. "$here/kpeer.sh"
bin="${ULPDDP:-${CARGO_TARGET_DIR:-$repo/target}/release/ulpddp}"
[ -x "$bin" ] || { echo "nic-kernel-target: $bin missing (cargo build --release -p ulpddp)" >&2; exit 1; }
"$KPEER_HOME/run" --check >/dev/null

work="$(mktemp -d "${TMPDIR:-/tmp}/nic-kt.XXXXXX")"
trap 'rm -rf "$work"' EXIT
head -c $((16 << 20)) /dev/urandom > "$work/ns.img"

cat > "$work/host.sh" <<'HOST'
#!/usr/bin/env bash
set -euo pipefail
bin=$1 work=$2
port=$KPEER_HOSTFWD_PORT nqn=$KPEER_NQN
md5() { md5sum "$1" | cut -d' ' -f1; }
common=(-a 127.0.0.1 --trsvcid "$port" --nqn "$nqn" --soft-nic)
head -c $((8 << 20)) "$work/ns.img" > "$work/want8"
for dg in "-G" ""; do
    # shellcheck disable=SC2086
    "$bin" read "${common[@]}" $dg --start-block 0 --data-size $((8 << 20)) --data "$work/got8"
    [ "$(md5 "$work/got8")" = "$(md5 "$work/want8")" ] || { echo "read of the image differs ($dg)"; exit 1; }
    echo "image read through the NIC ok (${dg:-no digest})"
done
head -c $((4 << 20)) /dev/urandom > "$work/w"
"$bin" write "${common[@]}" -G --start-block 2048 --data "$work/w"
"$bin" read "${common[@]}" -G --start-block 2048 --data-size $((4 << 20)) --data "$work/r"
[ "$(md5 "$work/r")" = "$(md5 "$work/w")" ] || { echo "write/read back differs"; exit 1; }
"$bin" read "${common[@]}" -G --fault-drop 0.01 --fault-reorder 0.01 --fault-duplicate 0.01 \
    --fault-seed 5 --start-block 2048 --data-size $((4 << 20)) --data "$work/r"
[ "$(md5 "$work/r")" = "$(md5 "$work/w")" ] || { echo "read under faults differs"; exit 1; }
echo "write/read back and read under faults ok: md5 $(md5 "$work/w")"
"$bin" perf --target "127.0.0.1:$port" --nqn "$nqn" --soft-nic --rw read --bs 128k --qd 8 \
    --ddgst --size 8M --span 8M --json > "$work/perf.json"
python3 - "$work/perf.json" <<'PY'
import json, sys
job = json.load(open(sys.argv[1]))["jobs"][0]
nic = job["nic"]
placed, copied = nic["placed_bytes"], nic["copied_bytes"]
share = placed / max(1, placed + copied)
print(f"perf through the NIC: {job['mib_s']:.1f} MiB/s, placed {share:.1%} of C2HData bytes, "
      f"{nic['ddgst_offloaded_pdus']} digests verified by the device")
assert job["io_errors"] == 0, job
assert share >= 0.95, f"only {share:.1%} placed"
PY
HOST
chmod +x "$work/host.sh"

start=$(date +%s)
"$KPEER_HOME/run" --hostfwd auto --ns-image "$work/ns.img" --ns-fill zero -l "$work/console.log" \
    -- "$work/host.sh" "$bin" "$work"
echo "nic-kernel-target: ok in $(( $(date +%s) - start )) s"
