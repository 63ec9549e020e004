//! ATC costs on the device's hot path (one lookup per 4 KiB page of a copy): an `Atc` hit, an
//! `Ats::translate` hit (mode and enable checks around it), a fence taken and dropped, all
//! over 512 pages (a 2 MiB buffer), with a plain std `HashMap<u64, u64>` lookup as yardstick.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

#[path = "common/yardstick.rs"]
mod yardstick;

use criterion::{criterion_group, criterion_main, Criterion};

use vsvm::ats::{Atc, AtcLookup, Ats, AtsMode};
use vsvm::iommu::{
    Access, BindTarget, CacheInvalidate, DefaultDomain, DeviceEndpoint, DeviceId, FaultHandler,
    HostIommu, IoTranslation, PageRequest, PageResponse, Pasid, Perms, Result, TranslateFailure,
};

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
    group.finish();
}

criterion_group!(atc, benches);
criterion_main!(atc);
