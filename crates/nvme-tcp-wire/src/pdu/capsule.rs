//! CapsuleCmd (HLEN 72: CH + 64-byte SQE, optional in-capsule data) and CapsuleResp (HLEN 24:
//! CH + 16-byte CQE, never data). The SQE and CQE are carried as raw bytes here; their
//! structure lives in [`crate::nvme`].

use super::common::{CommonHeaderRepr, PduFlags, PduType, data_pdo};
use super::emit::EmitHeader;
use crate::error::{Reason, Result, WireError};

/// HLEN of CapsuleCmd.
pub const CAPSULE_CMD_HLEN: usize = 72;
/// HLEN of CapsuleResp.
pub const CAPSULE_RESP_HLEN: usize = 24;
/// Length of a submission queue entry.
pub const SQE_LEN: usize = 64;
/// Length of a completion queue entry.
pub const CQE_LEN: usize = 16;

/// Byte offsets of the header fields, from the first byte of the PDU.
pub mod field {
    use std::ops::Range;
    /// SQE.
    pub const SQE: Range<usize> = 8..72;
    /// CQE.
    pub const CQE: Range<usize> = 8..24;
}

fn check_type(ch: &CommonHeaderRepr, want: PduType) -> Result<()> {
    if ch.pdu_type != want {
        return Err(WireError::invalid(
            "PDU-TYPE",
            0,
            Reason::UnexpectedType {
                found: ch.pdu_type as u8,
                expected: if want as u8 == PduType::CapsuleCmd as u8 {
                    "CapsuleCmd"
                } else {
                    "CapsuleResp"
                },
            },
        ));
    }
    Ok(())
}

pdu_view! {
    /// A view of a CapsuleCmd PDU header.
    pub struct CapsuleCmdPdu;
    min_len = CAPSULE_CMD_HLEN, "72-byte header";
}

impl<T: AsRef<[u8]>> CapsuleCmdPdu<T> {
    /// The 64-byte SQE.
    pub fn sqe(&self) -> &[u8] {
        &self.buffer.as_ref()[field::SQE]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> CapsuleCmdPdu<T> {
    /// The 64-byte SQE, writable.
    pub fn sqe_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::SQE]
    }
}

/// A CapsuleCmd header as an owned value. In-capsule data travels separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CapsuleCmdRepr {
    /// Header digest present.
    pub hdgst: bool,
    /// Data digest present (only emitted when `data_len > 0`).
    pub ddgst: bool,
    /// CPDA of the controller (PDO alignment, 0's based dwords).
    pub pda: u8,
    /// The submission queue entry.
    pub sqe: [u8; SQE_LEN],
    /// Length of the in-capsule data (0 if none).
    pub data_len: u32,
}

impl CapsuleCmdRepr {
    /// Parses the header; the in-capsule data length is PLEN − PDO − DDGST. The caller
    /// validates the common header first ([`crate::validate`]).
    pub fn parse<T: AsRef<[u8]>>(pdu: &CapsuleCmdPdu<T>) -> Result<Self> {
        let ch = CommonHeaderRepr::parse(&pdu.ch())?;
        check_type(&ch, PduType::CapsuleCmd)?;
        let mut sqe = [0u8; SQE_LEN];
        sqe.copy_from_slice(pdu.sqe());
        Ok(Self {
            hdgst: ch.has_hdgst(),
            ddgst: ch.has_ddgst(),
            pda: super::pda_for_pdo(ch.hlen, ch.has_hdgst(), ch.pdo),
            sqe,
            data_len: ch.data_len() as u32,
        })
    }

    /// Writes the 72-byte header (not the header digest or padding).
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, pdu: &mut CapsuleCmdPdu<T>) {
        EmitHeader::common(self).emit(&mut pdu.ch_mut());
        pdu.sqe_mut().copy_from_slice(&self.sqe);
    }
}

impl EmitHeader for CapsuleCmdRepr {
    fn common(&self) -> CommonHeaderRepr {
        let has_data = self.data_len > 0;
        let ddgst = self.ddgst && has_data;
        let mut flags = PduFlags::NONE;
        flags.set(PduFlags::HDGSTF, self.hdgst);
        flags.set(PduFlags::DDGSTF, ddgst);
        let hdr = CAPSULE_CMD_HLEN as u32 + if self.hdgst { 4 } else { 0 };
        let (pdo, plen) = if has_data {
            let pdo = data_pdo(CAPSULE_CMD_HLEN as u8, self.hdgst, self.pda);
            (
                pdo,
                (pdo as u32)
                    .saturating_add(self.data_len)
                    .saturating_add(if ddgst { 4 } else { 0 }),
            )
        } else {
            (0, hdr)
        };
        CommonHeaderRepr {
            pdu_type: PduType::CapsuleCmd,
            flags,
            hlen: CAPSULE_CMD_HLEN as u8,
            pdo,
            plen,
        }
    }
    fn emit_hlen(&self, buf: &mut [u8]) {
        self.emit(&mut CapsuleCmdPdu::new_unchecked(buf));
    }
}

pdu_view! {
    /// A view of a CapsuleResp PDU header.
    pub struct CapsuleRespPdu;
    min_len = CAPSULE_RESP_HLEN, "24-byte header";
}

impl<T: AsRef<[u8]>> CapsuleRespPdu<T> {
    /// The 16-byte CQE.
    pub fn cqe(&self) -> &[u8] {
        &self.buffer.as_ref()[field::CQE]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> CapsuleRespPdu<T> {
    /// The 16-byte CQE, writable.
    pub fn cqe_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::CQE]
    }
}

/// A CapsuleResp as an owned value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CapsuleRespRepr {
    /// Header digest present.
    pub hdgst: bool,
    /// The completion queue entry.
    pub cqe: [u8; CQE_LEN],
}

impl CapsuleRespRepr {
    /// Parses the header.
    pub fn parse<T: AsRef<[u8]>>(pdu: &CapsuleRespPdu<T>) -> Result<Self> {
        let ch = CommonHeaderRepr::parse(&pdu.ch())?;
        check_type(&ch, PduType::CapsuleResp)?;
        let mut cqe = [0u8; CQE_LEN];
        cqe.copy_from_slice(pdu.cqe());
        Ok(Self {
            hdgst: ch.has_hdgst(),
            cqe,
        })
    }

    /// Writes the 24-byte header (not the header digest).
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, pdu: &mut CapsuleRespPdu<T>) {
        EmitHeader::common(self).emit(&mut pdu.ch_mut());
        pdu.cqe_mut().copy_from_slice(&self.cqe);
    }
}

impl EmitHeader for CapsuleRespRepr {
    fn common(&self) -> CommonHeaderRepr {
        CommonHeaderRepr {
            pdu_type: PduType::CapsuleResp,
            flags: if self.hdgst {
                PduFlags::HDGSTF
            } else {
                PduFlags::NONE
            },
            hlen: CAPSULE_RESP_HLEN as u8,
            pdo: 0,
            plen: CAPSULE_RESP_HLEN as u32 + if self.hdgst { 4 } else { 0 },
        }
    }
    fn emit_hlen(&self, buf: &mut [u8]) {
        self.emit(&mut CapsuleRespPdu::new_unchecked(buf));
    }
}
