//! The end-of-run report: a table for people, JSON for machines.

use hdrhistogram::Histogram;
use serde::Serialize;

use super::job::{DirMeasure, Rw};

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Latency {
    /// Median.
    pub p50_us: f64,
    /// 90th percentile.
    pub p90_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// Maximum.
    pub max_us: f64,
    /// Mean.
    pub mean_us: f64,
}

impl Latency {
    /// Percentiles of a histogram recorded in nanoseconds.
    pub fn from_histogram(h: &Histogram<u64>) -> Self {
        let us = |ns: u64| ns as f64 / 1000.0;
        if h.is_empty() {
            return Self::default();
        }
        Self {
            p50_us: us(h.value_at_quantile(0.50)),
            p90_us: us(h.value_at_quantile(0.90)),
            p99_us: us(h.value_at_quantile(0.99)),
            p999_us: us(h.value_at_quantile(0.999)),
            max_us: us(h.max()),
            mean_us: h.mean() / 1000.0,
        }
    }
}

/// What a job was asked to do (fio's "job options").
#[derive(Debug, Clone, Serialize)]
pub struct JobMeta {
    /// Access pattern.
    pub rw: Rw,
    /// Percentage of reads (randrw).
    pub rwmixread: u8,
    /// Block size in bytes.
    pub bs: usize,
    /// Commands in flight per queue.
    pub qd: usize,
    /// I/O queues.
    pub queues: u16,
}

/// Figures of one direction (reads or writes) of a job.
#[derive(Debug, Clone, Serialize)]
pub struct DirResult {
    /// Completed I/Os.
    pub ios: u64,
    /// Bytes moved.
    pub bytes: u64,
    /// I/Os per second.
    pub iops: f64,
    /// MiB per second.
    pub mib_s: f64,
    /// Latency of the completed I/Os.
    pub latency: Latency,
    /// The latency histogram (nanoseconds), for renderers that need more than the summary.
    #[serde(skip)]
    pub hist: Histogram<u64>,
}

impl DirResult {
    fn new(m: &DirMeasure, seconds: f64) -> Self {
        Self {
            ios: m.ios,
            bytes: m.bytes,
            iops: m.ios as f64 / seconds,
            mib_s: m.bytes as f64 / seconds / (1024.0 * 1024.0),
            latency: Latency::from_histogram(&m.hist),
            hist: m.hist.clone(),
        }
    }
}

/// Host CPU seconds of a job's measured phase.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct HostCpu {
    /// User seconds.
    pub user_s: f64,
    /// System seconds.
    pub sys_s: f64,
}

/// The result of one perf job.
#[derive(Debug, Clone, Serialize)]
pub struct JobResult {
    /// Short description, e.g. `read 128KiB qd32 q1 ddgst`.
    pub name: String,
    /// What the job did.
    pub options: JobMeta,
    /// Completed I/Os.
    pub ios: u64,
    /// Bytes moved (read + written).
    pub bytes: u64,
    /// Wall seconds of the measured phase.
    pub seconds: f64,
    /// I/Os per second.
    pub iops: f64,
    /// MiB per second.
    pub mib_s: f64,
    /// Latency of the completed I/Os.
    pub latency: Latency,
    /// Reads alone.
    pub read: DirResult,
    /// Writes alone.
    pub write: DirResult,
    /// CPU seconds of the host's threads during the measured phase.
    pub cpu_host_s: f64,
    /// The same, split into user and system time.
    pub cpu_host: HostCpu,
    /// CPU seconds of the target's threads (embedded target only).
    pub cpu_target_s: Option<f64>,
    /// Host CPU seconds per GiB moved.
    pub host_cpu_s_per_gib: f64,
    /// Throughput divided by the raw TCP baseline of the same run, when measured.
    pub ratio_to_baseline: Option<f64>,
    /// I/Os whose data failed `--verify` (always 0 unless something is broken).
    pub verify_errors: u64,
    /// I/Os that completed with an error status.
    pub io_errors: u64,
    /// I/Os still in flight when the drain period after the run (`--drain-timeout`) ended:
    /// abandoned without a completion (always 0 unless the target stopped answering).
    pub abandoned_ios: u64,
    /// Through the software NIC: what the device did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nic: Option<NicJob>,
}

