//! One module per command family; each is owned by the crate it fronts.

pub mod blk;
pub mod ddp;
pub mod host;
pub mod perf;
pub mod target;
