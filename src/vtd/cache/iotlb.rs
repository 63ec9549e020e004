//! The IOTLB: translations cached per requester (source-id and PASID as the request carried
//! them), size class and page, with an index of which requesters hold entries of each
//! (domain, PASID), the tag invalidations name. VT-d spec 6.5.1 (IOTLB) and 6.5.2.3-6.5.2.4
//! (IOTLB and PASID-based IOTLB invalidation).
//!
//! Linux issues a page-selective invalidation for every unmap, so those must not cost a scan of
//! the whole IOTLB: with the index, one looks up the keys its range maps to, for each requester
//! of the named (domain, PASID) and each size class the IOTLB holds. Only invalidations whose
//! lookups would outnumber the entries, and the rare domain- and PASID-wide ones, scan.

use std::hash::{Hash, Hasher};

use super::{CacheCounters, Counts, FastMap, IotlbInvalidation, PasidIotlbInvalidation};
use crate::vtd::ids::{DomainId, Pasid, SourceId};
use crate::vtd::request::{Access, Perms};
use crate::vtd::walk::{self, PageSize, PAGE_SHIFT};

/// Most IOTLB entries held at once.
pub const IOTLB_CAPACITY: usize = 4096;

/// How much input address space one IOTLB entry covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IotlbSize {
    /// A page.
    Page(PageSize),
    /// Pass-through: all of `[0, 2^width)`.
    Whole {
        /// Address width.
        width: u8,
    },
}

impl IotlbSize {
    /// Key class, in lookup order (smallest first).
    const fn class(self) -> usize {
        match self {
            IotlbSize::Page(PageSize::Size4K) => 0,
            IotlbSize::Page(PageSize::Size2M) => 1,
            IotlbSize::Page(PageSize::Size1G) => 2,
            IotlbSize::Whole { .. } => 3,
        }
    }

    /// Size in bytes (at most 2^64 - 1 for a 64-bit width).
    pub const fn bytes(self) -> u64 {
        match self {
            IotlbSize::Page(page) => page.bytes(),
            IotlbSize::Whole { width } => match 1u64.checked_shl(width as u32) {
                Some(bytes) => bytes,
                None => u64::MAX,
            },
        }
    }
}

/// Number of key classes.
const CLASSES: usize = 4;
/// Input-address shift of each key class (pass-through entries have one key per requester).
const CLASS_SHIFT: [u32; CLASSES] = [
    PageSize::Size4K.shift(),
    PageSize::Size2M.shift(),
    PageSize::Size1G.shift(),
    u64::BITS,
];
/// Source-id position in a key's tag.
const TAG_SOURCE_SHIFT: u32 = 40;
/// Class position in a key's tag.
const TAG_CLASS_SHIFT: u32 = 32;
/// Class bits of a key's tag.
const TAG_CLASS_MASK: u64 = 0xff << TAG_CLASS_SHIFT;
/// Tag value for requests without PASID (PASIDs are 20 bits).
const TAG_NO_PASID: u64 = 1 << 20;
/// A lookup costs about this many steps of a scan: past that, a range invalidation scans.
const LOOKUP_COST: u64 = 4;

/// The PASID part of a tag.
fn pasid_tag(pasid: Option<Pasid>) -> u64 {
    pasid.map_or(TAG_NO_PASID, |p| u64::from(p.raw()))
}

/// Who asked: source-id and the PASID the request carried (a key's tag without its class).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Requester(u64);

impl Requester {
    fn new(source: SourceId, pasid: Option<Pasid>) -> Self {
        Requester((u64::from(source.0) << TAG_SOURCE_SHIFT) | pasid_tag(pasid))
    }

    /// The key of page number `page` (in units of the class's size) in `class`.
    fn key(self, class: usize, page: u64) -> IotlbKey {
        IotlbKey {
            tag: self.0 | ((class as u64) << TAG_CLASS_SHIFT),
            page,
        }
    }

    /// The key of the entry of `class` that would cover `addr`.
    fn key_for(self, class: usize, addr: u64) -> IotlbKey {
        self.key(class, addr.checked_shr(CLASS_SHIFT[class]).unwrap_or(0))
    }
}

