//! Perturbations of the controller-to-host segments for robustness runs: what the network
//! could have done to the captured traffic. The device and the host's receiver see the same
//! perturbed sequence, as on a real wire. Seeded, so a run can be repeated.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// Probabilities (0.0..=1.0) of each perturbation, per segment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Perturb {
    /// Drop the segment and resend it 1 to 8 segments later.
    pub drop: f64,
    /// Swap the segment with the next one.
    pub reorder: f64,
    /// Send the segment twice.
    pub duplicate: f64,
    /// Split the segment in two at a random byte.
    pub resplit: f64,
    /// Flip one payload byte; the TCP checksum is "fixed" (the corruption reaches both the
    /// device and the host, as corruption the checksum misses does — the data digest's job).
    pub corrupt: f64,
    /// Seed of the generator.
    pub seed: u64,
}

/// How often each perturbation was applied.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct PerturbCounts {
    /// Segments dropped and resent later.
    pub dropped: u64,
    /// Segments swapped with the next.
    pub reordered: u64,
    /// Segments sent twice.
    pub duplicated: u64,
    /// Segments split in two.
    pub resplit: u64,
    /// Segments with a flipped byte.
    pub corrupted: u64,
}

/// Errors in a perturbation specification.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PerturbSpecError {
    /// Not `name=probability`.
    #[error("`{0}` is not name=probability")]
    Syntax(String),
    /// Unknown perturbation name.
    #[error("unknown perturbation `{0}` (drop, reorder, duplicate, resplit, corrupt)")]
    Unknown(String),
    /// Not a probability.
    #[error("`{0}` is not a probability between 0 and 1")]
    BadProbability(String),
}

impl Perturb {
    /// Parses `drop=0.01,reorder=0.02,...` (any subset; absent ones are 0).
    pub fn parse(spec: &str, seed: u64) -> Result<Self, PerturbSpecError> {
        let mut p = Perturb {
            seed,
            ..Perturb::default()
        };
        for item in spec.split(',').filter(|s| !s.trim().is_empty()) {
            let (name, val) = item
                .split_once('=')
                .ok_or_else(|| PerturbSpecError::Syntax(item.to_string()))?;
            let v: f64 = val
                .trim()
                .parse()
                .ok()
                .filter(|v: &f64| (0.0..=1.0).contains(v))
                .ok_or_else(|| PerturbSpecError::BadProbability(val.to_string()))?;
            match name.trim() {
                "drop" => p.drop = v,
                "reorder" => p.reorder = v,
                "duplicate" => p.duplicate = v,
                "resplit" => p.resplit = v,
                "corrupt" => p.corrupt = v,
                other => return Err(PerturbSpecError::Unknown(other.to_string())),
            }
        }
        Ok(p)
    }
}

/// A segment on its way to the host: sequence number and payload.
pub type Seg = (u32, Vec<u8>);

/// Applies perturbations to one direction's segments, in order. Keeps its own state (held
/// segments) across calls so a drop is resent after later segments.
#[derive(Debug)]
pub struct Perturber {
    p: Perturb,
    rng: ChaCha8Rng,
    /// Dropped segments with the number of segments still to pass before their resend.
    held: Vec<(u32, Seg)>,
    /// A segment kept back to be swapped with the next.
    swap: Option<Seg>,
    /// Counts.
    pub counts: PerturbCounts,
}

impl Perturber {
    /// A perturber for one connection (the seed is mixed with `stream_index`).
    pub fn new(p: Perturb, stream_index: u64) -> Self {
        Self {
            p,
            rng: ChaCha8Rng::seed_from_u64(
                p.seed ^ stream_index.wrapping_mul(0x9e37_79b9_7f4a_7c15),
            ),
            held: Vec::new(),
            swap: None,
            counts: PerturbCounts::default(),
        }
    }

    fn chance(&mut self, prob: f64) -> bool {
        prob > 0.0 && self.rng.random_bool(prob.min(1.0))
    }

