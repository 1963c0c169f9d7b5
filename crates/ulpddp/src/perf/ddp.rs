//! `ulpddp perf --ddp`: the host over the simulated network with the software DDP engine.

/// Runs the offload comparison.
pub fn run(_args: &crate::cmd::perf::Args) -> anyhow::Result<()> {
    // TODO(issue 7): wire to ddp-sim once the simulated network lands.
    anyhow::bail!("--ddp needs the simulated network (crate ddp-sim), which is not built yet")
}
