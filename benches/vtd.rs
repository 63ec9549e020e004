//! VT-d translation costs, measured in one run: an IOTLB hit, a 4-level first-stage walk and a
//! nested 4+4-level walk on IOTLB misses (context and PASID caches warm), and a plain std
//! `HashMap<u64, u64>` lookup as the yardstick. Targets: hit <= 25 ns, nested miss <= 400 ns.

use std::hint::black_box;
use std::time::{Duration, Instant};

#[path = "common/yardstick.rs"]
mod yardstick;

use criterion::{criterion_group, criterion_main, Criterion};

#[path = "../tests/common_vtd/mod.rs"]
mod common_vtd;

use common_vtd::*;
use vsvm::vtd::cache::IotlbInvalidation;
use vsvm::vtd::walk::{self, FsFlags, FsTable, SsTable};
use vsvm::vtd::Access;

const PASID: u32 = 1;
const DID: u16 = 1;
const VA: u64 = 0x0000_7f55_4320_0000;
const PAGES: u64 = 512;

/// A first-stage PASID mapping 512 pages of VA (A/D already set, as after first use).
fn first_stage() -> Vtd {
    let mut v = Vtd::scalable();
    let (_, dir) = v.sm_context(DEV, true, 7);
    let tree = Tree::new(&mut v.ram, 4, Space::default(), PAGE_TABLE);
    v.set_pasid(
        dir,
        PASID,
        PasidEntryBuilder::first_level(tree.root, DID, false, 2),
    );
    for page in 0..PAGES {
        tree.map(
            &mut v.ram,
            VA + page * PAGE,
            0x1_0000_0000 + page * PAGE,
            1,
            PAGE_USER_RW | PAGE_ACCESSED | PAGE_DIRTY,
        );
    }
    v
}

/// Nested 4+4: first-stage tables behind a 4-level second stage (4 KiB pages throughout).
fn nested() -> Vtd {
    const OFFSET: u64 = 16 << 20;
    let mut v = Vtd::scalable();
    let (_, dir) = v.sm_context(DEV, true, 7);
    let rw = DMA_PTE_READ | DMA_PTE_WRITE;
    let ss = Tree::new(&mut v.ram, 4, Space::default(), rw);
    for page in 0..(4 << 20) / PAGE {
        ss.map(&mut v.ram, page * PAGE, OFFSET + page * PAGE, 1, rw);
    }
    for page in 0..PAGES {
        ss.map(
            &mut v.ram,
            0x40_0000_0000 + page * PAGE,
            0x1_0000_0000 + page * PAGE,
            1,
            rw,
        );
    }
    v.ram.skip_to(OFFSET + PAGE);
    let fs = Tree::new(&mut v.ram, 4, Space { offset: OFFSET }, PAGE_TABLE);
    v.set_pasid(
        dir,
        PASID,
        PasidEntryBuilder::nested(fs.root, false, ss.root, DID, 2),
    );
    for page in 0..PAGES {
        fs.map(
            &mut v.ram,
            VA + page * PAGE,
            0x40_0000_0000 + page * PAGE,
            1,
            PAGE_USER_RW | PAGE_ACCESSED | PAGE_DIRTY,
        );
    }
    v
}

/// Times `n` translations of successive pages, each after emptying the IOTLB (which holds
/// one entry, so that costs a few nanoseconds), minus the time of the invalidations alone.
fn miss_loop(v: &mut Vtd, n: u64) -> Duration {
    let view = v.ram.view();
    let root = v.root_table();
    let start = Instant::now();
    for i in 0..n {
        v.translator
            .caches()
            .invalidate_iotlb(IotlbInvalidation::Global);
        let r = req(DEV, Some(PASID), VA + (i % PAGES) * PAGE, Access::READ);
        black_box(v.translator.translate(&view, root, &r).unwrap());
    }
    let total = start.elapsed();
    v.translator
        .caches()
        .invalidate_iotlb(IotlbInvalidation::Global);
    let start = Instant::now();
    for _ in 0..n {
        v.translator
            .caches()
            .invalidate_iotlb(black_box(IotlbInvalidation::Global));
    }
    total.saturating_sub(start.elapsed())
}

fn benches(c: &mut Criterion) {
    let mut group = c.benchmark_group("vtd");
    group
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .sample_size(30);

    yardstick::hashmap_lookup(&mut group, VA, PAGE, PAGES);

    // IOTLB hits over the same 512 pages the yardstick looks up.
    let mut v = first_stage();
    let view = v.ram.view();
    let root = v.root_table();
    let hits: Vec<_> = (0..PAGES)
        .map(|p| req(DEV, Some(PASID), VA + p * PAGE + 0x123, Access::READ))
        .collect();
    for hit in &hits {
        v.translator.translate(&view, root, hit).unwrap();
    }
    let mut i = 0usize;
    group.bench_function("iotlb_hit", |b| {
        b.iter(|| {
            i = (i + 1) % hits.len();
            black_box(v.translator.translate(&view, root, black_box(&hits[i])))
        })
    });
    assert_eq!(
        v.translator.caches().stats().iotlb.misses,
        PAGES,
        "every timed lookup hit"
    );

    group.bench_function("first_stage_4level_miss", |b| {
        b.iter_custom(|n| miss_loop(&mut v, n))
    });
    let mut v = nested();
    group.bench_function("nested_4_4_miss", |b| {
        b.iter_custom(|n| miss_loop(&mut v, n))
    });

    // The walks alone, without the pipeline around them.
    let v = first_stage();
    let view = v.ram.view();
    let (fs_root, _) = pasid_tables(&v);
    let fs = FsTable {
        root: fs_root,
        five_level: false,
        flags: FsFlags::default(),
    };
    let fs_rsvd = walk::first_stage::reserved(48, true);
    group.bench_function("walk_first_stage_4level", |b| {
        b.iter(|| {
            black_box(walk::first_stage_only(
                &view,
                &fs,
                &fs_rsvd,
                black_box(VA),
                Access::READ,
            ))
        })
    });
    let v = nested();
    let view = v.ram.view();
    let (fs_root, ss_root) = pasid_tables(&v);
    let fs = FsTable {
        root: fs_root,
        ..fs
    };
    let ss = SsTable {
        root: ss_root,
        levels: 4,
        width: 48,
        ad: false,
        exec: false,
    };
    let ss_rsvd = walk::second_stage::reserved(48, true, true, true);
    group.bench_function("walk_nested_4_4", |b| {
        b.iter(|| {
            black_box(walk::nested(
                &view,
                &fs,
                &fs_rsvd,
                &ss,
                &ss_rsvd,
                black_box(VA),
                Access::READ,
            ))
        })
    });
    group.finish();
}

/// FSPTPTR and SSPTPTR of the bench PASID, read back from the tables.
fn pasid_tables(v: &Vtd) -> (u64, u64) {
    let context = (v.ram.read(v.root) & !0xfff) + u64::from(DEV.devfn()) * 32;
    let dir = v.ram.read(context) & !0xfff;
    let entry = (v.ram.read(dir) & !0xfff) + u64::from(PASID) * 64;
    (v.ram.read(entry + 16) & !0xfff, v.ram.read(entry) & !0xfff)
}

criterion_group!(vtd, benches);
criterion_main!(vtd);
