//! The Address Translation Cache (ATC, "device TLB"): the translations a function obtained
//! with ATS Translation Requests, kept per PASID (and for requests without one) and per page
//! size, dropped by Invalidate Requests. PCIe 6.0 §10.2.3 (ATC), §10.3 (invalidation).
//!
//! One map per page size (any power of two from 4 KiB: 4K, 2M, 1G, …), keyed by the
//! requester's address space and the page number, so that a hit is one lock and one hash
//! probe per size class present, with no allocation: the device's copy loop does one lookup
//! per 4 KiB page. Entries are also tagged with the privilege of the request that filled them,
//! since the IOMMU answers user and supervisor requests with different permissions.
//!
//! A translation obtained on a miss is only cached if no invalidation ran since the miss
//! (the [`AtcTicket`] of the lookup): an Invalidate Request that overtook the Translation
//! Completion must not leave the older answer behind (§10.3.8).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::sync::{Mutex, MutexGuard};

use log::debug;

use crate::iommu::{Access, Granularity, IoTranslation, Pasid, Perms};

/// Most entries held at once by default (the whole cache is dropped when it is full).
pub const ATC_CAPACITY: usize = 4096;
/// Smallest Translation Unit: 4 KiB (ATS STU 0).
pub const MIN_PAGE_SHIFT: u32 = 12;

/// Space tag bit for requests without a PASID (PASIDs are 20 bits).
const SPACE_NO_PASID: u32 = 1 << 20;
/// Space tag bit for privileged (supervisor) requests.
const SPACE_PRIVILEGED: u32 = 1 << 21;
/// Mask of the PASID part of a space tag (with the no-PASID bit).
const SPACE_PASID_MASK: u32 = SPACE_PRIVILEGED - 1;
/// Space tags per PASID: user and privileged.
const SPACES_PER_PASID: u64 = 2;
/// Multiplier of the page hasher (2^64 / golden ratio).
const HASH_MULTIPLIER: u64 = 0x9e37_79b9_7f4a_7c15;

/// The address space a request names: its PASID (or none) and its privilege.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Space(u32);

impl Space {
    fn new(pasid: Option<Pasid>, privileged: bool) -> Self {
        let tag = pasid.map_or(SPACE_NO_PASID, Pasid::raw);
        Space(if privileged {
            tag | SPACE_PRIVILEGED
        } else {
            tag
        })
    }

    /// The PASID part (equal for the user and privileged spaces of one PASID).
    fn pasid_tag(self) -> u32 {
        self.0 & SPACE_PASID_MASK
    }
}

/// Entry key inside one size class.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Key {
    space: Space,
    page: u64,
}

impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // One word: page numbers vary fastest, the space goes to the high bits.
        state.write_u64(self.page ^ u64::from(self.space.0).rotate_left(40));
    }
}

/// A multiply-and-fold hasher for [`Key`]'s one word: page numbers are dense integers, and
/// SipHash would cost more than the rest of a hit. Not collision-resistant: a guest choosing
/// colliding addresses only slows its own device, and the capacity bounds the chains.
#[derive(Clone, Copy, Debug, Default)]
struct PageHasher(u64);

impl Hasher for PageHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    #[inline]
    fn write_u64(&mut self, value: u64) {
        self.0 = (self.0 ^ value).wrapping_mul(HASH_MULTIPLIER);
    }

    #[inline]
    fn finish(&self) -> u64 {
        let wide = u128::from(self.0) * u128::from(HASH_MULTIPLIER);
        (wide as u64) ^ ((wide >> 64) as u64)
    }
}

type PageMap = HashMap<Key, Entry, BuildHasherDefault<PageHasher>>;

/// A cached translation: the output page and what it allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    output: u64,
    perms: Perms,
}

/// The entries of one page size.
#[derive(Debug)]
struct Class {
    shift: u32,
    map: PageMap,
}

/// Proof of a miss: lets [`Atc::insert`] refuse a translation that an invalidation overtook.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AtcTicket(u64);

/// Result of a lookup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AtcLookup {
    /// A cached translation allowing the access.
    Hit(IoTranslation),
    /// Nothing cached, or cached permissions short of the access: ask the IOMMU.
    Miss(AtcTicket),
}

/// ATC counters and occupancy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AtcStats {
    /// Lookups served from the cache.
    pub hits: u64,
    /// Lookups that had to ask the IOMMU (absent, or not allowing the access).
    pub misses: u64,
    /// Invalidate Requests received.
    pub invalidations: u64,
    /// Entries held now.
    pub entries: usize,
}

