//! The host's identity (Host NQN and Host Identifier), found as nvme-cli finds it: the
//! `--hostnqn`/`--hostid` flags, else `/etc/nvme/hostnqn` and `/etc/nvme/hostid`, else a fresh
//! random identity. The Linux kernel refuses a host NQN that arrives with two different host
//! IDs, so a missing half is derived from the other where that is possible (the UUID inside a
//! `nqn.2014-08.org.nvmexpress:uuid:` NQN).

use std::path::Path;

use anyhow::{Context, bail};
use nvme_tcp_host::options::{hostnqn_from_uuid, parse_uuid, random_uuid};

/// Where nvme-cli keeps the host identity.
pub const NVME_CONF_DIR: &str = "/etc/nvme";
/// Prefix of the UUID-based host NQN format.
const UUID_NQN_PREFIX: &str = "nqn.2014-08.org.nvmexpress:uuid:";
/// Longest a host NQN may be (NVMe Base: 223 bytes).
const MAX_NQN_LEN: usize = 223;

/// The identity files' contents, if present.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Files {
    /// First line of `hostnqn`.
    pub hostnqn: Option<String>,
    /// First line of `hostid`.
    pub hostid: Option<String>,
}

impl Files {
    /// Reads `DIR/hostnqn` and `DIR/hostid`; a missing or empty file is `None`, an unreadable
    /// one an error (nvme-cli would fail as well rather than connect as someone else).
    pub fn read(dir: &Path) -> anyhow::Result<Self> {
        let one = |name: &str| -> anyhow::Result<Option<String>> {
            let p = dir.join(name);
            match std::fs::read(&p) {
                Ok(b) => {
                    // Both files are one short line; more is not an identity.
                    if b.len() > 4096 {
                        bail!("{} is larger than 4096 bytes", p.display());
                    }
                    let s = String::from_utf8_lossy(&b);
                    let line = s.lines().next().unwrap_or("").trim().to_string();
                    Ok((!line.is_empty()).then_some(line))
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(e).with_context(|| format!("reading {}", p.display())),
            }
        };
        Ok(Self {
            hostnqn: one("hostnqn")?,
            hostid: one("hostid")?,
        })
    }
}

/// Resolves the Host NQN and Host Identifier from the flags (`-q`, `-I`) and the files:
/// a flag wins over its file; a missing host ID is taken from a UUID host NQN, then made up;
/// a missing host NQN is made from the host ID.
pub fn resolve(
    flag_nqn: Option<&str>,
    flag_id: Option<&str>,
    files: &Files,
) -> anyhow::Result<(String, [u8; 16])> {
    let id_text = flag_id.or(if flag_nqn.is_none() {
        files.hostid.as_deref()
    } else {
        // A host NQN given on the command line with the file's host ID would pair the file's
        // ID with a foreign NQN; only use the file if it names the same host.
        None
    });
    let mut hostid = match id_text {
        Some(t) => Some(parse_uuid(t).with_context(|| format!("host ID {t:?} is not a UUID"))?),
        None => None,
    };
    let nqn = flag_nqn
        .map(str::to_owned)
        .or_else(|| files.hostnqn.clone());
    if let Some(n) = &nqn {
        if n.is_empty() || n.len() > MAX_NQN_LEN {
            bail!("host NQN {n:?} must be 1..={MAX_NQN_LEN} bytes");
        }
        if hostid.is_none() {
            hostid = n.strip_prefix(UUID_NQN_PREFIX).and_then(parse_uuid);
        }
        if hostid.is_none() && flag_nqn.is_some() && files.hostnqn.as_deref() == flag_nqn {
            hostid = files.hostid.as_deref().and_then(parse_uuid);
        }
    }
    let hostid = hostid.unwrap_or_else(random_uuid);
    let nqn = nqn.unwrap_or_else(|| hostnqn_from_uuid(&hostid));
    Ok((nqn, hostid))
}

#[cfg(test)]
mod tests {
    use super::*;

    const U: &str = "7c5c6692-108f-4efd-859a-f6864576a57c";
    const V: &str = "00000000-1111-2222-3333-444444444444";

    fn files(nqn: Option<&str>, id: Option<&str>) -> Files {
        Files {
            hostnqn: nqn.map(Into::into),
            hostid: id.map(Into::into),
        }
    }

    #[test]
    fn files_are_used_when_no_flag_is_given() {
        let n = format!("{UUID_NQN_PREFIX}{U}");
        let (nqn, id) = resolve(None, None, &files(Some(&n), Some(V))).unwrap();
        assert_eq!(nqn, n);
        assert_eq!(
            id,
            parse_uuid(V).unwrap(),
            "the file's host ID, as nvme-cli"
        );
    }

    #[test]
    fn flags_win_and_a_uuid_nqn_gives_its_host_id() {
        let n = format!("{UUID_NQN_PREFIX}{U}");
        let (nqn, id) = resolve(Some(&n), None, &files(Some("nqn.x:other"), Some(V))).unwrap();
        assert_eq!(nqn, n);
        assert_eq!(id, parse_uuid(U).unwrap());
        let (nqn, id) = resolve(None, Some(V), &Files::default()).unwrap();
        assert_eq!(nqn, format!("{UUID_NQN_PREFIX}{V}"));
        assert_eq!(id, parse_uuid(V).unwrap());
    }

    #[test]
    fn without_flags_or_files_an_identity_is_made_up_consistently() {
        let (nqn, id) = resolve(None, None, &Files::default()).unwrap();
        assert_eq!(nqn, hostnqn_from_uuid(&id));
    }

    #[test]
    fn bad_identities_are_refused() {
        assert!(resolve(None, Some("not-a-uuid"), &Files::default()).is_err());
        assert!(resolve(None, None, &files(None, Some("zz"))).is_err());
        assert!(resolve(Some(&"n".repeat(300)), None, &Files::default()).is_err());
    }

    #[test]
    fn files_are_read_first_line_trimmed_and_missing_is_none() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(Files::read(d.path()).unwrap(), Files::default());
        std::fs::write(d.path().join("hostnqn"), format!("{UUID_NQN_PREFIX}{U}\n")).unwrap();
        std::fs::write(d.path().join("hostid"), format!("  {U}  \nrest\n")).unwrap();
        let f = Files::read(d.path()).unwrap();
        assert_eq!(
            f.hostnqn.as_deref(),
            Some(&*format!("{UUID_NQN_PREFIX}{U}"))
        );
        assert_eq!(f.hostid.as_deref(), Some(U));
    }
}
