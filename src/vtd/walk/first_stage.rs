//! First-stage paging: the IA-32e format (4- and 5-level) with R/W, U/S, XD, A/D/EA flags,
//! 4 KiB / 2 MiB / 1 GiB pages, SRE/WPE/ERE access rules and canonical addresses.
//! VT-d spec 3.6 (first-stage translation) and 9.7 (first-stage paging entries).

use bitfield_struct::bitfield;

use crate::mem::{Gpa, MemView};
use crate::vtd::request::{Access, Perms};

use super::second_stage::{self, SsFault, SsReserved, SsTable};
use super::{
    bits_from, entry_address, page_output, set_flags, Denied, FlagUpdate, LevelMasks, PageSize,
    MAX_AD_RETRIES, PAGE_SHIFT,
};

/// A first-stage paging entry (PML5E, PML4E, PDPE, PDE or PTE), as the CPU's IA-32e format.
#[bitfield(u64)]
#[derive(PartialEq, Eq)]
pub struct FsPte {
    /// P (Present) field (Bit 0).
    pub p: bool,
    /// R/W (Read/Write) field (Bit 1): writes allowed in the region this entry controls.
    pub rw: bool,
    /// U/S (User/Supervisor) field (Bit 2): user-level accesses allowed.
    pub us: bool,
    /// PWT (Page-level Write-Through) field (Bit 3); not modelled.
    pub pwt: bool,
    /// PCD (Page-level Cache Disable) field (Bit 4); not modelled.
    pub pcd: bool,
    /// A (Accessed) field (Bit 5): set by hardware in every entry used.
    pub a: bool,
    /// D (Dirty) field (Bit 6), leaf entries: set by hardware on writes.
    pub d: bool,
    /// PS (Page Size) field (Bit 7) in PDPE/PDE (PAT in a PTE; reserved in PML4E/PML5E).
    pub ps: bool,
    /// G (Global) field (Bit 8), leaf entries; ignored by remapping hardware.
    pub g: bool,
    #[bits(1)]
    __: u8,
    /// EA (Extended Accessed) field (Bit 10): set with A when EAFE is set.
    pub ea: bool,
    #[bits(1)]
    __: u8,
    /// ADDR (Address) field (Bit 12~51): next table or page frame, in 4 KiB frames.
    #[bits(40)]
    pub addr: u64,
    #[bits(7)]
    __: u8,
    /// PK (Protection Key) field (Bit 59~62); ignored by remapping hardware.
    #[bits(4)]
    pub pk: u8,
    /// XD (Execute Disable) field (Bit 63): instruction fetches not allowed.
    pub xd: bool,
}

impl FsPte {
    /// The address field as an address.
    pub const fn address(self) -> u64 {
        self.addr() << PAGE_SHIFT
    }
}

/// Bits 52-63 are ignored or attributes (XD, PK); never reserved (QEMU `VTD_FS_UPPER_IGNORED`).
pub const FS_UPPER: u64 = 0xfff0_0000_0000_0000;
/// PS (bit 7), reserved in PML4 and PML5 entries.
pub const FS_PS: u64 = 1 << FsPte::PS_OFFSET;

/// Reserved bits of first-stage entries before the address width is applied, by level
/// (QEMU `VTD_FPTE_PAGE_L*_RSVD_MASK`).
pub const FS_RSVD_TABLE: [u64; 6] = [0, 0, 0, 0, FS_PS, FS_PS];
/// Reserved bits of 2 MiB (index 2) and 1 GiB (index 3) leaves: frame bits below the page size
/// except bit 12, which is PAT (QEMU `VTD_FPTE_LPAGE_L2/L3_RSVD_MASK`).
pub const FS_RSVD_LARGE: [u64; 4] = [0, 0, 0x1f_e000, 0x3fff_e000];

/// Reserved-bit masks for one remapping unit's first-stage entries.
pub type FsReserved = LevelMasks;

