//! The software NIC on live kernel TCP: our target inside the target namespace, our host
//! inside the host namespace, the offload engine in between. Needs root (CAP_NET_ADMIN +
//! CAP_SYS_ADMIN) for the namespaces and TUN devices; CI runs as root. Without the
//! privileges each test says so and returns.

use std::net::SocketAddr;
use std::time::Duration;

use ddp_nic::{FaultConfig, NicConfig, NicError, SoftNic, TARGET_ADDR};
use nvme_tcp_host::{Completion, ConnectOptions, Controller, IoBuf, IoError, IoQueue};
use nvme_tcp_target::namespace::{Backing, LbaSize};
use nvme_tcp_target::{NamespaceConfig, SubsystemConfig, Target, TargetConfig, TargetHandle};
use rand::{RngCore, SeedableRng};

const NQN: &str = "nqn.2024-01.io.test:soft-nic";
const PORT: u16 = 4420;
const READ: usize = 128 << 10;

fn nic(cfg: NicConfig) -> Option<SoftNic> {
    match SoftNic::start(cfg) {
        Ok(n) => Some(n),
        Err(e @ NicError::Permission { .. }) => {
            eprintln!("skipped: {e}");
            None
        }
        Err(e) => panic!("software NIC: {e}"),
    }
}

/// Our target in the target namespace; stopped from inside it (it wakes its listener by
/// connecting to it), also when a test fails.
struct NsTarget {
    ns: ddp_nic::NetNs,
    t: Option<TargetHandle>,
}

impl Drop for NsTarget {
    fn drop(&mut self) {
        let _in = self.ns.enter().expect("enter the target namespace");
        if let Some(t) = self.t.take() {
            t.shutdown();
        }
    }
}

/// Our target, listening on the target side of the NIC.
fn target(nic: &SoftNic, mib: u64) -> NsTarget {
    NsTarget {
        ns: nic.target_ns().try_clone().expect("namespace handle"),
        t: Some(start_target(nic, mib)),
    }
}

fn start_target(nic: &SoftNic, mib: u64) -> TargetHandle {
    let _in = nic.target_ns().enter().expect("enter the target namespace");
    let mut ns = NamespaceConfig::new(Backing::Ram { size: mib << 20 });
    ns.lba_size = LbaSize::B4096;
    let addr = SocketAddr::from((TARGET_ADDR, PORT));
    let cfg = TargetConfig::single_port(addr).subsystem(SubsystemConfig::new(NQN).namespace(ns));
    Target::start(cfg).expect("target starts")
}

fn opts(nic: &SoftNic, ddgst: bool) -> ConnectOptions {
    let mut o = ConnectOptions::new(TARGET_ADDR.to_string(), PORT, NQN);
    o.ddgst = ddgst;
    o.nr_io_queues = 1;
    o.queue_size = 32;
    o.reconnect_delay = Duration::from_millis(200);
    nic.configure_host(&mut o);
    o
}

fn random(len: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; len];
    rand_chacha::ChaCha8Rng::seed_from_u64(seed).fill_bytes(&mut v);
    v
}

/// Writes `data` at block 0 in 128 KiB writes.
fn write_all(q: &mut IoQueue, data: &[u8]) {
    for (i, chunk) in data.chunks(READ).enumerate() {
        let c = run(q, |q, ud| {
            q.submit_write(
                1,
                (i * READ / 4096) as u64,
                (chunk.len() / 4096) as u32,
                IoBuf::Contig(chunk.to_vec()),
                ud,
            )
        });
        c.result.expect("write");
    }
}

fn run(
    q: &mut IoQueue,
    submit: impl FnOnce(&mut IoQueue, u64) -> Result<u16, nvme_tcp_host::queue::SubmitError>,
) -> Completion {
    static UD: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let ud = UD.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    submit(q, ud).map_err(|e| e.reason).expect("submit");
    q.wait_for(ud).expect("queue alive")
}

/// Reads `len` bytes from block 0 in 128 KiB reads, 8 in flight; returns each read's result.
fn read_all(q: &mut IoQueue, len: usize) -> Vec<(usize, Result<Vec<u8>, IoError>)> {
    read_all_in(q, len, READ)
}

