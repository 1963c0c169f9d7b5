//! `ulpddp perf`: NVMe/TCP throughput and latency, against the embedded target or an external
//! one, with the raw TCP baseline measured in the same run.

// TODO(issue 5): remove once cmd::perf drives these (the host library is being written).
#![allow(dead_code)]

pub mod baseline;
pub mod cpu;
pub mod report;
pub mod size;
