//! ATC costs on the device's hot path (one lookup per 4 KiB page of a copy): an `Atc` hit, an
//! `Ats::translate` hit (mode and enable checks around it), a fence taken and dropped, all
//! over 512 pages (a 2 MiB buffer), with a plain std `HashMap<u64, u64>` lookup as yardstick.
//! Then the same translation behind the physical VT-d model, with a PASID (bound guest page
//! table) and without (first-stage default domain), side by side: an ATC hit, and an ATC
//! miss that the IOMMU answers with a 4-level first-stage walk (its IOTLB empty too).

use std::hint::black_box;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

#[path = "../tests/common_vtd/mod.rs"]
mod common_vtd;
#[path = "common/yardstick.rs"]
mod yardstick;

use criterion::{criterion_group, criterion_main, Criterion};

use common_vtd::dma_domain::{fl_leaf, DmaDomain};
use common_vtd::process::Process;
use common_vtd::{GuestRam, PAGE_ACCESSED, PAGE_DIRTY, PAGE_USER_RW};
use vsvm::ats::{Atc, AtcLookup, Ats, AtsMode};
use vsvm::iommu::{
    Access, BindTarget, CacheInvalidate, CacheType, DefaultDomain, DeviceEndpoint, DeviceId,
    FaultHandler, FirstStageFlags, Granularity, HostIommu, IoTranslation, PageRequest,
    PageResponse, Pasid, Perms, Result, TranslateFailure,
};
use vsvm::vtd::piommu::PhysicalIommu;
use vsvm::vtd::VtdConfig;

const PAGE: u64 = 4096;
const PAGES: u64 = 512;
const VA: u64 = 0x0000_7f55_4320_0000;
const DEV: DeviceId = DeviceId(0x0100);
const RW: Perms = Perms {
    read: true,
    write: true,
    exec: false,
    privileged: false,
};

/// Maps every page 1:1 at +4 GiB, read-write, 4 KiB pages.
struct Linear;

impl HostIommu for Linear {
    fn attach(&self, _: DeviceId, _: Arc<dyn DeviceEndpoint>) -> Result<()> {
        Ok(())
    }
    fn detach(&self, _: DeviceId) -> Result<()> {
        Ok(())
    }
    fn bind(&self, _: DeviceId, _: Pasid, _: BindTarget) -> Result<()> {
        Ok(())
    }
    fn unbind(&self, _: DeviceId, _: Pasid) -> Result<()> {
        Ok(())
    }
    fn rebind(&self, _: DeviceId, _: Pasid, _: BindTarget) -> Result<()> {
        Ok(())
    }
    fn set_default_domain(&self, _: DeviceId, _: DefaultDomain) -> Result<()> {
        Ok(())
    }
    fn cache_invalidate(&self, _: DeviceId, _: CacheInvalidate) -> Result<()> {
        Ok(())
    }
    fn page_response(&self, _: PageResponse) -> Result<()> {
        Ok(())
    }
    fn register_fault_handler(&self, _: DeviceId, _: Arc<dyn FaultHandler>) -> Result<()> {
        Ok(())
    }
    fn unregister_fault_handler(&self, _: DeviceId) -> Result<()> {
        Ok(())
    }
    fn translate(
        &self,
        _: DeviceId,
        _: Option<Pasid>,
        addr: u64,
        _: Access,
    ) -> std::result::Result<IoTranslation, TranslateFailure> {
        Ok(IoTranslation {
            output: addr + (1 << 32),
            page_size: PAGE,
            perms: RW,
        })
    }
    fn page_request(&self, _: PageRequest) {}
}

fn benches(c: &mut Criterion) {
    let mut group = c.benchmark_group("atc");
    group
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .sample_size(30);
    let pasid = Pasid::new(1);

    yardstick::hashmap_lookup(&mut group, VA, PAGE, PAGES);

    let atc = Atc::new();
    for p in 0..PAGES {
        let addr = VA + p * PAGE;
        if let AtcLookup::Miss(ticket) = atc.lookup(pasid, addr, Access::READ) {
            let t = Linear.translate(DEV, pasid, addr, Access::READ).unwrap();
            atc.insert(ticket, pasid, addr, Access::READ, &t);
        }
    }
    let mut i = 0u64;
    group.bench_function("atc_hit", |b| {
        b.iter(|| {
            i = (i + 1) % PAGES;
            black_box(atc.lookup(pasid, black_box(VA + i * PAGE + 0x10), Access::WRITE))
        })
    });
    let stats = atc.stats();
    assert_eq!(
        (stats.misses, stats.entries),
        (PAGES, PAGES as usize),
        "every timed lookup hit"
    );

    let ats = Ats::new(DEV, Arc::new(Linear), AtsMode::Translated);
    for p in 0..PAGES {
        ats.translate(pasid, VA + p * PAGE, Access::READ).unwrap();
    }
    let mut i = 0u64;
    group.bench_function("ats_translate_hit", |b| {
        b.iter(|| {
            i = (i + 1) % PAGES;
            black_box(ats.translate(pasid, black_box(VA + i * PAGE), Access::WRITE))
        })
    });
    assert_eq!(ats.stats().misses, PAGES, "every timed translation hit");

    group.bench_function("ats_fence", |b| b.iter(|| drop(black_box(ats.fence()))));

    pasid_and_no_pasid(&mut group);
    group.finish();
}

