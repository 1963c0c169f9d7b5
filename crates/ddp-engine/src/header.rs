//! Header checks: what the engine accepts as a C2H PDU header of a queue, given the
//! negotiated digests and data alignment. The same strict test serves while in sync (a
//! failure there means framing was lost) and while searching for a resync candidate
//! (where it must reject the PDU-like patterns that occur inside data).
//!
//! Rules (NVMe/TCP 1.0, PDU header validation and §3.6.2.x per type): after ICResp a host
//! receives only C2HTermReq, CapsuleResp, C2HData and R2T; HLEN is fixed per type; the
//! HDGSTF/DDGSTF flags follow what was negotiated; PDO is 0 for PDUs without data and the
//! aligned header length for C2HData; PLEN is the sum of its parts; reserved fields are 0.

use nvme_tcp_wire::digest::crc32c;
use nvme_tcp_wire::pdu::{CH_LEN, CommonHeader, DATA_PDU_HLEN, DataPdu, PduFlags, PduType};

/// Bytes of a header the engine collects: HLEN (24 for every C2H type after ICResp) plus
/// the header digest.
pub(crate) const MAX_HDR: usize = DATA_PDU_HLEN + 4;

/// Smallest C2HTermReq PLEN (header only) and largest (header + 128 bytes of data).
const TERM_REQ_PLEN: std::ops::RangeInclusive<u32> = 24..=152;

/// Negotiated parameters the checks depend on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HeaderRules {
    pub hdgst: bool,
    pub ddgst: bool,
    /// PDO every C2HData of this queue carries.
    pub c2h_pdo: u8,
}

/// Layout of a PDU, relative to its first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PduLayout {
    pub plen: u32,
    /// Header bytes the engine collects before the layout is known in full.
    pub hdr_len: u32,
    /// Data region `data_start .. data_end` (empty for PDUs without data).
    pub data_start: u32,
    pub data_end: u32,
    /// A 4-byte data digest follows the data.
    pub ddgst: bool,
    /// C2HData only: (CCCID, DATAO).
    pub c2h: Option<(u16, u32)>,
}

impl HeaderRules {
    /// Bytes to collect once the common header is known, or `None` if the common header
    /// alone is implausible.
    pub(crate) fn header_len(&self, ch: &[u8]) -> Option<usize> {
        let ch = CommonHeader::new_checked(ch).ok()?;
        let t = ch.pdu_type()?;
        let hdgst_type = match t {
            PduType::CapsuleResp | PduType::C2hData | PduType::R2t => true,
            PduType::C2hTermReq => false,
            _ => return None,
        };
        if usize::from(ch.hlen()) != DATA_PDU_HLEN {
            return None;
        }
        if !t.allowed_flags().contains(ch.flags()) {
            return None;
        }
        let has_hdgst = ch.flags().contains(PduFlags::HDGSTF);
        if hdgst_type && has_hdgst != self.hdgst {
            return None;
        }
        Some(DATA_PDU_HLEN + if has_hdgst { 4 } else { 0 })
    }

    /// Checks a complete header (`hdr` holds at least [`Self::header_len`] bytes).
    pub(crate) fn check(&self, hdr: &[u8]) -> Option<PduLayout> {
        let hdr_len = self.header_len(hdr.get(..CH_LEN)?)?;
        let hdr = hdr.get(..hdr_len)?;
        let ch = CommonHeader::new_unchecked(hdr);
        let t = ch.pdu_type()?;
        let flags = ch.flags();
        let plen = ch.plen();
        let pdo = ch.pdo();
        if flags.contains(PduFlags::HDGSTF) {
            let got = u32::from_le_bytes([hdr[24], hdr[25], hdr[26], hdr[27]]);
            if crc32c(&hdr[..DATA_PDU_HLEN]) != got {
                return None;
            }
        }
        let hdr_len32 = hdr_len as u32;
        let no_data = PduLayout {
            plen,
            hdr_len: hdr_len32,
            data_start: plen,
            data_end: plen,
            ddgst: false,
            c2h: None,
        };
        match t {
            PduType::CapsuleResp | PduType::R2t => {
                (pdo == 0 && plen == hdr_len32 && !flags.contains(PduFlags::DDGSTF))
                    .then_some(no_data)
            }
            PduType::C2hTermReq => (pdo == 0 && TERM_REQ_PLEN.contains(&plen)).then_some(no_data),
            PduType::C2hData => {
                let pdu = DataPdu::new_unchecked(hdr);
                let datal = pdu.datal();
                let has_ddgst = flags.contains(PduFlags::DDGSTF);
                if pdo != self.c2h_pdo
                    || datal == 0
                    || has_ddgst != self.ddgst
                    || pdu.ttag() != 0
                    || pdu.reserved() != 0
                {
                    return None;
                }
                let dd = if has_ddgst { 4 } else { 0 };
                let expect = u32::from(pdo).checked_add(datal)?.checked_add(dd)?;
                if plen != expect {
                    return None;
                }
                Some(PduLayout {
                    plen,
                    hdr_len: hdr_len32,
                    data_start: u32::from(pdo),
                    data_end: u32::from(pdo) + datal,
                    ddgst: has_ddgst,
                    c2h: Some((pdu.cccid(), pdu.datao())),
                })
            }
            _ => None,
        }
    }

