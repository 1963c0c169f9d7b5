//! `ulpddp perf`: NVMe/TCP throughput and latency, against the embedded target or an external
//! one, with the raw TCP baseline measured in the same run.

pub mod baseline;
pub mod cpu;
pub mod ddp;
pub mod fio;
pub mod job;
pub mod pin;
pub mod report;
pub mod size;
