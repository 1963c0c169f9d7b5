//! nvme-cli's host commands over the userspace NVMe/TCP host (`nvme-tcp-host`): `discover`,
//! `connect`, `list`, `id-ctrl`, `id-ns`, `read`, `write`, with nvme-cli's flags and meanings
//! and, with `-o json`, nvme-cli's JSON keys and shapes (see [`super::nvme_json`]).
//!
//! Connection options carry nvme-cli's names (`-t/--transport`, `-a/--traddr`,
//! `-s/--trsvcid`, `-n/--nqn`, `-q/--hostnqn`, `-I/--hostid`, `-i/--nr-io-queues`,
//! `-Q/--queue-size`, `-g/--hdr-digest`, `-G/--data-digest`, `-k/--keep-alive-tmo`,
//! `-c/--reconnect-delay`, `-l/--ctrl-loss-tmo`, `-F/--fast_io_fail_tmo`,
//! `-d/--disable-sqflow`, `-D/--duplicate-connect`, `--dhchap-secret`,
//! `--dhchap-ctrl-secret`), plus `--max-retries` (the Linux host's `nvme_core.max_retries`,
//! which nvme-cli does not set per connection). In `read` and `write` the short flags are
//! nvme-cli's I/O ones (`-n` namespace id, `-s` start block, `-c` block count, `-z` data size,
//! `-d` data file) and the subsystem is given as `--nqn`/`--trsvcid`. The host identity comes
//! from `-q`/`-I`, else `/etc/nvme/hostnqn` and `/etc/nvme/hostid` (see [`super::hostid`]).
//! Every command opens its own association and closes it when done; `connect --interactive`
//! keeps one open until `disconnect` or end of input.

use std::io::{BufRead, Read, Write};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};
use nvme_tcp_host::discovery::{self, DiscoveryEntry};
use nvme_tcp_host::options::{DEFAULT_DISCOVERY_PORT, DEFAULT_IO_PORT};
use nvme_tcp_host::{CidMode, ConnectOptions, Controller, NamespaceInfo};
use nvme_tcp_wire::nvme::{IdentifyCommand, IdentifyController, IdentifyNamespace};

use super::nvme_json::{self, ListRow};
use super::{hostid, session};

use crate::cmd::nic::{CtlArgs, NicArgs, NicSession};

/// Output format, as nvme-cli's `--output-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum OutputFormat {
    /// Human-readable text.
    #[default]
    Normal,
    /// JSON, with nvme-cli's keys and shapes.
    Json,
}

/// Where the controller is and how to talk to it. The short flags are nvme-cli's; those that
/// nvme-cli gives another meaning in `read`/`write` (`-s`, `-n`, `-c`, `-l`, `-d`, `-D`, `-F`)
/// are added per command with `mut_arg` (connect and discover have them all).
#[derive(Args, Debug, Clone)]
pub struct ConnArgs {
    /// Transport type (only `tcp`).
    #[arg(short = 't', long, default_value = "tcp")]
    pub transport: String,
    /// Transport address of the controller.
    #[arg(short = 'a', long, default_value = "127.0.0.1")]
    pub traddr: String,
    /// Transport service id (TCP port) [default: 4420, or 8009 for `discover` and `list`
    /// without --nqn].
    #[arg(long)]
    pub trsvcid: Option<u16>,
    /// Host NQN [default: /etc/nvme/hostnqn, else derived from the host id].
    #[arg(short = 'q', long)]
    pub hostnqn: Option<String>,
    /// Host identifier, a UUID [default: /etc/nvme/hostid, else the UUID of a UUID host NQN,
    /// else random].
    #[arg(short = 'I', long)]
    pub hostid: Option<String>,
    /// Number of I/O queues.
    #[arg(short = 'i', long, default_value_t = 1)]
    pub nr_io_queues: u16,
    /// I/O queue size.
    #[arg(short = 'Q', long, default_value_t = 128)]
    pub queue_size: u16,
    /// Enable header digests.
    #[arg(short = 'g', long)]
    pub hdr_digest: bool,
    /// Enable data digests.
    #[arg(short = 'G', long)]
    pub data_digest: bool,
    /// Keep Alive Timeout in seconds (0 disables Keep Alive).
    #[arg(short = 'k', long, default_value_t = 5)]
    pub keep_alive_tmo: u32,
    /// Seconds between reconnect attempts.
    #[arg(long, default_value_t = 10)]
    pub reconnect_delay: u32,
    /// Seconds before giving up reconnecting (-1: forever).
    #[arg(long, default_value_t = 600, allow_hyphen_values = true)]
    pub ctrl_loss_tmo: i64,
    /// Seconds after which I/O waiting for a reconnect fails (-1: off).
    #[arg(long = "fast_io_fail_tmo", alias = "fast-io-fail-tmo", default_value_t = -1,
          allow_hyphen_values = true)]
    pub fast_io_fail_tmo: i64,
    /// Times a command is re-sent after the connection it was in flight on failed, counted
    /// across reconnects (the Linux host's nvme_core.max_retries); past it the command fails
    /// with the last failure as the cause.
    #[arg(long, alias = "nr-retries", default_value_t = 5)]
    pub max_retries: u32,
    /// Ask the controller to disable SQ flow control.
    #[arg(long)]
    pub disable_sqflow: bool,
    /// Allow a second connection to the same subsystem port (always the case: every ulpddp
    /// command opens its own association; accepted for nvme-cli compatibility).
    #[arg(long)]
    pub duplicate_connect: bool,
    /// Use linear command ids 0..queue_size-1.
    #[arg(long)]
    pub linear_cids: bool,
    /// Per-command timeout in seconds; also the time connecting (TCP, ICResp, Connect) may
    /// take.
    #[arg(long, default_value_t = 30)]
    pub timeout: u32,
    /// The host's DH-HMAC-CHAP key (`DHHC-1:XX:...:`), used when the controller requires
    /// in-band authentication.
    #[arg(long, value_name = "DHHC-1:XX:KEY:")]
    pub dhchap_secret: Option<nvme_tcp_auth::Secret>,
    /// The controller's DH-HMAC-CHAP key: the host also authenticates the controller
    /// (bidirectional authentication).
    #[arg(long, value_name = "DHHC-1:XX:KEY:", requires = "dhchap_secret")]
    pub dhchap_ctrl_secret: Option<nvme_tcp_auth::Secret>,
    /// Run every queue over TLS 1.3 (NVMe/TCP TLS, TP 8011) with the PSK of --tls-key or
    /// --tls-key-file.
    #[arg(long)]
    pub tls: bool,
    /// The configured TLS PSK in the interchange format (`NVMeTLSkey-1:01:...:`, as nvme-cli
    /// gen-tls-key prints it); implies --tls.
    #[arg(long = "tls-key", alias = "tls_key", value_name = "KEY")]
    pub tls_key: Option<String>,
    /// Read the configured TLS PSK from FILE (its first line); implies --tls.
    #[arg(long, value_name = "FILE", conflicts_with = "tls_key")]
    pub tls_key_file: Option<std::path::PathBuf>,
    /// PSK identity version offered: 0 (`NVMe0R01 <hostnqn> <subnqn>`) or 1 (with the PSK
    /// digest).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=1))]
    pub tls_identity_version: u8,
    /// Derive the TLS PSK as nvme-cli up to 2.13 (libnvme 1.13) does, for targets whose
    /// keyring holds keys it inserted.
    #[arg(long)]
    pub tls_compat: bool,
}

