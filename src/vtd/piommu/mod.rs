//! The physical VT-d IOMMU behind the neutral host-IOMMU API ([`HostIommu`]): host PASID
//! entries in nested mode, an IOTLB in front of the first-stage walk, a bounded page request
//! queue feeding the fault reporting framework, and cache invalidation by host granularity.
//! VT-d spec 3.8 (nested translation), 6.5 (caches and invalidation), 7.5 (page requests).
//!
//! Second stage, in our server, is the client's guest-RAM map: DMA_MAP (GPA → memfd offset) is
//! what a host programs as GPA → HPA, and a [`MemView`](crate::mem::MemView) in guest-physical
//! space already is that map. Nested translation of a bound PASID is therefore the VT-d
//! first-stage walk over `mem.view()`: every table fetch, every A/D update and the output go
//! through the map, identity otherwise. A host process table ([`BindTarget::Process`]) and a
//! guest one ([`BindTarget::GuestPageTable`]) walk alike, because in our server host- and
//! guest-physical space coincide. Requests without PASID pass through the map untranslated.
//!
//! Locking: one mutex over the state. Endpoints, fault handlers and the reporter are never
//! called with it held (they may call back into the IOMMU), and neither is guest memory read
//! with it held: a table in a map without fd is read through the client (DMA_READ), and a
//! vIOMMU call waiting for the lock must never wait for that reply (DESIGN.md). A walk runs
//! unlocked and fills the caches only if no invalidation happened meanwhile (a generation
//! count), so a cache never holds what an invalidation that has returned meant to drop.

mod binding;
mod prq;
mod translation;

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use log::debug;

use crate::iommu::reporter::DEFAULT_RESPONSE_TIMEOUT;
use crate::iommu::{
    Access, BindTarget, CacheInvalidate, CacheType, DeviceEndpoint, DeviceId, FaultHandler,
    FaultReporter, Granularity, HostIommu, IoTranslation, IommuError, PageRequest, PageResponse,
    Pasid, Perms, Result, TranslateFailure, UnrecoverableFault, UnrecoverableReason,
};
use crate::mem::GuestMemory;

use super::cache::Caches;
use super::cap::VtdConfig;
use super::unit::UNTRANSLATED_PAGE_SIZE;
use binding::{Binding, Entry, Pasids, Rules, Unbound};
use translation::domain_of;

pub use prq::PRQ_DEPTH;

/// One attached device.
struct Device {
    /// Where its invalidations and page responses go.
    endpoint: Arc<dyn DeviceEndpoint>,
    /// Its PASID entries.
    pasids: Pasids,
    /// `detach` is answering its pending page requests: no new bind, translation or request.
    detaching: bool,
}

/// Everything behind the lock.
#[derive(Default)]
struct State {
    devices: HashMap<DeviceId, Device>,
    /// IOTLB (the PASID and context caches of [`Caches`] are unused: PASID entries are in-process
    /// values or cached per device in [`Pasids`]).
    caches: Caches,
    /// Bumped by every change of bindings or caches; a walk started under an older value does
    /// not fill the caches.
    generation: u64,
}

impl State {
    /// The device, if attached and not being detached.
    fn device(&mut self, device: DeviceId) -> Result<&mut Device> {
        self.devices
            .get_mut(&device)
            .filter(|d| !d.detaching)
            .ok_or(IommuError::NotAttached(device))
    }

    /// Notes a change: walks in flight must not cache what they found.
    fn changed(&mut self) {
        self.generation = self.generation.wrapping_add(1);
    }
}

/// What the IOMMU shares with its reporter's responder.
struct Shared {
    state: Mutex<State>,
    rules: Rules,
    mem: GuestMemory,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A poisoned lock only means a panic elsewhere; every update leaves the state whole.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The endpoint of `device`, if attached (or, with `detaching`, being detached).
    fn endpoint(&self, device: DeviceId, detaching: bool) -> Option<Arc<dyn DeviceEndpoint>> {
        let state = self.lock();
        let dev = state.devices.get(&device)?;
        (detaching || !dev.detaching).then(|| dev.endpoint.clone())
    }
}

