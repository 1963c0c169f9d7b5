#![no_main]
//! The host receive path fed arbitrary PDU streams.
//!
//! The input is decoded (`arbitrary`) into connection settings, a chunking pattern and a list
//! of PDUs: well-framed C2HData / CapsuleResp / R2T / C2HTermReq with arbitrary field values
//! (CCCIDs mostly of commands in flight, so the deep checks are reached), possibly corrupted
//! digests, and raw byte runs. The queue has reads (buffers pre-filled with 0xEE, one of them a
//! scatter-gather list), an R2T write and a no-data command in flight. The stream is fed
//! alternating between the copy path (`rx_feed_marked`, with arbitrary offload marks: crc
//! bits and placed ranges a device may claim, truthfully or not) and the direct socket path
//! (`rx_direct`/`rx_direct_done`). Optionally the queue is offloaded to the software device,
//! so reads lend their buffers to it and the mark-consuming paths (copy through the device,
//! digest over a lent buffer, teardown before completion) run.
//!
//! Checked: no panic; a write buffer never changes; a read buffer that did not complete
//! successfully only changed inside the range the receive path accepted as its data.

use std::time::Instant;

use arbitrary::{Arbitrary, Unstructured};
use nvme_tcp_host::queue::{DataDir, QueueConfig, QueueCore, Request};
use nvme_tcp_host::{CidMode, DdpNetdev, IoBuf, PlacedRange, RxMarks};
use nvme_tcp_wire::digest::crc32c;
use nvme_tcp_wire::pdu::{
    CapsuleRespRepr, DataPduRepr, HeaderBuf, IcRespRepr, PduFlags, PduType, R2tRepr,
};

const FILL: u8 = 0xEE;

