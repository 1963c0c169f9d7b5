//! Header checks: what the engine accepts as a C2H PDU header of a queue. The rules are the
//! wire layer's validation core ([`nvme_tcp_wire::validate`], run as the header's bytes
//! arrive), the same the host's receive machine applies; the engine adds only its policy:
//!
//! * **types**: after ICResp (when a queue is offloaded) a host receives only C2HTermReq,
//!   CapsuleResp, C2HData and R2T; an ICResp (or anything else) means framing was lost;
//! * **resync candidates** (the search for a header in a stream whose framing was lost, and
//!   the headers followed speculatively from one) must also look exactly as a controller
//!   builds them: C2HData with the PDO computed from the negotiated alignment
//!   (`round_up(HLEN + HDGST, (PDA + 1) * 4)`, which is what Linux, SPDK and this project's
//!   target send), DATAL ≠ 0 and its reserved fields (TTAG, bytes 20..24) zero; a
//!   Termination Request with PDO 0. The device is configured with nothing but the PDU format
//!   version, the alignment and the digests (`nvme_tcp_ddp_config` in the kernel series, the
//!   mlx5 NIC included), so a fixed layout derived from them is the "magic pattern" it can
//!   search for, and it keeps the PDU-like patterns that occur inside data from passing.
//!
//! In sync, a header the core accepts is followed whatever its (valid, aligned) PDO: data is
//! placed from PDO on, so a PDU the host accepts never knocks the engine out of sync.

use nvme_tcp_wire::pdu::{CH_LEN, DATA_PDU_HLEN, DataPdu, PduType};
use nvme_tcp_wire::validate::{HeaderProgress, NegotiatedParams, Role, validate_partial};

/// Bytes of a header the engine collects: HLEN (24 for every C2H type after ICResp) plus
/// the header digest.
pub(crate) const MAX_HDR: usize = DATA_PDU_HLEN + 4;

/// Negotiated parameters the checks depend on, and the engine's policy.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HeaderRules {
    /// What the validation core checks headers against.
    params: NegotiatedParams,
    /// PDO every C2HData of this queue carries (the resync candidate test).
    c2h_pdo: u8,
}

/// Layout of a PDU, relative to its first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PduLayout {
    pub plen: u32,
    /// Header bytes the engine collects before the layout is known in full.
    pub hdr_len: u32,
    /// Data region `data_start .. data_end` (empty for PDUs other than C2HData).
    pub data_start: u32,
    pub data_end: u32,
    /// A 4-byte data digest follows the data.
    pub ddgst: bool,
    /// C2HData only: (CCCID, DATAO).
    pub c2h: Option<(u16, u32)>,
}

/// How far a header being collected has got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Progress {
    /// Valid so far; this many bytes of it are needed.
    Need(usize),
    /// Complete and valid.
    Done(PduLayout),
}

impl HeaderRules {
    /// Rules for a queue with these digests and C2H data alignment (`pda`, 0's based dwords).
    pub(crate) fn new(hdgst: bool, ddgst: bool, pda: u8) -> Self {
        Self {
            params: NegotiatedParams {
                hdgst,
                ddgst,
                rx_pda: pda,
                // As the host: data goes to the command's buffer, PLEN needs no other bound.
                max_plen: u32::MAX,
                ..NegotiatedParams::new(Role::Host)
            },
            c2h_pdo: nvme_tcp_wire::pdu::data_pdo(DATA_PDU_HLEN as u8, hdgst, pda),
        }
    }

