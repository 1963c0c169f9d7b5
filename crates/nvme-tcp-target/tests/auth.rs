//! In-band authentication (DH-HMAC-CHAP) against a running target over loopback: AUTHREQ in
//! the Connect response, no command but authentication before the host has authenticated,
//! wrong keys refused with the right reason, re-authentication, and the I/O queues.

mod common;

use common::{Client, HOSTNQN, SUBNQN, start_with};
use nvme_tcp_auth::{HostAction, HostAuth, HostAuthConfig, HostAuthError, Secret};
use nvme_tcp_target::{HostAuthKeys, HostConfig, TargetConfig};
use nvme_tcp_wire::nvme::auth::FailureReason;
use nvme_tcp_wire::nvme::fabrics::{AUTHREQ_ATR, CNTLID_DYNAMIC};
use nvme_tcp_wire::nvme::{
    AuthReceiveCommand, AuthSendCommand, ConnectResponse, DhGroupId, HashId, Status,
};

fn with_key(keys: HostAuthKeys) -> impl FnOnce(TargetConfig) -> TargetConfig {
    move |c| {
        c.host(HostConfig {
            nqn: HOSTNQN.into(),
            dhchap: Some(keys),
        })
    }
}

/// Runs the host side over Authentication Send / Receive commands.
fn authenticate(c: &mut Client, host: &mut HostAuth) -> Result<(), HostAuthError> {
    for _ in 0..10 {
        match host.poll() {
            HostAction::Send(m) => {
                let d = c.command(AuthSendCommand::dhchap(m.len() as u32).to_sqe(), &m, 0);
                assert_eq!(d.status(), Status::SUCCESS, "Authentication Send");
                host.on_sent();
            }
            HostAction::Receive(al) => {
                let d = c.command(AuthReceiveCommand::dhchap(al).to_sqe(), &[], al);
                assert_eq!(d.status(), Status::SUCCESS, "Authentication Receive");
                host.on_received(&d.data);
            }
            HostAction::Done => return Ok(()),
            HostAction::Failed(e) => return Err(e),
        }
    }
    panic!("authentication did not end");
}

fn host(key: &Secret, ctrl: Option<&Secret>, t_id: u16) -> HostAuth {
    HostAuth::new(
        HostAuthConfig::new(key.clone(), ctrl.cloned(), HOSTNQN, SUBNQN),
        t_id,
    )
}