/// The software NIC's side of a job (`perf --soft-nic`).
#[derive(Debug, Clone, Serialize)]
pub struct NicJob {
    /// The offload ran on the NIC.
    pub offload: bool,
    /// CPU seconds of the NIC's forwarding thread (the device's CPU) in the measured phase.
    pub cpu_nic_s: f64,
    /// NIC CPU seconds per GiB moved.
    pub nic_cpu_s_per_gib: f64,
    /// C2HData payload bytes the host skipped because the device placed them (whole job).
    pub placed_bytes: u64,
    /// C2HData payload bytes the host copied itself (whole job).
    pub copied_bytes: u64,
    /// Data digests the host left to the device (whole job).
    pub ddgst_offloaded_pdus: u64,
}

impl JobResult {
    /// Fills in the derived fields from the raw counts.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        name: String,
        options: JobMeta,
        read: &DirMeasure,
        write: &DirMeasure,
        seconds: f64,
        cpu_host: HostCpu,
        cpu_target_s: Option<f64>,
        baseline_mib_s: Option<f64>,
    ) -> Self {
        let seconds = seconds.max(1e-9);
        let mut all = read.clone();
        all.add(write);
        let mib_s = all.bytes as f64 / seconds / (1024.0 * 1024.0);
        let gib = all.bytes as f64 / (1u64 << 30) as f64;
        let cpu_host_s = cpu_host.user_s + cpu_host.sys_s;
        Self {
            name,
            options,
            ios: all.ios,
            bytes: all.bytes,
            seconds,
            iops: all.ios as f64 / seconds,
            mib_s,
            latency: Latency::from_histogram(&all.hist),
            read: DirResult::new(read, seconds),
            write: DirResult::new(write, seconds),
            cpu_host_s,
            cpu_host,
            cpu_target_s,
            host_cpu_s_per_gib: if gib > 0.0 { cpu_host_s / gib } else { 0.0 },
            ratio_to_baseline: baseline_mib_s.filter(|b| *b > 0.0).map(|b| mib_s / b),
            verify_errors: 0,
            io_errors: 0,
            abandoned_ios: 0,
            nic: None,
        }
    }

    /// True if the job both read and wrote (randrw): reports show each direction apart.
    pub fn mixed(&self) -> bool {
        self.read.ios > 0 && self.write.ios > 0
    }
}

