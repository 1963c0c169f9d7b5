#!/usr/bin/env bash
# Interop: NVMe/TCP over TLS 1.3 (TP 8011) with the Linux 6.12 kernel host and target in the
# qemu guest, which run the handshake in user space through tlshd (ktls-utils) and then use
# kernel TLS. The PSK comes from one configured key (`ulpddp gen-tls-key`): our side takes the
# key itself; the guest's `.nvme` keyring gets the TLS PSK `ulpddp tls-psk` derives for the
# host/subsystem pair, under its identity `NVMe0R01 <hostnqn> <subnqn>`, as nvme-cli's
# `--insert` would put it there.
#
# 1. Kernel host -> our target (on this machine, reached from the guest as 10.0.2.2): the
#    kernel connects with `tls`, writes 2 MiB of random data and reads it back; a clear-text
#    connect to the TLS port fails; a clear-text connection to a second, TLS-less target works.
# 2. Our host (this machine) -> kernel target (port with addr_tsas tls1.3, addr_treq required),
#    through a qemu port forward: `ulpddp read --tls-key` reads 8 MiB of namespace 1, which must
#    equal its image; the same read without TLS must fail.
# Both runs capture the guest NIC. tshark must find TLS records on every queue's connection to a
# TLS port (admin + I/O queues: at least 3) and no NVMe/TCP PDU on those connections; the
# refused clear-text attempts and the clear-text port show that the same decoding does find
# PDUs where there are some.
#
# Usage: tests/interop/tls-kernel-peers.sh   (needs ulpddp: cargo build --release -p ulpddp;
#        ULPDDP=path overrides; the tlshd bundle is fetched once by tests/interop/tlshd.sh).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
. "$here/kpeer.sh"
bin="${ULPDDP:-${CARGO_TARGET_DIR:-$repo/target}/release/ulpddp}"
[ -x "$bin" ] || { echo "tls-kernel-peers: $bin missing (cargo build --release -p ulpddp)" >&2; exit 1; }
"$KPEER_HOME/run" --check >/dev/null
command -v tshark >/dev/null || { echo "tls-kernel-peers: tshark missing" >&2; exit 1; }
bundle="$(bash "$here/tlshd.sh")"
# Kernel TLS needs the GCM and GHASH crypto modules in the guest (the tls module is there).
export KPEER_EXTRA_MODULES="${KPEER_EXTRA_MODULES:-} gcm ghash-generic"

work="$(mktemp -d "${TMPDIR:-/tmp}/tls-kp.XXXXXX")"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    [ -n "${KEEP_WORK:-}" ] || rm -rf "$work"
}
trap cleanup EXIT

host=nqn.2014-08.org.nvmexpress:uuid:7c0e5b52-31a4-4e0b-9f0c-2b8d5a6c1e93
key="$("$bin" gen-tls-key)"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# The guest's TLS set-up: the PSK in the .nvme keyring, tlshd running.
cat > "$work/tls-setup.sh" <<'EOF2'
mkdir -p /opt/tlshd && tar xzf /root/tlshd-bundle.tgz -C /opt/tlshd || kpeer_fail "tlshd bundle"
T=/opt/tlshd
tls_run() { "$T/ld.so" --library-path "$T/lib" "$@"; }
ring=$(awk '$9 == ".nvme:" {print $1}' /proc/keys)
[ -n "$ring" ] || kpeer_fail "no .nvme keyring"
tls_run "$T/keyctl" padd psk "$TLS_IDENTITY" "0x$ring" < /root/tls.psk > /dev/null || kpeer_fail "keyctl padd"
printf '[debug]\nloglevel=1\n[authenticate]\nkeyrings=.nvme\n[authenticate.client]\n[authenticate.server]\n' > /tmp/tlshd.conf
tls_run "$T/tlshd" -s -c /tmp/tlshd.conf > /tmp/tlshd.log 2>&1 &
kpeer_log "tlshd started, PSK '$TLS_IDENTITY' in keyring $ring"
EOF2

