//! Offload off vs on over the simulated network, side by side.
//!
//! `cargo run --release -p ddp-sim --example offload_perf -- [GIB] [SIZE_KIB] [DDGST 0|1]`

use ddp_sim::{SimParams, compare_offload};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let gib: f64 = args.first().and_then(|a| a.parse().ok()).unwrap_or(1.0);
    let size_kib: u32 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(128);
    let ddgst = args.get(2).is_none_or(|a| a != "0");
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
        ..SimParams::default()
    };
    match compare_offload(&params) {
        Ok(c) => {
            println!(
                "{reads} reads of {size_kib} KiB, data digest {}, 2 queues x QD 16, clean wire",
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
