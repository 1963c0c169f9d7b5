//! A reference NVMe/TCP controller-to-host byte stream, with the layout of every PDU.

use nvme_tcp_wire::digest::crc32c;
use nvme_tcp_wire::pdu::{DataPduRepr, HeaderBuf, PduFlags, PduType, data_pdo};
use rand::Rng;
use rand::seq::IndexedRandom;
use rand_chacha::ChaCha8Rng;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    C2hData,
    CapsuleResp,
    R2t,
}

/// One PDU of the stream, in stream offsets (0 = first byte).
#[derive(Debug, Clone)]
pub struct RefPdu {
    pub kind: Kind,
    pub start: u64,
    pub end: u64,
    /// End of the header (+ header digest).
    pub hdr_end: u64,
    pub data_start: u64,
    pub data_end: u64,
    pub ddgst: bool,
    pub cid: u16,
    pub datao: u32,
    /// This PDU completes command `cid` (CapsuleResp, or C2HData with SUCCESS).
    pub completes: bool,
    /// The sender put a wrong data digest on the wire.
    pub bad_digest: bool,
}

#[derive(Debug, Clone)]
pub struct Command {
    pub cid: u16,
    pub len: u32,
    /// The host registers buffers for it (before any of its data is on the wire).
    pub register: bool,
    /// SG entries the host registers.
    pub nents: u32,
}

#[derive(Debug, Clone)]
pub struct Stream {
    pub hdgst: bool,
    pub ddgst: bool,
    pub cpda: u8,
    pub bytes: Vec<u8>,
    pub pdus: Vec<RefPdu>,
    pub commands: Vec<Command>,
}

#[derive(Debug, Clone)]
pub struct StreamParams {
    pub hdgst: bool,
    pub ddgst: bool,
    pub cpda: u8,
    pub commands: usize,
    pub max_cmd_len: u32,
    pub max_pdu_data: u32,
    /// Share of commands whose buffers are registered.
    pub p_register: f64,
    /// Probability that a data PDU's payload embeds copies of real PDU headers (bait for
    /// the resync search).
    pub p_fake_headers: f64,
    /// Probability that the sender puts a wrong data digest on a PDU.
    pub p_bad_digest: f64,
    /// Probability of an R2T between PDUs.
    pub p_r2t: f64,
}

impl Stream {
    pub fn generate(rng: &mut ChaCha8Rng, p: &StreamParams) -> Stream {
        let mut commands = Vec::new();
        for i in 0..p.commands {
            let len = rng.random_range(1..=u64::from(p.max_cmd_len)) as u32;
            commands.push(Command {
                cid: i as u16,
                len,
                register: rng.random_bool(p.p_register),
                nents: rng.random_range(1..=6) as u32,
            });
        }
        let mut s = Stream {
            hdgst: p.hdgst,
            ddgst: p.ddgst,
            cpda: p.cpda,
            bytes: Vec::new(),
            pdus: Vec::new(),
            commands: commands.clone(),
        };
        // Interleave the commands' PDUs, as a target answering several reads does.
        let mut progress: Vec<u32> = vec![0; commands.len()];
        let mut active: Vec<usize> = (0..commands.len()).collect();
        while !active.is_empty() {
            let k = rng.random_range(..active.len());
            let ci = active[k];
            let cmd = &commands[ci];
            if rng.random_bool(p.p_r2t) {
                s.push_simple(Kind::R2t, 0x7000 + rng.random_range(0..=100) as u16);
            }
            let left = cmd.len - progress[ci];
            let n = (rng.random_range(1..=u64::from(p.max_pdu_data)) as u32).min(left);
            let last = n == left;
            let success = last && rng.random_bool(0.5);
            let bad = rng.random_bool(p.p_bad_digest);
            let fake = rng.random_bool(p.p_fake_headers);
            s.push_data(rng, cmd.cid, progress[ci], n, last, success, bad, fake);
            progress[ci] += n;
            if last {
                if !success {
                    s.push_simple(Kind::CapsuleResp, cmd.cid);
                }
                active.swap_remove(k);
            }
        }
        s
    }

