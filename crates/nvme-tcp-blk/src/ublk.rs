//! A namespace as a Linux ublk block device (`/dev/ublkbN`), through the `libublk` crate.
//!
//! One ublk queue per engine queue (so per NVMe/TCP I/O queue): ublk queue `q`'s thread takes
//! the block requests of the kernel's hardware queue `q` and submits them to engine queue
//! `q`. The engine's worker completes them on its own thread; the completion is handed back
//! to the ublk queue thread through a list and an eventfd that the queue thread keeps a read
//! posted on in its io_uring, so completing an I/O never blocks the NVMe side.
//!
//! Mapping: READ → Read, WRITE → Write (FUA → FUA), FLUSH → Flush, DISCARD → Dataset
//! Management (Deallocate), WRITE_ZEROES → Write Zeroes. Device size, logical and physical
//! block size, optimal I/O size, the volatile write cache and the largest I/O come from the
//! namespace's [`Geometry`](crate::Geometry).
//!
//! [`serve`] adds the device, runs it until [`StopHandle::stop`], then stops and deletes it.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::{Arc, Condvar, Mutex, PoisonError};

use libublk::ctrl::{UblkCtrl, UblkCtrlBuilder};
use libublk::helpers::IoBuf;
use libublk::io::{BufDescList, UblkDev, UblkIOCtx, UblkQueue};
use libublk::{BufDesc, UblkError, UblkFlags, UblkIORes, sys};

use crate::engine::{BlockOp, BlockResult, Disk, Done};

/// The ublk control device; without it the driver is not loaded.
pub const UBLK_CONTROL: &str = "/dev/ublk-control";

/// Why a ublk device could not be served.
#[derive(Debug, thiserror::Error)]
pub enum UblkServeError {
    /// The kernel has no ublk driver.
    #[error(
        "{UBLK_CONTROL} not found: the ublk driver is not loaded (modprobe ublk_drv, kernel \
         6.0 or later with CONFIG_BLK_DEV_UBLK); `ulpddp nbd` serves the same namespaces \
         without it"
    )]
    NoDriver,
    /// The requested device id exists already.
    #[error("ublk device {0} is already in use")]
    InUse(i32),
    /// The driver refused to add or start the device.
    #[error("ublk: {0}")]
    Ublk(String),
}

fn ublk_error(e: UblkError) -> String {
    match e {
        UblkError::OtherError(code) | UblkError::UringIOError(code) => {
            format!(
                "{} (errno {})",
                std::io::Error::from_raw_os_error(-code),
                -code
            )
        }
        other => other.to_string(),
    }
}

/// Options of a ublk device.
#[derive(Debug, Clone, Copy)]
pub struct UblkOptions {
    /// Device id (`/dev/ublkbN`); -1 lets the driver choose.
    pub dev_id: i32,
    /// Requests in flight per queue.
    pub depth: u16,
    /// Largest I/O in bytes (the kernel splits larger ones); capped by the namespace's
    /// largest transfer.
    pub max_io_bytes: u32,
    /// Expose the device read only.
    pub read_only: bool,
}

impl Default for UblkOptions {
    fn default() -> Self {
        Self {
            dev_id: -1,
            depth: 64,
            max_io_bytes: 512 << 10,
            read_only: false,
        }
    }
}

/// Tells a running device to stop (from a signal handler thread, for example).
#[derive(Debug, Clone, Default)]
pub struct StopHandle(Arc<(Mutex<bool>, Condvar)>);

impl StopHandle {
    /// A handle that has not been stopped.
    pub fn new() -> Self {
        Self::default()
    }

    /// Stops the device(s) waiting on this handle.
    pub fn stop(&self) {
        let mut s = self.0.0.lock().unwrap_or_else(PoisonError::into_inner);
        *s = true;
        self.0.1.notify_all();
    }

    fn wait(&self) {
        let mut s = self.0.0.lock().unwrap_or_else(PoisonError::into_inner);
        while !*s {
            s = self.0.1.wait(s).unwrap_or_else(PoisonError::into_inner);
        }
    }
}

/// The device once it runs.
#[derive(Debug, Clone)]
pub struct DeviceInfo {
    /// Device id.
    pub dev_id: u32,
    /// The block device, `/dev/ublkbN`.
    pub bdev: String,
}

fn shift(v: u32) -> u8 {
    if v.is_power_of_two() {
        v.trailing_zeros() as u8
    } else {
        0
    }
}

