//! `ulpddp nbd` and `ulpddp ublk`: the namespaces of a subsystem as block devices, over NBD
//! or as Linux ublk devices, through the `nvme-tcp-blk` crate.

use std::net::TcpListener;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::Args;
use nvme_tcp_blk::nbd::{Export, NbdListener, NbdServer, ServerConfig};
use nvme_tcp_blk::{BlockEngine, Disk, EngineConfig};

use super::host::Target;

/// Which namespaces to serve.
#[derive(Args, Debug, Clone)]
pub struct NamespaceArgs {
    /// Namespace to serve (repeatable); default: every active namespace.
    #[arg(long = "namespace-id")]
    pub nsids: Vec<u32>,
}

/// `ulpddp nbd`.
#[derive(Args, Debug)]
pub struct NbdArgs {
    #[command(flatten)]
    pub target: Target,
    #[command(flatten)]
    pub ns: NamespaceArgs,
    /// Address the NBD server listens on.
    #[arg(long, default_value = "127.0.0.1:10809")]
    pub listen: String,
    /// Listen on this Unix domain socket instead of TCP (`nbd+unix:///EXPORT?socket=PATH`;
    /// `nbd-client -unix PATH`), for clients on this machine. A stale socket file (nobody
    /// listening) is replaced; the file is removed at exit.
    #[arg(long, value_name = "PATH", conflicts_with = "listen")]
    pub socket: Option<PathBuf>,
    /// Export name prefix: namespace N is exported as PREFIX + N (e.g. `ns1`); the first is
    /// also the default export (empty name).
    #[arg(long, default_value = "ns")]
    pub export_prefix: String,
    /// Export read only.
    #[arg(long)]
    pub read_only: bool,
}

/// Connects and builds the engine over the chosen namespaces. The software NIC session, if
/// the target is reached through one, must outlive the engine.
fn engine(
    target: &Target,
    ns: &NamespaceArgs,
) -> anyhow::Result<(Option<crate::cmd::nic::NicSession>, Arc<BlockEngine>)> {
    let (nic, ctrl) = target.connect()?;
    let nsids = if ns.nsids.is_empty() {
        ctrl.active_namespaces().context("listing namespaces")?
    } else {
        ns.nsids.clone()
    };
    if nsids.is_empty() {
        bail!("{} has no active namespace", target.nqn);
    }
    let engine = BlockEngine::new(ctrl, &nsids, EngineConfig::default())
        .with_context(|| format!("namespaces {nsids:?} of {}", target.nqn))?;
    Ok((nic, Arc::new(engine)))
}

/// Waits for SIGINT or SIGTERM.
fn wait_for_signal() -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r,
            _ = term.recv() => Ok(()),
        }
    })?;
    Ok(())
}

/// Binds a Unix domain socket at `path`, replacing a stale socket file nobody listens on.
fn bind_unix(path: &Path) -> anyhow::Result<UnixListener> {
    match UnixListener::bind(path) {
        Ok(l) => return Ok(l),
        Err(e) if e.kind() != std::io::ErrorKind::AddrInUse => {
            return Err(e).with_context(|| format!("listening on {}", path.display()));
        }
        Err(_) => {}
    }
    let is_socket = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket());
    if !is_socket {
        bail!(
            "listening on {}: the path exists and is not a socket",
            path.display()
        );
    }
    if UnixStream::connect(path).is_ok() {
        bail!(
            "listening on {}: another server is listening there",
            path.display()
        );
    }
    std::fs::remove_file(path)
        .with_context(|| format!("removing the stale socket {}", path.display()))?;
    UnixListener::bind(path).with_context(|| format!("listening on {}", path.display()))
}

/// Removes the socket file of a Unix listener when dropped.
struct SocketFile(Option<PathBuf>);

