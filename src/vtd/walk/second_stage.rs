//! Second-stage paging: 3-, 4- or 5-level tables (per AW and SAGAW) with R/W/X permissions,
//! 4 KiB / 2 MiB / 1 GiB pages and optional A/D flags. VT-d spec 3.7 and 9.8.

use bitfield_struct::bitfield;

use crate::mem::{Gpa, MemView};
use crate::vtd::request::Perms;

use super::{
    bits_from, entry_address, page_output, set_flags, FlagUpdate, LevelMasks, PageSize,
    MAX_AD_RETRIES, PAGE_SHIFT,
};

/// A second-stage paging entry (SS-PML5E, SS-PML4E, SS-PDPE, SS-PDE or SS-PTE).
#[bitfield(u64)]
#[derive(PartialEq, Eq)]
pub struct SsPte {
    /// R (Read) field (Bit 0): reads allowed in the region this entry controls.
    pub r: bool,
    /// W (Write) field (Bit 1): writes allowed.
    pub w: bool,
    /// X (Execute) field (Bit 2): instruction fetches allowed (honoured when SSEE is set).
    pub x: bool,
    /// EMT (Extended Memory Type) field (Bit 3~5), leaf entries; not modelled.
    #[bits(3)]
    pub emt: u8,
    /// IPAT (Ignore PAT) field (Bit 6), leaf entries; not modelled.
    pub ipat: bool,
    /// PS (Page Size) field (Bit 7): this SS-PDE (2 MiB) or SS-PDPE (1 GiB) maps a page.
    pub ps: bool,
    /// A (Accessed) field (Bit 8): set by hardware when SSADE is set.
    pub a: bool,
    /// D (Dirty) field (Bit 9), leaf entries: set by hardware on writes when SSADE is set.
    pub d: bool,
    #[bits(1)]
    __: u8,
    /// SNP (Snoop) field (Bit 11), leaf entries; reserved elsewhere and in legacy mode.
    pub snp: bool,
    /// ADDR (Address) field (Bit 12~51): next table or page frame, in 4 KiB frames.
    #[bits(40)]
    pub addr: u64,
    #[bits(10)]
    __: u16,
    /// TM (Transient Mapping) field (Bit 62); reserved in this model (QEMU's default).
    pub tm: bool,
    #[bits(1)]
    __: u8,
}

impl SsPte {
    /// The address field as an address.
    pub const fn address(self) -> u64 {
        self.addr() << PAGE_SHIFT
    }
}

/// Bits software may use freely: 52-61 and 63 (QEMU `VTD_SL_IGN_COM`).
pub const SS_IGNORED: u64 = 0xbff0_0000_0000_0000;
/// SNP (bit 11), reserved in non-leaf entries (QEMU `VTD_SPTE_SNP`).
pub const SS_SNP: u64 = 1 << SsPte::SNP_OFFSET;
/// PS (bit 7).
pub const SS_PS: u64 = 1 << SsPte::PS_OFFSET;

/// Reserved bits of second-stage entries, before the address width is applied, indexed by
/// level (1-5), as QEMU's `VTD_SPTE_PAGE_L*_RSVD_MASK` / `VTD_SPTE_LPAGE_L*_RSVD_MASK`:
/// level 4 and 5 entries cannot map pages (PS reserved), 2 MiB / 1 GiB frames must be aligned.
pub const SS_RSVD_TABLE: [u64; 6] = [0, SS_SNP, SS_SNP, SS_SNP, SS_SNP | SS_PS, SS_SNP | SS_PS];
/// Reserved bits of 2 MiB (index 2) and 1 GiB (index 3) leaf entries.
pub const SS_RSVD_LARGE: [u64; 4] = [0, 0, 0x1f_f800, 0x3fff_f800];

/// Reserved-bit masks for one remapping unit's second-stage entries: one table, checked once.
pub type SsReserved = LevelMasks;

