//! nvme-cli-like host commands over the userspace NVMe/TCP host (`nvme-tcp-host`):
//! `discover`, `connect`, `list`, `id-ctrl`, `id-ns`, `read`, `write`.
//!
//! Connection options carry nvme-cli's names (`--traddr/-a`, `--trsvcid/-s`, `--nqn/-n`,
//! `--hostnqn/-q`, `--hostid/-I`, `--nr-io-queues/-i`, `--queue-size/-Q`, `--hdr-digest/-g`,
//! `--data-digest/-G`, `--keep-alive-tmo/-k`, `--reconnect-delay`, `--ctrl-loss-tmo`,
//! `--fast-io-fail-tmo`, `--disable-sqflow`); every command connects, does its work and
//! disconnects, since there is no kernel device to leave behind.

use std::io::{BufRead, Read, Write};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};
use nvme_tcp_host::discovery::{self, DiscoveryEntry};
use nvme_tcp_host::options::{
    DEFAULT_DISCOVERY_PORT, DEFAULT_IO_PORT, hostnqn_from_uuid, parse_uuid,
};
use nvme_tcp_host::{CidMode, ConnectOptions, Controller, NamespaceInfo};
use nvme_tcp_wire::nvme::IdentifyController;
use serde_json::{Value, json};

use crate::cmd::nic::{CtlArgs, NicArgs, NicSession};

/// Output format, as nvme-cli's `--output-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum OutputFormat {
    /// Human-readable text.
    #[default]
    Normal,
    /// JSON.
    Json,
}

/// Where the controller is and how to talk to it.
#[derive(Args, Debug, Clone)]
pub struct ConnArgs {
    /// Transport type (only `tcp`).
    #[arg(short = 't', long, default_value = "tcp")]
    pub transport: String,
    /// Transport address of the controller.
    #[arg(short = 'a', long, default_value = "127.0.0.1")]
    pub traddr: String,
    /// Transport service id (TCP port); 4420, or 8009 for `discover`.
    #[arg(short = 's', long)]
    pub trsvcid: Option<u16>,
    /// Host NQN (default: derived from the host id).
    #[arg(short = 'q', long)]
    pub hostnqn: Option<String>,
    /// Host identifier (UUID; default: random).
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
    #[arg(long, default_value_t = -1, allow_hyphen_values = true)]
    pub fast_io_fail_tmo: i64,
    /// Ask the controller to disable SQ flow control.
    #[arg(long)]
    pub disable_sqflow: bool,
    /// Use linear command ids 0..queue_size-1.
    #[arg(long)]
    pub linear_cids: bool,
    /// Per-command timeout in seconds.
    #[arg(long, default_value_t = 30)]
    pub timeout: u32,
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
        if let Some(id) = &self.hostid {
            o.hostid = parse_uuid(id).with_context(|| format!("bad --hostid {id:?}"))?;
            o.hostnqn = hostnqn_from_uuid(&o.hostid);
        }
        if let Some(n) = &self.hostnqn {
            o.hostnqn = n.clone();
        }
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
        o.cid_mode = if self.linear_cids {
            CidMode::Linear
        } else {
            CidMode::Tagged
        };
        o.command_timeout = Duration::from_secs(self.timeout.max(1).into());
        Ok(o)
    }
}

/// The subsystem to connect to plus connection options.
#[derive(Args, Debug, Clone)]
pub struct Target {
    /// Subsystem NQN.
    #[arg(short = 'n', long)]
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
    fn connect(&self) -> anyhow::Result<(Option<NicSession>, Controller)> {
        let mut o = self.conn.options(&self.nqn, DEFAULT_IO_PORT)?;
        let addr = o.socket_addr_string();
        let nic = self.nic.start(&mut o, &self.ctl)?;
        let ctrl = Controller::connect(o)
            .with_context(|| format!("connecting to {} at {addr}", self.nqn))?;
        Ok((nic, ctrl))
    }
}