#[derive(Arbitrary, Debug)]
enum Op {
    C2hData {
        cid_pick: u8,
        datao: u16,
        datal: u16,
        flags: u8,
        bad_ddgst: bool,
    },
    Resp {
        cid_pick: u8,
        status: u16,
    },
    R2t {
        cid_pick: u8,
        r2to: u16,
        r2tl: u16,
    },
    TermReq {
        fes: u16,
        extra: u8,
    },
    Raw(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
struct Input {
    hdgst: bool,
    ddgst: bool,
    linear: bool,
    zero_copy_tx: bool,
    /// Offload the queue to the software device (large reads lend their buffers to it).
    offload: bool,
    chunks: Vec<u8>,
    /// Marks fed with each chunk: crc bit, and a placed range (offset in the chunk, length)
    /// claimed by a (possibly lying) device.
    marks: Vec<(bool, u16, u16)>,
    ops: Vec<Op>,
}

fn stream(inp: &Input, cids: &[u16]) -> Vec<u8> {
    let cid = |p: u8| -> u16 {
        if (p as usize) < cids.len() * 4 && !cids.is_empty() {
            cids[p as usize % cids.len()]
        } else {
            p as u16 * 257
        }
    };
    let mut s = Vec::new();
    for op in inp.ops.iter().take(64) {
        match op {
            Op::C2hData {
                cid_pick,
                datao,
                datal,
                flags,
                bad_ddgst,
            } => {
                let datal = (*datal as usize % 5000) as u32;
                let repr = DataPduRepr {
                    pdu_type: PduType::C2hData,
                    flags: PduFlags(flags & 0x0C),
                    hdgst: inp.hdgst,
                    ddgst: inp.ddgst,
                    pda: 0,
                    cccid: cid(*cid_pick),
                    ttag: 0,
                    datao: *datao as u32,
                    datal,
                };
                s.extend_from_slice(HeaderBuf::new(&repr).as_bytes());
                let data: Vec<u8> = (0..datal).map(|i| i as u8).collect();
                s.extend_from_slice(&data);
                if inp.ddgst && datal > 0 {
                    let d = crc32c(&data) ^ u32::from(*bad_ddgst);
                    s.extend_from_slice(&d.to_le_bytes());
                }
            }
            Op::Resp { cid_pick, status } => {
                let mut cqe = [0u8; 16];
                cqe[12..14].copy_from_slice(&cid(*cid_pick).to_le_bytes());
                cqe[14..16].copy_from_slice(&status.to_le_bytes());
                let r = CapsuleRespRepr {
                    hdgst: inp.hdgst,
                    cqe,
                };
                s.extend_from_slice(HeaderBuf::new(&r).as_bytes());
            }
            Op::R2t {
                cid_pick,
                r2to,
                r2tl,
            } => {
                let r = R2tRepr {
                    hdgst: inp.hdgst,
                    cccid: cid(*cid_pick),
                    ttag: 1,
                    r2to: *r2to as u32,
                    r2tl: *r2tl as u32,
                };
                s.extend_from_slice(HeaderBuf::new(&r).as_bytes());
            }
            Op::TermReq { fes, extra } => {
                let n = (*extra % 129) as u32;
                let plen = 24 + n;
                let pdo = if n > 0 { 24 } else { 0 };
                s.extend_from_slice(&[0x03, 0, 24, pdo]);
                s.extend_from_slice(&plen.to_le_bytes());
                s.extend_from_slice(&fes.to_le_bytes());
                s.extend_from_slice(&[0; 14]);
                s.extend(std::iter::repeat_n(0u8, n as usize));
            }
            Op::Raw(b) => s.extend(b.iter().take(64)),
        }
    }
    s
}

/// "Sends" everything queued for transmission.
fn drain(q: &mut QueueCore) {
    loop {
        let n = q.tx_pending().len();
        if n == 0 {
            break;
        }
        q.tx_consumed(n);
    }
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(inp) = Input::arbitrary(&mut Unstructured::new(data)) else {
        return;
    };
    let mut q = QueueCore::new(QueueConfig {
        qid: 1,
        queue_size: 8,
        hdgst: inp.hdgst,
        ddgst: inp.ddgst,
        cid_mode: if inp.linear || inp.offload {
            CidMode::Linear
        } else {
            CidMode::Tagged
        },
        in_capsule_max: 64,
    });
    q.set_zero_copy_tx(inp.zero_copy_tx);
    drain(&mut q);
    let icresp = HeaderBuf::new(&IcRespRepr {
        pfv: 0,
        cpda: 0,
        hdgst_enable: inp.hdgst,
        ddgst_enable: inp.ddgst,
        maxh2cdata: 4096,
    });
    if q.rx_feed(icresp.as_bytes()).is_err() {
        return;
    }
    q.set_live();
    let dev = ddp_engine::SoftDdpDevice::new(ddp_engine::EngineConfig {
        io_threshold: 0,
        ..Default::default()
    });
    if inp.offload {
        let shared: std::sync::Arc<dyn ulp_ddp::UlpDdpDevice> = std::sync::Arc::new(dev.clone());
        if let Some(n) = DdpNetdev::probe(&shared, false) {
            let _ = q.attach_offload(&n, ulp_ddp::SockId(1), Some(0), 0);
        }
    }
    let now = Instant::now();
    let mut reads = Vec::new();
    let mut cids = Vec::new();
    for (i, len) in [512usize, 4096, 33].into_iter().enumerate() {
        let mut sqe = [0u8; 64];
        sqe[0] = 0x02;
        let buf = if i == 1 {
            IoBuf::Sgl(vec![vec![FILL; 1000], vec![], vec![FILL; 3096]])
        } else {
            IoBuf::Contig(vec![FILL; len])
        };
        let req = Request {
            sqe,
            dir: DataDir::ToHost,
            buf: Some(buf),
            user_data: i as u64,
        };
        if let Ok(cid) = q.submit(req, now) {
            reads.push((i as u64, cid));
            cids.push(cid);
        }
    }
    let mut sqe = [0u8; 64];
    sqe[0] = 0x01;
    let write = Request {
        sqe,
        dir: DataDir::ToController,
        buf: Some(IoBuf::Contig(vec![0x55; 9000])),
        user_data: 100,
    };
    if let Ok(cid) = q.submit(write, now) {
        cids.push(cid);
    }
    let noop = Request {
        sqe: [0; 64],
        dir: DataDir::None,
        buf: None,
        user_data: 101,
    };
    if let Ok(cid) = q.submit(noop, now) {
        cids.push(cid);
    }
    drain(&mut q);

    let bytes = stream(&inp, &cids);
    let mut received = [0usize; 3];
    let mut input = &bytes[..];
    let mut i = 0usize;
    while !input.is_empty() {
        for &(u, cid) in &reads {
            if let Some(r) = q.bytes_received(cid) {
                received[u as usize] = received[u as usize].max(r);
            }
        }
        let chunk = 1 + inp
            .chunks
            .get(i % inp.chunks.len().max(1))
            .copied()
            .unwrap_or(255) as usize
            * 8;
        let n = chunk.min(input.len());
        let r = if i % 2 == 1
            && let Some(dst) = q.rx_direct()
        {
            let m = dst.len().min(n);
            dst[..m].copy_from_slice(&input[..m]);
            input = &input[m..];
            q.rx_direct_done(m)
        } else {
            let (crc, at, len) = inp
                .marks
                .get(i % inp.marks.len().max(1))
                .copied()
                .unwrap_or((false, 0, 0));
            let placed = [PlacedRange {
                start: q.rx_position() + u64::from(at),
                len: u32::from(len),
            }];
            let marks = RxMarks {
                crc,
                placed: if len > 0 { &placed } else { &[] },
            };
            let r = q.rx_feed_marked(&input[..n], &marks);
            input = &input[n..];
            r
        };
        drain(&mut q);
        if r.is_err() {
            break;
        }
        i += 1;
    }
    q.detach_offload();
    q.fail_all(nvme_tcp_host::IoError::QueueLost("fuzz end"));
    while let Some(c) = q.pop_completion() {
        let Some(buf) = c.buf else { continue };
        let bytes = buf.to_vec();
        match c.user_data {
            100 => assert!(bytes.iter().all(|&b| b == 0x55), "write buffer modified"),
            u if u < 3 => {
                if c.result.is_err() {
                    let r = received[u as usize].max(c.c2h_bytes).min(bytes.len());
                    assert!(
                        bytes[r..].iter().all(|&b| b == FILL),
                        "read buffer written past the accepted data"
                    );
                }
            }
            _ => {}
        }
    }
});
