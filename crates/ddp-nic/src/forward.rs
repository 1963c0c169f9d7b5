//! The forwarding thread: moves packets between the two TUN devices and, on the way from
//! the target to the host, runs the offload engine on every TCP segment of an offloaded
//! connection and publishes its marks before the segment reaches the host's kernel.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ddp_engine::{RxSocket, SegmentVerdict, SoftDdpDevice};
use serde::{Deserialize, Serialize};
use ulp_ddp::SockId;

use crate::NicConfig;
use crate::fault::{FaultCounts, Faults};
use crate::marks::{Flow, FlowKey, FlowTable, key_of};
use crate::packet::{self, TcpSeg, VNET_HDR_LEN, VnetHdr, tcp_flags, vnet};
use crate::tun::Tun;

/// Packets read from one device before looking at the other.
const BATCH: usize = 256;
/// Connections the forwarder tracks before it forgets those nobody uses.
const MAX_TRACKED: usize = 4096;
/// Poll timeout while nothing is held back.
const IDLE_POLL: Duration = Duration::from_millis(100);
/// Poll timeout while a reordered packet waits for its successor.
const HELD_POLL: Duration = Duration::from_millis(1);

/// What the NIC did, for `stats` and the benchmark.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct NicCounters {
    /// Packets from the host to the target.
    pub packets_to_target: u64,
    /// Packets from the target to the host (after re-segmentation, before faults).
    pub packets_to_host: u64,
    /// TSO/GSO super-packets split into wire-sized segments.
    pub super_packets_split: u64,
    /// Target-to-host TCP segments whose checksum failed (passed on untouched, not offloaded).
    pub checksum_failed: u64,
    /// Segments fed to the offload engine.
    pub segments_offloaded: u64,
    /// Connections seen being established.
    pub connections: u64,
    /// Faults injected.
    pub faults: FaultCounts,
    /// CPU time of the forwarding thread (the device's CPU), nanoseconds.
    pub thread_cpu_ns: u64,
}

/// State shared between the thread and its owner.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    pub(crate) stop: AtomicBool,
    pub(crate) counters: Mutex<NicCounters>,
}

/// Per-connection state of the forwarder.
struct FwdFlow {
    flow: Arc<Flow>,
    rx: Option<RxSocket>,
    /// The host removed the offload (`sk_del`): no more look-ups.
    done: bool,
    /// Highest stream offset seen (exclusive), to extend 32-bit sequence numbers.
    high: u64,
}

impl FwdFlow {
    /// The stream offset of sequence number `seq`: the 64-bit value nearest to `high`.
    fn offset(&self, seq: u32) -> u64 {
        let rel = u64::from(seq.wrapping_sub(self.flow_isn()));
        let base = self.high & !0xffff_ffff;
        let mut off = base | rel;
        if off + (1 << 31) < self.high {
            off += 1 << 32;
        } else if off > self.high + (1 << 31) && off >= 1 << 32 {
            off -= 1 << 32;
        }
        off
    }

    fn flow_isn(&self) -> u32 {
        self.flow.isn_of()
    }
}

/// The forwarder.
pub(crate) struct Forwarder {
    pub(crate) host: Tun,
    pub(crate) target: Tun,
    pub(crate) wake: OwnedFd,
    pub(crate) cfg: NicConfig,
    pub(crate) dev: Option<SoftDdpDevice>,
    pub(crate) flows: Arc<FlowTable>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) next_sk: Arc<std::sync::atomic::AtomicU64>,
}

struct State {
    flows: HashMap<FlowKey, FwdFlow>,
    faults: Option<Faults>,
    counters: NicCounters,
    verdict: SegmentVerdict,
    split: Vec<Vec<u8>>,
    ready: Vec<Vec<u8>>,
}