    fn push_simple(&mut self, kind: Kind, cid: u16) {
        let start = self.bytes.len() as u64;
        let plen = 24 + if self.hdgst { 4 } else { 0 };
        let mut h = [0u8; 28];
        h[0] = match kind {
            Kind::CapsuleResp => PduType::CapsuleResp as u8,
            Kind::R2t => PduType::R2t as u8,
            Kind::C2hData => unreachable!(),
        };
        h[1] = if self.hdgst { PduFlags::HDGSTF.0 } else { 0 };
        h[2] = 24;
        h[3] = 0;
        h[4..8].copy_from_slice(&(plen as u32).to_le_bytes());
        match kind {
            // CQE: command ID at bytes 12..14 of the CQE (CH 8 + 12).
            Kind::CapsuleResp => h[20..22].copy_from_slice(&cid.to_le_bytes()),
            // R2T: CCCID, TTAG, R2TO, R2TL.
            _ => {
                h[8..10].copy_from_slice(&cid.to_le_bytes());
                h[16..20].copy_from_slice(&4096u32.to_le_bytes());
            }
        }
        if self.hdgst {
            let d = crc32c(&h[..24]);
            h[24..28].copy_from_slice(&d.to_le_bytes());
        }
        self.bytes.extend_from_slice(&h[..plen]);
        let end = self.bytes.len() as u64;
        self.pdus.push(RefPdu {
            kind,
            start,
            end,
            hdr_end: end,
            data_start: end,
            data_end: end,
            ddgst: false,
            cid,
            datao: 0,
            completes: kind == Kind::CapsuleResp,
            bad_digest: false,
        });
    }

    #[allow(clippy::too_many_arguments)]
    fn push_data(
        &mut self,
        rng: &mut ChaCha8Rng,
        cid: u16,
        datao: u32,
        datal: u32,
        last: bool,
        success: bool,
        bad_digest: bool,
        fake_headers: bool,
    ) {
        let start = self.bytes.len() as u64;
        let flags = PduFlags::data(last, success);
        let repr = DataPduRepr {
            pdu_type: PduType::C2hData,
            flags,
            hdgst: self.hdgst,
            ddgst: self.ddgst,
            pda: self.cpda,
            cccid: cid,
            ttag: 0,
            datao,
            datal,
        };
        let hdr = HeaderBuf::new(&repr);
        let hdr_bytes = hdr.as_bytes();
        debug_assert_eq!(
            hdr_bytes.len(),
            usize::from(data_pdo(24, self.hdgst, self.cpda))
        );
        self.bytes.extend_from_slice(hdr_bytes);
        let hdr_end = start + 24 + if self.hdgst { 4 } else { 0 };
        let data_start = self.bytes.len() as u64;
        let mut data = vec![0u8; datal as usize];
        rng.fill(data.as_mut_slice());
        if fake_headers && !self.pdus.is_empty() {
            // Paste real headers of earlier PDUs into the data.
            for _ in 0..rng.random_range(1..=4) {
                let p = self.pdus.choose(rng).unwrap().clone();
                let h = &self.bytes[p.start as usize..p.hdr_end as usize];
                if h.len() < data.len() {
                    let at = rng.random_range(0..=data.len() - h.len());
                    data[at..at + h.len()].copy_from_slice(h);
                }
            }
        }
        self.bytes.extend_from_slice(&data);
        let data_end = self.bytes.len() as u64;
        if self.ddgst {
            let mut d = crc32c(&data);
            if bad_digest {
                d ^= 1 << rng.random_range(0..=31);
            }
            self.bytes.extend_from_slice(&d.to_le_bytes());
        }
        let end = self.bytes.len() as u64;
        self.pdus.push(RefPdu {
            kind: Kind::C2hData,
            start,
            end,
            hdr_end,
            data_start,
            data_end,
            ddgst: self.ddgst,
            cid,
            datao,
            completes: success,
            bad_digest: bad_digest && self.ddgst,
        });
    }

    pub fn len(&self) -> u64 {
        self.bytes.len() as u64
    }

    /// Index of the PDU holding stream offset `off`.
    pub fn pdu_at(&self, off: u64) -> Option<usize> {
        let i = self.pdus.partition_point(|p| p.end <= off);
        (i < self.pdus.len() && self.pdus[i].start <= off).then_some(i)
    }

    /// True if `off` is a data or data-digest byte of a C2HData PDU.
    pub fn is_payload(&self, off: u64) -> bool {
        self.pdu_at(off)
            .map(|i| {
                let p = &self.pdus[i];
                p.kind == Kind::C2hData && off >= p.data_start
            })
            .unwrap_or(false)
    }
}
