//! Errors of the wire layer and the Termination Request codes they map to.

use std::fmt;

use crate::pdu::{MAX_PDA, PduType, TERM_REQ_MAX_PLEN};

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

/// Why a field or a PDU was refused: the reason of a [`WireError`], without allocation (the
/// text is built by `Display` only when someone prints it), so validation can run in a
/// byte-by-byte resync search.
///
/// Each reason names the rule of the NVMe/TCP 1.0 transport specification it enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reason {
    /// §7.4.1: a reserved PDU-TYPE value.
    ReservedType(u8),
    /// §7.4.1: a PDU type that travels in the other direction (`to_host`: the receiver is a
    /// host).
    WrongDirection {
        /// The type received.
        t: PduType,
        /// The receiver is the host.
        to_host: bool,
    },
    /// A PDU of another type than the one being parsed.
    UnexpectedType {
        /// The type found.
        found: u8,
        /// What was expected, as text ("CapsuleCmd", "a data PDU", ...).
        expected: &'static str,
    },
    /// §7.4.1 and each PDU's FLAGS table: bits the type does not define.
    FlagsNotAllowed {
        /// FLAGS as received.
        flags: u8,
        /// The type.
        t: PduType,
    },
    /// §7.4.6.1: HDGSTF differs from what was negotiated.
    Hdgstf {
        /// What the flag must be.
        want: bool,
    },
    /// §7.4.6.1: DDGSTF differs from what was negotiated and whether the PDU carries data.
    Ddgstf {
        /// What the flag must be.
        want: bool,
        /// The PDU carries data.
        data: bool,
    },
    /// §7.4.5.2: SUCCESS without LAST_PDU.
    SuccessWithoutLast,
    /// §7.4.1: HLEN is fixed per type.
    Hlen {
        /// The type.
        t: PduType,
        /// HLEN of the type.
        expected: u8,
        /// HLEN received.
        found: u8,
    },
    /// §7.4.1: a PDU type without data has PDO 0.
    PdoWithoutData {
        /// PDO received.
        pdo: u8,
    },
    /// §7.4.3: PDO inside the header (and its digest).
    PdoInsideHeader {
        /// PDO received.
        pdo: u8,
        /// Header bytes (HLEN + HDGST).
        header: u32,
    },
    /// §7.4.3: PDO not a multiple of the receiver's PDA alignment.
    PdoMisaligned {
        /// PDO received.
        pdo: u8,
        /// Alignment in bytes.
        align: u32,
    },
    /// §7.4.1: PDO beyond PLEN.
    PdoBeyondPlen {
        /// PDO received.
        pdo: u8,
        /// PLEN received.
        plen: u32,
    },
    /// §7.4.1: a PDU with data needs a PDO.
    PdoMissing,
    /// §7.4.4: a Termination Request's PLEN is HLEN..=152.
    TermReqPlen {
        /// PLEN received.
        plen: u32,
    },
    /// §7.4.1: a PDU type without data is exactly its header long.
    PlenFixed {
        /// Header bytes (HLEN + HDGST).
        expected: u32,
        /// PLEN received.
        plen: u32,
    },
    /// §7.4.1: PLEN shorter than the header.
    PlenShort {
        /// PLEN received.
        plen: u32,
        /// Where data starts.
        start: u32,
    },
    /// §7.4.6.1: a data digest needs data in front of it.
    PlenNoDataBeforeDigest {
        /// PLEN received.
        plen: u32,
    },
    /// PLEN above the receiver's maximum.
    PlenAboveMax {
        /// PLEN received.
        plen: u32,
        /// The receiver's maximum.
        max: u32,
    },
    /// §7.4.5.1/§7.4.5.2: DATAL differs from PLEN − PDO − DDGST.
    Datal {
        /// DATAL received.
        datal: u32,
        /// PLEN − PDO − DDGST.
        expected: u32,
    },
    /// §7.4.5.1: H2CData DATAL above MAXH2CDATA.
    AboveMaxH2cData {
        /// DATAL received.
        datal: u32,
        /// MAXH2CDATA.
        max: u32,
    },
    /// §7.4.5.3: R2TL 0.
    R2tlZero,
    /// §7.4.2: a PDU format version other than 0.
    Pfv(u16),
    /// §7.4.2: HPDA/CPDA above 31.
    PdaRange(u8),
    /// §7.4.2: MAXH2CDATA below 4096 or not a dword multiple.
    MaxH2cData(u32),
    /// An emitted PDU's data differs in length from what its header announces.
    DataLength {
        /// Bytes the header announces.
        announced: usize,
        /// Bytes given.
        given: usize,
    },
    /// A PDU of a type that is not expected in the receiver's state.
    NotExpected(PduType),
    /// §7.4: a PDU other than ICReq/ICResp (or a Termination Request) before the
    /// initialization exchange completed.
    BeforeIcReq(PduType),
    /// §7.4: ICReq after the connection was initialized.
    IcReqAgain,
    /// §7.4.5.1: H2CData whose TTAG names no transfer.
    UnknownTtag(u16),
    /// §7.4.5.1: H2CData for a transfer whose R2T was not sent yet.
    TtagBeforeR2t(u16),
    /// §7.4.5.1: H2CData whose CCCID differs from the command the TTAG belongs to.
    CccidOfTtag {
        /// TTAG received.
        ttag: u16,
        /// The command the TTAG belongs to.
        owner: u16,
        /// CCCID received.
        cccid: u16,
    },
    /// §7.4.5.1: data outside the range an R2T asked for.
    OutsideR2t {
        /// DATAO received.
        datao: u32,
        /// DATAL received.
        datal: u32,
        /// R2TL.
        len: u32,
        /// Next byte expected.
        next: u32,
    },
    /// §7.4.5.1: H2CData not contiguous with the previous one.
    Datao {
        /// DATAO received.
        datao: u32,
        /// DATAO expected.
        expected: u32,
    },
    /// §7.4.5.1: LAST_PDU on other than the PDU that ends the transfer.
    LastPdu {
        /// LAST_PDU received.
        last: bool,
        /// End of this PDU's data.
        end: u64,
        /// Bytes of the transfer.
        len: u32,
    },
    /// A streaming framer met a bad PDU earlier: framing of the stream is lost for good.
    FramingLost,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Reason::ReservedType(raw) => write!(f, "reserved PDU type {raw:#04x}"),
            Reason::WrongDirection { t, to_host } => write!(
                f,
                "{t:?} is not received by the {}",
                if to_host { "host" } else { "controller" }
            ),
            Reason::UnexpectedType { found, expected } => {
                write!(f, "expected {expected}, found {found:#04x}")
            }
            Reason::FlagsNotAllowed { flags, t } => {
                write!(f, "{flags:#04x} has bits not allowed for {t:?}")
            }
            Reason::Hdgstf { want } => write!(f, "HDGSTF must be {want} (as negotiated)"),
            Reason::Ddgstf { want, data } => write!(
                f,
                "DDGSTF must be {want} (as negotiated, PDU carries data: {data})"
            ),
            Reason::SuccessWithoutLast => f.write_str("SUCCESS without LAST_PDU"),
            Reason::Hlen { t, expected, found } => {
                write!(f, "expected {expected} for {t:?}, found {found}")
            }
            Reason::PdoWithoutData { pdo } => {
                write!(f, "PDU carries no data, PDO must be 0, found {pdo}")
            }
            Reason::PdoInsideHeader { pdo, header } => {
                write!(f, "PDO {pdo} inside the header ({header} bytes)")
            }
            Reason::PdoMisaligned { pdo, align } => {
                write!(f, "PDO {pdo} not a multiple of the PDA alignment {align}")
            }
            Reason::PdoBeyondPlen { pdo, plen } => write!(f, "PDO {pdo} beyond PLEN {plen}"),
            Reason::PdoMissing => f.write_str("a PDU with data needs a PDO"),
            Reason::TermReqPlen { plen } => {
                write!(f, "PLEN {plen} outside 24..={TERM_REQ_MAX_PLEN}")
            }
            Reason::PlenFixed { expected, plen } => {
                write!(f, "PDU is exactly {expected} bytes, PLEN {plen}")
            }
            Reason::PlenShort { plen, start } => {
                write!(f, "PLEN {plen} shorter than the header ({start} bytes)")
            }
            Reason::PlenNoDataBeforeDigest { plen } => {
                write!(f, "PLEN {plen} leaves no data before the data digest")
            }
            Reason::PlenAboveMax { plen, max } => write!(f, "PLEN {plen} above the maximum {max}"),
            Reason::Datal { datal, expected } => {
                write!(f, "DATAL {datal} but PLEN − PDO − DDGST = {expected}")
            }
            Reason::AboveMaxH2cData { datal, max } => {
                write!(f, "H2CData DATAL {datal} above MAXH2CDATA {max}")
            }
            Reason::R2tlZero => f.write_str("R2TL is 0"),
            Reason::Pfv(v) => write!(f, "PDU format version {v}"),
            Reason::PdaRange(v) => write!(f, "{v} above {MAX_PDA}"),
            Reason::MaxH2cData(v) => write!(f, "{v}: must be ≥ 4096 and a multiple of 4"),
            Reason::DataLength { announced, given } => {
                write!(f, "header announces {announced} data bytes, got {given}")
            }
            Reason::NotExpected(t) => write!(f, "{t:?} not expected"),
            Reason::BeforeIcReq(t) => write!(f, "{t:?} before ICReq"),
            Reason::IcReqAgain => f.write_str("ICReq after connection initialization"),
            Reason::UnknownTtag(t) => write!(f, "no R2T with TTAG {t}"),
            Reason::TtagBeforeR2t(t) => write!(f, "TTAG {t} has no R2T yet"),
            Reason::CccidOfTtag { ttag, owner, cccid } => {
                write!(f, "TTAG {ttag} belongs to CID {owner}, not {cccid}")
            }
            Reason::OutsideR2t {
                datao,
                datal,
                len,
                next,
            } => write!(
                f,
                "DATAO {datao} + DATAL {datal} outside the R2T range 0..{len} (next {next})"
            ),
            Reason::Datao { datao, expected } => write!(f, "DATAO {datao}, expected {expected}"),
            Reason::LastPdu { last, end, len } => {
                write!(f, "LAST_PDU {last} at {end} of {len} R2T bytes")
            }
            Reason::FramingLost => f.write_str("framing lost at an earlier PDU"),
        }
    }
}

