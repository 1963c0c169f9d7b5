//! nvme-cli's output shapes: the JSON objects `nvme id-ctrl -o json`, `nvme id-ns -o json`,
//! `nvme discover -o json` and `nvme list -o json` print (nvme-cli 2.x), with the same keys in
//! the same order and the same value encodings, so scripts written for nvme-cli read ours
//! unchanged. The text forms print the same fields.
//!
//! Value encodings follow nvme-cli: integers as JSON numbers; SN/MN/FR as their full fixed-width
//! field (trailing spaces kept); 128-bit fields (TNVMCAP, UNVMCAP, MEGCAP, MAXDNA, NVMCAP) as
//! decimal strings; IEEE OUI as one integer (byte 2 most significant); FGUID as a hyphenated
//! UUID; NGUID and EUI64 as lowercase hex; discovery TREQ, EFLAGS and SECTYPE as nvme-cli's
//! strings.

use nvme_tcp_host::discovery::DiscoveryEntry;
use nvme_tcp_host::options::format_uuid;
use nvme_tcp_wire::nvme::{IdentifyController, IdentifyNamespace};
use serde_json::{Map, Value, json};

/// A fixed-width ASCII field as nvme-cli prints it: every byte up to the first NUL, padding kept.
fn fixed_str(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

/// A 128-bit little-endian field as a decimal string.
fn u128_str(b: &[u8; 16]) -> String {
    u128::from_le_bytes(*b).to_string()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Power scale of a PSD's IPS or APWS byte (bits 7:6).
fn power_scale(v: u8) -> u8 {
    (v >> 6) & 0x3
}

/// `nvme id-ctrl -o json`.
pub fn id_ctrl(id: &IdentifyController) -> Value {
    let ieee = u32::from(id.ieee[0]) | u32::from(id.ieee[1]) << 8 | u32::from(id.ieee[2]) << 16;
    let mut m = Map::new();
    let mut put = |k: &str, v: Value| {
        m.insert(k.to_string(), v);
    };
    put("vid", json!(id.vid.get()));
    put("ssvid", json!(id.ssvid.get()));
    put("sn", json!(fixed_str(&id.sn)));
    put("mn", json!(fixed_str(&id.mn)));
    put("fr", json!(fixed_str(&id.fr)));
    put("rab", json!(id.rab));
    put("ieee", json!(ieee));
    put("cmic", json!(id.cmic));
    put("mdts", json!(id.mdts));
    put("cntlid", json!(id.cntlid.get()));
    put("ver", json!(id.ver.get()));
    put("rtd3r", json!(id.rtd3r.get()));
    put("rtd3e", json!(id.rtd3e.get()));
    put("oaes", json!(id.oaes.get()));
    put("ctratt", json!(id.ctratt.get()));
    put("rrls", json!(id.rrls.get()));
    put("cntrltype", json!(id.cntrltype));
    put("fguid", json!(format_uuid(&id.fguid)));
    put("crdt1", json!(id.crdt1.get()));
    put("crdt2", json!(id.crdt2.get()));
    put("crdt3", json!(id.crdt3.get()));
    put("nvmsr", json!(id.nvmsr));
    put("vwci", json!(id.vwci));
    put("mec", json!(id.mec));
    put("oacs", json!(id.oacs.get()));
    put("acl", json!(id.acl));
    put("aerl", json!(id.aerl));
    put("frmw", json!(id.frmw));
    put("lpa", json!(id.lpa));
    put("elpe", json!(id.elpe));
    put("npss", json!(id.npss));
    put("avscc", json!(id.avscc));
    put("apsta", json!(id.apsta));
    put("wctemp", json!(id.wctemp.get()));
    put("cctemp", json!(id.cctemp.get()));
    put("mtfa", json!(id.mtfa.get()));
    put("hmpre", json!(id.hmpre.get()));
    put("hmmin", json!(id.hmmin.get()));
    put("tnvmcap", json!(u128_str(&id.tnvmcap)));
    put("unvmcap", json!(u128_str(&id.unvmcap)));
    put("rpmbs", json!(id.rpmbs.get()));
    put("edstt", json!(id.edstt.get()));
    put("dsto", json!(id.dsto));
    put("fwug", json!(id.fwug));
    put("kas", json!(id.kas.get()));
    put("hctma", json!(id.hctma.get()));
    put("mntmt", json!(id.mntmt.get()));
    put("mxtmt", json!(id.mxtmt.get()));
    put("sanicap", json!(id.sanicap.get()));
    put("hmminds", json!(id.hmminds.get()));
    put("hmmaxd", json!(id.hmmaxd.get()));
    put("nsetidmax", json!(id.nvmsetidmax.get()));
    put("endgidmax", json!(id.endgidmax.get()));
    put("anatt", json!(id.anatt));
    put("anacap", json!(id.anacap));
    put("anagrpmax", json!(id.anagrpmax.get()));
    put("nanagrpid", json!(id.nanagrpid.get()));
    put("pels", json!(id.pels.get()));
    put("domainid", json!(id.domainid.get()));
    put("megcap", json!(u128_str(&id.megcap)));
    put("sqes", json!(id.sqes));
    put("cqes", json!(id.cqes));
    put("maxcmd", json!(id.maxcmd.get()));
    put("nn", json!(id.nn.get()));
    put("oncs", json!(id.oncs.get()));
    put("fuses", json!(id.fuses.get()));
    put("fna", json!(id.fna));
    put("vwc", json!(id.vwc));
    put("awun", json!(id.awun.get()));
    put("awupf", json!(id.awupf.get()));
    put("icsvscc", json!(id.icsvscc));
    put("nwpc", json!(id.nwpc));
    put("acwu", json!(id.acwu.get()));
    put("ocfs", json!(id.ocfs.get()));
    put("sgls", json!(id.sgls.get()));
    put("mnan", json!(id.mnan.get()));
    put("maxdna", json!(u128_str(&id.maxdna)));
    put("maxcna", json!(id.maxcna.get()));
    put("subnqn", json!(fixed_str(&id.subnqn)));
    put("ioccsz", json!(id.ioccsz.get()));
    put("iorcsz", json!(id.iorcsz.get()));
    put("icdoff", json!(id.icdoff.get()));
    put("fcatt", json!(id.fcatt));
    put("msdbd", json!(id.msdbd));
    put("ofcs", json!(id.ofcs.get()));
    // NPSS is 0's based; at most 32 descriptors exist.
    let psds: Vec<Value> = id
        .psd
        .iter()
        .take(usize::from(id.npss) + 1)
        .map(|p| {
            json!({
                "max_power": p.mp.get(),
                "flags": p.flags,
                "entry_lat": p.enlat.get(),
                "exit_lat": p.exlat.get(),
                "read_tput": p.rrt,
                "read_lat": p.rrl,
                "write_tput": p.rwt,
                "write_lat": p.rwl,
                "idle_power": p.idlp.get(),
                "idle_scale": power_scale(p.ips),
                "active_power": p.actp.get(),
                "active_power_work": p.apws & 0x7,
                "active_scale": power_scale(p.apws),
            })
        })
        .collect();
    m.insert("psds".into(), Value::Array(psds));
    Value::Object(m)
}

/// `nvme id-ns -o json`.
pub fn id_ns(ns: &IdentifyNamespace) -> Value {
    let mut m = Map::new();
    let mut put = |k: &str, v: Value| {
        m.insert(k.to_string(), v);
    };
    put("nsze", json!(ns.nsze.get()));
    put("ncap", json!(ns.ncap.get()));
    put("nuse", json!(ns.nuse.get()));
    put("nsfeat", json!(ns.nsfeat));
    put("nlbaf", json!(ns.nlbaf));
    put("flbas", json!(ns.flbas));
    put("mc", json!(ns.mc));
    put("dpc", json!(ns.dpc));
    put("dps", json!(ns.dps));
    put("nmic", json!(ns.nmic));
    put("rescap", json!(ns.rescap));
    put("fpi", json!(ns.fpi));
    put("dlfeat", json!(ns.dlfeat));
    put("nawun", json!(ns.nawun.get()));
    put("nawupf", json!(ns.nawupf.get()));
    put("nacwu", json!(ns.nacwu.get()));
    put("nabsn", json!(ns.nabsn.get()));
    put("nabo", json!(ns.nabo.get()));
    put("nabspf", json!(ns.nabspf.get()));
    put("noiob", json!(ns.noiob.get()));
    put("nvmcap", json!(u128_str(&ns.nvmcap)));
    // NSFEAT bit 4 (OPTPERF): the preferred granularity fields are valid; nvme-cli prints them
    // only then.
    if ns.nsfeat & 0x10 != 0 {
        put("npwg", json!(ns.npwg.get()));
        put("npwa", json!(ns.npwa.get()));
        put("npdg", json!(ns.npdg.get()));
        put("npda", json!(ns.npda.get()));
        put("nows", json!(ns.nows.get()));
    }
    put("nsattr", json!(ns.nsattr));
    put("nvmsetid", json!(ns.nvmsetid.get()));
    put("mssrl", json!(ns.mssrl.get()));
    put("mcl", json!(ns.mcl.get()));
    put("msrc", json!(ns.msrc));
    put("nulbaf", json!(ns.nulbaf));
    put("anagrpid", json!(ns.anagrpid.get()));
    put("endgid", json!(ns.endgid.get()));
    put("eui64", json!(hex(&ns.eui64)));
    put("nguid", json!(hex(&ns.nguid)));
    // NLBAF is 0's based; the array holds 64 formats.
    let lbafs: Vec<Value> = ns
        .lbaf
        .iter()
        .take(usize::from(ns.nlbaf) + 1)
        .map(|f| json!({"ms": f.ms.get(), "ds": f.lbads, "rp": f.rp & 0x3}))
        .collect();
    m.insert("lbafs".into(), Value::Array(lbafs));
    Value::Object(m)
}

/// TREQ as nvme-cli names it (bits 1:0 secure channel, bit 2 SQ flow control disable).
pub fn treq_str(treq: u8) -> &'static str {
    match treq {
        0 => "not specified",
        1 => "required",
        2 => "not required",
        4 => "not specified, sq flow control disable supported",
        _ => "unrecognized",
    }
}

/// EFLAGS as nvme-cli names it.
pub fn eflags_str(eflags: u16) -> &'static str {
    match eflags {
        0 => "none",
        1 => "duplicate discovery information",
        2 => "explicit discovery connections",
        3 => "explicit discovery connections, duplicate discovery information",
        _ => "unrecognized",
    }
}

