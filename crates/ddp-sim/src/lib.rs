//! A deterministic in-process simulated network for NVMe/TCP with ULP DDP receive offload.
//!
//! * [`wire`]: one direction of a TCP connection as a seeded schedule of segments, with
//!   drops, reordering, duplicates and payload corruption.
//! * [`tcp`]: the receiving TCP stack: first copy wins, in-order delivery, and the
//!   offload marks of the segment each delivered byte came from.

#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod cpu;
pub mod host;
pub mod net;
pub mod rng;
pub mod sim;
pub mod tcp;
pub mod wire;

pub use host::{DdpNetdev, DdpQueue, HostOffloadStats};
pub use sim::{ReadId, SimParams, SimReport, run_sim_read_workload};
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
