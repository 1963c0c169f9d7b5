//! Prometheus text exposition (format 0.0.4) of the ULP DDP counters, of per-queue I/O
//! counters and latency, and of whatever else a process registers, served over plain HTTP
//! (`GET /metrics`). Encoding is `prometheus-client`'s. A collector emits a family only when
//! it has something to report (no device, no ULP DDP families).
//!
//! Serving is a small HTTP/1.1 server of our own on a [`TcpListener`], requests parsed by
//! `httparse`. One thread accepts; each client connection gets a thread of its own, so an idle
//! or slow client never holds up another scrape:
//!
//! * at most 64 clients at once; the one over the cap is answered `503 Service Unavailable`
//!   and closed at once, never queued behind the others;
//! * a client has 10 s to send a complete request header (a client dribbling bytes is cut off
//!   then, with `408 Request Timeout`), of at most 8 KiB (else `431`), and 10 s to take the
//!   answer;
//! * keep-alive and pipelining as HTTP/1.1 has them (`Connection: close` honoured, HTTP/1.0
//!   closes unless it asks for keep-alive); a connection with no request for 30 s is closed;
//! * `GET` and `HEAD` of `/metrics` and `/` answer the exposition, other paths `404`, other
//!   methods `405`.
//!
//! Dropping the [`MetricsServer`] stops accepting; connections still open end at their next
//! deadline.

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

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

/// The limits of the HTTP server; [`Limits::default`] is what [`MetricsServer`] uses.
#[derive(Debug, Clone)]
pub(crate) struct Limits {
    /// Client connections served at once; the one over the cap is answered 503.
    pub max_clients: usize,
    /// Time to send a complete request header, counted from the connection (first request)
    /// or from the request's first byte (later ones).
    pub header_timeout: Duration,
    /// Time to take an answer.
    pub write_timeout: Duration,
    /// Time a keep-alive connection may wait for its next request.
    pub idle_timeout: Duration,
    /// Largest request header (request line included).
    pub max_header_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_clients: 64,
            header_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            max_header_bytes: 8 * 1024,
        }
    }
}

/// Most header lines a request may have.
const MAX_HEADERS: usize = 64;

/// The whole answer to a client over the connection cap.
const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 20\r\nRetry-After: 1\r\nConnection: close\r\n\r\ntoo many connections";

/// A running metrics endpoint (`GET /metrics`, plain HTTP). Dropping it stops it.
pub struct MetricsServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
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
        Self::serve_with(addr, reg, Limits::default())
    }

    /// Serves `reg` on `addr` within `limits`.
    pub(crate) fn serve_with(
        addr: SocketAddr,
        reg: PromRegistry,
        limits: Limits,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let shared = Arc::new(Shared {
            reg,
            limits,
            stop: stop.clone(),
            clients: AtomicUsize::new(0),
        });
        let acceptor = std::thread::Builder::new()
            .name("metrics-accept".into())
            .spawn(move || accept_loop(listener, shared))?;
        Ok(Self {
            addr,
            stop,
            acceptor: Some(acceptor),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop with a connection of our own; it sees the flag and ends,
        // closing the listener. Should that connection fail, the loop is left to end at the
        // next client rather than holding up the drop.
        let mut wake = self.addr;
        if wake.ip().is_unspecified() {
            wake.set_ip(match wake.ip() {
                IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
            });
        }
        let woken = TcpStream::connect_timeout(&wake, Duration::from_secs(1)).is_ok();
        if let Some(t) = self.acceptor.take()
            && woken
        {
            let _ = t.join();
        }
    }
}

/// What the accept loop shares with the client threads.
struct Shared {
    reg: PromRegistry,
    limits: Limits,
    stop: Arc<AtomicBool>,
    /// Client connections being served.
    clients: AtomicUsize,
}

/// One client's place under the connection cap, given back when its thread ends.
struct Slot(Arc<Shared>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.clients.fetch_sub(1, Ordering::SeqCst);
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let accepted = listener.accept();
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let stream = match accepted {
            Ok((s, _)) => s,
            Err(e) => {
                // Out of descriptors or memory, or a connection reset before we took it:
                // give the system a moment rather than spinning.
                tracing::debug!("metrics: accept: {e}");
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
        };
        if shared.clients.fetch_add(1, Ordering::SeqCst) >= shared.limits.max_clients {
            shared.clients.fetch_sub(1, Ordering::SeqCst);
            // A fresh connection's send buffer is empty, so this small write does not block;
            // non-blocking all the same, so that nothing can hold up the loop.
            let mut s = stream;
            let _ = s.set_nonblocking(true);
            let _ = s.write_all(BUSY);
            // Take in what the client already sent, without waiting: closing with unread
            // bytes would reset the connection, and the client might never see the 503.
            let mut sink = [0u8; 4096];
            for _ in 0..4 {
                if !matches!(s.read(&mut sink), Ok(n) if n > 0) {
                    break;
                }
            }
            let _ = s.shutdown(std::net::Shutdown::Write);
            continue;
        }
        let slot = Slot(shared.clone());
        let spawned = std::thread::Builder::new()
            .name("metrics-client".into())
            .spawn(move || serve_client(stream, &slot.0));
        if let Err(e) = spawned {
            // The closure, and with it the slot and the stream, is dropped.
            tracing::warn!("metrics: cannot start a client thread: {e}");
        }
    }
}

/// Whether a client connection goes on after an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    KeepAlive,
    Close,
}

