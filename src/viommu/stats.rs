//! What the front end did, counted: for logs, tests and the demo's summary.

use std::sync::atomic::{AtomicU64, Ordering};

/// Live counters (relaxed atomics: each is a plain tally).
#[derive(Debug, Default)]
pub struct Counters {
    pub(super) descriptors: AtomicU64,
    pub(super) invalidations: AtomicU64,
    pub(super) pasid_iotlb_invalidations: AtomicU64,
    pub(super) pasid_devtlb_invalidations: AtomicU64,
    pub(super) default_domains: AtomicU64,
    pub(super) binds: AtomicU64,
    pub(super) unbinds: AtomicU64,
    pub(super) page_requests: AtomicU64,
    pub(super) page_groups: AtomicU64,
    pub(super) stop_markers: AtomicU64,
    pub(super) page_responses: AtomicU64,
    pub(super) late_page_responses: AtomicU64,
    pub(super) faults_recorded: AtomicU64,
    pub(super) interrupts_sent: AtomicU64,
    pub(super) interrupts_dropped: AtomicU64,
    pub(super) page_requests_overflowed: AtomicU64,
    pub(super) faults_overflowed: AtomicU64,
}

/// A snapshot of the counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Invalidation queue descriptors processed.
    pub descriptors: u64,
    /// Invalidations forwarded to the host IOMMU (after granularity conversion, per device).
    pub invalidations: u64,
    /// Of those, IOTLB invalidations of one PASID (all of it or a range): what the guest's
    /// PASID-based IOTLB invalidations of an SVA address space (munmap, unbind) became.
    pub pasid_iotlb_invalidations: u64,
    /// Of those, device-TLB (ATC) invalidations of one PASID (all of it or a range): the
    /// guest's PASID-based device-TLB invalidations, sent on to the device.
    pub pasid_devtlb_invalidations: u64,
    /// Default-domain changes made.
    pub default_domains: u64,
    /// PASID binds and rebinds made.
    pub binds: u64,
    /// PASID unbinds made.
    pub unbinds: u64,
    /// Page requests written into the guest's page request queue, one per page (stop markers
    /// are counted apart).
    pub page_requests: u64,
    /// Of those, the ones that ended a page request group (Last set): each wants one page group
    /// response, whatever the number of pages in its group.
    pub page_groups: u64,
    /// Stop markers written into the guest's page request queue (a PASID drained: no
    /// response).
    pub stop_markers: u64,
    /// Page group responses forwarded from the guest to the host IOMMU.
    pub page_responses: u64,
    /// Page group responses of the guest dropped because the host had answered the group
    /// already (its PASID unbound meanwhile, e.g. a process killed with requests pending):
    /// with `page_responses`, one per page request group the guest answered.
    pub late_page_responses: u64,
    /// Faults recorded in the guest's fault recording registers.
    pub faults_recorded: u64,
    /// Interrupt messages sent.
    pub interrupts_sent: u64,
    /// Interrupt messages no function could carry.
    pub interrupts_dropped: u64,
    /// Page requests answered Success at once (and PRS.PRO set) because the front end's
    /// backlog was full ([`super::MAX_BACKLOG`]).
    pub page_requests_overflowed: u64,
    /// Unrecoverable faults not recorded (and FSTS.PFO set) because the backlog was full.
    pub faults_overflowed: u64,
}

impl Counters {
    /// Adds one to `counter`.
    pub(super) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The values now.
    pub fn snapshot(&self) -> Stats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Stats {
            descriptors: get(&self.descriptors),
            invalidations: get(&self.invalidations),
            pasid_iotlb_invalidations: get(&self.pasid_iotlb_invalidations),
            pasid_devtlb_invalidations: get(&self.pasid_devtlb_invalidations),
            default_domains: get(&self.default_domains),
            binds: get(&self.binds),
            unbinds: get(&self.unbinds),
            page_requests: get(&self.page_requests),
            page_groups: get(&self.page_groups),
            stop_markers: get(&self.stop_markers),
            page_responses: get(&self.page_responses),
            late_page_responses: get(&self.late_page_responses),
            faults_recorded: get(&self.faults_recorded),
            interrupts_sent: get(&self.interrupts_sent),
            interrupts_dropped: get(&self.interrupts_dropped),
            page_requests_overflowed: get(&self.page_requests_overflowed),
            faults_overflowed: get(&self.faults_overflowed),
        }
    }
}
