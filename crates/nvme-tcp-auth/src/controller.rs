//! The controller side of DH-HMAC-CHAP on one queue, as a sans-IO state machine.
//!
//! The target feeds it the data of each Authentication Send ([`ControllerAuth::on_send`])
//! and asks it for the data of each Authentication Receive
//! ([`ControllerAuth::on_receive`]). Protocol errors do not fail those commands: the next
//! Authentication Receive returns AUTH_Failure1 with the reason, as the spec's message flow
//! has it (NVMe Base 2.0 §8.13.5). The queue is authenticated after Success1 when the host
//! did not ask to authenticate the controller, after Success2 when it did.
//!
//! A new AUTH_Negotiate starts a new transaction at any time (re-authentication). A queue
//! stays authenticated while a re-authentication runs and loses that when one fails.

use std::sync::atomic::{AtomicU32, Ordering};

use nvme_tcp_wire::nvme::auth::{
    ChallengeRepr, FailureReason, RESCODE_FAILED, ReplyRepr, Success1Repr,
};
use nvme_tcp_wire::nvme::{AuthMessage, DhGroupId, HashId};
use rand::RngCore;
use subtle::ConstantTimeEq;

use crate::dh::KeyPair;
use crate::hash::ResponseInput;
use crate::secret::Secret;

/// What the controller knows about a host that must authenticate.
#[derive(Debug, Clone)]
pub struct ControllerAuthConfig {
    /// The host's key (`dhchap_key`): the host proves it knows it.
    pub host_key: Secret,
    /// The controller's key (`dhchap_ctrl_key`): needed when the host authenticates the
    /// controller (bidirectional).
    pub ctrl_key: Option<Secret>,
    /// The hash to use (`dhchap_hash`); the host must offer it.
    pub hash: HashId,
    /// The DH group to use (`dhchap_dhgroup`); the host must offer it.
    pub dhgroup: DhGroupId,
    /// Host NQN.
    pub hostnqn: String,
    /// Subsystem NQN.
    pub subnqn: String,
}

/// A sequence number for a Challenge: a counter started at a random value, never 0 (0 in a
/// Reply means "no bidirectional authentication").
pub fn next_seqnum() -> u32 {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    loop {
        let cur = SEQ.load(Ordering::Relaxed);
        let next = if cur == 0 {
            rand::rng().next_u32()
        } else {
            cur.wrapping_add(1)
        };
        if next != 0
            && SEQ
                .compare_exchange(cur, next, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            return next;
        }
    }
}

#[derive(Debug)]
enum Step {
    /// Waiting for AUTH_Negotiate.
    Negotiate,
    /// Negotiated: the next Receive returns the Challenge.
    Challenge,
    /// Challenge sent: waiting for the Reply.
    Reply {
        c1: Vec<u8>,
        s1: u32,
        dh: Option<KeyPair>,
    },
    /// Reply verified: the next Receive returns Success1.
    Success1 { c2: Option<(Vec<u8>, u32)> },
    /// Success1 with R2 sent: waiting for Success2.
    Success2,
    /// A failure to report with the next Receive.
    Failure1(FailureReason),
}

/// What an Authentication Send led to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendOutcome {
    /// The message was taken; the next Receive answers it.
    Accepted,
    /// The message was refused; the next Receive returns AUTH_Failure1 with this reason.
    Refused(FailureReason),
    /// The host ended the transaction with AUTH_Failure2 (its RESCODE_EXP).
    HostFailed(u8),
    /// Success2: the queue is authenticated.
    Authenticated,
}

/// DH-HMAC-CHAP state of one queue of a controller whose host must authenticate.
#[derive(Debug)]
pub struct ControllerAuth {
    cfg: std::sync::Arc<ControllerAuthConfig>,
    step: Step,
    t_id: u16,
    sc_c: u8,
    authenticated: bool,
}

impl ControllerAuth {
    /// A queue that has not authenticated yet.
    pub fn new(cfg: std::sync::Arc<ControllerAuthConfig>) -> Self {
        ControllerAuth {
            cfg,
            step: Step::Negotiate,
            t_id: 0,
            sc_c: 0,
            authenticated: false,
        }
    }

    /// True once a transaction succeeded (and no later one failed).
    pub fn is_authenticated(&self) -> bool {
        self.authenticated
    }

    fn refuse(&mut self, why: FailureReason) -> SendOutcome {
        self.step = Step::Failure1(why);
        self.authenticated = false;
        SendOutcome::Refused(why)
    }

