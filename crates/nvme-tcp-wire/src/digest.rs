//! CRC32C (Castagnoli) digests as NVMe/TCP uses them for HDGST and DDGST.
//!
//! Seed `0xFFFF_FFFF`, final XOR `0xFFFF_FFFF`, stored little-endian on the wire. The
//! computation is delegated to `crc-fast`, which uses the widest CRC instructions the CPU has.

use crc_fast::{CrcAlgorithm, Digest};

use crate::error::WireError;

/// Length of a header or data digest on the wire.
pub const DIGEST_LEN: usize = 4;

/// CRC32C of `data`, as NVMe/TCP defines its digests.
#[inline]
pub fn crc32c(data: &[u8]) -> u32 {
    crc_fast::checksum(CrcAlgorithm::Crc32Iscsi, data) as u32
}

/// HDGST of a header: CRC32C over its HLEN bytes (CH + PSH).
#[inline]
pub fn header_digest(header: &[u8]) -> u32 {
    crc32c(header)
}

/// DDGST of a PDU's data (not its padding), as the 4 bytes sent after the data.
#[inline]
pub fn data_digest(data: &[u8]) -> [u8; DIGEST_LEN] {
    crc32c(data).to_le_bytes()
}

/// Compares a computed data digest with the 4 received DDGST bytes.
///
/// A mismatch is [`WireError::DataDigest`]: per command, not a Termination Request
/// ([`WireError::termination`] is `None`); how to complete the command is the caller's policy.
#[inline]
pub fn check_data_digest(computed: u32, received: [u8; DIGEST_LEN]) -> Result<(), WireError> {
    let received = u32::from_le_bytes(received);
    if computed == received {
        Ok(())
    } else {
        Err(WireError::DataDigest { received, computed })
    }
}

/// An incremental CRC32C, for data that arrives in pieces (a PDU's data split over several
/// reads or segments). `Crc32c::new().update(a).update(b).finalize() == crc32c(a ++ b)`.
#[derive(Clone)]
pub struct Crc32c {
    inner: Digest,
}

impl Crc32c {
    /// A digest over zero bytes so far.
    pub fn new() -> Self {
        Self {
            inner: Digest::new(CrcAlgorithm::Crc32Iscsi),
        }
    }

    /// Feeds `data`.
    #[inline]
    pub fn update(&mut self, data: &[u8]) -> &mut Self {
        self.inner.update(data);
        self
    }

    /// The CRC32C of everything fed so far.
    #[inline]
    pub fn finalize(&self) -> u32 {
        self.inner.finalize() as u32
    }

    /// Starts over with zero bytes.
    pub fn reset(&mut self) {
        self.inner.reset();
    }
}

impl Default for Crc32c {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Crc32c {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Crc32c")
            .field("value", &self.finalize())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_value_matches_the_catalogue() {
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    }

    #[test]
    fn data_digest_is_little_endian_crc32c() {
        assert_eq!(data_digest(b"123456789"), [0x83, 0x92, 0x06, 0xE3]);
        assert!(check_data_digest(0xE306_9283, [0x83, 0x92, 0x06, 0xE3]).is_ok());
        let err = check_data_digest(1, [0x83, 0x92, 0x06, 0xE3]).unwrap_err();
        assert_eq!(err.termination(), None);
    }

    #[test]
    fn incremental_equals_one_shot() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7 + 3) as u8).collect();
        for split in [0, 1, 3, 64, 4095, 9999, 10_000] {
            let mut c = Crc32c::new();
            c.update(&data[..split]).update(&data[split..]);
            assert_eq!(c.finalize(), crc32c(&data), "split at {split}");
        }
    }
}
