//! Receive-side PDU header validation.
//!
//! Checks run in the order of the NVMe/TCP transport specification (rev 1.0, §7.4 "PDU header
//! validation", as FreeBSD's `nvmf_tcp_validate_pdu_header` applies it; summarised in
//! `nvme-tcp-protocol.md` §1.9), so the error reported is the one for the lowest bad field:
//!
//! 1. PDU-TYPE is known and travels in the direction this receiver receives (FES 0x01, FEI 0).
//! 2. FLAGS: only the bits the type allows; HDGSTF/DDGSTF exactly as negotiated; SUCCESS only
//!    with LAST_PDU (FES 0x01, FEI 1).
//! 3. HLEN is the type's fixed value (FES 0x01, FEI 2).
//! 4. PDO: 0 without data; with data at least HLEN (+ header digest), a multiple of the
//!    receiver's PDA alignment, not beyond PLEN (FES 0x01, FEI 3).
//! 5. PLEN: the fixed length for PDUs without data; room for data and data digest otherwise;
//!    not above the receiver's maximum (FES 0x01, FEI 4; above the maximum FES 0x05).
//! 6. Header digest (FES 0x03, FEI = received digest).
//! 7. Per-type field rules that need no command state: DATAL = PLEN − PDO − DDGST
//!    (FEI 16), H2CData DATAL ≤ MAXH2CDATA (FES 0x05), R2TL ≠ 0, ICReq/ICResp PFV and PDA.
//!
//! Rules that need command state (unknown CCCID/TTAG, DATAO ranges, PDU sequence) belong to the
//! host and target state machines.
//!
//! Steps 1–5 need only the 8-byte common header ([`validate_ch`]); a receiver runs them first,
//! so it knows how many header bytes to read and refuses an oversized PLEN before reading
//! anything else. [`validate_header`] runs all steps; [`validate_partial`] runs them on a header
//! as its bytes arrive (what every reader of a PDU stream does: the host's receive machine,
//! the target's connection, the offload engine's flow, byte by byte in its resync search).
//!
//! Nothing here allocates: errors are `Copy` values whose text is built when displayed.
//!
//! A malformed Termination Request yields [`WireError::MalformedTermReq`]: the connection is
//! closed without answering.
//!
//! ```
//! use nvme_tcp_wire::pdu::{DataPduRepr, HeaderBuf, PduFlags, PduType};
//! use nvme_tcp_wire::validate::{NegotiatedParams, Role, validate_header};
//! use nvme_tcp_wire::Fes;
//!
//! let params = NegotiatedParams { hdgst: true, ..NegotiatedParams::new(Role::Host) };
//! let repr = DataPduRepr {
//!     pdu_type: PduType::C2hData, flags: PduFlags::LAST_PDU, hdgst: true, ddgst: false,
//!     pda: 0, cccid: 1, ttag: 0, datao: 0, datal: 4096,
//! };
//! let hdr = HeaderBuf::new(&repr);
//! let layout = validate_header(hdr.as_bytes(), &params).unwrap();
//! assert_eq!((layout.data_offset(), layout.data_len()), (28, 4096));
//!
//! // A flipped HLEN is reported with the FES/FEI of the Termination Request to send.
//! let mut bad = [0u8; 28];
//! bad.copy_from_slice(hdr.as_bytes());
//! bad[2] = 25;
//! let err = validate_header(&bad, &params).unwrap_err();
//! assert_eq!(err.termination(), Some((Fes::InvalidHeaderField, 2)));
//! ```

use crate::digest::{DIGEST_LEN, crc32c};
use crate::error::{Reason, Result, WireError};
use crate::pdu::{
    CH_LEN, CommonHeaderRepr, IcPdu, IcReqRepr, IcRespRepr, MAX_PDA, PduFlags, PduType,
    TERM_REQ_MAX_PLEN,
};

