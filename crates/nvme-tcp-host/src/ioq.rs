//! An I/O queue: submit commands, poll for completions, with reconnect and timeouts.
//!
//! An [`IoQueue`] is owned by one thread at a time (it is `Send`, not shared). The caller keeps
//! up to [`IoQueue::depth`] commands in flight with [`IoQueue::submit`] and collects finished
//! ones with [`IoQueue::poll`] + [`IoQueue::pop_completion`]; nothing is allocated per command
//! (slots are preallocated, buffers travel by ownership).
//!
//! When the connection breaks (socket error, protocol violation by the controller, a command
//! whose Abort also timed out) the queue reconnects by itself inside `poll`: first at once
//! (after `reconnect_delay` if the controller violated the protocol), then every
//! `reconnect_delay`, until `ctrl_loss_tmo`; commands that did not complete are re-issued on
//! the new connection, each at most `max_retries` times. After `fast_io_fail_tmo` they fail
//! instead of waiting, and so does every command submitted until a connection is back. Both
//! timeouts run from the first loss until a command completes on a new connection
//! ([`Reconnect`]); a command's own timeout is not restarted by a reconnect, and one that
//! expires while the queue is down fails then (no Abort, no second period).
//!
//! Logging: one WARN per outage with its cause, a WARN summary at most every
//! [`Reconnect::SUMMARY_EVERY`] while it lasts, an INFO when it ends, an ERROR when the queue
//! is given up; every single loss and attempt at DEBUG.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::assoc::{
    CommandTimeouts, LossKind, OutageSummary, Reconnect, ReconnectAction, TimeoutAction,
};
use crate::cmd;
use crate::conn::Connection;
use crate::session::{Shared, connect_queue};

use crate::error::{GiveUpReason, HostError, IoError, ProtocolError, Result};
use crate::offload::DdpNetdev;
use crate::queue::{Completion, QueueConfig, QueueCore, QueueStats, Request, SubmitError};

/// How often a reconnecting I/O queue looks whether the admin queue has re-established the
/// association (an attempt costs a lock and no socket until it has).
const ASSOCIATION_RECHECK: Duration = Duration::from_millis(20);

/// Names offloaded sockets towards their device (the kernel passes `struct sock *`): unique
/// in the process.
static NEXT_SOCK_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// One I/O queue (its own TCP connection).
pub struct IoQueue {
    shared: Arc<Shared>,
    qid: u16,
    queue_size: u16,
    core: QueueCore,
    conn: Option<Connection>,
    generation: u64,
    /// Reconnect timers (sans-IO).
    reconnect: Reconnect,
    dead: bool,
    /// The controller's offload device, probed when the queue was created.
    netdev: Option<DdpNetdev>,
    /// Command timeouts (sans-IO).
    timeouts: CommandTimeouts,
    /// Why the connection (or the last attempt at one) failed last, for the outage summary.
    last_cause: String,
    /// Commands that ran out of retries since the last outage summary.
    gave_up_cmds: u64,
    /// Successful completions when the connection was last re-established.
    succeeded_at_reconnect: u64,
    /// Why the last connection failed, as commands are told (the cause of a failfast).
    outage_cause: Option<IoError>,
}

impl std::fmt::Debug for IoQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IoQueue")
            .field("qid", &self.qid)
            .field("core", &self.core)
            .field("connected", &self.conn.is_some())
            .finish()
    }
}

impl IoQueue {
    pub(crate) fn connect(shared: Arc<Shared>, qid: u16, queue_size: u16) -> Result<Self> {
        let (cntlid, generation) = shared.association()?;
        let netdev = shared
            .opts
            .ddp_device
            .as_ref()
            .and_then(|d| DdpNetdev::probe(&d.0, shared.opts.tls.is_some()));
        let mut core = QueueCore::new(QueueConfig {
            qid,
            queue_size,
            hdgst: shared.opts.hdgst,
            ddgst: shared.opts.ddgst,
            cid_mode: netdev
                .as_ref()
                .map_or(shared.opts.cid_mode, DdpNetdev::cid_mode),
            in_capsule_max: 0,
        });
        core.set_zero_copy_tx(true);
        let mut conn = Connection::open(&shared.opts)?;
        conn.set_busy_poll(shared.opts.busy_poll);
        connect_queue(
            &shared.opts,
            &mut conn,
            &mut core,
            qid,
            queue_size,
            Some(cntlid),
        )?;
        let now = Instant::now();
        let mut q = Self {
            reconnect: Reconnect::new(&shared.opts, now),
            timeouts: CommandTimeouts::new(shared.opts.command_timeout, now),
            shared,
            qid,
            queue_size,
            core,
            conn: Some(conn),
            generation,
            dead: false,
            netdev,
            last_cause: String::new(),
            gave_up_cmds: 0,
            succeeded_at_reconnect: 0,
            outage_cause: None,
        };
        q.apply_in_capsule_limit();
        q.offload_socket();
        Ok(q)
    }

