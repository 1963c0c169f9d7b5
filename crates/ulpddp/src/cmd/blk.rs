//! `ulpddp nbd`: the namespaces of a subsystem as block devices over NBD, through the
//! `nvme-tcp-blk` crate.

use std::net::TcpListener;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::Args;
use nvme_tcp_blk::nbd::{Export, NbdServer, ServerConfig};
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
    /// Export name prefix: namespace N is exported as PREFIX + N (e.g. `ns1`); the first is
    /// also the default export (empty name).
    #[arg(long, default_value = "ns")]
    pub export_prefix: String,
    /// Export read only.
    #[arg(long)]
    pub read_only: bool,
}

/// Connects and builds the engine over the chosen namespaces.
fn engine(target: &Target, ns: &NamespaceArgs) -> anyhow::Result<Arc<BlockEngine>> {
    let ctrl = target.connect()?;
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
    Ok(Arc::new(engine))
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

/// Runs `ulpddp nbd` until SIGINT or SIGTERM.
pub fn run_nbd(a: NbdArgs) -> anyhow::Result<()> {
    let listener =
        TcpListener::bind(&a.listen).with_context(|| format!("listening on {}", a.listen))?;
    let engine = engine(&a.target, &a.ns)?;
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
    let addr = listener.local_addr()?;
    for e in &exports {
        let g = e.disk.geometry();
        println!(
            "export {} ({} bytes, {}-byte blocks, physical {}, max transfer {}): nbd://{addr}/{}",
            e.name,
            g.size_bytes(),
            g.lba_size,
            g.physical_block_size,
            g.max_transfer,
            e.name
        );
    }
    let server = NbdServer::start(listener, exports, ServerConfig::default())?;
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
