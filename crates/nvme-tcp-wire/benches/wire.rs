//! Wire-layer hot paths: C2HData header parse + validate, and CRC32C data digests.
//!
//! `cargo bench -p nvme-tcp-wire --bench wire`

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use nvme_tcp_wire::digest::{Crc32c, crc32c};
use nvme_tcp_wire::pdu::{DataPdu, DataPduRepr};
use nvme_tcp_wire::validate::{HeaderProgress, validate_header, validate_partial};

mod support;
use support::{c2h_header, host_params};

fn header_parse_validate(c: &mut Criterion) {
    let mut g = c.benchmark_group("c2h_data_header");
    for hdgst in [false, true] {
        let hdr = c2h_header(hdgst);
        let params = host_params(hdgst);
        let name = if hdgst {
            "parse_validate_hdgst"
        } else {
            "parse_validate"
        };
        g.bench_function(name, |b| {
            b.iter(|| {
                let bytes = black_box(hdr.as_bytes());
                let layout = validate_header(bytes, black_box(&params)).ok()?;
                let repr = DataPduRepr::parse(&DataPdu::new_unchecked(bytes)).ok()?;
                Some((layout.data_len(), repr.cccid, repr.datao))
            })
        });
    }
    // The parts, to see where the time goes.
    let hdr = c2h_header(false);
    let params = host_params(false);
    g.bench_function("validate_only", |b| {
        b.iter(|| validate_header(black_box(hdr.as_bytes()), black_box(&params)).is_ok())
    });
    g.bench_function("repr_parse_only", |b| {
        b.iter(|| DataPduRepr::parse(&DataPdu::new_unchecked(black_box(hdr.as_bytes()))).is_ok())
    });
    g.bench_function("validate_and_view", |b| {
        b.iter(|| {
            let bytes = black_box(hdr.as_bytes());
            let layout = validate_header(bytes, black_box(&params)).ok()?;
            let v = DataPdu::new_unchecked(bytes);
            Some((layout.data_len(), v.cccid(), v.datao()))
        })
    });
    // The same header as it arrives: the common header, then the whole header.
    g.bench_function("validate_partial_ch_then_header", |b| {
        b.iter(|| {
            let bytes = black_box(hdr.as_bytes());
            let p = black_box(&params);
            let n = match validate_partial(&bytes[..8], p).ok()? {
                HeaderProgress::Need(n) => n,
                HeaderProgress::Complete(_) => return None,
            };
            match validate_partial(&bytes[..n], p).ok()? {
                HeaderProgress::Complete(l) => Some(l.data_len()),
                HeaderProgress::Need(_) => None,
            }
        })
    });
    g.finish();
}

fn data_digest(c: &mut Criterion) {
    let mut g = c.benchmark_group("data_digest");
    for size in [4096usize, 128 * 1024] {
        let data: Vec<u8> = (0..size).map(|i| (i * 131 + 7) as u8).collect();
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_with_input(BenchmarkId::new("crc32c", size), &data, |b, d| {
            b.iter(|| crc32c(black_box(d)))
        });
        g.bench_with_input(
            BenchmarkId::new("crc32c_incremental_4k_pieces", size),
            &data,
            |b, d| {
                b.iter(|| {
                    let mut c = Crc32c::new();
                    for piece in black_box(d).chunks(4096) {
                        c.update(piece);
                    }
                    c.finalize()
                })
            },
        );
        // Per-TCP-segment hashing (MSS 1448), as a receive path that digests segment by
        // segment does.
        g.bench_with_input(
            BenchmarkId::new("crc32c_incremental_1448_pieces", size),
            &data,
            |b, d| {
                b.iter(|| {
                    let mut c = Crc32c::new();
                    for piece in black_box(d).chunks(1448) {
                        c.update(piece);
                    }
                    c.finalize()
                })
            },
        );
        // One-shot CRCs over the same 4 KiB slices: separates per-call cost from cache effects.
        g.bench_with_input(
            BenchmarkId::new("crc32c_oneshot_each_4k_slice", size),
            &data,
            |b, d| {
                b.iter(|| {
                    black_box(d)
                        .chunks(4096)
                        .fold(0u32, |acc, piece| acc ^ crc32c(piece))
                })
            },
        );
    }
    g.finish();
}

criterion_group!(benches, header_parse_validate, data_digest);
criterion_main!(benches);
