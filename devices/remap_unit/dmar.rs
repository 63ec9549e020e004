//! The ACPI DMAR table announcing our remap unit to the guest: one DRHD whose register base is
//! the remap unit's BAR0, scoped to the accelerators. Follows the VT-d spec (rev 4.1) chapter 8
//! "DMA Remapping Reporting Structure" (§8.1 DMAR, §8.3 DRHD, §8.3.1 Device Scope) and the ACPI
//! spec (6.5) §5.2.6 System Description Table Header.

use bitflags::bitflags;
use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::pci::Bdf;

/// Standard ACPI table header (ACPI §5.2.6).
#[repr(C, packed)]
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct AcpiHeader {
    /// Table signature ("DMAR").
    pub signature: [u8; 4],
    /// Length of the whole table, header included.
    pub length: U32,
    /// Table revision.
    pub revision: u8,
    /// Makes every byte of the table sum to zero (mod 256).
    pub checksum: u8,
    /// OEM ID.
    pub oem_id: [u8; 6],
    /// OEM table ID.
    pub oem_table_id: [u8; 8],
    /// OEM revision.
    pub oem_revision: U32,
    /// ID of the tool that made the table.
    pub creator_id: [u8; 4],
    /// Revision of that tool.
    pub creator_revision: U32,
}

/// The DMAR table's fixed part (VT-d §8.1).
#[repr(C, packed)]
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct DmarHeader {
    /// ACPI header.
    pub acpi: AcpiHeader,
    /// Host Address Width minus one.
    pub host_address_width: u8,
    /// [`DmarFlags`].
    pub flags: u8,
    /// Reserved (0).
    pub reserved: [u8; 10],
}

/// Header of every remapping structure after the DMAR header (VT-d §8.2).
#[repr(C, packed)]
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct StructureHeader {
    /// [`StructureType`].
    pub kind: U16,
    /// Length of the structure, device scopes included.
    pub length: U16,
}

/// DMA Remapping Hardware Unit Definition, without its device scopes (VT-d §8.3).
#[repr(C, packed)]
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct Drhd {
    /// Type 0, length.
    pub header: StructureHeader,
    /// [`DrhdFlags`].
    pub flags: u8,
    /// Register set size: 2^N 4 KiB pages (bits 3:0).
    pub size: u8,
    /// PCI segment.
    pub segment: U16,
    /// Base address of the remapping hardware's registers.
    pub register_base: U64,
}

/// Device Scope entry, without its path (VT-d §8.3.1).
#[repr(C, packed)]
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct DeviceScope {
    /// [`ScopeType`].
    pub kind: u8,
    /// Length of the entry, path included.
    pub length: u8,
    /// Flags (VT-d 4.x; reserved before): 0.
    pub flags: u8,
    /// Reserved (0).
    pub reserved: u8,
    /// Enumeration ID (IOAPIC/HPET/ACPI device numbers; 0 for PCI devices).
    pub enumeration_id: u8,
    /// Bus number where the path starts.
    pub start_bus: u8,
}

/// One hop of a device scope's path.
#[repr(C, packed)]
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct PathEntry {
    /// PCI device number.
    pub device: u8,
    /// PCI function number.
    pub function: u8,
}

/// Remapping structure types (VT-d §8.2).
#[repr(u16)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StructureType {
    /// DMA Remapping Hardware Unit Definition.
    Drhd = 0,
}

/// Device scope types (VT-d §8.3.1).
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScopeType {
    /// PCI Endpoint Device.
    PciEndpoint = 1,
}

bitflags! {
    /// DMAR flags (VT-d §8.1). We set none: no interrupt remapping, and no opt-ins.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct DmarFlags: u8 {
        /// Interrupt remapping supported.
        const INTR_REMAP = 1 << 0;
        /// Firmware asks the OS not to enable x2APIC.
        const X2APIC_OPT_OUT = 1 << 1;
        /// Platform opts in to DMA protection of external devices.
        const DMA_CTRL_PLATFORM_OPT_IN = 1 << 2;
        const _ = !0;
    }
}

