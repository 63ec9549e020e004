//! The host IOMMU's fault reports for the devices behind the unit, as the guest's VT-d shows
//! them: page requests become page request descriptors in the guest's page request queue
//! (7.5), unrecoverable faults become fault records with the spec's fault reason (7.2, 7.1.3).

use std::sync::{Arc, Weak};

use log::{debug, warn};

use super::backlog::Sent;
use super::devices::{source, Devices};
use super::registers::{Outbox, Registers};
use super::stats::Counters;
use super::tables::Tables;
use super::worker::Work;
use super::Shared;
use crate::iommu::{
    DeviceId, FaultStage, IommuFault, PageRequest, PageResponse, UnrecoverableFault,
    UnrecoverableReason,
};
use crate::mem::MemView;
use crate::vtd::fault::FaultReason;
use crate::vtd::prq::{self, PageRequest as VtdPageRequest, PageRequestOutcome};
use crate::vtd::regs::{Fsts, Prs};
use crate::vtd::request::{Fault, Request};
use crate::vtd::sink::{PageResponseCode, VtdSink};

/// Registers the front end as `device`'s fault handler: reports go to its thread, in order,
/// or, when its backlog is full, are answered at once (see [`overflow`]).
pub fn register(shared: &Arc<Shared>, device: DeviceId) {
    let weak: Weak<Shared> = Arc::downgrade(shared);
    let handler = move |fault: &IommuFault| {
        // Gone means the front end is being dropped: nothing to report to.
        let Some(shared) = weak.upgrade() else {
            return;
        };
        if let Sent::Full(Work::Fault(fault)) = shared.backlog.send(Work::Fault(*fault)) {
            overflow(&shared, &fault);
        }
    };
    if let Err(e) = shared
        .iommu
        .register_fault_handler(device, Arc::new(handler))
    {
        warn!("vIOMMU: cannot handle the faults of {device}: {e}");
    }
}

/// A report the front end's thread has no room for, answered as the unit does when its own
/// queues are full: a page request as on page request queue overflow (7.5: PRS.PRO set, a
/// request that ends its group answered Success, so that the device asks again later), an
/// unrecoverable fault as on fault recording overflow (7.2: FSTS.PFO set, the fault not
/// recorded). Neither raises an event here: that would need the thread.
fn overflow(shared: &Shared, fault: &IommuFault) {
    match fault {
        IommuFault::PageRequest(req) => {
            shared.regs().regs.update(|prs: Prs| prs.with_pro(true));
            Counters::bump(&shared.stats.page_requests_overflowed);
            if req.wants_response() {
                let resp = PageResponse::to(req, PageResponseCode::Success);
                if let Err(e) = shared.iommu.page_response(resp) {
                    debug!("vIOMMU: overflow response to {}: {e}", req.device);
                }
            }
        }
        IommuFault::Unrecoverable(f) => {
            shared.regs().regs.update(|fsts: Fsts| fsts.with_pfo(true));
            Counters::bump(&shared.stats.faults_overflowed);
            debug!(
                "vIOMMU: fault of {} at {:#x} not recorded",
                f.device, f.addr
            );
        }
    }
}

/// The page request as the guest's VT-d queues it.
fn vtd_request(req: &PageRequest) -> VtdPageRequest {
    VtdPageRequest {
        source: source(req.device),
        pasid: req.pasid,
        addr: req.addr,
        read: req.access.read,
        write: req.access.write,
        exec: req.access.exec,
        privileged: req.access.privileged,
        last_in_group: req.last,
        prg_index: req.group,
        private_data: None,
    }
}

/// Queues a device's page request in the guest's PRQ, or refuses it (recording the fault) when
/// the guest has not enabled page requests for the device. Returns what the unit answered by
/// itself in `outbox`.
pub fn page_request(
    regs: &mut Registers,
    tables: &Tables,
    view: &MemView,
    req: &PageRequest,
    counters: &Counters,
    outbox: &mut Outbox,
) -> PageRequestOutcome {
    let vreq = vtd_request(req);
    if let Err(refused) = tables.page_requests_allowed(vreq.source) {
        let fault = Fault {
            reason: refused.reason,
            request: vreq.as_request(),
            fpd: refused.fpd && refused.reason.is_qualified(),
        };
        record(regs, &fault, counters, outbox);
        let response = vreq.auto_response(PageResponseCode::InvalidRequest);
        if let Some(resp) = response {
            outbox.page_group_response(resp);
        }
        return PageRequestOutcome::Rejected {
            auto_response: response.is_some(),
        };
    }
    let outcome = prq::submit(&mut regs.regs, view, &vreq, outbox);
    if matches!(outcome, PageRequestOutcome::Queued { .. }) {
        // A stop marker wants no response: counted apart, so that page groups (Last) and page
        // responses can be compared.
        Counters::bump(if req.is_stop_marker() {
            &counters.stop_markers
        } else {
            &counters.page_requests
        });
        if req.wants_response() {
            Counters::bump(&counters.page_groups);
        }
    }
    outcome
}

