//! A harness that feeds arbitrary byte streams to the connection state machine, shared by
//! the cargo-fuzz target `target_conn` and the property tests. Not part of the stable API.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use nvme_tcp_wire::nvme::fabrics::CNTLID_DYNAMIC;
use nvme_tcp_wire::nvme::{ConnectCommand, ConnectData, PropertySetCommand, PropertySize, Sqe};
use nvme_tcp_wire::pdu::{CapsuleCmdRepr, HeaderBuf, IcReqRepr, emit_pdu};
use zerocopy::IntoBytes;

use crate::config::{SubsystemConfig, TargetConfig};
use crate::conn::{Connection, PortContext};
use crate::namespace::NamespaceConfig;
use crate::state::TargetState;

/// Subsystem NQN served by the harness (a RAM namespace).
pub const NQN: &str = "nqn.2024-01.io.ulp-ddp:fuzz";
/// Subsystem with a file namespace and the volatile write cache disabled, so that every
/// write takes the durable path (mode 3).
pub const FILE_NQN: &str = "nqn.2024-01.io.ulp-ddp:fuzz-file";
const HOSTNQN: &str = "nqn.2014-08.org.nvmexpress:uuid:fuzz";
/// A host that must authenticate (DH-HMAC-CHAP, ffdhe2048) with a key no input can know.
const AUTH_HOSTNQN: &str = "nqn.2014-08.org.nvmexpress:uuid:fuzz-auth";

fn state() -> Arc<TargetState> {
    static S: OnceLock<Arc<TargetState>> = OnceLock::new();
    Arc::clone(S.get_or_init(|| {
        // A 1 MiB backing file, unlinked once open: nothing is left behind.
        let path = std::env::temp_dir().join(format!("ulpddp-fuzz-{}.img", std::process::id()));
        let file_ok = std::fs::write(&path, vec![0u8; 1 << 20]).is_ok();
        let mut cfg =
            TargetConfig::single_port("127.0.0.1:0".parse().unwrap_or_else(|_| unreachable!()))
                .subsystem(
                    SubsystemConfig::new(NQN).namespace(
                        NamespaceConfig::parse("ram:1M").unwrap_or_else(|_| unreachable!()),
                    ),
                )
                .subsystem(
                    SubsystemConfig::new("nqn.2024-01.io.ulp-ddp:fuzz-null").namespace(
                        NamespaceConfig::parse("null:1G").unwrap_or_else(|_| unreachable!()),
                    ),
                );
        if file_ok {
            let mut file = SubsystemConfig::new(FILE_NQN).namespace(NamespaceConfig::new(
                crate::namespace::Backing::File {
                    path: path.clone(),
                    direct: false,
                },
            ));
            file.volatile_write_cache = false;
            cfg = cfg.subsystem(file);
        }
        cfg = cfg.host(crate::config::HostConfig {
            nqn: AUTH_HOSTNQN.into(),
            dhchap: Some(crate::config::HostAuthKeys {
                key: nvme_tcp_auth::Secret::generate(None),
                ctrl_key: Some(nvme_tcp_auth::Secret::generate(None)),
                hash: nvme_tcp_wire::nvme::HashId::Sha256,
                dhgroup: nvme_tcp_wire::nvme::DhGroupId::Ffdhe2048,
            }),
        });
        let state = TargetState::new(&cfg).unwrap_or_else(|_| unreachable!());
        let _ = std::fs::remove_file(&path);
        Arc::new(state)
    }))
}

fn conn(id: u64) -> Connection {
    Connection::new(
        id,
        state(),
        PortContext {
            portid: 1,
            local_addr: "127.0.0.1:4420".parse().unwrap_or_else(|_| unreachable!()),
            in_capsule_data_size: 8192,
        },
        Box::new(|| Box::new(|| {})),
        Instant::now(),
    )
}

fn capsule(sqe: &Sqe, data: &[u8], hdgst: bool, ddgst: bool) -> Vec<u8> {
    let mut raw = [0u8; 64];
    raw.copy_from_slice(sqe.as_bytes());
    let repr = CapsuleCmdRepr {
        hdgst,
        ddgst,
        pda: 0,
        sqe: raw,
        data_len: data.len() as u32,
    };
    let mut buf = vec![0u8; 256 + data.len()];
    let n = emit_pdu(&repr, data, &mut buf).unwrap_or(0);
    buf.truncate(n);
    buf
}

fn connect_pdu(subnqn: &str, qid: u16, cntlid: u16, hdgst: bool, ddgst: bool) -> Vec<u8> {
    connect_pdu_as(HOSTNQN, subnqn, qid, cntlid, hdgst, ddgst)
}

fn connect_pdu_as(
    hostnqn: &str,
    subnqn: &str,
    qid: u16,
    cntlid: u16,
    hdgst: bool,
    ddgst: bool,
) -> Vec<u8> {
    let cmd = ConnectCommand {
        recfmt: 0,
        qid,
        sqsize: 15,
        cattr: 0,
        kato: 0,
    };
    let data = ConnectData::new([7; 16], cntlid, subnqn, hostnqn).unwrap_or_default();
    capsule(&cmd.to_sqe(), data.as_bytes(), hdgst, ddgst)
}

