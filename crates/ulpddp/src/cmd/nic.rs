//! `--soft-nic`: run the host through the software NIC (`ddp-nic`), with the ULP DDP offload
//! on a live kernel TCP connection, or without it over the same path for comparison.
//!
//! The NIC creates its own two network namespaces. The host's sockets are created in the
//! host-side one (this thread enters it, and the threads it starts later inherit it); a relay
//! in the target-side one forwards to the controller named by `--traddr`/`--trsvcid` (or
//! `--target`), which is reached from where the command was started. So the controller
//! can be any NVMe/TCP target: `ulpddp target` in another shell, or the kernel's nvmet.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::ValueEnum;
use ddp_nic::{CountersHandle, FaultConfig, NicConfig, NsGuard, Relay, SoftNic, TARGET_ADDR};
use nvme_tcp_host::ConnectOptions;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use ulp_ddp_ctl::metrics::MetricsServer;
use ulp_ddp_ctl::server::ControlServer;
use ulp_ddp_ctl::{Registry, SharedDevice};

/// Whether the NIC runs the offload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum OffloadMode {
    /// The engine places and verifies (the host uses the device).
    #[default]
    On,
    /// The same path without the engine.
    Off,
    /// `perf` only: each job twice, offload off then on, each over a fresh NIC.
    Both,
}

/// Options of the software NIC.
#[derive(clap::Args, Debug, Clone)]
pub struct NicArgs {
    /// Run through the software NIC (needs root: it creates network namespaces and TUN
    /// devices, all removed at exit).
    #[arg(long)]
    pub soft_nic: bool,
    /// With --soft-nic: the ULP DDP offload on the NIC.
    #[arg(long, value_enum, default_value_t, requires = "soft_nic")]
    pub soft_nic_offload: OffloadMode,
    /// With --soft-nic: MTU of the link.
    #[arg(long, default_value_t = 1500, requires = "soft_nic")]
    pub soft_nic_mtu: u16,
    /// With --soft-nic: pass TSO/GSO super-packets on as they are (no re-segmentation to
    /// the MTU; the engine then sees up to 64 KiB per segment, as after LRO).
    #[arg(long, requires = "soft_nic")]
    pub soft_nic_gso: bool,
    /// With --soft-nic: probability of dropping a target-to-host segment.
    #[arg(long, default_value_t = 0.0, requires = "soft_nic")]
    pub fault_drop: f64,
    /// With --soft-nic: probability of holding a segment back behind the next one.
    #[arg(long, default_value_t = 0.0, requires = "soft_nic")]
    pub fault_reorder: f64,
    /// With --soft-nic: probability of sending a segment twice.
    #[arg(long, default_value_t = 0.0, requires = "soft_nic")]
    pub fault_duplicate: f64,
    /// With --soft-nic: probability of delaying a segment by --fault-delay-ms.
    #[arg(long, default_value_t = 0.0, requires = "soft_nic")]
    pub fault_delay: f64,
    /// With --soft-nic: how long a delayed segment is held, in milliseconds.
    #[arg(long, default_value_t = 5, requires = "soft_nic")]
    pub fault_delay_ms: u64,
    /// With --soft-nic: probability of flipping a payload byte (the TCP checksum is fixed,
    /// so only the data digest can catch it).
    #[arg(long, default_value_t = 0.0, requires = "soft_nic")]
    pub fault_corrupt: f64,
    /// With --soft-nic: seed of the faults.
    #[arg(long, default_value_t = 1, requires = "soft_nic")]
    pub fault_seed: u64,
}

impl NicArgs {
    /// The NIC configuration, with the offload on or off.
    pub fn config(&self, offload: bool) -> anyhow::Result<NicConfig> {
        let faults = FaultConfig {
            drop: self.fault_drop,
            reorder: self.fault_reorder,
            duplicate: self.fault_duplicate,
            delay: self.fault_delay,
            delay_time: Duration::from_millis(self.fault_delay_ms.min(10_000)),
            corrupt: self.fault_corrupt,
            seed: self.fault_seed,
        };
        faults.validate().map_err(anyhow::Error::msg)?;
        Ok(NicConfig {
            mtu: self.soft_nic_mtu,
            resegment: !self.soft_nic_gso,
            offload,
            faults,
            ..NicConfig::default()
        })
    }

    /// Starts the NIC if `--soft-nic` was given and points `opts` through it.
    pub fn start(
        &self,
        opts: &mut ConnectOptions,
        ctl: &CtlArgs,
    ) -> anyhow::Result<Option<NicSession>> {
        if !self.soft_nic {
            return Ok(None);
        }
        let offload = match self.soft_nic_offload {
            OffloadMode::On => true,
            OffloadMode::Off => false,
            OffloadMode::Both => anyhow::bail!("--soft-nic-offload both is for perf only"),
        };
        NicSession::start(self.config(offload)?, opts, ctl).map(Some)
    }
}

