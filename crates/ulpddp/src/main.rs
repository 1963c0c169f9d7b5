//! `ulpddp`: the NVMe/TCP target, nvme-cli-like host commands, `perf`, and the ULP DDP
//! control plane, in one binary.

use clap::{Parser, Subcommand};

mod cmd;
mod perf;

/// NVMe/TCP with direct data placement receive offload.
#[derive(Parser, Debug)]
#[command(name = "ulpddp", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve NVMe/TCP subsystems (an NVMe-oF target).
    Target(cmd::target::Args),
    #[command(flatten)]
    Host(cmd::host::Command),
    /// Measure NVMe/TCP throughput and latency (embedded target by default).
    Perf(cmd::perf::Args),
    /// ULP DDP offload control plane: capabilities and statistics.
    #[command(subcommand)]
    Ddp(cmd::ddp::Command),
}

/// The `ulpddp_build_info` gauge every metrics endpoint of this program serves.
pub(crate) fn build_info() -> ulp_ddp_ctl::metrics::BuildInfo {
    ulp_ddp_ctl::metrics::BuildInfo {
        program: "ulpddp",
        version: env!("CARGO_PKG_VERSION"),
    }
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Target(a) => cmd::target::run(a),
        Command::Host(c) => cmd::host::run(c),
        Command::Perf(a) => cmd::perf::run(a),
        Command::Ddp(c) => cmd::ddp::run(c),
    }
}
