//! Requests for the commands the host issues, built on the wire layer's [`Sqe`] and Fabrics
//! command types. The queue fills in the CID and SGL1.

use nvme_tcp_wire::nvme::fabrics::CNTLID_DYNAMIC;
use nvme_tcp_wire::nvme::{
    AbortCommand, AdminOpcode, ConnectCommand, ConnectData, DatasetManagementCommand, DsmRange,
    Feature, FlushCommand, GetLogPageCommand, IdentifyCommand, IoCommand, PropertyGetCommand,
    PropertySetCommand, PropertySize, ReadWriteCommand, SetFeaturesCommand, Sqe,
    WriteZeroesCommand,
};
use zerocopy::IntoBytes;

use crate::buf::IoBuf;
use crate::error::HostError;
use crate::options::ConnectOptions;
use crate::queue::{DataDir, Request, SQE_LEN};

/// Log page identifiers the host uses.
pub mod lid {
    /// Error Information.
    pub const ERROR: u8 = 0x01;
    /// SMART / Health Information.
    pub const SMART: u8 = 0x02;
    /// Discovery log page.
    pub const DISCOVERY: u8 = 0x70;
}

fn bytes(sqe: &Sqe) -> [u8; SQE_LEN] {
    let mut b = [0u8; SQE_LEN];
    b.copy_from_slice(sqe.as_bytes());
    b
}

fn req(sqe: &Sqe, dir: DataDir, buf: Option<IoBuf>, user_data: u64) -> Request {
    Request {
        sqe: bytes(sqe),
        dir,
        buf,
        user_data,
    }
}

/// The Read/Write fields for `nlb` blocks: NLB is 0's based, so 1..=65536 blocks are
/// representable; other counts are a caller bug (caught in debug builds) and are sent
/// truncated to 16 bits, which the controller then checks against the SGL length.
fn rw(nsid: u32, slba: u64, nlb: u32) -> ReadWriteCommand {
    debug_assert!((1..=65536).contains(&nlb), "NLB {nlb} outside 1..=65536");
    ReadWriteCommand::new(nsid, slba, nlb).unwrap_or(ReadWriteCommand {
        nsid,
        slba,
        nlb: nlb.wrapping_sub(1) as u16,
        fua: false,
        lr: false,
    })
}

/// Read `nlb` (1..=65536) logical blocks at `slba` into `buf` (its length is the transfer
/// length and must be `nlb` × LBA size).
pub fn read(nsid: u32, slba: u64, nlb: u32, buf: IoBuf, user_data: u64) -> Request {
    let sqe = IoCommand::Read(rw(nsid, slba, nlb)).to_sqe();
    req(&sqe, DataDir::ToHost, Some(buf), user_data)
}

/// Write `nlb` (1..=65536) logical blocks at `slba` from `buf`.
pub fn write(nsid: u32, slba: u64, nlb: u32, buf: IoBuf, user_data: u64) -> Request {
    let sqe = IoCommand::Write(rw(nsid, slba, nlb)).to_sqe();
    req(&sqe, DataDir::ToController, Some(buf), user_data)
}

/// Flush the volatile write cache of namespace `nsid`.
pub fn flush(nsid: u32, user_data: u64) -> Request {
    let sqe = IoCommand::Flush(FlushCommand { nsid }).to_sqe();
    req(&sqe, DataDir::None, None, user_data)
}

/// Write Zeroes over `nlb` (1..=65536) logical blocks at `slba`.
pub fn write_zeroes(nsid: u32, slba: u64, nlb: u32, user_data: u64) -> Request {
    let rwc = rw(nsid, slba, nlb);
    let sqe = IoCommand::WriteZeroes(WriteZeroesCommand {
        nsid,
        slba,
        nlb: rwc.nlb,
        deac: false,
        fua: false,
        lr: false,
    })
    .to_sqe();
    req(&sqe, DataDir::None, None, user_data)
}

/// Dataset Management with the Deallocate attribute over `ranges` of `(slba, nlb)` (1..=256
/// ranges). The range list travels as data to the controller.
pub fn deallocate(nsid: u32, ranges: &[(u64, u32)], user_data: u64) -> Result<Request, HostError> {
    if ranges.is_empty() || ranges.len() > 256 {
        return Err(HostError::Invalid(format!(
            "Dataset Management takes 1..=256 ranges, got {}",
            ranges.len()
        )));
    }
    let mut data = Vec::with_capacity(ranges.len() * std::mem::size_of::<DsmRange>());
    for &(slba, nlb) in ranges {
        data.extend_from_slice(DsmRange::new(slba, nlb).as_bytes());
    }
    let sqe = IoCommand::DatasetManagement(DatasetManagementCommand {
        nsid,
        nr: (ranges.len() - 1) as u8,
        idr: false,
        idw: false,
        ad: true,
    })
    .to_sqe();
    Ok(req(
        &sqe,
        DataDir::ToController,
        Some(IoBuf::Contig(data)),
        user_data,
    ))
}

/// Identify `cmd` (see [`IdentifyCommand::controller`] and friends); 4096 bytes into `buf`.
pub fn identify(cmd: IdentifyCommand, buf: IoBuf, user_data: u64) -> Request {
    req(&cmd.to_sqe(), DataDir::ToHost, Some(buf), user_data)
}

/// Get Log Page `lid`, `buf.len()` bytes (a non-zero dword multiple) from byte `offset`
/// (dword aligned).
pub fn get_log_page(
    lid: u8,
    nsid: u32,
    offset: u64,
    buf: IoBuf,
    user_data: u64,
) -> Result<Request, HostError> {
    let cmd = GetLogPageCommand::new(lid, nsid, offset, buf.len() as u64)
        .map_err(|e| HostError::Invalid(format!("Get Log Page: {e}")))?;
    Ok(req(&cmd.to_sqe(), DataDir::ToHost, Some(buf), user_data))
}

