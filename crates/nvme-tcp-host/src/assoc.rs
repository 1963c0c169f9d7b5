//! The controller association as sans-IO state machines, in the style of quinn-proto: a
//! driver feeds them completions and the clock and asks them what to do next; they never
//! touch a socket and never sleep.
//!
//! * [`QueueConnect`]: one queue's connection set-up — wait for ICResp, send Fabrics Connect
//!   (admin or I/O queue), mark the queue live on success.
//! * [`AdminBringUp`]: the admin queue's association — Connect, then CAP and VS, CC.EN,
//!   CSTS.RDY polled until ready (within CAP.TO), Identify Controller, Set Features Number of
//!   Queues — ending with the [`ControllerInfo`] I/O queues are connected under.
//! * [`KeepAlive`]: a Keep Alive command every KATO/2 while the association lives.
//! * [`CommandTimeouts`]: a command that outlives the command timeout is aborted; one that
//!   outlives it again after its Abort fails and the queue's connection is reset.
//! * [`Reconnect`]: after a lost connection, an attempt at once (after `reconnect_delay` if
//!   the controller violated the protocol), then one every `reconnect_delay`; commands fail
//!   after `fast_io_fail_tmo`; no attempt starts after `ctrl_loss_tmo` (as Linux, which gives
//!   up after `ctrl_loss_tmo / reconnect_delay` attempts). Both are measured from the first
//!   loss until a command completes on a new connection.
//!
//! Both are driven the same way, over any transport that moves the [`QueueCore`]'s bytes:
//!
//! ```text
//! loop {
//!     match sm.poll(&mut core, now)? {
//!         Poll::Ready(v) => break v,
//!         Poll::Pending { wake_at } => { /* move bytes; wait until data or wake_at */ }
//!     }
//! }
//! ```
//!
//! `poll` takes the state machine's completions from the core (`handle_completion`), submits
//! its next command (`poll_command`) and says when it next needs the clock (`poll_timeout`);
//! the three steps are public on their own for drivers that route completions themselves.
//! The blocking [`crate::Controller`] drives them over kernel sockets; the simulated network
//! of `ddp-sim` drives the very same machines over its simulated wire.

use std::time::{Duration, Instant};

use nvme_tcp_wire::nvme::regs::{CAP, CC, CSTS, Cap, Cc, Csts, VS, Vs};
use nvme_tcp_wire::nvme::{
    Feature, IdentifyCommand, IdentifyController, NumberOfQueues, PropertySize,
};

use crate::buf::IoBuf;
use crate::cmd;
use crate::error::{HostError, IoError, Result};
use crate::offload::DdpNetdev;
use crate::options::ConnectOptions;
use crate::queue::{Completion, CqeInfo, Phase, QueueCore, Request};

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

/// What a state machine needs next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Poll<T> {
    /// Finished with `T`.
    Ready(T),
    /// Waiting for the controller; call `poll` again when bytes arrived, or at `wake_at` at
    /// the latest (a retry or a deadline).
    Pending {
        /// When the machine needs the clock, if it does.
        wake_at: Option<Instant>,
    },
}

/// One queue's connection set-up: ICResp, then Fabrics Connect.
#[derive(Debug)]
pub struct QueueConnect {
    connect: Option<Request>,
    qid: u16,
    sent: bool,
    deadline: Instant,
    opts: ConnectOptions,
    /// In-band authentication, when the Connect response asked for it.
    auth: Option<crate::auth::QueueAuth>,
    timeout: Duration,
}

impl QueueConnect {
    /// Set-up of queue `qid` (0 = admin) with `queue_size` entries under controller `cntlid`
    /// (`None` for the admin queue: the controller assigns one). The whole set-up must finish
    /// within `opts.connect_timeout` from `now`.
    pub fn new(
        opts: &ConnectOptions,
        qid: u16,
        queue_size: u16,
        cntlid: Option<u16>,
        now: Instant,
    ) -> Result<Self> {
        Ok(Self {
            connect: Some(cmd::connect(
                opts,
                qid,
                queue_size,
                cntlid,
                INTERNAL_USER_DATA,
            )?),
            qid,
            sent: false,
            deadline: now + opts.connect_timeout,
            opts: opts.clone(),
            auth: None,
            timeout: opts.connect_timeout,
        })
    }

    /// The Connect command to submit, once the core has its ICResp (submit it with
    /// [`QueueCore::submit_now`]).
    pub fn poll_command(&mut self, core: &QueueCore) -> Option<Request> {
        if self.sent || core.phase() != Phase::Connecting {
            return None;
        }
        self.sent = true;
        self.connect.take()
    }

    /// The Connect's completion: the queue goes live; its CQE comes back (DW0 holds the
    /// controller ID on the admin queue).
    pub fn handle_completion(&mut self, c: Completion, core: &mut QueueCore) -> Result<CqeInfo> {
        match c.result {
            Ok(cqe) => {
                core.set_live();
                Ok(cqe)
            }
            Err(IoError::Status(status)) => Err(HostError::ConnectRejected {
                qid: self.qid,
                status,
            }),
            Err(e) => Err(HostError::Command(e)),
        }
    }

    /// The deadline of the set-up.
    pub fn poll_timeout(&self) -> Option<Instant> {
        Some(self.deadline)
    }

