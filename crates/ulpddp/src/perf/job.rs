//! One perf job: `queues` threads, each keeping `qd` commands in flight on its own I/O queue.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use nvme_tcp_host::{Completion, IoBuf, IoQueue, cmd};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use ulp_ddp_ctl::metrics::QueueIoMetrics;

/// The access pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Rw {
    /// Sequential reads.
    Read,
    /// Sequential writes.
    Write,
    /// Random reads.
    Randread,
    /// Random writes.
    Randwrite,
    /// Random mix of reads and writes (`--rwmixread` percent reads).
    Randrw,
}

impl Rw {
    /// True for the random patterns.
    pub fn random(self) -> bool {
        matches!(self, Rw::Randread | Rw::Randwrite | Rw::Randrw)
    }
    /// Name as fio spells it.
    pub fn name(self) -> &'static str {
        match self {
            Rw::Read => "read",
            Rw::Write => "write",
            Rw::Randread => "randread",
            Rw::Randwrite => "randwrite",
            Rw::Randrw => "randrw",
        }
    }
}

/// What one job does.
#[derive(Debug, Clone)]
pub struct JobSpec {
    /// Access pattern.
    pub rw: Rw,
    /// Percentage of reads for `randrw`.
    pub rwmixread: u8,
    /// Block size in bytes (a multiple of the LBA size).
    pub bs: usize,
    /// Commands in flight per queue.
    pub qd: usize,
    /// Namespace ID.
    pub nsid: u32,
    /// LBA size of the namespace.
    pub lba_size: u32,
    /// Bytes of the namespace the job uses (from LBA 0).
    pub span: u64,
    /// Write the pattern with every write and check every byte read.
    pub verify: bool,
    /// Unmeasured warm-up before the measured phase.
    pub warmup: Duration,
    /// After [`Live::stop`], how long a queue waits for its commands in flight before it
    /// abandons them ([`QueueResult::abandoned`]).
    pub drain: Duration,
}

/// Live counters, read by the progress bar.
#[derive(Debug, Default)]
pub struct Live {
    /// Completed I/Os (measured phase and warm-up).
    pub ios: AtomicU64,
    /// Bytes moved.
    pub bytes: AtomicU64,
    /// Set when the job must stop.
    pub stop: AtomicBool,
    /// Set when the measured phase begins.
    pub measuring: AtomicBool,
}

/// What one direction (reads or writes) of a queue or a job measured.
#[derive(Debug, Clone)]
pub struct DirMeasure {
    /// I/Os completed in the measured phase.
    pub ios: u64,
    /// Bytes moved in the measured phase.
    pub bytes: u64,
    /// Latency (submission to completion) in nanoseconds.
    pub hist: Histogram<u64>,
}

impl DirMeasure {
    /// Nothing measured yet.
    pub fn new() -> Self {
        Self {
            ios: 0,
            bytes: 0,
            hist: Histogram::new_with_bounds(1, 60_000_000_000, 3)
                .expect("static histogram bounds"),
        }
    }

    /// Adds another measurement of the same direction.
    pub fn add(&mut self, o: &DirMeasure) {
        self.ios += o.ios;
        self.bytes += o.bytes;
        // Same bounds on both sides, so adding cannot fail.
        let _ = self.hist.add(&o.hist);
    }
}

impl Default for DirMeasure {
    fn default() -> Self {
        Self::new()
    }
}

/// What one queue thread measured.
#[derive(Debug)]
pub struct QueueResult {
    /// Reads of the measured phase.
    pub read: DirMeasure,
    /// Writes of the measured phase.
    pub write: DirMeasure,
    /// I/Os that completed with an error.
    pub io_errors: u64,
    /// Reads whose data did not match the pattern.
    pub verify_errors: u64,
    /// First error seen, for the report.
    pub first_error: Option<String>,
    /// Commands still in flight when the drain period after [`Live::stop`] ended: the
    /// thread returned without their completions (closing the queue fails them).
    pub abandoned: u64,
}

