//! ICReq and ICResp: the connection initialization PDUs (HLEN 128, no digests, no data).

use super::common::{CommonHeaderRepr, PduFlags, PduType};
use super::emit::EmitHeader;
use crate::error::{Reason, Result, WireError};

/// HLEN (and PLEN) of ICReq and ICResp.
pub const IC_PDU_LEN: usize = 128;

/// Bit 0 of DGST: header digests requested (ICReq) or enabled (ICResp).
pub const DGST_HDGST_ENABLE: u8 = 0x01;
/// Bit 1 of DGST: data digests requested (ICReq) or enabled (ICResp).
pub const DGST_DDGST_ENABLE: u8 = 0x02;

/// Byte offsets of the header fields, from the first byte of the PDU.
pub mod field {
    use std::ops::Range;
    /// PFV.
    pub const PFV: Range<usize> = 8..10;
    /// HPDA in ICReq, CPDA in ICResp.
    pub const PDA: usize = 10;
    /// DGST.
    pub const DGST: usize = 11;
    /// MAXR2T in ICReq, MAXH2CDATA in ICResp.
    pub const MAX: Range<usize> = 12..16;
    /// Reserved.
    pub const RSVD: Range<usize> = 16..128;
}

pdu_view! {
    /// A view of an ICReq or ICResp PDU (both share one layout: PFV, xPDA, DGST, a 32-bit limit).
    pub struct IcPdu;
    min_len = IC_PDU_LEN, "128-byte PDU";
}

impl<T: AsRef<[u8]>> IcPdu<T> {
    /// PFV: PDU format version (0 for NVMe/TCP 1.0).
    pub fn pfv(&self) -> u16 {
        let b = self.buffer.as_ref();
        u16::from_le_bytes([b[field::PFV.start], b[field::PFV.start + 1]])
    }
    /// HPDA (ICReq) or CPDA (ICResp): PDU data alignment, 0's based dwords.
    pub fn pda(&self) -> u8 {
        self.buffer.as_ref()[field::PDA]
    }
    /// DGST: bit 0 header digest, bit 1 data digest.
    pub fn dgst(&self) -> u8 {
        self.buffer.as_ref()[field::DGST]
    }
    /// MAXR2T (ICReq, 0's based) or MAXH2CDATA (ICResp, bytes).
    pub fn max_field(&self) -> u32 {
        let b = &self.buffer.as_ref()[field::MAX];
        u32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }
    /// True if the reserved bytes 16..128 are all zero.
    pub fn reserved_is_zero(&self) -> bool {
        self.buffer.as_ref()[field::RSVD].iter().all(|&b| b == 0)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> IcPdu<T> {
    /// Sets PFV.
    pub fn set_pfv(&mut self, v: u16) {
        self.buffer.as_mut()[field::PFV].copy_from_slice(&v.to_le_bytes());
    }
    /// Sets HPDA / CPDA.
    pub fn set_pda(&mut self, v: u8) {
        self.buffer.as_mut()[field::PDA] = v;
    }
    /// Sets DGST.
    pub fn set_dgst(&mut self, v: u8) {
        self.buffer.as_mut()[field::DGST] = v;
    }
    /// Sets MAXR2T / MAXH2CDATA.
    pub fn set_max_field(&mut self, v: u32) {
        self.buffer.as_mut()[field::MAX].copy_from_slice(&v.to_le_bytes());
    }
    /// Zeroes the reserved bytes 16..128.
    pub fn clear_reserved(&mut self) {
        self.buffer.as_mut()[field::RSVD].fill(0);
    }
}

fn ic_common(pdu_type: PduType) -> CommonHeaderRepr {
    CommonHeaderRepr {
        pdu_type,
        flags: PduFlags::NONE,
        hlen: IC_PDU_LEN as u8,
        pdo: 0,
        plen: IC_PDU_LEN as u32,
    }
}

fn dgst_byte(hdgst: bool, ddgst: bool) -> u8 {
    (if hdgst { DGST_HDGST_ENABLE } else { 0 }) | (if ddgst { DGST_DDGST_ENABLE } else { 0 })
}

fn check_type<T: AsRef<[u8]>>(pdu: &IcPdu<T>, want: PduType) -> Result<()> {
    if pdu.ch().pdu_type_raw() != want as u8 {
        return Err(WireError::invalid(
            "PDU-TYPE",
            0,
            Reason::UnexpectedType {
                found: pdu.ch().pdu_type_raw(),
                expected: if want as u8 == PduType::IcReq as u8 {
                    "ICReq"
                } else {
                    "ICResp"
                },
            },
        ));
    }
    Ok(())
}

/// ICReq: the host's connection parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IcReqRepr {
    /// PFV (0).
    pub pfv: u16,
    /// HPDA: alignment the host wants for PDUs with data it receives (0's based dwords).
    pub hpda: u8,
    /// Header digests requested.
    pub hdgst_enable: bool,
    /// Data digests requested.
    pub ddgst_enable: bool,
    /// MAXR2T: outstanding R2Ts per command the host accepts, 0's based.
    pub maxr2t: u32,
}

impl IcReqRepr {
    /// Parses an ICReq. Only the type is checked; header rules live in [`crate::validate`] and
    /// parameter checks (PFV, HPDA range) belong to the controller's connection logic.
    pub fn parse<T: AsRef<[u8]>>(pdu: &IcPdu<T>) -> Result<Self> {
        check_type(pdu, PduType::IcReq)?;
        let dgst = pdu.dgst();
        Ok(Self {
            pfv: pdu.pfv(),
            hpda: pdu.pda(),
            hdgst_enable: dgst & DGST_HDGST_ENABLE != 0,
            ddgst_enable: dgst & DGST_DDGST_ENABLE != 0,
            maxr2t: pdu.max_field(),
        })
    }

