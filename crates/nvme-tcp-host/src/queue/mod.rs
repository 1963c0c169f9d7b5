//! One NVMe/TCP queue (admin or I/O) as a sans-IO state machine.
//!
//! [`QueueCore`] owns the command slots of a queue, the bytes waiting to be sent and the
//! receive state machine ([`rx`]). It performs no I/O: a driver moves bytes between it and a
//! socket ([`crate::conn`]) or an in-memory stream (tests, fuzzing, the DDP engine model):
//!
//! * transmit: [`QueueCore::tx_pending`] → write → [`QueueCore::tx_consumed`];
//! * receive: bytes already in memory go through [`QueueCore::rx_feed`], or through
//!   [`QueueCore::rx_feed_marked`] with the marks an offload device left on them (which
//!   payload bytes it placed, whether it verified their digests); when the state machine is
//!   inside C2HData payload, [`QueueCore::rx_direct`] hands out the caller's buffer at the
//!   current DATAO so the driver can read from the socket straight into it, then reports the
//!   count with [`QueueCore::rx_direct_done`], which digests those bytes while they are hot;
//! * offload: [`QueueCore::attach_offload`] (`sk_add`) after the queue's Connect, after which
//!   large reads lend their buffer to the device (`setup`) before they are sent and complete
//!   only when the device hands it back (`teardown_done`); [`QueueCore::detach_offload`]
//!   (`sk_del`). See [`crate::offload`];
//! * completions: [`QueueCore::pop_completion`].
//!
//! Every protocol violation by the controller is a [`ProtocolError`]; after one, the core
//! refuses further input until [`QueueCore::reset_connection`] (called by the driver after it
//! reconnected), which keeps the commands that did not complete for re-issue.
//!
//! Re-issue is bounded: when a connection fails, the driver reports it with
//! [`QueueCore::connection_failed`], which counts one attempt against every command that was
//! in flight on it and fails those past the retry limit ([`IoError::GaveUp`]).
//!
//! One slot beyond the queue depth is reserved for the queue's own Fabrics Connect
//! ([`QueueCore::submit_now`]): re-queued commands may hold every other slot while a
//! re-established connection sends its Connect.

mod offload;
pub mod rx;
#[cfg(test)]
mod tests;
mod tx;

use std::collections::VecDeque;
use std::time::Instant;

use nvme_tcp_wire::nvme::{AdminOpcode, Cqe, FabricsType, Psdt, SglDescriptor, Sqe};
use nvme_tcp_wire::pdu::{CapsuleCmdRepr, DataPduRepr, HeaderBuf, IcReqRepr, PduFlags, PduType};

use crate::buf::IoBuf;
use crate::error::{GiveUpReason, IoError, NvmeStatus, ProtocolError};
use crate::offload::QueueOffload;
use crate::options::CidMode;
use crate::tags::TagAllocator;

/// Length of a submission queue entry.
pub use nvme_tcp_wire::nvme::SQE_LEN;

/// Static configuration of a queue.
#[derive(Debug, Clone)]
pub struct QueueConfig {
    /// Queue id (0 = admin).
    pub qid: u16,
    /// Queue size in entries; `queue_size - 1` commands can be in flight.
    pub queue_size: u16,
    /// Header digests requested in ICReq.
    pub hdgst: bool,
    /// Data digests requested in ICReq.
    pub ddgst: bool,
    /// How CIDs are assigned.
    pub cid_mode: CidMode,
    /// Largest write sent as in-capsule data (bytes); larger writes go through R2T.
    pub in_capsule_max: usize,
}

/// Connection parameters in force after ICResp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated {
    /// Header digests on.
    pub hdgst: bool,
    /// Data digests on.
    pub ddgst: bool,
    /// CPDA of the controller (alignment of PDUs with data that the host sends).
    pub cpda: u8,
    /// Largest H2CData DATAL.
    pub maxh2cdata: u32,
}

/// Direction of a command's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataDir {
    /// No data.
    None,
    /// Controller to host (C2HData): reads, Identify, Get Log Page.
    ToHost,
    /// Host to controller (in-capsule or H2CData): writes, DSM ranges, Connect data.
    ToController,
}

/// A command ready to be submitted: its SQE (CID and SGL are filled in by the queue), data
/// direction and buffer.
#[derive(Debug)]
pub struct Request {
    /// The submission queue entry.
    pub sqe: [u8; SQE_LEN],
    /// Data direction.
    pub dir: DataDir,
    /// The data buffer; its length is the transfer length. `None` for no data.
    pub buf: Option<IoBuf>,
    /// Opaque value handed back in the completion.
    pub user_data: u64,
}

