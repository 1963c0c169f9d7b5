//! The controller: the admin queue and its bring-up, Keep Alive, association recovery, and the
//! I/O queues handed to callers.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nvme_tcp_wire::nvme::regs::{CC, CSTS, Cap, Cc, Csts, Vs};
use nvme_tcp_wire::nvme::{
    IdentifyCommand, IdentifyController, IdentifyNamespace, NsidList, PropertySize,
};

use crate::assoc::{AdminBringUp, Poll, QueueConnect};
use crate::buf::IoBuf;
use crate::cmd;
use crate::conn::Connection;
use crate::error::{HostError, IoError, Result};
use crate::ioq::IoQueue;
use crate::options::{ADMIN_QUEUE_SIZE, CidMode, ConnectOptions};
use crate::queue::{Completion, CqeInfo, Phase, QueueConfig, QueueCore, Request};

/// `user_data` of the host's internal commands (Connect); callers must not use it.
pub const INTERNAL_USER_DATA: u64 = u64::MAX;

/// What the controller told the host during bring-up.
#[derive(Debug, Clone)]
pub struct ControllerInfo {
    /// Controller ID of the current association.
    pub cntlid: u16,
    /// CAP property.
    pub cap: Cap,
    /// VS property.
    pub vs: Vs,
    /// The Identify Controller data (4096 bytes).
    pub identify: Vec<u8>,
    /// I/O queues granted by Set Features Number of Queues (0 for a discovery controller).
    pub io_queues_granted: u16,
    /// Largest transfer per command in bytes (from MDTS; `None` = no limit reported).
    pub max_transfer: Option<u64>,
    /// In-capsule data the I/O queues accept (from IOCCSZ), in bytes.
    pub in_capsule_size: usize,
}

