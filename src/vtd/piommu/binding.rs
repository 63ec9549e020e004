//! Host PASID entries of the physical model, in nested mode: per device, either one first-stage
//! table per bound PASID (a small in-process value, never written to guest memory) or a pointer
//! to the guest's own scalable-mode PASID directory, whose entries are decoded on a PASID-cache
//! miss. VT-d spec 9.5 / 9.6 (PASID directory and table entries), 6.5.1 (PASID cache).

use std::collections::HashMap;

use crate::iommu::{
    BindTarget, Granularity, IommuError, PageTable, PagingLevels, Pasid, UnrecoverableReason,
};
use crate::mem::{Gpa, MemView};

use super::super::cache::PASID_CACHE_CAPACITY;
use super::super::cap::VtdConfig;
use super::super::fault::FaultReason;
use super::super::pasid::{
    dir_index, pasid_dir_reserved, pasid_entry_reserved, table_index, PasidDirEntry, PasidEntry,
    Pgtt, PASID_DIR_ENTRY_BYTES, PASID_ENTRY_BYTES,
};
use super::super::walk::{
    self, bits_from, FsFlags, FsReserved, FsTable, SsReserved, PAGE_SHIFT, PAGE_SIZE,
};

/// The unit's capabilities and the reserved-bit masks derived from them, computed once.
#[derive(Clone, Copy, Debug)]
pub(super) struct Rules {
    /// Capabilities.
    pub config: VtdConfig,
    /// First-stage paging entries.
    pub fs: FsReserved,
    /// PASID directory entries.
    pub pasid_dir: u64,
    /// PASID table entries.
    pub pasid_entry: [u64; 8],
    /// Second-stage paging entries (default domains).
    pub ss: SsReserved,
}

impl Rules {
    pub fn new(config: VtdConfig) -> Self {
        Rules {
            config,
            fs: walk::first_stage::reserved(config.mgaw, config.fl_1g),
            pasid_dir: pasid_dir_reserved(config.mgaw),
            pasid_entry: pasid_entry_reserved(&config),
            // Scalable-mode masks (SNP allowed in leaves) for legacy-mode tables too: the
            // neutral API does not say which mode a table comes from, and a legacy guest
            // only sets SNP when ECAP.SC invites it.
            ss: walk::second_stage::reserved(config.mgaw, true, config.sl_2m, config.sl_1g),
        }
    }

    /// Whether `addr` can point to a table: 4 KiB aligned and below the address width.
    pub fn valid_table(&self, addr: u64) -> bool {
        addr & (bits_from(self.config.mgaw) | (PAGE_SIZE - 1)) == 0
    }

    /// Whether `pasid` fits in the PASID width the unit supports (ECAP.PSS).
    pub fn pasid_supported(&self, pasid: Pasid) -> bool {
        fits(pasid, self.config.pasid_bits)
    }

    /// The binding `target` asks for, checked against what the unit supports.
    pub fn binding(&self, target: &BindTarget) -> Result<Binding, IommuError> {
        match *target {
            BindTarget::Process(table) | BindTarget::GuestPageTable(table) => {
                self.first_stage(&table).map(Binding::Table)
            }
            BindTarget::GuestPasidTable { dir, pasid_bits } => {
                if !self.valid_table(dir) {
                    return Err(IommuError::InvalidTarget(
                        "PASID directory not 4 KiB aligned or beyond the address width",
                    ));
                }
                if pasid_bits > self.config.pasid_bits {
                    return Err(IommuError::InvalidTarget(
                        "PASID table wider than the unit supports",
                    ));
                }
                Ok(Binding::Guest(GuestTable {
                    dir,
                    pasid_bits,
                    cache: HashMap::new(),
                }))
            }
        }
    }