/// Data transfer arguments of `read` and `write` (nvme-cli: start-block, block-count
/// (0's based), data-size, data).
#[derive(Args, Debug, Clone)]
pub struct IoArgs {
    /// Namespace id.
    #[arg(long = "namespace-id", default_value_t = 1)]
    pub nsid: u32,
    /// First logical block.
    #[arg(long, default_value_t = 0)]
    pub start_block: u64,
    /// Number of blocks, 0's based (as nvme-cli). Either this or --data-size.
    #[arg(long)]
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
    /// Connect to a subsystem, print its controller and namespaces; with --interactive run
    /// commands read from stdin on the open controller (`id-ctrl`, `id-ns N`, `list`,
    /// `read NSID SLBA NLB`, `flush NSID`, `quit`).
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
    /// List the namespaces of a subsystem (nvme list).
    List {
        #[command(flatten)]
        target: Target,
        /// Output format.
        #[arg(short = 'o', long, value_enum, default_value_t)]
        output_format: OutputFormat,
    },
    /// Identify Controller (nvme id-ctrl).
    IdCtrl {
        #[command(flatten)]
        target: Target,
        /// Output format.
        #[arg(short = 'o', long, value_enum, default_value_t)]
        output_format: OutputFormat,
    },
    /// Identify Namespace (nvme id-ns).
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
    /// Read logical blocks to a file or stdout (nvme read).
    Read {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        io: IoArgs,
    },
    /// Write logical blocks from a file or stdin (nvme write).
    Write {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        io: IoArgs,
    },
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
            let log = discovery::discover(o).context("discovery")?;
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
                let log = discovery::discover(o).context("discovery")?;
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
            print_list(&ctrl, &target.nqn, output_format)?;
            if interactive {
                repl(&ctrl, output_format)?;
            }
            ctrl.shutdown();
            Ok(())
        }
        Command::List {
            target,
            output_format,
        } => {
            let (_nic, ctrl) = target.connect()?;
            print_list(&ctrl, &target.nqn, output_format)?;
            ctrl.shutdown();
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
            let ns = ctrl.namespace(nsid)?;
            print_id_ns(&ns, output_format);
            ctrl.shutdown();
            Ok(())
        }
        Command::Read { target, io } => {
            let (_nic, ctrl) = target.connect()?;
            let ns = ctrl.namespace(io.nsid)?;
            let len = transfer_len(&io, &ns, None)?;
            let mut buf = vec![0u8; len];
            ctrl.read_at(&ns, io.start_block, &mut buf)?;
            match io.data.as_deref() {
                None | Some("-") => std::io::stdout().lock().write_all(&buf)?,
                Some(p) => std::fs::write(p, &buf).with_context(|| format!("writing {p}"))?,
            }
            ctrl.shutdown();
            Ok(())
        }
        Command::Write { target, io } => {
            let mut data = Vec::new();
            match io.data.as_deref() {
                None | Some("-") => {
                    std::io::stdin().lock().read_to_end(&mut data)?;
                }
                Some(p) => data = std::fs::read(p).with_context(|| format!("reading {p}"))?,
            }
            let (_nic, ctrl) = target.connect()?;
            let ns = ctrl.namespace(io.nsid)?;
            let len = transfer_len(&io, &ns, Some(data.len()))?;
            if data.len() < len {
                bail!("input has {} bytes, the transfer needs {len}", data.len());
            }
            ctrl.write_at(&ns, io.start_block, &data[..len])?;
            ctrl.shutdown();
            Ok(())
        }
    }
}

fn transfer_len(io: &IoArgs, ns: &NamespaceInfo, input: Option<usize>) -> anyhow::Result<usize> {
    let lba = ns.lba_size as u64;
    let len = match (io.block_count, io.data_size, input) {
        (Some(c), _, _) => c
            .checked_add(1)
            .and_then(|n| n.checked_mul(lba))
            .context("--block-count too large")?,
        (None, Some(z), _) => z,
        (None, None, Some(n)) => n as u64,
        (None, None, None) => lba,
    };
    if len == 0 || len % lba != 0 {
        bail!("transfer of {len} bytes is not a positive multiple of the {lba}-byte block size");
    }
    usize::try_from(len).context("transfer too large")
}

