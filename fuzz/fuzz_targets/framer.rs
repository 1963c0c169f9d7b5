//! Fuzzes the streaming framer (`nvme_tcp_wire::framer`, the trace replay's reader), built on the
//! validation core that `validator` fuzzes on its own.
//!
//! Input: 4 configuration bytes (role, digests, PDA, PLEN limit, chunk pattern), then the byte
//! stream. Checks, besides "no panic, no out-of-bounds":
//! * the framer reports the same events and the same error whether the stream arrives whole or
//!   in chunks;
//! * data ranges lie inside the chunk, data offsets are contiguous and add up to the header's
//!   data length; the header bytes the framer kept validate on their own;
//! * a Termination Request can always be built from the failed framer's header bytes.
//!
//! Run: `cd fuzz && cargo +nightly fuzz run framer -- -max_total_time=60`

#![no_main]

mod params;

use libfuzzer_sys::fuzz_target;
use nvme_tcp_wire::framer::{Framer, FramerEvent};
use nvme_tcp_wire::pdu::{PduRepr, TERM_REQ_MAX_PLEN, TermReqRepr};
use nvme_tcp_wire::validate::{NegotiatedParams, validate_header};

#[derive(Debug, PartialEq, Eq)]
enum Rec {
    Header(PduRepr),
    Data(usize, Vec<u8>),
    Digest(u32, Option<u32>),
    End,
    Error(nvme_tcp_wire::WireError),
}

fn run(params: NegotiatedParams, stream: &[u8], chunk_sizes: &[usize]) -> Vec<Rec> {
    let mut f = Framer::new(params);
    f.set_compute_data_digest(true);
    let mut out: Vec<Rec> = Vec::new();
    let mut pos = 0;
    let mut k = 0;
    let mut data_seen = 0usize;
    let mut data_len = 0usize;
    while pos < stream.len() {
        let n = chunk_sizes[k % chunk_sizes.len()].min(stream.len() - pos);
        k += 1;
        let chunk = &stream[pos..pos + n];
        pos += n;
        // Drive `advance` by hand (rather than `events`) to look at the framer between events.
        let mut at = 0;
        loop {
            let ev = f.advance(&chunk[at..]).map(|(used, ev)| {
                let base = at;
                at += used;
                ev.map(|ev| match ev {
                    FramerEvent::Data { range, offset } => FramerEvent::Data {
                        range: range.start + base..range.end + base,
                        offset,
                    },
                    other => other,
                })
            });
            let ev = match ev {
                Ok(None) => break,
                Ok(Some(ev)) => Ok(ev),
                Err(e) => Err(e),
            };
            match ev {
                Err(e) => {
                    // The offending header always fits a Termination Request.
                    let mut buf = [0u8; TERM_REQ_MAX_PLEN];
                    let _ = TermReqRepr::build_for_error(
                        params.role.term_req_type(),
                        &e,
                        f.header_bytes(),
                        &mut buf,
                    );
                    assert!(f.is_failed());
                    out.push(Rec::Error(e));
                    return out;
                }
                Ok(FramerEvent::Header(h)) => {
                    // The kept header validates on its own, with the same layout.
                    let l = validate_header(f.header_bytes(), &params).expect("kept header");
                    assert_eq!(l, h.layout);
                    assert!(l.data_offset() + l.data_len() <= l.plen());
                    assert!(l.plen() as u64 <= params.max_plen as u64);
                    data_seen = 0;
                    data_len = l.data_len();
                    out.push(Rec::Header(h.repr));
                }
                Ok(FramerEvent::Data { range, offset }) => {
                    assert!(range.start < range.end && range.end <= chunk.len());
                    assert_eq!(offset, data_seen);
                    data_seen += range.len();
                    assert!(data_seen <= data_len);
                    // Merge, so chunking does not show in the records.
                    match out.last_mut() {
                        Some(Rec::Data(_, d)) => d.extend_from_slice(&chunk[range]),
                        _ => out.push(Rec::Data(offset, chunk[range].to_vec())),
                    }
                }
                Ok(FramerEvent::DataDigest { received, computed }) => {
                    assert_eq!(data_seen, data_len);
                    out.push(Rec::Digest(received, computed));
                }
                Ok(FramerEvent::End) => {
                    assert_eq!(data_seen, data_len);
                    out.push(Rec::End);
                }
            }
        }
    }
    out
}

fuzz_target!(|input: &[u8]| {
    let Some((cfg, stream)) = input.split_first_chunk::<4>() else {
        return;
    };
    let params = params::from_config(cfg);

    // The framer: whole stream versus a chunk pattern from the config.
    let whole = run(params, stream, &[usize::MAX]);
    let pattern = [
        1 + (cfg[3] & 0x0F) as usize,
        1 + (cfg[3] >> 4) as usize,
        1,
        3 + cfg[1] as usize,
    ];
    let chunked = run(params, stream, &pattern);
    assert_eq!(whole, chunked);
    let bytewise = run(params, stream, &[1]);
    assert_eq!(whole, bytewise);
});