/// A parsed request header, owned.
struct Request {
    /// Bytes of the header, empty line included.
    len: usize,
    method: Method,
    path_known: bool,
    next: Next,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    Get,
    Head,
    Other,
}

/// Parses the request at the start of `buf`: `Ok(None)` while it is incomplete, `Err` with
/// the status to answer when it is malformed.
fn parse(buf: &[u8]) -> Result<Option<Request>, (u16, &'static str)> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err((431, "Request Header Fields Too Large"));
        }
        Err(_) => return Err((400, "Bad Request")),
    };
    let method = match req.method {
        Some("GET") => Method::Get,
        Some("HEAD") => Method::Head,
        _ => Method::Other,
    };
    let path = req.path.unwrap_or("");
    let path = path.split(['?', '#']).next().unwrap_or("");
    let path_known = path == "/metrics" || path == "/";
    // HTTP/1.1 keeps the connection unless told to close; HTTP/1.0 closes unless told to keep.
    let mut next = if req.version == Some(1) {
        Next::KeepAlive
    } else {
        Next::Close
    };
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("connection") {
            for token in String::from_utf8_lossy(h.value).split(',') {
                let token = token.trim();
                if token.eq_ignore_ascii_case("close") {
                    next = Next::Close;
                } else if token.eq_ignore_ascii_case("keep-alive") && next != Next::Close {
                    next = Next::KeepAlive;
                }
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding")
            || (h.name.eq_ignore_ascii_case("content-length")
                && h.value
                    .iter()
                    .any(|b| *b != b'0' && !b.is_ascii_whitespace()))
        {
            // A body we would have to skip: answer, then close rather than read it.
            next = Next::Close;
        }
    }
    Ok(Some(Request {
        len,
        method,
        path_known,
        next,
    }))
}

/// Serves one client connection until it closes, breaks a limit or asks to close.
fn serve_client(mut stream: TcpStream, shared: &Shared) {
    let limits = &shared.limits;
    let _ = stream.set_nodelay(true);
    let mut buf: Vec<u8> = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    // The first request is due within the header timeout of the connection; later ones may
    // wait up to the idle timeout for their first byte, then have the header timeout.
    let mut header_deadline = Some(Instant::now() + limits.header_timeout);
    let mut idle_deadline = Instant::now() + limits.idle_timeout;
    loop {
        let req = match parse(&buf) {
            Ok(Some(req)) => req,
            Ok(None) if buf.len() >= limits.max_header_bytes => {
                let _ = send_error(&mut stream, 431, "Request Header Fields Too Large", limits);
                return linger_close(stream);
            }
            Ok(None) => {
                let deadline = header_deadline.unwrap_or(idle_deadline);
                let room = (limits.max_header_bytes - buf.len()).min(chunk.len());
                match read_by(&mut stream, &mut chunk[..room], deadline) {
                    Ok(0) => return,
                    Ok(n) => {
                        buf.extend_from_slice(&chunk[..n]);
                        header_deadline.get_or_insert(Instant::now() + limits.header_timeout);
                        continue;
                    }
                    Err(e) if is_timeout(&e) => {
                        // Half a request: say why; an idle connection just closes.
                        if !buf.is_empty() {
                            let _ = send_error(&mut stream, 408, "Request Timeout", limits);
                            return linger_close(stream);
                        }
                        return;
                    }
                    Err(_) => return,
                }
            }
            Err((status, reason)) => {
                let _ = send_error(&mut stream, status, reason, limits);
                return linger_close(stream);
            }
        };
        buf.drain(..req.len);
        let next = if shared.stop.load(Ordering::SeqCst) {
            Next::Close
        } else {
            req.next
        };
        if answer(&mut stream, &req, next, shared).is_err() || next == Next::Close {
            return linger_close(stream);
        }
        let now = Instant::now();
        header_deadline = (!buf.is_empty()).then(|| now + limits.header_timeout);
        idle_deadline = now + limits.idle_timeout;
    }
}

