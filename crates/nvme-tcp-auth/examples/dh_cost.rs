//! Prints how long one key pair and one session key take per group (a rough check, not a
//! benchmark): `cargo run --release -p nvme-tcp-auth --example dh_cost`.
use std::time::Instant;

use nvme_tcp_auth::dh::KeyPair;
use nvme_tcp_wire::nvme::DhGroupId;

fn main() {
    for g in &DhGroupId::ALL[1..] {
        let t = Instant::now();
        let a = KeyPair::generate(*g).expect("group");
        let b = KeyPair::generate(*g).expect("group");
        let k = a.session_key(b.public()).expect("session key");
        println!(
            "{g:?}: 2 key pairs + 1 session key in {:?} ({} bytes)",
            t.elapsed(),
            k.len()
        );
    }
}
