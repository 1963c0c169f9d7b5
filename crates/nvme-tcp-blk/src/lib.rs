//! NVMe/TCP namespaces as block devices.
//!
//! The userspace host (`nvme-tcp-host`) reads and writes blocks; this crate turns a namespace
//! into something a machine mounts:
//!
//! * [`BlockEngine`]: byte-addressed block requests (read, write with FUA, flush, discard,
//!   write zeroes) executed as NVMe commands over the controller's I/O queues, one worker
//!   thread per queue, splitting requests at the controller's transfer limits.
//! * [`Geometry`]: size, logical/physical block size and limits of the device, derived from
//!   Identify as the Linux host does.
//! * [`nbd`]: an NBD server (fixed newstyle, `INFO`/`GO` with block sizes, structured
//!   replies) that exports namespaces to qemu, `nbd-client` or any NBD client.
//! * [`ublk`] (feature `ublk`, on by default): a namespace as a Linux ublk block device
//!   (`/dev/ublkbN`), one ublk queue per NVMe/TCP I/O queue.
//!
//! ```no_run
//! use std::sync::Arc;
//! use nvme_tcp_blk::nbd::{Export, NbdServer, ServerConfig};
//! use nvme_tcp_blk::{BlockEngine, Disk, EngineConfig};
//! use nvme_tcp_host::{ConnectOptions, Controller};
//!
//! let mut opts = ConnectOptions::new("127.0.0.1", 4420, "nqn.2024-01.io.example:disk");
//! opts.nr_io_queues = 2;
//! let engine = Arc::new(BlockEngine::new(Controller::connect(opts)?, &[1], EngineConfig::default())?);
//! let disk = Disk::new(engine.clone(), 0).expect("namespace index 0");
//! let export = Export { name: "disk".into(), description: String::new(), disk, read_only: false };
//! let listener = std::net::TcpListener::bind("127.0.0.1:10809")?;
//! let server = NbdServer::start(listener, vec![export], ServerConfig::default())?;
//! // qemu-img info nbd://127.0.0.1:10809/disk
//! server.shutdown();
//! engine.shutdown();
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![warn(missing_docs)]

pub mod engine;
pub mod geometry;
pub mod nbd;
#[cfg(feature = "ublk")]
pub mod ublk;

pub use engine::{BlockEngine, BlockError, BlockOp, BlockResult, Disk, Done, EngineConfig};
pub use geometry::Geometry;
