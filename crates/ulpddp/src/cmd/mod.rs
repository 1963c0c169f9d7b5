//! One module per command family; each is owned by the crate it fronts.

pub mod blk;
pub mod ddp;
pub mod ddp_replay;
pub mod docs;
pub mod host;
pub mod hostid;
pub mod nic;
pub mod nvme_json;
pub mod perf;
pub mod rpc;
pub mod session;
pub mod target;
pub mod target_ctl;
pub mod target_metrics;
pub mod tls_key;
