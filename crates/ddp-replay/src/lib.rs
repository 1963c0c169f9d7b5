//! Replays captured NVMe/TCP traffic through the ULP DDP engine, as a golden model.
//!
//! A NIC vendor or kernel developer judging an offload runs the model on the traffic they
//! care about — captures of real targets and of their own hardware — and compares what the
//! model placed and verified with what the device did.
//!
//! * [`capture`]: pcap and pcapng files (Ethernet, Linux cooked v1/v2, raw IP; IPv4 and
//!   IPv6) down to TCP segments; a broken capture gives the segments before the break.
//! * [`replay()`]: finds the NVMe/TCP connections (the port, 4420 by default, or an ICReq at a
//!   stream's start) and plays each one. The controller-to-host segments go through
//!   [`ddp_engine::SoftDdpDevice`] in capture order, exactly as a NIC sees them
//!   (retransmissions included); the host side is a *replay ULP* that uses the
//!   [`ulp_ddp`] interface as `nvme-tcp-host` does: `sk_add` once an I/O queue's Connect
//!   succeeded (negotiated digests and PDA), `setup` of each Read's buffer from its command
//!   before its data, `pdu_header` (the resync answer) at every PDU header, `copy_to_io` of
//!   what the device did not place, `teardown` at completion, `poll_event`, `sk_del`.
//!   The host's own queue core cannot be driven here: it allocates its own command IDs and
//!   sends its own commands, while a replay must take both from the capture.
//! * Checks, per PDU and per read: placed bytes equal the capture's payload, a digest the
//!   device marked verified is correct, the buffer handed back holds exactly the data the
//!   host received ([`report::Finding`]); a [`report::Summary`] and, per PDU, a
//!   [`report::Record`] (the `--json` log, which [`report::compare`] diffs against a
//!   device's log).
//! * [`perturb`]: drop with later resend, reorder, duplicate, re-split, corrupt — seeded.
//!   Long runs repeat a connection's I/O part with shifted sequence numbers to cross the
//!   32-bit sequence wrap.
//!
//! ```no_run
//! use ddp_replay::{ReplayOptions, capture::read_capture_file, replay};
//! let cap = read_capture_file("trace.pcapng".as_ref())?;
//! let r = replay(&cap, &ReplayOptions::default());
//! print!("{}", r.summary.to_text());
//! assert!(r.summary.is_clean());
//! # Ok::<(), ddp_replay::capture::CaptureError>(())
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod capture;
pub mod perturb;
mod replay;
pub mod report;
pub mod stream;

pub use replay::{NVME_TCP_PORT, Replay, ReplayOptions, default_engine, replay};
