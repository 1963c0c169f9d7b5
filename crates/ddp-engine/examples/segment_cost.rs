//! Feeds a stream of 128 KiB reads (C2HData, header and data digests) through the device in
//! segments of a given size, or through the copy + CRC baseline, for instruction counting:
//!
//! ```text
//! cargo build --release -p ddp-engine --example segment_cost
//! valgrind --tool=callgrind target/release/examples/segment_cost engine 1448 4
//! valgrind --tool=callgrind target/release/examples/segment_cost baseline 1448 4
//! ```
//! (subtract a run with 0 rounds for the setup cost, divide by segments), or for wall-clock
//! time with engine and baseline rounds interleaved under the same load:
//!
//! ```text
//! target/release/examples/segment_cost both 1448 200
//! ```

use ddp_engine::{EngineConfig, SegmentVerdict, SoftDdpDevice};
use nvme_tcp_wire::digest::{Crc32c, crc32c};
use nvme_tcp_wire::pdu::{DataPduRepr, HeaderBuf, PduFlags, PduType};
use std::hint::black_box;
use ulp_ddp::{DdpIo, IoBuf, NvmeTcpDdpConfig, NvmeTcpDigests, SkConfig, SockId, UlpDdpDevice};

const IO: usize = 128 * 1024;
const READS: u16 = 16;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mode = args.get(1).map(String::as_str).unwrap_or("engine");
    let mss: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(1448);
    let rounds: u32 = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(4);
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
    let sk = SockId(1);
    let dev = SoftDdpDevice::new(EngineConfig::connectx7_like());
    let cfg = SkConfig::nvme(
        0,
        Some(0),
        NvmeTcpDdpConfig {
            dgst: NvmeTcpDigests::from_bits(3),
            ..NvmeTcpDdpConfig::default()
        },
    );
    // The ULP's handle: kept to the end (dropping it deletes the offload).
    let Ok(mut sock) = dev.sk_add(sk, &cfg) else {
        eprintln!("sk_add failed");
        return;
    };
    for cid in 0..READS {
        if let Err(e) = sock.setup(DdpIo::new(u32::from(cid), IoBuf::zeroed_chunks(IO, 4096))) {
            eprintln!("setup: {e}");
            return;
        }
    }
    let Some(rx) = dev.rx_socket(sk) else {
        return;
    };
    let mut pages: Vec<Box<[u8]>> = (0..usize::from(READS) * IO / 4096)
        .map(|_| vec![0u8; 4096].into_boxed_slice())
        .collect();
    let mut v = SegmentVerdict::NONE;
    let mut segments = 0u64;
    let mut base = 0u32;
    // "both": alternate engine and baseline rounds and report the best round of each, so
    // both see the same machine load.
    let modes: Vec<&str> = if mode == "both" {
        vec!["engine", "baseline"]
    } else {
        vec![mode]
    };
    let mut best = vec![u128::MAX; modes.len()];
    for _ in 0..rounds {
        for (mi, m) in modes.iter().enumerate() {
            let t0 = std::time::Instant::now();
            let mut pos = 0;
            let mut crc = Crc32c::new();
            let (mut page, mut in_page) = (0usize, 0usize);
            while pos < s.len() {
                let end = (pos + mss).min(s.len());
                segments += 1;
                if *m == "engine" {
                    rx.on_segment_into(base.wrapping_add(pos as u32), &s[pos..end], &mut v);
                    black_box(&v);
                } else {
                    let mut chunk = &s[pos..end];
                    crc.update(chunk);
                    while !chunk.is_empty() {
                        let n = chunk.len().min(4096 - in_page);
                        let np = pages.len();
                        pages[page % np][in_page..in_page + n].copy_from_slice(&chunk[..n]);
                        chunk = &chunk[n..];
                        in_page += n;
                        if in_page == 4096 {
                            in_page = 0;
                            page += 1;
                        }
                    }
                }
                pos = end;
            }
            black_box(crc.finalize());
            if *m == "engine" {
                base = base.wrapping_add(s.len() as u32);
            }
            best[mi] = best[mi].min(t0.elapsed().as_nanos());
        }
    }
    if rounds > 0 {
        let per_round = s.len().div_ceil(mss) as u128;
        for (mi, m) in modes.iter().enumerate() {
            println!(
                "{m}: best round {} us, {} ns/segment, {:.2} GB/s",
                best[mi] / 1000,
                best[mi] / per_round,
                s.len() as f64 / best[mi] as f64
            );
        }
    }
    black_box(&pages);
    println!(
        "{mode}: {segments} segments of {mss} bytes, placed {} bytes",
        dev.get_stats().rx_nvme_tcp_bytes
    );
}
