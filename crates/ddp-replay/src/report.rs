//! What a replay reports: one verdict record per PDU (and per resync event), findings (where
//! the device disagreed with the capture), and a summary.

use std::collections::BTreeMap;

use ddp_engine::Diagnostics;
use serde::{Deserialize, Serialize};
use ulp_ddp::Stats;

use crate::capture::{CaptureProblem, FrameCounts};

/// Who verified a PDU's data digest, and the outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DigestVerdict {
    /// The PDU carries no data digest.
    None,
    /// The device verified it (every segment of the PDU's data and digest had the `crc`
    /// mark) and it is correct.
    Device,
    /// The ULP verified it in software and it is correct.
    Software,
    /// The ULP verified it in software and it is wrong: the data in the capture is corrupt
    /// (the device rightly did not mark it).
    Bad,
    /// The device marked the PDU verified but its digest is wrong: a device error.
    DeviceFalseOk,
}

/// A resync event on a PDU header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ResyncEvent {
    /// The device had asked about exactly this header; the ULP confirmed it.
    Confirmed,
    /// The device had asked about an earlier sequence number; no answer.
    Mismatch,
}

/// One verdict record of the `--json` log (one JSON object per line). The format is
/// documented in `docs/ulp-ddp.md` ("Replaying captures").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Record {
    /// A PDU header the ULP parsed in the controller-to-host stream of an offloaded queue,
    /// and what the device did with the PDU.
    Pdu(PduRecord),
    /// The device asked for a resync (a verdict's `resync_request`).
    ResyncRequest {
        /// Connection (`host-addr->target-addr`).
        stream: String,
        /// The segment's TCP sequence number.
        segment_seq: u32,
        /// The header the device asks about.
        seq: u32,
    },
}

/// The verdict record of one PDU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct PduRecord {
    /// Connection (`host-addr->target-addr`).
    pub stream: String,
    /// TCP sequence number of the PDU's first byte.
    pub seq: u32,
    /// PDU type (`c2h-data`, `capsule-resp`, `r2t`, `c2h-term-req`, `ic-resp`).
    pub pdu: String,
    /// CCCID / CID, for types that carry one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cid: Option<u16>,
    /// DATAO of a C2HData PDU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datao: Option<u32>,
    /// DATAL of a C2HData PDU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datal: Option<u32>,
    /// Data bytes of the PDU the device placed.
    pub placed: u64,
    /// The data digest's verdict.
    pub ddgst: DigestVerdict,
    /// Resync event on this header, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resync: Option<ResyncEvent>,
}

/// A disagreement between the device and the capture (a device error), or a stream problem
/// that stopped part of the replay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Finding {
    /// What kind: `placed-mismatch`, `placed-without-setup`, `false-crc`,
    /// `buffer-mismatch`, `setup-error`, `stream-error`, `stream-hole`.
    pub kind: String,
    /// Connection.
    pub stream: String,
    /// Capture frame where it showed (0 if not tied to one).
    pub frame: u64,
    /// Details.
    pub detail: String,
}

impl Finding {
    /// True for the kinds that mean the device did something wrong (as opposed to a
    /// problem of the capture).
    pub fn is_device_error(&self) -> bool {
        matches!(
            self.kind.as_str(),
            "placed-mismatch" | "placed-without-setup" | "false-crc" | "buffer-mismatch"
        )
    }
}

/// One NVMe/TCP connection found in the capture.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct ConnSummary {
    /// `host-addr->target-addr`.
    pub stream: String,
    /// Queue ID from the Connect command (`None`: Connect not captured).
    pub qid: Option<u16>,
    /// The connection's start (SYN, ICReq/ICResp) was captured.
    pub from_start: bool,
    /// Header digests (as negotiated, or as found in the headers).
    pub hdgst: bool,
    /// Data digests.
    pub ddgst: bool,
    /// The queue's socket was offloaded (`sk_add`).
    pub offloaded: bool,
    /// Controller-to-host PDUs the ULP parsed.
    pub pdus: u64,
}

