//! Prometheus text exposition (format 0.0.4) of the ULP DDP counters, of per-queue I/O
//! counters and latency, and of whatever else a process registers, served over plain HTTP
//! (`GET /metrics`). Encoding is `prometheus-client`'s; serving is `tiny_http`'s, which reads
//! each client in its own thread, so concurrent scrapes do not wait for one another. A
//! collector emits a family only when it has something to report (no device, no ULP DDP
//! families).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

pub use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet, prometheus_text};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
pub use prometheus_client::registry::Registry as PromRegistry;
use ulp_ddp::StatId;

use crate::Registry;

/// Upper bounds (seconds) of the latency histogram buckets.
pub const LATENCY_BUCKETS_S: [f64; 14] = [
    10e-6, 25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3,
    1.0,
];

/// I/O counters and a latency histogram of one queue, updated lock-free and without
/// allocation on the I/O path.
#[derive(Debug, Default)]
pub struct QueueIoMetrics {
    /// Completed reads.
    pub reads: AtomicU64,
    /// Completed writes (and other commands that send data).
    pub writes: AtomicU64,
    /// Bytes read.
    pub read_bytes: AtomicU64,
    /// Bytes written.
    pub write_bytes: AtomicU64,
    /// Commands that completed with an error.
    pub errors: AtomicU64,
    buckets: [AtomicU64; LATENCY_BUCKETS_S.len() + 1],
    latency_sum_ns: AtomicU64,
}

impl QueueIoMetrics {
    /// Records one completed command.
    pub fn record(&self, is_read: bool, bytes: u64, latency: Duration, ok: bool) {
        if is_read {
            self.reads.fetch_add(1, Ordering::Relaxed);
            self.read_bytes.fetch_add(bytes, Ordering::Relaxed);
        } else {
            self.writes.fetch_add(1, Ordering::Relaxed);
            self.write_bytes.fetch_add(bytes, Ordering::Relaxed);
        }
        if !ok {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        let s = latency.as_secs_f64();
        let i = LATENCY_BUCKETS_S
            .iter()
            .position(|b| s <= *b)
            .unwrap_or(LATENCY_BUCKETS_S.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.latency_sum_ns
            .fetch_add(latency.as_nanos() as u64, Ordering::Relaxed);
    }
}

/// Per-queue I/O metrics of a set of queues, labelled by queue ID.
#[derive(Debug, Default)]
pub struct QueueMetricsSet {
    queues: Vec<(u16, Arc<QueueIoMetrics>)>,
}

impl QueueMetricsSet {
    /// A set for queues `qids`.
    pub fn new(qids: impl IntoIterator<Item = u16>) -> Self {
        Self {
            queues: qids.into_iter().map(|q| (q, Arc::default())).collect(),
        }
    }
    /// The metrics of queue `qid`.
    pub fn queue(&self, qid: u16) -> Option<Arc<QueueIoMetrics>> {
        self.queues
            .iter()
            .find(|(q, _)| *q == qid)
            .map(|(_, m)| m.clone())
    }
}

impl Collector for QueueMetricsSet {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        if self.queues.is_empty() {
            return Ok(());
        }
        type Getter = fn(&QueueIoMetrics) -> u64;
        let counters: [(&str, &str, Getter); 5] = [
            ("nvme_tcp_queue_reads", "Completed read commands.", |m| {
                m.reads.load(Ordering::Relaxed)
            }),
            ("nvme_tcp_queue_writes", "Completed write commands.", |m| {
                m.writes.load(Ordering::Relaxed)
            }),
            ("nvme_tcp_queue_read_bytes", "Bytes read.", |m| {
                m.read_bytes.load(Ordering::Relaxed)
            }),
            ("nvme_tcp_queue_write_bytes", "Bytes written.", |m| {
                m.write_bytes.load(Ordering::Relaxed)
            }),
            (
                "nvme_tcp_queue_errors",
                "Commands completed with an error.",
                |m| m.errors.load(Ordering::Relaxed),
            ),
        ];
        for (name, help, get) in counters {
            let mut f = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (qid, m) in &self.queues {
                let labels = [("qid", qid.to_string())];
                ConstCounter::new(get(m)).encode(f.encode_family(&labels)?)?;
            }
        }
        let mut f = enc.encode_descriptor(
            "nvme_tcp_queue_latency_seconds",
            "Command latency, submission to completion.",
            None,
            MetricType::Histogram,
        )?;
        for (qid, m) in &self.queues {
            let labels = [("qid", qid.to_string())];
            let buckets: Vec<(f64, u64)> = LATENCY_BUCKETS_S
                .iter()
                .enumerate()
                .map(|(i, b)| (*b, m.buckets[i].load(Ordering::Relaxed)))
                .collect();
            let count = m.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum();
            let sum = m.latency_sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
            f.encode_family(&labels)?
                .encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;
        }
        Ok(())
    }
}

/// The ten ULP DDP counters of every registered device, as `ulp_ddp_<name>_total`; nothing
/// when no device is registered.
#[derive(Debug, Clone)]
pub struct DdpCollector(pub Registry);

impl Collector for DdpCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let devs = self.0.list();
        if devs.is_empty() {
            return Ok(());
        }
        let stats: Vec<_> = devs.iter().map(|e| (e, e.dev.get_stats())).collect();
        for id in StatId::ALL {
            let name = format!("ulp_ddp_{}", id.name().replace('-', "_"));
            let mut f = enc.encode_descriptor(&name, id.doc(), None, MetricType::Counter)?;
            for (e, s) in &stats {
                let labels = [
                    ("ifindex", e.ifindex.to_string()),
                    ("device", e.name.clone()),
                ];
                ConstCounter::new(s.get(id)).encode(f.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

/// `<program>_build_info{version="..."} 1`: which build serves the metrics.
#[derive(Debug, Clone)]
pub struct BuildInfo {
    /// Metric name prefix (the program's name).
    pub program: &'static str,
    /// Version string.
    pub version: &'static str,
}

impl Collector for BuildInfo {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let name = format!("{}_build_info", self.program);
        let mut f = enc.encode_descriptor(
            &name,
            "Build of the process serving these metrics (always 1).",
            None,
            MetricType::Gauge,
        )?;
        let labels = [("version", self.version)];
        ConstGauge::new(1i64).encode(f.encode_family(&labels)?)
    }
}

/// Builds the exposition registry: the devices' ULP DDP counters, then `sources`.
pub fn registry(devices: Registry, sources: Vec<Box<dyn Collector>>) -> PromRegistry {
    let mut r = PromRegistry::default();
    r.register_collector(Box::new(DdpCollector(devices)));
    for s in sources {
        r.register_collector(s);
    }
    r
}

/// Renders the exposition (Prometheus text format 0.0.4).
pub fn render(reg: &PromRegistry) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail; a collector's error would leave a partial page.
    let _ = prometheus_text::encode(&mut out, reg);
    out
}

/// Threads answering scrapes. The HTTP server reads requests in its own threads, so an idle or
/// slow client never holds up another scrape; these only render and send.
const WORKERS: usize = 2;

/// A running metrics endpoint (`GET /metrics`, plain HTTP). Dropping it stops it.
pub struct MetricsServer {
    addr: SocketAddr,
    server: Arc<tiny_http::Server>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for MetricsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsServer")
            .field("addr", &self.addr)
            .finish()
    }
}

impl MetricsServer {
    /// Serves the ULP DDP counters of `devices` and `sources` on `addr` (port 0 picks a free
    /// port; see [`Self::local_addr`]).
    pub fn bind(
        addr: SocketAddr,
        devices: Registry,
        sources: Vec<Box<dyn Collector>>,
    ) -> std::io::Result<Self> {
        Self::serve(addr, registry(devices, sources))
    }

