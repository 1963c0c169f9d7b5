//! `ulpddp target`: serve NVMe/TCP subsystems (an NVMe-oF target).
//!
//! Either flags for the common case (one subsystem, namespaces given as `ram:SIZE`,
//! `file:PATH[,direct]` or `null[:SIZE]`), or `--config FILE` with the JSON `nvmetcli save`
//! writes. Runs until SIGINT or SIGTERM, which drain the connections (commands in flight
//! finish, then each connection closes) before it exits; SIGHUP reloads the `--config`
//! file.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use nvme_tcp_target::config::{PortConfig, PortSubsystems, PortTls};
use nvme_tcp_target::namespace::parse_size;
use nvme_tcp_target::{Limits, NamespaceConfig, SubsystemConfig, Target, TargetConfig};
use nvme_tcp_tls::ConfiguredPsk;
use ulp_ddp_ctl::metrics::MetricsServer;

use super::target_ctl::{Control, ControlServer};
use super::target_metrics::TargetCollector;

/// Arguments of `ulpddp target`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Address to serve I/O controllers (and discovery) on; repeatable. IPv6 as [::1]:4420.
    #[arg(long = "listen", default_value = "127.0.0.1:4420")]
    listen: Vec<SocketAddr>,
    /// Discovery-only listener (the NVMe/TCP discovery port); repeatable.
    #[arg(long = "discovery-listen", default_value = "127.0.0.1:8009")]
    discovery_listen: Vec<SocketAddr>,
    /// Do not open the discovery-only listener(s).
    #[arg(long)]
    no_discovery_port: bool,
    /// Subsystem NQN.
    #[arg(long, default_value = "nqn.2024-01.io.ulp-ddp:target")]
    nqn: String,
    /// Namespace: ram:SIZE, file:PATH[,direct], null[:SIZE]; options ,lba=512|4096,
    /// ,nsid=N, ,uuid=, ,nguid=, ,eui64=. Repeatable [default: ram:256M].
    #[arg(long = "ns")]
    namespaces: Vec<String>,
    /// Host NQN allowed to connect (repeatable). One of --allow-host or --allow-any-host is
    /// required: no host is let in unless that was configured [default: none].
    #[arg(long = "allow-host")]
    allow_hosts: Vec<String>,
    /// Let any host connect (nvmet's attr_allow_any_host = 1).
    #[arg(long, conflicts_with = "allow_hosts")]
    allow_any_host: bool,
    /// Serial number reported in Identify Controller [default: derived from the NQN].
    #[arg(long)]
    serial: Option<String>,
    /// TLS 1.3 (NVMe/TCP TLS, TP 8011) on the --listen ports: `required` (clear-text
    /// connections are closed) or `optional` (both; nvmet's treq "not required"). Needs
    /// --tls-host-key [default: off].
    #[arg(long, value_name = "MODE", value_parser = ["required", "optional"])]
    tls: Option<String>,
    /// The TLS PSK of a host, NQN=KEY with KEY in the interchange format
    /// (`NVMeTLSkey-1:01:...:`); repeatable. The host names itself in its PSK identity
    /// [default: none].
    #[arg(long = "tls-host-key", value_name = "NQN=KEY")]
    tls_host_keys: Vec<String>,
    /// Derive the TLS PSKs of --tls-host-key as nvme-cli up to 2.13 (libnvme 1.13) does, for
    /// hosts whose keyring holds keys it inserted.
    #[arg(long)]
    tls_compat: bool,
    /// Load an `nvmetcli save` JSON file instead of the subsystem flags [default: none].
    #[arg(long, conflicts_with_all = ["namespaces", "allow_hosts", "serial", "tls"])]
    config: Option<PathBuf>,
    /// Maximum open connections (the open-file limit is raised to match, or the target
    /// refuses to start) [default: 1024].
    #[arg(long)]
    max_connections: Option<usize>,
    /// Maximum open connections from one source IP address [default: 512].
    #[arg(long)]
    max_connections_per_address: Option<usize>,
    /// Maximum connected queues (admin and I/O) of one host NQN; further Connects are
    /// answered Controller Busy [default: 512].
    #[arg(long)]
    max_connections_per_host: Option<usize>,
    /// Seconds a new connection has for ICReq and Connect [default: 10].
    #[arg(long, value_name = "SECS")]
    connect_timeout: Option<u64>,
    /// Seconds after which an idle I/O queue, or admin queue without keep-alive, is
    /// disconnected when connection slots are scarce (0: never) [default: 120].
    #[arg(long, value_name = "SECS")]
    idle_timeout: Option<u64>,
    /// Percentage of --max-connections open from which slots count as scarce [default: 75].
    #[arg(long, value_parser = clap::value_parser!(u8).range(0..=100))]
    idle_reclaim_percent: Option<u8>,
    /// Seconds a host has in total to take each PDU once sending to it stalls [default: 30].
    #[arg(long, value_name = "SECS")]
    send_timeout: Option<u64>,
    /// Seconds SIGTERM/SIGINT wait for commands in flight before closing what is left.
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    drain_timeout: u64,
    /// Maximum I/O queues per controller (at least 1) [default: 64].
    #[arg(long)]
    max_io_queues: Option<u16>,
    /// Maximum I/O queue size (entries) [default: 1024].
    #[arg(long)]
    max_queue_size: Option<u16>,
    /// In-capsule data size of I/O queues (e.g. 8K, 16K) [default: 8K].
    #[arg(long, value_parser = size)]
    in_capsule_data_size: Option<u64>,
    /// MAXH2CDATA announced in ICResp (e.g. 128K) [default: 128K].
    #[arg(long, value_parser = size)]
    maxh2cdata: Option<u64>,
    /// Maximum data transfer size of a command (power of two, e.g. 1M) [default: 1M].
    #[arg(long, value_parser = size)]
    mdts: Option<u64>,
    /// Largest C2HData payload; reads are split at this size (e.g. 128K) [default: 128K].
    #[arg(long, value_parser = size)]
    c2h_data_max: Option<u64>,
    /// Solicited write data plus staged read data per connection (e.g. 16M) [default: 16M].
    #[arg(long, value_parser = size)]
    max_inflight_data: Option<u64>,
    /// Start every controller with its volatile write cache disabled, so each write to a
    /// file or block device namespace is on stable storage before it completes (hosts may
    /// enable the cache with Set Features). By default the cache is enabled and only writes
    /// with FUA, and Flush, force data out.
    #[arg(long)]
    no_write_cache: bool,
    /// SO_SNDBUF/SO_RCVBUF of each connection (0: system default) [default: 4M].
    #[arg(long, value_parser = size)]
    socket_buffer_size: Option<u64>,
    /// Busy polling: each clear-text I/O connection keeps trying its socket for up to this
    /// many microseconds after the last bytes before blocking, so a loaded connection never
    /// waits for a wake-up; it takes a core while it spins [default: 0, block at once].
    #[arg(long, value_name = "USECS", value_parser = clap::value_parser!(u64).range(0..=1_000_000))]
    busy_poll: Option<u64>,
    /// Serve Prometheus metrics on ADDR (`GET /metrics`): connections, Connects, commands,
    /// bytes, errors by status and latency per subsystem, namespace and connection
    /// [default: off].
    #[arg(long, value_name = "ADDR")]
    metrics: Option<SocketAddr>,
    /// Serve the JSON-RPC control socket on PATH (list subsystems, namespaces, hosts and
    /// connections; add and remove namespaces and allowed hosts) [default: off].
    #[arg(long, value_name = "PATH")]
    control_socket: Option<PathBuf>,
}

