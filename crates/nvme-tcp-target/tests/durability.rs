//! FUA, the Volatile Write Cache feature and Flush, observed through the syncs the file
//! backend records (never through timings).

mod common;

use common::*;
use nvme_tcp_target::NamespaceConfig;
use nvme_tcp_target::backend::DurabilityStats;
use nvme_tcp_wire::nvme::{AdminOpcode, IoOpcode, SglDescriptor, Sqe, Status};

/// CDW12 bit 30 of Write and Write Zeroes.
const FUA: u32 = 1 << 30;
/// Feature identifier of the Volatile Write Cache.
const FID_VWC: u32 = 0x06;

struct Fixture {
    t: nvme_tcp_target::TargetHandle,
    path: std::path::PathBuf,
}

impl Fixture {
    fn new(name: &str, write_cache: bool) -> Self {
        let path =
            std::env::temp_dir().join(format!("nvme-tcp-target-{name}-{}.img", std::process::id()));
        std::fs::write(&path, vec![0u8; 4 << 20]).unwrap();
        let spec = format!("file:{}", path.display());
        let t = start_with(|mut c| {
            c.subsystems[0].namespaces = vec![NamespaceConfig::parse(&spec).unwrap()];
            c.subsystems[0].volatile_write_cache = write_cache;
            c
        });
        Self { t, path }
    }

    fn stats(&self) -> DurabilityStats {
        let sub = self.t.state().subsystem(SUBNQN).unwrap();
        sub.namespace(1)
            .unwrap()
            .backend()
            .durability_stats()
            .unwrap()
    }

