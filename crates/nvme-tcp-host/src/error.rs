//! Errors of the host: protocol violations by the controller, per-command failures and
//! controller-level failures.
//!
//! Every message is complete on its own (it is what the logs show): an error that wraps
//! another prints the inner message and does not also return it as its `source()`, so a
//! printed cause chain names each cause once.

use std::time::Duration;

use nvme_tcp_wire::nvme::{
    AdminOpcode, ConnectData, ConnectResponse, IoCommand, IoOpcode, Sqe, Status,
};
use nvme_tcp_wire::{Fes, WireError};

/// The controller broke the NVMe/TCP protocol on a queue. Every variant is fatal for the queue:
/// the affected command (if any, see [`ProtocolError::cid`]) fails, the connection is torn
/// down and re-established.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// A PDU header failed wire-layer validation.
    #[error("invalid PDU header: {0}")]
    Header(WireError),
    /// The first bytes received on a new connection are not the common header of an ICResp
    /// (or C2HTermReq): whatever answers on that port does not speak NVMe/TCP.
    #[error(
        "not an NVMe/TCP port: the first bytes received, \"{}\", are not an ICResp ({detail})",
        first.escape_ascii()
    )]
    NotNvmeTcp {
        /// The first 8 bytes received.
        first: [u8; 8],
        /// Why they are not an NVMe/TCP common header.
        detail: WireError,
    },
    /// A PDU type the host never expects from a controller at this point.
    #[error("unexpected PDU type {pdu_type:#04x} {state}")]
    UnexpectedPdu {
        /// PDU-TYPE as received.
        pdu_type: u8,
        /// Where the receive path was.
        state: &'static str,
    },
    /// The controller terminated the connection with a C2HTermReq.
    #[error("controller sent C2HTermReq: FES {fes:#06x} ({fes_name}), FEI {fei:#010x}")]
    TermReq {
        /// Fatal Error Status.
        fes: u16,
        /// Name of the FES, or "reserved".
        fes_name: &'static str,
        /// Fatal Error Information.
        fei: u32,
    },
    /// ICResp was not acceptable (version, alignment, digest mismatch, MAXH2CDATA).
    #[error("ICResp rejected: {0}")]
    IcResp(String),
    /// A data PDU or R2T names a CCCID that has no command in flight.
    #[error("{pdu} for unknown CCCID {cccid:#06x}")]
    UnknownCccid {
        /// The PDU kind.
        pdu: &'static str,
        /// CCCID as received.
        cccid: u16,
    },
    /// A CapsuleResp names a CID the host never issued on this queue.
    #[error("CapsuleResp for unknown CID {cid:#06x}")]
    UnknownCid {
        /// CID as received.
        cid: u16,
    },
    /// A PDU names a command that is no longer in flight: its completion already arrived (a
    /// duplicate completion, or data after the completion), or its slot has since been reused
    /// by a newer command (a stale CID from an earlier generation).
    #[error(
        "{pdu} for CID {cid:#06x}, {}",
        if *duplicate {
            "a command that already completed (duplicate completion)"
        } else {
            "a command from an earlier use of its slot (stale completion)"
        }
    )]
    StaleCid {
        /// The PDU kind.
        pdu: &'static str,
        /// CID (or CCCID) as received.
        cid: u16,
        /// True if it names the last command of its slot, which already completed; false if
        /// it names an older one.
        duplicate: bool,
    },
    /// C2HData for a command that does not read data.
    #[error("C2HData for CID {cid:#06x}, which transfers no data to the host")]
    DataForNonRead {
        /// The command.
        cid: u16,
    },
    /// C2HData DATAO/DATAL outside the command's buffer.
    #[error(
        "C2HData for CID {cid:#06x}: DATAO {datao} + DATAL {datal} exceeds the {len}-byte transfer"
    )]
    DataOutOfRange {
        /// The command.
        cid: u16,
        /// DATAO as received.
        datao: u32,
        /// DATAL as received.
        datal: u32,
        /// Transfer length of the command.
        len: usize,
    },
    /// C2HData not contiguous with the data received so far.
    #[error(
        "C2HData for CID {cid:#06x}: DATAO {datao}, expected {expected} (data must be contiguous)"
    )]
    NotContiguous {
        /// The command.
        cid: u16,
        /// DATAO as received.
        datao: u32,
        /// Bytes received so far.
        expected: usize,
    },
    /// DATAL does not match the PDU's data length (PLEN − PDO − DDGST), or is zero.
    #[error("C2HData for CID {cid:#06x}: DATAL {datal}, but the PDU carries {carried} data bytes")]
    DataLength {
        /// The command.
        cid: u16,
        /// DATAL as received.
        datal: u32,
        /// Data bytes the PDU carries.
        carried: usize,
    },
    /// C2HData with SUCCESS but without LAST_PDU.
    #[error("C2HData for CID {cid:#06x}: SUCCESS set without LAST_PDU")]
    SuccessWithoutLast {
        /// The command.
        cid: u16,
    },
    /// LAST_PDU on a C2HData that does not end the transfer, or data after LAST_PDU.
    #[error("C2HData for CID {cid:#06x}: LAST_PDU inconsistent with the transfer ({detail})")]
    LastPdu {
        /// The command.
        cid: u16,
        /// What was wrong.
        detail: &'static str,
    },
    /// A successful read completed before all of its data arrived.
    #[error("short read on CID {cid:#06x}: {received} of {expected} bytes received")]
    ShortRead {
        /// The command.
        cid: u16,
        /// Bytes received.
        received: usize,
        /// Transfer length.
        expected: usize,
    },
    /// An R2T for a command that has no data to send through R2T.
    #[error("R2T for CID {cid:#06x}, which has no data waiting for R2T")]
    R2tNotExpected {
        /// The command.
        cid: u16,
    },
    /// R2TO/R2TL outside the command's data, zero length, or not contiguous.
    #[error(
        "R2T for CID {cid:#06x}: R2TO {r2to} R2TL {r2tl} invalid for a {len}-byte transfer with {sent} bytes sent"
    )]
    R2tOutOfRange {
        /// The command.
        cid: u16,
        /// R2TO as received.
        r2to: u32,
        /// R2TL as received.
        r2tl: u32,
        /// Transfer length.
        len: usize,
        /// Bytes already requested by earlier R2Ts.
        sent: usize,
    },
    /// The peer closed the connection.
    #[error("connection closed by the controller")]
    Closed,
}