    /// The first-stage table of a process or guest page table, as a PASID entry with PGTT
    /// first-stage would describe it. ERE follows the unit (ECAP.ERS): execute requests are
    /// then allowed wherever the tables allow them (XD clear); the neutral API has no flag.
    pub fn first_stage(&self, table: &PageTable) -> Result<FsTable, IommuError> {
        let c = &self.config;
        if !self.valid_table(table.root) {
            return Err(IommuError::InvalidTarget(
                "page table root not 4 KiB aligned or beyond the address width",
            ));
        }
        let five_level = table.levels == PagingLevels::Five;
        if five_level && !c.fl_5level {
            return Err(IommuError::InvalidTarget("5-level paging not supported"));
        }
        if table.flags.supervisor && !c.srs {
            return Err(IommuError::InvalidTarget(
                "supervisor requests not supported",
            ));
        }
        if table.flags.extended_accessed && !c.ecap().eafs() {
            return Err(IommuError::InvalidTarget(
                "extended accessed flag not supported",
            ));
        }
        Ok(FsTable {
            root: table.root,
            five_level,
            flags: FsFlags {
                sre: table.flags.supervisor,
                wpe: table.flags.write_protect,
                ere: c.ers,
                smep: false,
                eafe: table.flags.extended_accessed,
            },
        })
    }
}

/// Whether `pasid` is below 2^`bits`.
fn fits(pasid: Pasid, bits: u8) -> bool {
    u64::from(pasid.raw())
        .checked_shr(u32::from(bits))
        .unwrap_or(0)
        == 0
}

/// What one `bind` call installs.
#[derive(Debug)]
pub(super) enum Binding {
    /// A first-stage table for one PASID.
    Table(FsTable),
    /// The guest's PASID table, for every PASID of the device.
    Guest(GuestTable),
}

/// A guest scalable-mode PASID directory bound to a device, and the entries decoded from it.
#[derive(Debug)]
pub(super) struct GuestTable {
    dir: u64,
    pasid_bits: u8,
    /// The PASID cache: entries decoded since the last PASID-cache invalidation.
    cache: HashMap<Pasid, FsTable>,
}

/// The PASID entries of one device. Memory: a bound PASID costs one map slot (a 4-byte key and
/// a 16-byte [`FsTable`]); nothing is allocated per PASID ahead of its bind.
#[derive(Debug)]
pub(super) enum Pasids {
    /// Tables bound per PASID (empty: nothing bound).
    Bound(HashMap<Pasid, FsTable>),
    /// The guest owns the PASID table.
    Guest(GuestTable),
}

impl Default for Pasids {
    fn default() -> Self {
        Pasids::Bound(HashMap::new())
    }
}

/// Where the first-stage table of a PASID comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Entry {
    /// Known: bound, or decoded and cached.
    Table(FsTable),
    /// To be decoded from the guest's PASID directory at `dir`.
    Guest {
        /// Guest-physical address of the directory.
        dir: u64,
        /// PASIDs it covers: 2^pasid_bits.
        pasid_bits: u8,
    },
    /// Nothing bound.
    Unbound,
}

/// Why `rebind` refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Rebind {
    /// Nothing is bound to the PASID.
    NotBound,
    /// The new binding is of the other kind (a table for a guest PASID table, or back).
    OtherKind,
}

/// What `unbind` removed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Unbound {
    /// One PASID's table.
    Pasid(Pasid),
    /// The guest PASID table: every PASID of the device.
    Table,
}

impl Pasids {
    /// Installs `binding` for `pasid`. A device has either per-PASID tables or one guest PASID
    /// table; asking for the other kind while one is bound is `AlreadyBound`.
    pub fn bind(&mut self, pasid: Pasid, binding: Binding) -> Result<(), Binding> {
        match (&mut *self, binding) {
            (Pasids::Bound(tables), Binding::Table(table)) if !tables.contains_key(&pasid) => {
                tables.insert(pasid, table);
                Ok(())
            }
            (Pasids::Bound(tables), Binding::Guest(guest)) if tables.is_empty() => {
                *self = Pasids::Guest(guest);
                Ok(())
            }
            (_, binding) => Err(binding),
        }
    }

    /// Replaces the binding of a bound `pasid` with `binding` of the same kind (with a guest
    /// PASID table bound: the table, as bind ignored the PASID). Returns what the IOTLB and
    /// ATC must drop: the PASID's entries, or for a new guest table every entry.
    pub fn rebind(&mut self, pasid: Pasid, binding: Binding) -> Result<Granularity, Rebind> {
        match (&mut *self, binding) {
            (Pasids::Bound(tables), Binding::Table(table)) => match tables.get_mut(&pasid) {
                Some(bound) => {
                    *bound = table;
                    Ok(Granularity::Pasid(pasid))
                }
                None => Err(Rebind::NotBound),
            },
            (Pasids::Guest(_), Binding::Guest(guest)) => {
                *self = Pasids::Guest(guest);
                Ok(Granularity::Domain)
            }
            (Pasids::Bound(tables), Binding::Guest(_)) if !tables.contains_key(&pasid) => {
                Err(Rebind::NotBound)
            }
            _ => Err(Rebind::OtherKind),
        }
    }