/// The physical IOMMU: implements [`HostIommu`] for devices reaching guest memory `mem`.
pub struct PhysicalIommu {
    shared: Arc<Shared>,
    reporter: FaultReporter,
}

impl fmt::Debug for PhysicalIommu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.shared.lock();
        let bound: usize = state.devices.values().map(|d| d.pasids.bound()).sum();
        f.debug_struct("PhysicalIommu")
            .field("devices", &state.devices.len())
            .field("bound_pasids", &bound)
            .field("reporter", &self.reporter)
            .finish()
    }
}

/// An IOTLB miss: the entry to walk, and the generation it was found under.
struct Miss {
    entry: Entry,
    generation: u64,
}

/// What the locked part of a translation decided.
enum Plan {
    /// Served by the IOTLB.
    Hit(IoTranslation),
    /// Walk unlocked.
    Miss(Miss),
    /// Fails for good.
    Fail(UnrecoverableReason),
}

impl PhysicalIommu {
    /// An IOMMU with capabilities `config` over guest memory `mem`, whose page requests wait
    /// [`DEFAULT_RESPONSE_TIMEOUT`] for a response.
    pub fn new(config: VtdConfig, mem: GuestMemory) -> Self {
        Self::with_timeout(config, mem, DEFAULT_RESPONSE_TIMEOUT)
    }

    /// As [`new`](Self::new), with page requests answered Invalid Request by the IOMMU after
    /// `timeout` without a response.
    pub fn with_timeout(config: VtdConfig, mem: GuestMemory, timeout: Duration) -> Self {
        let shared = Arc::new(Shared {
            state: Mutex::default(),
            rules: Rules::new(config),
            mem,
        });
        let reporter = FaultReporter::new(timeout, prq::responder(Arc::downgrade(&shared)));
        PhysicalIommu { shared, reporter }
    }

    /// The capabilities.
    pub fn config(&self) -> &VtdConfig {
        &self.shared.rules.config
    }

    /// Page request groups awaiting a response.
    pub fn pending_page_requests(&self) -> usize {
        self.reporter.pending()
    }

    /// Invalidates `device`'s IOTLB entries and ATC for what `unbound` covered, then answers
    /// its pending page requests for it with Invalid Request (no lock held).
    fn flush_unbound(&self, device: DeviceId, endpoint: &dyn DeviceEndpoint, unbound: Unbound) {
        let (granularity, pasid) = match unbound {
            Unbound::Pasid(pasid) => (Granularity::Pasid(pasid), Some(pasid)),
            Unbound::Table => (Granularity::Domain, None),
        };
        {
            let mut state = self.shared.lock();
            translation::invalidate_iotlb(&mut state.caches, domain_of(device), granularity);
            state.changed();
        }
        endpoint.invalidate_atc(granularity);
        self.reporter.abort(device, pasid);
    }

    /// Translation of a request without PASID: pass-through over the DMA map.
    fn untranslated(&self, device: DeviceId, addr: u64, access: Access) -> TranslateResult {
        if self.shared.lock().device(device).is_err() {
            return Err(self.unrecoverable(
                device,
                None,
                addr,
                access,
                UnrecoverableReason::PasidInvalid,
            ));
        }
        Ok(IoTranslation {
            output: addr,
            page_size: UNTRANSLATED_PAGE_SIZE,
            perms: Perms {
                read: true,
                write: true,
                exec: true,
                privileged: true,
            },
        })
    }

