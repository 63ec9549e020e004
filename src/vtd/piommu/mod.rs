//! The physical VT-d IOMMU behind the neutral host-IOMMU API ([`HostIommu`]): host PASID
//! entries in nested mode, per-device default domains for requests without PASID, an IOTLB in
//! front of the walks, a bounded page request queue feeding the fault reporting framework,
//! and cache invalidation by host granularity. VT-d spec 3.6-3.8 (first-stage, second-stage,
//! nested translation), 6.5 (caches and invalidation), 7.5 (page requests).
//!
//! Second stage, in our server, is the client's guest-RAM map: DMA_MAP (GPA → memfd offset) is
//! what a host programs as GPA → HPA, and a [`MemView`](crate::mem::MemView) in guest-physical
//! space already is that map. Nested translation of a bound PASID is therefore the VT-d
//! first-stage walk over the map: every table fetch, every A/D update and the output go
//! through it, identity otherwise. A host process table ([`BindTarget::Process`]) and a
//! guest one ([`BindTarget::GuestPageTable`]) walk alike, because in our server host- and
//! guest-physical space coincide. Requests without PASID use the device's default domain
//! ([`DefaultDomain`]): identity, blocked, or a first- or second-stage table walked the same
//! way; their faults cannot be recovered (no page requests without PASID) and are reported.
//! The map walked is the requesting device's own ([`DeviceEndpoint::dma_memory`]): a client
//! maps guest RAM on each function's connection separately.
//!
//! Locking: one mutex over the state. Endpoints, fault handlers and the reporter are never
//! called with it held (they may call back into the IOMMU), and neither is guest memory read
//! with it held: a table in a map without fd is read through the client (DMA_READ), and a
//! vIOMMU call waiting for the lock must never wait for that reply (DESIGN.md). A walk runs
//! unlocked and fills the caches only if no invalidation happened meanwhile (a generation
//! count), so a cache never holds what an invalidation that has returned meant to drop.

mod binding;
mod default_domain;
mod prq;
mod translation;

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use log::debug;

use crate::iommu::reporter::DEFAULT_RESPONSE_TIMEOUT;
use crate::iommu::{
    Access, BindTarget, CacheInvalidate, CacheType, DefaultDomain, DeviceEndpoint, DeviceId,
    FaultHandler, FaultReporter, FaultStage, Granularity, HostIommu, IoTranslation, IommuError,
    PageRequest, PageResponse, Pasid, Perms, Result, TranslateFailure, UnrecoverableFault,
    UnrecoverableReason,
};
use crate::mem::GuestMemory;

use super::cache::Caches;
use super::cap::VtdConfig;
use super::unit::UNTRANSLATED_PAGE_SIZE;
use binding::{Binding, Entry, Pasids, Rebind, Rules, Unbound};
use default_domain::Domain;
use translation::{domain_of, Failure, Table};

pub use prq::PRQ_DEPTH;

/// One attached device.
struct Device {
    /// Where its invalidations and page responses go.
    endpoint: Arc<dyn DeviceEndpoint>,
    /// Its PASID entries.
    pasids: Pasids,
    /// What its requests without PASID translate with.
    default: Domain,
    /// The guest memory its requests reach (its own DMA map, or the IOMMU's).
    mem: GuestMemory,
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

    /// Drops the IOTLB entries of `device` that `granularity` covers, after a change of what
    /// they were translated with (the device's ATC is the caller's, with no lock held).
    fn invalidate(&mut self, device: DeviceId, granularity: Granularity) {
        translation::invalidate_iotlb(&mut self.caches, domain_of(device), granularity);
        self.changed();
    }
}

