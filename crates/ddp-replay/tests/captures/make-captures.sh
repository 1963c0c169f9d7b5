#!/usr/bin/env bash
# Re-creates the stored captures (run as root from the repository root, after
# `cargo build --profile ci -p ulpddp` and tools/kernel-peer/setup). Needs tcpdump, dumpcap
# (tshark) and iproute2. The data read is random, so new captures differ from the stored
# ones byte for byte: update EXPECTED.json with what `ulpddp ddp replay --summary-json` says
# after checking it.
set -euo pipefail
ROOT=$(pwd)
U=${ULPDDP:-$ROOT/target/ci/ulpddp}
OUT=${OUT:-$ROOT/crates/ddp-replay/tests/captures}
KPEER_HOME=${KPEER_HOME:-$ROOT/tools/kernel-peer}
W=$(mktemp -d)
NS=ddp-replay-cap-$$
trap 'kill $(jobs -p) 2>/dev/null || true; ip netns del $NS 2>/dev/null || true; rm -rf "$W"' EXIT

# 1. Our host and our target in a private network namespace, MTU 1500 on its loopback.
ip netns add $NS
ip netns exec $NS ip link set lo mtu 1500 up
ip netns exec $NS "$U" target --listen 127.0.0.1:4420 --no-discovery-port --ns ram:16M \
    --allow-any-host >"$W/target.log" 2>&1 &
sleep 1
head -c 327680 /dev/urandom >"$W/pattern.bin"
N=nqn.2024-01.io.ulp-ddp:target
ours() { # OUT-FILE WRITER [HOST OPTIONS]
    local file=$1 tool=$2; shift 2
    if [ "$tool" = tcpdump ]; then
        ip netns exec $NS tcpdump -Z root -i lo -s 0 -w "$file" tcp port 4420 2>/dev/null &
    else
        ip netns exec $NS dumpcap -q -i lo -s 0 -w "$file" -f "tcp port 4420" 2>/dev/null &
    fi
    local cap=$!; sleep 2
    ip netns exec $NS "$U" write -a 127.0.0.1 -s 4420 -n $N "$@" --namespace-id 1 \
        --start-block 0 --data "$W/pattern.bin" >/dev/null
    for sz in 131072 4096 307200; do
        ip netns exec $NS "$U" read -a 127.0.0.1 -s 4420 -n $N "$@" --namespace-id 1 \
            --start-block 0 --data-size $sz --data "$W/rd.bin" >/dev/null
        head -c $sz "$W/pattern.bin" | cmp - "$W/rd.bin"
    done
    sleep 1; kill $cap; wait $cap || true
}
ours "$W/our-target-plain.pcap" tcpdump
ours "$W/our-target-digests.pcapng" dumpcap -g -G

# 2. The Linux kernel host and target in the VM (tcpdump on the guest's interfaces: Linux
#    cooked v2), and our host on this machine against the kernel target (loopback, the
#    forwarded port: found by its ICReq, not by port 4420).
cat >"$W/guest.sh" <<'GUEST'
echo "root:x:0:0:root:/root:/bin/sh" > /etc/passwd; echo "root:x:0:" > /etc/group
ip link set lo mtu 1500
tcpdump -Z root -i any -s 0 -w $KPEER_OUT_DIR/linux-host-digests.pcap tcp port 4420 2>/dev/null &
TD=$!; sleep 1
c=$(kpeer_connect hdr_digest,data_digest,nr_io_queues=1) || exit 1
dev=$(kpeer_nsdev "" 1 $c) || exit 1
dd if=$dev of=/dev/null bs=1M count=1 iflag=direct || exit 1
dd if=$dev of=/dev/null bs=4k count=4 skip=1000 iflag=direct || exit 1
dd if=$dev of=/dev/null bs=128k count=3 skip=20 iflag=direct || exit 1
kpeer_disconnect $c; sleep 1; kill $TD; wait $TD
# Started after the connect: the connection's start is not in this capture.
c=$(kpeer_connect nr_io_queues=1) || exit 1
tcpdump -Z root -i lo -s 0 -w $KPEER_OUT_DIR/linux-host-midstream.pcap tcp port 4420 2>/dev/null &
TD=$!; sleep 1
dev=$(kpeer_nsdev "" 1 $c) || exit 1
dd if=$dev of=/dev/null bs=64k count=4 skip=7 iflag=direct || exit 1
dd if=$dev of=/dev/null bs=1M count=1 skip=3 iflag=direct || exit 1
kpeer_disconnect $c; sleep 1; kill $TD; wait $TD
kpeer_wait_host
GUEST
cat >"$W/host.sh" <<HOST
#!/bin/sh
set -e
for mode in plain digests; do
  opts=""; [ \$mode = digests ] && opts="-g -G"
  tcpdump -Z root -i lo -s 0 -w "$W/kernel-target-\$mode.pcap" tcp port \$KPEER_HOSTFWD_PORT 2>/dev/null &
  td=\$!; sleep 1
  for sz in 262144 4096 65536; do
    "$U" read -a 127.0.0.1 -s \$KPEER_HOSTFWD_PORT -n \$KPEER_NQN \$opts --namespace-id 1 \
      --start-block 16 --data-size \$sz --data "$W/k.bin" >/dev/null
  done
  sleep 1; kill \$td; wait \$td || true
done
HOST
chmod +x "$W/host.sh"
"$KPEER_HOME/run" --script "$W/guest.sh" --add "$(command -v tcpdump)" --out "$W" \
    --hostfwd auto -- "$W/host.sh"
cp "$W"/*.pcap "$W"/*.pcapng "$OUT/"
chmod 644 "$OUT"/*.pcap "$OUT"/*.pcapng