impl From<WireError> for ProtocolError {
    fn from(e: WireError) -> Self {
        ProtocolError::Header(e)
    }
}

impl ProtocolError {
    /// The CID of the command this violation concerns, if it concerns one.
    pub fn cid(&self) -> Option<u16> {
        match self {
            ProtocolError::DataForNonRead { cid }
            | ProtocolError::DataOutOfRange { cid, .. }
            | ProtocolError::NotContiguous { cid, .. }
            | ProtocolError::DataLength { cid, .. }
            | ProtocolError::SuccessWithoutLast { cid }
            | ProtocolError::LastPdu { cid, .. }
            | ProtocolError::ShortRead { cid, .. }
            | ProtocolError::R2tNotExpected { cid }
            | ProtocolError::R2tOutOfRange { cid, .. } => Some(*cid),
            _ => None,
        }
    }

    /// A [`ProtocolError::TermReq`] from the received FES and FEI.
    pub fn term_req(fes: u16, fei: u32) -> Self {
        let fes_name = match Fes::from_code(fes) {
            Some(Fes::InvalidHeaderField) => "invalid PDU header field",
            Some(Fes::PduSequenceError) => "PDU sequence error",
            Some(Fes::HeaderDigestError) => "header digest error",
            Some(Fes::DataTransferOutOfRange) => "data transfer out of range",
            Some(Fes::DataTransferLimitExceeded) => "data transfer limit exceeded",
            Some(Fes::UnsupportedParameter) => "unsupported parameter",
            None => "reserved",
        };
        ProtocolError::TermReq { fes, fes_name, fei }
    }
}

