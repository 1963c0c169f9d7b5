//! Fuzzes the software DDP device with arbitrary operation schedules: segments cut from a
//! stream of (mostly) well-formed C2H PDUs or made of raw bytes, at any sequence number;
//! setups and teardowns of arbitrary command IDs; PDU headers reported by the ULP at real
//! header positions or anywhere (right, wrong and late resync confirmations), with the
//! device taking answers in at once or some PDUs later; ULP copies and reads; teardowns
//! completing at once, after some PDUs or at a flush.
//!
//! Checks, besides "no panic": a placed range never exceeds its segment, the counters equal
//! the verdicts, buffers come back with the length they were registered with, each
//! teardown completes exactly once, a command ID is set up again only once its
//! `TeardownDone` was taken (before, setup is refused with `CidBusy` and hands the I/O
//! back), and setup == teardown once everything is torn down.
//!
//! Run: `cd fuzz && cargo +nightly fuzz run engine -- -max_total_time=120`

#![no_main]

use arbitrary::Arbitrary;
use ddp_engine::{EngineConfig, SoftDdpDevice, TeardownMode};
use libfuzzer_sys::fuzz_target;
use nvme_tcp_wire::digest::crc32c;
use nvme_tcp_wire::pdu::{DataPduRepr, HeaderBuf, PduFlags, PduType};
use std::collections::HashMap;
use ulp_ddp::{
    DdpCtx, DdpError, DdpEvent, DdpIo, IoBuf, NvmeTcpDdpConfig, NvmeTcpDigests, ResyncAction,
    SkConfig, SockId, UlpDdpDevice, UlpDdpSocket,
};

#[derive(Arbitrary, Debug)]
struct Input {
    hdgst: bool,
    ddgst: bool,
    cpda: u8,
    full_ccid_range: bool,
    /// 0: immediate, 1: deferred, n: after n - 1 PDUs.
    teardown: u8,
    /// PDU headers the device passes before a confirmation takes effect.
    answer_delay: u8,
    in_sync: bool,
    isn: u32,
    ops: Vec<Op>,
}

#[derive(Arbitrary, Debug)]
enum Op {
    /// Append a C2HData PDU (valid unless `corrupt`) to the stream.
    Pdu {
        cid: u8,
        datao: u16,
        datal: u16,
        last: bool,
        corrupt: Option<(u16, u8)>,
    },
    /// Append raw bytes to the stream.
    Raw(Vec<u8>),
    /// Send stream bytes `start .. start + len` (modulo the stream).
    Send {
        start: u16,
        len: u16,
    },
    /// Send raw bytes at any sequence number.
    SendRaw {
        seq: u32,
        bytes: Vec<u8>,
    },
    Setup {
        cid: u8,
        len: u16,
        nents: u8,
    },
    Teardown {
        cid: u8,
    },
    /// The ULP parses the header of PDU `header` of the stream (confirming a pending
    /// request if it starts there).
    HostConfirm {
        header: u16,
    },
    /// The ULP reports a header at any sequence number.
    PduHeader(u32),
    CopyToIo {
        cid: u8,
        offset: u16,
        len: u16,
    },
    ReadIo {
        cid: u8,
        offset: u16,
        len: u16,
    },
    /// Take the finished teardowns.
    Poll,
    /// The device finishes its delayed work.
    Flush,
}

/// Where a command ID stands: registered with this length, or torn down with this context
/// and length and its `TeardownDone` not taken.
#[derive(Debug, Clone, Copy)]
enum Cid {
    Live(u64),
    Tearing(u64),
}