    /// One step: submit, take the completion, authenticate when the controller asks for it
    /// (see [`crate::auth`]), check the deadline.
    pub fn poll(&mut self, core: &mut QueueCore, now: Instant) -> Result<Poll<CqeInfo>> {
        if let Some(req) = self.poll_command(core)
            && let Err(e) = core.submit_now(req, now)
        {
            return Err(HostError::Invalid(format!("Connect submit: {}", e.reason)));
        }
        if let Some(c) = core.take_completion_for(INTERNAL_USER_DATA) {
            if let Some(auth) = &mut self.auth {
                if let Some(cqe) = auth.handle_completion(c)? {
                    return Ok(Poll::Ready(cqe));
                }
            } else {
                let cqe = self.handle_completion(c, core)?;
                match crate::auth::QueueAuth::after_connect(&self.opts, self.qid, cqe)? {
                    None => return Ok(Poll::Ready(cqe)),
                    Some(a) => self.auth = Some(a),
                }
            }
        }
        if let Some(req) = self
            .auth
            .as_mut()
            .and_then(|a| a.poll_command(INTERNAL_USER_DATA))
            && let Err(e) = core.submit(req, now)
        {
            return Err(HostError::Invalid(format!(
                "authentication submit: {}",
                e.reason
            )));
        }
        if now >= self.deadline {
            return Err(HostError::Timeout {
                what: if core.phase() == Phase::WaitIcResp {
                    "ICResp"
                } else if self.auth.is_some() {
                    "authentication"
                } else {
                    "Connect completion"
                },
                after: self.timeout,
            });
        }
        Ok(Poll::Pending {
            wake_at: self.poll_timeout(),
        })
    }
}

/// The steps of the admin queue's bring-up, named after the command in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Connect,
    GetCap,
    GetVs,
    SetCc,
    /// Polling CSTS; the next Property Get goes out at `retry_at`.
    GetCsts {
        retry_at: Option<Instant>,
    },
    Identify,
    NumberOfQueues,
    Done,
}

/// `user_data` values of the bring-up commands.
const UD_CAP: u64 = 1;
const UD_VS: u64 = 2;
const UD_CC: u64 = 3;
const UD_CSTS: u64 = 4;
const UD_IDENTIFY: u64 = 5;
const UD_NOQ: u64 = 6;

/// How often CSTS is read while waiting for CSTS.RDY.
const CSTS_POLL: Duration = Duration::from_millis(10);

/// The admin queue's association: Connect, CAP/VS, CC.EN, CSTS.RDY, Identify Controller,
/// Number of Queues.
#[derive(Debug)]
pub struct AdminBringUp {
    opts: ConnectOptions,
    connect: QueueConnect,
    step: Step,
    /// A command of the current step is in flight.
    in_flight: bool,
    /// Deadline of the command in flight (bring-up commands get at least the connect
    /// timeout, so a short I/O timeout does not fail connecting on a busy machine).
    cmd_deadline: Option<Instant>,
    cntlid: u16,
    cap: Cap,
    vs: Vs,
    ready_by: Option<Instant>,
    identify: Vec<u8>,
    info: Option<ControllerInfo>,
}

impl AdminBringUp {
    /// The bring-up of a controller with `opts`, starting `now` (the admin queue's core must
    /// be new, its ICReq not yet answered).
    pub fn new(opts: &ConnectOptions, now: Instant) -> Result<Self> {
        Ok(Self {
            connect: QueueConnect::new(opts, 0, crate::options::ADMIN_QUEUE_SIZE, None, now)?,
            opts: opts.clone(),
            step: Step::Connect,
            in_flight: false,
            cmd_deadline: None,
            cntlid: 0,
            cap: Cap(0),
            vs: Vs(0),
            ready_by: None,
            identify: Vec::new(),
            info: None,
        })
    }

    fn cmd_timeout(&self) -> Duration {
        self.opts.command_timeout.max(self.opts.connect_timeout)
    }

    /// The next admin command of the bring-up, if one is due (submit it with
    /// [`QueueCore::submit`]). `None` while a command is in flight or a retry is not due.
    pub fn poll_command(&mut self, now: Instant) -> Option<Request> {
        if self.in_flight {
            return None;
        }
        let req = match self.step {
            Step::Connect | Step::Done => return None,
            Step::GetCap => cmd::property_get(CAP, PropertySize::EightBytes, UD_CAP),
            Step::GetVs => cmd::property_get(VS, PropertySize::FourBytes, UD_VS),
            Step::SetCc => cmd::property_set(CC, Cc::enable_nvm().0, UD_CC),
            Step::GetCsts { retry_at } => {
                if retry_at.is_some_and(|t| now < t) {
                    return None;
                }
                cmd::property_get(CSTS, PropertySize::FourBytes, UD_CSTS)
            }
            Step::Identify => cmd::identify(
                IdentifyCommand::controller(),
                IoBuf::Contig(vec![0; 4096]),
                UD_IDENTIFY,
            ),
            Step::NumberOfQueues => {
                let n = self.opts.nr_io_queues.saturating_sub(1);
                cmd::set_features(
                    Feature::NumberOfQueues(NumberOfQueues { nsq: n, ncq: n }),
                    UD_NOQ,
                )
            }
        };
        self.in_flight = true;
        self.cmd_deadline = Some(now + self.cmd_timeout());
        Some(req)
    }

