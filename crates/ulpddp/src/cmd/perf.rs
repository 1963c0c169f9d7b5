//! `ulpddp perf`: NVMe/TCP throughput and latency in the spirit of fio and spdk_nvme_perf.
//!
//! Without `--target` it starts the target in-process on loopback (a RAM namespace by
//! default) and measures the host against it; with no job options at all it runs the default
//! suite: 128 KiB sequential reads (QD 32) and 4 KiB random reads (QD 128), data digest on,
//! plus the raw TCP baseline, about 10 s in all. The host's threads run on one core and the
//! embedded target's on another (`--host-cpu`, `--target-cpu`, `--no-pin`), like two pinned
//! processes; see [`crate::perf::pin`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use nvme_tcp_host::{ConnectOptions, Controller};
use nvme_tcp_target::{NamespaceConfig, SubsystemConfig, Target, TargetConfig, TargetHandle};
use ulp_ddp_ctl::metrics::{MetricsServer, QueueMetricsSet};

use crate::cmd::nic::{CtlArgs, NicArgs, NicSession, OffloadMode};
use crate::perf::job::{DirMeasure, JobSpec, Live, Rw, prefill, run_queue};
use crate::perf::pin::{Pinning, usable_cores};
use crate::perf::report::{HostCpu, JobMeta, JobResult, table};
use crate::perf::size::{format_size, parse_size};
use crate::perf::{baseline, cpu};

/// NQN of the embedded target's subsystem.
pub const EMBEDDED_NQN: &str = "nqn.2024-01.io.ulp-ddp:perf";

/// Default of `--drain-timeout`, in seconds: a healthy target completes a full queue in a
/// small fraction of it, and it is far below the host's command timeout (30 s), after which a
/// target that stopped answering would hold the job for Aborts and reconnects.
pub const DEFAULT_DRAIN_TIMEOUT_S: f64 = 5.0;