/// The verification pattern: every 8-byte word names its LBA and position, so any data
/// read can be checked, whatever writes ran before.
#[inline]
pub fn pattern_word(lba_byte_offset: u64, word: u64) -> u64 {
    (lba_byte_offset.wrapping_add(word * 8)).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ 0xD1B5_4A32_D192_ED03
}

/// Fills `buf` with the pattern of the bytes at `offset` of the namespace.
pub fn fill_pattern(buf: &mut [u8], offset: u64) {
    for (i, chunk) in buf.chunks_exact_mut(8).enumerate() {
        chunk.copy_from_slice(&pattern_word(offset, i as u64).to_le_bytes());
    }
}

/// True if `buf` holds the pattern of the bytes at `offset`.
pub fn check_pattern(buf: &[u8], offset: u64) -> bool {
    buf.chunks_exact(8)
        .enumerate()
        .all(|(i, c)| c == pattern_word(offset, i as u64).to_le_bytes())
}

struct Slot {
    buf: Option<IoBuf>,
    issued: Instant,
    offset: u64,
    read: bool,
}

/// Runs one queue's share of a job until `live.stop`, then waits for the commands in flight
/// for at most `spec.drain` and returns with those that did not complete counted in
/// [`QueueResult::abandoned`] (the caller closes the queue). `index`/`count` split the span
/// for sequential patterns.
pub fn run_queue(
    mut q: IoQueue,
    spec: &JobSpec,
    index: usize,
    count: usize,
    live: &Live,
    metrics: Option<Arc<QueueIoMetrics>>,
) -> (IoQueue, QueueResult) {
    let bs = spec.bs as u64;
    let blocks = spec.span / bs;
    let region = (blocks / count as u64).max(1);
    let region_start = region * index as u64;
    let mut next_seq = 0u64;
    let mut rng = SmallRng::seed_from_u64(0x1234_5678_9ABC_DEF1 ^ ((index as u64 + 1) << 32));
    let nlb = (spec.bs / spec.lba_size as usize) as u32;
    let mut slots: Vec<Slot> = (0..spec.qd)
        .map(|_| Slot {
            buf: Some(IoBuf::Contig(vec![0u8; spec.bs])),
            issued: Instant::now(),
            offset: 0,
            read: true,
        })
        .collect();
    let mut free: Vec<usize> = (0..spec.qd).rev().collect();
    let mut res = QueueResult {
        read: DirMeasure::new(),
        write: DirMeasure::new(),
        io_errors: 0,
        verify_errors: 0,
        first_error: None,
        abandoned: 0,
    };
    // Set when the job stops: the end of the drain period.
    let mut drain_until: Option<Instant> = None;
    loop {
        if drain_until.is_none() && live.stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            drain_until = Some(now.checked_add(spec.drain).unwrap_or(now));
        }
        let mut wait = Duration::from_millis(50);
        if let Some(until) = drain_until {
            if q.in_flight() == 0 {
                break;
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                res.abandoned = q.in_flight() as u64;
                break;
            }
            wait = wait.min(left);
        }
        while drain_until.is_none()
            && let Some(s) = free.pop()
        {
            let block = if spec.rw.random() {
                rng.random_range(0..blocks.max(1))
            } else {
                let b = region_start + next_seq % region;
                next_seq += 1;
                b % blocks.max(1)
            };
            let offset = block * bs;
            let read = match spec.rw {
                Rw::Read | Rw::Randread => true,
                Rw::Write | Rw::Randwrite => false,
                Rw::Randrw => rng.random_range(0..100u8) < spec.rwmixread,
            };
            let slot = &mut slots[s];
            let mut buf = slot
                .buf
                .take()
                .unwrap_or_else(|| IoBuf::Contig(vec![0u8; spec.bs]));
            if !read
                && spec.verify
                && let IoBuf::Contig(v) = &mut buf
            {
                fill_pattern(v, offset);
            }
            slot.issued = Instant::now();
            slot.offset = offset;
            slot.read = read;
            let slba = offset / spec.lba_size as u64;
            let req = if read {
                cmd::read(spec.nsid, slba, nlb, buf, s as u64)
            } else {
                cmd::write(spec.nsid, slba, nlb, buf, s as u64)
            };
            if let Err(e) = q.submit(req) {
                slots[s].buf = e.buf;
                free.push(s);
                break;
            }
        }
        if let Err(e) = q.poll(wait) {
            res.first_error
                .get_or_insert_with(|| format!("queue {}: {e}", q.qid()));
            break;
        }
        while let Some(c) = q.pop_completion() {
            complete(
                c,
                &mut slots,
                &mut free,
                &mut res,
                spec,
                live,
                metrics.as_deref(),
            );
        }
    }
    (q, res)
}

