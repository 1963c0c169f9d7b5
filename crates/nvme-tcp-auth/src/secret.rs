//! DH-HMAC-CHAP secrets in the representation nvme-cli, nvmetcli and the Linux configfs use:
//! `DHHC-1:XX:<base64 of key || CRC-32(key) little-endian>:`.
//!
//! `XX` says how the key is transformed before use: `00` not at all, `01`/`02`/`03` with
//! HMAC-SHA-256/384/512 keyed by the key over the NQN of the side that owns it followed by
//! `"NVMe-over-Fabrics"` (NVMe Base 2.0 §8.13.5.7). A key is 32, 48 or 64 bytes; a
//! transformed key is as long as its hash (32 with `01`, 48 with `02`, 64 with `03`).

use std::fmt;
use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use nvme_tcp_wire::nvme::HashId;
use rand::RngCore;

use crate::hash::hmac;

const PREFIX: &str = "DHHC-1:";
/// The seventeen ASCII characters appended to the NQN when a key is transformed.
const TRANSFORM_SUFFIX: &[u8] = b"NVMe-over-Fabrics";

/// Why a `DHHC-1:` secret was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// The text does not start with `DHHC-1:` or has no `XX:` field.
    #[error("a DH-HMAC-CHAP secret reads DHHC-1:XX:<base64>: (got {0:?}...)")]
    Format(String),
    /// `XX` is not 00, 01, 02 or 03.
    #[error("unknown key transformation {0:?} (expected 00, 01, 02 or 03)")]
    Transform(String),
    /// The key is not valid base64.
    #[error("the key is not base64: {0}")]
    Base64(String),
    /// The decoded key is not 32, 48 or 64 bytes plus a 4-byte CRC.
    #[error("key of {0} bytes with its CRC: expected 36, 52 or 68")]
    Length(usize),
    /// The key length does not match the transformation's hash.
    #[error("a key transformed with {hash:?} is {want} bytes, this one is {have}")]
    LengthForHash {
        /// The transformation.
        hash: HashId,
        /// Its length.
        want: usize,
        /// The key's.
        have: usize,
    },
    /// The CRC-32 over the key does not match.
    #[error("key CRC mismatch: computed {computed:#010x}, stored {stored:#010x}")]
    Crc {
        /// CRC-32 of the decoded key.
        computed: u32,
        /// CRC-32 carried after it.
        stored: u32,
    },
}

/// A DH-HMAC-CHAP secret (a host key or a controller key).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret {
    transform: Option<HashId>,
    key: Vec<u8>,
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the key itself.
        f.debug_struct("Secret")
            .field("transform", &self.transform)
            .field("len", &self.key.len())
            .finish()
    }
}

fn crc32(data: &[u8]) -> u32 {
    crc_fast::checksum(crc_fast::CrcAlgorithm::Crc32IsoHdlc, data) as u32
}

impl Secret {
    /// A secret from raw key bytes. `key` must be 32, 48 or 64 bytes, and as long as the
    /// transformation's hash when there is one.
    pub fn new(transform: Option<HashId>, key: &[u8]) -> Result<Self, SecretError> {
        if ![32, 48, 64].contains(&key.len()) {
            return Err(SecretError::Length(key.len() + 4));
        }
        if let Some(hash) = transform
            && key.len() != hash.hash_len()
        {
            return Err(SecretError::LengthForHash {
                hash,
                want: hash.hash_len(),
                have: key.len(),
            });
        }
        Ok(Secret {
            transform,
            key: key.to_vec(),
        })
    }

    /// A random secret (what `nvme gen-dhchap-key` makes): as long as the transformation's
    /// hash, or 32 bytes without one.
    pub fn generate(transform: Option<HashId>) -> Self {
        let mut key = vec![0u8; transform.map_or(32, HashId::hash_len)];
        rand::rng().fill_bytes(&mut key);
        Secret { transform, key }
    }

    /// The transformation (`XX`): `None` for `00`.
    pub fn transform(&self) -> Option<HashId> {
        self.transform
    }

    /// The key bytes as configured (before transformation).
    pub fn key(&self) -> &[u8] {
        &self.key
    }

    /// The key to use as HMAC key for the side whose NQN is `nqn` (the host's NQN for a host
    /// key, the subsystem's for a controller key): the key itself for `00`, else
    /// HMAC(key, nqn || "NVMe-over-Fabrics") with the transformation's hash.
    pub fn transformed(&self, nqn: &str) -> Vec<u8> {
        match self.transform {
            None => self.key.clone(),
            Some(h) => hmac(h, &self.key, &[nqn.as_bytes(), TRANSFORM_SUFFIX]),
        }
    }
}

impl FromStr for Secret {
    type Err = SecretError;

