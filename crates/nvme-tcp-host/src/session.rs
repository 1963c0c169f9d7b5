//! The blocking driver of one association over kernel sockets: the admin queue and its
//! connection (shared by the controller handle, its I/O queues and the Keep Alive thread),
//! association recovery, and the loop that drives the sans-IO machines of [`crate::assoc`]
//! over a [`Connection`]. The decisions (what to send, when, when to give up) are the
//! machines'; this module only moves bytes, sleeps and takes locks.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::assoc::{
    AdminBringUp, ControllerInfo, INTERNAL_USER_DATA, KeepAlive, Poll, QueueConnect, Reconnect,
    ReconnectAction,
};
use crate::cmd;
use crate::conn::Connection;
use crate::error::{HostError, IoError, Result};
use crate::options::{ADMIN_QUEUE_SIZE, CidMode, ConnectOptions};
use crate::queue::{Completion, CqeInfo, Phase, QueueConfig, QueueCore, Request};

struct Admin {
    core: Option<QueueCore>,
    conn: Option<Connection>,
    info: Option<ControllerInfo>,
    /// Bumped each time a new association is established.
    generation: u64,
    lost: bool,
    /// A thread is re-establishing the association, without holding the lock: other admin
    /// commands wait for it on `recovered`; an I/O queue's reconnect (which needs the
    /// association) fails at once with [`HostError::Reconnecting`] and an Abort is not sent,
    /// so no I/O queue's thread waits for it.
    recovering: bool,
}

/// State shared by the controller handle, its I/O queues and the Keep Alive thread.
pub(crate) struct Shared {
    pub(crate) opts: ConnectOptions,
    admin: Mutex<Admin>,
    /// Signalled when a recovery of the association ends.
    recovered: Condvar,
    stop: Mutex<bool>,
    stop_cv: Condvar,
    shutting_down: AtomicBool,
}

impl Shared {
    /// The shared state of a new association.
    pub(crate) fn new(
        opts: ConnectOptions,
        conn: Connection,
        core: QueueCore,
        info: ControllerInfo,
    ) -> Self {
        Shared {
            opts,
            admin: Mutex::new(Admin {
                core: Some(core),
                conn: Some(conn),
                info: Some(info),
                generation: 1,
                lost: false,
                recovering: false,
            }),
            recovered: Condvar::new(),
            stop: Mutex::new(false),
            stop_cv: Condvar::new(),
            shutting_down: AtomicBool::new(false),
        }
    }

    /// Tells the Keep Alive thread and any reconnect loop to stop.
    pub(crate) fn stop(&self) {
        self.shutting_down.store(true, Ordering::Relaxed);
        {
            let mut s = self.stop.lock().unwrap_or_else(|e| e.into_inner());
            *s = true;
        }
        self.stop_cv.notify_all();
    }

    /// Closes the admin connection for good.
    pub(crate) fn close_admin(&self) {
        let mut a = self.lock_admin();
        if let Some(c) = a.conn.as_mut() {
            c.shutdown();
        }
        a.conn = None;
        a.lost = true;
    }

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
        if a.recovering {
            return Err(HostError::Reconnecting);
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
        if a.recovering {
            return Err(HostError::Reconnecting);
        }
        a.conn = None;
        self.recover(a).map(drop)
    }

    /// Runs one admin command to completion. If the admin connection was lost, the
    /// association is re-established first (as long as the reconnect timers say), by this
    /// call or by the one already doing it, which this call then waits for.
    pub(crate) fn admin_exec(&self, req: Request) -> Result<Completion> {
        let mut a = self.lock_admin();
        while a.recovering {
            a = self
                .recovered
                .wait(a)
                .unwrap_or_else(PoisonError::into_inner);
        }
        if a.lost {
            return Err(HostError::Lost);
        }
        if a.conn.is_none() {
            a = self.recover(a)?;
        }
        self.admin_exec_locked(&mut a, req)
    }

