//! A programmable host IOMMU for the unit tests of device-side code (ats, pri): translations
//! from a list of mappings, Translation Requests counted, page requests recorded and
//! optionally answered at once. Not a model of any IOMMU; the real one is `vtd::piommu`.
//! Compiled only for unit tests: `#[cfg(test)] pub(crate) mod fake;` in iommu/mod.rs.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::{
    Access, BindTarget, CacheInvalidate, DefaultDomain, DeviceEndpoint, DeviceId, FaultHandler,
    HostIommu, IoTranslation, PageRequest, PageResponse, Pasid, Perms, Result, TranslateFailure,
};

/// Answers a page request from inside `page_request` (as an IOMMU may).
pub type Responder = Box<dyn Fn(&PageRequest) + Send + Sync>;

/// One programmed mapping: `size` bytes at `base` of `pasid` to `output`.
#[derive(Clone, Copy, Debug)]
struct Mapping {
    pasid: Option<Pasid>,
    base: u64,
    size: u64,
    output: u64,
    perms: Perms,
}

/// The fake.
#[derive(Default)]
pub struct FakeIommu {
    maps: Mutex<Vec<Mapping>>,
    translations: AtomicUsize,
    requests: Mutex<Vec<PageRequest>>,
    /// Set to answer page requests synchronously.
    pub responder: Mutex<Option<Responder>>,
}

impl FakeIommu {
    /// Maps `size` bytes at `base` of `pasid` to `output` (replacing a mapping at `base`).
    pub fn map(&self, pasid: Option<Pasid>, base: u64, size: u64, output: u64, perms: Perms) {
        let mut maps = self.maps.lock().unwrap();
        maps.retain(|m| !(m.pasid == pasid && m.base == base));
        maps.push(Mapping {
            pasid,
            base,
            size,
            output,
            perms,
        });
    }

    /// Forgets every mapping.
    pub fn unmap_all(&self) {
        self.maps.lock().unwrap().clear();
    }

    /// Translation Requests received.
    pub fn calls(&self) -> usize {
        self.translations.load(Ordering::SeqCst)
    }

    /// Page requests received, in order.
    pub fn requests(&self) -> Vec<PageRequest> {
        self.requests.lock().unwrap().clone()
    }

    /// The last page request received.
    pub fn last(&self) -> PageRequest {
        *self.requests.lock().unwrap().last().unwrap()
    }
}

impl HostIommu for FakeIommu {
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
        pasid: Option<Pasid>,
        addr: u64,
        access: Access,
    ) -> std::result::Result<IoTranslation, TranslateFailure> {
        self.translations.fetch_add(1, Ordering::SeqCst);
        let maps = self.maps.lock().unwrap();
        let m = maps
            .iter()
            .find(|m| m.pasid == pasid && m.base <= addr && addr - m.base < m.size)
            .filter(|m| m.perms.allow(access))
            .ok_or(TranslateFailure::NotPresent)?;
        Ok(IoTranslation {
            output: m.output + (addr - m.base),
            page_size: m.size,
            perms: m.perms,
        })
    }
    fn page_request(&self, req: PageRequest) {
        self.requests.lock().unwrap().push(req);
        if let Some(respond) = &*self.responder.lock().unwrap() {
            respond(&req);
        }
    }
}
