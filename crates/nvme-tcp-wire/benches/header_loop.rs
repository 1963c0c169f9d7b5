//! A fixed loop of 1,000,000 C2HData header parse+validate calls, for counting instructions
//! with callgrind (stable on a shared, loaded machine where wall-clock numbers are not):
//!
//! ```text
//! cargo bench -p nvme-tcp-wire --bench header_loop --no-run
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null target/release/deps/header_loop-<hash> [hdgst]
//! ```
//!
//! Instructions per header ≈ "Collected" / 1,000,000. Run directly, it prints the wall-clock
//! time per header too.

use std::hint::black_box;
use std::time::Instant;

use nvme_tcp_wire::pdu::{DataPdu, DataPduRepr};
use nvme_tcp_wire::validate::validate_header;

mod support;

const N: usize = 1_000_000;

fn main() {
    // `cargo bench` passes `--bench`; any other argument turns header digests on.
    let hdgst = std::env::args().skip(1).any(|a| !a.starts_with("--"));
    let hdr = support::c2h_header(hdgst);
    let params = support::host_params(hdgst);
    let start = Instant::now();
    let mut acc = 0usize;
    for _ in 0..N {
        let bytes = black_box(hdr.as_bytes());
        let Ok(layout) = validate_header(bytes, black_box(&params)) else {
            continue;
        };
        let Ok(repr) = DataPduRepr::parse(&DataPdu::new_unchecked(bytes)) else {
            continue;
        };
        acc = acc.wrapping_add(layout.data_len() + repr.cccid as usize);
    }
    let ns = start.elapsed().as_nanos() as f64 / N as f64;
    println!("hdgst={hdgst}: {ns:.1} ns per C2HData header parse+validate (checksum {acc})");
}
