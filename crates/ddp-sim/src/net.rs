//! The network side of a simulation: the embedded target's connections (sans-IO), the
//! controller → host wires, the NIC (the software DDP engine, which sees every segment in
//! wire order before the stack does) and the host's TCP reassembly.
//!
//! Host → controller bytes go to the target unchanged and at once; only the controller →
//! host direction, the one receive offload is about, is segmented and faulted.

use std::sync::Arc;
use std::time::Instant;

use ddp_engine::{RxSocket, SoftDdpDevice, TeardownMode};
use nvme_tcp_target::conn::{Connection as TargetConnection, PortContext};
use nvme_tcp_target::state::TargetState;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use ulp_ddp::SockId;

use crate::SimError;
use crate::tcp::{Delivery, Reassembly};
use crate::wire::{Corruption, Wire, WireConfig, WireStats};

/// The NIC's view of the offloaded sockets: what the offload ratios are computed against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct NicStats {
    /// Segments received on sockets with an offload context (`rx_packets` of those flows).
    pub segments: u64,
    /// Their TCP payload bytes.
    pub payload_bytes: u64,
}

/// The TCP socket ID of connection `index` (the admin queue is connection 0).
pub fn sock_id(index: usize) -> SockId {
    SockId(index as u64 + 1)
}

/// The initial sequence number of connection `index` for `seed`; chosen near the top of
/// the sequence space so that streams wrap.
pub fn isn(seed: u64, index: usize) -> u32 {
    let mut r = ChaCha8Rng::seed_from_u64(seed ^ (index as u64).wrapping_mul(0x9E37_79B9));
    u32::MAX - r.random_range(0..8u32 << 20)
}

struct NetConn {
    target: TargetConnection,
    wire: Wire,
    tcp: Reassembly,
    sk: SockId,
    isn: u32,
    /// The NIC's flow context, once the host offloaded the socket.
    rx: Option<RxSocket>,
}

/// Target + wires + NIC + host TCP.
pub struct NetSide {
    state: Arc<TargetState>,
    dev: SoftDdpDevice,
    wire: WireConfig,
    conns: Vec<NetConn>,
    out: Vec<u8>,
    placed: Vec<(u64, u32)>,
    nic: NicStats,
    slots_per_round: u64,
}

impl std::fmt::Debug for NetSide {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetSide")
            .field("conns", &self.conns.len())
            .field("nic", &self.nic)
            .finish_non_exhaustive()
    }
}

impl NetSide {
    /// A network in front of the target `state`, with the NIC `dev`; each round lets
    /// `slots_per_round` segment slots pass on every wire.
    pub fn new(
        state: Arc<TargetState>,
        dev: SoftDdpDevice,
        wire: WireConfig,
        slots_per_round: u64,
    ) -> Self {
        Self {
            state,
            dev,
            wire,
            conns: Vec::new(),
            out: Vec::with_capacity(1 << 20),
            placed: Vec::with_capacity(64),
            nic: NicStats::default(),
            slots_per_round: slots_per_round.max(1),
        }
    }

    /// Opens the next connection (index = number of connections so far).
    pub fn open(&mut self) -> usize {
        let index = self.conns.len();
        let target = TargetConnection::new(
            index as u64 + 1,
            Arc::clone(&self.state),
            PortContext {
                portid: 1,
                local_addr: std::net::SocketAddr::from(([127, 0, 0, 1], 4420)),
                in_capsule_data_size: 8192,
            },
            Box::new(|| Box::new(|| {})),
            Instant::now(),
        );
        self.conns.push(NetConn {
            target,
            wire: Wire::new(self.wire, index as u64),
            tcp: Reassembly::new(),
            sk: sock_id(index),
            isn: isn(self.wire.seed, index),
            rx: None,
        });
        index
    }