/// ICReq and admin Connect; the AUTHREQ of the response and the controller ID.
fn admin_connect(c: &mut Client) -> (u16, u16) {
    c.ic(0, false, false);
    let d = c.connect_queue(0, 31, 0, 0, CNTLID_DYNAMIC, SUBNQN);
    assert_eq!(d.status(), Status::SUCCESS);
    match ConnectResponse::success_from_dw0(d.dw0()) {
        ConnectResponse::Success { cntlid, authreq } => (cntlid, authreq),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_host_with_a_key_must_authenticate_every_queue_before_anything_else() {
    let key = Secret::generate(Some(HashId::Sha256));
    let t = start_with(with_key(HostAuthKeys::new(key.clone())));
    let mut a = Client::connect(t.local_addrs()[0]);
    let (cntlid, authreq) = admin_connect(&mut a);
    assert_eq!(authreq, AUTHREQ_ATR, "ATR in the Connect response");
    assert_eq!(
        a.prop_get(0x1C, false).status(),
        Status::AUTHENTICATION_REQUIRED
    );
    assert_eq!(a.identify(1, 0).status(), Status::AUTHENTICATION_REQUIRED);
    authenticate(&mut a, &mut host(&key, None, 1)).unwrap();
    assert_eq!(a.prop_set(0x14, 0x0046_0001).status(), Status::SUCCESS);
    assert_eq!(a.identify(1, 0).status(), Status::SUCCESS);

    // The I/O queue asks again, and refuses I/O until it has authenticated.
    let mut io = Client::connect(t.local_addrs()[0]);
    io.ic(0, false, false);
    let d = io.connect_queue(1, 31, 0, 0, cntlid, SUBNQN);
    assert_eq!(d.status(), Status::SUCCESS);
    assert_eq!((d.dw0() >> 16) as u16, AUTHREQ_ATR);
    let r = io.read(1, 0, 8, 4096);
    assert_eq!(r.status(), Status::AUTHENTICATION_REQUIRED);
    assert!(r.data.is_empty(), "no data before authentication");
    authenticate(&mut io, &mut host(&key, None, 2)).unwrap();
    let r = io.read(1, 0, 8, 4096);
    assert_eq!((r.status(), r.data.len()), (Status::SUCCESS, 4096));
}

#[test]
fn bidirectional_with_a_dh_group_and_reauthentication() {
    let key = Secret::generate(Some(HashId::Sha384));
    let ck = Secret::generate(None);
    let t = start_with(with_key(HostAuthKeys {
        key: key.clone(),
        ctrl_key: Some(ck.clone()),
        hash: HashId::Sha384,
        dhgroup: DhGroupId::Ffdhe2048,
    }));
    let mut a = Client::connect(t.local_addrs()[0]);
    admin_connect(&mut a);
    authenticate(&mut a, &mut host(&key, Some(&ck), 1)).unwrap();
    assert_eq!(a.prop_set(0x14, 0x0046_0001).status(), Status::SUCCESS);
    // Re-authentication on the same queue, then a failed one takes access away.
    authenticate(&mut a, &mut host(&key, Some(&ck), 2)).unwrap();
    assert_eq!(a.identify(1, 0).status(), Status::SUCCESS);
    let wrong = Secret::generate(None);
    assert_eq!(
        authenticate(&mut a, &mut host(&key, Some(&wrong), 3)),
        Err(HostAuthError::Local(FailureReason::Failed)),
        "the host catches a controller that does not know its key"
    );
    assert_eq!(a.identify(1, 0).status(), Status::AUTHENTICATION_REQUIRED);
}

#[test]
fn a_wrong_key_is_refused_and_other_hosts_are_not_affected() {
    let key = Secret::generate(None);
    let t = start_with(with_key(HostAuthKeys::new(key.clone())));
    let mut a = Client::connect(t.local_addrs()[0]);
    admin_connect(&mut a);
    let mut good = Client::connect(t.local_addrs()[0]);
    admin_connect(&mut good);
    assert_eq!(
        authenticate(&mut a, &mut host(&Secret::generate(None), None, 1)),
        Err(HostAuthError::Refused(FailureReason::Failed as u8))
    );
    assert_eq!(
        a.prop_get(0, true).status(),
        Status::AUTHENTICATION_REQUIRED
    );
    authenticate(&mut good, &mut host(&key, None, 1)).unwrap();
    assert_eq!(good.prop_get(0, true).status(), Status::SUCCESS);
    // The refused host may try again with the right key on the same queue.
    authenticate(&mut a, &mut host(&key, None, 2)).unwrap();
    assert_eq!(a.prop_get(0, true).status(), Status::SUCCESS);
}

#[test]
fn an_unsupported_group_is_refused_with_its_reason() {
    let key = Secret::generate(None);
    let t = start_with(with_key(HostAuthKeys {
        dhgroup: DhGroupId::Ffdhe3072,
        ..HostAuthKeys::new(key.clone())
    }));
    let mut a = Client::connect(t.local_addrs()[0]);
    admin_connect(&mut a);
    let mut cfg = HostAuthConfig::new(key, None, HOSTNQN, SUBNQN);
    cfg.dhgroups = vec![DhGroupId::Null];
    assert_eq!(
        authenticate(&mut a, &mut HostAuth::new(cfg, 1)),
        Err(HostAuthError::Refused(FailureReason::DhGroupUnusable as u8))
    );
}

#[test]
fn authentication_commands_with_bad_fields_fail_with_a_status() {
    let key = Secret::generate(None);
    let t = start_with(with_key(HostAuthKeys::new(key)));
    let mut a = Client::connect(t.local_addrs()[0]);
    admin_connect(&mut a);
    let msg = [0u8; 8];
    let mut bad = AuthSendCommand::dhchap(8);
    bad.secp = 0xEA;
    assert_eq!(
        a.command(bad.to_sqe(), &msg, 0).status(),
        Status::INVALID_FIELD
    );
    let mut bad = AuthSendCommand::dhchap(8);
    bad.spsp1 = 2;
    assert_eq!(
        a.command(bad.to_sqe(), &msg, 0).status(),
        Status::INVALID_FIELD
    );
    // TL says 16, 8 bytes came.
    assert_eq!(
        a.command(AuthSendCommand::dhchap(16).to_sqe(), &msg, 0)
            .status(),
        Status::DATA_SGL_LENGTH_INVALID
    );
    // An allocation length too small for the Failure1 that is due.
    assert_eq!(
        a.command(AuthReceiveCommand::dhchap(4).to_sqe(), &[], 4)
            .status(),
        Status::INVALID_FIELD
    );
}

#[test]
fn a_host_without_a_key_is_not_asked_to_authenticate() {
    let t = start_with(|c| c);
    let mut a = Client::connect(t.local_addrs()[0]);
    let (_, authreq) = admin_connect(&mut a);
    assert_eq!(authreq, 0);
    let m = [0u8; 8];
    assert_eq!(
        a.command(AuthSendCommand::dhchap(8).to_sqe(), &m, 0)
            .status(),
        Status::COMMAND_SEQUENCE_ERROR
    );
    assert_eq!(a.prop_get(0, true).status(), Status::SUCCESS);
}

#[test]
fn reloaded_keys_apply_to_new_connections() {
    let t = start_with(|c| c);
    let mut before = Client::connect(t.local_addrs()[0]);
    assert_eq!(admin_connect(&mut before).1, 0);
    let key = Secret::generate(None);
    let cfg = TargetConfig::single_port(t.local_addrs()[0])
        .subsystem(
            nvme_tcp_target::SubsystemConfig::new(SUBNQN)
                .namespace(nvme_tcp_target::NamespaceConfig::parse("ram:4M").unwrap()),
        )
        .host(HostConfig {
            nqn: HOSTNQN.into(),
            dhchap: Some(HostAuthKeys::new(key.clone())),
        });
    let sum = t.reload(&cfg).expect("reload");
    assert!(
        sum.changes.iter().any(|c| c.contains("authentication")),
        "{:?}",
        sum.changes
    );
    let mut after = Client::connect(t.local_addrs()[0]);
    assert_eq!(admin_connect(&mut after).1, AUTHREQ_ATR);
    authenticate(&mut after, &mut host(&key, None, 1)).unwrap();
    // The queue connected before keeps working.
    assert_eq!(before.prop_get(0, true).status(), Status::SUCCESS);
}