impl Forwarder {
    /// Runs until asked to stop. Errors of the devices end the loop (logged).
    pub(crate) fn run(self) {
        let mut st = State {
            flows: HashMap::new(),
            faults: self.cfg.faults.any().then(|| Faults::new(self.cfg.faults)),
            counters: NicCounters::default(),
            verdict: SegmentVerdict::NONE,
            split: Vec::new(),
            ready: Vec::new(),
        };
        let mut buf = vec![0u8; VNET_HDR_LEN + 65536 + 256];
        if let Err(e) = self.run_loop(&mut st, &mut buf) {
            tracing::error!(error = %e, "software NIC forwarding stopped");
        }
        self.publish_counters(&mut st);
    }

    fn run_loop(&self, st: &mut State, buf: &mut [u8]) -> io::Result<()> {
        let mut next_due: Option<Instant> = None;
        while !self.shared.stop.load(Ordering::Acquire) {
            let now = Instant::now();
            let held = st.faults.as_ref().is_some_and(|f| f.held() > 0);
            let mut timeout = if held { HELD_POLL } else { IDLE_POLL };
            if let Some(d) = next_due {
                timeout = timeout.min(d.saturating_duration_since(now));
            }
            poll3(&self.host, &self.target, &self.wake, timeout)?;
            let mut moved = false;
            for _ in 0..BATCH {
                match self.host.recv(buf) {
                    Ok(n) => {
                        moved = true;
                        st.counters.packets_to_target += 1;
                        self.target.send(&buf[..n])?;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            for _ in 0..BATCH {
                match self.target.recv(buf) {
                    Ok(n) => {
                        moved = true;
                        self.target_packet(st, &buf[..n])?;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            if let Some(f) = st.faults.as_mut() {
                next_due = f.release(Instant::now(), !moved, &mut st.ready);
                self.deliver_ready(st)?;
            }
            if !moved {
                // The link is idle: the device finishes its queued work (deferred teardowns).
                if let Some(d) = &self.dev {
                    d.flush_deferred();
                }
            }
            self.publish_counters(st);
        }
        Ok(())
    }

    fn publish_counters(&self, st: &mut State) {
        if let Some(f) = &st.faults {
            st.counters.faults = f.counts;
        }
        st.counters.thread_cpu_ns = thread_cpu_ns();
        *self
            .shared
            .counters
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = st.counters;
    }

    /// A packet from the target: re-segmented if asked, through the faults, to the host.
    fn target_packet(&self, st: &mut State, pkt: &[u8]) -> io::Result<()> {
        let hdr = VnetHdr::parse(pkt).unwrap_or_default();
        let ip = pkt.get(VNET_HDR_LEN..).unwrap_or(&[]);
        let seg = TcpSeg::parse(ip);
        let gso = hdr.gso_type & !vnet::GSO_ECN == vnet::GSO_TCPV4;
        match seg {
            Some(seg) if self.cfg.resegment && (gso || hdr.flags & vnet::F_NEEDS_CSUM != 0) => {
                let mss = if gso && hdr.gso_size > 0 {
                    usize::from(hdr.gso_size)
                } else {
                    usize::MAX
                };
                let before = st.split.len();
                packet::segment(ip, &seg, mss, &mut st.split);
                if st.split.len() - before > 1 {
                    st.counters.super_packets_split += 1;
                }
            }
            _ => st.split.push(pkt.to_vec()),
        }
        st.counters.packets_to_host += st.split.len() as u64;
        let now = Instant::now();
        let mut split = std::mem::take(&mut st.split);
        for p in split.drain(..) {
            match st.faults.as_mut() {
                Some(f) => f.apply(p, now, &mut st.ready),
                None => st.ready.push(p),
            }
        }
        st.split = split;
        self.deliver_ready(st)
    }

    fn deliver_ready(&self, st: &mut State) -> io::Result<()> {
        let mut ready = std::mem::take(&mut st.ready);
        for mut p in ready.drain(..) {
            self.nic_rx(st, &mut p);
            self.host.send(&p)?;
        }
        st.ready = ready;
        Ok(())
    }

    /// What the NIC does with a packet it receives from the wire, before handing it to the
    /// host: checksum check, connection tracking, the offload engine, the marks.
    fn nic_rx(&self, st: &mut State, pkt: &mut [u8]) {
        let Some(hdr) = VnetHdr::parse(pkt) else {
            return;
        };
        let Some(seg) = TcpSeg::parse(&pkt[VNET_HDR_LEN..]) else {
            return;
        };
        let partial = hdr.flags & vnet::F_NEEDS_CSUM != 0;
        // A partial checksum comes from the sending stack itself (never on a wire): valid by
        // construction. Anything else is checked, as a NIC does before it offloads.
        if !partial && !packet::tcp_checksum_ok(&pkt[VNET_HDR_LEN..], &seg) {
            st.counters.checksum_failed += 1;
            return;
        }
        let key = key_of(seg.src, seg.dst);
        if seg.flags & (tcp_flags::SYN | tcp_flags::ACK) == tcp_flags::SYN | tcp_flags::ACK {
            let sk = SockId(self.next_sk.fetch_add(1, Ordering::Relaxed));
            let flow = Arc::new(Flow::new(sk, seg.seq.wrapping_add(1)));
            self.flows.insert(key, Arc::clone(&flow));
            st.flows.insert(
                key,
                FwdFlow {
                    flow,
                    rx: None,
                    done: false,
                    high: 0,
                },
            );
            st.counters.connections += 1;
            if st.flows.len() > MAX_TRACKED {
                // Keep the connections someone still uses (the flow table or a host socket
                // holds them); forget the rest (closed without FIN/RST seen, or evicted).
                st.flows.retain(|_, f| Arc::strong_count(&f.flow) > 1);
            }
        } else if seg.flags & (tcp_flags::RST | tcp_flags::FIN) != 0 {
            self.flows.remove(&key);
            st.flows.remove(&key);
        } else if seg.payload_len() > 0
            && let Some(dev) = &self.dev
            && let Some(fl) = st.flows.get_mut(&key)
        {
            if fl.rx.is_none() && !fl.done {
                fl.rx = dev.rx_socket(fl.flow.sock_id_of());
            }
            if let Some(rx) = &fl.rx {
                if !rx.is_live() {
                    fl.rx = None;
                    fl.done = true;
                } else {
                    let payload =
                        &pkt[VNET_HDR_LEN + seg.payload_start()..VNET_HDR_LEN + seg.total];
                    rx.on_segment_into(seg.seq, payload, &mut st.verdict);
                    st.counters.segments_offloaded += 1;
                    let start = fl.offset(seg.seq);
                    let len = payload.len() as u64;
                    fl.high = fl.high.max(start + len);
                    let v = &st.verdict;
                    if v.crc || v.ddp() {
                        let placed = v.placed().iter().map(|r| {
                            (
                                start + u64::from(r.seq.wrapping_sub(seg.seq)),
                                u64::from(r.len),
                            )
                        });
                        fl.flow.publish(start, len, v.crc, placed);
                    }
                }
            }
        }
        if !partial {
            pkt[0] = vnet::F_DATA_VALID;
        }
    }
}

/// Waits until one of the devices has a packet, `wake` is signalled, or `timeout` passes.
fn poll3(a: &Tun, b: &Tun, wake: &OwnedFd, timeout: Duration) -> io::Result<()> {
    let mut fds = [
        libc::pollfd {
            fd: a.as_fd().as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: b.as_fd().as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: wake.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
    // SAFETY: `fds` is a valid array of 3 pollfd for the duration of the call.
    let r = unsafe { libc::poll(fds.as_mut_ptr(), 3, ms) };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    Ok(())
}

/// CPU time the calling thread has used.
fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write to.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } != 0 {
        return 0;
    }
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}
