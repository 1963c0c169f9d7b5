//! Connection options, named and defaulted after nvme-cli's `connect` options.

use std::time::Duration;

/// The well-known NQN of a discovery subsystem.
pub const DISCOVERY_NQN: &str = "nqn.2014-08.org.nvmexpress.discovery";
/// IANA port of NVMe-oF I/O controllers over TCP.
pub const DEFAULT_IO_PORT: u16 = 4420;
/// IANA port of discovery controllers over TCP.
pub const DEFAULT_DISCOVERY_PORT: u16 = 8009;
/// Submission queue depth of the admin queue (entries, including the one always kept free).
pub const ADMIN_QUEUE_SIZE: u16 = 32;

/// How command identifiers are assigned on a queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CidMode {
    /// CID = slot index + a per-slot generation counter in the high bits, so a completion for a
    /// command that already completed (a stale or duplicated CapsuleResp) is recognised.
    #[default]
    Tagged,
    /// CID = slot index, `0..queue_size-1`. Needed by offload devices that cannot track the full
    /// 16-bit CID range (ULP DDP `full_ccid_range = false`).
    Linear,
}

/// Everything needed to connect to an NVMe/TCP controller.
///
/// Defaults follow nvme-cli and the Linux host where they have one; timeouts that the kernel
/// expresses in seconds are [`Duration`]s here.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// Target address (`traddr`), an IP address or a host name.
    pub addr: String,
    /// Target port (`trsvcid`).
    pub port: u16,
    /// Subsystem NQN (`nqn`).
    pub subnqn: String,
    /// Host NQN (`hostnqn`).
    pub hostnqn: String,
    /// Host identifier (`hostid`), 16 bytes.
    pub hostid: [u8; 16],
    /// Number of I/O queues (`nr_io_queues`); each is its own TCP connection. Clamped to what the
    /// controller grants through Set Features Number of Queues.
    pub nr_io_queues: u16,
    /// I/O queue size (`queue_size`), in entries; at most `queue_size - 1` commands are in flight.
    pub queue_size: u16,
    /// Request header digests (`hdr_digest`).
    pub hdgst: bool,
    /// Request data digests (`data_digest`).
    pub ddgst: bool,
    /// Keep Alive Timeout (`keep_alive_tmo`); `None` disables Keep Alive. A Keep Alive command is
    /// sent every KATO/2.
    pub kato: Option<Duration>,
    /// Ask the controller to disable SQ flow control (`disable_sqflow`), which also allows it to
    /// complete reads with the C2HData SUCCESS flag instead of a CapsuleResp.
    pub disable_sqflow: bool,
    /// Delay between reconnect attempts (`reconnect_delay`).
    pub reconnect_delay: Duration,
    /// Give up reconnecting after this long (`ctrl_loss_tmo`); `None` retries forever,
    /// `Some(ZERO)` never reconnects.
    pub ctrl_loss_tmo: Option<Duration>,
    /// Fail I/O waiting for a reconnect after this long (`fast_io_fail_tmo`); `None` keeps it
    /// queued until `ctrl_loss_tmo`.
    pub fast_io_fail_tmo: Option<Duration>,
    /// Per-command timeout, measured from the command's submission and not restarted when a
    /// reconnect re-sends it: after it an Abort is sent; after a second one the queue is
    /// reset.
    pub command_timeout: Duration,
    /// How often a command is re-sent after the connection it was in flight on failed (the
    /// Linux host's `nvme_core.max_retries`, default 5), counted across reconnects. A failure
    /// that names no command (a lost connection, a C2HTermReq, a PDU for an unknown command)
    /// counts against every command in flight on that connection; past the limit the command
    /// fails with [`crate::IoError::GaveUp`], whose source is the last failure.
    pub max_retries: u32,
    /// How CIDs are assigned.
    pub cid_mode: CidMode,
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// Socket send/receive buffer size to request (SO_SNDBUF/SO_RCVBUF); `None` keeps the
    /// system default.
    pub socket_buffer: Option<usize>,
    /// Busy polling of I/O queues: how long [`crate::IoQueue::poll`] keeps trying the socket without
    /// sleeping before it waits in `poll(2)` (Linux's `net.core.busy_poll`, done in user
    /// space since a loopback or TUN socket has no NAPI context to poll). A queue under load
    /// then never sleeps and never waits for a wake-up, at the price of a busy core, as SPDK's
    /// pollers do; a queue sleeps once nothing arrived for the budget. Give each polling
    /// thread its own core: pollers sharing one take turns by time slice. `ZERO` (the
    /// default) sleeps as soon as nothing is ready.
    pub busy_poll: Duration,
    /// Size of the per-queue receive pipe that PDU headers (and data that arrives together with
    /// them) are read into; large C2HData payloads bypass it and are read straight into the
    /// caller's buffer. 0 reads headers exactly, never reading data into the pipe.
    pub rx_pipe_size: usize,
    /// The ULP DDP receive-offload device of the network path to the controller, if any. Its
    /// capabilities and limits are read when the controller connects; each I/O queue is
    /// offloaded (`sk_add`) after its Connect. See [`crate::offload`].
    pub ddp_device: Option<DdpDeviceRef>,
    /// Where the marks of received bytes come from when the offload device sits on the
    /// network path in front of the kernel's TCP (a NIC): the socket driver asks it for each
    /// connection's marks and skips placed payload without copying it. See
    /// [`crate::marks`]. Without it, an offloaded queue on a kernel socket gets no marks.
    pub mark_source: Option<crate::marks::MarkSourceRef>,
    /// The host's DH-HMAC-CHAP key (nvme-cli `--dhchap-secret`), used when a controller
    /// requires authentication (see [`crate::auth`]).
    pub dhchap_secret: Option<nvme_tcp_auth::Secret>,
    /// The controller's DH-HMAC-CHAP key (nvme-cli `--dhchap-ctrl-secret`): with it the
    /// host authenticates the controller too.
    pub dhchap_ctrl_secret: Option<nvme_tcp_auth::Secret>,
    /// TLS 1.3 on every queue (nvme-cli `--tls` with `--tls-key`): the configured PSK and the
    /// PSK identity version to offer. `None`: clear text.
    pub tls: Option<TlsOptions>,
}