    /// One round: hands each connection's host → controller bytes to the target, sends what
    /// the target answers over the wire, lets the NIC and the host's TCP receive what
    /// arrives, and returns the in-order bytes for each connection. A connection whose stream
    /// received nothing in the round has its clock moved to the next due segment (a
    /// retransmission timer).
    pub fn step(&mut self, h2c: Vec<Vec<u8>>) -> Result<Vec<Option<Delivery>>, SimError> {
        let now = Instant::now();
        for (i, bytes) in h2c.into_iter().enumerate() {
            let Some(c) = self.conns.get_mut(i) else {
                return Err(SimError::UnknownConnection(i));
            };
            let mut rest = &bytes[..];
            while !rest.is_empty() {
                let mut buf = c.target.recv_buf();
                if buf.is_empty() {
                    c.target.flush(&mut self.out).map_err(SimError::Target)?;
                    buf = c.target.recv_buf();
                    if buf.is_empty() {
                        return Err(SimError::TargetStalled(i));
                    }
                }
                let n = buf.len().min(rest.len());
                buf[..n].copy_from_slice(&rest[..n]);
                c.target.on_recv(n, now);
                rest = &rest[n..];
                c.target.flush(&mut self.out).map_err(SimError::Target)?;
            }
            c.target.flush(&mut self.out).map_err(SimError::Target)?;
            if !self.out.is_empty() {
                c.wire.send(&self.out);
                self.out.clear();
            }
            if c.target.is_closed() {
                return Err(SimError::TargetClosed(
                    i,
                    c.target.close_reason().unwrap_or("closed").to_string(),
                ));
            }
        }
        for c in &mut self.conns {
            if c.rx.as_ref().is_none_or(|r| !r.is_live()) {
                c.rx = self.dev.rx_socket(c.sk);
            }
            c.wire.tick(self.slots_per_round);
            let mut any = false;
            let mut asked = false;
            loop {
                while !asked && let Some(seg) = c.wire.poll() {
                    any = true;
                    let seq = c.isn.wrapping_add(seg.offset as u32);
                    // The NIC sees the segment first, in wire order.
                    let v = match &c.rx {
                        Some(rx) => {
                            self.nic.segments += 1;
                            self.nic.payload_bytes += seg.data.len() as u64;
                            rx.on_segment(seq, &seg.data)
                        }
                        None => ddp_engine::SegmentVerdict::NONE,
                    };
                    self.placed.clear();
                    self.placed.extend(
                        v.placed()
                            .iter()
                            .map(|r| (seg.offset + u64::from(r.seq.wrapping_sub(seq)), r.len)),
                    );
                    c.tcp
                        .on_segment(seg.offset, &seg.data, v.crc, &self.placed, seg.corruption);
                    // The device asked the host to confirm a header: end the round so the
                    // host sees the request while the data behind it is still coming (as
                    // the kernel handles the resync CQE with the packet that carries it).
                    asked = v.resync_request.is_some();
                }
                // Nothing arrived in this round: the retransmission timer fires.
                if any || !c.wire.advance() {
                    break;
                }
            }
        }
        // The NIC completes its invalidations after the packets it already had; with a
        // modelled latency (in PDUs) it does so on its own, and anything still queued when the
        // wires fall idle is finished then (an idle NIC catches up).
        if self.dev.config().teardown == TeardownMode::Deferred || self.is_idle() {
            self.dev.flush_deferred();
        }
        Ok(self
            .conns
            .iter_mut()
            .map(|c| c.tcp.take_delivery())
            .collect())
    }

    /// True if no segment is in flight on any wire.
    pub fn is_idle(&self) -> bool {
        self.conns.iter().all(|c| c.wire.is_idle())
    }

    /// NIC counters.
    pub fn nic_stats(&self) -> NicStats {
        self.nic
    }

    /// Wire counters, summed over connections.
    pub fn wire_stats(&self) -> WireStats {
        let mut s = WireStats::default();
        for c in &self.conns {
            let w = c.wire.stats();
            s.segments += w.segments;
            s.bytes += w.bytes;
            s.delivered += w.delivered;
            s.dropped += w.dropped;
            s.reordered += w.reordered;
            s.duplicated += w.duplicated;
            s.corrupted += w.corrupted;
        }
        s
    }

    /// Corrupted bytes delivered to the host: `(connection index, corruption)`.
    pub fn delivered_corruptions(&self) -> Vec<(usize, Corruption)> {
        self.conns
            .iter()
            .enumerate()
            .flat_map(|(i, c)| c.tcp.delivered_corruptions().iter().map(move |&k| (i, k)))
            .collect()
    }
}
