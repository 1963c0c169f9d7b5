//! The controller handle: bring-up, admin commands, namespaces and log pages, and the I/O
//! queues handed to callers. The association itself (admin queue, Keep Alive, recovery) is
//! driven by [`crate::session`] on the sans-IO machines of [`crate::assoc`].

use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nvme_tcp_wire::nvme::regs::{CC, CSTS, Cc, Csts};
use nvme_tcp_wire::nvme::{IdentifyCommand, IdentifyNamespace, NsidList, PropertySize, Status};

pub use crate::assoc::{ControllerInfo, INTERNAL_USER_DATA};
use crate::buf::IoBuf;
use crate::cmd;
use crate::error::{CommandError, CommandInfo, HostError, IoError, Result};
use crate::ioq::IoQueue;
use crate::options::ConnectOptions;
use crate::queue::{Completion, CqeInfo, Request, SQE_LEN};
use crate::session::{Shared, bring_up, keep_alive_loop};

/// The outcome of admin command `sqe`; a failure names the command.
fn ok(sqe: &[u8; SQE_LEN], c: Completion) -> Result<(CqeInfo, Option<IoBuf>)> {
    match c.result {
        Ok(cqe) => Ok((cqe, c.buf)),
        Err(error) => Err(HostError::CommandFailed(CommandError {
            cmd: CommandInfo::from_sqe(0, c.cid, sqe),
            error,
        })),
    }
}

/// Per-namespace facts the I/O path needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NamespaceInfo {
    /// Namespace ID.
    pub nsid: u32,
    /// Size in logical blocks (NSZE).
    pub nsze: u64,
    /// Capacity in logical blocks (NCAP).
    pub ncap: u64,
    /// Utilization in logical blocks (NUSE).
    pub nuse: u64,
    /// Logical block size in bytes.
    pub lba_size: u32,
}

/// A connected NVMe/TCP controller.
///
/// Dropping it stops Keep Alive and closes the admin queue; I/O queues taken with
/// [`Controller::take_io_queues`] keep working only as long as the controller lives.
pub struct Controller {
    pub(crate) shared: Arc<Shared>,
    keep_alive: Option<JoinHandle<()>>,
    io: Vec<Mutex<IoQueue>>,
}

impl std::fmt::Debug for Controller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller")
            .field("addr", &self.shared.opts.socket_addr_string())
            .field("subnqn", &self.shared.opts.subnqn)
            .field("io_queues", &self.io.len())
            .finish()
    }
}

impl Controller {
    /// Connects the admin queue, enables the controller, identifies it and connects
    /// `min(opts.nr_io_queues, granted)` I/O queues.
    pub fn connect(opts: ConnectOptions) -> Result<Self> {
        if opts.queue_size < 2 {
            return Err(HostError::Invalid("queue_size must be at least 2".into()));
        }
        let (conn, core, info) = bring_up(&opts)?;
        let granted = info.io_queues_granted;
        let maxcmd = info
            .identify_controller()
            .map(|i| i.maxcmd.get())
            .unwrap_or(0);
        let mqes = info.cap.mqes().saturating_add(1);
        let shared = Arc::new(Shared::new(opts, conn, core, info));
        // Queue size: what was asked, clamped to CAP.MQES+1 and MAXCMD (as the Linux host).
        let mut qsize = shared.opts.queue_size.min(mqes.max(2));
        if maxcmd >= 2 {
            qsize = qsize.min(maxcmd);
        }
        let mut io = Vec::with_capacity(granted as usize);
        for qid in 1..=granted {
            io.push(Mutex::new(IoQueue::connect(shared.clone(), qid, qsize)?));
        }
        let keep_alive = shared.opts.kato.map(|kato| {
            let s = shared.clone();
            std::thread::Builder::new()
                .name("nvme-keepalive".into())
                .spawn(move || keep_alive_loop(s, kato))
        });
        let keep_alive = match keep_alive {
            Some(Ok(h)) => Some(h),
            Some(Err(e)) => return Err(HostError::Io(e)),
            None => None,
        };
        Ok(Self {
            shared,
            keep_alive,
            io,
        })
    }

    /// The options this controller was connected with.
    pub fn options(&self) -> &ConnectOptions {
        &self.shared.opts
    }

    /// What bring-up learned (of the current association).
    pub fn info(&self) -> Result<ControllerInfo> {
        self.shared.info_snapshot()
    }

    /// Number of I/O queues still held by the controller (not taken).
    pub fn io_queue_count(&self) -> usize {
        self.io.len()
    }

    /// Hands the I/O queues to the caller (for example one per thread, for `perf`). The
    /// blocking I/O helpers of the controller no longer work afterwards.
    pub fn take_io_queues(&mut self) -> Vec<IoQueue> {
        std::mem::take(&mut self.io)
            .into_iter()
            .map(|m| m.into_inner().unwrap_or_else(|e| e.into_inner()))
            .collect()
    }

