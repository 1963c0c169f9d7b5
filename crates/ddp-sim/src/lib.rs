//! A deterministic in-process simulated network for NVMe/TCP with ULP DDP receive offload:
//! the `nvme-tcp-host` queue core, the `nvme-tcp-target` connection state machine and the
//! `ddp-engine` software device run together in ordinary tests, without privileges, over a
//! wire that loses, reorders, duplicates and corrupts segments.
//!
//! ```text
//!  host (QueueCore) ── H2C bytes, unchanged ──────────────────────▶ target (sans-IO)
//!        ▲                                                              │ C2H bytes
//!        │ in-order bytes + per-segment marks (placed ranges, crc)      ▼
//!   TCP reassembly ◀── segments in wire order ── NIC (SoftDdpDevice) ◀── wire (seeded
//!   (first copy wins)                             sees them first        segmentation
//!                                                                        + faults)
//! ```
//!
//! * [`wire`]: one direction of a TCP connection as a seeded schedule of segments, with
//!   drops (and retransmissions), reordering, duplicates and C2HData payload corruption.
//! * [`tcp`]: the receiving TCP stack: first copy wins, in-order delivery, and the offload
//!   marks of the segment each delivered byte came from (the model of an skb's marks).
//! * [`net`]: the network side: target connections, wires, NIC, reassembly.
//! * [`sim`]: a whole run with a READ workload and its [`SimReport`]
//!   ([`run_sim_read_workload`], [`compare_offload`]).
//!
//! ```
//! use ddp_sim::{FaultConfig, SimParams, WireConfig, run_sim_read_workload};
//!
//! let params = SimParams {
//!     wire: WireConfig {
//!         seed: 7,
//!         faults: FaultConfig { drop_ppm: 5_000, ..FaultConfig::NONE },
//!         ..WireConfig::default()
//!     },
//!     namespace_bytes: 4 << 20,
//!     read_sizes: vec![64 << 10, 256 << 10],
//!     reads: 8,
//!     ..SimParams::default()
//! };
//! let report = run_sim_read_workload(&params).unwrap();
//! assert_eq!(report.reads, 8);
//! assert_eq!(report.bad_data, 0);
//! // After the disconnect nothing leaked (blktests nvme/055).
//! assert_eq!(report.device.rx_nvme_tcp_setup, report.device.rx_nvme_tcp_teardown);
//! assert_eq!(report.device.rx_nvme_tcp_sk_add, report.device.rx_nvme_tcp_sk_del);
//! println!("{:.1}% of bytes placed", report.offloaded_byte_ratio() * 100.0);
//! ```

#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod cpu;
pub mod net;
pub mod sim;
pub mod tcp;
pub mod wire;

pub use sim::{
    HostCounters, OffloadComparison, ReadId, SimParams, SimReport, compare_offload,
    run_sim_read_workload, run_sim_read_workload_on,
};
pub use wire::{FaultConfig, WireConfig};

/// Why a simulation failed.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// Bad parameters or a setup step failed.
    #[error("simulation setup: {0}")]
    Setup(String),
    /// A command could not be submitted.
    #[error("submit refused: {0}")]
    Submit(nvme_tcp_host::queue::SubmitErrorKind),
    /// A command needed for bring-up failed.
    #[error("queue {0}: command failed: {1}")]
    Command(u16, nvme_tcp_host::IoError),
    /// The host's association of a queue failed.
    #[error("queue {0}: {1}")]
    Host(u16, String),
    /// The host saw a protocol violation.
    #[error("queue {0}: protocol error: {1}")]
    Protocol(u16, nvme_tcp_host::ProtocolError),
    /// The target's output failed.
    #[error("target output: {0}")]
    Target(std::io::Error),
    /// The target closed a connection.
    #[error("target closed connection {0}: {1}")]
    TargetClosed(usize, String),
    /// The target would take no more input.
    #[error("target connection {0} stalled")]
    TargetStalled(usize),
    /// A connection index the network does not have.
    #[error("no connection {0}")]
    UnknownConnection(usize),
    /// Nothing moves any more while the host still waits.
    #[error("the simulation stalled")]
    Stalled,
    /// The network thread went away.
    #[error("the network thread failed")]
    NetThread,
}