fn size(s: &str) -> Result<u64, String> {
    parse_size(s).map_err(|e| e.to_string())
}

fn u32_of(name: &str, v: u64) -> anyhow::Result<u32> {
    u32::try_from(v).with_context(|| format!("--{name} {v} is too large"))
}

fn build_config(a: &Args) -> anyhow::Result<TargetConfig> {
    let mut cfg = match &a.config {
        Some(path) => TargetConfig::from_nvmetcli_file(path)?,
        None => {
            let mut sub = SubsystemConfig::new(a.nqn.clone());
            if !a.allow_any_host {
                if a.allow_hosts.is_empty() {
                    bail!(
                        "no host may connect: give --allow-host NQN (repeatable) or --allow-any-host"
                    );
                }
                sub.allow_any_host = false;
                sub.allowed_hosts = a.allow_hosts.clone();
            }
            sub.serial = a.serial.clone();
            let specs = if a.namespaces.is_empty() {
                vec!["ram:256M".to_string()]
            } else {
                a.namespaces.clone()
            };
            for spec in &specs {
                sub.namespaces
                    .push(NamespaceConfig::parse(spec).with_context(|| format!("--ns {spec:?}"))?);
            }
            let mut ports: Vec<PortConfig> = a
                .listen
                .iter()
                .enumerate()
                .map(|(i, addr)| PortConfig::new(i as u16 + 1, *addr))
                .collect();
            if !a.no_discovery_port {
                for addr in &a.discovery_listen {
                    if a.listen.contains(addr) {
                        continue;
                    }
                    let mut p = PortConfig::new(ports.len() as u16 + 1, *addr);
                    p.subsystems = PortSubsystems::Listed(Vec::new());
                    ports.push(p);
                }
            }
            let tls = match a.tls.as_deref() {
                Some("required") => PortTls::Required,
                Some(_) => PortTls::NotRequired,
                None => PortTls::None,
            };
            for p in ports.iter_mut().take(a.listen.len()) {
                p.tls = tls;
            }
            TargetConfig {
                ports,
                ..TargetConfig::default()
            }
            .subsystem(sub)
        }
    };
    for hk in &a.tls_host_keys {
        let (nqn, key) = hk
            .split_once('=')
            // The argument is not echoed: without `NQN=` it is the key itself.
            .context("--tls-host-key: expected NQN=KEY")?;
        let mut key = ConfiguredPsk::parse(key).with_context(|| format!("--tls-host-key {nqn}"))?;
        if a.tls_compat {
            key = key.with_derivation(nvme_tcp_tls::Derivation::Compat);
        }
        cfg.tls_keys.insert(nqn.to_string(), key);
    }
    if a.no_write_cache {
        for s in &mut cfg.subsystems {
            s.volatile_write_cache = false;
        }
    }
    let l: &mut Limits = &mut cfg.limits;
    if let Some(v) = a.max_connections {
        l.max_connections = v;
    }
    if let Some(v) = a.max_connections_per_address {
        l.max_connections_per_address = v;
    }
    if let Some(v) = a.max_connections_per_host {
        l.max_connections_per_host = v;
    }
    if let Some(v) = a.connect_timeout {
        l.connect_timeout = Duration::from_secs(v);
    }
    if let Some(v) = a.idle_timeout {
        l.idle_timeout = Duration::from_secs(v);
    }
    if let Some(v) = a.idle_reclaim_percent {
        l.idle_reclaim_percent = v;
    }
    if let Some(v) = a.send_timeout {
        l.send_timeout = Duration::from_secs(v);
    }
    if let Some(v) = a.max_io_queues {
        l.max_io_queues = v;
    }
    if let Some(v) = a.max_queue_size {
        l.max_queue_size = v;
    }
    if let Some(v) = a.in_capsule_data_size {
        l.in_capsule_data_size = u32_of("in-capsule-data-size", v)?;
    }
    if let Some(v) = a.maxh2cdata {
        l.maxh2cdata = u32_of("maxh2cdata", v)?;
    }
    if let Some(v) = a.mdts {
        l.mdts = u32_of("mdts", v)?;
    }
    if let Some(v) = a.c2h_data_max {
        l.c2h_data_max = u32_of("c2h-data-max", v)?;
    }
    if let Some(v) = a.max_inflight_data {
        l.max_inflight_data = u32_of("max-inflight-data", v)?;
    }
    if let Some(v) = a.socket_buffer_size {
        cfg.socket_buffer_size = usize::try_from(v)?;
    }
    if let Some(v) = a.busy_poll {
        cfg.busy_poll = Duration::from_micros(v);
    }
    cfg.validate()?;
    Ok(cfg)
}