/// Second-stage masks for host address width `haw`. In scalable mode SNP is a leaf attribute
/// (QEMU clears it from the leaf masks); large pages the unit does not support make PS reserved.
pub fn reserved(haw: u8, scalable: bool, pages_2m: bool, pages_1g: bool) -> SsReserved {
    let above = bits_from(haw) & !SS_IGNORED;
    let mut table = SS_RSVD_TABLE.map(|m| m | above);
    let mut large = SS_RSVD_LARGE.map(|m| m | above);
    if scalable {
        table[1] &= !SS_SNP;
        large[2] &= !SS_SNP;
        large[3] &= !SS_SNP;
    }
    if !pages_2m {
        large[2] |= SS_PS;
    }
    if !pages_1g {
        large[3] |= SS_PS;
    }
    LevelMasks { table, large }
}

/// One second-stage translation structure, as a context or PASID entry describes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SsTable {
    /// SSPTPTR/SLPTPTR: address of the top-level table.
    pub root: u64,
    /// Number of levels (3, 4 or 5).
    pub levels: u8,
    /// Input address width: min(AGAW, MGAW).
    pub width: u8,
    /// SSADE: set A and D flags.
    pub ad: bool,
    /// SSEE: honour the X bits (otherwise execute follows read).
    pub exec: bool,
}

/// Cumulative permissions along a second-stage walk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SsPerms {
    /// Every entry has R.
    pub read: bool,
    /// Every entry has W.
    pub write: bool,
    /// Every entry has X (or read, without SSEE).
    pub exec: bool,
}

impl SsPerms {
    /// As request permissions; execute needs `exec_requests` (ERE) too.
    pub const fn as_perms(self, exec_requests: bool) -> Perms {
        Perms {
            read: self.read,
            write: self.write,
            exec: self.exec && exec_requests,
            privileged: false,
        }
    }

    /// `perms` limited by these (nested translation: both stages must allow an access).
    pub const fn restrict(self, perms: Perms) -> Perms {
        Perms {
            read: perms.read && self.read,
            write: perms.write && self.write,
            exec: perms.exec && self.exec,
            privileged: perms.privileged,
        }
    }
}

/// A successful second-stage walk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SsWalk {
    /// Output address of the requested byte.
    pub output: u64,
    /// Size of the page.
    pub page: PageSize,
    /// Cumulative permissions.
    pub perms: SsPerms,
    /// D is set in the leaf, or A/D tracking is off.
    pub dirty: bool,
}

/// Why a second-stage walk stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SsFault {
    /// The input address is at or above 2^width.
    BeyondWidth,
    /// The top-level entry (through SSPTPTR) could not be read.
    RootAccess,
    /// A lower-level entry could not be read.
    TableAccess,
    /// An entry has R, W (and X) clear.
    NotPresent,
    /// An entry has a reserved bit set.
    Reserved,
    /// Setting A/D failed (write error, or the guest kept changing the entry).
    AdUpdate,
}

/// Walks `ss` for `input`. With A/D enabled, sets A in every entry used and, when `write` and
/// the cumulative permissions allow writing, D in the leaf. Permissions are returned for the
/// caller to check, so the same walk serves table fetches and final translations.
pub fn walk(
    mem: &MemView,
    ss: &SsTable,
    rsvd: &SsReserved,
    input: u64,
    write: bool,
) -> Result<SsWalk, SsFault> {
    if input & bits_from(ss.width) != 0 {
        return Err(SsFault::BeyondWidth);
    }
    let mut table = ss.root;
    let mut perms = SsPerms {
        read: true,
        write: true,
        exec: true,
    };
    // Fixed depth: at most `levels` (<= 5) iterations, whatever the tables contain.
    for level in (1..=ss.levels.min(5)).rev() {
        let addr = entry_address(table, input, level);
        let pte = read_entry(mem, ss, rsvd, addr, level, perms, write)?;
        perms.read &= pte.r();
        perms.write &= pte.w();
        perms.exec &= if ss.exec { pte.x() } else { pte.r() };
        let page = match PageSize::at_level(level) {
            Some(page) if level == 1 || pte.ps() => page,
            _ => {
                table = pte.address();
                continue;
            }
        };
        let frame = pte.address() & !(page.bytes() - 1);
        return Ok(SsWalk {
            output: page_output(frame, page, input),
            page,
            perms,
            dirty: !ss.ad || pte.d(),
        });
    }
    // Only reachable with a nonsense level count, which decoding never produces.
    Err(SsFault::TableAccess)
}

