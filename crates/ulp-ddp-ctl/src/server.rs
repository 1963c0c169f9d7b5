//! The Unix-socket JSON-RPC server: one thread accepts, one thread per client connection.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use serde_json::Value;

use crate::Registry;
use crate::rpc::{Outcome, handle_line, notification};

/// Longest request line accepted; a longer one closes the connection (nothing buffers
/// without bound).
pub const MAX_REQUEST_LEN: usize = 64 * 1024;
/// Most concurrent control connections.
pub const MAX_CLIENTS: usize = 64;

/// A running control server. Dropping it stops accepting and removes the socket file.
pub struct ControlServer {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
    subscribers: Arc<Mutex<Vec<UnixStream>>>,
}

impl std::fmt::Debug for ControlServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlServer")
            .field("path", &self.path)
            .finish()
    }
}

fn send(stream: &mut UnixStream, v: &Value) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(v).map_err(std::io::Error::other)?;
    line.push(b'\n');
    stream.write_all(&line)
}

impl ControlServer {
    /// Binds `path` (replacing a stale socket file) and serves `registry` until dropped.
    pub fn bind(path: impl AsRef<Path>, registry: Registry) -> std::io::Result<Self> {
        let path = path.as_ref().to_path_buf();
        if path.exists() {
            // Refuse to steal the socket of a live process.
            if UnixStream::connect(&path).is_ok() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::AddrInUse,
                    format!("{} is in use by another process", path.display()),
                ));
            }
            std::fs::remove_file(&path)?;
        }
        let listener = UnixListener::bind(&path)?;
        let stop = Arc::new(AtomicBool::new(false));
        let subscribers: Arc<Mutex<Vec<UnixStream>>> = Arc::default();
        let clients = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (stop2, subs2) = (stop.clone(), subscribers.clone());
        let accept = std::thread::Builder::new()
            .name("ddp-ctl".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    if stop2.load(Ordering::Relaxed) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    if clients.load(Ordering::Relaxed) >= MAX_CLIENTS {
                        tracing::warn!("control socket: too many clients, refusing one");
                        continue;
                    }
                    clients.fetch_add(1, Ordering::Relaxed);
                    let (reg, subs, clients) = (registry.clone(), subs2.clone(), clients.clone());
                    let _ = std::thread::Builder::new()
                        .name("ddp-ctl-conn".into())
                        .spawn(move || {
                            serve_client(conn, &reg, &subs);
                            clients.fetch_sub(1, Ordering::Relaxed);
                        });
                }
            })?;
        Ok(Self {
            path,
            stop,
            accept: Some(accept),
            subscribers,
        })
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Sends a `caps-set-ntf` to every subscriber (for capability changes made by the process
    /// itself rather than through this socket).
    pub fn notify(&self, body: Value) {
        broadcast(&self.subscribers, &notification(body));
    }
}

fn broadcast(subs: &Mutex<Vec<UnixStream>>, msg: &Value) {
    let mut s = subs.lock().unwrap_or_else(|e| e.into_inner());
    s.retain_mut(|c| send(c, msg).is_ok());
}

fn serve_client(conn: UnixStream, reg: &Registry, subs: &Mutex<Vec<UnixStream>>) {
    let Ok(mut out) = conn.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(conn);
    let mut line = Vec::new();
    loop {
        line.clear();
        // Read one line, but never more than MAX_REQUEST_LEN bytes of it.
        let mut limited = (&mut reader).take(MAX_REQUEST_LEN as u64 + 1);
        match limited.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        if line.len() > MAX_REQUEST_LEN {
            let _ = send(
                &mut out,
                &serde_json::json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32600, "message": "request too long"}}),
            );
            return;
        }
        let text = String::from_utf8_lossy(&line);
        if text.trim().is_empty() {
            continue;
        }
        match handle_line(reg, text.trim()) {
            Outcome::Reply(r) => {
                if let Some(r) = r
                    && send(&mut out, &r).is_err()
                {
                    return;
                }
            }
            Outcome::Subscribe(r) => {
                // Registered before the reply: once the client has it, no change made after
                // can go unnotified.
                if let Ok(c) = out.try_clone() {
                    subs.lock().unwrap_or_else(|e| e.into_inner()).push(c);
                }
                if let Some(r) = r
                    && send(&mut out, &r).is_err()
                {
                    return;
                }
            }
            Outcome::ReplyAndNotify(r, body) => {
                if let Some(r) = r
                    && send(&mut out, &r).is_err()
                {
                    return;
                }
                broadcast(subs, &notification(body));
            }
        }
    }
}

use std::io::Read as _;

impl Drop for ControlServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop.
        let _ = UnixStream::connect(&self.path);
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}
