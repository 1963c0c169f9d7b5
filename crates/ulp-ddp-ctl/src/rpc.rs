//! JSON-RPC 2.0 request handling, independent of the transport.

use serde_json::{Value, json};
use ulp_ddp::{Cap, CapSet, CapsSetRequest, DevCaps, StatId, caps_set};

use crate::Registry;

/// JSON-RPC error codes used here.
pub mod code {
    /// Invalid JSON was received.
    pub const PARSE_ERROR: i64 = -32700;
    /// The JSON sent is not a valid request object.
    pub const INVALID_REQUEST: i64 = -32600;
    /// The method does not exist.
    pub const METHOD_NOT_FOUND: i64 = -32601;
    /// Invalid method parameters (unknown capability, missing ifindex, …).
    pub const INVALID_PARAMS: i64 = -32602;
    /// No device with that ifindex (the kernel answers `ENODEV`).
    pub const NO_DEVICE: i64 = -32000;
    /// The device refused the operation (the kernel answers `EOPNOTSUPP` or the driver's error).
    pub const NOT_SUPPORTED: i64 = -32001;
}

/// A JSON-RPC error object.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message} (code {code})")]
pub struct RpcError {
    /// Error code.
    pub code: i64,
    /// What went wrong.
    pub message: String,
}

impl RpcError {
    fn new(code: i64, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
    fn params(message: impl Into<String>) -> Self {
        Self::new(code::INVALID_PARAMS, message)
    }
}

/// What the transport should do after a request.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Send this reply (absent for a notification without `id`).
    Reply(Option<Value>),
    /// Send this reply and add the connection to the `mgmt` group.
    Subscribe(Option<Value>),
    /// Send this reply and a `caps-set-ntf` with this body to every `mgmt` subscriber.
    ReplyAndNotify(Option<Value>, Value),
}

/// Renders a capability set as a list of names.
pub fn caps_names(c: CapSet) -> Value {
    Value::Array(c.names().map(|n| Value::String(n.to_string())).collect())
}

/// The body of a caps-get reply or caps-set-ntf notification.
pub fn caps_body(ifindex: u32, caps: DevCaps) -> Value {
    json!({ "ifindex": ifindex, "hw": caps_names(caps.hw), "active": caps_names(caps.active) })
}

/// Parses a capability set given as a bit value or as a list of names.
pub fn parse_caps(field: &str, v: &Value) -> Result<CapSet, RpcError> {
    match v {
        Value::Number(n) => {
            let bits = n.as_u64().ok_or_else(|| {
                RpcError::params(format!("{field}: expected a non-negative integer"))
            })?;
            CapSet::from_bits(bits).ok_or_else(|| {
                RpcError::params(format!(
                    "{field}: unknown capability bits {:#x} (known: {:#x})",
                    bits & !CapSet::ALL.bits(),
                    CapSet::ALL.bits()
                ))
            })
        }
        Value::Array(items) => {
            let mut set = CapSet::EMPTY;
            for it in items {
                let name = it.as_str().ok_or_else(|| {
                    RpcError::params(format!("{field}: expected capability names"))
                })?;
                let cap = Cap::from_name(name).ok_or_else(|| {
                    RpcError::params(format!(
                        "{field}: unknown capability {name:?} (known: {})",
                        CapSet::ALL
                    ))
                })?;
                set = set.with(cap, true);
            }
            Ok(set)
        }
        Value::String(s) => parse_caps(
            field,
            &Value::Array(
                s.split(',')
                    .filter(|p| !p.is_empty())
                    .map(|p| Value::String(p.trim().into()))
                    .collect(),
            ),
        ),
        _ => Err(RpcError::params(format!(
            "{field}: expected a number or a list of capability names"
        ))),
    }
}

fn ifindex(params: &Value) -> Result<u32, RpcError> {
    params
        .get("ifindex")
        .and_then(Value::as_u64)
        .and_then(|v| u32::try_from(v).ok())
        .ok_or_else(|| RpcError::params("missing or invalid \"ifindex\" (u32)"))
}

