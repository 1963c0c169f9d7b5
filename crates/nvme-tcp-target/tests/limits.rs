//! Limits that hold against hostile or broken hosts: a host that stops reading, connection
//! caps per source address and per host NQN, idle queues when slots are scarce, the
//! open-file limit. Assertions are on events and their order, never on elapsed time.

mod common;

use std::net::IpAddr;
use std::time::Duration;

use common::*;
use nvme_tcp_target::server::TargetError;
use nvme_tcp_target::{NamespaceConfig, SubsystemConfig, Target, TargetConfig};
use nvme_tcp_wire::nvme::fabrics::CNTLID_DYNAMIC;
use nvme_tcp_wire::nvme::{IoOpcode, SglDescriptor, Sqe, Status};

const MIB: usize = 1 << 20;

/// Queues `n` reads of 1 MiB at LBA 0 without reading the answers; returns their CIDs.
fn flood_reads(io: &mut Client, n: usize) -> Vec<u16> {
    (0..n)
        .map(|_| {
            let mut sqe = Sqe::new(IoOpcode::Read as u8);
            sqe.set_nsid(1);
            sqe.set_cdw12(2047);
            let cid = io.cid();
            sqe.set_cid(cid);
            sqe.set_dptr(SglDescriptor::transport_data_block(MIB as u32));
            io.send_capsule(&sqe, &[]);
            cid
        })
        .collect()
}

#[test]
fn a_host_that_stops_reading_delays_only_itself() {
    let t = start_with(|mut c| {
        c.socket_buffer_size = 64 * 1024;
        c
    });
    let addr = t.local_addrs()[0];
    let (_sa, mut slow, _) = admin_and_io(addr, false, true, 0);
    // 64 MiB of reads of the stripe the other host writes, never read (yet).
    let cids = flood_reads(&mut slow, 64);
    wait_for("the slow host's connection to stall", || {
        t.state().send_stalls() > 0
    });

    // Another host writes the same 1 MiB region, in the capsule and through R2T, and reads
    // it back: all of it completes while the slow host still has not read a byte.
    let (_fa, mut fast, _) = admin_and_io(addr, false, true, 0);
    let a = pattern(4096, 1);
    let b = pattern(256 * 1024, 2);
    assert_eq!(fast.write_in_capsule(1, 0, &a).status(), Status::SUCCESS);
    assert_eq!(fast.write_r2t(1, 8, &b).status(), Status::SUCCESS);
    let d = fast.read(1, 8, 512, 256 * 1024);
    assert_eq!(d.status(), Status::SUCCESS);
    assert!(d.data == b);

    // The slow host was not disconnected: it now reads every answer, each PDU with a data
    // digest that matches its bytes (checked by the client), each 1 MiB long.
    for cid in cids {
        let d = slow.wait(cid);
        assert_eq!(d.status(), Status::SUCCESS);
        assert_eq!(d.data.len(), MIB);
    }
}

#[test]
fn connections_beyond_the_per_address_cap_are_closed() {
    let t = start_with(|mut c| {
        c.limits.max_connections_per_address = 2;
        c
    });
    let addr = t.local_addrs()[0];
    let lo: IpAddr = "127.0.0.1".parse().unwrap();
    let mut a = Client::connect_from(lo, addr);
    a.ic(0, false, false);
    let mut b = Client::connect_from(lo, addr);
    b.ic(0, false, false);
    let mut c = Client::connect_from(lo, addr);
    c.send_icreq();
    assert!(c.recv().is_none(), "third connection from 127.0.0.1 closed");
    // Another address is not affected.
    let mut d = Client::connect_from("127.0.0.2".parse().unwrap(), addr);
    d.ic(0, false, false);
    // A slot is given back when a connection closes.
    drop(a);
    wait_for("the closed connection to be uncounted", || {
        t.state().connection_count() == 2
    });
    let mut e = Client::connect_from(lo, addr);
    e.ic(0, false, false);
}

#[test]
fn connect_beyond_the_per_host_cap_is_answered_controller_busy() {
    let t = start_with(|mut c| {
        c.limits.max_connections_per_host = 2;
        c
    });
    let addr = t.local_addrs()[0];
    let (_admin, io, cntlid) = admin_and_io(addr, false, false, 0);
    assert_eq!(t.state().host_connection_count(HOSTNQN), 2);
    let mut more = Client::connect(addr);
    more.ic(0, false, false);
    let d = more.connect_queue(2, 31, 0, 0, cntlid, SUBNQN);
    assert_eq!(d.status(), Status::CONNECT_CONTROLLER_BUSY);
    assert!(!d.cqe.unwrap().dnr(), "the host may retry");
    let mut admin2 = Client::connect(addr);
    admin2.ic(0, false, false);
    let d = admin2.connect_queue(0, 31, 0, 0, CNTLID_DYNAMIC, SUBNQN);
    assert_eq!(d.status(), Status::CONNECT_CONTROLLER_BUSY);
    // Once a queue goes, the host may connect one again.
    drop(io);
    wait_for("the I/O queue to be released", || {
        t.state().host_connection_count(HOSTNQN) == 1
    });
    let d = more.connect_queue(2, 31, 0, 0, cntlid, SUBNQN);
    assert_eq!(d.status(), Status::SUCCESS);
}

