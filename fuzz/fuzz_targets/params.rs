//! The receiver configuration both header fuzz targets decode from their first 4 input bytes.

use nvme_tcp_wire::validate::{NegotiatedParams, Role};

/// Role, digests, PDA (out-of-range values included: they are clamped), MAXH2CDATA and the
/// PLEN limit, from the first three configuration bytes.
pub fn from_config(cfg: &[u8; 4]) -> NegotiatedParams {
    NegotiatedParams {
        role: if cfg[0] & 1 == 0 {
            Role::Host
        } else {
            Role::Controller
        },
        hdgst: cfg[0] & 2 != 0,
        ddgst: cfg[0] & 4 != 0,
        rx_pda: cfg[1] & 0x3F,
        max_h2c_data: 4096 << (cfg[2] & 7),
        max_plen: match cfg[2] >> 6 {
            0 => 256,
            1 => 8192,
            2 => 1 << 20,
            _ => u32::MAX,
        },
    }
}
