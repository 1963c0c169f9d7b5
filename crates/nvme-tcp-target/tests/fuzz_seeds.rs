//! Seed inputs for the `target_conn` fuzz target: valid command streams for every mode of
//! `nvme_tcp_target::fuzzing::run` (a fresh connection, an admin queue, I/O queues of the RAM
//! and of the file subsystem), so the fuzzer starts deep in the command handlers. Each seed
//! is also run through the harness here (it must not panic), and the committed seeds must be
//! what this file generates.
//!
//! Write them into a corpus directory with
//! `FUZZ_SEEDS=$PWD/fuzz/seeds/target_conn cargo test -p nvme-tcp-target --test fuzz_seeds
//! seeds_run`
//! (an absolute path: tests run in the crate directory). The committed seeds are there; run
//! the fuzzer with `cargo +nightly fuzz run target_conn fuzz/corpus/target_conn
//! fuzz/seeds/target_conn` (new inputs go to the first, ignored, directory). The seeds of
//! `target_auth` (a host that must authenticate) are written with `FUZZ_AUTH_SEEDS=DIR`.

use nvme_tcp_target::config::DISCOVERY_NQN;
use nvme_tcp_wire::nvme::fabrics::CNTLID_DYNAMIC;
use nvme_tcp_wire::nvme::{
    AdminOpcode, ConnectCommand, ConnectData, DsmRange, IoOpcode, SglDescriptor, Sqe,
};
use nvme_tcp_wire::pdu::{
    CapsuleCmdRepr, DataPduRepr, HeaderBuf, IcReqRepr, PduFlags, PduType, emit_pdu,
};
use zerocopy::IntoBytes;

fn capsule(mut sqe: Sqe, cid: u16, data: &[u8], c2h: u32, ddgst: bool, hdgst: bool) -> Vec<u8> {
    sqe.set_cid(cid);
    if data.is_empty() {
        sqe.set_dptr(SglDescriptor::transport_data_block(c2h));
    } else {
        sqe.set_dptr(SglDescriptor::data_block_offset(0, data.len() as u32));
    }
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
    let n = emit_pdu(&repr, data, &mut buf).unwrap();
    buf.truncate(n);
    buf
}

fn h2c(
    cid: u16,
    ttag: u16,
    datao: u32,
    data: &[u8],
    last: bool,
    hdgst: bool,
    ddgst: bool,
) -> Vec<u8> {
    let repr = DataPduRepr {
        pdu_type: PduType::H2cData,
        flags: if last {
            PduFlags::LAST_PDU
        } else {
            PduFlags::NONE
        },
        hdgst,
        ddgst,
        pda: 0,
        cccid: cid,
        ttag,
        datao,
        datal: data.len() as u32,
    };
    let mut buf = vec![0u8; 256 + data.len()];
    let n = emit_pdu(&repr, data, &mut buf).unwrap();
    buf.truncate(n);
    buf
}

fn admin_stream(hdgst: bool, ddgst: bool) -> Vec<u8> {
    let mut s = Vec::new();
    let mut cid = 10;
    let mut add = |sqe: Sqe, data: &[u8], c2h: u32| {
        cid += 1;
        s.extend(capsule(sqe, cid, data, c2h, ddgst, hdgst));
    };
    let mut en = Sqe::new(AdminOpcode::Fabrics as u8);
    en.set_fctype(0x00);
    en.set_cdw11(0x14);
    en.set_cdw12(0x0046_0001);
    add(en, &[], 0);
    for (cns, nsid) in [(1u32, 0u32), (0, 1), (2, 0), (3, 1), (5, 1), (6, 0), (8, 1)] {
        let mut id = Sqe::new(AdminOpcode::Identify as u8);
        id.set_nsid(nsid);
        id.set_cdw10(cns);
        add(id, &[], 4096);
    }
    for lid in [1u32, 2, 3, 4, 0x70] {
        let mut gl = Sqe::new(AdminOpcode::GetLogPage as u8);
        gl.set_cdw10(lid | (127 << 16));
        add(gl, &[], 512);
    }
    for (fid, v) in [
        (7u32, 0x0003_0003u32),
        (0x0B, 1 << 8),
        (0x0F, 5000),
        (6, 0),
        (6, 1),
    ] {
        let mut sf = Sqe::new(AdminOpcode::SetFeatures as u8);
        sf.set_cdw10(fid);
        sf.set_cdw11(v);
        add(sf, &[], 0);
        for sel in [0u32, 1, 3] {
            let mut gf = Sqe::new(AdminOpcode::GetFeatures as u8);
            gf.set_cdw10(fid | (sel << 8));
            add(gf, &[], 0);
        }
    }
    add(Sqe::new(AdminOpcode::AsyncEventRequest as u8), &[], 0);
    let mut ab = Sqe::new(AdminOpcode::Abort as u8);
    ab.set_cdw10(27 << 16);
    add(ab, &[], 0);
    add(Sqe::new(AdminOpcode::KeepAlive as u8), &[], 0);
    s
}