/// What the IOMMU shares with its reporter's responder.
struct Shared {
    state: Mutex<State>,
    rules: Rules,
    /// The memory of devices that have none of their own.
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

/// Where the table of an IOTLB miss comes from.
enum Source {
    /// Known: a bound or cached PASID entry, or the default domain.
    Table(Table),
    /// To be decoded from the guest's PASID directory at `dir`.
    Guest { dir: u64, pasid_bits: u8 },
}

/// An IOTLB miss: the table to walk, the memory to walk it in, and the generation it was
/// found under.
struct Miss {
    source: Source,
    mem: GuestMemory,
    generation: u64,
}

/// What the locked part of a translation decided.
enum Plan {
    /// Served by the IOTLB.
    Hit(IoTranslation),
    /// Untranslated: output = input (identity default domain).
    Identity,
    /// Walk unlocked.
    Miss(Miss),
    /// Fails for good, before any walk.
    Fail(UnrecoverableReason),
}

/// The translation of a request without PASID in an identity default domain.
fn identity(addr: u64) -> IoTranslation {
    IoTranslation {
        output: addr,
        page_size: UNTRANSLATED_PAGE_SIZE,
        perms: Perms::ALL,
    }
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
        self.shared.lock().invalidate(device, granularity);
        endpoint.invalidate_atc(granularity);
        self.reporter.abort(device, pasid);
    }

    /// The locked part of a translation: find the table (bound PASID, or the default domain
    /// for a request without PASID) and look the IOTLB up.
    fn plan(&self, device: DeviceId, pasid: Option<Pasid>, addr: u64, access: Access) -> Plan {
        let mut state = self.shared.lock();
        let generation = state.generation;
        let Ok(dev) = state.device(device) else {
            return Plan::Fail(UnrecoverableReason::PasidInvalid);
        };
        let mem = dev.mem.clone();
        let source = match pasid {
            Some(pasid) => match dev.pasids.entry(pasid) {
                Entry::Unbound => return Plan::Fail(UnrecoverableReason::PasidInvalid),
                Entry::Table(table) => Source::Table(Table::First(table)),
                Entry::Guest { dir, pasid_bits } => Source::Guest { dir, pasid_bits },
            },
            None => match dev.default {
                Domain::Identity => return Plan::Identity,
                Domain::Blocked(reason) => return Plan::Fail(reason),
                Domain::Table(table) => Source::Table(table),
            },
        };
        match translation::iotlb_lookup(&mut state.caches, device, pasid, addr, access) {
            Some(hit) => Plan::Hit(hit),
            None => Plan::Miss(Miss {
                source,
                mem,
                generation,
            }),
        }
    }