/// Serves `disk` as a ublk device until `stop` is stopped, then stops and deletes the device.
/// `ready` is called once the block device exists.
pub fn serve(
    disk: Disk,
    opts: UblkOptions,
    stop: StopHandle,
    ready: impl FnOnce(DeviceInfo) + Send + Sync + 'static,
) -> Result<(), UblkServeError> {
    if !std::path::Path::new(UBLK_CONTROL).exists() {
        return Err(UblkServeError::NoDriver);
    }
    // An id in use must be refused here: when the driver refuses to add a device, libublk's
    // clean-up deletes the device with that id, which is somebody else's.
    if opts.dev_id >= 0
        && (std::path::Path::new(&format!("/sys/class/ublk-char/ublkc{}", opts.dev_id)).exists()
            || std::path::Path::new(&format!("/dev/ublkc{}", opts.dev_id)).exists())
    {
        return Err(UblkServeError::InUse(opts.dev_id));
    }
    let g = *disk.geometry();
    // Whole pages (the driver's unit), at least one block.
    let io_bytes = (opts.max_io_bytes.min(g.max_transfer) & !4095).max(g.lba_size.max(4096));
    let nr_queues = u16::try_from(disk.queue_count()).unwrap_or(u16::MAX).max(1);
    let ctrl = UblkCtrlBuilder::default()
        .name("nvme-tcp")
        .id(opts.dev_id)
        .nr_queues(nr_queues)
        .depth(opts.depth.max(1))
        .io_buf_bytes(io_bytes)
        .dev_flags(UblkFlags::UBLK_DEV_F_ADD_DEV)
        .build()
        .map_err(|e| match e {
            UblkError::OtherError(code) if code == -libc::EEXIST => {
                UblkServeError::InUse(opts.dev_id)
            }
            other => UblkServeError::Ublk(format!("adding the device: {}", ublk_error(other))),
        })?;
    let read_only = opts.read_only || g.write_protected;
    let tgt_init = move |dev: &mut UblkDev| {
        dev.set_default_params(g.size_bytes());
        // One more I/O slot in the ring for the completion eventfd.
        dev.tgt.extra_ios = 1;
        let p = &mut dev.tgt.params;
        let mut attrs = 0;
        if g.volatile_write_cache {
            attrs |= sys::UBLK_ATTR_VOLATILE_CACHE | sys::UBLK_ATTR_FUA;
        }
        if read_only {
            attrs |= sys::UBLK_ATTR_READ_ONLY;
        }
        p.basic.attrs = attrs;
        p.basic.logical_bs_shift = shift(g.lba_size);
        p.basic.physical_bs_shift = shift(g.physical_block_size.max(g.lba_size));
        p.basic.io_min_shift = p.basic.physical_bs_shift;
        p.basic.io_opt_shift = if g.optimal_io_size > 0 {
            shift(g.optimal_io_size)
        } else {
            p.basic.physical_bs_shift
        };
        if g.deallocate || g.write_zeroes {
            p.types |= sys::UBLK_PARAM_TYPE_DISCARD;
            p.discard.discard_granularity = g.physical_block_size.max(g.lba_size);
            let granularity_sectors = (p.discard.discard_granularity >> 9).max(1);
            p.discard.max_discard_sectors = if g.deallocate {
                // The engine splits a discard into Dataset Management ranges as needed.
                u32::MAX / granularity_sectors * granularity_sectors
            } else {
                0
            };
            p.discard.max_discard_segments = 1;
            p.discard.max_write_zeroes_sectors = if g.write_zeroes {
                u32::try_from((g.max_write_zeroes_blocks() * u64::from(g.lba_size)) >> 9)
                    .unwrap_or(u32::MAX)
            } else {
                0
            };
        }
        Ok(())
    };
    let qdisk = disk.clone();
    let q_fn = move |qid: u16, dev: &UblkDev| queue_loop(qid, dev, &qdisk);
    let device_fn = move |ctrl: &UblkCtrl| {
        let info = ctrl.dev_info();
        ready(DeviceInfo {
            dev_id: info.dev_id,
            bdev: ctrl.get_bdev_path(),
        });
        stop.wait();
        if let Err(e) = ctrl.kill_dev() {
            tracing::warn!(error = %ublk_error(e), "stopping the ublk device");
        }
    };
    ctrl.run_target(tgt_init, q_fn, device_fn)
        .map_err(|e| UblkServeError::Ublk(format!("running the device: {}", ublk_error(e))))?;
    // Dropping the control device deletes it.
    drop(ctrl);
    Ok(())
}

/// A completed request on its way back to the queue thread: tag, result, read data.
type Finished = (u16, i32, Option<Vec<u8>>);

/// Completions handed from the engine's workers to one queue thread.
struct Mailbox {
    list: Mutex<Vec<Finished>>,
    efd: OwnedFd,
}

impl Mailbox {
    fn post(&self, f: Finished) {
        self.list
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(f);
        let one = 1u64.to_ne_bytes();
        // SAFETY: writing 8 bytes from a valid buffer to an eventfd we own.
        let r = unsafe { libc::write(self.efd.as_raw_fd(), one.as_ptr().cast(), 8) };
        if r != 8 {
            tracing::error!(error = %std::io::Error::last_os_error(), "eventfd write");
        }
    }