    /// The completion of the bring-up command in flight.
    pub fn handle_completion(&mut self, c: Completion, now: Instant) -> Result<()> {
        self.in_flight = false;
        self.cmd_deadline = None;
        let buf = c.buf;
        let cqe = c.result.map_err(HostError::Command)?;
        self.step = match self.step {
            Step::Connect | Step::Done => self.step,
            Step::GetCap => {
                self.cap = Cap(u64::from(cqe.dw0) | (u64::from(cqe.dw1) << 32));
                Step::GetVs
            }
            Step::GetVs => {
                self.vs = Vs(cqe.dw0);
                Step::SetCc
            }
            Step::SetCc => {
                // CAP.TO is in 500 ms units; give at least one second.
                self.ready_by =
                    Some(now + Duration::from_millis(self.cap.timeout_ms().max(1000) as u64));
                Step::GetCsts { retry_at: None }
            }
            Step::GetCsts { .. } => {
                let csts = Csts(cqe.dw0);
                if csts.cfs() {
                    return Err(HostError::NotReady(
                        "CSTS.CFS (controller fatal status)".into(),
                    ));
                }
                if csts.rdy() {
                    Step::Identify
                } else if self.ready_by.is_some_and(|t| now >= t) {
                    return Err(HostError::NotReady(format!(
                        "CSTS.RDY not set within CAP.TO ({} ms)",
                        self.cap.timeout_ms()
                    )));
                } else {
                    Step::GetCsts {
                        retry_at: Some(now + CSTS_POLL),
                    }
                }
            }
            Step::Identify => {
                self.identify = buf.map(|b| b.to_vec()).unwrap_or_default();
                let id = IdentifyController::parse(&self.identify)
                    .map_err(|e| HostError::Unsupported(format!("Identify Controller: {e}")))?;
                if id.icdoff.get() != 0 {
                    return Err(HostError::Unsupported(format!(
                        "ICDOFF {} (only 0 is supported)",
                        id.icdoff.get()
                    )));
                }
                if self.opts.nr_io_queues > 0 {
                    Step::NumberOfQueues
                } else {
                    self.finish(0)?;
                    Step::Done
                }
            }
            Step::NumberOfQueues => {
                let got = NumberOfQueues::from_dword(cqe.dw0);
                let granted = got
                    .nsq
                    .min(got.ncq)
                    .saturating_add(1)
                    .min(self.opts.nr_io_queues);
                self.finish(granted)?;
                Step::Done
            }
        };
        Ok(())
    }

    fn finish(&mut self, granted: u16) -> Result<()> {
        let id = IdentifyController::parse(&self.identify)
            .map_err(|e| HostError::Unsupported(format!("Identify Controller: {e}")))?;
        let mut max_transfer = id.max_data_transfer_bytes(self.cap.mpsmin());
        // An offload device caps the I/O size by its SG list length (as the kernel caps
        // max_segments / max_hw_sectors): the host's buffers are 4 KiB pages at worst.
        if let Some(cap) = self
            .opts
            .ddp_device
            .as_ref()
            .and_then(|d| DdpNetdev::probe(&d.0, self.opts.tls.is_some()))
            .and_then(|n| n.max_transfer(4096))
        {
            max_transfer = Some(max_transfer.map_or(cap as u64, |m| m.min(cap as u64)));
        }
        self.info = Some(ControllerInfo {
            cntlid: self.cntlid,
            cap: self.cap,
            vs: self.vs,
            in_capsule_size: id.in_capsule_data_size() as usize,
            identify: std::mem::take(&mut self.identify),
            io_queues_granted: granted,
            max_transfer,
        });
        Ok(())
    }

    /// When the bring-up next needs the clock: a CSTS retry or the deadline of the command in
    /// flight.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.step {
            Step::Connect => self.connect.poll_timeout(),
            Step::GetCsts { retry_at } if !self.in_flight => retry_at,
            _ => self.cmd_deadline,
        }
    }

    /// One step: drives the queue's Connect, then the bring-up commands, through `core`.
    pub fn poll(&mut self, core: &mut QueueCore, now: Instant) -> Result<Poll<ControllerInfo>> {
        if self.step == Step::Connect {
            match self.connect.poll(core, now)? {
                Poll::Ready(cqe) => {
                    self.cntlid = cqe.dw0 as u16;
                    self.step = Step::GetCap;
                }
                Poll::Pending { wake_at } => return Ok(Poll::Pending { wake_at }),
            }
        }
        loop {
            if let Some(info) = self.info.take() {
                return Ok(Poll::Ready(info));
            }
            if let Some(req) = self.poll_command(now) {
                let ud = req.user_data;
                if let Err(e) = core.submit(req, now) {
                    return Err(HostError::Invalid(format!(
                        "admin submit ({ud}): {}",
                        e.reason
                    )));
                }
            }
            let ud = match self.step {
                Step::GetCap => UD_CAP,
                Step::GetVs => UD_VS,
                Step::SetCc => UD_CC,
                Step::GetCsts { .. } => UD_CSTS,
                Step::Identify => UD_IDENTIFY,
                Step::NumberOfQueues => UD_NOQ,
                Step::Connect | Step::Done => return Err(HostError::Lost),
            };
            match core.take_completion_for(ud) {
                Some(c) if self.in_flight => self.handle_completion(c, now)?,
                _ => break,
            }
        }
        if self.cmd_deadline.is_some_and(|t| now >= t) {
            return Err(HostError::Timeout {
                what: "admin command completion",
                after: self.cmd_timeout(),
            });
        }
        Ok(Poll::Pending {
            wake_at: self.poll_timeout(),
        })
    }
}

/// Keep Alive (NVMe Base 2.0, Keep Alive Timer): one Keep Alive command every KATO/2 (as the
/// Linux host), never two at a time.
#[derive(Debug, Clone)]
pub struct KeepAlive {
    period: Duration,
    next: Instant,
    outstanding: bool,
}

impl KeepAlive {
    /// Shortest period (a tiny KATO would otherwise flood the admin queue).
    pub const MIN_PERIOD: Duration = Duration::from_millis(100);

