#![no_main]
//! In-band authentication: arbitrary bytes through the DH-HMAC-CHAP message parser (what
//! parses re-emits to the same message), through the controller's per-queue state machine
//! (every Authentication Receive answers with a valid message; no input authenticates
//! without the key) and through the host's (it never accepts an unverified controller). The
//! first byte picks the mode and the DH group; see `nvme_tcp_auth::fuzzing`. Seeds:
//! fuzz/seeds/auth.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    nvme_tcp_auth::fuzzing::run(data);
});
