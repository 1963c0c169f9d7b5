//! TLS 1.3 PSK handshakes over loopback TCP between this crate's client and server.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use nvme_tcp_tls::{ConfiguredPsk, IdentityVersion, KeyHash, TlsClient, TlsError, TlsServer};

const HOST: &str = "nqn.2014-08.org.nvmexpress:uuid:0c2f1d6a-7b51-4a67-9d3e-3f1f5c2b8a11";
const SUB: &str = "nqn.2024-01.io.example:tls";

fn key(byte: u8) -> ConfiguredPsk {
    ConfiguredPsk::new(KeyHash::Sha256, vec![byte; 32]).unwrap()
}

fn server(host_key: ConfiguredPsk) -> TlsServer {
    TlsServer::new(Arc::new(move |id| {
        (id.hostnqn == HOST && id.subnqn == SUB).then(|| host_key.clone())
    }))
    .unwrap()
}

/// Runs `srv` on one accepted connection in a thread; returns what the server's side did.
/// What the server's side received and the identity it accepted.
type Served = std::thread::JoinHandle<Result<(Vec<u8>, Option<String>), TlsError>>;

fn serve_one(srv: TlsServer) -> (std::net::SocketAddr, Served) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let h = std::thread::spawn(move || {
        let (s, _) = l.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut t = srv.accept(s)?;
        let mut buf = [0u8; 5];
        t.read_exact(&mut buf)
            .map_err(|e| TlsError::Handshake(e.to_string()))?;
        t.write_all(b"world").unwrap();
        Ok((buf.to_vec(), t.psk_identity()))
    });
    (addr, h)
}

fn connect(addr: std::net::SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s
}

#[test]
fn the_right_psk_connects_with_either_identity_version() {
    for v in [IdentityVersion::V0, IdentityVersion::V1] {
        let (addr, h) = serve_one(server(key(1)));
        let psk = key(1).tls_psk(v, HOST, SUB).unwrap();
        let c = TlsClient::new(psk.clone()).unwrap();
        let mut t = c.connect(connect(addr)).unwrap();
        assert_eq!(t.cipher(), Some("TLS_AES_128_GCM_SHA256"));
        t.write_all(b"hello").unwrap();
        let mut buf = [0u8; 5];
        t.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"world");
        let (got, identity) = h.join().unwrap().unwrap();
        assert_eq!(got, b"hello");
        assert_eq!(identity.as_deref(), Some(psk.identity.as_str()));
    }
}

#[test]
fn a_wrong_psk_or_unknown_host_fails_the_handshake_on_both_ends() {
    // Wrong key.
    let (addr, h) = serve_one(server(key(1)));
    let c = TlsClient::new(key(2).tls_psk(IdentityVersion::V0, HOST, SUB).unwrap()).unwrap();
    assert!(matches!(
        c.connect(connect(addr)),
        Err(TlsError::Handshake(_))
    ));
    assert!(h.join().unwrap().is_err());
    // Host without a key on the server.
    let (addr, h) = serve_one(server(key(1)));
    let other = "nqn.2014-08.org.nvmexpress:uuid:00000000-0000-0000-0000-000000000000";
    let c = TlsClient::new(key(1).tls_psk(IdentityVersion::V0, other, SUB).unwrap()).unwrap();
    assert!(c.connect(connect(addr)).is_err());
    assert!(h.join().unwrap().is_err());
}

#[test]
fn clear_text_to_a_tls_server_fails_its_handshake() {
    let (addr, h) = serve_one(server(key(1)));
    let mut s = connect(addr);
    // An ICReq-sized clear-text PDU: common header of type 0 (ICReq), HLEN 128.
    let mut icreq = [0u8; 128];
    icreq[2] = 128;
    icreq[4] = 128;
    s.write_all(&icreq).unwrap();
    let err = h.join().unwrap().unwrap_err();
    assert!(matches!(err, TlsError::Handshake(_)), "{err}");
}

#[test]
fn sha384_keys_use_tls_aes_256_gcm_sha384_and_a_hash_mismatch_fails() {
    let k = ConfiguredPsk::new(KeyHash::Sha384, vec![3; 48]).unwrap();
    for v in [IdentityVersion::V0, IdentityVersion::V1] {
        let (addr, h) = serve_one(server(k.clone()));
        let psk = k.tls_psk(v, HOST, SUB).unwrap();
        let mut t = TlsClient::new(psk.clone())
            .unwrap()
            .connect(connect(addr))
            .unwrap();
        assert_eq!(t.cipher(), Some("TLS_AES_256_GCM_SHA384"));
        t.write_all(b"hello").unwrap();
        let mut buf = [0u8; 5];
        t.read_exact(&mut buf).unwrap();
        let (got, identity) = h.join().unwrap().unwrap();
        assert_eq!(
            (got.as_slice(), identity),
            (&b"hello"[..], Some(psk.identity))
        );
    }
    // The server holds a SHA-256 key for the host; the client offers a SHA-384 one.
    let (addr, h) = serve_one(server(key(1)));
    let c = TlsClient::new(k.tls_psk(IdentityVersion::V0, HOST, SUB).unwrap()).unwrap();
    assert!(c.connect(connect(addr)).is_err());
    assert!(h.join().unwrap().is_err());
}