/// The TCP SECTYPE (TSAS) as nvme-cli names it.
pub fn sectype_str(sectype: u8) -> &'static str {
    match sectype {
        0 => "none",
        1 => "tls",
        2 => "tls13",
        _ => "unrecognized",
    }
}

/// `nvme discover -o json`.
pub fn discovery(genctr: u64, entries: &[DiscoveryEntry]) -> Value {
    let records: Vec<Value> = entries
        .iter()
        .map(|e| {
            json!({
                "trtype": e.trtype_name(),
                "adrfam": e.adrfam_name(),
                "subtype": e.subtype_name(),
                "treq": treq_str(e.treq),
                "portid": e.portid,
                "trsvcid": e.trsvcid,
                "subnqn": e.subnqn,
                "traddr": e.traddr,
                "eflags": eflags_str(e.eflags),
                "sectype": sectype_str(e.sectype),
            })
        })
        .collect();
    json!({"genctr": genctr, "records": records})
}

/// One row of `nvme list`: a namespace of a controller.
#[derive(Debug, Clone)]
pub struct ListRow {
    /// Where the namespace is, in place of nvme-cli's block device path:
    /// `nvme-tcp://TRADDR:TRSVCID/SUBNQN/NSID`.
    pub device_path: String,
    /// NSID.
    pub nsid: u32,
    /// Firmware revision.
    pub firmware: String,
    /// Serial number.
    pub serial: String,
    /// Model number.
    pub model: String,
    /// Namespace utilization in blocks.
    pub nuse: u64,
    /// Namespace size in blocks.
    pub nsze: u64,
    /// Block size in bytes.
    pub lba_size: u32,
}