    /// Runs an admin command to completion. The buffer comes back with the completion.
    pub fn admin_command(&self, req: Request) -> Result<(CqeInfo, Option<IoBuf>)> {
        let sqe = req.sqe;
        ok(&sqe, self.shared.admin_exec(req)?)
    }

    /// Identify Controller (fresh from the controller).
    pub fn identify_controller(&self) -> Result<Vec<u8>> {
        self.identify_raw(IdentifyCommand::controller())
    }

    /// Any Identify command; the 4096 bytes returned.
    pub fn identify_raw(&self, cmd: IdentifyCommand) -> Result<Vec<u8>> {
        let (_, buf) = self.admin_command(cmd::identify(cmd, IoBuf::Contig(vec![0; 4096]), 0))?;
        Ok(buf.map(|b| b.to_vec()).unwrap_or_default())
    }

    /// Identify Namespace `nsid`, decoded. A namespace that is not active (all-zero data, or
    /// refused as an invalid namespace) is [`HostError::NamespaceNotFound`].
    pub fn namespace(&self, nsid: u32) -> Result<NamespaceInfo> {
        let raw = match self.identify_raw(IdentifyCommand::namespace(nsid)) {
            Err(HostError::CommandFailed(CommandError {
                error: IoError::Status(s),
                ..
            })) if s.status() == Status::INVALID_NAMESPACE_OR_FORMAT => {
                return Err(HostError::NamespaceNotFound(nsid));
            }
            r => r?,
        };
        let ns = IdentifyNamespace::parse(&raw)
            .map_err(|e| HostError::Unsupported(format!("Identify Namespace: {e}")))?;
        if ns.nsze.get() == 0 {
            return Err(HostError::NamespaceNotFound(nsid));
        }
        let lba_size = ns.lba_size().ok_or_else(|| {
            HostError::Unsupported(format!("namespace {nsid}: LBA format unusable"))
        })?;
        Ok(NamespaceInfo {
            nsid,
            nsze: ns.nsze.get(),
            ncap: ns.ncap.get(),
            nuse: ns.nuse.get(),
            lba_size,
        })
    }

    /// Active namespace IDs (Identify CNS 0x02, following the list past 1024 entries).
    pub fn active_namespaces(&self) -> Result<Vec<u32>> {
        let mut out = Vec::new();
        let mut start = 0u32;
        loop {
            let raw = self.identify_raw(IdentifyCommand::active_namespaces(start))?;
            let list = NsidList::parse(&raw)
                .map_err(|e| HostError::Unsupported(format!("NSID list: {e}")))?;
            let before = out.len();
            out.extend(list.iter().filter(|&n| n > start));
            if out.len() - before < 1024 || out.len() > 1 << 20 {
                break;
            }
            start = *out.last().unwrap_or(&u32::MAX);
            if start >= 0xFFFF_FFFE {
                break;
            }
        }
        Ok(out)
    }

    /// Get Log Page `lid`: `len` bytes (rounded up to dwords) from `offset`.
    pub fn get_log_page(&self, lid: u8, nsid: u32, offset: u64, len: usize) -> Result<Vec<u8>> {
        let len = len.div_ceil(4) * 4;
        let (_, buf) = self.admin_command(cmd::get_log_page(
            lid,
            nsid,
            offset,
            IoBuf::Contig(vec![0; len]),
            0,
        )?)?;
        Ok(buf.map(|b| b.to_vec()).unwrap_or_default())
    }

    /// The I/O queue with index `i` (0-based; QID i+1), locked, for the blocking helpers.
    pub(crate) fn io_queue(&self, i: usize) -> Option<MutexGuard<'_, IoQueue>> {
        self.io
            .get(i)
            .map(|m| m.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Shuts the controller down: stops Keep Alive, sets CC.SHN (normal) and waits briefly
    /// for CSTS.SHST, closes every queue.
    pub fn shutdown(mut self) {
        self.stop_threads();
        for q in self.take_io_queues() {
            q.close();
        }
        let cc = Cc::enable_nvm().with_shn(Cc::SHN_NORMAL);
        if self
            .shared
            .admin_exec(cmd::property_set(CC, cc.0, 0))
            .is_ok()
        {
            let until = Instant::now() + Duration::from_secs(2);
            while Instant::now() < until {
                match self
                    .shared
                    .admin_exec(cmd::property_get(CSTS, PropertySize::FourBytes, 0))
                {
                    Ok(c) => match c.result {
                        Ok(cqe) if Csts(cqe.dw0).shst() == Csts::SHST_COMPLETE => break,
                        Ok(_) => std::thread::sleep(Duration::from_millis(10)),
                        Err(_) => break,
                    },
                    Err(_) => break,
                }
            }
        }
        self.shared.close_admin();
    }

    fn stop_threads(&mut self) {
        self.shared.stop();
        if let Some(h) = self.keep_alive.take() {
            let _ = h.join();
        }
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        self.stop_threads();
    }
}
