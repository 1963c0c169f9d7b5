//! The simulated wire of one TCP connection, controller → host: cuts the byte stream into
//! segments by a seeded schedule and, from the same seed, drops, reorders, duplicates and
//! corrupts them.
//!
//! Time is a logical clock counted in segment slots: the sender puts one segment on the
//! wire per slot (never earlier than the current time), a segment is delivered when the
//! clock reaches its due slot, and the receiver advances the clock a bounded number of slots
//! per round ([`Wire::tick`]) so that it reacts (resync answers, new commands) while data
//! is still flowing, as a real receiver does packet by packet. When nothing else moves, the
//! clock jumps to the next due slot (the retransmission timer firing). Everything is a
//! function of the seed and of the bytes sent, so a run is reproducible.
//!
//! Faults, at most one per original transmission:
//! * **drop**: the segment is lost; its retransmission arrives `rto` ticks later;
//! * **reorder**: the segment arrives 1..=`max_delay` ticks late;
//! * **duplicate**: the segment arrives now and a copy 1..=`max_delay` ticks later;
//! * **corrupt**: one byte of C2HData *payload* in the segment is flipped and the segment
//!   is delivered as if its TCP checksum had passed (the case a data digest exists for).
//!   Header bytes are never corrupted: a corrupted header is a protocol error that tears the
//!   connection down, which is not what this models.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use nvme_tcp_wire::pdu::field::data::DATAO;
use nvme_tcp_wire::pdu::{CH_LEN, CommonHeader, DataPdu, PduFlags, PduType};

/// Bytes of a C2HData header the scanner needs (CH + CCCID + TTAG + DATAO).
const SCAN_HEADER: usize = DATAO.end;

/// Fault rates, in segments per million original transmissions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct FaultConfig {
    /// Lost segments (retransmitted `rto` ticks later).
    pub drop_ppm: u32,
    /// Segments delivered late.
    pub reorder_ppm: u32,
    /// Segments delivered twice.
    pub duplicate_ppm: u32,
    /// Segments with one C2HData payload byte flipped.
    pub corrupt_ppm: u32,
}

impl FaultConfig {
    /// No fault.
    pub const NONE: Self = Self {
        drop_ppm: 0,
        reorder_ppm: 0,
        duplicate_ppm: 0,
        corrupt_ppm: 0,
    };

    /// True if no fault can happen.
    pub const fn is_none(&self) -> bool {
        self.drop_ppm == 0
            && self.reorder_ppm == 0
            && self.duplicate_ppm == 0
            && self.corrupt_ppm == 0
    }
}

/// Segmentation and fault schedule of a wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct WireConfig {
    /// Seed of the schedule.
    pub seed: u64,
    /// Largest segment payload (the MSS).
    pub mss: u32,
    /// Segments per million cut to a random shorter size (1..mss), so PDU boundaries fall
    /// anywhere in segments.
    pub short_segment_ppm: u32,
    /// Fault rates.
    pub faults: FaultConfig,
    /// Most ticks a reordered or duplicated segment is late.
    pub max_delay: u32,
    /// Ticks until a dropped segment is retransmitted.
    pub rto: u32,
}

impl Default for WireConfig {
    fn default() -> Self {
        Self {
            seed: 1,
            mss: 1448,
            short_segment_ppm: 50_000,
            faults: FaultConfig::NONE,
            max_delay: 8,
            rto: 24,
        }
    }
}

/// Which transmission of its bytes a segment is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Transmission {
    /// The first transmission.
    Original,
    /// A retransmission after a drop.
    Retransmit,
    /// A duplicate copy (the network delivered the segment twice).
    Duplicate,
}

/// A corrupted C2HData payload byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Corruption {
    /// Stream offset of the flipped byte.
    pub offset: u64,
    /// CCCID of the C2HData PDU it belongs to.
    pub cccid: u16,
    /// Which read of that CCCID on this connection: the number of earlier C2HData PDUs with
    /// DATAO 0 for the same CCCID.
    pub instance: u64,
}

