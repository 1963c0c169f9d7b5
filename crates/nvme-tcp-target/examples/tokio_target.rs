//! The same sans-IO connection state machine driven by tokio instead of a thread per
//! connection — the measurement behind the I/O model choice (see the crate README).
//!
//! ```sh
//! cargo run --release -p nvme-tcp-target --example tokio_target -- 127.0.0.1:4430 ram:1G 2
//! ulpddp perf --target 127.0.0.1:4430 --nqn nqn.2024-01.io.ulp-ddp:tokio --rw randread --bs 4k --qd 128 --queues 2
//! ```
//! Arguments: listen address, namespace, tokio worker threads.

use std::io::{self, IoSlice, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use nvme_tcp_target::conn::{Connection, PortContext};
use nvme_tcp_target::state::TargetState;
use nvme_tcp_target::{NamespaceConfig, SubsystemConfig, TargetConfig};
use tokio::net::TcpStream;
use tokio::sync::Notify;

const NQN: &str = "nqn.2024-01.io.ulp-ddp:tokio";

/// `Write` over a non-blocking tokio socket: WouldBlock when the socket is full.
struct TryWriter<'a>(&'a TcpStream);

impl Write for TryWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.try_write(buf)
    }
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.0.try_write_vectored(bufs)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

async fn serve(stream: TcpStream, mut conn: Connection, stop: Arc<Notify>) -> io::Result<()> {
    stream.set_nodelay(true)?;
    loop {
        loop {
            match conn.flush(&mut TryWriter(&stream)) {
                Ok(()) => break,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => stream.writable().await?,
                Err(e) => return Err(e),
            }
        }
        if conn.is_closed() {
            return Ok(());
        }
        let deadline = conn.poll_timeout(Instant::now());
        let sleep = async {
            match deadline {
                Some(t) => tokio::time::sleep_until(t.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = stream.readable() => {
                r?;
                match stream.try_read(conn.recv_buf()) {
                    Ok(0) => conn.on_eof(),
                    Ok(n) => conn.on_recv(n, Instant::now()),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
            }
            _ = stop.notified() => return Ok(()),
            _ = sleep => conn.handle_timeout(Instant::now()),
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let addr: std::net::SocketAddr = args
        .get(1)
        .map_or("127.0.0.1:4430", String::as_str)
        .parse()?;
    let ns = NamespaceConfig::parse(args.get(2).map_or("ram:1G", String::as_str))?;
    let workers: usize = args.get(3).map_or("2", String::as_str).parse()?;
    let cfg = TargetConfig::single_port(addr).subsystem(SubsystemConfig::new(NQN).namespace(ns));
    cfg.validate()?;
    let state = Arc::new(TargetState::new(&cfg)?);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let local = listener.local_addr()?;
        state.add_port(cfg.ports[0].clone(), local);
        println!("listening on {local}");
        let next = AtomicU64::new(1);
        loop {
            let (stream, _) = listener.accept().await?;
            let id = next.fetch_add(1, Ordering::Relaxed);
            let stop = Arc::new(Notify::new());
            let s2 = Arc::clone(&stop);
            let port = PortContext {
                portid: 1,
                local_addr: stream.local_addr()?,
                in_capsule_data_size: state.limits().in_capsule_data_size,
            };
            let conn = Connection::new(
                id,
                Arc::clone(&state),
                port,
                Box::new(move || {
                    let s = Arc::clone(&s2);
                    Box::new(move || s.notify_one())
                }),
                Instant::now(),
            );
            tokio::spawn(async move {
                let _ = serve(stream, conn, stop).await;
            });
        }
    })
}
