//! The host's use of the ULP DDP receive offload, as the kernel's nvme-tcp uses it.
//!
//! * Controller level ([`DdpNetdev::probe`]): a host is given a device through
//!   [`ConnectOptions::ddp_device`](crate::ConnectOptions::ddp_device). Once the admin queue
//!   is up, the device's capabilities and NVMe/TCP limits are read once: `nvme-tcp` must be
//!   active, and a device without `tls` is not used on TLS queues. `full_ccid_range = false`
//!   makes every I/O queue use linear CIDs ([`CidMode::Linear`], Linux's
//!   `NVME_QUIRK_SKIP_CID_GEN`), and `max_ddp_sgl_len` caps the I/O size
//!   ([`DdpNetdev::max_transfer`], as the kernel caps `max_segments` / `max_hw_sectors`).
//!   The admin queue is never offloaded.
//! * Queue level: [`QueueCore::attach_offload`](crate::QueueCore::attach_offload) (`sk_add`)
//!   after the I/O queue's Connect succeeded — a failure leaves the queue on the software
//!   path; [`QueueCore::detach_offload`](crate::QueueCore::detach_offload) (`sk_del`) when the
//!   queue closes or is lost, and `sk_add` again after a reconnect.
//! * I/O level: a Read whose transfer is at least `io_threshold` bytes (and whose buffer has
//!   at most `max_ddp_sgl_len` segments) lends its buffer to the device with `setup` before
//!   the command is sent; a refused setup leaves that read on the software path. At the
//!   read's completion the host calls `teardown`, and the read completes to the caller only
//!   when the device hands the buffer back (`teardown_done`); its CID is not reused before.
//! * Receive: one pipeline. The queue core takes received bytes together with the marks the
//!   device left on them ([`RxMarks`]: the kernel's skb `ddp` and `ulp_crc` bits). It skips
//!   copying placed ranges and copies the rest itself (into a lent buffer through
//!   `copy_to_io`); it skips the data digest of a PDU only when every segment that carried its
//!   data and digest had the crc mark, and otherwise computes it over the destination buffer
//!   (as Linux recomputes over the request's pages). Placement reported for a command whose
//!   buffer the host did not lend is ignored and counted as an anomaly.
//! * Resync: at every PDU header the queue parses it reports the header's TCP sequence number
//!   to the device (`pdu_header`), which confirms a pending resync request that names exactly
//!   that header — one step, no lock, no callback.

use std::sync::Arc;

use ulp_ddp::{Cap, Limits, UlpDdpDevice, UlpDdpSocket, UlpDdpType};

use crate::options::CidMode;

/// The offload device a controller uses (the kernel's `ctrl->ddp_netdev`), with the limits
/// read once at controller setup.
#[derive(Clone)]
pub struct DdpNetdev {
    dev: Arc<dyn UlpDdpDevice>,
    limits: Limits,
}

impl std::fmt::Debug for DdpNetdev {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DdpNetdev")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl DdpNetdev {
    /// The device to offload through, if its `nvme-tcp` capability is active and it reports
    /// NVMe/TCP limits, and — for a queue that runs TLS — it supports TLS. Capabilities are
    /// read now (connect time).
    pub fn probe(dev: &Arc<dyn UlpDdpDevice>, tls: bool) -> Option<Self> {
        if !dev.get_caps().is_active(Cap::NvmeTcp) {
            return None;
        }
        let limits = dev.limits(UlpDdpType::Nvme).ok()?;
        limits.nvme()?;
        if tls && !limits.tls {
            return None;
        }
        Some(Self {
            dev: Arc::clone(dev),
            limits,
        })
    }

    /// The device.
    pub fn device(&self) -> &Arc<dyn UlpDdpDevice> {
        &self.dev
    }

    /// The device's limits.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The CID mode I/O queues must use: linear when the device cannot take the full
    /// 16-bit range.
    pub fn cid_mode(&self) -> CidMode {
        match self.limits.nvme() {
            Some(l) if !l.full_ccid_range => CidMode::Linear,
            _ => CidMode::Tagged,
        }
    }

    /// The largest transfer (bytes) the device can place when buffers are made of
    /// `segment_size`-byte segments: `max_ddp_sgl_len × segment_size` (`None`: no limit).
    pub fn max_transfer(&self, segment_size: usize) -> Option<usize> {
        match self.limits.max_ddp_sgl_len {
            0 => None,
            n => Some((n as usize).saturating_mul(segment_size)),
        }
    }
}

/// One run of received payload bytes the device placed, by stream offset (bytes since the
/// queue's connection was established; the first byte of ICResp is 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlacedRange {
    /// Stream offset of the first placed byte.
    pub start: u64,
    /// Bytes placed.
    pub len: u32,
}

/// What an offload device marked on a run of received bytes (the bytes of one TCP segment,
/// or a part of one): the kernel's skb bits.
#[derive(Debug, Clone, Copy)]
pub struct RxMarks<'a> {
    /// `ulp_crc`: the device fed these bytes into the data digest of a PDU it tracked from
    /// its first byte, and that digest matched where it ended in them.
    pub crc: bool,
    /// `ddp`: payload ranges the device already wrote into the destination buffer.
    pub placed: &'a [PlacedRange],
}

impl RxMarks<'_> {
    /// Bytes with no mark (no offload, or a segment the device did not process).
    pub const NONE: RxMarks<'static> = RxMarks {
        crc: false,
        placed: &[],
    };
}

/// The offload of one queue's socket while attached.
pub(crate) struct QueueOffload {
    pub(crate) sock: Box<dyn UlpDdpSocket>,
    pub(crate) io_threshold: u64,
    pub(crate) max_sgl: u32,
    /// The device verifies data digests on this socket.
    pub(crate) ddgst: bool,
    /// TCP sequence number of stream offset 0, when the driver knows it (resync answers
    /// need it).
    pub(crate) isn: Option<u32>,
}