/// One segment on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireSegment {
    /// Stream offset of the first payload byte (0 = first byte of the connection).
    pub offset: u64,
    /// TCP payload.
    pub data: Vec<u8>,
    /// Which transmission this is.
    pub transmission: Transmission,
    /// The corrupted byte, if this segment carries one.
    pub corruption: Option<Corruption>,
}

/// What a wire did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct WireStats {
    /// Original segments cut from the stream.
    pub segments: u64,
    /// Bytes of the stream.
    pub bytes: u64,
    /// Segments delivered (including retransmissions and duplicates).
    pub delivered: u64,
    /// Segments dropped.
    pub dropped: u64,
    /// Segments delivered late.
    pub reordered: u64,
    /// Duplicate copies sent.
    pub duplicated: u64,
    /// Segments with a corrupted payload byte.
    pub corrupted: u64,
}

#[derive(Debug, Clone, Copy)]
struct PayloadSpan {
    start: u64,
    end: u64,
    cccid: u16,
    instance: u64,
}

/// Follows the PDU framing of the stream the sender emits, to know which bytes are C2HData
/// payload. The stream is the target's own output, so it is well formed; on anything odd
/// the scanner stops classifying (no corruption is injected after that).
#[derive(Debug, Default)]
struct PduScanner {
    /// Stream offset of the next byte to scan.
    pos: u64,
    /// Offset of the current PDU's first byte.
    pdu_start: u64,
    hdr: [u8; SCAN_HEADER],
    have: usize,
    /// Bytes left in the current PDU after the header bytes scanned.
    skip: u64,
    lost: bool,
    spans: std::collections::VecDeque<PayloadSpan>,
    instances: BTreeMap<u16, u64>,
}

impl PduScanner {
    fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() && !self.lost {
            if self.skip > 0 {
                let n = (self.skip.min(bytes.len() as u64)) as usize;
                self.skip -= n as u64;
                self.pos += n as u64;
                bytes = &bytes[n..];
                continue;
            }
            if self.have == 0 {
                self.pdu_start = self.pos;
            }
            let n = (SCAN_HEADER - self.have).min(bytes.len());
            self.hdr[self.have..self.have + n].copy_from_slice(&bytes[..n]);
            self.have += n;
            self.pos += n as u64;
            bytes = &bytes[n..];
            // Short PDUs (8-byte CH + fields) are at least 24 bytes, so 16 bytes never
            // run past a PDU.
            if self.have == SCAN_HEADER {
                self.have = 0;
                let ch = CommonHeader::new_unchecked(&self.hdr[..CH_LEN]);
                let plen = u64::from(ch.plen());
                if plen < 24 {
                    self.lost = true;
                    return;
                }
                self.skip = plen - SCAN_HEADER as u64;
                if ch.pdu_type() == Some(PduType::C2hData) {
                    let pdo = u64::from(ch.pdo());
                    let ddgst = if ch.flags().contains(PduFlags::DDGSTF) {
                        4
                    } else {
                        0
                    };
                    // (Only the first 16 bytes of the header are in: the view's getters for
                    // DATAL and the reserved bytes must not be used.)
                    let d = DataPdu::new_unchecked(&self.hdr[..]);
                    let (cccid, datao) = (d.cccid(), d.datao());
                    let counter = self.instances.entry(cccid).or_insert(0);
                    if datao == 0 {
                        *counter += 1;
                    }
                    let instance = counter.saturating_sub(1);
                    if pdo + ddgst < plen {
                        self.spans.push_back(PayloadSpan {
                            start: self.pdu_start + pdo,
                            end: self.pdu_start + plen - ddgst,
                            cccid,
                            instance,
                        });
                    }
                }
            }
        }
    }

    /// Payload spans overlapping `start..end`; forgets spans that end before `start`.
    fn overlapping(&mut self, start: u64, end: u64) -> impl Iterator<Item = PayloadSpan> + '_ {
        while self.spans.front().is_some_and(|s| s.end <= start) {
            self.spans.pop_front();
        }
        self.spans
            .iter()
            .copied()
            .take_while(move |s| s.start < end)
            .filter(move |s| s.end > start)
    }
}

