//! A harness that feeds arbitrary bytes to the authentication message parser and to the
//! controller and host state machines, shared by the cargo-fuzz target `auth` and the tests.
//! Not part of the stable API.
//!
//! Input: the first byte picks the mode, the rest is a sequence of records, each a 2-byte
//! little-endian length and that many bytes (a short last record takes what is left).
//!
//! * mode % 3 == 0: every record goes through `AuthMessage::parse`; what parses must emit
//!   bytes that parse to the same message.
//! * mode % 3 == 1: the records are Authentication Send data for a controller queue (SHA-256,
//!   the group picked by `mode / 3 % 6`, with a controller key), each followed by an
//!   Authentication Receive. Every Receive must return a message that parses, and the queue
//!   must never become authenticated: the host key is random, so no input can know it.
//! * mode % 3 == 2: the records are what a host receives after its Negotiate; it must never
//!   report success (it cannot have seen the controller prove the random controller key).

use std::sync::Arc;

use nvme_tcp_wire::nvme::{AuthMessage, DhGroupId, HashId};

use crate::{ControllerAuth, ControllerAuthConfig, HostAction, HostAuth, HostAuthConfig, Secret};

const HOSTNQN: &str = "nqn.2014-08.org.nvmexpress:uuid:fuzz";
const SUBNQN: &str = "nqn.2024-01.io.ulp-ddp:fuzz";

fn records(mut rest: &[u8]) -> impl Iterator<Item = &[u8]> {
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let len = match rest {
            [a, b, ..] => u16::from_le_bytes([*a, *b]) as usize,
            _ => rest.len(),
        };
        let body = rest.get(2..).unwrap_or(&[]);
        let n = len.min(body.len());
        let r = &body[..n];
        rest = &body[n..];
        Some(r)
    })
    .take(32)
}

/// Runs one input (see the module docs). Panics when a checked property fails.
pub fn run(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 3 {
        0 => {
            for r in records(rest) {
                if let Ok(m) = AuthMessage::parse(r) {
                    let again = m.to_vec();
                    assert_eq!(AuthMessage::parse(&again).ok(), Some(m), "emit/parse");
                }
            }
        }
        1 => {
            let group = DhGroupId::ALL[(mode / 3 % 6) as usize];
            let mut ctrl = ControllerAuth::new(Arc::new(ControllerAuthConfig {
                host_key: Secret::generate(None),
                ctrl_key: Some(Secret::generate(None)),
                hash: HashId::Sha256,
                dhgroup: group,
                hostnqn: HOSTNQN.into(),
                subnqn: SUBNQN.into(),
            }));
            for r in records(rest) {
                ctrl.on_send(r);
                let out = ctrl.on_receive();
                assert!(AuthMessage::parse(&out).is_ok(), "unparsable answer");
                assert!(!ctrl.is_authenticated(), "authenticated without the key");
            }
        }
        _ => {
            let cfg = HostAuthConfig::new(
                Secret::generate(None),
                Some(Secret::generate(None)),
                HOSTNQN,
                SUBNQN,
            );
            let mut host = HostAuth::new(cfg, 1);
            for r in records(rest) {
                match host.poll() {
                    HostAction::Send(_) => host.on_sent(),
                    HostAction::Receive(_) => host.on_received(r),
                    HostAction::Done => {
                        panic!("host accepted a controller it cannot have verified")
                    }
                    HostAction::Failed(_) => return,
                }
            }
            assert_ne!(host.poll(), HostAction::Done);
        }
    }
}

/// Seed inputs: valid messages of every kind, in each mode.
pub fn seeds() -> Vec<(String, Vec<u8>)> {
    use nvme_tcp_wire::nvme::auth::{ChallengeRepr, NegotiateRepr, ReplyRepr, Success1Repr};
    let neg = AuthMessage::Negotiate(NegotiateRepr {
        t_id: 1,
        sc_c: 0,
        hash_ids: &[1, 2, 3],
        dhgroup_ids: &[0, 1, 2, 3, 4, 5],
    })
    .to_vec();
    let reply = |dhv: &[u8]| {
        AuthMessage::Reply(ReplyRepr {
            t_id: 1,
            cvalid: true,
            seqnum: 7,
            rval: &[0xA5; 32],
            cval: &[0x5A; 32],
            dhv,
        })
        .to_vec()
    };
    let challenge = AuthMessage::Challenge(ChallengeRepr {
        t_id: 1,
        hashid: 1,
        dhgid: 0,
        seqnum: 9,
        cval: &[0x11; 32],
        dhv: &[],
    })
    .to_vec();
    let success1 = AuthMessage::Success1(Success1Repr {
        t_id: 1,
        hl: 32,
        rval: Some(&[0x22; 32]),
    })
    .to_vec();
    let rec = |msgs: &[&[u8]]| {
        let mut v = Vec::new();
        for m in msgs {
            v.extend_from_slice(&(m.len() as u16).to_le_bytes());
            v.extend_from_slice(m);
        }
        v
    };
    let mut out = Vec::new();
    let all = rec(&[&neg, &challenge, &reply(&[]), &success1]);
    out.push(("parse-all".to_string(), [&[0u8][..], &all].concat()));
    for g in 0..6u8 {
        let dhv = vec![0x42; DhGroupId::ALL[g as usize].value_len()];
        let s = rec(&[
            &neg,
            &reply(&dhv),
            &AuthMessage::Success2 { t_id: 1 }.to_vec(),
        ]);
        out.push((format!("ctrl-group{g}"), [&[1 + 3 * g][..], &s].concat()));
    }
    out.push((
        "host-null".to_string(),
        [&[2u8][..], &rec(&[&[], &challenge, &[], &success1])].concat(),
    ));
    out
}
