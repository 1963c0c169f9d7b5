//! Errors of the host: protocol violations by the controller, per-command failures and
//! controller-level failures.

use nvme_tcp_wire::{Fes, WireError};

/// The controller broke the NVMe/TCP protocol on a queue. Every variant is fatal for the queue:
/// the affected command (if any, see [`ProtocolError::cid`]) fails, the connection is torn
/// down and re-established.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// A PDU header failed wire-layer validation.
    #[error("invalid PDU header: {0}")]
    Header(#[from] WireError),
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
    /// A CapsuleResp names a CID with no command in flight (stale generation or never used).
    #[error("CapsuleResp for unknown CID {cid:#06x}")]
    UnknownCid {
        /// CID as received.
        cid: u16,
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
}

impl NvmeStatus {
    /// Decodes the 16-bit STATUS field of a CQE (bit 0 is the phase tag, ignored on fabrics).
    pub fn from_cqe_status(raw: u16) -> Self {
        Self {
            sc: (raw >> 1) as u8,
            sct: ((raw >> 9) & 0x7) as u8,
            more: raw & (1 << 14) != 0,
            dnr: raw & (1 << 15) != 0,
        }
    }

    /// True for "Successful Completion".
    pub fn is_success(&self) -> bool {
        self.sct == 0 && self.sc == 0
    }
}

impl std::fmt::Display for NvmeStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match (self.sct, self.sc) {
            (0, 0x00) => "successful completion",
            (0, 0x01) => "invalid command opcode",
            (0, 0x02) => "invalid field in command",
            (0, 0x04) => "data transfer error",
            (0, 0x06) => "internal error",
            (0, 0x07) => "command abort requested",
            (0, 0x0B) => "invalid namespace or format",
            (0, 0x0F) => "data SGL length invalid",
            (0, 0x22) => "transient transport error",
            (0, 0x80) => "LBA out of range",
            (0, 0x81) => "capacity exceeded",
            (0, 0x82) => "namespace not ready",
            (1, 0x80) => "connect: incompatible format",
            (1, 0x81) => "connect: controller busy",
            (1, 0x82) => "connect: invalid parameters",
            (1, 0x83) => "connect: restart discovery",
            (1, 0x84) => "connect: invalid host",
            _ => "",
        };
        write!(f, "SCT {:#x} SC {:#04x}", self.sct, self.sc)?;
        if !name.is_empty() {
            write!(f, " ({name})")?;
        }
        if self.dnr {
            write!(f, " DNR")?;
        }
        Ok(())
    }
}

/// Why one command failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IoError {
    /// The controller completed the command with an error status.
    #[error("command failed: {0}")]
    Status(NvmeStatus),
    /// The data digest of received data did not match: a data transfer error. The queue stays
    /// up; the buffer content is not trustworthy.
    #[error(
        "data transfer error: data digest mismatch (received {received:#010x}, computed {computed:#010x})"
    )]
    DataDigest {
        /// DDGST as received.
        received: u32,
        /// CRC32C computed over the placed data.
        computed: u32,
    },
    /// The controller violated the protocol while handling this command; the queue was reset.
    #[error("protocol violation: {0}")]
    Protocol(ProtocolError),
    /// The command did not complete in time, and neither did its Abort.
    #[error("command timed out")]
    Timeout,
    /// The connection was lost and `fast_io_fail_tmo` or `ctrl_loss_tmo` expired, or the queue
    /// was shut down, before the command could complete.
    #[error("queue lost: {0}")]
    QueueLost(&'static str),
    /// The command cannot be sent (transfer larger than the controller allows, bad buffer).
    #[error("invalid command: {0}")]
    Invalid(String),
}

/// A controller-level error: connecting, bring-up, admin commands.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// Socket error.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// Protocol violation by the controller.
    #[error("protocol error: {0}")]
    Protocol(#[from] ProtocolError),
    /// A command failed.
    #[error("{0}")]
    Command(#[from] IoError),
    /// The Fabrics Connect command was rejected.
    #[error("Connect rejected on queue {qid}: {status}")]
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
    /// A timeout waiting for the controller.
    #[error("timed out: {0}")]
    Timeout(&'static str),
    /// Invalid argument from the caller.
    #[error("invalid argument: {0}")]
    Invalid(String),
    /// In-band authentication (DH-HMAC-CHAP) failed or was required without a key.
    #[error("authentication failed: {0}")]
    Authentication(String),
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
        assert!(s.to_string().contains("invalid parameters"));
        assert!(
            NvmeStatus::from_cqe_status(1).is_success(),
            "phase bit ignored"
        );
    }
}
