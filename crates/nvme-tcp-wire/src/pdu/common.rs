//! The common header (CH) shared by all PDU types.

use crate::error::{Reason, Result, WireError};

/// Length of the common header.
pub const CH_LEN: usize = 8;

/// Byte offsets of the header fields, from the first byte of the PDU.
pub mod field {
    use std::ops::Range;
    /// PDU-TYPE.
    pub const PDU_TYPE: usize = 0;
    /// FLAGS.
    pub const FLAGS: usize = 1;
    /// HLEN.
    pub const HLEN: usize = 2;
    /// PDO.
    pub const PDO: usize = 3;
    /// PLEN.
    pub const PLEN: Range<usize> = 4..8;
}

/// The PDU-TYPE field. H2C types are even, C2H types are odd.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum PduType {
    /// Initialize Connection Request (host to controller).
    IcReq = 0x00,
    /// Initialize Connection Response (controller to host).
    IcResp = 0x01,
    /// Host to Controller Terminate Connection Request.
    H2cTermReq = 0x02,
    /// Controller to Host Terminate Connection Request.
    C2hTermReq = 0x03,
    /// Command Capsule (host to controller).
    CapsuleCmd = 0x04,
    /// Response Capsule (controller to host).
    CapsuleResp = 0x05,
    /// Host to Controller Data.
    H2cData = 0x06,
    /// Controller to Host Data.
    C2hData = 0x07,
    /// Ready to Transfer (controller to host).
    R2t = 0x09,
}

impl PduType {
    /// Decodes PDU-TYPE; `None` for a reserved value.
    pub const fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            0x00 => Self::IcReq,
            0x01 => Self::IcResp,
            0x02 => Self::H2cTermReq,
            0x03 => Self::C2hTermReq,
            0x04 => Self::CapsuleCmd,
            0x05 => Self::CapsuleResp,
            0x06 => Self::H2cData,
            0x07 => Self::C2hData,
            0x09 => Self::R2t,
            _ => return None,
        })
    }

    /// True for PDUs sent by the host to the controller.
    pub const fn is_h2c(self) -> bool {
        (self as u8) & 1 == 0
    }

    /// The fixed HLEN (CH + PSH, without header digest) of this type.
    pub const fn hlen(self) -> u8 {
        match self {
            Self::IcReq | Self::IcResp => 128,
            Self::CapsuleCmd => 72,
            Self::H2cTermReq
            | Self::C2hTermReq
            | Self::CapsuleResp
            | Self::H2cData
            | Self::C2hData
            | Self::R2t => 24,
        }
    }

    /// True if a header digest follows the header once header digests are negotiated.
    pub const fn has_hdgst(self) -> bool {
        matches!(
            self,
            Self::CapsuleCmd | Self::CapsuleResp | Self::H2cData | Self::C2hData | Self::R2t
        )
    }

    /// True if this type may carry data followed by a data digest (when negotiated).
    pub const fn may_have_ddgst(self) -> bool {
        matches!(self, Self::CapsuleCmd | Self::H2cData | Self::C2hData)
    }

    /// The FLAGS bits this type may carry.
    pub const fn allowed_flags(self) -> PduFlags {
        PduFlags(match self {
            Self::IcReq | Self::IcResp | Self::H2cTermReq | Self::C2hTermReq => 0,
            Self::CapsuleCmd => PduFlags::HDGSTF.0 | PduFlags::DDGSTF.0,
            Self::CapsuleResp | Self::R2t => PduFlags::HDGSTF.0,
            Self::H2cData => PduFlags::HDGSTF.0 | PduFlags::DDGSTF.0 | PduFlags::LAST_PDU.0,
            Self::C2hData => {
                PduFlags::HDGSTF.0 | PduFlags::DDGSTF.0 | PduFlags::LAST_PDU.0 | PduFlags::SUCCESS.0
            }
        })
    }
}

/// The FLAGS field of the common header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct PduFlags(pub u8);