/// Byte offsets of the fields validation names: the FEI of FES 0x01/0x06 errors, taken from
/// the PDU layouts' field tables.
mod fei {
    use crate::pdu::field::{common, data, ic, r2t};
    pub const PDU_TYPE: u32 = common::PDU_TYPE as u32;
    pub const FLAGS: u32 = common::FLAGS as u32;
    pub const HLEN: u32 = common::HLEN as u32;
    pub const PDO: u32 = common::PDO as u32;
    pub const PLEN: u32 = common::PLEN.start as u32;
    pub const PFV: u32 = ic::PFV.start as u32;
    pub const PDA: u32 = ic::PDA as u32;
    pub const MAXH2CDATA: u32 = ic::MAX.start as u32;
    pub const DATAL: u32 = data::DATAL.start as u32;
    pub const R2TL: u32 = r2t::R2TL.start as u32;
}

/// Which end of the connection is receiving: decides which PDU types are acceptable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// The host: receives controller-to-host (odd) PDU types.
    Host,
    /// The controller (target): receives host-to-controller (even) PDU types.
    Controller,
}

impl Role {
    /// True if this role receives PDUs of type `t`.
    #[inline]
    pub const fn receives(self, t: PduType) -> bool {
        match self {
            Role::Host => !t.is_h2c(),
            Role::Controller => t.is_h2c(),
        }
    }

    /// The Termination Request type this role sends.
    pub const fn term_req_type(self) -> PduType {
        match self {
            Role::Host => PduType::H2cTermReq,
            Role::Controller => PduType::C2hTermReq,
        }
    }
}

/// Default for [`NegotiatedParams::max_plen`]: 16 MiB of data plus the largest header.
pub const DEFAULT_MAX_PLEN: u32 = (16 << 20) + 256;

/// Connection parameters the receiver validates against.
///
/// Before ICReq/ICResp completes, use [`NegotiatedParams::new`] (no digests, PDA 0): the
/// initialization PDUs never carry digests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NegotiatedParams {
    /// The receiving side.
    pub role: Role,
    /// Header digests negotiated (HDGSTF required on CapsuleCmd/Resp, H2C/C2HData, R2T).
    pub hdgst: bool,
    /// Data digests negotiated (DDGSTF required on every PDU that carries data).
    pub ddgst: bool,
    /// PDA this receiver announced (HPDA for a host, CPDA for a controller), 0's based
    /// dwords; PDO of received PDUs with data must be a multiple of `(rx_pda + 1) * 4`.
    pub rx_pda: u8,
    /// MAXH2CDATA the controller announced: largest DATAL of an H2CData PDU. Only checked by a
    /// controller.
    pub max_h2c_data: u32,
    /// Largest PLEN accepted (FES 0x05 above it). Bounds what a receiver commits to before
    /// seeing the data.
    pub max_plen: u32,
}

impl NegotiatedParams {
    /// Parameters before negotiation: no digests, PDA 0, MAXH2CDATA 4 MiB (Linux's value),
    /// [`DEFAULT_MAX_PLEN`].
    pub const fn new(role: Role) -> Self {
        Self {
            role,
            hdgst: false,
            ddgst: false,
            rx_pda: 0,
            max_h2c_data: 4 << 20,
            max_plen: DEFAULT_MAX_PLEN,
        }
    }

    /// The parameters in force after the ICReq/ICResp exchange, for the receiving `role`:
    /// digests as the controller enabled them in ICResp, the receiver's own PDA (HPDA from
    /// ICReq for a host, CPDA from ICResp for a controller), MAXH2CDATA from ICResp, and
    /// [`DEFAULT_MAX_PLEN`] (adjust `max_plen` to the receiver's buffers).
    pub fn from_ic_exchange(role: Role, icreq: &IcReqRepr, icresp: &IcRespRepr) -> Self {
        Self {
            role,
            hdgst: icresp.hdgst_enable,
            ddgst: icresp.ddgst_enable,
            rx_pda: match role {
                Role::Host => icreq.hpda,
                Role::Controller => icresp.cpda,
            },
            max_h2c_data: icresp.maxh2cdata,
            max_plen: DEFAULT_MAX_PLEN,
        }
    }

    /// PDO alignment in bytes.
    #[inline]
    pub const fn rx_pdo_align(&self) -> u32 {
        let pda = if self.rx_pda > MAX_PDA {
            MAX_PDA
        } else {
            self.rx_pda
        };
        (pda as u32 + 1) * 4
    }
}