/// IOTLB key: requester, size class, page number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct IotlbKey {
    tag: u64,
    page: u64,
}

impl IotlbKey {
    fn requester(self) -> Requester {
        Requester(self.tag & !TAG_CLASS_MASK)
    }
}

impl Hash for IotlbKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // One word: the page number varies fastest, the tag is spread over the high bits.
        state.write_u64(self.page ^ self.tag.rotate_left(23));
    }
}

/// A cached translation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IotlbEntry {
    /// First input address covered.
    pub base: u64,
    /// Output address of `base`.
    pub output: u64,
    /// Coverage.
    pub size: IotlbSize,
    /// Permissions for user-level requests.
    pub user: Perms,
    /// Permissions for supervisor-level requests.
    pub supervisor: Perms,
    /// Every D flag a write needs is set.
    pub dirty: bool,
    /// Domain.
    pub domain: DomainId,
    /// PASID the translation used (RID_PASID for scalable requests without PASID; `None` in
    /// legacy mode).
    pub pasid: Option<Pasid>,
    /// First-stage or nested mapping (PGTT 001b/011b), which IOTLB invalidations without PASID
    /// drop for the whole domain (VT-d spec 6.5.2.4).
    pub first_stage: bool,
    /// Requests without PASID are supervisor requests (RID_PRIV).
    pub rid_priv: bool,
}

impl IotlbEntry {
    /// Whether this entry can serve `access` (for a request with or without PASID) at `addr`
    /// without a walk: permissions allow it and a write finds D already set. Returns the
    /// output address and the permissions that applied.
    #[inline]
    pub fn serve(&self, addr: u64, with_pasid: bool, access: Access) -> Option<(u64, Perms)> {
        let offset = addr.wrapping_sub(self.base);
        if offset >= self.size.bytes() {
            return None;
        }
        // Requests without PASID carry no execute/privilege attributes (PCIe PASID prefix).
        let access = if with_pasid {
            access
        } else {
            Access {
                exec: false,
                privileged: self.rid_priv,
                ..access
            }
        };
        let perms = if access.privileged {
            self.supervisor
        } else {
            self.user
        };
        walk::check(perms, access).ok()?;
        (!access.write || self.dirty).then_some((self.output.wrapping_add(offset), perms))
    }

    /// Whether the entry covers any byte of `[start, start + span)`.
    fn overlaps(&self, start: u64, span: u64) -> bool {
        overlaps(self.base, self.size.bytes(), start, span)
    }
}

/// Whether `[base, base + size)` and `[start, start + span)` intersect (inclusive ends, so
/// that ranges reaching the top of the address space do not overflow).
fn overlaps(base: u64, size: u64, start: u64, span: u64) -> bool {
    let last = base.saturating_add(size.saturating_sub(1));
    let range_last = start.saturating_add(span.saturating_sub(1));
    base <= range_last && start <= last
}

/// Start and length of a page-selective invalidation (2^(12 + AM) bytes, aligned).
fn page_range(addr: u64, address_mask: u8) -> (u64, u64) {
    match 1u64.checked_shl(PAGE_SHIFT + u32::from(address_mask)) {
        Some(span) => (addr & !(span - 1), span),
        None => (0, u64::MAX),
    }
}

/// The tag invalidations name: domain and the PASID the translation used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct GroupKey(u64);

impl GroupKey {
    fn new(domain: DomainId, pasid: Option<Pasid>) -> Self {
        GroupKey((u64::from(domain.0) << u32::BITS) | pasid_tag(pasid))
    }

    fn of(entry: &IotlbEntry) -> Self {
        Self::new(entry.domain, entry.pasid)
    }

    fn domain(self) -> DomainId {
        DomainId((self.0 >> u32::BITS) as u16)
    }
}

/// The entries of one (domain, PASID), counted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Group {
    entries: usize,
    /// First-stage and nested entries among them.
    first_stage: usize,
    /// Requesters holding entries of the group, with how many each (usually one or two).
    requesters: Vec<(Requester, usize)>,
}