/// Arguments of `ulpddp perf`.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Access pattern; without it (and without --bs/--qd) the default suite runs.
    #[arg(long, value_enum)]
    pub rw: Option<Rw>,
    /// Percentage of reads for randrw.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub rwmixread: u8,
    /// Block size (e.g. 4k, 128k).
    #[arg(long)]
    pub bs: Option<String>,
    /// Commands in flight per queue.
    #[arg(long)]
    pub qd: Option<usize>,
    /// I/O queues (each its own TCP connection and host thread).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    pub queues: u16,
    /// Seconds of measurement per job.
    #[arg(long, conflicts_with = "size")]
    pub runtime: Option<f64>,
    /// Stop each job after this many bytes instead (e.g. 4G).
    #[arg(long)]
    pub size: Option<String>,
    /// After each job's run, wait at most this many seconds for the commands still in flight;
    /// those that have not completed by then are abandoned (reported, and perf fails).
    #[arg(long, value_name = "SECS", default_value_t = DEFAULT_DRAIN_TIMEOUT_S)]
    pub drain_timeout: f64,
    /// Header digest.
    #[arg(long)]
    pub hdgst: bool,
    /// Data digest.
    #[arg(long)]
    pub ddgst: bool,
    /// TLS 1.3 on every queue: the embedded target requires it (with a fresh PSK); an
    /// external target needs --tls-key.
    #[arg(long)]
    pub tls: bool,
    /// The configured TLS PSK (`NVMeTLSkey-1:...:`) for an external target; implies --tls.
    #[arg(long, requires = "target")]
    pub tls_key: Option<String>,
    /// Namespace of the embedded target: ram:SIZE, null, or file:PATH.
    #[arg(long, default_value = "ram:1G")]
    pub ns: String,
    /// LBA size of the embedded target's namespace.
    #[arg(long, default_value_t = 512)]
    pub lba_size: u32,
    /// Bytes of the namespace to use (default: all of it, at most 1 GiB).
    #[arg(long)]
    pub span: Option<String>,
    /// Write a known pattern first and check every byte read.
    #[arg(long)]
    pub verify: bool,
    /// Also measure raw TCP loopback throughput and print NVMe/TCP ÷ raw TCP.
    #[arg(long)]
    pub baseline: bool,
    /// Output format: a table (normal), our JSON (json), or fio's JSON (fio-json: the shape
    /// `fio --output-format=json` prints, `.jobs[].read.iops` and so on).
    #[arg(long, value_enum, default_value_t)]
    pub output_format: PerfOutput,
    /// Same as --output-format json.
    #[arg(long, conflicts_with = "output_format")]
    pub json: bool,
    /// External target ADDR:PORT instead of the embedded one.
    #[arg(long, requires = "nqn")]
    pub target: Option<String>,
    /// Subsystem NQN of the external target.
    #[arg(long)]
    pub nqn: Option<String>,
    /// Namespace ID to use.
    #[arg(long, default_value_t = 1)]
    pub nsid: u32,
    /// Host NQN for an external target [default: /etc/nvme/hostnqn, else random].
    #[arg(long, requires = "target")]
    pub hostnqn: Option<String>,
    /// Serve Prometheus metrics (per-queue I/O counters and latency) on ADDR while running.
    #[arg(long)]
    pub metrics: Option<SocketAddr>,
    /// Skip writing the pattern before jobs (reads of a fresh RAM namespace then touch only
    /// zero pages, which flatters them; writes to it pay the first touch of every page).
    #[arg(long)]
    pub no_prefill: bool,
    /// Run over the simulated network with the software DDP engine, offload on vs off
    /// (data digest always on: verifying it is half of what the offload does).
    #[arg(long)]
    pub ddp: bool,
    /// With --ddp: drop, reorder and duplicate this many segments per million each.
    #[arg(long, default_value_t = 0, requires = "ddp")]
    pub fault_ppm: u32,
    /// With --ddp: seed of the simulated wire's segmentation and faults.
    #[arg(long, default_value_t = 1, requires = "ddp")]
    pub seed: u64,
    /// With --ddp or --soft-nic: serve the ULP DDP control plane (JSON-RPC) on this Unix
    /// socket.
    #[arg(long)]
    pub ctl_socket: Option<std::path::PathBuf>,
    /// With --ctl-socket: keep serving this many seconds after the runs.
    #[arg(long, default_value_t = 0.0, requires = "ctl_socket")]
    pub hold: f64,
    /// Core of the host's threads (an index among the cores perf may use) [default with the
    /// embedded target on two or more cores: 0; with --target: not pinned].
    #[arg(long)]
    pub host_cpu: Option<usize>,
    /// Core of the embedded target's threads [default on two or more cores: 1].
    #[arg(long)]
    pub target_cpu: Option<usize>,
    /// Leave thread placement to the scheduler (host and target threads then share and move
    /// between the cores).
    #[arg(long, conflicts_with_all = ["host_cpu", "target_cpu"])]
    pub no_pin: bool,
    /// Busy polling: the host (and the embedded target, in clear text) keep trying their
    /// sockets for up to this many microseconds after the last bytes before sleeping, as
    /// SPDK's pollers do; a queue under load then never sleeps, and each spinning thread
    /// takes its whole core (0: sleep at once).
    #[arg(long, value_name = "USECS", default_value_t = 0,
          value_parser = clap::value_parser!(u64).range(0..=1_000_000))]
    pub busy_poll: u64,
    /// Ask the controller to disable SQ flow control (nvme-cli's `--disable-sqflow`), which
    /// lets it complete a read with the SUCCESS flag of its last C2HData PDU instead of a
    /// separate response capsule.
    #[arg(long)]
    pub disable_sqflow: bool,
    /// SO_SNDBUF/SO_RCVBUF of the host's sockets (e.g. 4M; 0: the kernel's autotuning)
    /// [default: 4M].
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub socket_buffer_size: Option<u64>,
    #[command(flatten)]
    pub nic: NicArgs,
}