fn print_discovery(entries: &[DiscoveryEntry], genctr: u64, f: OutputFormat) {
    match f {
        OutputFormat::Json => {
            let recs: Vec<Value> = entries
                .iter()
                .map(|e| {
                    json!({
                        "trtype": e.trtype_name(),
                        "adrfam": e.adrfam_name(),
                        "subtype": e.subtype_name(),
                        "treq": e.treq,
                        "portid": e.portid,
                        "trsvcid": e.trsvcid,
                        "subnqn": e.subnqn,
                        "traddr": e.traddr,
                        "eflags": e.eflags,
                        "sectype": e.sectype,
                    })
                })
                .collect();
            println!(
                "{}",
                serde_json::to_string_pretty(&json!({"genctr": genctr, "records": recs}))
                    .unwrap_or_default()
            );
        }
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
                println!("treq:    {:#x}", e.treq);
                println!("portid:  {}", e.portid);
                println!("trsvcid: {}", e.trsvcid);
                println!("subnqn:  {}", e.subnqn);
                println!("traddr:  {}", e.traddr);
                println!("eflags:  {:#x}", e.eflags);
                println!("sectype: {}", e.sectype);
            }
        }
    }
}

fn text_field(b: &[u8]) -> String {
    String::from_utf8_lossy(b)
        .trim_end_matches(['\0', ' '])
        .to_string()
}

fn print_list(ctrl: &Controller, nqn: &str, f: OutputFormat) -> anyhow::Result<()> {
    let info = ctrl.info()?;
    let id = info
        .identify_controller()
        .context("Identify Controller data")?;
    let nsids = ctrl.active_namespaces()?;
    let mut rows = Vec::new();
    for nsid in nsids {
        match ctrl.namespace(nsid) {
            Ok(ns) => rows.push(ns),
            Err(e) => tracing::warn!(nsid, error = %e, "namespace skipped"),
        }
    }
    let (sn, mn, fr) = (text_field(&id.sn), text_field(&id.mn), text_field(&id.fr));
    match f {
        OutputFormat::Json => {
            let devs: Vec<Value> = rows
                .iter()
                .map(|ns| {
                    json!({
                        "NameSpace": ns.nsid,
                        "SubsystemNQN": nqn,
                        "Controller": info.cntlid,
                        "SerialNumber": sn,
                        "ModelNumber": mn,
                        "Firmware": fr,
                        "UsedBytes": ns.nuse * ns.lba_size as u64,
                        "MaximumLBA": ns.nsze,
                        "PhysicalSize": ns.nsze * ns.lba_size as u64,
                        "SectorSize": ns.lba_size,
                    })
                })
                .collect();
            println!(
                "{}",
                serde_json::to_string_pretty(&json!({ "Devices": devs })).unwrap_or_default()
            );
        }
        OutputFormat::Normal => {
            println!(
                "{:<6} {:<20} {:<40} {:<9} {:<26} {:<16} {:<8}",
                "Ctrl", "SN", "Model", "Namespace", "Usage", "Format", "FW Rev"
            );
            println!(
                "{:-<6} {:-<20} {:-<40} {:-<9} {:-<26} {:-<16} {:-<8}",
                "", "", "", "", "", "", ""
            );
            for ns in &rows {
                let lba = ns.lba_size as u64;
                println!(
                    "{:<6} {:<20} {:<40} {:<9} {:<26} {:<16} {:<8}",
                    info.cntlid,
                    sn,
                    mn,
                    ns.nsid,
                    format!("{} / {}", human(ns.nuse * lba), human(ns.nsze * lba)),
                    format!("{lba} B + 0 B"),
                    fr
                );
            }
        }
    }
    Ok(())
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
    let fields: Vec<(&str, Value)> = vec![
        ("vid", json!(id.vid.get())),
        ("ssvid", json!(id.ssvid.get())),
        ("sn", json!(text_field(&id.sn))),
        ("mn", json!(text_field(&id.mn))),
        ("fr", json!(text_field(&id.fr))),
        ("rab", json!(id.rab)),
        ("cmic", json!(id.cmic)),
        ("mdts", json!(id.mdts)),
        ("cntlid", json!(id.cntlid.get())),
        ("ver", json!(id.ver.get())),
        ("oaes", json!(id.oaes.get())),
        ("ctratt", json!(id.ctratt.get())),
        ("cntrltype", json!(id.cntrltype)),
        ("oacs", json!(id.oacs.get())),
        ("acl", json!(id.acl)),
        ("aerl", json!(id.aerl)),
        ("lpa", json!(id.lpa)),
        ("elpe", json!(id.elpe)),
        ("kas", json!(id.kas.get())),
        ("sqes", json!(id.sqes)),
        ("cqes", json!(id.cqes)),
        ("maxcmd", json!(id.maxcmd.get())),
        ("nn", json!(id.nn.get())),
        ("oncs", json!(id.oncs.get())),
        ("fuses", json!(id.fuses.get())),
        ("vwc", json!(id.vwc)),
        ("sgls", json!(id.sgls.get())),
        ("subnqn", json!(text_field(&id.subnqn))),
        ("ioccsz", json!(id.ioccsz.get())),
        ("iorcsz", json!(id.iorcsz.get())),
        ("icdoff", json!(id.icdoff.get())),
        ("fcatt", json!(id.fcatt)),
        ("msdbd", json!(id.msdbd)),
        ("ofcs", json!(id.ofcs.get())),
    ];
    match f {
        OutputFormat::Json => {
            let m: serde_json::Map<String, Value> = fields
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect();
            println!("{}", serde_json::to_string_pretty(&m).unwrap_or_default());
        }
        OutputFormat::Normal => {
            println!("NVME Identify Controller:");
            for (k, v) in fields {
                match v {
                    Value::Number(n) => {
                        let x = n.as_u64().unwrap_or(0);
                        println!("{k:<10}: {x:#x}");
                    }
                    Value::String(s) => println!("{k:<10}: {s}"),
                    other => println!("{k:<10}: {other}"),
                }
            }
        }
    }
    Ok(())
}

