#!/usr/bin/env bash
# Side-by-side NVMe/TCP benchmark: ulp-ddp's target and host (`ulpddp target`, `ulpddp perf`)
# against SPDK's (`nvmf_tgt`, `spdk_nvme_perf`), and the two crossed pairings, in one sitting.
#
#   tools/bench/vs-spdk.sh SPDK_DIR
#
# SPDK_DIR is an SPDK source tree built with `make` (build/bin/nvmf_tgt,
# build/bin/spdk_nvme_perf or build/examples/perf, scripts/rpc.py); BENCHMARKS.md says how to build one in a
# temporary folder. Environment (defaults in brackets):
#   ULPDDP      our binary [target/release/ulpddp, built if missing]
#   ROUNDS      rounds; every round runs every job on every pairing [3]
#   RUNTIME     seconds per run [10]
#   HOST_CPU    core of the host process [0]
#   TARGET_CPU  core of the target process [1]
#   JOBS        subset of: read128k randread4k write128k lat4k lat128k [all]
#   PAIRS       subset of host/target pairings: ours/ours spdk/spdk ours/spdk spdk/ours [all]
#   SPDK_NOHUGE 1: run nvmf_tgt with --no-huge (spdk_nvme_perf of v23.x needs hugepages)
#   BUSY_POLL   busy-poll budget of our host and target, microseconds (`--busy-poll`), so
#               that both stacks poll as SPDK's do; 0 compares our default (sleep in
#               poll(2) when idle) [100000]
#   SQFLOW      1: our host keeps SQ flow control on (no `--disable-sqflow`), so our target
#               answers every read with a response capsule; SPDK's target completes reads
#               with the C2HData SUCCESS flag whatever the host asked [0]
#   NICE        nice value of all four programs, e.g. -10 on a machine busy with other work,
#               so both stacks get most of their cores [0]. Not real-time priority: SPDK's
#               busy-polling host and target at SCHED_FIFO starve the kernel work their own
#               TCP connections need (a 4 s run did not end in 10 minutes).
#   OUT         folder for the raw outputs [a new temporary folder]
#
# Both targets stay up for the whole sitting, one RAM namespace each (1 GiB, 4 KiB blocks),
# written once before the first run; the target not in use is stopped (SIGSTOP), because
# SPDK's reactor busy-polls its core even when idle. Within a round the jobs run one after
# the other and, for each job, the pairings alternate, so every ratio compares runs minutes
# apart at most. The table gives medians over the rounds.
#
# CPU seconds per GiB: user + system time of the host and the target process (all threads,
# from /proc/PID/stat) over a window inside the run (from 2 s after the host started to 1 s
# before its end), divided by the GiB moved in that window at the run's rate. SPDK
# busy-polls: its host and target each use a whole core whatever the load, so their figures
# are one core-second per second divided by the throughput.

set -euo pipefail