    fn take(&self) -> Vec<Finished> {
        std::mem::take(&mut *self.list.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// user_data of the eventfd read: a target I/O, which no ublk tag uses.
fn efd_user_data() -> u64 {
    UblkIOCtx::build_user_data(0, 0xff, 0, true)
}

fn arm_eventfd(q: &UblkQueue, fd: i32, buf: &mut [u8; 8]) {
    let sqe = io_uring::opcode::Read::new(io_uring::types::Fd(fd), buf.as_mut_ptr(), 8)
        .build()
        .user_data(efd_user_data());
    if let Err(e) = q.ublk_submit_sqe_sync(sqe) {
        tracing::error!(error = %ublk_error(e), "cannot post the eventfd read");
    }
}

fn queue_loop(qid: u16, dev: &UblkDev, disk: &Disk) {
    // SAFETY: eventfd(2) returns a new descriptor or -1.
    let raw = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
    if raw < 0 {
        tracing::error!(qid, error = %std::io::Error::last_os_error(), "eventfd");
        return;
    }
    // SAFETY: `raw` is a fresh descriptor nobody else owns.
    let efd = unsafe { OwnedFd::from_raw_fd(raw) };
    let mailbox = Arc::new(Mailbox {
        list: Mutex::new(Vec::new()),
        efd,
    });
    let mut bufs: Vec<IoBuf<u8>> = dev.alloc_queue_io_bufs();
    let q = match UblkQueue::new(qid, dev)
        .and_then(|q| q.submit_fetch_commands_unified(BufDescList::Slices(Some(&bufs))))
    {
        Ok(q) => q,
        Err(e) => {
            tracing::error!(qid, error = %ublk_error(e), "ublk queue setup");
            return;
        }
    };
    let mut evbuf = Box::new([0u8; 8]);
    let fd = mailbox.efd.as_raw_fd();
    arm_eventfd(&q, fd, &mut evbuf);
    let queue = usize::from(qid);
    let handler = move |q: &UblkQueue, tag: u16, io: &UblkIOCtx| {
        if io.is_tgt_io() {
            for (tag, res, data) in mailbox.take() {
                let Some(buf) = bufs.get_mut(usize::from(tag)) else {
                    continue;
                };
                if let Some(d) = data {
                    let n = d.len().min(buf.len());
                    buf.as_mut_slice()[..n].copy_from_slice(&d[..n]);
                }
                let r = q.complete_io_cmd_unified(
                    tag,
                    BufDesc::Slice(buf.as_slice()),
                    Ok(UblkIORes::Result(res)),
                );
                if let Err(e) = r {
                    tracing::error!(tag, error = %ublk_error(e), "completing a ublk I/O");
                }
            }
            if io.result() >= 0 {
                arm_eventfd(q, fd, &mut evbuf);
            } else {
                tracing::debug!(res = io.result(), "eventfd read ended");
            }
            return;
        }
        let iod = q.get_iod(tag);
        let offset = iod.start_sector << 9;
        let bytes = u64::from(iod.nr_sectors) << 9;
        let fua = iod.op_flags & sys::UBLK_IO_F_FUA != 0;
        let op = match iod.op_flags & 0xff {
            sys::UBLK_IO_OP_READ => BlockOp::Read {
                offset,
                len: bytes as u32,
            },
            sys::UBLK_IO_OP_WRITE => {
                let Some(buf) = bufs.get(usize::from(tag)) else {
                    return;
                };
                let n = (bytes as usize).min(buf.len());
                BlockOp::Write {
                    offset,
                    data: buf.as_slice()[..n].to_vec(),
                    fua,
                }
            }
            sys::UBLK_IO_OP_FLUSH => BlockOp::Flush,
            sys::UBLK_IO_OP_DISCARD => BlockOp::Discard { offset, len: bytes },
            sys::UBLK_IO_OP_WRITE_ZEROES => BlockOp::WriteZeroes {
                offset,
                len: bytes,
                fua,
            },
            other => {
                tracing::warn!(op = other, "unsupported ublk operation");
                mailbox.post((tag, -libc::EOPNOTSUPP, None));
                return;
            }
        };
        let is_data = matches!(op, BlockOp::Read { .. } | BlockOp::Write { .. });
        let mb = mailbox.clone();
        let done = Done::new(move |r: BlockResult| {
            let f = match r {
                Ok(data) => {
                    let res = if is_data { bytes as i32 } else { 0 };
                    (tag, res, (!data.is_empty()).then_some(data))
                }
                Err(e) => {
                    tracing::warn!(tag, error = %e, "ublk I/O failed");
                    (tag, -e.errno(), None)
                }
            };
            mb.post(f);
        });
        disk.submit(queue, op, done);
    };
    q.wait_and_handle_io(handler);
    tracing::debug!(qid, "ublk queue stopped");
}
