//! fio's JSON output (`fio --output-format=json`, fio 3.x) for perf results, so that scripts
//! and dashboards written for fio (`jq '.jobs[0].read.iops'`, `.jobs[].write.clat_ns.
//! percentile["99.000000"]`) read ours unchanged.
//!
//! What maps how: one fio job per perf job (`jobname` is the perf job's name; `numjobs` is the
//! queue count, each queue being one thread with its own connection, as fio's numjobs with
//! `group_reporting`); `read` and `write` carry each direction apart (a randrw job fills both);
//! `bw` is KiB/s and `runtime` milliseconds as in fio. Latency is measured from submission to
//! completion; submission itself is not timed apart (it is a copy into the socket buffer), so
//! `slat_ns` is absent, and `clat_ns` and `lat_ns` are the same measurement, `clat_ns` with the
//! percentiles as fio prints them by default. `usr_cpu`/`sys_cpu` are the host threads' CPU
//! time in percent of the runtime.

use serde_json::{Map, Value, json};

use super::report::{DirResult, JobResult};

/// The percentiles fio reports by default (`percentile_list`).
pub const FIO_PERCENTILES: [f64; 17] = [
    1.0, 5.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.95,
    99.99,
];

/// A latency block (`clat_ns`, `lat_ns`): min, max, mean, stddev, N, and optionally the
/// percentiles keyed as fio keys them (`"99.000000"`).
fn lat_block(d: &DirResult, percentiles: bool) -> Value {
    let h = &d.hist;
    let n = h.len();
    let mut m = Map::new();
    m.insert("min".into(), json!(if n > 0 { h.min() } else { 0 }));
    m.insert("max".into(), json!(if n > 0 { h.max() } else { 0 }));
    m.insert("mean".into(), json!(if n > 0 { h.mean() } else { 0.0 }));
    m.insert("stddev".into(), json!(if n > 0 { h.stdev() } else { 0.0 }));
    m.insert("N".into(), json!(n));
    if percentiles && n > 0 {
        let p: Map<String, Value> = FIO_PERCENTILES
            .iter()
            .map(|q| (format!("{q:.6}"), json!(h.value_at_percentile(*q))))
            .collect();
        m.insert("percentile".into(), Value::Object(p));
    }
    Value::Object(m)
}

fn dir_block(d: &DirResult, seconds: f64) -> Value {
    let runtime_ms = if d.ios > 0 {
        (seconds * 1000.0).round() as u64
    } else {
        0
    };
    let bw_bytes = if d.ios > 0 {
        (d.bytes as f64 / seconds).round() as u64
    } else {
        0
    };
    json!({
        "io_bytes": d.bytes,
        "io_kbytes": d.bytes / 1024,
        "bw_bytes": bw_bytes,
        "bw": bw_bytes / 1024,
        "iops": if d.ios > 0 { d.iops } else { 0.0 },
        "runtime": runtime_ms,
        "total_ios": d.ios,
        "short_ios": 0,
        "drop_ios": 0,
        "clat_ns": lat_block(d, true),
        "lat_ns": lat_block(d, false),
    })
}

/// fio's `error` of a job: the (Linux) errno of what went wrong, 0 if nothing did. Failed or
/// mismatching I/Os are EIO; I/Os abandoned in flight after the run, ETIMEDOUT.
fn error(r: &JobResult) -> i32 {
    const EIO: i32 = 5;
    const ETIMEDOUT: i32 = 110;
    if r.io_errors > 0 || r.verify_errors > 0 {
        EIO
    } else if r.abandoned_ios > 0 {
        ETIMEDOUT
    } else {
        0
    }
}