/// Renders results as a plain-text table.
pub fn table(results: &[JobResult], baseline_mib_s: Option<f64>) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "{:<34} {:>10} {:>9} {:>8} {:>8} {:>8} {:>9} {:>9} {:>8} {:>8} {:>9} {:>7}\n",
        "job",
        "IOPS",
        "MiB/s",
        "p50 us",
        "p90 us",
        "p99 us",
        "p99.9 us",
        "max us",
        "host s",
        "tgt s",
        "host s/GiB",
        "/tcp"
    ));
    for r in results {
        out.push_str(&format!(
            "{:<34} {:>10.0} {:>9.1} {:>8.1} {:>8.1} {:>8.1} {:>9.1} {:>9.1} {:>8.2} {:>8} {:>9.3} {:>7}\n",
            r.name,
            r.iops,
            r.mib_s,
            r.latency.p50_us,
            r.latency.p90_us,
            r.latency.p99_us,
            r.latency.p999_us,
            r.latency.max_us,
            r.cpu_host_s,
            r.cpu_target_s.map(|c| format!("{c:.2}")).unwrap_or_else(|| "-".into()),
            r.host_cpu_s_per_gib,
            r.ratio_to_baseline.map(|x| format!("{:.0}%", x * 100.0)).unwrap_or_else(|| "-".into()),
        ));
        if r.mixed() {
            for (dir, d) in [("read", &r.read), ("write", &r.write)] {
                out.push_str(&format!(
                    "{:<34} {:>10.0} {:>9.1} {:>8.1} {:>8.1} {:>8.1} {:>9.1} {:>9.1}\n",
                    format!("  {dir}"),
                    d.iops,
                    d.mib_s,
                    d.latency.p50_us,
                    d.latency.p90_us,
                    d.latency.p99_us,
                    d.latency.p999_us,
                    d.latency.max_us,
                ));
            }
        }
        if let Some(n) = &r.nic {
            let total = (n.placed_bytes + n.copied_bytes).max(1);
            out.push_str(&format!(
                "  soft NIC (offload {}): NIC thread {:.2} s, {:.3} s/GiB; placed {:.1}% of received data, {} digests verified by the device\n",
                if n.offload { "on" } else { "off" },
                n.cpu_nic_s,
                n.nic_cpu_s_per_gib,
                n.placed_bytes as f64 * 100.0 / total as f64,
                n.ddgst_offloaded_pdus
            ));
        }
        if r.io_errors > 0 || r.verify_errors > 0 {
            out.push_str(&format!(
                "  !! {} I/O errors, {} verify errors\n",
                r.io_errors, r.verify_errors
            ));
        }
        if r.abandoned_ios > 0 {
            out.push_str(&format!(
                "  !! {} I/Os still in flight at the end of the drain period, abandoned\n",
                r.abandoned_ios
            ));
        }
    }
    if let Some(b) = baseline_mib_s {
        out.push_str(&format!(
            "raw TCP baseline (1 stream, loopback, sender/receiver pinned): {b:.1} MiB/s\n"
        ));
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn measure(lat_ns: &[u64], bs: u64) -> DirMeasure {
        let mut m = DirMeasure::new();
        for &v in lat_ns {
            m.hist.record(v).unwrap();
            m.ios += 1;
            m.bytes += bs;
        }
        m
    }

    pub(crate) fn meta(rw: Rw) -> JobMeta {
        JobMeta {
            rw,
            rwmixread: 50,
            bs: 1 << 30,
            qd: 1,
            queues: 1,
        }
    }

    #[test]
    fn derived_figures_follow_the_counts() {
        let read = measure(&[1000, 2000, 3000, 4000], 1 << 30);
        let r = JobResult::new(
            "x".into(),
            meta(Rw::Read),
            &read,
            &DirMeasure::new(),
            2.0,
            HostCpu {
                user_s: 0.75,
                sys_s: 0.25,
            },
            Some(0.5),
            Some(4096.0),
        );
        assert_eq!(r.iops, 2.0);
        assert_eq!(r.mib_s, 2048.0);
        assert_eq!(r.host_cpu_s_per_gib, 0.25);
        assert_eq!(r.ratio_to_baseline, Some(0.5));
        assert!(r.latency.p50_us >= 1.9 && r.latency.p50_us <= 2.1);
        assert!(!r.mixed());
        assert!(table(&[r], Some(4096.0)).contains("4096.0 MiB/s"));
    }

    #[test]
    fn a_mixed_job_reports_each_direction_apart() {
        let read = measure(&[1000, 1000, 1000], 4096);
        let write = measure(&[9000], 4096);
        let r = JobResult::new(
            "randrw".into(),
            meta(Rw::Randrw),
            &read,
            &write,
            1.0,
            HostCpu::default(),
            None,
            None,
        );
        assert_eq!((r.ios, r.read.ios, r.write.ios), (4, 3, 1));
        assert_eq!(r.read.iops, 3.0);
        assert!(r.write.latency.p50_us > 8.9 && r.read.latency.p50_us < 1.1);
        let t = table(&[r], None);
        assert!(t.contains("  read") && t.contains("  write"), "{t}");
    }

    #[test]
    fn abandoned_ios_are_reported_in_the_table_and_the_json() {
        let mut r = JobResult::new(
            "read".into(),
            meta(Rw::Read),
            &measure(&[1000], 4096),
            &DirMeasure::new(),
            1.0,
            HostCpu::default(),
            None,
            None,
        );
        assert!(!table(std::slice::from_ref(&r), None).contains("abandoned"));
        r.abandoned_ios = 7;
        let t = table(std::slice::from_ref(&r), None);
        assert!(t.contains("!! 7 I/Os still in flight"), "{t}");
        assert_eq!(serde_json::to_value(&r).unwrap()["abandoned_ios"], 7);
    }
}
