//! The TLS 1.3 session of an NVMe/TCP connection, on OpenSSL.
//!
//! Both ends run the handshake right after the TCP connection is up and before ICReq; from
//! then on every PDU goes through the session ([`TlsStream`] is `Read + Write` over the
//! socket). Only TLS 1.3 is offered, only external PSKs authenticate (no certificates), the
//! cipher suite is TLS_AES_128_GCM_SHA256, and the server sends no session tickets (NVMe/TCP
//! does not resume sessions; a ticket would also be a post-handshake record that kernel TLS
//! peers have to skip).
//!
//! The PSK travels through OpenSSL's PSK callbacks, which in TLS 1.3 bind the PSK to a
//! SHA-256 cipher suite: keys whose identity names SHA-384 (hash specifier 02, cipher suite
//! TLS_AES_256_GCM_SHA384) are refused with a clear error on both ends.

use std::io::{self, Read, Write};
use std::sync::{Arc, OnceLock};

use openssl::ex_data::Index;

use openssl::ssl::{
    HandshakeError, Ssl, SslContext, SslContextBuilder, SslMethod, SslMode, SslOptions, SslStream,
    SslVersion,
};

use crate::psk::{CipherHash, ConfiguredPsk, PskIdentity, TlsPsk};

/// The cipher suite offered and accepted.
pub const CIPHER_SUITE: &str = "TLS_AES_128_GCM_SHA256";

/// Why a TLS session could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// OpenSSL refused the configuration (its errors are in the message, so they are not
    /// also the source: a printed chain names them once).
    #[error("TLS setup: {0}")]
    Setup(openssl::error::ErrorStack),
    /// The handshake failed (wrong PSK, unknown identity, a peer that does not speak TLS, a
    /// closed connection).
    #[error("TLS handshake failed: {0}")]
    Handshake(String),
    /// The key cannot be used.
    #[error("TLS PSK: {0}")]
    Key(String),
}

impl From<openssl::error::ErrorStack> for TlsError {
    fn from(e: openssl::error::ErrorStack) -> Self {
        TlsError::Setup(e)
    }
}

/// How the server (target) finds the configured PSK of a host: called with the parsed
/// identity of a ClientHello; `None` refuses it.
pub type PskLookup = dyn Fn(&PskIdentity) -> Option<ConfiguredPsk> + Send + Sync;

fn base_context() -> Result<SslContextBuilder, TlsError> {
    let mut b = SslContext::builder(SslMethod::tls())?;
    b.set_min_proto_version(Some(SslVersion::TLS1_3))?;
    b.set_max_proto_version(Some(SslVersion::TLS1_3))?;
    b.set_ciphersuites(CIPHER_SUITE)?;
    // Partial writes and a retry with a different (moved) buffer: the queue drivers write
    // whatever their transmit queue holds and retry after WouldBlock.
    b.set_mode(SslMode::ENABLE_PARTIAL_WRITE | SslMode::ACCEPT_MOVING_WRITE_BUFFER);
    b.set_options(SslOptions::NO_TICKET);
    Ok(b)
}

/// The target's side: accepts TLS 1.3 PSK handshakes whose identity names a host with a
/// configured PSK.
#[derive(Clone)]
pub struct TlsServer {
    ctx: SslContext,
}

impl std::fmt::Debug for TlsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsServer").finish_non_exhaustive()
    }
}

impl TlsServer {
    /// A server whose PSKs come from `lookup`.
    pub fn new(lookup: Arc<PskLookup>) -> Result<Self, TlsError> {
        let mut b = base_context()?;
        b.set_num_tickets(0)?;
        let index = identity_index()?;
        b.set_psk_server_callback(move |ssl, identity, psk_out| {
            let fail = openssl::error::ErrorStack::get;
            let Some(identity) = identity else {
                return Err(fail());
            };
            let key = match server_psk(&*lookup, identity) {
                Ok(k) => k,
                Err(why) => {
                    tracing::warn!(
                        identity = %String::from_utf8_lossy(identity),
                        "TLS PSK refused: {why}"
                    );
                    // Zero length: no PSK, so the handshake fails.
                    return Ok(0);
                }
            };
            if key.key.len() > psk_out.len() {
                return Ok(0);
            }
            psk_out[..key.key.len()].copy_from_slice(&key.key);
            ssl.set_ex_data(index, key.identity.clone());
            Ok(key.key.len())
        });
        Ok(Self { ctx: b.build() })
    }