/// The completion queue entry of a successful command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CqeInfo {
    /// Command specific DW0.
    pub dw0: u32,
    /// Command specific DW1.
    pub dw1: u32,
    /// SQ head pointer (0xFFFF when SQ flow control is disabled or the completion was
    /// synthesized from a C2HData SUCCESS flag).
    pub sqhd: u16,
}

/// A finished command.
#[derive(Debug)]
pub struct Completion {
    /// The value given at submission.
    pub user_data: u64,
    /// The CID the command had.
    pub cid: u16,
    /// The outcome.
    pub result: Result<CqeInfo, IoError>,
    /// The buffer given at submission, with the received data for reads.
    pub buf: Option<IoBuf>,
    /// C2HData bytes placed into the buffer (contiguous from offset 0).
    pub c2h_bytes: usize,
}

/// Why a submission was refused; the buffer comes back.
#[derive(Debug)]
pub struct SubmitError {
    /// The reason.
    pub reason: SubmitErrorKind,
    /// The request's buffer.
    pub buf: Option<IoBuf>,
}

/// Reasons for [`SubmitError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SubmitErrorKind {
    /// Every slot is in flight; poll completions first.
    #[error("queue full")]
    QueueFull,
    /// The transfer is larger than the queue accepts (32-bit SGL length).
    #[error("transfer too large")]
    TooLarge,
    /// The queue has failed for good.
    #[error("queue dead")]
    Dead,
    /// The command cannot be built (block count outside 1..=65536).
    #[error("invalid command")]
    Invalid,
}

/// Where the queue is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// ICReq queued or sent, waiting for ICResp.
    WaitIcResp,
    /// ICResp received; only commands submitted with [`QueueCore::submit_now`] (Connect) go
    /// out; others wait.
    Connecting,
    /// Fully up.
    Live,
    /// A protocol error happened; nothing is accepted until [`QueueCore::reset_connection`].
    Failed,
}

#[derive(Debug)]
pub(crate) struct Slot {
    pub(crate) user_data: u64,
    pub(crate) cid: u16,
    pub(crate) sqe: [u8; SQE_LEN],
    pub(crate) dir: DataDir,
    pub(crate) len: usize,
    pub(crate) buf: Option<IoBuf>,
    pub(crate) in_capsule: bool,
    /// C2H bytes received so far (contiguous from 0).
    pub(crate) rcvd: usize,
    /// A C2HData with LAST_PDU was received.
    pub(crate) last_seen: bool,
    /// H2C: next byte offset an R2T may ask for.
    pub(crate) r2t_next: usize,
    /// An error to report when the command completes (data digest mismatch).
    pub(crate) data_error: Option<IoError>,
    /// When the command was first submitted (or its Abort sent); not restarted by a
    /// reconnect. `None` while not timed.
    pub(crate) submitted: Option<Instant>,
    pub(crate) abort_sent: bool,
    /// Submitted with [`QueueCore::submit_now`]: the queue's own Connect, which uses the
    /// reserved slot.
    pub(crate) reserved: bool,
    /// The capsule was handed to the transmit path on the current connection.
    pub(crate) sent: bool,
    /// Connections that failed while the command was in flight on them.
    pub(crate) retries: u32,
    /// Why the last of them failed.
    pub(crate) last_error: Option<IoError>,
    /// The buffer is lent to the offload device (`setup` succeeded; `buf` is `None`).
    pub(crate) ddp: bool,
    /// The command finished with this result and waits for `teardown_done`.
    pub(crate) tearing: Option<Result<CqeInfo, IoError>>,
    /// The data digest of the write's first H2CData PDU (DATAO 0, this DATAL), computed
    /// ahead while the queue waited for the R2T ([`QueueCore::digest_ahead`]).
    pub(crate) h2c_digest: Option<(usize, u32)>,
}

impl Slot {
    /// True for a command whose controller-to-host data may be shorter than its buffer: an
    /// Authentication Receive returns its message, up to the allocation length. Every other
    /// successful read must fill its buffer.
    pub(crate) fn short_transfer_allowed(&self) -> bool {
        self.sqe[0] == nvme_tcp_wire::nvme::AdminOpcode::Fabrics as u8
            && self.sqe[4] == nvme_tcp_wire::nvme::FabricsType::AuthenticationReceive as u8
    }
}

