//! Property tests: every PDU representation survives emit → validate → parse → emit.
//!
//! `PROPTEST_CASES` raises the case count for longer runs (default 256).

mod support;

use nvme_tcp_wire::pdu::*;
use nvme_tcp_wire::validate::{
    HeaderProgress, NegotiatedParams, Role, validate_header, validate_partial,
};
use proptest::prelude::*;

fn params(role: Role, hdgst: bool, ddgst: bool, rx_pda: u8) -> NegotiatedParams {
    NegotiatedParams {
        hdgst,
        ddgst,
        rx_pda,
        max_h2c_data: u32::MAX,
        ..NegotiatedParams::new(role)
    }
}

/// Emits, validates as the receiving role, parses, re-emits: same bytes, same fields.
fn roundtrip(repr: PduRepr, p: &NegotiatedParams) -> Result<(), TestCaseError> {
    let hdr = HeaderBuf::new(&repr);
    prop_assert!(!hdr.is_empty());
    let layout =
        validate_header(hdr.as_bytes(), p).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(layout.data_len(), repr.common().data_len());
    prop_assert_eq!(layout.plen(), repr.common().plen as usize);
    prop_assert_eq!(
        layout.data_offset() % ((p.rx_pda as usize + 1) * 4) == 0
            || layout.data_len() == 0
            || matches!(repr, PduRepr::TermReq(_)),
        true
    );
    let parsed = PduRepr::parse(hdr.as_bytes()).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let again = HeaderBuf::new(&parsed);
    prop_assert_eq!(again.as_bytes(), hdr.as_bytes());
    // Every field but the PDA (several PDAs can give the same PDO) is recovered exactly.
    let normalized = match (repr, parsed) {
        (PduRepr::Data(mut a), PduRepr::Data(b)) => {
            a.pda = b.pda;
            PduRepr::Data(a)
        }
        (PduRepr::CapsuleCmd(mut a), PduRepr::CapsuleCmd(b)) => {
            a.pda = b.pda;
            if a.data_len == 0 {
                a.ddgst = b.ddgst;
            }
            PduRepr::CapsuleCmd(a)
        }
        (a, _) => a,
    };
    prop_assert_eq!(parsed, normalized);
    Ok(())
}

proptest! {
    #[test]
    fn c2h_pdus_roundtrip(
        (h, d, pda, repr) in (any::<bool>(), any::<bool>(), 0..=MAX_PDA)
            .prop_flat_map(|(h, d, pda)| (Just(h), Just(d), Just(pda), support::c2h_pdu(h, d, pda)))
    ) {
        roundtrip(repr, &params(Role::Host, h, d, pda))?;
    }

    #[test]
    fn h2c_pdus_roundtrip(
        (h, d, pda, repr) in (any::<bool>(), any::<bool>(), 0..=MAX_PDA)
            .prop_flat_map(|(h, d, pda)| (Just(h), Just(d), Just(pda), support::h2c_pdu(h, d, pda)))
    ) {
        roundtrip(repr, &params(Role::Controller, h, d, pda))?;
    }

    #[test]
    fn common_header_roundtrips(t in 0u8..10, flags in any::<u8>(), hlen in any::<u8>(), pdo in any::<u8>(), plen in any::<u32>()) {
        prop_assume!(PduType::from_u8(t).is_some());
        let mut b = [t, flags, hlen, pdo, 0, 0, 0, 0];
        b[4..].copy_from_slice(&plen.to_le_bytes());
        let repr = CommonHeaderRepr::parse(&CommonHeader::new_checked(&b[..]).unwrap()).unwrap();
        let mut out = [0u8; 8];
        repr.emit(&mut CommonHeader::new_unchecked(&mut out[..]));
        prop_assert_eq!(out, b);
    }

    #[test]
    fn parse_never_panics_on_arbitrary_bytes(b in proptest::collection::vec(any::<u8>(), 0..160)) {
        let _ = PduRepr::parse(&b);
        let _ = validate_header(&b, &NegotiatedParams::new(Role::Host));
        let _ = validate_header(&b, &NegotiatedParams { hdgst: true, ddgst: true, rx_pda: 31, ..NegotiatedParams::new(Role::Controller) });
    }

    /// A header validated as its bytes arrive, one at a time, ends as the whole header does:
    /// the same layout, or the same error (at the first step that sees the bad field).
    #[test]
    fn incremental_validation_agrees_with_whole_header(
        mut b in proptest::collection::vec(any::<u8>(), 0..160),
        t in 0u8..10,
        hdgst in any::<bool>(),
        ddgst in any::<bool>(),
        host in any::<bool>(),
    ) {
        // Make plausible headers common: a known type and its HLEN.
        if b.len() >= 8 && let Some(pt) = PduType::from_u8(t) {
            b[0] = t;
            b[2] = pt.hlen();
        }
        let role = if host { Role::Host } else { Role::Controller };
        let p = params(role, hdgst, ddgst, 0);
        let mut have = 0;
        let incremental = loop {
            match validate_partial(&b[..have], &p) {
                Ok(HeaderProgress::Need(n)) if n <= b.len() => {
                    prop_assert!(n > have);
                    have += 1;
                }
                other => break other,
            }
        };
        match (incremental, validate_header(&b, &p)) {
            (Ok(HeaderProgress::Complete(a)), Ok(w)) => prop_assert_eq!(a, w),
            (Ok(HeaderProgress::Need(n)), Err(e)) => {
                prop_assert!(n > b.len());
                let truncated = matches!(e, nvme_tcp_wire::WireError::Truncated { .. });
                prop_assert!(truncated, "{:?}", e);
            }
            (Err(a), Err(w)) => prop_assert_eq!(a, w),
            (a, w) => prop_assert!(false, "incremental {:?}, whole {:?}", a, w),
        }
    }
}