/// One fio job object.
pub fn job(r: &JobResult, groupid: usize) -> Value {
    let o = &r.options;
    let pct = |s: f64| s / r.seconds * 100.0;
    json!({
        "jobname": r.name,
        "groupid": groupid,
        "error": error(r),
        "eta": 0,
        "elapsed": r.seconds.round() as u64,
        "job options": {
            "rw": o.rw.name(),
            "bs": o.bs.to_string(),
            "iodepth": o.qd.to_string(),
            "numjobs": o.queues.to_string(),
            "rwmixread": o.rwmixread.to_string(),
            "ioengine": "ulpddp-nvme-tcp",
        },
        "read": dir_block(&r.read, r.seconds),
        "write": dir_block(&r.write, r.seconds),
        "job_runtime": (r.seconds * 1000.0).round() as u64,
        "usr_cpu": pct(r.cpu_host.user_s),
        "sys_cpu": pct(r.cpu_host.sys_s),
    })
}

/// The whole document: fio's top-level keys and one job per result.
pub fn document(results: &[JobResult], now: std::time::SystemTime) -> Value {
    let since = now
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    json!({
        "fio version": format!("ulpddp-{}", env!("CARGO_PKG_VERSION")),
        "timestamp": since.as_secs(),
        "timestamp_ms": since.as_millis() as u64,
        "global options": {},
        "jobs": results.iter().enumerate().map(|(i, r)| job(r, i)).collect::<Vec<_>>(),
        "disk_util": [],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::perf::job::{DirMeasure, Rw};
    use crate::perf::report::tests::{measure, meta};
    use crate::perf::report::{HostCpu, JobResult};

    #[test]
    fn randrw_is_split_and_keyed_as_fio_keys_it() {
        let read = measure(&[1000, 2000, 3000, 4000], 4096);
        let write = measure(&[10_000, 20_000], 4096);
        let r = JobResult::new(
            "randrw 4KiB qd8 q1".into(),
            meta(Rw::Randrw),
            &read,
            &write,
            2.0,
            HostCpu {
                user_s: 0.5,
                sys_s: 1.0,
            },
            None,
            None,
        );
        let v = document(&[r], std::time::UNIX_EPOCH);
        let j = &v["jobs"][0];
        assert_eq!(j["jobname"], "randrw 4KiB qd8 q1");
        assert_eq!(j["read"]["iops"], 2.0);
        assert_eq!(j["write"]["iops"], 1.0);
        assert_eq!(j["read"]["io_bytes"], 4 * 4096);
        assert_eq!(j["read"]["bw"], 8, "KiB/s: 16 KiB over 2 s");
        assert_eq!(j["read"]["runtime"], 2000);
        assert_eq!(j["usr_cpu"], 25.0);
        assert_eq!(j["sys_cpu"], 50.0);
        let p = j["write"]["clat_ns"]["percentile"].as_object().unwrap();
        assert_eq!(p.len(), FIO_PERCENTILES.len());
        assert!(p.contains_key("99.000000") && p.contains_key("99.990000"));
        let p99 = p["99.000000"].as_u64().unwrap();
        assert!((19_000..=20_100).contains(&p99), "{p99}");
        assert_eq!(j["read"]["lat_ns"]["N"], 4);
        assert!(j["read"]["lat_ns"].get("percentile").is_none());
    }

    /// A job of one 512-byte read of 5 µs, one second long.
    fn one_read() -> JobResult {
        JobResult::new(
            "read".into(),
            meta(Rw::Read),
            &measure(&[5000], 512),
            &DirMeasure::new(),
            1.0,
            HostCpu::default(),
            None,
            None,
        )
    }

    #[test]
    fn failed_ios_are_eio_and_abandoned_ones_etimedout() {
        let mut r = one_read();
        assert_eq!(job(&r, 0)["error"], 0);
        r.abandoned_ios = 3;
        assert_eq!(job(&r, 0)["error"], 110);
        r.io_errors = 1;
        assert_eq!(job(&r, 0)["error"], 5);
    }

    #[test]
    fn a_direction_that_did_nothing_is_all_zero() {
        let r = one_read();
        let w = &job(&r, 0)["write"];
        assert_eq!(
            (w["iops"].as_f64(), w["runtime"].as_u64()),
            (Some(0.0), Some(0))
        );
        assert_eq!(w["clat_ns"]["N"], 0);
        assert!(w["clat_ns"].get("percentile").is_none());
    }
}
