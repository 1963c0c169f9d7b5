//! A bump-in-the-wire software NIC: the ULP DDP offload on live kernel TCP connections.
//!
//! [`SoftNic::start`] creates two network namespaces of its own — the *host side* and the
//! *target side* — each with one TUN device (`IFF_VNET_HDR`, so the kernel hands over
//! TSO/GSO super-packets with partial checksums), joined by a forwarding thread:
//!
//! ```text
//!  target side ns                          this process                         host side ns
//!  controller --TCP--> ddpt0 ==> [re-segment -> faults -> checksum? -> engine -> marks] ==> ddph0 --> kernel TCP --> host socket
//!             <--TCP-- ddpt0 <================================================== ddph0 <--
//! ```
//!
//! For every TCP segment from the target to the host the NIC, like a NIC's receive path:
//! re-segments super-packets to the MTU (unless told not to), applies the configured
//! [faults](FaultConfig) (they are on the wire, before the NIC), checks the TCP checksum —
//! a segment that fails it goes on untouched and is never offloaded; the host's kernel
//! drops it — learns each connection's initial sequence number from its SYN-ACK, feeds the
//! segments of connections the host offloaded (`sk_add` with the socket name the NIC gave
//! the connection) to the [`ddp_engine::SoftDdpDevice`], which places C2HData payload into
//! the host's registered buffers and verifies data digests, and **publishes the marks**
//! (placed ranges, digest-verified bytes, by stream offset) **before** it writes the
//! segment to the host side's TUN device, marked `CHECKSUM_UNNECESSARY`. The host reads
//! the marks through [`nvme_tcp_host::marks::MarkSource`] ([`SoftNic::mark_source`]), so it
//! never reads a byte whose marks are not there yet.
//!
//! The device lives in the host's process because it writes into the host's memory (a NIC's
//! DMA). The controller is reached from the target side either directly (a listener created
//! inside [`SoftNic::target_ns`]) or through a [`Relay`] that forwards to a controller outside.
//!
//! ```no_run
//! use ddp_nic::{NicConfig, SoftNic, TARGET_ADDR};
//! use nvme_tcp_host::{ConnectOptions, Controller};
//!
//! let nic = SoftNic::start(NicConfig::default())?;
//! // A controller elsewhere, reached through a relay on the target side (or start one inside
//! // `nic.target_ns()`, listening on TARGET_ADDR).
//! let _relay = nic.relay_to(4420, "127.0.0.1:4420".parse()?)?;
//! let _in_host_ns = nic.host_ns().enter()?;
//! let mut opts = ConnectOptions::new(TARGET_ADDR.to_string(), 4420, "nqn.2024-01.io.example:sub");
//! opts.ddgst = true;
//! nic.configure_host(&mut opts); // the device and its marks
//! let ctrl = Controller::connect(opts)?;
//! let ns = ctrl.namespace(1)?;
//! let mut data = vec![0u8; 1 << 20];
//! ctrl.read_at(&ns, 0, &mut data)?; // placed by the NIC, digests verified by it
//! ctrl.shutdown();
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Everything is held by file descriptors (namespaces are never named or mounted, TUN
//! devices are not persistent): it all disappears when the process ends, however it ends,
//! and two instances never clash. Needs CAP_NET_ADMIN and CAP_SYS_ADMIN (root).

#![warn(missing_docs)]

mod fault;
mod forward;
mod marks;
pub mod netns;
pub mod packet;
mod relay;
mod tun;

use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;

pub use ddp_engine::{EngineConfig, SoftDdpDevice};
pub use fault::{FaultConfig, FaultCounts, Faults};
pub use forward::NicCounters;
pub use marks::{Flow, FlowTable};
pub use netns::{NetNs, NsGuard};
pub use relay::Relay;
pub use tun::Tun;

use forward::{Forwarder, Shared};

/// Address of the host side (inside the host namespace).
pub const HOST_ADDR: Ipv4Addr = Ipv4Addr::new(10, 254, 0, 1);
/// Address of the target side (inside the target namespace).
pub const TARGET_ADDR: Ipv4Addr = Ipv4Addr::new(10, 254, 0, 2);
/// Name of the TUN device in the host namespace.
pub const HOST_DEV: &str = "ddph0";
/// Name of the TUN device in the target namespace.
pub const TARGET_DEV: &str = "ddpt0";

/// Errors setting the NIC up.
#[derive(Debug, thiserror::Error)]
pub enum NicError {
    /// The process lacks the privileges.
    #[error(
        "the software NIC needs CAP_NET_ADMIN and CAP_SYS_ADMIN (run as root): {what}: {error}"
    )]
    Permission {
        /// What was being done.
        what: &'static str,
        /// The system's error.
        error: std::io::Error,
    },
    /// A system call failed.
    #[error("software NIC: {what}: {error}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The system's error.
        error: std::io::Error,
    },
    /// Setting up the devices failed.
    #[error("software NIC: {0}")]
    Setup(String),
}