/// Where the parts of a validated PDU lie, from the start of the PDU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PduLayout {
    /// The validated common header.
    pub ch: CommonHeaderRepr,
}

impl PduLayout {
    /// PDU type.
    #[inline]
    pub fn pdu_type(&self) -> PduType {
        self.ch.pdu_type
    }
    /// HLEN.
    #[inline]
    pub fn hlen(&self) -> usize {
        self.ch.hlen as usize
    }
    /// HLEN plus the header digest: the header bytes a receiver reads before the padding.
    #[inline]
    pub fn header_len(&self) -> usize {
        self.ch.header_len()
    }
    /// True if a header digest follows the header.
    #[inline]
    pub fn has_hdgst(&self) -> bool {
        self.ch.has_hdgst()
    }
    /// True if a data digest follows the data.
    #[inline]
    pub fn has_ddgst(&self) -> bool {
        self.ch.has_ddgst()
    }
    /// Offset of the data from the start of the PDU (PDO; HLEN for a Termination Request with
    /// PDO 0); equals PLEN for a PDU without data.
    #[inline]
    pub fn data_offset(&self) -> usize {
        data_start(&self.ch) as usize
    }
    /// Length of the data (excluding padding and data digest).
    #[inline]
    pub fn data_len(&self) -> usize {
        // Cannot underflow for a layout from `validate_ch`; saturating for hand-made ones.
        self.plen()
            .saturating_sub(self.data_offset())
            .saturating_sub(if self.has_ddgst() { DIGEST_LEN } else { 0 })
    }
    /// PLEN.
    #[inline]
    pub fn plen(&self) -> usize {
        self.ch.plen as usize
    }
}

/// Where data would start: PDO, or the end of the header when PDO is 0.
#[inline]
fn data_start(ch: &CommonHeaderRepr) -> u32 {
    if ch.pdo == 0 {
        ch.header_len() as u32
    } else {
        ch.pdo as u32
    }
}

/// How PLEN is checked for a type.
#[derive(Clone, Copy, PartialEq, Eq)]
enum PlenRule {
    /// Exactly HLEN (+ header digest): no data.
    Fixed,
    /// Header, optional data and data digest.
    WithData,
    /// Termination Request: HLEN..=152.
    TermReq,
}

/// Per-type rules, precomputed so the hot path does one table load instead of several
/// matches on the type.
#[derive(Clone, Copy)]
struct TypeRules {
    t: Option<PduType>,
    allowed_flags: u8,
    hlen: u8,
    has_hdgst: bool,
    may_have_ddgst: bool,
    may_carry_data: bool,
    always_data: bool,
    term_req: bool,
    plen: PlenRule,
}

const fn rules_for(raw: u8) -> TypeRules {
    match PduType::from_u8(raw) {
        None => TypeRules {
            t: None,
            allowed_flags: 0,
            hlen: 0,
            has_hdgst: false,
            may_have_ddgst: false,
            may_carry_data: false,
            always_data: false,
            term_req: false,
            plen: PlenRule::Fixed,
        },
        Some(t) => {
            let term_req = matches!(t, PduType::H2cTermReq | PduType::C2hTermReq);
            let always_data = matches!(t, PduType::H2cData | PduType::C2hData);
            TypeRules {
                t: Some(t),
                allowed_flags: t.allowed_flags().0,
                hlen: t.hlen(),
                has_hdgst: t.has_hdgst(),
                may_have_ddgst: t.may_have_ddgst(),
                may_carry_data: term_req || always_data || matches!(t, PduType::CapsuleCmd),
                always_data,
                term_req,
                plen: if term_req {
                    PlenRule::TermReq
                } else if always_data || matches!(t, PduType::CapsuleCmd) {
                    PlenRule::WithData
                } else {
                    PlenRule::Fixed
                },
            }
        }
    }
}

/// Rules indexed by the low nibble of PDU-TYPE (types above 0x0F are all reserved).
static RULES: [TypeRules; 16] = {
    let mut r = [rules_for(0xFF); 16];
    let mut i = 0;
    while i < 16 {
        r[i] = rules_for(i as u8);
        i += 1;
    }
    r
};