/// The status field of a completion (CQE DW3 bits 31:17), decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NvmeStatus {
    /// Status Code Type.
    pub sct: u8,
    /// Status Code.
    pub sc: u8,
    /// Do Not Retry.
    pub dnr: bool,
    /// More information in the Error log.
    pub more: bool,
    /// Dword 0 of the completion: command specific (for Connect Invalid Parameters, which
    /// parameter was refused).
    pub dw0: u32,
}

impl NvmeStatus {
    /// Decodes the 16-bit STATUS field of a CQE (bit 0 is the phase tag, ignored on fabrics).
    pub fn from_cqe_status(raw: u16) -> Self {
        Self {
            sc: (raw >> 1) as u8,
            sct: ((raw >> 9) & 0x7) as u8,
            more: raw & (1 << 14) != 0,
            dnr: raw & (1 << 15) != 0,
            dw0: 0,
        }
    }

    /// The same status with Dword 0 of its completion.
    pub fn with_dw0(self, dw0: u32) -> Self {
        Self { dw0, ..self }
    }

    /// For Connect Invalid Parameters: the parameter the controller refused, from Dword 0
    /// (IATTR, IPO), named where the host knows it.
    pub fn connect_invalid_parameter(&self) -> Option<String> {
        if self.status() != Status::CONNECT_INVALID_PARAMETERS {
            return None;
        }
        let ConnectResponse::InvalidParameter { in_data, ipo } =
            ConnectResponse::invalid_parameter_from_dw0(self.dw0)
        else {
            return None;
        };
        let name = match (in_data, ipo) {
            (true, ConnectData::SUBNQN_OFFSET) => {
                "the subsystem NQN (no such subsystem on this port, or not exported there)"
            }
            (true, ConnectData::HOSTNQN_OFFSET) => "the host NQN",
            (true, ConnectData::CNTLID_OFFSET) => "the controller ID",
            (true, 0) => "the host identifier",
            (false, 44) => "the queue size (SQSIZE)",
            (false, 42) => "the queue ID (QID)",
            (false, 48) => "the Keep Alive Timeout (KATO)",
            (in_data, ipo) => {
                return Some(format!(
                    "byte {ipo} of the Connect {}",
                    if in_data { "data" } else { "command" }
                ));
            }
        };
        Some(name.to_string())
    }

    /// True for "Successful Completion".
    pub fn is_success(&self) -> bool {
        self.sct == 0 && self.sc == 0
    }
}

impl NvmeStatus {
    /// SCT and SC as the wire layer's [`Status`].
    pub fn status(&self) -> Status {
        Status::new(self.sct, self.sc)
    }

    /// The spec's name of the status. Command specific codes 0x80 and up mean one thing for
    /// Fabrics commands and another for NVM I/O commands: `fabrics` picks the meaning.
    pub fn name(&self, fabrics: bool) -> Option<&'static str> {
        // The wire layer's table names the shared values after their Fabrics meaning.
        if !fabrics && self.sct == 1 {
            match self.sc {
                0x80 => return Some("Conflicting Attributes"),
                0x81 => return Some("Invalid Protection Information"),
                0x82 => return Some("Attempted Write to Read Only Range"),
                _ => {}
            }
        }
        self.status().name()
    }

    fn fmt_with(&self, f: &mut std::fmt::Formatter<'_>, fabrics: bool) -> std::fmt::Result {
        match self.name(fabrics) {
            Some(name) => write!(f, "{name} (SCT {:#x} SC {:#04x}", self.sct, self.sc)?,
            None => write!(f, "status SCT {:#x} SC {:#04x} (", self.sct, self.sc)?,
        }
        if self.name(fabrics).is_none() {
            f.write_str(match self.sct {
                7 => "vendor specific",
                _ => "unknown to this host",
            })?;
        }
        if self.dnr {
            f.write_str(", do not retry")?;
        }
        f.write_str(")")
    }
}

impl std::fmt::Display for NvmeStatus {
    /// The name as the status of a Fabrics command (what the host meets without a command
    /// to name it: Connect, Property Get/Set), else as an NVM command's.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.fmt_with(f, true)
    }
}

