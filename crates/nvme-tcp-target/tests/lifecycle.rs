//! Reloading the configuration at run time and draining connections at shutdown.

mod common;

use std::time::Duration;

use common::*;
use nvme_tcp_target::{NamespaceConfig, SubsystemConfig};
use nvme_tcp_wire::nvme::fabrics::CNTLID_DYNAMIC;
use nvme_tcp_wire::nvme::{IoOpcode, SglDescriptor, Sqe, Status};

const SECOND: &str = "nqn.2024-01.io.ulp-ddp:second";

#[test]
fn reload_applies_subsystem_namespace_and_access_changes() {
    let t = start_target();
    let addr = t.local_addrs()[0];
    let (_admin, mut io, _) = admin_and_io(addr, false, false, 0);
    let data = pattern(4096, 3);
    assert_eq!(io.write_in_capsule(1, 0, &data).status(), Status::SUCCESS);

    let mut cfg = nvme_tcp_target::TargetConfig::single_port(addr);
    let mut sub = SubsystemConfig::new(SUBNQN);
    sub.allow_any_host = false;
    sub.allowed_hosts = vec!["nqn.2014-08.org.nvmexpress:uuid:someone-else".into()];
    sub.namespaces = vec![
        NamespaceConfig::parse("ram:4M,nsid=1").unwrap(),
        NamespaceConfig::parse("ram:1M,nsid=2").unwrap(),
    ];
    cfg = cfg.subsystem(sub).subsystem(
        SubsystemConfig::new(SECOND).namespace(NamespaceConfig::parse("null:1G").unwrap()),
    );
    cfg.limits.max_connections = 7;
    let sum = t.reload(&cfg).unwrap();
    assert!(sum.changes.iter().any(|c| c.contains("added subsystem")));
    assert!(sum.changes.iter().any(|c| c.contains("added namespace 2")));
    assert!(
        !sum.changes.iter().any(|c| c.contains("namespace 1")),
        "{sum:?}"
    );
    assert_eq!(sum.not_applied, vec!["limits".to_string()]);

    // Namespace 1 was kept (same data), namespace 2 and the new subsystem are there.
    let d = io.read(1, 0, 8, 4096);
    assert!(d.data == data);
    assert_eq!(io.read(2, 0, 8, 4096).status(), Status::SUCCESS);
    assert!(t.state().subsystem(SECOND).is_some());
    // The access list now leaves this host out.
    let mut c = Client::connect(addr);
    c.ic(0, false, false);
    let d = c.connect_queue(0, 31, 0, 0, CNTLID_DYNAMIC, SUBNQN);
    assert_eq!(d.status(), Status::CONNECT_INVALID_HOST);
    // Reloading the same configuration changes nothing.
    let again = t.reload(&cfg).unwrap();
    assert!(again.changes.is_empty(), "{again:?}");
    // A namespace whose configuration changed is reopened under its NSID.
    cfg.subsystems[0].namespaces[1] = NamespaceConfig::parse("ram:2M,nsid=2").unwrap();
    let sum = t.reload(&cfg).unwrap();
    assert!(
        sum.changes
            .iter()
            .any(|c| c.contains("removed namespace 2"))
    );
    assert!(sum.changes.iter().any(|c| c.contains("added namespace 2")));
    let ns2 = t.state().subsystem(SUBNQN).unwrap().namespace(2).unwrap();
    assert_eq!(ns2.nlb(), (2 << 20) / 512);
    // Dropping a subsystem from the file removes it.
    cfg.subsystems.truncate(1);
    let sum = t.reload(&cfg).unwrap();
    assert!(sum.changes.iter().any(|c| c.contains("removed subsystem")));
    assert!(t.state().subsystem(SECOND).is_none());
}

#[test]
fn drain_closes_idle_connections_and_lets_a_pending_write_finish() {
    let t = start_target();
    let addr = t.local_addrs()[0];
    let (mut admin, mut io, _) = admin_and_io(addr, false, false, 0);
    // A write waiting for its data.
    let data = pattern(8192, 4);
    let mut sqe = Sqe::new(IoOpcode::Write as u8);
    sqe.set_nsid(1);
    sqe.set_cdw12(15);
    let cid = io.cid();
    sqe.set_cid(cid);
    sqe.set_dptr(SglDescriptor::transport_data_block(8192));
    io.send_capsule(&sqe, &[]);
    let r2t = io.recv().unwrap();
    let ttag = u16::from_le_bytes([r2t.header[10], r2t.header[11]]);

    // An idle connection that has not connected a queue yet.
    let mut idle = Client::connect(addr);
    idle.ic(0, false, false);
    let state = std::sync::Arc::clone(t.state());
    let drained = std::thread::spawn(move || t.drain(Duration::from_secs(60)));
    assert!(idle.recv().is_none(), "idle connection closed by the drain");
    wait_for("the listener to stop", || {
        std::net::TcpStream::connect(addr).is_err()
    });
    // The write still completes: neither its queue nor the admin queue it depends on was
    // closed while it was in flight.
    io.send_h2c(cid, ttag, 0, &data, true);
    assert_eq!(io.wait(cid).status(), Status::SUCCESS);
    assert!(
        io.recv().is_none(),
        "I/O queue closed once its work is done"
    );
    assert!(admin.recv().is_none(), "then the admin queue");
    assert_eq!(drained.join().unwrap(), 0, "nothing cut off");
    wait_for("every connection to be uncounted", || {
        state.connection_count() == 0
    });
}
