//! A small scripted NVMe/TCP controller for the host's tests: one RAM namespace, and faults
//! that a test switches on (drop the connection, corrupt a data digest, violate DATAO, swallow
//! a command, stop answering reads), once or, with [`Misbehave`], on every eligible command for
//! as long as it is set. It is deliberately simple and trusting; the real target lives in
//! `nvme-tcp-target`.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nvme_tcp_wire::Fes;
use nvme_tcp_wire::digest::crc32c;
use nvme_tcp_wire::nvme::{IdentifyController, IdentifyNamespace, NsidList, Sqe};
use nvme_tcp_wire::pdu::{
    CapsuleRespRepr, DataPduRepr, HeaderBuf, IcRespRepr, PduFlags, PduType, R2tRepr, TermReqRepr,
};
use zerocopy::{FromZeros, IntoBytes};

pub const NQN: &str = "nqn.2024-01.io.test:mock";
pub const LBA: usize = 512;

/// Faults, switched by tests at run time; each "once" fault fires on the next matching I/O.
#[derive(Default)]
pub struct Faults {
    /// Close the I/O connection instead of answering the next Read.
    pub drop_on_read: AtomicBool,
    /// Flip a bit of the data digest of the next Read's C2HData.
    pub corrupt_ddgst: AtomicBool,
    /// Send the next Read's data at DATAO + 512.
    pub bad_datao: AtomicBool,
    /// Never answer the next Read (the host must time out and abort).
    pub swallow_read: AtomicBool,
    /// Never answer any Read while set: a controller that stopped answering (every other
    /// command is still answered).
    pub swallow_reads: AtomicBool,
    /// Refuse every connection (simulates the target being down).
    pub refuse: AtomicBool,
    /// A [`Misbehave`] applied to every eligible I/O command while set (0: none).
    pub misbehave: std::sync::atomic::AtomicU8,
}

/// Ways to break the protocol on every eligible I/O command: Reads for all but
/// [`Misbehave::R2tUnknownCccid`], which breaks Writes that need an R2T. None names the
/// command in a way the host can pin the violation on, so each one costs the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Misbehave {
    /// C2HData whose CCCID names no command.
    UnknownCccid = 1,
    /// C2HData whose header digest is wrong (the host must ask for header digests).
    BadHeaderDigest,
    /// The CapsuleResp of the Read with HLEN 25.
    WrongHlen,
    /// C2HData with PDO 26 (not a multiple of 4).
    MisalignedPdo,
    /// The data as it should be, then a CapsuleResp for a CID no command has.
    UnknownCid,
    /// The first half of the data, then a C2HTermReq.
    TermReqMidStream,
    /// The C2HData header and part of its payload, then the connection closes.
    CloseMidStream,
    /// An R2T whose CCCID names no command.
    R2tUnknownCccid,
}

impl Misbehave {
    /// Every misbehaviour.
    pub const ALL: [Misbehave; 8] = [
        Misbehave::UnknownCccid,
        Misbehave::BadHeaderDigest,
        Misbehave::WrongHlen,
        Misbehave::MisalignedPdo,
        Misbehave::UnknownCid,
        Misbehave::TermReqMidStream,
        Misbehave::CloseMidStream,
        Misbehave::R2tUnknownCccid,
    ];

    /// The kebab-case name (`unknown-cccid`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Misbehave::UnknownCccid => "unknown-cccid",
            Misbehave::BadHeaderDigest => "bad-header-digest",
            Misbehave::WrongHlen => "wrong-hlen",
            Misbehave::MisalignedPdo => "misaligned-pdo",
            Misbehave::UnknownCid => "unknown-cid",
            Misbehave::TermReqMidStream => "term-req-mid-stream",
            Misbehave::CloseMidStream => "close-mid-stream",
            Misbehave::R2tUnknownCccid => "r2t-unknown-cccid",
        }
    }

    /// The misbehaviour named `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.name() == name)
    }

    fn from_u8(v: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|m| *m as u8 == v)
    }
}

