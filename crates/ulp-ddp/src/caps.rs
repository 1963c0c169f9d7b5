//! Offload capabilities: a named bitset with `hw` (what the device can do) and `active`
//! (what is switched on), and the caps-set rule of the `ulp-ddp` netlink family.

use serde::{Deserialize, Serialize};
use std::fmt;

/// One offload capability. The bit numbers and names are those of the `cap` enum of the
/// kernel's `ulp-ddp` netlink family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Cap {
    /// `nvme-tcp`: direct placement of NVMe/TCP C2HData payload (bit 0).
    NvmeTcp = 0,
    /// `nvme-tcp-ddgst-rx`: verification of NVMe/TCP receive data digests (bit 1).
    NvmeTcpDdgstRx = 1,
}

impl Cap {
    /// Every capability, in bit order.
    pub const ALL: [Cap; 2] = [Cap::NvmeTcp, Cap::NvmeTcpDdgstRx];

    /// The bit number.
    pub const fn bit(self) -> u32 {
        self as u32
    }

    /// The name used by the netlink family and the control plane.
    pub const fn name(self) -> &'static str {
        match self {
            Cap::NvmeTcp => "nvme-tcp",
            Cap::NvmeTcpDdgstRx => "nvme-tcp-ddgst-rx",
        }
    }

    /// Looks a capability up by its name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.name() == name)
    }
}

impl fmt::Display for Cap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A set of capabilities. Serialized as the unsigned integer the netlink family carries
/// (`enum-as-flags`), so `{"wanted": 3, "wanted-mask": 3}` reads as in the kernel's CLI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CapSet(u64);

impl CapSet {
    /// No capability.
    pub const EMPTY: Self = Self(0);
    /// Every capability this crate knows (the kernel policy mask `0x3`).
    pub const ALL: Self = Self((1 << Cap::NvmeTcp as u64) | (1 << Cap::NvmeTcpDdgstRx as u64));

    /// A set from raw bits; bits of unknown capabilities are dropped.
    pub const fn from_bits_truncate(bits: u64) -> Self {
        Self(bits & Self::ALL.0)
    }

    /// A set from raw bits; `None` if a bit names no known capability (the kernel answers
    /// such a caps-set with `EINVAL`).
    pub const fn from_bits(bits: u64) -> Option<Self> {
        if bits & !Self::ALL.0 != 0 {
            None
        } else {
            Some(Self(bits))
        }
    }

    /// The raw bits.
    pub const fn bits(self) -> u64 {
        self.0
    }

    /// A set holding one capability.
    pub const fn of(cap: Cap) -> Self {
        Self(1 << cap as u64)
    }

    /// True if `cap` is in the set.
    pub const fn contains(self, cap: Cap) -> bool {
        self.0 & (1 << cap as u64) != 0
    }

    /// The set with `cap` added or removed.
    #[must_use]
    pub const fn with(self, cap: Cap, on: bool) -> Self {
        if on {
            Self(self.0 | (1 << cap as u64))
        } else {
            Self(self.0 & !(1 << cap as u64))
        }
    }

    /// Union.
    #[must_use]
    pub const fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }

    /// Intersection.
    #[must_use]
    pub const fn intersection(self, other: Self) -> Self {
        Self(self.0 & other.0)
    }

    /// True if the set is empty.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The capabilities in the set, in bit order.
    pub fn iter(self) -> impl Iterator<Item = Cap> {
        Cap::ALL.into_iter().filter(move |c| self.contains(*c))
    }

    /// The names of the capabilities in the set, in bit order.
    pub fn names(self) -> impl Iterator<Item = &'static str> {
        self.iter().map(Cap::name)
    }

    /// A set from capability names; the unknown name is returned as the error.
    pub fn from_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<Self, &'a str> {
        names.into_iter().try_fold(Self::EMPTY, |set, name| {
            Cap::from_name(name).map(|c| set.with(c, true)).ok_or(name)
        })
    }

    /// The caps-set rule of the netlink family:
    /// `new = ((old & !mask) | (wanted & mask)) & hw`.
    #[must_use]
    pub const fn apply_request(old: Self, wanted: Self, mask: Self, hw: Self) -> Self {
        Self(((old.0 & !mask.0) | (wanted.0 & mask.0)) & hw.0)
    }
}

impl FromIterator<Cap> for CapSet {
    fn from_iter<I: IntoIterator<Item = Cap>>(iter: I) -> Self {
        iter.into_iter().fold(Self::EMPTY, |s, c| s.with(c, true))
    }
}

impl fmt::Display for CapSet {
    /// Comma-separated names, `-` for the empty set.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("-");
        }
        for (i, name) in self.names().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(name)?;
        }
        Ok(())
    }
}

/// The capabilities of a device: what the hardware supports and what is active.
/// `active` is always a subset of `hw`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct DevCaps {
    /// Supported by the device.
    pub hw: CapSet,
    /// Currently switched on.
    pub active: CapSet,
}

impl DevCaps {
    /// True if `cap` is active (the kernel's `ulp_ddp_is_cap_active`).
    pub const fn is_active(&self, cap: Cap) -> bool {
        self.active.contains(cap)
    }
}