/// The TLS settings of `--tls`, `--tls-key` and `--tls-key-file`, if any.
fn tls_options(a: &ConnArgs) -> anyhow::Result<Option<nvme_tcp_host::TlsOptions>> {
    let text = match (&a.tls_key, &a.tls_key_file) {
        (Some(k), _) => k.clone(),
        (None, Some(path)) => std::fs::read_to_string(path)
            .with_context(|| format!("--tls-key-file {}", path.display()))?
            .lines()
            .next()
            .unwrap_or_default()
            .to_string(),
        (None, None) if a.tls => bail!("--tls needs the PSK: --tls-key KEY or --tls-key-file FILE"),
        (None, None) => return Ok(None),
    };
    let mut key = nvme_tcp_tls::ConfiguredPsk::parse(&text).context("--tls-key")?;
    if a.tls_compat {
        key = key.with_derivation(nvme_tcp_tls::Derivation::Compat);
    }
    Ok(Some(nvme_tcp_host::TlsOptions {
        key,
        identity: if a.tls_identity_version == 1 {
            nvme_tcp_tls::IdentityVersion::V1
        } else {
            nvme_tcp_tls::IdentityVersion::V0
        },
    }))
}

impl ConnArgs {
    fn options(&self, nqn: &str, default_port: u16) -> anyhow::Result<ConnectOptions> {
        if self.transport != "tcp" {
            bail!(
                "only the tcp transport is supported, not {:?}",
                self.transport
            );
        }
        let mut o = ConnectOptions::new(
            self.traddr.clone(),
            self.trsvcid.unwrap_or(default_port),
            nqn,
        );
        let files = if self.hostnqn.is_some() && self.hostid.is_some() {
            hostid::Files::default()
        } else {
            hostid::Files::read(std::path::Path::new(hostid::NVME_CONF_DIR))?
        };
        (o.hostnqn, o.hostid) =
            hostid::resolve(self.hostnqn.as_deref(), self.hostid.as_deref(), &files)?;
        o.nr_io_queues = self.nr_io_queues;
        o.queue_size = self.queue_size;
        o.hdgst = self.hdr_digest;
        o.ddgst = self.data_digest;
        o.kato = (self.keep_alive_tmo > 0).then(|| Duration::from_secs(self.keep_alive_tmo.into()));
        o.reconnect_delay = Duration::from_secs(self.reconnect_delay.into());
        o.ctrl_loss_tmo = u64::try_from(self.ctrl_loss_tmo)
            .ok()
            .map(Duration::from_secs);
        o.fast_io_fail_tmo = u64::try_from(self.fast_io_fail_tmo)
            .ok()
            .map(Duration::from_secs);
        o.disable_sqflow = self.disable_sqflow;
        o.dhchap_secret = self.dhchap_secret.clone();
        o.dhchap_ctrl_secret = self.dhchap_ctrl_secret.clone();
        o.cid_mode = if self.linear_cids {
            CidMode::Linear
        } else {
            CidMode::Tagged
        };
        o.command_timeout = Duration::from_secs(self.timeout.max(1).into());
        o.max_retries = self.max_retries;
        o.tls = tls_options(self)?;
        o.connect_timeout = o.command_timeout;
        Ok(o)
    }
}

