//! Faults on the wire in front of the NIC (target to host direction): drop, reorder,
//! duplicate, delay, and payload corruption that the TCP checksum does not catch (a byte
//! flipped and the checksum fixed, as a corrupting middlebox would). Each with a rate, all
//! from one seeded generator, so a run is repeatable for the same packet sequence.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::packet::{self, TcpSeg, VNET_HDR_LEN, vnet};

/// Fault rates (probabilities per TCP segment with payload, 0.0 to 1.0) and the seed.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct FaultConfig {
    /// The segment is lost.
    pub drop: f64,
    /// The segment is held back and sent after the next one.
    pub reorder: f64,
    /// The segment is sent twice.
    pub duplicate: f64,
    /// The segment is held back for `delay_time` (later segments overtake it).
    pub delay: f64,
    /// How long a delayed segment is held.
    pub delay_time: Duration,
    /// One payload byte is flipped and the TCP checksum fixed.
    pub corrupt: f64,
    /// Seed of the generator.
    pub seed: u64,
}

impl FaultConfig {
    /// No faults.
    pub const NONE: Self = Self {
        drop: 0.0,
        reorder: 0.0,
        duplicate: 0.0,
        delay: 0.0,
        delay_time: Duration::from_millis(5),
        corrupt: 0.0,
        seed: 0,
    };

    /// True if any fault can happen.
    pub fn any(&self) -> bool {
        self.drop > 0.0
            || self.reorder > 0.0
            || self.duplicate > 0.0
            || self.delay > 0.0
            || self.corrupt > 0.0
    }

    /// Checks that every rate is a probability.
    pub fn validate(&self) -> Result<(), String> {
        for (name, r) in [
            ("drop", self.drop),
            ("reorder", self.reorder),
            ("duplicate", self.duplicate),
            ("delay", self.delay),
            ("corrupt", self.corrupt),
        ] {
            if !(0.0..=1.0).contains(&r) {
                return Err(format!("fault rate {name} = {r}: must be in 0..=1"));
            }
        }
        Ok(())
    }
}

impl Default for FaultConfig {
    fn default() -> Self {
        Self::NONE
    }
}

/// Faults injected so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct FaultCounts {
    /// Segments dropped.
    pub dropped: u64,
    /// Segments reordered.
    pub reordered: u64,
    /// Segments duplicated.
    pub duplicated: u64,
    /// Segments delayed.
    pub delayed: u64,
    /// Segments corrupted (checksum fixed).
    pub corrupted: u64,
}

/// The fault stage: packets (virtio-net header + IPv4) in, packets out, some held back.
#[derive(Debug)]
pub struct Faults {
    cfg: FaultConfig,
    rng: ChaCha8Rng,
    /// A packet held back until the next one passes.
    reordered: Option<Vec<u8>>,
    /// Packets held back until their time.
    delayed: VecDeque<(Instant, Vec<u8>)>,
    /// Counts.
    pub counts: FaultCounts,
}

impl Faults {
    /// A fault stage with `cfg`.
    pub fn new(cfg: FaultConfig) -> Self {
        Self {
            cfg,
            rng: ChaCha8Rng::seed_from_u64(cfg.seed),
            reordered: None,
            delayed: VecDeque::new(),
            counts: FaultCounts::default(),
        }
    }

    /// Passes `pkt` (a complete packet with a full checksum, or anything that is not a TCP
    /// segment with payload, which passes untouched) through the faults; what goes on is
    /// appended to `out`.
    pub fn apply(&mut self, mut pkt: Vec<u8>, now: Instant, out: &mut Vec<Vec<u8>>) {
        let seg = pkt
            .get(VNET_HDR_LEN..)
            .and_then(TcpSeg::parse)
            .filter(|s| s.payload_len() > 0);
        let Some(seg) = seg else {
            out.push(pkt);
            return;
        };
        if self.hit(self.cfg.drop) {
            self.counts.dropped += 1;
            return;
        }
        if self.hit(self.cfg.corrupt) {
            let at = self.rng.random_range(0..seg.payload_len());
            let bit = 1u8 << self.rng.random_range(0..8);
            let ip = &mut pkt[VNET_HDR_LEN..];
            ip[seg.payload_start() + at] ^= bit;
            if pkt[0] & vnet::F_NEEDS_CSUM == 0 {
                packet::set_tcp_checksum(&mut pkt[VNET_HDR_LEN..], &seg);
            }
            self.counts.corrupted += 1;
        }
        if self.hit(self.cfg.duplicate) {
            self.counts.duplicated += 1;
            out.push(pkt.clone());
        }
        if self.hit(self.cfg.delay) {
            self.counts.delayed += 1;
            self.delayed.push_back((now + self.cfg.delay_time, pkt));
            return;
        }
        if self.reordered.is_none() && self.hit(self.cfg.reorder) {
            self.counts.reordered += 1;
            self.reordered = Some(pkt);
            return;
        }
        out.push(pkt);
        if let Some(held) = self.reordered.take() {
            out.push(held);
        }
    }

    /// Releases held packets whose time has come (all of them if `idle`: nothing else will
    /// overtake a reordered packet on an idle link). Returns when the next is due.
    pub fn release(&mut self, now: Instant, idle: bool, out: &mut Vec<Vec<u8>>) -> Option<Instant> {
        if idle && let Some(held) = self.reordered.take() {
            out.push(held);
        }
        while let Some((due, _)) = self.delayed.front() {
            if *due > now {
                return Some(*due);
            }
            if let Some((_, p)) = self.delayed.pop_front() {
                out.push(p);
            }
        }
        None
    }

    /// Packets held back.
    pub fn held(&self) -> usize {
        self.delayed.len() + usize::from(self.reordered.is_some())
    }

    fn hit(&mut self, rate: f64) -> bool {
        rate > 0.0 && self.rng.random_bool(rate.min(1.0))
    }
}