/// First-stage masks for host address width `haw`; without 1 GiB page support PS is reserved
/// in PDPEs.
pub fn reserved(haw: u8, pages_1g: bool) -> FsReserved {
    let above = bits_from(haw) & !FS_UPPER;
    let table = FS_RSVD_TABLE.map(|m| m | above);
    let mut large = FS_RSVD_LARGE.map(|m| m | above);
    if !pages_1g {
        large[3] |= FS_PS;
    }
    LevelMasks { table, large }
}

/// Access-control fields of the PASID entry that shape first-stage permissions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FsFlags {
    /// SRE: supervisor requests allowed.
    pub sre: bool,
    /// WPE: supervisor writes honour R/W (like CR0.WP).
    pub wpe: bool,
    /// ERE: execute requests allowed.
    pub ere: bool,
    /// SMEP: supervisor instruction fetches from user pages are not allowed.
    pub smep: bool,
    /// EAFE: set the extended-accessed flag with A.
    pub eafe: bool,
}

/// Cumulative rights along a first-stage walk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FsRights {
    /// Every entry has R/W.
    pub writable: bool,
    /// Every entry has U/S.
    pub user: bool,
    /// Some entry has XD.
    pub no_exec: bool,
}

impl FsFlags {
    /// Permissions for user and supervisor requests (VT-d spec 3.6.1, the IA-32e rules with
    /// CR0.WP = WPE and CR4.SMEP = SMEP; supervisor permissions are all clear without SRE).
    pub const fn perms(self, rights: FsRights) -> (Perms, Perms) {
        let user = Perms {
            read: rights.user,
            write: rights.user && rights.writable,
            exec: self.ere && rights.user && !rights.no_exec,
            privileged: false,
        };
        let supervisor = Perms {
            read: self.sre,
            write: self.sre && (!self.wpe || rights.writable),
            exec: self.sre && self.ere && !rights.no_exec && !(self.smep && rights.user),
            privileged: true,
        };
        (user, supervisor)
    }

    /// Checks `access` against the rights; a user request to a supervisor page is reported as
    /// such (SGN.2) before any read/write/execute condition.
    pub fn check(self, rights: FsRights, access: Access) -> Result<(), Denied> {
        if !access.privileged && !rights.user {
            return Err(Denied::User);
        }
        let (user, supervisor) = self.perms(rights);
        super::check(if access.privileged { supervisor } else { user }, access)
    }
}

/// One first-stage translation structure, as a PASID entry describes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FsTable {
    /// FSPTPTR: address (guest-physical when nested) of the PML4 or PML5 table.
    pub root: u64,
    /// FSPM = 01b: 5-level paging (57-bit input addresses); otherwise 4-level (48-bit).
    pub five_level: bool,
    /// Access-control fields.
    pub flags: FsFlags,
}

impl FsTable {
    /// Number of levels.
    pub const fn levels(&self) -> u8 {
        if self.five_level {
            5
        } else {
            4
        }
    }

    /// Width of canonical input addresses.
    pub const fn width(&self) -> u8 {
        if self.five_level {
            57
        } else {
            48
        }
    }

    /// Whether `input` is canonical: bits 63..width-1 are all equal.
    pub const fn canonical(&self, input: u64) -> bool {
        let upper = (input as i64) >> (self.width() - 1);
        upper == 0 || upper == -1
    }
}

/// Why a first-stage walk stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FsFault {
    /// The input address is not canonical.
    NonCanonical,
    /// The top-level entry (through FSPTPTR) could not be read.
    RootAccess,
    /// A lower-level entry could not be read.
    TableAccess,
    /// An entry has P clear.
    NotPresent,
    /// An entry has a reserved bit set.
    Reserved,
    /// Setting A/EA/D failed (write error, or the guest kept changing the entry).
    AdUpdate,
    /// Nested: the second stage could not translate a first-stage table address.
    Nested {
        /// The table is the one FSPTPTR points to.
        root: bool,
        /// The access was the A/D write into the table.
        write: bool,
        /// What the second stage found.
        fault: SsFault,
    },
}

