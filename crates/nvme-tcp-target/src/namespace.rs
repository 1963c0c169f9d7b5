//! Namespaces: configuration (`ram:SIZE`, `file:PATH`, `null`), identification (UUID, NGUID,
//! EUI-64) and the opened runtime object.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::backend::{Backend, BackendError, FileStore, RamStore, committable_memory};

/// Bytes of RAM namespaces opened (and not thin) in this process: counted against the
/// committable memory when the next one opens.
static RAM_RESERVED: AtomicU64 = AtomicU64::new(0);

/// Size of a `null` namespace when none is given: 1 TiB.
pub const DEFAULT_NULL_SIZE: u64 = 1 << 40;

/// The LBA (logical block) size of a namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LbaSize {
    /// 512-byte blocks.
    #[default]
    B512,
    /// 4096-byte blocks.
    B4096,
}

impl LbaSize {
    /// Bytes per block.
    pub const fn bytes(self) -> u32 {
        match self {
            LbaSize::B512 => 512,
            LbaSize::B4096 => 4096,
        }
    }
    /// log2 of the block size (the LBADS field of the LBA format).
    pub const fn shift(self) -> u8 {
        match self {
            LbaSize::B512 => 9,
            LbaSize::B4096 => 12,
        }
    }
    /// From a byte count (512 or 4096).
    pub fn from_bytes(n: u64) -> Option<Self> {
        match n {
            512 => Some(LbaSize::B512),
            4096 => Some(LbaSize::B4096),
            _ => None,
        }
    }
}

/// Where a namespace's data lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backing {
    /// Memory of this many bytes.
    Ram {
        /// Size in bytes.
        size: u64,
    },
    /// Memory of this many bytes, allowed beyond what the target can commit: pages are
    /// taken on first write, and writing more than the machine has ends in the kernel's
    /// out-of-memory handling.
    ThinRam {
        /// Size in bytes.
        size: u64,
    },
    /// A regular file or block device.
    File {
        /// Path of the file or device.
        path: PathBuf,
        /// Open with `O_DIRECT`.
        direct: bool,
    },
    /// Zeroes on read, discard on write.
    Null {
        /// Advertised size in bytes.
        size: u64,
    },
}

/// Errors in a namespace specification.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NamespaceSpecError {
    /// The kind before ':' is unknown.
    #[error("unknown namespace kind {0:?} (expected ram:SIZE, file:PATH or null[:SIZE])")]
    UnknownKind(String),
    /// A size could not be parsed.
    #[error("invalid size {0:?} (expected a number with an optional K, M, G or T suffix)")]
    InvalidSize(String),
    /// A size is zero or not a multiple of the LBA size.
    #[error("size {size} is zero or not a multiple of the {lba}-byte LBA size")]
    BadSize {
        /// The size.
        size: u64,
        /// The LBA size.
        lba: u32,
    },
    /// An option after ',' is unknown or malformed.
    #[error(
        "invalid namespace option {0:?} (expected direct, thin, lba=512|4096, uuid=, nguid=, eui64=, nsid=)"
    )]
    InvalidOption(String),
    /// An identifier is not valid hex of the right length.
    #[error("invalid {field} {value:?}: expected {bytes} bytes of hex")]
    InvalidId {
        /// Which identifier.
        field: &'static str,
        /// The text.
        value: String,
        /// The expected byte count.
        bytes: usize,
    },
    /// `file:` without a path.
    #[error("file namespace without a path")]
    MissingPath,
}

/// Configuration of one namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespaceConfig {
    /// Namespace ID; `None` takes the lowest free one.
    pub nsid: Option<u32>,
    /// Where the data lives.
    pub backing: Backing,
    /// Block size.
    pub lba_size: LbaSize,
    /// Namespace UUID; derived from the subsystem NQN and NSID when `None`.
    pub uuid: Option<[u8; 16]>,
    /// Namespace Globally Unique Identifier; derived like the UUID when `None`.
    pub nguid: Option<[u8; 16]>,
    /// IEEE Extended Unique Identifier; not reported when `None`.
    pub eui64: Option<[u8; 8]>,
    /// A disabled namespace is configured but not visible to hosts.
    pub enabled: bool,
}