    fn admin_exec_locked(&self, a: &mut Admin, req: Request) -> Result<Completion> {
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

    /// Re-establishes the association (a new admin connection): marks it recovering,
    /// releases the lock for the attempts (so that I/O queues and Aborts need not wait for
    /// them), and returns the lock with the new connection in place.
    fn recover<'a>(&'a self, mut a: MutexGuard<'a, Admin>) -> Result<MutexGuard<'a, Admin>> {
        /// Clears `recovering` if the attempts panic (else every later admin command would
        /// wait for good).
        struct ClearOnUnwind<'s>(&'s Shared);
        impl Drop for ClearOnUnwind<'_> {
            fn drop(&mut self) {
                self.0.lock_admin().recovering = false;
                self.0.recovered.notify_all();
            }
        }
        a.recovering = true;
        drop(a);
        let unwind = ClearOnUnwind(self);
        let r = self.reconnect_admin();
        // Normally the flag is cleared below, under the same lock as the new connection is
        // installed: no other call may start a recovery in between.
        std::mem::forget(unwind);
        let mut a = self.lock_admin();
        a.recovering = false;
        self.recovered.notify_all();
        match r {
            Ok((mut conn, core, info)) => {
                if a.lost {
                    // Closed for good while the attempts ran.
                    conn.shutdown();
                    return Err(HostError::Lost);
                }
                a.conn = Some(conn);
                a.core = Some(core);
                a.info = Some(info);
                a.generation += 1;
                Ok(a)
            }
            Err(e) => {
                if !self.shutting_down.load(Ordering::Relaxed) {
                    // ctrl_loss_tmo: the controller is given up.
                    a.lost = true;
                }
                Err(e)
            }
        }
    }

    /// Reconnects the admin queue (new association): the [`Reconnect`] timers say when
    /// (at once, then every `reconnect_delay`, none starting after `ctrl_loss_tmo`). Runs
    /// without the admin lock; fails only when the timers give up or the controller is shut
    /// down.
    fn reconnect_admin(&self) -> Result<(Connection, QueueCore, ControllerInfo)> {
        let mut timers = Reconnect::new(&self.opts, Instant::now());
        timers.handle_lost(Instant::now(), false);
        loop {
            if self.shutting_down.load(Ordering::Relaxed) {
                return Err(HostError::Lost);
            }
            let now = Instant::now();
            match timers.poll(now) {
                ReconnectAction::GiveUp(_) => return Err(HostError::Lost),
                // fast_io_fail_tmo is for I/O commands (their queues apply it): admin
                // commands wait for the reconnect, up to ctrl_loss_tmo.
                ReconnectAction::FailFast => {}
                ReconnectAction::Wait { until } => std::thread::sleep(until - now),
                ReconnectAction::Attempt => match bring_up(&self.opts) {
                    Ok((conn, core, info)) => {
                        // Bring-up ran admin commands to completion: the outage is over.
                        timers.handle_attempt(true, Instant::now());
                        let outage = timers.handle_command_completed(Instant::now());
                        tracing::info!(
                            cntlid = info.cntlid,
                            failed_attempts = outage.map_or(0, |o| o.failed_attempts),
                            "association re-established"
                        );
                        return Ok((conn, core, info));
                    }
                    Err(e) => {
                        // The loss was reported; failed attempts are summarised now and then.
                        let now = Instant::now();
                        timers.handle_attempt(false, now);
                        if let Some(o) = timers.poll_summary(now) {
                            tracing::warn!(
                                error = %e,
                                elapsed = ?o.elapsed,
                                failed_attempts = o.failed_attempts,
                                "reconnecting the admin queue failed"
                            );
                        } else {
                            tracing::debug!(error = %e, "reconnecting the admin queue failed");
                        }
                    }
                },
            }
        }
    }

    /// Sends Abort for `cid` on `sqid` (result ignored beyond logging).
    /// Never starts a reconnect of the admin queue (the I/O queue that asks must not wait
    /// for one): with the admin queue down, no Abort is sent and the command's second
    /// timeout resets its queue.
    pub(crate) fn abort(&self, sqid: u16, cid: u16) {
        let mut a = self.lock_admin();
        if a.lost || a.recovering || a.conn.is_none() {
            tracing::debug!(sqid, cid, "admin queue down; Abort not sent");
            return;
        }
        match self.admin_exec_locked(&mut a, cmd::abort(sqid, cid, 0)) {
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
            return Err(HostError::Timeout {
                what: "command completion",
                after: timeout,
            });
        }
        if let Err(e) = conn.poll(core, Some(deadline - now)) {
            // The completion may have arrived just before the connection closed.
            return core.take_completion_for(user_data).ok_or(e);
        }
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
pub(crate) fn bring_up(opts: &ConnectOptions) -> Result<(Connection, QueueCore, ControllerInfo)> {
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

/// The Keep Alive thread: a thin driver of [`KeepAlive`] over the admin queue.
pub(crate) fn keep_alive_loop(shared: Arc<Shared>, kato: Duration) {
    let mut timer = KeepAlive::new(kato, Instant::now());
    loop {
        let now = Instant::now();
        if let Some(due) = timer.poll_timeout() {
            let guard = shared.stop.lock().unwrap_or_else(|e| e.into_inner());
            let (guard, _) = shared
                .stop_cv
                .wait_timeout_while(guard, due.saturating_duration_since(now), |stop| !*stop)
                .unwrap_or_else(|e| e.into_inner());
            if *guard {
                return;
            }
        }
        let Some(req) = timer.poll_command(Instant::now()) else {
            continue;
        };
        let r = shared.admin_exec(req);
        timer.handle_completion(Instant::now());
        match r {
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
