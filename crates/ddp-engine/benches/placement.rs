//! Placement + CRC throughput and per-segment overhead of the software DDP device.
//!
//! * `read128k_seg64k`: 128 KiB reads (one C2HData PDU each, header and data digests on)
//!   arriving as 64 KiB segments — throughput per core (goal ≥ 20 GB/s).
//! * `read128k_seg1448`: the same stream in 1448-byte segments — time per segment (goal:
//!   ≤ 100 ns of overhead on top of the copy and the CRC).
//! * `baseline_*`: the work the device cannot avoid on the same bytes, measured in the same
//!   run — copy payload → buffer plus CRC32C — so the ratios are meaningful.
//!
//! Run: `cargo bench -p ddp-engine --bench placement`

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ddp_engine::{EngineConfig, RxSocket, SegmentVerdict, SoftDdpDevice};
use nvme_tcp_wire::digest::{Crc32c, crc32c};
use nvme_tcp_wire::pdu::{DataPduRepr, HeaderBuf, PduFlags, PduType};
use std::hint::black_box;
use ulp_ddp::{
    DdpIo, IoBuf, NvmeTcpDdpConfig, NvmeTcpDigests, SkConfig, SockId, UlpDdpDevice, UlpDdpSocket,
};

const IO: usize = 128 * 1024;
const READS: u16 = 16;

fn stream() -> Vec<u8> {
    let data: Vec<u8> = (0..IO as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let mut s = Vec::new();
    for cid in 0..READS {
        let repr = DataPduRepr {
            pdu_type: PduType::C2hData,
            flags: PduFlags::LAST_PDU | PduFlags::SUCCESS,
            hdgst: true,
            ddgst: true,
            pda: 0,
            cccid: cid,
            ttag: 0,
            datao: 0,
            datal: IO as u32,
        };
        s.extend_from_slice(HeaderBuf::new(&repr).as_bytes());
        s.extend_from_slice(&data);
        s.extend_from_slice(&crc32c(&data).to_le_bytes());
    }
    s
}

/// The device, the ULP's handle of the socket (kept alive: dropping it deletes the
/// offload) and the receive path's handle.
fn device() -> (SoftDdpDevice, Box<dyn UlpDdpSocket>, RxSocket) {
    let sk = SockId(1);
    let dev = SoftDdpDevice::new(EngineConfig::connectx7_like());
    let mut sock = dev
        .sk_add(
            sk,
            &SkConfig::nvme(
                0,
                Some(0),
                NvmeTcpDdpConfig {
                    dgst: NvmeTcpDigests::from_bits(3),
                    ..NvmeTcpDdpConfig::default()
                },
            ),
        )
        .expect("sk_add");
    for cid in 0..READS {
        // 4 KiB pages, as a block layer SG list.
        sock.setup(DdpIo::new(u32::from(cid), IoBuf::zeroed_chunks(IO, 4096)))
            .expect("setup");
    }
    let rx = dev.rx_socket(sk).expect("rx_socket");
    (dev, sock, rx)
}

fn bench_segments(c: &mut Criterion, name: &str, mss: usize) {
    let s = stream();
    let (dev, _sock, rx) = device();
    let segs: Vec<(u32, std::ops::Range<usize>)> = (0..s.len())
        .step_by(mss)
        .map(|p| (p as u32, p..(p + mss).min(s.len())))
        .collect();
    let mut g = c.benchmark_group(name);
    g.throughput(Throughput::Bytes(s.len() as u64));
    let mut base = 0u32;
    let mut v = SegmentVerdict::NONE;
    g.bench_function("engine", |b| {
        b.iter(|| {
            let mut placed = 0u64;
            for (off, r) in &segs {
                rx.on_segment_into(base.wrapping_add(*off), black_box(&s[r.clone()]), &mut v);
                placed += v.placed_bytes();
            }
            base = base.wrapping_add(s.len() as u32);
            black_box(placed)
        })
    });
    let d = dev.diagnostics();
    assert_eq!(d.lost_sync, 0);
    assert_eq!(d.ddgst_bad, 0);
    // Baseline: copy each segment's payload part into 4 KiB pages and CRC it.
    let mut pages: Vec<Box<[u8]>> = (0..IO / 4096)
        .map(|_| vec![0u8; 4096].into_boxed_slice())
        .collect();
    g.bench_function("baseline_copy_crc", |b| {
        b.iter(|| {
            let mut crc = Crc32c::new();
            let mut page = 0usize;
            let mut in_page = 0usize;
            for (_, r) in &segs {
                let mut chunk = &s[r.clone()];
                crc.update(chunk);
                while !chunk.is_empty() {
                    let p = &mut pages[page % (IO / 4096)];
                    let n = chunk.len().min(4096 - in_page);
                    p[in_page..in_page + n].copy_from_slice(&chunk[..n]);
                    chunk = &chunk[n..];
                    in_page += n;
                    if in_page == 4096 {
                        in_page = 0;
                        page += 1;
                    }
                }
            }
            black_box(crc.finalize())
        })
    });
    g.finish();
    let mut g = c.benchmark_group(format!("{name}_per_segment"));
    g.throughput(Throughput::Elements(segs.len() as u64));
    g.bench_function("engine", |b| {
        b.iter(|| {
            for (off, r) in &segs {
                rx.on_segment_into(base.wrapping_add(*off), black_box(&s[r.clone()]), &mut v);
                black_box(&v);
            }
            base = base.wrapping_add(s.len() as u32);
        })
    });
    g.finish();
}

fn crc_and_copy(c: &mut Criterion) {
    let s = stream();
    let mut g = c.benchmark_group("parts_1448");
    g.throughput(Throughput::Elements(1));
    let mut crc = Crc32c::new();
    let mut k = 0usize;
    g.bench_function("crc32c_update", |b| {
        b.iter(|| {
            k = (k + 1448) % (s.len() - 1448);
            crc.update(black_box(&s[k..k + 1448]));
        })
    });
    let mut dst = vec![0u8; 4096];
    g.bench_function("memcpy", |b| {
        b.iter(|| {
            k = (k + 1448) % (s.len() - 1448);
            dst[..1448].copy_from_slice(black_box(&s[k..k + 1448]));
            black_box(&dst);
        })
    });
    black_box(crc.finalize());
    g.finish();
}

fn placement(c: &mut Criterion) {
    crc_and_copy(c);
    bench_segments(c, "read128k_seg64k", 64 * 1024);
    bench_segments(c, "read128k_seg1448", 1448);
    // A duplicate (retransmitted) segment: passed through untouched.
    let s = stream();
    let (_dev, _sock, rx) = device();
    rx.on_segment(0, &s[..1448]);
    let mut g = c.benchmark_group("duplicate_segment_1448");
    g.throughput(Throughput::Elements(1));
    g.bench_function("engine", |b| {
        b.iter(|| black_box(rx.on_segment(0, black_box(&s[..1448]))))
    });
    g.finish();
}

criterion_group!(benches, placement);
criterion_main!(benches);