fn idle_target(idle: Duration) -> nvme_tcp_target::TargetHandle {
    start_with(|mut c| {
        c.limits.max_connections = 4;
        c.limits.idle_reclaim_percent = 75;
        c.limits.idle_timeout = idle;
        c
    })
}

#[test]
fn idle_queues_are_disconnected_when_slots_are_scarce() {
    let t = idle_target(Duration::from_millis(1));
    let addr = t.local_addrs()[0];
    let (mut admin, mut io, _) = admin_and_io(addr, false, false, 0);
    // Both queues have been idle for longer than the idle deadline now.
    std::thread::sleep(Duration::from_millis(20));
    // A third connection makes slots scarce (3 of 4): the idle queues (an I/O queue and an
    // admin queue without keep-alive) are disconnected, the newcomer is served.
    let mut newcomer = Client::connect(addr);
    newcomer.ic(0, false, false);
    assert!(io.recv().is_none(), "idle I/O queue disconnected");
    assert!(
        admin.recv().is_none(),
        "idle admin queue (KATO 0) disconnected"
    );
    newcomer.admin_connect_enable(SUBNQN, 0);
}

#[test]
fn an_admin_queue_with_keep_alive_is_not_reclaimed() {
    let t = idle_target(Duration::from_millis(1));
    let addr = t.local_addrs()[0];
    let mut admin = Client::connect(addr);
    admin.ic(0, false, false);
    admin.admin_connect_enable(SUBNQN, 60_000);
    let mut other = Client::connect(addr);
    other.ic(0, false, false);
    std::thread::sleep(Duration::from_millis(20));
    // Slots become scarce (3 of 4); the admin queue has its keep-alive deadline instead.
    let mut newcomer = Client::connect(addr);
    newcomer.ic(0, false, false);
    let ka = Sqe::new(nvme_tcp_wire::nvme::AdminOpcode::KeepAlive as u8);
    assert_eq!(admin.command(ka, &[], 0).status(), Status::SUCCESS);
}

#[test]
fn idle_queues_stay_while_within_their_deadline() {
    let t = idle_target(Duration::from_secs(3600));
    let addr = t.local_addrs()[0];
    let (_admin, mut io, _) = admin_and_io(addr, false, false, 0);
    let mut newcomer = Client::connect(addr);
    newcomer.ic(0, false, false);
    assert_eq!(t.state().connection_count(), 3);
    assert!(t.state().slots_scarce());
    assert_eq!(io.read(1, 0, 8, 4096).status(), Status::SUCCESS);
}

#[test]
fn a_connection_limit_beyond_the_open_file_limit_is_refused() {
    let mut cfg = TargetConfig::single_port("127.0.0.1:0".parse().unwrap()).subsystem(
        SubsystemConfig::new(SUBNQN).namespace(NamespaceConfig::parse("ram:1M").unwrap()),
    );
    // More descriptors than any kernel allows (fs.nr_open is at most 2^30).
    cfg.limits.max_connections = 1 << 40;
    let e = Target::start(cfg).unwrap_err();
    assert!(matches!(e, TargetError::FdLimit { .. }), "{e}");
    let msg = e.to_string();
    assert!(msg.contains("max_connections"), "{msg}");
}

#[test]
fn the_open_file_limit_is_raised_to_what_max_connections_needs() {
    let hard = nofile().1;
    let want = 3000u64;
    if hard < want + nvme_tcp_target::server::FD_RESERVE {
        return; // cannot be shown here; the refusal is tested above
    }
    let t = start_with(|mut c| {
        c.limits.max_connections = want as usize;
        c
    });
    assert!(nofile().0 >= want + nvme_tcp_target::server::FD_RESERVE);
    drop(t);
}

fn nofile() -> (u64, u64) {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid out-pointer.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) }, 0);
    (l.rlim_cur, l.rlim_max)
}

#[test]
fn a_host_that_reads_too_slowly_is_disconnected_although_it_makes_progress() {
    let t = start_with(|mut c| {
        c.socket_buffer_size = 16 * 1024;
        c.limits.send_timeout = Duration::from_secs(2);
        // 1 MiB C2HData PDUs: the host must take 1 MiB per 2 s once sending stalls.
        c.limits.c2h_data_max = 1 << 20;
        c
    });
    let addr = t.local_addrs()[0];
    let (_admin, mut io, _) = admin_and_io(addr, false, false, 0);
    socket2::SockRef::from(&io.s)
        .set_recv_buffer_size(64 * 1024)
        .unwrap();
    flood_reads(&mut io, 16);
    wait_for("sending to stall", || t.state().send_stalls() > 0);
    // Take 32 KiB every 250 ms: the target makes progress about every half second (a
    // loopback segment), far within the send timeout, but a PDU takes 8 s. Bounded: 40
    // rounds.
    let mut closed = false;
    let mut buf = vec![0u8; 32 * 1024];
    for _ in 0..40 {
        match std::io::Read::read(&mut io.s, &mut buf) {
            Ok(0) | Err(_) => {
                closed = true;
                break;
            }
            Ok(_) => std::thread::sleep(Duration::from_millis(250)),
        }
    }
    assert!(closed, "the trickling host was not disconnected");
}