/// Reads and checks one entry, setting A (and D in a writable leaf) when enabled.
fn read_entry(
    mem: &MemView,
    ss: &SsTable,
    rsvd: &SsReserved,
    addr: u64,
    level: u8,
    above: SsPerms,
    write: bool,
) -> Result<SsPte, SsFault> {
    let access_fault = if level == ss.levels {
        SsFault::RootAccess
    } else {
        SsFault::TableAccess
    };
    for _ in 0..MAX_AD_RETRIES {
        let raw = mem.read_u64(Gpa(addr)).map_err(|_| access_fault)?;
        let pte = SsPte::from_bits(raw);
        if !(pte.r() || pte.w() || (ss.exec && pte.x())) {
            return Err(SsFault::NotPresent);
        }
        if raw & rsvd.mask(level, pte.ps()) != 0 {
            return Err(SsFault::Reserved);
        }
        if !ss.ad {
            return Ok(pte);
        }
        let leaf = level == 1 || pte.ps();
        let dirty = leaf && write && above.write && pte.w();
        let flags = SsPte::new().with_a(true).with_d(dirty).into_bits();
        match set_flags(mem, addr, raw, flags) {
            Ok(FlagUpdate::Set(now)) => return Ok(SsPte::from_bits(now)),
            Ok(FlagUpdate::Changed) => continue,
            Err(_) => return Err(SsFault::AdUpdate),
        }
    }
    Err(SsFault::AdUpdate)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HAW_48: u64 = 0xffff_0000_0000_0000;

    #[test]
    fn test_reserved_masks_pinned_to_qemu() {
        // QEMU (legacy, no stale TM): L1 0x800 | ~(HAW | IGN_COM); L4 0x880 | ...;
        // 2M 0x1ff800 | ...; 1G 0x3ffff800 | ... .
        let legacy = reserved(48, false, true, true);
        let above = HAW_48 & !SS_IGNORED;
        assert_eq!(legacy.table[1], 0x800 | above);
        assert_eq!(legacy.table[4], 0x880 | above);
        assert_eq!(legacy.large[2], 0x1f_f800 | above);
        assert_eq!(legacy.large[3], 0x3fff_f800 | above);
        assert_eq!(above, 0x4000_0000_0000_0000 | 0x000f_0000_0000_0000);
        // Scalable mode: SNP is allowed in leaves.
        let scalable = reserved(48, true, true, false);
        assert_eq!(scalable.table[1], above);
        assert_eq!(scalable.table[2], 0x800 | above);
        assert_eq!(scalable.large[2], 0x1f_f000 | above);
        assert_eq!(
            scalable.large[3] & SS_PS,
            SS_PS,
            "1 GiB pages unsupported: PS reserved"
        );
    }

    #[test]
    fn test_field_positions_match_spec_bits() {
        assert_eq!(SsPte::new().with_a(true).into_bits(), 1 << 8);
        assert_eq!(SsPte::new().with_d(true).into_bits(), 1 << 9);
        assert_eq!(SsPte::new().with_tm(true).into_bits(), 1 << 62);
        assert_eq!(SsPte::new().with_addr(1).into_bits(), 1 << 12);
        assert_eq!(SsPte::from_bits(0xdead_b000 | 3).address(), 0xdead_b000);
    }

    #[test]
    fn test_level_four_and_five_leaves_are_reserved() {
        let rsvd = reserved(48, true, true, true);
        let ps = SsPte::new().with_r(true).with_ps(true);
        assert_ne!(rsvd.mask(4, ps.ps()) & SS_PS, 0);
        assert_ne!(rsvd.mask(5, ps.ps()) & SS_PS, 0);
        assert_eq!(rsvd.mask(3, ps.ps()) & SS_PS, 0);
    }
}