/// A problem with bytes read from the wire.
///
/// Errors that a receiver must answer with a Termination Request carry their [`Fes`] and FEI
/// (see [`WireError::termination`]). Nothing here allocates: a `WireError` is `Copy`, and its
/// text is built only when it is displayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The buffer is shorter than the structure needs.
    #[error("truncated: need {needed} bytes, have {have}")]
    Truncated {
        /// Bytes the structure needs.
        needed: usize,
        /// Bytes available.
        have: usize,
    },
    /// A header field has a value the spec does not allow (FES 0x01).
    #[error("invalid {field} at offset {offset}: {reason}")]
    InvalidField {
        /// Name of the field, as in the spec.
        field: &'static str,
        /// Byte offset of the field in the PDU header (the FEI of FES 0x01).
        offset: u32,
        /// What was expected and what was found.
        reason: Reason,
    },
    /// The header digest does not match (FES 0x03).
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
    /// A PDU arrived that is not allowed in the current state (FES 0x02).
    #[error("PDU sequence error: {0}")]
    Sequence(Reason),
    /// Data outside the range of its command or R2T (FES 0x04).
    #[error("data transfer out of range: {0}")]
    OutOfRange(Reason),
    /// Data beyond a negotiated limit (MAXH2CDATA, MAXR2T, maximum PDU size) (FES 0x05).
    #[error("data transfer limit exceeded: {0}")]
    LimitExceeded(Reason),
    /// A received Termination Request is malformed (e.g. PLEN outside 24..=152). The receiver
    /// closes the connection without answering (NVMe/TCP 1.0 §7.4.7 per FreeBSD's validator).
    #[error("malformed termination request: invalid {field} at offset {offset}: {reason}")]
    MalformedTermReq {
        /// Name of the field.
        field: &'static str,
        /// Byte offset of the field.
        offset: u32,
        /// What was found.
        reason: Reason,
    },
    /// A parameter the receiver does not support (FES 0x06).
    #[error("unsupported {field} at offset {offset}: {reason}")]
    Unsupported {
        /// Name of the field.
        field: &'static str,
        /// Byte offset of the field (the FEI of FES 0x06).
        offset: u32,
        /// What was found.
        reason: Reason,
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
    #[cold]
    pub fn invalid(field: &'static str, offset: usize, reason: Reason) -> Self {
        WireError::InvalidField {
            field,
            offset: offset as u32,
            reason,
        }
    }

    /// The reason, for the variants that carry one.
    pub fn reason(&self) -> Option<Reason> {
        match *self {
            WireError::InvalidField { reason, .. }
            | WireError::MalformedTermReq { reason, .. }
            | WireError::Unsupported { reason, .. }
            | WireError::Sequence(reason)
            | WireError::OutOfRange(reason)
            | WireError::LimitExceeded(reason) => Some(reason),
            _ => None,
        }
    }
}

/// Result with a [`WireError`].
pub type Result<T> = std::result::Result<T, WireError>;