fn call(reg: &Registry, method: &str, params: &Value) -> Result<(Value, Option<Value>), RpcError> {
    let dev_of = |p: &Value| {
        let i = ifindex(p)?;
        reg.get(i).ok_or_else(|| {
            RpcError::new(
                code::NO_DEVICE,
                format!("no ULP DDP device with ifindex {i}"),
            )
        })
    };
    match method {
        "caps-get" => {
            let e = dev_of(params)?;
            let caps = e.dev.get_caps();
            Ok((caps_body(e.ifindex, caps), None))
        }
        "stats-get" => {
            let e = dev_of(params)?;
            let stats = e.dev.get_stats();
            let mut body = serde_json::Map::new();
            body.insert("ifindex".into(), json!(e.ifindex));
            for id in StatId::ALL {
                body.insert(id.name().into(), json!(stats.get(id)));
            }
            Ok((Value::Object(body), None))
        }
        "caps-set" => {
            let e = dev_of(params)?;
            let wanted = parse_caps("wanted", params.get("wanted").unwrap_or(&json!(0)))?;
            let mask_v = params
                .get("wanted-mask")
                .or_else(|| params.get("wanted_mask"))
                .ok_or_else(|| RpcError::params("missing \"wanted-mask\""))?;
            let mask = parse_caps("wanted-mask", mask_v)?;
            let dev = &e.dev;
            // One caps-set at a time: its read-modify-write of the active set and the
            // notification it decides on must not interleave with another.
            static CAPS_SET: std::sync::Mutex<()> = std::sync::Mutex::new(());
            let _one = CAPS_SET.lock().unwrap_or_else(|p| p.into_inner());
            let hw = dev.get_caps().hw;
            let missing = CapSet::from_bits_truncate(wanted.bits() & mask.bits() & !hw.bits());
            if !missing.is_empty() {
                return Err(RpcError::new(
                    code::NOT_SUPPORTED,
                    format!(
                        "device {} (ifindex {}) does not support {missing}",
                        e.name, e.ifindex
                    ),
                ));
            }
            let out = caps_set(
                &**dev,
                CapsSetRequest {
                    wanted,
                    wanted_mask: mask,
                },
            )
            .map_err(|err| RpcError::new(code::NOT_SUPPORTED, err.to_string()))?;
            let body = caps_body(e.ifindex, out.caps);
            Ok((body.clone(), out.notify.then_some(body)))
        }
        "dev-list" => {
            let list: Vec<Value> = reg
                .list()
                .iter()
                .map(|e| {
                    let caps = e.dev.get_caps();
                    let mut v = caps_body(e.ifindex, caps);
                    v["name"] = json!(e.name);
                    v
                })
                .collect();
            Ok((Value::Array(list), None))
        }
        _ => Err(RpcError::new(
            code::METHOD_NOT_FOUND,
            format!("unknown method {method:?}"),
        )),
    }
}

fn response(id: Option<Value>, r: Result<Value, RpcError>) -> Option<Value> {
    let id = id?;
    Some(match r {
        Ok(result) => json!({ "jsonrpc": "2.0", "id": id, "result": result }),
        Err(e) => {
            json!({ "jsonrpc": "2.0", "id": id, "error": { "code": e.code, "message": e.message } })
        }
    })
}

/// Handles one line of input.
pub fn handle_line(reg: &Registry, line: &str) -> Outcome {
    let req: Value = match serde_json::from_str(line) {
        Ok(v) => v,
        Err(e) => {
            return Outcome::Reply(response(
                Some(Value::Null),
                Err(RpcError::new(
                    code::PARSE_ERROR,
                    format!("parse error: {e}"),
                )),
            ));
        }
    };
    handle(reg, &req)
}

/// Handles one parsed request object.
pub fn handle(reg: &Registry, req: &Value) -> Outcome {
    let id = req.get("id").cloned();
    let (Some("2.0"), Some(method)) = (
        req.get("jsonrpc").and_then(Value::as_str),
        req.get("method").and_then(Value::as_str),
    ) else {
        return Outcome::Reply(response(
            Some(id.unwrap_or(Value::Null)),
            Err(RpcError::new(
                code::INVALID_REQUEST,
                "expected {\"jsonrpc\": \"2.0\", \"method\": …}",
            )),
        ));
    };
    let params = req.get("params").cloned().unwrap_or(json!({}));
    if method == "subscribe" {
        return match params.get("group").and_then(Value::as_str) {
            Some("mgmt") | None => Outcome::Subscribe(response(id, Ok(json!(true)))),
            Some(g) => Outcome::Reply(response(
                id,
                Err(RpcError::params(format!(
                    "unknown group {g:?} (known: mgmt)"
                ))),
            )),
        };
    }
    match call(reg, method, &params) {
        Ok((v, Some(ntf))) => Outcome::ReplyAndNotify(response(id, Ok(v)), ntf),
        Ok((v, None)) => Outcome::Reply(response(id, Ok(v))),
        Err(e) => Outcome::Reply(response(id, Err(e))),
    }
}

/// The `caps-set-ntf` notification message.
pub fn notification(body: Value) -> Value {
    json!({ "jsonrpc": "2.0", "method": "caps-set-ntf", "params": body })
}
