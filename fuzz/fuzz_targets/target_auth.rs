#![no_main]
//! The target's connection state machine on the admin queue of a host that must authenticate
//! (DH-HMAC-CHAP): arbitrary PDU streams, with or without digests, in chunks of varying size.
//! Checked: no panic, bounded memory, and the queue never authenticates (the key is random).
//! See `nvme_tcp_target::fuzzing::run_auth`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    nvme_tcp_target::fuzzing::run_auth(data);
});
