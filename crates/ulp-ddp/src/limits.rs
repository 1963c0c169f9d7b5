//! Device limits and per-socket configuration (protocol-independent core with a
//! per-protocol part).

use crate::nvme_tcp::{NvmeTcpDdpConfig, NvmeTcpDdpLimits};
use serde::{Deserialize, Serialize};

/// The upper-layer protocol of an offload (`enum ulp_ddp_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UlpDdpType {
    /// NVMe/TCP.
    Nvme,
}

/// Per-protocol device limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProtoLimits {
    /// NVMe/TCP limits.
    Nvme(NvmeTcpDdpLimits),
}

/// Device limits and quirks for one protocol, queried with `limits` once the ULP knows it
/// will use the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Limits {
    /// Most scatter-gather entries in one I/O; 0 means no limit.
    pub max_ddp_sgl_len: u32,
    /// Smallest I/O (bytes) worth offloading; smaller I/Os take the normal path.
    pub io_threshold: u32,
    /// True if the offload can be combined with TLS.
    pub tls: bool,
    /// Protocol-specific limits.
    pub proto: ProtoLimits,
}

impl Limits {
    /// The protocol of these limits.
    pub const fn ulp_type(&self) -> UlpDdpType {
        match self.proto {
            ProtoLimits::Nvme(_) => UlpDdpType::Nvme,
        }
    }

    /// The NVMe/TCP limits, if these are NVMe/TCP limits.
    pub const fn nvme(&self) -> Option<&NvmeTcpDdpLimits> {
        match &self.proto {
            ProtoLimits::Nvme(l) => Some(l),
        }
    }
}

/// Per-protocol socket configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProtoConfig {
    /// NVMe/TCP queue configuration.
    Nvme(NvmeTcpDdpConfig),
}

/// Per-socket offload configuration, given to `sk_add`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct SkConfig {
    /// CPU the ULP processes this socket on; the device may steer the flow's receive queue
    /// accordingly. A hint only.
    pub affinity_hint: u32,
    /// TCP sequence number of the next byte the socket will receive, which must be the
    /// start of a PDU. A kernel device reads it from the socket (`copied_seq`); a
    /// software device cannot, so the ULP passes it. `None`: the device starts without
    /// framing and finds it through a resync.
    pub next_pdu_seq: Option<u32>,
    /// Protocol-specific configuration.
    pub proto: ProtoConfig,
}

impl SkConfig {
    /// An NVMe/TCP socket configuration.
    pub const fn nvme(
        affinity_hint: u32,
        next_pdu_seq: Option<u32>,
        cfg: NvmeTcpDdpConfig,
    ) -> Self {
        Self {
            affinity_hint,
            next_pdu_seq,
            proto: ProtoConfig::Nvme(cfg),
        }
    }

    /// The protocol of this configuration.
    pub const fn ulp_type(&self) -> UlpDdpType {
        match self.proto {
            ProtoConfig::Nvme(_) => UlpDdpType::Nvme,
        }
    }

    /// The NVMe/TCP configuration, if this is an NVMe/TCP socket.
    pub const fn nvme_config(&self) -> Option<&NvmeTcpDdpConfig> {
        match &self.proto {
            ProtoConfig::Nvme(c) => Some(c),
        }
    }
}
