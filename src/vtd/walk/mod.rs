//! Page-table walks: first-stage (IA-32e), second-stage, nested (first then second stage, with
//! every first-stage table fetch going through the second stage) and their permission checks.
//! VT-d spec 3.6 (first-stage), 3.7 (second-stage), 3.8 (nested), 9.7/9.8 (paging entries).
//!
//! A walk has a fixed depth (3 to 5 levels), so a table that points back at itself ends the
//! walk like any other table; the only loops are bounded retries of A/D updates that lost a
//! race with the guest. Outcomes are stage-local fault kinds ([`FsFault`], [`SsFault`],
//! [`Denied`]); the pipeline maps them to the spec's fault reasons, because the same condition
//! has different codes in legacy, scalable and nested translation.

pub mod first_stage;
pub mod second_stage;

use crate::mem::{Gpa, MemError, MemView};

use super::request::{Access, Perms};

pub use first_stage::{FsFault, FsFlags, FsReserved, FsRights, FsTable};
pub use second_stage::{SsFault, SsPerms, SsReserved, SsTable};

/// Bits `width..=63` of a u64: the bits above an address width.
pub const fn bits_from(width: u8) -> u64 {
    if width >= 64 {
        0
    } else {
        u64::MAX << width
    }
}

/// Address bits translated by one table level (512 entries of 8 bytes).
pub const INDEX_BITS: u32 = 9;
/// Size of one paging entry.
pub const ENTRY_BYTES: u64 = 8;
/// Bits of the offset in a 4 KiB page (and of a table's alignment). Every 4 KiB quantity of
/// the model derives from it: table and queue pages, page numbers in descriptors, registers and
/// fault records, page-selective invalidation ranges.
pub const PAGE_SHIFT: u32 = 12;
/// Bytes in a 4 KiB page.
pub const PAGE_SIZE: u64 = 1 << PAGE_SHIFT;
/// How often an A/D update that lost a race with the guest is retried before the walk gives up
/// (the guest could otherwise keep a walk spinning forever by rewriting the entry).
pub const MAX_AD_RETRIES: u32 = 8;

/// Page sizes a leaf paging entry can map.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PageSize {
    /// 4 KiB, a level-1 leaf.
    Size4K,
    /// 2 MiB, a level-2 leaf with PS set.
    Size2M,
    /// 1 GiB, a level-3 leaf with PS set.
    Size1G,
}

impl PageSize {
    /// Every size, smallest first.
    pub const ALL: [PageSize; 3] = [PageSize::Size4K, PageSize::Size2M, PageSize::Size1G];

    /// log2 of the size.
    pub const fn shift(self) -> u32 {
        match self {
            PageSize::Size4K => PAGE_SHIFT,
            PageSize::Size2M => PAGE_SHIFT + INDEX_BITS,
            PageSize::Size1G => PAGE_SHIFT + 2 * INDEX_BITS,
        }
    }

    /// Size in bytes.
    pub const fn bytes(self) -> u64 {
        1 << self.shift()
    }

    /// The page a leaf at `level` (1-based, 1 = page table) maps, if any size fits there.
    pub const fn at_level(level: u8) -> Option<PageSize> {
        match level {
            1 => Some(PageSize::Size4K),
            2 => Some(PageSize::Size2M),
            3 => Some(PageSize::Size1G),
            _ => None,
        }
    }
}

/// Address of the entry that translates `input` in the table at `table`, level `level`.
/// Wrapping: table pointers come from the guest, and a nonsense one just fails to read.
pub const fn entry_address(table: u64, input: u64, level: u8) -> u64 {
    let shift = PAGE_SHIFT + INDEX_BITS * (level as u32 - 1);
    let index = (input >> shift) & ((1 << INDEX_BITS) - 1);
    table.wrapping_add(index * ENTRY_BYTES)
}

/// Output address of `input` in a page of size `page` based at `frame` (the frame's low bits
/// are already known to be zero: the reserved-bit check covers them).
pub const fn page_output(frame: u64, page: PageSize, input: u64) -> u64 {
    frame | (input & (page.bytes() - 1))
}

