//! The scripted controller of the host's tests (`tests/support`) as a process, breaking the
//! protocol on every eligible I/O command in one of its ways, to watch what a host (ours, or
//! another) does against it: how long until a command fails, how many reconnects, how much
//! it logs.
//!
//! ```text
//! cargo run -p nvme-tcp-host --example misbehaving_target -- ADDR:PORT MISBEHAVIOUR
//! cargo run -p nvme-tcp-host --example misbehaving_target -- 127.0.0.1:4420 unknown-cccid
//! ```
//!
//! MISBEHAVIOUR is one of `unknown-cccid`, `bad-header-digest` (the host must ask for header
//! digests), `wrong-hlen`, `misaligned-pdo`, `unknown-cid`, `term-req-mid-stream`,
//! `close-mid-stream` (Reads) and `r2t-unknown-cccid` (Writes larger than 4 KiB), or `none`.
//! The subsystem is `nqn.2024-01.io.test:mock` with one 32 MiB namespace of 512-byte blocks;
//! any host may connect. Prints what hosts did (connects, commands) once a second when it
//! changed; runs until killed.

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::atomic::Ordering;

use support::{Misbehave, Mock};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(addr), Some(name)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: misbehaving_target ADDR:PORT MISBEHAVIOUR");
        std::process::exit(2);
    };
    let mode = match name.as_str() {
        "none" => None,
        n => match Misbehave::from_name(n) {
            Some(m) => Some(m),
            None => {
                let names: Vec<&str> = Misbehave::ALL.iter().map(|m| m.name()).collect();
                eprintln!(
                    "unknown misbehaviour {n:?}; one of: none {}",
                    names.join(" ")
                );
                std::process::exit(2);
            }
        },
    };
    let mock = Mock::start_on(addr, 64 << 11, 4096);
    mock.misbehave(mode);
    println!(
        "{} on {} ({} misbehaving)",
        support::NQN,
        mock.addr,
        mode.map_or("not", Misbehave::name)
    );
    // What hosts did, once a second when it changed.
    let mut last = None;
    loop {
        std::thread::sleep(std::time::Duration::from_secs(1));
        let c = &mock.counters;
        let now = [
            c.admin_connects.load(Ordering::Relaxed),
            c.io_connects.load(Ordering::Relaxed),
            c.reads.load(Ordering::Relaxed),
            c.writes.load(Ordering::Relaxed),
            c.misbehaved.load(Ordering::Relaxed),
        ];
        if last != Some(now) {
            println!(
                "admin connects {}, I/O connects {}, reads {}, writes {}, misbehaved on {}",
                now[0], now[1], now[2], now[3], now[4]
            );
            last = Some(now);
        }
    }
}
