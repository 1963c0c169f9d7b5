//! `ulpddp perf --output-format fio-json` read by a fio-style consumer: the structs below are
//! the part of fio's JSON schema (fio 3.x, `--output-format=json`) that fio result scripts
//! read; deserializing fails on any missing key or wrong type, and the figures must agree
//! with each other as fio's do.

use std::collections::BTreeMap;
use std::process::Command;

use serde::Deserialize;

const BIN: &str = env!("CARGO_BIN_EXE_ulpddp");

#[derive(Deserialize)]
struct FioOutput {
    #[serde(rename = "fio version")]
    version: String,
    jobs: Vec<FioJob>,
}

#[derive(Deserialize)]
struct FioJob {
    jobname: String,
    error: i64,
    #[serde(rename = "job options")]
    options: BTreeMap<String, String>,
    read: FioDir,
    write: FioDir,
    job_runtime: u64,
    usr_cpu: f64,
    sys_cpu: f64,
}

#[derive(Deserialize)]
struct FioDir {
    io_bytes: u64,
    io_kbytes: u64,
    bw_bytes: u64,
    bw: u64,
    iops: f64,
    runtime: u64,
    total_ios: u64,
    clat_ns: FioLat,
    lat_ns: FioLat,
}

#[derive(Deserialize)]
struct FioLat {
    min: u64,
    max: u64,
    mean: f64,
    #[serde(rename = "N")]
    n: u64,
    #[serde(default)]
    percentile: BTreeMap<String, u64>,
}

fn perf(args: &[&str]) -> FioOutput {
    let out = Command::new(BIN)
        .arg("perf")
        .args(args)
        .args(["--output-format", "fio-json", "--ns", "ram:16M"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not fio's shape: {e}\n{}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// What a fio result script checks of one direction that did I/O.
fn check_dir(d: &FioDir, bs: u64) {
    assert!(d.total_ios > 0);
    assert_eq!(d.io_bytes, d.total_ios * bs);
    assert_eq!(d.io_kbytes, d.io_bytes / 1024);
    assert_eq!(d.bw, d.bw_bytes / 1024, "bw is KiB/s");
    // bw and iops over the same runtime (ms, rounded) agree.
    let secs = d.runtime as f64 / 1000.0;
    let bw_from_bytes = d.io_bytes as f64 / secs;
    assert!((bw_from_bytes / d.bw_bytes as f64 - 1.0).abs() < 0.01);
    assert!((d.iops * secs / d.total_ios as f64 - 1.0).abs() < 0.01);
    assert_eq!(d.clat_ns.n, d.total_ios);
    assert_eq!(d.lat_ns.n, d.total_ios);
    let p: Vec<(f64, u64)> = d
        .clat_ns
        .percentile
        .iter()
        .map(|(k, v)| (k.parse::<f64>().unwrap(), *v))
        .collect();
    assert!(d.clat_ns.percentile.contains_key("99.000000"));
    assert!(d.clat_ns.percentile.contains_key("50.000000"));
    let mut sorted = p.clone();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
    assert!(
        sorted.windows(2).all(|w| w[0].1 <= w[1].1),
        "percentiles rise"
    );
    assert!(d.clat_ns.min <= sorted[0].1);
    assert!(sorted[sorted.len() - 1].1 <= d.clat_ns.max);
    assert!(d.clat_ns.min as f64 <= d.clat_ns.mean && d.clat_ns.mean <= d.clat_ns.max as f64);
}

#[test]
fn randrw_reads_and_writes_are_reported_apart_in_fios_shape() {
    let out = perf(&[
        "--rw",
        "randrw",
        "--rwmixread",
        "70",
        "--bs",
        "4k",
        "--qd",
        "4",
        "--size",
        "4M",
    ]);
    assert!(out.version.starts_with("ulpddp-"));
    assert_eq!(out.jobs.len(), 1);
    let j = &out.jobs[0];
    assert!(j.jobname.starts_with("randrw 4KiB qd4"), "{}", j.jobname);
    assert_eq!(j.error, 0);
    assert_eq!(j.options["rw"], "randrw");
    assert_eq!(j.options["bs"], "4096");
    assert_eq!(j.options["iodepth"], "4");
    assert_eq!(j.options["rwmixread"], "70");
    check_dir(&j.read, 4096);
    check_dir(&j.write, 4096);
    // 70 % reads: reads outnumber writes (the split is random, the margin wide).
    assert!(j.read.total_ios > j.write.total_ios);
    assert!(j.job_runtime >= j.read.runtime.min(j.write.runtime));
    assert!(j.usr_cpu >= 0.0 && j.sys_cpu >= 0.0);
}

#[test]
fn a_read_job_has_an_empty_write_side() {
    let out = perf(&["--rw", "read", "--bs", "64k", "--qd", "2", "--size", "4M"]);
    let j = &out.jobs[0];
    check_dir(&j.read, 65536);
    assert_eq!(
        (j.write.total_ios, j.write.io_bytes, j.write.runtime),
        (0, 0, 0)
    );
    assert_eq!(j.write.iops, 0.0);
}
