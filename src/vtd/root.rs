//! Root entries: the 4 KiB root table indexed by bus number, legacy and scalable mode.
//! VT-d spec 9.1 (Root Entry) and 9.2 (Scalable-Mode Root Entry).

use bitfield_struct::bitfield;

use super::ids::SourceId;
use super::walk::{bits_from, PAGE_SHIFT};

/// Size of a root entry in both modes (128 bits); the root table has 256 of them.
pub const ROOT_ENTRY_BYTES: u64 = 16;

/// Legacy root entry, bits 63:0 (bits 127:64 are all reserved).
#[bitfield(u64)]
#[derive(PartialEq, Eq)]
pub struct LegacyRootLo {
    /// P (Present) field (Bit 0): the context table pointer is valid.
    pub present: bool,
    #[bits(11)]
    __: u16,
    /// CTP (Context-table Pointer) field (Bit 12~63): 4 KiB-aligned address of the context
    /// table for this bus, in 4 KiB frames.
    #[bits(52)]
    pub ctp: u64,
}

/// Scalable-mode root entry, bits 63:0: the lower context table (devfn 0-127).
#[bitfield(u64)]
#[derive(PartialEq, Eq)]
pub struct ScalableRootLo {
    /// LP (Lower Present) field (Bit 0): the lower context table pointer is valid.
    pub lp: bool,
    #[bits(11)]
    __: u16,
    /// LCTP (Lower Context Table Pointer) field (Bit 12~63): context table for devfn 0-127,
    /// in 4 KiB frames.
    #[bits(52)]
    pub lctp: u64,
}

/// Scalable-mode root entry, bits 127:64: the upper context table (devfn 128-255).
#[bitfield(u64)]
#[derive(PartialEq, Eq)]
pub struct ScalableRootHi {
    /// UP (Upper Present) field (Bit 64): the upper context table pointer is valid.
    pub up: bool,
    #[bits(11)]
    __: u16,
    /// UCTP (Upper Context Table Pointer) field (Bit 76~127): context table for devfn 128-255,
    /// in 4 KiB frames.
    #[bits(52)]
    pub uctp: u64,
}

/// Reserved bits of a legacy root entry, per 64-bit word, before the address width is
/// applied (QEMU `VTD_ROOT_ENTRY_RSVD`: bits 11:1; the upper word is entirely reserved).
pub const LEGACY_ROOT_RSVD: [u64; 2] = [0xffe, u64::MAX];
/// Reserved bits of a scalable-mode root entry, per word (bits 11:1 and 75:65).
pub const SCALABLE_ROOT_RSVD: [u64; 2] = [0xffe, 0xffe];

/// Reserved bits per word with the pointer bits above the host address width `haw` added.
pub fn root_reserved(scalable: bool, haw: u8) -> [u64; 2] {
    let base = if scalable {
        SCALABLE_ROOT_RSVD
    } else {
        LEGACY_ROOT_RSVD
    };
    base.map(|word| word | bits_from(haw))
}

/// Where a root entry sends one device: the context table and the entry index in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RootLookup {
    /// The half of the root entry serving this devfn is not present.
    NotPresent,
    /// A reserved bit is set in the half serving this devfn.
    Reserved,
    /// The context entry for the device is entry `index` of the table at `table`.
    Context {
        /// Guest-physical address of the context table.
        table: u64,
        /// Index of the device's entry in it.
        index: u64,
    },
}

/// A 128-bit root entry as read from the root table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RootEntry {
    /// Bits 63:0.
    pub lo: u64,
    /// Bits 127:64.
    pub hi: u64,
}

impl RootEntry {
    /// Address of the root entry for `source`'s bus in the table at `root_table` (wrapping:
    /// a nonsense table address just fails to read).
    pub fn address(root_table: u64, source: SourceId) -> u64 {
        root_table.wrapping_add(u64::from(source.bus()) * ROOT_ENTRY_BYTES)
    }