/// Reads `len` bytes from block 0 in reads of `size` bytes, 8 in flight.
fn read_all_in(q: &mut IoQueue, len: usize, size: usize) -> Vec<(usize, Result<Vec<u8>, IoError>)> {
    let n = len / size;
    let mut out: Vec<Option<Result<Vec<u8>, IoError>>> = (0..n).map(|_| None).collect();
    let mut next = 0;
    let mut inflight = 0;
    while out.iter().any(Option::is_none) {
        while next < n && inflight < 8 {
            q.submit_read(
                1,
                (next * size / 4096) as u64,
                (size / 4096) as u32,
                IoBuf::Contig(vec![0; size]),
                next as u64,
            )
            .map_err(|e| e.reason)
            .expect("submit read");
            next += 1;
            inflight += 1;
        }
        q.poll(Duration::from_millis(100)).expect("queue alive");
        while let Some(c) = q.pop_completion() {
            inflight -= 1;
            let i = c.user_data as usize;
            out[i] = Some(
                c.result
                    .map(|_| c.buf.map(|b| b.to_vec()).unwrap_or_default()),
            );
        }
    }
    out.into_iter()
        .enumerate()
        .map(|(i, r)| (i, r.unwrap_or(Err(IoError::QueueLost("no completion")))))
        .collect()
}

fn connect(nic: &SoftNic, ddgst: bool) -> (Controller, IoQueue) {
    let mut ctrl = Controller::connect(opts(nic, ddgst)).expect("connect through the NIC");
    let q = ctrl.take_io_queues().pop().expect("an I/O queue");
    (ctrl, q)
}

#[test]
fn reads_through_the_nic_are_placed_and_verified_with_the_data_intact() {
    let Some(nic) = nic(NicConfig::default()) else {
        return;
    };
    let t = target(&nic, 16);
    let _host = nic.host_ns().enter().expect("enter the host namespace");
    for ddgst in [true, false] {
        let (ctrl, mut q) = connect(&nic, ddgst);
        assert!(q.is_offloaded(), "the I/O queue is offloaded");
        let data = random(4 << 20, u64::from(ddgst));
        write_all(&mut q, &data);
        let before = q.stats();
        for (i, r) in read_all(&mut q, data.len()) {
            let got = r.expect("read");
            assert!(
                got == data[i * READ..(i + 1) * READ],
                "read {i}: data differs"
            );
        }
        let s = q.stats();
        let placed = s.rx_offload_placed_bytes - before.rx_offload_placed_bytes;
        assert!(
            placed * 100 >= data.len() as u64 * 95,
            "ddgst={ddgst}: placed {placed} of {} C2HData bytes",
            data.len()
        );
        if ddgst {
            let verified = s.rx_offload_ddgst_pdus - before.rx_offload_ddgst_pdus;
            assert!(verified > 0, "no digest verified by the device");
        }
        assert_eq!(s.ddp_anomalies, 0);
        q.close();
        ctrl.shutdown();
    }
    drop(_host);
    drop(t);
    let c = nic.stop();
    assert!(c.segments_offloaded > 0);
}

#[test]
fn offload_off_runs_the_same_path_without_placement() {
    let Some(nic) = nic(NicConfig {
        offload: false,
        ..NicConfig::default()
    }) else {
        return;
    };
    let t = target(&nic, 8);
    let _host = nic.host_ns().enter().expect("enter the host namespace");
    let (ctrl, mut q) = connect(&nic, true);
    assert!(!q.is_offloaded());
    let data = random(2 << 20, 7);
    write_all(&mut q, &data);
    for (i, r) in read_all(&mut q, data.len()) {
        assert!(
            r.expect("read") == data[i * READ..(i + 1) * READ],
            "read {i}: data differs"
        );
    }
    assert_eq!(q.stats().rx_offload_placed_bytes, 0);
    q.close();
    ctrl.shutdown();
    drop(_host);
    drop(t);
}