fuzz_target!(|input: Input| {
    let sk = SockId(1);
    let dev = SoftDdpDevice::new(EngineConfig {
        io_threshold: 0,
        max_ddp_sgl_len: 8,
        full_ccid_range: input.full_ccid_range,
        teardown: match input.teardown {
            0 => TeardownMode::Immediate,
            1 => TeardownMode::Deferred,
            n => TeardownMode::AfterPdus(u32::from(n % 16)),
        },
        resync_answer_delay_pdus: u32::from(input.answer_delay % 16),
        ..EngineConfig::connectx7_like()
    });
    let cfg = SkConfig::nvme(
        0,
        input.in_sync.then_some(input.isn),
        NvmeTcpDdpConfig {
            cpda: input.cpda % 32,
            dgst: NvmeTcpDigests {
                header: input.hdgst,
                data: input.ddgst,
            },
            queue_size: 64,
            ..NvmeTcpDdpConfig::default()
        },
    );
    let Ok(mut sock) = dev.sk_add(sk, &cfg) else {
        return;
    };
    let Some(rx) = dev.rx_socket(sk) else {
        panic!("no receive handle after sk_add");
    };
    let mut stream: Vec<u8> = Vec::new();
    let mut headers: Vec<usize> = Vec::new();
    let mut cids: HashMap<u16, Cid> = HashMap::new();
    let mut next_ctx = 0u64;
    let (mut packets, mut bytes) = (0u64, 0u64);
    for op in input.ops.into_iter().take(256) {
        match op {
            Op::Pdu {
                cid,
                datao,
                datal,
                last,
                corrupt,
            } => {
                if stream.len() > 1 << 20 {
                    continue;
                }
                let data: Vec<u8> = (0..datal.max(1)).map(|i| (i as u8) ^ cid).collect();
                let repr = DataPduRepr {
                    pdu_type: PduType::C2hData,
                    flags: if last {
                        PduFlags::LAST_PDU
                    } else {
                        PduFlags::NONE
                    },
                    hdgst: input.hdgst,
                    ddgst: input.ddgst,
                    pda: input.cpda % 32,
                    cccid: u16::from(cid),
                    ttag: 0,
                    datao: u32::from(datao),
                    datal: data.len() as u32,
                };
                let at = stream.len();
                headers.push(at);
                stream.extend_from_slice(HeaderBuf::new(&repr).as_bytes());
                stream.extend_from_slice(&data);
                if input.ddgst {
                    stream.extend_from_slice(&crc32c(&data).to_le_bytes());
                }
                if let Some((off, x)) = corrupt {
                    let n = stream.len() - at;
                    stream[at + usize::from(off) % n] ^= x;
                }
            }
            Op::Raw(b) => {
                if stream.len() < 1 << 20 {
                    stream.extend(b.into_iter().take(4096));
                }
            }
            Op::Send { start, len } => {
                if stream.is_empty() {
                    continue;
                }
                let s = usize::from(start) % stream.len();
                let e = (s + usize::from(len)).min(stream.len());
                let seq = input.isn.wrapping_add(s as u32);
                let v = rx.on_segment(seq, &stream[s..e]);
                check(&v, seq, e - s, &mut packets, &mut bytes);
            }
            Op::SendRaw { seq, bytes: b } => {
                let v = rx.on_segment(seq, &b);
                check(&v, seq, b.len(), &mut packets, &mut bytes);
            }
            Op::Setup { cid, len, nents } => {
                let cid = u16::from(cid);
                let len = usize::from(len);
                let n = usize::from(nents % 10).max(1);
                let io = DdpIo::new(
                    u32::from(cid),
                    IoBuf::zeroed_chunks(len, len.div_ceil(n).max(1)),
                );
                match sock.setup(io) {
                    Ok(()) => {
                        assert!(
                            cids.insert(cid, Cid::Live(len as u64)).is_none(),
                            "cid {cid} set up again before its TeardownDone was taken"
                        );
                    }
                    Err(e) => {
                        assert_eq!(e.io.buf.len(), len, "setup failure changed the I/O");
                        assert_eq!(e.io.command_id, u32::from(cid));
                        // Busy unless a limit refuses it first.
                        let within = len > 0 && (input.full_ccid_range || cid < 64);
                        if cids.contains_key(&cid) && within && n <= 8 {
                            assert_eq!(e.error, DdpError::CidBusy(u32::from(cid)));
                        } else if !cids.contains_key(&cid) {
                            assert_ne!(e.error, DdpError::CidBusy(u32::from(cid)));
                        }
                    }
                }
            }
            Op::Teardown { cid } => {
                let cid = u16::from(cid);
                let ok = sock.teardown(u32::from(cid), DdpCtx(next_ctx)).is_ok();
                match cids.get(&cid).copied() {
                    Some(Cid::Live(len)) => {
                        assert!(ok, "teardown of a live cid failed");
                        cids.insert(cid, Cid::Tearing((next_ctx << 32) | len));
                    }
                    _ => assert!(!ok, "teardown of a cid without buffers succeeded"),
                }
                next_ctx += 1;
            }
            Op::HostConfirm { header } => {
                if headers.is_empty() {
                    continue;
                }
                let h = headers[usize::from(header) % headers.len()];
                let seq = input.isn.wrapping_add(h as u32);
                confirm_check(seq, sock.pdu_header(seq));
            }
            Op::PduHeader(seq) => confirm_check(seq, sock.pdu_header(seq)),
            Op::CopyToIo { cid, offset, len } => {
                let cid = u16::from(cid);
                let r = sock.copy_to_io(
                    u32::from(cid),
                    u64::from(offset),
                    &vec![0xEE; usize::from(len)],
                );
                match cids.get(&cid) {
                    Some(Cid::Live(l)) => {
                        assert_eq!(r.is_ok(), u64::from(offset) + u64::from(len) <= *l)
                    }
                    _ => assert!(r.is_err()),
                }
            }
            Op::ReadIo { cid, offset, len } => {
                let cid = u16::from(cid);
                let mut n = 0usize;
                let r = sock.read_io(
                    u32::from(cid),
                    u64::from(offset),
                    usize::from(len),
                    &mut |c| n += c.len(),
                );
                match cids.get(&cid) {
                    Some(Cid::Live(l)) if u64::from(offset) + u64::from(len) <= *l => {
                        assert!(r.is_ok());
                        assert_eq!(n, usize::from(len));
                    }
                    _ => assert!(r.is_err() && n == 0),
                }
            }
            Op::Poll => collect(sock.as_mut(), &mut cids),
            Op::Flush => {
                dev.flush_deferred();
            }
        }
    }
    let live: Vec<u16> = cids
        .iter()
        .filter(|(_, s)| matches!(s, Cid::Live(_)))
        .map(|(c, _)| *c)
        .collect();
    for cid in live {
        if let Some(Cid::Live(len)) = cids.get(&cid).copied() {
            sock.teardown(u32::from(cid), DdpCtx(next_ctx))
                .expect("teardown of a live cid");
            cids.insert(cid, Cid::Tearing((next_ctx << 32) | len));
            next_ctx += 1;
        }
    }
    dev.flush_deferred();
    collect(sock.as_mut(), &mut cids);
    assert!(cids.is_empty(), "teardowns never completed: {cids:?}");
    let st = dev.get_stats();
    assert_eq!(st.rx_nvme_tcp_setup, st.rx_nvme_tcp_teardown);
    assert_eq!(
        (st.rx_nvme_tcp_packets, st.rx_nvme_tcp_bytes),
        (packets, bytes)
    );
    assert!(sock.sk_del().is_empty());
});

