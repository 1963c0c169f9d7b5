//! A deterministic in-process simulated network for NVMe/TCP with ULP DDP receive offload.
//!
//! * [`wire`]: one direction of a TCP connection as a seeded schedule of segments, with
//!   drops, reordering, duplicates and payload corruption.
//! * [`tcp`]: the receiving TCP stack: first copy wins, in-order delivery, and the
//!   offload marks of the segment each delivered byte came from.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod rng;
pub mod tcp;
pub mod wire;