/// The subsystem to connect to plus connection options.
#[derive(Args, Debug, Clone)]
pub struct Target {
    /// Subsystem NQN.
    #[arg(long)]
    pub nqn: String,
    #[command(flatten)]
    pub conn: ConnArgs,
    #[command(flatten)]
    pub nic: NicArgs,
    #[command(flatten)]
    pub ctl: CtlArgs,
}

impl Target {
    /// Connects, through the software NIC if asked; the NIC session (if any) must outlive
    /// the controller.
    pub(crate) fn connect(&self) -> anyhow::Result<(Option<NicSession>, Controller)> {
        let mut o = self.conn.options(&self.nqn, DEFAULT_IO_PORT)?;
        let addr = o.socket_addr_string();
        let nic = self.nic.start(&mut o, &self.ctl)?;
        let ctrl = Controller::connect(o)
            .with_context(|| format!("connecting to {} at {addr}", self.nqn))?;
        Ok((nic, ctrl))
    }
}

/// Data transfer arguments of `read` and `write`, with nvme-cli's flags: `-n` namespace-id,
/// `-s` start-block, `-c` block-count (0's based), `-z` data-size, `-d` data.
#[derive(Args, Debug, Clone)]
pub struct IoArgs {
    /// Namespace id.
    #[arg(short = 'n', long = "namespace-id", default_value_t = 1)]
    pub nsid: u32,
    /// First logical block.
    #[arg(short = 's', long, default_value_t = 0)]
    pub start_block: u64,
    /// Number of blocks, 0's based (as nvme-cli). Either this or --data-size.
    #[arg(short = 'c', long)]
    pub block_count: Option<u64>,
    /// Bytes to transfer (a multiple of the block size); for `write` defaults to the size of
    /// the input file.
    #[arg(short = 'z', long)]
    pub data_size: Option<u64>,
    /// File to read data from (`write`) or to write data to (`read`); `-` or absent means
    /// stdin/stdout.
    #[arg(short = 'd', long)]
    pub data: Option<String>,
}

/// Host commands (flattened into the top-level command).
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Read a discovery controller's log page and list its entries (nvme discover).
    #[command(
        mut_arg("trsvcid", |a| a.short('s')),
        mut_arg("reconnect_delay", |a| a.short('c')),
        mut_arg("ctrl_loss_tmo", |a| a.short('l')),
        mut_arg("fast_io_fail_tmo", |a| a.short('F')),
        mut_arg("disable_sqflow", |a| a.short('d')),
        mut_arg("duplicate_connect", |a| a.short('D')),
    )]
    Discover {
        #[command(flatten)]
        conn: ConnArgs,
        /// Discovery subsystem NQN.
        #[arg(short = 'n', long, default_value = nvme_tcp_host::options::DISCOVERY_NQN)]
        nqn: String,
        /// Output format.
        #[arg(short = 'o', long, value_enum, default_value_t)]
        output_format: OutputFormat,
    },
    /// Connect to a subsystem, print its namespaces (as `list`); with --interactive keep the
    /// controller open and run commands read from stdin (`id-ctrl`, `id-ns N`, `list`,
    /// `read NSID SLBA NLB` with NLB 0's based, `flush NSID`, `help`, `disconnect`).
    #[command(
        mut_arg("nqn", |a| a.short('n')),
        mut_arg("trsvcid", |a| a.short('s')),
        mut_arg("reconnect_delay", |a| a.short('c')),
        mut_arg("ctrl_loss_tmo", |a| a.short('l')),
        mut_arg("fast_io_fail_tmo", |a| a.short('F')),
        mut_arg("disable_sqflow", |a| a.short('d')),
        mut_arg("duplicate_connect", |a| a.short('D')),
    )]
    Connect {
        #[command(flatten)]
        target: Target,
        /// Keep the controller open and read commands from stdin.
        #[arg(long)]
        interactive: bool,
        /// Connect to the first NVM subsystem listed by the discovery controller at
        /// --traddr:8009 instead of --nqn (pass `--nqn discover`).
        #[arg(long)]
        via_discovery: bool,
        /// Output format.
        #[arg(short = 'o', long, value_enum, default_value_t)]
        output_format: OutputFormat,
    },
    /// List the namespaces of a subsystem, or without --nqn of every NVM subsystem the
    /// discovery log at --traddr lists (nvme list).
    #[command(mut_arg("trsvcid", |a| a.short('s')))]
    List {
        /// Subsystem NQN [default: all subsystems of the discovery log].
        #[arg(short = 'n', long)]
        nqn: Option<String>,
        #[command(flatten)]
        conn: ConnArgs,
        /// Output format.
        #[arg(short = 'o', long, value_enum, default_value_t)]
        output_format: OutputFormat,
    },
    /// Identify Controller (nvme id-ctrl).
    #[command(mut_arg("nqn", |a| a.short('n')), mut_arg("trsvcid", |a| a.short('s')))]
    IdCtrl {
        #[command(flatten)]
        target: Target,
        /// Output format.
        #[arg(short = 'o', long, value_enum, default_value_t)]
        output_format: OutputFormat,
    },
    /// Identify Namespace (nvme id-ns).
    #[command(mut_arg("nqn", |a| a.short('n')), mut_arg("trsvcid", |a| a.short('s')))]
    IdNs {
        #[command(flatten)]
        target: Target,
        /// Namespace id.
        #[arg(long = "namespace-id", default_value_t = 1)]
        nsid: u32,
        /// Output format.
        #[arg(short = 'o', long, value_enum, default_value_t)]
        output_format: OutputFormat,
    },
    /// Read logical blocks to a file or stdout (nvme read: -n -s -c -z -d; the subsystem is
    /// --nqn at --traddr/--trsvcid).
    Read {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        io: IoArgs,
    },
    /// Write logical blocks from a file or stdin (nvme write: -n -s -c -z -d; the subsystem is
    /// --nqn at --traddr/--trsvcid).
    Write {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        io: IoArgs,
    },
    /// Disconnect the open `connect --interactive` sessions of a subsystem (nvme disconnect):
    /// each shuts its controller down and exits.
    Disconnect {
        /// Subsystem NQN.
        #[arg(short = 'n', long)]
        nqn: String,
    },
    /// Disconnect every open `connect --interactive` session (nvme disconnect-all).
    DisconnectAll,
}

