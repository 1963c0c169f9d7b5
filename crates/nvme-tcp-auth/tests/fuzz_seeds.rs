//! Seed inputs of the `auth` fuzz target (`nvme_tcp_auth::fuzzing`): each runs through the
//! harness here, and the committed seeds in fuzz/seeds/auth must be what the harness
//! generates. Rewrite them with
//! `FUZZ_SEEDS=$PWD/fuzz/seeds/auth cargo test -p nvme-tcp-auth --test fuzz_seeds`
//! and fuzz with `cargo +nightly fuzz run auth fuzz/corpus/auth fuzz/seeds/auth`.

use std::path::PathBuf;

use nvme_tcp_auth::fuzzing;

#[test]
fn seeds_run_and_match_the_committed_ones() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/seeds/auth");
    if let Ok(out) = std::env::var("FUZZ_SEEDS") {
        std::fs::create_dir_all(&out).unwrap();
        for (name, data) in fuzzing::seeds() {
            std::fs::write(PathBuf::from(&out).join(name), data).unwrap();
        }
    }
    for (name, data) in fuzzing::seeds() {
        fuzzing::run(&data);
        let committed =
            std::fs::read(dir.join(&name)).unwrap_or_else(|e| panic!("committed seed {name}: {e}"));
        assert!(
            committed == data,
            "seed {name} differs from the generated one"
        );
    }
}

#[test]
fn the_harness_catches_nothing_on_random_input() {
    // A few thousand pseudo-random inputs of every mode (a cheap stand-in for the fuzzer in
    // CI): no panic means no property failed.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for i in 0..3000u32 {
        let mut v = vec![(i % 256) as u8];
        for _ in 0..(i % 200) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            v.push(x as u8);
        }
        fuzzing::run(&v);
    }
}
