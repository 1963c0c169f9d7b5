//! H2CData and C2HData PDUs (same 24-byte header layout; TTAG is reserved in C2HData).

use super::common::{CommonHeaderRepr, PduFlags, PduType, data_pdo};
use super::emit::EmitHeader;
use crate::error::{Reason, Result, WireError};

/// HLEN of H2CData and C2HData.
pub const DATA_PDU_HLEN: usize = 24;

/// Byte offsets of the header fields, from the first byte of the PDU.
pub mod field {
    use std::ops::Range;
    /// CCCID.
    pub const CCCID: Range<usize> = 8..10;
    /// TTAG.
    pub const TTAG: Range<usize> = 10..12;
    /// DATAO.
    pub const DATAO: Range<usize> = 12..16;
    /// DATAL.
    pub const DATAL: Range<usize> = 16..20;
    /// Reserved.
    pub const RSVD: Range<usize> = 20..24;
}

pdu_view! {
    /// A view of an H2CData or C2HData PDU header.
    pub struct DataPdu;
    min_len = DATA_PDU_HLEN, "24-byte header";
}

impl<T: AsRef<[u8]>> DataPdu<T> {
    /// CCCID: command capsule CID of the command this data belongs to.
    #[inline]
    pub fn cccid(&self) -> u16 {
        let b = self.buffer.as_ref();
        u16::from_le_bytes([b[field::CCCID.start], b[field::CCCID.start + 1]])
    }
    /// TTAG (H2CData only; reserved in C2HData).
    #[inline]
    pub fn ttag(&self) -> u16 {
        let b = self.buffer.as_ref();
        u16::from_le_bytes([b[field::TTAG.start], b[field::TTAG.start + 1]])
    }
    /// DATAO: offset of this PDU's data within the command's data.
    #[inline]
    pub fn datao(&self) -> u32 {
        let b = &self.buffer.as_ref()[field::DATAO];
        u32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }
    /// DATAL: length of this PDU's data.
    #[inline]
    pub fn datal(&self) -> u32 {
        let b = &self.buffer.as_ref()[field::DATAL];
        u32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }
    /// The reserved bytes 20..24.
    pub fn reserved(&self) -> u32 {
        let b = &self.buffer.as_ref()[field::RSVD];
        u32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> DataPdu<T> {
    /// Sets CCCID.
    pub fn set_cccid(&mut self, v: u16) {
        self.buffer.as_mut()[field::CCCID].copy_from_slice(&v.to_le_bytes());
    }
    /// Sets TTAG.
    pub fn set_ttag(&mut self, v: u16) {
        self.buffer.as_mut()[field::TTAG].copy_from_slice(&v.to_le_bytes());
    }
    /// Sets DATAO.
    pub fn set_datao(&mut self, v: u32) {
        self.buffer.as_mut()[field::DATAO].copy_from_slice(&v.to_le_bytes());
    }
    /// Sets DATAL.
    pub fn set_datal(&mut self, v: u32) {
        self.buffer.as_mut()[field::DATAL].copy_from_slice(&v.to_le_bytes());
    }
    /// Zeroes the reserved bytes.
    pub fn clear_reserved(&mut self) {
        self.buffer.as_mut()[field::RSVD].fill(0);
    }
}

/// An H2CData or C2HData header as an owned value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataPduRepr {
    /// [`PduType::H2cData`] or [`PduType::C2hData`].
    pub pdu_type: PduType,
    /// LAST_PDU / SUCCESS; digest flags are derived from `hdgst`/`ddgst`.
    pub flags: PduFlags,
    /// Header digest present.
    pub hdgst: bool,
    /// Data digest present.
    pub ddgst: bool,
    /// PDO alignment of the receiver (HPDA for C2H, CPDA for H2C), 0's based dwords.
    pub pda: u8,
    /// CCCID.
    pub cccid: u16,
    /// TTAG (0 for C2HData).
    pub ttag: u16,
    /// DATAO.
    pub datao: u32,
    /// DATAL.
    pub datal: u32,
}

impl DataPduRepr {
    /// Parses a data PDU header. The caller validates the common header first
    /// ([`crate::validate`]); this only reads fields.
    pub fn parse<T: AsRef<[u8]>>(pdu: &DataPdu<T>) -> Result<Self> {
        // Read straight from the buffer (this is on the per-PDU hot path of both receivers).
        let b = pdu.buffer.as_ref();
        let Some(h) = b.first_chunk::<DATA_PDU_HLEN>() else {
            return Err(WireError::Truncated {
                needed: DATA_PDU_HLEN,
                have: b.len(),
            });
        };
        let pdu_type = match h[0] {
            0x06 => PduType::H2cData,
            0x07 => PduType::C2hData,
            other => return Err(not_a_data_pdu(other)),
        };
        let flags = PduFlags(h[1]);
        let hdgst = flags.contains(PduFlags::HDGSTF);
        Ok(Self {
            pdu_type,
            flags: flags.difference(PduFlags::HDGSTF | PduFlags::DDGSTF),
            hdgst,
            ddgst: flags.contains(PduFlags::DDGSTF),
            pda: super::pda_for_pdo(h[2], hdgst, h[3]),
            cccid: u16::from_le_bytes([h[8], h[9]]),
            ttag: u16::from_le_bytes([h[10], h[11]]),
            datao: u32::from_le_bytes([h[12], h[13], h[14], h[15]]),
            datal: u32::from_le_bytes([h[16], h[17], h[18], h[19]]),
        })
    }