/// Why one command failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IoError {
    /// The controller completed the command with an error status.
    #[error("{0}")]
    Status(NvmeStatus),
    /// The data digest of received data did not match: a data transfer error. The queue stays
    /// up; the buffer content is not trustworthy.
    #[error(
        "data digest mismatch in the C2HData PDU at DATAO {datao} (DATAL {datal}): received \
         {received:#010x}, computed {computed:#010x}"
    )]
    DataDigest {
        /// DDGST as received.
        received: u32,
        /// CRC32C computed over the placed data.
        computed: u32,
        /// DATAO of the PDU whose digest failed.
        datao: u32,
        /// DATAL of that PDU.
        datal: u32,
    },
    /// The controller violated the protocol while handling this command; the queue was reset.
    #[error("protocol violation: {0}")]
    Protocol(ProtocolError),
    /// The command did not complete in time, and neither did its Abort.
    #[error("no completion within {} (the command timeout), nor for its Abort", secs(*after))]
    Timeout {
        /// The command timeout.
        after: Duration,
    },
    /// The connection was lost and `fast_io_fail_tmo` or `ctrl_loss_tmo` expired, or the queue
    /// was shut down, before the command could complete.
    #[error("queue lost: {0}")]
    QueueLost(&'static str),
    /// The command cannot be sent (transfer larger than the controller allows, bad buffer).
    #[error("invalid command: {0}")]
    Invalid(String),
    /// The queue's connection failed for a reason that is not a protocol violation (a socket
    /// error, another command's timeout reset the queue); the command was in flight.
    #[error("connection failed: {0}")]
    Transport(String),
    /// The host gave up on a command that was in flight when its queue's connection failed
    /// at least once: it ran out of retries ([`crate::ConnectOptions::max_retries`]), or the
    /// connection stayed down past `fast_io_fail_tmo` or `ctrl_loss_tmo`. `last` (the
    /// `source()`, not part of the message) is the failure of the last connection it was sent
    /// on.
    #[error("command failed after {attempts} attempt(s): {reason}")]
    GaveUp {
        /// How often the command was sent.
        attempts: u32,
        /// Why the host stopped re-sending it.
        reason: GiveUpReason,
        /// Why the last connection it was sent on failed.
        #[source]
        last: Box<IoError>,
    },
}

/// Why the host stopped re-sending a command (see [`IoError::GaveUp`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum GiveUpReason {
    /// Sent `max_retries + 1` times, on connections that all failed.
    #[error("retry limit reached")]
    RetryLimit,
    /// The connection was not back, with a command completed on it, within
    /// `fast_io_fail_tmo` of its loss.
    #[error("fast_io_fail_tmo expired")]
    FastIoFail,
    /// The connection was not back, with a command completed on it, within `ctrl_loss_tmo`
    /// of its loss: the controller is given up.
    #[error("ctrl_loss_tmo expired")]
    CtrlLoss,
    /// The command's own timeout expired while its queue was reconnecting (it is failed then,
    /// not re-sent and aborted).
    #[error("command timeout expired while reconnecting")]
    CommandTimeout,
}

impl GiveUpReason {
    /// The reason as [`IoError::QueueLost`] gives it to commands that were never sent on a
    /// failed connection.
    pub fn as_str(self) -> &'static str {
        match self {
            GiveUpReason::RetryLimit => "retry limit reached",
            GiveUpReason::FastIoFail => "fast_io_fail_tmo expired",
            GiveUpReason::CtrlLoss => "ctrl_loss_tmo expired",
            GiveUpReason::CommandTimeout => "command timeout expired while reconnecting",
        }
    }
}

impl IoError {
    /// What a command in flight on a connection that failed with `e` is told, when the
    /// failure names no command.
    pub fn from_connection_loss(e: &HostError) -> IoError {
        match e {
            HostError::Protocol(p) => IoError::Protocol(p.clone()),
            HostError::Command(c) => c.clone(),
            other => IoError::Transport(other.to_string()),
        }
    }

    /// The failure behind this one: the last connection failure of a command the host gave
    /// up on, else the error itself.
    pub fn root_cause(&self) -> &IoError {
        match self {
            IoError::GaveUp { last, .. } => last.root_cause(),
            other => other,
        }
    }
}

