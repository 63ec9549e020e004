//! Property tests for the VT-d translation model: random page tables walked by the model equal
//! a small independent reference walker written here (outcome, output, page size, permissions
//! and A/D side effects), and arbitrary guest memory - table loops included - never panics and
//! always ends.

mod common_vtd;

use common_vtd::*;
use proptest::prelude::*;
use vsvm::mem::{Gpa, MemView};
use vsvm::vtd::cache::{
    ContextInvalidation, IotlbInvalidation, PasidCacheInvalidation, PasidIotlbInvalidation,
};
use vsvm::vtd::translate::{RootTable, RootTableType, Translator};
use vsvm::vtd::{Access, DomainId, Pasid, Perms, SourceId, VtdConfig};

/// xorshift64*: the test's own generator, driven by a proptest seed.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, one_in: u64) -> bool {
        self.below(one_in) == 0
    }
}

const PASID: u32 = 9;
const DID: u16 = 3;
/// Table pages per level.
const PER_LEVEL: usize = 2;
/// Table slots the generator fills and addresses use (so walks meet real entries).
const SLOTS: [u64; 4] = [0, 1, 2, 511];
const ADDR_BITS: u64 = 0x000f_ffff_ffff_f000;
const INTERRUPTS: std::ops::RangeInclusive<u64> = 0xfee0_0000..=0xfeef_ffff;

/// Flag bits of an entry with their odds in percent.
type Profile = [(u64, u64); 5];
const FS_PROFILE: Profile = [
    (PAGE_RW, 80),
    (PAGE_USER, 80),
    (PAGE_NX, 15),
    (PAGE_ACCESSED, 50),
    (PAGE_DIRTY, 30),
];
const SS_PROFILE: Profile = [
    (DMA_PTE_READ, 85),
    (DMA_PTE_WRITE, 75),
    (DMA_PTE_SNP, 8),
    (DMA_PTE_ACCESSED, 40),
    (DMA_PTE_DIRTY, 20),
];

/// A random entry for a table at `level`: mostly what a sane tree holds (a pointer to a
/// next-level table, a frame at the leaf, a large page), sometimes something else: absent,
/// noise, a pointer to a table of the wrong level or to itself (loops), reserved bits, a
/// pointer outside guest RAM.
fn random_entry(
    rng: &mut Rng,
    level: u8,
    tables: &[Vec<u64>],
    profile: &Profile,
    present: u64,
) -> u64 {
    let mut flags = present;
    for (bit, odds) in profile {
        if rng.below(100) < *odds {
            flags |= bit;
        }
    }
    let any = |rng: &mut Rng| {
        let all: Vec<u64> = tables.iter().flatten().copied().collect();
        all[rng.below(all.len() as u64) as usize]
    };
    let frame = |rng: &mut Rng, level: u8| {
        (0x1_0000_0000 + (rng.next() & 0xff_ffff_f000)) & !((1u64 << level_shift(level)) - 1)
    };
    let roll = rng.below(100);
    match roll {
        0..=3 => 0,
        4..=6 => rng.next(),
        7..=9 => any(rng) | flags,
        10..=12 => any(rng) | flags | (1 << (48 + rng.below(4))),
        13..=14 => 0x4000_0000 | flags,
        _ if level == 1 => frame(rng, 1) | flags | if roll < 20 { 0x80 } else { 0 },
        15..=29 if level <= 3 => frame(rng, level) | flags | 0x80,
        15..=17 => frame(rng, level) | flags | 0x80,
        _ => {
            let below = &tables[usize::from(level) - 2];
            below[rng.below(below.len() as u64) as usize] | flags
        }
    }
}

/// Tables for a `levels`-deep tree: `tables[l - 1]` holds the pages used at level `l`; the
/// first page of the top level is the root.
fn fill_tables(
    v: &mut Vtd,
    rng: &mut Rng,
    levels: u8,
    profile: &Profile,
    present: u64,
) -> Vec<u64> {
    let tables: Vec<Vec<u64>> = (0..levels)
        .map(|_| (0..PER_LEVEL).map(|_| v.ram.page()).collect())
        .collect();
    for level in 1..=levels {
        for table in &tables[usize::from(level) - 1] {
            for slot in SLOTS {
                let entry = random_entry(rng, level, &tables, profile, present);
                v.ram.write(table + slot * 8, entry);
            }
        }
    }
    let pool: Vec<u64> = tables.into_iter().rev().flatten().collect();
    pool
}