impl Slot {
    fn empty() -> Self {
        Self {
            user_data: 0,
            cid: 0,
            sqe: [0; SQE_LEN],
            dir: DataDir::None,
            len: 0,
            buf: None,
            in_capsule: false,
            rcvd: 0,
            last_seen: false,
            r2t_next: 0,
            data_error: None,
            submitted: None,
            abort_sent: false,
            reserved: false,
            sent: false,
            retries: 0,
            last_error: None,
            ddp: false,
            tearing: None,
            h2c_digest: None,
        }
    }
}

/// Counters of one queue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Commands submitted.
    pub submitted: u64,
    /// Commands completed (successfully or not).
    pub completed: u64,
    /// Commands completed successfully.
    pub succeeded: u64,
    /// C2HData payload bytes read straight from the socket into caller buffers.
    pub rx_direct_bytes: u64,
    /// C2HData payload bytes copied from the receive pipe / an in-memory stream.
    pub rx_copied_bytes: u64,
    /// C2HData payload bytes an offload had already placed (copy skipped).
    pub rx_offload_placed_bytes: u64,
    /// C2HData PDUs whose data digest an offload verified (CRC skipped).
    pub rx_offload_ddgst_pdus: u64,
    /// C2HData payload bytes the host ran CRC32C over (software data digest).
    pub rx_digested_bytes: u64,
    /// Data digest mismatches.
    pub ddgst_errors: u64,
    /// Connections re-established.
    pub reconnects: u64,
    /// Reads whose buffer was lent to the offload device (`setup` succeeded).
    pub ddp_setups: u64,
    /// Reads the offload device refused (`setup` failed; software path).
    pub ddp_setup_fails: u64,
    /// Buffers handed back by the device (`teardown_done`).
    pub ddp_teardowns_done: u64,
    /// Resync requests confirmed to the device.
    pub ddp_resyncs_confirmed: u64,
    /// Marks the host ignored: placement reported for a command whose buffer it did not
    /// lend, or a buffer handed back that no command waits for.
    pub ddp_anomalies: u64,
}

/// The sans-IO state of one queue.
pub struct QueueCore {
    pub(crate) cfg: QueueConfig,
    pub(crate) phase: Phase,
    pub(crate) neg: Option<Negotiated>,
    pub(crate) tags: TagAllocator,
    pub(crate) slots: Vec<Slot>,
    /// Commands the caller may have in flight (`queue_size - 1`); `slots` has one more, the
    /// slot reserved for Connect.
    depth: usize,
    /// Slots taken by [`QueueCore::submit_now`] commands.
    reserved_in_use: usize,
    /// Slots submitted while the queue was not live, or to re-issue after a reconnect.
    deferred: VecDeque<u16>,
    /// Writes sent without their data, whose first H2CData digest is not computed yet:
    /// (slot, CID).
    digest_ahead: VecDeque<(u16, u16)>,
    completions: VecDeque<Completion>,
    tx: tx::TxQueue,
    pub(crate) rx: rx::RxMachine,
    pub(crate) stats: QueueStats,
    /// SQ head as last reported by the controller.
    pub(crate) sqhd: u16,
    /// Bytes were sent or received on the current connection.
    used: bool,
    /// The ULP DDP offload of this queue's socket, while attached.
    pub(crate) offload: Option<QueueOffload>,
}

impl std::fmt::Debug for QueueCore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueCore")
            .field("qid", &self.cfg.qid)
            .field("phase", &self.phase)
            .field("in_flight", &self.tags.in_use_count())
            .finish()
    }
}

impl QueueCore {
    /// A queue in [`Phase::WaitIcResp`] with its ICReq already queued for transmission.
    pub fn new(cfg: QueueConfig) -> Self {
        let depth = cfg.queue_size.saturating_sub(1).clamp(1, 32767);
        // One more slot than the depth: the reserved one of the queue's Connect.
        let slots = depth + 1;
        let mut q = Self {
            tags: TagAllocator::new(slots, cfg.cid_mode),
            slots: (0..slots).map(|_| Slot::empty()).collect(),
            depth: depth as usize,
            reserved_in_use: 0,
            deferred: VecDeque::with_capacity(depth as usize),
            digest_ahead: VecDeque::with_capacity(slots as usize),
            completions: VecDeque::with_capacity(depth as usize),
            tx: tx::TxQueue::with_capacity(64 << 10),
            rx: rx::RxMachine::new(),
            phase: Phase::WaitIcResp,
            neg: None,
            stats: QueueStats::default(),
            sqhd: 0,
            used: false,
            offload: None,
            cfg,
        };
        q.queue_icreq();
        q
    }

