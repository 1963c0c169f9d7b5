//! `ulpddp gen-tls-key` and `ulpddp tls-psk`: NVMe/TCP TLS PSKs in the interchange format
//! (as nvme-cli's `gen-tls-key`) and the PSK identity and TLS PSK derived from one for a
//! host and subsystem (what a kernel keyring entry for that pair holds).

use anyhow::{Context, bail};
use nvme_tcp_tls::{ConfiguredPsk, IdentityVersion, KeyHash};
use rand::RngCore;

/// Arguments of `ulpddp gen-tls-key`.
#[derive(clap::Args, Debug)]
pub struct GenArgs {
    /// Hash that transforms the key into the retained PSK: 0 none, 1 SHA-256, 2 SHA-384
    /// (nvme-cli's --hmac).
    #[arg(short = 'm', long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=2))]
    hmac: u8,
    /// The key bytes in hex (32 bytes; 48 with --hmac 2) [default: random].
    #[arg(short = 's', long)]
    secret: Option<String>,
}

/// Arguments of `ulpddp tls-psk`.
#[derive(clap::Args, Debug)]
pub struct PskArgs {
    /// The configured PSK (`NVMeTLSkey-1:HH:...:`).
    #[arg(long)]
    key: String,
    /// Host NQN.
    #[arg(long)]
    hostnqn: String,
    /// Subsystem NQN.
    #[arg(long)]
    subnqn: String,
    /// PSK identity version: 0 or 1 (with the PSK digest).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=1))]
    identity_version: u8,
    /// Derive as nvme-cli up to 2.13 (libnvme 1.13) does.
    #[arg(long)]
    compat: bool,
    /// Write the TLS PSK's raw bytes to FILE (e.g. for `keyctl padd psk IDENTITY KEYRING`).
    #[arg(long, value_name = "FILE")]
    psk_out: Option<std::path::PathBuf>,
}

fn parse_hex(s: &str) -> anyhow::Result<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        bail!("odd number of hex digits");
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).context("not hex"))
        .collect()
}

/// Prints a new configured PSK.
pub fn generate(a: &GenArgs) -> anyhow::Result<()> {
    let hash = match a.hmac {
        0 => KeyHash::None,
        1 => KeyHash::Sha256,
        _ => KeyHash::Sha384,
    };
    let key = match &a.secret {
        Some(hex) => parse_hex(hex).context("--secret")?,
        None => {
            let mut k = vec![0u8; if hash == KeyHash::Sha384 { 48 } else { 32 }];
            rand::rng().fill_bytes(&mut k);
            k
        }
    };
    let psk = ConfiguredPsk::new(hash, key).context("--secret")?;
    println!("{}", psk.to_interchange());
    Ok(())
}

/// Prints the PSK identity and the TLS PSK (hex) for a host and subsystem.
pub fn derive(a: &PskArgs) -> anyhow::Result<()> {
    let mut key = ConfiguredPsk::parse(&a.key).context("--key")?;
    if a.compat {
        key = key.with_derivation(nvme_tcp_tls::Derivation::Compat);
    }
    let version = if a.identity_version == 1 {
        IdentityVersion::V1
    } else {
        IdentityVersion::V0
    };
    let psk = key.tls_psk(version, &a.hostnqn, &a.subnqn)?;
    println!("identity: {}", psk.identity);
    let hex: String = psk.key.iter().map(|b| format!("{b:02x}")).collect();
    println!("psk: {hex}");
    if let Some(path) = &a.psk_out {
        std::fs::write(path, &psk.key).with_context(|| format!("--psk-out {}", path.display()))?;
    }
    Ok(())
}