/// The result of a replay.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Summary {
    /// Frames of the capture and what they held.
    pub frames: FrameCounts,
    /// Problems reading the capture.
    pub capture_problems: Vec<CaptureProblem>,
    /// TCP connections that are not NVMe/TCP (skipped).
    pub other_connections: u64,
    /// NVMe/TCP connections.
    pub connections: Vec<ConnSummary>,
    /// NVM Reads seen on I/O queues.
    pub reads: u64,
    /// Reads whose buffer the device took (`setup`).
    pub reads_offloaded: u64,
    /// Reads not offered to the device, by reason (`below-io-threshold`, ...).
    pub reads_not_offered: BTreeMap<String, u64>,
    /// Failed setups, by reason (`sgl-too-long`, `cid-out-of-range`, ...).
    pub setup_failures: BTreeMap<String, u64>,
    /// Offloaded reads whose buffer came back and was checked against the capture.
    pub reads_checked: u64,
    /// Offloaded reads whose completion is not in the capture (buffer reclaimed at the end).
    pub reads_unfinished: u64,
    /// C2HData PDUs the ULP parsed on offloaded queues.
    pub c2h_data_pdus: u64,
    /// C2HData payload bytes.
    pub data_bytes: u64,
    /// Payload bytes the device placed.
    pub bytes_placed: u64,
    /// Data digests verified by the device.
    pub ddgst_device: u64,
    /// Data digests verified by the ULP in software.
    pub ddgst_software: u64,
    /// Data digests that are wrong in the capture.
    pub ddgst_bad: u64,
    /// Resync requests the device made.
    pub resync_requests: u64,
    /// Resync requests the ULP confirmed.
    pub resync_confirmed: u64,
    /// The device's ten statistics.
    pub stats: Stats,
    /// The engine's diagnostics.
    pub diagnostics: Diagnostics,
    /// Device errors and stream problems (the first [`MAX_FINDINGS`]).
    pub findings: Vec<Finding>,
    /// Findings in all (including those not kept).
    pub findings_total: u64,
    /// Device errors among all findings.
    pub device_errors: u64,
    /// Warnings (configuration that offloads little, capture problems).
    pub warnings: Vec<String>,
    /// Perturbations applied (`None`: the capture as it is).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub perturbed: Option<crate::perturb::PerturbCounts>,
    /// Times the long run replayed the I/O part of a connection (0: no long run).
    #[serde(default)]
    pub long_run_passes: u64,
}

/// Most findings kept in a summary.
pub const MAX_FINDINGS: usize = 100;

impl Summary {
    /// True if the device agreed with the capture everywhere.
    pub fn is_clean(&self) -> bool {
        self.device_errors == 0
    }

    /// The summary as text, for a terminal.
    pub fn to_text(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let f = &self.frames;
        let _ = writeln!(
            s,
            "frames {}  tcp segments {}  not tcp {}  cut by snaplen {}  malformed {}",
            f.frames, f.tcp_segments, f.not_tcp, f.snaplen_cut, f.malformed
        );
        for p in &self.capture_problems {
            let _ = writeln!(s, "capture: {p}");
        }
        let _ = writeln!(
            s,
            "nvme/tcp connections {}  (other tcp connections {})",
            self.connections.len(),
            self.other_connections
        );
        for c in &self.connections {
            let _ = writeln!(
                s,
                "  {}  qid {}  {}  hdgst {}  ddgst {}  offloaded {}  pdus {}",
                c.stream,
                c.qid.map_or("?".to_string(), |q| q.to_string()),
                if c.from_start {
                    "from start"
                } else {
                    "start not captured"
                },
                c.hdgst,
                c.ddgst,
                c.offloaded,
                c.pdus
            );
        }
        let _ = writeln!(
            s,
            "reads {}  offloaded {}  checked {}  unfinished {}",
            self.reads, self.reads_offloaded, self.reads_checked, self.reads_unfinished
        );
        for (k, v) in &self.reads_not_offered {
            let _ = writeln!(s, "  not offered ({k}): {v}");
        }
        for (k, v) in &self.setup_failures {
            let _ = writeln!(s, "  setup failed ({k}): {v}");
        }
        let _ = writeln!(
            s,
            "c2h-data pdus {}  data bytes {}  placed {} ({:.1}%)",
            self.c2h_data_pdus,
            self.data_bytes,
            self.bytes_placed,
            if self.data_bytes == 0 {
                0.0
            } else {
                self.bytes_placed as f64 * 100.0 / self.data_bytes as f64
            }
        );
        let _ = writeln!(
            s,
            "data digests: verified by device {}  by software {}  bad {}",
            self.ddgst_device, self.ddgst_software, self.ddgst_bad
        );
        let _ = writeln!(
            s,
            "resync: requested {}  confirmed {}",
            self.resync_requests, self.resync_confirmed
        );
        if let Some(p) = &self.perturbed {
            let _ = writeln!(
                s,
                "perturbed: dropped+resent {}  reordered {}  duplicated {}  resplit {}  corrupted {}",
                p.dropped, p.reordered, p.duplicated, p.resplit, p.corrupted
            );
        }
        if self.long_run_passes > 0 {
            let _ = writeln!(s, "long run: {} passes", self.long_run_passes);
        }
        let _ = writeln!(s, "statistics:");
        for (k, v) in self.stats.iter() {
            let _ = writeln!(s, "  {k}: {v}");
        }
        for w in &self.warnings {
            let _ = writeln!(s, "warning: {w}");
        }
        for x in &self.findings {
            let _ = writeln!(
                s,
                "{}: {} frame {}: {}",
                x.kind, x.stream, x.frame, x.detail
            );
        }
        if self.findings_total > self.findings.len() as u64 {
            let _ = writeln!(
                s,
                "... {} more findings",
                self.findings_total - self.findings.len() as u64
            );
        }
        let _ = writeln!(
            s,
            "result: {}",
            if self.is_clean() {
                "the device agreed with the capture".to_string()
            } else {
                format!("{} device errors", self.device_errors)
            }
        );
        s
    }
}