/// A duration as people read it: `30s`, `1.5s`, `250ms`.
fn secs(d: Duration) -> String {
    if d.subsec_millis() == 0 && d.as_secs() > 0 {
        format!("{}s", d.as_secs())
    } else if d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else {
        format!("{:.3}s", d.as_secs_f64())
    }
}

/// What identifies a command, for the message of its failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommandInfo {
    /// The queue it was sent on (0: admin).
    pub qid: u16,
    /// Its CID.
    pub cid: u16,
    /// Its opcode.
    pub opcode: u8,
    /// Its namespace (0: none).
    pub nsid: u32,
    /// First logical block and number of blocks, for commands on a range of blocks.
    pub lba: Option<(u64, u32)>,
}

impl CommandInfo {
    /// The facts of the command in `sqe`, sent on queue `qid` with `cid`.
    pub fn from_sqe(qid: u16, cid: u16, sqe: &[u8; 64]) -> Self {
        let sqe = Sqe::from_array(sqe);
        let lba = if qid == 0 {
            None
        } else {
            match IoCommand::parse(sqe) {
                Ok(IoCommand::Read(c) | IoCommand::Write(c)) => {
                    Some((c.slba, u32::from(c.nlb) + 1))
                }
                Ok(IoCommand::WriteZeroes(c)) => Some((c.slba, u32::from(c.nlb) + 1)),
                _ => None,
            }
        };
        Self {
            qid,
            cid,
            opcode: sqe.opcode(),
            nsid: sqe.nsid(),
            lba,
        }
    }

    /// The opcode's name, from the admin or the NVM I/O set by the queue.
    pub fn opcode_name(&self) -> Option<String> {
        if self.qid == 0 {
            AdminOpcode::from_u8(self.opcode).map(|o| format!("{o:?}"))
        } else {
            IoOpcode::from_u8(self.opcode).map(|o| format!("{o:?}"))
        }
    }
}

impl std::fmt::Display for CommandInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.opcode_name() {
            Some(n) => write!(f, "{n} (opcode {:#04x})", self.opcode)?,
            None => write!(f, "opcode {:#04x}", self.opcode)?,
        }
        write!(f, ", CID {:#06x} on queue {}", self.cid, self.qid)?;
        if self.nsid != 0 && self.nsid != u32::MAX {
            write!(f, ", namespace {}", self.nsid)?;
        }
        if let Some((slba, nlb)) = self.lba {
            write!(
                f,
                ", LBA {slba}..={} ({nlb} block{})",
                slba.saturating_add(u64::from(nlb).saturating_sub(1)),
                if nlb == 1 { "" } else { "s" }
            )?;
        }
        Ok(())
    }
}

/// One command's failure with what identifies the command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandError {
    /// The command.
    pub cmd: CommandInfo,
    /// Why it failed.
    pub error: IoError,
}

impl std::fmt::Display for CommandError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} failed: ", self.cmd)?;
        match &self.error {
            IoError::Status(s) => s.fmt_with(f, self.cmd.opcode == AdminOpcode::Fabrics as u8),
            e => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for CommandError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        // The message already carries `error`'s own text: the cause after it is its source.
        std::error::Error::source(&self.error)
    }
}