#[test]
fn with_loss_reordering_duplication_and_delay_the_data_stays_correct_and_resyncs_confirm() {
    let Some(nic) = nic(NicConfig {
        faults: FaultConfig {
            drop: 0.03,
            reorder: 0.02,
            duplicate: 0.01,
            delay: 0.005,
            delay_time: Duration::from_millis(3),
            seed: 11,
            ..FaultConfig::NONE
        },
        ..NicConfig::default()
    }) else {
        return;
    };
    let t = target(&nic, 8);
    let _host = nic.host_ns().enter().expect("enter the host namespace");
    let (ctrl, mut q) = connect(&nic, true);
    let data = random(4 << 20, 3);
    write_all(&mut q, &data);
    for (i, r) in read_all(&mut q, data.len()) {
        assert!(
            r.expect("read") == data[i * READ..(i + 1) * READ],
            "read {i}: data differs"
        );
    }
    let s = q.stats();
    assert!(s.rx_offload_placed_bytes > 0, "nothing placed under faults");
    let d = nic.device().expect("offload on").diagnostics();
    q.close();
    ctrl.shutdown();
    drop(_host);
    drop(t);
    let f = nic.stop().faults;
    assert!(f.dropped + f.reordered > 0, "no fault happened: {f:?}");
    assert!(d.resync_confirmed > 0, "no resync confirmed: {d:?}");
}

#[test]
fn a_corrupted_payload_fails_exactly_its_read_with_a_data_digest_error() {
    let Some(nic) = nic(NicConfig {
        faults: FaultConfig {
            corrupt: 0.005,
            seed: 5,
            ..FaultConfig::NONE
        },
        ..NicConfig::default()
    }) else {
        return;
    };
    let t = target(&nic, 8);
    let _host = nic.host_ns().enter().expect("enter the host namespace");
    // Header digests on as well: a flip that lands in a PDU header (rare) then resets the
    // queue, which re-issues the read, instead of failing it with a protocol error.
    let mut o = opts(&nic, true);
    o.hdgst = true;
    let mut ctrl = Controller::connect(o).expect("connect through the NIC");
    let mut q = ctrl.take_io_queues().pop().expect("an I/O queue");
    let data = random(4 << 20, 9);
    // The writes cross the NIC the other way: no faults there.
    write_all(&mut q, &data);
    let mut errors = 0;
    for (i, r) in read_all(&mut q, data.len()) {
        match r {
            Ok(got) => assert!(
                got == data[i * READ..(i + 1) * READ],
                "read {i}: wrong data, no error"
            ),
            Err(IoError::DataDigest { .. }) => errors += 1,
            Err(e) => panic!("read {i}: {e}"),
        }
    }
    q.close();
    ctrl.shutdown();
    drop(_host);
    drop(t);
    let corrupted = nic.stop().faults.corrupted;
    assert!(corrupted > 0, "nothing was corrupted");
    assert!(
        errors >= 1 && errors <= corrupted,
        "{errors} digest errors for {corrupted} corrupted segments"
    );
}

#[test]
fn switching_nvme_tcp_off_on_the_control_plane_leaves_later_queues_without_offload() {
    let Some(nic) = nic(NicConfig::default()) else {
        return;
    };
    let registry = ulp_ddp_ctl::Registry::new();
    let dev: ulp_ddp_ctl::SharedDevice =
        std::sync::Arc::new(nic.device().expect("offload on").clone());
    let ifindex = registry.add("softnic0", dev);
    let path = std::env::temp_dir().join(format!("ddp-nic-ctl-{}.sock", std::process::id()));
    let srv = ulp_ddp_ctl::server::ControlServer::bind(&path, registry).expect("control socket");
    let t = target(&nic, 8);
    let _host = nic.host_ns().enter().expect("enter the host namespace");
    let (ctrl, q) = connect(&nic, true);
    assert!(q.is_offloaded());
    let mut client = ulp_ddp_ctl::client::Client::connect(&path).expect("client");
    let caps = client
        .call(
            "caps-set",
            serde_json::json!({"ifindex": ifindex, "wanted": [], "wanted-mask": ["nvme-tcp"]}),
        )
        .expect("caps-set");
    assert_eq!(
        caps["active"],
        serde_json::json!(["nvme-tcp-ddgst-rx"]),
        "{caps}"
    );
    // The queue offloaded before keeps its offload; a queue connected now runs without.
    assert!(q.is_offloaded());
    let (ctrl2, q2) = connect(&nic, true);
    assert!(!q2.is_offloaded());
    let stats = client
        .call("stats-get", serde_json::json!({"ifindex": ifindex}))
        .expect("stats-get");
    assert_eq!(stats["rx-nvme-tcp-sk-add"], serde_json::json!(1), "{stats}");
    for (c, q) in [(ctrl, q), (ctrl2, q2)] {
        q.close();
        c.shutdown();
    }
    drop(_host);
    drop(t);
    drop(srv);
    let _ = std::fs::remove_file(&path);
}
