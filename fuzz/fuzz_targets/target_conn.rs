#![no_main]
//! The target's connection state machine fed arbitrary PDU streams: on a fresh connection, an
//! admin queue or an I/O queue (chosen by the first byte), with or without digests, in chunks
//! of varying size. Checked: no panic; memory stays bounded (the receive buffer has a fixed
//! size and the validator refuses larger PDUs before anything is buffered).

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    nvme_tcp_target::fuzzing::run(data);
});