/// A controller-level error: connecting, bring-up, admin commands.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// Socket error.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The TCP connection to the controller could not be opened.
    #[error("cannot connect to {addr}: {error}")]
    Connect {
        /// The address tried, `host:port`.
        addr: String,
        /// Why (for a timeout, the time waited is in the message).
        error: std::io::Error,
    },
    /// Protocol violation by the controller.
    #[error("protocol error: {0}")]
    Protocol(ProtocolError),
    /// A command failed.
    #[error(transparent)]
    Command(#[from] IoError),
    /// A command failed; the error names the command (CID, opcode, LBA range).
    #[error(transparent)]
    CommandFailed(#[from] CommandError),
    /// The namespace does not exist on the controller (not active).
    #[error("namespace {0} not found")]
    NamespaceNotFound(u32),
    /// The Fabrics Connect command was rejected.
    #[error(
        "Connect rejected on queue {qid}: {status}{}",
        status.connect_invalid_parameter().map(|p| format!(": refused {p}")).unwrap_or_default()
    )]
    ConnectRejected {
        /// Queue id.
        qid: u16,
        /// Status returned.
        status: NvmeStatus,
    },
    /// The controller did not become ready (CSTS.RDY) in time or reported a fatal status.
    #[error("controller not ready: {0}")]
    NotReady(String),
    /// Something the controller reported is unusable by this host.
    #[error("unsupported controller: {0}")]
    Unsupported(String),
    /// The controller is gone and will not come back (ctrl_loss_tmo expired, or shut down).
    #[error("controller lost")]
    Lost,
    /// The association is being re-established after its admin connection was lost: what
    /// needs it (an I/O queue's reconnect) does not wait for that and tries again later.
    #[error("the controller is reconnecting (its association is being re-established)")]
    Reconnecting,
    /// A timeout waiting for the controller.
    #[error("no {what} within {}", secs(*after))]
    Timeout {
        /// What did not come.
        what: &'static str,
        /// How long the host waited.
        after: Duration,
    },
    /// Invalid argument from the caller.
    #[error("invalid argument: {0}")]
    Invalid(String),
    /// In-band authentication (DH-HMAC-CHAP) failed or was required without a key.
    #[error("authentication failed: {0}")]
    Authentication(String),
    /// The TLS session could not be set up (wrong PSK, a controller port without TLS).
    #[error("{0}")]
    Tls(String),
}

impl From<ProtocolError> for HostError {
    fn from(e: ProtocolError) -> Self {
        HostError::Protocol(e)
    }
}