/// Answers one well-formed request.
fn answer(
    stream: &mut TcpStream,
    req: &Request,
    next: Next,
    shared: &Shared,
) -> std::io::Result<()> {
    if !req.path_known {
        return send(
            stream,
            "404 Not Found",
            &[("Content-Type", "text/plain; charset=utf-8")],
            b"not found; try GET /metrics\n",
            req.method != Method::Head,
            next,
            &shared.limits,
        );
    }
    if req.method == Method::Other {
        return send(
            stream,
            "405 Method Not Allowed",
            &[
                ("Content-Type", "text/plain; charset=utf-8"),
                ("Allow", "GET, HEAD"),
            ],
            b"method not allowed; try GET /metrics\n",
            true,
            next,
            &shared.limits,
        );
    }
    let body = render(&shared.reg);
    send(
        stream,
        "200 OK",
        &[("Content-Type", prometheus_text::CONTENT_TYPE)],
        body.as_bytes(),
        req.method == Method::Get,
        next,
        &shared.limits,
    )
}

/// Answers a request we will not serve, on a connection about to close.
fn send_error(
    stream: &mut TcpStream,
    status: u16,
    reason: &str,
    limits: &Limits,
) -> std::io::Result<()> {
    let body = format!("{reason}\n");
    send(
        stream,
        &format!("{status} {reason}"),
        &[("Content-Type", "text/plain; charset=utf-8")],
        body.as_bytes(),
        true,
        Next::Close,
        limits,
    )
}

/// Writes one response: `status` ("200 OK"), `headers`, `Content-Length` of `body` and
/// `Connection`, then `body` when `with_body` (not for HEAD), within the write timeout.
fn send(
    stream: &mut TcpStream,
    status: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    with_body: bool,
    next: Next,
    limits: &Limits,
) -> std::io::Result<()> {
    let mut out = format!("HTTP/1.1 {status}\r\n");
    for (name, value) in headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str(&format!("Content-Length: {}\r\n", body.len()));
    out.push_str(match next {
        Next::KeepAlive => "Connection: keep-alive\r\n\r\n",
        Next::Close => "Connection: close\r\n\r\n",
    });
    let mut out = out.into_bytes();
    if with_body {
        out.extend_from_slice(body);
    }
    write_all_by(stream, &out, Instant::now() + limits.write_timeout)
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

/// One read that gives up at `deadline`.
fn read_by(stream: &mut TcpStream, buf: &mut [u8], deadline: Instant) -> std::io::Result<usize> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ErrorKind::TimedOut.into());
        }
        stream.set_read_timeout(Some(left))?;
        match stream.read(buf) {
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            r => return r,
        }
    }
}

/// Writes all of `data`, giving up at `deadline` however slowly the client takes it.
fn write_all_by(stream: &mut TcpStream, mut data: &[u8], deadline: Instant) -> std::io::Result<()> {
    while !data.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ErrorKind::TimedOut.into());
        }
        stream.set_write_timeout(Some(left))?;
        match stream.write(data) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Closes a connection after its last answer so that the client gets to read it: closing
