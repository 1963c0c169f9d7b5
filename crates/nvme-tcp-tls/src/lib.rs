//! NVMe/TCP TLS 1.3 (TP 8011): the PSK interchange format and derivations ([`psk`]) and
//! the TLS session the host's and target's socket drivers read and write through
//! ([`session`]).
//!
//! The TLS library is OpenSSL (through the `openssl` crate): NVMe/TCP TLS uses TLS 1.3 with
//! *external* PSKs only (no certificates), identified by the NVMe PSK identity, and rustls has
//! no external-PSK support; OpenSSL 1.1.1 and 3.x do (its TLS 1.3 PSK session callbacks take
//! the key with its cipher suite).

pub mod psk;
pub mod session;

pub use psk::{
    CipherHash, ConfiguredPsk, Derivation, IdentityVersion, KeyHash, PskError, PskIdentity, TlsPsk,
};

pub use session::{PskLookup, TlsClient, TlsError, TlsServer, TlsStream};