    /// Runs the server handshake on `stream` (blocking, or with the stream's timeouts).
    pub fn accept<S: Read + Write>(&self, stream: S) -> Result<TlsStream<S>, TlsError> {
        let ssl = Ssl::new(&self.ctx)?;
        match ssl.accept(stream) {
            Ok(s) => Ok(TlsStream::new(s)),
            Err(e) => Err(handshake_error(e)),
        }
    }
}

/// Where the server keeps the identity it accepted (OpenSSL does not keep TLS 1.3 PSK
/// identities given through the PSK callback).
fn identity_index() -> Result<Index<Ssl, String>, TlsError> {
    static INDEX: OnceLock<Index<Ssl, String>> = OnceLock::new();
    if let Some(i) = INDEX.get() {
        return Ok(*i);
    }
    let i = Ssl::new_ex_index::<String>()?;
    Ok(*INDEX.get_or_init(|| i))
}

/// The TLS PSK for a ClientHello identity, or why there is none.
fn server_psk(lookup: &PskLookup, identity: &[u8]) -> Result<TlsPsk, String> {
    let id = PskIdentity::parse(identity).map_err(|e| e.to_string())?;
    if id.generated {
        return Err("generated PSKs (DH-HMAC-CHAP secure concatenation) are not supported".into());
    }
    if id.cipher != CipherHash::Sha256 {
        return Err("only SHA-256 PSKs (TLS_AES_128_GCM_SHA256) are supported".into());
    }
    let key = lookup(&id).ok_or_else(|| format!("no PSK configured for host {}", id.hostnqn))?;
    if key.cipher_hash() != id.cipher {
        return Err(format!(
            "the identity names hash {:02}, the host's PSK is for hash {:02}",
            id.cipher.specifier(),
            key.cipher_hash().specifier()
        ));
    }
    let psk = key
        .tls_psk(id.version, &id.hostnqn, &id.subnqn)
        .map_err(|e| e.to_string())?;
    if psk.identity.as_bytes() != identity.strip_suffix(b"\0").unwrap_or(identity) {
        // Version 1: the digest in the identity is not the one of the host's PSK.
        return Err("the identity's PSK digest does not match the host's PSK".into());
    }
    Ok(psk)
}

/// The host's side: offers one TLS PSK.
#[derive(Clone)]
pub struct TlsClient {
    ctx: SslContext,
    identity: String,
}

impl std::fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsClient")
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

impl TlsClient {
    /// A client that authenticates with `psk`.
    pub fn new(psk: TlsPsk) -> Result<Self, TlsError> {
        if psk.cipher != CipherHash::Sha256 {
            return Err(TlsError::Key(
                "only SHA-256 PSKs (hash 01, or 00 with a 32-byte key) are supported; \
                 SHA-384 ones (TLS_AES_256_GCM_SHA384) are not"
                    .into(),
            ));
        }
        // OpenSSL's identity buffer holds 256 bytes including the terminating NUL.
        if psk.identity.len() >= 256 {
            return Err(TlsError::Key(format!(
                "the PSK identity is {} bytes; at most 255 fit (shorter NQNs)",
                psk.identity.len()
            )));
        }
        let mut b = base_context()?;
        let identity = psk.identity.clone();
        b.set_psk_client_callback(move |_ssl, _hint, id_out, psk_out| {
            let id = psk.identity.as_bytes();
            if id.len() + 1 > id_out.len() || psk.key.len() > psk_out.len() {
                return Ok(0);
            }
            id_out[..id.len()].copy_from_slice(id);
            id_out[id.len()] = 0;
            psk_out[..psk.key.len()].copy_from_slice(&psk.key);
            Ok(psk.key.len())
        });
        Ok(Self {
            ctx: b.build(),
            identity,
        })
    }

    /// The PSK identity offered.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// Runs the client handshake on `stream` (blocking, or with the stream's timeouts).
    pub fn connect<S: Read + Write>(&self, stream: S) -> Result<TlsStream<S>, TlsError> {
        let ssl = Ssl::new(&self.ctx)?;
        match ssl.connect(stream) {
            Ok(s) => Ok(TlsStream::new(s)),
            Err(e) => Err(handshake_error(e)),
        }
    }
}

fn handshake_error<S>(e: HandshakeError<S>) -> TlsError {
    TlsError::Handshake(match e {
        HandshakeError::SetupFailure(s) => s.to_string(),
        HandshakeError::Failure(m) => describe(m.error()),
        HandshakeError::WouldBlock(_) => "timed out".into(),
    })
}

