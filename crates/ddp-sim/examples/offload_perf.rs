//! Offload off vs on over the simulated network, side by side.
//!
//! `cargo run --release -p ddp-sim --example offload_perf -- [GIB] [SIZE_KIB] [DDGST 0|1] [on|off|both] [FAULT_PPM]`
//!
//! With `on` or `off` only that side runs (for profiling). `FAULT_PPM` sets the drop,
//! reorder and duplicate rates (per million segments each).

use ddp_sim::{SimParams, compare_offload};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let gib: f64 = args.first().and_then(|a| a.parse().ok()).unwrap_or(1.0);
    let size_kib: u32 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(128);
    let ddgst = args.get(2).is_none_or(|a| a != "0");
    let fault_ppm: u32 = args.get(4).and_then(|a| a.parse().ok()).unwrap_or(0);
    let size = size_kib * 1024;
    let reads = ((gib * f64::from(1u32 << 30)) / f64::from(size)).ceil() as u64;
    let params = SimParams {
        ddgst,
        read_sizes: vec![size],
        reads,
        namespace_bytes: 64 << 20,
        queue_depth: 16,
        verify: false,
        threaded: true,
        // A clean wire needs no quick reaction from the host: large rounds keep the
        // lockstep hand-over (a thread switch per round) out of the host's CPU time.
        segments_per_round: if fault_ppm == 0 { 512 } else { 64 },
        wire: ddp_sim::WireConfig {
            faults: ddp_sim::FaultConfig {
                drop_ppm: fault_ppm,
                reorder_ppm: fault_ppm,
                duplicate_ppm: fault_ppm,
                corrupt_ppm: 0,
            },
            ..ddp_sim::WireConfig::default()
        },
        ..SimParams::default()
    };
    if let Some(side) = args.get(3).filter(|s| *s != "both") {
        let p = SimParams {
            ddp_offload: side == "on",
            ..params
        };
        match ddp_sim::run_sim_read_workload(&p) {
            Ok(r) => println!(
                "offload {side}: host CPU {:.3} s/GiB, network side {:.3} s",
                r.host_cpu_per_gib(),
                r.net_cpu_seconds
            ),
            Err(e) => eprintln!("simulation failed: {e}"),
        }
        return;
    }
    match compare_offload(&params) {
        Ok(c) => {
            println!(
                "{reads} reads of {size_kib} KiB, data digest {}, 2 queues x QD 16, faults {fault_ppm} ppm",
                if ddgst { "on" } else { "off" }
            );
            print!("{c}");
        }
        Err(e) => {
            eprintln!("simulation failed: {e}");
            std::process::exit(1);
        }
    }
}