if [[ $# -ne 1 || $1 == -h || $1 == --help ]]; then
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
    exit 2
fi
SPDK_DIR=$(cd "$1" && pwd)
REPO=$(cd "$(dirname "$0")/../.." && pwd)
ULPDDP=${ULPDDP:-$REPO/target/release/ulpddp}
ROUNDS=${ROUNDS:-3}
RUNTIME=${RUNTIME:-10}
HOST_CPU=${HOST_CPU:-0}
TARGET_CPU=${TARGET_CPU:-1}
JOBS=${JOBS:-"read128k randread4k write128k lat4k lat128k"}
PAIRS=${PAIRS:-"ours/ours spdk/spdk ours/spdk spdk/ours"}
OUT=${OUT:-$(mktemp -d -t vs-spdk.XXXXXX)}
mkdir -p "$OUT"

NICE=${NICE:-0}
BUSY_POLL=${BUSY_POLL:-100000}
SQFLOW=${SQFLOW:-0}
OURS_HOST_OPTS=(--busy-poll "$BUSY_POLL")
[[ $SQFLOW == 1 ]] || OURS_HOST_OPTS+=(--disable-sqflow)
NQN=nqn.2024-01.io.ulp-ddp:vs-spdk
OURS_PORT=${OURS_PORT:-4520}
SPDK_PORT=${SPDK_PORT:-4521}
RPC_SOCK=$OUT/spdk.sock

TGT_BIN=$SPDK_DIR/build/bin/nvmf_tgt
PERF_BIN=$SPDK_DIR/build/bin/spdk_nvme_perf
# Before v23.05 spdk_nvme_perf was an example.
[[ -x $PERF_BIN ]] || PERF_BIN=$SPDK_DIR/build/examples/perf
RPC=$SPDK_DIR/scripts/rpc.py
for f in "$TGT_BIN" "$PERF_BIN" "$RPC"; do
    [[ -x $f || -f $f ]] || { echo "missing $f (is $SPDK_DIR a built SPDK tree?)" >&2; exit 1; }
done
# A build against a packaged DPDK is a shared one.
export LD_LIBRARY_PATH=$SPDK_DIR/build/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
if (( RUNTIME < 5 )); then
    echo "RUNTIME must be at least 5 s (the CPU window skips the first 2 s and the last 1 s)" >&2
    exit 1
fi
if [[ ! -x $ULPDDP ]]; then
    (cd "$REPO" && cargo build --release -p ulpddp)
fi
if [[ $(awk '/HugePages_Total/ {print $2}' /proc/meminfo) -eq 0 ]]; then
    echo "no hugepages: spdk_nvme_perf needs some, e.g. (as root)" >&2
    echo "  echo 1024 > /proc/sys/vm/nr_hugepages; mountpoint -q /dev/hugepages || mount -t hugetlbfs nodev /dev/hugepages" >&2
    exit 1
fi

# job name -> "rw bs qd hdgst ddgst"
job_def() {
    case $1 in
        read128k) echo "read 131072 32 0 1" ;;
        randread4k) echo "randread 4096 128 0 0" ;;
        write128k) echo "write 131072 32 1 1" ;;
        lat4k) echo "randread 4096 1 0 0" ;;
        lat128k) echo "read 131072 1 0 0" ;;
        *) echo "unknown job $1" >&2; exit 1 ;;
    esac
}

PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do
        kill -CONT "$p" 2>/dev/null || true
        kill -TERM "$p" 2>/dev/null || true
    done
    wait 2>/dev/null || true
}
trap cleanup EXIT

# CPU ticks (user + system) of a process, all threads.
ticks() { awk '{ s = $0; sub(/^.*\) /, "", s); split(s, f, " "); print f[12] + f[13] }' "/proc/$1/stat" 2>/dev/null || echo 0; }
CLK_TCK=$(getconf CLK_TCK)

echo "raw outputs in $OUT" >&2

# Our target.
nice -n "$NICE" taskset -c "$TARGET_CPU" "$ULPDDP" target --listen "127.0.0.1:$OURS_PORT" --no-discovery-port \
    --nqn "$NQN" --ns ram:1G,lba=4096 --allow-any-host --busy-poll "$BUSY_POLL" >"$OUT/ours-target.log" 2>&1 &
OURS_TGT=$!
PIDS+=("$OURS_TGT")

# SPDK's target: a 1 GiB malloc bdev with 4 KiB blocks; queue depth 256 so that QD 128 fits.
spdk_mem=()
if [[ ${SPDK_NOHUGE:-0} == 1 ]]; then spdk_mem=(--no-huge -s 2048); fi
nice -n "$NICE" taskset -c "$TARGET_CPU" "$TGT_BIN" -m "$((1 << TARGET_CPU))" -r "$RPC_SOCK" "${spdk_mem[@]}" \
    >"$OUT/spdk-target.log" 2>&1 &
SPDK_TGT=$!
PIDS+=("$SPDK_TGT")
for _ in $(seq 100); do
    [[ -S $RPC_SOCK ]] && break
    kill -0 "$SPDK_TGT" 2>/dev/null || { echo "nvmf_tgt exited:" >&2; tail -5 "$OUT/spdk-target.log" >&2; exit 1; }
    sleep 0.2
done
rpc() { python3 "$RPC" -s "$RPC_SOCK" "$@" >/dev/null; }
rpc nvmf_create_transport -t TCP -q 256
rpc bdev_malloc_create -b Malloc0 1024 4096
rpc nvmf_create_subsystem "$NQN" -a -s SPDK00000000000001
rpc nvmf_subsystem_add_ns "$NQN" Malloc0
rpc nvmf_subsystem_add_listener "$NQN" -t tcp -a 127.0.0.1 -s "$SPDK_PORT"
for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$OURS_PORT") 2>/dev/null && break
    sleep 0.1