impl NamespaceConfig {
    /// A namespace of the given backing with defaults (512-byte LBAs, derived IDs, enabled).
    pub fn new(backing: Backing) -> Self {
        Self {
            nsid: None,
            backing,
            lba_size: LbaSize::default(),
            uuid: None,
            nguid: None,
            eui64: None,
            enabled: true,
        }
    }

    /// Parses `KIND[:ARG][,OPTION]...`:
    ///
    /// * `ram:SIZE` — memory (`SIZE` like `64M`, `1G`, `4096`; suffixes K, M, G, T are powers
    ///   of 1024); refused at open if larger than the memory the target can commit, unless
    ///   the `thin` option allows it,
    /// * `file:PATH` — a file or block device, `direct` option for `O_DIRECT`,
    /// * `null` or `null:SIZE` — zeroes/discard, 1 TiB by default.
    ///
    /// Options: `lba=512|4096`, `direct`, `nsid=N`, `uuid=HEX`, `nguid=HEX`, `eui64=HEX`
    /// (dashes in hex are ignored).
    ///
    /// ```
    /// use nvme_tcp_target::{NamespaceConfig, namespace::Backing};
    /// let ns = NamespaceConfig::parse("ram:64M,lba=4096").unwrap();
    /// assert_eq!(ns.backing, Backing::Ram { size: 64 << 20 });
    /// assert_eq!(ns.lba_size.bytes(), 4096);
    /// ```
    pub fn parse(spec: &str) -> Result<Self, NamespaceSpecError> {
        let mut parts = spec.split(',');
        let head = parts.next().unwrap_or_default();
        let (kind, arg) = match head.split_once(':') {
            Some((k, a)) => (k, Some(a)),
            None => (head, None),
        };
        let mut direct = false;
        let mut thin = false;
        let mut cfg = NamespaceConfig::new(Backing::Null { size: 0 });
        for opt in parts {
            let (k, v) = match opt.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (opt, None),
            };
            match (k, v) {
                ("direct", None) => direct = true,
                ("thin", None) => thin = true,
                ("lba", Some(v)) => {
                    cfg.lba_size = v
                        .parse::<u64>()
                        .ok()
                        .and_then(LbaSize::from_bytes)
                        .ok_or_else(|| NamespaceSpecError::InvalidOption(opt.to_string()))?
                }
                ("nsid", Some(v)) => {
                    cfg.nsid = Some(
                        v.parse::<u32>()
                            .ok()
                            .filter(|&n| n != 0 && n != u32::MAX)
                            .ok_or_else(|| NamespaceSpecError::InvalidOption(opt.to_string()))?,
                    )
                }
                ("uuid", Some(v)) => cfg.uuid = Some(parse_hex_id("uuid", v)?),
                ("nguid", Some(v)) => cfg.nguid = Some(parse_hex_id("nguid", v)?),
                ("eui64", Some(v)) => cfg.eui64 = Some(parse_hex_id("eui64", v)?),
                _ => return Err(NamespaceSpecError::InvalidOption(opt.to_string())),
            }
        }
        cfg.backing = match (kind, arg) {
            ("ram", Some(s)) if thin => Backing::ThinRam {
                size: parse_size(s)?,
            },
            ("ram", Some(s)) => Backing::Ram {
                size: parse_size(s)?,
            },
            ("ram", None) => return Err(NamespaceSpecError::InvalidSize(String::new())),
            ("null", s) => Backing::Null {
                size: match s {
                    Some(s) => parse_size(s)?,
                    None => DEFAULT_NULL_SIZE,
                },
            },
            ("file", Some(p)) if !p.is_empty() => Backing::File {
                path: PathBuf::from(p),
                direct,
            },
            ("file", _) => return Err(NamespaceSpecError::MissingPath),
            _ => return Err(NamespaceSpecError::UnknownKind(kind.to_string())),
        };
        if direct && !matches!(cfg.backing, Backing::File { .. }) {
            return Err(NamespaceSpecError::InvalidOption("direct".into()));
        }
        if thin && !matches!(cfg.backing, Backing::ThinRam { .. }) {
            return Err(NamespaceSpecError::InvalidOption("thin".into()));
        }
        if let Backing::Ram { size } | Backing::ThinRam { size } | Backing::Null { size } =
            cfg.backing
        {
            let lba = cfg.lba_size.bytes();
            if size == 0 || !size.is_multiple_of(lba as u64) {
                return Err(NamespaceSpecError::BadSize { size, lba });
            }
        }
        Ok(cfg)
    }
}

