//! The remap unit over a real socket: its configuration space decoded by an independent decoder
//! (pcics), BAR0 accesses reaching the register window as the guest made them, the BAR
//! placement check seeing firmware's writes, and the DMAR table disassembled by ACPICA's iasl.

mod common;

use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{spawn_device, RawClient};
use pcics::capabilities::{Capability, CapabilityKind};
use pcics::header::{BaseAddressType, HeaderType, InterruptPin};
use pcics::{Capabilities, Header, DDR_OFFSET, ECS_OFFSET};
use vsvm::devices::remap_unit::dmar::DmarSpec;
use vsvm::devices::remap_unit::{self, BaseCheck, RegisterWindow};
use vsvm::vfio_user::protocol::{Command, RegionAccess};
use vsvm::vfio_user::ServerOptions;
use zerocopy::IntoBytes;

const CONFIG: u32 = 7;
const WINDOW_SIZE: u64 = 0x4000;
/// Memory Space Enable in COMMAND.
const MEMORY_SPACE: u16 = 1 << 1;

/// One access the window saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Access {
    Read {
        offset: u64,
        size: usize,
    },
    Write {
        offset: u64,
        size: usize,
        value: u64,
    },
    Reset,
}

/// A register window that records accesses; reads return `0xa5 << 56 | offset`.
#[derive(Default)]
struct Recorder {
    seen: Mutex<Vec<Access>>,
}

impl Recorder {
    fn take(&self) -> Vec<Access> {
        std::mem::take(&mut self.seen.lock().unwrap())
    }
}

impl RegisterWindow for Recorder {
    fn size(&self) -> u64 {
        WINDOW_SIZE
    }
    fn read(&self, offset: u64, size: usize) -> u64 {
        self.seen
            .lock()
            .unwrap()
            .push(Access::Read { offset, size });
        0xa5 << 56 | offset
    }
    fn write(&self, offset: u64, size: usize, value: u64) {
        let access = Access::Write {
            offset,
            size,
            value,
        };
        self.seen.lock().unwrap().push(access);
    }
    fn reset(&self) {
        self.seen.lock().unwrap().push(Access::Reset);
    }
}

/// A connected client of a remap unit expecting its BAR at `expected`; the receiver gets every
/// address the placement check reports.
fn connected(expected: Option<u64>) -> (RawClient, Arc<Recorder>, Receiver<u64>) {
    let window = Arc::new(Recorder::default());
    let (tx, rx) = mpsc::channel();
    let served = window.clone();
    let (mut c, _server) = spawn_device(
        move || {
            let tx = Mutex::new(tx);
            let check = BaseCheck::new(expected).on_assigned(move |a| {
                let _ = tx.lock().unwrap().send(a);
            });
            remap_unit::endpoint(remap_unit::bus(), served, check).unwrap()
        },
        ServerOptions::default(),
    );
    c.negotiate();
    (c, window, rx)
}

fn region_read(c: &mut RawClient, region: u32, offset: u64, count: u32) -> Vec<u8> {
    let access = RegionAccess {
        offset,
        region,
        count,
    };
    let reply = c.call(Command::RegionRead, access.as_bytes());
    assert!(
        !reply.header.is_error(),
        "read {region}+0x{offset:x} failed"
    );
    reply.body[16..].to_vec()
}

fn region_write(c: &mut RawClient, region: u32, offset: u64, data: &[u8]) {
    let mut body = RegionAccess {
        offset,
        region,
        count: data.len() as u32,
    }
    .as_bytes()
    .to_vec();
    body.extend_from_slice(data);
    let reply = c.call(Command::RegionWrite, &body);
    assert!(
        !reply.header.is_error(),
        "write {region}+0x{offset:x} failed"
    );
}