    /// Searches `buf` for the first offset where a plausible header starts whose header is
    /// complete in `buf`, and whose successors, as far as `buf` holds their headers, are
    /// plausible too (following PLEN).
    pub(crate) fn find_candidate(&self, buf: &[u8]) -> Option<usize> {
        let mut i = 0;
        while i + DATA_PDU_HLEN <= buf.len() {
            // Cheap filter first: a C2H type byte and HLEN 24.
            if matches!(buf[i], 0x03 | 0x05 | 0x07 | 0x09)
                && usize::from(buf[i + 2]) == DATA_PDU_HLEN
                && self.chain_plausible(&buf[i..])
            {
                return Some(i);
            }
            i += 1;
        }
        None
    }

    fn chain_plausible(&self, buf: &[u8]) -> bool {
        let mut at = 0usize;
        let mut first = true;
        loop {
            let rest = &buf[at..];
            if rest.len() < CH_LEN {
                return !first;
            }
            let Some(need) = self.header_len(&rest[..CH_LEN]) else {
                return false;
            };
            if rest.len() < need {
                // The next header is cut by the segment end: the part we have is plausible.
                return !first;
            }
            let Some(layout) = self.check(rest) else {
                return false;
            };
            first = false;
            match at.checked_add(layout.plen as usize) {
                Some(next) if next < buf.len() => at = next,
                _ => return true,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nvme_tcp_wire::pdu::{DataPduRepr, HeaderBuf};

    fn rules(hdgst: bool, ddgst: bool) -> HeaderRules {
        HeaderRules {
            hdgst,
            ddgst,
            c2h_pdo: nvme_tcp_wire::pdu::data_pdo(24, hdgst, 0),
        }
    }

    fn c2h(hdgst: bool, ddgst: bool, datal: u32) -> Vec<u8> {
        let repr = DataPduRepr {
            pdu_type: PduType::C2hData,
            flags: PduFlags::NONE,
            hdgst,
            ddgst,
            pda: 0,
            cccid: 3,
            ttag: 0,
            datao: 512,
            datal,
        };
        HeaderBuf::new(&repr).as_bytes().to_vec()
    }

    #[test]
    fn accepts_a_c2h_data_header_and_reports_its_layout() {
        for (h, d) in [(false, false), (true, false), (false, true), (true, true)] {
            let hdr = c2h(h, d, 100);
            let l = rules(h, d).check(&hdr).expect("plausible");
            assert_eq!(l.c2h, Some((3, 512)));
            assert_eq!(l.data_end - l.data_start, 100);
            assert_eq!(l.plen, l.data_end + if d { 4 } else { 0 });
        }
    }

    #[test]
    fn rejects_headers_that_disagree_with_the_negotiation() {
        let hdr = c2h(true, true, 100);
        assert!(rules(false, true).header_len(&hdr[..8]).is_none());
        assert!(rules(true, false).check(&hdr).is_none());
    }

    #[test]
    fn rejects_a_bad_header_digest() {
        let mut hdr = c2h(true, false, 100);
        hdr[14] ^= 1; // DATAO
        assert!(rules(true, false).check(&hdr).is_none());
    }

    #[test]
    fn rejects_inconsistent_plen() {
        let mut hdr = c2h(false, false, 100);
        hdr[4] = hdr[4].wrapping_add(1);
        assert!(rules(false, false).check(&hdr).is_none());
    }

    #[test]
    fn search_finds_the_header_after_garbage_and_follows_plen() {
        let r = rules(false, true);
        let mut buf = vec![0x07u8; 50];
        let first = buf.len();
        buf.extend(c2h(false, true, 16));
        buf.extend([0xAB; 16 + 4]);
        buf.extend(c2h(false, true, 8));
        assert_eq!(r.find_candidate(&buf), Some(first));
        // Break the second header: the first is no longer confirmed.
        let second = first + 24 + 20;
        buf[second + 4] ^= 0x40;
        assert_ne!(r.find_candidate(&buf), Some(first));
    }
}