    /// `sk_add` for the queue's current connection (after its Connect succeeded). A kernel
    /// socket gives the host no TCP sequence numbers: when the device on the path keeps the
    /// connection's marks ([`crate::marks`]) it names the socket and knows the sequence
    /// number of stream offset 0; otherwise the device starts without framing and finds it
    /// through a resync.
    fn offload_socket(&mut self) {
        let Some(netdev) = &self.netdev else { return };
        let flow = self.conn.as_ref().and_then(|c| c.flow());
        let (sk, isn) = match flow {
            Some(f) => (f.sock_id(), Some(f.isn())),
            None => (
                ulp_ddp::SockId(NEXT_SOCK_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed)),
                None,
            ),
        };
        // SAFETY: sched_getcpu takes no arguments and has no preconditions; a negative value
        // (unknown) becomes 0.
        let cpu = u32::try_from(unsafe { libc::sched_getcpu() }).unwrap_or(0);
        if let Err(e) = self.core.attach_offload(netdev, sk, isn, cpu) {
            tracing::warn!(qid = self.qid, error = %e, "ULP DDP sk_add failed; no offload");
        }
    }

    fn apply_in_capsule_limit(&mut self) {
        if let Ok(info) = self.shared.info_snapshot() {
            self.core.set_in_capsule_max(info.in_capsule_size);
        }
    }

    /// Queue id (1-based).
    pub fn qid(&self) -> u16 {
        self.qid
    }
    /// Commands that can be in flight at once (`queue_size - 1`).
    pub fn depth(&self) -> usize {
        self.core.depth()
    }
    /// Commands in flight.
    pub fn in_flight(&self) -> usize {
        self.core.in_flight()
    }
    /// Counters.
    pub fn stats(&self) -> QueueStats {
        self.core.stats()
    }
    /// True while the connection is up.
    pub fn is_connected(&self) -> bool {
        self.conn.is_some()
    }
    /// True while the queue's socket is offloaded to the ULP DDP device.
    pub fn is_offloaded(&self) -> bool {
        self.core.is_offloaded()
    }
    /// The sans-IO core (read-only).
    pub fn core(&self) -> &QueueCore {
        &self.core
    }

    /// Queues a command; it goes out at the next [`IoQueue::poll`] (or [`IoQueue::flush`]),
    /// batched with the others submitted meanwhile. While reconnecting, it waits for the new
    /// connection, unless `fast_io_fail_tmo` has expired: then it completes at once with
    /// [`IoError::GaveUp`] ([`GiveUpReason::FastIoFail`], source: why the connection failed)
    /// until a connection is back. Fails with the buffer returned if the queue is full or dead.
    pub fn submit(&mut self, req: Request) -> std::result::Result<u16, SubmitError> {
        if self.dead {
            return Err(SubmitError {
                reason: crate::queue::SubmitErrorKind::Dead,
                buf: req.buf,
            });
        }
        let cid = self.core.submit(req, Instant::now())?;
        if self.conn.is_none() && self.reconnect.fails_fast() {
            let last = self
                .outage_cause
                .clone()
                .unwrap_or(IoError::QueueLost("connection lost"));
            self.core.fail_command(
                cid,
                IoError::GaveUp {
                    attempts: 0,
                    reason: GiveUpReason::FastIoFail,
                    last: Box::new(last),
                },
            );
        }
        Ok(cid)
    }

    /// Sends what was submitted without waiting for anything.
    pub fn flush(&mut self) -> Result<()> {
        if let Some(c) = self.conn.as_mut()
            && let Err(e) = c.flush(&mut self.core)
        {
            self.connection_lost(e);
        }
        Ok(())
    }

    /// The next finished command, if any.
    pub fn pop_completion(&mut self) -> Option<Completion> {
        self.core.pop_completion()
    }

    /// Sends pending commands and processes whatever the controller sent, waiting up to
    /// `timeout` for something to arrive if nothing is ready. Handles reconnects and command
    /// timeouts. Returns the number of completions ready. Fails only when the controller is
    /// lost for good (`ctrl_loss_tmo` expired); the commands then fail with
    /// [`IoError::GaveUp`] (those that were in flight on a failed connection) or
    /// [`IoError::QueueLost`].
    pub fn poll(&mut self, timeout: Duration) -> Result<usize> {
        let now = Instant::now();
        if self.timeouts.handle_timeout(now) {
            self.check_timeouts(now);
        }
        if self.dead {
            return if self.core.completions_ready() > 0 {
                Ok(self.core.completions_ready())
            } else {
                Err(HostError::Lost)
            };
        }
        match self.conn.as_mut() {
            Some(conn) => {
                let wait = if self.core.completions_ready() > 0 {
                    None
                } else {
                    Some(timeout)
                };
                if let Err(e) = conn.poll(&mut self.core, wait) {
                    self.connection_lost(e);
                }
            }
            None => self.reconnect_step(now, timeout),
        }
        self.outage_progress(Instant::now());
        Ok(self.core.completions_ready())
    }

    /// Ends an outage once a command completed on the new connection; otherwise summarises
    /// it now and then.
    fn outage_progress(&mut self, now: Instant) {
        if !self.reconnect.in_outage() {
            return;
        }
        if self.conn.is_some()
            && self.core.stats().succeeded > self.succeeded_at_reconnect
            && let Some(s) = self.reconnect.handle_command_completed(now)
        {
            self.log_recovered(&s);
            return;
        }
        if let Some(s) = self.reconnect.poll_summary(now) {
            tracing::warn!(
                qid = self.qid,
                elapsed = ?s.elapsed,
                losses = s.losses,
                failed_attempts = s.failed_attempts,
                reconnects = s.reconnects,
                commands_given_up = std::mem::take(&mut self.gave_up_cmds),
                last_error = %self.last_cause,
                "I/O queue still recovering"
            );
        }
    }

    fn log_recovered(&self, s: &OutageSummary) {
        tracing::info!(
            qid = self.qid,
            elapsed = ?s.elapsed,
            losses = s.losses,
            reconnects = s.reconnects,
            "I/O queue recovered"
        );
    }

    /// Polls until the command submitted with `user_data` completes (other completions stay
    /// queued). Convenience for simple callers.
    pub fn wait_for(&mut self, user_data: u64) -> Result<Completion> {
        loop {
            if let Some(c) = self.core.take_completion_for(user_data) {
                return Ok(c);
            }
            self.poll(Duration::from_millis(100))?;
        }
    }

    /// Submits and waits (blocking convenience).
    pub fn execute(&mut self, req: Request) -> Result<Completion> {
        let ud = req.user_data;
        self.submit(req)
            .map_err(|e| HostError::Invalid(format!("submit: {}", e.reason)))?;
        self.wait_for(ud)
    }

    /// Closes the connection at once, without waiting for the controller: commands still in
    /// flight fail ([`IoError::QueueLost`]) and their buffers are dropped with the queue
    /// (those lent to an offload device are taken back first).
    pub fn close(mut self) {
        if let Some(c) = self.conn.as_mut() {
            c.shutdown();
        }
        self.conn = None;
        self.core.detach_offload();
        self.core.fail_all(IoError::QueueLost("queue closed"));
    }

    /// Drops the connection after an error; reconnecting starts at the next poll. The
    /// commands in flight on it have used an attempt ([`QueueCore::connection_failed`]).
    fn connection_lost(&mut self, e: HostError) {
        let now = Instant::now();
        if let Some(c) = self.conn.as_mut() {
            c.shutdown();
        }
        self.conn = None;
        // The socket is gone: so is its offload context (sk_del; buffers come back).
        self.core.detach_offload();
        let violation = matches!(&e, HostError::Protocol(p) if *p != ProtocolError::Closed);
        let cause = IoError::from_connection_loss(&e);
        let max_retries = self.shared.opts.max_retries;
        let failed = self.core.connection_failed(&cause, max_retries);
        self.outage_cause = Some(cause);
        self.gave_up_cmds += failed as u64;
        match self.reconnect.handle_lost(now, violation) {
            LossKind::First => {
                tracing::warn!(qid = self.qid, error = %e, "I/O queue connection lost; reconnecting");
            }
            LossKind::Repeated | LossKind::Again => {
                tracing::debug!(qid = self.qid, error = %e, "I/O queue connection lost again");
            }
        }
        if failed > 0 {
            tracing::debug!(
                qid = self.qid,
                failed,
                max_retries,
                "commands failed: retry limit reached"
            );
        }
        self.last_cause = e.to_string();
        if let Some(why) = self.reconnect.given_up() {
            self.give_up(why);
        }
    }

    fn give_up(&mut self, why: &'static str) {
        if !self.dead {
            tracing::error!(
                qid = self.qid,
                why,
                last_error = %self.last_cause,
                "I/O queue given up"
            );
        }
        self.dead = true;
        self.core.fail_waiting(GiveUpReason::CtrlLoss);
    }

    /// A thin driver of the [`Reconnect`] timers.
    ///
    /// While the admin queue re-establishes the association, an attempt is tried again every
    /// [`ASSOCIATION_RECHECK`] (within `timeout`).
    fn reconnect_step(&mut self, now: Instant, timeout: Duration) {
        loop {
            match self.reconnect.poll(now) {
                ReconnectAction::GiveUp(why) => return self.give_up(why),
                ReconnectAction::FailFast => {
                    tracing::warn!(
                        qid = self.qid,
                        last_error = %self.last_cause,
                        "fast_io_fail_tmo expired; failing the waiting commands"
                    );
                    self.core.fail_waiting(GiveUpReason::FastIoFail);
                }
                ReconnectAction::Wait { until } => {
                    std::thread::sleep((until - now).min(timeout));
                    return;
                }
                ReconnectAction::Attempt => break,
            }
        }
        // A command whose timeout passed since the last check is not re-sent.
        self.check_timeouts(now);
        match self.try_reconnect() {
            Ok(()) => {
                tracing::debug!(qid = self.qid, "I/O queue reconnected");
                let now = Instant::now();
                self.reconnect.handle_attempt(true, now);
                self.succeeded_at_reconnect = self.core.stats().succeeded;
                // Nothing to re-send: the outage is over (nothing can prove it otherwise).
                if self.core.in_flight() == 0
                    && let Some(s) = self.reconnect.handle_command_completed(now)
                {
                    self.log_recovered(&s);
                }
            }
            Err(HostError::Lost) => self.give_up("controller lost"),
            // The admin queue is reconnecting: not a failed attempt of this queue (the cause
            // of the outage stays what it was, and the next attempt is not put off by
            // `reconnect_delay`); look again shortly, so the queue follows the new
            // association at once, while its own timers keep running.
            Err(HostError::Reconnecting) => {
                tracing::trace!(
                    qid = self.qid,
                    "I/O queue reconnect waits for the association"
                );
                std::thread::sleep(ASSOCIATION_RECHECK.min(timeout));
            }
            Err(e) => {
                tracing::debug!(qid = self.qid, error = %e, "I/O queue reconnect failed");
                self.last_cause = e.to_string();
                self.reconnect.handle_attempt(false, Instant::now());
            }
        }
    }

    fn try_reconnect(&mut self) -> Result<()> {
        let opts = self.shared.opts.clone();
        for attempt in 0..2 {
            let (cntlid, generation) = self.shared.association()?;
            let mut conn = Connection::open(&opts)?;
            conn.set_busy_poll(opts.busy_poll);
            match connect_queue(
                &opts,
                &mut conn,
                &mut self.core,
                self.qid,
                self.queue_size,
                Some(cntlid),
            ) {
                Ok(_) => {
                    self.generation = generation;
                    self.conn = Some(conn);
                    self.apply_in_capsule_limit();
                    self.offload_socket();
                    return Ok(());
                }
                Err(HostError::ConnectRejected { status, .. })
                    if attempt == 0 && status.sct == 1 && status.sc == 0x82 =>
                {
                    // Connect Invalid Parameters: the controller does not know our controller
                    // id any more (it restarted). Re-establish the association through the
                    // admin queue, then try again. Other refusals (busy, queue id still in
                    // use) are retried after reconnect_delay instead.
                    tracing::info!(qid = self.qid, %status, "I/O Connect refused; re-associating");
                    self.shared.reassociate(generation)?;
                }
                Err(e) => return Err(e),
            }
        }
        Err(HostError::Timeout {
            what: "I/O queue Connect",
            after: opts.connect_timeout,
        })
    }

    /// Command timeouts ([`CommandTimeouts`] decides): the first expiry sends Abort; the
    /// second fails the command and resets the queue. While the queue is down, an expired
    /// command fails at once instead (nothing to abort: the controller dropped it with the
    /// connection), so a reconnect never gives it another period.
    fn check_timeouts(&mut self, now: Instant) {
        if self.conn.is_none() {
            let failed = self.timeouts.fail_expired_while_down(&mut self.core, now);
            if failed > 0 {
                tracing::warn!(
                    qid = self.qid,
                    commands = failed,
                    timeout = ?self.shared.opts.command_timeout,
                    last_error = %self.last_cause,
                    "commands timed out while reconnecting; failed"
                );
            }
            return;
        }
        // One WARN per check, however many commands expired together (a full queue does).
        let mut aborted: Option<(u16, usize)> = None;
        while let Some(action) = self.timeouts.poll_action(&mut self.core, now) {
            match action {
                TimeoutAction::Abort { cid } => {
                    tracing::debug!(qid = self.qid, cid, "command timed out; sending Abort");
                    let (first, n) = aborted.get_or_insert((cid, 0));
                    *n += 1;
                    if *n == 1 {
                        tracing::warn!(
                            qid = self.qid,
                            cid = *first,
                            timeout = ?self.shared.opts.command_timeout,
                            "command timed out; sending Abort"
                        );
                    }
                    self.shared.abort(self.qid, cid);
                }
                TimeoutAction::Reset { cid } => {
                    tracing::warn!(
                        qid = self.qid,
                        cid,
                        "command timed out after Abort; resetting the queue"
                    );
                    if self.conn.is_some() {
                        self.connection_lost(HostError::Timeout {
                            what: "completion of an aborted command",
                            after: self.shared.opts.command_timeout,
                        });
                    }
                }
            }
        }
        if let Some((_, n)) = aborted
            && n > 1
        {
            tracing::warn!(
                qid = self.qid,
                commands = n,
                "commands timed out together; Abort sent for each"
            );
        }
    }
}

