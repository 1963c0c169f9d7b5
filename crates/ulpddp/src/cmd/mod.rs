//! One module per command family; each is owned by the crate it fronts.

pub mod ddp;
pub mod ddp_replay;
pub mod host;
pub mod perf;
pub mod target;