/// The control plane of the NIC's device.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct CtlArgs {
    /// With --soft-nic: serve the device's control plane (caps-get, caps-set, stats-get,
    /// caps-set-ntf; JSON-RPC) on this Unix socket, as `softnic0`.
    #[arg(long, requires = "soft_nic")]
    pub ctl_socket: Option<std::path::PathBuf>,
    /// With --soft-nic: serve the device's counters to Prometheus on this address.
    #[arg(long, requires = "soft_nic")]
    pub metrics: Option<SocketAddr>,
}

/// A running NIC with the host pointed through it. Dropping it stops everything (the
/// namespaces and devices go away with it).
pub struct NicSession {
    // Field order is drop order: the host leaves its namespace first, then the relay and the
    // NIC stop.
    _host: NsGuard,
    _ctl: Option<ControlServer>,
    _metrics: Option<MetricsServer>,
    _relay: Relay,
    _nic: SoftNic,
}

impl NicSession {
    /// Starts the NIC with `cfg`, a relay to the controller `opts` names, enters the host
    /// namespace on this thread, and points `opts` at the target side with the NIC's device
    /// and marks.
    pub fn start(cfg: NicConfig, opts: &mut ConnectOptions, ctl: &CtlArgs) -> anyhow::Result<Self> {
        let target = opts.socket_addr_string();
        let upstream = target
            .to_socket_addrs()
            .with_context(|| format!("resolving {target}"))?
            .next()
            .with_context(|| format!("{target}: no address"))?;
        // The error's message already names its cause: one line, no chain.
        let nic = SoftNic::start(cfg).map_err(|e| anyhow::anyhow!("{e}"))?;
        let relay = nic.relay_to(opts.port, upstream)?;
        let registry = Registry::new();
        if let Some(dev) = nic.device() {
            let shared: SharedDevice = Arc::new(dev.clone());
            registry.add("softnic0", shared);
        }
        let ctl_srv = match &ctl.ctl_socket {
            Some(path) => Some(
                ControlServer::bind(path, registry.clone())
                    .with_context(|| format!("control socket {}", path.display()))?,
            ),
            None => None,
        };
        let metrics = match ctl.metrics {
            Some(addr) => {
                let srcs: Vec<Box<dyn Collector>> = vec![
                    Box::new(NicMetrics(nic.counters_handle())),
                    Box::new(crate::build_info()),
                ];
                Some(MetricsServer::bind(addr, registry, srcs)?)
            }
            None => None,
        };
        let host = nic
            .host_ns()
            .enter()
            .context("entering the NIC's host namespace")?;
        opts.addr = TARGET_ADDR.to_string();
        nic.configure_host(opts);
        Ok(Self {
            _host: host,
            _ctl: ctl_srv,
            _metrics: metrics,
            _relay: relay,
            _nic: nic,
        })
    }
}

/// The NIC's own counters for Prometheus (the device's ten ULP DDP counters come from the
/// registry).
struct NicMetrics(CountersHandle);

impl std::fmt::Debug for NicMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NicMetrics")
    }
}

impl Collector for NicMetrics {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let c = self.0.get();
        let counters: [(&str, &str, u64); 6] = [
            (
                "softnic_packets_to_host",
                "Packets from the target to the host.",
                c.packets_to_host,
            ),
            (
                "softnic_packets_to_target",
                "Packets from the host to the target.",
                c.packets_to_target,
            ),
            (
                "softnic_super_packets_split",
                "TSO super-packets re-segmented.",
                c.super_packets_split,
            ),
            (
                "softnic_checksum_failed",
                "Segments whose TCP checksum failed (not offloaded).",
                c.checksum_failed,
            ),
            (
                "softnic_segments_offloaded",
                "Segments fed to the offload engine.",
                c.segments_offloaded,
            ),
            (
                "softnic_connections",
                "Connections seen being established.",
                c.connections,
            ),
        ];
        for (name, help, v) in counters {
            let f = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
            ConstCounter::new(v).encode(f)?;
        }
        let mut f = enc.encode_descriptor(
            "softnic_faults",
            "Faults injected on the wire before the NIC.",
            None,
            MetricType::Counter,
        )?;
        for (kind, v) in [
            ("drop", c.faults.dropped),
            ("reorder", c.faults.reordered),
            ("duplicate", c.faults.duplicated),
            ("delay", c.faults.delayed),
            ("corrupt", c.faults.corrupted),
        ] {
            ConstCounter::new(v).encode(f.encode_family(&[("kind", kind)])?)?;
        }
        let f = enc.encode_descriptor(
            "softnic_thread_cpu_seconds",
            "CPU time of the forwarding thread (the device).",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(c.thread_cpu_ns as f64 / 1e9).encode(f)
    }
}
