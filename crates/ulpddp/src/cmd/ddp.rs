//! `ulpddp ddp caps-get|caps-set|stats-get|monitor`: the ULP DDP control plane client
//! (and `ulpddp ddp replay`, in [`super::ddp_replay`]).
//!
//! Talks JSON-RPC 2.0 to the control socket of a running `ulpddp` process (one started with
//! `--ctl-socket`, e.g. `ulpddp perf --ddp --ctl-socket PATH`). Prints a table by default and,
//! with `--json`, the reply shaped like the kernel `ulp-ddp` netlink family's.

use anyhow::Context;
use serde_json::{Value, json};
use ulp_ddp_ctl::client::Client;

/// Default control socket path.
pub const DEFAULT_SOCKET: &str = "/tmp/ulpddp.sock";

/// Options common to every control command.
#[derive(clap::Args, Debug, Clone)]
pub struct Common {
    /// Control socket of the process to talk to.
    #[arg(long, default_value = DEFAULT_SOCKET)]
    pub socket: std::path::PathBuf,
    /// Device to address (the kernel's ifindex); `ulpddp ddp dev-list` shows them.
    #[arg(long, default_value_t = 1)]
    pub ifindex: u32,
    /// Print the JSON reply instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Control commands.
#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Show the device's capabilities (hw and active).
    CapsGet(Common),
    /// Change active capabilities: new = ((active & !mask) | (wanted & mask)) & hw.
    CapsSet {
        #[command(flatten)]
        common: Common,
        /// Capabilities wanted on, as names (`nvme-tcp,nvme-tcp-ddgst-rx`) or a bit value.
        #[arg(long, default_value = "")]
        wanted: String,
        /// Capabilities to change, as names or a bit value.
        #[arg(long = "wanted-mask")]
        wanted_mask: String,
    },
    /// Show the ten offload counters.
    StatsGet(Common),
    /// List the devices of the process.
    DevList(Common),
    /// Print caps-set-ntf notifications as they happen (the `mgmt` group).
    Monitor(Common),
    /// Replay a capture (pcap/pcapng) of NVMe/TCP traffic through the software device, as a
    /// golden model: per-read checks, a summary, per-PDU verdicts (no running process needed).
    Replay(Box<super::ddp_replay::ReplayArgs>),
}

fn caps_arg(s: &str) -> Value {
    match s.trim().parse::<u64>() {
        Ok(n) => json!(n),
        Err(_) => json!(
            s.split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .collect::<Vec<_>>()
        ),
    }
}

fn names(v: &Value) -> String {
    let list: Vec<&str> = v
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if list.is_empty() {
        "-".into()
    } else {
        list.join(",")
    }
}

fn print_caps(v: &Value) {
    println!("ifindex {}", v["ifindex"]);
    println!("  {:<8} {}", "hw", names(&v["hw"]));
    println!("  {:<8} {}", "active", names(&v["active"]));
}

fn connect(c: &Common) -> anyhow::Result<Client> {
    Client::connect(&c.socket).with_context(|| {
        format!(
            "no control socket at {} (start a process with --ctl-socket, e.g. `ulpddp perf --ddp --ctl-socket {}`)",
            c.socket.display(),
            c.socket.display()
        )
    })
}

/// Runs a control command.
pub fn run(cmd: Command) -> anyhow::Result<()> {
    match cmd {
        Command::Replay(a) => return super::ddp_replay::run(*a),
        Command::CapsGet(c) => {
            let r = connect(&c)?.call("caps-get", json!({"ifindex": c.ifindex}))?;
            if c.json {
                println!("{r}")
            } else {
                print_caps(&r)
            }
        }
        Command::CapsSet {
            common: c,
            wanted,
            wanted_mask,
        } => {
            let r = connect(&c)?.call(
                "caps-set",
                json!({"ifindex": c.ifindex, "wanted": caps_arg(&wanted), "wanted-mask": caps_arg(&wanted_mask)}),
            )?;
            if c.json {
                println!("{r}")
            } else {
                print_caps(&r)
            }
        }
        Command::StatsGet(c) => {
            let r = connect(&c)?.call("stats-get", json!({"ifindex": c.ifindex}))?;
            if c.json {
                println!("{r}");
            } else {
                println!("ifindex {}", r["ifindex"]);
                if let Some(o) = r.as_object() {
                    for (k, v) in o.iter().filter(|(k, _)| k.as_str() != "ifindex") {
                        println!("  {k:<26} {v:>14}");
                    }
                }
            }
        }
        Command::DevList(c) => {
            let r = connect(&c)?.call("dev-list", json!({}))?;
            if c.json {
                println!("{r}");
            } else {
                println!("{:<8} {:<10} {:<28} active", "ifindex", "name", "hw");
                for d in r.as_array().into_iter().flatten() {
                    println!(
                        "{:<8} {:<10} {:<28} {}",
                        d["ifindex"],
                        d["name"].as_str().unwrap_or("?"),
                        names(&d["hw"]),
                        names(&d["active"])
                    );
                }
            }
        }
        Command::Monitor(c) => {
            let mut cl = connect(&c)?;
            cl.subscribe()?;
            loop {
                let (m, p) = cl.next_notification()?;
                if c.json {
                    println!("{}", json!({"name": m, "msg": p}));
                } else {
                    println!(
                        "{m}: ifindex {} hw {} active {}",
                        p["ifindex"],
                        names(&p["hw"]),
                        names(&p["active"])
                    );
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_arguments_accept_numbers_and_names() {
        assert_eq!(caps_arg("3"), json!(3));
        assert_eq!(
            caps_arg("nvme-tcp, nvme-tcp-ddgst-rx"),
            json!(["nvme-tcp", "nvme-tcp-ddgst-rx"])
        );
        assert_eq!(caps_arg(""), json!([]));
    }
}