    /// Removes the binding of `pasid`; with a guest PASID table bound, the table (bind ignored
    /// the PASID, so unbind does too). `None` when nothing is bound.
    pub fn unbind(&mut self, pasid: Pasid) -> Option<Unbound> {
        match self {
            Pasids::Bound(tables) => tables.remove(&pasid).map(|_| Unbound::Pasid(pasid)),
            Pasids::Guest(_) => {
                *self = Pasids::default();
                Some(Unbound::Table)
            }
        }
    }

    /// Where `pasid`'s table comes from.
    pub fn entry(&self, pasid: Pasid) -> Entry {
        match self {
            Pasids::Bound(tables) => tables
                .get(&pasid)
                .map_or(Entry::Unbound, |t| Entry::Table(*t)),
            Pasids::Guest(guest) => match guest.cache.get(&pasid) {
                Some(table) => Entry::Table(*table),
                None => Entry::Guest {
                    dir: guest.dir,
                    pasid_bits: guest.pasid_bits,
                },
            },
        }
    }

    /// Caches a decoded guest entry, if the guest table it came from is still bound. A full
    /// cache is emptied first (as the VT-d model's caches are).
    pub fn cache(&mut self, pasid: Pasid, dir: u64, table: FsTable) {
        if let Pasids::Guest(guest) = self {
            if guest.dir != dir {
                return;
            }
            if guest.cache.len() >= PASID_CACHE_CAPACITY {
                guest.cache.clear();
            }
            guest.cache.insert(pasid, table);
        }
    }

    /// A PASID-cache invalidation: drops decoded guest entries. Per-PASID bindings are not a
    /// cache of anything in guest memory, so they stay.
    pub fn invalidate_cache(&mut self, granularity: Granularity) {
        let Pasids::Guest(guest) = self else {
            return;
        };
        match granularity {
            Granularity::Domain => guest.cache.clear(),
            Granularity::Pasid(pasid) | Granularity::Range { pasid, .. } => {
                guest.cache.remove(&pasid);
            }
            // Requests without PASID use the default domain, which is no PASID entry.
            Granularity::NoPasid | Granularity::NoPasidRange { .. } => {}
        }
    }

    /// Number of PASIDs bound one by one.
    pub fn bound(&self) -> usize {
        match self {
            Pasids::Bound(tables) => tables.len(),
            Pasids::Guest(_) => 0,
        }
    }
}