/// Set Features.
pub fn set_features(feature: Feature, user_data: u64) -> Request {
    let sqe = SetFeaturesCommand {
        nsid: 0,
        sv: false,
        feature,
    }
    .to_sqe();
    req(&sqe, DataDir::None, None, user_data)
}

/// Keep Alive.
pub fn keep_alive(user_data: u64) -> Request {
    let sqe = Sqe::new(AdminOpcode::KeepAlive as u8);
    req(&sqe, DataDir::None, None, user_data)
}

/// Abort command `cid` on submission queue `sqid`.
pub fn abort(sqid: u16, cid: u16, user_data: u64) -> Request {
    let sqe = AbortCommand { sqid, cid }.to_sqe();
    req(&sqe, DataDir::None, None, user_data)
}

/// Property Get of `size` at `ofst`.
pub fn property_get(ofst: u32, size: PropertySize, user_data: u64) -> Request {
    let sqe = PropertyGetCommand { size, ofst }.to_sqe();
    req(&sqe, DataDir::None, None, user_data)
}

/// Property Set of a 4-byte property.
pub fn property_set(ofst: u32, value: u32, user_data: u64) -> Request {
    let sqe = PropertySetCommand {
        size: PropertySize::FourBytes,
        ofst,
        value: value as u64,
    }
    .to_sqe();
    req(&sqe, DataDir::None, None, user_data)
}

/// Fabrics Connect for queue `qid` with `queue_size` entries; `cntlid` is
/// [`CNTLID_DYNAMIC`] for the admin queue, else the controller's id.
pub fn connect(
    opts: &ConnectOptions,
    qid: u16,
    queue_size: u16,
    cntlid: Option<u16>,
    user_data: u64,
) -> Result<Request, HostError> {
    let kato_ms = if qid == 0 {
        opts.kato
            .map_or(0, |d| d.as_millis().min(u32::MAX as u128) as u32)
    } else {
        0
    };
    let sqe = ConnectCommand {
        recfmt: 0,
        qid,
        sqsize: queue_size.saturating_sub(1),
        cattr: if opts.disable_sqflow {
            ConnectCommand::CATTR_DISABLE_SQ_FLOW_CONTROL
        } else {
            0
        },
        kato: kato_ms,
    }
    .to_sqe();
    let data = ConnectData::new(
        opts.hostid,
        cntlid.unwrap_or(CNTLID_DYNAMIC),
        &opts.subnqn,
        &opts.hostnqn,
    )
    .map_err(|e| HostError::Invalid(format!("Connect data: {e}")))?;
    Ok(req(
        &sqe,
        DataDir::ToController,
        Some(IoBuf::Contig(data.as_bytes().to_vec())),
        user_data,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use nvme_tcp_wire::nvme::{
        ConnectCommand, ConnectData, DatasetManagementCommand, DsmRange, FabricsCommand, IoCommand,
        Sqe,
    };

    fn rw(r: &Request) -> ReadWriteCommand {
        match IoCommand::parse(Sqe::from_array(&r.sqe)).unwrap() {
            IoCommand::Read(c) | IoCommand::Write(c) => c,
            other => panic!("not a read or write: {other:?}"),
        }
    }

    #[test]
    fn read_encodes_slba_and_zero_based_nlb() {
        let r = read(3, 0x1_0000_0002, 8, IoBuf::Contig(vec![0; 4096]), 5);
        assert!(matches!(
            IoCommand::parse(Sqe::from_array(&r.sqe)).unwrap(),
            IoCommand::Read(_)
        ));
        let c = rw(&r);
        assert_eq!((c.nsid, c.slba, c.nlb), (3, 0x1_0000_0002, 7));
        assert_eq!(r.dir, DataDir::ToHost);
    }

    #[test]
    fn connect_carries_1024_bytes_of_data_with_the_nqns() {
        let o = ConnectOptions::new("127.0.0.1", 4420, "nqn.test:sub");
        let r = connect(&o, 2, 128, Some(7), 0).unwrap();
        let c = ConnectCommand::parse(Sqe::from_array(&r.sqe)).unwrap();
        assert!(matches!(
            IoCommand::parse(Sqe::from_array(&r.sqe)).unwrap(),
            IoCommand::Fabrics(FabricsCommand::Connect(_))
        ));
        assert_eq!(c.qid, 2, "QID");
        assert_eq!(c.sqsize, 127, "SQSIZE");
        let d = r.buf.unwrap().to_vec();
        assert_eq!(d.len(), 1024);
        let cd = ConnectData::parse(&d).unwrap();
        assert_eq!(cd.cntlid(), 7);
        assert_eq!(cd.subnqn().unwrap(), "nqn.test:sub");
    }

    #[test]
    fn deallocate_builds_one_range_per_16_bytes() {
        let r = deallocate(1, &[(10, 2), (100, 3)], 0).unwrap();
        let d = r.buf.unwrap().to_vec();
        assert_eq!(d.len(), 32);
        let ranges = DsmRange::slice_from(&d, 2).unwrap();
        assert_eq!((ranges[1].nlb.get(), ranges[1].slba.get()), (3, 100));
        let IoCommand::DatasetManagement(DatasetManagementCommand { nr, ad, .. }) =
            IoCommand::parse(Sqe::from_array(&r.sqe)).unwrap()
        else {
            panic!("not a Dataset Management command");
        };
        assert_eq!((nr, ad), (1, true));
        assert!(deallocate(1, &[], 0).is_err());
        let r = read(1, 0, 65536, IoBuf::Contig(vec![]), 0);
        assert_eq!(rw(&r).nlb, 0xFFFF);
    }
}
