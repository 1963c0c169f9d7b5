//! The host and controller state machines against each other, and the controller against
//! bad input: wrong keys, wrong transaction IDs, replays, truncated and out-of-order
//! messages, unsupported hash functions and groups.

use std::sync::Arc;

use nvme_tcp_auth::{
    ControllerAuth, ControllerAuthConfig, HostAction, HostAuth, HostAuthConfig, HostAuthError,
    Secret, SendOutcome,
};
use nvme_tcp_wire::nvme::auth::{FailureReason, NegotiateRepr};
use nvme_tcp_wire::nvme::{AuthMessage, DhGroupId, HashId};

const HOST: &str = "nqn.2014-08.org.nvmexpress:uuid:host";
const SUB: &str = "nqn.2024-01.io.example:sub";

fn ctrl_cfg(key: &Secret, ctrl_key: Option<&Secret>, hash: HashId, g: DhGroupId) -> ControllerAuth {
    ControllerAuth::new(Arc::new(ControllerAuthConfig {
        host_key: key.clone(),
        ctrl_key: ctrl_key.cloned(),
        hash,
        dhgroup: g,
        hostnqn: HOST.into(),
        subnqn: SUB.into(),
    }))
}

/// Runs a host transaction against `ctrl`; the messages the controller answered with.
fn run(host: &mut HostAuth, ctrl: &mut ControllerAuth) -> Result<usize, HostAuthError> {
    let mut rounds = 0;
    loop {
        rounds += 1;
        assert!(rounds < 20, "no end");
        match host.poll() {
            HostAction::Send(m) => {
                ctrl.on_send(&m);
                host.on_sent();
            }
            HostAction::Receive(al) => {
                let m = ctrl.on_receive();
                assert!(m.len() <= al as usize);
                host.on_received(&m);
            }
            HostAction::Done => return Ok(rounds),
            HostAction::Failed(e) => return Err(e),
        }
    }
}

#[test]
fn every_hash_and_group_authenticates_both_ways() {
    for hash in HashId::ALL {
        for g in DhGroupId::ALL {
            // The big groups are slow without optimisation: cover them with SHA-256 only.
            if *g as u8 > 2 && *hash != HashId::Sha256 && cfg!(debug_assertions) {
                continue;
            }
            let key = Secret::generate(Some(*hash));
            let ck = Secret::generate(None);
            let mut ctrl = ctrl_cfg(&key, Some(&ck), *hash, *g);
            let mut host = HostAuth::new(
                HostAuthConfig::new(key.clone(), Some(ck.clone()), HOST, SUB),
                7,
            );
            run(&mut host, &mut ctrl).unwrap_or_else(|e| panic!("{hash:?} {g:?}: {e}"));
            assert!(ctrl.is_authenticated(), "{hash:?} {g:?}");
            // Unidirectional.
            let mut ctrl = ctrl_cfg(&key, Some(&ck), *hash, *g);
            let mut host = HostAuth::new(HostAuthConfig::new(key.clone(), None, HOST, SUB), 8);
            run(&mut host, &mut ctrl).unwrap();
            assert!(ctrl.is_authenticated());
        }
    }
}

#[test]
fn a_wrong_host_key_is_refused_with_failed() {
    let key = Secret::generate(None);
    let mut ctrl = ctrl_cfg(&key, None, HashId::Sha256, DhGroupId::Ffdhe2048);
    let other = Secret::generate(None);
    let mut host = HostAuth::new(HostAuthConfig::new(other, None, HOST, SUB), 1);
    assert_eq!(
        run(&mut host, &mut ctrl),
        Err(HostAuthError::Refused(FailureReason::Failed as u8))
    );
    assert!(!ctrl.is_authenticated());
}

#[test]
fn the_same_key_for_another_host_nqn_is_refused() {
    let key = Secret::generate(Some(HashId::Sha384));
    let mut ctrl = ctrl_cfg(&key, None, HashId::Sha256, DhGroupId::Null);
    let mut host = HostAuth::new(HostAuthConfig::new(key, None, "nqn.other", SUB), 1);
    assert!(run(&mut host, &mut ctrl).is_err());
    assert!(!ctrl.is_authenticated());
}