/// Parses a size such as `4096`, `64K`, `1G`, `2TiB`.
pub fn parse_size(s: &str) -> Result<u64, NamespaceSpecError> {
    let bad = || NamespaceSpecError::InvalidSize(s.to_string());
    let t = s.trim();
    let t = t
        .strip_suffix("iB")
        .or_else(|| t.strip_suffix('B'))
        .unwrap_or(t);
    let (num, mul) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m: u64 = match c.to_ascii_uppercase() {
                'K' => 1 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                'T' => 1 << 40,
                _ => return Err(bad()),
            };
            (&t[..i], m)
        }
        _ => (t, 1),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mul))
        .ok_or_else(bad)
}

/// Parses `N` bytes of hex, ignoring dashes (UUID notation).
pub fn parse_hex_id<const N: usize>(
    field: &'static str,
    s: &str,
) -> Result<[u8; N], NamespaceSpecError> {
    let bad = || NamespaceSpecError::InvalidId {
        field,
        value: s.to_string(),
        bytes: N,
    };
    let digits: Vec<u8> = s.bytes().filter(|&b| b != b'-').collect();
    if digits.len() != 2 * N {
        return Err(bad());
    }
    let mut out = [0u8; N];
    for (i, pair) in digits.chunks_exact(2).enumerate() {
        let hi = (pair[0] as char).to_digit(16).ok_or_else(bad)?;
        let lo = (pair[1] as char).to_digit(16).ok_or_else(bad)?;
        out[i] = (hi * 16 + lo) as u8;
    }
    Ok(out)
}

/// 64-bit FNV-1a, used to derive stable identifiers.
fn fnv1a(seed: u64, data: &[u8]) -> u64 {
    let mut h = seed;
    for &b in data {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// A 16-byte identifier derived from the subsystem NQN, the NSID and a label; stable across
/// restarts so hosts see the same namespace identity.
fn derive_id(subnqn: &str, nsid: u32, label: &[u8]) -> [u8; 16] {
    let mut key = Vec::with_capacity(subnqn.len() + 4 + label.len());
    key.extend_from_slice(subnqn.as_bytes());
    key.extend_from_slice(&nsid.to_le_bytes());
    key.extend_from_slice(label);
    let a = fnv1a(0xcbf2_9ce4_8422_2325, &key);
    let b = fnv1a(a ^ 0x9e37_79b9_7f4a_7c15, &key);
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&a.to_be_bytes());
    out[8..].copy_from_slice(&b.to_be_bytes());
    out
}

/// The identifiers of a namespace, reported in Identify Namespace and the Namespace
/// Identification Descriptor list (CNS 03h).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NamespaceIds {
    /// Namespace UUID (descriptor type 3).
    pub uuid: [u8; 16],
    /// NGUID (descriptor type 2).
    pub nguid: [u8; 16],
    /// EUI-64 (descriptor type 1), if configured.
    pub eui64: Option<[u8; 8]>,
}

/// Errors opening a namespace.
#[derive(Debug, thiserror::Error)]
pub enum NamespaceOpenError {
    /// The backend could not be opened.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// A RAM namespace larger than the memory the target can commit.
    #[error(
        "namespace {nsid}: ram:{size} needs {size} bytes of memory, but only {available} bytes \
         can be committed; use a smaller size, or the `thin` option to allow it anyway"
    )]
    RamTooLarge {
        /// NSID.
        nsid: u32,
        /// Size asked for.
        size: u64,
        /// Memory available (committable, less other RAM namespaces).
        available: u64,
    },
    /// The backing size is smaller than one block.
    #[error("namespace {nsid}: backing of {size} bytes holds no {lba}-byte block")]
    TooSmall {
        /// NSID.
        nsid: u32,
        /// Backing size.
        size: u64,
        /// LBA size.
        lba: u32,
    },
}

/// An opened namespace.
#[derive(Debug)]
pub struct Namespace {
    nsid: u32,
    lba: LbaSize,
    nlb: u64,
    ids: NamespaceIds,
    backend: Backend,
    /// Bytes counted in [`RAM_RESERVED`], given back on drop.
    reserved: u64,
    config: NamespaceConfig,
}