# Decodes a capture: prints "<TLS connections on tls_port> <NVMe/TCP PDUs inside them>
# <clear-text connections on tls_port (refused attempts)> <NVMe/TCP PDUs on plain_port>". A TLS
# record read as NVMe/TCP has PDU type 0x16, so only the defined types (0-9) count as PDUs.
count() {
    local pcap=$1 tls_port=$2 plain_port=$3
    local tls_streams pdu_streams inside clear plain=0
    tls_streams=$(tshark -r "$pcap" -d "tcp.port==$tls_port,tls" -Y "tls.record && tcp.port==$tls_port" \
        -T fields -e tcp.stream 2>/dev/null | sort -u)
    pdu_streams=$(tshark -r "$pcap" -d "tcp.port==$tls_port,nvme-tcp" -Y "nvme-tcp.type <= 9 && tcp.port==$tls_port" \
        -T fields -e tcp.stream 2>/dev/null | sort)
    inside=$(comm -12 <(echo "$tls_streams") <(echo "$pdu_streams" | sort -u) | grep -c . || true)
    clear=$(echo "$pdu_streams" | sort -u | grep -c . || true)
    if [ "$plain_port" != 0 ]; then
        plain=$(tshark -r "$pcap" -d "tcp.port==$plain_port,nvme-tcp" -Y "nvme-tcp.type <= 9 && tcp.port==$plain_port" 2>/dev/null | wc -l)
    fi
    echo "$(echo "$tls_streams" | grep -c . || true) $inside $clear $plain"
}

fail=0

# --- 1. kernel host -> our target ---------------------------------------------------------
sub1=nqn.2024-01.io.ulp-ddp:tls-kernel-host
"$bin" tls-psk --key "$key" --hostnqn "$host" --subnqn "$sub1" --psk-out "$work/psk1" > /dev/null
tls_port=$(free_port)
plain_port=$(free_port)
"$bin" target --listen "127.0.0.1:$tls_port" --no-discovery-port --nqn "$sub1" --ns ram:16M \
    --allow-host "$host" --tls required --tls-host-key "$host=$key" > "$work/target-tls.log" 2>&1 &
pids+=($!)
"$bin" target --listen "127.0.0.1:$plain_port" --no-discovery-port --nqn "$sub1" --ns ram:16M \
    --allow-host "$host" > "$work/target-plain.log" 2>&1 &
pids+=($!)
for p in "$tls_port" "$plain_port"; do
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && break
        sleep 0.1
    done
done

cat "$work/tls-setup.sh" > "$work/g1.sh"
cat >> "$work/g1.sh" <<'EOF2'
set -u
a="traddr=$KPEER_HOST_ADDR,nqn=$SUB,hostnqn=$HOST"
if ctrl=$(kpeer_connect "$a,trsvcid=$PLAIN_PORT"); then
    dev=$(kpeer_nsdev "$SUB" 1 "$ctrl") || kpeer_fail "no namespace on the clear-text port"
    dd if=$dev of=/dev/null bs=1048576 count=1 iflag=direct 2>/dev/null || kpeer_fail "clear-text read"
    kpeer_disconnect "$ctrl"
    echo "RESULT clear-text port: connected and read"
else
    kpeer_fail "clear-text connect to the port without TLS"
fi
if kpeer_connect "$a,trsvcid=$TLS_PORT" > /dev/null 2>&1; then
    kpeer_fail "a clear-text connect to the TLS port succeeded"
fi
echo "RESULT TLS port: clear-text connect refused"
ctrl=$(kpeer_connect "$a,trsvcid=$TLS_PORT,tls") || { cat /tmp/tlshd.log; kpeer_fail "TLS connect"; }
dev=$(kpeer_nsdev "$SUB" 1 "$ctrl") || kpeer_fail "no namespace over TLS"
dd if=/dev/urandom of=/tmp/w bs=1048576 count=2 2>/dev/null
dd if=/tmp/w of=$dev bs=1048576 oflag=direct conv=fsync 2>/dev/null || kpeer_fail "TLS write"
want=$(md5sum < /tmp/w)
got=$(dd if=$dev bs=1048576 count=2 iflag=direct 2>/dev/null | md5sum)
[ "$want" = "$got" ] || kpeer_fail "TLS read back differs"
kpeer_disconnect "$ctrl"
echo "RESULT TLS port: kernel host wrote and read 2 MiB over TLS"
EOF2
echo "== 1. kernel host -> our target (TLS port $tls_port, clear-text port $plain_port)"
if "$KPEER_HOME/run" --no-target --allow-host --pcap "$work/1.pcap" \
    --add "$bundle:/root/tlshd-bundle.tgz" --add "$work/psk1:/root/tls.psk" \
    --env "TLS_IDENTITY=NVMe0R01 $host $sub1" --env "SUB=$sub1" --env "HOST=$host" \
    --env "TLS_PORT=$tls_port" --env "PLAIN_PORT=$plain_port" \
    --script "$work/g1.sh" -t 300 -l "$work/1.log"; then
    grep "RESULT" "$work/1.log" || true
    read -r conns inside clear plain < <(count "$work/1.pcap" "$tls_port" "$plain_port")
    echo "capture: $conns TLS connections to the TLS port, $inside of them with a clear-text PDU;" \
        "$clear refused clear-text attempts; $plain PDUs on the clear-text port"
    if [ "$conns" -lt 3 ] || [ "$inside" != 0 ] || [ "$clear" = 0 ] || [ "$plain" = 0 ]; then
        echo "FAIL: clear text on the TLS connections (or the capture decodes nothing)"; fail=1
    fi
