//! A small client for the control socket, used by `ulpddp ddp …`.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;

use serde_json::{Value, json};

/// A client-side failure.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The socket could not be reached or the connection broke.
    #[error("control socket {path}: {error}")]
    Io {
        /// Socket path.
        path: String,
        /// Cause.
        error: std::io::Error,
    },
    /// The server answered with a JSON-RPC error.
    #[error("{message} (JSON-RPC error {code})")]
    Rpc {
        /// Error code.
        code: i64,
        /// Message.
        message: String,
    },
    /// The server answered something that is not a JSON-RPC response.
    #[error("malformed reply: {0}")]
    Malformed(String),
}

/// A connection to a control socket.
pub struct Client {
    path: String,
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    next_id: u64,
    /// Notifications that arrived while a call waited for its reply.
    pending: std::collections::VecDeque<(String, Value)>,
}

impl Client {
    /// Waits at most `timeout` for each reply or notification (`None`: forever, the
    /// default); past it a call or [`Client::next_notification`] fails with an I/O error.
    /// A message may then have been cut in the middle: connect again rather than go on
    /// with this client.
    pub fn set_timeout(&self, timeout: Option<std::time::Duration>) -> Result<(), ClientError> {
        self.writer
            .set_read_timeout(timeout)
            .map_err(|e| self.io(e))
    }

    /// Connects to the control socket at `path`.
    pub fn connect(path: impl AsRef<Path>) -> Result<Self, ClientError> {
        let p = path.as_ref().display().to_string();
        let io = |source| ClientError::Io {
            path: p.clone(),
            error: source,
        };
        let s = UnixStream::connect(path.as_ref()).map_err(io)?;
        let w = s.try_clone().map_err(io)?;
        Ok(Self {
            path: p,
            reader: BufReader::new(s),
            writer: w,
            next_id: 1,
            pending: std::collections::VecDeque::new(),
        })
    }

    fn io(&self, source: std::io::Error) -> ClientError {
        ClientError::Io {
            path: self.path.clone(),
            error: source,
        }
    }

    fn read_msg(&mut self) -> Result<Value, ClientError> {
        let mut line = String::new();
        let n = self.reader.read_line(&mut line).map_err(|e| self.io(e))?;
        if n == 0 {
            return Err(self.io(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "closed",
            )));
        }
        serde_json::from_str(&line).map_err(|e| ClientError::Malformed(e.to_string()))
    }

    /// Calls `method` with `params` and returns its result.
    pub fn call(&mut self, method: &str, params: Value) -> Result<Value, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        let mut req = serde_json::to_vec(
            &json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}),
        )
        .map_err(|e| ClientError::Malformed(e.to_string()))?;
        req.push(b'\n');
        self.writer.write_all(&req).map_err(|e| self.io(e))?;
        loop {
            let msg = self.read_msg()?;
            if msg.get("id") != Some(&json!(id)) {
                // A notification that arrived in between (a subscriber is registered before
                // its reply), kept for next_notification; a subscriber that never asks for
                // them holds at most the server's few.
                if let Some(n) = as_notification(&msg)
                    && self.pending.len() < MAX_PENDING
                {
                    self.pending.push_back(n);
                }
                continue;
            }
            if let Some(e) = msg.get("error") {
                return Err(ClientError::Rpc {
                    code: e.get("code").and_then(Value::as_i64).unwrap_or(0),
                    message: e
                        .get("message")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string(),
                });
            }
            return msg
                .get("result")
                .cloned()
                .ok_or_else(|| ClientError::Malformed(msg.to_string()));
        }
    }

    /// Subscribes to the `mgmt` group; then [`Client::next_notification`] yields `caps-set-ntf`s.
    pub fn subscribe(&mut self) -> Result<(), ClientError> {
        self.call("subscribe", json!({"group": "mgmt"})).map(|_| ())
    }

    /// Blocks until the next notification and returns `(method, params)`.
    pub fn next_notification(&mut self) -> Result<(String, Value), ClientError> {
        if let Some(n) = self.pending.pop_front() {
            return Ok(n);
        }
        loop {
            let msg = self.read_msg()?;
            if let Some(n) = as_notification(&msg) {
                return Ok(n);
            }
        }
    }
}

/// Notifications kept while calls wait for their replies.
const MAX_PENDING: usize = 1024;

/// `(method, params)` of a notification (a message without `id`).
fn as_notification(msg: &Value) -> Option<(String, Value)> {
    if msg.get("id").is_some() {
        return None;
    }
    let m = msg.get("method").and_then(Value::as_str)?;
    Some((
        m.to_string(),
        msg.get("params").cloned().unwrap_or(Value::Null),
    ))
}