    /// Checks the header bytes collected so far (`hdr` from the PDU's first byte):
    /// `None` if they cannot start a PDU of this queue. `candidate` adds the resync candidate
    /// test (see the module documentation). Allocation-free: runs byte by byte in the search.
    #[inline]
    pub(crate) fn progress(&self, hdr: &[u8], candidate: bool) -> Option<Progress> {
        let p = validate_partial(hdr, &self.params).ok()?;
        let layout = match p {
            HeaderProgress::Need(n) => {
                if n > MAX_HDR {
                    return None;
                }
                if hdr.len() >= CH_LEN {
                    // The common header is in and valid: apply the type policy now.
                    let t = PduType::from_u8(hdr[0])?;
                    if !matches!(
                        t,
                        PduType::CapsuleResp
                            | PduType::C2hData
                            | PduType::R2t
                            | PduType::C2hTermReq
                    ) {
                        return None;
                    }
                }
                return Some(Progress::Need(n));
            }
            HeaderProgress::Complete(l) => l,
        };
        let plen = layout.plen() as u32;
        let hdr_len = layout.header_len() as u32;
        let no_data = PduLayout {
            plen,
            hdr_len,
            data_start: plen,
            data_end: plen,
            ddgst: false,
            c2h: None,
        };
        match layout.pdu_type() {
            PduType::CapsuleResp | PduType::R2t => Some(Progress::Done(no_data)),
            PduType::C2hTermReq => {
                (!candidate || layout.ch.pdo == 0).then_some(Progress::Done(no_data))
            }
            PduType::C2hData => {
                let pdu = DataPdu::new_unchecked(hdr);
                if candidate
                    && (layout.ch.pdo != self.c2h_pdo
                        || pdu.datal() == 0
                        || pdu.ttag() != 0
                        || pdu.reserved() != 0)
                {
                    return None;
                }
                let data_start = layout.data_offset() as u32;
                Some(Progress::Done(PduLayout {
                    plen,
                    hdr_len,
                    data_start,
                    data_end: data_start + layout.data_len() as u32,
                    ddgst: layout.has_ddgst(),
                    c2h: Some((pdu.cccid(), pdu.datao())),
                }))
            }
            _ => None,
        }
    }

    /// Checks a complete header (`hdr` holds all of it).
    #[cfg(test)]
    pub(crate) fn check(&self, hdr: &[u8], candidate: bool) -> Option<PduLayout> {
        match self.progress(hdr, candidate)? {
            Progress::Done(l) => Some(l),
            Progress::Need(_) => None,
        }
    }

    /// Searches `buf` for the first offset where a resync candidate starts whose header is
    /// complete in `buf`, and whose successors, as far as `buf` holds their headers, are
    /// candidates too (following PLEN).
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
            let layout = match self.progress(&rest[..rest.len().min(MAX_HDR)], true) {
                None => return false,
                // The next header is cut by the segment end: the part we have is plausible.
                Some(Progress::Need(_)) => return !first,
                Some(Progress::Done(l)) => l,
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
    use nvme_tcp_wire::pdu::{DataPduRepr, HeaderBuf, PduFlags};

    fn rules(hdgst: bool, ddgst: bool) -> HeaderRules {
        HeaderRules::new(hdgst, ddgst, 0)
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
            let l = rules(h, d).check(&hdr, false).expect("plausible");
            assert_eq!(l.c2h, Some((3, 512)));
            assert_eq!(l.data_end - l.data_start, 100);
            assert_eq!(l.plen, l.data_end + if d { 4 } else { 0 });
        }
    }

    #[test]
    fn rejects_headers_that_disagree_with_the_negotiation() {
        let hdr = c2h(true, true, 100);
        assert!(rules(false, true).progress(&hdr[..8], false).is_none());
        assert!(rules(true, false).check(&hdr, false).is_none());
    }

    #[test]
    fn rejects_a_bad_header_digest() {
        let mut hdr = c2h(true, false, 100);
        hdr[14] ^= 1; // DATAO
        assert!(rules(true, false).check(&hdr, false).is_none());
    }

    #[test]
    fn rejects_inconsistent_plen() {
        let mut hdr = c2h(false, false, 100);
        hdr[4] = hdr[4].wrapping_add(1);
        assert!(rules(false, false).check(&hdr, false).is_none());
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

    /// A C2HData whose PDO is larger than the negotiated one (valid and aligned: the host
    /// accepts it) is followed in sync, its data placed from its PDO; it is no resync
    /// candidate.
    #[test]
    fn in_sync_follows_any_valid_pdo_the_search_only_the_negotiated_one() {
        let r = rules(false, false);
        let mut hdr = c2h(false, false, 100);
        hdr.resize(32, 0);
        hdr[3] = 32; // PDO
        hdr[4..8].copy_from_slice(&132u32.to_le_bytes()); // PLEN = PDO + DATAL
        let l = r.check(&hdr, false).expect("valid in sync");
        assert_eq!((l.data_start, l.data_end, l.plen), (32, 132, 132));
        assert!(r.check(&hdr, true).is_none());
        // An ICResp is never a PDU of an offloaded queue.
        let mut ic = [0u8; 8];
        ic[0] = PduType::IcResp as u8;
        ic[2] = 128;
        ic[4..8].copy_from_slice(&128u32.to_le_bytes());
        assert!(r.progress(&ic, false).is_none());
    }
}
