//! The host side of DH-HMAC-CHAP on one queue, as a sans-IO state machine.
//!
//! The driver asks [`HostAuth::poll`] what to do next: send a message with Authentication
//! Send, read one with Authentication Receive (then hand its data to
//! [`HostAuth::on_received`]), or stop because the transaction succeeded or failed. A
//! failure found by the host is reported to the controller with AUTH_Failure2 first.

use nvme_tcp_wire::nvme::auth::{FailureReason, NegotiateRepr, RESCODE_FAILED, ReplyRepr};
use nvme_tcp_wire::nvme::{AuthMessage, DhGroupId, HashId};
use rand::RngCore;
use subtle::ConstantTimeEq;

use crate::controller::next_seqnum;
use crate::dh::KeyPair;
use crate::hash::ResponseInput;
use crate::secret::Secret;

/// Allocation length of the host's Authentication Receives (enough for ffdhe8192).
pub const RECEIVE_LEN: u32 = 4096;

/// The host's keys and what it offers.
#[derive(Debug, Clone)]
pub struct HostAuthConfig {
    /// The host key (`--dhchap-secret`).
    pub secret: Secret,
    /// The controller key (`--dhchap-ctrl-secret`): with it the host authenticates the
    /// controller too (bidirectional).
    pub ctrl_secret: Option<Secret>,
    /// Hash functions offered, by preference.
    pub hashes: Vec<HashId>,
    /// DH groups offered, by preference.
    pub dhgroups: Vec<DhGroupId>,
    /// Host NQN.
    pub hostnqn: String,
    /// Subsystem NQN.
    pub subnqn: String,
}

impl HostAuthConfig {
    /// Offers every hash and group, as the Linux host does.
    pub fn new(secret: Secret, ctrl_secret: Option<Secret>, hostnqn: &str, subnqn: &str) -> Self {
        HostAuthConfig {
            secret,
            ctrl_secret,
            hashes: HashId::ALL.to_vec(),
            dhgroups: DhGroupId::ALL.to_vec(),
            hostnqn: hostnqn.to_string(),
            subnqn: subnqn.to_string(),
        }
    }
}

/// Why a host's authentication failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostAuthError {
    /// The controller sent AUTH_Failure1.
    #[error("the controller refused authentication: {}", reason_name(*.0))]
    Refused(u8),
    /// The host refused the controller's message (AUTH_Failure2 was sent).
    #[error("authentication failed on the host's side: {:?}", .0)]
    Local(FailureReason),
}

fn reason_name(code: u8) -> String {
    match FailureReason::from_u8(code) {
        Some(r) => format!("{r:?} ({code:#04x})"),
        None => format!("reason {code:#04x}"),
    }
}

/// The next thing the driver does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostAction {
    /// Authentication Send with these bytes, then call [`HostAuth::on_sent`].
    Send(Vec<u8>),
    /// Authentication Receive with this allocation length, then [`HostAuth::on_received`].
    Receive(u32),
    /// Authenticated.
    Done,
    /// Failed (nothing more to send).
    Failed(HostAuthError),
}

#[derive(Debug)]
enum Step {
    SendNegotiate,
    AwaitChallenge,
    SendReply(Vec<u8>),
    AwaitSuccess1,
    SendSuccess2,
    SendFailure2(FailureReason),
    Done,
    Failed(HostAuthError),
}

/// DH-HMAC-CHAP state of one queue of a host.
#[derive(Debug)]
pub struct HostAuth {
    cfg: HostAuthConfig,
    t_id: u16,
    step: Step,
    hash: Option<HashId>,
    /// The controller's expected R2 and S2 when authenticating it.
    expect_r2: Option<Vec<u8>>,
}

impl HostAuth {
    /// A transaction with identifier `t_id` (a host numbers its transactions).
    pub fn new(cfg: HostAuthConfig, t_id: u16) -> Self {
        HostAuth {
            cfg,
            t_id,
            step: Step::SendNegotiate,
            hash: None,
            expect_r2: None,
        }
    }

    /// What to do next.
    pub fn poll(&self) -> HostAction {
        match &self.step {
            Step::SendNegotiate => {
                let hashes: Vec<u8> = self.cfg.hashes.iter().map(|h| *h as u8).collect();
                let groups: Vec<u8> = self.cfg.dhgroups.iter().map(|g| *g as u8).collect();
                HostAction::Send(
                    AuthMessage::Negotiate(NegotiateRepr {
                        t_id: self.t_id,
                        sc_c: 0,
                        hash_ids: &hashes,
                        dhgroup_ids: &groups,
                    })
                    .to_vec(),
                )
            }
            Step::AwaitChallenge | Step::AwaitSuccess1 => HostAction::Receive(RECEIVE_LEN),
            Step::SendReply(r) => HostAction::Send(r.clone()),
            Step::SendSuccess2 => {
                HostAction::Send(AuthMessage::Success2 { t_id: self.t_id }.to_vec())
            }
            Step::SendFailure2(why) => HostAction::Send(
                AuthMessage::Failure {
                    from_controller: false,
                    t_id: self.t_id,
                    rescode: RESCODE_FAILED,
                    rescode_exp: *why as u8,
                }
                .to_vec(),
            ),
            Step::Done => HostAction::Done,
            Step::Failed(e) => HostAction::Failed(e.clone()),
        }
    }