/// The controller → host direction of one simulated connection.
#[derive(Debug)]
pub struct Wire {
    cfg: WireConfig,
    rng: ChaCha8Rng,
    /// Stream offset of the next byte to send.
    next_offset: u64,
    clock: u64,
    /// Slot of the last segment put on the wire.
    send_slot: u64,
    order: u64,
    queue: BTreeMap<(u64, u64), WireSegment>,
    scanner: PduScanner,
    stats: WireStats,
}

impl Wire {
    /// A wire with `cfg`; `stream` distinguishes the wires of one simulation (it is mixed
    /// into the seed).
    pub fn new(cfg: WireConfig, stream: u64) -> Self {
        let seed = cfg.seed ^ stream.wrapping_mul(0xD6E8_FEB8_6659_FD93);
        Self {
            cfg,
            rng: ChaCha8Rng::seed_from_u64(seed),
            next_offset: 0,
            clock: 0,
            send_slot: 0,
            order: 0,
            queue: BTreeMap::new(),
            scanner: PduScanner::default(),
            stats: WireStats::default(),
        }
    }

    /// Counters.
    pub fn stats(&self) -> WireStats {
        self.stats
    }

    /// Stream offset of the next byte to send (bytes sent so far).
    pub fn sent(&self) -> u64 {
        self.next_offset
    }

    /// True if no segment is in flight.
    pub fn is_idle(&self) -> bool {
        self.queue.is_empty()
    }

    fn schedule(&mut self, delay: u64, seg: WireSegment) {
        self.order += 1;
        self.queue.insert((self.send_slot + delay, self.order), seg);
    }

    /// Sends `bytes` (the next bytes of the stream): cuts them into segments, one slot each
    /// from the current time on, and schedules each segment's delivery according to its
    /// fault.
    pub fn send(&mut self, mut bytes: &[u8]) {
        self.scanner.feed(bytes);
        self.stats.bytes += bytes.len() as u64;
        let mss = u64::from(self.cfg.mss.max(1));
        while !bytes.is_empty() {
            let size = if self
                .rng
                .random_ratio(self.cfg.short_segment_ppm.min(1_000_000), 1_000_000)
            {
                self.rng.random_range(1..=mss.saturating_sub(1).max(1))
            } else {
                mss
            };
            let n = (size as usize).min(bytes.len());
            let mut seg = WireSegment {
                offset: self.next_offset,
                data: bytes[..n].to_vec(),
                transmission: Transmission::Original,
                corruption: None,
            };
            bytes = &bytes[n..];
            self.next_offset += n as u64;
            self.send_slot = self.send_slot.max(self.clock) + 1;
            self.stats.segments += 1;
            self.apply_fault(&mut seg);
        }
    }

    fn apply_fault(&mut self, seg: &mut WireSegment) {
        let f = self.cfg.faults;
        let draw = self.rng.random_range(0..1_000_000);
        let mut t = u64::from(f.drop_ppm);
        let max_delay = u64::from(self.cfg.max_delay.max(1));
        let seg = std::mem::replace(
            seg,
            WireSegment {
                offset: 0,
                data: Vec::new(),
                transmission: Transmission::Original,
                corruption: None,
            },
        );
        if draw < t {
            self.stats.dropped += 1;
            let rto = u64::from(self.cfg.rto.max(1));
            self.schedule(
                rto,
                WireSegment {
                    transmission: Transmission::Retransmit,
                    ..seg
                },
            );
            return;
        }
        t += u64::from(f.reorder_ppm);
        if draw < t {
            self.stats.reordered += 1;
            let d = self.rng.random_range(1..=max_delay);
            self.schedule(d, seg);
            return;
        }
        t += u64::from(f.duplicate_ppm);
        if draw < t {
            self.stats.duplicated += 1;
            let d = self.rng.random_range(1..=max_delay);
            let copy = WireSegment {
                transmission: Transmission::Duplicate,
                ..seg.clone()
            };
            self.schedule(0, seg);
            self.schedule(d, copy);
            return;
        }
        t += u64::from(f.corrupt_ppm);
        if draw < t {
            let mut seg = seg;
            self.corrupt(&mut seg);
            self.schedule(0, seg);
            return;
        }
        self.schedule(0, seg);
    }

