//! H2CTermReq and C2HTermReq: fatal error reports (HLEN 24, no digests; the data is a copy of
//! the offending PDU header, at most 128 bytes).

use super::common::{CommonHeaderRepr, PduFlags, PduType};
use super::emit::EmitHeader;
use crate::error::{Fes, Reason, Result, WireError};

/// HLEN of a Termination Request.
pub const TERM_REQ_HLEN: usize = 24;
/// Most bytes of the offending PDU header a Termination Request carries.
pub const TERM_REQ_MAX_DATA: usize = 128;
/// Largest PLEN of a Termination Request (24 + 128).
pub const TERM_REQ_MAX_PLEN: usize = TERM_REQ_HLEN + TERM_REQ_MAX_DATA;

/// Byte offsets of the header fields, from the first byte of the PDU.
pub mod field {
    use std::ops::Range;
    /// FES.
    pub const FES: Range<usize> = 8..10;
    /// FEI.
    pub const FEI: Range<usize> = 10..14;
    /// Reserved.
    pub const RSVD: Range<usize> = 14..24;
}

pdu_view! {
    /// A view of an H2CTermReq or C2HTermReq PDU header.
    pub struct TermReqPdu;
    min_len = TERM_REQ_HLEN, "24-byte header";
}

impl<T: AsRef<[u8]>> TermReqPdu<T> {
    /// FES: fatal error status (raw; see [`Fes::from_code`]).
    pub fn fes(&self) -> u16 {
        let b = self.buffer.as_ref();
        u16::from_le_bytes([b[field::FES.start], b[field::FES.start + 1]])
    }
    /// FEI: fatal error information (meaning depends on FES).
    pub fn fei(&self) -> u32 {
        let b = &self.buffer.as_ref()[field::FEI];
        u32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> TermReqPdu<T> {
    /// Sets FES.
    pub fn set_fes(&mut self, v: u16) {
        self.buffer.as_mut()[field::FES].copy_from_slice(&v.to_le_bytes());
    }
    /// Sets FEI.
    pub fn set_fei(&mut self, v: u32) {
        self.buffer.as_mut()[field::FEI].copy_from_slice(&v.to_le_bytes());
    }
    /// Zeroes the reserved bytes 14..24.
    pub fn clear_reserved(&mut self) {
        self.buffer.as_mut()[field::RSVD].fill(0);
    }
}

/// A Termination Request header as an owned value. The data (the offending header) travels
/// separately: see [`TermReqRepr::build`] to write a whole PDU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TermReqRepr {
    /// [`PduType::H2cTermReq`] or [`PduType::C2hTermReq`].
    pub pdu_type: PduType,
    /// FES as on the wire (a received request may carry a value this crate does not know).
    pub fes: u16,
    /// FEI.
    pub fei: u32,
    /// Bytes of offending header carried as data (0..=128).
    pub data_len: u8,
}

impl TermReqRepr {
    /// A request reporting `fes`/`fei` that will carry `offending_len` bytes of the offending
    /// header, truncated to [`TERM_REQ_MAX_DATA`].
    pub fn new(pdu_type: PduType, fes: Fes, fei: u32, offending_len: usize) -> Self {
        Self {
            pdu_type,
            fes: fes.code(),
            fei,
            data_len: offending_len.min(TERM_REQ_MAX_DATA) as u8,
        }
    }

    /// FES decoded; `None` for a reserved value.
    pub fn fes_kind(&self) -> Option<Fes> {
        Fes::from_code(self.fes)
    }

    /// Parses the header. The data length follows from PLEN and PDO (data starts at PDO, or at
    /// HLEN if PDO is 0); PLEN bounds are checked by [`crate::validate`].
    pub fn parse<T: AsRef<[u8]>>(pdu: &TermReqPdu<T>) -> Result<Self> {
        let ch = CommonHeaderRepr::parse(&pdu.ch())?;
        if !matches!(ch.pdu_type, PduType::H2cTermReq | PduType::C2hTermReq) {
            return Err(WireError::invalid(
                "PDU-TYPE",
                0,
                Reason::UnexpectedType {
                    found: ch.pdu_type as u8,
                    expected: "a Termination Request",
                },
            ));
        }
        let start = if ch.pdo == 0 {
            ch.hlen as u32
        } else {
            ch.pdo as u32
        };
        let data_len = ch.plen.saturating_sub(start).min(TERM_REQ_MAX_DATA as u32) as u8;
        Ok(Self {
            pdu_type: ch.pdu_type,
            fes: pdu.fes(),
            fei: pdu.fei(),
            data_len,
        })
    }

    /// Writes the 24-byte header.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, pdu: &mut TermReqPdu<T>) {
        EmitHeader::common(self).emit(&mut pdu.ch_mut());
        pdu.set_fes(self.fes);
        pdu.set_fei(self.fei);
        pdu.clear_reserved();
    }

    /// Writes a whole Termination Request into `buf`: header, then the first 128 bytes (at most)
    /// of `offending`, the header of the PDU that caused the error. Returns the PDU length (PLEN).
    ///
    /// `buf` of [`TERM_REQ_MAX_PLEN`] bytes always suffices.
    pub fn build(
        pdu_type: PduType,
        fes: Fes,
        fei: u32,
        offending: &[u8],
        buf: &mut [u8],
    ) -> Result<usize> {
        let repr = Self::new(pdu_type, fes, fei, offending.len());
        let n = repr.data_len as usize;
        let plen = TERM_REQ_HLEN + n;
        if buf.len() < plen {
            return Err(WireError::Truncated {
                needed: plen,
                have: buf.len(),
            });
        }
        repr.emit(&mut TermReqPdu::new_unchecked(&mut buf[..TERM_REQ_HLEN]));
        buf[TERM_REQ_HLEN..plen].copy_from_slice(&offending[..n]);
        Ok(plen)
    }

    /// The Termination Request a receiver sends for `err` (if the error calls for one), with
    /// the offending header as data. `pdu_type` is the sender's TermReq type
    /// ([`PduType::C2hTermReq`] from a controller, [`PduType::H2cTermReq`] from a host).
    /// Returns the PDU length, or `None` if `err` is answered without a Termination Request.
    pub fn build_for_error(
        pdu_type: PduType,
        err: &WireError,
        offending: &[u8],
        buf: &mut [u8; TERM_REQ_MAX_PLEN],
    ) -> Option<usize> {
        let (fes, fei) = err.termination()?;
        Self::build(pdu_type, fes, fei, offending, buf).ok()
    }
}

impl EmitHeader for TermReqRepr {
    fn common(&self) -> CommonHeaderRepr {
        let n = self.data_len.min(TERM_REQ_MAX_DATA as u8);
        CommonHeaderRepr {
            pdu_type: self.pdu_type,
            flags: PduFlags::NONE,
            hlen: TERM_REQ_HLEN as u8,
            // Data (if any) follows the header directly; Termination Requests carry no digest.
            pdo: if n > 0 { TERM_REQ_HLEN as u8 } else { 0 },
            plen: (TERM_REQ_HLEN + n as usize) as u32,
        }
    }
    fn emit_hlen(&self, buf: &mut [u8]) {
        self.emit(&mut TermReqPdu::new_unchecked(buf));
    }
}
