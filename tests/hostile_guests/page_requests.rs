//! Page requests: a page request queue outside RAM, a queue the guest never drains and
//! responses it never sends (the host's response timer), page group responses for groups
//! never requested or already answered. The device always gets exactly one answer per group
//! (VT-d 7.5 overflow: Success; the timer: Invalid Request), and nothing is written outside
//! the queue.

use std::time::{Duration, Instant};

use crate::common_vtd::driver::*;
use crate::common_vtd::guarded::GUARD;
use crate::common_vtd::DEV;
use crate::rig::*;
use vsvm::iommu::{PageResponse, PageResponseCode};
use vsvm::vtd::regs::*;

const PRS_PPR: u32 = 1;
const PRS_PRO: u32 = 1 << 1;
/// Descriptors in a one-page page request queue.
const SLOTS: u16 = 4096 / 32;

/// Waits (bounded) until the device has `count` responses; returns them.
fn wait_responses(rig: &Rig, count: usize) -> Vec<PageResponse> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let responses = rig.responses();
        if responses.len() >= count {
            return responses;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {count} responses",
            responses.len()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn test_queue_outside_ram_overflows_and_answers_success_until_moved() {
    for base in [UNMAPPED, MMIO[0], MMIO[1], 0, GUARD + RAM_SIZE] {
        let mut rig = Rig::new();
        rig.sva_with_page_requests(0);
        rig.m.writeq(DMAR_PQA_REG, base);
        rig.page_request(VA, 1);
        assert_eq!(rig.m.readl(DMAR_PRS_REG), PRS_PRO, "queue at 0x{base:x}");
        assert_eq!(rig.m.readq(DMAR_PQT_REG), 0, "nothing queued");
        let responses = rig.responses();
        assert_eq!(responses.len(), 1);
        assert_eq!(
            (responses[0].group, responses[0].code),
            (1, PageResponseCode::Success)
        );
        // The guest moves the queue back into RAM and clears PRO: requests are queued again.
        rig.m.enable_prq(0);
        rig.m.writel(DMAR_PRS_REG, PRS_PRO);
        rig.page_request(VA, 2);
        assert_eq!(rig.m.drain_prq(4096).len(), 1);
    }
}

/// The guest leaves its queue full and never answers: the request that finds no room is
/// answered Success at once (PRO), and every queued group is answered Invalid Request by the
/// host's response timer, so no device request waits for ever.
#[test]
fn test_undrained_queue_and_unsent_responses_end_at_the_timer() {
    let mut rig = Rig::with_timeout(Duration::from_millis(300));
    rig.sva_with_page_requests(0);
    for group in 0..SLOTS - 1 {
        rig.page_request(VA, group);
    }
    assert_eq!(rig.m.readl(DMAR_PRS_REG), PRS_PPR, "full, no overflow yet");
    rig.page_request(VA, SLOTS - 1);
    assert_eq!(rig.m.readl(DMAR_PRS_REG), PRS_PPR | PRS_PRO);
    let overflowed = rig.responses();
    assert_eq!(overflowed.len(), 1);
    assert_eq!(overflowed[0].code, PageResponseCode::Success);
    // While PRO is set nothing more is queued; more requests get Success as well.
    rig.page_request(VA, SLOTS);
    assert_eq!(rig.m.readq(DMAR_PQT_REG), u64::from(SLOTS - 1) * 32);
    let all = wait_responses(&rig, usize::from(SLOTS) + 1);
    let mut timed_out: Vec<u16> = all
        .iter()
        .filter(|r| r.code == PageResponseCode::InvalidRequest)
        .map(|r| r.group)
        .collect();
    timed_out.sort();
    assert_eq!(
        timed_out,
        (0..SLOTS - 1).collect::<Vec<_>>(),
        "each queued group once"
    );
    assert_eq!(rig.iommu.pending_page_requests(), 0);
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(
        rig.responses().len(),
        usize::from(SLOTS) + 1,
        "nothing answered twice"
    );
    // The guest's answers come after the timer's: dropped, counted late.
    let late = qi::page_response(DEV.0, Some(PASID), 0, 3, true);
    assert_eq!(rig.m.submit(&[late]), QI_DONE);
    assert_eq!(rig.m.unit.0.stats().late_page_responses, 1);
    // The guest drains and clears PRO: the next request is queued and answered normally.
    assert_eq!(rig.m.drain_prq(4096).len(), usize::from(SLOTS) - 1);
    rig.m.writel(DMAR_PRS_REG, PRS_PRO);
    rig.page_request(VA, 9);
    assert_eq!(rig.m.drain_prq(4096).len(), 1);
    let answer = qi::page_response(DEV.0, Some(PASID), 0, 9, true);
    assert_eq!(rig.m.submit(&[answer]), QI_DONE);
    let last = *rig.responses().last().unwrap();
    assert_eq!((last.group, last.code), (9, PageResponseCode::Success));
}

#[test]
fn test_responses_for_unknown_or_answered_groups_are_dropped_and_counted() {
    let mut rig = Rig::new();
    rig.sva_with_page_requests(0);
    // Never requested: this group, another PASID, no PASID, a device not behind the unit.
    let stray = [
        qi::page_response(DEV.0, Some(PASID), 0, 77, true),
        qi::page_response(DEV.0, Some(PASID + 1), 0, 5, true),
        qi::page_response(DEV.0, None, 0, 5, true),
        qi::page_response(0x0820, Some(PASID), 0, 5, true),
    ];
    assert_eq!(rig.m.submit(&stray), QI_DONE, "no queue error");
    assert!(rig.responses().is_empty(), "nothing reached the device");
    assert_eq!(rig.m.unit.0.stats().late_page_responses, 4);
    // Requested once, answered twice: the device sees one answer.
    rig.page_request(VA, 5);
    let answer = qi::page_response(DEV.0, Some(PASID), 0, 5, true);
    assert_eq!(rig.m.submit(&[answer, answer]), QI_DONE);
    assert_eq!(rig.responses().len(), 1);
    assert_eq!(rig.m.unit.0.stats().late_page_responses, 5);
    // The next group works.
    rig.page_request(VA, 6);
    let answer = qi::page_response(DEV.0, Some(PASID), 1, 6, true);
    assert_eq!(rig.m.submit(&[answer]), QI_DONE);
    let responses = rig.responses();
    assert_eq!(responses.len(), 2);
    assert_eq!(
        (responses[1].group, responses[1].code),
        (6, PageResponseCode::InvalidRequest)
    );
    let stats = rig.m.unit.0.stats();
    assert_eq!((stats.page_requests, stats.page_responses), (2, 2));
}
