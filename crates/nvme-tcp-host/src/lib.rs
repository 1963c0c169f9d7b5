//! NVMe/TCP host (initiator) in userspace.
//!
//! * [`Controller`]: connects the admin queue (Fabrics Connect, CC.EN, CSTS.RDY, Identify,
//!   Number of Queues), runs Keep Alive every KATO/2 on a background thread, re-establishes the
//!   association after the controller was lost, and owns `nr_io_queues` I/O queues, each its
//!   own TCP connection. Blocking helpers: [`Controller::read_at`], [`Controller::write_at`],
//!   [`Controller::flush`], [`Controller::write_zeroes`], [`Controller::deallocate`],
//!   Identify and log pages.
//! * [`IoQueue`]: the asynchronous, allocation-free I/O path. [`IoQueue::submit`] takes a
//!   [`Request`] (see [`cmd`]) that owns its [`IoBuf`] (contiguous or scatter-gather);
//!   [`IoQueue::poll`] sends, receives and handles reconnects/timeouts; every
//!   [`Completion`] hands the buffer back. One thread per queue keeps `depth()` commands in
//!   flight with no locks and no per-command allocation.
//! * [`queue::QueueCore`]: the sans-IO protocol state of one queue, including the receive
//!   state machine (`RecvPduHeader → RecvPad → RecvData → RecvDataDigest`) that places C2HData
//!   payload straight into the command's buffer at DATAO and digests it chunk by chunk while it
//!   is cache-hot. It can be driven from a kernel socket ([`conn::Connection`]) or from any
//!   byte stream, together with the marks a ULP DDP offload device left on the bytes
//!   ([`RxMarks`]: placed ranges, verified digests).
//! * [`offload`]: the host owns its offload as the kernel's nvme-tcp does: given a device in
//!   [`ConnectOptions::ddp_device`], it reads the limits at connect, `sk_add`s each I/O queue
//!   after its Connect, lends large reads' buffers (`setup`), completes them at
//!   `teardown_done`, answers resync requests and `sk_del`s on close or loss.
//! * [`discovery`]: discovery log pages (port 8009), GENCTR-consistent.
//!
//! Everything the controller sends is checked strictly (header fields in spec order, CCCID,
//! DATAO/DATAL inside the buffer and contiguous, SUCCESS only with LAST_PDU, no short reads,
//! R2T ranges); a violation fails the affected command with [`IoError::Protocol`], and the
//! queue is torn down and reconnected. The other commands in flight are re-sent on the new
//! connection, each at most [`ConnectOptions::max_retries`] times; then it fails with
//! [`IoError::GaveUp`], caused by the last failure. A data digest mismatch fails only its
//! command ([`IoError::DataDigest`]).
//!
//! # Example
//!
//! A complete round trip over an in-memory stream: the "controller" side is played by hand
//! with the wire layer's PDU builders, which is also how the receive path is tested.
//!
//! ```
//! use std::time::Instant;
//! use nvme_tcp_host::queue::{QueueConfig, QueueCore};
//! use nvme_tcp_host::{cmd, CidMode, IoBuf};
//! use nvme_tcp_wire::pdu::{CapsuleRespRepr, DataPduRepr, HeaderBuf, IcRespRepr, PduFlags, PduType};
//!
//! let mut q = QueueCore::new(QueueConfig {
//!     qid: 1, queue_size: 32, hdgst: false, ddgst: false,
//!     cid_mode: CidMode::Tagged, in_capsule_max: 8192,
//! });
//! let icreq_len = q.tx_pending().len();
//! q.tx_consumed(icreq_len); // "sent"
//! let icresp = IcRespRepr { pfv: 0, cpda: 0, hdgst_enable: false, ddgst_enable: false, maxh2cdata: 131072 };
//! q.rx_feed(HeaderBuf::new(&icresp).as_bytes()).unwrap();
//! q.set_live(); // after Fabrics Connect
//!
//! // Read 8 blocks of 512 bytes from LBA 0 of namespace 1 into a caller buffer.
//! let read = cmd::read(1, 0, 8, IoBuf::Contig(vec![0; 4096]), 42);
//! let cid = q.submit(read, Instant::now()).unwrap();
//!
//! // The controller answers with C2HData (SUCCESS: no CapsuleResp needed).
//! let hdr = DataPduRepr {
//!     pdu_type: PduType::C2hData, flags: PduFlags::LAST_PDU | PduFlags::SUCCESS,
//!     hdgst: false, ddgst: false, pda: 0, cccid: cid, ttag: 0, datao: 0, datal: 4096,
//! };
//! let mut stream = HeaderBuf::new(&hdr).as_bytes().to_vec();
//! stream.extend(std::iter::repeat(0xAB).take(4096));
//! q.rx_feed(&stream).unwrap();
//!
//! let done = q.pop_completion().unwrap();
//! assert_eq!(done.user_data, 42);
//! assert!(done.result.is_ok());
//! assert!(done.buf.unwrap().to_vec().iter().all(|&b| b == 0xAB));
//! # let _ = CapsuleRespRepr { hdgst: false, cqe: [0; 16] };
//! ```
//!
//! Against a real controller:
//!
//! ```no_run
//! use nvme_tcp_host::{ConnectOptions, Controller};
//! let mut opts = ConnectOptions::new("127.0.0.1", 4420, "nqn.2024-01.io.example:sub");
//! opts.nr_io_queues = 2;
//! opts.ddgst = true;
//! let ctrl = Controller::connect(opts)?;
//! let ns = ctrl.namespace(1)?;
//! let mut data = vec![0u8; 1 << 20];
//! ctrl.read_at(&ns, 0, &mut data)?;
//! ctrl.shutdown();
//! # Ok::<(), nvme_tcp_host::HostError>(())
//! ```

#![warn(missing_docs)]

pub mod assoc;
pub mod auth;
pub mod blocking;
pub mod buf;
pub mod cmd;
pub mod conn;
pub mod ctrl;
pub mod discovery;
pub mod error;
pub mod ioq;
pub mod marks;
pub mod offload;
pub mod options;
pub mod queue;
mod session;
pub mod tags;

pub use buf::IoBuf;
pub use ctrl::{Controller, ControllerInfo, NamespaceInfo};
pub use error::{GiveUpReason, HostError, IoError, NvmeStatus, ProtocolError};
pub use ioq::IoQueue;
pub use offload::{DdpNetdev, PlacedRange, RxMarks};
pub use options::{CidMode, ConnectOptions, TlsOptions};
pub use queue::{Completion, CqeInfo, DataDir, QueueCore, Request};
