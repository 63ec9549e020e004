//! Reading one device's translation structures from guest memory: root entry → context entry
//! (legacy or scalable) → PASID directory and table entry, each checked against the reserved
//! bits of this unit. VT-d spec 9.1-9.6 (formats), 7.1.3 (the fault each failure is).
//!
//! Shared by the translating unit (which caches what it reads) and the guest-facing front end
//! (which reads a device's entries when the guest says they changed).

use super::cap::VtdConfig;
use super::context::{
    legacy_context_reserved, scalable_context_reserved, LegacyContext, LegacyContextEntry,
    ScalableContext, ScalableContextEntry, LEGACY_CONTEXT_BYTES, SCALABLE_CONTEXT_BYTES,
};
use super::fault::FaultReason;
use super::ids::SourceId;
use super::pasid::{
    dir_index, pasid_dir_reserved, pasid_entry_reserved, table_index, PasidDirEntry, PasidEntry,
    PasidParams, PASID_DIR_ENTRY_BYTES, PASID_ENTRY_BYTES,
};
use super::root::{root_reserved, RootEntry, RootLookup};
use super::walk::{bits_from, PAGE_SHIFT};
use crate::mem::{Gpa, MemView};

/// Why an entry could not be used: the fault reason, and whether Fault Processing Disable
/// was set in an entry read on the way (it suppresses qualified faults only).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryFault {
    /// The fault reason (7.1.3).
    pub reason: FaultReason,
    /// FPD of the entries read so far.
    pub fpd: bool,
}

impl EntryFault {
    fn new(reason: FaultReason, fpd: bool) -> Self {
        EntryFault { reason, fpd }
    }
}

/// Reserved-bit masks of the entries, for this unit's address width and features.
#[derive(Clone, Copy, Debug)]
struct Reserved {
    legacy_root: [u64; 2],
    scalable_root: [u64; 2],
    legacy_context: [u64; 2],
    scalable_context: [u64; 4],
    pasid_dir: u64,
    pasid_entry: [u64; 8],
}

/// Reads and checks entries for one unit.
#[derive(Clone, Copy, Debug)]
pub struct EntryReader {
    config: VtdConfig,
    rsvd: Reserved,
}

impl EntryReader {
    /// A reader for a unit with capabilities `config`.
    pub fn new(config: VtdConfig) -> Self {
        let c = &config;
        EntryReader {
            rsvd: Reserved {
                legacy_root: root_reserved(false, c.mgaw),
                scalable_root: root_reserved(true, c.mgaw),
                legacy_context: legacy_context_reserved(c.mgaw),
                scalable_context: scalable_context_reserved(c),
                pasid_dir: pasid_dir_reserved(c.mgaw),
                pasid_entry: pasid_entry_reserved(c),
            },
            config,
        }
    }

    /// Whether a table pointer is 4 KiB aligned and below the host address width.
    pub fn valid_table(&self, addr: u64) -> bool {
        addr & (bits_from(self.config.mgaw) | ((1 << PAGE_SHIFT) - 1)) == 0
    }

    /// Reads the root entry for `source` and finds its context entry (table, index).
    fn root_lookup(
        &self,
        mem: &MemView,
        root: u64,
        source: SourceId,
        scalable: bool,
    ) -> Result<(u64, u64), FaultReason> {
        use FaultReason::*;
        let (access, not_present, reserved) = if scalable {
            (
                SmRootEntryAccess,
                SmRootEntryNotPresent,
                SmRootEntryReserved,
            )
        } else {
            (RootTableInvalid, RootEntryNotPresent, RootEntryReserved)
        };
        let at = RootEntry::address(root, source);
        let read = |a: u64| mem.read_u64(Gpa(a)).map_err(|_| access);
        let entry = RootEntry {
            lo: read(at)?,
            hi: read(at.wrapping_add(8))?,
        };
        let lookup = if scalable {
            entry.scalable(source, &self.rsvd.scalable_root)
        } else {
            entry.legacy(source, &self.rsvd.legacy_root)
        };
        match lookup {
            RootLookup::NotPresent => Err(not_present),
            RootLookup::Reserved => Err(reserved),
            RootLookup::Context { table, index } => Ok((table, index)),
        }
    }