bitflags! {
    /// DRHD flags (VT-d §8.3).
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct DrhdFlags: u8 {
        /// The unit covers every PCI device of its segment not claimed by another unit.
        const INCLUDE_PCI_ALL = 1 << 0;
        const _ = !0;
    }
}

/// Table signature.
pub const SIGNATURE: [u8; 4] = *b"DMAR";
/// Table revision we write (the one Linux and QEMU use).
pub const REVISION: u8 = 1;
/// OEM ID (6 bytes, space padded).
pub const OEM_ID: [u8; 6] = *b"VSVM  ";
/// OEM table ID (8 bytes).
pub const OEM_TABLE_ID: [u8; 8] = *b"VSVMDMAR";
/// OEM revision.
pub const OEM_REVISION: u32 = 1;
/// Creator ID.
pub const CREATOR_ID: [u8; 4] = *b"VSVM";
/// Creator revision.
pub const CREATOR_REVISION: u32 = 1;

/// The smallest register set: one 4 KiB page (DRHD size 0).
pub const REGISTER_PAGE: u64 = 4096;
/// The DRHD size field holds N in bits 3:0: at most 2^15 pages.
const MAX_SIZE_ORDER: u32 = 15;

/// What goes into the table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DmarSpec {
    /// Host address width in bits (the VT-d unit's MGAW, e.g. 48); stored minus one.
    pub host_address_width: u8,
    /// Base of the register set: the remap unit's BAR0 address.
    pub register_base: u64,
    /// Size of the register set (BAR0's size): a power of two, at least 4 KiB.
    pub register_size: u64,
    /// The endpoints the unit translates for (segment 0).
    pub devices: Vec<Bdf>,
}

/// Why a DMAR table cannot be written.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DmarError {
    /// The width is 0 or more than 64 bits.
    #[error("host address width {0} out of range (1..=64)")]
    AddressWidth(u8),
    /// The base is 0 or not aligned to the register set's size.
    #[error("register base 0x{base:x} not a nonzero multiple of the register size 0x{size:x}")]
    BaseAlignment {
        /// Base.
        base: u64,
        /// Size.
        size: u64,
    },
    /// A device appears twice.
    #[error("device {0} listed twice")]
    DuplicateDevice(Bdf),
    /// No device: Linux ignores a unit without devices (and without INCLUDE_PCI_ALL).
    #[error("no device in the DRHD's scope: the guest would ignore the unit")]
    NoDevices,
    /// The size is not 2^N 4 KiB pages with N ≤ 15.
    #[error("register size 0x{0:x} is not 2^N 4 KiB pages (N <= 15)")]
    RegisterSize(u64),
    /// The scopes overflow the DRHD's 16-bit length.
    #[error("{0} devices do not fit one DRHD")]
    TooManyDevices(usize),
}

/// N of the DRHD size field for a register set of `size` bytes.
fn size_order(size: u64) -> Result<u8, DmarError> {
    if !size.is_power_of_two() || size < REGISTER_PAGE {
        return Err(DmarError::RegisterSize(size));
    }
    let order = (size / REGISTER_PAGE).trailing_zeros();
    if order > MAX_SIZE_ORDER {
        return Err(DmarError::RegisterSize(size));
    }
    Ok(order as u8)
}

/// The byte that makes `bytes` sum to zero once added.
fn balancing_checksum(bytes: &[u8]) -> u8 {
    bytes
        .iter()
        .fold(0u8, |sum, b| sum.wrapping_add(*b))
        .wrapping_neg()
}