    /// Syncs of any kind so far.
    fn synced(&self) -> u64 {
        let s = self.stats();
        s.data_syncs + s.dsync_writes
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn write_sqe(slba: u32, nlb: u32, fua: bool) -> Sqe {
    let mut sqe = Sqe::new(IoOpcode::Write as u8);
    sqe.set_nsid(1);
    sqe.set_cdw10(slba);
    sqe.set_cdw12((nlb - 1) | if fua { FUA } else { 0 });
    sqe
}

/// A write through R2T and H2CData.
fn write_r2t(io: &mut Client, slba: u32, data: &[u8], fua: bool) -> Status {
    let mut sqe = write_sqe(slba, (data.len() / 512) as u32, fua);
    let cid = io.cid();
    sqe.set_cid(cid);
    sqe.set_dptr(SglDescriptor::transport_data_block(data.len() as u32));
    io.send_capsule(&sqe, &[]);
    let r2t = io.recv().expect("R2T");
    let ttag = u16::from_le_bytes([r2t.header[10], r2t.header[11]]);
    let half = data.len() / 2;
    io.send_h2c(cid, ttag, 0, &data[..half], false);
    io.send_h2c(cid, ttag, half as u32, &data[half..], true);
    io.wait(cid).status()
}

fn get_vwc(admin: &mut Client, sel: u32) -> u32 {
    let mut gf = Sqe::new(AdminOpcode::GetFeatures as u8);
    gf.set_cdw10(FID_VWC | (sel << 8));
    let d = admin.command(gf, &[], 0);
    assert_eq!(d.status(), Status::SUCCESS);
    d.dw0()
}

fn set_vwc(admin: &mut Client, wce: bool) {
    let mut sf = Sqe::new(AdminOpcode::SetFeatures as u8);
    sf.set_cdw10(FID_VWC);
    sf.set_cdw11(wce as u32);
    assert_eq!(admin.command(sf, &[], 0).status(), Status::SUCCESS);
}

#[test]
fn fua_writes_are_synced_before_their_completion_and_cached_writes_are_not() {
    let f = Fixture::new("fua", true);
    let (mut admin, mut io, _) = admin_and_io(f.t.local_addrs()[0], false, false, 0);
    assert_eq!(get_vwc(&mut admin, 0), 1, "write cache enabled by default");
    let data = pattern(8192, 5);

    let before = f.synced();
    let d = io.command(write_sqe(0, 16, false), &data, 0);
    assert_eq!(d.status(), Status::SUCCESS);
    assert_eq!(write_r2t(&mut io, 64, &data, false), Status::SUCCESS);
    assert_eq!(f.synced(), before, "cached writes complete without a sync");

    // The completion has arrived, so the sync happened before it was sent.
    let d = io.command(write_sqe(16, 16, true), &data, 0);
    assert_eq!(d.status(), Status::SUCCESS);
    let after_capsule = f.synced();
    assert!(after_capsule > before, "FUA in-capsule write synced");
    assert_eq!(write_r2t(&mut io, 128, &data, true), Status::SUCCESS);
    let after_r2t = f.synced();
    assert!(after_r2t > after_capsule, "FUA R2T write synced");

    let mut wz = Sqe::new(IoOpcode::WriteZeroes as u8);
    wz.set_nsid(1);
    wz.set_cdw12(7 | FUA);
    assert_eq!(io.command(wz, &[], 0).status(), Status::SUCCESS);
    assert!(f.synced() > after_r2t, "FUA Write Zeroes synced");

    // Flush keeps syncing.
    let before_flush = f.stats().data_syncs;
    let mut flush = Sqe::new(IoOpcode::Flush as u8);
    flush.set_nsid(1);
    assert_eq!(io.command(flush, &[], 0).status(), Status::SUCCESS);
    assert!(f.stats().data_syncs > before_flush, "Flush syncs");

    let on_disk = std::fs::read(&f.path).unwrap();
    assert!(on_disk[16 * 512..16 * 512 + data.len()] == data[..]);
    assert!(on_disk[128 * 512..128 * 512 + data.len()] == data[..]);
}

#[test]
fn disabling_the_write_cache_makes_every_write_durable_and_get_features_reports_it() {
    let f = Fixture::new("wce", true);
    let (mut admin, mut io, _) = admin_and_io(f.t.local_addrs()[0], false, false, 0);
    let data = pattern(4096, 9);

    // Dirty data in the cache is written back when the cache is disabled.
    assert_eq!(
        io.command(write_sqe(0, 8, false), &data, 0).status(),
        Status::SUCCESS
    );
    let before_disable = f.stats().data_syncs;
    set_vwc(&mut admin, false);
    assert!(f.stats().data_syncs > before_disable, "cache written back");
    assert_eq!(
        get_vwc(&mut admin, 0),
        0,
        "current value follows Set Features"
    );
    assert_eq!(
        get_vwc(&mut admin, 1),
        1,
        "default value is the configured one"
    );

    for (i, slba) in [8u32, 16, 24].into_iter().enumerate() {
        let before = f.synced();
        let status = if i == 1 {
            write_r2t(&mut io, slba, &data, false)
        } else {
            io.command(write_sqe(slba, 8, false), &data, 0).status()
        };
        assert_eq!(status, Status::SUCCESS);
        assert!(f.synced() > before, "write {i} without FUA synced");
    }

    set_vwc(&mut admin, true);
    assert_eq!(get_vwc(&mut admin, 0), 1);
    let before = f.synced();
    assert_eq!(
        io.command(write_sqe(32, 8, false), &data, 0).status(),
        Status::SUCCESS
    );
    assert_eq!(f.synced(), before, "cache enabled again");
}

#[test]
fn the_configured_default_disables_the_write_cache() {
    let f = Fixture::new("wce-default", false);
    let (mut admin, mut io, _) = admin_and_io(f.t.local_addrs()[0], false, false, 0);
    assert_eq!(get_vwc(&mut admin, 0), 0);
    assert_eq!(get_vwc(&mut admin, 1), 0);
    let before = f.synced();
    let d = io.command(write_sqe(0, 8, false), &pattern(4096, 1), 0);
    assert_eq!(d.status(), Status::SUCCESS);
    assert!(f.synced() > before);
}
