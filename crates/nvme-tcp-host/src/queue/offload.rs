//! The queue core's side of the ULP DDP offload: `sk_add` / `sk_del`, lending a read's
//! buffer (`setup`), `teardown`, and the events the device hands back.

use ulp_ddp::{
    DdpCtx, DdpError, DdpEvent, DdpIo, NvmeTcpDdpConfig, NvmeTcpDigests, SetupError, SkConfig,
    SockId,
};

use nvme_tcp_wire::nvme::{IoOpcode, Sqe};

use super::{DataDir, QueueCore};
use crate::offload::{DdpNetdev, QueueOffload};

impl QueueCore {
    /// Offloads this queue's socket (`nvme_tcp_offload_socket`): `sk_add` on the device with
    /// the negotiated digests and PDA, the queue size, and the next PDU's TCP sequence number
    /// when the driver knows the sequence number of stream offset 0 (`isn`). Call it once the
    /// I/O queue's Connect succeeded, never on the admin queue. On failure the queue stays on
    /// the software path (the device counts `rx-nvme-tcp-sk-add-fail`).
    pub fn attach_offload(
        &mut self,
        netdev: &DdpNetdev,
        sk: SockId,
        isn: Option<u32>,
        affinity_hint: u32,
    ) -> Result<(), DdpError> {
        if self.cfg.qid == 0 {
            return Err(DdpError::InvalidConfig(
                "the admin queue is never offloaded",
            ));
        }
        let Some(neg) = self.neg else {
            return Err(DdpError::InvalidConfig("the queue has not negotiated yet"));
        };
        self.detach_offload();
        let next = isn.map(|i| i.wrapping_add(self.rx.position() as u32));
        let cfg = SkConfig::nvme(
            affinity_hint,
            next,
            NvmeTcpDdpConfig {
                cpda: 0,
                dgst: NvmeTcpDigests {
                    header: neg.hdgst,
                    data: neg.ddgst,
                },
                queue_size: u32::from(self.cfg.queue_size),
                ..NvmeTcpDdpConfig::default()
            },
        );
        let sock = netdev.device().sk_add(sk, &cfg)?;
        let limits = netdev.limits();
        self.offload = Some(QueueOffload {
            ddgst: neg.ddgst && sock.ddgst_offloaded(),
            sock,
            io_threshold: u64::from(limits.io_threshold),
            max_sgl: limits.max_ddp_sgl_len,
            isn,
        });
        Ok(())
    }

    /// Removes the socket's offload (`ulp_ddp_sk_del`), as the queue closes or its
    /// connection is lost. Reads whose buffers the device still held get them back and finish
    /// on the software path; reads that were waiting for `teardown_done` complete now.
    pub fn detach_offload(&mut self) {
        let Some(off) = self.offload.take() else {
            return;
        };
        for io in off.sock.sk_del() {
            self.take_back(io);
        }
    }

    /// True while the socket is offloaded (`NVME_TCP_Q_OFF_DDP`).
    pub fn is_offloaded(&self) -> bool {
        self.offload.is_some()
    }

    /// True if the device verifies this queue's data digests (`NVME_TCP_Q_OFF_DDGST_RX`).
    pub fn is_ddgst_offloaded(&self) -> bool {
        self.offload.as_ref().is_some_and(|o| o.ddgst)
    }

    /// Takes the device's events: buffers handed back after `teardown` complete their reads.
    /// Called by the receive path and by [`QueueCore::pop_completion`]; a driver that waits
    /// for completions while the stream is idle calls it too.
    pub fn poll_offload(&mut self) {
        loop {
            let Some(ev) = self.offload.as_mut().and_then(|o| o.sock.poll_event()) else {
                return;
            };
            match ev {
                DdpEvent::TeardownDone { ctx, io } => {
                    let idx = u16::try_from(ctx.0).ok();
                    let ours = idx.is_some_and(|i| {
                        self.slots.get(usize::from(i)).is_some_and(|s| {
                            s.ddp && s.tearing.is_some() && u32::from(s.cid) == io.command_id
                        })
                    });
                    if ours {
                        self.take_back(io);
                    } else {
                        self.stats.ddp_anomalies += 1;
                    }
                }
            }
        }
    }

    /// A lent buffer came back: the slot owns it again; a read waiting for it completes.
    fn take_back(&mut self, io: DdpIo) {
        let slot_idx = u16::try_from(io.command_id)
            .ok()
            .and_then(|cid| self.tags.lookup(cid))
            .filter(|&i| self.slots[usize::from(i)].ddp);
        let Some(idx) = slot_idx else {
            self.stats.ddp_anomalies += 1;
            return;
        };
        let slot = &mut self.slots[usize::from(idx)];
        slot.buf = Some(io.buf);
        slot.ddp = false;
        self.stats.ddp_teardowns_done += 1;
        if let Some(result) = slot.tearing.take() {
            self.finish_completion(idx, result);
        }
    }

    /// Lends slot `idx`'s buffer to the device if it is a read worth offloading.
    pub(super) fn offload_setup(&mut self, idx: u16) {
        let Some(off) = self.offload.as_mut() else {
            return;
        };
        let slot = &mut self.slots[usize::from(idx)];
        let large = slot.len as u64 >= off.io_threshold && slot.len > 0;
        let fits = off.max_sgl == 0
            || slot
                .buf
                .as_ref()
                .is_some_and(|b| b.segment_count() <= off.max_sgl as usize);
        if slot.dir != DataDir::ToHost
            || Sqe::from_array(&slot.sqe).opcode() != IoOpcode::Read as u8
            || !large
            || !fits
        {
            return;
        }
        let Some(buf) = slot.buf.take() else {
            return;
        };
        match off.sock.setup(DdpIo::new(u32::from(slot.cid), buf)) {
            Ok(()) => {
                slot.ddp = true;
                self.stats.ddp_setups += 1;
            }
            Err(SetupError { error, io }) => {
                tracing::debug!(qid = self.cfg.qid, cid = slot.cid, %error,
                    "ULP DDP setup refused; software path");
                slot.buf = Some(io.buf);
                self.stats.ddp_setup_fails += 1;
            }
        }
    }

    /// `teardown` of slot `idx`'s lent buffer; the token is the slot index.
    pub(super) fn offload_teardown(&mut self, idx: u16) -> Result<(), DdpError> {
        let cid = u32::from(self.slots[usize::from(idx)].cid);
        match self.offload.as_mut() {
            Some(off) => off.sock.teardown(cid, DdpCtx(u64::from(idx))),
            None => Err(DdpError::UnknownCommand(cid)),
        }
    }
}