/// Runs a host command.
pub fn run(c: Command) -> anyhow::Result<()> {
    match c {
        Command::Discover {
            conn,
            nqn,
            output_format,
        } => {
            let mut o = conn.options(&nqn, DEFAULT_DISCOVERY_PORT)?;
            o.nr_io_queues = 0;
            let addr = o.socket_addr_string();
            let log = discovery::discover(o).with_context(|| format!("discovery at {addr}"))?;
            print_discovery(&log.entries, log.genctr, output_format);
            Ok(())
        }
        Command::Connect {
            mut target,
            interactive,
            via_discovery,
            output_format,
        } => {
            if via_discovery {
                let mut o = target.conn.options(
                    nvme_tcp_host::options::DISCOVERY_NQN,
                    DEFAULT_DISCOVERY_PORT,
                )?;
                o.nr_io_queues = 0;
                let addr = o.socket_addr_string();
                let log = discovery::discover(o).with_context(|| format!("discovery at {addr}"))?;
                let e = log
                    .entries
                    .iter()
                    .find(|e| e.subtype == discovery::SUBTYPE_NVME)
                    .context("the discovery log lists no NVM subsystem")?;
                target.nqn = e.subnqn.clone();
                target.conn.traddr = e.traddr.clone();
                target.conn.trsvcid = Some(e.trsvcid.parse().context("TRSVCID of the entry")?);
            }
            let (_nic, ctrl) = target.connect()?;
            let rows = list_rows(&ctrl)?;
            // An interactive session is recorded before anything is printed, so whoever
            // sees the output can already `disconnect` it.
            let mut _reg = None;
            if interactive {
                let o = ctrl.options();
                let rec = session::SessionRecord {
                    pid: std::process::id(),
                    subnqn: o.subnqn.clone(),
                    traddr: o.addr.clone(),
                    trsvcid: o.port,
                    hostnqn: o.hostnqn.clone(),
                    cntlid: ctrl.info()?.cntlid,
                };
                _reg = Some(session::Registration::create(
                    &session::runtime_dir(),
                    &rec,
                )?);
            }
            print_list(&rows, output_format);
            if interactive {
                std::io::stdout().flush()?;
                repl(&ctrl, output_format)?;
            }
            ctrl.shutdown();
            Ok(())
        }
        Command::List {
            nqn: Some(nqn),
            conn,
            output_format,
        } => {
            let o = conn.options(&nqn, DEFAULT_IO_PORT)?;
            let addr = o.socket_addr_string();
            let ctrl =
                Controller::connect(o).with_context(|| format!("connecting to {nqn} at {addr}"))?;
            let rows = list_rows(&ctrl)?;
            ctrl.shutdown();
            print_list(&rows, output_format);
            Ok(())
        }
        Command::List {
            nqn: None,
            conn,
            output_format,
        } => {
            let mut o = conn.options(
                nvme_tcp_host::options::DISCOVERY_NQN,
                DEFAULT_DISCOVERY_PORT,
            )?;
            o.nr_io_queues = 0;
            let addr = o.socket_addr_string();
            let log =
                discovery::discover(o.clone()).with_context(|| format!("discovery at {addr}"))?;
            let mut rows = Vec::new();
            let mut failed = 0;
            for e in log
                .entries
                .iter()
                .filter(|e| e.subtype == discovery::SUBTYPE_NVME)
            {
                let r = conn
                    .options(&e.subnqn, DEFAULT_IO_PORT)
                    .and_then(|base| Ok(e.connect_options(&base)?))
                    .and_then(|opts| Ok(Controller::connect(opts)?))
                    .and_then(|ctrl| {
                        let r = list_rows(&ctrl);
                        ctrl.shutdown();
                        r
                    });
                match r {
                    Ok(mut r) => rows.append(&mut r),
                    Err(err) => {
                        failed += 1;
                        eprintln!("{} at {}:{}: {err:#}", e.subnqn, e.traddr, e.trsvcid);
                    }
                }
            }
            print_list(&rows, output_format);
            if failed > 0 {
                bail!("{failed} subsystem(s) of the discovery log could not be listed");
            }
            Ok(())
        }
        Command::IdCtrl {
            target,
            output_format,
        } => {
            let (_nic, ctrl) = target.connect()?;
            let raw = ctrl.identify_controller()?;
            print_id_ctrl(&raw, output_format)?;
            ctrl.shutdown();
            Ok(())
        }
        Command::IdNs {
            target,
            nsid,
            output_format,
        } => {
            let (_nic, ctrl) = target.connect()?;
            let raw = identify_namespace(&ctrl, nsid)?;
            print_id_ns(&raw, output_format)?;
            ctrl.shutdown();
            Ok(())
        }
        Command::Read { target, io } => {
            let (_nic, ctrl) = target.connect()?;
            let ns = ctrl.namespace(io.nsid)?;
            let len = transfer_len(&io, &ns, None)?;
            Controller::check_range(&ns, io.start_block, len)?;
            let mut buf = alloc(len)?;
            ctrl.read_at(&ns, io.start_block, &mut buf)?;
            match io.data.as_deref() {
                None | Some("-") => std::io::stdout().lock().write_all(&buf)?,
                Some(p) => std::fs::write(p, &buf).with_context(|| format!("writing {p}"))?,
            }
            ctrl.shutdown();
            eprintln!("read: Success");
            Ok(())
        }
        Command::Disconnect { nqn } => {
            let n = session::disconnect(&session::runtime_dir(), Some(&nqn))?;
            println!("NQN:{nqn} disconnected {n} controller(s)");
            Ok(())
        }
        Command::DisconnectAll => {
            session::disconnect(&session::runtime_dir(), None)?;
            Ok(())
        }
        Command::Write { target, io } => {
            let (mut src, src_len): (Box<dyn Read>, Option<u64>) = match io.data.as_deref() {
                None | Some("-") => (Box::new(std::io::stdin().lock()), None),
                Some(p) => {
                    let f = std::fs::File::open(p).with_context(|| format!("opening {p}"))?;
                    let m = f.metadata().with_context(|| format!("reading {p}"))?;
                    (Box::new(f), m.is_file().then_some(m.len()))
                }
            };
            let (_nic, ctrl) = target.connect()?;
            let ns = ctrl.namespace(io.nsid)?;
            let sized = io.block_count.is_some() || io.data_size.is_some();
            let data = if sized || src_len.is_some() {
                // Read exactly what will be sent, never more.
                let len = transfer_len(&io, &ns, src_len)?;
                Controller::check_range(&ns, io.start_block, len)?;
                let mut data = alloc(len)?;
                let got = read_full(&mut src, &mut data).context("reading the input")?;
                if got < len {
                    bail!("the input has {got} bytes, the transfer needs {len}");
                }
                data
            } else {
                // All of a stream: at most what fits from --start-block to the end of the
                // namespace, refused if there is more.
                let room = ns.nsze.saturating_sub(io.start_block) * u64::from(ns.lba_size);
                let mut data = Vec::new();
                (&mut src)
                    .take(room.saturating_add(1))
                    .read_to_end(&mut data)
                    .context("reading the input")?;
                if data.len() as u64 > room {
                    bail!(
                        "the input is larger than the {room} bytes from block {} to the end of \
                         namespace {}: give --block-count or --data-size",
                        io.start_block,
                        io.nsid
                    );
                }
                transfer_len(&io, &ns, Some(data.len() as u64))?;
                data
            };
            ctrl.write_at(&ns, io.start_block, &data)?;
            ctrl.shutdown();
            eprintln!("write: Success");
            Ok(())
        }
    }
}