impl Drop for Namespace {
    fn drop(&mut self) {
        RAM_RESERVED.fetch_sub(self.reserved, Ordering::AcqRel);
    }
}

/// Counts `size` bytes of RAM namespace against the committable memory; fails if it does
/// not fit. Without `/proc` to tell, the size is accepted.
fn reserve_ram(nsid: u32, size: u64) -> Result<(), NamespaceOpenError> {
    let Some(committable) = committable_memory() else {
        RAM_RESERVED.fetch_add(size, Ordering::AcqRel);
        return Ok(());
    };
    let mut taken = RAM_RESERVED.load(Ordering::Acquire);
    loop {
        let available = committable.saturating_sub(taken);
        if size > available {
            return Err(NamespaceOpenError::RamTooLarge {
                nsid,
                size,
                available,
            });
        }
        match RAM_RESERVED.compare_exchange(
            taken,
            taken + size,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => return Ok(()),
            Err(now) => taken = now,
        }
    }
}

impl Namespace {
    /// Opens the backend of `cfg` as namespace `nsid` of subsystem `subnqn`. A backing size
    /// that is not a multiple of the block size is rounded down.
    pub fn open(
        subnqn: &str,
        nsid: u32,
        cfg: &NamespaceConfig,
    ) -> Result<Self, NamespaceOpenError> {
        let mut reserved = 0;
        if let Backing::Ram { size } = cfg.backing {
            reserve_ram(nsid, size)?;
            reserved = size;
        }
        let release = |e| {
            RAM_RESERVED.fetch_sub(reserved, Ordering::AcqRel);
            e
        };
        let backend = match &cfg.backing {
            Backing::Ram { size } | Backing::ThinRam { size } => {
                Backend::Ram(RamStore::new(*size).map_err(|e| release(e.into()))?)
            }
            Backing::File { path, direct } => Backend::File(FileStore::open(path, *direct)?),
            Backing::Null { size } => Backend::Null { size: *size },
        };
        let lba = cfg.lba_size;
        let nlb = backend.size() >> lba.shift();
        if nlb == 0 {
            return Err(release(NamespaceOpenError::TooSmall {
                nsid,
                size: backend.size(),
                lba: lba.bytes(),
            }));
        }
        let ids = NamespaceIds {
            uuid: cfg.uuid.unwrap_or_else(|| {
                let mut u = derive_id(subnqn, nsid, b"uuid");
                u[6] = (u[6] & 0x0f) | 0x40; // version 4 layout
                u[8] = (u[8] & 0x3f) | 0x80; // RFC 4122 variant
                u
            }),
            nguid: cfg
                .nguid
                .unwrap_or_else(|| derive_id(subnqn, nsid, b"nguid")),
            eui64: cfg.eui64,
        };
        Ok(Self {
            nsid,
            lba,
            nlb,
            ids,
            backend,
            reserved,
            config: NamespaceConfig {
                nsid: Some(nsid),
                ..cfg.clone()
            },
        })
    }

    /// The configuration it was opened from (with its NSID).
    pub fn config(&self) -> &NamespaceConfig {
        &self.config
    }