/// Adds `entry`, cached under `requester`, to the index.
fn index_add(groups: &mut FastMap<GroupKey, Group>, requester: Requester, entry: &IotlbEntry) {
    let group = groups.entry(GroupKey::of(entry)).or_default();
    group.entries += 1;
    group.first_stage += usize::from(entry.first_stage);
    match group.requesters.iter_mut().find(|(r, _)| *r == requester) {
        Some((_, count)) => *count += 1,
        None => group.requesters.push((requester, 1)),
    }
}

/// Removes `entry`, cached under `requester`, from the index.
fn index_remove(groups: &mut FastMap<GroupKey, Group>, requester: Requester, entry: &IotlbEntry) {
    let key = GroupKey::of(entry);
    let Some(group) = groups.get_mut(&key) else {
        return;
    };
    group.entries -= 1;
    group.first_stage -= usize::from(entry.first_stage);
    if let Some(i) = group.requesters.iter().position(|(r, _)| *r == requester) {
        group.requesters[i].1 -= 1;
        if group.requesters[i].1 == 0 {
            group.requesters.swap_remove(i);
        }
    }
    if group.entries == 0 {
        groups.remove(&key);
    }
}

/// The IOTLB of one remapping unit.
#[derive(Debug, Default)]
pub(super) struct Iotlb {
    map: FastMap<IotlbKey, IotlbEntry>,
    /// Entries per key class, so a lookup probes only classes that hold something.
    pub(super) classes: [usize; CLASSES],
    /// Who holds entries of each (domain, PASID).
    groups: FastMap<GroupKey, Group>,
    counts: Counts,
    /// Scans of every entry so far (tests check that page-selective invalidations avoid them).
    #[cfg(test)]
    scans: usize,
    /// Invalidations done by looking up keys so far (tests).
    #[cfg(test)]
    lookups: usize,
}

impl Iotlb {
    /// Hit/miss counters and size.
    pub(super) fn counters(&self) -> CacheCounters {
        self.counts.with_entries(self.map.len())
    }

    /// Empties the IOTLB. `clear` rather than `retain`: it resets every slot to empty, where
    /// removing entries one by one leaves tombstones that make later inserts rehash.
    pub(super) fn clear(&mut self) {
        self.map.clear();
        self.classes = [0; CLASSES];
        self.groups.clear();
    }

    /// Looks up the translation of `addr` for `source`/`pasid` and serves `access` from it.
    /// A present entry that cannot serve the access (permissions, D not yet set) counts as a
    /// miss: the walk decides.
    #[inline]
    pub(super) fn serve(
        &mut self,
        source: SourceId,
        pasid: Option<Pasid>,
        addr: u64,
        access: Access,
    ) -> Option<(u64, Perms, IotlbEntry)> {
        let requester = Requester::new(source, pasid);
        let mut found = None;
        for class in 0..CLASSES {
            if self.classes[class] == 0 {
                continue;
            }
            if let Some(entry) = self.map.get(&requester.key_for(class, addr)) {
                found = entry
                    .serve(addr, pasid.is_some(), access)
                    .map(|(out, perms)| (out, perms, *entry));
                break;
            }
        }
        self.counts.record(found)
    }

    /// Caches a translation for requests from `source` with `pasid` (as the request carried
    /// it), replacing what the key held.
    pub(super) fn insert(&mut self, source: SourceId, pasid: Option<Pasid>, entry: IotlbEntry) {
        if self.map.len() >= IOTLB_CAPACITY {
            self.clear();
        }
        let class = entry.size.class();
        let requester = Requester::new(source, pasid);
        match self.map.insert(requester.key_for(class, entry.base), entry) {
            None => {
                self.classes[class] += 1;
                index_add(&mut self.groups, requester, &entry);
            }
            Some(old) => {
                if GroupKey::of(&old) != GroupKey::of(&entry)
                    || old.first_stage != entry.first_stage
                {
                    index_remove(&mut self.groups, requester, &old);
                    index_add(&mut self.groups, requester, &entry);
                }
            }
        }
    }