#[cold]
#[inline(never)]
fn invalid(t: Option<PduType>, field: &'static str, offset: u32, reason: Reason) -> WireError {
    if matches!(t, Some(PduType::H2cTermReq | PduType::C2hTermReq)) {
        WireError::MalformedTermReq {
            field,
            offset,
            reason,
        }
    } else {
        WireError::InvalidField {
            field,
            offset,
            reason,
        }
    }
}

#[cold]
#[inline(never)]
fn limit(reason: Reason) -> WireError {
    WireError::LimitExceeded(reason)
}

/// Validates the common header (steps 1–5) of a PDU received by `params.role`.
///
/// `ch` holds at least the 8-byte common header. On success the layout tells how many header
/// bytes follow (then run [`validate_psh`]) and where data and digests lie.
#[inline]
pub fn validate_ch(ch: &[u8], params: &NegotiatedParams) -> Result<PduLayout> {
    let Some(ch) = ch.first_chunk::<CH_LEN>() else {
        return Err(WireError::Truncated {
            needed: CH_LEN,
            have: ch.len(),
        });
    };
    let raw_type = ch[0];
    let flags = PduFlags(ch[1]);
    let hlen = ch[2];
    let pdo = ch[3];
    let plen = u32::from_le_bytes([ch[4], ch[5], ch[6], ch[7]]);

    // 1. PDU-TYPE known and in this receiver's direction (spec §7.4.1 PDU types; a controller
    //    only receives H2C types, a host only C2H types).
    let rules = if raw_type < 16 {
        RULES[raw_type as usize]
    } else {
        rules_for(raw_type)
    };
    let Some(t) = rules.t else {
        return Err(invalid(
            None,
            "PDU-TYPE",
            fei::PDU_TYPE,
            Reason::ReservedType(raw_type),
        ));
    };
    if !params.role.receives(t) {
        return Err(invalid(
            None,
            "PDU-TYPE",
            fei::PDU_TYPE,
            Reason::WrongDirection {
                t,
                to_host: params.role == Role::Host,
            },
        ));
    }

    // 2. FLAGS (spec §7.4.1 common header, and each PDU's FLAGS table).
    //    2a. Only the flags the type defines.
    if flags.0 & !rules.allowed_flags != 0 {
        return Err(invalid(
            Some(t),
            "FLAGS",
            fei::FLAGS,
            Reason::FlagsNotAllowed { flags: flags.0, t },
        ));
    }
    //    2b. HDGSTF iff header digests were negotiated and the type carries one (§7.4.6.1).
    let want_hdgst = params.hdgst && rules.has_hdgst;
    if flags.contains(PduFlags::HDGSTF) != want_hdgst {
        return Err(invalid(
            Some(t),
            "FLAGS",
            fei::FLAGS,
            Reason::Hdgstf { want: want_hdgst },
        ));
    }
    //    2c. DDGSTF iff data digests were negotiated and this PDU carries data (§7.4.6.1).
    //        (The header size comes from the type: HLEN itself is checked in step 3.)
    let hd = rules.hlen as u32 + if want_hdgst { DIGEST_LEN as u32 } else { 0 };
    let start = if pdo == 0 { hd } else { pdo as u32 };
    let has_data = plen > start;
    let want_ddgst = params.ddgst && rules.may_have_ddgst && has_data;
    if flags.contains(PduFlags::DDGSTF) != want_ddgst {
        return Err(invalid(
            Some(t),
            "FLAGS",
            fei::FLAGS,
            Reason::Ddgstf {
                want: want_ddgst,
                data: has_data,
            },
        ));
    }
    //    2d. SUCCESS only together with LAST_PDU (§7.4.5.2 C2HData).
    if flags.contains(PduFlags::SUCCESS) && !flags.contains(PduFlags::LAST_PDU) {
        return Err(invalid(
            Some(t),
            "FLAGS",
            fei::FLAGS,
            Reason::SuccessWithoutLast,
        ));
    }

    // 3. HLEN is fixed per type (§7.4.1; a receiver that trusts HLEN overruns its header buffer).
    if hlen != rules.hlen {
        return Err(invalid(
            Some(t),
            "HLEN",
            fei::HLEN,
            Reason::Hlen {
                t,
                expected: rules.hlen,
                found: hlen,
            },
        ));
    }

    // 4. PDO (§7.4.1 common header; §7.4.3 PDU data alignment).
    if pdo != 0 {
        if !rules.may_carry_data {
            return Err(invalid(
                Some(t),
                "PDO",
                fei::PDO,
                Reason::PdoWithoutData { pdo },
            ));
        }
        if (pdo as u32) < hd {
            return Err(invalid(
                Some(t),
                "PDO",
                fei::PDO,
                Reason::PdoInsideHeader { pdo, header: hd },
            ));
        }
        // Termination Requests place their data right after the header; no alignment applies.
        let align = params.rx_pdo_align();
        // (A mask for the usual power-of-two alignments: a division costs more than the rest
        // of the validation.)
        let misaligned = if align.is_power_of_two() {
            pdo as u32 & (align - 1) != 0
        } else {
            !(pdo as u32).is_multiple_of(align)
        };
        if !rules.term_req && misaligned {
            return Err(invalid(
                Some(t),
                "PDO",
                fei::PDO,
                Reason::PdoMisaligned { pdo, align },
            ));
        }
        if pdo as u32 > plen {
            return Err(invalid(
                Some(t),
                "PDO",
                fei::PDO,
                Reason::PdoBeyondPlen { pdo, plen },
            ));
        }
    } else if rules.always_data || (has_data && rules.may_carry_data) {
        // Data PDUs always carry data; a capsule with in-capsule data needs a PDO.
        return Err(invalid(Some(t), "PDO", fei::PDO, Reason::PdoMissing));
    }

    // 5. PLEN (§7.4.1 common header; §7.4.4 Termination Requests: 24..=152).
    match rules.plen {
        PlenRule::TermReq => {
            if !(hlen as u32..=TERM_REQ_MAX_PLEN as u32).contains(&plen) {
                return Err(invalid(
                    Some(t),
                    "PLEN",
                    fei::PLEN,
                    Reason::TermReqPlen { plen },
                ));
            }
        }
        PlenRule::Fixed => {
            if plen != hd {
                return Err(invalid(
                    Some(t),
                    "PLEN",
                    fei::PLEN,
                    Reason::PlenFixed { expected: hd, plen },
                ));
            }
        }
        PlenRule::WithData => {
            if plen < start {
                return Err(invalid(
                    Some(t),
                    "PLEN",
                    fei::PLEN,
                    Reason::PlenShort { plen, start },
                ));
            }
            // A data digest needs at least one data byte in front of it.
            if want_ddgst && plen - start <= DIGEST_LEN as u32 {
                return Err(invalid(
                    Some(t),
                    "PLEN",
                    fei::PLEN,
                    Reason::PlenNoDataBeforeDigest { plen },
                ));
            }
        }
    }
    if plen > params.max_plen {
        return Err(limit(Reason::PlenAboveMax {
            plen,
            max: params.max_plen,
        }));
    }

    Ok(PduLayout {
        ch: CommonHeaderRepr {
            pdu_type: t,
            flags,
            hlen,
            pdo,
            plen,
        },
    })
}