impl DmarSpec {
    /// The table's bytes, as `-acpitable file=` expects them (header included, checksum set).
    pub fn to_bytes(&self) -> Result<Vec<u8>, DmarError> {
        if !(1..=64).contains(&self.host_address_width) {
            return Err(DmarError::AddressWidth(self.host_address_width));
        }
        let order = size_order(self.register_size)?;
        if self.register_base == 0 || self.register_base % self.register_size != 0 {
            return Err(DmarError::BaseAlignment {
                base: self.register_base,
                size: self.register_size,
            });
        }
        if self.devices.is_empty() {
            return Err(DmarError::NoDevices);
        }
        let scope_len = size_of::<DeviceScope>() + size_of::<PathEntry>();
        let drhd_len = self
            .devices
            .len()
            .checked_mul(scope_len)
            .and_then(|s| s.checked_add(size_of::<Drhd>()))
            .and_then(|l| u16::try_from(l).ok())
            .ok_or(DmarError::TooManyDevices(self.devices.len()))?;
        let mut seen = std::collections::BTreeSet::new();
        if let Some(twice) = self.devices.iter().find(|bdf| !seen.insert(**bdf)) {
            return Err(DmarError::DuplicateDevice(*twice));
        }
        let total = size_of::<DmarHeader>() + usize::from(drhd_len);

        let header = DmarHeader {
            acpi: AcpiHeader {
                signature: SIGNATURE,
                // At most 48 + 65535 bytes.
                length: U32::new(total as u32),
                revision: REVISION,
                checksum: 0,
                oem_id: OEM_ID,
                oem_table_id: OEM_TABLE_ID,
                oem_revision: U32::new(OEM_REVISION),
                creator_id: CREATOR_ID,
                creator_revision: U32::new(CREATOR_REVISION),
            },
            host_address_width: self.host_address_width - 1,
            flags: DmarFlags::empty().bits(),
            reserved: [0; 10],
        };
        let drhd = Drhd {
            header: StructureHeader {
                kind: U16::new(StructureType::Drhd as u16),
                length: U16::new(drhd_len),
            },
            flags: DrhdFlags::empty().bits(),
            size: order,
            segment: U16::new(0),
            register_base: U64::new(self.register_base),
        };
        let mut bytes = Vec::with_capacity(total);
        bytes.extend_from_slice(header.as_bytes());
        bytes.extend_from_slice(drhd.as_bytes());
        for bdf in &self.devices {
            let scope = DeviceScope {
                kind: ScopeType::PciEndpoint as u8,
                length: scope_len as u8,
                flags: 0,
                reserved: 0,
                enumeration_id: 0,
                start_bus: bdf.bus(),
            };
            bytes.extend_from_slice(scope.as_bytes());
            let hop = PathEntry {
                device: bdf.device(),
                function: bdf.function(),
            };
            bytes.extend_from_slice(hop.as_bytes());
        }
        let checksum_at = std::mem::offset_of!(AcpiHeader, checksum);
        bytes[checksum_at] = balancing_checksum(&bytes);
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> DmarSpec {
        DmarSpec {
            host_address_width: 48,
            register_base: 0xfeb0_0000,
            register_size: 0x4000,
            devices: vec!["05.0".parse().unwrap(), "01:02.3".parse().unwrap()],
        }
    }

    fn le16(b: &[u8], at: usize) -> u16 {
        u16::from_le_bytes([b[at], b[at + 1]])
    }

    fn le32(b: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
    }

    fn le64(b: &[u8], at: usize) -> u64 {
        u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
    }

    /// Decodes the table by the offsets printed in VT-d §8.1/§8.3/§8.3.1 (independently of
    /// the structs above) and checks every field.
    #[test]
    fn test_table_decodes_field_by_field() {
        let b = spec().to_bytes().unwrap();
        // ACPI header.
        assert_eq!(&b[0..4], b"DMAR");
        assert_eq!(le32(&b, 4) as usize, b.len());
        assert_eq!(b.len(), 48 + 16 + 2 * 8);
        assert_eq!(b[8], 1, "revision");
        assert_eq!(b.iter().fold(0u8, |s, x| s.wrapping_add(*x)), 0, "checksum");
        assert_eq!(&b[10..16], b"VSVM  ");
        assert_eq!(&b[16..24], b"VSVMDMAR");
        assert_eq!(le32(&b, 24), 1);
        assert_eq!(&b[28..32], b"VSVM");
        assert_eq!(le32(&b, 32), 1);
        // DMAR fields.
        assert_eq!(b[36], 47, "HAW is stored minus one");
        assert_eq!(b[37], 0, "no INTR_REMAP, no X2APIC_OPT_OUT, no opt-in");
        assert_eq!(&b[38..48], &[0; 10]);
        // DRHD.
        assert_eq!(le16(&b, 48), 0, "type DRHD");
        assert_eq!(le16(&b, 50), 16 + 2 * 8);
        assert_eq!(b[52], 0, "not INCLUDE_PCI_ALL");
        assert_eq!(b[53], 2, "16 KiB = 2^2 pages");
        assert_eq!(le16(&b, 54), 0, "segment");
        assert_eq!(le64(&b, 56), 0xfeb0_0000);
        // Device scopes: type, length, flags, reserved, enumeration ID, start bus, path.
        assert_eq!(&b[64..72], &[1, 8, 0, 0, 0, 0x00, 0x05, 0]);
        assert_eq!(&b[72..80], &[1, 8, 0, 0, 0, 0x01, 0x02, 3]);
    }

    #[test]
    fn test_one_page_register_set_has_size_zero() {
        let table = DmarSpec {
            register_size: REGISTER_PAGE,
            register_base: 0xfebf_f000,
            ..spec()
        }
        .to_bytes()
        .unwrap();
        assert_eq!(table[53], 0);
        assert_eq!(le64(&table, 56), 0xfebf_f000);
    }

    #[test]
    fn test_invalid_specs_are_refused() {
        let cases = [
            (
                DmarSpec {
                    host_address_width: 0,
                    ..spec()
                },
                DmarError::AddressWidth(0),
            ),
            (
                DmarSpec {
                    host_address_width: 65,
                    ..spec()
                },
                DmarError::AddressWidth(65),
            ),
            (
                DmarSpec {
                    register_size: 0x3000,
                    ..spec()
                },
                DmarError::RegisterSize(0x3000),
            ),
            (
                DmarSpec {
                    register_size: 0x800,
                    ..spec()
                },
                DmarError::RegisterSize(0x800),
            ),
            (
                DmarSpec {
                    register_size: REGISTER_PAGE << 16,
                    register_base: REGISTER_PAGE << 16,
                    ..spec()
                },
                DmarError::RegisterSize(REGISTER_PAGE << 16),
            ),
            (
                DmarSpec {
                    register_base: 0xfeb0_1000,
                    ..spec()
                },
                DmarError::BaseAlignment {
                    base: 0xfeb0_1000,
                    size: 0x4000,
                },
            ),
            (
                DmarSpec {
                    register_base: 0,
                    ..spec()
                },
                DmarError::BaseAlignment {
                    base: 0,
                    size: 0x4000,
                },
            ),
            (
                DmarSpec {
                    devices: vec![],
                    ..spec()
                },
                DmarError::NoDevices,
            ),
            (
                DmarSpec {
                    devices: vec!["05.0".parse().unwrap(), "00:05.0".parse().unwrap()],
                    ..spec()
                },
                DmarError::DuplicateDevice("05.0".parse().unwrap()),
            ),
        ];
        for (spec, error) in cases {
            assert_eq!(spec.to_bytes(), Err(error), "{spec:?}");
        }
    }

    #[test]
    fn test_scope_count_is_bounded_by_the_drhd_length() {
        let all: Vec<Bdf> = (0..=u16::MAX).map(Bdf::from_requester_id).collect();
        let fits = (usize::from(u16::MAX) - 16) / 8;
        let table = DmarSpec {
            devices: all[..fits].to_vec(),
            ..spec()
        }
        .to_bytes()
        .unwrap();
        assert_eq!(table.len(), 48 + 16 + 8 * fits);
        assert_eq!(
            DmarSpec {
                devices: all[..fits + 1].to_vec(),
                ..spec()
            }
            .to_bytes(),
            Err(DmarError::TooManyDevices(fits + 1))
        );
    }

    #[test]
    fn test_wire_struct_sizes_match_the_spec() {
        assert_eq!(size_of::<AcpiHeader>(), 36);
        assert_eq!(size_of::<DmarHeader>(), 48);
        assert_eq!(size_of::<StructureHeader>(), 4);
        assert_eq!(size_of::<Drhd>(), 16);
        assert_eq!(size_of::<DeviceScope>(), 6);
        assert_eq!(size_of::<PathEntry>(), 2);
    }
}
