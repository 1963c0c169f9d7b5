//! Open host sessions (`connect --interactive`) and `disconnect`: each session leaves a small
//! JSON record in the runtime directory while it holds its controller open, so `ulpddp
//! disconnect -n NQN` (as nvme-cli's) can find it and ask it, with SIGTERM, to shut its
//! controller down cleanly (CC.SHN) and exit.
//!
//! The runtime directory is `$XDG_RUNTIME_DIR/ulpddp`, else `/run/ulpddp`, else
//! `$TMPDIR/ulpddp`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

/// How long `disconnect` waits for a session to close its controller.
const CLOSE_WAIT: Duration = Duration::from_secs(10);

/// What a session records about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// Process id of the session.
    pub pid: u32,
    /// Subsystem NQN.
    pub subnqn: String,
    /// Transport address and service id.
    pub traddr: String,
    /// TCP port.
    pub trsvcid: u16,
    /// Host NQN it connected with.
    pub hostnqn: String,
    /// Controller ID.
    pub cntlid: u16,
}

/// The directory session records live in (created on demand).
pub fn runtime_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        return Path::new(&d).join("ulpddp");
    }
    let run = Path::new("/run/ulpddp");
    if std::fs::create_dir_all(run).is_ok() {
        return run.to_path_buf();
    }
    std::env::temp_dir().join("ulpddp")
}

/// A session's record on disk; removed when dropped.
#[derive(Debug)]
pub struct Registration {
    path: PathBuf,
}

impl Registration {
    /// Writes `rec` as `host-<pid>.json` in `dir`.
    pub fn create(dir: &Path, rec: &SessionRecord) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join(format!("host-{}.json", rec.pid));
        let tmp = dir.join(format!(".host-{}.json.tmp", rec.pid));
        std::fs::write(&tmp, serde_json::to_vec(rec)?)
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
        Ok(Self { path })
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn alive(pid: u32) -> bool {
    i32::try_from(pid).is_ok_and(|p| kill(Pid::from_raw(p), None).is_ok())
}

/// The records in `dir` of sessions still running; records of dead ones are removed.
pub fn sessions(dir: &Path) -> Vec<(PathBuf, SessionRecord)> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in rd.flatten() {
        let p = e.path();
        let name = e.file_name();
        let name = name.to_string_lossy();
        if !(name.starts_with("host-") && name.ends_with(".json")) {
            continue;
        }
        // Records are small; anything else is not ours.
        let rec = std::fs::read(&p)
            .ok()
            .filter(|b| b.len() < 64 * 1024)
            .and_then(|b| serde_json::from_slice::<SessionRecord>(&b).ok());
        match rec {
            Some(r) if alive(r.pid) => out.push((p, r)),
            Some(_) => {
                let _ = std::fs::remove_file(&p);
            }
            None => {}
        }
    }
    out.sort_by_key(|(_, r)| r.pid);
    out
}

/// Asks every session of `nqn` (all sessions if `None`) to disconnect and waits until they
/// have; returns how many did.
pub fn disconnect(dir: &Path, nqn: Option<&str>) -> anyhow::Result<usize> {
    let targets: Vec<_> = sessions(dir)
        .into_iter()
        .filter(|(_, r)| nqn.is_none_or(|n| r.subnqn == n))
        .collect();
    for (_, r) in &targets {
        let pid = i32::try_from(r.pid).context("pid out of range")?;
        kill(Pid::from_raw(pid), Signal::SIGTERM)
            .with_context(|| format!("signalling session {} ({})", r.pid, r.subnqn))?;
    }
    let deadline = Instant::now() + CLOSE_WAIT;
    let mut left: Vec<_> = targets.iter().collect();
    while !left.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        left.retain(|(p, r)| p.exists() && alive(r.pid));
    }
    if let Some((_, r)) = left.first() {
        anyhow::bail!(
            "session {} ({}) did not disconnect within {CLOSE_WAIT:?}",
            r.pid,
            r.subnqn
        );
    }
    Ok(targets.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_of_live_sessions_are_listed_and_dead_ones_dropped() {
        let d = tempfile::tempdir().unwrap();
        let me = SessionRecord {
            pid: std::process::id(),
            subnqn: "nqn.x:a".into(),
            traddr: "127.0.0.1".into(),
            trsvcid: 4420,
            hostnqn: "nqn.h:1".into(),
            cntlid: 1,
        };
        let reg = Registration::create(d.path(), &me).unwrap();
        // A record of a process that does not exist (pid_max is at most 2^22).
        let dead = SessionRecord {
            pid: (1 << 22) + 7,
            ..me.clone()
        };
        std::fs::write(
            d.path().join(format!("host-{}.json", dead.pid)),
            serde_json::to_vec(&dead).unwrap(),
        )
        .unwrap();
        std::fs::write(d.path().join("host-garbage.json"), b"{").unwrap();
        let s = sessions(d.path());
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].1, me);
        assert!(!d.path().join(format!("host-{}.json", dead.pid)).exists());
        assert_eq!(disconnect(d.path(), Some("nqn.x:other")).unwrap(), 0);
        drop(reg);
        assert!(sessions(d.path()).is_empty());
    }
}