fn print_id_ns(ns: &NamespaceInfo, f: OutputFormat) {
    match f {
        OutputFormat::Json => println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "nsid": ns.nsid,
                "nsze": ns.nsze,
                "ncap": ns.ncap,
                "nuse": ns.nuse,
                "lba_size": ns.lba_size,
            }))
            .unwrap_or_default()
        ),
        OutputFormat::Normal => {
            println!("NVME Identify Namespace {}:", ns.nsid);
            println!("nsze    : {:#x}", ns.nsze);
            println!("ncap    : {:#x}", ns.ncap);
            println!("nuse    : {:#x}", ns.nuse);
            println!("lba size: {}", ns.lba_size);
        }
    }
}

/// `connect --interactive`: one command per stdin line on the open controller.
fn repl(ctrl: &Controller, f: OutputFormat) -> anyhow::Result<()> {
    let stdin = std::io::stdin();
    for line in stdin.lock().lines() {
        let line = line?;
        let w: Vec<&str> = line.split_whitespace().collect();
        let num = |i: usize| -> anyhow::Result<u64> {
            w.get(i)
                .with_context(|| format!("argument {i} missing"))?
                .parse::<u64>()
                .with_context(|| format!("argument {i} is not a number"))
        };
        let r: anyhow::Result<()> = match w.first().copied() {
            None => continue,
            Some("quit" | "exit") => break,
            Some("id-ctrl") => ctrl
                .identify_controller()
                .map_err(Into::into)
                .and_then(|raw| print_id_ctrl(&raw, f)),
            Some("id-ns") => num(1).and_then(|n| {
                let ns = ctrl.namespace(n as u32)?;
                print_id_ns(&ns, f);
                Ok(())
            }),
            Some("list") => print_list(ctrl, &ctrl.options().subnqn, f),
            Some("flush") => num(1).and_then(|n| Ok(ctrl.flush(n as u32)?)),
            Some("read") => (|| {
                let ns = ctrl.namespace(num(1)? as u32)?;
                let nlb = num(3)?;
                let mut buf = vec![0u8; (nlb * ns.lba_size as u64) as usize];
                ctrl.read_at(&ns, num(2)?, &mut buf)?;
                let digest = nvme_tcp_wire::digest::crc32c(&buf);
                println!("read {} bytes, crc32c {digest:#010x}", buf.len());
                Ok(())
            })(),
            Some(other) => Err(anyhow::anyhow!("unknown command {other:?}")),
        };
        if let Err(e) = r {
            eprintln!("error: {e:#}");
        }
        std::io::stdout().flush()?;
    }
    Ok(())
}