#[derive(Debug, Default)]
struct Inner {
    /// Size classes, smallest first.
    classes: Vec<Class>,
    entries: usize,
    /// Bumped by every invalidation and flush.
    generation: u64,
    hits: u64,
    misses: u64,
    invalidations: u64,
}

/// An address translation cache. `Send + Sync`; one lock guards it.
#[derive(Debug)]
pub struct Atc {
    inner: Mutex<Inner>,
    capacity: usize,
}

impl Default for Atc {
    fn default() -> Self {
        Self::with_capacity(ATC_CAPACITY)
    }
}

impl Atc {
    /// An empty cache of [`ATC_CAPACITY`] entries.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty cache holding at most `capacity` entries (at least one).
    pub fn with_capacity(capacity: usize) -> Self {
        Atc {
            inner: Mutex::default(),
            capacity: capacity.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Nothing panics while holding the lock; a poisoned one still holds a sound cache.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Looks up the translation of `addr` for `access` by a request with `pasid`.
    #[inline]
    pub fn lookup(&self, pasid: Option<Pasid>, addr: u64, access: Access) -> AtcLookup {
        let space = Space::new(pasid, access.privileged);
        let mut inner = self.lock();
        match inner.probe(space, addr, access) {
            Some(translation) => {
                inner.hits += 1;
                AtcLookup::Hit(translation)
            }
            None => {
                inner.misses += 1;
                AtcLookup::Miss(AtcTicket(inner.generation))
            }
        }
    }

    /// Looks up `addr` as [`Atc::lookup`] does and, on a hit, how far the translation runs
    /// on: the bytes from `addr` that cached entries allowing `access` map contiguously in
    /// both input and output, stopping at the first gap or once `max` bytes are covered (the
    /// last page may reach beyond `max`). Every page of the run counts as a hit; one lock
    /// serves the whole run, so a device copying many pages asks once per run, not per page.
    pub fn lookup_run(
        &self,
        pasid: Option<Pasid>,
        addr: u64,
        access: Access,
        max: u64,
    ) -> (AtcLookup, u64) {
        let space = Space::new(pasid, access.privileged);
        let mut inner = self.lock();
        let Some(first) = inner.probe(space, addr, access) else {
            inner.misses += 1;
            return (AtcLookup::Miss(AtcTicket(inner.generation)), 0);
        };
        inner.hits += 1;
        let mut extent = first.page_size - (addr & (first.page_size - 1));
        while extent < max {
            let Some(next) = addr.checked_add(extent) else {
                break;
            };
            match inner.probe(space, next, access) {
                Some(t) if t.output == first.output.wrapping_add(extent) => {
                    inner.hits += 1;
                    extent += t.page_size - (next & (t.page_size - 1));
                }
                _ => break,
            }
        }
        (AtcLookup::Hit(first), extent)
    }

    /// Caches `translation` of `addr` for requests with `pasid` and `access`'s privilege,
    /// unless an invalidation ran since the miss of `ticket` or the page size is not a power
    /// of two of at least 4 KiB. Returns whether it was cached. A full cache is emptied first.
    pub fn insert(
        &self,
        ticket: AtcTicket,
        pasid: Option<Pasid>,
        addr: u64,
        access: Access,
        translation: &IoTranslation,
    ) -> bool {
        let size = translation.page_size;
        if !size.is_power_of_two() || size.trailing_zeros() < MIN_PAGE_SHIFT {
            debug!("ATC: not caching a translation of page size {size:#x}");
            return false;
        }
        let shift = size.trailing_zeros();
        let key = Key {
            space: Space::new(pasid, access.privileged),
            page: addr >> shift,
        };
        let entry = Entry {
            output: translation.output & !(size - 1),
            perms: translation.perms,
        };
        let mut inner = self.lock();
        if inner.generation != ticket.0 {
            return false;
        }
        let index = inner.class_index(shift);
        if !inner.classes[index].map.contains_key(&key) && inner.entries >= self.capacity {
            inner.clear();
        }
        if inner.classes[index].map.insert(key, entry).is_none() {
            inner.entries += 1;
        }
        true
    }

    /// An Invalidate Request: drops the entries `granularity` covers, pages of every size
    /// that overlap a range included. `Domain` drops everything, entries without PASID too;
    /// `Pasid` and `Range` leave entries without PASID alone, `NoPasid` and `NoPasidRange`
    /// those with one.
    pub fn invalidate(&self, granularity: Granularity) {
        let mut inner = self.lock();
        inner.invalidations += 1;
        inner.generation = inner.generation.wrapping_add(1);
        let last = |addr: u64, size: u64| addr.saturating_add(size.max(1) - 1);
        match granularity {
            Granularity::Domain => inner.clear(),
            Granularity::Pasid(pasid) => inner.invalidate_space(Some(pasid)),
            Granularity::NoPasid => inner.invalidate_space(None),
            Granularity::Range { pasid, addr, size } => {
                inner.invalidate_range(Some(pasid), addr, last(addr, size));
            }
            Granularity::NoPasidRange { addr, size } => {
                inner.invalidate_range(None, addr, last(addr, size));
            }
        }
    }

    /// Drops every entry (ATS disabled, mode change); not counted as an invalidation.
    pub fn flush(&self) {
        let mut inner = self.lock();
        inner.generation = inner.generation.wrapping_add(1);
        inner.clear();
    }

    /// Counters and occupancy.
    pub fn stats(&self) -> AtcStats {
        let inner = self.lock();
        AtcStats {
            hits: inner.hits,
            misses: inner.misses,
            invalidations: inner.invalidations,
            entries: inner.entries,
        }
    }
}

impl Inner {
    /// The cached translation of `addr` in `space` if it allows `access` (smallest page size
    /// first; a hit counts nothing: the caller does).
    #[inline(always)]
    fn probe(&self, space: Space, addr: u64, access: Access) -> Option<IoTranslation> {
        let (shift, entry) = self.classes.iter().find_map(|class| {
            if class.map.is_empty() {
                return None;
            }
            let key = Key {
                space,
                page: addr >> class.shift,
            };
            class.map.get(&key).map(|entry| (class.shift, *entry))
        })?;
        let size = 1u64 << shift;
        entry.perms.allow(access).then(|| IoTranslation {
            output: entry.output | (addr & (size - 1)),
            page_size: size,
            perms: entry.perms,
        })
    }

    /// Index of the class of pages of 2^`shift` bytes, created if missing.
    fn class_index(&mut self, shift: u32) -> usize {
        match self.classes.binary_search_by_key(&shift, |c| c.shift) {
            Ok(index) => index,
            Err(index) => {
                let class = Class {
                    shift,
                    map: PageMap::default(),
                };
                self.classes.insert(index, class);
                index
            }
        }
    }

    fn clear(&mut self) {
        for class in &mut self.classes {
            class.map.clear();
        }
        self.entries = 0;
    }

    /// Keeps the entries `keep(shift, key)` accepts.
    fn retain(&mut self, mut keep: impl FnMut(u32, &Key) -> bool) {
        let mut entries = 0;
        for class in &mut self.classes {
            let shift = class.shift;
            class.map.retain(|key, _| keep(shift, key));
            entries += class.map.len();
        }
        self.entries = entries;
    }

    /// Drops every entry of `pasid` (`None`: of requests without PASID), both privileges.
    fn invalidate_space(&mut self, pasid: Option<Pasid>) {
        let tag = Space::new(pasid, false).pasid_tag();
        self.retain(|_, key| key.space.pasid_tag() != tag);
    }

    /// Drops `pasid`'s entries (`None`: of requests without PASID) overlapping
    /// `first..=last`: by key when the range spans fewer pages of a class than the class
    /// holds, by a scan otherwise.
    fn invalidate_range(&mut self, pasid: Option<Pasid>, first: u64, last: u64) {
        let spaces = [Space::new(pasid, false), Space::new(pasid, true)];
        let mut removed = 0;
        let mut scan = false;
        for class in &mut self.classes {
            let (lo, hi) = (first >> class.shift, last >> class.shift);
            let keys = (hi - lo).saturating_add(1).saturating_mul(SPACES_PER_PASID);
            if keys > class.map.len() as u64 {
                scan = true;
                continue;
            }
            for page in lo..=hi {
                for space in spaces {
                    removed += usize::from(class.map.remove(&Key { space, page }).is_some());
                }
            }
        }
        self.entries -= removed;
        if scan {
            let tag = spaces[0].pasid_tag();
            self.retain(|shift, key| {
                key.space.pasid_tag() != tag
                    || key.page < first >> shift
                    || key.page > last >> shift
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const RW: Perms = Perms {
        read: true,
        write: true,
        exec: false,
        privileged: false,
    };

    fn p(raw: u32) -> Option<Pasid> {
        Pasid::new(raw)
    }

    fn page(size: u64, output: u64, perms: Perms) -> IoTranslation {
        IoTranslation {
            output,
            page_size: size,
            perms,
        }
    }

    fn miss(atc: &Atc, pasid: Option<Pasid>, addr: u64, access: Access) -> AtcTicket {
        match atc.lookup(pasid, addr, access) {
            AtcLookup::Miss(ticket) => ticket,
            AtcLookup::Hit(t) => panic!("unexpected hit {t:?}"),
        }
    }

    fn fill(atc: &Atc, pasid: Option<Pasid>, addr: u64, t: IoTranslation) -> bool {
        let ticket = miss(atc, pasid, addr, Access::READ);
        atc.insert(ticket, pasid, addr, Access::READ, &t)
    }

    #[test]
    fn test_insert_after_an_overtaking_invalidation_is_refused() {
        let atc = Atc::new();
        let ticket = miss(&atc, p(1), 0x1000, Access::READ);
        atc.invalidate(Granularity::Pasid(Pasid::new(7).unwrap()));
        assert!(!atc.insert(
            ticket,
            p(1),
            0x1000,
            Access::READ,
            &page(0x1000, 0x9000, RW)
        ));
        assert_eq!(atc.stats().entries, 0);
        let ticket = miss(&atc, p(1), 0x1000, Access::READ);
        assert!(atc.insert(
            ticket,
            p(1),
            0x1000,
            Access::READ,
            &page(0x1000, 0x9000, RW)
        ));
    }

    #[test]
    fn test_insert_of_bad_page_size_is_refused() {
        let atc = Atc::new();
        for size in [0, 0x800, 0x3000, u64::MAX] {
            assert!(
                !fill(&atc, p(1), 0x1000, page(size, 0x9000, RW)),
                "{size:#x}"
            );
        }
        assert!(fill(&atc, p(1), 0, page(1 << 63, 0, RW)));
        assert!(matches!(
            atc.lookup(p(1), u64::MAX >> 1, Access::READ),
            AtcLookup::Hit(t) if t.output == u64::MAX >> 1
        ));
    }

    #[test]
    fn test_insert_into_full_cache_empties_it_first() {
        let atc = Atc::with_capacity(2);
        assert!(fill(&atc, p(1), 0x1000, page(0x1000, 0x9000, RW)));
        assert!(fill(&atc, p(1), 0x2000, page(0x1000, 0xa000, RW)));
        // Replacing an entry needs no room.
        let ticket = atc.flush_ticket();
        assert!(atc.insert(
            ticket,
            p(1),
            0x2000,
            Access::READ,
            &page(0x1000, 0xb000, RW)
        ));
        assert_eq!(atc.stats().entries, 2);
        assert!(fill(&atc, p(1), 0x3000, page(0x1000, 0xc000, RW)));
        assert_eq!(atc.stats().entries, 1);
    }

    #[test]
    fn test_lookup_hit_returns_output_of_requested_byte() {
        let atc = Atc::new();
        fill(&atc, None, 0x20_0000, page(0x20_0000, 0x1234_0000_0000, RW));
        assert_eq!(
            atc.lookup(None, 0x2a_bcde, Access::WRITE),
            AtcLookup::Hit(page(0x20_0000, 0x1234_000a_bcde, RW))
        );
    }

    impl Atc {
        /// A ticket for the current generation (tests that insert without a lookup).
        fn flush_ticket(&self) -> AtcTicket {
            AtcTicket(self.lock().generation)
        }
    }

    /// The reference: a list of entries, the same replacement and capacity rules.
    #[derive(Clone, Debug)]
    struct ModelEntry {
        pasid: Option<Pasid>,
        privileged: bool,
        shift: u32,
        page: u64,
        output: u64,
        perms: Perms,
    }

    #[derive(Default)]
    struct Model {
        entries: Vec<ModelEntry>,
    }

    impl Model {
        fn insert(&mut self, capacity: usize, e: ModelEntry) {
            let same = |m: &ModelEntry| {
                (m.pasid, m.privileged, m.shift, m.page) == (e.pasid, e.privileged, e.shift, e.page)
            };
            match self.entries.iter_mut().find(|m| same(m)) {
                Some(m) => *m = e,
                None => {
                    if self.entries.len() >= capacity {
                        self.entries.clear();
                    }
                    self.entries.push(e);
                }
            }
        }

        fn lookup(&self, pasid: Option<Pasid>, addr: u64, access: Access) -> Option<u64> {
            let e = self
                .entries
                .iter()
                .filter(|e| e.pasid == pasid && e.privileged == access.privileged)
                .filter(|e| addr >> e.shift == e.page)
                .min_by_key(|e| e.shift)?;
            e.perms
                .allow(access)
                .then(|| e.output | (addr & ((1 << e.shift) - 1)))
        }

        /// Written out per granularity rather than with `Granularity::covers`, so that a
        /// mistake there cannot hide in both.
        fn invalidate(&mut self, g: Granularity) {
            let outside = |e: &ModelEntry, addr: u64, size: u64| {
                let first = e.page << e.shift;
                let last = first + ((1 << e.shift) - 1);
                let end = addr.saturating_add(size.max(1) - 1);
                last < addr || first > end
            };
            self.entries.retain(|e| match g {
                Granularity::Domain => false,
                Granularity::Pasid(p) => e.pasid != Some(p),
                Granularity::NoPasid => e.pasid.is_some(),
                Granularity::Range { pasid, addr, size } => {
                    e.pasid != Some(pasid) || outside(e, addr, size)
                }
                Granularity::NoPasidRange { addr, size } => {
                    e.pasid.is_some() || outside(e, addr, size)
                }
            });
        }
    }

    #[derive(Clone, Debug)]
    enum Op {
        Insert(ModelEntry, u64),
        Invalidate(Granularity),
        Lookup(Option<Pasid>, u64, Access),
    }

    fn pasid_strategy() -> impl Strategy<Value = Option<Pasid>> {
        prop_oneof![Just(None), (0u32..3).prop_map(Pasid::new)]
    }

    /// Addresses in a few 1G regions, 2M pages and 4K pages, so that entries overlap.
    fn addr_strategy() -> impl Strategy<Value = u64> {
        (0u64..3, 0u64..3, 0u64..4, 0u64..0x1000)
            .prop_map(|(g, m, k, off)| (g << 30) | (m << 21) | (k << 12) | off)
    }

    fn perms_strategy() -> impl Strategy<Value = Perms> {
        (any::<bool>(), any::<bool>()).prop_map(|(read, write)| Perms {
            read,
            write,
            exec: false,
            privileged: true,
        })
    }

    fn access_strategy() -> impl Strategy<Value = Access> {
        (any::<bool>(), any::<bool>()).prop_map(|(write, privileged)| Access {
            read: !write,
            write,
            exec: false,
            privileged,
        })
    }

    fn op_strategy() -> impl Strategy<Value = Op> {
        let insert = (
            pasid_strategy(),
            any::<bool>(),
            prop_oneof![Just(12u32), Just(21), Just(30)],
            addr_strategy(),
            0u64..16,
            perms_strategy(),
        )
            .prop_map(|(pasid, privileged, shift, addr, out, perms)| {
                let entry = ModelEntry {
                    pasid,
                    privileged,
                    shift,
                    page: addr >> shift,
                    output: out << 30,
                    perms,
                };
                Op::Insert(entry, addr)
            });
        let granularity = prop_oneof![
            1 => Just(Granularity::Domain),
            2 => (0u32..3).prop_map(|p| Granularity::Pasid(Pasid::new(p).unwrap())),
            1 => Just(Granularity::NoPasid),
            6 => (0u32..3, addr_strategy(), 1u64..0x60_0000).prop_map(|(p, addr, size)| {
                Granularity::Range { pasid: Pasid::new(p).unwrap(), addr, size }
            }),
            3 => (addr_strategy(), 1u64..0x60_0000)
                .prop_map(|(addr, size)| Granularity::NoPasidRange { addr, size }),
        ];
        prop_oneof![
            4 => insert,
            1 => granularity.prop_map(Op::Invalidate),
            4 => (pasid_strategy(), addr_strategy(), access_strategy())
                .prop_map(|(p, a, acc)| Op::Lookup(p, a, acc)),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn prop_atc_matches_reference_model(
            capacity in 4usize..40,
            ops in proptest::collection::vec(op_strategy(), 1..200),
        ) {
            let atc = Atc::with_capacity(capacity);
            let mut model = Model::default();
            for op in ops {
                match op {
                    Op::Insert(e, addr) => {
                        let access = Access { privileged: e.privileged, ..Access::READ };
                        let t = page(1 << e.shift, e.output, e.perms);
                        prop_assert!(atc.insert(atc.flush_ticket(), e.pasid, addr, access, &t));
                        model.insert(capacity, e);
                    }
                    Op::Invalidate(g) => {
                        atc.invalidate(g);
                        model.invalidate(g);
                    }
                    Op::Lookup(pasid, addr, access) => {
                        let got = match atc.lookup(pasid, addr, access) {
                            AtcLookup::Hit(t) => Some(t.output),
                            AtcLookup::Miss(_) => None,
                        };
                        prop_assert_eq!(got, model.lookup(pasid, addr, access), "{:?}", op);
                    }
                }
                prop_assert_eq!(atc.stats().entries, model.entries.len());
            }
        }
    }
}