/// Validates the rest of a header whose common header passed [`validate_ch`] (steps 6–7).
///
/// `header` holds the whole PDU header from its first byte: at least
/// [`PduLayout::header_len`] bytes (HLEN plus header digest).
#[inline]
pub fn validate_psh(layout: &PduLayout, header: &[u8], params: &NegotiatedParams) -> Result<()> {
    let hlen = layout.hlen();
    let hd = layout.header_len();
    if header.len() < hd {
        return Err(WireError::Truncated {
            needed: hd,
            have: header.len(),
        });
    }

    // 6. Header digest: CRC32C over the HLEN bytes, stored right after them (§7.4.6.1).
    if layout.has_hdgst() {
        // (HLEN + 4 bytes are in: checked above.)
        let received = u32::from_le_bytes([
            header[hlen],
            header[hlen + 1],
            header[hlen + 2],
            header[hlen + 3],
        ]);
        let computed = crc32c(&header[..hlen]);
        if received != computed {
            return Err(hdgst_error(received, computed));
        }
    }

    // 7. Per-type rules that need no command state.
    let t = layout.pdu_type();
    match t {
        PduType::H2cData | PduType::C2hData => {
            let datal = u32_at(header, crate::pdu::field::data::DATAL);
            // §7.4.5.1/§7.4.5.2: DATAL is the length of the PDU's data.
            if datal as usize != layout.data_len() {
                return Err(invalid(
                    Some(t),
                    "DATAL",
                    fei::DATAL,
                    Reason::Datal {
                        datal,
                        expected: layout.data_len() as u32,
                    },
                ));
            }
            // §7.4.5.1: an H2CData PDU carries at most MAXH2CDATA bytes (FES 0x05).
            if t == PduType::H2cData && datal > params.max_h2c_data {
                return Err(limit(Reason::AboveMaxH2cData {
                    datal,
                    max: params.max_h2c_data,
                }));
            }
        }
        PduType::R2t => {
            // §7.4.5.3: an R2T asks for at least one byte (Linux hosts reject R2TL 0).
            let r2tl = u32_at(header, crate::pdu::field::r2t::R2TL);
            if r2tl == 0 {
                return Err(invalid(Some(t), "R2TL", fei::R2TL, Reason::R2tlZero));
            }
        }
        PduType::IcReq | PduType::IcResp => {
            // §7.4.2: PFV 0 is the only version.
            let ic = IcPdu::new_unchecked(header);
            let pfv = ic.pfv();
            if pfv != 0 {
                return Err(unsupported("PFV", fei::PFV, Reason::Pfv(pfv)));
            }
            // §7.4.2: HPDA/CPDA range 0..=31.
            let pda = ic.pda();
            if pda > MAX_PDA {
                return Err(invalid(
                    Some(t),
                    if t == PduType::IcReq { "HPDA" } else { "CPDA" },
                    fei::PDA,
                    Reason::PdaRange(pda),
                ));
            }
            // §7.4.2 ICResp: MAXH2CDATA is at least 4096 and a dword multiple.
            if t == PduType::IcResp {
                let m = ic.max_field();
                if m < 4096 || !m.is_multiple_of(4) {
                    return Err(invalid(
                        Some(t),
                        "MAXH2CDATA",
                        fei::MAXH2CDATA,
                        Reason::MaxH2cData(m),
                    ));
                }
            }
        }
        PduType::H2cTermReq | PduType::C2hTermReq | PduType::CapsuleCmd | PduType::CapsuleResp => {}
    }
    Ok(())
}

