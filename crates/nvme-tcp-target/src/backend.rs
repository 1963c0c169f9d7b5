//! Namespace backends: where a namespace's blocks live.
//!
//! * [`RamStore`]: memory, split in [`RAM_STRIPE`]-byte stripes, each behind its own
//!   reader-writer lock so that reads can be sent straight from namespace memory (the C2HData
//!   payload is never staged) while writes to other stripes proceed.
//! * [`FileStore`]: a regular file or a block device, optionally opened with `O_DIRECT`.
//! * Null: reads return zeroes, writes are discarded (for benchmarks).
//!
//! Every offset and length handed to a backend has already been checked against the
//! namespace size by the caller; the backends check again and return
//! [`BackendError::OutOfRange`] rather than panic.

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{RwLock, RwLockReadGuard};

/// Size of one RAM stripe (one lock). A power of two.
pub const RAM_STRIPE: usize = 1 << 20;

/// Granule of the data digests a [`RamStore`] caches (divides [`RAM_STRIPE`]).
pub const DIGEST_BLOCK: usize = 4096;
/// Marks a cached block digest as valid (the CRC32C is in the low 32 bits).
const DIGEST_VALID: u64 = 1 << 32;

/// Alignment of buffers used with `O_DIRECT` files.
pub const DIRECT_ALIGN: usize = 4096;

/// Errors of a backend operation.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The range lies (partly) outside the namespace.
    #[error("range {offset}+{len} outside the namespace of {size} bytes")]
    OutOfRange {
        /// Byte offset asked for.
        offset: u64,
        /// Length asked for.
        len: u64,
        /// Namespace size in bytes.
        size: u64,
    },
    /// The operating system reported an error.
    #[error("I/O error on {path}: {error}")]
    Io {
        /// The backing file.
        path: PathBuf,
        /// The error.
        error: std::io::Error,
    },
    /// A lock was poisoned by a panicking thread.
    #[error("namespace memory lock poisoned")]
    Poisoned,
    /// The kernel refused to map the namespace's memory.
    #[error("cannot map {size} bytes of namespace memory (address space exhausted?)")]
    NoAddressSpace {
        /// Bytes asked for.
        size: u64,
    },
}

/// Bytes of memory this process can still commit: what the kernel would let it use
/// (`CommitLimit - Committed_AS` under strict overcommit, else `MemAvailable + SwapFree`),
/// capped by the memory limit of its cgroup. `None` if it cannot be told (no `/proc`).
pub fn committable_memory() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let field = |name: &str| {
        meminfo.lines().find_map(|l| {
            let rest = l.strip_prefix(name)?.strip_prefix(':')?;
            let kb: u64 = rest.trim().trim_end_matches("kB").trim().parse().ok()?;
            Some(kb * 1024)
        })
    };
    let strict =
        std::fs::read_to_string("/proc/sys/vm/overcommit_memory").is_ok_and(|m| m.trim() == "2");
    let mut avail = if strict {
        field("CommitLimit")?.saturating_sub(field("Committed_AS")?)
    } else {
        field("MemAvailable")?.saturating_add(field("SwapFree").unwrap_or(0))
    };
    if let Some(room) = cgroup_memory_room() {
        avail = avail.min(room);
    }
    Some(avail)
}