impl Drop for SocketFile {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Runs `ulpddp nbd` until SIGINT or SIGTERM.
pub fn run_nbd(a: NbdArgs) -> anyhow::Result<()> {
    let (listener, _socket_file): (NbdListener, _) = match &a.socket {
        Some(p) => (bind_unix(p)?.into(), SocketFile(Some(p.clone()))),
        None => (
            TcpListener::bind(&a.listen)
                .with_context(|| format!("listening on {}", a.listen))?
                .into(),
            SocketFile(None),
        ),
    };
    let (_nic, engine) = engine(&a.target, &a.ns)?;
    let exports: Vec<Export> = Disk::all(&engine)
        .into_iter()
        .map(|disk| {
            let g = *disk.geometry();
            Export {
                name: format!("{}{}", a.export_prefix, g.nsid),
                description: format!("{} namespace {}", a.target.nqn, g.nsid),
                disk,
                read_only: a.read_only,
            }
        })
        .collect();
    let server = NbdServer::start(listener, exports.clone(), ServerConfig::default())?;
    let addr = server.local_addr();
    for e in &exports {
        let g = e.disk.geometry();
        println!(
            "export {} ({} bytes, {}-byte blocks, physical {}, max transfer {}): {}",
            e.name,
            g.size_bytes(),
            g.lba_size,
            g.physical_block_size,
            g.max_transfer,
            addr.uri(&e.name)
        );
    }
    println!(
        "NBD server on {addr}, {} I/O queue(s)",
        engine.queue_count()
    );
    wait_for_signal()?;
    println!("shutting down");
    server.shutdown();
    engine.shutdown();
    Ok(())
}

/// `ulpddp ublk`.
#[cfg(feature = "ublk")]
#[derive(Args, Debug)]
pub struct UblkArgs {
    #[command(flatten)]
    pub target: Target,
    #[command(flatten)]
    pub ns: NamespaceArgs,
    /// ublk device id (/dev/ublkbN) for a single namespace; -1 lets the driver choose.
    #[arg(long, default_value_t = -1, allow_hyphen_values = true)]
    pub dev_id: i32,
    /// Requests in flight per ublk queue (one ublk queue per NVMe/TCP I/O queue).
    #[arg(long, default_value_t = 64)]
    pub depth: u16,
    /// Largest I/O in bytes; the kernel splits larger ones.
    #[arg(long, default_value_t = 512 << 10)]
    pub max_io: u32,
    /// Expose the devices read only.
    #[arg(long)]
    pub read_only: bool,
}

/// Runs `ulpddp ublk` until SIGINT or SIGTERM (or a device fails), then removes the devices.
#[cfg(feature = "ublk")]
pub fn run_ublk(a: UblkArgs) -> anyhow::Result<()> {
    use nvme_tcp_blk::ublk::{self, StopHandle, UblkOptions, UblkServeError};
    use std::io::Write as _;

    // Before connecting: a machine without the driver gets the hint at once.
    if !std::path::Path::new(ublk::UBLK_CONTROL).exists() {
        return Err(UblkServeError::NoDriver.into());
    }
    let (_nic, engine) = engine(&a.target, &a.ns)?;
    let disks = Disk::all(&engine);
    if a.dev_id >= 0 && disks.len() > 1 {
        bail!("--dev-id needs a single namespace (--namespace-id)");
    }
    let stop = StopHandle::new();
    let s = stop.clone();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if let Err(e) = wait_for_signal() {
                eprintln!("waiting for signals: {e}");
            }
            s.stop();
        })?;
    let mut threads = Vec::new();
    for disk in disks {
        let g = *disk.geometry();
        let opts = UblkOptions {
            dev_id: a.dev_id,
            depth: a.depth,
            max_io_bytes: a.max_io,
            read_only: a.read_only,
        };
        let st = stop.clone();
        threads.push((
            g.nsid,
            std::thread::Builder::new()
                .name(format!("ublk-ns{}", g.nsid))
                .spawn(move || {
                    ublk::serve(disk, opts, st, move |d| {
                        println!(
                            "namespace {}: {} ({} bytes, {}-byte blocks, physical {})",
                            g.nsid,
                            d.bdev,
                            g.size_bytes(),
                            g.lba_size,
                            g.physical_block_size
                        );
                        let _ = std::io::stdout().flush();
                    })
                })?,
        ));
    }
    let mut first_err = None;
    for (nsid, t) in threads {
        let r = t
            .join()
            .unwrap_or_else(|_| Err(UblkServeError::Ublk("device thread panicked".into())));
        if let Err(e) = r {
            // One device failing takes the others down: the command reports it and exits.
            stop.stop();
            first_err.get_or_insert(anyhow::anyhow!("namespace {nsid}: {e}"));
        }
    }
    println!("ublk devices removed; shutting down");
    engine.shutdown();
    match first_err {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
