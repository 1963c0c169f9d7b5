//! Prometheus families of a running target, read from its counters
//! ([`nvme_tcp_target::metrics`]) at every scrape. A family appears only once it has a
//! sample: no connection, no per-connection families; no I/O on a namespace, no I/O families.
//!
//! | family | labels |
//! |---|---|
//! | `nvmet_connections_accepted_total`, `nvmet_connections_rejected_total` (limit), `nvmet_connect_refused_total` | |
//! | `nvmet_connections` (open now) | |
//! | `nvmet_subsystem_connects_total` | `subnqn` |
//! | `nvmet_subsystem_errors_total` | `subnqn`, `status` (`0x182` as Linux prints it), `name` |
//! | `nvmet_namespace_commands_total`, `_bytes_total`, `_errors_total`, `nvmet_namespace_latency_seconds` | `subnqn`, `nsid`, `op` (`read`, `write`, `other`) |
//! | `nvmet_connection_commands_total`, `_errors_total`, `_read_bytes_total`, `_written_bytes_total` | `conn`, `peer`, `subnqn`, `hostnqn`, `cntlid`, `qid` |

use std::sync::Arc;

use nvme_tcp_target::metrics::{MetricsSnapshot, TargetMetrics};
use nvme_tcp_wire::nvme::Status;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// The target's families.
#[derive(Debug, Clone)]
pub struct TargetCollector(pub Arc<TargetMetrics>);

type Labels = Vec<(&'static str, String)>;

fn counters(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: &[(Labels, u64)],
) -> std::fmt::Result {
    if samples.is_empty() {
        return Ok(());
    }
    let mut f = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (l, v) in samples {
        ConstCounter::new(*v).encode(f.encode_family(l)?)?;
    }
    Ok(())
}

impl Collector for TargetCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> std::fmt::Result {
        let s: MetricsSnapshot = self.0.snapshot();
        for (name, help, v) in [
            (
                "nvmet_connections_accepted",
                "TCP connections accepted.",
                s.connections_accepted,
            ),
            (
                "nvmet_connections_rejected",
                "TCP connections closed at once: connection limit reached.",
                s.connections_rejected,
            ),
            (
                "nvmet_connect_refused",
                "Fabrics Connect commands refused (unknown subsystem, host not allowed, bad parameters).",
                s.connects_refused,
            ),
        ] {
            counters(&mut enc, name, help, &[(Vec::new(), v)])?;
        }
        let f = enc.encode_descriptor(
            "nvmet_connections",
            "Open TCP connections (one per queue).",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(s.connections.len() as i64).encode(f)?;

        let mut connects = Vec::new();
        let mut errors = Vec::new();
        let (mut cmds, mut bytes, mut errs, mut lat) = (vec![], vec![], vec![], vec![]);
        for (nqn, sub) in &s.subsystems {
            connects.push((vec![("subnqn", nqn.clone())], sub.connects));
            for (code, n) in &sub.errors {
                let st = Status::new((code >> 8) as u8, (code & 0xFF) as u8);
                errors.push((
                    vec![
                        ("subnqn", nqn.clone()),
                        ("status", format!("{code:#x}")),
                        ("name", st.name().unwrap_or("unknown").to_string()),
                    ],
                    *n,
                ));
            }
            for (nsid, ops) in &sub.namespaces {
                for op in ops.iter().filter(|o| o.commands > 0) {
                    let l: Labels = vec![
                        ("subnqn", nqn.clone()),
                        ("nsid", nsid.to_string()),
                        ("op", op.kind.name().to_string()),
                    ];
                    cmds.push((l.clone(), op.commands));
                    bytes.push((l.clone(), op.bytes));
                    errs.push((l.clone(), op.errors));
                    lat.push((l, op.latency.clone()));
                }
            }
        }
        counters(
            &mut enc,
            "nvmet_subsystem_connects",
            "Fabrics Connect commands accepted (admin and I/O queues).",
            &connects,
        )?;
        counters(
            &mut enc,
            "nvmet_subsystem_errors",
            "Completions with an error status, by status (SCT << 8 | SC).",
            &errors,
        )?;
        counters(
            &mut enc,
            "nvmet_namespace_commands",
            "Completed I/O commands.",
            &cmds,
        )?;
        counters(
            &mut enc,
            "nvmet_namespace_bytes",
            "Bytes moved by successful I/O commands.",
            &bytes,
        )?;
        counters(
            &mut enc,
            "nvmet_namespace_errors",
            "I/O commands completed with an error status.",
            &errs,
        )?;
        if !lat.is_empty() {
            let mut f = enc.encode_descriptor(
                "nvmet_namespace_latency_seconds",
                "I/O command latency, capsule received to completion queued.",
                None,
                MetricType::Histogram,
            )?;
            for (l, h) in &lat {
                // The snapshot is cumulative; the encoder wants per-bucket counts.
                let mut prev = 0;
                let buckets: Vec<(f64, u64)> = h
                    .buckets
                    .iter()
                    .map(|(b, c)| {
                        let d = c - prev;
                        prev = *c;
                        (*b, d)
                    })
                    .collect();
                f.encode_family(l)?
                    .encode_histogram::<NoLabelSet>(h.sum_s, h.count, &buckets, None)?;
            }
        }

        let per_conn: Vec<(Labels, [u64; 4])> = s
            .connections
            .iter()
            .map(|c| {
                let id = c.identity.clone();
                let l: Labels = vec![
                    ("conn", c.id.to_string()),
                    ("peer", c.peer.map(|p| p.to_string()).unwrap_or_default()),
                    (
                        "subnqn",
                        id.as_ref().map(|i| i.subnqn.clone()).unwrap_or_default(),
                    ),
                    (
                        "hostnqn",
                        id.as_ref().map(|i| i.hostnqn.clone()).unwrap_or_default(),
                    ),
                    (
                        "cntlid",
                        id.as_ref()
                            .map(|i| i.cntlid.to_string())
                            .unwrap_or_default(),
                    ),
                    (
                        "qid",
                        id.as_ref().map(|i| i.qid.to_string()).unwrap_or_default(),
                    ),
                ];
                (l, [c.commands, c.errors, c.bytes_read, c.bytes_written])
            })
            .collect();
        for (i, (name, help)) in [
            (
                "nvmet_connection_commands",
                "Completed commands on the connection.",
            ),
            (
                "nvmet_connection_errors",
                "Error completions on the connection.",
            ),
            ("nvmet_connection_read_bytes", "Bytes read by the host."),
            (
                "nvmet_connection_written_bytes",
                "Bytes written by the host.",
            ),
        ]
        .into_iter()
        .enumerate()
        {
            let samples: Vec<(Labels, u64)> =
                per_conn.iter().map(|(l, v)| (l.clone(), v[i])).collect();
            counters(&mut enc, name, help, &samples)?;
        }
        Ok(())
    }
}
