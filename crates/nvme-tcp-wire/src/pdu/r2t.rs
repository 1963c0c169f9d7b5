//! R2T: Ready to Transfer (controller to host; HLEN 24, never data).

use super::common::{CommonHeaderRepr, PduFlags, PduType};
use super::emit::EmitHeader;
use crate::error::{Reason, Result, WireError};

/// HLEN of R2T.
pub const R2T_HLEN: usize = 24;

/// Byte offsets of the header fields, from the first byte of the PDU.
pub mod field {
    use std::ops::Range;
    /// CCCID.
    pub const CCCID: Range<usize> = 8..10;
    /// TTAG.
    pub const TTAG: Range<usize> = 10..12;
    /// R2TO.
    pub const R2TO: Range<usize> = 12..16;
    /// R2TL.
    pub const R2TL: Range<usize> = 16..20;
    /// Reserved.
    pub const RSVD: Range<usize> = 20..24;
}

pdu_view! {
    /// A view of an R2T PDU header.
    pub struct R2tPdu;
    min_len = R2T_HLEN, "24-byte header";
}

impl<T: AsRef<[u8]>> R2tPdu<T> {
    /// CCCID: CID of the command the controller is ready to receive data for.
    pub fn cccid(&self) -> u16 {
        let b = self.buffer.as_ref();
        u16::from_le_bytes([b[field::CCCID.start], b[field::CCCID.start + 1]])
    }
    /// TTAG: transfer tag the host echoes in the H2CData PDUs of this R2T.
    pub fn ttag(&self) -> u16 {
        let b = self.buffer.as_ref();
        u16::from_le_bytes([b[field::TTAG.start], b[field::TTAG.start + 1]])
    }
    /// R2TO: offset of the requested data within the command's data.
    pub fn r2to(&self) -> u32 {
        let b = &self.buffer.as_ref()[field::R2TO];
        u32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }
    /// R2TL: length of the requested data.
    pub fn r2tl(&self) -> u32 {
        let b = &self.buffer.as_ref()[field::R2TL];
        u32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> R2tPdu<T> {
    /// Sets CCCID.
    pub fn set_cccid(&mut self, v: u16) {
        self.buffer.as_mut()[field::CCCID].copy_from_slice(&v.to_le_bytes());
    }
    /// Sets TTAG.
    pub fn set_ttag(&mut self, v: u16) {
        self.buffer.as_mut()[field::TTAG].copy_from_slice(&v.to_le_bytes());
    }
    /// Sets R2TO.
    pub fn set_r2to(&mut self, v: u32) {
        self.buffer.as_mut()[field::R2TO].copy_from_slice(&v.to_le_bytes());
    }
    /// Sets R2TL.
    pub fn set_r2tl(&mut self, v: u32) {
        self.buffer.as_mut()[field::R2TL].copy_from_slice(&v.to_le_bytes());
    }
    /// Zeroes the reserved bytes 20..24.
    pub fn clear_reserved(&mut self) {
        self.buffer.as_mut()[field::RSVD].fill(0);
    }
}

/// An R2T as an owned value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct R2tRepr {
    /// Header digest present.
    pub hdgst: bool,
    /// CCCID.
    pub cccid: u16,
    /// TTAG.
    pub ttag: u16,
    /// R2TO.
    pub r2to: u32,
    /// R2TL.
    pub r2tl: u32,
}

impl R2tRepr {
    /// Parses the header. Range checks against the command belong to the host.
    pub fn parse<T: AsRef<[u8]>>(pdu: &R2tPdu<T>) -> Result<Self> {
        let ch = CommonHeaderRepr::parse(&pdu.ch())?;
        if ch.pdu_type != PduType::R2t {
            return Err(WireError::invalid(
                "PDU-TYPE",
                0,
                Reason::UnexpectedType {
                    found: ch.pdu_type as u8,
                    expected: "R2T",
                },
            ));
        }
        Ok(Self {
            hdgst: ch.has_hdgst(),
            cccid: pdu.cccid(),
            ttag: pdu.ttag(),
            r2to: pdu.r2to(),
            r2tl: pdu.r2tl(),
        })
    }

    /// Writes the 24-byte header (not the header digest).
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, pdu: &mut R2tPdu<T>) {
        EmitHeader::common(self).emit(&mut pdu.ch_mut());
        pdu.set_cccid(self.cccid);
        pdu.set_ttag(self.ttag);
        pdu.set_r2to(self.r2to);
        pdu.set_r2tl(self.r2tl);
        pdu.clear_reserved();
    }
}

impl EmitHeader for R2tRepr {
    fn common(&self) -> CommonHeaderRepr {
        CommonHeaderRepr {
            pdu_type: PduType::R2t,
            flags: if self.hdgst {
                PduFlags::HDGSTF
            } else {
                PduFlags::NONE
            },
            hlen: R2T_HLEN as u8,
            pdo: 0,
            plen: R2T_HLEN as u32 + if self.hdgst { 4 } else { 0 },
        }
    }
    fn emit_hlen(&self, buf: &mut [u8]) {
        self.emit(&mut R2tPdu::new_unchecked(buf));
    }
}
