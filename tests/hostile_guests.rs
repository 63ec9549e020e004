//! Hostile guests (issue 12 item 3): a guest that programs our VT-d with loops, pointers
//! outside its RAM or into MMIO, reserved bits, oversized PASIDs, queue-pointer games, wait
//! descriptors writing outside RAM, a page request queue it never drains and responses to
//! groups it was never asked about, and device jobs aimed at memory nobody mapped. Each case
//! ends as the spec's fault (fault record with the right reason, IQE, Invalid Request,
//! completion status), never as a panic or a hang, and never as a write outside guest RAM:
//! guest RAM has guard pages on both sides (tests/common/guarded.rs), inaccessible in the
//! server's own mapping and checked for their sentinel after every case.
//!
//! The guest reaches us through the front end (`src/viommu`) over the real physical model, so
//! every case is driven that way; the invalidation-queue cases also run against the translating
//! unit (`src/vtd`) on the same guarded RAM (unit_queues.rs), which has its own
//! malformed-input tests in tests/vtd_*.rs.

mod common_vtd;
#[path = "hostile_guests/device_jobs.rs"]
mod device_jobs;
#[path = "hostile_guests/page_requests.rs"]
mod page_requests;
#[path = "hostile_guests/pasid_jobs.rs"]
mod pasid_jobs;
#[path = "hostile_guests/queues.rs"]
mod queues;
#[path = "hostile_guests/rig.rs"]
mod rig;
#[path = "hostile_guests/tables.rs"]
mod tables;
#[path = "hostile_guests/unit_queues.rs"]
mod unit_queues;

use common_vtd::guarded::{GuardedRam, GUARD};

/// The guards are in place: outside every map, inaccessible in the host mapping, sentinel
/// intact — and a write into one is seen.
#[test]
fn test_guarded_ram_has_guards_that_catch_writes() {
    let guarded = GuardedRam::new(1 << 20);
    let mem = guarded.memory();
    assert!(GuardedRam::refused(&mem, GUARD - 1), "below RAM");
    assert!(GuardedRam::refused(&mem, guarded.end()), "above RAM");
    assert!(!GuardedRam::refused(&mem, GUARD));
    assert!(!GuardedRam::refused(&mem, guarded.end() - 1));
    let inaccessible = guarded.inaccessible_ranges();
    assert_eq!(
        inaccessible.len(),
        2,
        "both guards PROT_NONE: {inaccessible:x?}"
    );
    assert!(inaccessible.iter().all(|&(_, len)| len as u64 == GUARD));
    assert!(guarded.intact());
    use std::os::unix::fs::FileExt;
    guarded.memfd.write_all_at(&[0], guarded.end() + 5).unwrap();
    assert!(!guarded.intact(), "a write into the upper guard is seen");
}