/// Runs the target until SIGINT or SIGTERM (then drains it); SIGHUP reloads `--config`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let cfg = build_config(&args)?;
    if cfg.subsystems.is_empty() {
        bail!("no subsystem to serve");
    }
    let subs: Vec<String> = cfg.subsystems.iter().map(|s| s.nqn.clone()).collect();
    let handle = Arc::new(Target::start(cfg.clone()).context("starting the target")?);
    // The signal handlers are in place before anything is printed: whoever waits for the
    // "listening on" and "serving" lines may signal at once.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (mut term, mut int, mut hup) = {
        use tokio::signal::unix::{SignalKind, signal};
        let _rt = rt.enter();
        (
            signal(SignalKind::terminate())?,
            signal(SignalKind::interrupt())?,
            signal(SignalKind::hangup())?,
        )
    };
    for a in handle.local_addrs() {
        println!("listening on {a}");
    }
    for s in &subs {
        println!("serving {s}");
    }
    let _metrics = match args.metrics {
        Some(addr) => {
            let srv = MetricsServer::bind(
                addr,
                ulp_ddp_ctl::Registry::new(),
                vec![
                    Box::new(crate::build_info()),
                    Box::new(TargetCollector(handle.state().metrics().clone())),
                ],
            )
            .with_context(|| format!("--metrics {addr}"))?;
            println!("metrics on http://{}/metrics", srv.local_addr());
            Some(srv)
        }
        None => None,
    };
    let _control = match &args.control_socket {
        Some(path) => {
            let c = Arc::new(Control::new(handle.clone(), &cfg));
            let srv = ControlServer::bind(path, c)
                .with_context(|| format!("--control-socket {}", path.display()))?;
            println!("control socket {}", path.display());
            Some(srv)
        }
        None => None,
    };
    std::io::Write::flush(&mut std::io::stdout())?;
    rt.block_on(async {
        loop {
            tokio::select! {
                _ = term.recv() => break,
                _ = int.recv() => break,
                _ = hup.recv() => reload(&args, &handle),
            }
        }
        anyhow::Ok(())
    })?;
    // The control socket and the metrics server hold the handle too: they go first.
    drop(_control);
    drop(_metrics);
    match Arc::try_unwrap(handle) {
        Ok(handle) => {
            println!("draining connections (up to {} s)", args.drain_timeout);
            let cut = handle.drain(Duration::from_secs(args.drain_timeout));
            if cut > 0 {
                println!("closed {cut} connections with commands still in flight");
            }
        }
        // Still shared (a control client mid-call): the last reference closes everything.
        Err(handle) => drop(handle),
    }
    println!("shut down");
    Ok(())
}