/// `--output-format` of perf.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum PerfOutput {
    /// A table for people.
    #[default]
    Normal,
    /// Our JSON (machine, baseline, jobs with every figure).
    Json,
    /// fio's JSON shape.
    FioJson,
}

impl Args {
    /// Where the host's and the embedded target's threads run (call once, before any thread
    /// is pinned: the cores are counted from the calling thread's affinity).
    pub fn pinning(&self) -> anyhow::Result<Pinning> {
        Pinning::choose(
            self.host_cpu,
            self.target_cpu,
            self.no_pin,
            self.target.is_none(),
            usable_cores(),
        )
        .map_err(anyhow::Error::msg)
    }

    /// The output format, --json folded in.
    pub fn output(&self) -> PerfOutput {
        if self.json {
            PerfOutput::Json
        } else {
            self.output_format
        }
    }
}

fn job_name(spec: &JobSpec, queues: u16, hdgst: bool, ddgst: bool) -> String {
    let mut n = format!(
        "{} {} qd{} q{}",
        spec.rw.name(),
        format_size(spec.bs as u64),
        spec.qd,
        queues
    );
    if hdgst {
        n.push_str(" hdgst");
    }
    if ddgst {
        n.push_str(" ddgst");
    }
    n
}

struct Session {
    // Drop order: the NIC (and the host namespace) goes first, so the embedded target is
    // stopped from the namespace it was started in.
    _nic: Option<NicSession>,
    _target: Option<TargetHandle>,
    ctrl: Controller,
    nsid: u32,
    lba_size: u32,
    nsze_bytes: u64,
}

fn open(
    args: &Args,
    pin: &Pinning,
    hdgst: bool,
    ddgst: bool,
    queue_size: u16,
    nic_offload: Option<bool>,
) -> anyhow::Result<Session> {
    // The embedded target's TLS: a fresh PSK for a fixed host NQN.
    let embedded_tls = (args.tls && args.target.is_none())
        .then(|| -> anyhow::Result<_> {
            let mut k = vec![0u8; 32];
            rand::RngCore::fill_bytes(&mut rand::rng(), &mut k);
            let host =
                nvme_tcp_host::options::hostnqn_from_uuid(&nvme_tcp_host::options::random_uuid());
            Ok((
                host,
                nvme_tcp_tls::ConfiguredPsk::new(nvme_tcp_tls::KeyHash::Sha256, k)?,
            ))
        })
        .transpose()?;
    let (target, addr, nqn) = match &args.target {
        Some(t) => {
            let a: SocketAddr = t
                .parse()
                .with_context(|| format!("--target {t:?}: expected ADDR:PORT"))?;
            (None, a, args.nqn.clone().unwrap_or_default())
        }
        None => {
            let mut ns =
                NamespaceConfig::parse(&args.ns).with_context(|| format!("--ns {:?}", args.ns))?;
            ns.lba_size = match args.lba_size {
                512 => nvme_tcp_target::namespace::LbaSize::B512,
                4096 => nvme_tcp_target::namespace::LbaSize::B4096,
                other => bail!("--lba-size {other}: expected 512 or 4096"),
            };
            let mut cfg = TargetConfig::single_port("127.0.0.1:0".parse()?)
                .subsystem(SubsystemConfig::new(EMBEDDED_NQN).namespace(ns));
            cfg.busy_poll = Duration::from_micros(args.busy_poll);
            if let Some((host, key)) = &embedded_tls {
                cfg.ports[0].tls = nvme_tcp_target::config::PortTls::Required;
                cfg.tls_keys.insert(host.clone(), key.clone());
            }
            // The target's threads inherit the core of the thread that starts it.
            pin.enter_target();
            let h = Target::start(cfg).context("starting the embedded target");
            pin.enter_host();
            let h = h?;
            let a = *h
                .local_addrs()
                .first()
                .context("embedded target has no listener")?;
            (Some(h), a, EMBEDDED_NQN.to_string())
        }
    };
    // The host's threads (queues, keep-alive) inherit the host's core from this thread.
    pin.enter_host();
    let mut opts = ConnectOptions::new(addr.ip().to_string(), addr.port(), nqn);
    if args.target.is_some() {
        let files = crate::cmd::hostid::Files::read(std::path::Path::new(
            crate::cmd::hostid::NVME_CONF_DIR,
        ))?;
        (opts.hostnqn, opts.hostid) =
            crate::cmd::hostid::resolve(args.hostnqn.as_deref(), None, &files)?;
    }
    let tls_key = match (&embedded_tls, &args.tls_key) {
        (Some((host, key)), _) => {
            opts.hostnqn = host.clone();
            Some(key.clone())
        }
        (None, Some(k)) => Some(nvme_tcp_tls::ConfiguredPsk::parse(k).context("--tls-key")?),
        (None, None) if args.tls => bail!("--tls with --target needs --tls-key"),
        (None, None) => None,
    };
    opts.tls = tls_key.map(|key| nvme_tcp_host::TlsOptions {
        key,
        identity: nvme_tcp_tls::IdentityVersion::V0,
    });
    opts.nr_io_queues = args.queues;
    opts.queue_size = queue_size;
    opts.hdgst = hdgst;
    opts.ddgst = ddgst;
    opts.busy_poll = Duration::from_micros(args.busy_poll);
    opts.disable_sqflow = args.disable_sqflow;
    if let Some(sz) = args.socket_buffer_size {
        opts.socket_buffer = (sz > 0).then(|| usize::try_from(sz)).transpose()?;
    }
    let nic = match nic_offload {
        Some(offload) => {
            let ctl = CtlArgs {
                ctl_socket: args.ctl_socket.clone(),
                metrics: None,
            };
            // The simulated NIC stands for hardware: its threads are not the host's.
            pin.release();
            let n = NicSession::start(args.nic.config(offload)?, &mut opts, &ctl);
            pin.enter_host();
            Some(n?)
        }
        None => None,
    };
    let ctrl = Controller::connect(opts).with_context(|| format!("connecting to {addr}"))?;
    let ns = ctrl.namespace(args.nsid)?;
    Ok(Session {
        _nic: nic,
        _target: target,
        ctrl,
        nsid: args.nsid,
        lba_size: ns.lba_size,
        nsze_bytes: ns.nsze * ns.lba_size as u64,
    })
}

