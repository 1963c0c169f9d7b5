//! The target's control socket: JSON-RPC 2.0 over a Unix domain socket, one JSON object per
//! line (the convention of `ulp-ddp-ctl` and of SPDK's `rpc.py`). Subsystems, namespaces and
//! hosts are shown and taken in the shape of the configuration file (`nvmetcli save`).
//!
//! | method | params | result |
//! |---|---|---|
//! | `subsystem-list` | `{}` | `[{"nqn", "allowed_hosts", "attr": {"allow_any_host", "serial", "model"}, "namespaces": [...]}]` |
//! | `namespace-list` | `{"nqn"}` | `[{"nsid", "enable", "device": {"path", "uuid", "nguid"}}]` |
//! | `namespace-add` | `{"nqn", "namespace": {"nsid", "device": {"path", ...}}}` | `{"nsid"}` |
//! | `namespace-remove` | `{"nqn", "nsid"}` | `true` |
//! | `host-list` | `{"nqn"}` | `{"allow_any_host", "allowed_hosts"}` |
//! | `host-add` / `host-remove` | `{"nqn", "hostnqn"}` | `{"allow_any_host", "allowed_hosts"}` |
//! | `connection-list` | `{}` | `[{"conn", "peer", "local", "subnqn", "hostnqn", "cntlid", "qid", "commands", "errors", "bytes_read", "bytes_written"}]` |
//!
//! Adding a namespace sends hosts a Namespace Attribute Changed event; removing a host stops
//! new Connects from it (controllers already connected stay, as with nvmet).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use nvme_tcp_host::options::format_uuid;
use nvme_tcp_target::namespace::Backing;
use nvme_tcp_target::{NamespaceConfig, TargetConfig, TargetHandle};
use serde_json::{Value, json};

/// Clients served at once; more wait in the listen backlog.
const MAX_CLIENTS: usize = 8;
/// Longest request line.
const MAX_LINE: u64 = 1 << 20;

/// What the control socket knows beyond the running target: the configured form of each
/// namespace (its device path) and each subsystem's access list.
#[derive(Debug)]
struct Catalog {
    subsystems: BTreeMap<String, SubsystemEntry>,
}

#[derive(Debug, Clone)]
struct SubsystemEntry {
    allow_any_host: bool,
    allowed_hosts: Vec<String>,
    serial: Option<String>,
    model: Option<String>,
    namespaces: BTreeMap<u32, NamespaceConfig>,
}

/// Shared by the listener and its clients.
pub struct Control {
    target: Arc<TargetHandle>,
    catalog: Mutex<Catalog>,
}

impl Control {
    /// Control of `target`, started from `cfg`.
    pub fn new(target: Arc<TargetHandle>, cfg: &TargetConfig) -> Self {
        let subsystems = cfg
            .subsystems
            .iter()
            .map(|s| {
                // Namespaces without an NSID got the lowest free one, in order.
                let mut namespaces = BTreeMap::new();
                let mut next = 1u32;
                for ns in &s.namespaces {
                    let nsid = ns.nsid.unwrap_or_else(|| {
                        while namespaces.contains_key(&next) {
                            next += 1;
                        }
                        next
                    });
                    namespaces.insert(nsid, ns.clone());
                }
                let e = SubsystemEntry {
                    allow_any_host: s.allow_any_host,
                    allowed_hosts: s.allowed_hosts.clone(),
                    serial: s.serial.clone(),
                    model: s.model.clone(),
                    namespaces,
                };
                (s.nqn.clone(), e)
            })
            .collect();
        Self {
            target,
            catalog: Mutex::new(Catalog { subsystems }),
        }
    }

    fn catalog(&self) -> std::sync::MutexGuard<'_, Catalog> {
        self.catalog.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn namespace_json(&self, nqn: &str, nsid: u32, cfg: Option<&NamespaceConfig>) -> Value {
        let ns = self
            .target
            .state()
            .subsystem(nqn)
            .and_then(|s| s.namespace(nsid));
        let path = match cfg.map(|c| &c.backing) {
            Some(Backing::Ram { size }) => format!("ram:{size}"),
            Some(Backing::ThinRam { size }) => format!("ram:{size},thin"),
            Some(Backing::Null { size }) => format!("null:{size}"),
            Some(Backing::File {
                path,
                direct: false,
            }) => path.display().to_string(),
            Some(Backing::File { path, direct: true }) => {
                format!("file:{},direct", path.display())
            }
            None => String::new(),
        };
        let mut device = json!({ "path": path });
        if let Some(ns) = &ns {
            device["uuid"] = json!(format_uuid(&ns.ids().uuid));
            device["nguid"] = json!(format_uuid(&ns.ids().nguid));
            device["lba_size"] = json!(ns.lba_size().bytes());
        }
        json!({"nsid": nsid, "enable": u8::from(ns.is_some()), "device": device})
    }