    /// Namespace ID.
    pub fn nsid(&self) -> u32 {
        self.nsid
    }
    /// Block size.
    pub fn lba_size(&self) -> LbaSize {
        self.lba
    }
    /// Number of blocks (NSZE = NCAP = NUSE).
    pub fn nlb(&self) -> u64 {
        self.nlb
    }
    /// Identifiers.
    pub fn ids(&self) -> &NamespaceIds {
        &self.ids
    }
    /// The storage.
    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    /// The byte range of `nlb` blocks from `slba`, or `None` if it leaves the namespace
    /// (the caller answers LBA Out of Range).
    pub fn byte_range(&self, slba: u64, nlb: u64) -> Option<(u64, u64)> {
        let end = slba.checked_add(nlb)?;
        if end > self.nlb {
            return None;
        }
        Some((slba << self.lba.shift(), nlb << self.lba.shift()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_three_kinds() {
        assert_eq!(
            NamespaceConfig::parse("ram:1G").unwrap().backing,
            Backing::Ram { size: 1 << 30 }
        );
        assert_eq!(
            NamespaceConfig::parse("null").unwrap().backing,
            Backing::Null {
                size: DEFAULT_NULL_SIZE
            }
        );
        assert_eq!(
            NamespaceConfig::parse("file:/tmp/x.img,direct,lba=4096")
                .unwrap()
                .backing,
            Backing::File {
                path: "/tmp/x.img".into(),
                direct: true
            }
        );
    }

    #[test]
    fn parses_options_and_ids() {
        let c = NamespaceConfig::parse(
            "null:1T,nsid=7,uuid=00112233-4455-6677-8899-aabbccddeeff,eui64=0102030405060708",
        )
        .unwrap();
        assert_eq!(c.nsid, Some(7));
        assert_eq!(c.uuid.unwrap()[15], 0xff);
        assert_eq!(c.eui64, Some([1, 2, 3, 4, 5, 6, 7, 8]));
    }

    #[test]
    fn rejects_bad_specs() {
        for bad in [
            "ram",
            "ram:",
            "ram:12Q",
            "disk:1G",
            "file:",
            "ram:1G,lba=1024",
            "ram:1000",
            "ram:1G,direct",
            "null:1G,thin",
            "file:/x,thin",
            "null,nsid=0",
            "ram:1G,uuid=zz",
        ] {
            assert!(NamespaceConfig::parse(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn ram_beyond_committable_memory_is_refused_unless_thin() {
        let avail = committable_memory().unwrap();
        let too_big = (avail + (1 << 30)).next_multiple_of(1 << 20);
        let spec = format!("ram:{too_big}");
        let e = Namespace::open("n", 1, &NamespaceConfig::parse(&spec).unwrap()).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, NamespaceOpenError::RamTooLarge { .. }), "{msg}");
        assert!(
            msg.contains(&too_big.to_string()) && msg.contains("thin"),
            "{msg}"
        );
        let thin = NamespaceConfig::parse(&format!("{spec},thin")).unwrap();
        assert_eq!(thin.backing, Backing::ThinRam { size: too_big });
        let ns = Namespace::open("n", 1, &thin).unwrap();
        assert_eq!(ns.nlb(), too_big / 512);
    }

    #[test]
    fn huge_null_and_thin_namespaces_open_without_allocating_for_their_size() {
        let rss = || {
            let s = std::fs::read_to_string("/proc/self/status").unwrap();
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .unwrap()
        };
        let before = rss();
        let null = Namespace::open("n", 1, &NamespaceConfig::parse("null:1024T").unwrap()).unwrap();
        let thin = NamespaceConfig::parse("ram:32T,thin").unwrap();
        if let Ok(ram) = Namespace::open("n", 2, &thin) {
            assert_eq!(ram.nlb(), (32u64 << 40) / 512);
        }
        assert_eq!(null.nlb(), (1024u64 << 40) / 512);
        // Metadata for every stripe of 32 TiB would be over 1 GiB; allow 64 MiB of noise.
        assert!(
            rss() < before + 64 * 1024,
            "RSS grew from {before} kB to {} kB",
            rss()
        );
    }

    #[test]
    fn sizes_use_binary_suffixes() {
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("64K").unwrap(), 65536);
        assert_eq!(parse_size("2MiB").unwrap(), 2 << 20);
        assert_eq!(parse_size("1t").unwrap(), 1 << 40);
        assert!(parse_size("99999999999T").is_err());
    }

    #[test]
    fn derived_ids_are_stable_and_distinct() {
        let cfg = NamespaceConfig::parse("ram:1M").unwrap();
        let a = Namespace::open("nqn.a", 1, &cfg).unwrap();
        let b = Namespace::open("nqn.a", 1, &cfg).unwrap();
        let c = Namespace::open("nqn.a", 2, &cfg).unwrap();
        assert_eq!(a.ids(), b.ids());
        assert_ne!(a.ids().uuid, c.ids().uuid);
        assert_ne!(a.ids().uuid, a.ids().nguid);
        assert_eq!(a.ids().uuid[6] >> 4, 4);
    }

    #[test]
    fn byte_range_checks_the_end() {
        let ns =
            Namespace::open("n", 1, &NamespaceConfig::parse("ram:1M,lba=4096").unwrap()).unwrap();
        assert_eq!(ns.nlb(), 256);
        assert_eq!(ns.byte_range(255, 1), Some((255 * 4096, 4096)));
        assert_eq!(ns.byte_range(255, 2), None);
        assert_eq!(ns.byte_range(u64::MAX, 2), None);
    }
}
