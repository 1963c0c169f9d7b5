//! NVM I/O commands: Read, Write, Flush, Write Zeroes, Dataset Management, and the Fabrics
//! Disconnect of an I/O queue.

use std::sync::Arc;

use nvme_tcp_wire::digest::crc32c;
use nvme_tcp_wire::nvme::{
    DatasetManagementCommand, DsmRange, FabricsCommand, IoCommand, ReadWriteCommand, Sgl, Sqe,
    Status, WriteZeroesCommand,
};

use super::{BOUNCE_LEN, Connection, Flow, PendingWrite, WriteSink};
use crate::backend::{AlignedBuf, Backend};
use crate::namespace::Namespace;

/// NSID meaning "every namespace" (Flush).
const NSID_ALL: u32 = 0xFFFF_FFFF;

impl Connection {
    pub(super) fn on_io_command(&mut self, sqe: &Sqe, data: &[u8]) -> Flow {
        let cid = sqe.cid();
        let cmd = match IoCommand::parse(sqe) {
            Ok(c) => c,
            Err(e) => {
                self.complete(cid, e.status(), 0, 0);
                return Flow::Continue;
            }
        };
        if let Some(nsid) = cmd.nsid() {
            self.cur_nsid = nsid;
        }
        let in_capsule = data.len() as u32;
        if in_capsule > self.port.in_capsule_data_size {
            self.complete(cid, Status::DATA_SGL_LENGTH_INVALID, 0, 0);
            return Flow::Continue;
        }
        let r = match cmd {
            IoCommand::Read(c) => return self.read(sqe, c),
            IoCommand::Write(c) => self.write(sqe, c, data),
            IoCommand::Flush(c) => self.flush_ns(c.nsid),
            IoCommand::WriteZeroes(c) => self.write_zeroes(c),
            IoCommand::DatasetManagement(c) => self.dsm(sqe, c, data),
            IoCommand::Fabrics(FabricsCommand::Disconnect(_)) => {
                self.complete(cid, Status::SUCCESS, 0, 0);
                self.close("Disconnect");
                return Flow::Continue;
            }
            IoCommand::Fabrics(_) => Err(Status::COMMAND_SEQUENCE_ERROR),
        };
        match r {
            Ok(true) => self.complete(cid, Status::SUCCESS, 0, 0),
            Ok(false) => {} // completes when its data arrives
            Err(s) => self.complete(cid, s, 0, 0),
        }
        Flow::Continue
    }

    /// The controller's Volatile Write Cache Enable (true without a queue: only writes with
    /// FUA are forced out then, which is the safe reading of "unknown").
    fn write_cache_enabled(&self) -> bool {
        self.queue
            .as_ref()
            .is_none_or(|q| q.ctrl.write_cache_enabled())
    }

    fn ns(&mut self, nsid: u32) -> Result<Arc<Namespace>, Status> {
        let i = self.ns_index(nsid)?;
        Ok(Arc::clone(&self.ns_table[i]))
    }

    /// Namespace (table index), byte offset and length of a Read or Write, with the NVMe
    /// checks: namespace, LBA range, MDTS.
    fn rw_range(&mut self, c: &ReadWriteCommand) -> Result<(usize, u64, u32), Status> {
        let i = self.ns_index(c.nsid)?;
        let (off, len) = self.ns_table[i]
            .byte_range(c.slba, c.blocks() as u64)
            .ok_or(Status::LBA_OUT_OF_RANGE)?;
        if len > self.mdts as u64 {
            return Err(Status::INVALID_FIELD);
        }
        Ok((i, off, len as u32))
    }