    /// Flips one payload byte of `seg`, if it carries C2HData payload.
    fn corrupt(&mut self, seg: &mut WireSegment) {
        let (start, end) = (seg.offset, seg.offset + seg.data.len() as u64);
        // Payload bytes of this segment, span by span.
        let mut pieces = [(0u64, 0u64, 0u16, 0u64); 8];
        let mut n = 0;
        let mut total = 0u64;
        for s in self.scanner.overlapping(start, end) {
            if n == pieces.len() {
                break;
            }
            let (a, b) = (s.start.max(start), s.end.min(end));
            pieces[n] = (a, b, s.cccid, s.instance);
            total += b - a;
            n += 1;
        }
        if total == 0 {
            return;
        }
        let mut k = self.rng.random_range(0..=total - 1);
        for &(a, b, cccid, instance) in &pieces[..n] {
            if k < b - a {
                let offset = a + k;
                let i = (offset - start) as usize;
                let flip = self.rng.random_range(1..=255u8);
                seg.data[i] ^= flip;
                seg.corruption = Some(Corruption {
                    offset,
                    cccid,
                    instance,
                });
                self.stats.corrupted += 1;
                return;
            }
            k -= b - a;
        }
    }

    /// The next segment due at the current tick, in delivery order.
    pub fn poll(&mut self) -> Option<WireSegment> {
        let (&key, _) = self.queue.first_key_value()?;
        if key.0 > self.clock {
            return None;
        }
        let seg = self.queue.remove(&key)?;
        self.stats.delivered += 1;
        Some(seg)
    }

    /// Lets `slots` segment slots pass.
    pub fn tick(&mut self, slots: u64) {
        self.clock += slots;
    }

