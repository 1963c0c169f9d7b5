//! The hash and HMAC computations of DH-HMAC-CHAP (NVMe Base 2.0 §8.13.5), with SHA-256/384/512.

use hmac::{Hmac, KeyInit, Mac};
use nvme_tcp_wire::nvme::HashId;
use sha2::{Digest, Sha256, Sha384, Sha512};

fn hmac_of<M: Mac + KeyInit>(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    // HMAC takes keys of any length (longer ones are hashed first).
    let mut m = <M as KeyInit>::new_from_slice(key).expect("HMAC accepts any key length");
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().to_vec()
}

/// HMAC with `hash`, keyed by `key`, over the concatenation of `parts`.
pub fn hmac(hash: HashId, key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    match hash {
        HashId::Sha256 => hmac_of::<Hmac<Sha256>>(key, parts),
        HashId::Sha384 => hmac_of::<Hmac<Sha384>>(key, parts),
        HashId::Sha512 => hmac_of::<Hmac<Sha512>>(key, parts),
    }
}

/// The digest of `data` with `hash`.
pub fn digest(hash: HashId, data: &[u8]) -> Vec<u8> {
    match hash {
        HashId::Sha256 => Sha256::digest(data).to_vec(),
        HashId::Sha384 => Sha384::digest(data).to_vec(),
        HashId::Sha512 => Sha512::digest(data).to_vec(),
    }
}

/// The augmented challenge Ca = HMAC(H(Ks), C), used in place of the challenge C when a DH
/// exchange produced the session key Ks.
pub fn augmented_challenge(hash: HashId, session_key: &[u8], challenge: &[u8]) -> Vec<u8> {
    hmac(hash, &digest(hash, session_key), &[challenge])
}

/// What a response is computed over, besides the challenge.
#[derive(Debug, Clone, Copy)]
pub struct ResponseInput<'a> {
    /// The negotiated hash.
    pub hash: HashId,
    /// The transformed key of the side that answers (see [`crate::Secret::transformed`]).
    pub key: &'a [u8],
    /// The challenge (C1 or C2) as sent.
    pub challenge: &'a [u8],
    /// The session key Ks, when a DH group other than null was used.
    pub session_key: Option<&'a [u8]>,
    /// The sequence number (S1 or S2).
    pub seqnum: u32,
    /// T_ID of the transaction.
    pub t_id: u16,
    /// SC_C of the AUTH_Negotiate (0: no secure channel concatenation).
    pub sc_c: u8,
    /// Host NQN.
    pub hostnqn: &'a str,
    /// Subsystem NQN.
    pub subnqn: &'a str,
}

impl ResponseInput<'_> {
    fn challenge(&self) -> Vec<u8> {
        match self.session_key {
            Some(ks) => augmented_challenge(self.hash, ks, self.challenge),
            None => self.challenge.to_vec(),
        }
    }

    /// The host's response R1 = HMAC(Kh, C1 || S1 || T_ID || SC_C || "HostHost" || NQNh ||
    /// 00h || NQNc), with S1 and T_ID little-endian.
    pub fn host_response(&self) -> Vec<u8> {
        self.response(b"HostHost", self.hostnqn, self.subnqn)
    }

    /// The controller's response R2 = HMAC(Kc, C2 || S2 || T_ID || SC_C || "Controller" ||
    /// NQNc || 00h || NQNh).
    pub fn controller_response(&self) -> Vec<u8> {
        self.response(b"Controller", self.subnqn, self.hostnqn)
    }

    /// HMAC(key, C || S || T_ID || SC_C || label || first NQN || 00h || second NQN): the one
    /// layout of both responses, which differ in the label and the order of the NQNs.
    fn response(&self, label: &[u8], first: &str, second: &str) -> Vec<u8> {
        let c = self.challenge();
        hmac(
            self.hash,
            self.key,
            &[
                &c,
                &self.seqnum.to_le_bytes(),
                &self.t_id.to_le_bytes(),
                &[self.sc_c],
                label,
                first.as_bytes(),
                &[0],
                second.as_bytes(),
            ],
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc4231_case_2() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        let m = hmac(
            HashId::Sha256,
            b"Jefe",
            &[b"what do ya want ", b"for nothing?"],
        );
        assert_eq!(
            m[..8],
            [0x5b, 0xdc, 0xc1, 0x46, 0xbf, 0x60, 0x75, 0x4e],
            "HMAC-SHA-256"
        );
        assert_eq!(hmac(HashId::Sha384, b"Jefe", &[b"x"]).len(), 48);
        assert_eq!(hmac(HashId::Sha512, b"Jefe", &[b"x"]).len(), 64);
        assert_eq!(
            digest(HashId::Sha256, b"abc")[..4],
            [0xba, 0x78, 0x16, 0xbf]
        );
    }

    #[test]
    fn responses_differ_by_direction_and_bind_every_input() {
        let base = ResponseInput {
            hash: HashId::Sha256,
            key: &[1; 32],
            challenge: &[2; 32],
            session_key: None,
            seqnum: 5,
            t_id: 1,
            sc_c: 0,
            hostnqn: "nqn.h",
            subnqn: "nqn.s",
        };
        let r = base.host_response();
        assert_ne!(r, base.controller_response());
        for changed in [
            ResponseInput { seqnum: 6, ..base },
            ResponseInput { t_id: 2, ..base },
            ResponseInput {
                hostnqn: "nqn.x",
                ..base
            },
            ResponseInput {
                session_key: Some(&[3; 256]),
                ..base
            },
        ] {
            assert_ne!(changed.host_response(), r);
        }
        // The layout, spelled out.
        let mut msg = vec![2u8; 32];
        msg.extend_from_slice(&5u32.to_le_bytes());
        msg.extend_from_slice(&1u16.to_le_bytes());
        msg.push(0);
        msg.extend_from_slice(b"HostHostnqn.h\0nqn.s");
        assert_eq!(r, hmac(HashId::Sha256, &[1; 32], &[&msg]));
    }
}