fn role(name: &str) -> &'static str {
    if name.starts_with("nvmet") || name.starts_with("tgt") {
        "target"
    } else if name == "soft-nic" {
        "nic"
    } else if name.starts_with("baseline")
        || name == "metrics"
        || name.starts_with("ddp-ctl")
        || name.starts_with("nic-relay")
    {
        "other"
    } else {
        "host"
    }
}

#[allow(clippy::too_many_arguments)]
fn run_job(
    args: &Args,
    pin: &Pinning,
    rw: Rw,
    bs: usize,
    qd: usize,
    hdgst: bool,
    ddgst: bool,
    runtime: Option<Duration>,
    size: Option<u64>,
    drain: Duration,
    baseline_mib_s: Option<f64>,
    nic_offload: Option<bool>,
) -> anyhow::Result<JobResult> {
    // Queue size: room for qd commands plus the slot the protocol keeps free.
    let queue_size = u16::try_from(qd + 1).context("--qd too large")?;
    let mut s = open(args, pin, hdgst, ddgst, queue_size, nic_offload)?;
    if bs == 0 || !bs.is_multiple_of(s.lba_size as usize) {
        bail!("--bs {bs} is not a multiple of the LBA size {}", s.lba_size);
    }
    // Every I/O must fit one command: the controller's MDTS and what NLB can express.
    let nlb_max = 65536 * u64::from(s.lba_size);
    let max = match s.ctrl.info()?.max_transfer {
        Some(mdts) => mdts.min(nlb_max),
        None => nlb_max,
    };
    if bs as u64 > max {
        bail!(
            "--bs {} is larger than one command can transfer on this controller ({}: {})",
            format_size(bs as u64),
            format_size(max),
            if max < nlb_max {
                "its maximum data transfer size, MDTS"
            } else {
                "65536 blocks"
            }
        );
    }
    let span_limit = match &args.span {
        Some(v) => parse_size(v).map_err(anyhow::Error::msg)?,
        None => 1 << 30,
    };
    let span = span_limit.min(s.nsze_bytes) / bs as u64 * bs as u64;
    if span == 0 {
        if span_limit < s.nsze_bytes {
            bail!("--span {span_limit} is smaller than one block of --bs {bs}");
        }
        bail!(
            "namespace {} of {} bytes is smaller than one block of --bs {bs}",
            s.nsid,
            s.nsze_bytes
        );
    }
    let mut queues = s.ctrl.take_io_queues();
    if queues.is_empty() {
        bail!("the controller granted no I/O queue");
    }
    let reads = matches!(rw, Rw::Read | Rw::Randread | Rw::Randrw);
    let embedded_ram = args.target.is_none() && args.ns.starts_with("ram:");
    // Embedded RAM is also written first for write jobs: otherwise they measure the kernel
    // zeroing fresh (huge) pages on first touch, not steady-state writes.
    if ((args.verify && reads) || embedded_ram) && !args.no_prefill {
        prefill(&mut queues, s.nsid, s.lba_size, span).context("writing the pattern")?;
    }
    let spec = JobSpec {
        rw,
        rwmixread: args.rwmixread,
        bs,
        qd,
        nsid: s.nsid,
        lba_size: s.lba_size,
        span,
        verify: args.verify,
        warmup: Duration::from_millis(300),
        drain,
    };
    let mut name = job_name(&spec, queues.len() as u16, hdgst, ddgst);
    if args.tls || args.tls_key.is_some() {
        name.push_str(" tls");
    }
    match nic_offload {
        Some(true) => name.push_str(" nic-ddp"),
        Some(false) => name.push_str(" nic"),
        None => {}
    }
    let qids: Vec<u16> = queues.iter().map(|q| q.qid()).collect();
    let qmetrics = Arc::new(QueueMetricsSet::new(qids.iter().copied()));
    let _metrics_srv = match args.metrics {
        Some(addr) => Some(MetricsServer::bind(
            addr,
            ulp_ddp_ctl::Registry::new(),
            vec![Box::new(qmetrics.clone()), Box::new(crate::build_info())],
        )?),
        None => None,
    };
    let live = Arc::new(Live::default());
    let count = queues.len();
    let mut threads = Vec::new();
    for (i, q) in queues.into_iter().enumerate() {
        let (spec, live) = (spec.clone(), live.clone());
        let m = args.metrics.and_then(|_| qmetrics.queue(q.qid()));
        threads.push(
            std::thread::Builder::new()
                .name(format!("host-perf-q{}", q.qid()))
                .spawn(move || run_queue(q, &spec, i, count, &live, m))?,
        );
    }

    let pb = if args.output() != PerfOutput::Normal {
        ProgressBar::hidden()
    } else {
        let pb = ProgressBar::new(0);
        pb.set_style(
            ProgressStyle::with_template("{spinner} {prefix:34} {elapsed:>4} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        pb.set_prefix(name.clone());
        pb
    };
    std::thread::sleep(spec.warmup);
    let cpu0 = cpu::snapshot();
    let (ios0, bytes0) = (
        live.ios.load(Ordering::Relaxed),
        live.bytes.load(Ordering::Relaxed),
    );
    live.measuring.store(true, Ordering::Relaxed);
    let start = Instant::now();
    let mut last = (start, ios0, bytes0);
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let now = Instant::now();
        let (ios, bytes) = (
            live.ios.load(Ordering::Relaxed),
            live.bytes.load(Ordering::Relaxed),
        );
        if now.duration_since(last.0) >= Duration::from_millis(500) {
            let dt = now.duration_since(last.0).as_secs_f64();
            pb.set_message(format!(
                "{:>9.1} MiB/s {:>10.0} IOPS",
                (bytes - last.2) as f64 / dt / 1048576.0,
                (ios - last.1) as f64 / dt
            ));
            pb.tick();
            last = (now, ios, bytes);
        }
        let done_time = runtime.is_some_and(|r| start.elapsed() >= r);
        let done_size = size.is_some_and(|sz| bytes - bytes0 >= sz);
        let all_dead = threads.iter().all(|t| t.is_finished());
        if done_time || done_size || all_dead {
            break;
        }
    }
    live.measuring.store(false, Ordering::Relaxed);
    let seconds = start.elapsed().as_secs_f64();
    let cpu1 = cpu::snapshot();
    live.stop.store(true, Ordering::Relaxed);
    pb.finish_and_clear();

    let (mut read, mut write) = (DirMeasure::new(), DirMeasure::new());
    let (mut io_errors, mut verify_errors, mut first_error) = (0, 0, None);
    let mut abandoned = 0u64;
    let (mut placed, mut copied, mut ddgst_pdus) = (0u64, 0u64, 0u64);
    for t in threads {
        let (q, r) = t
            .join()
            .map_err(|_| anyhow::anyhow!("a perf thread panicked"))?;
        let qs = q.stats();
        placed += qs.rx_offload_placed_bytes;
        copied += qs.rx_copied_bytes + qs.rx_direct_bytes;
        ddgst_pdus += qs.rx_offload_ddgst_pdus;
        // Fails what is still in flight (abandoned): the buffers go with the queue.
        q.close();
        read.add(&r.read);
        write.add(&r.write);
        io_errors += r.io_errors;
        verify_errors += r.verify_errors;
        abandoned += r.abandoned;
        if first_error.is_none() {
            first_error = r.first_error;
        }
    }
    s.ctrl.shutdown();
    let roles = cpu::by_role_split(&cpu0, &cpu1, role);
    let (user_s, sys_s) = roles.get("host").copied().unwrap_or((0.0, 0.0));
    let embedded = args.target.is_none();
    let meta = JobMeta {
        rw,
        rwmixread: args.rwmixread,
        bs,
        qd,
        queues: count as u16,
    };
    let mut r = JobResult::new(
        name,
        meta,
        &read,
        &write,
        seconds,
        HostCpu { user_s, sys_s },
        embedded.then(|| roles.get("target").map(|(u, s)| u + s).unwrap_or(0.0)),
        baseline_mib_s,
    );
    r.io_errors = io_errors;
    r.verify_errors = verify_errors;
    r.abandoned_ios = abandoned;
    if let Some(offload) = nic_offload {
        let cpu_nic_s = roles.get("nic").map(|(u, s)| u + s).unwrap_or(0.0);
        let gib = r.bytes as f64 / (1u64 << 30) as f64;
        r.nic = Some(crate::perf::report::NicJob {
            offload,
            cpu_nic_s,
            nic_cpu_s_per_gib: if gib > 0.0 { cpu_nic_s / gib } else { 0.0 },
            placed_bytes: placed,
            copied_bytes: copied,
            ddgst_offloaded_pdus: ddgst_pdus,
        });
    }
    if let Some(e) = first_error {
        eprintln!("{}: first error: {e}", r.name);
    }
    if abandoned > 0 {
        eprintln!(
            "{}: {abandoned} {} still in flight {} s after the run; abandoned",
            r.name,
            if abandoned == 1 {
                "command"
            } else {
                "commands"
            },
            drain.as_secs_f64()
        );
    }
    Ok(r)
}

fn output(
    args: &Args,
    pin: &Pinning,
    results: &[JobResult],
    base: Option<&baseline::Baseline>,
) -> anyhow::Result<()> {
    match args.output() {
        PerfOutput::Json => {
            let v = serde_json::json!({
                "machine": { "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) },
                "pinning": { "host_cpu": pin.host_cpu_id(), "target_cpu": pin.target_cpu_id() },
                "baseline": base.map(|b| serde_json::json!({"mib_s": b.mib_per_s(), "bytes": b.bytes, "seconds": b.seconds})),
                "jobs": results,
            });
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        PerfOutput::FioJson => {
            let v = crate::perf::fio::document(results, std::time::SystemTime::now());
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        PerfOutput::Normal => print!("{}", table(results, base.map(|b| b.mib_per_s()))),
    }
    if results
        .iter()
        .any(|r| r.io_errors > 0 || r.verify_errors > 0)
    {
        bail!("some I/Os failed");
    }
    // A command that never completed is an I/O that did not succeed: the same failure.
    if results.iter().any(|r| r.abandoned_ios > 0) {
        bail!("some I/Os did not complete within --drain-timeout after the run");
    }
    Ok(())
}

/// Runs `ulpddp perf`.
pub fn run(args: Args) -> anyhow::Result<()> {
    if let Some(s) = &args.size
        && parse_size(s) == Ok(0)
    {
        bail!("--size must be more than 0 bytes");
    }
    if args.ddp {
        if args.output() == PerfOutput::FioJson {
            bail!("--output-format fio-json is for NVMe/TCP jobs; --ddp reports normal or json");
        }
        return crate::perf::ddp::run(&args);
    }
    let size = args
        .size
        .as_deref()
        .map(parse_size)
        .transpose()
        .map_err(anyhow::Error::msg)?;

    let runtime = args.runtime.map(Duration::from_secs_f64);
    if let Some(r) = args.runtime
        && !(r > 0.0 && r < 1e6)
    {
        bail!("--runtime must be a positive number of seconds");
    }
    if !(args.drain_timeout >= 0.0 && args.drain_timeout < 1e6) {
        bail!("--drain-timeout must be a number of seconds, 0 or more");
    }
    let drain = Duration::from_secs_f64(args.drain_timeout);
    let pin = args.pinning()?;
    let default_suite = args.rw.is_none() && args.bs.is_none() && args.qd.is_none();
    let mut jobs: Vec<(Rw, usize, usize, bool, bool)> = Vec::new();
    if default_suite {
        jobs.push((Rw::Read, 128 * 1024, 32, args.hdgst, true));
        jobs.push((Rw::Randread, 4096, 128, args.hdgst, true));
    } else {
        let bs = parse_size(args.bs.as_deref().unwrap_or("4k")).map_err(anyhow::Error::msg)?;
        let bs = usize::try_from(bs).context("--bs too large")?;
        if bs > 64 << 20 {
            bail!("--bs at most 64MiB");
        }
        let qd = args.qd.unwrap_or(32);
        if qd == 0 || qd > 1023 {
            bail!("--qd must be 1..=1023");
        }
        jobs.push((
            args.rw.unwrap_or(Rw::Randread),
            bs,
            qd,
            args.hdgst,
            args.ddgst,
        ));
    }
    let runtime = if default_suite && runtime.is_none() && size.is_none() {
        Some(Duration::from_secs(3))
    } else if size.is_none() {
        Some(runtime.unwrap_or(Duration::from_secs(5)))
    } else {
        runtime
    };
    let base = if default_suite || args.baseline {
        Some(baseline::measure(Duration::from_secs(1)).context("raw TCP baseline")?)
    } else {
        None
    };
    if args.ctl_socket.is_some() && !args.nic.soft_nic {
        bail!("--ctl-socket needs --ddp or --soft-nic");
    }
    let nic_runs: Vec<Option<bool>> = if !args.nic.soft_nic {
        vec![None]
    } else {
        match args.nic.soft_nic_offload {
            OffloadMode::On => vec![Some(true)],
            OffloadMode::Off => vec![Some(false)],
            OffloadMode::Both => vec![Some(false), Some(true)],
        }
    };
    let mut results = Vec::new();
    for (rw, bs, qd, h, d) in jobs {
        for &nic in &nic_runs {
            results.push(run_job(
                &args,
                &pin,
                rw,
                bs,
                qd,
                h,
                d,
                runtime,
                size,
                drain,
                base.as_ref().map(|b| b.mib_per_s()),
                nic,
            )?);
        }
    }
    output(&args, &pin, &results, base.as_ref())
}
