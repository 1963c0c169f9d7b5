//! `ulpddp perf --ddp`: the host over the simulated network with the software DDP engine,
//! offload off and on, side by side in one run (same seed, same reads).
//!
//! The device (the engine) lives for the whole process: with `--ctl-socket` it is served on
//! the control plane as ifindex 1 (`sim0`), so `ulpddp ddp caps-get|caps-set|stats-get` work
//! while the runs go on (and for `--hold` seconds after); with `--metrics` its counters and
//! the runs' are exposed to Prometheus.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use ddp_engine::{EngineConfig, SoftDdpDevice, TeardownMode};
use ddp_sim::{FaultConfig, OffloadComparison, SimParams, WireConfig, run_sim_read_workload_on};
use ulp_ddp_ctl::metrics::MetricsServer;
use ulp_ddp_ctl::server::ControlServer;
use ulp_ddp_ctl::{Registry, SharedDevice};

use crate::cmd::perf::Args;
use crate::perf::size::parse_size;

/// Read sizes of the default mix: the 32 KiB – 1 MiB range of blktests nvme/055.
const DEFAULT_SIZES: [u32; 6] = [32 << 10, 64 << 10, 128 << 10, 256 << 10, 512 << 10, 1 << 20];

fn params(args: &Args) -> anyhow::Result<SimParams> {
    let read_sizes = match &args.bs {
        Some(bs) => {
            let v = parse_size(bs).map_err(anyhow::Error::msg)?;
            let v = u32::try_from(v).context("--bs too large")?;
            if v == 0 || v % 512 != 0 || v > 4 << 20 {
                anyhow::bail!("--bs with --ddp: a multiple of 512 up to 4MiB");
            }
            vec![v]
        }
        None => DEFAULT_SIZES.to_vec(),
    };
    let total = match &args.size {
        Some(s) => parse_size(s).map_err(anyhow::Error::msg)?,
        None => 512 << 20,
    };
    let avg = read_sizes.iter().map(|&s| s as u64).sum::<u64>() / read_sizes.len() as u64;
    let qd = args.qd.unwrap_or(8).clamp(1, 128);
    let f = args.fault_ppm.min(200_000);
    Ok(SimParams {
        wire: WireConfig {
            seed: args.seed,
            faults: FaultConfig {
                drop_ppm: f,
                reorder_ppm: f,
                duplicate_ppm: f,
                ..FaultConfig::NONE
            },
            ..WireConfig::default()
        },
        engine: EngineConfig {
            teardown: TeardownMode::Deferred,
            ..EngineConfig::connectx7_like()
        },
        ddp_offload: true,
        hdgst: args.hdgst,
        ddgst: true,
        io_queues: args.queues.clamp(1, 16),
        queue_size: (qd as u16 + 1).max(16),
        queue_depth: qd,
        namespace_bytes: 64 << 20,
        read_sizes,
        reads: (total / avg.max(1)).max(1),
        read_segments: 1,
        verify: args.verify,
        segments_per_round: 512,
        threaded: true,
    })
}

/// Runs the offload comparison.
pub fn run(args: &Args) -> anyhow::Result<()> {
    let p = params(args)?;
    let dev = SoftDdpDevice::new(p.engine);
    let registry = Registry::new();
    let shared: SharedDevice = Arc::new(dev.clone());
    registry.add("sim0", shared);
    let ctl = match &args.ctl_socket {
        Some(path) => Some(
            ControlServer::bind(path, registry.clone())
                .with_context(|| format!("control socket {}", path.display()))?,
        ),
        None => None,
    };
    let _metrics = match args.metrics {
        Some(addr) => Some(MetricsServer::bind(
            addr,
            registry.clone(),
            vec![Box::new(crate::build_info())],
        )?),
        None => None,
    };
    let off = run_sim_read_workload_on(
        &SimParams {
            ddp_offload: false,
            ..p.clone()
        },
        dev.clone(),
    )
    .context("simulated run, offload off")?;
    let on = run_sim_read_workload_on(&p, dev.clone()).context("simulated run, offload on")?;
    let c = OffloadComparison { off, on };
    if args.output() == crate::cmd::perf::PerfOutput::Json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "params": p,
                "off": c.off,
                "on": c.on,
                "host_cpu_per_gib": { "off": c.off.host_cpu_per_gib(), "on": c.on.host_cpu_per_gib() },
            }))?
        );
    } else {
        println!(
            "simulated network, {} I/O queue(s), QD {}, reads of {}, seed {}, faults {} ppm each (drop/reorder/dup)",
            p.io_queues,
            p.queue_depth,
            p.read_sizes
                .iter()
                .map(|s| crate::perf::size::format_size(*s as u64))
                .collect::<Vec<_>>()
                .join("/"),
            p.wire.seed,
            args.fault_ppm
        );
        print!("{c}");
    }
    let bad = c.off.bad_data + c.on.bad_data;
    if let Some(ctl) = &ctl
        && args.hold > 0.0
    {
        eprintln!(
            "serving the control plane on {} for {} s",
            ctl.path().display(),
            args.hold
        );
        std::thread::sleep(Duration::from_secs_f64(args.hold.min(86_400.0)));
    }
    if bad > 0 {
        anyhow::bail!("{bad} reads returned wrong data");
    }
    Ok(())
}
