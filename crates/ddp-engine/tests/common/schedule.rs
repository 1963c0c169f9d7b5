//! Segment schedules: how the stream's bytes arrive at the device — segmented, lost and
//! retransmitted (possibly with other boundaries, overlapping what arrived), reordered,
//! duplicated, corrupted.

use super::stream::Stream;
use rand::Rng;
use rand::seq::IndexedRandom;
use rand_chacha::ChaCha8Rng;

/// One segment arrival: stream bytes `start .. end`, optionally with one payload byte
/// flipped in this copy only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arrival {
    pub start: u64,
    pub end: u64,
    /// (stream offset, xor mask) of a corrupted byte in this copy.
    pub corrupt: Option<(u64, u8)>,
}

#[derive(Debug, Clone)]
pub struct ScheduleParams {
    /// Segment sizes to pick from.
    pub mss: Vec<u32>,
    pub p_loss: f64,
    pub p_reorder: f64,
    pub reorder_depth: u32,
    pub p_dup: f64,
    /// Probability that a retransmission has other boundaries than the lost segment
    /// (starting earlier and/or ending later: overlapping what already arrived).
    pub p_overlap: f64,
    /// Probability that a copy has one data or data-digest byte flipped.
    pub p_corrupt: f64,
}

impl ScheduleParams {
    pub fn clean(mss: Vec<u32>) -> Self {
        Self {
            mss,
            p_loss: 0.0,
            p_reorder: 0.0,
            reorder_depth: 0,
            p_dup: 0.0,
            p_overlap: 0.0,
            p_corrupt: 0.0,
        }
    }

    pub fn random(rng: &mut ChaCha8Rng) -> Self {
        let mss_pool = [100u32, 536, 1448, 1448, 1448, 4096, 8948, 65483];
        let n = rng.random_range(1..=3);
        let mut mss: Vec<u32> = (0..n).map(|_| *mss_pool.choose(rng).unwrap()).collect();
        if rng.random_bool(0.1) {
            // Tiny segments: headers and digests split everywhere.
            mss.push(*[1u32, 7, 24].choose(rng).unwrap());
        }
        let level = *[0.0, 0.001, 0.01, 0.05, 0.2].choose(rng).unwrap();
        Self {
            mss,
            p_loss: level * rng.random_range(0..=2) as f64,
            p_reorder: level * rng.random_range(0..=2) as f64,
            reorder_depth: rng.random_range(1..=8) as u32,
            p_dup: level * rng.random_range(0..=2) as f64,
            p_overlap: *[0.0, 0.5, 1.0].choose(rng).unwrap(),
            p_corrupt: level * rng.random_range(0..=1) as f64,
        }
    }
}

/// The sender's and network's part. The sender knows, as TCP's cumulative ACK tells it,
/// how far an in-order receiver got (`r`); while the receiver lags it either retransmits
/// the next missing segment (fast retransmit, maybe with other boundaries that overlap what
/// arrived) or goes back to `r` and resends everything after it, re-segmented. The network
/// loses, delays (reorders), duplicates and corrupts copies. A clean in-order tail ends the
/// schedule, so the receiver always gets the whole stream.
pub fn generate(rng: &mut ChaCha8Rng, stream: &Stream, p: &ScheduleParams) -> Vec<Arrival> {
    let total = stream.len();
    let mut out: Vec<Arrival> = Vec::new();
    let mut delayed: Vec<(usize, Arrival)> = Vec::new();
    let mut pos = 0u64;
    let mut r = 0u64;
    let mut stalled = 0u32;
    let mss = |rng: &mut ChaCha8Rng| u64::from(*p.mss.choose(rng).unwrap()).max(1);
    let corrupt = |rng: &mut ChaCha8Rng, start: u64, end: u64| {
        if !rng.random_bool(p.p_corrupt) {
            return None;
        }
        let off = rng.random_range(start..end);
        stream
            .is_payload(off)
            .then(|| (off, rng.random_range(1..=255) as u8))
    };
    let budget = 64 + 4 * (total / u64::from(p.mss.iter().copied().min().unwrap_or(1).max(1)));
    let mut sends = 0u64;
    while r < total && sends < budget {
        sends += 1;
        let (start, end) = if r < pos && (stalled > 3 || pos >= total) {
            stalled = 0;
            let m = mss(rng);
            let back = if rng.random_bool(p.p_overlap) {
                rng.random_range(0..=m)
            } else {
                0
            };
            if rng.random_bool(0.5) {
                // Go-back-N.
                pos = r.saturating_sub(back);
                let e = (pos + mss(rng)).min(total);
                let seg = (pos, e);
                pos = e;
                seg
            } else {
                // Fast retransmit of the first missing bytes.
                let s = r.saturating_sub(back);
                let m = mss(rng);
                let e = (r + m).min(total).max(s + 1);
                (s, e)
            }
        } else if pos < total {
            let e = (pos + mss(rng)).min(total);
            let seg = (pos, e);
            pos = e;
            seg
        } else {
            stalled += 1;
            continue;
        };
        if r < pos {
            stalled += 1;
        }
        if !rng.random_bool(p.p_loss) {
            let a = Arrival {
                start,
                end,
                corrupt: corrupt(rng, start, end),
            };
            if rng.random_bool(p.p_reorder) {
                let at =
                    out.len() + rng.random_range(1..=u64::from(p.reorder_depth.max(1))) as usize;
                delayed.push((at, a));
            } else {
                deliver(&mut out, &mut r, a);
            }
            if rng.random_bool(p.p_dup) {
                let c = corrupt(rng, start, end);
                deliver(&mut out, &mut r, Arrival { corrupt: c, ..a });
            }
        }
        let now = out.len();
        let mut i = 0;
        while i < delayed.len() {
            if delayed[i].0 <= now {
                let a = delayed.swap_remove(i).1;
                deliver(&mut out, &mut r, a);
            } else {
                i += 1;
            }
        }
    }
    delayed.sort_by_key(|d| d.0);
    for (_, a) in delayed {
        deliver(&mut out, &mut r, a);
    }
    // Clean tail from wherever the receiver stands.
    while r < total {
        let e = (r + mss(rng)).min(total);
        let a = Arrival {
            start: r,
            end: e,
            corrupt: None,
        };
        deliver(&mut out, &mut r, a);
    }
    out
}

fn deliver(out: &mut Vec<Arrival>, r: &mut u64, a: Arrival) {
    if a.start <= *r && *r < a.end {
        *r = a.end;
    }
    out.push(a);
}