impl ControllerInfo {
    /// The Identify Controller structure.
    pub fn identify_controller(&self) -> Option<&IdentifyController> {
        IdentifyController::parse(&self.identify).ok()
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

pub(crate) struct Admin {
    core: Option<QueueCore>,
    conn: Option<Connection>,
    pub(crate) info: Option<ControllerInfo>,
    /// Bumped each time a new association is established.
    pub(crate) generation: u64,
    lost: bool,
}

/// State shared by the controller handle, its I/O queues and the Keep Alive thread.
pub(crate) struct Shared {
    pub(crate) opts: ConnectOptions,
    admin: Mutex<Admin>,
    stop: Mutex<bool>,
    stop_cv: Condvar,
    shutting_down: AtomicBool,
}

impl Shared {
    fn lock_admin(&self) -> MutexGuard<'_, Admin> {
        // A panic while holding the lock leaves the state consistent enough to go on.
        self.admin.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The association I/O queues connect under: `(cntlid, generation)`.
    pub(crate) fn association(&self) -> Result<(u16, u64)> {
        let a = self.lock_admin();
        if a.lost {
            return Err(HostError::Lost);
        }
        match &a.info {
            Some(i) => Ok((i.cntlid, a.generation)),
            None => Err(HostError::Lost),
        }
    }

    /// A copy of what bring-up learned.
    pub(crate) fn info_snapshot(&self) -> Result<ControllerInfo> {
        self.lock_admin().info.clone().ok_or(HostError::Lost)
    }

    /// Re-establishes the association if it is still generation `seen` (an I/O queue's Connect
    /// was refused under it, so the controller probably forgot it).
    pub(crate) fn reassociate(&self, seen: u64) -> Result<()> {
        let mut a = self.lock_admin();
        if a.generation != seen {
            return Ok(());
        }
        a.conn = None;
        self.recover(&mut a)
    }

    /// Runs one admin command to completion, re-establishing the association (and retrying
    /// once) if the admin connection is lost.
    pub(crate) fn admin_exec(&self, req: Request) -> Result<Completion> {
        let mut a = self.lock_admin();
        self.admin_exec_locked(&mut a, req)
    }

    fn admin_exec_locked(&self, a: &mut Admin, req: Request) -> Result<Completion> {
        if a.lost {
            return Err(HostError::Lost);
        }
        if a.conn.is_none() {
            self.recover(a)?;
        }
        let user_data = req.user_data;
        let (Some(core), Some(conn)) = (a.core.as_mut(), a.conn.as_mut()) else {
            return Err(HostError::Lost);
        };
        if let Err(e) = core.submit(req, Instant::now()) {
            return Err(HostError::Invalid(format!("admin submit: {}", e.reason)));
        }
        let r = wait_for(conn, core, user_data, self.opts.command_timeout);
        if let Err(e) = &r {
            tracing::warn!(error = %e, "admin queue failed; the association will be re-established");
            if let Some(c) = a.conn.as_mut() {
                c.shutdown();
            }
            a.conn = None;
            if let Some(core) = a.core.as_mut() {
                core.fail_all(IoError::QueueLost("admin queue reset"));
            }
        }
        r
    }

    /// Reconnects the admin queue (new association) every `reconnect_delay` until
    /// `ctrl_loss_tmo`.
    fn recover(&self, a: &mut Admin) -> Result<()> {
        let start = Instant::now();
        loop {
            if self.shutting_down.load(Ordering::Relaxed) {
                return Err(HostError::Lost);
            }
            match bring_up(&self.opts) {
                Ok((conn, core, info)) => {
                    tracing::info!(cntlid = info.cntlid, "association re-established");
                    a.conn = Some(conn);
                    a.core = Some(core);
                    a.info = Some(info);
                    a.generation += 1;
                    return Ok(());
                }
                Err(e) => {
                    let waited = start.elapsed();
                    let give_up = match self.opts.ctrl_loss_tmo {
                        Some(t) => waited + self.opts.reconnect_delay > t,
                        None => false,
                    };
                    tracing::warn!(error = %e, "reconnecting the admin queue failed");
                    if give_up {
                        a.lost = true;
                        return Err(HostError::Lost);
                    }
                    std::thread::sleep(self.opts.reconnect_delay);
                }
            }
        }
    }

    /// Sends Abort for `cid` on `sqid` (result ignored beyond logging).
    pub(crate) fn abort(&self, sqid: u16, cid: u16) {
        match self.admin_exec(cmd::abort(sqid, cid, 0)) {
            Ok(c) => tracing::info!(sqid, cid, result = ?c.result, "Abort sent"),
            Err(e) => tracing::warn!(sqid, cid, error = %e, "Abort failed"),
        }
    }
}

/// Waits for the completion with `user_data` on a connection, polling it.
pub(crate) fn wait_for(
    conn: &mut Connection,
    core: &mut QueueCore,
    user_data: u64,
    timeout: Duration,
) -> Result<Completion> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(c) = core.take_completion_for(user_data) {
            return Ok(c);
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(HostError::Timeout("command completion"));
        }
        if let Err(e) = conn.poll(core, Some(deadline - now)) {
            // The completion may have arrived just before the connection closed.
            return core.take_completion_for(user_data).ok_or(e);
        }
    }
}

fn ok(c: Completion) -> Result<(CqeInfo, Option<IoBuf>)> {
    match c.result {
        Ok(cqe) => Ok((cqe, c.buf)),
        Err(e) => Err(HostError::Command(e)),
    }
}

/// Drives a sans-IO state machine ([`crate::assoc`]) over a connection until it is ready.
pub(crate) fn drive<T>(
    conn: &mut Connection,
    core: &mut QueueCore,
    mut step: impl FnMut(&mut QueueCore, Instant) -> Result<Poll<T>>,
) -> Result<T> {
    loop {
        let now = Instant::now();
        let wake_at = match step(core, now)? {
            Poll::Ready(v) => return Ok(v),
            Poll::Pending { wake_at } => wake_at,
        };
        let wait = wake_at
            .map_or(Duration::from_millis(100), |t| {
                t.saturating_duration_since(now)
            })
            .max(Duration::from_millis(1));
        if let Err(e) = conn.poll(core, Some(wait)) {
            // What arrived just before the connection closed still counts.
            return match step(core, Instant::now()) {
                Ok(Poll::Ready(v)) => Ok(v),
                _ => Err(e),
            };
        }
    }
}