/// Feeds `bytes` to `c` in chunks of `chunk` bytes, flushing output into a sink.
fn feed(c: &mut Connection, bytes: &[u8], chunk: usize) {
    let mut rest = bytes;
    let now = Instant::now();
    while !rest.is_empty() && !c.is_closed() {
        let buf = c.recv_buf();
        let n = chunk.min(buf.len()).min(rest.len());
        if n == 0 {
            break;
        }
        buf[..n].copy_from_slice(&rest[..n]);
        c.on_recv(n, now);
        let _ = c.flush(&mut std::io::sink());
        rest = &rest[n..];
    }
    c.handle_timeout(now);
    let _ = c.flush(&mut std::io::sink());
}

/// Runs one input. The first byte chooses the digests (bits 0, 1), whether the stream starts
/// on a fresh connection, an admin queue, an I/O queue of the RAM subsystem or an I/O queue
/// of the file subsystem (bits 2-3: 0, 1, 2, 3), and the chunk size (bits 4-7); the rest is
/// the stream.
pub fn run(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let (hdgst, ddgst) = (mode & 1 != 0, mode & 2 != 0);
    let chunk = 1 + ((mode >> 4) as usize) * 97;
    let ic = HeaderBuf::new(&IcReqRepr {
        pfv: 0,
        hpda: 0,
        hdgst_enable: hdgst,
        ddgst_enable: ddgst,
        maxr2t: 0,
    });
    match (mode >> 2) & 3 {
        0 => feed(&mut conn(1), rest, chunk),
        1 => {
            let mut a = conn(1);
            feed(&mut a, ic.as_bytes(), 4096);
            feed(
                &mut a,
                &connect_pdu(NQN, 0, CNTLID_DYNAMIC, hdgst, ddgst),
                4096,
            );
            feed(&mut a, rest, chunk);
        }
        m => {
            let subnqn = if m == 3 { FILE_NQN } else { NQN };
            let mut a = conn(1);
            feed(&mut a, ic.as_bytes(), 4096);
            feed(
                &mut a,
                &connect_pdu(subnqn, 0, CNTLID_DYNAMIC, hdgst, ddgst),
                4096,
            );
            let Some((cntlid, _)) = a.queue_id() else {
                return;
            };
            let en = PropertySetCommand {
                size: PropertySize::FourBytes,
                ofst: 0x14,
                value: 0x0046_0001,
            };
            feed(&mut a, &capsule(&en.to_sqe(), &[], hdgst, ddgst), 4096);
            let mut io = conn(2);
            feed(&mut io, ic.as_bytes(), 4096);
            feed(&mut io, &connect_pdu(subnqn, 1, cntlid, hdgst, ddgst), 4096);
            feed(&mut io, rest, chunk);
        }
    }
}

/// Runs one input on the admin queue of a host that must authenticate first (the `target_auth`
/// fuzz target): the first byte chooses the digests (bits 0, 1) and the chunk size (bits 4-7),
/// the rest is the stream (Authentication Send/Receive capsules and anything else). Checked:
/// no panic, bounded memory, and no command other than authentication is executed: the key
/// is random, so the queue never authenticates and `Connection::authenticated` stays false.
pub fn run_auth(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let (hdgst, ddgst) = (mode & 1 != 0, mode & 2 != 0);
    let chunk = 1 + ((mode >> 4) as usize) * 97;
    let ic = HeaderBuf::new(&IcReqRepr {
        pfv: 0,
        hpda: 0,
        hdgst_enable: hdgst,
        ddgst_enable: ddgst,
        maxr2t: 0,
    });
    let mut a = conn(1);
    feed(&mut a, ic.as_bytes(), 4096);
    feed(
        &mut a,
        &connect_pdu_as(AUTH_HOSTNQN, NQN, 0, CNTLID_DYNAMIC, hdgst, ddgst),
        4096,
    );
    feed(&mut a, rest, chunk);
    assert!(!a.authenticated(), "authenticated without the key");
}

#[cfg(test)]
mod tls_identity_tests {
    use super::*;

    /// A connection that authenticated with a TLS PSK bound to one host NQN serves a Connect
    /// of that host and refuses one naming another (Connect Invalid Host): a host's PSK does
    /// not open controllers for other hosts.
    #[test]
    fn a_connect_naming_another_host_than_the_tls_identity_is_refused() {
        let ic = HeaderBuf::new(&IcReqRepr {
            pfv: 0,
            hpda: 0,
            hdgst_enable: false,
            ddgst_enable: false,
            maxr2t: 0,
        });
        let other = "nqn.2014-08.org.nvmexpress:uuid:another-host";
        for (tls_host, served) in [(HOSTNQN, true), (other, false)] {
            let mut c = conn(1);
            c.set_tls_hostnqn(tls_host.into());
            feed(&mut c, ic.as_bytes(), 4096);
            feed(
                &mut c,
                &connect_pdu(NQN, 0, CNTLID_DYNAMIC, false, false),
                4096,
            );
            assert_eq!(c.queue_id().is_some(), served, "TLS identity of {tls_host}");
        }
        // Without TLS the Connect's host NQN is the only claim, as before.
        let mut c = conn(1);
        feed(&mut c, ic.as_bytes(), 4096);
        feed(
            &mut c,
            &connect_pdu(NQN, 0, CNTLID_DYNAMIC, false, false),
            4096,
        );
        assert!(c.queue_id().is_some());
    }
}
