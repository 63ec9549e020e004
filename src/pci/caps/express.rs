//! The PCI Express Capability (ID 0x10), version 2, of an endpoint.
//! Follows PCI Express Base 4.0 §7.5.3; Linux needs DevCap2 bit 21 (End-End TLP Prefix
//! Supported) before it enables PASID (drivers/pci/probe.c `pci_configure_eetlp_prefix`).

use bitfield_struct::bitfield;

use super::Capability;
use crate::pci::config::Registers;

/// PCI Express capability ID.
pub const CAP_ID_EXP: u8 = 0x10;

/// Register offsets inside the capability (Linux `PCI_EXP_*`).
mod reg {
    pub const FLAGS: usize = 0x02;
    pub const DEVCAP: usize = 0x04;
    pub const DEVCTL: usize = 0x08;
    pub const DEVSTA: usize = 0x0a;
    pub const LNKCAP: usize = 0x0c;
    pub const LNKCTL: usize = 0x10;
    pub const LNKSTA: usize = 0x12;
    pub const DEVCAP2: usize = 0x24;
    pub const DEVCTL2: usize = 0x28;
    pub const LNKCAP2: usize = 0x2c;
    pub const LNKCTL2: usize = 0x30;
    /// Size of a version-2 endpoint capability.
    pub const LEN: usize = 0x3c;
}

/// PCI Express Capabilities Register (+0x02).
#[bitfield(u16)]
pub struct ExpFlags {
    /// Capability Version: must be 2 for DevCap2 to exist.
    #[bits(4)]
    pub version: u8,
    /// Device/Port Type: 0 = PCI Express Endpoint.
    #[bits(4)]
    pub port_type: u8,
    /// Slot Implemented.
    pub slot: bool,
    /// Interrupt Message Number.
    #[bits(5)]
    pub irq: u8,
    #[bits(2)]
    __: u8,
}

/// Device Capabilities 2 Register (+0x24).
#[bitfield(u32)]
pub struct DevCap2 {
    /// Completion Timeout Ranges Supported.
    #[bits(4)]
    pub completion_timeout_ranges: u8,
    /// Completion Timeout Disable Supported.
    pub completion_timeout_disable: bool,
    #[bits(16)]
    __: u32,
    /// End-End TLP Prefix Supported (bit 21): the function can carry a PASID TLP prefix.
    pub ee_prefix: bool,
    /// Max End-End TLP Prefixes (00b means 4).
    #[bits(2)]
    pub ee_prefix_max: u8,
    #[bits(8)]
    __: u8,
}

/// Device Control writable bits: error reporting enables, relaxed ordering, max payload,
/// extended tag, phantom, aux power, no snoop, max read request (not Initiate FLR).
const DEVCTL_WRITABLE: u64 = 0x7fff;
/// Device Control reset value: relaxed ordering, no snoop, 512-byte max read request.
const DEVCTL_RESET: u64 = 0x2810;
/// Device Status error bits (correctable, non-fatal, fatal, unsupported request), RW1C.
const DEVSTA_ERRORS_W1C: u64 = 0x000f;
/// Link: 2.5 GT/s, x1 (the numbers do not matter to a virtual link, only their consistency).
const LINK_SPEED_WIDTH: u64 = 0x0011;
/// Supported Link Speeds Vector: 2.5 GT/s.
const LNKCAP2_SPEEDS: u64 = 0x0002;

/// The PCI Express capability of an endpoint.
#[derive(Clone, Copy, Debug, Default)]
pub struct ExpressCapability;

impl Capability for ExpressCapability {
    fn id(&self) -> u8 {
        CAP_ID_EXP
    }

    fn size(&self) -> usize {
        reg::LEN
    }

    fn define(&self, regs: &mut Registers, base: usize) {
        let flags = ExpFlags::new().with_version(2).with_port_type(0);
        regs.define::<2>(base + reg::FLAGS, flags.into_bits().into(), 0, 0);
        // Role-Based Error Reporting (bit 15) is mandatory for PCIe 1.1+ functions.
        regs.define::<4>(base + reg::DEVCAP, 1 << 15, 0, 0);
        regs.define::<2>(base + reg::DEVCTL, DEVCTL_RESET, DEVCTL_WRITABLE, 0);
        regs.define::<2>(base + reg::DEVSTA, 0, 0, DEVSTA_ERRORS_W1C);
        regs.define::<4>(base + reg::LNKCAP, LINK_SPEED_WIDTH, 0, 0);
        regs.define::<2>(base + reg::LNKCTL, 0, 0x00c3, 0);
        regs.define::<2>(base + reg::LNKSTA, LINK_SPEED_WIDTH, 0, 0);
        let devcap2 = DevCap2::new()
            .with_ee_prefix(true)
            .with_completion_timeout_disable(true);
        regs.define::<4>(base + reg::DEVCAP2, devcap2.into_bits().into(), 0, 0);
        regs.define::<2>(base + reg::DEVCTL2, 0, 0x001f, 0);
        regs.define::<4>(base + reg::LNKCAP2, LNKCAP2_SPEEDS, 0, 0);
        regs.define::<2>(base + reg::LNKCTL2, 0x0001, 0x000f, 0);
    }
}
