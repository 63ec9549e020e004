//! The page request path of the physical model: page requests into the fault reporting
//! framework through a bounded queue, page responses back to devices, and unrecoverable faults
//! to the device's fault handler. VT-d spec 7.5 (page request handling, queue overflow), 7.6
//! (page group responses); PCIe 6.0 §10.4 (PRI).

use std::sync::{Arc, Weak};

use log::debug;

use crate::iommu::reporter::Responder;
use crate::iommu::{
    FaultReporter, IommuError, IommuFault, PageRequest, PageResponse, PageResponseCode,
    UnrecoverableFault,
};

use super::super::prq::PAGE_REQ_DESC_SIZE;
use super::super::walk::PAGE_SIZE;
use super::Shared;

/// Page request groups awaiting a response (or under way: first request seen, Last not yet) at
/// most: as many as a two-page VT-d page request queue holds descriptors (8 KiB / 32 bytes). A
/// group counts once whatever its size, and is admitted or refused whole on its first request
/// (a device's groups together never hold more requests than its PRI allocation). Past it the
/// queue has overflowed.
pub const PRQ_DEPTH: usize = (2 * PAGE_SIZE / PAGE_REQ_DESC_SIZE) as usize;

/// The responder of the reporter: delivers a response the framework generated (timer, no
/// handler, unregister, abort) to the device's endpoint, found without holding the lock while
/// the endpoint runs. A device being detached still gets its aborted groups answered.
pub(super) fn responder(shared: Weak<Shared>) -> Responder {
    Arc::new(move |resp: PageResponse| {
        match shared.upgrade().and_then(|s| s.endpoint(resp.device, true)) {
            Some(endpoint) => endpoint.page_response(resp),
            None => debug!(
                "page response for group {} of detached {} dropped",
                resp.group, resp.device
            ),
        }
    })
}

/// A page request (or stop marker) from `req.device`. Reported to the device's fault handler
/// unless [`PRQ_DEPTH`] groups were pending when its group began: then, as a VT-d unit does on
/// page request queue overflow (7.5, `prq::submit`), it is not reported and the last request of
/// the group is answered with Success at once, so the device retries the access and asks again
/// once there is room. The reporter checks the bound and queues in one step.
pub(super) fn page_request(shared: &Shared, reporter: &FaultReporter, req: PageRequest) {
    let Some(endpoint) = shared.endpoint(req.device, false) else {
        debug!(
            "page request from unattached {} (group {}) dropped",
            req.device, req.group
        );
        return;
    };
    match reporter.report_within(IommuFault::PageRequest(req), PRQ_DEPTH) {
        Ok(()) => {}
        Err(IommuError::QueueFull(_)) => {
            debug!(
                "page request queue full: group {} of {} not queued",
                req.group, req.device
            );
            if req.wants_response() {
                endpoint.page_response(PageResponse::to(&req, PageResponseCode::Success));
            }
        }
        // The reporter answered a group that expected a response with Invalid Request.
        Err(e) => debug!("page request group {} of {}: {e}", req.group, req.device),
    }
}

/// Reports an unrecoverable translation fault to the device's handler; without one, logs it.
pub(super) fn report_unrecoverable(reporter: &FaultReporter, fault: UnrecoverableFault) {
    if reporter.report(IommuFault::Unrecoverable(fault)).is_err() {
        debug!(
            "unrecoverable fault of {} PASID {:?} at {:#x}: {:?} (no fault handler)",
            fault.device, fault.pasid, fault.addr, fault.reason
        );
    }
}

/// Answers a pending group: taken off the pending list, then delivered to the device (with no
/// lock held). `NotPending` delivers nothing; a device detached meanwhile is `NotAttached`.
pub(super) fn page_response(
    shared: &Shared,
    reporter: &FaultReporter,
    resp: PageResponse,
) -> crate::iommu::Result<()> {
    reporter.complete(&resp)?;
    let endpoint = shared
        .endpoint(resp.device, true)
        .ok_or(crate::iommu::IommuError::NotAttached(resp.device))?;
    endpoint.page_response(resp);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_prq_depth_is_two_pages_of_descriptors() {
        assert_eq!(PRQ_DEPTH, 256);
    }
}
