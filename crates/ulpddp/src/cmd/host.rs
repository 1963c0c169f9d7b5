//! TODO: being written.

/// Commands.
#[derive(clap::Subcommand, Debug)]
pub enum Command {}

/// Runs a command.
pub fn run(c: Command) -> anyhow::Result<()> {
    match c {}
}