/// Helpers to build and submit the NVM I/O commands.
impl IoQueue {
    /// Submits a Read of `nlb` blocks at `slba` into `buf`.
    pub fn submit_read(
        &mut self,
        nsid: u32,
        slba: u64,
        nlb: u32,
        buf: crate::IoBuf,
        user_data: u64,
    ) -> std::result::Result<u16, SubmitError> {
        self.submit_blocks(cmd::read, nsid, slba, nlb, buf, user_data)
    }

    /// Submits a Write of `nlb` blocks at `slba` from `buf`.
    pub fn submit_write(
        &mut self,
        nsid: u32,
        slba: u64,
        nlb: u32,
        buf: crate::IoBuf,
        user_data: u64,
    ) -> std::result::Result<u16, SubmitError> {
        self.submit_blocks(cmd::write, nsid, slba, nlb, buf, user_data)
    }

    /// Checks the block count (1..=65536, what NLB can express) and submits the command
    /// `build` makes; an invalid count hands the buffer back.
    fn submit_blocks(
        &mut self,
        build: fn(u32, u64, u32, crate::IoBuf, u64) -> Request,
        nsid: u32,
        slba: u64,
        nlb: u32,
        buf: crate::IoBuf,
        user_data: u64,
    ) -> std::result::Result<u16, SubmitError> {
        if !(1..=65536).contains(&nlb) {
            return Err(SubmitError {
                reason: crate::queue::SubmitErrorKind::Invalid,
                buf: Some(buf),
            });
        }
        self.submit(build(nsid, slba, nlb, buf, user_data))
    }
}