/// An input address whose table indices all come from `SLOTS`, sign-extended from bit
/// `width - 1` unless `canonical` is false.
fn random_input(rng: &mut Rng, levels: u8, width: u32, canonical: bool) -> u64 {
    let mut addr = rng.next() & 0xfff;
    for level in 1..=levels {
        addr |= SLOTS[rng.below(4) as usize] << level_shift(level);
    }
    addr &= (1 << width) - 1;
    if canonical && addr >> (width - 1) != 0 {
        addr |= !((1 << width) - 1);
    }
    if !canonical {
        addr |= 1 << width;
    }
    addr
}

fn random_access(rng: &mut Rng) -> Access {
    let kind = rng.below(3);
    Access {
        read: kind == 0,
        write: kind == 1,
        exec: kind == 2,
        privileged: rng.chance(3),
    }
}

fn read(mem: &MemView, addr: u64) -> Option<u64> {
    mem.read_u64(Gpa(addr)).ok()
}

/// What the reference walker expects.
#[derive(Debug, PartialEq, Eq)]
enum Expect {
    Ok {
        output: u64,
        size: u64,
        perms: Perms,
    },
    Fault(u8),
}

/// The slots a walk used (A expected) and the leaf (D expected on a successful write).
#[derive(Default)]
struct Touched {
    used: Vec<u64>,
    leaf: Option<u64>,
}

#[derive(Clone, Copy)]
struct FsMode {
    sre: bool,
    wpe: bool,
    ere: bool,
    smep: bool,
}

/// IA-32e 4-level walk with VT-d's access rules, straight from the spec's prose.
fn reference_first_stage(
    mem: &MemView,
    root: u64,
    va: u64,
    acc: Access,
    m: FsMode,
    t: &mut Touched,
) -> Expect {
    if acc.exec && !m.ere {
        return Expect::Fault(0x5c);
    }
    if acc.privileged && !m.sre {
        return Expect::Fault(0x5d);
    }
    let upper = va >> 47;
    if upper != 0 && upper != 0x1_ffff {
        return Expect::Fault(0x80);
    }
    let (mut table, mut rw, mut us, mut xd) = (root, true, true, false);
    for level in (1..=4u8).rev() {
        let slot = table.wrapping_add(((va >> level_shift(level)) & 511) * 8);
        let Some(e) = read(mem, slot) else {
            return Expect::Fault(if level == 4 { 0x73 } else { 0x70 });
        };
        if e & 1 == 0 {
            return Expect::Fault(0x71);
        }
        let ps = e & 0x80 != 0;
        let reserved = e & 0x000f_0000_0000_0000 != 0
            || (level == 4 && ps)
            || (level == 3 && ps && e & 0x3fff_e000 != 0)
            || (level == 2 && ps && e & 0x1f_e000 != 0);
        if reserved {
            return Expect::Fault(0x72);
        }
        t.used.push(slot);
        rw &= e & 2 != 0;
        us &= e & 4 != 0;
        xd |= e >> 63 != 0;
        if level == 1 || ((level == 2 || level == 3) && ps) {
            let size = 1u64 << level_shift(level);
            let output = (e & ADDR_BITS & !(size - 1)) | (va & (size - 1));
            let perms = if acc.privileged {
                Perms {
                    read: true,
                    write: !m.wpe || rw,
                    exec: m.ere && !xd && !(m.smep && us),
                    privileged: true,
                }
            } else {
                Perms {
                    read: us,
                    write: us && rw,
                    exec: m.ere && us && !xd,
                    privileged: false,
                }
            };
            if !acc.privileged && !us {
                return Expect::Fault(0x81);
            }
            if acc.write && !perms.write {
                return Expect::Fault(0x85);
            }
            if acc.exec && !perms.exec {
                return Expect::Fault(0x82);
            }
            if INTERRUPTS.contains(&output) {
                return Expect::Fault(0x87);
            }
            t.leaf = Some(slot);
            return Expect::Ok {
                output,
                size,
                perms,
            };
        }
        table = e & ADDR_BITS;
    }
    unreachable!()
}