    fn queue_icreq(&mut self) {
        let icreq = IcReqRepr {
            pfv: 0,
            hpda: 0,
            hdgst_enable: self.cfg.hdgst,
            ddgst_enable: self.cfg.ddgst,
            maxr2t: 0,
        };
        self.tx.stage(HeaderBuf::new(&icreq).as_bytes());
    }

    /// Queue id.
    pub fn qid(&self) -> u16 {
        self.cfg.qid
    }
    /// Current phase.
    pub fn phase(&self) -> Phase {
        self.phase
    }
    /// Parameters negotiated by ICReq/ICResp, once known.
    pub fn negotiated(&self) -> Option<Negotiated> {
        self.neg
    }
    /// Commands in flight (submitted, not completed), not counting the queue's own Connect.
    pub fn in_flight(&self) -> usize {
        self.tags.in_use_count() - self.reserved_in_use
    }
    /// Commands that can be in flight at once (`queue_size - 1`; the queue's own Connect
    /// has a slot of its own on top).
    pub fn depth(&self) -> usize {
        self.depth
    }
    /// Counters.
    pub fn stats(&self) -> QueueStats {
        self.stats
    }
    /// The SQ head pointer of the last CapsuleResp.
    pub fn sqhd(&self) -> u16 {
        self.sqhd
    }
    /// True once bytes were sent or received on the current connection (so a new connection
    /// needs [`QueueCore::reset_connection`] first).
    pub fn connection_used(&self) -> bool {
        self.used || self.rx.position() > 0
    }

    /// Largest in-capsule write (bytes).
    pub fn set_in_capsule_max(&mut self, bytes: usize) {
        self.cfg.in_capsule_max = bytes;
    }

    /// Marks the queue live (the Connect command succeeded) and sends everything that waited.
    pub fn set_live(&mut self) {
        if self.phase == Phase::Connecting {
            self.phase = Phase::Live;
            while let Some(idx) = self.deferred.pop_front() {
                self.emit_capsule(idx);
            }
        }
    }

    /// Submits a command; it is sent once the queue is live. Returns its CID.
    pub fn submit(&mut self, req: Request, now: Instant) -> Result<u16, SubmitError> {
        self.submit_inner(req, now, false)
    }

    /// Submits a command that goes out as soon as ICResp arrived, before the queue is live
    /// (the Fabrics Connect command).
    pub fn submit_now(&mut self, req: Request, now: Instant) -> Result<u16, SubmitError> {
        self.submit_inner(req, now, true)
    }

    fn submit_inner(
        &mut self,
        req: Request,
        now: Instant,
        early: bool,
    ) -> Result<u16, SubmitError> {
        let len = req.buf.as_ref().map_or(0, IoBuf::len);
        if len > u32::MAX as usize {
            return Err(SubmitError {
                reason: SubmitErrorKind::TooLarge,
                buf: req.buf,
            });
        }
        // The last free slot is kept for a Connect (`early`).
        let full = !early && self.in_flight() >= self.depth;
        let Some((idx, cid)) = (!full).then(|| self.tags.alloc()).flatten() else {
            return Err(SubmitError {
                reason: SubmitErrorKind::QueueFull,
                buf: req.buf,
            });
        };
        if early {
            self.reserved_in_use += 1;
        }
        let dir = if len == 0 { DataDir::None } else { req.dir };
        let slot = &mut self.slots[idx as usize];
        slot.user_data = req.user_data;
        slot.cid = cid;
        slot.sqe = req.sqe;
        slot.dir = dir;
        slot.len = len;
        slot.buf = req.buf;
        slot.rcvd = 0;
        slot.last_seen = false;
        slot.r2t_next = 0;
        slot.data_error = None;
        slot.submitted = Some(now);
        slot.abort_sent = false;
        slot.reserved = early;
        slot.sent = false;
        slot.retries = 0;
        slot.last_error = None;
        // In-capsule limit: Fabrics commands (opcode 0x7F) may always carry 8 KiB.
        let icmax = if is_fabrics(&slot.sqe) {
            self.cfg.in_capsule_max.max(8192)
        } else {
            self.cfg.in_capsule_max
        };
        slot.in_capsule = dir == DataDir::ToController && len <= icmax;
        slot.ddp = false;
        slot.tearing = None;
        slot.h2c_digest = None;
        set_cid(&mut slot.sqe, cid);
        set_sgl(&mut slot.sqe, len, slot.in_capsule);
        self.stats.submitted += 1;
        // Lend a large read's buffer to the offload before the command can be sent.
        self.offload_setup(idx);
        let go = self.phase == Phase::Live || (early && self.phase == Phase::Connecting);
        if go {
            self.emit_capsule(idx);
        } else {
            self.deferred.push_back(idx);
        }
        Ok(cid)
    }

