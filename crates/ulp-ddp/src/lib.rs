//! The ULP DDP offload interface: how an upper-layer protocol (NVMe/TCP) asks a network
//! device to place received data directly into its buffers and to verify data digests.
//!
//! This is the interface of the Linux "nvme-tcp receive offloads" series in its final
//! (v30) form, in Rust, with the refinements its review asked for: a protocol-independent
//! core, the NVMe/TCP specifics in [`nvme_tcp`], capabilities and statistics shaped for a
//! control plane that mirrors the `ulp-ddp` netlink family.
//!
//! * [`caps`]: [`Cap`], [`CapSet`], [`DevCaps`] (`hw` / `active`) and the caps-set rule.
//! * [`limits`]: device [`Limits`] and per-socket [`SkConfig`].
//! * [`io`]: per-I/O buffers, [`DdpIo`] = command ID + [`IoBuf`] (the project's one
//!   scatter-gather type; see the module for the ownership hand-over).
//! * [`device`]: the device-level operations, [`UlpDdpDevice`], and the per-socket ones,
//!   [`UlpDdpSocket`], with the events that replace the kernel's callbacks, [`DdpEvent`].
//! * [`resync`]: the meeting point of the resync handshake, [`ResyncTracker`].
//! * [`stats`]: the ten counters, [`Stats`], named as in the netlink family.
//!
//! A software device implementing [`UlpDdpDevice`] lives in the `ddp-engine` crate.
//!
//! ```
//! use ulp_ddp::{Cap, CapSet, CapsSetRequest, DevCaps, Stats};
//!
//! // caps-set: switch data-digest offload on, leave nvme-tcp as it is.
//! let caps = DevCaps { hw: CapSet::ALL, active: CapSet::of(Cap::NvmeTcp) };
//! let req = CapsSetRequest { wanted: CapSet::ALL, wanted_mask: CapSet::of(Cap::NvmeTcpDdgstRx) };
//! let new = CapSet::apply_request(caps.active, req.wanted, req.wanted_mask, caps.hw);
//! assert_eq!(new.to_string(), "nvme-tcp,nvme-tcp-ddgst-rx");
//!
//! // stats-get, with the netlink names.
//! let stats = Stats { rx_nvme_tcp_setup: 2, rx_nvme_tcp_teardown: 2, ..Stats::default() };
//! let json = serde_json::to_value(stats).unwrap();
//! assert_eq!(json["rx-nvme-tcp-setup"], 2);
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod caps;
pub mod device;
pub mod error;
pub mod io;
pub mod limits;
pub mod nvme_tcp;
pub mod resync;
pub mod stats;

pub use caps::{Cap, CapSet, CapsChange, CapsSetOutcome, CapsSetRequest, DevCaps};
pub use device::{
    DdpCtx, DdpEvent, ResyncAction, ResyncFlags, SockId, UlpDdpDevice, UlpDdpSocket, caps_set,
    is_cap_active,
};
pub use error::{DdpError, SetupError};
pub use io::{Chunks, DdpIo, IoBuf, SgCursor};
pub use limits::{Limits, ProtoConfig, ProtoLimits, SkConfig, UlpDdpType};
pub use nvme_tcp::{NVME_TCP_PFV_1_0, NvmeTcpDdpConfig, NvmeTcpDdpLimits, NvmeTcpDigests};
pub use resync::ResyncTracker;
pub use stats::{StatId, Stats};