/// A caps-set request (netlink `caps-set`: `wanted` and `wanted-mask`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct CapsSetRequest {
    /// The wanted values of the bits selected by `wanted_mask`.
    pub wanted: CapSet,
    /// The bits to change.
    pub wanted_mask: CapSet,
}

/// What a caps-set did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CapsSetOutcome {
    /// The capabilities after the request (read back from the device).
    pub caps: DevCaps,
    /// True if `active` changed: the control plane sends a `caps-set-ntf` notification to
    /// its `mgmt` subscribers.
    pub notify: bool,
}

/// A capability change, as the `caps-set-ntf` notification carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CapsChange {
    /// Active set before the change.
    pub old: CapSet,
    /// Capabilities after the change.
    pub caps: DevCaps,
}

impl CapsChange {
    /// Capabilities that were switched on by the change (`ulp_ddp_cap_turned_on`).
    pub const fn turned_on(&self) -> CapSet {
        CapSet(self.caps.active.0 & !self.old.0)
    }
    /// Capabilities that were switched off by the change (`ulp_ddp_cap_turned_off`).
    pub const fn turned_off(&self) -> CapSet {
        CapSet(self.old.0 & !self.caps.active.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_the_netlink_family() {
        assert_eq!(Cap::NvmeTcp.name(), "nvme-tcp");
        assert_eq!(Cap::NvmeTcpDdgstRx.name(), "nvme-tcp-ddgst-rx");
        assert_eq!(CapSet::ALL.bits(), 0x3);
        assert_eq!(CapSet::ALL.to_string(), "nvme-tcp,nvme-tcp-ddgst-rx");
        assert_eq!(CapSet::EMPTY.to_string(), "-");
        assert_eq!(
            CapSet::from_names(["nvme-tcp-ddgst-rx"]),
            Ok(CapSet::of(Cap::NvmeTcpDdgstRx))
        );
        assert_eq!(CapSet::from_names(["tls"]), Err("tls"));
    }

    #[test]
    fn unknown_bits_are_refused() {
        assert_eq!(CapSet::from_bits(0x4), None);
        assert_eq!(CapSet::from_bits_truncate(0x7), CapSet::ALL);
    }

    #[test]
    fn caps_set_only_touches_masked_bits_and_never_exceeds_hw() {
        let hw = CapSet::ALL;
        let old = CapSet::of(Cap::NvmeTcp);
        // Switch ddgst on without touching nvme-tcp.
        let new = CapSet::apply_request(old, CapSet::ALL, CapSet::of(Cap::NvmeTcpDdgstRx), hw);
        assert_eq!(new, CapSet::ALL);
        // Ask for everything on a device that has only nvme-tcp.
        let new = CapSet::apply_request(
            CapSet::EMPTY,
            CapSet::ALL,
            CapSet::ALL,
            CapSet::of(Cap::NvmeTcp),
        );
        assert_eq!(new, CapSet::of(Cap::NvmeTcp));
        // An empty mask changes nothing.
        assert_eq!(
            CapSet::apply_request(old, CapSet::EMPTY, CapSet::EMPTY, hw),
            old
        );
    }

    #[test]
    fn serializes_as_netlink_integers() {
        let req = CapsSetRequest {
            wanted: CapSet::ALL,
            wanted_mask: CapSet::ALL,
        };
        let json = serde_json::to_string(&req).unwrap();
        assert_eq!(json, r#"{"wanted":3,"wanted-mask":3}"#);
        let caps = DevCaps {
            hw: CapSet::ALL,
            active: CapSet::of(Cap::NvmeTcp),
        };
        assert_eq!(
            serde_json::to_string(&caps).unwrap(),
            r#"{"hw":3,"active":1}"#
        );
    }

    #[test]
    fn change_reports_turned_on_and_off() {
        let ch = CapsChange {
            old: CapSet::of(Cap::NvmeTcp),
            caps: DevCaps {
                hw: CapSet::ALL,
                active: CapSet::of(Cap::NvmeTcpDdgstRx),
            },
        };
        assert_eq!(ch.turned_on(), CapSet::of(Cap::NvmeTcpDdgstRx));
        assert_eq!(ch.turned_off(), CapSet::of(Cap::NvmeTcp));
    }

    proptest::proptest! {
        #[test]
        fn caps_set_rule_holds(old in 0u64..4, wanted in 0u64..4, mask in 0u64..4, hw in 0u64..4) {
            let (old, wanted, mask, hw) = (
                CapSet::from_bits_truncate(old & hw),
                CapSet::from_bits_truncate(wanted),
                CapSet::from_bits_truncate(mask),
                CapSet::from_bits_truncate(hw),
            );
            let new = CapSet::apply_request(old, wanted, mask, hw);
            for cap in Cap::ALL {
                if !hw.contains(cap) {
                    proptest::prop_assert!(!new.contains(cap));
                } else if mask.contains(cap) {
                    proptest::prop_assert_eq!(new.contains(cap), wanted.contains(cap));
                } else {
                    proptest::prop_assert_eq!(new.contains(cap), old.contains(cap));
                }
            }
        }
    }
}
