//! The invalidation queue and the event registers: tails past the queue, misaligned or equal
//! to the head, a queue outside RAM, wait descriptors whose status address is outside RAM,
//! malformed descriptors, interrupt addresses that are not interrupt addresses. Each ends
//! as IQE with the spec's IQEI (VT-d 6.5.2.10), the queue stopped until the guest clears IQE
//! and then running again, and nothing written outside RAM.
//!
//! The cases are written once, over any register window (`Machine<U>`), and run against the
//! front end here and against the translating unit in unit_queues.rs.

use crate::common_vtd::driver::*;
use crate::common_vtd::guarded::GUARD;
use crate::common_vtd::DEV;
use crate::rig::*;
use vsvm::vtd::regs::*;

const FSTS_IQE: u32 = 1 << 4;
/// IQEI values (11.4.9.4 IQERCD).
const INVALID_TAIL: u64 = 1;
const FETCH_OR_WRITE: u64 = 2;
const INVALID_TYPE: u64 = 3;
const RESERVED: u64 = 4;
const WIDTH: u64 = 5;

/// Tails past the end of a one-page queue.
pub const TAILS_PAST_END: [u32; 3] = [0x1000, 0x7_ffe0, 0x10];
/// Queue bases outside RAM: unmapped, MMIO, the lower guard, the upper guard, the top page.
pub const QUEUES_OUTSIDE_RAM: [u64; 6] = [
    UNMAPPED,
    MMIO[0],
    MMIO[1],
    0,
    GUARD + RAM_SIZE,
    0xffff_ffff_ffff_f000,
];
/// Wait status addresses outside RAM, up to the last bytes of either guard.
pub const WAITS_OUTSIDE_RAM: [u64; 7] = [
    UNMAPPED,
    MMIO[0],
    MMIO[1],
    GUARD + RAM_SIZE,
    GUARD + RAM_SIZE + 0x1000 - 4,
    GUARD - 4,
    0,
];

fn iqei<U: Unit>(m: &Machine<U>) -> u64 {
    m.readq(DMAR_IQER_REG) & 0xf
}

fn fsts<U: Unit>(m: &Machine<U>) -> u32 {
    m.readl(DMAR_FSTS_REG)
}

/// A unit with 256-bit queued invalidation on a one-page queue, events programmed.
pub fn queued<U: Unit>(m: &mut Machine<U>) {
    m.program_events();
    m.enable_qi(0, true);
}

/// The queue stopped with `code`; then the guest does what Linux's qi_check_fault does (the
/// queue head left where it stopped, IQT back on a good value, IQE cleared) and a plain
/// submission completes again.
fn expect_stop_then_recover<U: Unit>(
    m: &mut Machine<U>,
    code: u64,
    fix: impl FnOnce(&mut Machine<U>),
) {
    assert_eq!(fsts(m) & FSTS_IQE, FSTS_IQE, "IQE");
    assert_eq!(iqei(m), code, "IQEI");
    // While IQE is set the queue does not move, whatever IQT says.
    let head = m.iqh();
    let status = m.status_slot();
    m.free_head = head;
    m.push(qi::wait(status, QI_DONE, true, false, false, false));
    m.ring();
    assert_eq!(
        (m.iqh(), m.ram.read_u32(status)),
        (head, QI_IN_USE),
        "stopped"
    );
    fix(m);
    m.writel(DMAR_FSTS_REG, FSTS_IQE);
    assert_eq!(fsts(m) & FSTS_IQE, 0);
    assert_eq!(
        m.submit(&[qi::iotlb(1, 0, 0, false, 0)]),
        QI_DONE,
        "recovered"
    );
}

/// A queued unit: a tail past the queue's end stops it until fixed.
pub fn tail_past_the_end<U: Unit>(m: &mut Machine<U>, bad: u32) {
    m.writel(DMAR_IQT_REG, bad);
    expect_stop_then_recover(m, INVALID_TAIL, |_| {});
}