#[derive(Default)]
pub struct Counters {
    pub keep_alives: AtomicUsize,
    pub aborts: AtomicUsize,
    pub io_connects: AtomicUsize,
    pub admin_connects: AtomicUsize,
    pub reads: AtomicUsize,
    pub writes: AtomicUsize,
    pub r2ts: AtomicUsize,
    /// Commands the controller broke the protocol on ([`Misbehave`]).
    pub misbehaved: AtomicUsize,
    /// Reads the controller never answered ([`Faults::swallow_read`],
    /// [`Faults::swallow_reads`]).
    pub swallowed: AtomicUsize,
    /// Connections closed at once because [`Faults::refuse`] was set.
    pub refused: AtomicUsize,
    pub next_cntlid: AtomicU32,
    /// Bumped by [`Mock::restart`]: connections of an older epoch close, associations are
    /// forgotten.
    pub epoch: AtomicU32,
    pub valid_cntlids: Mutex<Vec<u16>>,
}

pub struct Mock {
    pub addr: SocketAddr,
    pub ns: Arc<Mutex<Vec<u8>>>,
    pub faults: Arc<Faults>,
    pub counters: Arc<Counters>,
    pub stop: Arc<AtomicBool>,
    /// Use the C2HData SUCCESS flag when the host disabled SQ flow control.
    pub in_capsule: u32,
}

impl Mock {
    /// A controller on 127.0.0.1 (ephemeral port) with a namespace of `blocks` × 512 bytes,
    /// accepting `in_capsule` bytes of in-capsule data on I/O queues.
    pub fn start(blocks: usize, in_capsule: u32) -> Mock {
        Self::start_on("127.0.0.1:0", blocks, in_capsule)
    }

