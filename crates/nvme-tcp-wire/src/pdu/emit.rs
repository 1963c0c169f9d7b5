//! Sender-side helpers: write a complete PDU header (CH + PSH, header digest, padding) for the
//! negotiated digests and PDA, and whole small PDUs.

use super::common::{CommonHeaderRepr, PduType};
use super::{MAX_HEADER_LEN, PduRepr};
use crate::digest::{DIGEST_LEN, crc32c};
use crate::error::{Reason, Result, WireError};

/// A PDU header representation that can be written to the wire.
///
/// Implemented by every `*Repr` of this module; the digest flags and PDO follow from the repr's
/// own `hdgst`/`ddgst`/`pda` fields, so set those from the negotiated connection parameters.
pub trait EmitHeader {
    /// The common header this PDU carries (type, flags incl. digests, HLEN, PDO, PLEN).
    fn common(&self) -> CommonHeaderRepr;
    /// Writes CH + PSH into `buf`, which holds exactly HLEN bytes.
    fn emit_hlen(&self, buf: &mut [u8]);
}

/// Bytes [`emit_header`] writes for `ch`: HLEN, + 4 with a header digest, up to PDO if the PDU
/// has data.
pub fn header_len_with_pad(ch: &CommonHeaderRepr) -> usize {
    let hd = ch.header_len();
    if ch.pdo != 0 {
        hd.max(ch.pdo as usize)
    } else {
        hd
    }
}

/// Writes the full header of `repr` into the start of `buf`: CH + PSH, the header digest if
/// enabled, then zero padding up to PDO. Returns the bytes written (= PDO for a PDU with data,
/// HLEN (+4) otherwise). The data, then its digest ([`crate::digest::data_digest`]), follow.
///
/// Fails only if `buf` is too short; [`MAX_HEADER_LEN`] bytes always suffice.
pub fn emit_header<R: EmitHeader + ?Sized>(repr: &R, buf: &mut [u8]) -> Result<usize> {
    let ch = repr.common();
    let hlen = ch.hlen as usize;
    let hd = ch.header_len();
    let total = header_len_with_pad(&ch);
    if buf.len() < total {
        return Err(WireError::Truncated {
            needed: total,
            have: buf.len(),
        });
    }
    repr.emit_hlen(&mut buf[..hlen]);
    if ch.has_hdgst() {
        let d = crc32c(&buf[..hlen]);
        buf[hlen..hd].copy_from_slice(&d.to_le_bytes());
    }
    buf[hd..total].fill(0);
    Ok(total)
}

/// Writes a whole PDU: header ([`emit_header`]), `data`, and the data digest if the header says
/// so. `data.len()` must equal the repr's data length (e.g. `datal`, `data_len`). Returns PLEN.
/// Meant for small PDUs (capsules with in-capsule data, Termination Requests); large data PDUs
/// are better sent as header + the caller's data buffers + digest, without the copy.
pub fn emit_pdu<R: EmitHeader + ?Sized>(repr: &R, data: &[u8], buf: &mut [u8]) -> Result<usize> {
    let ch = repr.common();
    let want = ch.data_len();
    if data.len() != want {
        return Err(WireError::invalid(
            "DATA",
            0,
            Reason::DataLength {
                announced: want,
                given: data.len(),
            },
        ));
    }
    let plen = ch.plen as usize;
    if buf.len() < plen {
        return Err(WireError::Truncated {
            needed: plen,
            have: buf.len(),
        });
    }
    let mut at = emit_header(repr, buf)?;
    buf[at..at + data.len()].copy_from_slice(data);
    at += data.len();
    if ch.has_ddgst() {
        buf[at..at + DIGEST_LEN].copy_from_slice(&crc32c(data).to_le_bytes());
        at += DIGEST_LEN;
    }
    Ok(at)
}

/// A PDU header with digest and padding in a fixed-size array, ready to send.
#[derive(Clone, Copy)]
pub struct HeaderBuf {
    buf: [u8; MAX_HEADER_LEN],
    len: u8,
}

impl HeaderBuf {
    /// Emits the header of `repr` (see [`emit_header`]).
    pub fn new<R: EmitHeader + ?Sized>(repr: &R) -> Self {
        let mut buf = [0u8; MAX_HEADER_LEN];
        // Every header of this crate fits in MAX_HEADER_LEN (PDO ≤ 144 for any type and
        // PDA, IC PDUs are 128 bytes; checked by a unit test), so this cannot fail.
        let len = emit_header(repr, &mut buf).unwrap_or(0) as u8;
        Self { buf, len }
    }
    /// The header bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len as usize]
    }
    /// Length of the header bytes.
    pub fn len(&self) -> usize {
        self.len as usize
    }
    /// True if nothing was emitted.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl AsRef<[u8]> for HeaderBuf {
    fn as_ref(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl std::fmt::Debug for HeaderBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeaderBuf")
            .field("bytes", &self.as_bytes())
            .finish()
    }
}