    /// The data of an Authentication Send.
    pub fn on_send(&mut self, data: &[u8]) -> SendOutcome {
        let msg = match AuthMessage::parse(data) {
            Ok(m) => m,
            Err(e) => return self.refuse(e.failure_reason()),
        };
        if let AuthMessage::Negotiate(n) = msg {
            // A Negotiate starts a (new) transaction whatever the state.
            self.t_id = n.t_id;
            self.sc_c = n.sc_c;
            if n.sc_c != 0 {
                return self.refuse(FailureReason::ConcatMismatch);
            }
            if !n.hash_ids.contains(&(self.cfg.hash as u8)) {
                return self.refuse(FailureReason::HashUnusable);
            }
            if !n.dhgroup_ids.contains(&(self.cfg.dhgroup as u8)) {
                return self.refuse(FailureReason::DhGroupUnusable);
            }
            self.step = Step::Challenge;
            return SendOutcome::Accepted;
        }
        if msg.t_id() != self.t_id {
            return self.refuse(FailureReason::IncorrectMessage);
        }
        match (msg, std::mem::replace(&mut self.step, Step::Negotiate)) {
            (AuthMessage::Reply(r), Step::Reply { c1, s1, dh }) => self.on_reply(&r, &c1, s1, dh),
            (AuthMessage::Success2 { .. }, Step::Success2) => {
                self.authenticated = true;
                SendOutcome::Authenticated
            }
            (
                AuthMessage::Failure {
                    from_controller: false,
                    rescode_exp,
                    ..
                },
                _,
            ) => {
                self.authenticated = false;
                SendOutcome::HostFailed(rescode_exp)
            }
            _ => self.refuse(FailureReason::IncorrectMessage),
        }
    }

    fn on_reply(
        &mut self,
        r: &ReplyRepr<'_>,
        c1: &[u8],
        s1: u32,
        dh: Option<KeyPair>,
    ) -> SendOutcome {
        let cfg = std::sync::Arc::clone(&self.cfg);
        let hash = cfg.hash;
        if r.rval.len() != hash.hash_len() {
            return self.refuse(FailureReason::IncorrectPayload);
        }
        let session_key = match (&dh, r.dhv.is_empty()) {
            (None, true) => None,
            (Some(kp), false) => match kp.session_key(r.dhv) {
                Ok(k) => Some(k),
                Err(_) => return self.refuse(FailureReason::IncorrectPayload),
            },
            _ => return self.refuse(FailureReason::IncorrectPayload),
        };
        let key = cfg.host_key.transformed(&cfg.hostnqn);
        let expected = ResponseInput {
            hash,
            key: &key,
            challenge: c1,
            session_key: session_key.as_deref(),
            seqnum: s1,
            t_id: self.t_id,
            sc_c: self.sc_c,
            hostnqn: &cfg.hostnqn,
            subnqn: &cfg.subnqn,
        }
        .host_response();
        if !bool::from(expected.ct_eq(r.rval)) {
            return self.refuse(FailureReason::Failed);
        }
        let c2 = if r.cvalid {
            if cfg.ctrl_key.is_none() || r.seqnum == 0 {
                // Asked to prove a key this controller does not have.
                return self.refuse(FailureReason::Failed);
            }
            // R2 is computed when Success1 is read; keep what it needs.
            let ctrl_key = cfg
                .ctrl_key
                .as_ref()
                .map(|k| k.transformed(&cfg.subnqn))
                .unwrap_or_default();
            let r2 = ResponseInput {
                hash,
                key: &ctrl_key,
                challenge: r.cval,
                session_key: session_key.as_deref(),
                seqnum: r.seqnum,
                t_id: self.t_id,
                sc_c: self.sc_c,
                hostnqn: &cfg.hostnqn,
                subnqn: &cfg.subnqn,
            }
            .controller_response();
            Some((r2, r.seqnum))
        } else {
            None
        };
        self.step = Step::Success1 { c2 };
        SendOutcome::Accepted
    }

    /// The data of an Authentication Receive: the message the current step calls for. A
    /// Receive out of turn reports an incorrect protocol message.
    pub fn on_receive(&mut self) -> Vec<u8> {
        let step = std::mem::replace(&mut self.step, Step::Negotiate);
        let hash = self.cfg.hash;
        match step {
            Step::Challenge => {
                let mut c1 = vec![0u8; hash.hash_len()];
                rand::rng().fill_bytes(&mut c1);
                let s1 = next_seqnum();
                let dh = KeyPair::generate(self.cfg.dhgroup);
                let msg = AuthMessage::Challenge(ChallengeRepr {
                    t_id: self.t_id,
                    hashid: hash as u8,
                    dhgid: self.cfg.dhgroup as u8,
                    seqnum: s1,
                    cval: &c1,
                    dhv: dh.as_ref().map_or(&[][..], KeyPair::public),
                })
                .to_vec();
                self.step = Step::Reply { c1, s1, dh };
                msg
            }
            Step::Success1 { c2 } => {
                let msg = AuthMessage::Success1(Success1Repr {
                    t_id: self.t_id,
                    hl: hash.hash_len() as u8,
                    rval: c2.as_ref().map(|(r2, _)| &r2[..]),
                })
                .to_vec();
                if c2.is_some() {
                    self.step = Step::Success2;
                } else {
                    self.authenticated = true;
                }
                msg
            }
            Step::Failure1(why) => self.failure1(why),
            other => {
                // Restore the step? No: a Receive out of turn ends the transaction.
                drop(other);
                self.authenticated = false;
                self.failure1(FailureReason::IncorrectMessage)
            }
        }
    }

    fn failure1(&mut self, why: FailureReason) -> Vec<u8> {
        self.step = Step::Negotiate;
        AuthMessage::Failure {
            from_controller: true,
            t_id: self.t_id,
            rescode: RESCODE_FAILED,
            rescode_exp: why as u8,
        }
        .to_vec()
    }
}