    /// The unlocked part: decode the guest PASID entry if needed, walk in the device's
    /// memory, then cache what was found unless something changed meanwhile.
    fn miss(
        &self,
        device: DeviceId,
        pasid: Option<Pasid>,
        addr: u64,
        access: Access,
        Miss {
            source,
            mem,
            generation,
        }: Miss,
    ) -> std::result::Result<IoTranslation, Failure> {
        let view = mem.view();
        let rules = &self.shared.rules;
        let (table, decoded) = match (source, pasid) {
            (Source::Table(table), _) => (table, None),
            (Source::Guest { dir, pasid_bits }, Some(pasid)) => {
                let fs = binding::decode(&view, rules, dir, pasid_bits, pasid)
                    .map_err(Failure::before_walk)?;
                (Table::First(fs), Some((pasid, dir, fs)))
            }
            // `plan` finds guest PASID tables only for requests with a PASID.
            (Source::Guest { .. }, None) => {
                return Err(Failure::before_walk(UnrecoverableReason::PasidInvalid))
            }
        };
        let walked =
            translation::walk(&view, rules, &table, domain_of(device), pasid, addr, access);
        let mut state = self.shared.lock();
        if state.generation == generation {
            if let (Some((pasid, dir, fs)), Ok(dev)) = (decoded, state.device(device)) {
                dev.pasids.cache(pasid, dir, fs);
            }
            if let Ok((_, entry)) = &walked {
                state
                    .caches
                    .insert_iotlb(translation::source_of(device), pasid, *entry);
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
        (reason, stage): (UnrecoverableReason, Option<FaultStage>),
    ) -> TranslateFailure {
        let fault = UnrecoverableFault {
            device,
            pasid,
            addr,
            access,
            reason,
            stage,
        };
        prq::report_unrecoverable(&self.reporter, fault);
        TranslateFailure::Unrecoverable(reason)
    }
}

type TranslateResult = std::result::Result<IoTranslation, TranslateFailure>;

impl HostIommu for PhysicalIommu {
    /// Attaches `device` with an identity default domain, walking in the memory its
    /// endpoint names (else the IOMMU's).
    fn attach(&self, device: DeviceId, endpoint: Arc<dyn DeviceEndpoint>) -> Result<()> {
        let mem = endpoint
            .dma_memory()
            .unwrap_or_else(|| self.shared.mem.clone());
        let mut state = self.shared.lock();
        if state.devices.contains_key(&device) {
            return Err(IommuError::AlreadyAttached(device));
        }
        state.devices.insert(
            device,
            Device {
                endpoint,
                pasids: Pasids::default(),
                default: Domain::Identity,
                mem,
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

    /// Replaces the binding of a bound PASID (with a guest PASID table bound: the table, for
    /// every PASID), then invalidates the IOTLB and ATC entries it covered; pending page
    /// requests stay pending. A binding of the other kind is `InvalidTarget`.
    fn rebind(&self, device: DeviceId, pasid: Pasid, target: BindTarget) -> Result<()> {
        let rules = &self.shared.rules;
        if !rules.pasid_supported(pasid) {
            return Err(IommuError::InvalidTarget(
                "PASID wider than the unit supports",
            ));
        }
        let binding = rules.binding(&target)?;
        let (endpoint, granularity) = {
            let mut state = self.shared.lock();
            let dev = state.device(device)?;
            let granularity = dev.pasids.rebind(pasid, binding).map_err(|e| match e {
                Rebind::NotBound => IommuError::NotBound { device, pasid },
                Rebind::OtherKind => IommuError::InvalidTarget(
                    "rebind cannot switch between a page table and a guest PASID table",
                ),
            })?;
            let endpoint = dev.endpoint.clone();
            state.invalidate(device, granularity);
            (endpoint, granularity)
        };
        endpoint.invalidate_atc(granularity);
        Ok(())
    }

    /// Replaces the default domain, then drops the device's IOTLB and ATC entries without
    /// PASID (a device-TLB flush, as when Linux changes a DMA domain).
    fn set_default_domain(&self, device: DeviceId, domain: DefaultDomain) -> Result<()> {
        let domain = self.shared.rules.default_domain(&domain)?;
        let endpoint = {
            let mut state = self.shared.lock();
            let dev = state.device(device)?;
            dev.default = domain;
            let endpoint = dev.endpoint.clone();
            state.invalidate(device, Granularity::NoPasid);
            endpoint
        };
        endpoint.invalidate_atc(Granularity::NoPasid);
        debug!("{device}: default domain {domain:?}");
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
                    state.invalidate(device, inv.granularity);
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

    /// Translates: the IOTLB, else a walk of the PASID's bound first-stage table or, without
    /// PASID, of the default domain's table (identity: output = input). With a PASID a missing
    /// page or permission is `NotPresent` (a page request can fix it); without one it is
    /// unrecoverable. Unrecoverable failures are reported to the device's fault handler.
    fn translate(
        &self,
        device: DeviceId,
        pasid: Option<Pasid>,
        addr: u64,
        access: Access,
    ) -> TranslateResult {
        let result = match self.plan(device, pasid, addr, access) {
            Plan::Hit(translation) => return Ok(translation),
            Plan::Identity => return Ok(identity(addr)),
            Plan::Fail(reason) => Err(Failure::before_walk(reason)),
            Plan::Miss(miss) => self.miss(device, pasid, addr, access, miss),
        };
        result.map_err(|failure| match failure {
            Failure::Unrecoverable { reason, stage } => {
                self.unrecoverable(device, pasid, addr, access, (reason, stage))
            }
            Failure::NotPresent => TranslateFailure::NotPresent,
        })
    }

    fn page_request(&self, req: PageRequest) {
        prq::page_request(&self.shared, &self.reporter, req);
    }
}
