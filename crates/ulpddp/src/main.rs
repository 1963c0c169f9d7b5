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
    /// Export the namespaces of a subsystem over NBD (for qemu, nbd-client).
    Nbd(cmd::blk::NbdArgs),
    /// Serve the namespaces of a subsystem as Linux ublk block devices (/dev/ublkbN).
    #[cfg(feature = "ublk")]
    Ublk(cmd::blk::UblkArgs),
    /// Serve the namespaces of a subsystem as Linux ublk block devices (not in this build:
    /// rebuild with `--features ublk`, or use `ulpddp nbd`).
    #[cfg(not(feature = "ublk"))]
    #[command(disable_help_flag = true)]
    Ublk {
        /// (ignored)
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
        args: Vec<String>,
    },
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
        Command::Nbd(a) => cmd::blk::run_nbd(a),
        #[cfg(feature = "ublk")]
        Command::Ublk(a) => cmd::blk::run_ublk(a),
        #[cfg(not(feature = "ublk"))]
        Command::Ublk { .. } => Err(anyhow::anyhow!(
            "this ulpddp was built without ublk support: rebuild with \
             `cargo build --release -p ulpddp --features ublk` (needs libclang), \
             or export the namespaces over NBD with `ulpddp nbd`"
        )),
    }
}