/// SIGHUP: reads the configuration again and applies what can change at run time.
fn reload(args: &Args, handle: &nvme_tcp_target::TargetHandle) {
    if args.config.is_none() {
        println!("SIGHUP: nothing to reload (the configuration came from flags)");
        return;
    }
    let result = build_config(args)
        .and_then(|cfg| handle.reload(&cfg).context("applying the configuration"));
    match result {
        Ok(sum) => {
            println!("SIGHUP: configuration reloaded");
            for c in &sum.changes {
                println!("  {c}");
            }
            for n in &sum.not_applied {
                println!("  not applied until restart: {n}");
            }
        }
        Err(e) => println!("SIGHUP: configuration not reloaded: {e:#}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    fn config(argv: &[&str]) -> anyhow::Result<TargetConfig> {
        let cli = Cli::try_parse_from(std::iter::once("target").chain(argv.iter().copied()))?;
        build_config(&cli.args)
    }

    #[test]
    fn access_must_be_configured() {
        let e = config(&[]).unwrap_err().to_string();
        assert!(e.contains("--allow-any-host"), "{e}");
        assert!(
            config(&[
                "--allow-any-host",
                "--allow-host",
                "nqn.2014-08.org.nvmexpress:uuid:a"
            ])
            .is_err()
        );
    }

    #[test]
    fn defaults_serve_4420_and_a_discovery_port() {
        let c = config(&["--allow-any-host"]).unwrap();
        assert_eq!(c.ports.len(), 2);
        assert_eq!(c.ports[0].addr.port(), 4420);
        assert_eq!(c.ports[1].addr.port(), 8009);
        assert!(!c.ports[1].exposes(&c.subsystems[0].nqn));
        assert_eq!(c.subsystems[0].namespaces.len(), 1);
        assert!(c.subsystems[0].allow_any_host);
    }

    #[test]
    fn flags_build_the_subsystem_and_limits() {
        let c = config(&[
            "--listen",
            "[::1]:4420",
            "--listen",
            "127.0.0.1:4421",
            "--no-discovery-port",
            "--nqn",
            "nqn.2024-01.io.test:x",
            "--ns",
            "ram:16M,lba=4096",
            "--ns",
            "null",
            "--allow-host",
            "nqn.2014-08.org.nvmexpress:uuid:a",
            "--maxh2cdata",
            "256K",
            "--mdts",
            "2M",
            "--max-queue-size",
            "256",
            "--max-connections-per-host",
            "70",
            "--idle-timeout",
            "0",
            "--no-write-cache",
        ])
        .unwrap();
        assert_eq!(c.limits.max_connections_per_host, 70);
        assert!(c.limits.idle_timeout.is_zero());
        assert!(!c.subsystems[0].volatile_write_cache);
        assert_eq!(c.ports.len(), 2);
        assert!(c.ports[0].addr.is_ipv6());
        let s = &c.subsystems[0];
        assert_eq!(s.nqn, "nqn.2024-01.io.test:x");
        assert_eq!(s.namespaces.len(), 2);
        assert!(!s.allow_any_host);
        assert_eq!(c.limits.maxh2cdata, 256 * 1024);
        assert_eq!(c.limits.mdts, 2 << 20);
        assert_eq!(c.limits.max_queue_size, 256);
    }

    #[test]
    fn help_shows_every_default() {
        use clap::CommandFactory;
        let help = Cli::command().render_long_help().to_string();
        let l = Limits::default();
        let c = TargetConfig::default();
        let sz = |b: u64| crate::perf::size::format_size(b).replace("iB", "");
        for want in [
            format!("[default: {}]", l.max_connections),
            format!("[default: {}]", l.max_io_queues),
            format!("[default: {}]", l.max_queue_size),
            format!("[default: {}]", sz(l.in_capsule_data_size.into())),
            format!("[default: {}]", sz(l.maxh2cdata.into())),
            format!("[default: {}]", sz(l.mdts.into())),
            format!("[default: {}]", sz(l.c2h_data_max.into())),
            format!("[default: {}]", sz(l.max_inflight_data.into())),
            format!("[default: {}]", sz(c.socket_buffer_size as u64)),
        ] {
            assert!(help.contains(&want), "target --help lacks {want}");
        }
        // Every option either shows a default or is a switch.
        let cmd = Cli::command();
        for a in cmd.get_arguments() {
            if a.get_action().takes_values() {
                let h = a.get_long_help().or(a.get_help()).map(|h| h.to_string());
                let shown = !a.get_default_values().is_empty()
                    || h.as_deref().is_some_and(|h| h.contains("[default:"));
                assert!(shown, "--{} shows no default", a.get_id());
            }
        }
    }

    #[test]
    fn bad_flags_are_refused_with_the_reason() {
        let e = config(&["--allow-any-host", "--ns", "disk:1G"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("--ns"), "{e}");
        assert!(config(&["--allow-any-host", "--mdts", "3K"]).is_err());
        let e = config(&["--allow-any-host", "--max-io-queues", "0"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("max_io_queues"), "{e}");
        let e = config(&["--allow-any-host", "--nqn", "blktests-subsystem-1"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("nqn."), "{e}");
        assert!(config(&["--config", "/x.json", "--ns", "null"]).is_err());
        let e = config(&["--config", "/nonexistent/target.json"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("/nonexistent/target.json"), "{e}");
        // A key given without `NQN=` is not echoed in the error (it would land in logs).
        let key = "NVMeTLSkey-1:01:VRLbtnN9AQb2WXW3c9+wEf/DRLz0QuLdbYvEhwtdWwNf9LrZ:";
        let e = format!(
            "{:#}",
            config(&[
                "--allow-any-host",
                "--tls",
                "required",
                "--tls-host-key",
                key
            ])
            .unwrap_err()
        );
        assert!(e.contains("NQN=KEY") && !e.contains("VRLbtnN9"), "{e}");
    }
}
