//! `ulpddp completions SHELL` and `ulpddp man`: shell completions and man pages generated
//! from the command-line definition itself, so they never drift from it.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::Command;
use clap_complete::Shell;

/// Arguments of `ulpddp man`.
#[derive(clap::Args, Debug)]
pub struct ManArgs {
    /// Write one page per command (ulpddp.1, ulpddp-target.1, ...) into DIR instead of
    /// printing ulpddp(1) to stdout.
    #[arg(long, value_name = "DIR")]
    pub out_dir: Option<PathBuf>,
}

/// Prints the completion script of `shell` for `cmd`.
pub fn completions(shell: Shell, mut cmd: Command) -> anyhow::Result<()> {
    let name = cmd.get_name().to_string();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, name, &mut out);
    std::io::stdout().lock().write_all(&out)?;
    Ok(())
}

/// Prints or writes the man pages of `cmd`.
pub fn man(args: &ManArgs, cmd: Command) -> anyhow::Result<()> {
    match &args.out_dir {
        None => {
            let mut out = Vec::new();
            clap_mangen::Man::new(cmd).render(&mut out)?;
            std::io::stdout().lock().write_all(&out)?;
        }
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            // One page per command, named as `man` looks them up: ulpddp-target.1, ...
            clap_mangen::generate_to(cmd, dir)
                .with_context(|| format!("writing man pages into {}", dir.display()))?;
        }
    }
    Ok(())
}