/// Identify Namespace (CNS 00h) data of `nsid`, raw.
fn identify_namespace(ctrl: &Controller, nsid: u32) -> anyhow::Result<Vec<u8>> {
    let raw = ctrl.identify_raw(IdentifyCommand::namespace(nsid))?;
    let ns = IdentifyNamespace::parse(&raw)
        .map_err(|e| anyhow::anyhow!("Identify Namespace {nsid}: {e}"))?;
    if ns.nsze.get() == 0 {
        return Err(nvme_tcp_host::HostError::NamespaceNotFound(nsid).into());
    }
    Ok(raw)
}

/// Bytes to transfer: `--block-count` (0's based), else `--data-size`, else the input's size
/// (`write`), else one block.
fn transfer_len(io: &IoArgs, ns: &NamespaceInfo, input: Option<u64>) -> anyhow::Result<usize> {
    let lba = ns.lba_size as u64;
    let len = match (io.block_count, io.data_size, input) {
        (Some(c), _, _) => c
            .checked_add(1)
            .and_then(|n| n.checked_mul(lba))
            .context("--block-count too large")?,
        (None, Some(z), _) => z,
        (None, None, Some(n)) => n,
        (None, None, None) => lba,
    };
    if len == 0 || len % lba != 0 {
        bail!("transfer of {len} bytes is not a positive multiple of the {lba}-byte block size");
    }
    usize::try_from(len).context("transfer too large")
}

/// A zeroed buffer of `len` bytes, or a clear error if the memory is not there.
fn alloc(len: usize) -> anyhow::Result<Vec<u8>> {
    let mut v = Vec::new();
    v.try_reserve_exact(len).map_err(|_| {
        anyhow::anyhow!(
            "cannot allocate {len} bytes for the transfer: transfer a smaller range at a time \
             (--start-block, --block-count)"
        )
    })?;
    v.resize(len, 0);
    Ok(v)
}