/// Records an unrecoverable fault the host IOMMU reported.
pub fn unrecoverable(
    regs: &mut Registers,
    devices: &Devices,
    tables: &Tables,
    fault: &UnrecoverableFault,
    counters: &Counters,
    outbox: &mut Outbox,
) {
    let request = Request {
        source: source(fault.device),
        pasid: fault.pasid,
        addr: fault.addr,
        access: fault.access,
    };
    // A device blocked by its entries faults with the reason its entries gave; so does a
    // request whose PASID the host has nothing bound for (the guest's entries say why: not
    // present, beyond the directory, PASIDs disabled, malformed).
    let refused = match fault.pasid {
        None => devices.get(fault.device).and_then(|s| s.blocked()),
        Some(pasid) if fault.reason == UnrecoverableReason::PasidInvalid => {
            tables.pasid_refusal(request.source, pasid)
        }
        Some(_) => None,
    };
    let (reason, fpd) = match refused {
        Some(entry) => (entry.reason, entry.fpd && entry.reason.is_qualified()),
        None => (reason(fault, tables.scalable()), false),
    };
    record(
        regs,
        &Fault {
            reason,
            request,
            fpd,
        },
        counters,
        outbox,
    );
}

fn record(regs: &mut Registers, fault: &Fault, counters: &Counters, outbox: &mut Outbox) {
    let outcome = regs.fault_log.record(&mut regs.regs, fault, outbox);
    debug!(
        "vIOMMU fault {} from {}: {outcome:?}",
        fault.reason, fault.request.source
    );
    Counters::bump(&counters.faults_recorded);
}

/// The VT-d fault reason for a neutral one (7.1.3: legacy LGN/LSL, scalable SFS/SSS).
fn reason(fault: &UnrecoverableFault, scalable: bool) -> FaultReason {
    use FaultReason::*;
    let write = fault.access.write;
    let second = fault.stage == Some(FaultStage::Second);
    if !scalable {
        return match fault.reason {
            UnrecoverableReason::OutOfRange => AddressBeyondMgaw,
            UnrecoverableReason::Walk => PagingEntryReserved,
            UnrecoverableReason::PteFetch | UnrecoverableReason::RootFetch => PagingEntryInvalid,
            _ if write => WriteNotPermitted,
            _ => ReadNotPermitted,
        };
    }
    match fault.reason {
        UnrecoverableReason::NotPresent if second => SmSecondStageEntryPermission,
        UnrecoverableReason::NotPresent => SmFirstStageEntryNotPresent,
        UnrecoverableReason::Permission if write => SmWriteNotPermitted,
        UnrecoverableReason::Permission => SmReadNotPermitted,
        UnrecoverableReason::PteFetch if second => SmSecondStageEntryAccess,
        UnrecoverableReason::PteFetch => SmFirstStageEntryAccess,
        UnrecoverableReason::RootFetch if second => SmSecondStageRootInvalid,
        UnrecoverableReason::RootFetch => SmFirstStageRootAccess,
        UnrecoverableReason::Walk if second => SmSecondStageEntryReserved,
        UnrecoverableReason::Walk => SmFirstStageEntryReserved,
        UnrecoverableReason::OutOfRange if second => SmAddressBeyondMax,
        UnrecoverableReason::OutOfRange => SmNonCanonical,
        UnrecoverableReason::PasidFetch => SmPasidEntryAccess,
        UnrecoverableReason::BadPasidEntry => SmPasidEntryInvalid,
        UnrecoverableReason::PasidInvalid => SmPasidEntryNotPresent,
        _ => SmPasidEntryInvalid,
    }
}

/// Handles one report on the front end's thread.
pub fn handle(
    shared: &Shared,
    devices: &Devices,
    tables: &Tables,
    fault: &IommuFault,
    outbox: &mut Outbox,
) {
    let counters = &shared.stats;
    let mut regs = shared.regs();
    match fault {
        IommuFault::PageRequest(req) => {
            let outcome = page_request(&mut regs, tables, &tables.view, req, counters, outbox);
            debug!("vIOMMU page request {req:?}: {outcome:?}");
        }
        IommuFault::Unrecoverable(f) => {
            unrecoverable(&mut regs, devices, tables, f, counters, outbox)
        }
    }
}
