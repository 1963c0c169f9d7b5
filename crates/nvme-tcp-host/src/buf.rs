//! Caller-provided data buffers, passed by ownership: a command takes its buffer and the
//! completion hands it back, so the queue can place received data into it directly without
//! borrowing across an asynchronous boundary.
//!
//! The type is the ULP DDP interface's [`IoBuf`]: the very buffer a caller submits is the one
//! an offload device places into (no conversion, no copy, no allocation), and the one
//! scatter-gather walker ([`IoBuf::locate`], [`ulp_ddp::SgCursor`]) serves the host, the
//! interface and the device.

pub use ulp_ddp::IoBuf;