fn describe(e: &openssl::ssl::Error) -> String {
    if let Some(io) = e.io_error() {
        return io.to_string();
    }
    match e.ssl_error() {
        Some(stack) => {
            let reasons: Vec<&str> = stack
                .errors()
                .iter()
                .map(|x| x.reason().unwrap_or("unknown"))
                .collect();
            let all = reasons.join("; ");
            let hint = reasons.iter().find_map(|r| hint(r));
            match hint {
                Some(h) => format!("{h} ({all})"),
                None => all,
            }
        }
        None if e.code() == openssl::ssl::ErrorCode::ZERO_RETURN
            || e.code() == openssl::ssl::ErrorCode::SYSCALL =>
        {
            "the peer closed the connection".into()
        }
        None => format!("{e}"),
    }
}

/// What an OpenSSL failure reason usually means between NVMe/TCP peers.
fn hint(reason: &str) -> Option<&'static str> {
    const NOT_TLS: [&str; 3] = [
        "wrong version number",
        "packet length too long",
        "record layer failure",
    ];
    const PSK: [&str; 5] = [
        "illegal parameter",
        "decrypt error",
        "bad record mac",
        "handshake failure",
        "no suitable key share",
    ];
    if NOT_TLS.iter().any(|n| reason.contains(n)) {
        Some("the peer does not speak TLS (a port without TLS?)")
    } else if PSK.iter().any(|n| reason.contains(n)) {
        Some("the PSK was refused (a different key, or none for this host and subsystem)")
    } else {
        None
    }
}

/// An established TLS session over `S`: reads and writes plaintext.
///
/// Over a non-blocking socket, reads and writes return `WouldBlock` like the socket does; a
/// write that returned `WouldBlock` must be retried (with at least the same bytes). Decrypted
/// bytes can wait inside the session ([`TlsStream::pending`]) where polling the socket does
/// not see them.
pub struct TlsStream<S> {
    inner: SslStream<S>,
    /// Small slices of a gather write, joined into one record.
    coalesce: Vec<u8>,
}

impl<S> std::fmt::Debug for TlsStream<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsStream")
            .field(
                "cipher",
                &self.inner.ssl().current_cipher().map(|c| c.name()),
            )
            .finish_non_exhaustive()
    }
}

impl<S: Read + Write> TlsStream<S> {
    fn new(inner: SslStream<S>) -> Self {
        Self {
            inner,
            coalesce: Vec::new(),
        }
    }

    /// The underlying stream.
    pub fn get_ref(&self) -> &S {
        self.inner.get_ref()
    }

    /// The underlying stream, mutably (for socket options; never read or write it directly).
    pub fn get_mut(&mut self) -> &mut S {
        self.inner.get_mut()
    }

    /// Decrypted bytes waiting to be read.
    pub fn pending(&self) -> usize {
        self.inner.ssl().pending()
    }

    /// The negotiated cipher suite.
    pub fn cipher(&self) -> Option<&'static str> {
        self.inner
            .ssl()
            .current_cipher()
            .map(|c| c.standard_name().unwrap_or(c.name()))
    }

    /// The PSK identity the session was authenticated with (on the server's side).
    pub fn psk_identity(&self) -> Option<String> {
        let i = identity_index().ok()?;
        self.inner.ssl().ex_data(i).cloned()
    }

    /// Sends close_notify (best effort; the socket is closed by its owner).
    pub fn close_notify(&mut self) {
        let _ = self.inner.shutdown();
    }
}

impl<S: Read + Write> Read for TlsStream<S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf)
    }
}

impl<S: Read + Write> Write for TlsStream<S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(buf)
    }

    /// Writes the first non-empty slices, coalesced into one TLS record of up to 16 KiB
    /// when they are small (PDU headers and short payloads), else the first slice.
    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        const COALESCE: usize = 16 << 10;
        let first = bufs.iter().position(|b| !b.is_empty());
        let Some(first) = first else {
            return Ok(0);
        };
        if bufs[first].len() >= COALESCE / 2 {
            return self.inner.write(&bufs[first]);
        }
        let mut joined = std::mem::take(&mut self.coalesce);
        joined.clear();
        for b in &bufs[first..] {
            let room = COALESCE - joined.len();
            if room == 0 {
                break;
            }
            joined.extend_from_slice(&b[..b.len().min(room)]);
        }
        let r = self.inner.write(&joined);
        self.coalesce = joined;
        r
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
