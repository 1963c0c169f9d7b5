//! One module per command family; each is owned by the crate it fronts.

pub mod ddp;
pub mod host;
pub mod nic;
pub mod perf;
pub mod target;