    /// Keep Alive for a KATO of `kato`, starting at `now`.
    pub fn new(kato: Duration, now: Instant) -> Self {
        let period = (kato / 2).max(Self::MIN_PERIOD);
        Self {
            period,
            next: now + period,
            outstanding: false,
        }
    }

    /// When the next Keep Alive is due; `None` while one is outstanding.
    pub fn poll_timeout(&self) -> Option<Instant> {
        (!self.outstanding).then_some(self.next)
    }

    /// The Keep Alive command to send at `now`, if one is due.
    pub fn poll_command(&mut self, now: Instant) -> Option<Request> {
        if self.outstanding || now < self.next {
            return None;
        }
        self.outstanding = true;
        Some(cmd::keep_alive(0))
    }

    /// The Keep Alive sent has completed (or failed) at `now`: the next is due a period later.
    pub fn handle_completion(&mut self, now: Instant) {
        self.outstanding = false;
        self.next = now + self.period;
    }
}

/// What to do about a command that timed out (see [`CommandTimeouts`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeoutAction {
    /// First expiry: send Abort for the command (its timer restarted).
    Abort {
        /// The command.
        cid: u16,
    },
    /// Second expiry, after an Abort: the command failed with [`IoError::Timeout`]; reset
    /// the queue's connection (the controller no longer answers it).
    Reset {
        /// The command.
        cid: u16,
    },
}

/// Command timeouts of one queue, checked every [`CommandTimeouts::CHECK_EVERY`].
#[derive(Debug, Clone)]
pub struct CommandTimeouts {
    timeout: Duration,
    next_check: Instant,
}

impl CommandTimeouts {
    /// How often commands in flight are checked.
    pub const CHECK_EVERY: Duration = Duration::from_millis(100);

    /// Timeouts of `timeout` per command, first checked a period after `now`.
    pub fn new(timeout: Duration, now: Instant) -> Self {
        Self {
            timeout,
            next_check: now + Self::CHECK_EVERY,
        }
    }

    /// When the next check is due.
    pub fn poll_timeout(&self) -> Instant {
        self.next_check
    }

    /// The clock reached `now`: true if a check is due (then take the actions with
    /// [`CommandTimeouts::poll_action`]); the next check is due a period later.
    pub fn handle_timeout(&mut self, now: Instant) -> bool {
        if now < self.next_check {
            return false;
        }
        self.next_check = now + Self::CHECK_EVERY;
        true
    }

    /// The next action for an expired command of `core` at `now`, oldest first, already
    /// applied to the core (Abort marked sent, or the command failed); `None` when no
    /// command has expired.
    pub fn poll_action(&mut self, core: &mut QueueCore, now: Instant) -> Option<TimeoutAction> {
        let (cid, aborted) = core.expired(now, self.timeout)?;
        if aborted {
            core.fail_command(
                cid,
                IoError::Timeout {
                    after: self.timeout,
                },
            );
            Some(TimeoutAction::Reset { cid })
        } else {
            core.mark_abort_sent(cid, now);
            Some(TimeoutAction::Abort { cid })
        }
    }

    /// The check due at `now` while the queue is down (no connection): every command whose
    /// timeout has passed fails at once with [`crate::GiveUpReason::CommandTimeout`] (source:
    /// the failure of the last connection it was sent on), as Linux completes a request that
    /// times out while the controller is not live. It is neither re-sent nor aborted once the
    /// queue is back, so it never gets more than its timeout. Returns how many failed.
    pub fn fail_expired_while_down(&mut self, core: &mut QueueCore, now: Instant) -> usize {
        core.fail_expired_waiting(now, self.timeout)
    }
}

/// What a lost connection's driver does next (see [`Reconnect`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReconnectAction {
    /// Try to connect now; report the outcome with [`Reconnect::handle_attempt`].
    Attempt,
    /// Nothing before `until`.
    Wait {
        /// When to poll again.
        until: Instant,
    },
    /// `fast_io_fail_tmo` passed: fail the commands waiting for the connection (reported
    /// once per outage), then poll again.
    FailFast,
    /// Stop reconnecting: the controller is lost.
    GiveUp(&'static str),
}

/// How a connection was lost (see [`Reconnect::handle_lost`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LossKind {
    /// The first loss of an outage: the driver reports it (once) with its cause.
    First,
    /// Another loss in the same outage (the new connection failed before a command
    /// completed on it): counted for [`Reconnect::poll_summary`], not reported on its own.
    Repeated,
    /// Reported again while already disconnected: nothing changed.
    Again,
}

/// An outage so far, for the rate-limited report ([`Reconnect::poll_summary`]) and the end of
/// an outage ([`Reconnect::handle_command_completed`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutageSummary {
    /// Since the first loss.
    pub elapsed: Duration,
    /// Connections lost (the first loss included).
    pub losses: u32,
    /// Reconnect attempts that failed.
    pub failed_attempts: u32,
    /// Connections re-established.
    pub reconnects: u32,
}