    /// Serves `reg` on `addr`.
    pub fn serve(addr: SocketAddr, reg: PromRegistry) -> std::io::Result<Self> {
        let server = tiny_http::Server::http(addr).map_err(std::io::Error::other)?;
        let addr = server
            .server_addr()
            .to_ip()
            .ok_or_else(|| std::io::Error::other("metrics server has no IP address"))?;
        let server = Arc::new(server);
        let reg = Arc::new(reg);
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for i in 0..WORKERS {
            let (server, reg, stop) = (server.clone(), reg.clone(), stop.clone());
            threads.push(
                std::thread::Builder::new()
                    .name(format!("metrics-{i}"))
                    .spawn(move || {
                        while !stop.load(Ordering::Relaxed) {
                            match server.recv() {
                                Ok(req) => respond(req, &reg),
                                Err(_) => break,
                            }
                        }
                    })?,
            );
        }
        Ok(Self {
            addr,
            server,
            stop,
            threads,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

fn respond(req: tiny_http::Request, reg: &PromRegistry) {
    let path = req.url().split('?').next().unwrap_or("");
    let get = matches!(
        req.method(),
        tiny_http::Method::Get | tiny_http::Method::Head
    );
    let resp = if get && (path == "/metrics" || path == "/") {
        let ctype = tiny_http::Header::from_bytes(
            &b"Content-Type"[..],
            prometheus_text::CONTENT_TYPE.as_bytes(),
        );
        let r = tiny_http::Response::from_string(render(reg));
        match ctype {
            Ok(h) => r.with_header(h),
            Err(()) => r,
        }
    } else {
        tiny_http::Response::from_string("not found; try GET /metrics\n").with_status_code(404)
    };
    // A client that went away is not our problem.
    let _ = req.respond(resp);
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.server.unblock();
        for _ in 1..self.threads.len() {
            self.server.unblock();
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
