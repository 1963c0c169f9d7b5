//! CPU time per thread of this process, from `/proc/self/task/*/stat` (user + system), grouped
//! into roles by thread name.

use std::collections::BTreeMap;

/// Clock ticks per second of `utime`/`stime` (`sysconf(_SC_CLK_TCK)`, 100 on Linux).
const CLK_TCK: f64 = 100.0;

/// CPU seconds (user + system) of one thread.
#[derive(Debug, Clone, PartialEq)]
pub struct ThreadCpu {
    /// Thread ID.
    pub tid: u32,
    /// Thread name (`comm`, at most 15 bytes).
    pub name: String,
    /// User seconds.
    pub user: f64,
    /// System seconds.
    pub sys: f64,
}

/// Parses one `/proc/<pid>/task/<tid>/stat` line. The name is in parentheses and may contain
/// spaces or parentheses itself, so fields are counted from the last `)`.
pub fn parse_stat(tid: u32, line: &str) -> Option<ThreadCpu> {
    let open = line.find('(')?;
    let close = line.rfind(')')?;
    let name = line.get(open + 1..close)?.to_string();
    let rest: Vec<&str> = line.get(close + 1..)?.split_whitespace().collect();
    // rest[0] is field 3 (state); utime is field 14, stime field 15.
    let utime: f64 = rest.get(11)?.parse().ok()?;
    let stime: f64 = rest.get(12)?.parse().ok()?;
    Some(ThreadCpu {
        tid,
        name,
        user: utime / CLK_TCK,
        sys: stime / CLK_TCK,
    })
}

/// A snapshot of every thread of this process.
pub fn snapshot() -> Vec<ThreadCpu> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for e in dir.flatten() {
        let Some(tid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if let Ok(line) = std::fs::read_to_string(e.path().join("stat"))
            && let Some(t) = parse_stat(tid, &line)
        {
            out.push(t);
        }
    }
    out
}

/// CPU seconds spent between two snapshots, summed per role, as `(user, sys)`; `role` maps a
/// thread name to a role name.
pub fn by_role_split(
    before: &[ThreadCpu],
    after: &[ThreadCpu],
    role: impl Fn(&str) -> &'static str,
) -> BTreeMap<&'static str, (f64, f64)> {
    let mut m = BTreeMap::new();
    for a in after {
        let (u0, s0) = before
            .iter()
            .find(|b| b.tid == a.tid)
            .map(|b| (b.user, b.sys))
            .unwrap_or((0.0, 0.0));
        let e = m.entry(role(&a.name)).or_insert((0.0, 0.0));
        e.0 += a.user - u0;
        e.1 += a.sys - s0;
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_name_with_spaces_and_parens() {
        let line = "1234 (tgt (io) 1) S 1 1 1 0 -1 4194368 10 0 0 0 250 75 0 0 20 0 3 0 100 0 0";
        let t = parse_stat(1234, line).unwrap();
        assert_eq!(t.name, "tgt (io) 1");
        assert!((t.user - 2.5).abs() < 1e-9);
        assert!((t.sys - 0.75).abs() < 1e-9);
    }

    #[test]
    fn snapshot_sees_this_thread_spend_cpu() {
        let me = |s: &[ThreadCpu]| {
            let tid = std::fs::read_link("/proc/thread-self")
                .ok()
                .and_then(|p| p.file_name()?.to_str()?.parse::<u32>().ok())
                .unwrap();
            s.iter()
                .find(|t| t.tid == tid)
                .map(|t| t.user + t.sys)
                .unwrap()
        };
        let before = snapshot();
        let start = std::time::Instant::now();
        let mut x = 0u64;
        // Spin until the kernel has charged at least two ticks to this thread.
        while me(&snapshot()) - me(&before) < 0.02 {
            for _ in 0..100_000 {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
            }
            assert!(
                start.elapsed().as_secs() < 30,
                "no CPU time charged in 30 s"
            );
        }
        std::hint::black_box(x);
        let after = snapshot();
        let roles = by_role_split(&before, &after, |_| "all");
        assert!(roles["all"].0 + roles["all"].1 >= 0.02);
    }
}
