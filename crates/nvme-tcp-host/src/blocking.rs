//! Blocking convenience I/O on a [`Controller`]: whole ranges read or written across all of
//! its I/O queues in parallel (one thread per queue, several commands in flight each), split
//! at the controller's maximum transfer size.

use std::time::Duration;

use nvme_tcp_wire::nvme::IoOpcode;

use crate::buf::IoBuf;
use crate::cmd;
use crate::ctrl::{Controller, NamespaceInfo};
use crate::error::{CommandError, CommandInfo, HostError, IoError, Result};
use crate::ioq::IoQueue;

/// Largest transfer per command used by the blocking helpers (the Linux kernel target refuses
/// commands above 4 MiB even though it reports no MDTS).
const MAX_CHUNK: u64 = 1 << 20;
/// Commands in flight per queue in the blocking helpers.
const QD_PER_QUEUE: usize = 8;

enum Op<'a> {
    Read(Vec<(usize, &'a mut [u8])>),
    Write(Vec<(usize, &'a [u8])>),
}

impl Controller {
    /// Bytes per command for namespace `ns`: the controller's MDTS, at most 1 MiB and 65536
    /// blocks, a whole number of blocks.
    pub fn chunk_bytes(&self, ns: &NamespaceInfo) -> Result<usize> {
        let info = self.info()?;
        let lba = ns.lba_size as u64;
        let max = info
            .max_transfer
            .unwrap_or(MAX_CHUNK)
            .min(MAX_CHUNK)
            .min(65536 * lba);
        let chunk = (max / lba).max(1) * lba;
        Ok(chunk as usize)
    }

    /// Checks that `len` bytes at block `slba` are a non-empty whole number of blocks inside
    /// namespace `ns` (before anything is allocated or sent); returns the block count.
    pub fn check_range(ns: &NamespaceInfo, slba: u64, len: usize) -> Result<u64> {
        let lba = ns.lba_size as usize;
        if len == 0 {
            return Err(HostError::Invalid("a transfer of zero bytes".into()));
        }
        if !len.is_multiple_of(lba) {
            return Err(HostError::Invalid(format!(
                "length {len} is not a multiple of the {lba}-byte block size"
            )));
        }
        let nlb = (len / lba) as u64;
        if slba.checked_add(nlb).is_none_or(|e| e > ns.nsze) {
            return Err(HostError::Invalid(format!(
                "blocks {slba}..={} are beyond namespace {}, which has {} blocks of {lba} bytes",
                slba.saturating_add(nlb - 1),
                ns.nsid,
                ns.nsze
            )));
        }
        Ok(nlb)
    }

    /// Reads `out.len()` bytes (whole blocks) starting at block `slba`.
    pub fn read_at(&self, ns: &NamespaceInfo, slba: u64, out: &mut [u8]) -> Result<()> {
        Self::check_range(ns, slba, out.len())?;
        let chunk = self.chunk_bytes(ns)?;
        let nq = self.io_queue_count().max(1);
        let mut per_q: Vec<Vec<(usize, &mut [u8])>> = (0..nq).map(|_| Vec::new()).collect();
        for (i, c) in out.chunks_mut(chunk).enumerate() {
            per_q[i % nq].push((i, c));
        }
        self.run_parallel(ns, slba, chunk, per_q.into_iter().map(Op::Read).collect())
    }

    /// Writes `data` (whole blocks) starting at block `slba`.
    pub fn write_at(&self, ns: &NamespaceInfo, slba: u64, data: &[u8]) -> Result<()> {
        Self::check_range(ns, slba, data.len())?;
        let chunk = self.chunk_bytes(ns)?;
        let nq = self.io_queue_count().max(1);
        let mut per_q: Vec<Vec<(usize, &[u8])>> = (0..nq).map(|_| Vec::new()).collect();
        for (i, c) in data.chunks(chunk).enumerate() {
            per_q[i % nq].push((i, c));
        }
        self.run_parallel(ns, slba, chunk, per_q.into_iter().map(Op::Write).collect())
    }

    fn run_parallel(
        &self,
        ns: &NamespaceInfo,
        slba: u64,
        chunk: usize,
        ops: Vec<Op<'_>>,
    ) -> Result<()> {
        if self.io_queue_count() == 0 {
            return Err(HostError::Invalid(
                "no I/O queue (taken, or none granted)".into(),
            ));
        }
        std::thread::scope(|s| {
            let handles: Vec<_> = ops
                .into_iter()
                .enumerate()
                .map(|(qi, op)| {
                    s.spawn(move || -> Result<()> {
                        let mut q = self
                            .io_queue(qi)
                            .ok_or_else(|| HostError::Invalid("I/O queue missing".into()))?;
                        run_on_queue(&mut q, ns, slba, chunk, op)
                    })
                })
                .collect();
            let mut first = Ok(());
            for h in handles {
                let r = h
                    .join()
                    .unwrap_or_else(|_| Err(HostError::Invalid("I/O thread panicked".into())));
                if first.is_ok() {
                    first = r;
                }
            }
            first
        })
    }

    /// Flushes namespace `nsid` (on the first I/O queue).
    pub fn flush(&self, nsid: u32) -> Result<()> {
        self.simple_io(cmd::flush(nsid, 0))
    }

    /// Write Zeroes over `nlb` blocks at `slba`.
    pub fn write_zeroes(&self, nsid: u32, slba: u64, nlb: u32) -> Result<()> {
        if !(1..=65536).contains(&nlb) {
            return Err(HostError::Invalid(format!(
                "block count {nlb} outside 1..=65536"
            )));
        }
        self.simple_io(cmd::write_zeroes(nsid, slba, nlb, 0))
    }

    /// Dataset Management / Deallocate over `(slba, nlb)` ranges.
    pub fn deallocate(&self, nsid: u32, ranges: &[(u64, u32)]) -> Result<()> {
        self.simple_io(cmd::deallocate(nsid, ranges, 0)?)
    }

    fn simple_io(&self, req: crate::queue::Request) -> Result<()> {
        let mut q = self
            .io_queue(0)
            .ok_or_else(|| HostError::Invalid("no I/O queue (taken, or none granted)".into()))?;
        let sqe = req.sqe;
        let c = q.execute(req)?;
        c.result.map(|_| ()).map_err(|error| {
            HostError::CommandFailed(CommandError {
                cmd: CommandInfo::from_sqe(q.qid(), c.cid, &sqe),
                error,
            })
        })
    }
}

/// The failure of a Read or Write of `nlb` blocks at `slba`, naming the command.
fn failed(
    q: &IoQueue,
    cid: u16,
    opcode: IoOpcode,
    ns: &NamespaceInfo,
    slba: u64,
    nlb: usize,
    error: IoError,
) -> HostError {
    HostError::CommandFailed(CommandError {
        cmd: CommandInfo {
            qid: q.qid(),
            cid,
            opcode: opcode as u8,
            nsid: ns.nsid,
            lba: Some((slba, nlb as u32)),
        },
        error,
    })
}

fn run_on_queue(
    q: &mut IoQueue,
    ns: &NamespaceInfo,
    slba: u64,
    chunk: usize,
    op: Op<'_>,
) -> Result<()> {
    let lba = ns.lba_size as usize;
    let blocks_per_chunk = (chunk / lba) as u64;
    let qd = QD_PER_QUEUE.min(q.depth()).max(1);
    let mut spare: Vec<Vec<u8>> = Vec::new();
    // The failure of the command of one chunk (its index and byte length), naming its range.
    let chunk_failed = |q: &IoQueue, cid, opcode, chunk: Option<(usize, usize)>, error| {
        let (idx, len) = chunk.unwrap_or((0, 0));
        let first = slba + idx as u64 * blocks_per_chunk;
        failed(q, cid, opcode, ns, first, len / lba, error)
    };
    match op {
        Op::Read(mut items) => {
            let n = items.len();
            let mut next = 0;
            let mut done = 0;
            while done < n {
                while next < n && q.in_flight() < qd {
                    let (idx, ref dst) = items[next];
                    let mut b = spare.pop().unwrap_or_default();
                    b.resize(dst.len(), 0);
                    let nlb = (dst.len() / lba) as u32;
                    let lba0 = slba + idx as u64 * blocks_per_chunk;
                    q.submit_read(ns.nsid, lba0, nlb, IoBuf::Contig(b), next as u64)
                        .map_err(|e| HostError::Invalid(format!("submit: {}", e.reason)))?;
                    next += 1;
                }
                q.poll(Duration::from_millis(100))?;
                while let Some(c) = q.pop_completion() {
                    let i = c.user_data as usize;
                    if let Err(error) = c.result {
                        let chunk = items.get(i).map(|(idx, d)| (*idx, d.len()));
                        return Err(chunk_failed(q, c.cid, IoOpcode::Read, chunk, error));
                    }
                    let Some(buf) = c.buf.and_then(IoBuf::into_vec) else {
                        return Err(HostError::Command(IoError::Invalid("buffer lost".into())));
                    };
                    if let Some((_, dst)) = items.get_mut(i) {
                        dst.copy_from_slice(&buf[..dst.len()]);
                    }
                    spare.push(buf);
                    done += 1;
                }
            }
        }
        Op::Write(items) => {
            let n = items.len();
            let mut next = 0;
            let mut done = 0;
            while done < n {
                while next < n && q.in_flight() < qd {
                    let (idx, src) = items[next];
                    let mut b = spare.pop().unwrap_or_default();
                    b.clear();
                    b.extend_from_slice(src);
                    let nlb = (src.len() / lba) as u32;
                    let lba0 = slba + idx as u64 * blocks_per_chunk;
                    q.submit_write(ns.nsid, lba0, nlb, IoBuf::Contig(b), next as u64)
                        .map_err(|e| HostError::Invalid(format!("submit: {}", e.reason)))?;
                    next += 1;
                }
                q.poll(Duration::from_millis(100))?;
                while let Some(c) = q.pop_completion() {
                    if let Err(error) = c.result {
                        let i = c.user_data as usize;
                        let chunk = items.get(i).map(|(idx, d)| (*idx, d.len()));
                        return Err(chunk_failed(q, c.cid, IoOpcode::Write, chunk, error));
                    }
                    if let Some(b) = c.buf.and_then(IoBuf::into_vec) {
                        spare.push(b);
                    }
                    done += 1;
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_range_is_checked_against_the_namespace_and_never_empty() {
        let ns = NamespaceInfo {
            nsid: 1,
            nsze: 100,
            ncap: 100,
            nuse: 100,
            lba_size: 512,
        };
        assert_eq!(Controller::check_range(&ns, 0, 512).unwrap(), 1);
        assert_eq!(Controller::check_range(&ns, 99, 512).unwrap(), 1);
        let e = Controller::check_range(&ns, 0, 0).unwrap_err();
        assert_eq!(e.to_string(), "invalid argument: a transfer of zero bytes");
        assert!(
            Controller::check_range(&ns, 0, 100).is_err(),
            "not whole blocks"
        );
        let e = Controller::check_range(&ns, 99, 1024).unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid argument: blocks 99..=100 are beyond namespace 1, which has 100 blocks of \
             512 bytes"
        );
        assert!(
            Controller::check_range(&ns, u64::MAX, 512).is_err(),
            "no overflow"
        );
    }
}