#[test]
fn a_wrong_controller_key_is_caught_by_the_host() {
    let key = Secret::generate(None);
    let mut ctrl = ctrl_cfg(
        &key,
        Some(&Secret::generate(None)),
        HashId::Sha512,
        DhGroupId::Null,
    );
    let mut host = HostAuth::new(
        HostAuthConfig::new(key, Some(Secret::generate(None)), HOST, SUB),
        1,
    );
    assert_eq!(
        run(&mut host, &mut ctrl),
        Err(HostAuthError::Local(FailureReason::Failed))
    );
    // The host's Failure2 ended it on the controller too.
    assert!(!ctrl.is_authenticated());
}

#[test]
fn bidirectional_without_a_controller_key_is_refused() {
    let key = Secret::generate(None);
    let mut ctrl = ctrl_cfg(&key, None, HashId::Sha256, DhGroupId::Null);
    let mut host = HostAuth::new(
        HostAuthConfig::new(key, Some(Secret::generate(None)), HOST, SUB),
        1,
    );
    assert_eq!(
        run(&mut host, &mut ctrl),
        Err(HostAuthError::Refused(FailureReason::Failed as u8))
    );
}

#[test]
fn unsupported_hash_or_group_is_refused_with_its_reason() {
    let key = Secret::generate(None);
    let mut ctrl = ctrl_cfg(&key, None, HashId::Sha512, DhGroupId::Ffdhe3072);
    let mut cfg = HostAuthConfig::new(key.clone(), None, HOST, SUB);
    cfg.hashes = vec![HashId::Sha256];
    assert_eq!(
        run(&mut HostAuth::new(cfg, 1), &mut ctrl),
        Err(HostAuthError::Refused(FailureReason::HashUnusable as u8))
    );
    let mut cfg = HostAuthConfig::new(key, None, HOST, SUB);
    cfg.dhgroups = vec![DhGroupId::Null, DhGroupId::Ffdhe2048];
    assert_eq!(
        run(&mut HostAuth::new(cfg, 2), &mut ctrl),
        Err(HostAuthError::Refused(FailureReason::DhGroupUnusable as u8))
    );
    // Unknown identifiers in the offer are ignored, not an error.
    let n = AuthMessage::Negotiate(NegotiateRepr {
        t_id: 3,
        sc_c: 0,
        hash_ids: &[0x7F, 3],
        dhgroup_ids: &[0x66, 2],
    });
    assert_eq!(ctrl.on_send(&n.to_vec()), SendOutcome::Accepted);
}

fn failure1_reason(m: &[u8]) -> u8 {
    match AuthMessage::parse(m).unwrap() {
        AuthMessage::Failure {
            from_controller: true,
            rescode_exp,
            ..
        } => rescode_exp,
        other => panic!("expected Failure1, got {other:?}"),
    }
}

/// Negotiates and reads the challenge; the challenge bytes.
fn negotiate(ctrl: &mut ControllerAuth, t_id: u16) -> Vec<u8> {
    let n = AuthMessage::Negotiate(NegotiateRepr {
        t_id,
        sc_c: 0,
        hash_ids: &[1, 2, 3],
        dhgroup_ids: &[0, 1, 2, 3, 4, 5],
    });
    assert_eq!(ctrl.on_send(&n.to_vec()), SendOutcome::Accepted);
    ctrl.on_receive()
}

#[test]
fn wrong_transaction_id_truncated_and_out_of_order_messages_are_refused() {
    let key = Secret::generate(None);
    let mut ctrl = ctrl_cfg(&key, None, HashId::Sha256, DhGroupId::Null);

    // A Reply with another T_ID.
    negotiate(&mut ctrl, 5);
    let bad = AuthMessage::Reply(nvme_tcp_wire::nvme::auth::ReplyRepr {
        t_id: 6,
        cvalid: false,
        seqnum: 0,
        rval: &[0; 32],
        cval: &[0; 32],
        dhv: &[],
    });
    assert_eq!(
        ctrl.on_send(&bad.to_vec()),
        SendOutcome::Refused(FailureReason::IncorrectMessage)
    );
    assert_eq!(
        failure1_reason(&ctrl.on_receive()),
        FailureReason::IncorrectMessage as u8
    );

    // A truncated Reply.
    negotiate(&mut ctrl, 5);
    let mut v = bad.to_vec();
    v[4] = 5;
    v.truncate(40);
    assert_eq!(
        ctrl.on_send(&v),
        SendOutcome::Refused(FailureReason::IncorrectPayload)
    );
    assert_eq!(
        failure1_reason(&ctrl.on_receive()),
        FailureReason::IncorrectPayload as u8
    );

    // Success2 before any Reply.
    negotiate(&mut ctrl, 9);
    assert_eq!(
        ctrl.on_send(&AuthMessage::Success2 { t_id: 9 }.to_vec()),
        SendOutcome::Refused(FailureReason::IncorrectMessage)
    );
    // A Receive with nothing to answer.
    let mut fresh = ctrl_cfg(&key, None, HashId::Sha256, DhGroupId::Null);
    assert_eq!(
        failure1_reason(&fresh.on_receive()),
        FailureReason::IncorrectMessage as u8
    );
    // Secure channel concatenation is not offered.
    let n = AuthMessage::Negotiate(NegotiateRepr {
        t_id: 1,
        sc_c: 1,
        hash_ids: &[1],
        dhgroup_ids: &[0],
    });
    assert_eq!(
        fresh.on_send(&n.to_vec()),
        SendOutcome::Refused(FailureReason::ConcatMismatch)
    );
    assert!(!ctrl.is_authenticated() && !fresh.is_authenticated());
}