/// A successful first-stage walk: A (and EA) are set along the way; D is left to
/// [`set_dirty`], which runs once the whole request is known to be allowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FsWalk {
    /// Output (guest-physical when nested) address of the requested byte.
    pub output: u64,
    /// Size of the page.
    pub page: PageSize,
    /// Cumulative rights.
    pub rights: FsRights,
    /// Address of the leaf entry as the first stage names it.
    pub leaf_gpa: u64,
    /// The leaf entry as last seen.
    pub leaf: u64,
}

type Second<'a> = Option<(&'a SsTable, &'a SsReserved)>;

/// Where the entry at first-stage address `gpa` lives: `gpa` itself, or its second-stage
/// translation when nested (which must allow reading, or writing for an A/D update).
fn locate(
    mem: &MemView,
    second: Second,
    gpa: u64,
    root: bool,
    write: bool,
) -> Result<u64, FsFault> {
    let Some((ss, rsvd)) = second else {
        return Ok(gpa);
    };
    let nested = |fault| FsFault::Nested { root, write, fault };
    let walk = second_stage::walk(mem, ss, rsvd, gpa, write).map_err(nested)?;
    let allowed = if write {
        walk.perms.write
    } else {
        walk.perms.read
    };
    if allowed {
        Ok(walk.output)
    } else {
        Err(nested(SsFault::NotPresent))
    }
}

/// Walks `fs` for `input`, fetching tables through `second` when nested.
pub fn walk(
    mem: &MemView,
    fs: &FsTable,
    rsvd: &FsReserved,
    second: Second,
    input: u64,
) -> Result<FsWalk, FsFault> {
    if !fs.canonical(input) {
        return Err(FsFault::NonCanonical);
    }
    let levels = fs.levels();
    let mut table = fs.root;
    let mut rights = FsRights {
        writable: true,
        user: true,
        no_exec: false,
    };
    // Fixed depth: at most 5 iterations, whatever the tables contain.
    for level in (1..=levels).rev() {
        let gpa = entry_address(table, input, level);
        let root = level == levels;
        let pte = read_entry(mem, fs, rsvd, second, gpa, level, root)?;
        rights.writable &= pte.rw();
        rights.user &= pte.us();
        rights.no_exec |= pte.xd();
        let page = match PageSize::at_level(level) {
            Some(page) if level == 1 || pte.ps() => page,
            _ => {
                table = pte.address();
                continue;
            }
        };
        let frame = pte.address() & !(page.bytes() - 1);
        return Ok(FsWalk {
            output: page_output(frame, page, input),
            page,
            rights,
            leaf_gpa: gpa,
            leaf: pte.into_bits(),
        });
    }
    Err(FsFault::TableAccess)
}

/// Reads and checks one entry and sets A (and EA) in it.
fn read_entry(
    mem: &MemView,
    fs: &FsTable,
    rsvd: &FsReserved,
    second: Second,
    gpa: u64,
    level: u8,
    root: bool,
) -> Result<FsPte, FsFault> {
    let access_fault = if root {
        FsFault::RootAccess
    } else {
        FsFault::TableAccess
    };
    let mut host = locate(mem, second, gpa, root, false)?;
    let mut writable_host = false;
    for _ in 0..MAX_AD_RETRIES {
        let raw = mem.read_u64(Gpa(host)).map_err(|_| access_fault)?;
        let pte = FsPte::from_bits(raw);
        if !pte.p() {
            return Err(FsFault::NotPresent);
        }
        if raw & rsvd.mask(level, pte.ps()) != 0 {
            return Err(FsFault::Reserved);
        }
        let flags = FsPte::new().with_a(true).with_ea(fs.flags.eafe).into_bits();
        if raw & flags == flags {
            return Ok(pte);
        }
        if !writable_host {
            // The A/D write is a write to the table page as far as the second stage goes.
            host = locate(mem, second, gpa, root, true)?;
            writable_host = true;
        }
        match set_flags(mem, host, raw, flags) {
            Ok(FlagUpdate::Set(now)) => return Ok(FsPte::from_bits(now)),
            Ok(FlagUpdate::Changed) => continue,
            Err(_) => return Err(FsFault::AdUpdate),
        }
    }
    Err(FsFault::AdUpdate)
}