/// Second-stage walk: scalable-mode (PGTT=010b) or legacy codes, from the spec's prose.
fn reference_second_stage(
    mem: &MemView,
    root: u64,
    levels: u8,
    iova: u64,
    acc: Access,
    legacy: bool,
    t: &mut Touched,
) -> Expect {
    let width = 30 + 9 * u32::from(levels - 2);
    if iova >> width != 0 {
        return Expect::Fault(if legacy { 0x04 } else { 0x83 });
    }
    let (mut table, mut r, mut w) = (root, true, true);
    for level in (1..=levels).rev() {
        let slot = table.wrapping_add(((iova >> level_shift(level)) & 511) * 8);
        let Some(e) = read(mem, slot) else {
            return Expect::Fault(match (legacy, level == levels) {
                (true, _) => 0x07,
                (false, true) => 0x7b,
                (false, false) => 0x78,
            });
        };
        if e & 3 == 0 {
            return Expect::Fault(match (legacy, acc.write) {
                (false, _) => 0x79,
                (true, true) => 0x05,
                (true, false) => 0x06,
            });
        }
        let ps = e & 0x80 != 0;
        let leaf = level == 1 || ((level == 2 || level == 3) && ps);
        let snp = e & 0x800 != 0;
        let reserved = e & 0x400f_0000_0000_0000 != 0
            || (level >= 4 && ps)
            || (snp && (legacy || !leaf))
            || (level == 2 && ps && e & 0x1f_f000 != 0)
            || (level == 3 && ps && e & 0x3fff_f000 != 0);
        if reserved {
            return Expect::Fault(if legacy { 0x0c } else { 0x7a });
        }
        t.used.push(slot);
        r &= e & 1 != 0;
        w &= e & 2 != 0;
        if leaf {
            let size = 1u64 << level_shift(level);
            let output = (e & ADDR_BITS & !(size - 1)) | (iova & (size - 1));
            if acc.write && !w {
                return Expect::Fault(if legacy { 0x05 } else { 0x85 });
            }
            if acc.read && !r {
                return Expect::Fault(if legacy { 0x06 } else { 0x86 });
            }
            if INTERRUPTS.contains(&output) {
                return Expect::Fault(if legacy { 0x0e } else { 0x87 });
            }
            t.leaf = Some(slot);
            let perms = Perms {
                read: r,
                write: w,
                exec: false,
                privileged: acc.privileged,
            };
            return Expect::Ok {
                output,
                size,
                perms,
            };
        }
        table = e & ADDR_BITS;
    }
    unreachable!()
}

fn outcome(result: Result<vsvm::vtd::Translation, vsvm::vtd::Fault>) -> Expect {
    match result {
        Ok(t) => Expect::Ok {
            output: t.output,
            size: t.page_size,
            perms: t.perms,
        },
        Err(f) => Expect::Fault(f.reason.code()),
    }
}

/// Checks that the walk changed memory only by setting `a` in the used slots and `d` in the
/// leaf of a successful write.
fn check_side_effects(before: &[(u64, u64)], v: &Vtd, t: &Touched, ok_write: bool, a: u64, d: u64) {
    for (slot, old) in before {
        let now = v.ram.read(*slot);
        let mut expected = *old;
        if a != 0 && t.used.contains(slot) {
            expected |= a;
        }
        if ok_write && t.leaf == Some(*slot) {
            expected |= d;
        }
        assert_eq!(now, expected, "slot 0x{slot:x}: 0x{old:x} -> 0x{now:x}");
    }
}