/// `nvme list -o json`.
pub fn list(rows: &[ListRow]) -> Value {
    let devices: Vec<Value> = rows
        .iter()
        .map(|r| {
            json!({
                "NameSpace": r.nsid,
                "DevicePath": r.device_path,
                "Firmware": r.firmware,
                "ModelNumber": r.model,
                "SerialNumber": r.serial,
                "UsedBytes": r.nuse.saturating_mul(u64::from(r.lba_size)),
                "MaximumLBA": r.nsze,
                "PhysicalSize": r.nsze.saturating_mul(u64::from(r.lba_size)),
                "SectorSize": r.lba_size,
            })
        })
        .collect();
    json!({ "Devices": devices })
}

/// Text form of an id-ctrl / id-ns object: `key : value`, numbers in hex as nvme-cli prints
/// most fields, arrays one element per line.
pub fn text(title: &str, v: &Value, array_label: &str) -> String {
    let mut out = format!("{title}\n");
    let Value::Object(m) = v else {
        return out;
    };
    for (k, v) in m {
        match v {
            Value::Number(n) => match n.as_u64() {
                Some(x) => out.push_str(&format!("{k:<10}: {x:#x}\n")),
                None => out.push_str(&format!("{k:<10}: {n}\n")),
            },
            Value::String(s) => out.push_str(&format!("{k:<10}: {s}\n")),
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    let fields: Vec<String> = match item {
                        Value::Object(f) => f.iter().map(|(k, v)| format!("{k}:{v}")).collect(),
                        other => vec![other.to_string()],
                    };
                    out.push_str(&format!("{array_label} {i:>2} : {}\n", fields.join(" ")));
                }
            }
            other => out.push_str(&format!("{k:<10}: {other}\n")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_ctrl_has_nvme_cli_keys_in_order_with_its_encodings() {
        let mut id = IdentifyController::default();
        id.set_sn("SN1").unwrap();
        id.ieee = [0x01, 0x02, 0x03];
        id.tnvmcap[0] = 0x10;
        id.tnvmcap[8] = 1; // 2^64 + 16
        id.npss = 1;
        id.psd[1].apws = 0xC2;
        id.psd[1].ips = 0x40;
        let v = id_ctrl(&id);
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys.len(), 86);
        assert_eq!(&keys[..4], ["vid", "ssvid", "sn", "mn"]);
        assert_eq!(keys.last(), Some(&"psds"));
        assert_eq!(v["sn"], "SN1                 ");
        assert_eq!(v["ieee"], 0x030201);
        assert_eq!(v["tnvmcap"], "18446744073709551632");
        assert_eq!(v["fguid"], "00000000-0000-0000-0000-000000000000");
        let psds = v["psds"].as_array().unwrap();
        assert_eq!(psds.len(), 2);
        assert_eq!(psds[1]["active_power_work"], 2);
        assert_eq!(psds[1]["active_scale"], 3);
        assert_eq!(psds[1]["idle_scale"], 1);
        assert_eq!(psds[1].as_object().unwrap().len(), 13);
    }

    #[test]
    fn id_ns_lists_nlbaf_plus_one_formats_and_optperf_fields_only_when_set() {
        let mut ns = IdentifyNamespace::new(100, 12);
        ns.nlbaf = 1;
        ns.lbaf[1] = nvme_tcp_wire::nvme::LbaFormat::new(9);
        ns.flbas = 1;
        ns.nguid = [0xAB; 16];
        let v = id_ns(&ns);
        let f = &v["lbafs"][v["flbas"].as_u64().unwrap() as usize & 0xF];
        assert_eq!(f["ds"], 9, "the usual lbafs[flbas & 0xf].ds lookup");
        assert_eq!(v["lbafs"].as_array().unwrap().len(), 2);
        assert_eq!(v["nguid"], "ab".repeat(16));
        assert_eq!(v["eui64"], "0000000000000000");
        assert!(v.get("npwg").is_none());
        ns.nsfeat |= 0x10;
        ns.npwg.set(7);
        assert_eq!(id_ns(&ns)["npwg"], 7);
    }

    #[test]
    fn discovery_strings_follow_nvme_cli() {
        assert_eq!(
            treq_str(4),
            "not specified, sq flow control disable supported"
        );
        assert_eq!(treq_str(1), "required");
        assert_eq!(treq_str(9), "unrecognized");
        assert_eq!(eflags_str(0), "none");
        assert_eq!(
            eflags_str(3),
            "explicit discovery connections, duplicate discovery information"
        );
        assert_eq!(sectype_str(0), "none");
        assert_eq!(sectype_str(2), "tls13");
    }
}