/// Opens queue `qid` on a fresh connection and sends Fabrics Connect; returns the CQE.
pub(crate) fn connect_queue(
    opts: &ConnectOptions,
    conn: &mut Connection,
    core: &mut QueueCore,
    qid: u16,
    queue_size: u16,
    cntlid: Option<u16>,
) -> Result<CqeInfo> {
    if core.phase() != Phase::WaitIcResp || core.connection_used() {
        core.reset_connection();
    }
    while core.take_completion_for(INTERNAL_USER_DATA).is_some() {}
    let mut sm = QueueConnect::new(opts, qid, queue_size, cntlid, Instant::now())?;
    drive(conn, core, |core, now| sm.poll(core, now))
}

/// Admin queue bring-up ([`AdminBringUp`]) over a new connection.
fn bring_up(opts: &ConnectOptions) -> Result<(Connection, QueueCore, ControllerInfo)> {
    let mut core = QueueCore::new(QueueConfig {
        qid: 0,
        queue_size: ADMIN_QUEUE_SIZE,
        hdgst: opts.hdgst,
        ddgst: opts.ddgst,
        cid_mode: CidMode::Tagged,
        in_capsule_max: 8192,
    });
    let mut conn = Connection::open(opts)?;
    let mut sm = AdminBringUp::new(opts, Instant::now())?;
    let info = drive(&mut conn, &mut core, |core, now| sm.poll(core, now))?;
    Ok((conn, core, info))
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
        let shared = Arc::new(Shared {
            opts,
            admin: Mutex::new(Admin {
                core: Some(core),
                conn: Some(conn),
                info: Some(info),
                generation: 1,
                lost: false,
            }),
            stop: Mutex::new(false),
            stop_cv: Condvar::new(),
            shutting_down: AtomicBool::new(false),
        });
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
                .spawn(move || keep_alive_loop(s, kato / 2))
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
        self.shared.lock_admin().info.clone().ok_or(HostError::Lost)
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
        ok(self.shared.admin_exec(req)?)
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

    /// Identify Namespace `nsid`, decoded.
    pub fn namespace(&self, nsid: u32) -> Result<NamespaceInfo> {
        let raw = self.identify_raw(IdentifyCommand::namespace(nsid))?;
        let ns = IdentifyNamespace::parse(&raw)
            .map_err(|e| HostError::Unsupported(format!("Identify Namespace: {e}")))?;
        let lba_size = ns.lba_size().ok_or_else(|| {
            HostError::Unsupported(format!("namespace {nsid}: LBA format unusable"))
        })?;
        if ns.nsze.get() == 0 {
            return Err(HostError::Invalid(format!(
                "namespace {nsid} is not active"
            )));
        }
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
        let mut a = self.shared.lock_admin();
        if let Some(c) = a.conn.as_mut() {
            c.shutdown();
        }
        a.conn = None;
        a.lost = true;
    }

    fn stop_threads(&mut self) {
        self.shared.shutting_down.store(true, Ordering::Relaxed);
        {
            let mut s = self.shared.stop.lock().unwrap_or_else(|e| e.into_inner());
            *s = true;
        }
        self.shared.stop_cv.notify_all();
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

fn keep_alive_loop(shared: Arc<Shared>, period: Duration) {
    let period = period.max(Duration::from_millis(100));
    loop {
        {
            let guard = shared.stop.lock().unwrap_or_else(|e| e.into_inner());
            let (guard, _) = shared
                .stop_cv
                .wait_timeout_while(guard, period, |stop| !*stop)
                .unwrap_or_else(|e| e.into_inner());
            if *guard {
                return;
            }
        }
        match shared.admin_exec(cmd::keep_alive(0)) {
            Ok(c) => {
                if let Err(e) = c.result {
                    tracing::warn!(error = %e, "Keep Alive failed");
                }
            }
            Err(HostError::Lost) => {
                tracing::error!("controller lost; Keep Alive stops");
                return;
            }
            Err(e) => tracing::warn!(error = %e, "Keep Alive failed"),
        }
    }
}