/// Fills `buf` from `src` until it is full or the input ends; returns the bytes read.
fn read_full(src: &mut dyn Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match src.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

fn print_discovery(entries: &[DiscoveryEntry], genctr: u64, f: OutputFormat) {
    match f {
        OutputFormat::Json => println!("{}", pretty(&nvme_json::discovery(genctr, entries))),
        OutputFormat::Normal => {
            println!(
                "\nDiscovery Log Number of Records {}, Generation counter {genctr}",
                entries.len()
            );
            for (i, e) in entries.iter().enumerate() {
                println!("=====Discovery Log Entry {i}======");
                println!("trtype:  {}", e.trtype_name());
                println!("adrfam:  {}", e.adrfam_name());
                println!("subtype: {}", e.subtype_name());
                println!("treq:    {}", nvme_json::treq_str(e.treq));
                println!("portid:  {}", e.portid);
                println!("trsvcid: {}", e.trsvcid);
                println!("subnqn:  {}", e.subnqn);
                println!("traddr:  {}", e.traddr);
                println!("eflags:  {}", nvme_json::eflags_str(e.eflags));
                println!("sectype: {}", nvme_json::sectype_str(e.sectype));
            }
        }
    }
}

fn pretty(v: &serde_json::Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

fn text_field(b: &[u8]) -> String {
    String::from_utf8_lossy(b)
        .trim_end_matches(['\0', ' '])
        .to_string()
}

/// The namespaces of a controller as `nvme list` rows.
fn list_rows(ctrl: &Controller) -> anyhow::Result<Vec<ListRow>> {
    let info = ctrl.info()?;
    let id = info
        .identify_controller()
        .context("Identify Controller data")?;
    let o = ctrl.options();
    let mut rows = Vec::new();
    for nsid in ctrl.active_namespaces()? {
        match ctrl.namespace(nsid) {
            Ok(ns) => rows.push(ListRow {
                device_path: format!(
                    "nvme-tcp://{}/{}/{}",
                    o.socket_addr_string(),
                    o.subnqn,
                    nsid
                ),
                nsid,
                firmware: text_field(&id.fr),
                serial: text_field(&id.sn),
                model: text_field(&id.mn),
                nuse: ns.nuse,
                nsze: ns.nsze,
                lba_size: ns.lba_size,
            }),
            Err(e) => tracing::warn!(nsid, error = %e, "namespace skipped"),
        }
    }
    Ok(rows)
}

fn print_list(rows: &[ListRow], f: OutputFormat) {
    match f {
        OutputFormat::Json => println!("{}", pretty(&nvme_json::list(rows))),
        OutputFormat::Normal => {
            println!(
                "{:<48} {:<20} {:<40} {:<9} {:<26} {:<16} {:<8}",
                "Node", "SN", "Model", "Namespace", "Usage", "Format", "FW Rev"
            );
            println!(
                "{:-<48} {:-<20} {:-<40} {:-<9} {:-<26} {:-<16} {:-<8}",
                "", "", "", "", "", "", ""
            );
            for r in rows {
                let lba = u64::from(r.lba_size);
                println!(
                    "{:<48} {:<20} {:<40} {:<9} {:<26} {:<16} {:<8}",
                    r.device_path,
                    r.serial,
                    r.model,
                    r.nsid,
                    format!(
                        "{} / {}",
                        human(r.nuse.saturating_mul(lba)),
                        human(r.nsze.saturating_mul(lba))
                    ),
                    format!("{lba} B + 0 B"),
                    r.firmware
                );
            }
        }
    }
}

fn human(b: u64) -> String {
    const U: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1000.0 && i < U.len() - 1 {
        v /= 1000.0;
        i += 1;
    }
    format!("{v:.2} {}", U[i])
}

fn print_id_ctrl(raw: &[u8], f: OutputFormat) -> anyhow::Result<()> {
    let id =
        IdentifyController::parse(raw).map_err(|e| anyhow::anyhow!("Identify Controller: {e}"))?;
    let v = nvme_json::id_ctrl(id);
    match f {
        OutputFormat::Json => println!("{}", pretty(&v)),
        OutputFormat::Normal => {
            print!("{}", nvme_json::text("NVME Identify Controller:", &v, "ps"))
        }
    }
    Ok(())
}

fn print_id_ns(raw: &[u8], f: OutputFormat) -> anyhow::Result<()> {
    let ns =
        IdentifyNamespace::parse(raw).map_err(|e| anyhow::anyhow!("Identify Namespace: {e}"))?;
    let v = nvme_json::id_ns(ns);
    match f {
        OutputFormat::Json => println!("{}", pretty(&v)),
        OutputFormat::Normal => print!(
            "{}",
            nvme_json::text("NVME Identify Namespace:", &v, "lbaf")
        ),
    }
    Ok(())
}

/// What the interactive loop waits for.
enum Input {
    Line(String),
    /// End of input, or SIGTERM/SIGINT (`ulpddp disconnect`).
    End,
}

/// Lines from stdin and termination signals, on one channel.
fn inputs() -> anyhow::Result<std::sync::mpsc::Receiver<Input>> {
    let (tx, rx) = std::sync::mpsc::channel();
    let lines = tx.clone();
    std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || {
            for line in std::io::stdin().lock().lines() {
                let Ok(line) = line else { break };
                if lines.send(Input::Line(line)).is_err() {
                    return;
                }
            }
            let _ = lines.send(Input::End);
        })?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // Registered before returning, so a SIGTERM right after the session is recorded is seen.
    let mut term = rt.block_on(async {
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
    })?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            rt.block_on(async {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            });
            let _ = tx.send(Input::End);
        })?;
    Ok(rx)
}