    /// Appends the CapsuleCmd of slot `idx` (with in-capsule data) to the transmit buffer.
    fn emit_capsule(&mut self, idx: u16) {
        let Some(neg) = self.neg else {
            self.deferred.push_back(idx);
            return;
        };
        self.slots[idx as usize].sent = true;
        let slot = &self.slots[idx as usize];
        let data_len = if slot.in_capsule { slot.len } else { 0 };
        let repr = CapsuleCmdRepr {
            hdgst: neg.hdgst,
            ddgst: neg.ddgst,
            pda: neg.cpda,
            sqe: slot.sqe,
            data_len: data_len as u32,
        };
        self.tx.stage(HeaderBuf::new(&repr).as_bytes());
        if data_len > 0
            && let Some(buf) = &slot.buf
        {
            self.tx
                .data(idx, buf, 0, data_len, neg.ddgst.then_some(None));
        } else if neg.ddgst && slot.dir == DataDir::ToController && slot.h2c_digest.is_none() {
            // Bounded: a driver that never finds time for them drops the oldest (mostly
            // stale) entries, not the new ones.
            let cid = slot.cid;
            if self.digest_ahead.len() == self.slots.len() {
                self.digest_ahead.pop_front();
            }
            self.digest_ahead.push_back((idx, cid));
        }
    }

    /// Computes ahead the data digest of the first H2CData PDU of one write that waits for
    /// its R2T, so that answering the R2T costs no CRC pass: the driver calls this when it
    /// has nothing to read (before it spins or sleeps), one write at a time, looking at the
    /// socket in between. Returns false when no write needed it.
    pub fn digest_ahead(&mut self) -> bool {
        let Some(neg) = self.neg else { return false };
        let maxd = (neg.maxh2cdata as usize).max(4096);
        while let Some((idx, cid)) = self.digest_ahead.pop_front() {
            let slot = &mut self.slots[idx as usize];
            // Still that command, still waiting for its first R2T, buffer at hand.
            if slot.cid != cid
                || !slot.sent
                || slot.r2t_next != 0
                || slot.h2c_digest.is_some()
                || slot.tearing.is_some()
            {
                continue;
            }
            let Some(buf) = &slot.buf else { continue };
            let n = slot.len.min(maxd);
            slot.h2c_digest = Some((n, tx::crc_range(buf, 0, n)));
            return true;
        }
        false
    }

    /// Appends H2CData PDUs for `r2tl` bytes at `r2to` of slot `idx`, split at MAXH2CDATA.
    pub(crate) fn emit_h2c_data(&mut self, idx: u16, ttag: u16, r2to: usize, r2tl: usize) {
        let Some(neg) = self.neg else { return };
        let maxd = (neg.maxh2cdata as usize).max(4096);
        let slot = &self.slots[idx as usize];
        let Some(buf) = &slot.buf else { return };
        let mut off = r2to;
        let end = r2to + r2tl;
        while off < end {
            let n = (end - off).min(maxd);
            let repr = DataPduRepr {
                pdu_type: PduType::H2cData,
                flags: if off + n == end {
                    PduFlags::LAST_PDU
                } else {
                    PduFlags::NONE
                },
                hdgst: neg.hdgst,
                ddgst: neg.ddgst,
                pda: neg.cpda,
                cccid: slot.cid,
                ttag,
                datao: off as u32,
                datal: n as u32,
            };
            self.tx.stage(HeaderBuf::new(&repr).as_bytes());
            let known = slot.h2c_digest.filter(|&(len, _)| off == 0 && len == n);
            self.tx
                .data(idx, buf, off, n, neg.ddgst.then_some(known.map(|(_, d)| d)));
            off += n;
        }
    }

    /// The next contiguous bytes waiting to be sent (all of them in copy mode; in zero-copy
    /// mode a staged piece or a piece of a command's buffer).
    pub fn tx_pending(&self) -> &[u8] {
        self.tx.pending(&self.slots)
    }

    /// Fills `out` with the bytes waiting to be sent, in order, for a gather write; returns
    /// how many slices were filled.
    pub fn tx_iovecs<'a>(&'a self, out: &mut [std::io::IoSlice<'a>]) -> usize {
        self.tx.iovecs(&self.slots, out)
    }