    /// The locked part of a translation with PASID.
    fn plan(&self, device: DeviceId, pasid: Pasid, addr: u64, access: Access) -> Plan {
        let mut state = self.shared.lock();
        let generation = state.generation;
        let entry = match state.device(device) {
            Ok(dev) => dev.pasids.entry(pasid),
            Err(_) => return Plan::Fail(UnrecoverableReason::PasidInvalid),
        };
        if entry == Entry::Unbound {
            return Plan::Fail(UnrecoverableReason::PasidInvalid);
        }
        match translation::iotlb_lookup(&mut state.caches, device, pasid, addr, access) {
            Some(hit) => Plan::Hit(hit),
            None => Plan::Miss(Miss { entry, generation }),
        }
    }

    /// The unlocked part: decode the guest PASID entry if needed, walk, then cache what was
    /// found unless something changed meanwhile.
    fn miss(
        &self,
        device: DeviceId,
        pasid: Pasid,
        addr: u64,
        access: Access,
        Miss { entry, generation }: Miss,
    ) -> TranslateResult {
        let view = self.shared.mem.view();
        let rules = &self.shared.rules;
        let (table, decoded_from) = match entry {
            Entry::Table(table) => (table, None),
            Entry::Guest { dir, pasid_bits } => {
                let table = binding::decode(&view, rules, dir, pasid_bits, pasid)
                    .map_err(TranslateFailure::Unrecoverable)?;
                (table, Some(dir))
            }
            Entry::Unbound => {
                return Err(TranslateFailure::Unrecoverable(
                    UnrecoverableReason::PasidInvalid,
                ))
            }
        };
        let walked =
            translation::walk(&view, rules, &table, domain_of(device), pasid, addr, access);
        let mut state = self.shared.lock();
        if state.generation == generation {
            if let (Some(dir), Ok(dev)) = (decoded_from, state.device(device)) {
                dev.pasids.cache(pasid, dir, table);
            }
            if let Ok((_, entry)) = &walked {
                state
                    .caches
                    .insert_iotlb(translation::source_of(device), Some(pasid), *entry);
            }
        }
        walked.map(|(translation, _)| translation)
    }

    /// Reports an unrecoverable fault and returns the failure that says so.
    fn unrecoverable(
        &self,
        device: DeviceId,
        pasid: Option<Pasid>,
        addr: u64,
        access: Access,
        reason: UnrecoverableReason,
    ) -> TranslateFailure {
        let fault = UnrecoverableFault {
            device,
            pasid,
            addr,
            access,
            reason,
        };
        prq::report_unrecoverable(&self.reporter, fault);
        TranslateFailure::Unrecoverable(reason)
    }
}

type TranslateResult = std::result::Result<IoTranslation, TranslateFailure>;

impl HostIommu for PhysicalIommu {
    fn attach(&self, device: DeviceId, endpoint: Arc<dyn DeviceEndpoint>) -> Result<()> {
        let mut state = self.shared.lock();
        if state.devices.contains_key(&device) {
            return Err(IommuError::AlreadyAttached(device));
        }
        state.devices.insert(
            device,
            Device {
                endpoint,
                pasids: Pasids::default(),
                detaching: false,
            },
        );
        state.changed();
        Ok(())
    }

    /// Detaches `device`: its bindings and IOTLB entries go, its ATC is invalidated and its
    /// pending page requests are answered Invalid Request before this returns. Its fault
    /// handler stays registered: as in Linux, the handler belongs to the device, not to its
    /// attachment (unregister it separately).
    fn detach(&self, device: DeviceId) -> Result<()> {
        let endpoint = {
            let mut state = self.shared.lock();
            let dev = state.device(device)?;
            dev.detaching = true;
            dev.pasids = Pasids::default();
            dev.endpoint.clone()
        };
        self.flush_unbound(device, endpoint.as_ref(), Unbound::Table);
        self.shared.lock().devices.remove(&device);
        debug!("{device} detached");
        Ok(())
    }

