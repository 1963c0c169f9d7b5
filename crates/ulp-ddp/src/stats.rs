//! The ten device statistics, named as in the `ulp-ddp` netlink family (`stats-get`).

use serde::{Deserialize, Serialize};

/// Per-device offload statistics. Counters only grow. Field order is the order of the
/// netlink attributes; new counters go at the end.
///
/// Serialized with the netlink attribute names (`rx-nvme-tcp-sk-add`, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Stats {
    /// Sockets successfully configured for offload (`sk_add` succeeded).
    pub rx_nvme_tcp_sk_add: u64,
    /// Sockets that failed to be configured for offload.
    pub rx_nvme_tcp_sk_add_fail: u64,
    /// Sockets whose offload configuration was removed (`sk_del`).
    pub rx_nvme_tcp_sk_del: u64,
    /// I/Os successfully configured for receive DDP (`setup` succeeded).
    pub rx_nvme_tcp_setup: u64,
    /// I/Os that failed DDP configuration.
    pub rx_nvme_tcp_setup_fail: u64,
    /// I/Os whose DDP configuration was removed (`teardown`).
    pub rx_nvme_tcp_teardown: u64,
    /// Packets that failed offload validation.
    pub rx_nvme_tcp_drop: u64,
    /// Resync requests caused by receive reordering or loss.
    pub rx_nvme_tcp_resync: u64,
    /// TCP packets whose payload was (at least in part) placed by the offload.
    pub rx_nvme_tcp_packets: u64,
    /// Bytes placed directly by the offload.
    pub rx_nvme_tcp_bytes: u64,
}

/// Identifies one counter of [`Stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StatId {
    /// `rx-nvme-tcp-sk-add`.
    SkAdd,
    /// `rx-nvme-tcp-sk-add-fail`.
    SkAddFail,
    /// `rx-nvme-tcp-sk-del`.
    SkDel,
    /// `rx-nvme-tcp-setup`.
    Setup,
    /// `rx-nvme-tcp-setup-fail`.
    SetupFail,
    /// `rx-nvme-tcp-teardown`.
    Teardown,
    /// `rx-nvme-tcp-drop`.
    Drop,
    /// `rx-nvme-tcp-resync`.
    Resync,
    /// `rx-nvme-tcp-packets`.
    Packets,
    /// `rx-nvme-tcp-bytes`.
    Bytes,
}

impl StatId {
    /// Every counter, in netlink attribute order.
    pub const ALL: [StatId; 10] = [
        StatId::SkAdd,
        StatId::SkAddFail,
        StatId::SkDel,
        StatId::Setup,
        StatId::SetupFail,
        StatId::Teardown,
        StatId::Drop,
        StatId::Resync,
        StatId::Packets,
        StatId::Bytes,
    ];

    /// The netlink attribute name.
    pub const fn name(self) -> &'static str {
        match self {
            StatId::SkAdd => "rx-nvme-tcp-sk-add",
            StatId::SkAddFail => "rx-nvme-tcp-sk-add-fail",
            StatId::SkDel => "rx-nvme-tcp-sk-del",
            StatId::Setup => "rx-nvme-tcp-setup",
            StatId::SetupFail => "rx-nvme-tcp-setup-fail",
            StatId::Teardown => "rx-nvme-tcp-teardown",
            StatId::Drop => "rx-nvme-tcp-drop",
            StatId::Resync => "rx-nvme-tcp-resync",
            StatId::Packets => "rx-nvme-tcp-packets",
            StatId::Bytes => "rx-nvme-tcp-bytes",
        }
    }

    /// The one-line meaning, as the netlink spec documents it.
    pub const fn doc(self) -> &'static str {
        match self {
            StatId::SkAdd => "sockets successfully configured for offload",
            StatId::SkAddFail => "sockets that failed to be configured for offload",
            StatId::SkDel => "sockets whose offload configuration was removed",
            StatId::Setup => "I/Os successfully configured for receive DDP",
            StatId::SetupFail => "I/Os that failed DDP configuration",
            StatId::Teardown => "I/Os whose DDP configuration was removed",
            StatId::Drop => "packets that failed offload validation",
            StatId::Resync => "resync requests caused by receive reordering or loss",
            StatId::Packets => "TCP packets successfully processed by the offload",
            StatId::Bytes => "bytes successfully processed by the offload",
        }
    }

    /// Looks a counter up by its netlink name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }
}

impl Stats {
    /// The value of one counter.
    pub const fn get(&self, id: StatId) -> u64 {
        match id {
            StatId::SkAdd => self.rx_nvme_tcp_sk_add,
            StatId::SkAddFail => self.rx_nvme_tcp_sk_add_fail,
            StatId::SkDel => self.rx_nvme_tcp_sk_del,
            StatId::Setup => self.rx_nvme_tcp_setup,
            StatId::SetupFail => self.rx_nvme_tcp_setup_fail,
            StatId::Teardown => self.rx_nvme_tcp_teardown,
            StatId::Drop => self.rx_nvme_tcp_drop,
            StatId::Resync => self.rx_nvme_tcp_resync,
            StatId::Packets => self.rx_nvme_tcp_packets,
            StatId::Bytes => self.rx_nvme_tcp_bytes,
        }
    }

    /// A mutable reference to one counter.
    pub fn get_mut(&mut self, id: StatId) -> &mut u64 {
        match id {
            StatId::SkAdd => &mut self.rx_nvme_tcp_sk_add,
            StatId::SkAddFail => &mut self.rx_nvme_tcp_sk_add_fail,
            StatId::SkDel => &mut self.rx_nvme_tcp_sk_del,
            StatId::Setup => &mut self.rx_nvme_tcp_setup,
            StatId::SetupFail => &mut self.rx_nvme_tcp_setup_fail,
            StatId::Teardown => &mut self.rx_nvme_tcp_teardown,
            StatId::Drop => &mut self.rx_nvme_tcp_drop,
            StatId::Resync => &mut self.rx_nvme_tcp_resync,
            StatId::Packets => &mut self.rx_nvme_tcp_packets,
            StatId::Bytes => &mut self.rx_nvme_tcp_bytes,
        }
    }

    /// `(netlink name, value)` pairs in attribute order, for tables and Prometheus text.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        StatId::ALL.into_iter().map(|id| (id.name(), self.get(id)))
    }

    /// Counter-wise sum (a device summing its per-queue counters).
    #[must_use]
    pub fn saturating_add(mut self, other: &Stats) -> Stats {
        for id in StatId::ALL {
            let v = self.get_mut(id);
            *v = v.saturating_add(other.get(id));
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_names_are_the_netlink_names() {
        let mut s = Stats::default();
        for (i, id) in StatId::ALL.into_iter().enumerate() {
            *s.get_mut(id) = i as u64;
        }
        let v: serde_json::Value = serde_json::to_value(s).unwrap();
        let obj = v.as_object().unwrap();
        assert_eq!(obj.len(), 10);
        for (i, id) in StatId::ALL.into_iter().enumerate() {
            assert_eq!(obj[id.name()], i as u64, "{}", id.name());
            assert_eq!(StatId::from_name(id.name()), Some(id));
        }
        let back: Stats = serde_json::from_value(v).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn iter_follows_attribute_order() {
        let names: Vec<_> = Stats::default().iter().map(|(n, _)| n).collect();
        assert_eq!(names.first(), Some(&"rx-nvme-tcp-sk-add"));
        assert_eq!(names.last(), Some(&"rx-nvme-tcp-bytes"));
    }
}