    /// True if nothing waits to be sent.
    pub fn tx_is_empty(&self) -> bool {
        self.tx.is_empty()
    }

    /// Reports that the first `n` bytes waiting to be sent were sent.
    pub fn tx_consumed(&mut self, n: usize) {
        self.used |= n > 0;
        self.tx.consumed(n);
    }

    /// Zero-copy transmit: payload is sent from the commands' buffers (gather writes via
    /// [`QueueCore::tx_iovecs`]) instead of being copied into the transmit buffer. Can be
    /// switched on at any time; switching it off takes effect only while nothing waits to be
    /// sent. Off by default.
    pub fn set_zero_copy_tx(&mut self, on: bool) {
        self.tx.set_zero_copy(on);
    }

    /// True in zero-copy transmit mode.
    pub fn zero_copy_tx(&self) -> bool {
        self.tx.zero_copy()
    }

    /// The next finished command.
    pub fn pop_completion(&mut self) -> Option<Completion> {
        self.poll_offload();
        self.completions.pop_front()
    }

    /// Removes and returns the completion with `user_data`, leaving the others in order (for
    /// internal commands such as Connect; a linear scan).
    pub fn take_completion_for(&mut self, user_data: u64) -> Option<Completion> {
        self.poll_offload();
        let i = self
            .completions
            .iter()
            .position(|c| c.user_data == user_data)?;
        self.completions.remove(i)
    }

    /// Number of finished commands waiting in [`QueueCore::pop_completion`] (after the
    /// last [`QueueCore::poll_offload`]).
    pub fn completions_ready(&self) -> usize {
        self.completions.len()
    }

    /// Commands finished on the wire whose buffer the offload device has not handed back
    /// yet.
    pub fn waiting_for_teardown(&self) -> usize {
        self.slots.iter().filter(|s| s.tearing.is_some()).count()
    }

    /// Completes slot `idx` with `result` (a pending data error overrides success). A command
    /// whose buffer is lent to the offload device is torn down first and completes when the
    /// device hands the buffer back; its CID stays taken until then.
    pub(crate) fn complete(&mut self, idx: u16, result: Result<CqeInfo, IoError>) {
        let slot = &mut self.slots[idx as usize];
        if slot.tearing.is_some() {
            return;
        }
        if slot.ddp {
            slot.submitted = None;
            self.deferred.retain(|&d| d != idx);
            match self.offload_teardown(idx) {
                Ok(()) => {
                    self.slots[idx as usize].tearing = Some(result);
                    return;
                }
                // The device lost the I/O (cannot happen with a conforming device: sk_del
                // hands every buffer back first). The command fails without its buffer.
                Err(e) => {
                    self.slots[idx as usize].ddp = false;
                    let r = result.and(Err(IoError::Invalid(format!(
                        "the offload device lost the buffer: {e}"
                    ))));
                    self.finish_completion(idx, r);
                    return;
                }
            }
        }
        self.finish_completion(idx, result);
    }

    /// Hands slot `idx`'s completion to the caller and frees its CID.
    pub(crate) fn finish_completion(&mut self, idx: u16, result: Result<CqeInfo, IoError>) {
        let slot = &mut self.slots[idx as usize];
        if let Some(b) = slot.buf.as_ref() {
            // Unsent payload of this command must not leave with its buffer.
            self.tx.materialize(idx, b);
        }
        let result = match (result, slot.data_error.take()) {
            (Ok(_), Some(e)) => Err(e),
            (r, _) => r,
        };
        slot.last_error = None;
        self.stats.succeeded += u64::from(result.is_ok());
        let c = Completion {
            user_data: slot.user_data,
            cid: slot.cid,
            result,
            buf: slot.buf.take(),
            c2h_bytes: slot.rcvd,
        };
        slot.submitted = None;
        if std::mem::take(&mut slot.reserved) {
            self.reserved_in_use -= 1;
        }
        self.tags.release(idx);
        self.deferred.retain(|&d| d != idx);
        self.stats.completed += 1;
        self.completions.push_back(c);
    }

    /// Records a protocol violation: the affected command (if any) fails with it, the queue
    /// enters [`Phase::Failed`]. Returns the error for the driver.
    pub(crate) fn fail(&mut self, err: ProtocolError) -> ProtocolError {
        if let Some(cid) = err.cid()
            && let Some(idx) = self.tags.lookup(cid)
        {
            self.complete(idx, Err(IoError::Protocol(err.clone())));
        }
        self.phase = Phase::Failed;
        self.rx.set_failed();
        err
    }

