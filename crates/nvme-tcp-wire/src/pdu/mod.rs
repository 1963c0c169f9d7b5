//! NVMe/TCP PDUs.
//!
//! Every PDU starts with the 8-byte common header ([`CommonHeader`]), followed by the
//! PDU-specific header (PSH), an optional header digest, padding up to PDO, data and an
//! optional data digest:
//!
//! ```text
//! CH(8) | PSH | [HDGST 4] | [PAD] | [DATA] | [DDGST 4]
//! ```
//!
//! Views (`*Pdu<T: AsRef<[u8]>>`) read and write fields in place; representations (`*Repr`)
//! are owned values with `parse` and `emit`. [`PduRepr`] is any header; [`emit_header`] /
//! [`HeaderBuf`] write a header with its digest and padding, ready to send.
//!
//! ```
//! use nvme_tcp_wire::pdu::{DataPduRepr, HeaderBuf, PduFlags, PduRepr, PduType};
//! use nvme_tcp_wire::digest::data_digest;
//!
//! let data = [0x5Au8; 512];
//! let repr = DataPduRepr {
//!     pdu_type: PduType::C2hData,
//!     flags: PduFlags::LAST_PDU,
//!     hdgst: true,
//!     ddgst: true,
//!     pda: 0,
//!     cccid: 7,
//!     ttag: 0,
//!     datao: 0,
//!     datal: data.len() as u32,
//! };
//! let hdr = HeaderBuf::new(&repr); // CH + PSH + HDGST (+ PAD)
//! assert_eq!(hdr.len(), 28);
//! let ddgst = data_digest(&data); // sent after the data
//!
//! // The receiver parses the header back.
//! let parsed = PduRepr::parse(hdr.as_bytes()).unwrap();
//! assert_eq!(parsed, PduRepr::Data(repr));
//! # let _ = ddgst;
//! ```