/// A queued unit: a tail equal to the head runs nothing; a tail one slot behind the head
/// runs the whole ring in one pass. Returns the number of descriptors the pass ran.
pub fn tail_at_and_behind_the_head<U: Unit>(m: &mut Machine<U>) -> u64 {
    m.writel(DMAR_IQT_REG, 0);
    assert_eq!((fsts(m), m.iqh()), (0, 0));
    // Every slot but one holds a wait; the tail one behind the head: 127 descriptors run,
    // one pass, and the queue is idle again.
    let slots = m.queue_size / m.desc_size - 1;
    let status: Vec<u64> = (0..slots).map(|_| m.status_slot()).collect();
    for &s in &status {
        m.push(qi::wait(s, QI_DONE, true, false, false, false));
    }
    m.ring();
    assert_eq!(m.iqh(), slots * m.desc_size);
    assert!(status.iter().all(|&s| m.ram.read_u32(s) == QI_DONE));
    assert_eq!(fsts(m), 0);
    slots
}

/// Events programmed, the queue at `base`: a fetch error until the guest moves it.
pub fn queue_outside_ram<U: Unit>(m: &mut Machine<U>, base: u64) {
    m.program_events();
    m.writeq(DMAR_IQA_REG, base | (1 << 11));
    m.gcmd |= 1 << 26;
    m.writel(DMAR_GCMD_REG, m.gcmd);
    m.writel(DMAR_IQT_REG, 0x20);
    assert_eq!(iqei(m), FETCH_OR_WRITE, "queue at 0x{base:x}");
    expect_stop_then_recover(m, FETCH_OR_WRITE, |m| {
        m.disable_qi();
        m.enable_qi(0, true);
    });
}

/// A queued unit: a wait whose status address is `addr` stops the queue on it, writes
/// nothing, and the queue resumes once the guest rewrites it.
pub fn wait_status_outside_ram<U: Unit>(m: &mut Machine<U>, addr: u64) {
    let status = m.status_slot();
    m.push(qi::wait(addr, 0xdead_beef, true, false, false, false));
    m.push(qi::wait(status, QI_DONE, true, false, false, false));
    m.ring();
    assert_eq!(m.ram.read_u32(status), QI_IN_USE, "stopped at 0x{addr:x}");
    assert_eq!((fsts(m) & FSTS_IQE, iqei(m)), (FSTS_IQE, FETCH_OR_WRITE));
    assert_eq!(m.iqh(), 0, "IQH on the bad wait");
    // Linux's fix: the bad descriptor becomes a wait of its own, IQE cleared.
    let fixed = qi::wait(status, QI_DONE, true, false, false, false);
    for (i, word) in fixed.iter().enumerate() {
        m.ram.write(IQ_BASE + i as u64 * 8, *word);
    }
    m.writel(DMAR_FSTS_REG, FSTS_IQE);
    assert_eq!(m.ram.read_u32(status), QI_DONE, "resumed at 0x{addr:x}");
}

/// A queued unit: the last four bytes of RAM are RAM.
pub fn wait_status_at_the_end_of_ram<U: Unit>(m: &mut Machine<U>) {
    let end = GUARD + RAM_SIZE;
    let wait = qi::wait(end - 4, 7, true, false, false, false);
    assert_eq!(m.submit(&[wait]), QI_DONE);
    assert_eq!(m.ram.read_u32(end - 4), 7);
}

/// Malformed descriptors for a 256-bit queue and the IQEI each must stop it with.
pub fn malformed_descriptors() -> [([u64; 4], u64); 12] {
    let reserved = |mut d: [u64; 4], word: usize, bit: u32| {
        d[word] |= 1 << bit;
        d
    };
    [
        ([0u64; 4], INVALID_TYPE),
        ([0xf, 0, 0, 0], INVALID_TYPE),
        (reserved(qi::cc(1, 0, 0, 0), 0, 50), RESERVED),
        (reserved(qi::iotlb(3, 1, IOVA, false, 0), 1, 7), RESERVED),
        (
            reserved(qi::piotlb(2, 1, PASID, 0, false, 0), 2, 0),
            RESERVED,
        ),
        (reserved(qi::pc(1, 1, PASID), 3, 63), RESERVED),
        (reserved(qi::dev_iotlb(DEV.0, 0, 0, false), 0, 12), RESERVED),
        (
            reserved(qi::wait(IQ_BASE, 0, true, false, false, false), 1, 0),
            RESERVED,
        ),
        (
            reserved(qi::page_response(DEV.0, Some(PASID), 0, 1, true), 2, 5),
            RESERVED,
        ),
        (qi::page_response(DEV.0, Some(PASID), 7, 1, true), RESERVED),
        (qi::cc(0, 0, 0, 0), RESERVED),
        (qi::pc(2, 0, 0), RESERVED),
    ]
}

