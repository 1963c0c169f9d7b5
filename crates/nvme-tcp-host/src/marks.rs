//! Marks from an offload device that sits on the network path in front of the kernel's TCP
//! (a NIC), for a queue that reads from a real kernel socket.
//!
//! A NIC sees each TCP segment before the host's kernel stack does. It runs the offload on
//! it and publishes what it did — which stream bytes it placed into the host's buffers,
//! which bytes were fed into data digests that matched — *before* it hands the segment on.
//! So when the host reads a byte from its socket, the byte's marks already exist. The kernel
//! socket itself gives the host no TCP sequence numbers and no per-segment metadata: the
//! marks are kept by the device per connection, by stream offset, and the socket driver
//! ([`crate::conn::Connection`]) asks for the marks of the bytes it reads:
//!
//! * [`MarkSource::flow`] finds the connection by its 4-tuple once the TCP handshake is
//!   done: it gives the socket's name for `sk_add` and the TCP sequence number of stream
//!   offset 0 (the device learnt it from the handshake), which the queue needs to answer
//!   resync requests and to tell the device where the next PDU starts.
//! * [`FlowMarks::placed_from`] says whether the bytes at the read position were placed; the
//!   driver then discards them from the socket without copying them (`recv` with
//!   `MSG_TRUNC`) and reads only PDU headers and unplaced data into memory.
//! * [`FlowMarks::marks`] gives the marks of bytes just read (looked up after the read, so
//!   marks published meanwhile are not missed), which the driver feeds together with the
//!   bytes to [`QueueCore::rx_feed_marked`](crate::QueueCore::rx_feed_marked): the receive
//!   pipeline is the same one the simulator feeds.
//!
//! Missing marks are always safe: a byte without a placed mark is copied by the host (it is
//! the same byte the device placed), a PDU without crc marks on all its bytes has its digest
//! computed by the host. A segment the kernel dropped and got retransmitted carries the same
//! bytes, so a placed mark stays valid for the retransmission.

use std::net::SocketAddr;
use std::sync::Arc;

use ulp_ddp::SockId;

use crate::offload::PlacedRange;

/// A run of stream bytes with one `crc` mark (see [`StreamMarks`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CrcRun {
    /// Stream offset where the run ends (exclusive); it starts where the previous run ended.
    pub end: u64,
    /// The `ulp_crc` mark of every byte of the run.
    pub crc: bool,
}

/// The marks of a range of stream bytes: the range split into runs of equal `crc` mark, and
/// the placed pieces inside it (by stream offset).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamMarks {
    /// Consecutive runs covering the asked range from its start to its end.
    pub crc_runs: Vec<CrcRun>,
    /// Placed pieces intersecting the range, ascending.
    pub placed: Vec<PlacedRange>,
}

impl StreamMarks {
    /// Empties both lists (keeps their storage).
    pub fn clear(&mut self) {
        self.crc_runs.clear();
        self.placed.clear();
    }
}

/// The marks the device keeps for one TCP connection (the host's socket).
pub trait FlowMarks: Send + Sync {
    /// The name under which the host offloads this socket (`sk_add`); the device feeds this
    /// connection's segments to that context.
    fn sock_id(&self) -> SockId;

    /// TCP sequence number of stream offset 0 (the controller's first byte, ICResp).
    fn isn(&self) -> u32;

    /// The first placed run that ends after `at`, as `(start, end)` stream offsets (`start`
    /// may be at or before `at`: then the bytes at `at` are placed). `None` if no placed run
    /// is known past `at`.
    fn placed_from(&self, at: u64) -> Option<(u64, u64)>;

    /// The marks of stream bytes `start..end`, into `out` (cleared first).
    fn marks(&self, start: u64, end: u64, out: &mut StreamMarks);

    /// The host has consumed every byte before `upto`: their marks may be forgotten.
    fn consumed(&self, upto: u64);
}

/// Finds the marks of a connection.
pub trait MarkSource: Send + Sync {
    /// The connection from `local` to `peer` (as the host's socket sees them), if the
    /// device saw its handshake.
    fn flow(&self, local: SocketAddr, peer: SocketAddr) -> Option<Arc<dyn FlowMarks>>;
}

/// A shared handle of a mark source, for [`ConnectOptions`](crate::ConnectOptions).
#[derive(Clone)]
pub struct MarkSourceRef(pub Arc<dyn MarkSource>);

impl std::fmt::Debug for MarkSourceRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MarkSourceRef")
    }
}