    fn read(&mut self, sqe: &Sqe, c: ReadWriteCommand) -> Flow {
        let cid = sqe.cid();
        let (ns_idx, off, len) = match self.rw_range(&c) {
            Ok(r) => r,
            Err(s) => {
                self.complete(cid, s, 0, 0);
                return Flow::Continue;
            }
        };
        match Self::c2h_sgl_len(sqe) {
            Ok(l) if l >= len => {}
            Ok(_) => {
                self.complete(cid, Status::DATA_SGL_LENGTH_INVALID, 0, 0);
                return Flow::Continue;
            }
            Err(s) => {
                self.complete(cid, s, 0, 0);
                return Flow::Continue;
            }
        }
        let ns = Arc::clone(&self.ns_table[ns_idx]);
        let chunks = (len as usize).div_ceil(self.c2h_max);
        if matches!(ns.backend(), Backend::File(_)) && self.tx.pool.available() < chunks {
            // Wait for queued file data to be sent and its buffers to come back.
            return Flow::Stall;
        }
        let success = self.success_flag_allowed();
        let mut status = Status::SUCCESS;
        match ns.backend() {
            Backend::Ram(_) => {
                let mut datao = 0usize;
                while datao < len as usize {
                    let n = (len as usize - datao).min(self.c2h_max);
                    let last = datao + n == len as usize;
                    self.push_c2h_header(cid, datao as u32, n as u32, last, last && success);
                    self.tx
                        .push_ram_data(ns_idx, off + datao as u64, n, self.params.ddgst);
                    datao += n;
                }
            }
            Backend::Null { .. } => {
                let mut datao = 0usize;
                while datao < len as usize {
                    let n = (len as usize - datao).min(self.c2h_max);
                    let last = datao + n == len as usize;
                    self.push_c2h_header(cid, datao as u32, n as u32, last, last && success);
                    self.tx.push_zeroes(n);
                    if self.params.ddgst {
                        let crc = self.zero_crc(n);
                        self.tx.push_bytes(&crc.to_le_bytes());
                    }
                    datao += n;
                }
            }
            Backend::File(_) => {
                // Read everything first, so that a failed read sends no data at all.
                let mut bufs = Vec::with_capacity(chunks);
                let mut datao = 0usize;
                while datao < len as usize {
                    let n = (len as usize - datao).min(self.c2h_max);
                    let Some(b) = self.tx.pool.take() else {
                        status = Status::INTERNAL_ERROR;
                        break;
                    };
                    bufs.push((b, n));
                    if let Err(e) = ns
                        .backend()
                        .read_at(off + datao as u64, &mut self.tx.pool.buf_mut(b)[..n])
                    {
                        tracing::warn!(nsid = ns.nsid(), "read failed: {e}");
                        status = Status::UNRECOVERED_READ_ERROR;
                        break;
                    }
                    datao += n;
                }
                if !status.is_success() {
                    for (b, _) in bufs {
                        self.tx.pool.give_back(b);
                    }
                } else {
                    let mut datao = 0usize;
                    for (b, n) in bufs {
                        let last = datao + n == len as usize;
                        self.push_c2h_header(cid, datao as u32, n as u32, last, last && success);
                        let crc = self
                            .params
                            .ddgst
                            .then(|| crc32c(&self.tx.pool.buf_mut(b)[..n]));
                        self.tx.push_pool(b, n);
                        if let Some(crc) = crc {
                            self.tx.push_bytes(&crc.to_le_bytes());
                        }
                        datao += n;
                    }
                }
            }
        }
        if status.is_success() {
            self.stats.bytes_read += len as u64;
            self.stats.reads += 1;
            self.count_op();
            if success {
                // Completed by the last C2HData's SUCCESS flag: no CapsuleResp.
                self.obs.end(cid, Status::SUCCESS);
            } else {
                self.complete(cid, Status::SUCCESS, 0, 0);
            }
        } else {
            self.complete(cid, status, 0, 0);
        }
        Flow::Continue
    }

    fn with_bounce<T>(&mut self, f: impl FnOnce(&mut AlignedBuf) -> T) -> T {
        let mut b = self
            .bounce
            .take()
            .unwrap_or_else(|| AlignedBuf::new(BOUNCE_LEN));
        let r = f(&mut b);
        self.bounce = Some(b);
        r
    }

    /// Write: in-capsule data is written at once; otherwise an R2T asks for it. Returns
    /// `Ok(true)` when complete now.
    fn write(&mut self, sqe: &Sqe, c: ReadWriteCommand, data: &[u8]) -> Result<bool, Status> {
        let (ns_idx, off, len) = self.rw_range(&c)?;
        match sqe.dptr().parse().map_err(|e| e.status())? {
            Sgl::DataBlockOffset { offset, length } => {
                if length != len {
                    return Err(Status::DATA_SGL_LENGTH_INVALID);
                }
                let start = usize::try_from(offset).map_err(|_| Status::SGL_OFFSET_INVALID)?;
                let bytes = start
                    .checked_add(len as usize)
                    .and_then(|end| data.get(start..end))
                    .ok_or(Status::DATA_SGL_LENGTH_INVALID)?;
                let mut b = self
                    .bounce
                    .take()
                    .unwrap_or_else(|| AlignedBuf::new(BOUNCE_LEN));
                let durable = c.fua || !self.write_cache_enabled();
                let ns = &self.ns_table[ns_idx];
                let r = ns.backend().write_at(off, bytes, &mut b, durable);
                self.bounce = Some(b);
                r.map_err(|e| {
                    tracing::warn!(nsid = c.nsid, "write failed: {e}");
                    Status::WRITE_FAULT
                })?;
                self.stats.bytes_written += len as u64;
                self.stats.writes += 1;
                self.count_op();
                Ok(true)
            }
            Sgl::TransportDataBlock { length } => {
                if length != len {
                    return Err(Status::DATA_SGL_LENGTH_INVALID);
                }
                let ns = Arc::clone(&self.ns_table[ns_idx]);
                let durable = c.fua || !self.write_cache_enabled();
                self.begin_r2t(PendingWrite {
                    cccid: sqe.cid(),
                    nsid: c.nsid,
                    sink: WriteSink::Namespace {
                        ns,
                        offset: off,
                        durable,
                    },
                    len,
                    received: 0,
                    status: Status::SUCCESS,
                })?;
                Ok(false)
            }
        }
    }