/// Descriptors only a 256-bit queue may hold.
pub fn wide_only() -> [[u64; 4]; 2] {
    [
        qi::pc(1, 1, PASID),
        qi::page_response(DEV.0, Some(PASID), 0, 1, true),
    ]
}

/// A queued unit: `desc` stops the queue with `code` until the guest overwrites it.
pub fn malformed<U: Unit>(m: &mut Machine<U>, desc: [u64; 4], code: u64) {
    m.push(desc);
    m.ring();
    expect_stop_then_recover(m, code, |m| {
        let nop = qi::wait(0, 0, false, false, false, false);
        for (i, word) in nop.iter().enumerate() {
            m.ram.write(IQ_BASE + i as u64 * 8, *word);
        }
    });
}

/// Events programmed, a 128-bit queue: a 256-bit-only `desc` is a width error.
pub fn too_wide<U: Unit>(m: &mut Machine<U>, desc: [u64; 4]) {
    m.program_events();
    m.enable_qi(0, false);
    m.push(desc);
    m.ring();
    assert_eq!((fsts(m) & FSTS_IQE, iqei(m)), (FSTS_IQE, WIDTH));
}

// --- the front end -----------------------------------------------------------------------------

fn front_queued() -> Rig {
    let mut rig = Rig::new();
    queued(&mut rig.m);
    rig
}

#[test]
fn test_tail_past_the_queue_end_stops_the_queue_until_fixed() {
    for bad in TAILS_PAST_END {
        tail_past_the_end(&mut front_queued().m, bad);
    }
}

#[test]
fn test_tail_equal_to_head_runs_nothing_and_a_wrapped_tail_runs_the_whole_ring() {
    let mut rig = front_queued();
    let ran = tail_at_and_behind_the_head(&mut rig.m);
    assert_eq!(rig.m.unit.0.stats().descriptors, ran);
}

#[test]
fn test_queue_outside_ram_is_a_fetch_error_until_moved() {
    for base in QUEUES_OUTSIDE_RAM {
        queue_outside_ram(&mut Rig::new().m, base);
    }
}

#[test]
fn test_wait_status_outside_ram_is_a_queue_error_and_writes_nothing() {
    for addr in WAITS_OUTSIDE_RAM {
        wait_status_outside_ram(&mut front_queued().m, addr);
    }
    wait_status_at_the_end_of_ram(&mut front_queued().m);
}

#[test]
fn test_malformed_descriptors_stop_the_queue_with_their_code() {
    for (desc, code) in malformed_descriptors() {
        malformed(&mut front_queued().m, desc, code);
    }
    for desc in wide_only() {
        too_wide(&mut Rig::new().m, desc);
    }
}

/// Event address registers aimed at RAM or device MMIO: the unit sends nothing there (it
/// would be a DMA write the guest aimed past its own IOMMU), and counts the drop.
#[test]
fn test_events_to_addresses_outside_the_interrupt_range_are_not_sent() {
    for addr in [PA, MMIO[1], UNMAPPED, 0xfef0_0000] {
        let mut rig = front_queued();
        rig.m.writel(DMAR_IEADDR_REG, addr as u32);
        rig.m.writel(DMAR_IEADDR_REG + 4, (addr >> 32) as u32);
        let before = rig.m.unit.0.stats().interrupts_dropped;
        assert_eq!(
            rig.m
                .submit(&[qi::wait(IQ_BASE + 0xff0, 1, true, true, false, false)]),
            QI_DONE
        );
        rig.m.unit.0.flush();
        assert!(rig.msi.0.lock().unwrap().is_empty(), "sent to 0x{addr:x}");
        assert_eq!(rig.m.unit.0.stats().interrupts_dropped, before + 1);
    }
    // The same with the interrupt address: sent.
    let mut rig = front_queued();
    assert_eq!(
        rig.m
            .submit(&[qi::wait(IQ_BASE + 0xff0, 1, true, true, false, false)]),
        QI_DONE
    );
    rig.m.unit.0.flush();
    assert_eq!(
        *rig.msi.0.lock().unwrap(),
        vec![(u64::from(FE_ADDR), IE_DATA)]
    );
}