impl PduFlags {
    /// No flag.
    pub const NONE: Self = Self(0);
    /// A header digest follows the PDU header.
    pub const HDGSTF: Self = Self(0x01);
    /// A data digest follows the data.
    pub const DDGSTF: Self = Self(0x02);
    /// Last data PDU of a command (H2CData for one R2T, C2HData for a command).
    pub const LAST_PDU: Self = Self(0x04);
    /// C2HData only: the command completed successfully, no CapsuleResp follows.
    pub const SUCCESS: Self = Self(0x08);

    /// True if every bit of `other` is set.
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }
    /// The union.
    pub const fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }
    /// The bits of `self` that are not in `other`.
    pub const fn difference(self, other: Self) -> Self {
        Self(self.0 & !other.0)
    }
    /// Sets or clears the bits of `other`.
    pub fn set(&mut self, other: Self, on: bool) {
        if on {
            self.0 |= other.0
        } else {
            self.0 &= !other.0
        }
    }
    /// True if no bit is set.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The FLAGS of a data PDU (HDGSTF/DDGSTF are set from the negotiation when the header is
    /// emitted): LAST_PDU on the last PDU of a transfer, SUCCESS on a C2HData that completes
    /// its command (§7.4.5.2).
    pub const fn data(last: bool, success: bool) -> Self {
        Self(if last { Self::LAST_PDU.0 } else { 0 } | if success { Self::SUCCESS.0 } else { 0 })
    }
}

impl std::ops::BitOr for PduFlags {
    type Output = Self;
    fn bitor(self, rhs: Self) -> Self {
        self.union(rhs)
    }
}

/// PDO for a PDU with data: header (+ header digest) rounded up to the receiver's PDA
/// alignment (`(pda + 1) * 4` bytes). `pda` is clamped to [`super::MAX_PDA`].
pub const fn data_pdo(hlen: u8, hdgst: bool, pda: u8) -> u8 {
    let hdr = hlen as u32 + if hdgst { 4 } else { 0 };
    let pda = if pda > super::MAX_PDA {
        super::MAX_PDA
    } else {
        pda
    };
    let align = (pda as u32 + 1) * 4;
    (hdr.div_ceil(align) * align) as u8
}

/// A read/write view of the common header at the start of a buffer.
#[derive(Debug, Clone, Copy)]
pub struct CommonHeader<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> CommonHeader<T> {
    /// Wraps a buffer without checking its length; getters panic on a short buffer.
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps a buffer of at least [`CH_LEN`] bytes.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let have = buffer.as_ref().len();
        if have < CH_LEN {
            return Err(WireError::Truncated {
                needed: CH_LEN,
                have,
            });
        }
        Ok(Self { buffer })
    }

    /// The underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// PDU-TYPE as a raw byte.
    #[inline]
    pub fn pdu_type_raw(&self) -> u8 {
        self.buffer.as_ref()[field::PDU_TYPE]
    }
    /// PDU-TYPE, `None` if reserved.
    #[inline]
    pub fn pdu_type(&self) -> Option<PduType> {
        PduType::from_u8(self.pdu_type_raw())
    }
    /// FLAGS.
    #[inline]
    pub fn flags(&self) -> PduFlags {
        PduFlags(self.buffer.as_ref()[field::FLAGS])
    }
    /// HLEN: length of CH + PSH, without header digest.
    #[inline]
    pub fn hlen(&self) -> u8 {
        self.buffer.as_ref()[field::HLEN]
    }
    /// PDO: offset of the data from the start of the PDU (0 if none).
    #[inline]
    pub fn pdo(&self) -> u8 {
        self.buffer.as_ref()[field::PDO]
    }
    /// PLEN: total PDU length including digests and padding.
    #[inline]
    pub fn plen(&self) -> u32 {
        let b = self.buffer.as_ref();
        u32::from_le_bytes([b[4], b[5], b[6], b[7]])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> CommonHeader<T> {
    /// Sets PDU-TYPE.
    pub fn set_pdu_type(&mut self, t: PduType) {
        self.buffer.as_mut()[field::PDU_TYPE] = t as u8;
    }
    /// Sets FLAGS.
    pub fn set_flags(&mut self, f: PduFlags) {
        self.buffer.as_mut()[field::FLAGS] = f.0;
    }
    /// Sets HLEN.
    pub fn set_hlen(&mut self, v: u8) {
        self.buffer.as_mut()[field::HLEN] = v;
    }
    /// Sets PDO.
    pub fn set_pdo(&mut self, v: u8) {
        self.buffer.as_mut()[field::PDO] = v;
    }
    /// Sets PLEN.
    pub fn set_plen(&mut self, v: u32) {
        self.buffer.as_mut()[field::PLEN].copy_from_slice(&v.to_le_bytes());
    }
}

/// The common header as an owned value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommonHeaderRepr {
    /// PDU-TYPE.
    pub pdu_type: PduType,
    /// FLAGS.
    pub flags: PduFlags,
    /// HLEN.
    pub hlen: u8,
    /// PDO.
    pub pdo: u8,
    /// PLEN.
    pub plen: u32,
}