/// What an attempt to set A/D flags in a paging entry found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlagUpdate {
    /// The flags are set; the entry now holds this value.
    Set(u64),
    /// The guest changed the entry since it was read: read it again.
    Changed,
}

/// Atomically sets `flags` in the entry at `addr` that was read as `seen` (VT-d spec 3.6.2:
/// A/D updates are atomic with respect to other accesses to the entry).
pub fn set_flags(mem: &MemView, addr: u64, seen: u64, flags: u64) -> Result<FlagUpdate, MemError> {
    let new = seen | flags;
    if new == seen {
        return Ok(FlagUpdate::Set(seen));
    }
    let found = mem.compare_exchange_u64(Gpa(addr), seen, new)?;
    Ok(if found == seen {
        FlagUpdate::Set(new)
    } else {
        FlagUpdate::Changed
    })
}

/// Why a mapping refused a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Denied {
    /// User request to a supervisor page (first stage).
    User,
    /// Write without write permission.
    Write,
    /// Execute without execute permission.
    Exec,
    /// Read without read permission.
    Read,
}

/// Checks `access` against `perms` (which are for the request's privilege level). The order
/// is the spec's precedence among SGN conditions: write, then execute, then read.
pub fn check(perms: Perms, access: Access) -> Result<(), Denied> {
    if access.write && !perms.write {
        Err(Denied::Write)
    } else if access.exec && !perms.exec {
        Err(Denied::Exec)
    } else if (access.read || access.exec) && !perms.read {
        Err(Denied::Read)
    } else {
        Ok(())
    }
}

/// A successful walk, before caching.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Walked {
    /// Output address of the requested byte.
    pub output: u64,
    /// Size of the page mapping it.
    pub page: PageSize,
    /// Permissions for user-level requests.
    pub user: Perms,
    /// Permissions for supervisor-level requests (all false when they are not enabled).
    pub supervisor: Perms,
    /// Every dirty flag a write would set is already set (writes hitting a cached
    /// translation without it must walk again to set it).
    pub dirty: bool,
}

/// Why a walk failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WalkFault {
    /// In the first-stage structures (including second-stage faults on first-stage tables).
    First(FsFault),
    /// In the second stage translating the request's (or the first stage's output) address.
    Second(SsFault),
    /// The first-stage mapping refuses the request.
    FirstDenied(Denied),
    /// The second-stage mapping refuses the request.
    SecondDenied(Denied),
}

/// Second-stage-only translation (legacy mode, PGTT=010b), as in VT-d spec 3.7.
pub fn second_stage_only(
    mem: &MemView,
    ss: &SsTable,
    rsvd: &SsReserved,
    input: u64,
    access: Access,
    exec_requests: bool,
) -> Result<Walked, WalkFault> {
    let walk = second_stage::walk(mem, ss, rsvd, input, access.write).map_err(WalkFault::Second)?;
    let mut perms = walk.perms.as_perms(exec_requests);
    perms.privileged = access.privileged;
    check(perms, access).map_err(WalkFault::SecondDenied)?;
    let user = Perms {
        privileged: false,
        ..perms
    };
    Ok(Walked {
        output: walk.output,
        page: walk.page,
        user,
        supervisor: Perms {
            privileged: true,
            ..perms
        },
        dirty: walk.dirty,
    })
}

/// First-stage-only translation (PGTT=001b), as in VT-d spec 3.6.
pub fn first_stage_only(
    mem: &MemView,
    fs: &FsTable,
    rsvd: &FsReserved,
    input: u64,
    access: Access,
) -> Result<Walked, WalkFault> {
    for _ in 0..MAX_AD_RETRIES {
        let walk = first_stage::walk(mem, fs, rsvd, None, input).map_err(WalkFault::First)?;
        let (user, supervisor) = fs.flags.perms(walk.rights);
        fs.flags
            .check(walk.rights, access)
            .map_err(WalkFault::FirstDenied)?;
        match first_stage::set_dirty(mem, None, &walk, access.write) {
            Ok(Some(dirty)) => {
                return Ok(Walked {
                    output: walk.output,
                    page: walk.page,
                    user,
                    supervisor,
                    dirty,
                })
            }
            Ok(None) => continue,
            Err(fault) => return Err(WalkFault::First(fault)),
        }
    }
    Err(WalkFault::First(FsFault::AdUpdate))
}

