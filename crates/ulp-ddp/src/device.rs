//! The device operations (`struct ulp_ddp_dev_ops`), split the way the data path needs it:
//! device-level operations on [`UlpDdpDevice`] (limits, caps, stats, `sk_add`) and
//! per-socket operations on the [`UlpDdpSocket`] handle `sk_add` returns (setup, teardown,
//! resync, the ULP's own copies, `sk_del`).
//!
//! No device-wide lock sits on the data path: a queue's thread touches only its socket's
//! handle, and the device's receive path touches only that socket's state. What the kernel
//! delivers as callbacks (`resync_request`, `teardown_done`) reaches the ULP without a
//! callback: a resync request is stored where [`UlpDdpSocket::pdu_header`] finds it (one
//! lock-free step per parsed header), and a finished teardown is an event the ULP takes
//! with [`UlpDdpSocket::poll_event`].

use crate::caps::{Cap, CapSet, CapsSetOutcome, CapsSetRequest, DevCaps};
use crate::error::{DdpError, SetupError};
use crate::io::DdpIo;
use crate::limits::{Limits, SkConfig, UlpDdpType};
use crate::stats::Stats;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Names a socket (a TCP flow, one NVMe/TCP queue) towards the device. Chosen by the ULP,
/// unique per device while the socket is offloaded. The kernel passes `struct sock *`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SockId(pub u64);

impl fmt::Display for SockId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sk#{}", self.0)
    }
}

/// The ULP's token for one teardown, handed back with its
/// [`DdpEvent::TeardownDone`] (the kernel's `void *ddp_ctx`; nvme-tcp passes the request).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DdpCtx(pub u64);

/// Flags of a resync request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct ResyncFlags(pub u32);

impl ResyncFlags {
    /// `ULP_DDP_RESYNC_PENDING`: the device waits for the ULP to confirm `seq`.
    pub const PENDING: Self = Self(1 << 0);

    /// True if every bit of `other` is set.
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }
}

/// What the device hands back to the ULP asynchronously (the kernel's `teardown_done`
/// callback, as an event).
#[derive(Debug)]
pub enum DdpEvent {
    /// The teardown identified by `ctx` finished: the device will never write to the buffer
    /// again and hands it back. Only now may the ULP complete the I/O or reuse its command ID.
    TeardownDone {
        /// The token given to [`UlpDdpSocket::teardown`].
        ctx: DdpCtx,
        /// The I/O, with every byte the device placed.
        io: DdpIo,
    },
}

/// What happened at a PDU header the ULP reported with [`UlpDdpSocket::pdu_header`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResyncAction {
    /// Nothing is pending, or the header is before the requested sequence number.
    None,
    /// The header is exactly the requested one: the device was told (`resync(seq)`).
    Confirmed(u32),
    /// The header is past the requested sequence number: the request was wrong (or came too
    /// late); no answer is sent and the device stays unsynchronized until it asks again.
    Mismatch {
        /// Requested sequence number.
        requested: u32,
        /// Sequence number of the header the ULP parsed.
        pdu_seq: u32,
    },
}

/// A device that can place ULP data directly and verify data digests
/// (`struct ulp_ddp_dev_ops`, device-level part). Shared by every queue that uses it
/// (`Arc<dyn UlpDdpDevice>`); every method takes `&self` and none blocks on another
/// socket's data path.
///
/// Call order per socket: [`limits`](Self::limits) → [`sk_add`](Self::sk_add) → any number
/// of setup / teardown pairs and resync answers on the returned [`UlpDdpSocket`] →
/// [`UlpDdpSocket::sk_del`].
pub trait UlpDdpDevice: Send + Sync {
    /// The device's limits and quirks for `ulp`.
    fn limits(&self, ulp: UlpDdpType) -> Result<Limits, DdpError>;

    /// Creates the offload context of socket `sk` with `config` and returns the handle of
    /// its per-socket operations. Fails if the protocol's capability is not active. On
    /// failure the ULP carries on without offload (`rx-nvme-tcp-sk-add-fail` counts it).
    fn sk_add(&self, sk: SockId, config: &SkConfig) -> Result<Box<dyn UlpDdpSocket>, DdpError>;