    /// The common header this PDU carries.
    pub fn common(&self) -> CommonHeaderRepr {
        let mut flags = self.flags;
        flags.set(PduFlags::HDGSTF, self.hdgst);
        flags.set(PduFlags::DDGSTF, self.ddgst && self.datal > 0);
        let pdo = data_pdo(DATA_PDU_HLEN as u8, self.hdgst, self.pda);
        let plen = (pdo as u32)
            .saturating_add(self.datal)
            .saturating_add(if self.ddgst && self.datal > 0 { 4 } else { 0 });
        CommonHeaderRepr {
            pdu_type: self.pdu_type,
            flags,
            hlen: DATA_PDU_HLEN as u8,
            pdo,
            plen,
        }
    }

    /// Bytes of header, header digest and padding before the data (= PDO).
    pub fn header_and_pad_len(&self) -> usize {
        self.common().pdo as usize
    }

    /// Writes the 24-byte header (not the header digest or padding).
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, pdu: &mut DataPdu<T>) {
        self.common().emit(&mut pdu.ch_mut());
        pdu.set_cccid(self.cccid);
        pdu.set_ttag(if self.pdu_type == PduType::C2hData {
            0
        } else {
            self.ttag
        });
        pdu.set_datao(self.datao);
        pdu.set_datal(self.datal);
        pdu.clear_reserved();
    }
}

#[cold]
#[inline(never)]
fn not_a_data_pdu(raw: u8) -> WireError {
    WireError::invalid(
        "PDU-TYPE",
        0,
        Reason::UnexpectedType {
            found: raw,
            expected: "a data PDU",
        },
    )
}

impl EmitHeader for DataPduRepr {
    fn common(&self) -> CommonHeaderRepr {
        DataPduRepr::common(self)
    }
    fn emit_hlen(&self, buf: &mut [u8]) {
        self.emit(&mut DataPdu::new_unchecked(buf));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // C2HData, HDGST+DDGST, LAST_PDU, CCCID 0x1234, DATAO 0x1000, DATAL 0x200, PDA 0.
    static C2H_BYTES: [u8; 24] = [
        0x07, 0x07, 24, 28, 0x20, 0x02, 0x00, 0x00, // CH: plen = 28 + 512 + 4 = 544
        0x34, 0x12, 0x00, 0x00, 0x00, 0x10, 0x00, 0x00, // CCCID, rsvd, DATAO
        0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // DATAL, rsvd
    ];

    fn repr() -> DataPduRepr {
        DataPduRepr {
            pdu_type: PduType::C2hData,
            flags: PduFlags::LAST_PDU,
            hdgst: true,
            ddgst: true,
            pda: 0,
            cccid: 0x1234,
            ttag: 0,
            datao: 0x1000,
            datal: 0x200,
        }
    }

    #[test]
    fn deconstruct() {
        let p = DataPdu::new_checked(&C2H_BYTES[..]).unwrap();
        assert_eq!(p.ch().pdu_type(), Some(PduType::C2hData));
        assert_eq!(p.ch().plen(), 544);
        assert_eq!(p.cccid(), 0x1234);
        assert_eq!(p.datao(), 0x1000);
        assert_eq!(p.datal(), 0x200);
    }

    #[test]
    fn parse_and_emit() {
        let p = DataPdu::new_checked(&C2H_BYTES[..]).unwrap();
        assert_eq!(DataPduRepr::parse(&p).unwrap(), repr());
        let mut buf = [0xAAu8; 24];
        repr().emit(&mut DataPdu::new_unchecked(&mut buf[..]));
        assert_eq!(buf, C2H_BYTES);
    }

    #[test]
    fn truncated_buffer_is_refused() {
        assert!(DataPdu::new_checked(&C2H_BYTES[..23]).is_err());
    }
}