fn check(v: &ddp_engine::SegmentVerdict, seq: u32, len: usize, packets: &mut u64, bytes: &mut u64) {
    for r in v.placed() {
        let off = r.seq.wrapping_sub(seq) as usize;
        assert!(
            r.len > 0 && off + r.len as usize <= len,
            "placed range outside its segment"
        );
    }
    if v.ddp() {
        *packets += 1;
    }
    *bytes += v.placed_bytes();
    assert!(!(v.crc && v.digests_failed > 0));
}

fn confirm_check(seq: u32, action: ResyncAction) {
    match action {
        ResyncAction::None => {}
        ResyncAction::Confirmed(s) => assert_eq!(s, seq),
        ResyncAction::Mismatch { requested, pdu_seq } => {
            assert_eq!(pdu_seq, seq);
            assert!((seq.wrapping_sub(requested) as i32) > 0);
        }
    }
}

/// Takes every finished teardown: each completes once, with its buffer at full length;
/// its command ID is free again.
fn collect(sock: &mut dyn UlpDdpSocket, cids: &mut HashMap<u16, Cid>) {
    while let Some(DdpEvent::TeardownDone { ctx, io }) = sock.poll_event() {
        let Ok(cid) = u16::try_from(io.command_id) else {
            panic!("teardown_done of command ID {}", io.command_id);
        };
        match cids.remove(&cid) {
            Some(Cid::Tearing(t)) => {
                assert_eq!(ctx.0, t >> 32, "teardown_done with another context");
                assert_eq!(
                    io.buf.len() as u64,
                    t & 0xFFFF_FFFF,
                    "buffer length changed"
                );
            }
            other => panic!("teardown_done for cid {cid} in state {other:?}"),
        }
    }
}