/// The little-endian u32 at `field` of a header whose length was checked against HLEN (0 if
/// it were not there).
#[inline(always)]
fn u32_at(header: &[u8], field: std::ops::Range<usize>) -> u32 {
    match header.get(field) {
        Some(&[a, b, c, d]) => u32::from_le_bytes([a, b, c, d]),
        _ => 0,
    }
}

#[cold]
#[inline(never)]
fn hdgst_error(received: u32, computed: u32) -> WireError {
    WireError::HeaderDigest { received, computed }
}

#[cold]
#[inline(never)]
fn unsupported(field: &'static str, offset: u32, reason: Reason) -> WireError {
    WireError::Unsupported {
        field,
        offset,
        reason,
    }
}

/// How far a header that is arriving has got (see [`validate_partial`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderProgress {
    /// The header is valid so far and this many bytes of it (from the PDU's first byte) are
    /// needed before it can be checked further: 8 for the common header, then
    /// [`PduLayout::header_len`].
    Need(usize),
    /// The whole header (through its digest) is in and valid.
    Complete(PduLayout),
}

/// Validates the bytes of a PDU header received so far, `received` holding them from the
/// PDU's first byte: nothing before the 8-byte common header is in, steps 1–5 once it is,
/// steps 6–7 once the whole header (HLEN plus header digest) is. Bytes beyond the header are
/// not looked at.
///
/// A receiver collects header bytes into a buffer of [`crate::pdu::MAX_HLEN_WITH_HDGST`] + 4
/// bytes, calls this whenever it has as many as the last [`HeaderProgress::Need`] asked for,
/// and stops at the first error (framing is lost).
#[inline]
pub fn validate_partial(received: &[u8], params: &NegotiatedParams) -> Result<HeaderProgress> {
    if received.len() < CH_LEN {
        return Ok(HeaderProgress::Need(CH_LEN));
    }
    let layout = validate_ch(received, params)?;
    let need = layout.header_len();
    if received.len() < need {
        return Ok(HeaderProgress::Need(need));
    }
    validate_psh(&layout, received, params)?;
    Ok(HeaderProgress::Complete(layout))
}

