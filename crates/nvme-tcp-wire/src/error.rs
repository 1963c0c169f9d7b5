//! Errors of the wire layer and the Termination Request codes they map to.

/// Fatal Error Status of an H2CTermReq / C2HTermReq (NVMe/TCP 1.0, Termination Request PDUs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum Fes {
    /// 0x01: a PDU header field is invalid; FEI = byte offset of the field (PHFO).
    InvalidHeaderField = 0x01,
    /// 0x02: PDU sequence error; FEI reserved.
    PduSequenceError = 0x02,
    /// 0x03: header digest error; FEI = the received header digest (PHD).
    HeaderDigestError = 0x03,
    /// 0x04: data transfer out of range; FEI reserved.
    DataTransferOutOfRange = 0x04,
    /// 0x05: R2T limit exceeded / data transfer limit exceeded; FEI reserved.
    DataTransferLimitExceeded = 0x05,
    /// 0x06: unsupported parameter; FEI = byte offset of the field (UPFO).
    UnsupportedParameter = 0x06,
}

impl Fes {
    /// The FES value on the wire.
    pub const fn code(self) -> u16 {
        self as u16
    }

    /// Decodes a FES value; `None` for a reserved value.
    pub const fn from_code(code: u16) -> Option<Self> {
        Some(match code {
            0x01 => Self::InvalidHeaderField,
            0x02 => Self::PduSequenceError,
            0x03 => Self::HeaderDigestError,
            0x04 => Self::DataTransferOutOfRange,
            0x05 => Self::DataTransferLimitExceeded,
            0x06 => Self::UnsupportedParameter,
            _ => return None,
        })
    }
}

/// A problem with bytes read from the wire.
///
/// Errors that a receiver must answer with a Termination Request carry their [`Fes`] and FEI
/// (see [`WireError::termination`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The buffer is shorter than the structure needs.
    #[error("truncated: need {needed} bytes, have {have}")]
    Truncated {
        /// Bytes the structure needs.
        needed: usize,
        /// Bytes available.
        have: usize,
    },
    /// A header field has a value the spec does not allow.
    #[error("invalid {field} at offset {offset}: {reason}")]
    InvalidField {
        /// Name of the field, as in the spec.
        field: &'static str,
        /// Byte offset of the field in the PDU header (the FEI of FES 0x01).
        offset: u32,
        /// What was expected and what was found.
        reason: String,
    },
    /// The header digest does not match.
    #[error("header digest mismatch: received {received:#010x}, computed {computed:#010x}")]
    HeaderDigest {
        /// HDGST as received (the FEI of FES 0x03).
        received: u32,
        /// CRC32C computed over the header.
        computed: u32,
    },
    /// The data digest does not match.
    #[error("data digest mismatch: received {received:#010x}, computed {computed:#010x}")]
    DataDigest {
        /// DDGST as received.
        received: u32,
        /// CRC32C computed over the data.
        computed: u32,
    },
    /// A PDU arrived that is not allowed in the current state.
    #[error("PDU sequence error: {0}")]
    Sequence(String),
    /// Data outside the range of its command or R2T.
    #[error("data transfer out of range: {0}")]
    OutOfRange(String),
    /// Data beyond a negotiated limit (MAXH2CDATA, MAXR2T, maximum PDU size).
    #[error("data transfer limit exceeded: {0}")]
    LimitExceeded(String),
    /// A received Termination Request is malformed (e.g. PLEN outside 24..=152). The receiver
    /// closes the connection without answering (NVMe/TCP 1.0 §7.4.7 per FreeBSD's validator).
    #[error("malformed termination request: invalid {field} at offset {offset}: {reason}")]
    MalformedTermReq {
        /// Name of the field.
        field: &'static str,
        /// Byte offset of the field.
        offset: u32,
        /// What was found.
        reason: String,
    },
    /// A parameter the receiver does not support.
    #[error("unsupported {field} at offset {offset}: {reason}")]
    Unsupported {
        /// Name of the field.
        field: &'static str,
        /// Byte offset of the field (the FEI of FES 0x06).
        offset: u32,
        /// What was found.
        reason: String,
    },
}

impl WireError {
    /// The Termination Request `(FES, FEI)` a receiver sends for this error, if any.
    /// Truncation, data digest errors and malformed Termination Requests are not answered with
    /// a Termination Request.
    pub fn termination(&self) -> Option<(Fes, u32)> {
        match self {
            WireError::Truncated { .. }
            | WireError::DataDigest { .. }
            | WireError::MalformedTermReq { .. } => None,
            WireError::InvalidField { offset, .. } => Some((Fes::InvalidHeaderField, *offset)),
            WireError::HeaderDigest { received, .. } => Some((Fes::HeaderDigestError, *received)),
            WireError::Sequence(_) => Some((Fes::PduSequenceError, 0)),
            WireError::OutOfRange(_) => Some((Fes::DataTransferOutOfRange, 0)),
            WireError::LimitExceeded(_) => Some((Fes::DataTransferLimitExceeded, 0)),
            WireError::Unsupported { offset, .. } => Some((Fes::UnsupportedParameter, *offset)),
        }
    }

    /// Shorthand for [`WireError::InvalidField`].
    pub fn invalid(field: &'static str, offset: u32, reason: impl Into<String>) -> Self {
        WireError::InvalidField {
            field,
            offset,
            reason: reason.into(),
        }
    }
}

/// Result with a [`WireError`].
pub type Result<T> = std::result::Result<T, WireError>;