fn fua(mut sqe: Sqe) -> Sqe {
    sqe.set_cdw12(sqe.cdw12() | 1 << 30);
    sqe
}

/// ICReq and an admin Connect to `subnqn`, for seeds that start on a fresh connection.
fn bring_up(subnqn: &str, hdgst: bool, ddgst: bool) -> Vec<u8> {
    let mut s = HeaderBuf::new(&IcReqRepr {
        pfv: 0,
        hpda: 0,
        hdgst_enable: hdgst,
        ddgst_enable: ddgst,
        maxr2t: 0,
    })
    .as_bytes()
    .to_vec();
    let cmd = ConnectCommand {
        recfmt: 0,
        qid: 0,
        sqsize: 31,
        cattr: 0,
        kato: 0,
    };
    let data = ConnectData::new(
        [7; 16],
        CNTLID_DYNAMIC,
        subnqn,
        "nqn.2014-08.org.nvmexpress:uuid:fuzz",
    )
    .unwrap();
    s.extend(capsule(cmd.to_sqe(), 1, data.as_bytes(), 0, ddgst, hdgst));
    s
}

fn io_stream(hdgst: bool, ddgst: bool) -> Vec<u8> {
    let mut s = Vec::new();
    let rw = |op: IoOpcode, slba: u32, nlb: u32| {
        let mut sqe = Sqe::new(op as u8);
        sqe.set_nsid(1);
        sqe.set_cdw10(slba);
        sqe.set_cdw12(nlb - 1);
        sqe
    };
    s.extend(capsule(
        rw(IoOpcode::Write, 0, 8),
        1,
        &[0x5A; 4096],
        0,
        ddgst,
        hdgst,
    ));
    s.extend(capsule(
        rw(IoOpcode::Read, 0, 8),
        2,
        &[],
        4096,
        ddgst,
        hdgst,
    ));
    // A write through R2T: TTAG 0 is the first one a queue hands out.
    s.extend(capsule(
        rw(IoOpcode::Write, 16, 16),
        3,
        &[],
        8192,
        ddgst,
        hdgst,
    ));
    s.extend(h2c(3, 0, 0, &[0xA5; 4096], false, hdgst, ddgst));
    s.extend(h2c(3, 0, 4096, &[0xA5; 4096], true, hdgst, ddgst));
    // FUA, in the capsule and through R2T (TTAG 0 is free again).
    s.extend(capsule(
        fua(rw(IoOpcode::Write, 32, 8)),
        8,
        &[0x3C; 4096],
        0,
        ddgst,
        hdgst,
    ));
    s.extend(capsule(
        fua(rw(IoOpcode::Write, 40, 8)),
        9,
        &[],
        4096,
        ddgst,
        hdgst,
    ));
    s.extend(h2c(9, 0, 0, &[0xC3; 4096], true, hdgst, ddgst));
    let mut fl = Sqe::new(IoOpcode::Flush as u8);
    fl.set_nsid(1);
    s.extend(capsule(fl, 4, &[], 0, ddgst, hdgst));
    s.extend(capsule(
        rw(IoOpcode::WriteZeroes, 0, 2),
        5,
        &[],
        0,
        ddgst,
        hdgst,
    ));
    let mut dsm = Sqe::new(IoOpcode::DatasetManagement as u8);
    dsm.set_nsid(1);
    dsm.set_cdw11(1 << 2);
    s.extend(capsule(
        dsm,
        6,
        DsmRange::new(0, 8).as_bytes(),
        0,
        ddgst,
        hdgst,
    ));
    s.extend(capsule(
        rw(IoOpcode::Read, 0, 256),
        7,
        &[],
        128 * 1024,
        ddgst,
        hdgst,
    ));
    s
}