    fn from_str(s: &str) -> Result<Self, SecretError> {
        let s = s.trim();
        let head: String = s.chars().take(10).collect();
        let rest = s
            .strip_prefix(PREFIX)
            .ok_or_else(|| SecretError::Format(head.clone()))?;
        let (xx, b64) = rest
            .split_once(':')
            .ok_or_else(|| SecretError::Format(head.clone()))?;
        let transform = match xx {
            "00" | "0" => None,
            "01" | "1" => Some(HashId::Sha256),
            "02" | "2" => Some(HashId::Sha384),
            "03" | "3" => Some(HashId::Sha512),
            other => return Err(SecretError::Transform(other.chars().take(8).collect())),
        };
        // nvme-cli ends the representation with ':'; the kernel accepts it without.
        let b64 = b64.strip_suffix(':').unwrap_or(b64);
        if b64.len() > 128 {
            return Err(SecretError::Length(b64.len() / 4 * 3));
        }
        let raw = STANDARD
            .decode(b64)
            .map_err(|e| SecretError::Base64(e.to_string()))?;
        if ![36, 52, 68].contains(&raw.len()) {
            return Err(SecretError::Length(raw.len()));
        }
        let (key, crc) = raw.split_at(raw.len() - 4);
        let stored = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
        let computed = crc32(key);
        if stored != computed {
            return Err(SecretError::Crc { computed, stored });
        }
        Secret::new(transform, key)
    }
}

impl fmt::Display for Secret {
    /// The `DHHC-1:XX:<base64>:` representation.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut raw = self.key.clone();
        raw.extend_from_slice(&crc32(&self.key).to_le_bytes());
        write!(
            f,
            "{PREFIX}{:02x}:{}:",
            self.transform.map_or(0, |h| h as u8),
            STANDARD.encode(raw)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // 32 bytes 0x00..0x1f with their CRC-32 (0x91267e8a, the standard CRC-32 of those bytes).
    fn sample() -> (Vec<u8>, String) {
        let key: Vec<u8> = (0u8..32).collect();
        let mut raw = key.clone();
        raw.extend_from_slice(&0x9126_7E8Au32.to_le_bytes());
        (key, format!("DHHC-1:00:{}:", STANDARD.encode(raw)))
    }

    #[test]
    fn crc32_is_the_standard_one() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn parses_and_prints_the_nvme_cli_representation() {
        let (key, text) = sample();
        let s: Secret = text.parse().unwrap();
        assert_eq!(s.key(), &key[..]);
        assert_eq!(s.transform(), None);
        assert_eq!(s.to_string(), text);
        // Without the trailing ':' too.
        let s2: Secret = text.trim_end_matches(':').parse().unwrap();
        assert_eq!(s2, s);
    }

    #[test]
    fn refuses_a_wrong_crc_length_prefix_or_transform() {
        let (_, text) = sample();
        let mut bad = text.clone().into_bytes();
        bad[12] = if bad[12] == b'A' { b'B' } else { b'A' };
        let e = String::from_utf8(bad)
            .unwrap()
            .parse::<Secret>()
            .unwrap_err();
        assert!(matches!(e, SecretError::Crc { .. }), "{e}");
        assert!(matches!(
            text.replacen("DHHC-1", "DHHC-2", 1).parse::<Secret>(),
            Err(SecretError::Format(_))
        ));
        assert!(matches!(
            text.replacen(":00:", ":04:", 1).parse::<Secret>(),
            Err(SecretError::Transform(_))
        ));
        // A 32-byte key cannot be transformed with SHA-512.
        assert!(matches!(
            text.replacen(":00:", ":03:", 1).parse::<Secret>(),
            Err(SecretError::LengthForHash { .. })
        ));
        assert!(matches!(
            "DHHC-1:00:AAAA:".parse::<Secret>(),
            Err(SecretError::Length(3))
        ));
        assert!(matches!(
            "DHHC-1:00:!!!!:".parse::<Secret>(),
            Err(SecretError::Base64(_))
        ));
    }

    #[test]
    fn transformation_is_hmac_of_the_nqn_and_the_suffix() {
        let s = Secret::new(Some(HashId::Sha256), &[7u8; 32]).unwrap();
        let t = s.transformed("nqn.host");
        assert_eq!(
            t,
            hmac(HashId::Sha256, &[7u8; 32], &[b"nqn.hostNVMe-over-Fabrics"])
        );
        assert_ne!(t, s.transformed("nqn.other"));
        let plain = Secret::new(None, &[7u8; 48]).unwrap();
        assert_eq!(plain.transformed("nqn.host"), vec![7u8; 48]);
    }

    proptest::proptest! {
        #[test]
        fn generated_secrets_round_trip(h in 0usize..4) {
            let t = [None, Some(HashId::Sha256), Some(HashId::Sha384), Some(HashId::Sha512)][h];
            let s = Secret::generate(t);
            let back: Secret = s.to_string().parse().unwrap();
            proptest::prop_assert_eq!(back, s);
        }
    }
}