    /// Advances the clock to the next due segment (a timer firing while the sender is idle).
    /// False if nothing is in flight.
    pub fn advance(&mut self) -> bool {
        match self.queue.first_key_value() {
            Some((&(due, _), _)) => {
                self.clock = self.clock.max(due);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nvme_tcp_wire::pdu::{DataPduRepr, HeaderBuf};

    fn c2h_stream(pdus: &[(u16, u32, usize)], ddgst: bool) -> Vec<u8> {
        let mut out = Vec::new();
        for &(cccid, datao, len) in pdus {
            let hdr = HeaderBuf::new(&DataPduRepr {
                pdu_type: PduType::C2hData,
                flags: PduFlags::LAST_PDU,
                hdgst: false,
                ddgst,
                pda: 0,
                cccid,
                ttag: 0,
                datao,
                datal: len as u32,
            });
            out.extend_from_slice(hdr.as_bytes());
            out.extend(std::iter::repeat_n(0xA5, len));
            if ddgst {
                out.extend_from_slice(&[0, 0, 0, 0]);
            }
        }
        out
    }

    fn drain(w: &mut Wire) -> Vec<WireSegment> {
        let mut out = Vec::new();
        loop {
            w.tick(5);
            while let Some(s) = w.poll() {
                out.push(s);
            }
            if !w.advance() {
                return out;
            }
        }
    }

    /// Reassembles segments by taking the first copy of every byte.
    fn reassemble(segs: &[WireSegment], len: usize) -> Vec<Option<u8>> {
        let mut out = vec![None; len];
        for s in segs {
            for (i, &b) in s.data.iter().enumerate() {
                let o = s.offset as usize + i;
                if out[o].is_none() {
                    out[o] = Some(b);
                }
            }
        }
        out
    }

    fn lossy() -> WireConfig {
        WireConfig {
            seed: 42,
            faults: FaultConfig {
                drop_ppm: 50_000,
                reorder_ppm: 50_000,
                duplicate_ppm: 50_000,
                corrupt_ppm: 0,
            },
            ..WireConfig::default()
        }
    }

    #[test]
    fn without_faults_segments_arrive_in_order_and_cover_the_stream() {
        let stream = c2h_stream(&[(1, 0, 10_000), (2, 0, 5000)], true);
        let mut w = Wire::new(WireConfig::default(), 0);
        w.send(&stream[..7000]);
        w.send(&stream[7000..]);
        let segs = drain(&mut w);
        let mut off = 0;
        for s in &segs {
            assert_eq!(s.offset, off);
            assert!(s.data.len() <= 1448 && !s.data.is_empty());
            assert_eq!(s.transmission, Transmission::Original);
            off += s.data.len() as u64;
        }
        assert_eq!(off, stream.len() as u64);
        assert_eq!(
            w.stats().dropped + w.stats().reordered + w.stats().duplicated,
            0
        );
    }

    #[test]
    fn same_seed_same_schedule() {
        let stream = c2h_stream(&[(1, 0, 100_000)], false);
        let run = |seed| {
            let mut w = Wire::new(WireConfig { seed, ..lossy() }, 3);
            w.send(&stream);
            drain(&mut w)
                .iter()
                .map(|s| (s.offset, s.data.len(), s.transmission))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(9), run(9));
        assert_ne!(run(9), run(10));
    }

    #[test]
    fn every_fault_kind_happens_and_every_byte_still_arrives() {
        let stream = c2h_stream(&[(1, 0, 200_000), (2, 0, 100_000)], true);
        let mut w = Wire::new(lossy(), 0);
        w.send(&stream);
        let segs = drain(&mut w);
        let st = w.stats();
        assert!(
            st.dropped > 0 && st.reordered > 0 && st.duplicated > 0,
            "{st:?}"
        );
        assert!(
            segs.iter()
                .any(|s| s.transmission == Transmission::Retransmit)
        );
        assert!(
            segs.iter()
                .any(|s| s.transmission == Transmission::Duplicate)
        );
        // Out of order somewhere.
        assert!(segs.windows(2).any(|p| p[1].offset < p[0].offset));
        let got = reassemble(&segs, stream.len());
        assert!(got.iter().zip(&stream).all(|(g, &b)| *g == Some(b)));
    }

    #[test]
    fn corruption_only_touches_c2h_payload_and_names_its_read() {
        let stream = c2h_stream(&[(7, 0, 20_000), (7, 20_000, 20_000), (9, 0, 30_000)], true);
        let cfg = WireConfig {
            faults: FaultConfig {
                corrupt_ppm: 300_000,
                ..FaultConfig::NONE
            },
            ..WireConfig::default()
        };
        let mut w = Wire::new(cfg, 0);
        w.send(&stream);
        let segs = drain(&mut w);
        assert!(w.stats().corrupted > 0);
        let mut pdu_starts = vec![0u64, 20_028, 40_056];
        pdu_starts.push(stream.len() as u64);
        for s in &segs {
            for (i, &b) in s.data.iter().enumerate() {
                let o = s.offset + i as u64;
                if b != stream[o as usize] {
                    let c = s
                        .corruption
                        .expect("a changed byte is a recorded corruption");
                    assert_eq!(c.offset, o);
                    // Payload only: not in the 24-byte header or the 4-byte digest.
                    let k = pdu_starts.iter().rposition(|&p| p <= o).unwrap();
                    let rel = o - pdu_starts[k];
                    assert!(rel >= 24 && o < pdu_starts[k + 1] - 4, "offset {o}");
                    assert_eq!(c.cccid, if k < 2 { 7 } else { 9 });
                    assert_eq!(c.instance, 0);
                }
            }
        }
    }
}
