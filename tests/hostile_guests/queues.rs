//! The invalidation queue and the event registers: tails past the queue, misaligned or equal
//! to the head, a queue outside RAM, wait descriptors whose status address is outside RAM,
//! malformed descriptors, interrupt addresses that are not interrupt addresses. Each ends
//! as IQE with the spec's IQEI (VT-d 6.5.2.10), the queue stopped until the guest clears IQE
//! and then running again, and nothing written outside RAM.

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

fn iqei(rig: &Rig) -> u64 {
    rig.m.readq(DMAR_IQER_REG) & 0xf
}

/// A unit with 256-bit queued invalidation on a one-page queue, events programmed.
fn queued() -> Rig {
    let mut rig = Rig::new();
    rig.m.program_events();
    rig.m.enable_qi(0, true);
    rig
}

/// The queue stopped with `code`; then the guest does what Linux's qi_check_fault does (the
/// queue head left where it stopped, IQT back on a good value, IQE cleared) and a plain
/// submission completes again.
fn expect_stop_then_recover(rig: &mut Rig, code: u64, fix: impl FnOnce(&mut Rig)) {
    assert_eq!(rig.fsts() & FSTS_IQE, FSTS_IQE, "IQE");
    assert_eq!(iqei(rig), code, "IQEI");
    // While IQE is set the queue does not move, whatever IQT says.
    let head = rig.m.iqh();
    let status = rig.m.status_slot();
    rig.m.free_head = head;
    rig.m
        .push(qi::wait(status, QI_DONE, true, false, false, false));
    rig.m.ring();
    assert_eq!(
        (rig.m.iqh(), rig.m.ram.read_u32(status)),
        (head, QI_IN_USE),
        "stopped"
    );
    fix(rig);
    rig.m.writel(DMAR_FSTS_REG, FSTS_IQE);
    assert_eq!(rig.fsts() & FSTS_IQE, 0);
    assert_eq!(
        rig.m.submit(&[qi::iotlb(1, 0, 0, false, 0)]),
        QI_DONE,
        "recovered"
    );
}

#[test]
fn test_tail_past_the_queue_end_stops_the_queue_until_fixed() {
    for bad in [0x1000, 0x7_ffe0, 0x10] {
        let mut rig = queued();
        rig.m.writel(DMAR_IQT_REG, bad);
        expect_stop_then_recover(&mut rig, INVALID_TAIL, |_| {});
    }
}

#[test]
fn test_tail_equal_to_head_runs_nothing_and_a_wrapped_tail_runs_the_whole_ring() {
    let mut rig = queued();
    rig.m.writel(DMAR_IQT_REG, 0);
    assert_eq!((rig.fsts(), rig.m.iqh()), (0, 0));
    assert_eq!(rig.m.unit.0.stats().descriptors, 0);
    // Every slot but one holds a wait; the tail one behind the head: 127 descriptors run,
    // one pass, and the queue is idle again.
    let slots = rig.m.queue_size / rig.m.desc_size - 1;
    let status: Vec<u64> = (0..slots).map(|_| rig.m.status_slot()).collect();
    for &s in &status {
        rig.m.push(qi::wait(s, QI_DONE, true, false, false, false));
    }
    rig.m.ring();
    assert_eq!(rig.m.iqh(), slots * rig.m.desc_size);
    assert!(status.iter().all(|&s| rig.m.ram.read_u32(s) == QI_DONE));
    assert_eq!(rig.m.unit.0.stats().descriptors, slots);
    assert_eq!(rig.fsts(), 0);
}

