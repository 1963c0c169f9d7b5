//! The device operations (`struct ulp_ddp_dev_ops`) and the ULP callbacks
//! (`struct ulp_ddp_ulp_ops`).

use crate::caps::{Cap, CapSet, CapsSetOutcome, CapsSetRequest, DevCaps};
use crate::error::{DdpError, SetupError};
use crate::io::DdpIo;
use crate::limits::{Limits, SkConfig, UlpDdpType};
use crate::stats::Stats;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::Arc;

/// Names a socket (a TCP flow, one NVMe/TCP queue) towards the device. Chosen by the ULP,
/// unique per device while the socket is offloaded. The kernel passes `struct sock *`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SockId(pub u64);

impl fmt::Display for SockId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sk#{}", self.0)
    }
}

/// The ULP's token for one teardown, handed back by `teardown_done` (the kernel's
/// `void *ddp_ctx`; nvme-tcp passes the request).
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

/// Callbacks from the device into the upper-layer protocol, registered per socket at
/// `sk_add`. They may be called from inside device operations (the software engine calls
/// `resync_request` while it processes a segment), so they must be quick and must not
/// take locks the ULP holds around device calls.
pub trait UlpDdpOps: Send + Sync {
    /// The device lost the PDU framing of `sk` and believes a PDU header starts at TCP
    /// sequence number `seq`. With [`ResyncFlags::PENDING`] the device places nothing
    /// until the ULP confirms with [`UlpDdpDevice::resync`]`(seq)` — which it must do only
    /// when it parses a PDU header that starts exactly at `seq`. A newer request replaces
    /// an older one. Returns true if the request was recorded.
    fn resync_request(&self, sk: SockId, seq: u32, flags: ResyncFlags) -> bool;

    /// The teardown identified by `ctx` finished: the device will never write to the
    /// buffers again and hands them back. Only now may the ULP complete the I/O.
    fn teardown_done(&self, ctx: DdpCtx, io: DdpIo);
}

/// A device that can place ULP data directly and verify data digests
/// (`struct ulp_ddp_dev_ops`).
///
/// Call order per socket: [`limits`](Self::limits) → [`sk_add`](Self::sk_add) → any number
/// of [`setup`](Self::setup) / [`teardown`](Self::teardown) pairs and
/// [`resync`](Self::resync) answers → [`sk_del`](Self::sk_del).
pub trait UlpDdpDevice {
    /// The device's limits and quirks for `ulp`.
    fn limits(&self, ulp: UlpDdpType) -> Result<Limits, DdpError>;

    /// Creates the offload context of socket `sk` with `config`, and registers the ULP's
    /// callbacks. Fails if the protocol's capability is not active. On failure the ULP
    /// carries on without offload (`rx-nvme-tcp-sk-add-fail` counts it).
    fn sk_add(
        &mut self,
        sk: SockId,
        config: &SkConfig,
        ulp_ops: Arc<dyn UlpDdpOps>,
    ) -> Result<(), DdpError>;

    /// Removes the offload context of `sk`. I/Os still registered are torn down (counted
    /// as teardowns) and handed back without a `teardown_done` call.
    fn sk_del(&mut self, sk: SockId) -> Vec<DdpIo>;

    /// Registers the buffers of one I/O: from now on, data PDUs for `io.command_id` are
    /// placed into them. A failure hands the I/O back; the ULP then receives that I/O the
    /// normal way.
    fn setup(&mut self, sk: SockId, io: DdpIo) -> Result<(), SetupError>;

    /// Ends placement for `command_id` at once. The buffers come back through
    /// [`UlpDdpOps::teardown_done`]`(ctx, io)`, possibly later (asynchronously).
    fn teardown(&mut self, sk: SockId, command_id: u16, ctx: DdpCtx) -> Result<(), DdpError>;

    /// Confirms the pending resync request for `seq`. Called only when the request was
    /// correct; a confirmation the device no longer waits for is ignored.
    fn resync(&mut self, sk: SockId, seq: u32);

    /// Sets the active capabilities (already restricted to `hw`). Use [`caps_set`] for the
    /// netlink semantics.
    fn set_caps(&mut self, active: CapSet) -> Result<(), DdpError>;

    /// The device's capabilities.
    fn get_caps(&self) -> DevCaps;

    /// The device's counters.
    fn get_stats(&self) -> Stats;

    /// Copies `data` into the buffers of `command_id` at data offset `offset`: the ULP's own
    /// copy of bytes the device did not place (the CPU writing to DMA-mapped pages). Never
    /// counted as placement.
    fn copy_to_io(
        &mut self,
        sk: SockId,
        command_id: u16,
        offset: u64,
        data: &[u8],
    ) -> Result<(), DdpError>;
}

/// The caps-set operation of the netlink family: computes
/// `((active & !mask) | (wanted & mask)) & hw`, calls `set_caps` only if that changes
/// anything, reads the capabilities back and says whether a `caps-set-ntf` is due.
pub fn caps_set<D: UlpDdpDevice + ?Sized>(
    dev: &mut D,
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