else
    grep -v "^\[" "$work/1.log" | tail -40
    echo "--- our TLS target"; tail -20 "$work/target-tls.log"
    fail=1
fi

# --- 2. our host -> kernel target ---------------------------------------------------------
nqn2=nqn.2024-01.io.kpeer:target
"$bin" tls-psk --key "$key" --hostnqn "$host" --subnqn "$nqn2" --psk-out "$work/psk2" > /dev/null
head -c $((16 << 20)) /dev/urandom > "$work/ns.img"
head -c $((8 << 20)) "$work/ns.img" > "$work/want8"
cat "$work/tls-setup.sh" > "$work/g2.sh"
cat >> "$work/g2.sh" <<'EOF2'
kpeer_target_up || kpeer_fail "kernel target with TLS"
for f in addr_tsas addr_treq; do kpeer_log "port $f: $(cat /sys/kernel/config/nvmet/ports/*/$f | head -n 1)"; done
kpeer_ready
kpeer_wait_host
rc=$?
tail -n 5 /tmp/tlshd.log
exit $rc
EOF2
cat > "$work/h2.sh" <<'EOF2'
set -euo pipefail
bin=$1 work=$2 key=$3 host=$4
common=(-a 127.0.0.1 --trsvcid "$KPEER_HOSTFWD_PORT" --nqn "$KPEER_NQN" --hostnqn "$host"
        --hostid 7c0e5b52-31a4-4e0b-9f0c-2b8d5a6c1e93 --ctrl-loss-tmo 0)
if "$bin" read "${common[@]}" --namespace-id 1 --start-block 0 --data-size 4096 --data "$work/x" 2>/dev/null; then
    echo "FAIL: a clear-text read from the TLS-required kernel target succeeded"; exit 1
fi
echo "RESULT clear-text connect to the kernel TLS port refused"
"$bin" read "${common[@]}" -i 2 --tls-key "$key" --namespace-id 1 --start-block 0 \
    --data-size $((8 << 20)) --data "$work/got8"
cmp "$work/got8" "$work/want8"
echo "RESULT our host read 8 MiB over TLS from the kernel target"
EOF2
echo "== 2. our host -> kernel target"
if "$KPEER_HOME/run" --no-target --hostfwd auto --pcap "$work/2.pcap" --ns-image "$work/ns.img" \
    --port-attr addr_tsas=tls1.3 --port-attr addr_treq=required \
    --add "$bundle:/root/tlshd-bundle.tgz" --add "$work/psk2:/root/tls.psk" \
    --env "TLS_IDENTITY=NVMe0R01 $host $nqn2" \
    --script "$work/g2.sh" -t 300 -l "$work/2.log" -- \
    bash "$work/h2.sh" "$bin" "$work" "$key" "$host"; then
    read -r conns inside clear _ < <(count "$work/2.pcap" 4420 0)
    echo "capture: $conns TLS connections to the kernel target, $inside of them with a clear-text PDU;" \
        "$clear refused clear-text attempts"
    if [ "$conns" -lt 3 ] || [ "$inside" != 0 ] || [ "$clear" = 0 ]; then
        echo "FAIL: clear text on the TLS connection (or the capture decodes nothing)"; fail=1
    fi
else
    grep -v "^\[" "$work/2.log" | tail -40
    fail=1
fi

if [ "$fail" != 0 ]; then
    echo "tls-kernel-peers: FAILED"
    exit 1
fi
echo "tls-kernel-peers: ok"