    pub fn start_on(addr: &str, blocks: usize, in_capsule: u32) -> Mock {
        let l = TcpListener::bind(addr).expect("bind");
        let addr = l.local_addr().expect("addr");
        let ns: Vec<u8> = (0..blocks * LBA)
            .map(|i| (i / LBA) as u8 ^ (i as u8))
            .collect();
        let m = Mock {
            addr,
            ns: Arc::new(Mutex::new(ns)),
            faults: Arc::new(Faults::default()),
            counters: Arc::new(Counters::default()),
            stop: Arc::new(AtomicBool::new(false)),
            in_capsule,
        };
        let (ns, faults, counters, stop) = (
            m.ns.clone(),
            m.faults.clone(),
            m.counters.clone(),
            m.stop.clone(),
        );
        l.set_nonblocking(true).expect("nonblocking");
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((s, _)) => {
                        if faults.refuse.load(Ordering::Relaxed) {
                            counters.refused.fetch_add(1, Ordering::SeqCst);
                            drop(s);
                            continue;
                        }
                        let (ns, faults, counters, stop) =
                            (ns.clone(), faults.clone(), counters.clone(), stop.clone());
                        std::thread::spawn(move || {
                            let _ = serve(s, ns, faults, counters, stop, in_capsule);
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        m
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Breaks the protocol on every eligible command from now on (`None`: behaves again).
    pub fn misbehave(&self, m: Option<Misbehave>) {
        self.faults
            .misbehave
            .store(m.map_or(0, |m| m as u8), Ordering::SeqCst);
    }

    /// Simulates a controller restart: every connection closes and every association is
    /// forgotten (I/O queue Connects for old controller ids are refused). Data is kept, as a
    /// file-backed namespace would.
    pub fn restart(&self) {
        if let Ok(mut v) = self.counters.valid_cntlids.lock() {
            v.clear();
        }
        self.counters.epoch.fetch_add(1, Ordering::SeqCst);
    }
}

impl Drop for Mock {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

struct Conn {
    s: TcpStream,
    hdgst: bool,
    ddgst: bool,
    sqflow_disabled: bool,
    qid: u16,
}

struct Alive<'a> {
    stop: &'a AtomicBool,
    counters: &'a Counters,
    epoch: u32,
}

impl Alive<'_> {
    fn load(&self, o: Ordering) -> bool {
        self.stop.load(o) || self.counters.epoch.load(o) != self.epoch
    }
}

fn read_exact(s: &mut TcpStream, n: usize, stop: &Alive<'_>) -> std::io::Result<Vec<u8>> {
    let mut v = vec![0u8; n];
    let mut got = 0;
    while got < n {
        if stop.load(Ordering::Relaxed) {
            return Err(std::io::ErrorKind::BrokenPipe.into());
        }
        match s.read(&mut v[got..]) {
            Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(k) => got += k,
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(e) => return Err(e),
        }
    }
    Ok(v)
}

/// Reads one PDU: (type, flags, header bytes incl. PSH, data).
fn read_pdu(c: &mut Conn, stop: &Alive<'_>) -> std::io::Result<(u8, u8, Vec<u8>, Vec<u8>)> {
    let ch = read_exact(&mut c.s, 8, stop)?;
    let plen = u32::from_le_bytes([ch[4], ch[5], ch[6], ch[7]]) as usize;
    let (t, flags, hlen, pdo) = (ch[0], ch[1], ch[2] as usize, ch[3] as usize);
    let rest = read_exact(&mut c.s, plen - 8, stop)?;
    let mut hdr = ch.clone();
    hdr.extend_from_slice(&rest[..hlen - 8]);
    let data = if pdo > 0 {
        let dd = if flags & 0x02 != 0 { 4 } else { 0 };
        rest[pdo - 8..plen - 8 - dd].to_vec()
    } else {
        Vec::new()
    };
    Ok((t, flags, hdr, data))
}

fn resp(c: &mut Conn, cid: u16, status: u16, dw0: u32) -> std::io::Result<()> {
    let mut cqe = [0u8; 16];
    cqe[0..4].copy_from_slice(&dw0.to_le_bytes());
    let sqhd: u16 = if c.sqflow_disabled { 0xFFFF } else { 0 };
    cqe[8..10].copy_from_slice(&sqhd.to_le_bytes());
    cqe[10..12].copy_from_slice(&c.qid.to_le_bytes());
    cqe[12..14].copy_from_slice(&cid.to_le_bytes());
    cqe[14..16].copy_from_slice(&(status << 1).to_le_bytes());
    let h = HeaderBuf::new(&CapsuleRespRepr {
        hdgst: c.hdgst,
        cqe,
    });
    c.s.write_all(h.as_bytes())
}

fn c2h(
    c: &mut Conn,
    cid: u16,
    datao: u32,
    data: &[u8],
    last: bool,
    success: bool,
    corrupt: bool,
) -> std::io::Result<()> {
    let flags = PduFlags::data(last, success);
    let h = HeaderBuf::new(&DataPduRepr {
        pdu_type: PduType::C2hData,
        flags,
        hdgst: c.hdgst,
        ddgst: c.ddgst,
        pda: 0,
        cccid: cid,
        ttag: 0,
        datao,
        datal: data.len() as u32,
    });
    let mut out = h.as_bytes().to_vec();
    out.extend_from_slice(data);
    if c.ddgst {
        let mut d = crc32c(data);
        if corrupt {
            d ^= 1;
        }
        out.extend_from_slice(&d.to_le_bytes());
    }
    c.s.write_all(&out)
}

fn identify_ctrl(cntlid: u16, in_capsule: u32) -> Vec<u8> {
    let mut id = IdentifyController::new_zeroed();
    id.cntlid.set(cntlid);
    id.ver.set(0x0001_0400);
    id.kas.set(1);
    id.sqes = 0x66;
    id.cqes = 0x44;
    id.maxcmd.set(128);
    id.nn.set(1);
    id.sgls.set(1 | (1 << 20));
    id.mdts = 5; // 32 × 4 KiB = 128 KiB
    id.ioccsz.set((64 + in_capsule) / 16);
    id.iorcsz.set(1);
    id.msdbd = 1;
    id.cntrltype = 1;
    let _ = id.set_sn("MOCK0001");
    let _ = id.set_mn("host-test mock");
    let _ = id.set_fr("1.0");
    let _ = id.set_subnqn(NQN);
    id.as_bytes().to_vec()
}

fn serve(
    s: TcpStream,
    ns: Arc<Mutex<Vec<u8>>>,
    faults: Arc<Faults>,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
    in_capsule: u32,
) -> std::io::Result<()> {
    s.set_read_timeout(Some(Duration::from_millis(50)))?;
    s.set_nodelay(true)?;
    let stop = Alive {
        stop: &stop,
        counters: &counters,
        epoch: counters.epoch.load(Ordering::SeqCst),
    };
    let mut c = Conn {
        s,
        hdgst: false,
        ddgst: false,
        sqflow_disabled: false,
        qid: 0,
    };
    let icreq = read_exact(&mut c.s, 128, &stop)?;
    c.hdgst = icreq[11] & 1 != 0;
    c.ddgst = icreq[11] & 2 != 0;
    let icresp = HeaderBuf::new(&IcRespRepr {
        pfv: 0,
        cpda: 0,
        hdgst_enable: c.hdgst,
        ddgst_enable: c.ddgst,
        maxh2cdata: 8192,
    });
    c.s.write_all(icresp.as_bytes())?;
    let mut cc_en = false;
    // Capsules that arrived while a write was collecting its H2CData.
    let mut pending: std::collections::VecDeque<(u8, u8, Vec<u8>, Vec<u8>)> =
        std::collections::VecDeque::new();
    loop {
        let (t, _flags, hdr, data) = match pending.pop_front() {
            Some(p) => p,
            None => read_pdu(&mut c, &stop)?,
        };
        if t != 0x04 {
            return Ok(());
        }
        let sqe = Sqe::parse(&hdr[8..72]).map_err(|_| std::io::ErrorKind::InvalidData)?;
        let cid = sqe.cid();
        let opc = sqe.opcode();
        if c.qid == 0 && opc == 0x7F {
            match sqe.fctype() {
                0x01 => {
                    let qid = (sqe.cdw10() >> 16) as u16;
                    c.qid = qid;
                    c.sqflow_disabled = (sqe.cdw11() >> 16) & 4 != 0;
                    let cntlid = if qid == 0 {
                        counters.admin_connects.fetch_add(1, Ordering::Relaxed);
                        let id = counters.next_cntlid.fetch_add(1, Ordering::Relaxed) as u16 + 1;
                        if let Ok(mut v) = counters.valid_cntlids.lock() {
                            v.push(id);
                        }
                        id
                    } else {
                        counters.io_connects.fetch_add(1, Ordering::Relaxed);
                        u16::from_le_bytes([data[16], data[17]])
                    };
                    let known = counters
                        .valid_cntlids
                        .lock()
                        .map(|v| v.contains(&cntlid))
                        .unwrap_or(false);
                    if !known {
                        // SCT 1 / SC 0x82: Connect Invalid Parameters.
                        resp(&mut c, cid, (1 << 8) | 0x82, 0)?;
                        return Ok(());
                    }
                    resp(&mut c, cid, 0, cntlid as u32)?;
                }
                0x04 => {
                    let v: u64 = match sqe.cdw11() {
                        0x00 => 127 | (1 << 24) | (1 << 37), // MQES 127, TO 500 ms, CSS NVM
                        0x08 => 0x0001_0400,
                        0x1C => u64::from(cc_en),
                        _ => 0,
                    };
                    let mut cqe_dw0 = v as u32;
                    if sqe.cdw11() == 0x00 {
                        // 8-byte CAP: DW1 carries the high half.
                        cqe_dw0 = v as u32;
                        let mut cqe = [0u8; 16];
                        cqe[0..4].copy_from_slice(&cqe_dw0.to_le_bytes());
                        cqe[4..8].copy_from_slice(&((v >> 32) as u32).to_le_bytes());
                        cqe[12..14].copy_from_slice(&cid.to_le_bytes());
                        let h = HeaderBuf::new(&CapsuleRespRepr {
                            hdgst: c.hdgst,
                            cqe,
                        });
                        c.s.write_all(h.as_bytes())?;
                    } else {
                        resp(&mut c, cid, 0, cqe_dw0)?;
                    }
                }
                0x00 => {
                    if sqe.cdw11() == 0x14 {
                        cc_en = sqe.cdw12() & 1 != 0;
                    }
                    resp(&mut c, cid, 0, 0)?;
                }
                _ => resp(&mut c, cid, 0x01, 0)?,
            }
            continue;
        }
        if c.qid == 0 {
            match opc {
                0x06 => {
                    let cns = sqe.cdw10() & 0xFF;
                    let page = match cns {
                        1 => identify_ctrl(
                            counters.next_cntlid.load(Ordering::Relaxed) as u16,
                            in_capsule,
                        ),
                        0 => {
                            let blocks = ns.lock().map(|n| n.len() / LBA).unwrap_or(0);
                            IdentifyNamespace::new(blocks as u64, 9).as_bytes().to_vec()
                        }
                        2 => NsidList::from_nsids(&[1])
                            .map(|l| l.as_bytes().to_vec())
                            .unwrap_or_else(|_| vec![0; 4096]),
                        _ => vec![0; 4096],
                    };
                    let mut page = page;
                    page.resize(4096, 0);
                    c2h(&mut c, cid, 0, &page, true, false, false)?;
                    resp(&mut c, cid, 0, 0)?;
                }
                0x09 => {
                    resp(&mut c, cid, 0, sqe.cdw11())?;
                }
                0x18 => {
                    counters.keep_alives.fetch_add(1, Ordering::Relaxed);
                    resp(&mut c, cid, 0, 0)?;
                }
                0x08 => {
                    counters.aborts.fetch_add(1, Ordering::Relaxed);
                    resp(&mut c, cid, 0, 1)?;
                }
                _ => resp(&mut c, cid, 0x01, 0)?,
            }
            continue;
        }
        // I/O queue.
        let slba = sqe.cdw10() as u64 | ((sqe.cdw11() as u64) << 32);
        let nlb = (sqe.cdw12() & 0xFFFF) as usize + 1;
        let off = slba as usize * LBA;
        let len = nlb * LBA;
        match opc {
            0x02 => {
                counters.reads.fetch_add(1, Ordering::Relaxed);
                if faults.drop_on_read.swap(false, Ordering::Relaxed) {
                    return Ok(());
                }
                if faults.swallow_read.swap(false, Ordering::Relaxed)
                    || faults.swallow_reads.load(Ordering::SeqCst)
                {
                    counters.swallowed.fetch_add(1, Ordering::SeqCst);
                    continue;
                }
                let mode = Misbehave::from_u8(faults.misbehave.load(Ordering::SeqCst))
                    .filter(|m| *m != Misbehave::R2tUnknownCccid);
                let data = {
                    let n = ns.lock().map_err(|_| std::io::ErrorKind::Other)?;
                    match n.get(off..off + len) {
                        Some(d) => d.to_vec(),
                        None => {
                            drop(n);
                            resp(&mut c, cid, 0x80, 0)?;
                            continue;
                        }
                    }
                };
                if let Some(mode) = mode {
                    counters.misbehaved.fetch_add(1, Ordering::SeqCst);
                    if misbehave_read(&mut c, mode, cid, &data)? {
                        continue;
                    }
                    return Ok(());
                }
                let corrupt = faults.corrupt_ddgst.swap(false, Ordering::Relaxed);
                let bad = faults.bad_datao.swap(false, Ordering::Relaxed);
                let success = c.sqflow_disabled;
                // Two PDUs per read when it is large enough.
                let half = if len >= 2 * LBA {
                    (len / 2) / LBA * LBA
                } else {
                    len
                };
                let d1 = if bad { LBA as u32 } else { 0 };
                c2h(
                    &mut c,
                    cid,
                    d1,
                    &data[..half],
                    half == len,
                    success && half == len,
                    corrupt,
                )?;
                if half < len {
                    c2h(
                        &mut c,
                        cid,
                        half as u32,
                        &data[half..],
                        true,
                        success,
                        false,
                    )?;
                }
                if !success {
                    resp(&mut c, cid, 0, 0)?;
                }
            }
            0x01 => {
                counters.writes.fetch_add(1, Ordering::Relaxed);
                let payload = if !data.is_empty() {
                    data
                } else {
                    counters.r2ts.fetch_add(1, Ordering::Relaxed);
                    let bad =
                        faults.misbehave.load(Ordering::SeqCst) == Misbehave::R2tUnknownCccid as u8;
                    if bad {
                        counters.misbehaved.fetch_add(1, Ordering::SeqCst);
                    }
                    let r2t = HeaderBuf::new(&R2tRepr {
                        hdgst: c.hdgst,
                        cccid: if bad { cid ^ 0x8000 } else { cid },
                        ttag: 7,
                        r2to: 0,
                        r2tl: len as u32,
                    });
                    c.s.write_all(r2t.as_bytes())?;
                    let mut got = Vec::with_capacity(len);
                    while got.len() < len {
                        let (t, flags, h, d) = read_pdu(&mut c, &stop)?;
                        if t == 0x04 {
                            pending.push_back((t, flags, h, d));
                            continue;
                        }
                        if t != 0x06 {
                            return Ok(());
                        }
                        got.extend_from_slice(&d);
                        if flags & 0x04 != 0 {
                            break;
                        }
                    }
                    got
                };
                let mut n = ns.lock().map_err(|_| std::io::ErrorKind::Other)?;
                match n.get_mut(off..off + len) {
                    Some(dst) if payload.len() == len => {
                        dst.copy_from_slice(&payload);
                        drop(n);
                        resp(&mut c, cid, 0, 0)?;
                    }
                    _ => {
                        drop(n);
                        resp(&mut c, cid, 0x80, 0)?;
                    }
                }
            }
            _ => resp(&mut c, cid, 0, 0)?,
        }
    }
}

/// Answers a Read of `data` the way `mode` says. Returns false if the connection is to be
/// closed.
fn misbehave_read(c: &mut Conn, mode: Misbehave, cid: u16, data: &[u8]) -> std::io::Result<bool> {
    let half = (data.len() / 2).max(1);
    match mode {
        Misbehave::UnknownCccid => c2h(c, cid ^ 0x8000, 0, data, true, false, false)?,
        Misbehave::BadHeaderDigest => {
            let mut pdu = c2h_bytes(c, cid, 0, data, true);
            if !c.hdgst {
                return Err(std::io::Error::other(
                    "bad-header-digest needs header digests",
                ));
            }
            pdu[24] ^= 1; // the first HDGST byte of a C2HData header
            c.s.write_all(&pdu)?;
        }
        Misbehave::WrongHlen => {
            c2h(c, cid, 0, data, true, false, false)?;
            let mut cqe = [0u8; 16];
            cqe[12..14].copy_from_slice(&cid.to_le_bytes());
            let h = HeaderBuf::new(&CapsuleRespRepr {
                hdgst: c.hdgst,
                cqe,
            });
            let mut pdu = h.as_bytes().to_vec();
            pdu[2] = 25;
            c.s.write_all(&pdu)?;
        }
        Misbehave::MisalignedPdo => {
            let pdu = c2h_bytes(c, cid, 0, data, true);
            let hd = 24 + if c.hdgst { 4 } else { 0 };
            // Two bytes of padding before the data: PDO 26 (28 + 2 with header digests).
            let mut out = pdu[..hd].to_vec();
            out.extend_from_slice(&[0, 0]);
            out.extend_from_slice(&pdu[hd..]);
            out[3] = hd as u8 + 2;
            let plen = out.len() as u32;
            out[4..8].copy_from_slice(&plen.to_le_bytes());
            c.s.write_all(&out)?;
        }
        Misbehave::UnknownCid => {
            c2h(c, cid, 0, data, true, false, false)?;
            resp(c, cid ^ 0x8000, 0, 0)?;
        }
        Misbehave::TermReqMidStream => {
            c2h(c, cid, 0, &data[..half], false, false, false)?;
            let t = HeaderBuf::new(&TermReqRepr::new(
                PduType::C2hTermReq,
                Fes::InvalidHeaderField,
                0,
                0,
            ));
            c.s.write_all(t.as_bytes())?;
        }
        Misbehave::CloseMidStream => {
            let pdu = c2h_bytes(c, cid, 0, data, true);
            c.s.write_all(&pdu[..pdu.len() / 2])?;
            c.s.shutdown(std::net::Shutdown::Write)?;
            return Ok(false);
        }
        Misbehave::R2tUnknownCccid => {}
    }
    Ok(true)
}

/// A whole C2HData PDU (with SUCCESS unset), as bytes.
fn c2h_bytes(c: &Conn, cid: u16, datao: u32, data: &[u8], last: bool) -> Vec<u8> {
    let h = HeaderBuf::new(&DataPduRepr {
        pdu_type: PduType::C2hData,
        flags: PduFlags::data(last, false),
        hdgst: c.hdgst,
        ddgst: c.ddgst,
        pda: 0,
        cccid: cid,
        ttag: 0,
        datao,
        datal: data.len() as u32,
    });
    let mut out = h.as_bytes().to_vec();
    out.extend_from_slice(data);
    if c.ddgst {
        out.extend_from_slice(&crc32c(data).to_le_bytes());
    }
    out
}
