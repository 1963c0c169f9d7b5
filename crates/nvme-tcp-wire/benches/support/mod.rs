//! What the wire benches share: the C2HData header they parse and the host's parameters.

use nvme_tcp_wire::pdu::{DataPduRepr, HeaderBuf, PduFlags, PduType};
use nvme_tcp_wire::validate::{NegotiatedParams, Role};

/// A C2HData header of 4096 bytes of data with a data digest (and a header digest if asked).
pub fn c2h_header(hdgst: bool) -> HeaderBuf {
    HeaderBuf::new(&DataPduRepr {
        pdu_type: PduType::C2hData,
        flags: PduFlags::LAST_PDU,
        hdgst,
        ddgst: true,
        pda: 0,
        cccid: 0x42,
        ttag: 0,
        datao: 0x1_0000,
        datal: 4096,
    })
}

/// What a host validates received headers against, with data digests on.
pub fn host_params(hdgst: bool) -> NegotiatedParams {
    NegotiatedParams {
        hdgst,
        ddgst: true,
        ..NegotiatedParams::new(Role::Host)
    }
}