    /// Fails every command in flight with `err` (the queue is given up, or fast_io_fail_tmo
    /// expired).
    pub fn fail_all(&mut self, err: IoError) {
        for idx in 0..self.slots.len() as u16 {
            if self.tags.lookup(self.slots[idx as usize].cid).is_some() {
                self.complete(idx, Err(err.clone()));
            }
        }
        self.deferred.clear();
    }

    /// Fails one command (by CID) with `err`, e.g. after its timeout; false if not in flight.
    pub fn fail_command(&mut self, cid: u16, err: IoError) -> bool {
        match self.tags.lookup(cid) {
            Some(idx) => {
                self.complete(idx, Err(err));
                true
            }
            None => false,
        }
    }

    /// Starts over on a new connection: the receive and transmit state is dropped, ICReq is
    /// queued again, and every command still in flight will be re-issued (from its first
    /// byte) once the queue is live again.
    pub fn reset_connection(&mut self) {
        // The socket is gone: its offload context goes with it (buffers come back).
        self.detach_offload();
        self.tx.clear();
        self.rx = rx::RxMachine::new();
        self.neg = None;
        self.phase = Phase::WaitIcResp;
        self.deferred.clear();
        for idx in 0..self.slots.len() as u16 {
            let s = &mut self.slots[idx as usize];
            if self.tags.lookup(s.cid).is_some() && s.tearing.is_none() {
                // A Connect from the previous connection is not re-issued (the driver sends a
                // new one) and not reported: it was the driver's own command.
                if is_fabrics(&s.sqe)
                    && Sqe::from_array(&s.sqe).fctype() == FabricsType::Connect as u8
                {
                    s.buf = None;
                    s.submitted = None;
                    if std::mem::take(&mut s.reserved) {
                        self.reserved_in_use -= 1;
                    }
                    self.tags.release(idx);
                    continue;
                }
                // The command keeps its timeout clock (and whether its Abort was sent): a
                // reconnect does not give it more time.
                let s = &mut self.slots[idx as usize];
                s.rcvd = 0;
                s.last_seen = false;
                s.r2t_next = 0;
                s.data_error = None;
                s.sent = false;
                self.deferred.push_back(idx);
            }
        }
        self.stats.reconnects += 1;
        self.used = false;
        self.queue_icreq();
    }

    /// The oldest command in flight whose age exceeds `timeout`: `(cid, abort_already_sent)`.
    /// The driver aborts it (and marks it with [`QueueCore::mark_abort_sent`]) or, if an Abort
    /// was already sent, resets the queue.
    pub fn expired(&self, now: Instant, timeout: std::time::Duration) -> Option<(u16, bool)> {
        // (A command waiting for teardown_done has `submitted == None`: it is not timed.)
        self.slots
            .iter()
            .filter(|s| {
                s.submitted
                    .is_some_and(|t| now.saturating_duration_since(t) >= timeout)
            })
            .filter(|s| self.tags.lookup(s.cid).is_some())
            .min_by_key(|s| s.submitted)
            .map(|s| (s.cid, s.abort_sent))
    }

    /// C2H data bytes received so far by the command `cid` (contiguous from offset 0), if it is
    /// in flight.
    pub fn bytes_received(&self, cid: u16) -> Option<usize> {
        self.tags
            .lookup(cid)
            .map(|idx| self.slots[idx as usize].rcvd)
    }

    /// The connection failed with `cause`, a failure that named no command (those it named
    /// have failed already): every command that was sent on it has used one attempt. A command
    /// that has now been sent `max_retries + 1` times fails with [`IoError::GaveUp`]
    /// ([`GiveUpReason::RetryLimit`], source: `cause`); the others are re-issued by
    /// [`QueueCore::reset_connection`] on the next connection. Commands submitted while the
    /// queue was down (never sent) and the queue's own Connect are not counted. Returns how
    /// many commands failed. Call it once per failed connection.
    pub fn connection_failed(&mut self, cause: &IoError, max_retries: u32) -> usize {
        let mut failed = 0;
        for idx in 0..self.slots.len() as u16 {
            let s = &mut self.slots[idx as usize];
            if !s.sent || s.reserved || s.tearing.is_some() || self.tags.lookup(s.cid).is_none() {
                continue;
            }
            s.sent = false;
            s.retries = s.retries.saturating_add(1);
            s.last_error = Some(cause.clone());
            if s.retries > max_retries {
                let attempts = s.retries;
                self.complete(
                    idx,
                    Err(IoError::GaveUp {
                        attempts,
                        reason: GiveUpReason::RetryLimit,
                        last: Box::new(cause.clone()),
                    }),
                );
                failed += 1;
            }
        }
        failed
    }