    fn subsystem_json(&self, nqn: &str, e: &SubsystemEntry) -> Value {
        let namespaces: Vec<Value> = e
            .namespaces
            .iter()
            .map(|(nsid, c)| self.namespace_json(nqn, *nsid, Some(c)))
            .collect();
        json!({
            "nqn": nqn,
            "allowed_hosts": e.allowed_hosts,
            "attr": {
                "allow_any_host": if e.allow_any_host { "1" } else { "0" },
                "serial": e.serial,
                "model": e.model,
            },
            "namespaces": namespaces,
        })
    }

    /// Handles one request object; `Err((code, message))` is a JSON-RPC error.
    pub fn call(&self, method: &str, params: &Value) -> Result<Value, (i64, String)> {
        let nqn = || -> Result<String, (i64, String)> {
            params
                .get("nqn")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or((INVALID_PARAMS, "params.nqn (a string) is required".into()))
        };
        let entry = |nqn: &str| -> Result<SubsystemEntry, (i64, String)> {
            self.catalog()
                .subsystems
                .get(nqn)
                .cloned()
                .ok_or((NOT_FOUND, format!("no subsystem {nqn}")))
        };
        match method {
            "subsystem-list" => {
                let subs: Vec<(String, SubsystemEntry)> = self
                    .catalog()
                    .subsystems
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                Ok(Value::Array(
                    subs.iter()
                        .map(|(n, e)| self.subsystem_json(n, e))
                        .collect(),
                ))
            }
            "namespace-list" => {
                let n = nqn()?;
                let e = entry(&n)?;
                Ok(Value::Array(
                    e.namespaces
                        .iter()
                        .map(|(nsid, c)| self.namespace_json(&n, *nsid, Some(c)))
                        .collect(),
                ))
            }
            "namespace-add" => {
                let n = nqn()?;
                entry(&n)?;
                let spec = params.get("namespace").ok_or((
                    INVALID_PARAMS,
                    "params.namespace (an nvmetcli namespace object) is required".into(),
                ))?;
                let cfg = NamespaceConfig::from_nvmetcli_json(spec)
                    .map_err(|e| (INVALID_PARAMS, e.to_string()))?;
                let nsid = self
                    .target
                    .add_namespace(&n, &cfg)
                    .map_err(|e| (FAILED, e.to_string()))?;
                if let Some(e) = self.catalog().subsystems.get_mut(&n) {
                    e.namespaces.insert(nsid, cfg);
                }
                tracing::info!(subnqn = n, nsid, "namespace added");
                Ok(json!({ "nsid": nsid }))
            }
            "namespace-remove" => {
                let n = nqn()?;
                entry(&n)?;
                let nsid = params
                    .get("nsid")
                    .and_then(Value::as_u64)
                    .and_then(|v| u32::try_from(v).ok())
                    .ok_or((INVALID_PARAMS, "params.nsid (a number) is required".into()))?;
                self.target
                    .remove_namespace(&n, nsid)
                    .map_err(|e| (FAILED, e.to_string()))?;
                if let Some(e) = self.catalog().subsystems.get_mut(&n) {
                    e.namespaces.remove(&nsid);
                }
                tracing::info!(subnqn = n, nsid, "namespace removed");
                Ok(json!(true))
            }
            "host-list" => {
                let e = entry(&nqn()?)?;
                Ok(json!({"allow_any_host": e.allow_any_host, "allowed_hosts": e.allowed_hosts}))
            }
            "host-add" | "host-remove" => {
                let n = nqn()?;
                let host = params
                    .get("hostnqn")
                    .and_then(Value::as_str)
                    .filter(|h| h.starts_with("nqn.") && h.len() <= 223)
                    .ok_or((
                        INVALID_PARAMS,
                        "params.hostnqn (an NQN of at most 223 bytes) is required".into(),
                    ))?
                    .to_string();
                let sub = self
                    .target
                    .state()
                    .subsystem(&n)
                    .ok_or((NOT_FOUND, format!("no subsystem {n}")))?;
                let mut cat = self.catalog();
                let e = cat
                    .subsystems
                    .get_mut(&n)
                    .ok_or((NOT_FOUND, format!("no subsystem {n}")))?;
                if method == "host-add" {
                    if !e.allowed_hosts.contains(&host) {
                        e.allowed_hosts.push(host.clone());
                    }
                } else {
                    e.allowed_hosts.retain(|h| *h != host);
                }
                sub.set_access(e.allow_any_host, e.allowed_hosts.clone());
                tracing::info!(subnqn = n, hostnqn = host, method, "access changed");
                Ok(json!({"allow_any_host": e.allow_any_host, "allowed_hosts": e.allowed_hosts}))
            }
            "connection-list" => {
                let s = self.target.state().metrics().snapshot();
                Ok(Value::Array(
                    s.connections
                        .iter()
                        .map(|c| {
                            let id = c.identity.as_ref();
                            json!({
                                "conn": c.id,
                                "peer": c.peer.map(|p| p.to_string()),
                                "local": c.local.map(|p| p.to_string()),
                                "subnqn": id.map(|i| &i.subnqn),
                                "hostnqn": id.map(|i| &i.hostnqn),
                                "cntlid": id.map(|i| i.cntlid),
                                "qid": id.map(|i| i.qid),
                                "commands": c.commands,
                                "errors": c.errors,
                                "bytes_read": c.bytes_read,
                                "bytes_written": c.bytes_written,
                            })
                        })
                        .collect(),
                ))
            }
            other => Err((METHOD_NOT_FOUND, format!("unknown method {other:?}"))),
        }
    }