    /// Feeds one segment; returns the segments to deliver now, in order.
    pub fn push(&mut self, seg: Seg) -> Vec<Seg> {
        let mut out = Vec::new();
        // Resends that are due.
        let mut due = Vec::new();
        self.held.retain_mut(|(left, s)| {
            if *left == 0 {
                due.push(std::mem::take(s));
                false
            } else {
                *left -= 1;
                true
            }
        });
        let (seq, mut payload) = seg;
        if payload.is_empty() {
            out.push((seq, payload));
            out.extend(due);
            return out;
        }
        if self.chance(self.p.corrupt) {
            let i = self.rng.random_range(0..payload.len());
            payload[i] ^= 1 << self.rng.random_range(0..8u32);
            self.counts.corrupted += 1;
        }
        let mut pieces = vec![(seq, payload)];
        if pieces[0].1.len() > 1 && self.chance(self.p.resplit) {
            let (s, mut p) = pieces.remove(0);
            let at = self.rng.random_range(1..p.len());
            let tail = p.split_off(at);
            pieces = vec![(s, p), (s.wrapping_add(at as u32), tail)];
            self.counts.resplit += 1;
        }
        for piece in pieces {
            if self.chance(self.p.drop) {
                let later = self.rng.random_range(1..=8u32);
                self.held.push((later, piece));
                self.counts.dropped += 1;
                continue;
            }
            let dup = self.chance(self.p.duplicate);
            if dup {
                self.counts.duplicated += 1;
            }
            let copies = if dup { 2 } else { 1 };
            for _ in 0..copies {
                let piece = piece.clone();
                if let Some(prev) = self.swap.take() {
                    out.push(piece);
                    out.push(prev);
                } else if self.chance(self.p.reorder) {
                    self.swap = Some(piece);
                    self.counts.reordered += 1;
                } else {
                    out.push(piece);
                }
            }
        }
        out.extend(due);
        out
    }

    /// Everything still held, at the end of the stream.
    pub fn flush(&mut self) -> Vec<Seg> {
        let mut out: Vec<Seg> = self.swap.take().into_iter().collect();
        out.extend(self.held.drain(..).map(|(_, s)| s));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_parses_and_rejects_nonsense() {
        let p = Perturb::parse("drop=0.1, reorder=0.2,corrupt=0", 7).expect("valid");
        assert_eq!((p.drop, p.reorder, p.corrupt, p.seed), (0.1, 0.2, 0.0, 7));
        assert!(matches!(
            Perturb::parse("drop", 0),
            Err(PerturbSpecError::Syntax(_))
        ));
        assert!(matches!(
            Perturb::parse("lose=0.1", 0),
            Err(PerturbSpecError::Unknown(_))
        ));
        assert!(matches!(
            Perturb::parse("drop=2", 0),
            Err(PerturbSpecError::BadProbability(_))
        ));
    }

    #[test]
    fn without_corruption_every_byte_arrives_and_the_same_seed_repeats() {
        let p =
            Perturb::parse("drop=0.3,reorder=0.3,duplicate=0.3,resplit=0.3", 42).expect("valid");
        let run = || {
            let mut pt = Perturber::new(p, 1);
            let mut out = Vec::new();
            for i in 0..200u32 {
                out.extend(pt.push((i * 10, vec![i as u8; 10])));
            }
            out.extend(pt.flush());
            (out, pt.counts)
        };
        let (a, ca) = run();
        let (b, _) = run();
        assert_eq!(a, b);
        assert!(ca.dropped > 0 && ca.reordered > 0 && ca.duplicated > 0 && ca.resplit > 0);
        let mut have = vec![false; 2000];
        for (seq, p) in &a {
            for (k, byte) in p.iter().enumerate() {
                let at = *seq as usize + k;
                assert_eq!(*byte, (at / 10) as u8);
                have[at] = true;
            }
        }
        assert!(have.iter().all(|&h| h));
    }
}
