//! The stored captures (tests/captures, made by make-captures.sh) replayed with their
//! expected results (EXPECTED.json), and the properties every replay must keep: under
//! perturbations and over a long run the device never disagrees with the capture, and a
//! device that places wrong bytes is caught.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ddp_engine::EngineConfig;
use ddp_replay::capture::{Capture, read_capture_file};
use ddp_replay::perturb::Perturb;
use ddp_replay::report::{Record, Summary, compare};
use ddp_replay::{ReplayOptions, replay};
use serde_json::Value;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/captures")
}

fn load(name: &str) -> Capture {
    read_capture_file(&dir().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn expected() -> BTreeMap<String, Value> {
    let text = std::fs::read_to_string(dir().join("EXPECTED.json")).expect("EXPECTED.json");
    serde_json::from_str(&text).expect("EXPECTED.json parses")
}

/// The summary fields EXPECTED.json holds, from a replay.
fn observed(s: &Summary) -> Value {
    let mut v = serde_json::to_value(s).expect("summary serializes");
    let conns = s.connections.len();
    let off = s.connections.iter().filter(|c| c.offloaded).count();
    let obj = v.as_object_mut().expect("object");
    let mut out = serde_json::Map::new();
    out.insert("connections".into(), conns.into());
    out.insert("offloaded-queues".into(), off.into());
    for k in [
        "reads",
        "reads-offloaded",
        "reads-checked",
        "reads-unfinished",
        "c2h-data-pdus",
        "data-bytes",
        "bytes-placed",
        "ddgst-device",
        "ddgst-software",
        "ddgst-bad",
        "resync-requests",
        "resync-confirmed",
        "device-errors",
        "findings-total",
        "stats",
    ] {
        out.insert(k.into(), obj.remove(k).expect("field"));
    }
    Value::Object(out)
}

#[test]
fn every_stored_capture_replays_to_its_expected_result() {
    let exp = expected();
    let mut files: Vec<String> = std::fs::read_dir(dir())
        .expect("captures dir")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".pcap") || n.ends_with(".pcapng"))
        .collect();
    files.sort();
    assert!(files.len() >= 6, "captures missing: {files:?}");
    for f in &files {
        let want = exp
            .get(f)
            .unwrap_or_else(|| panic!("{f} has no entry in EXPECTED.json"));
        let r = replay(&load(f), &ReplayOptions::default());
        assert_eq!(&observed(&r.summary), want, "{f}:\n{}", r.summary.to_text());
        assert!(r.summary.is_clean(), "{f}:\n{}", r.summary.to_text());
    }
}

#[test]
fn the_defaults_offload_a_linux_hosts_reads_and_connectx7_limits_warn() {
    // The Linux host puts generation bits in its CIDs and sends 1 MiB reads of 4 KiB pages.
    let cap = load("linux-host-digests.pcap");
    let good = replay(&cap, &ReplayOptions::default()).summary;
    assert!(good.setup_failures.is_empty(), "{}", good.to_text());
    assert_eq!(good.bytes_placed, good.data_bytes);
    assert!(good.warnings.is_empty(), "{:?}", good.warnings);

    let cx7 = ReplayOptions {
        engine: EngineConfig::connectx7_like(),
        ..ReplayOptions::default()
    };
    let s = replay(&cap, &cx7).summary;
    assert!(s.setup_failures.get("sgl-too-long").is_some_and(|&n| n > 0));
    assert!(s.bytes_placed < good.bytes_placed / 2, "{}", s.to_text());
    assert!(
        s.warnings
            .iter()
            .any(|w| w.contains("at least half were not offloaded")),
        "{:?}",
        s.warnings
    );
    assert!(s.is_clean());

    // Our host puts generation bits in its CIDs (as Linux may): a linear-CID device refuses.
    let s = replay(&load("our-target-plain.pcap"), &cx7).summary;
    assert!(
        s.setup_failures
            .get("cid-out-of-range")
            .is_some_and(|&n| n > 0),
        "{}",
        s.to_text()
    );
}