/// The reconnect timers of one connection (`reconnect_delay`, `fast_io_fail_tmo`,
/// `ctrl_loss_tmo`).
///
/// An *outage* starts at the first loss of a working connection and ends only when a
/// command completes on a new connection ([`Reconnect::handle_command_completed`]), not when
/// a TCP connect or a Fabrics Connect succeeds: against a controller that breaks every new
/// connection, `fast_io_fail_tmo` and `ctrl_loss_tmo` still expire. The first attempt after
/// the first loss goes out at once, unless the connection died of a protocol violation; every
/// other attempt waits `reconnect_delay` after the loss or the failed attempt before it.
#[derive(Debug, Clone)]
pub struct Reconnect {
    delay: Duration,
    ctrl_loss_tmo: Option<Duration>,
    fast_io_fail_tmo: Option<Duration>,
    /// The first loss of the current outage.
    lost_since: Option<Instant>,
    /// Connected again during the outage, no command completed yet.
    reconnected: bool,
    next_attempt: Instant,
    fast_failed: bool,
    gave_up: Option<&'static str>,
    losses: u32,
    failed_attempts: u32,
    reconnects: u32,
    next_summary: Instant,
    /// `(losses, failed_attempts)` at the last report.
    reported: (u32, u32),
}

impl Reconnect {
    /// How often an outage is summarised while it lasts (several reconnects apart at the
    /// default `reconnect_delay` of 10 s).
    pub const SUMMARY_EVERY: Duration = Duration::from_secs(60);

    /// Timers from the connect options; the connection is up at `now`.
    pub fn new(opts: &ConnectOptions, now: Instant) -> Self {
        Self {
            delay: opts.reconnect_delay,
            ctrl_loss_tmo: opts.ctrl_loss_tmo,
            fast_io_fail_tmo: opts.fast_io_fail_tmo,
            lost_since: None,
            reconnected: false,
            next_attempt: now,
            fast_failed: false,
            gave_up: None,
            losses: 0,
            failed_attempts: 0,
            reconnects: 0,
            next_summary: now,
            reported: (0, 0),
        }
    }

    /// True while the connection is lost (disconnected).
    pub fn is_lost(&self) -> bool {
        self.lost_since.is_some() && !self.reconnected
    }

    /// True from the first loss until a command completed on a new connection.
    pub fn in_outage(&self) -> bool {
        self.lost_since.is_some()
    }

    /// The connection was lost at `now`; `violation` if it died of a protocol violation by
    /// the controller (then the next attempt waits `reconnect_delay`, as it does after any
    /// loss but the first of an outage).
    pub fn handle_lost(&mut self, now: Instant, violation: bool) -> LossKind {
        let kind = match self.lost_since {
            None => {
                self.lost_since = Some(now);
                self.fast_failed = false;
                self.losses = 1;
                self.failed_attempts = 0;
                self.reconnects = 0;
                self.reported = (1, 0);
                self.next_summary = now + Self::SUMMARY_EVERY;
                self.next_attempt = if violation { now + self.delay } else { now };
                LossKind::First
            }
            Some(_) if self.reconnected => {
                self.losses += 1;
                self.next_attempt = now + self.delay;
                LossKind::Repeated
            }
            Some(_) => LossKind::Again,
        };
        self.reconnected = false;
        if self.ctrl_loss_tmo == Some(Duration::ZERO) {
            self.gave_up = Some("ctrl_loss_tmo is 0: no reconnect");
        }
        kind
    }

    /// What to do at `now` (only meaningful while lost).
    pub fn poll(&mut self, now: Instant) -> ReconnectAction {
        if let Some(why) = self.gave_up {
            return ReconnectAction::GiveUp(why);
        }
        let since = *self.lost_since.get_or_insert(now);
        if let Some(t) = self.ctrl_loss_tmo
            && now.saturating_duration_since(since) >= t
        {
            self.gave_up = Some("ctrl_loss_tmo expired");
            return ReconnectAction::GiveUp("ctrl_loss_tmo expired");
        }
        if !self.fast_failed
            && let Some(t) = self.fast_io_fail_tmo
            && now.saturating_duration_since(since) >= t
        {
            self.fast_failed = true;
            return ReconnectAction::FailFast;
        }
        if now < self.next_attempt {
            return ReconnectAction::Wait {
                until: self.next_attempt,
            };
        }
        ReconnectAction::Attempt
    }