/// The TLS settings of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsOptions {
    /// The configured PSK (interchange format `NVMeTLSkey-1:HH:...:`).
    pub key: nvme_tcp_tls::ConfiguredPsk,
    /// The PSK identity format offered (version 0 by default, what Linux 6.12 targets look
    /// up).
    pub identity: nvme_tcp_tls::IdentityVersion,
}

/// A shared handle of a ULP DDP device (any implementation of the interface).
#[derive(Clone)]
pub struct DdpDeviceRef(pub std::sync::Arc<dyn ulp_ddp::UlpDdpDevice>);

impl std::fmt::Debug for DdpDeviceRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("DdpDeviceRef")
            .field(&self.0.get_caps())
            .finish()
    }
}

impl ConnectOptions {
    /// Options for `subnqn` at `addr:port` with defaults everywhere else and a host identity
    /// derived from a fresh random UUID.
    pub fn new(addr: impl Into<String>, port: u16, subnqn: impl Into<String>) -> Self {
        let hostid = random_uuid();
        Self {
            addr: addr.into(),
            port,
            subnqn: subnqn.into(),
            hostnqn: hostnqn_from_uuid(&hostid),
            hostid,
            nr_io_queues: 1,
            queue_size: 128,
            hdgst: false,
            ddgst: false,
            kato: Some(Duration::from_secs(5)),
            disable_sqflow: false,
            reconnect_delay: Duration::from_secs(10),
            ctrl_loss_tmo: Some(Duration::from_secs(600)),
            fast_io_fail_tmo: None,
            command_timeout: Duration::from_secs(30),
            max_retries: 5,
            cid_mode: CidMode::Tagged,
            connect_timeout: Duration::from_secs(10),
            socket_buffer: Some(4 << 20),
            busy_poll: Duration::ZERO,
            rx_pipe_size: 16 << 10,
            ddp_device: None,
            mark_source: None,
            dhchap_secret: None,
            dhchap_ctrl_secret: None,
            tls: None,
        }
    }

    /// Options for the discovery controller at `addr:port` (no I/O queues, no Keep Alive).
    pub fn discovery(addr: impl Into<String>, port: u16) -> Self {
        let mut o = Self::new(addr, port, DISCOVERY_NQN);
        o.nr_io_queues = 0;
        o.kato = None;
        o
    }

    /// The `host:port` string to connect to (IPv6 literals get brackets).
    pub fn socket_addr_string(&self) -> String {
        if self.addr.contains(':') && !self.addr.starts_with('[') {
            format!("[{}]:{}", self.addr, self.port)
        } else {
            format!("{}:{}", self.addr, self.port)
        }
    }
}

/// The canonical host NQN for a host UUID: `nqn.2014-08.org.nvmexpress:uuid:<uuid>`.
pub fn hostnqn_from_uuid(uuid: &[u8; 16]) -> String {
    format!("nqn.2014-08.org.nvmexpress:uuid:{}", format_uuid(uuid))
}

/// Formats 16 bytes as a hyphenated UUID.
pub fn format_uuid(u: &[u8; 16]) -> String {
    let h: String = u.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Parses a hyphenated (or plain hex) UUID.
pub fn parse_uuid(s: &str) -> Option<[u8; 16]> {
    let hex: Vec<u8> = s.bytes().filter(|&b| b != b'-').collect();
    if hex.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, pair) in hex.chunks(2).enumerate() {
        let s = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(s, 16).ok()?;
    }
    Some(out)
}

/// A random (version 4) UUID from the OS random source, falling back to time and process id.
pub fn random_uuid() -> [u8; 16] {
    let mut u = [0u8; 16];
    let ok = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut u))
        .is_ok();
    if !ok {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        u.copy_from_slice(&(t ^ ((std::process::id() as u128) << 64)).to_le_bytes());
    }
    u[6] = (u[6] & 0x0F) | 0x40;
    u[8] = (u[8] & 0x3F) | 0x80;
    u
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_round_trips_through_text() {
        let u = random_uuid();
        assert_eq!(parse_uuid(&format_uuid(&u)), Some(u));
        assert_eq!(u[6] >> 4, 4, "version 4");
    }

    #[test]
    fn ipv6_addresses_get_brackets() {
        let o = ConnectOptions::new("::1", 4420, "nqn.x");
        assert_eq!(o.socket_addr_string(), "[::1]:4420");
        let o = ConnectOptions::new("127.0.0.1", 4420, "nqn.x");
        assert_eq!(o.socket_addr_string(), "127.0.0.1:4420");
    }
}
