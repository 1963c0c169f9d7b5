//! Fuzzes the NVMe/TCP header validation core (`nvme_tcp_wire::validate`), which every reader of
//! a PDU stream frames with (host receive machine, target connection, offload engine; their
//! own fuzz targets drive them on whole streams).
//!
//! Input: 4 configuration bytes (role, digests, PDA, PLEN limit), then the bytes of a header.
//! Checks, besides "no panic, no out-of-bounds":
//! * `validate_partial` fed the header in the steps it asks for ends as `validate_header` on the whole
//!   does: the same layout or the same error, and every `Need` asks for more than it has;
//! * an accepted layout is self-consistent and the header parses;
//! * every error has its text, and a Termination Request can always be built for it.
//!
//! Run: `cd fuzz && cargo +nightly fuzz run validator -- -max_total_time=60`

#![no_main]

mod params;

use libfuzzer_sys::fuzz_target;
use nvme_tcp_wire::WireError;
use nvme_tcp_wire::pdu::{PduRepr, PduType, TERM_REQ_MAX_PLEN, TermReqRepr};
use nvme_tcp_wire::validate::{HeaderProgress, Role, validate_header, validate_partial};

fuzz_target!(|input: &[u8]| {
    let Some((cfg, stream)) = input.split_first_chunk::<4>() else {
        return;
    };
    let params = params::from_config(cfg);

    // The validator alone on the raw bytes.
    let whole = validate_header(stream, &params);
    if let Ok(l) = whole {
        assert!(l.header_len() <= l.plen());
        assert!(l.data_offset() + l.data_len() <= l.plen());
        assert!(PduRepr::parse(stream).is_ok());
    }

    // The same header as it arrives, one byte at a time.
    let mut have = 0;
    let incremental = loop {
        match validate_partial(&stream[..have], &params) {
            Ok(HeaderProgress::Need(n)) if n <= stream.len() => {
                assert!(n > have);
                have = n;
            }
            other => break other,
        }
    };
    match (incremental, whole) {
        (Ok(HeaderProgress::Complete(a)), Ok(w)) => assert_eq!(a, w),
        (Ok(HeaderProgress::Need(n)), Err(WireError::Truncated { .. })) => {
            assert!(n > stream.len())
        }
        (Err(a), Err(w)) => assert_eq!(a, w),
        (a, w) => panic!("incremental {a:?}, whole {w:?}"),
    }

    if let Err(e) = whole {
        assert!(!e.to_string().is_empty());
        let mut buf = [0u8; TERM_REQ_MAX_PLEN];
        let t = match params.role {
            Role::Host => PduType::H2cTermReq,
            Role::Controller => PduType::C2hTermReq,
        };
        let hdr = &stream[..stream.len().min(TERM_REQ_MAX_PLEN - 24)];
        if e.termination().is_some() {
            assert!(TermReqRepr::build_for_error(t, &e, hdr, &mut buf).is_some());
        }
    }
});