    /// Answers one request line.
    pub fn handle_line(&self, line: &str) -> Value {
        let req: Value = match serde_json::from_str(line) {
            Ok(v) => v,
            Err(e) => return error(Value::Null, PARSE_ERROR, &format!("parse error: {e}")),
        };
        let id = req.get("id").cloned().unwrap_or(Value::Null);
        let Some(method) = req.get("method").and_then(Value::as_str) else {
            return error(id, INVALID_REQUEST, "request without a method");
        };
        let params = req.get("params").cloned().unwrap_or(json!({}));
        match self.call(method, &params) {
            Ok(result) => json!({"jsonrpc": "2.0", "id": id, "result": result}),
            Err((code, msg)) => error(id, code, &msg),
        }
    }
}

const PARSE_ERROR: i64 = -32700;
const INVALID_REQUEST: i64 = -32600;
const METHOD_NOT_FOUND: i64 = -32601;
const INVALID_PARAMS: i64 = -32602;
/// Server error: no such subsystem.
const NOT_FOUND: i64 = -32000;
/// Server error: the change failed (the message says why).
const FAILED: i64 = -32001;

fn error(id: Value, code: i64, message: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
}

/// The listening control socket. Dropping it stops it and removes the socket file.
pub struct ControlServer {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ControlServer {
    /// Serves `control` on the Unix socket `path` (an existing socket file is replaced).
    pub fn bind(path: &Path, control: Arc<Control>) -> std::io::Result<Self> {
        if path.exists() {
            std::fs::remove_file(path)?;
        }
        let listener = UnixListener::bind(path)?;
        let stop = Arc::new(AtomicBool::new(false));
        let active = Arc::new(AtomicUsize::new(0));
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name("target-ctl".into())
            .spawn(move || {
                for s in listener.incoming() {
                    if stop2.load(Ordering::Acquire) {
                        break;
                    }
                    let Ok(s) = s else { continue };
                    if active.load(Ordering::Acquire) >= MAX_CLIENTS {
                        let _ = writeln!(
                            &s,
                            "{}",
                            error(Value::Null, FAILED, "too many control clients")
                        );
                        continue;
                    }
                    active.fetch_add(1, Ordering::AcqRel);
                    let (control, mine) = (control.clone(), active.clone());
                    let spawned = std::thread::Builder::new()
                        .name("target-ctl-client".into())
                        .spawn(move || {
                            serve(s, &control);
                            mine.fetch_sub(1, Ordering::AcqRel);
                        });
                    if spawned.is_err() {
                        active.fetch_sub(1, Ordering::AcqRel);
                    }
                }
            })?;
        Ok(Self {
            path: path.to_path_buf(),
            stop,
            thread: Some(thread),
        })
    }
}

fn serve(s: UnixStream, control: &Control) {
    let Ok(mut w) = s.try_clone() else { return };
    let mut r = BufReader::new(s);
    loop {
        let mut line = String::new();
        match (&mut r).take(MAX_LINE).read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) if !line.ends_with('\n') && line.len() as u64 >= MAX_LINE => {
                let _ = writeln!(
                    w,
                    "{}",
                    error(Value::Null, INVALID_REQUEST, "line too long")
                );
                return;
            }
            Ok(_) => {}
        }
        if line.trim().is_empty() {
            continue;
        }
        let resp = control.handle_line(line.trim());
        if writeln!(w, "{resp}").is_err() {
            return;
        }
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        let _ = UnixStream::connect(&self.path);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}