/// Decodes `pasid`'s entry in the guest PASID directory at `dir` (VT-d 9.5, 9.6): the
/// directory entry, then the 512-bit table entry, checked as the VT-d model checks it. Only
/// first-stage entries (PGTT 001b) are accepted: the second stage is ours.
pub(super) fn decode(
    view: &MemView,
    rules: &Rules,
    dir: u64,
    pasid_bits: u8,
    pasid: Pasid,
) -> Result<FsTable, UnrecoverableReason> {
    use UnrecoverableReason::*;
    if !fits(pasid, pasid_bits) {
        return Err(PasidInvalid);
    }
    let raw = pasid.raw();
    let dir_at = dir.wrapping_add(dir_index(raw) * PASID_DIR_ENTRY_BYTES);
    let dir_raw = view.read_u64(Gpa(dir_at)).map_err(|_| PasidFetch)?;
    let dir_entry = PasidDirEntry::from_bits(dir_raw);
    if !dir_entry.present() {
        return Err(PasidInvalid);
    }
    if dir_raw & rules.pasid_dir != 0 {
        return Err(BadPasidEntry);
    }
    let at =
        (dir_entry.smptblptr() << PAGE_SHIFT).wrapping_add(table_index(raw) * PASID_ENTRY_BYTES);
    let mut words = [0u64; 8];
    for (i, word) in (0u64..).zip(words.iter_mut()) {
        *word = view
            .read_u64(Gpa(at.wrapping_add(8 * i)))
            .map_err(|_| PasidFetch)?;
    }
    let params = PasidEntry { words }
        .check(&rules.pasid_entry, &rules.config)
        .map_err(|reason| match reason {
            FaultReason::SmPasidEntryNotPresent => PasidInvalid,
            _ => BadPasidEntry,
        })?;
    match (params.pgtt, params.first) {
        (Pgtt::FirstStage, Some(table)) => Ok(table),
        _ => Err(BadPasidEntry),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::iommu::FirstStageFlags;

    fn rules() -> Rules {
        Rules::new(VtdConfig::default())
    }

    fn table(root: u64) -> PageTable {
        PageTable {
            root,
            levels: PagingLevels::Four,
            flags: FirstStageFlags::default(),
        }
    }

    fn pasid(value: u32) -> Pasid {
        Pasid::new(value).unwrap()
    }

    #[test]
    fn test_binding_bad_targets_are_invalid() {
        let r = rules();
        for bad in [0x1234, 1 << 48] {
            assert!(matches!(
                r.binding(&BindTarget::Process(table(bad))),
                Err(IommuError::InvalidTarget(_))
            ));
        }
        let eafe = PageTable {
            flags: FirstStageFlags {
                extended_accessed: true,
                ..FirstStageFlags::default()
            },
            ..table(0x1000)
        };
        assert!(r.binding(&BindTarget::GuestPageTable(eafe)).is_err());
        let wide = BindTarget::GuestPasidTable {
            dir: 0x1000,
            pasid_bits: 21,
        };
        assert!(r.binding(&wide).is_err());
    }

    #[test]
    fn test_binding_process_table_keeps_flags() {
        let target = BindTarget::Process(PageTable {
            root: 0x5000,
            levels: PagingLevels::Five,
            flags: FirstStageFlags {
                supervisor: true,
                write_protect: true,
                extended_accessed: false,
            },
        });
        let Ok(Binding::Table(fs)) = rules().binding(&target) else {
            panic!("expected a table");
        };
        assert_eq!((fs.root, fs.five_level), (0x5000, true));
        assert!(fs.flags.sre && fs.flags.wpe && fs.flags.ere && !fs.flags.eafe);
    }

    #[test]
    fn test_guest_entry_cache_holds_its_capacity_and_starts_over_one_past_it() {
        const DIR: u64 = 0x2000;
        let r = rules();
        let mut pasids = Pasids::default();
        let guest = BindTarget::GuestPasidTable {
            dir: DIR,
            pasid_bits: 20,
        };
        assert!(pasids.bind(pasid(1), r.binding(&guest).unwrap()).is_ok());
        let Ok(Binding::Table(fs)) = r.binding(&BindTarget::Process(table(0x1000))) else {
            panic!("expected a table");
        };
        let capacity = PASID_CACHE_CAPACITY as u32;
        for p in 0..capacity {
            pasids.cache(pasid(p), DIR, fs);
        }
        assert_eq!(pasids.entry(pasid(0)), Entry::Table(fs), "all kept");
        assert_eq!(pasids.entry(pasid(capacity - 1)), Entry::Table(fs));
        pasids.cache(pasid(capacity), DIR, fs);
        assert_eq!(pasids.entry(pasid(capacity)), Entry::Table(fs));
        assert!(
            matches!(pasids.entry(pasid(0)), Entry::Guest { .. }),
            "emptied first: read from the guest table again"
        );
    }

    #[test]
    fn test_pasids_one_kind_at_a_time() {
        let r = rules();
        let mut pasids = Pasids::default();
        let t = || r.binding(&BindTarget::Process(table(0x1000))).unwrap();
        let guest = || {
            r.binding(&BindTarget::GuestPasidTable {
                dir: 0x2000,
                pasid_bits: 20,
            })
            .unwrap()
        };
        assert!(pasids.bind(pasid(1), t()).is_ok());
        assert!(pasids.bind(pasid(1), t()).is_err(), "already bound");
        assert!(pasids.bind(pasid(2), guest()).is_err(), "tables bound");
        assert_eq!(pasids.unbind(pasid(1)), Some(Unbound::Pasid(pasid(1))));
        assert_eq!(pasids.unbind(pasid(1)), None);
        assert!(pasids.bind(pasid(9), guest()).is_ok());
        assert!(pasids.bind(pasid(3), t()).is_err(), "guest table bound");
        assert_eq!(
            pasids.entry(pasid(3)),
            Entry::Guest {
                dir: 0x2000,
                pasid_bits: 20
            }
        );
        assert_eq!(pasids.unbind(pasid(77)), Some(Unbound::Table));
        assert_eq!(pasids.entry(pasid(3)), Entry::Unbound);
    }

    #[test]
    fn test_rebind_replaces_a_binding_of_the_same_kind_only() {
        let r = rules();
        let mut pasids = Pasids::default();
        let t = |root| r.binding(&BindTarget::Process(table(root))).unwrap();
        let guest = |dir| {
            r.binding(&BindTarget::GuestPasidTable {
                dir,
                pasid_bits: 20,
            })
            .unwrap()
        };
        assert_eq!(pasids.rebind(pasid(1), t(0x1000)), Err(Rebind::NotBound));
        pasids.bind(pasid(1), t(0x1000)).unwrap();
        assert_eq!(
            pasids.rebind(pasid(1), t(0x7000)),
            Ok(Granularity::Pasid(pasid(1)))
        );
        assert!(matches!(pasids.entry(pasid(1)), Entry::Table(fs) if fs.root == 0x7000));
        assert_eq!(pasids.rebind(pasid(2), t(0x7000)), Err(Rebind::NotBound));
        assert_eq!(
            pasids.rebind(pasid(2), guest(0x2000)),
            Err(Rebind::NotBound)
        );
        assert_eq!(
            pasids.rebind(pasid(1), guest(0x2000)),
            Err(Rebind::OtherKind)
        );
        pasids.unbind(pasid(1));
        pasids.bind(pasid(0), guest(0x2000)).unwrap();
        assert_eq!(
            pasids.rebind(pasid(4), guest(0x3000)),
            Ok(Granularity::Domain)
        );
        assert_eq!(
            pasids.entry(pasid(4)),
            Entry::Guest {
                dir: 0x3000,
                pasid_bits: 20
            }
        );
        assert_eq!(pasids.rebind(pasid(4), t(0x1000)), Err(Rebind::OtherKind));
    }

    #[test]
    fn test_pasid_cache_fills_and_invalidates() {
        let r = rules();
        let mut pasids = Pasids::default();
        let guest = r
            .binding(&BindTarget::GuestPasidTable {
                dir: 0x2000,
                pasid_bits: 8,
            })
            .unwrap();
        pasids.bind(pasid(0), guest).unwrap();
        let Ok(Binding::Table(fs)) = r.binding(&BindTarget::Process(table(0x7000))) else {
            panic!("expected a table");
        };
        pasids.cache(pasid(5), 0x3000, fs);
        assert!(
            matches!(pasids.entry(pasid(5)), Entry::Guest { .. }),
            "from another directory: not cached"
        );
        pasids.cache(pasid(5), 0x2000, fs);
        pasids.cache(pasid(6), 0x2000, fs);
        assert_eq!(pasids.entry(pasid(5)), Entry::Table(fs));
        pasids.invalidate_cache(Granularity::Pasid(pasid(5)));
        assert!(matches!(pasids.entry(pasid(5)), Entry::Guest { .. }));
        assert_eq!(pasids.entry(pasid(6)), Entry::Table(fs));
        pasids.invalidate_cache(Granularity::Domain);
        assert!(matches!(pasids.entry(pasid(6)), Entry::Guest { .. }));
    }

    #[test]
    fn test_binding_is_small() {
        // 100,000 bound PASIDs in well under 64 MiB: a map slot is key + value.
        assert!(std::mem::size_of::<(Pasid, FsTable)>() <= 24);
    }

    #[test]
    fn test_fits_pasid_width() {
        assert!(fits(pasid(63), 6));
        assert!(!fits(pasid(64), 6));
        assert!(fits(pasid(0), 0));
        assert!(!fits(pasid(1), 0));
        assert!(fits(pasid(Pasid::MAX), 20));
    }
}
