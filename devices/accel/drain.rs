//! accel PASID drains, on a thread of their own: a PASID_CTL disable only marks the PASID and
//! hands it here, since finishing a drain means waiting for engines (and their guest memory
//! accesses), which the register thread must never do. Steps as PCIe 6.0 §10.4.1.2 (stop
//! marker) and Intel DSA's Drain PASID: stop new page requests and send the stop marker, wait
//! until every queue is past the descriptors submitted before the disable, then report idle.

use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::Duration;

use log::debug;

use super::device::Core;
use crate::iommu::Pasid;

/// How often a drain re-checks the queues when no progress was signalled.
const RECHECK: Duration = Duration::from_millis(10);

/// A drain request: the PASID and the reset generation it was made in.
pub(crate) type DrainRequest = (Pasid, u64);

/// The drainer thread: one drain after the other until the device is dropped.
pub(crate) fn run(core: Arc<Core>, requests: Receiver<DrainRequest>) {
    for (pasid, generation) in requests {
        drain(&core, pasid, generation);
    }
}

fn drain(core: &Core, pasid: Pasid, generation: u64) {
    if let Some(svm) = &core.svm {
        // Engines decide on page requests under this lock, after checking the PASID: once we
        // hold it, none of the PASID's requests can follow the stop marker. Waiters still
        // blocked on a response are aborted and their jobs stop.
        let _order = svm.request_order();
        svm.pri().drain(pasid);
    }
    while !core.drain_reached(pasid) {
        if core.generation() != generation {
            return;
        }
        core.wait_progress(|| core.drain_reached(pasid), RECHECK);
    }
    core.pasids.finish_drain(pasid, generation);
    debug!("accel: PASID {pasid} drained");
}