/// Declares a PDU header view `$name<T: AsRef<[u8]>>` over a buffer and gives it the
/// constructors every view shares: `new_unchecked`, `new_checked` (at least `$hlen` bytes),
/// `into_inner`, and the common header accessors `ch` / `ch_mut`. Field accessors are written
/// by hand next to the invocation.
macro_rules! pdu_view {
    (
        $(#[$attr:meta])*
        pub struct $name:ident;
        min_len = $hlen:ident, $what:literal;
    ) => {
        $(#[$attr])*
        #[derive(Debug, Clone, Copy)]
        pub struct $name<T: AsRef<[u8]>> {
            buffer: T,
        }

        impl<T: AsRef<[u8]>> $name<T> {
            /// Wraps a buffer without checking its length; getters panic on a short buffer.
            pub const fn new_unchecked(buffer: T) -> Self {
                Self { buffer }
            }
            #[doc = concat!("Wraps a buffer holding at least the ", $what, ".")]
            pub fn new_checked(buffer: T) -> $crate::error::Result<Self> {
                let have = buffer.as_ref().len();
                if have < $hlen {
                    return Err($crate::error::WireError::Truncated {
                        needed: $hlen,
                        have,
                    });
                }
                Ok(Self { buffer })
            }
            /// The underlying buffer.
            pub fn into_inner(self) -> T {
                self.buffer
            }
            /// The common header.
            pub fn ch(&self) -> $crate::pdu::CommonHeader<&[u8]> {
                $crate::pdu::CommonHeader::new_unchecked(&self.buffer.as_ref()[..$crate::pdu::CH_LEN])
            }
        }

        impl<T: AsRef<[u8]> + AsMut<[u8]>> $name<T> {
            /// Mutable common header.
            pub fn ch_mut(&mut self) -> $crate::pdu::CommonHeader<&mut [u8]> {
                $crate::pdu::CommonHeader::new_unchecked(
                    &mut self.buffer.as_mut()[..$crate::pdu::CH_LEN],
                )
            }
        }
    };
}

/// Byte offsets of every PDU header field, one table per PDU layout (the FEI of a
/// Termination Request that names a field is its first byte).
pub mod field {
    pub use super::capsule::field as capsule;
    pub use super::common::field as common;
    pub use super::data::field as data;
    pub use super::ic::field as ic;
    pub use super::r2t::field as r2t;
    pub use super::term::field as term;
}

mod capsule;
mod common;
mod data;
mod emit;
mod ic;
mod r2t;
mod term;

pub use capsule::{
    CAPSULE_CMD_HLEN, CAPSULE_RESP_HLEN, CQE_LEN, CapsuleCmdPdu, CapsuleCmdRepr, CapsuleRespPdu,
    CapsuleRespRepr, SQE_LEN,
};
pub use common::{CH_LEN, CommonHeader, CommonHeaderRepr, PduFlags, PduType, data_pdo};
pub use data::{DATA_PDU_HLEN, DataPdu, DataPduRepr};
pub use emit::{EmitHeader, HeaderBuf, emit_header, emit_pdu, header_len_with_pad};
pub use ic::{DGST_DDGST_ENABLE, DGST_HDGST_ENABLE, IC_PDU_LEN, IcPdu, IcReqRepr, IcRespRepr};
pub use r2t::{R2T_HLEN, R2tPdu, R2tRepr};
pub use term::{TERM_REQ_HLEN, TERM_REQ_MAX_DATA, TERM_REQ_MAX_PLEN, TermReqPdu, TermReqRepr};

use crate::error::{Result, WireError};

/// Largest HPDA/CPDA value (0's based dwords): PDO alignment of at most 128 bytes.
pub const MAX_PDA: u8 = 31;

/// Length of the header digest and the data digest.
pub const DIGEST_LEN: usize = crate::digest::DIGEST_LEN;

/// Largest header this crate emits including header digest and padding: CH + PSH + HDGST +
/// PAD. PDAs are not powers of two in general: a CapsuleCmd with a header digest (76 bytes)
/// and CPDA 17 (72-byte alignment) has PDO 144, the maximum over all types and PDAs.
pub const MAX_HEADER_LEN: usize = 144;

/// Largest HLEN + header digest a valid PDU has (ICReq/ICResp: 128, never digested; the
/// largest digested header is CapsuleCmd: 72 + 4).
pub const MAX_HLEN_WITH_HDGST: usize = 128;

/// The smallest PDA whose alignment yields `pdo` for a header of `hlen` (+ digest); if none
/// does (a foreign sender's unusual padding), 0 for a PDO at or below the header, else
/// [`MAX_PDA`]. Lets a parsed repr re-emit the same PDO.
pub(crate) fn pda_for_pdo(hlen: u8, hdgst: bool, pdo: u8) -> u8 {
    if pdo == 0 {
        return 0;
    }
    let hdr = hlen as u32 + if hdgst { 4 } else { 0 };
    if pdo as u32 == hdr {
        // No padding: the common case (PDA 0 and a dword-aligned header).
        return 0;
    }
    (0..=MAX_PDA)
        .find(|&p| data_pdo(hlen, hdgst, p) == pdo)
        .unwrap_or(if pdo as u32 > hdr { MAX_PDA } else { 0 })
}

/// Any PDU header as an owned value (the data of a PDU is not part of it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PduRepr {
    /// ICReq.
    IcReq(IcReqRepr),
    /// ICResp.
    IcResp(IcRespRepr),
    /// H2CTermReq or C2HTermReq.
    TermReq(TermReqRepr),
    /// CapsuleCmd.
    CapsuleCmd(CapsuleCmdRepr),
    /// CapsuleResp.
    CapsuleResp(CapsuleRespRepr),
    /// H2CData or C2HData.
    Data(DataPduRepr),
    /// R2T.
    R2t(R2tRepr),
}

impl PduRepr {
    /// Parses the header at the start of `header` (at least HLEN bytes of the type announced in
    /// byte 0). Field rules are not checked here: run [`crate::validate`] first on received
    /// bytes.
    pub fn parse(header: &[u8]) -> Result<Self> {
        let ch = CommonHeaderRepr::parse(&CommonHeader::new_checked(header)?)?;
        let need = ch.pdu_type.hlen() as usize;
        if header.len() < need {
            return Err(WireError::Truncated {
                needed: need,
                have: header.len(),
            });
        }
        Ok(match ch.pdu_type {
            PduType::IcReq => PduRepr::IcReq(IcReqRepr::parse(&IcPdu::new_unchecked(header))?),
            PduType::IcResp => PduRepr::IcResp(IcRespRepr::parse(&IcPdu::new_unchecked(header))?),
            PduType::H2cTermReq | PduType::C2hTermReq => {
                PduRepr::TermReq(TermReqRepr::parse(&TermReqPdu::new_unchecked(header))?)
            }
            PduType::CapsuleCmd => PduRepr::CapsuleCmd(CapsuleCmdRepr::parse(
                &CapsuleCmdPdu::new_unchecked(header),
            )?),
            PduType::CapsuleResp => PduRepr::CapsuleResp(CapsuleRespRepr::parse(
                &CapsuleRespPdu::new_unchecked(header),
            )?),
            PduType::H2cData | PduType::C2hData => {
                PduRepr::Data(DataPduRepr::parse(&DataPdu::new_unchecked(header))?)
            }
            PduType::R2t => PduRepr::R2t(R2tRepr::parse(&R2tPdu::new_unchecked(header))?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_header_len_bounds_every_type_and_pda() {
        let mut max = 0;
        for t in [PduType::CapsuleCmd, PduType::H2cData, PduType::C2hData] {
            for hdgst in [false, true] {
                for pda in 0..=MAX_PDA {
                    max = max.max(data_pdo(t.hlen(), hdgst, pda) as usize);
                }
            }
        }
        max = max.max(IC_PDU_LEN);
        assert_eq!(max, MAX_HEADER_LEN);
    }

    #[test]
    fn pda_for_pdo_inverts_data_pdo() {
        for hdgst in [false, true] {
            for pda in 0..=MAX_PDA {
                let pdo = data_pdo(72, hdgst, pda);
                assert_eq!(data_pdo(72, hdgst, pda_for_pdo(72, hdgst, pdo)), pdo);
            }
        }
    }

    #[test]
    fn data_flags_carry_last_pdu_and_success() {
        assert_eq!(PduFlags::data(false, false), PduFlags::NONE);
        assert_eq!(PduFlags::data(true, false), PduFlags::LAST_PDU);
        assert_eq!(PduFlags::data(false, true), PduFlags::SUCCESS);
        assert_eq!(PduFlags::data(true, true).0, 0x0C);
    }
}