/// Sets D in the leaf of `walk` for a write. `Ok(Some(dirty))` tells whether D is now set
/// (always, for a write); `Ok(None)` means the guest changed the leaf since the walk read it,
/// so the caller walks again rather than set D in an entry it has not checked.
pub fn set_dirty(
    mem: &MemView,
    second: Second,
    walk: &FsWalk,
    write: bool,
) -> Result<Option<bool>, FsFault> {
    let leaf = FsPte::from_bits(walk.leaf);
    if leaf.d() || !write {
        return Ok(Some(leaf.d()));
    }
    let host = locate(mem, second, walk.leaf_gpa, false, true)?;
    let flags = FsPte::new().with_d(true).into_bits();
    match set_flags(mem, host, walk.leaf, flags) {
        Ok(FlagUpdate::Set(_)) => Ok(Some(true)),
        Ok(FlagUpdate::Changed) => Ok(None),
        Err(_) => Err(FsFault::AdUpdate),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_reserved_masks_pinned_to_qemu() {
        // QEMU: L1-L3 ~(HAW | 0xfff0..); L4 0x80 | ...; 2M 0x1fe000 | ...; 1G 0x3fffe000 | ...
        let rsvd = reserved(48, true);
        assert_eq!(rsvd.table[1], 0x000f_0000_0000_0000);
        assert_eq!(rsvd.table[4], 0x000f_0000_0000_0080);
        assert_eq!(rsvd.large[2], 0x000f_0000_001f_e000);
        assert_eq!(rsvd.large[3], 0x000f_0000_3fff_e000);
        assert_eq!(reserved(48, false).large[3] & FS_PS, FS_PS);
    }

    #[test]
    fn test_field_positions_match_spec_bits() {
        assert_eq!(FsPte::new().with_us(true).into_bits(), 4);
        assert_eq!(FsPte::new().with_ea(true).into_bits(), 1 << 10);
        assert_eq!(FsPte::new().with_xd(true).into_bits(), 1 << 63);
        assert_eq!(FsPte::new().with_pk(0xf).into_bits(), 0xf << 59);
    }

    #[test]
    fn test_canonical_addresses() {
        let four = FsTable {
            root: 0,
            five_level: false,
            flags: FsFlags::default(),
        };
        assert!(four.canonical(0x0000_7fff_ffff_ffff));
        assert!(four.canonical(0xffff_8000_0000_0000));
        assert!(!four.canonical(0x0000_8000_0000_0000));
        let five = FsTable {
            five_level: true,
            ..four
        };
        assert!(five.canonical(0x00ff_ffff_ffff_ffff));
        assert!(!five.canonical(0x0100_0000_0000_0000));
    }

    #[test]
    fn test_supervisor_rules() {
        let rights = FsRights {
            writable: false,
            user: true,
            no_exec: false,
        };
        let flags = FsFlags {
            sre: true,
            wpe: false,
            ere: true,
            smep: true,
            eafe: false,
        };
        let (user, supervisor) = flags.perms(rights);
        assert!(user.read && !user.write && user.exec);
        assert!(supervisor.write, "WPE clear: supervisor writes ignore R/W");
        assert!(
            !supervisor.exec,
            "SMEP: no supervisor fetch from a user page"
        );
        let (_, wp) = FsFlags { wpe: true, ..flags }.perms(rights);
        assert!(!wp.write);
        let (_, none) = FsFlags {
            sre: false,
            ..flags
        }
        .perms(rights);
        assert_eq!(
            none,
            Perms {
                privileged: true,
                ..Perms::default()
            }
        );
    }
}