/// Result with a [`HostError`].
pub type Result<T> = std::result::Result<T, HostError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_decodes_sct_sc_and_dnr() {
        // SCT 1, SC 0x82, DNR: raw = (1<<15) | (1<<9) | (0x82<<1)
        let s = NvmeStatus::from_cqe_status((1 << 15) | (1 << 9) | (0x82 << 1));
        assert_eq!((s.sct, s.sc, s.dnr), (1, 0x82, true));
        assert_eq!(
            s.to_string(),
            "Connect Invalid Parameters (SCT 0x1 SC 0x82, do not retry)"
        );
        assert!(
            NvmeStatus::from_cqe_status(1).is_success(),
            "phase bit ignored"
        );
    }

    fn status(sct: u8, sc: u8) -> NvmeStatus {
        NvmeStatus {
            sct,
            sc,
            dnr: false,
            more: false,
            dw0: 0,
        }
    }

    #[test]
    fn a_refused_connect_names_the_parameter() {
        let e = |dw0| HostError::ConnectRejected {
            qid: 0,
            status: status(1, 0x82).with_dw0(dw0),
        };
        assert_eq!(
            e(ConnectResponse::invalid_parameter(true, ConnectData::SUBNQN_OFFSET).to_dw0())
                .to_string(),
            "Connect rejected on queue 0: Connect Invalid Parameters (SCT 0x1 SC 0x82): refused \
             the subsystem NQN (no such subsystem on this port, or not exported there)"
        );
        assert!(
            e(ConnectResponse::invalid_parameter(false, 44).to_dw0())
                .to_string()
                .ends_with(": refused the queue size (SQSIZE)")
        );
        assert!(
            e(ConnectResponse::invalid_parameter(true, 900).to_dw0())
                .to_string()
                .ends_with(": refused byte 900 of the Connect data")
        );
    }

    #[test]
    fn statuses_are_named_by_the_spec_and_by_the_command() {
        assert_eq!(
            status(2, 0x81).to_string(),
            "Unrecovered Read Error (SCT 0x2 SC 0x81)"
        );
        assert_eq!(
            status(0, 0x80).to_string(),
            "LBA Out of Range (SCT 0x0 SC 0x80)"
        );
        assert_eq!(
            status(5, 0x01).to_string(),
            "status SCT 0x5 SC 0x01 (unknown to this host)"
        );
        // SCT 1 SC 0x82: Connect Invalid Parameters for Connect, a read-only range for Write.
        let write = CommandInfo {
            qid: 1,
            cid: 0x0041,
            opcode: IoOpcode::Write as u8,
            nsid: 1,
            lba: Some((8, 8)),
        };
        let e = CommandError {
            cmd: write,
            error: IoError::Status(status(1, 0x82)),
        };
        assert_eq!(
            e.to_string(),
            "Write (opcode 0x01), CID 0x0041 on queue 1, namespace 1, LBA 8..=15 (8 blocks) \
             failed: Attempted Write to Read Only Range (SCT 0x1 SC 0x82)"
        );
    }

    #[test]
    fn a_command_is_described_from_its_sqe() {
        let r = crate::cmd::read(3, 100, 16, crate::IoBuf::Contig(vec![0; 8192]), 0);
        let c = CommandInfo::from_sqe(2, 0x1234, &r.sqe);
        assert_eq!((c.opcode, c.nsid, c.lba), (0x02, 3, Some((100, 16))));
        assert_eq!(
            c.to_string(),
            "Read (opcode 0x02), CID 0x1234 on queue 2, namespace 3, LBA 100..=115 (16 blocks)"
        );
        let id = crate::cmd::identify(
            nvme_tcp_wire::nvme::IdentifyCommand::controller(),
            crate::IoBuf::Contig(vec![0; 4096]),
            0,
        );
        let c = CommandInfo::from_sqe(0, 7, &id.sqe);
        assert_eq!(
            c.to_string(),
            "Identify (opcode 0x06), CID 0x0007 on queue 0"
        );
    }

    /// Each message of a chain, outermost first.
    fn chain(e: &(dyn std::error::Error + 'static)) -> Vec<String> {
        let mut out = vec![e.to_string()];
        let mut cur = e.source();
        while let Some(c) = cur {
            out.push(c.to_string());
            cur = c.source();
        }
        out
    }

    #[test]
    fn no_error_repeats_its_cause_in_its_chain() {
        // A header error and a "not NVMe/TCP" one, as the receive path makes them.
        let mut q = crate::queue::QueueCore::new(crate::queue::QueueConfig {
            qid: 0,
            queue_size: 4,
            hdgst: false,
            ddgst: false,
            cid_mode: crate::CidMode::Tagged,
            in_capsule_max: 0,
        });
        let not_nvme = q.rx_feed(b"SSH-2.0-OpenSSH").unwrap_err();
        let ProtocolError::NotNvmeTcp { detail, .. } = not_nvme.clone() else {
            panic!("{not_nvme}")
        };
        let cmd = CommandInfo {
            qid: 1,
            cid: 1,
            opcode: 2,
            nsid: 1,
            lba: Some((0, 1)),
        };
        let errors: Vec<HostError> = vec![
            std::io::Error::from(std::io::ErrorKind::ConnectionReset).into(),
            HostError::Connect {
                addr: "127.0.0.1:4420".into(),
                error: std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
            },
            not_nvme.into(),
            ProtocolError::from(detail).into(),
            IoError::Protocol(ProtocolError::Closed).into(),
            IoError::Status(status(2, 0x81)).into(),
            CommandError {
                cmd,
                error: IoError::Protocol(ProtocolError::Closed),
            }
            .into(),
            HostError::Timeout {
                what: "ICResp",
                after: Duration::from_secs(3),
            },
        ];
        for e in &errors {
            let texts = chain(e);
            for w in texts.windows(2) {
                assert!(!w[0].contains(&w[1]), "{texts:?}");
            }
        }
        // A command the host gave up on: its last failure is the next cause, once.
        let gave_up = HostError::from(CommandError {
            cmd,
            error: IoError::GaveUp {
                attempts: 6,
                reason: GiveUpReason::RetryLimit,
                last: Box::new(IoError::Protocol(ProtocolError::Closed)),
            },
        });
        assert_eq!(
            chain(&gave_up),
            [
                "Read (opcode 0x02), CID 0x0001 on queue 1, namespace 1, LBA 0..=0 (1 block) \
                 failed: command failed after 6 attempt(s): retry limit reached",
                "protocol violation: connection closed by the controller"
            ]
        );
        assert_eq!(errors[7].to_string(), "no ICResp within 3s");
        assert!(
            errors[1]
                .to_string()
                .starts_with("cannot connect to 127.0.0.1:4420: "),
            "{}",
            errors[1]
        );
    }
}
