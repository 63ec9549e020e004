//! Per-function option values: `socket=PATH,addr=DD.F[,vendor-id=X][,device-id=Y]`.

use std::path::PathBuf;

use vsvm::devices::accel;
use vsvm::devices::topology::{AccelSpec, RemapSpec};
use vsvm::pci::Bdf;

/// `key=value` pairs of one option value.
fn pairs(s: &str) -> Result<Vec<(&str, &str)>, String> {
    s.split(',')
        .map(|kv| {
            kv.split_once('=')
                .ok_or_else(|| format!("'{kv}' is not key=value"))
        })
        .collect()
}

/// A hexadecimal u16 with or without 0x.
pub fn parse_hex_u16(s: &str) -> Result<u16, String> {
    u16::from_str_radix(s.trim_start_matches("0x"), 16).map_err(|e| e.to_string())
}

/// A hexadecimal u64 with or without 0x.
pub fn parse_hex_u64(s: &str) -> Result<u64, String> {
    u64::from_str_radix(s.trim_start_matches("0x"), 16).map_err(|e| e.to_string())
}

fn bdf(s: &str) -> Result<Bdf, String> {
    s.parse::<Bdf>().map_err(|e| format!("addr {s}: {e}"))
}

/// `--accel socket=PATH,addr=DD.F[,vendor-id=X][,device-id=Y]`; the socket may be left out
/// where a command serves no socket of its own (calibrate).
pub fn parse_accel(s: &str) -> Result<AccelSpec, String> {
    let (mut socket, mut addr) = (PathBuf::new(), None);
    let (mut vendor_id, mut device_id) = (accel::VENDOR_ID, accel::DEVICE_ID);
    for (key, value) in pairs(s)? {
        match key {
            "socket" => socket = value.into(),
            "addr" => addr = Some(bdf(value)?),
            "vendor-id" => vendor_id = parse_hex_u16(value)?,
            "device-id" => device_id = parse_hex_u16(value)?,
            _ => return Err(format!("unknown accel option '{key}'")),
        }
    }
    let addr = addr.ok_or("accel needs addr=DD.F (its PCI address in QEMU)")?;
    Ok(AccelSpec {
        socket,
        addr,
        vendor_id,
        device_id,
    })
}

/// `--remap-unit socket=PATH,addr=DD.F`.
pub fn parse_remap(s: &str) -> Result<RemapSpec, String> {
    let mut socket = PathBuf::new();
    let mut addr = None;
    for (key, value) in pairs(s)? {
        match key {
            "socket" => socket = value.into(),
            "addr" => addr = Some(bdf(value)?),
            _ => return Err(format!("unknown remap-unit option '{key}'")),
        }
    }
    let addr = addr.ok_or("remap-unit needs addr=DD.F (its PCI address in QEMU)")?;
    Ok(RemapSpec { socket, addr })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_accel_options() {
        let a = parse_accel("socket=/run/a.sock,addr=05.0,device-id=0xa002").unwrap();
        assert_eq!(a.socket, PathBuf::from("/run/a.sock"));
        assert_eq!(a.addr, Bdf::new(0, 5, 0).unwrap());
        assert_eq!((a.vendor_id, a.device_id), (accel::VENDOR_ID, 0xa002));
        assert!(parse_accel("socket=/x").is_err(), "addr is required");
        assert!(parse_accel("addr=04.0,colour=red").is_err());
        assert!(parse_remap("socket=/r,addr=zz").is_err());
    }
}