    /// Sets the active capabilities (already restricted to `hw`). Use [`caps_set`] for the
    /// netlink semantics. Sockets added before keep the offload they were added with.
    fn set_caps(&self, active: CapSet) -> Result<(), DdpError>;

    /// The device's capabilities.
    fn get_caps(&self) -> DevCaps;

    /// The device's counters.
    fn get_stats(&self) -> Stats;
}

/// The per-socket operations of an offloaded socket (`struct ulp_ddp_dev_ops`, socket part),
/// owned by the ULP's queue. Dropping the handle without [`sk_del`](Self::sk_del) deletes
/// the context all the same (the buffers still registered are dropped).
pub trait UlpDdpSocket: Send {
    /// The socket this handle offloads.
    fn sk(&self) -> SockId;

    /// True if the device verifies data digests on this socket (the digest was negotiated
    /// and the `nvme-tcp-ddgst-rx` capability was active at `sk_add`).
    fn ddgst_offloaded(&self) -> bool;

    /// Registers the buffer of one I/O: from now on, data PDUs for `io.command_id` are
    /// placed into it. A failure hands the I/O back with the reason; the ULP then receives
    /// that I/O the normal way. The device refuses a command ID that still has buffers or
    /// whose teardown has not been handed back yet ([`DdpError::CidBusy`]).
    fn setup(&mut self, io: DdpIo) -> Result<(), SetupError>;

    /// Ends placement for `command_id` at once. The buffer comes back as
    /// [`DdpEvent::TeardownDone`]`{ctx, ..}` from [`poll_event`](Self::poll_event),
    /// possibly later (as a NIC completes the invalidation asynchronously).
    fn teardown(&mut self, command_id: u32, ctx: DdpCtx) -> Result<(), DdpError>;

    /// The next event of this socket, if any. Never blocks.
    fn poll_event(&mut self) -> Option<DdpEvent>;

    /// The resync handshake, in one step: the ULP calls this for every PDU header it parses,
    /// with the TCP sequence number of the header's first byte. If the device asked for a
    /// resync at exactly `seq`, this confirms it to the device.
    fn pdu_header(&mut self, seq: u32) -> ResyncAction;

    /// Copies `data` into the buffer of `command_id` at data offset `offset`: the ULP's own
    /// copy of bytes the device did not place (the CPU writing to DMA-mapped pages). Never
    /// counted as placement.
    fn copy_to_io(&mut self, command_id: u32, offset: u64, data: &[u8]) -> Result<(), DdpError>;

    /// Lends the ULP the bytes of `command_id`'s buffer in `offset..offset + len`, piece by
    /// piece (the CPU reading DMA-mapped pages, e.g. to recompute a data digest the device
    /// did not verify).
    fn read_io(
        &mut self,
        command_id: u32,
        offset: u64,
        len: usize,
        f: &mut dyn FnMut(&[u8]),
    ) -> Result<(), DdpError>;

    /// Removes the offload context. I/Os still registered, and teardowns not yet handed
    /// back, are returned (counted as teardowns) and produce no event.
    fn sk_del(self: Box<Self>) -> Vec<DdpIo>;
}

/// The caps-set operation of the netlink family: computes
/// `((active & !mask) | (wanted & mask)) & hw`, calls `set_caps` only if that changes
/// anything, reads the capabilities back and says whether a `caps-set-ntf` is due.
pub fn caps_set<D: UlpDdpDevice + ?Sized>(
    dev: &D,
    req: CapsSetRequest,
) -> Result<CapsSetOutcome, DdpError> {
    let old = dev.get_caps();
    let new = CapSet::apply_request(old.active, req.wanted, req.wanted_mask, old.hw);
    if new != old.active {
        dev.set_caps(new)?;
    }
    let caps = dev.get_caps();
    Ok(CapsSetOutcome {
        caps,
        notify: caps.active != old.active,
    })
}

/// True if `cap` is active on `dev` (`ulp_ddp_is_cap_active`).
pub fn is_cap_active<D: UlpDdpDevice + ?Sized>(dev: &D, cap: Cap) -> bool {
    dev.get_caps().is_active(cap)
}
