//! The target keeps serving 256 queues of verified I/O while 1,000 silent connections and a
//! host that stops reading are attached. Its own test binary: it raises the open-file limit
//! of the process for its ~2,600 sockets (both ends live in this process).

mod common;

use std::net::{IpAddr, TcpStream};
use std::time::Duration;

use common::*;
use nvme_tcp_wire::nvme::{AdminOpcode, IoOpcode, SglDescriptor, Sqe, Status};

const QUEUES: u16 = 256;
const SILENT: usize = 1000;
/// Source addresses the silent connections come from (below the per-address cap each).
const SILENT_SOURCES: [&str; 4] = ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"];

fn raise_nofile(to: u64) {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid pointers for the calls.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut l), 0);
        if l.rlim_cur < to {
            l.rlim_cur = to;
            l.rlim_max = l.rlim_max.max(to);
            assert_eq!(
                libc::setrlimit(libc::RLIMIT_NOFILE, &l),
                0,
                "this test needs {to} open files (run as root or raise ulimit -n)"
            );
        }
    }
}

#[test]
fn serves_256_queues_while_1000_silent_connections_and_a_stalled_host_are_attached() {
    raise_nofile(8192);
    let t = start_with(|mut c| {
        c.limits.max_connections = 1536;
        c.limits.max_io_queues = QUEUES + 1;
        // The silent connections must stay for the whole test, however slow the machine.
        c.limits.connect_timeout = Duration::from_secs(600);
        c.socket_buffer_size = 64 * 1024;
        c
    });
    let addr = t.local_addrs()[0];

    let silent: Vec<TcpStream> = (0..SILENT)
        .map(|i| {
            let src: IpAddr = SILENT_SOURCES[i % SILENT_SOURCES.len()].parse().unwrap();
            connect_from(src, addr)
        })
        .collect();
    wait_for("the silent connections to be accepted", || {
        t.state().connection_count() >= SILENT
    });

    // A host that floods reads of the region the others write, and stops reading.
    let (_sa, mut stalled, _) = admin_and_io(addr, false, true, 0);
    for _ in 0..64 {
        let mut sqe = Sqe::new(IoOpcode::Read as u8);
        sqe.set_nsid(1);
        sqe.set_cdw12(2047);
        let cid = stalled.cid();
        sqe.set_cid(cid);
        sqe.set_dptr(SglDescriptor::transport_data_block(1 << 20));
        stalled.send_capsule(&sqe, &[]);
    }
    wait_for("the stalled host's connection to stall", || {
        t.state().send_stalls() > 0
    });

    // One controller with 256 I/O queues.
    let mut admin = Client::connect(addr);
    admin.ic(0, false, false);
    let cntlid = admin.admin_connect_enable(SUBNQN, 0);
    let mut sf = Sqe::new(AdminOpcode::SetFeatures as u8);
    sf.set_cdw10(0x07);
    let n = (QUEUES - 1) as u32;
    sf.set_cdw11(n | (n << 16));
    assert_eq!(admin.command(sf, &[], 0).status(), Status::SUCCESS);
    let mut queues: Vec<Client> = (1..=QUEUES)
        .map(|qid| {
            let mut io = Client::connect(addr);
            io.ic(0, false, true);
            let d = io.connect_queue(qid, 31, 0, 0, cntlid, SUBNQN);
            assert_eq!(d.status(), Status::SUCCESS, "queue {qid}");
            io
        })
        .collect();

    // Verified I/O on every queue: each owns 16 blocks of the 4 MiB namespace, starting in
    // the stripe the stalled host reads. Two rounds, in the capsule and through R2T.
    for round in 0..2u8 {
        for (i, io) in queues.iter_mut().enumerate() {
            let slba = i as u64 * 16;
            let data = pattern(8192, round.wrapping_mul(97).wrapping_add(i as u8));
            let w = if round == 0 {
                io.write_in_capsule(1, slba, &data)
            } else {
                io.write_r2t(1, slba, &data)
            };
            assert_eq!(w.status(), Status::SUCCESS, "write, queue {}", i + 1);
            let r = io.read(1, slba, 16, 8192);
            assert_eq!(r.status(), Status::SUCCESS, "read, queue {}", i + 1);
            assert!(r.data == data, "data read back on queue {}", i + 1);
        }
    }

    // Everything is still attached: the silent connections, the stalled host, the queues.
    assert!(
        t.state().connection_count() == SILENT + 2 + 1 + QUEUES as usize,
        "{} connections",
        t.state().connection_count()
    );
    drop(silent);
}