impl EmitHeader for PduRepr {
    fn common(&self) -> CommonHeaderRepr {
        match self {
            PduRepr::IcReq(r) => r.common(),
            PduRepr::IcResp(r) => r.common(),
            PduRepr::TermReq(r) => r.common(),
            PduRepr::CapsuleCmd(r) => r.common(),
            PduRepr::CapsuleResp(r) => r.common(),
            PduRepr::Data(r) => r.common(),
            PduRepr::R2t(r) => r.common(),
        }
    }
    fn emit_hlen(&self, buf: &mut [u8]) {
        match self {
            PduRepr::IcReq(r) => r.emit_hlen(buf),
            PduRepr::IcResp(r) => r.emit_hlen(buf),
            PduRepr::TermReq(r) => r.emit_hlen(buf),
            PduRepr::CapsuleCmd(r) => r.emit_hlen(buf),
            PduRepr::CapsuleResp(r) => r.emit_hlen(buf),
            PduRepr::Data(r) => r.emit_hlen(buf),
            PduRepr::R2t(r) => r.emit_hlen(buf),
        }
    }
}

impl PduRepr {
    /// The PDU type.
    pub fn pdu_type(&self) -> PduType {
        match self {
            PduRepr::IcReq(_) => PduType::IcReq,
            PduRepr::IcResp(_) => PduType::IcResp,
            PduRepr::TermReq(r) => r.pdu_type,
            PduRepr::CapsuleCmd(_) => PduType::CapsuleCmd,
            PduRepr::CapsuleResp(_) => PduType::CapsuleResp,
            PduRepr::Data(r) => r.pdu_type,
            PduRepr::R2t(_) => PduType::R2t,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pdu::*;

    fn all_kinds() -> Vec<PduRepr> {
        vec![
            PduRepr::IcReq(IcReqRepr {
                pfv: 0,
                hpda: 0,
                hdgst_enable: true,
                ddgst_enable: false,
                maxr2t: 3,
            }),
            PduRepr::IcResp(IcRespRepr {
                pfv: 0,
                cpda: 2,
                hdgst_enable: false,
                ddgst_enable: true,
                maxh2cdata: 0x40_0000,
            }),
            PduRepr::TermReq(TermReqRepr::new(
                PduType::C2hTermReq,
                crate::Fes::InvalidHeaderField,
                3,
                200,
            )),
            PduRepr::CapsuleCmd(CapsuleCmdRepr {
                hdgst: true,
                ddgst: true,
                pda: 7,
                sqe: [0x11; SQE_LEN],
                data_len: 1024,
            }),
            PduRepr::CapsuleResp(CapsuleRespRepr {
                hdgst: true,
                cqe: [0x22; CQE_LEN],
            }),
            PduRepr::R2t(R2tRepr {
                hdgst: false,
                cccid: 9,
                ttag: 4,
                r2to: 8192,
                r2tl: 65536,
            }),
        ]
    }

    #[test]
    fn emitted_headers_parse_back_to_the_same_bytes() {
        // PDA is not always recoverable from PDO (several PDAs give the same padding), so the
        // round trip is checked on the bytes.
        for repr in all_kinds() {
            let hdr = HeaderBuf::new(&repr);
            assert!(!hdr.is_empty(), "{repr:?}");
            let parsed = PduRepr::parse(hdr.as_bytes()).unwrap();
            assert_eq!(HeaderBuf::new(&parsed).as_bytes(), hdr.as_bytes());
            let ch = repr.common();
            if ch.has_hdgst() {
                let hlen = ch.hlen as usize;
                let d = crate::digest::crc32c(&hdr.as_bytes()[..hlen]);
                assert_eq!(hdr.as_bytes()[hlen..hlen + 4], d.to_le_bytes());
            }
        }
    }

    #[test]
    fn capsule_with_data_is_padded_to_the_pda() {
        let repr = CapsuleCmdRepr {
            hdgst: true,
            ddgst: true,
            pda: 7,
            sqe: [0; SQE_LEN],
            data_len: 8,
        };
        let mut buf = [0xFFu8; 256];
        let plen = emit_pdu(&repr, &[1; 8], &mut buf).unwrap();
        assert_eq!(plen, 96 + 8 + 4);
        assert_eq!(buf[3], 96);
        assert!(buf[76..96].iter().all(|&b| b == 0));
        assert_eq!(buf[104..108], crate::digest::data_digest(&[1; 8]));
    }
}