    /// Writes the whole 128-byte PDU.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, pdu: &mut IcPdu<T>) {
        ic_common(PduType::IcReq).emit(&mut pdu.ch_mut());
        pdu.set_pfv(self.pfv);
        pdu.set_pda(self.hpda);
        pdu.set_dgst(dgst_byte(self.hdgst_enable, self.ddgst_enable));
        pdu.set_max_field(self.maxr2t);
        pdu.clear_reserved();
    }
}

impl EmitHeader for IcReqRepr {
    fn common(&self) -> CommonHeaderRepr {
        ic_common(PduType::IcReq)
    }
    fn emit_hlen(&self, buf: &mut [u8]) {
        self.emit(&mut IcPdu::new_unchecked(buf));
    }
}

/// ICResp: the controller's answer with the parameters in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IcRespRepr {
    /// PFV (0).
    pub pfv: u16,
    /// CPDA: alignment the controller wants for PDUs with data it receives (0's based dwords).
    pub cpda: u8,
    /// Header digests enabled.
    pub hdgst_enable: bool,
    /// Data digests enabled.
    pub ddgst_enable: bool,
    /// MAXH2CDATA: the largest DATAL of an H2CData PDU, in bytes.
    pub maxh2cdata: u32,
}

impl IcRespRepr {
    /// Parses an ICResp. Only the type is checked; the host checks the parameters.
    pub fn parse<T: AsRef<[u8]>>(pdu: &IcPdu<T>) -> Result<Self> {
        check_type(pdu, PduType::IcResp)?;
        let dgst = pdu.dgst();
        Ok(Self {
            pfv: pdu.pfv(),
            cpda: pdu.pda(),
            hdgst_enable: dgst & DGST_HDGST_ENABLE != 0,
            ddgst_enable: dgst & DGST_DDGST_ENABLE != 0,
            maxh2cdata: pdu.max_field(),
        })
    }

    /// Writes the whole 128-byte PDU.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, pdu: &mut IcPdu<T>) {
        ic_common(PduType::IcResp).emit(&mut pdu.ch_mut());
        pdu.set_pfv(self.pfv);
        pdu.set_pda(self.cpda);
        pdu.set_dgst(dgst_byte(self.hdgst_enable, self.ddgst_enable));
        pdu.set_max_field(self.maxh2cdata);
        pdu.clear_reserved();
    }
}

impl EmitHeader for IcRespRepr {
    fn common(&self) -> CommonHeaderRepr {
        ic_common(PduType::IcResp)
    }
    fn emit_hlen(&self, buf: &mut [u8]) {
        self.emit(&mut IcPdu::new_unchecked(buf));
    }
}