#[test]
fn test_config_space_decodes_as_an_iommu_with_one_bar() {
    let (mut c, _, _) = connected(None);
    let cfg = region_read(&mut c, CONFIG, 0, 4096);
    let header = Header::try_from(&cfg[..DDR_OFFSET]).unwrap();
    assert_eq!(
        (header.vendor_id, header.device_id),
        (remap_unit::VENDOR_ID, remap_unit::DEVICE_ID)
    );
    assert_eq!(
        (
            header.class_code.base,
            header.class_code.sub,
            header.class_code.interface
        ),
        (0x08, 0x06, 0x00)
    );
    assert_eq!(header.interrupt_pin, InterruptPin::Unused, "no INTx");
    let HeaderType::Normal(normal) = &header.header_type else {
        panic!("not a type-0 header: {:?}", header.header_type);
    };
    assert_eq!(normal.base_addresses.orig(), [0; 6], "nothing placed yet");
    // BAR sizing: all ones read back as the size mask.
    region_write(&mut c, CONFIG, 0x10, &[0xff; 4]);
    let bar = region_read(&mut c, CONFIG, 0x10, 4);
    let mask = u32::from_le_bytes(bar.try_into().unwrap());
    assert_eq!(u64::from(!(mask & !0xf)) + 1, WINDOW_SIZE);
    // Once placed, BAR0 is the only BAR, 32-bit and non-prefetchable.
    for bar in 0..6 {
        region_write(
            &mut c,
            CONFIG,
            0x10 + 4 * bar,
            &0xfeb0_0000u32.to_le_bytes(),
        );
    }
    let cfg = region_read(&mut c, CONFIG, 0, 4096);
    let header = Header::try_from(&cfg[..DDR_OFFSET]).unwrap();
    let HeaderType::Normal(normal) = &header.header_type else {
        panic!("not a type-0 header: {:?}", header.header_type);
    };
    let bars: Vec<_> = normal.base_addresses.clone().collect();
    assert_eq!(bars.len(), 1, "{bars:?}");
    assert_eq!(bars[0].region, 0);
    assert_eq!(
        bars[0].base_address_type,
        BaseAddressType::MemorySpace32 {
            prefetchable: false,
            base_address: 0xfeb0_0000
        }
    );
    let caps: Vec<Capability> = Capabilities::new(&cfg[DDR_OFFSET..ECS_OFFSET], &header)
        .map(|c| c.unwrap())
        .collect();
    assert_eq!(caps.len(), 1, "only the PCI Express capability: {caps:?}");
    let CapabilityKind::PciExpress(exp) = &caps[0].kind else {
        panic!("not PCI Express: {:?}", caps[0].kind);
    };
    assert_eq!(exp.version, 2);
    assert!(matches!(
        exp.device_type,
        pcics::capabilities::pci_express::DeviceType::Endpoint { .. }
    ));
}

#[test]
fn test_bar0_accesses_reach_the_window_with_offset_size_and_value() {
    let (mut c, window, _) = connected(None);
    window.take(); // whatever power-on did
    let q = region_read(&mut c, 0, 0x10, 8);
    assert_eq!(q, (0xa5u64 << 56 | 0x10).to_le_bytes());
    let d = region_read(&mut c, 0, 0x1c, 4);
    assert_eq!(d, 0x1cu32.to_le_bytes());
    region_write(&mut c, 0, 0x18, &0xc000_0000u32.to_le_bytes());
    region_write(&mut c, 0, 0x20, &0x0000_0001_2345_6000u64.to_le_bytes());
    region_write(&mut c, 0, 0x3ff8, &u64::MAX.to_le_bytes());
    assert_eq!(
        window.take(),
        [
            Access::Read {
                offset: 0x10,
                size: 8
            },
            Access::Read {
                offset: 0x1c,
                size: 4
            },
            Access::Write {
                offset: 0x18,
                size: 4,
                value: 0xc000_0000
            },
            Access::Write {
                offset: 0x20,
                size: 8,
                value: 0x1_2345_6000
            },
            Access::Write {
                offset: 0x3ff8,
                size: 8,
                value: u64::MAX
            },
        ]
    );
}

#[test]
fn test_access_beyond_the_window_is_refused_and_never_reaches_it() {
    let (mut c, window, _) = connected(None);
    window.take();
    let access = RegionAccess {
        offset: WINDOW_SIZE - 4,
        region: 0,
        count: 8,
    };
    let reply = c.call(Command::RegionRead, access.as_bytes());
    assert!(reply.header.is_error());
    assert!(window.take().is_empty());
}

#[test]
fn test_placement_away_from_the_drhd_base_reports_the_address() {
    let (mut c, _, placed) = connected(Some(0xfeb0_0000));
    // SeaBIOS: size, clear, place, then enable memory decoding.
    region_write(&mut c, CONFIG, 0x10, &[0xff; 4]);
    region_write(&mut c, CONFIG, 0x10, &[0; 4]);
    region_write(&mut c, CONFIG, 0x10, &0xfebf_c000u32.to_le_bytes());
    assert!(
        placed.try_recv().is_err(),
        "not decoded before Memory Space Enable"
    );
    region_write(&mut c, CONFIG, 0x04, &MEMORY_SPACE.to_le_bytes());
    assert_eq!(placed.recv_timeout(Duration::from_secs(5)), Ok(0xfebf_c000));
    assert!(placed.try_recv().is_err(), "reported once");
}