    /// IOTLB invalidation without PASID. Domain- and page-selective invalidations drop every
    /// first-stage and nested entry of the domain (VT-d spec 6.5.2.4: those are PASID-tagged
    /// and only PASID-based invalidations target their pages).
    pub(super) fn invalidate(&mut self, inv: IotlbInvalidation) {
        match inv {
            IotlbInvalidation::Global => self.clear(),
            IotlbInvalidation::Domain(did) => {
                if self.groups.keys().any(|g| g.domain() == did) {
                    self.retain(|e| e.domain != did);
                }
            }
            IotlbInvalidation::Page {
                domain,
                addr,
                address_mask,
                ..
            } => {
                let (start, span) = page_range(addr, address_mask);
                let mut requesters = Vec::new();
                let mut first_stage = false;
                for (_, group) in self.groups.iter().filter(|(g, _)| g.domain() == domain) {
                    first_stage |= group.first_stage > 0;
                    for &(requester, _) in &group.requesters {
                        if !requesters.contains(&requester) {
                            requesters.push(requester);
                        }
                    }
                }
                let in_range = |e: &IotlbEntry| e.domain == domain && e.overlaps(start, span);
                if requesters.is_empty()
                    || (!first_stage && self.drop_by_lookup(&requesters, start, span, in_range))
                {
                    return;
                }
                self.retain(|e| e.domain != domain || (!e.first_stage && !e.overlaps(start, span)));
            }
        }
    }

    /// PASID-based IOTLB invalidation: drops PASID-tagged entries whatever their PGTT (Linux
    /// tears down pass-through PASIDs with a PASID-selective flush, so those entries must go
    /// too).
    pub(super) fn invalidate_pasid(&mut self, inv: PasidIotlbInvalidation) {
        match inv {
            PasidIotlbInvalidation::Pasid { domain, pasid } => {
                self.invalidate_tagged(domain, Some(pasid), None)
            }
            PasidIotlbInvalidation::Page {
                domain,
                pasid,
                addr,
                address_mask,
                ..
            } => self.invalidate_tagged(domain, Some(pasid), Some((addr, address_mask))),
        }
    }

    /// Drops the entries of `domain` whose translation used `pasid` (`None`: no PASID at all,
    /// which only the physical model's default domains cache; this unit's scalable-mode
    /// requests without PASID use RID_PASID), all or those overlapping the page block `page`
    /// (address, AM).
    pub(super) fn invalidate_tagged(
        &mut self,
        domain: DomainId,
        pasid: Option<Pasid>,
        page: Option<(u64, u8)>,
    ) {
        let Some(group) = self.groups.get(&GroupKey::new(domain, pasid)) else {
            return;
        };
        let tagged = |e: &IotlbEntry| e.domain == domain && e.pasid == pasid;
        let Some((addr, address_mask)) = page else {
            self.retain(|e| !tagged(e));
            return;
        };
        let requesters: Vec<Requester> = group.requesters.iter().map(|r| r.0).collect();
        let (start, span) = page_range(addr, address_mask);
        let in_range = |e: &IotlbEntry| tagged(e) && e.overlaps(start, span);
        if !self.drop_by_lookup(&requesters, start, span, in_range) {
            self.retain(|e| !in_range(e));
        }
    }

    /// Drops the entries `drop` selects among those `requesters` cache for `[start, start +
    /// span)`, by looking up every key the range maps to in each size class held. Returns
    /// false, having dropped nothing, when that takes more lookups than a scan takes steps.
    fn drop_by_lookup(
        &mut self,
        requesters: &[Requester],
        start: u64,
        span: u64,
        drop: impl Fn(&IotlbEntry) -> bool,
    ) -> bool {
        let last = start.saturating_add(span.saturating_sub(1));
        let pages = |class: usize| {
            let shift = CLASS_SHIFT[class];
            let first = start.checked_shr(shift).unwrap_or(0);
            first..=last.checked_shr(shift).unwrap_or(0)
        };
        let lookups = (0..CLASSES)
            .filter(|&class| self.classes[class] > 0)
            .map(|class| {
                let range = pages(class);
                (range.end() - range.start()).saturating_add(1)
            })
            .fold(0u64, u64::saturating_add)
            .saturating_mul(requesters.len() as u64);
        if lookups.saturating_mul(LOOKUP_COST) > self.map.len() as u64 {
            return false;
        }
        #[cfg(test)]
        {
            self.lookups += 1;
        }
        for &requester in requesters {
            for class in 0..CLASSES {
                if self.classes[class] == 0 {
                    continue;
                }
                for page in pages(class) {
                    let key = requester.key(class, page);
                    if !self.map.get(&key).is_some_and(&drop) {
                        continue;
                    }
                    if let Some(entry) = self.map.remove(&key) {
                        self.classes[class] -= 1;
                        index_remove(&mut self.groups, requester, &entry);
                    }
                }
            }
        }
        true
    }

