//! Property tests of the connection state machine: arbitrary streams never panic and, after a
//! valid prefix, malformed PDUs close the connection. More cases: `PROPTEST_CASES=100000`.

use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_streams_never_panic(data in proptest::collection::vec(any::<u8>(), 0..4096)) {
        nvme_tcp_target::fuzzing::run(&data);
    }

    #[test]
    fn arbitrary_pdus_after_bring_up_never_panic(
        mode in any::<u8>(),
        ty in prop_oneof![Just(0u8), Just(2), Just(4), Just(6), any::<u8>()],
        hdr in proptest::collection::vec(any::<u8>(), 0..200),
        plen in 0u32..70000,
    ) {
        // A plausible common header with random fields, then random bytes.
        let mut data = vec![mode | 0x0C, ty, hdr.first().copied().unwrap_or(0), 72, 0];
        data.extend_from_slice(&plen.to_le_bytes());
        data.extend_from_slice(&hdr);
        nvme_tcp_target::fuzzing::run(&data);
    }
}
