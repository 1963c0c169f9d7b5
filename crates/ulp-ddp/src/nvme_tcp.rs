//! The NVMe/TCP parts of the interface: protocol limits and per-queue configuration.
//!
//! Kept apart from the protocol-independent core, as the review of the kernel series asked
//! ("split the DDP and NVMe parts harder").

use serde::{Deserialize, Serialize};

/// NVMe/TCP PDU format version 1.0 (the ICReq/ICResp `PFV` value).
pub const NVME_TCP_PFV_1_0: u16 = 0;

/// NVMe/TCP specific device limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct NvmeTcpDdpLimits {
    /// True if the device accepts any 16-bit command ID. When false, the device indexes
    /// a tag table with the command ID, so command IDs must be linear, `0..queue_size`: the
    /// ULP must not put a generation counter in the upper bits (Linux applies its
    /// `NVME_QUIRK_SKIP_CID_GEN` quirk).
    pub full_ccid_range: bool,
}

/// The digests negotiated on a queue (ICReq/ICResp `DGST`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct NvmeTcpDigests {
    /// Header digest (`HDGST_ENABLE`, bit 0).
    pub header: bool,
    /// Data digest (`DDGST_ENABLE`, bit 1).
    pub data: bool,
}

impl NvmeTcpDigests {
    /// From the `DGST` byte of ICReq/ICResp.
    pub const fn from_bits(dgst: u8) -> Self {
        Self {
            header: dgst & 0x01 != 0,
            data: dgst & 0x02 != 0,
        }
    }
    /// As the `DGST` byte of ICReq/ICResp.
    pub const fn bits(self) -> u8 {
        (self.header as u8) | ((self.data as u8) << 1)
    }
}

/// NVMe/TCP per-queue offload configuration, given to `sk_add`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NvmeTcpDdpConfig {
    /// PDU format version ([`NVME_TCP_PFV_1_0`]).
    pub pfv: u16,
    /// PDU data alignment of the data PDUs this queue receives, in dwords, 0's based (the
    /// alignment is `(cpda + 1) * 4` bytes). Linux hosts use 0.
    pub cpda: u8,
    /// Negotiated digests.
    pub dgst: NvmeTcpDigests,
    /// Queue size (number of commands that may be outstanding; SQSIZE + 1).
    pub queue_size: u32,
}

impl Default for NvmeTcpDdpConfig {
    fn default() -> Self {
        Self {
            pfv: NVME_TCP_PFV_1_0,
            cpda: 0,
            dgst: NvmeTcpDigests::default(),
            queue_size: 128,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dgst_bits_round_trip() {
        for b in 0..4u8 {
            assert_eq!(NvmeTcpDigests::from_bits(b).bits(), b);
        }
        assert!(NvmeTcpDigests::from_bits(2).data);
        assert!(!NvmeTcpDigests::from_bits(2).header);
    }
}