/// (file name, harness input).
fn seeds() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for dg in 0u8..4 {
        let (hdgst, ddgst) = (dg & 1 != 0, dg & 2 != 0);
        for chunk in [0u8, 0xF0] {
            let mut a = vec![dg | 0x04 | chunk];
            a.extend(admin_stream(hdgst, ddgst));
            out.push((format!("admin-dg{dg}-c{chunk:02x}"), a));
            let mut i = vec![dg | 0x08 | chunk];
            i.extend(io_stream(hdgst, ddgst));
            out.push((format!("io-dg{dg}-c{chunk:02x}"), i));
            let mut fi = vec![dg | 0x0C | chunk];
            fi.extend(io_stream(hdgst, ddgst));
            out.push((format!("io-file-dg{dg}-c{chunk:02x}"), fi));
            let mut f = vec![dg | chunk];
            f.extend(bring_up(nvme_tcp_target::fuzzing::NQN, hdgst, ddgst));
            f.extend(admin_stream(hdgst, ddgst));
            out.push((format!("fresh-dg{dg}-c{chunk:02x}"), f));
            // A discovery controller: the same admin commands, the discovery log among them.
            let mut d = vec![dg | chunk];
            d.extend(bring_up(DISCOVERY_NQN, hdgst, ddgst));
            d.extend(admin_stream(hdgst, ddgst));
            out.push((format!("fresh-discovery-dg{dg}-c{chunk:02x}"), d));
        }
    }
    out
}

#[test]
fn seeds_run_through_the_harness() {
    let dir = std::env::var_os("FUZZ_SEEDS");
    for (name, data) in seeds() {
        nvme_tcp_target::fuzzing::run(&data);
        if let Some(d) = &dir {
            std::fs::create_dir_all(d).unwrap();
            std::fs::write(std::path::Path::new(d).join(name), &data).unwrap();
        }
    }
}

#[test]
fn committed_seeds_are_the_generated_ones() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/seeds/target_conn");
    let mut names = Vec::new();
    for (name, data) in seeds() {
        let committed = std::fs::read(dir.join(&name))
            .unwrap_or_else(|e| panic!("{name}: {e} (regenerate them, see the top of this file)"));
        assert!(
            committed == data,
            "{name} differs from what this file generates"
        );
        names.push(name);
    }
    let on_disk = std::fs::read_dir(&dir).unwrap().count();
    assert_eq!(on_disk, names.len(), "stale seeds in {}", dir.display());
}

/// Seeds of the `target_auth` fuzz target: a DH-HMAC-CHAP Negotiate and the Receive of the
/// Challenge, a Reply (wrong, as every fuzz input must be), the Receive of the Failure1,
/// then commands that must be refused, with each digest setting.
fn auth_seeds() -> Vec<(String, Vec<u8>)> {
    use nvme_tcp_wire::nvme::auth::{NegotiateRepr, ReplyRepr};
    use nvme_tcp_wire::nvme::{AuthMessage, AuthReceiveCommand, AuthSendCommand};
    let neg = AuthMessage::Negotiate(NegotiateRepr {
        t_id: 1,
        sc_c: 0,
        hash_ids: &[1, 2, 3],
        dhgroup_ids: &[0, 1, 2, 3, 4, 5],
    })
    .to_vec();
    let reply = AuthMessage::Reply(ReplyRepr {
        t_id: 1,
        cvalid: true,
        seqnum: 3,
        rval: &[0xA5; 32],
        cval: &[0x5A; 32],
        dhv: &[0x42; 256],
    })
    .to_vec();
    let mut out = Vec::new();
    for dg in 0u8..4 {
        let (hdgst, ddgst) = (dg & 1 != 0, dg & 2 != 0);
        let send = |cid, m: &[u8]| {
            capsule(
                AuthSendCommand::dhchap(m.len() as u32).to_sqe(),
                cid,
                m,
                0,
                ddgst,
                hdgst,
            )
        };
        let recv = |cid| {
            capsule(
                AuthReceiveCommand::dhchap(4096).to_sqe(),
                cid,
                &[],
                4096,
                ddgst,
                hdgst,
            )
        };
        let mut s = vec![dg];
        s.extend(send(1, &neg));
        s.extend(recv(2));
        s.extend(send(3, &reply));
        s.extend(recv(4));
        s.extend(admin_stream(hdgst, ddgst));
        out.push((format!("auth-dg{dg}"), s));
    }
    out
}

#[test]
fn auth_seeds_run_and_match_the_committed_ones() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/seeds/target_auth");
    let write = std::env::var_os("FUZZ_AUTH_SEEDS");
    for (name, data) in auth_seeds() {
        nvme_tcp_target::fuzzing::run_auth(&data);
        if let Some(d) = &write {
            std::fs::create_dir_all(d).unwrap();
            std::fs::write(std::path::Path::new(d).join(&name), &data).unwrap();
        }
        let committed = std::fs::read(dir.join(&name)).unwrap_or_else(|e| {
            panic!("{name}: {e} (FUZZ_AUTH_SEEDS=$PWD/fuzz/seeds/target_auth)")
        });
        assert!(
            committed == data,
            "{name} differs from what this file generates"
        );
    }
}