/// Nested translation (PGTT=011b), as in VT-d spec 3.8: the first-stage walk fetches every
/// table through the second stage, then the first stage's output goes through it too.
pub fn nested(
    mem: &MemView,
    fs: &FsTable,
    fs_rsvd: &FsReserved,
    ss: &SsTable,
    ss_rsvd: &SsReserved,
    input: u64,
    access: Access,
) -> Result<Walked, WalkFault> {
    let second = Some((ss, ss_rsvd));
    for _ in 0..MAX_AD_RETRIES {
        let walk = first_stage::walk(mem, fs, fs_rsvd, second, input).map_err(WalkFault::First)?;
        let (user, supervisor) = fs.flags.perms(walk.rights);
        fs.flags
            .check(walk.rights, access)
            .map_err(WalkFault::FirstDenied)?;
        let last = second_stage::walk(mem, ss, ss_rsvd, walk.output, access.write)
            .map_err(WalkFault::Second)?;
        // Execute permission at the second stage is governed by SSEE alone here: ERE was
        // already required by the first stage for an execute request.
        let ss_perms = last.perms.as_perms(true);
        check(
            Perms {
                privileged: access.privileged,
                ..ss_perms
            },
            access,
        )
        .map_err(WalkFault::SecondDenied)?;
        // The first-stage D flag is set only once the whole translation is known to succeed.
        match first_stage::set_dirty(mem, second, &walk, access.write) {
            Ok(Some(dirty)) => {
                return Ok(Walked {
                    output: last.output,
                    page: walk.page.min(last.page),
                    user: last.perms.restrict(user),
                    supervisor: last.perms.restrict(supervisor),
                    dirty: dirty && last.dirty,
                })
            }
            Ok(None) => continue,
            Err(fault) => return Err(WalkFault::First(fault)),
        }
    }
    Err(WalkFault::First(FsFault::AdUpdate))
}

/// Reserved-bit masks of one paging-structure format, by level (one table, checked once).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LevelMasks {
    /// Level 1 entries and non-leaf entries of levels 2-5.
    pub table: [u64; 6],
    /// Leaf entries (PS set) of levels 2 and 3.
    pub large: [u64; 4],
}

impl LevelMasks {
    /// The mask for an entry at `level` (1-5) whose PS bit is `ps`. Level 4 and 5 entries with
    /// PS set are checked against the table mask, where PS is reserved.
    pub fn mask(&self, level: u8, ps: bool) -> u64 {
        let level = usize::from(level).min(5);
        match self.large.get(level) {
            Some(large) if level > 1 && ps => *large,
            _ => self.table[level],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_bits_from_width() {
        assert_eq!(bits_from(48), 0xffff_0000_0000_0000);
        assert_eq!(bits_from(64), 0);
        assert_eq!(bits_from(0), u64::MAX);
    }

    #[test]
    fn test_entry_address_per_level() {
        let va = 0x0000_7fff_ffff_f000u64;
        assert_eq!(entry_address(0x1000, va, 4), 0x1000 + 255 * 8);
        assert_eq!(entry_address(0x1000, va, 1), 0x1000 + 511 * 8);
        assert_eq!(entry_address(!0xfff, va, 1), !0xfff + 511 * 8);
    }

    #[test]
    fn test_check_precedence_is_write_exec_read() {
        let none = Perms::default();
        let all = Access {
            read: true,
            write: true,
            exec: true,
            privileged: false,
        };
        assert_eq!(check(none, all), Err(Denied::Write));
        assert_eq!(
            check(
                none,
                Access {
                    write: false,
                    ..all
                }
            ),
            Err(Denied::Exec)
        );
        assert_eq!(check(none, Access::READ), Err(Denied::Read));
        let rw = Perms {
            read: true,
            write: true,
            ..none
        };
        assert_eq!(check(rw, Access::WRITE), Ok(()));
    }

    #[test]
    fn test_page_size_at_level() {
        assert_eq!(PageSize::at_level(2), Some(PageSize::Size2M));
        assert_eq!(PageSize::at_level(4), None);
        assert_eq!(PageSize::Size1G.bytes(), 1 << 30);
    }
}
