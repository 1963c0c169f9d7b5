//! The resync handshake's meeting point, as nvme-tcp implements it: the device stores its
//! latest request atomically; on every PDU header the ULP parses, the header is checked
//! against it and, only if it starts exactly at the requested sequence number, the request
//! is confirmed. A device implementation keeps one per socket and answers
//! [`UlpDdpSocket::pdu_header`](crate::UlpDdpSocket::pdu_header) with it.

use crate::device::{ResyncAction, ResyncFlags};
use std::sync::atomic::{AtomicU64, Ordering};

/// The pending resync request of one socket: `seq << 32 | flags` in one atomic, so the
/// device's callback (`resync_request`) and the ULP's receive path need no lock.
#[derive(Debug, Default)]
pub struct ResyncTracker {
    req: AtomicU64,
}

impl ResyncTracker {
    /// A tracker with nothing pending.
    pub const fn new() -> Self {
        Self {
            req: AtomicU64::new(0),
        }
    }

    /// Records a request (the kernel's `resync_request` callback). A newer request replaces
    /// the older one. Returns true.
    pub fn request(&self, seq: u32, flags: ResyncFlags) -> bool {
        self.req.store(
            (u64::from(seq) << 32) | u64::from(flags.0),
            Ordering::Release,
        );
        true
    }

    /// The pending request, if any.
    pub fn pending(&self) -> Option<u32> {
        let v = self.req.load(Ordering::Acquire);
        ResyncFlags(v as u32)
            .contains(ResyncFlags::PENDING)
            .then_some((v >> 32) as u32)
    }

    /// Called for every PDU header the ULP parses, with the TCP sequence number of the
    /// header's first byte. Clears the request on an exact match and returns
    /// [`ResyncAction::Confirmed`]: the caller then tells the device.
    pub fn on_pdu_header(&self, pdu_seq: u32) -> ResyncAction {
        let v = self.req.load(Ordering::Acquire);
        let flags = ResyncFlags(v as u32);
        if !flags.contains(ResyncFlags::PENDING) {
            return ResyncAction::None;
        }
        let requested = (v >> 32) as u32;
        // TCP sequence comparison (wraps): before(pdu_seq, requested) → keep waiting.
        if (pdu_seq.wrapping_sub(requested) as i32) < 0 {
            return ResyncAction::None;
        }
        if pdu_seq != requested {
            return ResyncAction::Mismatch { requested, pdu_seq };
        }
        let cleared = v & !u64::from(ResyncFlags::PENDING.0);
        match self
            .req
            .compare_exchange(v, cleared, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => ResyncAction::Confirmed(pdu_seq),
            // A newer request arrived meanwhile; it is answered at a later header.
            Err(_) => ResyncAction::None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confirms_only_the_exact_header() {
        let t = ResyncTracker::new();
        assert_eq!(t.on_pdu_header(100), ResyncAction::None);
        t.request(500, ResyncFlags::PENDING);
        assert_eq!(t.pending(), Some(500));
        assert_eq!(t.on_pdu_header(400), ResyncAction::None);
        assert_eq!(t.on_pdu_header(500), ResyncAction::Confirmed(500));
        assert_eq!(t.pending(), None);
        assert_eq!(t.on_pdu_header(500), ResyncAction::None);
    }

    #[test]
    fn a_passed_request_is_not_answered() {
        let t = ResyncTracker::new();
        t.request(500, ResyncFlags::PENDING);
        assert_eq!(
            t.on_pdu_header(600),
            ResyncAction::Mismatch {
                requested: 500,
                pdu_seq: 600
            }
        );
        assert_eq!(t.pending(), Some(500));
        // A newer request replaces it.
        t.request(700, ResyncFlags::PENDING);
        assert_eq!(t.on_pdu_header(700), ResyncAction::Confirmed(700));
    }

    #[test]
    fn sequence_comparison_wraps() {
        let t = ResyncTracker::new();
        t.request(5, ResyncFlags::PENDING);
        // u32::MAX - 10 is before 5 in TCP sequence space.
        assert_eq!(t.on_pdu_header(u32::MAX - 10), ResyncAction::None);
        assert_eq!(t.on_pdu_header(5), ResyncAction::Confirmed(5));
    }
}
