//! NVMe in-band authentication with DH-HMAC-CHAP (NVMe Base 2.0 §8.13, TP 8006), as Linux
//! and nvme-cli compute it.
//!
//! * [`Secret`]: keys in the `DHHC-1:XX:<base64>:` representation, with their CRC-32 and
//!   the transformation HMAC(key, NQN || "NVMe-over-Fabrics").
//! * [`hash`]: SHA-256/384/512, HMAC, the augmented challenge and the host and controller
//!   responses.
//! * [`dh`]: the RFC 7919 groups ffdhe2048..ffdhe8192.
//! * [`ControllerAuth`] and [`HostAuth`]: one queue's transaction on each side, sans-IO.
//!   The messages are `nvme_tcp_wire::nvme::auth`'s.
//!
//! ```
//! use std::sync::Arc;
//! use nvme_tcp_auth::{ControllerAuth, ControllerAuthConfig, HostAction, HostAuth, HostAuthConfig, Secret};
//! use nvme_tcp_wire::nvme::{DhGroupId, HashId};
//!
//! let key = Secret::generate(Some(HashId::Sha256));
//! let mut ctrl = ControllerAuth::new(Arc::new(ControllerAuthConfig {
//!     host_key: key.clone(),
//!     ctrl_key: None,
//!     hash: HashId::Sha256,
//!     dhgroup: DhGroupId::Null,
//!     hostnqn: "nqn.h".into(),
//!     subnqn: "nqn.s".into(),
//! }));
//! let mut host = HostAuth::new(HostAuthConfig::new(key, None, "nqn.h", "nqn.s"), 1);
//! loop {
//!     match host.poll() {
//!         HostAction::Send(m) => { ctrl.on_send(&m); host.on_sent(); }
//!         HostAction::Receive(_) => host.on_received(&ctrl.on_receive()),
//!         HostAction::Done => break,
//!         HostAction::Failed(e) => panic!("{e}"),
//!     }
//! }
//! assert!(ctrl.is_authenticated());
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod controller;
pub mod dh;
#[doc(hidden)]
pub mod fuzzing;
pub mod hash;
mod host;
mod secret;

pub use controller::{ControllerAuth, ControllerAuthConfig, SendOutcome, next_seqnum};
pub use host::{HostAction, HostAuth, HostAuthConfig, HostAuthError, RECEIVE_LEN};
pub use secret::{Secret, SecretError};
