//! An NVMe/TCP target (NVMe-oF controller side).
//!
//! * [`namespace`] / [`backend`]: namespaces backed by memory (`ram:SIZE`), a file or block
//!   device (`file:PATH`, optionally `O_DIRECT`) or nothing (`null`).
//! * [`config`]: ports, subsystems, access control and resource limits, built in code or
//!   loaded from an `nvmetcli save` JSON file.
//! * [`subsystem`] / [`controller`] / [`state`]: the NVMe model — controller IDs, properties,
//!   features, keep-alive, asynchronous events, log pages, the discovery generation counter.
//! * [`identify`] / [`discovery`]: Identify pages and the Discovery Log Page.
//! * [`conn`]: the sans-IO connection state machine.
//! * [`server`]: listeners and one thread per connection ([`Target::start`]).
//! * [`metrics`]: counters per subsystem, namespace and connection, for exporters.
//!
//! ```
//! use nvme_tcp_target::{NamespaceConfig, SubsystemConfig, Target, TargetConfig};
//! let cfg = TargetConfig::single_port("127.0.0.1:0".parse().unwrap()).subsystem(
//!     SubsystemConfig::new("nqn.2024-01.io.example:disk")
//!         .namespace(NamespaceConfig::parse("ram:16M").unwrap()),
//! );
//! let target = Target::start(cfg).unwrap();
//! let addr = target.local_addrs()[0]; // the port the system picked
//! assert_ne!(addr.port(), 0);
//! target.shutdown();
//! ```

pub mod backend;
pub mod config;
pub mod conn;
pub mod controller;
pub mod discovery;
#[doc(hidden)]
pub mod fuzzing;
pub mod identify;
pub mod metrics;
pub mod namespace;
pub mod server;
pub mod state;
pub mod subsystem;
pub mod wire;

pub use config::{
    ConfigError, HostAuthKeys, HostConfig, Limits, PortConfig, SubsystemConfig, TargetConfig,
};
pub use namespace::NamespaceConfig;
pub use server::{Target, TargetError, TargetHandle};
