//! The ULP DDP control plane of a process that runs an NVMe/TCP host or target.
//!
//! It mirrors the kernel's `ulp-ddp` generic netlink family (caps-get, caps-set, stats-get and
//! the `caps-set-ntf` notification of the `mgmt` group) as **JSON-RPC 2.0 over a Unix domain
//! socket**, the convention of userspace storage daemons (SPDK's `rpc.py`), one JSON object per
//! line. Devices are addressed by `ifindex`, as in the kernel.
//!
//! | method | params | result |
//! |---|---|---|
//! | `caps-get` | `{"ifindex": N}` | `{"ifindex", "hw", "active"}` |
//! | `caps-set` | `{"ifindex", "wanted", "wanted-mask"}` | `{"ifindex", "hw", "active"}` |
//! | `stats-get` | `{"ifindex": N}` | `{"ifindex", "rx-nvme-tcp-sk-add", …}` |
//! | `dev-list` | `{}` | `[{"ifindex", "name", "hw", "active"}]` |
//! | `subscribe` | `{"group": "mgmt"}` | `true`, then `caps-set-ntf` notifications |
//!
//! Capability sets are written as lists of names (`["nvme-tcp", "nvme-tcp-ddgst-rx"]`), as the
//! kernel's YNL tools render enum-as-flags attributes; requests may also give the bit value
//! (`3`). A request naming an unknown capability, or asking to switch on a capability the
//! device does not have, is refused and changes nothing.
//!
//! [`metrics`] serves the same counters, and whatever else the process registers, in the
//! Prometheus text format.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod client;
pub mod metrics;
pub mod rpc;
pub mod server;

use std::sync::{Arc, Mutex};
use ulp_ddp::UlpDdpDevice;

/// A device shared between the data path and the control plane.
pub type SharedDevice = Arc<dyn UlpDdpDevice>;

/// One device the control plane exposes.
#[derive(Clone)]
pub struct DeviceEntry {
    /// Index by which requests name the device (the kernel's `ifindex`).
    pub ifindex: u32,
    /// Human-readable name (the kernel's interface name), e.g. `sim0`.
    pub name: String,
    /// The device.
    pub dev: SharedDevice,
}

impl std::fmt::Debug for DeviceEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceEntry")
            .field("ifindex", &self.ifindex)
            .field("name", &self.name)
            .finish()
    }
}

/// The devices of this process.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    devices: Arc<Mutex<Vec<DeviceEntry>>>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a device; returns its ifindex (1, 2, … in order of registration).
    pub fn add(&self, name: impl Into<String>, dev: SharedDevice) -> u32 {
        let mut d = self.devices.lock().unwrap_or_else(|e| e.into_inner());
        let ifindex = d.iter().map(|e| e.ifindex).max().unwrap_or(0) + 1;
        d.push(DeviceEntry {
            ifindex,
            name: name.into(),
            dev,
        });
        ifindex
    }

    /// The device with `ifindex`.
    pub fn get(&self, ifindex: u32) -> Option<DeviceEntry> {
        let d = self.devices.lock().unwrap_or_else(|e| e.into_inner());
        d.iter().find(|e| e.ifindex == ifindex).cloned()
    }

    /// All devices, in ifindex order.
    pub fn list(&self) -> Vec<DeviceEntry> {
        let d = self.devices.lock().unwrap_or_else(|e| e.into_inner());
        d.clone()
    }
}