fn snapshot(v: &Vtd, pool: &[u64]) -> Vec<(u64, u64)> {
    pool.iter()
        .flat_map(|t| SLOTS.iter().map(move |s| t + s * 8))
        .map(|a| (a, v.ram.read(a)))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 192, ..ProptestConfig::default() })]

    #[test]
    fn prop_first_stage_matches_reference(seed in any::<u64>()) {
        let mut rng = Rng::new(seed);
        let mut v = Vtd::scalable();
        let (_, dir) = v.sm_context(DEV, true, 7);
        let m = FsMode { sre: !rng.chance(4), wpe: rng.chance(2), ere: !rng.chance(4), smep: rng.chance(2) };
        let pool = fill_tables(&mut v, &mut rng, 4, &FS_PROFILE, PAGE_PRESENT);
        let mut entry = PasidEntryBuilder::first_level(pool[0], DID, false, 2);
        if m.sre { entry = entry.sre(); }
        if m.wpe { entry = entry.wpe(); }
        if m.ere { entry = entry.ere(); }
        if m.smep { entry = entry.smep(); }
        v.set_pasid(dir, PASID, entry);
        for _ in 0..8 {
            let canonical = !rng.chance(10);
            let va = random_input(&mut rng, 4, 48, canonical);
            let acc = random_access(&mut rng);
            let before = snapshot(&v, &pool);
            let mut touched = Touched::default();
            let expected = reference_first_stage(&v.ram.view(), pool[0], va, acc, m, &mut touched);
            v.translator.caches().invalidate_iotlb(IotlbInvalidation::Global);
            let got = outcome(v.translate(&req(DEV, Some(PASID), va, acc)));
            prop_assert_eq!(&got, &expected, "va 0x{:x} {:?}", va, acc);
            let ok_write = acc.write && matches!(expected, Expect::Ok { .. });
            check_side_effects(&before, &v, &touched, ok_write, PAGE_ACCESSED, PAGE_DIRTY);
            // The same request again, now possibly from the IOTLB: the same answer.
            let again = outcome(v.translate(&req(DEV, Some(PASID), va, acc)));
            prop_assert_eq!(again, expected);
        }
    }

    #[test]
    fn prop_second_stage_matches_reference(seed in any::<u64>()) {
        let mut rng = Rng::new(seed);
        let legacy = rng.chance(2);
        let levels = 3 + rng.below(2) as u8;
        let ad = !legacy && rng.chance(2);
        let mut v = if legacy { Vtd::legacy() } else { Vtd::scalable() };
        let pool = fill_tables(&mut v, &mut rng, levels, &SS_PROFILE, 0);
        if legacy {
            v.legacy_context(DEV, DID, pool[0], u64::from(levels - 2), CONTEXT_TT_MULTI_LEVEL);
        } else {
            let (_, dir) = v.sm_context(DEV, true, 7);
            let entry = PasidEntryBuilder::second_level(pool[0], DID, u64::from(levels - 2));
            v.set_pasid(dir, PASID, if ad { entry.ssade() } else { entry });
        }
        for _ in 0..8 {
            let iova = random_input(&mut rng, levels, 48, true) & ((1 << 48) - 1);
            let acc = Access { exec: false, privileged: false, ..random_access(&mut rng) };
            let acc = if acc.read || acc.write { acc } else { Access::READ };
            let before = snapshot(&v, &pool);
            let mut touched = Touched::default();
            let expected = reference_second_stage(&v.ram.view(), pool[0], levels, iova, acc, legacy, &mut touched);
            v.translator.caches().invalidate_iotlb(IotlbInvalidation::Global);
            let pasid = if legacy { None } else { Some(PASID) };
            let got = outcome(v.translate(&req(DEV, pasid, iova, acc)));
            prop_assert_eq!(&got, &expected, "iova 0x{:x} {:?} levels {} legacy {}", iova, acc, levels, legacy);
            let ok_write = acc.write && matches!(expected, Expect::Ok { .. });
            let (a, d) = if ad { (DMA_PTE_ACCESSED, DMA_PTE_DIRTY) } else { (0, 0) };
            check_side_effects(&before, &v, &touched, ok_write, a, d);
        }
    }

    #[test]
    fn prop_arbitrary_memory_never_panics(seed in any::<u64>()) {
        let mut rng = Rng::new(seed);
        let config = VtdConfig {
            mgaw: [39, 48, 57][rng.below(3) as usize],
            sagaw: rng.below(16) as u8,
            fl_5level: rng.chance(2),
            sl_2m: rng.chance(2),
            sl_1g: rng.chance(2),
            fl_1g: rng.chance(2),
            pasid_bits: rng.below(21) as u8,
            slads: rng.chance(2),
            ers: rng.chance(2),
            srs: rng.chance(2),
            ..VtdConfig::default()
        };
        let ram = GuestRam::new(64 * PAGE);
        // Words that look like entries: pointers into this small RAM (so tables point at each
        // other and at themselves) with random flags, plus plain noise.
        for slot in 0..(64 * PAGE / 8) {
            let word = match rng.below(4) {
                0 => rng.next(),
                1 => 0,
                _ => (rng.below(64) << 12) | (rng.next() & 0xfff) | if rng.chance(8) { rng.next() & !0xfff } else { 0 },
            };
            ram.write(slot * 8, word);
        }
        let mut translator = Translator::new(config);
        let view = ram.view();
        for _ in 0..32 {
            let kind = if rng.chance(2) { RootTableType::Scalable } else { RootTableType::Legacy };
            let root = RootTable { addr: rng.below(64) << 12 | if rng.chance(16) { rng.next() } else { 0 }, kind };
            let source = SourceId(rng.below(8) as u16 | (rng.below(2) << 15) as u16);
            let pasid = if rng.chance(2) { Pasid::new(rng.below(1 << 20) as u32) } else { None };
            let addr = if rng.chance(2) { rng.next() } else { rng.below(64) << 12 | rng.below(4096) };
            let access = Access { read: rng.chance(2), write: rng.chance(2), exec: rng.chance(3), privileged: rng.chance(3) };
            let request = vsvm::vtd::Request { source, pasid, addr, access };
            let first = translator.translate(&view, root, &request);
            let second = translator.translate(&view, root, &request);
            if let (Ok(a), Ok(b)) = (first, second) {
                prop_assert_eq!(a.output, b.output);
            }
            let did = DomainId(rng.below(4) as u16);
            match rng.below(6) {
                0 => translator.caches().invalidate_context(ContextInvalidation::Device { domain: did, source, function_mask: rng.below(4) as u8 }),
                1 => translator.caches().invalidate_iotlb(IotlbInvalidation::Page { domain: did, addr, address_mask: rng.below(64) as u8, ih: false }),
                2 => if let Some(pasid) = pasid {
                    translator.caches().invalidate_pasid_iotlb(PasidIotlbInvalidation::Page { domain: did, pasid, addr, address_mask: rng.below(64) as u8, ih: true });
                },
                3 => translator.caches().invalidate_pasid_cache(PasidCacheInvalidation::Domain(did)),
                _ => {}
            }
        }
    }
}

/// A walk through tables that point at themselves ends after its fixed number of levels.
#[test]
fn test_self_referencing_tables_end() {
    let mut v = Vtd::scalable();
    let (_, dir) = v.sm_context(DEV, true, 7);
    let table = v.ram.page();
    for slot in 0..512 {
        v.ram.write(table + slot * 8, table | PAGE_TABLE);
    }
    v.set_pasid(
        dir,
        PASID,
        PasidEntryBuilder::first_level(table, DID, true, 2),
    );
    // Every level finds the same table again; level 1 then maps the table page itself.
    let t = v.translate(&req(DEV, Some(PASID), 0x1234, READ)).unwrap();
    assert_eq!(t.output, table + 0x234);
    // With PS set everywhere the walk stops at level 4 with a reserved-bit fault.
    for slot in 0..512 {
        v.ram.write(table + slot * 8, table | PAGE_TABLE | PAGE_PSE);
    }
    v.translator
        .caches()
        .invalidate_iotlb(IotlbInvalidation::Global);
    assert_eq!(v.reason(&req(DEV, Some(PASID), 0x1234, READ)).code(), 0x72);
}