    fn bind(&self, device: DeviceId, pasid: Pasid, target: BindTarget) -> Result<()> {
        let rules = &self.shared.rules;
        if !rules.pasid_supported(pasid) {
            return Err(IommuError::InvalidTarget(
                "PASID wider than the unit supports",
            ));
        }
        let binding: Binding = rules.binding(&target)?;
        let mut state = self.shared.lock();
        state
            .device(device)?
            .pasids
            .bind(pasid, binding)
            .map_err(|_| IommuError::AlreadyBound { device, pasid })?;
        state.changed();
        Ok(())
    }

    /// Unbinds `pasid` (with a guest PASID table bound: the table, since bind ignored the
    /// PASID), then invalidates the IOTLB and the device's ATC for it and answers its pending
    /// page requests with Invalid Request, all before returning.
    fn unbind(&self, device: DeviceId, pasid: Pasid) -> Result<()> {
        let (endpoint, unbound) = {
            let mut state = self.shared.lock();
            let dev = state.device(device)?;
            let unbound = dev
                .pasids
                .unbind(pasid)
                .ok_or(IommuError::NotBound { device, pasid })?;
            let endpoint = dev.endpoint.clone();
            state.changed();
            (endpoint, unbound)
        };
        self.flush_unbound(device, endpoint.as_ref(), unbound);
        Ok(())
    }

    /// IOTLB: drops the entries of the device's domain the granularity covers. Device-TLB:
    /// forwarded to the device, returns when it completed. PASID cache: drops decoded guest
    /// PASID entries (per-PASID bindings live in the IOMMU and are no cache).
    fn cache_invalidate(&self, device: DeviceId, inv: CacheInvalidate) -> Result<()> {
        let endpoint = {
            let mut state = self.shared.lock();
            let dev = state.device(device)?;
            let endpoint = match inv.cache {
                CacheType::DeviceTlb => Some(dev.endpoint.clone()),
                CacheType::PasidCache => {
                    dev.pasids.invalidate_cache(inv.granularity);
                    None
                }
                CacheType::Iotlb => {
                    let caches = &mut state.caches;
                    translation::invalidate_iotlb(caches, domain_of(device), inv.granularity);
                    None
                }
            };
            state.changed();
            endpoint
        };
        if let Some(endpoint) = endpoint {
            endpoint.invalidate_atc(inv.granularity);
        }
        Ok(())
    }

    fn page_response(&self, resp: PageResponse) -> Result<()> {
        prq::page_response(&self.shared, &self.reporter, resp)
    }

    fn register_fault_handler(
        &self,
        device: DeviceId,
        handler: Arc<dyn FaultHandler>,
    ) -> Result<()> {
        self.reporter.register(device, handler)
    }

    fn unregister_fault_handler(&self, device: DeviceId) -> Result<()> {
        self.reporter.unregister(device)
    }

    /// Translates: without PASID, pass-through; with one, the IOTLB, else a walk of the bound
    /// first-stage table. A missing page or permission is `NotPresent`; anything else that
    /// fails is reported to the device's fault handler and `Unrecoverable`.
    fn translate(
        &self,
        device: DeviceId,
        pasid: Option<Pasid>,
        addr: u64,
        access: Access,
    ) -> TranslateResult {
        let Some(pasid) = pasid else {
            return self.untranslated(device, addr, access);
        };
        let result = match self.plan(device, pasid, addr, access) {
            Plan::Hit(translation) => return Ok(translation),
            Plan::Fail(reason) => Err(TranslateFailure::Unrecoverable(reason)),
            Plan::Miss(miss) => self.miss(device, pasid, addr, access, miss),
        };
        result.map_err(|failure| match failure {
            TranslateFailure::Unrecoverable(reason) => {
                self.unrecoverable(device, Some(pasid), addr, access, reason)
            }
            TranslateFailure::NotPresent => failure,
        })
    }

    fn page_request(&self, req: PageRequest) {
        prq::page_request(&self.shared, &self.reporter, req);
    }
}