    fn flush_ns(&mut self, nsid: u32) -> Result<bool, Status> {
        let flush = |ns: &Namespace| {
            ns.backend().flush().map_err(|e| {
                tracing::warn!(nsid = ns.nsid(), "flush failed: {e}");
                Status::WRITE_FAULT
            })
        };
        if nsid == NSID_ALL {
            let sub = self
                .queue
                .as_ref()
                .map(|q| Arc::clone(q.ctrl.subsystem()))
                .ok_or(Status::COMMAND_SEQUENCE_ERROR)?;
            for id in sub.active_nsids() {
                if let Some(ns) = sub.namespace(id) {
                    flush(&ns)?;
                }
            }
            return Ok(true);
        }
        let ns = self.ns(nsid)?;
        flush(&ns)?;
        Ok(true)
    }

    fn write_zeroes(&mut self, c: WriteZeroesCommand) -> Result<bool, Status> {
        let ns = self.ns(c.nsid)?;
        let (off, len) = ns
            .byte_range(c.slba, c.blocks() as u64)
            .ok_or(Status::LBA_OUT_OF_RANGE)?;
        let durable = c.fua || !self.write_cache_enabled();
        self.with_bounce(|b| ns.backend().zero(off, len, b, durable))
            .map_err(|e| {
                tracing::warn!(nsid = ns.nsid(), "write zeroes failed: {e}");
                Status::WRITE_FAULT
            })?;
        Ok(true)
    }

    fn dsm(&mut self, sqe: &Sqe, c: DatasetManagementCommand, data: &[u8]) -> Result<bool, Status> {
        self.ns(c.nsid)?;
        let len = c.data_len();
        match sqe.dptr().parse().map_err(|e| e.status())? {
            Sgl::DataBlockOffset { offset, length } => {
                if length < len {
                    return Err(Status::DATA_SGL_LENGTH_INVALID);
                }
                let start = usize::try_from(offset).map_err(|_| Status::SGL_OFFSET_INVALID)?;
                let bytes = start
                    .checked_add(len as usize)
                    .and_then(|end| data.get(start..end))
                    .ok_or(Status::DATA_SGL_LENGTH_INVALID)?;
                let s = self.dsm_ranges(&c, bytes);
                if s.is_success() { Ok(true) } else { Err(s) }
            }
            Sgl::TransportDataBlock { length } => {
                if length < len {
                    return Err(Status::DATA_SGL_LENGTH_INVALID);
                }
                self.begin_r2t(PendingWrite {
                    cccid: sqe.cid(),
                    nsid: c.nsid,
                    sink: WriteSink::Dsm {
                        cmd: c,
                        buf: Vec::with_capacity(len as usize),
                    },
                    len,
                    received: 0,
                    status: Status::SUCCESS,
                })?;
                Ok(false)
            }
        }
    }

    /// Applies the ranges of a Dataset Management command: deallocation zeroes the blocks
    /// (deallocated blocks read as zeroes, DLFEAT); the other attributes are hints.
    pub(super) fn dsm_ranges(&mut self, c: &DatasetManagementCommand, bytes: &[u8]) -> Status {
        let ns = match self.ns(c.nsid) {
            Ok(ns) => ns,
            Err(s) => return s,
        };
        let ranges = match DsmRange::slice_from(bytes, c.ranges()) {
            Ok(r) => r,
            Err(e) => return e.status(),
        };
        let mut checked = Vec::with_capacity(ranges.len());
        for r in ranges {
            match ns.byte_range(r.slba.get(), r.nlb.get() as u64) {
                Some(x) => checked.push(x),
                None => return Status::LBA_OUT_OF_RANGE,
            }
        }
        if c.ad {
            let durable = !self.write_cache_enabled();
            for (off, len) in checked {
                if let Err(e) = self.with_bounce(|b| ns.backend().zero(off, len, b, durable)) {
                    tracing::warn!(nsid = ns.nsid(), "deallocate failed: {e}");
                    return Status::WRITE_FAULT;
                }
            }
        }
        Status::SUCCESS
    }
}