impl CommonHeaderRepr {
    /// Parses the common header. Only the PDU type is checked here (a reserved type is FES
    /// 0x01 at offset 0); the full rules live in [`crate::validate`].
    pub fn parse<T: AsRef<[u8]>>(ch: &CommonHeader<T>) -> Result<Self> {
        let pdu_type = ch.pdu_type().ok_or_else(|| {
            WireError::invalid("PDU-TYPE", 0, Reason::ReservedType(ch.pdu_type_raw()))
        })?;
        Ok(Self {
            pdu_type,
            flags: ch.flags(),
            hlen: ch.hlen(),
            pdo: ch.pdo(),
            plen: ch.plen(),
        })
    }

    /// Writes the common header.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, ch: &mut CommonHeader<T>) {
        ch.set_pdu_type(self.pdu_type);
        ch.set_flags(self.flags);
        ch.set_hlen(self.hlen);
        ch.set_pdo(self.pdo);
        ch.set_plen(self.plen);
    }

    /// True if a header digest follows the header.
    pub fn has_hdgst(&self) -> bool {
        self.flags.contains(PduFlags::HDGSTF)
    }
    /// True if a data digest follows the data.
    pub fn has_ddgst(&self) -> bool {
        self.flags.contains(PduFlags::DDGSTF)
    }
    /// Length of the header including the header digest.
    pub fn header_len(&self) -> usize {
        self.hlen as usize + if self.has_hdgst() { 4 } else { 0 }
    }
    /// Length of the data (PLEN − PDO − DDGST), 0 for a PDU without data. Saturates on
    /// inconsistent fields; validation rejects those.
    pub fn data_len(&self) -> usize {
        if self.pdo == 0 {
            return 0;
        }
        let dd = if self.has_ddgst() { 4 } else { 0 };
        (self.plen as usize)
            .saturating_sub(self.pdo as usize)
            .saturating_sub(dd)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pdo_follows_the_alignment() {
        assert_eq!(data_pdo(24, false, 0), 24);
        assert_eq!(data_pdo(24, true, 0), 28);
        assert_eq!(data_pdo(72, true, 0), 76);
        assert_eq!(data_pdo(24, false, 31), 128);
        assert_eq!(data_pdo(24, true, 3), 32);
        assert_eq!(data_pdo(72, false, 7), 96);
    }

    #[test]
    fn h2c_types_are_even() {
        for t in [
            PduType::IcReq,
            PduType::H2cTermReq,
            PduType::CapsuleCmd,
            PduType::H2cData,
        ] {
            assert!(t.is_h2c());
        }
        for t in [
            PduType::IcResp,
            PduType::C2hTermReq,
            PduType::CapsuleResp,
            PduType::C2hData,
            PduType::R2t,
        ] {
            assert!(!t.is_h2c());
        }
    }
}