fn complete(
    c: Completion,
    slots: &mut [Slot],
    free: &mut Vec<usize>,
    res: &mut QueueResult,
    spec: &JobSpec,
    live: &Live,
    metrics: Option<&QueueIoMetrics>,
) {
    let Some(slot) = slots.get_mut(c.user_data as usize) else {
        return;
    };
    let lat = slot.issued.elapsed();
    let ok = c.result.is_ok();
    if let Err(e) = &c.result {
        res.io_errors += 1;
        res.first_error.get_or_insert_with(|| e.to_string());
    } else if slot.read
        && spec.verify
        && let Some(buf) = &c.buf
        && !(buf.segment_count() == 1 && check_pattern(buf.segment(0), slot.offset))
    {
        res.verify_errors += 1;
        res.first_error
            .get_or_insert_with(|| format!("data mismatch at byte offset {}", slot.offset));
    }
    slot.buf = c.buf;
    free.push(c.user_data as usize);
    live.ios.fetch_add(1, Ordering::Relaxed);
    live.bytes.fetch_add(spec.bs as u64, Ordering::Relaxed);
    if let Some(m) = metrics {
        m.record(slot.read, spec.bs as u64, lat, ok);
    }
    if live.measuring.load(Ordering::Relaxed) && ok {
        let d = if slot.read {
            &mut res.read
        } else {
            &mut res.write
        };
        d.ios += 1;
        d.bytes += spec.bs as u64;
        let _ = d.hist.record((lat.as_nanos() as u64).max(1));
    }
}

/// Writes the pattern over `span` bytes from offset 0 with the given queues, `qd` deep.
pub fn prefill(queues: &mut [IoQueue], nsid: u32, lba_size: u32, span: u64) -> anyhow::Result<()> {
    const CHUNK: u64 = 128 * 1024;
    let nlb = (CHUNK / lba_size as u64) as u32;
    let mut next = 0u64;
    let q = queues
        .first_mut()
        .ok_or_else(|| anyhow::anyhow!("no I/O queue"))?;
    let qd = q.depth().clamp(1, 32);
    let mut free: Vec<IoBuf> = (0..qd)
        .map(|_| IoBuf::Contig(vec![0u8; CHUNK as usize]))
        .collect();
    while next < span || q.in_flight() > 0 {
        while next < span
            && let Some(mut buf) = free.pop()
        {
            if let IoBuf::Contig(v) = &mut buf {
                fill_pattern(v, next);
            }
            if let Err(e) = q.submit(cmd::write(nsid, next / lba_size as u64, nlb, buf, next)) {
                free.extend(e.buf);
                break;
            }
            next += CHUNK;
        }
        q.poll(Duration::from_millis(100))?;
        while let Some(c) = q.pop_completion() {
            c.result
                .map_err(|e| anyhow::anyhow!("prefill write at {}: {e}", c.user_data))?;
            free.extend(c.buf);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_checks_what_it_filled_and_nothing_else() {
        let mut b = vec![0u8; 4096];
        fill_pattern(&mut b, 8192);
        assert!(check_pattern(&b, 8192));
        assert!(!check_pattern(&b, 4096));
        b[100] ^= 1;
        assert!(!check_pattern(&b, 8192));
    }
}