    /// When the driver next needs the clock while lost.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.is_lost().then_some(self.next_attempt)
    }

    /// The attempt started by [`ReconnectAction::Attempt`] ended at `now`: connected (the
    /// outage lasts until a command completes on the new connection), or failed (the next
    /// attempt is due `reconnect_delay` later; if that is past `ctrl_loss_tmo`, the next poll
    /// gives up).
    pub fn handle_attempt(&mut self, connected: bool, now: Instant) {
        if connected {
            self.reconnected = true;
            self.reconnects += 1;
            return;
        }
        self.failed_attempts += 1;
        self.next_attempt = now + self.delay;
        if let (Some(t), Some(since)) = (self.ctrl_loss_tmo, self.lost_since)
            && self.next_attempt.saturating_duration_since(since) > t
        {
            self.gave_up = Some("ctrl_loss_tmo expired");
        }
    }

    /// A command completed successfully at `now` (or the new connection has no command to
    /// complete): if this ends an outage, its summary.
    pub fn handle_command_completed(&mut self, now: Instant) -> Option<OutageSummary> {
        if !self.reconnected {
            return None;
        }
        let summary = self.summary(now);
        self.lost_since = None;
        self.reconnected = false;
        self.fast_failed = false;
        self.gave_up = None;
        summary
    }

    /// A summary of the outage at most every [`Reconnect::SUMMARY_EVERY`], when something
    /// happened since the last one (the driver logs it instead of every loss and attempt).
    pub fn poll_summary(&mut self, now: Instant) -> Option<OutageSummary> {
        if now < self.next_summary || (self.losses, self.failed_attempts) == self.reported {
            return None;
        }
        self.next_summary = now + Self::SUMMARY_EVERY;
        self.reported = (self.losses, self.failed_attempts);
        self.summary(now)
    }

    fn summary(&self, now: Instant) -> Option<OutageSummary> {
        self.lost_since.map(|since| OutageSummary {
            elapsed: now.saturating_duration_since(since),
            losses: self.losses,
            failed_attempts: self.failed_attempts,
            reconnects: self.reconnects,
        })
    }

    /// True once `fast_io_fail_tmo` expired in the current outage.
    pub fn fast_io_failed(&self) -> bool {
        self.fast_failed
    }

    /// True while disconnected after `fast_io_fail_tmo` expired in the current outage: a
    /// command submitted now fails at once instead of waiting for the connection (Linux's
    /// failfast). Ends when a connection is re-established.
    pub fn fails_fast(&self) -> bool {
        self.fast_failed && self.is_lost()
    }

    /// Why reconnecting stopped, once it has.
    pub fn given_up(&self) -> Option<&'static str> {
        self.gave_up
    }

    /// Gives up for good (the controller was lost by another path).
    pub fn give_up(&mut self, why: &'static str) {
        self.gave_up = Some(why);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(delay_ms: u64, loss_ms: Option<u64>, fast_ms: Option<u64>) -> ConnectOptions {
        let mut o = ConnectOptions::new("127.0.0.1", 4420, "nqn.test:sub");
        o.reconnect_delay = Duration::from_millis(delay_ms);
        o.ctrl_loss_tmo = loss_ms.map(Duration::from_millis);
        o.fast_io_fail_tmo = fast_ms.map(Duration::from_millis);
        o
    }

    fn ms(t0: Instant, n: u64) -> Instant {
        t0 + Duration::from_millis(n)
    }

    #[test]
    fn keep_alive_is_due_every_half_kato_and_never_twice_at_a_time() {
        let t0 = Instant::now();
        let mut k = KeepAlive::new(Duration::from_secs(10), t0);
        assert_eq!(k.poll_timeout(), Some(ms(t0, 5000)));
        assert!(k.poll_command(ms(t0, 4999)).is_none());
        let req = k.poll_command(ms(t0, 5000)).expect("due");
        assert_eq!(
            nvme_tcp_wire::nvme::Sqe::from_array(&req.sqe).opcode(),
            nvme_tcp_wire::nvme::AdminOpcode::KeepAlive as u8
        );
        assert_eq!(k.poll_timeout(), None);
        assert!(k.poll_command(ms(t0, 9000)).is_none(), "one outstanding");
        k.handle_completion(ms(t0, 5200));
        assert_eq!(k.poll_timeout(), Some(ms(t0, 10200)));
        // A tiny KATO is clamped.
        let k = KeepAlive::new(Duration::from_millis(10), t0);
        assert_eq!(k.poll_timeout(), Some(t0 + KeepAlive::MIN_PERIOD));
    }

    #[test]
    fn reconnect_attempts_at_once_then_every_delay_and_gives_up_at_ctrl_loss_tmo() {
        let t0 = Instant::now();
        let mut r = Reconnect::new(&opts(100, Some(250), Some(150)), t0);
        assert!(!r.is_lost());
        r.handle_lost(t0, false);
        assert_eq!(r.poll(t0), ReconnectAction::Attempt);
        r.handle_attempt(false, ms(t0, 10));
        assert_eq!(
            r.poll(ms(t0, 20)),
            ReconnectAction::Wait { until: ms(t0, 110) }
        );
        assert_eq!(r.poll(ms(t0, 110)), ReconnectAction::Attempt);
        r.handle_attempt(false, ms(t0, 120));
        // fast_io_fail_tmo (150 ms) passes while waiting: reported once.
        assert_eq!(r.poll(ms(t0, 160)), ReconnectAction::FailFast);
        assert_eq!(
            r.poll(ms(t0, 160)),
            ReconnectAction::Wait { until: ms(t0, 220) }
        );
        assert_eq!(r.poll(ms(t0, 220)), ReconnectAction::Attempt);
        // The next attempt (320 ms) would start after ctrl_loss_tmo (250 ms): give up now.
        r.handle_attempt(false, ms(t0, 220));
        assert_eq!(
            r.poll(ms(t0, 221)),
            ReconnectAction::GiveUp("ctrl_loss_tmo expired")
        );
    }

    #[test]
    fn a_command_completed_on_a_new_connection_resets_the_timers() {
        let t0 = Instant::now();
        let mut r = Reconnect::new(&opts(100, Some(1000), Some(150)), t0);
        r.handle_lost(t0, false);
        assert_eq!(r.poll(ms(t0, 200)), ReconnectAction::FailFast);
        assert_eq!(r.poll(ms(t0, 200)), ReconnectAction::Attempt);
        r.handle_attempt(true, ms(t0, 210));
        assert!(!r.is_lost());
        assert!(r.in_outage(), "connected, but nothing completed yet");
        let s = r
            .handle_command_completed(ms(t0, 230))
            .expect("outage ends");
        assert_eq!((s.losses, s.reconnects), (1, 1));
        assert_eq!(s.elapsed, Duration::from_millis(230));
        assert!(!r.in_outage());
        assert_eq!(r.handle_command_completed(ms(t0, 240)), None);
        // A new loss long after: the clocks start again.
        assert_eq!(r.handle_lost(ms(t0, 5000), false), LossKind::First);
        assert_eq!(r.poll(ms(t0, 5000)), ReconnectAction::Attempt);
        r.handle_attempt(false, ms(t0, 5000));
        assert_eq!(r.poll(ms(t0, 5100)), ReconnectAction::Attempt);
        assert_eq!(r.poll(ms(t0, 5200)), ReconnectAction::FailFast);
    }

    #[test]
    fn ctrl_loss_tmo_runs_until_a_command_completes_not_until_connect_succeeds() {
        // A controller that accepts every connection and breaks it before any command
        // completes: every attempt "succeeds", yet the timers keep running from the first
        // loss, and after ctrl_loss_tmo the host gives up.
        let t0 = Instant::now();
        let mut r = Reconnect::new(&opts(100, Some(1000), Some(500)), t0);
        assert_eq!(r.handle_lost(t0, true), LossKind::First);
        let mut now = t0;
        let mut attempts = 0;
        let mut fail_fast_at = None;
        let gave_up_at = loop {
            match r.poll(now) {
                ReconnectAction::Attempt => {
                    attempts += 1;
                    r.handle_attempt(true, now);
                    assert!(r.in_outage());
                    // The re-sent command breaks the new connection again.
                    now += Duration::from_millis(5);
                    assert_eq!(r.handle_lost(now, true), LossKind::Repeated);
                }
                ReconnectAction::Wait { until } => {
                    assert!(until > now);
                    now = until;
                }
                ReconnectAction::FailFast => {
                    assert!(fail_fast_at.is_none(), "reported once per outage");
                    fail_fast_at = Some(now);
                }
                ReconnectAction::GiveUp(why) => {
                    assert_eq!(why, "ctrl_loss_tmo expired");
                    break now;
                }
            }
        };
        // One attempt per reconnect_delay (the first one too: the loss was a protocol
        // violation), none after ctrl_loss_tmo.
        assert_eq!(attempts, 9, "attempts at 100, 205, ... 900 ms");
        let fast = fail_fast_at.expect("fast_io_fail_tmo expired");
        assert!(fast >= ms(t0, 500) && fast < ms(t0, 600), "{fast:?}");
        assert!(gave_up_at >= ms(t0, 1000) && gave_up_at < ms(t0, 1100));
    }

    #[test]
    fn only_the_first_loss_of_an_outage_is_reported_then_a_rate_limited_summary() {
        let t0 = Instant::now();
        let mut r = Reconnect::new(&opts(10, None, None), t0);
        assert_eq!(r.handle_lost(t0, false), LossKind::First);
        assert_eq!(
            r.poll(t0),
            ReconnectAction::Attempt,
            "a transport loss: at once"
        );
        let mut summaries = Vec::new();
        let mut now = t0;
        // 6 summary periods of a controller that breaks every new connection, one attempt
        // every 10 ms.
        while now < t0 + Reconnect::SUMMARY_EVERY * 6 {
            match r.poll(now) {
                ReconnectAction::Attempt => {
                    r.handle_attempt(true, now);
                    assert_eq!(r.handle_lost(now, false), LossKind::Repeated);
                }
                ReconnectAction::Wait { until } => now = until,
                other => panic!("{other:?}"),
            }
            if let Some(s) = r.poll_summary(now) {
                summaries.push(s);
            }
        }
        assert_eq!(
            summaries.len(),
            6,
            "one per SUMMARY_EVERY, not one per loss"
        );
        assert!(summaries.windows(2).all(|w| w[1].losses > w[0].losses));
        assert!(summaries[5].losses > 6 * 500);
        // Nothing new, nothing to report.
        let quiet = now + Reconnect::SUMMARY_EVERY * 3;
        r.poll_summary(quiet);
        assert_eq!(r.poll_summary(quiet + Reconnect::SUMMARY_EVERY * 2), None);
    }

    #[test]
    fn command_timeouts_are_not_restarted_by_a_reconnect() {
        use crate::queue::{QueueConfig, QueueCore};
        use nvme_tcp_wire::pdu::{HeaderBuf, IcRespRepr};
        fn icresp(q: &mut QueueCore) {
            let n = q.tx_pending().len();
            q.tx_consumed(n);
            let r = IcRespRepr {
                pfv: 0,
                cpda: 0,
                hdgst_enable: false,
                ddgst_enable: false,
                maxh2cdata: 131072,
            };
            q.rx_feed(HeaderBuf::new(&r).as_bytes()).unwrap();
            q.set_live();
        }
        let t0 = Instant::now();
        let timeout = Duration::from_secs(30);
        let mut q = QueueCore::new(QueueConfig {
            qid: 1,
            queue_size: 4,
            hdgst: false,
            ddgst: false,
            cid_mode: crate::CidMode::Tagged,
            in_capsule_max: 0,
        });
        icresp(&mut q);
        let cid = q
            .submit(cmd::read(1, 0, 1, IoBuf::Contig(vec![0; 512]), 7), t0)
            .unwrap();
        let mut t = CommandTimeouts::new(timeout, t0);
        // The connection fails at 20 s and is back at 25 s: the command is re-sent ...
        q.connection_failed(&IoError::Transport("reset".into()), 5);
        q.reset_connection();
        icresp(&mut q);
        assert_eq!(q.retries(cid), Some(1));
        assert!(t.handle_timeout(ms(t0, 25_000)));
        assert_eq!(t.poll_action(&mut q, ms(t0, 25_000)), None);
        // ... but its 30 s still count from its submission, not from the reconnect.
        assert!(t.handle_timeout(ms(t0, 30_000)));
        assert_eq!(
            t.poll_action(&mut q, ms(t0, 30_000)),
            Some(TimeoutAction::Abort { cid })
        );
        // The Abort's own period is not restarted by another reconnect either.
        q.connection_failed(&IoError::Transport("reset".into()), 5);
        q.reset_connection();
        icresp(&mut q);
        assert!(t.handle_timeout(ms(t0, 60_000)));
        assert_eq!(
            t.poll_action(&mut q, ms(t0, 60_000)),
            Some(TimeoutAction::Reset { cid })
        );
        let c = q.pop_completion().unwrap();
        assert!(
            matches!(c.result, Err(IoError::Timeout { .. })),
            "{:?}",
            c.result
        );
    }

    #[test]
    fn after_fast_io_fail_tmo_new_commands_fail_fast_until_a_connection_is_back() {
        let t0 = Instant::now();
        let mut r = Reconnect::new(&opts(100, Some(10_000), Some(150)), t0);
        assert!(!r.fails_fast());
        r.handle_lost(t0, false);
        assert_eq!(r.poll(t0), ReconnectAction::Attempt);
        r.handle_attempt(false, ms(t0, 10));
        assert!(!r.fails_fast(), "fast_io_fail_tmo has not expired yet");
        assert_eq!(r.poll(ms(t0, 160)), ReconnectAction::FailFast);
        assert!(r.fails_fast());
        assert_eq!(r.poll(ms(t0, 160)), ReconnectAction::Attempt);
        r.handle_attempt(false, ms(t0, 170));
        assert!(r.fails_fast(), "still down");
        assert_eq!(r.poll(ms(t0, 270)), ReconnectAction::Attempt);
        r.handle_attempt(true, ms(t0, 280));
        assert!(!r.fails_fast(), "connected again: commands are sent");
        // The new connection fails before a command completed: the same outage, still past
        // fast_io_fail_tmo.
        r.handle_lost(ms(t0, 290), false);
        assert!(r.fails_fast());
        assert_eq!(r.poll(ms(t0, 390)), ReconnectAction::Attempt);
        r.handle_attempt(true, ms(t0, 400));
        r.handle_command_completed(ms(t0, 410))
            .expect("outage ends");
        r.handle_lost(ms(t0, 500), false);
        assert!(
            !r.fails_fast(),
            "a new outage starts its own fast_io_fail_tmo"
        );
    }

    #[test]
    fn a_command_whose_timeout_passes_while_the_queue_is_down_fails_without_another_period() {
        use crate::error::GiveUpReason;
        use crate::queue::{QueueConfig, QueueCore};
        use nvme_tcp_wire::pdu::{HeaderBuf, IcRespRepr};
        fn icresp(q: &mut QueueCore) {
            let n = q.tx_pending().len();
            q.tx_consumed(n);
            let r = IcRespRepr {
                pfv: 0,
                cpda: 0,
                hdgst_enable: false,
                ddgst_enable: false,
                maxh2cdata: 131072,
            };
            q.rx_feed(HeaderBuf::new(&r).as_bytes()).unwrap();
            q.set_live();
        }
        let t0 = Instant::now();
        let mut q = QueueCore::new(QueueConfig {
            qid: 1,
            queue_size: 4,
            hdgst: false,
            ddgst: false,
            cid_mode: crate::CidMode::Tagged,
            in_capsule_max: 0,
        });
        icresp(&mut q);
        let mut t = CommandTimeouts::new(Duration::from_secs(30), t0);
        let sent = q
            .submit(cmd::read(1, 0, 1, IoBuf::Contig(vec![0; 512]), 1), t0)
            .unwrap();
        let n = q.tx_pending().len();
        q.tx_consumed(n);
        // The connection fails at 20 s and stays down.
        let lost = IoError::Transport("reset".into());
        q.connection_failed(&lost, 5);
        q.reset_connection();
        let waiting = q
            .submit(
                cmd::read(1, 0, 1, IoBuf::Contig(vec![0; 512]), 2),
                ms(t0, 25_000),
            )
            .unwrap();
        assert_eq!(t.fail_expired_while_down(&mut q, ms(t0, 29_999)), 0);
        // 30 s after its submission the first one fails at once, with the outage's cause:
        // no Abort, no second period once the queue is back.
        assert_eq!(t.fail_expired_while_down(&mut q, ms(t0, 30_000)), 1);
        let c = q.pop_completion().unwrap();
        assert_eq!(c.cid, sent);
        assert_eq!(
            c.result.unwrap_err(),
            IoError::GaveUp {
                attempts: 1,
                reason: GiveUpReason::CommandTimeout,
                last: Box::new(lost),
            }
        );
        assert!(c.buf.is_some(), "its buffer comes back");
        // The one submitted while down keeps its own clock.
        assert_eq!(q.retries(waiting), Some(0));
        assert_eq!(t.fail_expired_while_down(&mut q, ms(t0, 55_000)), 1);
        assert_eq!(
            q.pop_completion().unwrap().result.unwrap_err(),
            IoError::QueueLost("command timeout expired while reconnecting")
        );
        assert_eq!(q.in_flight(), 0);
        // Back up: nothing is re-sent.
        icresp(&mut q);
        assert!(q.tx_is_empty());
    }

    #[test]
    fn ctrl_loss_tmo_zero_never_reconnects_and_none_retries_forever() {
        let t0 = Instant::now();
        let mut r = Reconnect::new(&opts(100, Some(0), None), t0);
        r.handle_lost(t0, false);
        assert!(matches!(r.poll(t0), ReconnectAction::GiveUp(_)));
        let mut r = Reconnect::new(&opts(100, None, None), t0);
        r.handle_lost(t0, false);
        for i in 0..100 {
            assert_eq!(r.poll(ms(t0, i * 100)), ReconnectAction::Attempt);
            r.handle_attempt(false, ms(t0, i * 100));
        }
    }
}