    /// Legacy mode: all 256 devfns share one context table of 128-bit entries. The reserved
    /// check covers both words (the upper one is reserved as a whole).
    pub fn legacy(self, source: SourceId, reserved: &[u64; 2]) -> RootLookup {
        let lo = LegacyRootLo::from_bits(self.lo);
        if !lo.present() {
            RootLookup::NotPresent
        } else if self.lo & reserved[0] != 0 || self.hi & reserved[1] != 0 {
            RootLookup::Reserved
        } else {
            RootLookup::Context {
                table: lo.ctp() << PAGE_SHIFT,
                index: u64::from(source.devfn()),
            }
        }
    }

    /// Scalable mode: devfn 0-127 use the lower half, 128-255 the upper half, each pointing to
    /// a table of 128 256-bit entries. Only the half that serves the device is checked, since
    /// each half is an independent pointer with its own present bit.
    pub fn scalable(self, source: SourceId, reserved: &[u64; 2]) -> RootLookup {
        let devfn = source.devfn();
        let upper = devfn >= 0x80;
        let (present, ptr, word, mask) = if upper {
            let hi = ScalableRootHi::from_bits(self.hi);
            (hi.up(), hi.uctp(), self.hi, reserved[1])
        } else {
            let lo = ScalableRootLo::from_bits(self.lo);
            (lo.lp(), lo.lctp(), self.lo, reserved[0])
        };
        if !present {
            RootLookup::NotPresent
        } else if word & mask != 0 {
            RootLookup::Reserved
        } else {
            RootLookup::Context {
                table: ptr << PAGE_SHIFT,
                index: u64::from(devfn & 0x7f),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_reserved_masks_pinned_to_qemu() {
        // QEMU: VTD_ROOT_ENTRY_RSVD(aw) = 0xffe | ~VTD_HAW_MASK(aw); legacy hi: any bit.
        assert_eq!(root_reserved(false, 48), [0xffff_0000_0000_0ffe, u64::MAX]);
        assert_eq!(root_reserved(true, 39)[1], 0xffff_ff80_0000_0ffe);
    }

    #[test]
    fn test_field_positions_match_spec_bits() {
        assert_eq!(ScalableRootHi::new().with_up(true).into_bits(), 1);
        assert_eq!(ScalableRootHi::new().with_uctp(1).into_bits(), 1 << 12);
        assert_eq!(LegacyRootLo::new().with_ctp(0xabc).into_bits(), 0xabc000);
    }

    #[test]
    fn test_scalable_lookup_uses_the_half_for_the_devfn() {
        let entry = RootEntry {
            lo: 0x1000 | 1,
            hi: 0x2000 | 1,
        };
        let rsvd = root_reserved(true, 48);
        assert_eq!(
            entry.scalable(SourceId::new(0, 1, 0), &rsvd),
            RootLookup::Context {
                table: 0x1000,
                index: 8
            }
        );
        assert_eq!(
            entry.scalable(SourceId::new(0, 17, 1), &rsvd),
            RootLookup::Context {
                table: 0x2000,
                index: 9
            }
        );
        let lower_only = RootEntry {
            lo: 0x1000 | 1,
            hi: 0x2,
        };
        assert_eq!(
            lower_only.scalable(SourceId::new(0, 17, 1), &rsvd),
            RootLookup::NotPresent
        );
        let reserved_hi = RootEntry {
            lo: 0x1000 | 1,
            hi: 0x2000 | 3,
        };
        assert_eq!(
            reserved_hi.scalable(SourceId::new(0, 17, 1), &rsvd),
            RootLookup::Reserved
        );
        assert!(matches!(
            reserved_hi.scalable(SourceId::new(0, 1, 0), &rsvd),
            RootLookup::Context { .. }
        ));
    }

    #[test]
    fn test_legacy_lookup_rejects_any_upper_bit() {
        let rsvd = root_reserved(false, 48);
        let entry = RootEntry {
            lo: 0x5000 | 1,
            hi: 0,
        };
        assert_eq!(
            entry.legacy(SourceId::new(0, 3, 2), &rsvd),
            RootLookup::Context {
                table: 0x5000,
                index: 0x1a
            }
        );
        assert_eq!(
            RootEntry {
                hi: 1 << 40,
                ..entry
            }
            .legacy(SourceId(0), &rsvd),
            RootLookup::Reserved
        );
        assert_eq!(
            RootEntry { lo: 0x5000, hi: 0 }.legacy(SourceId(0), &rsvd),
            RootLookup::NotPresent
        );
    }
}