/// Validates a whole PDU header (all steps) received by `params.role`.
///
/// `header` holds the PDU from its first byte, at least through the header digest; padding and
/// data may follow and are not looked at.
#[inline]
pub fn validate_header(header: &[u8], params: &NegotiatedParams) -> Result<PduLayout> {
    let layout = validate_ch(header, params)?;
    validate_psh(&layout, header, params)?;
    Ok(layout)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Fes;
    use crate::pdu::{DataPduRepr, HeaderBuf};

    fn c2h(hdgst: bool, ddgst: bool) -> DataPduRepr {
        DataPduRepr {
            pdu_type: PduType::C2hData,
            flags: PduFlags::LAST_PDU,
            hdgst,
            ddgst,
            pda: 0,
            cccid: 3,
            ttag: 0,
            datao: 0,
            datal: 512,
        }
    }

    #[test]
    fn accepts_a_well_formed_c2h_data_header() {
        let p = NegotiatedParams {
            hdgst: true,
            ddgst: true,
            ..NegotiatedParams::new(Role::Host)
        };
        let h = HeaderBuf::new(&c2h(true, true));
        let l = validate_header(h.as_bytes(), &p).unwrap();
        assert_eq!(l.data_offset(), 28);
        assert_eq!(l.data_len(), 512);
        assert_eq!(l.plen(), 28 + 512 + 4);
    }

    #[test]
    fn parameters_follow_the_ic_exchange() {
        let req = IcReqRepr {
            pfv: 0,
            hpda: 3,
            hdgst_enable: true,
            ddgst_enable: true,
            maxr2t: 0,
        };
        let resp = IcRespRepr {
            pfv: 0,
            cpda: 1,
            hdgst_enable: true,
            ddgst_enable: false,
            maxh2cdata: 8192,
        };
        let h = NegotiatedParams::from_ic_exchange(Role::Host, &req, &resp);
        assert_eq!((h.hdgst, h.ddgst, h.rx_pda), (true, false, 3));
        let c = NegotiatedParams::from_ic_exchange(Role::Controller, &req, &resp);
        assert_eq!((c.rx_pda, c.max_h2c_data), (1, 8192));
    }

    #[test]
    fn rejects_a_c2h_type_at_the_controller() {
        let p = NegotiatedParams::new(Role::Controller);
        let h = HeaderBuf::new(&c2h(false, false));
        let e = validate_header(h.as_bytes(), &p).unwrap_err();
        assert_eq!(e.termination(), Some((Fes::InvalidHeaderField, 0)));
    }

    #[test]
    fn rejects_a_missing_header_digest_flag() {
        let p = NegotiatedParams {
            hdgst: true,
            ..NegotiatedParams::new(Role::Host)
        };
        let h = HeaderBuf::new(&c2h(false, false));
        let e = validate_header(h.as_bytes(), &p).unwrap_err();
        assert_eq!(e.termination(), Some((Fes::InvalidHeaderField, 1)));
    }

    #[test]
    fn rejects_a_corrupted_header_digest_with_the_received_digest() {
        let p = NegotiatedParams {
            hdgst: true,
            ..NegotiatedParams::new(Role::Host)
        };
        let h = HeaderBuf::new(&c2h(true, false));
        let mut b = [0u8; 28];
        b.copy_from_slice(h.as_bytes());
        b[9] ^= 1;
        let received = u32::from_le_bytes([b[24], b[25], b[26], b[27]]);
        let e = validate_header(&b, &p).unwrap_err();
        assert_eq!(e.termination(), Some((Fes::HeaderDigestError, received)));
    }
}
