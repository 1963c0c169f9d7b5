//! Prometheus text exposition (format 0.0.4) of the ULP DDP counters and of per-queue I/O
//! counters and latency, served over plain HTTP (`GET /metrics`).

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use ulp_ddp::StatId;

use crate::Registry;

/// Something that adds metrics to the exposition.
pub trait MetricsSource: Send + Sync {
    /// Appends metric families in the Prometheus text format.
    fn render(&self, out: &mut String);
}

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

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

impl MetricsSource for QueueMetricsSet {
    fn render(&self, out: &mut String) {
        type Getter = fn(&QueueIoMetrics) -> u64;
        let counters: [(&str, &str, Getter); 5] = [
            (
                "nvme_tcp_queue_reads_total",
                "Completed read commands.",
                |m| m.reads.load(Ordering::Relaxed),
            ),
            (
                "nvme_tcp_queue_writes_total",
                "Completed write commands.",
                |m| m.writes.load(Ordering::Relaxed),
            ),
            ("nvme_tcp_queue_read_bytes_total", "Bytes read.", |m| {
                m.read_bytes.load(Ordering::Relaxed)
            }),
            ("nvme_tcp_queue_write_bytes_total", "Bytes written.", |m| {
                m.write_bytes.load(Ordering::Relaxed)
            }),
            (
                "nvme_tcp_queue_errors_total",
                "Commands completed with an error.",
                |m| m.errors.load(Ordering::Relaxed),
            ),
        ];
        for (name, help, get) in counters {
            family(out, name, "counter", help);
            for (qid, m) in &self.queues {
                let _ = writeln!(out, "{name}{{qid=\"{qid}\"}} {}", get(m));
            }
        }
        let name = "nvme_tcp_queue_latency_seconds";
        family(
            out,
            name,
            "histogram",
            "Command latency, submission to completion.",
        );
        for (qid, m) in &self.queues {
            let mut cum = 0u64;
            for (i, b) in LATENCY_BUCKETS_S.iter().enumerate() {
                cum += m.buckets[i].load(Ordering::Relaxed);
                let _ = writeln!(out, "{name}_bucket{{qid=\"{qid}\",le=\"{b}\"}} {cum}");
            }
            cum += m.buckets[LATENCY_BUCKETS_S.len()].load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{qid=\"{qid}\",le=\"+Inf\"}} {cum}");
            let sum = m.latency_sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
            let _ = writeln!(out, "{name}_sum{{qid=\"{qid}\"}} {sum}");
            let _ = writeln!(out, "{name}_count{{qid=\"{qid}\"}} {cum}");
        }
    }
}

/// The ten ULP DDP counters of every registered device, as `ulp_ddp_<name>_total`.
pub fn render_devices(reg: &Registry, out: &mut String) {
    let devs = reg.list();
    let stats: Vec<_> = devs.iter().map(|e| (e, e.dev.get_stats())).collect();
    for id in StatId::ALL {
        let name = format!("ulp_ddp_{}_total", id.name().replace('-', "_"));
        family(out, &name, "counter", id.doc());
        for (e, s) in &stats {
            let _ = writeln!(
                out,
                "{name}{{ifindex=\"{}\",device=\"{}\"}} {}",
                e.ifindex,
                e.name.replace(['"', '\\', '\n'], "_"),
                s.get(id)
            );
        }
    }
}

/// Renders the whole exposition.
pub fn render(reg: &Registry, sources: &[Arc<dyn MetricsSource>]) -> String {
    let mut out = String::new();
    render_devices(reg, &mut out);
    for s in sources {
        s.render(&mut out);
    }
    out
}

/// A running metrics endpoint. Dropping it stops it.
pub struct MetricsServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl MetricsServer {
    /// Serves `GET /metrics` on `addr` (port 0 picks a free port; see [`Self::local_addr`]).
    pub fn bind(
        addr: SocketAddr,
        reg: Registry,
        sources: Vec<Arc<dyn MetricsSource>>,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name("metrics".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    if stop2.load(Ordering::Relaxed) {
                        break;
                    }
                    if let Ok(c) = conn {
                        let _ = serve(c, &reg, &sources);
                    }
                }
            })?;
        Ok(Self {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

fn serve(
    mut c: TcpStream,
    reg: &Registry,
    sources: &[Arc<dyn MetricsSource>],
) -> std::io::Result<()> {
    c.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut req = [0u8; 4096];
    let mut n = 0;
    while n < req.len() {
        let k = c.read(&mut req[n..])?;
        if k == 0 {
            break;
        }
        n += k;
        if req[..n].windows(4).any(|w| w == b"\r\n\r\n")
            || req[..n].windows(2).any(|w| w == b"\n\n")
        {
            break;
        }
    }
    let head = String::from_utf8_lossy(&req[..n]);
    let path = head.split_whitespace().nth(1).unwrap_or("");
    let (status, ctype, body) = if head.starts_with("GET ") && (path == "/metrics" || path == "/") {
        ("200 OK", "text/plain; version=0.0.4", render(reg, sources))
    } else {
        (
            "404 Not Found",
            "text/plain",
            "not found; try GET /metrics\n".to_string(),
        )
    };
    write!(
        c,
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