    /// The Authentication Send of [`HostAction::Send`] completed successfully.
    pub fn on_sent(&mut self) {
        self.step = match std::mem::replace(&mut self.step, Step::Done) {
            Step::SendNegotiate => Step::AwaitChallenge,
            Step::SendReply(_) => Step::AwaitSuccess1,
            Step::SendSuccess2 => Step::Done,
            Step::SendFailure2(why) => Step::Failed(HostAuthError::Local(why)),
            other => other,
        };
    }

    /// The data of the Authentication Receive of [`HostAction::Receive`].
    pub fn on_received(&mut self, data: &[u8]) {
        let step = std::mem::replace(&mut self.step, Step::Done);
        self.step = match AuthMessage::parse(data) {
            Err(e) => Step::SendFailure2(e.failure_reason()),
            Ok(AuthMessage::Failure {
                from_controller: true,
                rescode_exp,
                ..
            }) => Step::Failed(HostAuthError::Refused(rescode_exp)),
            Ok(m) if m.t_id() != self.t_id => Step::SendFailure2(FailureReason::IncorrectMessage),
            Ok(AuthMessage::Challenge(c)) if matches!(step, Step::AwaitChallenge) => {
                match self.reply(&c) {
                    Ok(r) => Step::SendReply(r),
                    Err(why) => Step::SendFailure2(why),
                }
            }
            Ok(AuthMessage::Success1(s)) if matches!(step, Step::AwaitSuccess1) => {
                match self.success1(&s) {
                    Ok(true) => Step::SendSuccess2,
                    Ok(false) => Step::Done,
                    Err(why) => Step::SendFailure2(why),
                }
            }
            Ok(_) => Step::SendFailure2(FailureReason::IncorrectMessage),
        };
    }

    fn reply(
        &mut self,
        c: &nvme_tcp_wire::nvme::auth::ChallengeRepr<'_>,
    ) -> Result<Vec<u8>, FailureReason> {
        let hash = HashId::from_u8(c.hashid)
            .filter(|h| self.cfg.hashes.contains(h))
            .ok_or(FailureReason::HashUnusable)?;
        if c.cval.len() != hash.hash_len() {
            return Err(FailureReason::HashUnusable);
        }
        let group = DhGroupId::from_u8(c.dhgid)
            .filter(|g| self.cfg.dhgroups.contains(g))
            .ok_or(FailureReason::DhGroupUnusable)?;
        let (session_key, public) = match group {
            DhGroupId::Null if c.dhv.is_empty() => (None, Vec::new()),
            DhGroupId::Null => return Err(FailureReason::IncorrectPayload),
            g => {
                let kp = KeyPair::generate(g).ok_or(FailureReason::DhGroupUnusable)?;
                let ks = kp
                    .session_key(c.dhv)
                    .map_err(|_| FailureReason::IncorrectPayload)?;
                (Some(ks), kp.public().to_vec())
            }
        };
        self.hash = Some(hash);
        let key = self.cfg.secret.transformed(&self.cfg.hostnqn);
        let r1 = ResponseInput {
            hash,
            key: &key,
            challenge: c.cval,
            session_key: session_key.as_deref(),
            seqnum: c.seqnum,
            t_id: self.t_id,
            sc_c: 0,
            hostnqn: &self.cfg.hostnqn,
            subnqn: &self.cfg.subnqn,
        }
        .host_response();
        let (c2, s2) = match &self.cfg.ctrl_secret {
            Some(ck) => {
                let mut c2 = vec![0u8; hash.hash_len()];
                rand::rng().fill_bytes(&mut c2);
                let s2 = next_seqnum();
                let kc = ck.transformed(&self.cfg.subnqn);
                self.expect_r2 = Some(
                    ResponseInput {
                        hash,
                        key: &kc,
                        challenge: &c2,
                        session_key: session_key.as_deref(),
                        seqnum: s2,
                        t_id: self.t_id,
                        sc_c: 0,
                        hostnqn: &self.cfg.hostnqn,
                        subnqn: &self.cfg.subnqn,
                    }
                    .controller_response(),
                );
                (c2, s2)
            }
            None => (vec![0u8; hash.hash_len()], 0),
        };
        Ok(AuthMessage::Reply(ReplyRepr {
            t_id: self.t_id,
            cvalid: s2 != 0,
            seqnum: s2,
            rval: &r1,
            cval: &c2,
            dhv: &public,
        })
        .to_vec())
    }

    /// Ok(true): Success2 to send.
    fn success1(
        &mut self,
        s: &nvme_tcp_wire::nvme::auth::Success1Repr<'_>,
    ) -> Result<bool, FailureReason> {
        let hash = self.hash.ok_or(FailureReason::IncorrectMessage)?;
        if s.hl as usize != hash.hash_len() {
            return Err(FailureReason::HashUnusable);
        }
        match (&self.expect_r2, s.rval) {
            (None, _) => Ok(false),
            (Some(want), Some(got)) if bool::from(want.ct_eq(got)) => Ok(true),
            // No R2, or a wrong one: the controller did not prove its key.
            (Some(_), _) => Err(FailureReason::Failed),
        }
    }
}
