//! The host against the project's own target (`nvme-tcp-target`) on loopback: identify,
//! namespace listing, discovery, large random write-then-read with every digest setting and
//! CID mode, R2T writes, Flush / Write Zeroes / Deallocate, and reconnect across a target
//! restart with a file-backed namespace keeping the data.

use std::net::SocketAddr;
use std::time::Duration;

use nvme_tcp_host::discovery;
use nvme_tcp_host::{CidMode, ConnectOptions, Controller, IoBuf};
use nvme_tcp_target::namespace::{Backing, LbaSize};
use nvme_tcp_target::{NamespaceConfig, SubsystemConfig, Target, TargetConfig, TargetHandle};
use rand::RngCore;

const NQN: &str = "nqn.2024-01.io.test:host-embedded";

fn start(addr: SocketAddr, backing: Backing, lba: LbaSize) -> TargetHandle {
    let mut ns = NamespaceConfig::new(backing);
    ns.lba_size = lba;
    let cfg = TargetConfig::single_port(addr).subsystem(SubsystemConfig::new(NQN).namespace(ns));
    Target::start(cfg).expect("target starts")
}

fn ram_target(mib: u64) -> TargetHandle {
    start(
        "127.0.0.1:0".parse().unwrap(),
        Backing::Ram { size: mib << 20 },
        LbaSize::B4096,
    )
}

fn opts(port: u16) -> ConnectOptions {
    let mut o = ConnectOptions::new("127.0.0.1", port, NQN);
    o.kato = Some(Duration::from_secs(5));
    o.reconnect_delay = Duration::from_millis(100);
    o.ctrl_loss_tmo = Some(Duration::from_secs(60));
    o
}

fn random(len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    rand::rng().fill_bytes(&mut v);
    v
}

#[test]
fn large_random_data_round_trips_with_every_digest_and_cid_setting() {
    let t = ram_target(32);
    let port = t.local_addrs()[0].port();
    for (h, d, sqflow_off, cids) in [
        (false, false, false, CidMode::Tagged),
        (true, true, false, CidMode::Tagged),
        (false, true, true, CidMode::Linear),
        (true, false, false, CidMode::Linear),
    ] {
        let mut o = opts(port);
        o.hdgst = h;
        o.ddgst = d;
        o.disable_sqflow = sqflow_off;
        o.cid_mode = cids;
        o.nr_io_queues = 4;
        o.queue_size = 32;
        let ctrl = Controller::connect(o).expect("connect");
        let nsids = ctrl.active_namespaces().unwrap();
        assert_eq!(nsids, vec![1]);
        let ns = ctrl.namespace(1).unwrap();
        assert_eq!(ns.lba_size, 4096);
        assert_eq!(ns.nsze, 8192);
        let data = random(8 << 20);
        ctrl.write_at(&ns, 1000, &data).expect("write");
        let mut back = vec![0u8; data.len()];
        ctrl.read_at(&ns, 1000, &mut back).expect("read");
        assert!(
            back == data,
            "h={h} d={d} sqflow_off={sqflow_off} {cids:?}: data differs"
        );
        ctrl.shutdown();
    }
}

#[test]
fn identify_reports_the_subsystem() {
    let t = ram_target(4);
    let ctrl = Controller::connect(opts(t.local_addrs()[0].port())).unwrap();
    let info = ctrl.info().unwrap();
    let id = info.identify_controller().unwrap();
    assert_eq!(id.subnqn().unwrap(), NQN);
    assert_eq!(info.io_queues_granted, 1);
    ctrl.shutdown();
}

#[test]
fn discovery_lists_the_subsystem_and_an_entry_connects() {
    let t = ram_target(4);
    let port = t.local_addrs()[0].port();
    let log = discovery::discover(ConnectOptions::discovery("127.0.0.1", port)).expect("discover");
    let e = log
        .entries
        .iter()
        .find(|e| e.subnqn == NQN)
        .expect("subsystem listed");
    assert_eq!(e.trtype_name(), "tcp");
    assert_eq!(e.trsvcid, port.to_string());
    let o = e.connect_options(&opts(port)).unwrap();
    let ctrl = Controller::connect(o).expect("connect to the entry");
    assert_eq!(ctrl.namespace(1).unwrap().lba_size, 4096);
    ctrl.shutdown();
}

#[test]
fn flush_write_zeroes_and_deallocate_complete() {
    let t = ram_target(4);
    let ctrl = Controller::connect(opts(t.local_addrs()[0].port())).unwrap();
    let ns = ctrl.namespace(1).unwrap();
    ctrl.write_at(&ns, 0, &[0xA5; 8192]).unwrap();
    ctrl.flush(1).unwrap();
    ctrl.write_zeroes(1, 0, 1).unwrap();
    let mut b = vec![1u8; 8192];
    ctrl.read_at(&ns, 0, &mut b).unwrap();
    assert!(b[..4096].iter().all(|&x| x == 0), "write zeroes");
    assert!(b[4096..].iter().all(|&x| x == 0xA5));
    ctrl.deallocate(1, &[(1, 1)]).unwrap();
    ctrl.shutdown();
}

#[test]
fn reconnects_across_a_target_restart_and_the_data_is_intact() {
    let dir = std::env::temp_dir().join(format!("host-restart-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("ns.img");
    std::fs::write(&path, vec![0u8; 8 << 20]).unwrap();
    let backing = || Backing::File {
        path: path.clone(),
        direct: false,
    };
    let t = start("127.0.0.1:0".parse().unwrap(), backing(), LbaSize::B4096);
    let addr = t.local_addrs()[0];
    let mut o = opts(addr.port());
    o.kato = None; // the admin queue is recovered on demand
    let mut ctrl = Controller::connect(o).unwrap();
    let ns = ctrl.namespace(1).unwrap();
    let mut q = ctrl.take_io_queues().pop().unwrap();
    let data = random(1 << 20);
    q.submit_write(1, 256, 256, IoBuf::Contig(data.clone()), 1)
        .unwrap();
    assert!(q.wait_for(1).unwrap().result.is_ok());
    let cntlid = ctrl.info().unwrap().cntlid;

    t.shutdown();
    // A read submitted while the target is down waits for the reconnect and is re-issued.
    q.submit_read(1, 256, 256, IoBuf::Contig(vec![0; 1 << 20]), 2)
        .unwrap();
    for _ in 0..3 {
        let _ = q.poll(Duration::from_millis(50));
    }
    let t2 = start(addr, backing(), LbaSize::B4096);
    let c = q.wait_for(2).unwrap();
    assert!(c.result.is_ok(), "{:?}", c.result);
    assert!(
        c.buf.unwrap().to_vec() == data,
        "data intact after the restart"
    );
    assert!(q.stats().reconnects >= 1);
    let _ = (ns, cntlid);
    drop(q);
    ctrl.shutdown();
    drop(t2);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn discovery_log_reports_the_current_generation() {
    let t = ram_target(4);
    let port = t.local_addrs()[0].port();
    let ctrl = Controller::connect(ConnectOptions::discovery("127.0.0.1", port)).unwrap();
    let first = discovery::read_log(&ctrl).unwrap();
    assert_eq!(first.genctr, t.state().genctr());
    t.state().config_changed();
    let second = discovery::read_log(&ctrl).unwrap();
    assert_eq!(second.genctr, first.genctr + 1);
    assert_eq!(second.entries, first.entries);
    ctrl.shutdown();
}
