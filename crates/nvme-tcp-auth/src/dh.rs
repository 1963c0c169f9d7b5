//! Finite-field Diffie-Hellman with the RFC 7919 groups (generator 2) that DH-HMAC-CHAP
//! names ffdhe2048 to ffdhe8192.
//!
//! Public values and the session key are big-endian and as long as the group's prime
//! (DHVLEN = 256 bytes for ffdhe2048...), left-padded with zeros. A peer's public value y
//! must satisfy 1 < y < p - 1 (RFC 7919 §5.1).
//!
//! The arithmetic is `num-bigint`'s `modpow`, which is not constant time; the exponent is a
//! fresh random 512-bit value per exchange, at least twice the security level of every
//! group (RFC 7919 §5.2 asks for at least that).

use num_bigint::BigUint;
use nvme_tcp_wire::nvme::DhGroupId;
use rand::RngCore;

/// Bytes of the private exponent.
const PRIVATE_LEN: usize = 64;

/// The prime of a group, from RFC 7919 appendix A (hex, as OpenSSL prints it).
fn prime_hex(group: DhGroupId) -> Option<&'static str> {
    Some(match group {
        DhGroupId::Null => return None,
        DhGroupId::Ffdhe2048 => include_str!("ffdhe/ffdhe2048.hex"),
        DhGroupId::Ffdhe3072 => include_str!("ffdhe/ffdhe3072.hex"),
        DhGroupId::Ffdhe4096 => include_str!("ffdhe/ffdhe4096.hex"),
        DhGroupId::Ffdhe6144 => include_str!("ffdhe/ffdhe6144.hex"),
        DhGroupId::Ffdhe8192 => include_str!("ffdhe/ffdhe8192.hex"),
    })
}

/// The prime p of a group (`None` for the null group).
pub fn prime(group: DhGroupId) -> Option<BigUint> {
    let hex: String = prime_hex(group)?
        .chars()
        .filter(char::is_ascii_hexdigit)
        .collect();
    BigUint::parse_bytes(hex.as_bytes(), 16)
}

/// Why a peer's DH value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DhError {
    /// DHVLEN is not the size of the group's prime.
    #[error("DH value of {have} bytes, the group's is {want}")]
    Length {
        /// Size the group needs.
        want: usize,
        /// Size received.
        have: usize,
    },
    /// The value is 0, 1, p - 1 or not below p.
    #[error("DH value out of range (1 < y < p - 1)")]
    Range,
    /// The null group has no DH exchange.
    #[error("the null group has no DH exchange")]
    NullGroup,
}

/// One side of a DH exchange: a private exponent and its public value.
pub struct KeyPair {
    group: DhGroupId,
    p: BigUint,
    x: BigUint,
    public: Vec<u8>,
}

impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyPair")
            .field("group", &self.group)
            .finish_non_exhaustive()
    }
}

fn to_fixed(v: &BigUint, len: usize) -> Vec<u8> {
    let b = v.to_bytes_be();
    let mut out = vec![0u8; len.saturating_sub(b.len())];
    out.extend_from_slice(&b);
    out
}

impl KeyPair {
    /// A fresh key pair in `group`; `None` for the null group.
    pub fn generate(group: DhGroupId) -> Option<Self> {
        let p = prime(group)?;
        let mut xb = [0u8; PRIVATE_LEN];
        rand::rng().fill_bytes(&mut xb);
        // x in [2, 2^512): never 0 or 1.
        let x = BigUint::from_bytes_be(&xb) | BigUint::from(2u8);
        let public = to_fixed(&BigUint::from(2u8).modpow(&x, &p), group.value_len());
        Some(KeyPair {
            group,
            p,
            x,
            public,
        })
    }

    /// The group.
    pub fn group(&self) -> DhGroupId {
        self.group
    }

    /// The public value g^x mod p, DHVLEN bytes.
    pub fn public(&self) -> &[u8] {
        &self.public
    }

    /// The session key Ks = y^x mod p from the peer's public value y, DHVLEN bytes.
    pub fn session_key(&self, peer: &[u8]) -> Result<Vec<u8>, DhError> {
        let len = self.group.value_len();
        if peer.len() != len {
            return Err(DhError::Length {
                want: len,
                have: peer.len(),
            });
        }
        let y = BigUint::from_bytes_be(peer);
        let one = BigUint::from(1u8);
        if y <= one || y >= &self.p - &one {
            return Err(DhError::Range);
        }
        Ok(to_fixed(&y.modpow(&self.x, &self.p), len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn primes_have_the_rfc7919_shape_and_size() {
        for g in &DhGroupId::ALL[1..] {
            let p = prime(*g).unwrap();
            assert_eq!(p.bits() as usize, g.value_len() * 8, "{g:?}");
            let b = p.to_bytes_be();
            // RFC 7919: the top and bottom 64 bits are all ones.
            assert_eq!(&b[..8], &[0xFF; 8], "{g:?}");
            assert_eq!(&b[b.len() - 8..], &[0xFF; 8], "{g:?}");
        }
        assert!(prime(DhGroupId::Null).is_none());
        assert!(KeyPair::generate(DhGroupId::Null).is_none());
    }

    #[test]
    fn ffdhe2048_prime_passes_a_fermat_test() {
        let p = prime(DhGroupId::Ffdhe2048).unwrap();
        let one = BigUint::from(1u8);
        for a in [2u8, 3, 5] {
            assert_eq!(BigUint::from(a).modpow(&(&p - &one), &p), one);
        }
    }

    #[test]
    fn both_sides_derive_the_same_session_key() {
        for g in [DhGroupId::Ffdhe2048, DhGroupId::Ffdhe3072] {
            let a = KeyPair::generate(g).unwrap();
            let b = KeyPair::generate(g).unwrap();
            assert_eq!(a.public().len(), g.value_len());
            let ka = a.session_key(b.public()).unwrap();
            assert_eq!(ka, b.session_key(a.public()).unwrap());
            assert_eq!(ka.len(), g.value_len());
        }
    }

    #[test]
    fn refuses_degenerate_or_misized_peer_values() {
        let a = KeyPair::generate(DhGroupId::Ffdhe2048).unwrap();
        let p = prime(DhGroupId::Ffdhe2048).unwrap();
        let one = BigUint::from(1u8);
        for bad in [
            BigUint::from(0u8),
            one.clone(),
            &p - &one,
            p.clone(),
            &p + &one,
        ] {
            let v = to_fixed(&bad, 256);
            let v = if v.len() > 256 { v[1..].to_vec() } else { v };
            assert_eq!(a.session_key(&v), Err(DhError::Range), "{bad:x}");
        }
        assert!(matches!(
            a.session_key(&[2u8; 255]),
            Err(DhError::Length { want: 256, .. })
        ));
    }
}
