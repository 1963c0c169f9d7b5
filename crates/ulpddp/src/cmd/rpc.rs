//! `ulpddp rpc`: one JSON-RPC call on a control socket (the target's `--control-socket`, or the
//! ULP DDP one of `perf --ddp --ctl-socket`), result printed as JSON.

use std::path::PathBuf;

use anyhow::Context;
use serde_json::Value;
use ulp_ddp_ctl::client::Client;

/// Arguments of `ulpddp rpc`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The control socket.
    #[arg(long, value_name = "PATH")]
    pub socket: PathBuf,
    /// Method, e.g. subsystem-list, namespace-add, host-add, connection-list.
    pub method: String,
    /// Parameters as a JSON object, e.g. '{"nqn": "nqn.2024-01.io.ulp-ddp:target"}'.
    #[arg(default_value = "{}")]
    pub params: String,
}

/// Runs `ulpddp rpc`.
pub fn run(a: Args) -> anyhow::Result<()> {
    let params: Value = serde_json::from_str(&a.params)
        .with_context(|| format!("params {:?} are not JSON", a.params))?;
    let mut c = Client::connect(&a.socket)?;
    let result = c.call(&a.method, params)?;
    println!("{}", serde_json::to_string_pretty(&result)?);
    Ok(())
}