#[test]
fn test_placement_at_the_drhd_base_is_reported_too() {
    let (mut c, _, placed) = connected(Some(0xfeb0_0000));
    region_write(&mut c, CONFIG, 0x10, &0xfeb0_0000u32.to_le_bytes());
    region_write(&mut c, CONFIG, 0x04, &MEMORY_SPACE.to_le_bytes());
    assert_eq!(placed.recv_timeout(Duration::from_secs(5)), Ok(0xfeb0_0000));
}

#[test]
fn test_client_reset_resets_the_window() {
    let (mut c, window, _) = connected(None);
    window.take();
    let reply = c.call(Command::DeviceReset, &[]);
    assert!(!reply.header.is_error());
    assert_eq!(window.take(), [Access::Reset]);
}

/// `iasl -d` (ACPICA, Debian package acpica-tools; scripts/setup installs it) must read our
/// table without complaint and print the fields we wrote.
#[test]
fn test_dmar_table_disassembles_with_iasl() {
    let iasl = std::process::Command::new("iasl").arg("-v").output();
    assert!(
        iasl.is_ok(),
        "iasl not found: install acpica-tools (scripts/setup does)"
    );
    let spec = DmarSpec {
        host_address_width: 48,
        register_base: 0xfeb0_0000,
        register_size: WINDOW_SIZE,
        devices: vec!["05.0".parse().unwrap(), "00:06.1".parse().unwrap()],
    };
    let dir = std::env::temp_dir().join(format!("vsvm-dmar-iasl-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let table = dir.join("dmar.dat");
    std::fs::write(&table, spec.to_bytes().unwrap()).unwrap();
    let out = std::process::Command::new("iasl")
        .arg("-d")
        .arg(&table)
        .current_dir(&dir)
        .output()
        .unwrap();
    let log =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "iasl failed:\n{log}");
    let dsl = std::fs::read_to_string(dir.join("dmar.dsl")).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    // Normalise "Name : Value" lines: iasl pads names and values with spaces.
    let fields: Vec<(String, String)> = dsl
        .lines()
        .filter_map(|l| {
            let l = l.split_once(']').map_or(l, |(_, rest)| rest);
            let (name, value) = l.split_once(" : ")?;
            Some((name.trim().to_string(), value.trim().to_string()))
        })
        .collect();
    let values = |name: &str| -> Vec<&str> {
        fields
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    };
    assert!(
        !dsl.to_lowercase().contains("incorrect") && !dsl.to_lowercase().contains("invalid"),
        "iasl complained:\n{dsl}"
    );
    assert!(
        values("Signature")[0].starts_with("\"DMAR\""),
        "{:?}",
        values("Signature")
    );
    assert_eq!(values("Table Length"), ["00000050"]);
    assert_eq!(values("Revision"), ["01"]);
    assert_eq!(values("Oem ID"), ["\"VSVM  \""]);
    assert_eq!(values("Host Address Width"), ["2F"]);
    assert_eq!(values("Flags"), ["00", "00"], "DMAR flags, DRHD flags");
    assert_eq!(values("Subtable Type"), ["0000 [Hardware Unit Definition]"]);
    assert_eq!(values("Length"), ["0020"]);
    // ACPICA 20200925 predates the DRHD Size field and shows it as the first "Reserved".
    assert_eq!(values("Reserved")[1], "02", "16 KiB = 2^2 pages");
    assert_eq!(values("PCI Segment Number"), ["0000"]);
    assert_eq!(values("Register Base Address"), ["00000000FEB00000"]);
    assert_eq!(
        values("Device Scope Type"),
        ["01 [PCI Endpoint Device]", "01 [PCI Endpoint Device]"]
    );
    assert_eq!(values("Entry Length"), ["08", "08"]);
    assert_eq!(values("Enumeration ID"), ["00", "00"]);
    assert_eq!(values("PCI Bus Number"), ["00", "00"]);
    assert_eq!(values("PCI Path"), ["05,00", "06,01"]);
}