impl NicError {
    pub(crate) fn permission(what: &'static str, source: std::io::Error) -> Self {
        if source.kind() == std::io::ErrorKind::PermissionDenied {
            Self::Permission {
                what,
                error: source,
            }
        } else {
            Self::Io {
                what,
                error: source,
            }
        }
    }
    pub(crate) fn io(what: &'static str, source: std::io::Error) -> Self {
        Self::Io {
            what,
            error: source,
        }
    }
}

/// How the NIC runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NicConfig {
    /// MTU of both TUN devices.
    pub mtu: u16,
    /// Split TSO/GSO super-packets into MTU-sized segments (and complete partial checksums)
    /// before the faults and the offload, as they would travel on a real wire. Off: the
    /// engine sees the super-packets (as after a receiver's LRO).
    pub resegment: bool,
    /// Run the offload engine (off: the same path without the device, for comparison).
    pub offload: bool,
    /// The engine's configuration.
    pub engine: EngineConfig,
    /// Faults on the wire before the NIC.
    pub faults: FaultConfig,
}

impl Default for NicConfig {
    fn default() -> Self {
        Self {
            mtu: 1500,
            resegment: true,
            offload: true,
            engine: EngineConfig::connectx7_like(),
            faults: FaultConfig::NONE,
        }
    }
}

/// A running software NIC; dropping it stops the thread and removes everything it created.
#[derive(Debug)]
pub struct SoftNic {
    host_ns: NetNs,
    target_ns: NetNs,
    dev: Option<SoftDdpDevice>,
    flows: Arc<FlowTable>,
    shared: Arc<Shared>,
    wake: OwnedFd,
    thread: Option<JoinHandle<()>>,
    cfg: NicConfig,
}