/// IOVAs of the default domain's 512 pages (a 2 MiB-aligned block below 4 GiB).
const IOVA: u64 = 0x8000_0000;
/// Guest-physical frames both tables map to.
const GPA: u64 = 0x0100_0000;

/// The device end of the physical-model rig: invalidations go to its ATC.
struct Port(OnceLock<Arc<Ats>>);

impl DeviceEndpoint for Port {
    fn invalidate_atc(&self, granularity: Granularity) {
        if let Some(ats) = self.0.get() {
            ats.invalidate(granularity);
        }
    }
    fn page_response(&self, _: PageResponse) {}
}

/// The physical model with device `DEV` behind it: PASID 1 bound to a process mapping VA's
/// 512 pages, and a first-stage default domain mapping IOVA's 512 pages, both to the same
/// frames, with A/D already set (as after first use: walks read, never write).
fn physical() -> (Arc<PhysicalIommu>, Arc<Ats>) {
    let mut ram = GuestRam::new(32 << 20);
    let process = Process::new(&mut ram, false);
    let dma = DmaDomain::first_stage(&mut ram);
    for p in 0..PAGES {
        let flags = PAGE_USER_RW | PAGE_ACCESSED | PAGE_DIRTY;
        process.map_4k(&mut ram, VA + p * PAGE, GPA + p * PAGE, flags);
        dma.map_4k(&mut ram, IOVA + p * PAGE, GPA + p * PAGE, true);
    }
    assert_ne!(fl_leaf(true) & PAGE_DIRTY, 0);
    let iommu = Arc::new(PhysicalIommu::new(VtdConfig::default(), ram.mem.clone()));
    let port = Arc::new(Port(OnceLock::new()));
    iommu.attach(DEV, port.clone()).unwrap();
    let ats = Arc::new(Ats::new(DEV, iommu.clone(), AtsMode::Translated));
    port.0.set(ats.clone()).ok().unwrap();
    let table = process.page_table(FirstStageFlags::default());
    let pasid = Pasid::new(1).unwrap();
    iommu
        .bind(DEV, pasid, BindTarget::GuestPageTable(table))
        .unwrap();
    iommu.set_default_domain(DEV, dma.domain()).unwrap();
    (iommu, ats)
}

/// Times `n` translations of successive pages of `base` that all miss the ATC and the IOTLB:
/// both are emptied, untimed, before each pass over the 512 pages.
fn miss_loop(
    iommu: &PhysicalIommu,
    ats: &Ats,
    pasid: Option<Pasid>,
    base: u64,
    n: u64,
) -> Duration {
    let granularity = pasid.map_or(Granularity::NoPasid, Granularity::Pasid);
    let mut total = Duration::ZERO;
    let mut done = 0;
    while done < n {
        for cache in [CacheType::Iotlb, CacheType::DeviceTlb] {
            let inv = CacheInvalidate { cache, granularity };
            iommu.cache_invalidate(DEV, inv).unwrap();
        }
        let pass = (n - done).min(PAGES);
        let start = Instant::now();
        for p in 0..pass {
            black_box(ats.translate(pasid, black_box(base + p * PAGE), Access::READ)).unwrap();
        }
        total += start.elapsed();
        done += pass;
    }
    total
}

/// A request with PASID and one without, side by side: ATC hit, then ATC and IOTLB miss.
fn pasid_and_no_pasid(group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>) {
    let (iommu, ats) = physical();
    let cases = [("pasid", Pasid::new(1), VA), ("no_pasid", None, IOVA)];
    for (name, pasid, base) in cases {
        for p in 0..PAGES {
            let t = ats.translate(pasid, base + p * PAGE, Access::READ).unwrap();
            assert_eq!(t.output, GPA + p * PAGE, "{name}");
        }
    }
    for (name, pasid, base) in cases {
        let before = ats.stats();
        let mut i = 0u64;
        group.bench_function(format!("translate_{name}_atc_hit"), |b| {
            b.iter(|| {
                i = (i + 1) % PAGES;
                black_box(ats.translate(pasid, black_box(base + i * PAGE), Access::WRITE))
            })
        });
        assert_eq!(
            ats.stats().misses,
            before.misses,
            "every timed {name} lookup hit"
        );
    }
    for (name, pasid, base) in cases {
        group.bench_function(format!("translate_{name}_miss_walk"), |b| {
            b.iter_custom(|n| miss_loop(&iommu, &ats, pasid, base, n))
        });
    }
}

criterion_group!(atc, benches);
criterion_main!(atc);