    /// The legacy-mode context entry of `source` under root table `root`.
    pub fn legacy_context(
        &self,
        mem: &MemView,
        root: u64,
        source: SourceId,
    ) -> Result<LegacyContext, EntryFault> {
        let (table, index) = self
            .root_lookup(mem, root, source, false)
            .map_err(|r| EntryFault::new(r, false))?;
        let at = table.wrapping_add(index * LEGACY_CONTEXT_BYTES);
        let read = |a: u64| {
            mem.read_u64(Gpa(a))
                .map_err(|_| EntryFault::new(FaultReason::ContextTableInvalid, false))
        };
        let entry = LegacyContextEntry::from_words(read(at)?, read(at.wrapping_add(8))?);
        entry
            .check(&self.rsvd.legacy_context, &self.config)
            .map_err(|r| EntryFault::new(r, entry.lo.fpd()))
    }

    /// The scalable-mode context entry of `source` under root table `root`.
    pub fn scalable_context(
        &self,
        mem: &MemView,
        root: u64,
        source: SourceId,
    ) -> Result<ScalableContext, EntryFault> {
        let (table, index) = self
            .root_lookup(mem, root, source, true)
            .map_err(|r| EntryFault::new(r, false))?;
        let at = table.wrapping_add(index * SCALABLE_CONTEXT_BYTES);
        let mut words = [0u64; 4];
        for (i, word) in words.iter_mut().enumerate() {
            *word = mem
                .read_u64(Gpa(at.wrapping_add(8 * i as u64)))
                .map_err(|_| EntryFault::new(FaultReason::SmContextEntryAccess, false))?;
        }
        let entry = ScalableContextEntry { words };
        entry
            .check(&self.rsvd.scalable_context)
            .map_err(|r| EntryFault::new(r, entry.fpd()))
    }

    /// The PASID table entry of `pasid` below `context` (whose FPD is `context_fpd`); the
    /// directory's FPD is kept with the result, as it covers the entries below it.
    pub fn pasid_entry(
        &self,
        mem: &MemView,
        context: &ScalableContext,
        pasid: u32,
        context_fpd: bool,
    ) -> Result<PasidParams, EntryFault> {
        use FaultReason::*;
        let dir_at = context
            .pasid_dir
            .wrapping_add(dir_index(pasid) * PASID_DIR_ENTRY_BYTES);
        let dir_raw = mem
            .read_u64(Gpa(dir_at))
            .map_err(|_| EntryFault::new(SmPasidDirEntryAccess, context_fpd))?;
        let dir = PasidDirEntry::from_bits(dir_raw);
        let fpd = context_fpd || dir.fpd();
        if !dir.present() {
            return Err(EntryFault::new(SmPasidDirEntryNotPresent, fpd));
        }
        if dir_raw & self.rsvd.pasid_dir != 0 {
            return Err(EntryFault::new(SmPasidDirEntryReserved, fpd));
        }
        let at =
            (dir.smptblptr() << PAGE_SHIFT).wrapping_add(table_index(pasid) * PASID_ENTRY_BYTES);
        let mut words = [0u64; 8];
        for (i, word) in words.iter_mut().enumerate() {
            *word = mem
                .read_u64(Gpa(at.wrapping_add(8 * i as u64)))
                .map_err(|_| EntryFault::new(SmPasidEntryAccess, fpd))?;
        }
        let entry = PasidEntry { words };
        let mut params = entry
            .check(&self.rsvd.pasid_entry, &self.config)
            .map_err(|r| EntryFault::new(r, fpd || entry.fpd()))?;
        params.fpd |= dir.fpd();
        Ok(params)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_reserved_bits_follow_the_address_width() {
        let wide = EntryReader::new(VtdConfig {
            mgaw: 57,
            ..VtdConfig::default()
        });
        let narrow = EntryReader::new(VtdConfig {
            mgaw: 39,
            ..VtdConfig::default()
        });
        assert_eq!(wide.rsvd.pasid_dir & (1 << 50), 0);
        assert_eq!(narrow.rsvd.pasid_dir & (1 << 40), 1 << 40);
        assert_eq!(narrow.rsvd.legacy_root[0] & (1 << 39), 1 << 39);
        assert!(narrow.valid_table(0x1000));
        assert!(!narrow.valid_table(1 << 40), "beyond the address width");
        assert!(!narrow.valid_table(0x1008), "not page aligned");
    }
}
