//! In-band authentication (DH-HMAC-CHAP) of a queue after its Connect, when the controller
//! sets AUTHREQ.ATR in the Connect response (NVMe Base 2.0 §8.13): the host's side of the
//! transaction, `nvme_tcp_auth::HostAuth`, carried over Authentication Send / Receive
//! commands. [`crate::assoc::QueueConnect`] runs it before it reports the queue connected,
//! so the admin queue's bring-up and every I/O queue authenticate the same way.
//!
//! The keys are `ConnectOptions::dhchap_secret` (nvme-cli's `--dhchap-secret`) and
//! `dhchap_ctrl_secret` (`--dhchap-ctrl-secret`: the host also authenticates the
//! controller). Without a key, a controller that requires authentication is refused, as the
//! Linux host does.

use std::sync::atomic::{AtomicU16, Ordering};

use nvme_tcp_auth::{HostAction, HostAuth, HostAuthConfig};
use nvme_tcp_wire::nvme::fabrics::{AUTHREQ_ASCR, AUTHREQ_ATR};
use nvme_tcp_wire::nvme::{AuthReceiveCommand, AuthSendCommand};
use zerocopy::IntoBytes;

use crate::buf::IoBuf;
use crate::error::{HostError, IoError, Result};
use crate::options::ConnectOptions;
use crate::queue::{Completion, CqeInfo, DataDir, Request, SQE_LEN};

/// Transaction identifiers: one per transaction, as the Linux host numbers them.
fn next_t_id() -> u16 {
    static T_ID: AtomicU16 = AtomicU16::new(0);
    T_ID.fetch_add(1, Ordering::Relaxed)
}

/// One queue's authentication after Connect.
#[derive(Debug)]
pub struct QueueAuth {
    qid: u16,
    host: HostAuth,
    /// The Connect's completion, reported once authenticated.
    connect_cqe: CqeInfo,
    in_flight: bool,
}

impl QueueAuth {
    /// What the Connect response of queue `qid` asks for: `None` if the queue is usable at
    /// once, the transaction to run if it must authenticate first.
    pub fn after_connect(opts: &ConnectOptions, qid: u16, cqe: CqeInfo) -> Result<Option<Self>> {
        let authreq = (cqe.dw0 >> 16) as u16;
        if authreq & AUTHREQ_ASCR != 0 {
            return Err(HostError::Unsupported(format!(
                "queue {qid}: the controller requires secure channel concatenation (AUTHREQ.ASCR)"
            )));
        }
        if authreq & AUTHREQ_ATR == 0 {
            return Ok(None);
        }
        let secret = opts.dhchap_secret.clone().ok_or_else(|| {
            HostError::Authentication(format!(
                "queue {qid}: the controller requires DH-HMAC-CHAP authentication and no \
                 host key (--dhchap-secret) is configured"
            ))
        })?;
        let cfg = HostAuthConfig::new(
            secret,
            opts.dhchap_ctrl_secret.clone(),
            &opts.hostnqn,
            &opts.subnqn,
        );
        Ok(Some(QueueAuth {
            qid,
            host: HostAuth::new(cfg, next_t_id()),
            connect_cqe: cqe,
            in_flight: false,
        }))
    }

    /// The next Authentication Send or Receive to submit (with `user_data`), if one is due.
    pub fn poll_command(&mut self, user_data: u64) -> Option<Request> {
        if self.in_flight {
            return None;
        }
        let (sqe, dir, buf) = match self.host.poll() {
            HostAction::Send(m) => (
                AuthSendCommand::dhchap(m.len() as u32).to_sqe(),
                DataDir::ToController,
                IoBuf::Contig(m),
            ),
            HostAction::Receive(al) => (
                AuthReceiveCommand::dhchap(al).to_sqe(),
                DataDir::ToHost,
                IoBuf::Contig(vec![0; al as usize]),
            ),
            HostAction::Done | HostAction::Failed(_) => return None,
        };
        let mut raw = [0u8; SQE_LEN];
        raw.copy_from_slice(sqe.as_bytes());
        self.in_flight = true;
        Some(Request {
            sqe: raw,
            dir,
            buf: Some(buf),
            user_data,
        })
    }

    /// The completion of the command in flight: the Connect's CQE once authenticated,
    /// `None` while the transaction goes on.
    pub fn handle_completion(&mut self, c: Completion) -> Result<Option<CqeInfo>> {
        self.in_flight = false;
        let qid = self.qid;
        match c.result {
            Ok(_) => {}
            Err(IoError::Status(status)) => {
                return Err(HostError::Authentication(format!(
                    "queue {qid}: authentication command failed: {status}"
                )));
            }
            Err(e) => return Err(HostError::Command(e)),
        }
        match self.host.poll() {
            HostAction::Send(_) => self.host.on_sent(),
            HostAction::Receive(_) => {
                let data = c.buf.map(|b| b.to_vec()).unwrap_or_default();
                self.host.on_received(&data);
            }
            HostAction::Done | HostAction::Failed(_) => {}
        }
        match self.host.poll() {
            HostAction::Done => {
                tracing::info!(qid, "authenticated (DH-HMAC-CHAP)");
                Ok(Some(self.connect_cqe))
            }
            HostAction::Failed(e) => Err(HostError::Authentication(format!("queue {qid}: {e}"))),
            _ => Ok(None),
        }
    }
}
