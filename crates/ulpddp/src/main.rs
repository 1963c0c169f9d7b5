//! `ulpddp`: the NVMe/TCP target, nvme-cli-like host commands, `perf`, and the ULP DDP
//! control plane, in one binary.
//!
//! Logging goes to stderr through `tracing`. `RUST_LOG` (e.g. `RUST_LOG=nvme_tcp_target=debug`)
//! sets the filter; without it the level is `info` for `target` (connections and Connects are
//! logged) and `warn` for the other commands, raised by each `-v` (info, debug, trace) and
//! lowered to `error` by `--quiet` (long only: `-q` is nvme-cli's host NQN).

use clap::{CommandFactory, Parser, Subcommand};

mod cmd;
mod perf;

/// NVMe/TCP with direct data placement receive offload.
#[derive(Parser, Debug)]
#[command(name = "ulpddp", version, about)]
struct Cli {
    /// More log output on stderr (repeatable: info, debug, trace); RUST_LOG overrides.
    #[arg(short = 'v', long = "verbose", global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Only errors on stderr; RUST_LOG overrides.
    #[arg(long, global = true, conflicts_with = "verbose")]
    quiet: bool,
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
    /// Print a new NVMe/TCP TLS PSK in the interchange format (as nvme-cli gen-tls-key).
    GenTlsKey(cmd::tls_key::GenArgs),
    /// Print the PSK identity and TLS PSK a configured PSK gives a host and subsystem.
    TlsPsk(cmd::tls_key::PskArgs),
    /// One JSON-RPC call on a control socket (target --control-socket, perf --ctl-socket).
    Rpc(cmd::rpc::Args),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page ulpddp(1), or write one page per command with --out-dir.
    Man(cmd::docs::ManArgs),
}

/// The `ulpddp_build_info` gauge every metrics endpoint of this program serves.
pub(crate) fn build_info() -> ulp_ddp_ctl::metrics::BuildInfo {
    ulp_ddp_ctl::metrics::BuildInfo {
        program: "ulpddp",
        version: env!("CARGO_PKG_VERSION"),
    }
}

/// The log level without RUST_LOG: a base per command, moved by -v / --quiet.
fn log_level(cli: &Cli) -> &'static str {
    const LEVELS: [&str; 5] = ["error", "warn", "info", "debug", "trace"];
    if cli.quiet {
        return "error";
    }
    let base = if matches!(cli.command, Command::Target(_)) {
        2
    } else {
        1
    };
    LEVELS[(base + usize::from(cli.verbose)).min(LEVELS.len() - 1)]
}

/// `println!` panics when stdout is a pipe whose reader has gone (`ulpddp id-ctrl -o json |
/// head -1`). That is the reader having read enough, not a bug: the process ends as a C tool
/// does, killed by SIGPIPE, without a message or a backtrace. (SIGPIPE stays ignored
/// otherwise, so that a socket the peer closed is an error the host handles, not the end of
/// the process.) Every other panic keeps the default report.
fn end_quietly_when_stdout_is_gone() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let p = info.payload();
        let msg = p
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| p.downcast_ref::<&str>().copied())
            .unwrap_or_default();
        let epipe = std::io::Error::from_raw_os_error(nix::errno::Errno::EPIPE as i32);
        if msg.starts_with("failed printing to stdout") && msg.ends_with(&epipe.to_string()) {
            use nix::sys::signal::{SigHandler, Signal, raise, signal};
            // SAFETY: the default disposition is no handler at all: nothing of this process
            // runs in signal context.
            let _ = unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) };
            let _ = raise(Signal::SIGPIPE);
            std::process::exit(128 + Signal::SIGPIPE as i32);
        }
        default(info)
    }));
}

fn main() -> std::process::ExitCode {
    end_quietly_when_stdout_is_gone();
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // A user-facing error: the message and its causes, never a Rust backtrace (even
            // with RUST_BACKTRACE set in the environment), and a cause that only repeats the
            // text of the one before is not printed twice.
            eprintln!("Error: {e}");
            let mut last = e.to_string();
            for cause in e.chain().skip(1) {
                let text = cause.to_string();
                if !last.contains(&text) {
                    eprintln!("  caused by: {text}");
                }
                last = text;
            }
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(log_level(&cli))),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
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
        Command::Rpc(a) => cmd::rpc::run(a),
        Command::GenTlsKey(a) => cmd::tls_key::generate(&a),
        Command::TlsPsk(a) => cmd::tls_key::derive(&a),
        Command::Completions { shell } => cmd::docs::completions(shell, Cli::command()),
        Command::Man(a) => cmd::docs::man(&a, Cli::command()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn level(argv: &[&str]) -> &'static str {
        log_level(&Cli::try_parse_from(argv).unwrap())
    }

    #[test]
    fn verbosity_flags_move_the_default_log_level() {
        assert_eq!(level(&["ulpddp", "target", "--allow-any-host"]), "info");
        assert_eq!(
            level(&["ulpddp", "-v", "target", "--allow-any-host"]),
            "debug"
        );
        assert_eq!(
            level(&["ulpddp", "target", "-vvvv", "--allow-any-host"]),
            "trace"
        );
        assert_eq!(
            level(&["ulpddp", "--quiet", "target", "--allow-any-host"]),
            "error"
        );
        assert_eq!(level(&["ulpddp", "discover"]), "warn");
        assert_eq!(level(&["ulpddp", "id-ctrl", "-n", "nqn.x:y", "-v"]), "info");
        // -q stays nvme-cli's host NQN.
        let cli = Cli::try_parse_from(["ulpddp", "id-ctrl", "-n", "nqn.x:y", "-q", "nqn.h:1"]);
        assert!(cli.is_ok());
        Cli::command().debug_assert();
    }
}