    /// Keeps the entries `keep` selects: a scan of every entry.
    fn retain(&mut self, mut keep: impl FnMut(&IotlbEntry) -> bool) {
        #[cfg(test)]
        {
            self.scans += 1;
        }
        let (classes, groups) = (&mut self.classes, &mut self.groups);
        self.map.retain(|key, entry| {
            let kept = keep(entry);
            if !kept {
                classes[entry.size.class()] -= 1;
                index_remove(groups, key.requester(), entry);
            }
            kept
        });
    }

    /// Checks the class counts and the index against the entries (tests).
    #[cfg(test)]
    fn assert_index_consistent(&self) {
        let mut classes = [0; CLASSES];
        let mut groups: FastMap<GroupKey, Group> = FastMap::default();
        for (key, entry) in &self.map {
            classes[entry.size.class()] += 1;
            index_add(&mut groups, key.requester(), entry);
        }
        assert_eq!(classes, self.classes, "class counts");
        assert_eq!(groups.len(), self.groups.len(), "groups");
        for (key, group) in &groups {
            let held = &self.groups[key];
            assert_eq!(
                (group.entries, group.first_stage),
                (held.entries, held.first_stage)
            );
            let mut want = group.requesters.clone();
            let mut have = held.requesters.clone();
            want.sort_by_key(|r| r.0 .0);
            have.sort_by_key(|r| r.0 .0);
            assert_eq!(want, have, "requesters");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: SourceId = SourceId(0x0100);
    const SIZES: [IotlbSize; 4] = [
        IotlbSize::Page(PageSize::Size4K),
        IotlbSize::Page(PageSize::Size2M),
        IotlbSize::Page(PageSize::Size1G),
        IotlbSize::Whole { width: 48 },
    ];

    /// An entry of `size` around `base`, first-stage when it has a PASID.
    fn entry(base: u64, size: IotlbSize, domain: u16, pasid: Option<Pasid>) -> IotlbEntry {
        let base = base & !(size.bytes() - 1);
        let raw = pasid.map(|p| p.raw());
        super::super::tests::entry(base, size, domain, raw, pasid.is_some())
    }

    /// The entries, by key.
    fn contents(iotlb: &Iotlb) -> Vec<(u64, u64, IotlbEntry)> {
        let mut all: Vec<_> = iotlb.map.iter().map(|(k, e)| (k.tag, k.page, *e)).collect();
        all.sort_by_key(|&(tag, page, _)| (tag, page));
        all
    }

    #[test]
    fn test_page_selective_invalidation_looks_up_instead_of_scanning() {
        let mut iotlb = Iotlb::default();
        let pasid = Pasid::new(5);
        for page in 0..4000u64 {
            iotlb.insert(SRC, pasid, entry(page << 12, SIZES[0], 1, pasid));
        }
        iotlb.insert(SRC, pasid, entry(1 << 30, SIZES[1], 1, pasid));
        iotlb.insert(SourceId(7), None, entry(0x7000, SIZES[0], 2, None));
        for (page, am) in [(7u64, 0u8), (0x40_0000 >> 12, 9), (0x100, 2)] {
            iotlb.invalidate_pasid(PasidIotlbInvalidation::Page {
                domain: DomainId(1),
                pasid: pasid.unwrap(),
                addr: page << 12,
                address_mask: am,
                ih: false,
            });
        }
        assert_eq!(iotlb.scans, 0);
        assert_eq!(iotlb.counters().entries, 4002 - 1 - 512 - 4);
        // A second-stage PSI of another domain, and one of a domain with no entries.
        for domain in [2, 3] {
            iotlb.invalidate(IotlbInvalidation::Page {
                domain: DomainId(domain),
                addr: 0x7000,
                address_mask: 0,
                ih: false,
            });
        }
        assert_eq!(iotlb.scans, 0);
        assert_eq!(iotlb.counters().entries, 4002 - 1 - 512 - 4 - 1);
        // A range wider than the IOTLB is scanned.
        iotlb.invalidate_pasid(PasidIotlbInvalidation::Page {
            domain: DomainId(1),
            pasid: pasid.unwrap(),
            addr: 0,
            address_mask: 40,
            ih: false,
        });
        assert_eq!((iotlb.scans, iotlb.counters().entries), (1, 0));
        iotlb.assert_index_consistent();
    }

    /// Random inserts and invalidations of every kind: the IOTLB holds exactly what a plain
    /// list with the spec's drop rules holds, and the index stays consistent.
    #[test]
    fn test_index_matches_a_plain_list_under_random_operations() {
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let pasids = [None, Pasid::new(1), Pasid::new(2)];
        let masks = [0u8, 0, 0, 1, 9, 18, 52];
        let mut iotlb = Iotlb::default();
        let mut list: Vec<(u64, u64, IotlbEntry)> = Vec::new();
        for _ in 0..12_000 {
            let domain = DomainId(1 + next(2) as u16);
            let pasid = pasids[next(3) as usize];
            let addr = (next(1 << 10) << 12) | (next(4) << 30);
            let am = masks[next(masks.len() as u64) as usize];
            let (start, span) = page_range(addr, am);
            let drop: Box<dyn Fn(&IotlbEntry) -> bool> = match next(64) {
                0..=57 => {
                    let source = SourceId(next(3) as u16);
                    let carried = pasids[next(3) as usize];
                    let size = SIZES[next(16).saturating_sub(12) as usize];
                    let e = entry(addr, size, domain.0, pasid);
                    let key = Requester::new(source, carried).key_for(size.class(), e.base);
                    list.retain(|&(tag, page, _)| (tag, page) != (key.tag, key.page));
                    list.push((key.tag, key.page, e));
                    iotlb.insert(source, carried, e);
                    continue;
                }
                58 => {
                    iotlb.invalidate(IotlbInvalidation::Domain(domain));
                    Box::new(move |e| e.domain == domain)
                }
                59 => {
                    iotlb.invalidate(IotlbInvalidation::Page {
                        domain,
                        addr: start,
                        address_mask: am,
                        ih: false,
                    });
                    Box::new(move |e| {
                        e.domain == domain && (e.first_stage || e.overlaps(start, span))
                    })
                }
                60 => {
                    let pasid = pasid.unwrap_or_default();
                    iotlb.invalidate_pasid(PasidIotlbInvalidation::Pasid { domain, pasid });
                    Box::new(move |e| e.domain == domain && e.pasid == Some(pasid))
                }
                _ => {
                    let pasid = pasid.unwrap_or_default();
                    iotlb.invalidate_pasid(PasidIotlbInvalidation::Page {
                        domain,
                        pasid,
                        addr: start,
                        address_mask: am,
                        ih: false,
                    });
                    Box::new(move |e| {
                        e.domain == domain && e.pasid == Some(pasid) && e.overlaps(start, span)
                    })
                }
            };
            list.retain(|(_, _, e)| !drop(e));
            list.sort_by_key(|&(tag, page, _)| (tag, page));
            assert_eq!(contents(&iotlb), list);
            iotlb.assert_index_consistent();
        }
        assert!(
            iotlb.scans > 0 && iotlb.lookups > 0,
            "both ways exercised: {} scans, {} by lookup",
            iotlb.scans,
            iotlb.lookups
        );
    }

    #[test]
    fn test_index_follows_an_entry_replaced_under_another_tag() {
        let mut iotlb = Iotlb::default();
        iotlb.insert(SRC, None, entry(0x1000, SIZES[0], 1, Pasid::new(1)));
        iotlb.insert(SRC, None, entry(0x1000, SIZES[0], 2, None));
        iotlb.assert_index_consistent();
        iotlb.invalidate_pasid(PasidIotlbInvalidation::Page {
            domain: DomainId(1),
            pasid: Pasid::new(1).unwrap(),
            addr: 0x1000,
            address_mask: 0,
            ih: false,
        });
        assert_eq!(iotlb.counters().entries, 1, "the replacement stays");
        iotlb.clear();
        assert!(iotlb.groups.is_empty());
    }
}