done

port_of() { if [[ $1 == ours ]]; then echo "$OURS_PORT"; else echo "$SPDK_PORT"; fi; }
pid_of() { if [[ $1 == ours ]]; then echo "$OURS_TGT"; else echo "$SPDK_TGT"; fi; }
only_running() {
    local run=$1 stop=$2
    kill -STOP "$stop"
    kill -CONT "$run"
}

# Write both namespaces once (reads then read data, not never-touched pages).
for t in ours spdk; do
    if [[ $t == ours ]]; then only_running "$OURS_TGT" "$SPDK_TGT"; else only_running "$SPDK_TGT" "$OURS_TGT"; fi
    taskset -c "$HOST_CPU" "$ULPDDP" perf --target "127.0.0.1:$(port_of $t)" --nqn "$NQN" \
        --rw write --bs 128k --qd 32 --size 1G --json >"$OUT/prefill-$t.json"
done

# run_one ROUND JOB HOST TARGET: one run; appends a JSON line to $OUT/results.jsonl.
run_one() {
    local round=$1 job=$2 host=$3 tgt=$4
    read -r rw bs qd hd dd <<<"$(job_def "$job")"
    local port tpid log
    port=$(port_of "$tgt")
    tpid=$(pid_of "$tgt")
    if [[ $tgt == ours ]]; then only_running "$OURS_TGT" "$SPDK_TGT"; else only_running "$SPDK_TGT" "$OURS_TGT"; fi
    log=$OUT/r$round-$job-$host-$tgt.out
    if [[ $host == ours ]]; then
        local dig=()
        [[ $hd == 1 ]] && dig+=(--hdgst)
        [[ $dd == 1 ]] && dig+=(--ddgst)
        nice -n "$NICE" taskset -c "$HOST_CPU" "$ULPDDP" perf --target "127.0.0.1:$port" --nqn "$NQN" \
            --rw "$rw" --bs "$bs" --qd "$qd" "${dig[@]}" "${OURS_HOST_OPTS[@]}" --runtime "$RUNTIME" --json \
            >"$log" 2>&1 &
    else
        local dig=()
        [[ $hd == 1 ]] && dig+=(-H)
        [[ $dd == 1 ]] && dig+=(-I)
        nice -n "$NICE" taskset -c "$HOST_CPU" "$PERF_BIN" -c "$((1 << HOST_CPU))" -q "$qd" -o "$bs" -w "$rw" -t "$RUNTIME" -L "${dig[@]}" \
            -r "trtype:TCP adrfam:IPv4 traddr:127.0.0.1 trsvcid:$port subnqn:$NQN" >"$log" 2>&1 &
    fi
    local hpid=$!
    sleep 2
    local h0 t0 w0 h1 t1 w1
    h0=$(ticks "$hpid"); t0=$(ticks "$tpid"); w0=$(date +%s.%N)
    sleep "$((RUNTIME - 3))"
    h1=$(ticks "$hpid"); t1=$(ticks "$tpid"); w1=$(date +%s.%N)
    wait "$hpid" || { echo "run failed: $log" >&2; tail -5 "$log" >&2; return 0; }
    python3 - "$log" "$host" "$tgt" "$job" "$round" "$h0" "$h1" "$t0" "$t1" "$w0" "$w1" "$CLK_TCK" \
        >>"$OUT/results.jsonl" <<'EOF'
import json, re, sys
log, host, tgt, job, rnd = sys.argv[1:6]
h0, h1, t0, t1, w0, w1, tck = map(float, sys.argv[6:13])
text = open(log).read()
if host == "ours":
    j = json.loads(text[text.index("{"):])["jobs"][0]
    mib, iops = j["mib_s"], j["iops"]
    p50, p99 = j["latency"]["p50_us"], j["latency"]["p99_us"]
else:
    m = re.search(r"^Total\s*:\s*([\d.]+)\s+([\d.]+)", text, re.M) or \
        re.search(r"from core\s+\d+:\s*([\d.]+)\s+([\d.]+)", text)
    iops, mib = float(m.group(1)), float(m.group(2))
    pct = dict((float(a), float(b)) for a, b in re.findall(r"^\s*([\d.]+)%\s*:\s*([\d.]+)us", text, re.M))
    p50, p99 = pct.get(50.0), pct.get(99.0)
dt = w1 - w0
gib = mib / 1024 * dt
print(json.dumps({"round": int(rnd), "job": job, "host": host, "target": tgt, "mib_s": mib,
                  "iops": iops, "p50_us": p50, "p99_us": p99,
                  "host_cpu_s_per_gib": (h1 - h0) / tck / gib if gib else None,
                  "target_cpu_s_per_gib": (t1 - t0) / tck / gib if gib else None,
                  "host_cores": (h1 - h0) / tck / dt, "target_cores": (t1 - t0) / tck / dt}))
EOF
    echo "round $round $job $host/$tgt: $(tail -1 "$OUT/results.jsonl")" >&2
}

