//! In-band authentication (DH-HMAC-CHAP) on a queue: Authentication Send / Receive and the
//! gate that keeps every other command out until the host has authenticated.
//!
//! A host configured with a `dhchap_key` gets AUTHREQ.ATR in each Connect response (admin
//! and I/O queues alike) and must then authenticate that queue. Until it has, every command
//! but Authentication Send/Receive and Disconnect completes with Authentication Required
//! (SCT 1h, SC 91h). The protocol itself is `nvme_tcp_auth::ControllerAuth`; a protocol
//! error does not fail the command that carried it but is reported with AUTH_Failure1 on
//! the next Authentication Receive.

use std::sync::Arc;

use nvme_tcp_auth::{ControllerAuth, ControllerAuthConfig, SendOutcome};
use nvme_tcp_wire::nvme::auth::check_dhchap_protocol;
use nvme_tcp_wire::nvme::{
    AdminOpcode, AuthReceiveCommand, AuthSendCommand, FabricsCommand, FabricsType, Sqe, Status,
};

use super::{Connection, Flow};
use crate::config::HostAuthKeys;

/// What the authentication gate does with a command.
pub(super) enum Gate {
    /// An Authentication Send or Receive: handled here.
    Auth,
    /// Let the command through.
    Pass,
    /// The queue has not authenticated: complete with Authentication Required.
    Refuse,
}

/// The controller state of a queue whose host must authenticate.
pub(super) fn queue_auth(keys: &HostAuthKeys, hostnqn: &str, subnqn: &str) -> ControllerAuth {
    ControllerAuth::new(Arc::new(ControllerAuthConfig {
        host_key: keys.key.clone(),
        ctrl_key: keys.ctrl_key.clone(),
        hash: keys.hash,
        dhgroup: keys.dhgroup,
        hostnqn: hostnqn.to_string(),
        subnqn: subnqn.to_string(),
    }))
}

impl Connection {
    /// Sorts a command of a connected queue.
    pub(super) fn auth_gate(&self, sqe: &Sqe) -> Gate {
        let fabrics = sqe.opcode() == AdminOpcode::Fabrics as u8;
        if fabrics
            && matches!(
                FabricsType::from_u8(sqe.fctype()),
                Some(FabricsType::AuthenticationSend | FabricsType::AuthenticationReceive)
            )
        {
            return Gate::Auth;
        }
        match &self.auth {
            Some(a) if !a.is_authenticated() => {
                if fabrics && FabricsType::from_u8(sqe.fctype()) == Some(FabricsType::Disconnect) {
                    Gate::Pass
                } else {
                    Gate::Refuse
                }
            }
            _ => Gate::Pass,
        }
    }

    /// Authentication Send or Receive.
    pub(super) fn on_auth_command(&mut self, sqe: &Sqe, data: &[u8]) -> Flow {
        let cid = sqe.cid();
        let status = match FabricsCommand::parse(sqe) {
            Ok(FabricsCommand::AuthenticationSend(c)) => self.auth_send(sqe, &c, data),
            Ok(FabricsCommand::AuthenticationReceive(c)) => match self.auth_receive(sqe, &c) {
                Ok(msg) => {
                    self.send_data_and_complete(cid, &msg);
                    return Flow::Continue;
                }
                Err(s) => s,
            },
            Ok(_) => Status::INVALID_OPCODE,
            Err(e) => e.status(),
        };
        self.complete(cid, status, 0, 0);
        Flow::Continue
    }

    fn auth_send(&mut self, sqe: &Sqe, c: &AuthSendCommand, data: &[u8]) -> Status {
        if let Err(offset) = check_dhchap_protocol(c.secp, c.spsp0, c.spsp1) {
            tracing::debug!(
                conn = self.id,
                offset,
                "Authentication Send: not DH-HMAC-CHAP"
            );
            return Status::INVALID_FIELD;
        }
        if c.tl == 0 {
            return Status::INVALID_FIELD;
        }
        let data = match Self::in_capsule(sqe, data) {
            Ok(d) => d,
            Err(s) => return s,
        };
        if data.len() != c.tl as usize {
            return Status::DATA_SGL_LENGTH_INVALID;
        }
        let (id, qid) = (self.id, self.queue.as_ref().map_or(0, |q| q.qid));
        let Some(auth) = &mut self.auth else {
            // This host has no key: there is nothing to authenticate.
            return Status::COMMAND_SEQUENCE_ERROR;
        };
        match auth.on_send(data) {
            SendOutcome::Accepted => {}
            SendOutcome::Authenticated => {
                tracing::info!(conn = id, qid, "host and controller authenticated")
            }
            SendOutcome::Refused(why) => {
                tracing::warn!(conn = id, qid, ?why, "authentication refused")
            }
            SendOutcome::HostFailed(code) => {
                tracing::warn!(
                    conn = id,
                    qid,
                    code,
                    "the host ended authentication (Failure2)"
                )
            }
        }
        Status::SUCCESS
    }

    fn auth_receive(&mut self, sqe: &Sqe, c: &AuthReceiveCommand) -> Result<Vec<u8>, Status> {
        check_dhchap_protocol(c.secp, c.spsp0, c.spsp1).map_err(|_| Status::INVALID_FIELD)?;
        let room = Self::c2h_sgl_len(sqe)?.min(c.al);
        if room == 0 {
            return Err(Status::INVALID_FIELD);
        }
        let (id, qid) = (self.id, self.queue.as_ref().map_or(0, |q| q.qid));
        let auth = self.auth.as_mut().ok_or(Status::COMMAND_SEQUENCE_ERROR)?;
        let was = auth.is_authenticated();
        let msg = auth.on_receive();
        if !was && auth.is_authenticated() {
            tracing::info!(conn = id, qid, "host authenticated");
        }
        if msg.len() > room as usize {
            // The host left too little room for the message (AL or the SGL).
            return Err(Status::INVALID_FIELD);
        }
        Ok(msg)
    }
}