/// `memory.max - memory.current` of this process's cgroup (v2), if limited.
fn cgroup_memory_room() -> Option<u64> {
    let cg = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let path = cg.lines().find_map(|l| l.strip_prefix("0::"))?;
    let dir = Path::new("/sys/fs/cgroup").join(path.trim_start_matches('/'));
    let max: u64 = std::fs::read_to_string(dir.join("memory.max"))
        .ok()?
        .trim()
        .parse()
        .ok()?; // "max" (no limit) does not parse
    let cur: u64 = std::fs::read_to_string(dir.join("memory.current"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(max.saturating_sub(cur))
}

/// A namespace held in memory.
///
/// It also caches the CRC32C of every [`DIGEST_BLOCK`] once a data digest needed it, so that
/// sending data that was read before costs no pass over the namespace memory besides the
/// kernel's copy (digesting memory that is not in the CPU cache cost the target about as much
/// as the copy itself). A block's entry is cleared under the stripe's write lock whenever the
/// block changes and filled only under its read lock, so a valid entry always matches the
/// bytes a reader holding that lock sees.
///
/// The memory is one anonymous mapping aligned to 2 MiB with transparent huge pages asked
/// for (`MADV_HUGEPAGE`): with 4 KiB pages, copying random 4 KiB blocks out of a large
/// namespace spent most of its time on TLB misses (page walks are costly in a VM).
pub struct RamStore {
    // Declared before `mapping`, so the stripes are dropped before the memory is unmapped.
    /// Per [`CHUNK_STRIPES`] stripes: their locks and digest cache, made on first use, so
    /// that the metadata of a huge thin namespace grows with the part hosts touch.
    chunks: Box<[OnceLock<Box<Chunk>>]>,
    size: u64,
    mapping: Mapping,
}

/// Stripes per lazily made metadata chunk (1 GiB of namespace).
pub const CHUNK_STRIPES: usize = 1024;
/// Cached digests per stripe.
const DIGESTS_PER_STRIPE: usize = RAM_STRIPE / DIGEST_BLOCK;

/// The metadata of [`CHUNK_STRIPES`] stripes.
struct Chunk {
    stripes: Box<[RwLock<Stripe>]>,
    /// Per [`DIGEST_BLOCK`]: `DIGEST_VALID | crc32c`, or 0 when unknown.
    digests: Box<[AtomicU64]>,
}

/// Alignment (and size granule) of the namespace mapping: one x86-64 huge page.
const HUGE_PAGE: usize = 2 << 20;

/// An anonymous private mapping, unmapped on drop.
struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain memory; access to it goes through the stripes' locks.
unsafe impl Send for Mapping {}
// SAFETY: as above; `Mapping` itself gives no access to the bytes.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps `len` zeroed bytes aligned to [`HUGE_PAGE`] and asks for huge pages. `None` if
    /// the kernel refuses the mapping.
    fn new(len: usize) -> Option<Self> {
        let len = len.checked_next_multiple_of(HUGE_PAGE)?;
        let over = len.checked_add(HUGE_PAGE)?;
        // SAFETY: a fresh anonymous mapping; no existing memory is affected.
        let raw = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                over,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if raw == libc::MAP_FAILED {
            return None;
        }
        let addr = raw as usize;
        let aligned = addr.next_multiple_of(HUGE_PAGE);
        let head = aligned - addr;
        let tail = over - head - len;
        // SAFETY: both ranges lie inside the mapping just made and outside the part kept.
        unsafe {
            if head > 0 {
                libc::munmap(raw, head);
            }
            if tail > 0 {
                libc::munmap((aligned + len) as *mut libc::c_void, tail);
            }
            // Best effort: without THP the memory still works, with 4 KiB pages.
            libc::madvise(aligned as *mut libc::c_void, len, libc::MADV_HUGEPAGE);
        }
        Some(Self {
            ptr: NonNull::new(aligned as *mut u8)?,
            len,
        })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr..ptr+len` is the mapping made in `new`; nothing refers to it any more
        // (the stripes are dropped first).
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

/// The bytes of one RAM stripe: a piece of the store's mapping.
pub struct Stripe {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: a stripe is a range of the store's mapping that no other stripe overlaps; it is
// only reached through the stripe's `RwLock`, which enforces shared/exclusive access.
unsafe impl Send for Stripe {}
// SAFETY: as above.
unsafe impl Sync for Stripe {}

impl std::ops::Deref for Stripe {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: `ptr..ptr+len` is mapped, readable and initialized (anonymous memory reads
        // as zeroes) for the store's lifetime, which outlives the stripe.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl std::ops::DerefMut for Stripe {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `deref`; `&mut self` is exclusive and no other stripe overlaps.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl std::fmt::Debug for RamStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RamStore")
            .field("size", &self.size)
            .finish()
    }
}

/// One piece of a byte range that lies within a single RAM stripe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StripeSpan {
    /// Index of the stripe.
    pub stripe: usize,
    /// Offset within the stripe.
    pub start: usize,
    /// Length within the stripe.
    pub len: usize,
}

impl RamStore {
    /// Maps `size` zeroed bytes. Pages are committed on first write and the per-stripe
    /// metadata is made per [`CHUNK_STRIPES`] stripes on first use, so even a huge (thin)
    /// store starts at once; whether the memory is there is the caller's question (see
    /// [`committable_memory`]).
    pub fn new(size: u64) -> Result<Self, BackendError> {
        let mapping = usize::try_from(size)
            .ok()
            .and_then(|n| Mapping::new(n.max(1)))
            .ok_or(BackendError::NoAddressSpace { size })?;
        let stripes = size.div_ceil(RAM_STRIPE as u64) as usize;
        let chunks = (0..stripes.div_ceil(CHUNK_STRIPES))
            .map(|_| OnceLock::new())
            .collect();
        Ok(Self {
            chunks,
            size,
            mapping,
        })
    }

    /// The metadata chunk of `stripe` (made now if new) and the stripe's index in it.
    fn chunk(&self, stripe: usize) -> Option<(&Chunk, usize)> {
        let c = stripe / CHUNK_STRIPES;
        let chunk = self.chunks.get(c)?.get_or_init(|| {
            let first = (c * CHUNK_STRIPES) as u64 * RAM_STRIPE as u64;
            let mut stripes = Vec::with_capacity(CHUNK_STRIPES);
            let mut pos = first;
            while pos < self.size && stripes.len() < CHUNK_STRIPES {
                let len = (self.size - pos).min(RAM_STRIPE as u64) as usize;
                stripes.push(RwLock::new(Stripe {
                    // `pos + len <= size <= mapping.len`: inside the mapping.
                    ptr: self
                        .mapping
                        .ptr
                        .map_addr(|a| a.saturating_add(pos as usize)),
                    len,
                }));
                pos += len as u64;
            }
            let digests = (0..stripes.len() * DIGESTS_PER_STRIPE)
                .map(|_| AtomicU64::new(0))
                .collect();
            Box::new(Chunk {
                stripes: stripes.into_boxed_slice(),
                digests,
            })
        });
        let i = stripe % CHUNK_STRIPES;
        (i < chunk.stripes.len()).then_some((chunk, i))
    }

    fn stripe_lock(&self, stripe: usize) -> Result<&RwLock<Stripe>, BackendError> {
        self.chunk(stripe)
            .map(|(c, i)| &c.stripes[i])
            .ok_or(BackendError::OutOfRange {
                offset: stripe as u64 * RAM_STRIPE as u64,
                len: 0,
                size: self.size,
            })
    }

    /// The cached digests of the blocks of `span`.
    fn digest_slots(&self, span: &StripeSpan) -> Option<&[AtomicU64]> {
        let (chunk, i) = self.chunk(span.stripe)?;
        let first = i * DIGESTS_PER_STRIPE + span.start / DIGEST_BLOCK;
        let n = (span.start % DIGEST_BLOCK + span.len).div_ceil(DIGEST_BLOCK);
        chunk.digests.get(first..first + n)
    }

    /// Forgets the cached digests of the blocks that `span` touches. The caller holds the
    /// stripe's write lock.
    fn forget_digests(&self, span: &StripeSpan) {
        if span.len == 0 {
            return;
        }
        for d in self.digest_slots(span).into_iter().flatten() {
            d.store(0, Ordering::Relaxed);
        }
    }

    /// Extends the running CRC32C `acc` (of the bytes before `span`) over `span`, whose
    /// stripe bytes `stripe` the caller reads under the stripe's read lock. Uses and fills the
    /// block digest cache. Returns `None` (nothing consumed) unless `span` covers whole
    /// [`DIGEST_BLOCK`]s; the caller then digests the bytes itself.
    pub fn digest_span(&self, stripe: &[u8], span: &StripeSpan, mut acc: u32) -> Option<u32> {
        if !span.start.is_multiple_of(DIGEST_BLOCK) || !span.len.is_multiple_of(DIGEST_BLOCK) {
            return None;
        }
        let bytes = stripe.get(span.start..span.start + span.len)?;
        let cache = self.digest_slots(span)?;
        for (block, entry) in bytes.chunks_exact(DIGEST_BLOCK).zip(cache) {
            let e = entry.load(Ordering::Relaxed);
            let crc = if e & DIGEST_VALID != 0 {
                e as u32
            } else {
                let c = nvme_tcp_wire::digest::crc32c(block);
                entry.store(DIGEST_VALID | c as u64, Ordering::Relaxed);
                c
            };
            acc = crc32c_append_block(acc, crc);
        }
        Some(acc)
    }

    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    fn check(&self, offset: u64, len: u64) -> Result<(), BackendError> {
        match offset.checked_add(len) {
            Some(end) if end <= self.size => Ok(()),
            _ => Err(BackendError::OutOfRange {
                offset,
                len,
                size: self.size,
            }),
        }
    }

    /// The stripe pieces of `offset..offset+len`, in ascending order. The caller has checked
    /// the range (see [`RamStore::check_range`]).
    pub fn spans(&self, offset: u64, len: usize) -> impl Iterator<Item = StripeSpan> + use<> {
        let mut pos = offset;
        let end = offset + len as u64;
        std::iter::from_fn(move || {
            if pos >= end {
                return None;
            }
            let stripe = (pos / RAM_STRIPE as u64) as usize;
            let start = (pos % RAM_STRIPE as u64) as usize;
            let n = ((RAM_STRIPE - start) as u64).min(end - pos) as usize;
            pos += n as u64;
            Some(StripeSpan {
                stripe,
                start,
                len: n,
            })
        })
    }

    /// Checks that a range lies within the store.
    pub fn check_range(&self, offset: u64, len: u64) -> Result<(), BackendError> {
        self.check(offset, len)
    }

    /// Takes the read lock of one stripe, blocking.
    pub fn read_stripe(&self, stripe: usize) -> Result<RwLockReadGuard<'_, Stripe>, BackendError> {
        self.stripe_lock(stripe)?
            .read()
            .map_err(|_| BackendError::Poisoned)
    }

    /// Takes the read lock of one stripe if that is possible without waiting.
    pub fn try_read_stripe(&self, stripe: usize) -> Option<RwLockReadGuard<'_, Stripe>> {
        self.stripe_lock(stripe).ok()?.try_read().ok()
    }

    /// Copies `buf.len()` bytes at `offset` into `buf`.
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), BackendError> {
        self.check(offset, buf.len() as u64)?;
        let mut done = 0;
        for s in self.spans(offset, buf.len()) {
            let g = self.read_stripe(s.stripe)?;
            buf[done..done + s.len].copy_from_slice(&g[s.start..s.start + s.len]);
            done += s.len;
        }
        Ok(())
    }

    /// Copies `data` to `offset`. Holds one stripe lock at a time, so it never waits while
    /// holding a lock (which keeps readers that take several stripes deadlock-free).
    pub fn write_at(&self, offset: u64, data: &[u8]) -> Result<(), BackendError> {
        self.check(offset, data.len() as u64)?;
        let mut done = 0;
        for s in self.spans(offset, data.len()) {
            let mut g = self
                .stripe_lock(s.stripe)?
                .write()
                .map_err(|_| BackendError::Poisoned)?;
            g[s.start..s.start + s.len].copy_from_slice(&data[done..done + s.len]);
            self.forget_digests(&s);
            done += s.len;
        }
        Ok(())
    }

    /// Zeroes `len` bytes at `offset`.
    pub fn zero(&self, offset: u64, len: u64) -> Result<(), BackendError> {
        self.check(offset, len)?;
        for s in self.spans(offset, len as usize) {
            let mut g = self
                .stripe_lock(s.stripe)?
                .write()
                .map_err(|_| BackendError::Poisoned)?;
            g[s.start..s.start + s.len].fill(0);
            self.forget_digests(&s);
        }
        Ok(())
    }
}

/// CRC32C (reflected polynomial) as the raw register shifts one bit.
const CRC32C_POLY_REFLECTED: u32 = 0x82F6_3B78;

/// Tables of the linear map "feed [`DIGEST_BLOCK`] zero bytes to the raw CRC32C register",
/// one per input byte lane.
fn block_shift_tables() -> &'static [[u32; 256]; 4] {
    static TABLES: OnceLock<[[u32; 256]; 4]> = OnceLock::new();
    TABLES.get_or_init(|| {
        let shift = |mut v: u32| {
            for _ in 0..DIGEST_BLOCK * 8 {
                v = (v >> 1) ^ if v & 1 != 0 { CRC32C_POLY_REFLECTED } else { 0 };
            }
            v
        };
        let basis: [u32; 32] = std::array::from_fn(|bit| shift(1 << bit));
        let mut t = [[0u32; 256]; 4];
        for (lane, table) in t.iter_mut().enumerate() {
            for (byte, slot) in table.iter_mut().enumerate() {
                *slot = (0..8)
                    .filter(|b| byte & (1 << b) != 0)
                    .fold(0, |x, b| x ^ basis[lane * 8 + b]);
            }
        }
        t
    })
}

/// The CRC32C of `a ++ b` from `crc_a = crc32c(a)` and `crc_b = crc32c(b)` where `b` is
/// [`DIGEST_BLOCK`] bytes long. (With the NVMe/TCP seed and final XOR both all-ones,
/// `crc(a ++ b) = Z(crc(a)) ^ crc(b)`, `Z` feeding `b.len()` zero bytes to the raw register.)
pub fn crc32c_append_block(crc_a: u32, crc_b: u32) -> u32 {
    let t = block_shift_tables();
    let z = t[0][(crc_a & 0xFF) as usize]
        ^ t[1][((crc_a >> 8) & 0xFF) as usize]
        ^ t[2][((crc_a >> 16) & 0xFF) as usize]
        ^ t[3][(crc_a >> 24) as usize];
    z ^ crc_b
}

/// A namespace backed by a regular file or a block device.
#[derive(Debug)]
pub struct FileStore {
    file: File,
    path: PathBuf,
    size: u64,
    direct: bool,
    data_syncs: AtomicU64,
    dsync_writes: AtomicU64,
}

/// What a backend did to make data durable, counted since it was opened (the tests observe
/// FUA, the volatile write cache setting and Flush through these).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DurabilityStats {
    /// `fdatasync` calls (Flush, shutdown, and the fallback of a durable write).
    pub data_syncs: u64,
    /// Writes issued with `RWF_DSYNC` (on stable storage when the call returns).
    pub dsync_writes: u64,
}

/// Writes all of `buf` at `offset` with `RWF_DSYNC` (`pwritev2`): the data is on stable
/// storage when this returns, as with an `O_DSYNC` file. `Ok(false)` if the kernel or file
/// system does not support the flag (part of `buf` may have been written then).
fn write_all_dsync(file: &File, mut buf: &[u8], mut offset: u64) -> std::io::Result<bool> {
    while !buf.is_empty() {
        let iov = libc::iovec {
            iov_base: buf.as_ptr() as *mut libc::c_void,
            iov_len: buf.len(),
        };
        let off = libc::off_t::try_from(offset)
            .map_err(|_| std::io::Error::from_raw_os_error(libc::EOVERFLOW))?;
        // SAFETY: `iov` describes `buf`, which stays borrowed for the call; the descriptor
        // is owned by `file`.
        let n = unsafe { libc::pwritev2(file.as_raw_fd(), &iov, 1, off, libc::RWF_DSYNC) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                // Unsupported here: the caller writes the whole piece again and syncs it.
                Some(libc::EOPNOTSUPP | libc::ENOSYS | libc::EINVAL) => return Ok(false),
                _ => return Err(e),
            }
        }
        if n == 0 {
            return Err(std::io::Error::from(std::io::ErrorKind::WriteZero));
        }
        buf = &buf[n as usize..];
        offset += n as u64;
    }
    Ok(true)
}

impl FileStore {
    /// Opens `path` read-write; with `direct`, bypasses the page cache (`O_DIRECT`), in which
    /// case every buffer handed to the store must be [`DIRECT_ALIGN`]-aligned (the store
    /// bounces unaligned data itself).
    pub fn open(path: &Path, direct: bool) -> Result<Self, BackendError> {
        let io = |source| BackendError::Io {
            path: path.to_path_buf(),
            error: source,
        };
        let mut opts = OpenOptions::new();
        opts.read(true).write(true);
        if direct {
            opts.custom_flags(libc::O_DIRECT);
        }
        let mut file = opts.open(path).map_err(io)?;
        // Block devices report a zero length in their metadata; seeking to the end works for
        // both files and devices.
        let size = file.seek(SeekFrom::End(0)).map_err(io)?;
        Ok(Self {
            file,
            path: path.to_path_buf(),
            size,
            direct,
            data_syncs: AtomicU64::new(0),
            dsync_writes: AtomicU64::new(0),
        })
    }

    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// True if opened with `O_DIRECT`.
    pub fn is_direct(&self) -> bool {
        self.direct
    }

    fn io(&self, source: std::io::Error) -> BackendError {
        BackendError::Io {
            path: self.path.clone(),
            error: source,
        }
    }

    fn check(&self, offset: u64, len: u64) -> Result<(), BackendError> {
        match offset.checked_add(len) {
            Some(end) if end <= self.size => Ok(()),
            _ => Err(BackendError::OutOfRange {
                offset,
                len,
                size: self.size,
            }),
        }
    }

    /// Reads exactly `buf.len()` bytes at `offset`. With `O_DIRECT`, `buf` must be aligned.
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), BackendError> {
        self.check(offset, buf.len() as u64)?;
        self.file.read_exact_at(buf, offset).map_err(|e| self.io(e))
    }

    /// Writes one piece at `offset`; with `durable`, on stable storage before returning
    /// (`RWF_DSYNC`, or a write and `fdatasync` where the flag is not supported).
    fn write_piece(&self, piece: &[u8], offset: u64, durable: bool) -> Result<(), BackendError> {
        if durable {
            if write_all_dsync(&self.file, piece, offset).map_err(|e| self.io(e))? {
                self.dsync_writes.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
            self.file
                .write_all_at(piece, offset)
                .map_err(|e| self.io(e))?;
            return self.flush();
        }
        self.file
            .write_all_at(piece, offset)
            .map_err(|e| self.io(e))
    }

    /// Writes `data` at `offset`, bouncing through `bounce` when the store is `O_DIRECT` and
    /// `data` is not aligned. With `durable` (FUA, or the volatile write cache disabled) the
    /// data is on stable storage when this returns.
    pub fn write_at(
        &self,
        offset: u64,
        data: &[u8],
        bounce: &mut AlignedBuf,
        durable: bool,
    ) -> Result<(), BackendError> {
        self.check(offset, data.len() as u64)?;
        if !self.direct || (data.as_ptr() as usize).is_multiple_of(DIRECT_ALIGN) {
            return self.write_piece(data, offset, durable);
        }
        let mut done = 0;
        while done < data.len() {
            let chunk = bounce.as_mut_slice();
            let n = chunk.len().min(data.len() - done);
            chunk[..n].copy_from_slice(&data[done..done + n]);
            self.write_piece(&chunk[..n], offset + done as u64, durable)?;
            done += n;
        }
        Ok(())
    }

    /// Writes `len` zero bytes at `offset` (durable before returning with `durable`).
    pub fn zero(
        &self,
        offset: u64,
        len: u64,
        bounce: &mut AlignedBuf,
        durable: bool,
    ) -> Result<(), BackendError> {
        self.check(offset, len)?;
        let chunk = bounce.as_mut_slice();
        chunk.fill(0);
        let mut done = 0u64;
        while done < len {
            let n = (chunk.len() as u64).min(len - done) as usize;
            self.file
                .write_all_at(&chunk[..n], offset + done)
                .map_err(|e| self.io(e))?;
            done += n as u64;
        }
        if durable && len > 0 {
            self.flush()?;
        }
        Ok(())
    }

    /// What this store did to make data durable so far.
    pub fn durability_stats(&self) -> DurabilityStats {
        DurabilityStats {
            data_syncs: self.data_syncs.load(Ordering::Relaxed),
            dsync_writes: self.dsync_writes.load(Ordering::Relaxed),
        }
    }

    /// Makes written data durable (`fdatasync`).
    pub fn flush(&self) -> Result<(), BackendError> {
        self.data_syncs.fetch_add(1, Ordering::Relaxed);
        self.file.sync_data().map_err(|e| self.io(e))
    }
}

/// A heap buffer whose usable part starts at a [`DIRECT_ALIGN`] boundary.
#[derive(Debug)]
pub struct AlignedBuf {
    raw: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedBuf {
    /// A zeroed buffer of `len` usable bytes.
    pub fn new(len: usize) -> Self {
        let raw = vec![0u8; len + DIRECT_ALIGN];
        let misalign = raw.as_ptr() as usize % DIRECT_ALIGN;
        let start = if misalign == 0 {
            0
        } else {
            DIRECT_ALIGN - misalign
        };
        Self { raw, start, len }
    }

    /// The usable bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.raw[self.start..self.start + self.len]
    }

    /// The usable bytes, mutable.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.raw[self.start..self.start + self.len]
    }

    /// Number of usable bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True if the buffer has no usable bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// The storage of one namespace.
#[derive(Debug)]
pub enum Backend {
    /// In memory.
    Ram(RamStore),
    /// A file or block device.
    File(FileStore),
    /// Reads return zeroes, writes are discarded.
    Null {
        /// Advertised size in bytes.
        size: u64,
    },
}

impl Backend {
    /// Size in bytes.
    pub fn size(&self) -> u64 {
        match self {
            Backend::Ram(r) => r.size(),
            Backend::File(f) => f.size(),
            Backend::Null { size } => *size,
        }
    }

    /// Copies data at `offset` into `buf` (a copy; the read fast path sends RAM data in
    /// place instead).
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), BackendError> {
        match self {
            Backend::Ram(r) => r.read_at(offset, buf),
            Backend::File(f) => f.read_at(offset, buf),
            Backend::Null { size } => {
                check_null(*size, offset, buf.len() as u64)?;
                buf.fill(0);
                Ok(())
            }
        }
    }

    /// Writes `data` at `offset`. With `durable` (a write with FUA, or any write while the
    /// volatile write cache is disabled) the data is on stable storage when this returns;
    /// memory and `null` namespaces have no stable storage to reach.
    pub fn write_at(
        &self,
        offset: u64,
        data: &[u8],
        bounce: &mut AlignedBuf,
        durable: bool,
    ) -> Result<(), BackendError> {
        match self {
            Backend::Ram(r) => r.write_at(offset, data),
            Backend::File(f) => f.write_at(offset, data, bounce, durable),
            Backend::Null { size } => check_null(*size, offset, data.len() as u64),
        }
    }

    /// Zeroes (Write Zeroes) or deallocates (Dataset Management) a range; deallocated
    /// blocks read back as zeroes on every backend. `durable` as for [`Backend::write_at`].
    pub fn zero(
        &self,
        offset: u64,
        len: u64,
        bounce: &mut AlignedBuf,
        durable: bool,
    ) -> Result<(), BackendError> {
        match self {
            Backend::Ram(r) => r.zero(offset, len),
            Backend::File(f) => f.zero(offset, len, bounce, durable),
            Backend::Null { size } => check_null(*size, offset, len),
        }
    }

    /// Makes written data durable.
    pub fn flush(&self) -> Result<(), BackendError> {
        match self {
            Backend::File(f) => f.flush(),
            Backend::Ram(_) | Backend::Null { .. } => Ok(()),
        }
    }

    /// What a file backend did to make data durable (`None` for memory and `null`).
    pub fn durability_stats(&self) -> Option<DurabilityStats> {
        match self {
            Backend::File(f) => Some(f.durability_stats()),
            Backend::Ram(_) | Backend::Null { .. } => None,
        }
    }

    /// True if buffers given to this backend must be [`DIRECT_ALIGN`]-aligned.
    pub fn needs_aligned_buffers(&self) -> bool {
        matches!(self, Backend::File(f) if f.is_direct())
    }
}

fn check_null(size: u64, offset: u64, len: u64) -> Result<(), BackendError> {
    match offset.checked_add(len) {
        Some(end) if end <= size => Ok(()),
        _ => Err(BackendError::OutOfRange { offset, len, size }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ram_write_then_read_across_stripes() {
        let ram = RamStore::new(3 * RAM_STRIPE as u64).unwrap();
        let data: Vec<u8> = (0..RAM_STRIPE + 100).map(|i| (i % 251) as u8).collect();
        let off = RAM_STRIPE as u64 - 50;
        ram.write_at(off, &data).unwrap();
        let mut back = vec![0u8; data.len()];
        ram.read_at(off, &mut back).unwrap();
        assert_eq!(back, data);
        let spans: Vec<_> = ram.spans(off, data.len()).collect();
        assert_eq!(spans.len(), 3);
        assert_eq!(spans[0].len, 50);
        assert_eq!(spans.iter().map(|s| s.len).sum::<usize>(), data.len());
    }

    #[test]
    fn ram_rejects_ranges_past_the_end() {
        let ram = RamStore::new(4096).unwrap();
        assert!(matches!(
            ram.write_at(4000, &[0u8; 100]),
            Err(BackendError::OutOfRange { .. })
        ));
        assert!(ram.zero(u64::MAX, 2).is_err());
    }

    #[test]
    fn block_digests_combine_to_the_digest_of_the_whole() {
        use nvme_tcp_wire::digest::crc32c;
        let data: Vec<u8> = (0..3 * DIGEST_BLOCK).map(|i| (i * 7 % 253) as u8).collect();
        let mut acc = 0;
        for b in data.chunks_exact(DIGEST_BLOCK) {
            acc = crc32c_append_block(acc, crc32c(b));
        }
        assert_eq!(acc, crc32c(&data));
    }

    #[test]
    fn cached_span_digest_follows_writes_and_zeroing() {
        use nvme_tcp_wire::digest::crc32c;
        let ram = RamStore::new(2 * RAM_STRIPE as u64).unwrap();
        let off = RAM_STRIPE as u64 - 2 * DIGEST_BLOCK as u64;
        let len = 4 * DIGEST_BLOCK;
        let digest = |ram: &RamStore| {
            let mut acc = 0;
            for s in ram.spans(off, len) {
                let g = ram.read_stripe(s.stripe).unwrap();
                acc = ram.digest_span(&g, &s, acc).unwrap();
            }
            acc
        };
        let read = |ram: &RamStore| {
            let mut b = vec![0u8; len];
            ram.read_at(off, &mut b).unwrap();
            b
        };
        assert_eq!(digest(&ram), crc32c(&read(&ram)));
        // Twice: the second time from the cache.
        ram.write_at(off + 100, &[5u8; 9000]).unwrap();
        assert_eq!(digest(&ram), crc32c(&read(&ram)));
        assert_eq!(digest(&ram), crc32c(&read(&ram)));
        ram.write_at(off + 3 * DIGEST_BLOCK as u64 + 1, &[9u8; 1])
            .unwrap();
        assert_eq!(digest(&ram), crc32c(&read(&ram)));
        ram.zero(off + 10, 20).unwrap();
        assert_eq!(digest(&ram), crc32c(&read(&ram)));
        let g = ram.read_stripe(0).unwrap();
        let odd = StripeSpan {
            stripe: 0,
            start: 512,
            len: DIGEST_BLOCK,
        };
        assert_eq!(ram.digest_span(&g, &odd, 0), None);
    }

    #[test]
    fn a_huge_thin_store_makes_metadata_only_where_touched() {
        // 64 TiB of address space, mapped without reserve; nothing is committed.
        let Ok(ram) = RamStore::new(64 << 40) else {
            return; // a kernel without that much address space to give
        };
        let made = |ram: &RamStore| ram.chunks.iter().filter(|c| c.get().is_some()).count();
        assert_eq!(made(&ram), 0);
        let far = (64u64 << 40) - 8192;
        ram.write_at(far, &[7u8; 8192]).unwrap();
        ram.write_at(0, &[1u8; 512]).unwrap();
        assert_eq!(made(&ram), 2, "one chunk at each end");
        let mut b = [0u8; 8192];
        ram.read_at(far, &mut b).unwrap();
        assert!(b.iter().all(|&x| x == 7));
        assert!(ram.write_at(far, &[0u8; 8193]).is_err());
    }

    #[test]
    fn committable_memory_is_known_here() {
        let m = committable_memory().unwrap();
        assert!(m > 0);
    }

    #[test]
    fn ram_zero_clears_data() {
        let ram = RamStore::new(8192).unwrap();
        ram.write_at(0, &[7u8; 8192]).unwrap();
        ram.zero(512, 1024).unwrap();
        let mut b = vec![0u8; 8192];
        ram.read_at(0, &mut b).unwrap();
        assert!(b[512..1536].iter().all(|&x| x == 0));
        assert!(b[..512].iter().all(|&x| x == 7));
        assert!(b[1536..].iter().all(|&x| x == 7));
    }

    #[test]
    fn file_store_reads_back_what_it_wrote() {
        let dir = std::env::temp_dir().join(format!("nvme-tcp-target-fs-{}", std::process::id()));
        std::fs::write(&dir, vec![0u8; 16384]).unwrap();
        let f = FileStore::open(&dir, false).unwrap();
        assert_eq!(f.size(), 16384);
        let mut bounce = AlignedBuf::new(4096);
        f.write_at(4096, &[9u8; 4096], &mut bounce, false).unwrap();
        f.flush().unwrap();
        let mut b = vec![0u8; 4096];
        f.read_at(4096, &mut b).unwrap();
        assert!(b.iter().all(|&x| x == 9));
        f.zero(4096, 4096, &mut bounce, false).unwrap();
        f.read_at(4096, &mut b).unwrap();
        assert!(b.iter().all(|&x| x == 0));
        assert!(f.read_at(16000, &mut b).is_err());
        std::fs::remove_file(&dir).unwrap();
    }

    #[test]
    fn durable_writes_are_synced_and_others_are_not() {
        let path =
            std::env::temp_dir().join(format!("nvme-tcp-target-dsync-{}", std::process::id()));
        std::fs::write(&path, vec![0u8; 1 << 20]).unwrap();
        for direct in [false, true] {
            // O_DIRECT is refused by some file systems (tmpfs); test what this one supports.
            let Ok(f) = FileStore::open(&path, direct) else {
                continue;
            };
            let mut bounce = AlignedBuf::new(8192);
            let synced = |s: DurabilityStats| s.data_syncs + s.dsync_writes;
            let before = synced(f.durability_stats());
            let mut data = AlignedBuf::new(16384);
            data.as_mut_slice().fill(3);
            f.write_at(0, data.as_slice(), &mut bounce, false).unwrap();
            assert_eq!(
                synced(f.durability_stats()),
                before,
                "a cached write syncs nothing"
            );
            f.write_at(8192, data.as_slice(), &mut bounce, true)
                .unwrap();
            let after = synced(f.durability_stats());
            assert!(
                after > before,
                "a durable write is synced (direct={direct})"
            );
            // Unaligned data through the bounce buffer: every piece is durable.
            f.write_at(4096, &data.as_slice()[1..4097], &mut bounce, true)
                .unwrap();
            assert!(synced(f.durability_stats()) > after);
            let z = synced(f.durability_stats());
            f.zero(0, 4096, &mut bounce, true).unwrap();
            assert!(
                synced(f.durability_stats()) > z,
                "durable Write Zeroes syncs"
            );
            let mut back = AlignedBuf::new(4096);
            f.read_at(8192, back.as_mut_slice()).unwrap();
            assert!(back.as_slice().iter().all(|&b| b == 3));
        }
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn aligned_buf_is_aligned() {
        for len in [1, 4096, 131072] {
            let mut b = AlignedBuf::new(len);
            assert_eq!(b.len(), len);
            assert_eq!(b.as_mut_slice().as_ptr() as usize % DIRECT_ALIGN, 0);
        }
    }

    #[test]
    fn null_discards_and_reads_zero() {
        let n = Backend::Null { size: 1 << 30 };
        let mut bounce = AlignedBuf::new(512);
        n.write_at(0, &[1u8; 512], &mut bounce, true).unwrap();
        let mut b = [5u8; 512];
        n.read_at(0, &mut b).unwrap();
        assert_eq!(b, [0u8; 512]);
        assert!(n.read_at(1 << 30, &mut b).is_err());
    }
}