#[test]
fn test_queue_outside_ram_is_a_fetch_error_until_moved() {
    for base in [
        UNMAPPED,
        MMIO[0],
        MMIO[1],
        0,
        GUARD + RAM_SIZE,
        0xffff_ffff_ffff_f000,
    ] {
        let mut rig = Rig::new();
        rig.m.program_events();
        rig.m.writeq(DMAR_IQA_REG, base | (1 << 11));
        rig.m.gcmd |= 1 << 26;
        rig.m.writel(DMAR_GCMD_REG, rig.m.gcmd);
        rig.m.writel(DMAR_IQT_REG, 0x20);
        assert_eq!(iqei(&rig), FETCH_OR_WRITE, "queue at 0x{base:x}");
        expect_stop_then_recover(&mut rig, FETCH_OR_WRITE, |rig| {
            rig.m.disable_qi();
            rig.m.enable_qi(0, true);
        });
    }
}

#[test]
fn test_wait_status_outside_ram_is_a_queue_error_and_writes_nothing() {
    let end = GUARD + RAM_SIZE;
    for addr in [
        UNMAPPED,
        MMIO[0],
        MMIO[1],
        end,
        end + 0x1000 - 4,
        GUARD - 4,
        0,
    ] {
        let mut rig = queued();
        let status = rig.m.status_slot();
        rig.m
            .push(qi::wait(addr, 0xdead_beef, true, false, false, false));
        rig.m
            .push(qi::wait(status, QI_DONE, true, false, false, false));
        rig.m.ring();
        assert_eq!(
            rig.m.ram.read_u32(status),
            QI_IN_USE,
            "stopped at 0x{addr:x}"
        );
        assert_eq!(
            (rig.fsts() & FSTS_IQE, iqei(&rig)),
            (FSTS_IQE, FETCH_OR_WRITE)
        );
        assert_eq!(rig.m.iqh(), 0, "IQH on the bad wait");
        // Linux's fix: the bad descriptor becomes a wait of its own, IQE cleared.
        let fixed = qi::wait(status, QI_DONE, true, false, false, false);
        for (i, word) in fixed.iter().enumerate() {
            rig.m.ram.write(IQ_BASE + i as u64 * 8, *word);
        }
        rig.m.writel(DMAR_FSTS_REG, FSTS_IQE);
        assert_eq!(rig.m.ram.read_u32(status), QI_DONE, "resumed at 0x{addr:x}");
    }
    // The last four bytes of RAM are RAM.
    let mut rig = queued();
    assert_eq!(
        rig.m
            .submit(&[qi::wait(end - 4, 7, true, false, false, false)]),
        QI_DONE
    );
    assert_eq!(rig.m.ram.read_u32(end - 4), 7);
}

#[test]
fn test_malformed_descriptors_stop_the_queue_with_their_code() {
    let reserved = |mut d: [u64; 4], word: usize, bit: u32| {
        d[word] |= 1 << bit;
        d
    };
    let cases = [
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
    ];
    for (desc, code) in cases {
        let mut rig = queued();
        rig.m.push(desc);
        rig.m.ring();
        expect_stop_then_recover(&mut rig, code, |rig| {
            let nop = qi::wait(0, 0, false, false, false, false);
            for (i, word) in nop.iter().enumerate() {
                rig.m.ram.write(IQ_BASE + i as u64 * 8, *word);
            }
        });
    }
    // 256-bit-only descriptors in a 128-bit queue.
    for desc in [
        qi::pc(1, 1, PASID),
        qi::page_response(DEV.0, Some(PASID), 0, 1, true),
    ] {
        let mut rig = Rig::new();
        rig.m.program_events();
        rig.m.enable_qi(0, false);
        rig.m.push(desc);
        rig.m.ring();
        assert_eq!((rig.fsts() & FSTS_IQE, iqei(&rig)), (FSTS_IQE, WIDTH));
    }
}

/// Event address registers aimed at RAM or device MMIO: the unit sends nothing there (it
/// would be a DMA write the guest aimed past its own IOMMU), and counts the drop.
#[test]
fn test_events_to_addresses_outside_the_interrupt_range_are_not_sent() {
    for addr in [PA, MMIO[1], UNMAPPED, 0xfef0_0000] {
        let mut rig = queued();
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
    let mut rig = queued();
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
