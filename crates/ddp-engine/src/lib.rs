//! A software ULP DDP device: does in software what a ConnectX-7 does for NVMe/TCP
//! receive offload — tracks PDU framing in the TCP byte stream of each offloaded socket,
//! places C2HData payload straight into the buffers registered for its command ID,
//! verifies data digests, and recovers framing after loss or reordering through the
//! resync handshake.
//!
//! Sans-IO: [`SoftDdpDevice`] implements [`ulp_ddp::UlpDdpDevice`] and hands the ULP a
//! [`SoftDdpSocket`] per offloaded socket; received segments go in through the socket's
//! [`RxSocket::on_segment`], and a [`SegmentVerdict`] comes out. The
//! segment itself is never dropped, delayed or modified: the device only adds metadata.
//! See `docs/ulp-ddp.md` for the whole picture.
//!
//! Invariants (property-tested in `tests/`):
//! * nothing is written outside a registered buffer;
//! * a placed byte is the stream's byte for that place: bytes are placed only while the
//!   framing is confirmed, and every sequence number is placed at most once;
//! * a verdict's `crc` bit is set only for bytes fed, from that very segment, into the
//!   digest of a PDU tracked from its first byte, so a PDU whose segments all carry it was
//!   verified over exactly its data;
//! * per-segment processing does not allocate.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod device;
mod flow;
mod header;
mod seq;
mod table;
mod verdict;

pub use device::{EngineConfig, RxSocket, SoftDdpDevice, SoftDdpSocket, TeardownMode};
pub use verdict::{MAX_PLACED_RANGES, PlacedRange, SegmentVerdict};

use serde::{Deserialize, Serialize};

/// Framing state of one offloaded socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SyncState {
    /// Framing known; offloading.
    InSync,
    /// Framing lost; following a candidate header speculatively and waiting for the ULP to
    /// confirm `seq` (the last header it was asked about; `None` until the candidate's
    /// header is complete).
    ResyncPending {
        /// The sequence number awaiting confirmation.
        seq: Option<u32>,
    },
    /// Framing lost; scanning segments for a plausible header.
    Searching,
}

/// Framing details of one offloaded socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct FlowInfo {
    /// Framing state.
    pub state: SyncState,
    /// Next sequence number the engine expects (`None` while searching).
    pub expected_seq: Option<u32>,
    /// Highest sequence number (exclusive) seen in any segment; after a resync, PDUs are
    /// offloaded again from the first header at or after its value at the confirmation.
    pub high_water: Option<u32>,
}

/// Engine-internal counters, beyond the ten statistics of the netlink family; for
/// debugging (see the troubleshooting section of `docs/ulp-ddp.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Diagnostics {
    /// Non-empty segments processed.
    pub segments: u64,
    /// Segments entirely before the expected sequence number (retransmits, duplicates).
    pub old_segments: u64,
    /// Segments partly before the expected sequence number (overlapping retransmits).
    pub partial_segments: u64,
    /// Segments after a gap (loss or reordering).
    pub gaps: u64,
    /// Times framing was lost.
    pub lost_sync: u64,
    /// Headers that failed the checks while tracking.
    pub bad_headers: u64,
    /// Resync candidates found by the search.
    pub candidates: u64,
    /// Resync confirmations that matched the pending request.
    pub resync_confirmed: u64,
    /// Resync confirmations that did not (late, or for a replaced request).
    pub resync_ignored: u64,
    /// Data digests verified and matching.
    pub ddgst_ok: u64,
    /// Data digests verified and not matching (corrupted data, or a buggy sender).
    pub ddgst_bad: u64,
    /// Data chunks not placed because the segment's verdict was full.
    pub verdict_full: u64,
    /// Segments larger than the engine takes.
    pub oversized_segments: u64,
    /// Segments for a socket without offload.
    pub unknown_socket_segments: u64,
}

impl Diagnostics {
    /// Adds `other`'s counts to these.
    pub fn add(&mut self, other: &Diagnostics) {
        self.segments += other.segments;
        self.old_segments += other.old_segments;
        self.partial_segments += other.partial_segments;
        self.gaps += other.gaps;
        self.lost_sync += other.lost_sync;
        self.bad_headers += other.bad_headers;
        self.candidates += other.candidates;
        self.resync_confirmed += other.resync_confirmed;
        self.resync_ignored += other.resync_ignored;
        self.ddgst_ok += other.ddgst_ok;
        self.ddgst_bad += other.ddgst_bad;
        self.verdict_full += other.verdict_full;
        self.oversized_segments += other.oversized_segments;
        self.unknown_socket_segments += other.unknown_socket_segments;
    }
}