load0=$(cut -d' ' -f1-3 /proc/loadavg)
start=$(date -u +%Y-%m-%dT%H:%MZ)
for round in $(seq "$ROUNDS"); do
    for job in $JOBS; do
        for pair in $PAIRS; do
            run_one "$round" "$job" "${pair%/*}" "${pair#*/}"
        done
    done
done
load1=$(cut -d' ' -f1-3 /proc/loadavg)

python3 - "$OUT/results.jsonl" "$start" "$load0" "$load1" "$ROUNDS" "$RUNTIME" "$HOST_CPU" "$TARGET_CPU" "$NICE" \
    "$BUSY_POLL" "$SQFLOW" <<'EOF'
import json, statistics, sys, platform, os
path, start, load0, load1, rounds, runtime, hc, tc, nice, busy, sqflow = sys.argv[1:12]
rows = [json.loads(l) for l in open(path)]
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
print(f"{start}, {os.cpu_count()} CPUs ({cpu}), kernel {platform.release()}; "
      f"{rounds} rounds of {runtime} s; host on core {hc}, target on core {tc}, nice {nice}; "
      f"load average {load0} before, {load1} after; ours: busy poll {busy} µs, "
      f"SQ flow control {'on' if sqflow == '1' else 'off (reads end with SUCCESS)'}")
print()
print("| job | host / target | MiB/s | IOPS | ÷ SPDK/SPDK | p50 / p99 µs | host CPU s/GiB | target CPU s/GiB | host / target cores busy |")
print("|---|---|---|---|---|---|---|---|---|")
def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None
jobs = []
for r in rows:
    if r["job"] not in jobs:
        jobs.append(r["job"])
names = {"read128k": "128 KiB seq read QD32, ddgst", "randread4k": "4 KiB rand read QD128",
         "write128k": "128 KiB seq write QD32, hdgst+ddgst", "lat4k": "4 KiB rand read QD1",
         "lat128k": "128 KiB seq read QD1"}
for job in jobs:
    pairs = []
    for r in rows:
        p = (r["host"], r["target"])
        if r["job"] == job and p not in pairs:
            pairs.append(p)
    m = {}
    for p in pairs:
        sel = [r for r in rows if r["job"] == job and (r["host"], r["target"]) == p]
        m[p] = {k: med([r[k] for r in sel]) for k in sel[0] if k not in ("round", "job", "host", "target")}
        m[p]["n"] = len(sel)
    base = m.get(("spdk", "spdk"), {}).get("mib_s")
    lat = job.startswith("lat")
    for p in pairs:
        v = m[p]
        ratio = f"**{v['mib_s'] / base:.2f}x**" if base else "—"
        if lat and base:
            # Latency jobs: the ratio is of p50 latency, SPDK's over ours (higher = we are faster).
            bp = m[("spdk", "spdk")]["p50_us"]
            ratio = f"**{bp / v['p50_us']:.2f}x** (p50)" if v["p50_us"] else "—"
        f = lambda x, d=2: "—" if x is None else f"{x:.{d}f}"
        print(f"| {names.get(job, job)} | {p[0]} / {p[1]} | {v['mib_s']:,.0f} | {v['iops']:,.0f} | {ratio} | "
              f"{f(v['p50_us'], 1)} / {f(v['p99_us'], 1)} | {f(v['host_cpu_s_per_gib'], 3)} | "
              f"{f(v['target_cpu_s_per_gib'], 3)} | {f(v['host_cores'])} / {f(v['target_cores'])} |")
EOF
