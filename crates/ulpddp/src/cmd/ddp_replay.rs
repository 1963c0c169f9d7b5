//! `ulpddp ddp replay CAPTURE`: the software device as a golden model on captured NVMe/TCP
//! traffic (see the `ddp-replay` crate and the "Replaying captures" section of
//! `docs/ulp-ddp.md`).

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, bail};
use ddp_engine::EngineConfig;
use ddp_replay::perturb::Perturb;
use ddp_replay::report::{compare, parse_log};
use ddp_replay::{ReplayOptions, capture::read_capture_file, default_engine, replay};

/// Arguments of `ulpddp ddp replay`.
#[derive(clap::Args, Debug)]
pub struct ReplayArgs {
    /// The capture (pcap or pcapng; Ethernet, Linux cooked or raw IP).
    pub capture: PathBuf,
    /// TCP port of the NVMe/TCP controller; connections on other ports are found by the
    /// ICReq at their start.
    #[arg(long, default_value_t = ddp_replay::NVME_TCP_PORT)]
    pub port: u16,
    /// Write one verdict record per PDU (JSON lines) to this file (`-`: standard output,
    /// the summary then goes to standard error).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Compare a device's log (the `--json` format) with the model's records and report the
    /// first divergence; exits with an error if they differ.
    #[arg(long, value_name = "FILE")]
    pub compare: Option<PathBuf>,
    /// Print the summary as JSON.
    #[arg(long)]
    pub summary_json: bool,
    /// Start from the ConnectX-7 driver's limits (128 SG entries, 32 KiB threshold, linear
    /// CIDs) instead of the defaults, which offload a Linux host's reads.
    #[arg(long)]
    pub connectx7: bool,
    /// The device's max_ddp_sgl_len (0: no limit). Default 0.
    #[arg(long, value_name = "ENTRIES")]
    pub sgl_len: Option<u32>,
    /// The device's io_threshold in bytes: smaller reads are not offloaded. Default 0.
    #[arg(long, value_name = "BYTES")]
    pub io_threshold: Option<u32>,
    /// The device takes only linear CIDs (0..queue size), not the full 16-bit range.
    #[arg(long)]
    pub linear_cids: bool,
    /// Size of the host buffers' segments: a read is lent as ceil(length / page size)
    /// scatter-gather entries.
    #[arg(long, default_value_t = 4096)]
    pub page_size: usize,
    /// Perturb the controller-to-host segments: `drop=P,reorder=P,duplicate=P,resplit=P,corrupt=P`
    /// (probabilities per segment).
    #[arg(long, value_name = "SPEC")]
    pub perturb: Option<String>,
    /// Seed of the perturbations.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Long run: repeat each offloaded queue's I/O part until its controller-to-host stream
    /// carried this many GiB (crosses the 32-bit sequence wrap from 4).
    #[arg(long, value_name = "GIB")]
    pub long_run: Option<u64>,
}

/// Runs `ulpddp ddp replay`.
pub fn run(a: ReplayArgs) -> anyhow::Result<()> {
    if a.page_size == 0 {
        bail!("--page-size must be at least 1");
    }
    let mut engine = if a.connectx7 {
        EngineConfig::connectx7_like()
    } else {
        default_engine()
    };
    if let Some(n) = a.sgl_len {
        engine.max_ddp_sgl_len = n;
    }
    if let Some(t) = a.io_threshold {
        engine.io_threshold = t;
    }
    if a.linear_cids {
        engine.full_ccid_range = false;
    }
    let perturb = a
        .perturb
        .as_deref()
        .map(|s| Perturb::parse(s, a.seed))
        .transpose()
        .context("--perturb")?;
    let long_run_bytes = match a.long_run {
        Some(g) => g.checked_mul(1 << 30).context("--long-run is too large")?,
        None => 0,
    };
    let device_log = match &a.compare {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("cannot read the device log {}", p.display()))?;
            Some(parse_log(&text).with_context(|| format!("device log {}", p.display()))?)
        }
        None => None,
    };
    let opts = ReplayOptions {
        port: a.port,
        engine,
        page_size: a.page_size,
        perturb,
        long_run_bytes,
        records: a.json.is_some() || device_log.is_some(),
        inject_device_fault: false,
        ..ReplayOptions::default()
    };
    let cap = read_capture_file(&a.capture)
        .with_context(|| format!("capture {}", a.capture.display()))?;
    let r = replay(&cap, &opts);

    let to_stdout = a.json.as_deref().is_some_and(|p| p.as_os_str() == "-");
    if let Some(path) = &a.json {
        let mut w: Box<dyn Write> = if to_stdout {
            Box::new(std::io::stdout().lock())
        } else {
            Box::new(std::io::BufWriter::new(
                std::fs::File::create(path)
                    .with_context(|| format!("cannot create {}", path.display()))?,
            ))
        };
        for rec in &r.records {
            serde_json::to_writer(&mut w, rec)?;
            w.write_all(b"\n")?;
        }
        w.flush()?;
    }
    let summary = if a.summary_json {
        serde_json::to_string_pretty(&r.summary)? + "\n"
    } else {
        r.summary.to_text()
    };
    if to_stdout {
        eprint!("{summary}");
    } else {
        print!("{summary}");
    }
    let mut failed = Vec::new();
    if let Some(dev) = device_log {
        match compare(&r.records, &dev) {
            None => eprintln!(
                "compare: the device's log matches the model ({} records)",
                r.records.len()
            ),
            Some(d) => {
                eprintln!("compare: {d}");
                failed.push("the device's log differs from the model");
            }
        }
    }
    if !r.summary.is_clean() {
        failed.push("the device disagreed with the capture");
    }
    if !failed.is_empty() {
        bail!("{}", failed.join("; "));
    }
    Ok(())
}