#[test]
fn perturbed_replays_never_make_the_device_disagree() {
    for f in [
        "our-target-digests.pcapng",
        "linux-host-digests.pcap",
        "kernel-target-plain.pcap",
    ] {
        let cap = load(f);
        let clean = replay(&cap, &ReplayOptions::default()).summary;
        for seed in 1..=6 {
            let p = Perturb::parse(
                "drop=0.05,reorder=0.05,duplicate=0.05,resplit=0.2,corrupt=0.01",
                seed,
            )
            .expect("spec");
            let opts = ReplayOptions {
                perturb: Some(p),
                ..ReplayOptions::default()
            };
            let s = replay(&cap, &opts).summary;
            assert!(s.is_clean(), "{f} seed {seed}:\n{}", s.to_text());
            // Every read still reaches the host, whole.
            assert_eq!(s.reads, clean.reads, "{f} seed {seed}");
            let pc = s.perturbed.expect("perturbation counts");
            if pc.corrupted == 0 {
                assert_eq!(s.reads_checked, clean.reads_checked, "{f} seed {seed}");
                assert_eq!(s.data_bytes, clean.data_bytes, "{f} seed {seed}");
                assert_eq!(s.ddgst_bad, 0, "{f} seed {seed}");
            }
        }
    }
}

#[test]
fn the_same_seed_gives_the_same_records() {
    let cap = load("our-target-digests.pcapng");
    let opts = ReplayOptions {
        perturb: Some(Perturb::parse("drop=0.1,reorder=0.1,resplit=0.3", 9).expect("spec")),
        records: true,
        ..ReplayOptions::default()
    };
    let a = replay(&cap, &opts).records;
    let b = replay(&cap, &opts).records;
    assert!(!a.is_empty());
    assert_eq!(compare(&a, &b), None);
    let other = ReplayOptions {
        perturb: Some(Perturb::parse("drop=0.1,reorder=0.1,resplit=0.3", 10).expect("spec")),
        ..opts.clone()
    };
    let c = replay(&cap, &other).records;
    // Different perturbations show in the records (placement, resyncs).
    assert!(compare(&a, &c).is_some());
}

#[test]
fn a_long_run_crosses_the_sequence_wrap_with_full_offload() {
    let cap = load("our-target-digests.pcapng");
    let opts = ReplayOptions {
        long_run_bytes: 5 << 30,
        ..ReplayOptions::default()
    };
    let s = replay(&cap, &opts).summary;
    assert!(s.long_run_passes > 0, "{}", s.to_text());
    assert!(s.data_bytes > 4 << 30, "{}", s.to_text());
    assert_eq!(s.bytes_placed, s.data_bytes, "{}", s.to_text());
    assert_eq!(s.ddgst_device, s.c2h_data_pdus, "{}", s.to_text());
    assert_eq!(s.reads_checked, s.reads_offloaded);
    assert!(s.is_clean(), "{}", s.to_text());
}

#[test]
fn a_device_that_places_wrong_bytes_is_caught() {
    for f in ["our-target-plain.pcap", "kernel-target-digests.pcap"] {
        let opts = ReplayOptions {
            inject_device_fault: true,
            ..ReplayOptions::default()
        };
        let s = replay(&load(f), &opts).summary;
        assert!(!s.is_clean(), "{f}: the checks missed a broken device");
        assert!(
            s.findings
                .iter()
                .any(|x| x.kind == "placed-mismatch" || x.kind == "buffer-mismatch"),
            "{f}: {:?}",
            s.findings
        );
    }
}

#[test]
fn records_name_every_pdu_of_the_offloaded_queues() {
    let cap = load("kernel-target-digests.pcap");
    let r = replay(
        &cap,
        &ReplayOptions {
            records: true,
            ..ReplayOptions::default()
        },
    );
    let pdus: Vec<_> = r
        .records
        .iter()
        .filter_map(|x| match x {
            Record::Pdu(p) => Some(p),
            _ => None,
        })
        .collect();
    let data: Vec<_> = pdus.iter().filter(|p| p.pdu == "c2h-data").collect();
    assert_eq!(data.len() as u64, r.summary.c2h_data_pdus);
    let placed: u64 = data.iter().map(|p| p.placed).sum();
    assert_eq!(placed, r.summary.bytes_placed);
    let total: u64 = data.iter().map(|p| u64::from(p.datal.unwrap_or(0))).sum();
    assert_eq!(total, r.summary.data_bytes);
}
