//! The host's in-band authentication (DH-HMAC-CHAP) against the project's target on
//! loopback: unidirectional and bidirectional, with and without a DH group, on the admin
//! queue and every I/O queue; a wrong key, a missing key and a controller that does not know
//! the controller key are refused.

use std::time::Duration;

use nvme_tcp_auth::Secret;
use nvme_tcp_host::{ConnectOptions, Controller, HostError};
use nvme_tcp_target::{
    HostAuthKeys, HostConfig, NamespaceConfig, SubsystemConfig, Target, TargetConfig, TargetHandle,
};
use nvme_tcp_wire::nvme::{DhGroupId, HashId};

const NQN: &str = "nqn.2024-01.io.test:host-auth";
const HOSTNQN: &str = "nqn.2014-08.org.nvmexpress:uuid:0a0b0c0d-1111-2222-3333-444455556666";

fn target(keys: HostAuthKeys) -> TargetHandle {
    let cfg = TargetConfig::single_port("127.0.0.1:0".parse().unwrap())
        .subsystem(SubsystemConfig::new(NQN).namespace(NamespaceConfig::parse("ram:4M").unwrap()))
        .host(HostConfig {
            nqn: HOSTNQN.into(),
            dhchap: Some(keys),
        });
    Target::start(cfg).expect("target starts")
}

fn opts(t: &TargetHandle, secret: Option<&Secret>, ctrl: Option<&Secret>) -> ConnectOptions {
    let mut o = ConnectOptions::new("127.0.0.1", t.local_addrs()[0].port(), NQN);
    o.hostnqn = HOSTNQN.into();
    o.nr_io_queues = 2;
    o.kato = Some(Duration::from_secs(5));
    o.ctrl_loss_tmo = Some(Duration::ZERO);
    o.dhchap_secret = secret.cloned();
    o.dhchap_ctrl_secret = ctrl.cloned();
    o
}

fn write_read(ctrl: &Controller) {
    let ns = ctrl.namespace(1).unwrap();
    let data: Vec<u8> = (0..64 << 10).map(|i| (i * 7) as u8).collect();
    ctrl.write_at(&ns, 3, &data).expect("write");
    let mut back = vec![0u8; data.len()];
    ctrl.read_at(&ns, 3, &mut back).expect("read");
    assert!(back == data, "data differs");
}

#[test]
fn unidirectional_authentication_gives_io_on_every_queue() {
    let key = Secret::generate(Some(HashId::Sha256));
    let t = target(HostAuthKeys::new(key.clone()));
    let ctrl = Controller::connect(opts(&t, Some(&key), None)).expect("connect");
    assert_eq!(ctrl.io_queue_count(), 2);
    write_read(&ctrl);
    ctrl.shutdown();
}

#[test]
fn bidirectional_authentication_with_ffdhe2048_and_sha512() {
    let key = Secret::generate(Some(HashId::Sha512));
    let ck = Secret::generate(Some(HashId::Sha256));
    let t = target(HostAuthKeys {
        key: key.clone(),
        ctrl_key: Some(ck.clone()),
        hash: HashId::Sha512,
        dhgroup: DhGroupId::Ffdhe2048,
    });
    let ctrl = Controller::connect(opts(&t, Some(&key), Some(&ck))).expect("connect");
    write_read(&ctrl);
    ctrl.shutdown();
}

#[test]
fn wrong_missing_and_mismatched_keys_are_refused() {
    let key = Secret::generate(None);
    let ck = Secret::generate(None);
    let t = target(HostAuthKeys {
        ctrl_key: Some(ck.clone()),
        ..HostAuthKeys::new(key.clone())
    });
    let e = Controller::connect(opts(&t, Some(&Secret::generate(None)), None)).unwrap_err();
    assert!(
        matches!(&e, HostError::Authentication(m) if m.contains("Failed")),
        "wrong key: {e}"
    );
    let e = Controller::connect(opts(&t, None, None)).unwrap_err();
    assert!(
        matches!(&e, HostError::Authentication(m) if m.contains("no host key")),
        "no key: {e}"
    );
    let e = Controller::connect(opts(&t, Some(&key), Some(&Secret::generate(None)))).unwrap_err();
    assert!(
        matches!(&e, HostError::Authentication(m) if m.contains("host's side")),
        "controller key mismatch: {e}"
    );
    // And the right keys still work.
    Controller::connect(opts(&t, Some(&key), Some(&ck)))
        .expect("connect")
        .shutdown();
}