#[test]
fn a_replayed_reply_does_not_authenticate_a_new_transaction() {
    let key = Secret::generate(None);
    let mut ctrl = ctrl_cfg(&key, None, HashId::Sha256, DhGroupId::Ffdhe2048);
    // Record a good exchange.
    let mut host = HostAuth::new(HostAuthConfig::new(key.clone(), None, HOST, SUB), 4);
    let HostAction::Send(neg) = host.poll() else {
        panic!()
    };
    ctrl.on_send(&neg);
    host.on_sent();
    host.on_received(&ctrl.on_receive());
    let HostAction::Send(reply) = host.poll() else {
        panic!()
    };
    assert_eq!(ctrl.on_send(&reply), SendOutcome::Accepted);
    ctrl.on_receive();
    assert!(ctrl.is_authenticated());

    // Replay it on a new queue: a new challenge (C1, S1, DH value) makes the old reply wrong.
    let mut q2 = ctrl_cfg(&key, None, HashId::Sha256, DhGroupId::Ffdhe2048);
    assert_eq!(q2.on_send(&neg), SendOutcome::Accepted);
    q2.on_receive();
    assert_eq!(
        q2.on_send(&reply),
        SendOutcome::Refused(FailureReason::Failed)
    );
    assert!(!q2.is_authenticated());
    // And replayed again on the first queue after success it is out of turn.
    assert_eq!(
        ctrl.on_send(&reply),
        SendOutcome::Refused(FailureReason::IncorrectMessage)
    );
    assert!(!ctrl.is_authenticated());
}

#[test]
fn reauthentication_keeps_access_until_it_fails() {
    let key = Secret::generate(None);
    let mut ctrl = ctrl_cfg(&key, None, HashId::Sha256, DhGroupId::Null);
    run(
        &mut HostAuth::new(HostAuthConfig::new(key.clone(), None, HOST, SUB), 1),
        &mut ctrl,
    )
    .unwrap();
    assert!(ctrl.is_authenticated());
    negotiate(&mut ctrl, 2);
    assert!(
        ctrl.is_authenticated(),
        "still authenticated during a re-authentication"
    );
    run(
        &mut HostAuth::new(HostAuthConfig::new(key, None, HOST, SUB), 3),
        &mut ctrl,
    )
    .unwrap();
    assert!(ctrl.is_authenticated());
    let wrong = Secret::generate(None);
    assert!(
        run(
            &mut HostAuth::new(HostAuthConfig::new(wrong, None, HOST, SUB), 4),
            &mut ctrl
        )
        .is_err()
    );
    assert!(!ctrl.is_authenticated());
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(200))]
    /// Whatever a host sends, the controller answers with a message and never
    /// authenticates a host that does not know the key.
    #[test]
    fn arbitrary_messages_never_authenticate(
        msgs in proptest::collection::vec(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..120), 1..6)
    ) {
        let key = Secret::generate(None);
        let mut ctrl = ctrl_cfg(&key, None, HashId::Sha256, DhGroupId::Null);
        for m in &msgs {
            ctrl.on_send(m);
            let r = ctrl.on_receive();
            proptest::prop_assert!(AuthMessage::parse(&r).is_ok());
        }
        proptest::prop_assert!(!ctrl.is_authenticated());
    }
}