/// with unread request bytes would reset the connection and could discard the answer. Stops
/// sending, then reads and drops what the client still sends, for a second at most.
fn linger_close(mut stream: TcpStream) {
    if stream.shutdown(Shutdown::Write).is_err() {
        return;
    }
    let deadline = Instant::now() + Duration::from_secs(1);
    let mut sink = [0u8; 4096];
    for _ in 0..64 {
        match read_by(&mut stream, &mut sink, deadline) {
            Ok(n) if n > 0 => {}
            _ => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(limits: Limits) -> MetricsServer {
        let reg = registry(
            Registry::new(),
            vec![Box::new(BuildInfo {
                program: "test",
                version: "1",
            })],
        );
        MetricsServer::serve_with("127.0.0.1:0".parse().unwrap(), reg, limits).unwrap()
    }

    fn connect(addr: SocketAddr) -> TcpStream {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s
    }

    /// Sends `request` and reads until the server closes.
    fn exchange(addr: SocketAddr, request: &[u8]) -> std::io::Result<String> {
        let mut s = connect(addr);
        s.write_all(request)?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    }

    fn scrape(addr: SocketAddr) -> std::io::Result<String> {
        exchange(
            addr,
            b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
    }

    fn assert_scrape_ok(addr: SocketAddr) {
        let body = scrape(addr).unwrap();
        assert!(body.starts_with("HTTP/1.1 200 OK\r\n"), "{body}");
        assert!(body.contains("test_build_info{version=\"1\"} 1"), "{body}");
    }

    #[test]
    fn a_slow_loris_is_cut_off_at_the_header_deadline_while_scrapes_go_on() {
        let deadline = Duration::from_secs(1);
        let srv = server(Limits {
            header_timeout: deadline,
            ..Limits::default()
        });
        let addr = srv.local_addr();
        let mut loris = connect(addr);
        loris
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let start = Instant::now();
        loris
            .write_all(b"GET /metrics HTTP/1.1\r\nX-Slow: ")
            .unwrap();
        let mut got = Vec::new();
        let mut cut_off = false;
        // A byte every 200 ms, for up to ten times the deadline.
        for _ in 0..50 {
            if loris.write_all(b"a").is_err() {
                cut_off = true;
                break;
            }
            let mut b = [0u8; 512];
            match loris.read(&mut b) {
                Ok(0) => {
                    cut_off = true;
                    break;
                }
                Ok(n) => got.extend_from_slice(&b[..n]),
                Err(e) if is_timeout(&e) => {}
                Err(_) => {
                    cut_off = true;
                    break;
                }
            }
            assert_scrape_ok(addr);
        }
        assert!(cut_off, "a client dribbling a header was never cut off");
        assert!(start.elapsed() >= deadline, "cut off before the deadline");
        let got = String::from_utf8_lossy(&got);
        assert!(
            got.is_empty() || got.starts_with("HTTP/1.1 408 Request Timeout\r\n"),
            "{got}"
        );
        assert_scrape_ok(addr);
    }

    #[test]
    fn the_client_over_the_cap_gets_503_and_service_resumes_when_others_leave() {
        let srv = server(Limits {
            max_clients: 3,
            ..Limits::default()
        });
        let addr = srv.local_addr();
        // Accepted in order, so these three fill the cap before the next one is looked at.
        let idle: Vec<_> = (0..3).map(|_| connect(addr)).collect();
        let mut over = connect(addr);
        let mut answer = String::new();
        over.read_to_string(&mut answer).unwrap();
        assert!(
            answer.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
            "{answer}"
        );
        assert!(answer.contains("\r\nConnection: close\r\n"), "{answer}");
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        assert_eq!(
            header(head, "content-length"),
            Some(&*body.len().to_string())
        );
        drop(idle);
        // Their threads see them go and give back their places.
        let mut ok = false;
        for _ in 0..200 {
            if scrape(addr).is_ok_and(|b| b.starts_with("HTTP/1.1 200 OK\r\n")) {
                ok = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        assert!(ok, "no scrape succeeded once the idle clients left");
        assert_scrape_ok(addr);
    }

    #[test]
    fn an_oversized_header_gets_431() {
        let srv = server(Limits::default());
        let mut req = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
        req.extend(std::iter::repeat_n(b'a', 16 * 1024));
        req.extend_from_slice(b"\r\n\r\n");
        let answer = exchange(srv.local_addr(), &req).unwrap();
        assert!(
            answer.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"),
            "{answer}"
        );
        // Too many header lines, though short, too.
        let mut req = b"GET /metrics HTTP/1.1\r\n".to_vec();
        for i in 0..MAX_HEADERS + 1 {
            req.extend_from_slice(format!("X-{i}: y\r\n").as_bytes());
        }
        req.extend_from_slice(b"\r\n");
        let answer = exchange(srv.local_addr(), &req).unwrap();
        assert!(answer.starts_with("HTTP/1.1 431 "), "{answer}");
        assert_scrape_ok(srv.local_addr());
    }

    #[test]
    fn garbage_gets_400() {
        let srv = server(Limits::default());
        let answer = exchange(srv.local_addr(), b"GET /metrics HTTP/9\r\n\r\n").unwrap();
        assert!(
            answer.starts_with("HTTP/1.1 400 Bad Request\r\n"),
            "{answer}"
        );
    }

    /// The value of header `name` in the response head `head`.
    fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
        head.lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim())
    }

    #[test]
    fn head_has_the_headers_of_get_and_no_body() {
        let srv = server(Limits::default());
        // HEAD, then GET on the same connection: the GET's answer follows the HEAD's header
        // right away, so the HEAD sent no body.
        let both = exchange(
            srv.local_addr(),
            b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .unwrap();
        let (head, rest) = both.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{both}");
        assert_eq!(
            header(head, "content-type"),
            Some(prometheus_text::CONTENT_TYPE)
        );
        let len: usize = header(head, "content-length").unwrap().parse().unwrap();
        assert!(len > 0, "{both}");
        assert!(rest.starts_with("HTTP/1.1 200 OK\r\n"), "{both}");
        let (get_head, body) = rest.split_once("\r\n\r\n").unwrap();
        assert_eq!(header(get_head, "content-length"), Some(&*len.to_string()));
        assert_eq!(header(get_head, "connection"), Some("close"));
        assert_eq!(body.len(), len);
    }

    #[test]
    fn other_methods_get_405_other_paths_404() {
        let srv = server(Limits::default());
        let a = exchange(
            srv.local_addr(),
            b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        )
        .unwrap();
        assert!(a.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"), "{a}");
        assert!(a.contains("\r\nAllow: GET, HEAD\r\n"), "{a}");
        let a = exchange(
            srv.local_addr(),
            b"GET /metrics/x HTTP/1.1\r\nConnection: close\r\n\r\n",
        )
        .unwrap();
        assert!(a.starts_with("HTTP/1.1 404 Not Found\r\n"), "{a}");
        let a = exchange(
            srv.local_addr(),
            b"GET /metrics?x=1 HTTP/1.1\r\nConnection: close\r\n\r\n",
        )
        .unwrap();
        assert!(a.starts_with("HTTP/1.1 200 OK\r\n"), "{a}");
    }

    #[test]
    fn http_1_0_closes_by_default() {
        let srv = server(Limits::default());
        // No `Connection: close`: the server closes all the same, or this read times out.
        let a = exchange(srv.local_addr(), b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
        assert!(a.starts_with("HTTP/1.1 200 OK\r\n"), "{a}");
        assert!(a.contains("\r\nConnection: close\r\n"), "{a}");
    }

    /// Reads one response whose body has a `Content-Length`.
    fn read_response(s: &mut TcpStream) -> String {
        let mut got = Vec::new();
        let mut b = [0u8; 4096];
        for _ in 0..10_000 {
            if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&got[..end]).into_owned();
                let len: usize = header(&head, "content-length").unwrap().parse().unwrap();
                if got.len() >= end + 4 + len {
                    return String::from_utf8_lossy(&got).into_owned();
                }
            }
            let n = s.read(&mut b).unwrap();
            assert!(n > 0, "closed mid-response");
            got.extend_from_slice(&b[..n]);
        }
        panic!("no complete response");
    }

    #[test]
    fn an_idle_keep_alive_connection_is_closed() {
        let srv = server(Limits {
            idle_timeout: Duration::from_millis(300),
            ..Limits::default()
        });
        let mut s = connect(srv.local_addr());
        for _ in 0..2 {
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
            let r = read_response(&mut s);
            assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
            assert!(r.contains("\r\nConnection: keep-alive\r\n"), "{r}");
        }
        // Then nothing: the server closes (a read timing out here would fail).
        let mut b = [0u8; 16];
        assert_eq!(s.read(&mut b).unwrap(), 0);
    }

    #[test]
    fn dropping_the_server_does_not_wait_for_connected_clients() {
        let srv = server(Limits::default());
        let addr = srv.local_addr();
        let mut idle: Vec<_> = (0..3).map(|_| connect(addr)).collect();
        idle[1].write_all(b"GET /metr").unwrap();
        assert_scrape_ok(addr);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            drop(srv);
            let _ = tx.send(());
        });
        rx.recv_timeout(Duration::from_secs(10))
            .expect("dropping the server hung");
        assert!(TcpStream::connect(addr).is_err(), "still accepting");
        drop(idle);
    }
}