    /// Fails every command waiting for the connection because the host stops waiting
    /// (`reason`): a command that was in flight on a failed connection fails with
    /// [`IoError::GaveUp`] with the failure of that connection as its source, one never sent
    /// with [`IoError::QueueLost`].
    pub fn fail_waiting(&mut self, reason: GiveUpReason) {
        for idx in 0..self.slots.len() as u16 {
            self.give_up_slot(idx, reason);
        }
    }

    /// Fails, as [`QueueCore::fail_waiting`] does with [`GiveUpReason::CommandTimeout`], every
    /// command waiting for the connection whose timeout (`timeout` since its submission, or
    /// since its Abort) has passed at `now`: the queue is down, so it is neither re-sent nor
    /// aborted later. Returns how many failed.
    pub fn fail_expired_waiting(&mut self, now: Instant, timeout: std::time::Duration) -> usize {
        let mut failed = 0;
        for idx in 0..self.slots.len() as u16 {
            let expired = self.slots[idx as usize]
                .submitted
                .is_some_and(|t| now.saturating_duration_since(t) >= timeout);
            if expired && self.give_up_slot(idx, GiveUpReason::CommandTimeout) {
                failed += 1;
            }
        }
        failed
    }

    /// Fails slot `idx` for `reason` if it holds a command waiting for the connection (not
    /// the queue's own Connect, not one finishing its teardown); true if it did.
    fn give_up_slot(&mut self, idx: u16, reason: GiveUpReason) -> bool {
        let s = &mut self.slots[idx as usize];
        if s.reserved || s.tearing.is_some() || self.tags.lookup(s.cid).is_none() {
            return false;
        }
        let err = match s.last_error.take() {
            Some(last) => IoError::GaveUp {
                attempts: s.retries,
                reason,
                last: Box::new(last),
            },
            None => IoError::QueueLost(reason.as_str()),
        };
        self.complete(idx, Err(err));
        true
    }

    /// How often the command `cid` was re-issued after a failed connection, if it is in
    /// flight.
    pub fn retries(&self, cid: u16) -> Option<u32> {
        self.tags
            .lookup(cid)
            .map(|idx| self.slots[idx as usize].retries)
    }

    /// Records that an Abort was sent for `cid` and restarts its timer.
    pub fn mark_abort_sent(&mut self, cid: u16, now: Instant) {
        if let Some(idx) = self.tags.lookup(cid) {
            let s = &mut self.slots[idx as usize];
            s.abort_sent = true;
            s.submitted = Some(now);
        }
    }
}

/// Writes the CID into the SQE.
fn set_cid(sqe: &mut [u8; SQE_LEN], cid: u16) {
    Sqe::from_array_mut(sqe).set_cid(cid);
}

/// Sets PSDT = SGL and SGL1 for a transfer of `len` bytes: a Data Block / Offset descriptor
/// (offset 0) for in-capsule data, else a Transport SGL Data Block.
fn set_sgl(sqe: &mut [u8; SQE_LEN], len: usize, in_capsule: bool) {
    let sqe = Sqe::from_array_mut(sqe);
    sqe.set_psdt(Psdt::SglMetadataBuffer);
    sqe.set_dptr(if in_capsule && len > 0 {
        SglDescriptor::data_block_offset(0, len as u32)
    } else {
        SglDescriptor::transport_data_block(len as u32)
    });
}

/// True if the SQE is a Fabrics command.
fn is_fabrics(sqe: &[u8; SQE_LEN]) -> bool {
    Sqe::from_array(sqe).opcode() == AdminOpcode::Fabrics as u8
}

/// Decodes the CQE fields the queue needs, through the wire layer's [`Cqe`]:
/// `(dw0, dw1, sqhd, cid, status)`. `None` if fewer than 16 bytes are given.
pub(crate) fn cqe_fields(cqe: &[u8]) -> Option<(u32, u32, u16, u16, NvmeStatus)> {
    let c = Cqe::parse(cqe).ok()?;
    Some((
        c.dw0(),
        c.dw1(),
        c.sqhd(),
        c.cid(),
        NvmeStatus::from_cqe_status(c.status_bits()).with_dw0(c.dw0()),
    ))
}