impl SoftNic {
    /// Creates the namespaces and devices and starts forwarding.
    pub fn start(cfg: NicConfig) -> Result<Self, NicError> {
        cfg.faults.validate().map_err(NicError::Setup)?;
        if cfg.mtu < 576 {
            return Err(NicError::Setup(format!(
                "MTU {} is below the IPv4 minimum of 576",
                cfg.mtu
            )));
        }
        let host_ns = NetNs::create()?;
        let target_ns = NetNs::create()?;
        let host = host_ns
            .run(|| Tun::create(HOST_DEV))
            .map_err(|e| NicError::io("entering the host namespace", e))??;
        let target = target_ns
            .run(|| Tun::create(TARGET_DEV))
            .map_err(|e| NicError::io("entering the target namespace", e))??;
        let mtu = cfg.mtu.to_string();
        for (ns, dev, me, peer) in [
            (&host_ns, HOST_DEV, HOST_ADDR, TARGET_ADDR),
            (&target_ns, TARGET_DEV, TARGET_ADDR, HOST_ADDR),
        ] {
            ns.ip(&["link", "set", "lo", "up"])?;
            ns.ip(&["link", "set", dev, "mtu", &mtu, "up"])?;
            ns.ip(&[
                "addr",
                "add",
                &format!("{me}/32"),
                "peer",
                &format!("{peer}/32"),
                "dev",
                dev,
            ])?;
        }
        // SAFETY: eventfd has no memory-safety preconditions; the result is checked.
        let efd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if efd < 0 {
            return Err(NicError::io("eventfd", std::io::Error::last_os_error()));
        }
        // SAFETY: efd is a fresh descriptor owned by nobody else.
        let wake = unsafe { OwnedFd::from_raw_fd(efd) };
        let wake2 = wake.try_clone().map_err(|e| NicError::io("eventfd", e))?;
        let dev = cfg.offload.then(|| SoftDdpDevice::new(cfg.engine));
        let flows = Arc::new(FlowTable::default());
        let shared = Arc::new(Shared::default());
        let fwd = Forwarder {
            host,
            target,
            wake: wake2,
            cfg,
            dev: dev.clone(),
            flows: Arc::clone(&flows),
            shared: Arc::clone(&shared),
            next_sk: Arc::new(AtomicU64::new(1)),
        };
        let thread = std::thread::Builder::new()
            .name("soft-nic".into())
            .spawn(move || fwd.run())
            .map_err(|e| NicError::io("starting the forwarding thread", e))?;
        Ok(Self {
            host_ns,
            target_ns,
            dev,
            flows,
            shared,
            wake,
            thread: Some(thread),
            cfg,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &NicConfig {
        &self.cfg
    }

    /// The host-side namespace: the host's sockets must be created inside it
    /// ([`NetNs::enter`]).
    pub fn host_ns(&self) -> &NetNs {
        &self.host_ns
    }

    /// The target-side namespace: controllers listen inside it (on [`TARGET_ADDR`]).
    pub fn target_ns(&self) -> &NetNs {
        &self.target_ns
    }

    /// The offload device (`None` when the NIC runs without offload).
    pub fn device(&self) -> Option<&SoftDdpDevice> {
        self.dev.as_ref()
    }

    /// The marks the NIC publishes, by connection, for the host's socket driver.
    pub fn mark_source(&self) -> Arc<FlowTable> {
        Arc::clone(&self.flows)
    }

    /// Sets a host's options to use this NIC: the device (if the offload is on) and the
    /// mark source. The host must still create its sockets inside [`SoftNic::host_ns`] and
    /// connect to an address on the target side.
    pub fn configure_host(&self, opts: &mut nvme_tcp_host::ConnectOptions) {
        opts.ddp_device = self
            .dev
            .as_ref()
            .map(|d| nvme_tcp_host::options::DdpDeviceRef(Arc::new(d.clone())));
        opts.mark_source = Some(nvme_tcp_host::marks::MarkSourceRef(
            self.mark_source() as Arc<dyn nvme_tcp_host::marks::MarkSource>
        ));
    }

    /// Starts a relay from `port` on the target side to `upstream`, a controller reachable
    /// from the namespace the calling thread is in.
    pub fn relay_to(&self, port: u16, upstream: std::net::SocketAddr) -> Result<Relay, NicError> {
        let outside = NetNs::current().map_err(|e| NicError::io("namespace", e))?;
        Relay::start(
            &self.target_ns,
            SocketAddrV4::new(TARGET_ADDR, port),
            outside,
            upstream,
        )
    }

    /// What the NIC did so far (updated after each batch of packets, and at the end).
    pub fn counters(&self) -> NicCounters {
        *self
            .shared
            .counters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// A handle that reads the counters while the NIC runs (for a metrics exporter).
    pub fn counters_handle(&self) -> CountersHandle {
        CountersHandle(Arc::clone(&self.shared))
    }

    /// Stops forwarding and returns the final counters; the namespaces and devices go away
    /// with `self`.
    pub fn stop(mut self) -> NicCounters {
        self.halt();
        self.counters()
    }

    fn halt(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a valid u64 to our eventfd.
        unsafe {
            libc::write(
                std::os::fd::AsRawFd::as_raw_fd(&self.wake),
                (&one as *const u64).cast(),
                8,
            )
        };
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Reads a running NIC's counters ([`SoftNic::counters_handle`]).
#[derive(Debug, Clone)]
pub struct CountersHandle(Arc<Shared>);

impl CountersHandle {
    /// The counters as last published by the forwarding thread.
    pub fn get(&self) -> NicCounters {
        *self.0.counters.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for SoftNic {
    fn drop(&mut self) {
        self.halt();
    }
}