/// The first place where a device's log differs from the model's records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Divergence {
    /// Index (0-based) of the first differing record.
    pub index: usize,
    /// The model's record there (`None`: the model has fewer records).
    pub model: Option<Record>,
    /// The device's record there (`None`: the device's log is shorter).
    pub device: Option<Record>,
}

impl std::fmt::Display for Divergence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let show = |r: &Option<Record>| match r {
            Some(r) => serde_json::to_string(r).unwrap_or_else(|e| e.to_string()),
            None => "(no record)".to_string(),
        };
        write!(
            f,
            "first divergence at record {} (line {}):\n  model:  {}\n  device: {}",
            self.index,
            self.index + 1,
            show(&self.model),
            show(&self.device)
        )
    }
}

/// Errors reading a device log.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// A line is not a record.
    #[error("line {line}: {message}")]
    BadLine {
        /// 1-based line number.
        line: usize,
        /// The parser's message.
        message: String,
    },
}

/// Parses a log in the `--json` format (one record per line; blank lines are skipped).
pub fn parse_log(text: &str) -> Result<Vec<Record>, LogError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let r: Record = serde_json::from_str(line).map_err(|e| LogError::BadLine {
            line: i + 1,
            message: e.to_string(),
        })?;
        out.push(r);
    }
    Ok(out)
}

/// The first divergence between the model's records and a device's, if any.
pub fn compare(model: &[Record], device: &[Record]) -> Option<Divergence> {
    let n = model.len().max(device.len());
    (0..n)
        .find(|&i| model.get(i) != device.get(i))
        .map(|index| Divergence {
            index,
            model: model.get(index).cloned(),
            device: device.get(index).cloned(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pdu(seq: u32, placed: u64) -> Record {
        Record::Pdu(PduRecord {
            stream: "a->b".into(),
            seq,
            pdu: "c2h-data".into(),
            cid: Some(3),
            datao: Some(0),
            datal: Some(4096),
            placed,
            ddgst: DigestVerdict::Device,
            resync: None,
        })
    }

    #[test]
    fn records_round_trip_through_the_log_format() {
        let recs = vec![
            pdu(1, 4096),
            Record::ResyncRequest {
                stream: "a->b".into(),
                segment_seq: 10,
                seq: 20,
            },
        ];
        let text: String = recs
            .iter()
            .map(|r| serde_json::to_string(r).expect("serializes") + "\n")
            .collect();
        assert!(text.starts_with(r#"{"kind":"pdu","stream":"a->b","seq":1,"pdu":"c2h-data""#));
        assert_eq!(parse_log(&text).expect("parses"), recs);
    }

    #[test]
    fn compare_finds_the_first_difference_and_length_differences() {
        let a = vec![pdu(1, 4096), pdu(2, 4096), pdu(3, 0)];
        let mut b = a.clone();
        assert_eq!(compare(&a, &b), None);
        b[1] = pdu(2, 100);
        let d = compare(&a, &b).expect("differs");
        assert_eq!(d.index, 1);
        assert_eq!(d.device, Some(pdu(2, 100)));
        let d = compare(&a, &a[..2]).expect("shorter");
        assert_eq!((d.index, d.device), (2, None));
    }

    #[test]
    fn a_bad_log_line_is_reported_with_its_number() {
        let text = format!(
            "{}\n\nnot json\n",
            serde_json::to_string(&pdu(1, 0)).unwrap()
        );
        match parse_log(&text) {
            Err(LogError::BadLine { line, .. }) => assert_eq!(line, 3),
            other => panic!("expected a bad line, got {other:?}"),
        }
    }
}