/// The commands of `connect --interactive`.
const REPL_HELP: &str = "\
commands:
  id-ctrl               Identify Controller
  id-ns NSID            Identify Namespace NSID
  list                  the namespaces, as `ulpddp list`
  read NSID SLBA NLB    read NLB+1 blocks (0's based, as --block-count) from block SLBA;
                        prints the byte count and their CRC32C
  flush NSID            Flush namespace NSID
  help                  this list
  disconnect            shut the controller down and exit (also: quit, exit, end of input)
";

/// `connect --interactive`: one command per stdin line on the open controller, until
/// `disconnect`, end of input or a termination signal.
fn repl(ctrl: &Controller, f: OutputFormat) -> anyhow::Result<()> {
    let rx = inputs()?;
    while let Ok(Input::Line(line)) = rx.recv() {
        let w: Vec<&str> = line.split_whitespace().collect();
        let num = |i: usize| -> anyhow::Result<u64> {
            w.get(i)
                .with_context(|| format!("argument {i} missing"))?
                .parse::<u64>()
                .with_context(|| format!("argument {i} is not a number"))
        };
        let r: anyhow::Result<()> = match w.first().copied() {
            None => continue,
            Some("quit" | "exit" | "disconnect") => break,
            Some("id-ctrl") => ctrl
                .identify_controller()
                .map_err(Into::into)
                .and_then(|raw| print_id_ctrl(&raw, f)),
            Some("id-ns") => num(1).and_then(|n| {
                let nsid = u32::try_from(n)
                    .ok()
                    .with_context(|| format!("NSID {n} out of range"))?;
                print_id_ns(&identify_namespace(ctrl, nsid)?, f)
            }),
            Some("list") => list_rows(ctrl).map(|rows| print_list(&rows, f)),
            Some("flush") => num(1).and_then(|n| {
                let nsid = u32::try_from(n)
                    .ok()
                    .with_context(|| format!("NSID {n} out of range"))?;
                Ok(ctrl.flush(nsid)?)
            }),
            Some("read") => (|| {
                let n = num(1)?;
                let nsid = u32::try_from(n)
                    .ok()
                    .with_context(|| format!("NSID {n} out of range"))?;
                let slba = num(2)?;
                // NLB is 0's based, as --block-count: 0 reads one block.
                let blocks = num(3)?.checked_add(1).context("block count too large")?;
                let ns = ctrl.namespace(nsid)?;
                let len = blocks
                    .checked_mul(u64::from(ns.lba_size))
                    .and_then(|l| usize::try_from(l).ok())
                    .context("block count too large")?;
                Controller::check_range(&ns, slba, len)?;
                let mut buf = alloc(len)?;
                ctrl.read_at(&ns, slba, &mut buf)?;
                let digest = nvme_tcp_wire::digest::crc32c(&buf);
                println!("read {} bytes, crc32c {digest:#010x}", buf.len());
                Ok(())
            })(),
            Some("help" | "?") => {
                print!("{REPL_HELP}");
                Ok(())
            }
            Some(other) => Err(anyhow::anyhow!(
                "unknown command {other:?} (`help` lists the commands)"
            )),
        };
        if let Err(e) = r {
            eprintln!("error: {e:#}");
        }
        std::io::stdout().flush()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        c: Command,
    }

    const Q: &str = "nqn.2014-08.org.nvmexpress:uuid:7c5c6692-108f-4efd-859a-f6864576a57c";
    const I: &str = "7c5c6692-108f-4efd-859a-f6864576a57c";

    fn parse(argv: &str) -> Command {
        let args = std::iter::once("ulpddp").chain(argv.split_whitespace());
        match Cli::try_parse_from(args) {
            Ok(c) => c.c,
            Err(e) => panic!("{argv}: {e}"),
        }
    }

    #[test]
    fn connect_takes_nvme_cli_short_flags_with_their_meanings() {
        let argv = format!(
            "connect -t tcp -a 10.0.0.2 -s 4421 -n nqn.2024-01.io.t:s -q {Q} -I {I} -i 4 -Q 64 \
             -k 7 -c 3 -l 60 -F 20 -g -G -d -D -o json"
        );
        let Command::Connect {
            target,
            output_format,
            ..
        } = parse(&argv)
        else {
            panic!("not connect")
        };
        assert_eq!(output_format, OutputFormat::Json);
        assert!(target.conn.duplicate_connect);
        let o = target.conn.options(&target.nqn, DEFAULT_IO_PORT).unwrap();
        assert_eq!((o.addr.as_str(), o.port), ("10.0.0.2", 4421));
        assert_eq!(o.subnqn, "nqn.2024-01.io.t:s");
        assert_eq!(o.hostnqn, Q);
        assert_eq!(nvme_tcp_host::options::format_uuid(&o.hostid), I);
        assert_eq!((o.nr_io_queues, o.queue_size), (4, 64));
        assert_eq!(o.kato, Some(Duration::from_secs(7)));
        assert_eq!(o.reconnect_delay, Duration::from_secs(3));
        assert_eq!(o.ctrl_loss_tmo, Some(Duration::from_secs(60)));
        assert_eq!(o.fast_io_fail_tmo, Some(Duration::from_secs(20)));
        assert!(o.hdgst && o.ddgst && o.disable_sqflow);
        // The long forms, nvme-cli's spelling of fast_io_fail_tmo, and -1 for "forever".
        let argv = format!(
            "connect --transport tcp --traddr ::1 --trsvcid 4420 --nqn n --hostnqn {Q} \
             --hostid {I} --nr-io-queues 2 --queue-size 32 --keep-alive-tmo 0 \
             --reconnect-delay 1 --ctrl-loss-tmo -1 --fast_io_fail_tmo 5 --hdr-digest \
             --data-digest --disable-sqflow --duplicate-connect --output-format normal"
        );
        let Command::Connect { target, .. } = parse(&argv) else {
            panic!()
        };
        let o = target.conn.options(&target.nqn, DEFAULT_IO_PORT).unwrap();
        assert_eq!((o.kato, o.ctrl_loss_tmo), (None, None));
        assert_eq!(o.fast_io_fail_tmo, Some(Duration::from_secs(5)));
        assert_eq!(o.max_retries, 5, "the Linux host's default");
        let Command::Connect { target, .. } =
            parse(&format!("connect -n n -q {Q} -I {I} --max-retries 2"))
        else {
            panic!()
        };
        let o = target.conn.options(&target.nqn, DEFAULT_IO_PORT).unwrap();
        assert_eq!(o.max_retries, 2);
        let Command::Connect { target, .. } =
            parse(&format!("connect -n n -q {Q} -I {I} --nr-retries 0"))
        else {
            panic!()
        };
        let o = target.conn.options(&target.nqn, DEFAULT_IO_PORT).unwrap();
        assert_eq!(o.max_retries, 0);
        assert!(parse(&format!("connect -n n -q {Q} -I {I} --fast-io-fail-tmo 5")).is_connect());
    }

    #[test]
    fn discover_takes_the_connect_flags_and_defaults_to_8009() {
        let Command::Discover {
            conn,
            nqn,
            output_format,
        } = parse(&format!(
            "discover -t tcp -a 127.0.0.1 -q {Q} -I {I} -c 1 -l 5 -g -o json"
        ))
        else {
            panic!()
        };
        assert_eq!(nqn, nvme_tcp_host::options::DISCOVERY_NQN);
        assert_eq!(output_format, OutputFormat::Json);
        let o = conn.options(&nqn, DEFAULT_DISCOVERY_PORT).unwrap();
        assert_eq!(o.port, 8009);
        assert!(o.hdgst);
        assert_eq!(o.ctrl_loss_tmo, Some(Duration::from_secs(5)));
    }

    #[test]
    fn read_and_write_take_nvme_cli_io_flags() {
        let argv = format!(
            "read --nqn nqn.x:y --trsvcid 4421 -q {Q} -I {I} -n 2 -s 100 -c 7 -z 4096 -d out.bin -g -G"
        );
        let Command::Read { target, io } = parse(&argv) else {
            panic!()
        };
        assert_eq!(
            (io.nsid, io.start_block, io.block_count, io.data_size),
            (2, 100, Some(7), Some(4096))
        );
        assert_eq!(io.data.as_deref(), Some("out.bin"));
        let o = target.conn.options(&target.nqn, DEFAULT_IO_PORT).unwrap();
        assert_eq!((o.port, o.subnqn.as_str()), (4421, "nqn.x:y"));
        assert!(o.hdgst && o.ddgst);
        let Command::Write { io, .. } = parse(&format!(
            "write --nqn n -q {Q} -I {I} --namespace-id 3 --start-block 9 --block-count 0 \
             --data-size 512 --data in.bin"
        )) else {
            panic!()
        };
        assert_eq!((io.nsid, io.start_block, io.block_count), (3, 9, Some(0)));
        let ns = NamespaceInfo {
            nsid: 3,
            nsze: 100,
            ncap: 100,
            nuse: 100,
            lba_size: 512,
        };
        assert_eq!(
            transfer_len(&io, &ns, Some(4096)).unwrap(),
            512,
            "-c wins over -z"
        );
    }

    #[test]
    fn list_needs_no_nqn_and_id_commands_take_n_and_s() {
        let Command::List { nqn, conn, .. } = parse("list -a 127.0.0.1 -o json") else {
            panic!()
        };
        assert!(nqn.is_none());
        assert_eq!(conn.trsvcid, None);
        let Command::IdCtrl { target, .. } = parse("id-ctrl -n nqn.x:y -s 4421 -o json") else {
            panic!()
        };
        assert_eq!(
            (target.nqn.as_str(), target.conn.trsvcid),
            ("nqn.x:y", Some(4421))
        );
        assert!(matches!(
            parse("id-ns -n nqn.x:y --namespace-id 2 -o json"),
            Command::IdNs { nsid: 2, .. }
        ));
    }

    impl Command {
        fn is_connect(&self) -> bool {
            matches!(self, Command::Connect { .. })
        }
    }
}
