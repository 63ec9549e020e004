//! Requests without PASID of the accelerator behind the physical model once the guest's IOMMU
//! driver gave it a DMA domain (a first-stage default domain, as Linux builds it in scalable
//! mode): the plain engine's IOVAs and untagged work-queue descriptors (ring, data, record)
//! translate through it, through the device's ATS; what it does not map fails the job at once
//! (no page request without PASID) and reaches the fault handler as an unrecoverable fault.
//! devices/accel/README.md ("Address translation and page faults", DMA_STATUS) is the
//! contract.

use vsvm::devices::accel::regs::{DmaError, DmaState};
use vsvm::iommu::{DefaultDomain, FaultStage};

use common_vtd::dma_domain::DmaDomain;

use super::*;

/// IOVAs the guest's DMA API handed out (Linux allocates top-down below 4 GiB).
const SRC_IOVA: u64 = 0xfff0_0000;
const DST_IOVA: u64 = 0xfff8_0000;
const RO_IOVA: u64 = 0xfffc_0000;
const HOLE_IOVA: u64 = 0xfffe_0000;

/// What the fault handler should have seen for an access without PASID.
fn untagged_fault(addr: u64, write: bool, reason: UnrecoverableReason) -> UnrecoverableFault {
    UnrecoverableFault {
        device: DEV,
        pasid: None,
        addr,
        access: if write { Access::WRITE } else { Access::READ },
        reason,
        stage: Some(FaultStage::First),
    }
}

/// A first-stage DMA domain mapping two source pages (read-only, frames swapped so the pages
/// are not contiguous), two destination pages, a read-only page and, with `queues`, the rings
/// and the untagged record page at IOVA = GPA (the driver's coherent memory). Returns the
/// domain and the source and destination frames.
fn dma_domain(e: &E2e, queues: bool) -> (DmaDomain, u64, u64) {
    let mut guest = e.guest();
    let ram = &mut guest.ram;
    let dma = DmaDomain::first_stage(ram);
    let (src, dst) = (ram.alloc(2), ram.alloc(2));
    for (iova, gpa, writable) in [
        (SRC_IOVA, src + PAGE, false),
        (SRC_IOVA + PAGE, src, false),
        (DST_IOVA, dst + PAGE, true),
        (DST_IOVA + PAGE, dst, true),
        (RO_IOVA, src, false),
    ] {
        dma.map_4k(ram, iova, gpa, writable);
    }
    if queues {
        for page in [RINGS, RINGS + PAGE, UNTAGGED_RECORDS] {
            dma.map_4k(ram, page, page, true);
        }
    }
    (dma, src, dst)
}

#[test]
fn test_plain_engine_copies_iovas_through_the_default_domain() {
    let mut e = E2e::new();
    let (dma, src, dst) = dma_domain(&e, false);
    let data = pattern(2 * PAGE as usize, 9);
    let (first, second) = data.split_at(PAGE as usize);
    e.drv.ram_write(src + PAGE, first);
    e.drv.ram_write(src, second);
    // Identity (no DMA domain yet): DMA_SRC/DMA_DST are guest-physical.
    let status = e.drv.plain_copy(src + PAGE, dst + PAGE, 64);
    assert_eq!(
        (status.state(), status.error()),
        (DmaState::Done, DmaError::None)
    );
    assert_eq!(e.drv.ram_read(dst + PAGE, 64), first[..64]);

    e.iommu.set_default_domain(DEV, dma.domain()).unwrap();
    let (off, len) = (0x80, 2 * PAGE - 0x100);
    let status = e.drv.plain_copy(SRC_IOVA + off, DST_IOVA + off, len as u32);
    assert_eq!(
        (status.state(), status.error()),
        (DmaState::Done, DmaError::None)
    );
    let head = (PAGE - off) as usize;
    assert_eq!(
        e.drv.ram_read(dst + PAGE + off, head),
        data[off as usize..PAGE as usize]
    );
    let tail = len as usize - head;
    assert_eq!(
        e.drv.ram_read(dst, tail),
        data[PAGE as usize..PAGE as usize + tail]
    );
    let atc = e.atc();
    assert_eq!(atc.entries, 4, "the four pages, cached through ATS");

    // What the domain does not map, or maps read-only, fails the job at once.
    let status = e.drv.plain_copy(HOLE_IOVA, DST_IOVA, 16);
    assert_eq!(
        (status.state(), status.error()),
        (DmaState::Error, DmaError::Translation)
    );
    let status = e.drv.plain_copy(SRC_IOVA, RO_IOVA, 16);
    assert_eq!(
        (status.state(), status.error()),
        (DmaState::Error, DmaError::Translation)
    );
    assert_eq!(
        e.faults.unrecoverable(),
        [
            untagged_fault(HOLE_IOVA, false, UnrecoverableReason::NotPresent),
            untagged_fault(RO_IOVA, true, UnrecoverableReason::Permission),
        ]
    );
    assert!(
        e.faults.page_requests().is_empty(),
        "no page request without PASID"
    );
    assert_eq!(
        e.drv.ram_read(src, 16),
        second[..16],
        "read-only page untouched"
    );

    // Without ATS every page is an untranslated request, translated all the same.
    let ats = e.drv.ext_cap(vsvm::pci::caps::ats::EXT_CAP_ID_ATS);
    e.drv.cfg_write16(ats + 6, 0);
    e.drv.ram_write(dst, &[0; 64]);
    let status = e.drv.plain_copy(SRC_IOVA + PAGE, DST_IOVA + PAGE, 64);
    assert_eq!(
        (status.state(), status.error()),
        (DmaState::Done, DmaError::None)
    );
    assert_eq!(e.drv.ram_read(dst, 64), second[..64]);
    assert_eq!(e.atc().entries, 0);
}

#[test]
fn test_untagged_descriptors_go_through_the_default_domain() {
    let mut e = E2e::new();
    let (dma, src, dst) = dma_domain(&e, true);
    e.iommu.set_default_domain(DEV, dma.domain()).unwrap();
    e.drv.enable_wq(0, true);
    let data = pattern(2 * PAGE as usize, 4);
    let (first, second) = data.split_at(PAGE as usize);
    e.drv.ram_write(src + PAGE, first);
    e.drv.ram_write(src, second);
    let run = |e: &mut E2e, desc: Descriptor| {
        e.drv.ram_write(UNTAGGED_RECORDS, &[0; 32]);
        e.drv.submit(0, &[desc.with_completion(UNTAGGED_RECORDS)]);
        e.drv.wait_record_at(UNTAGGED_RECORDS)
    };
    let r = run(
        &mut e,
        Descriptor::memmove(SRC_IOVA, DST_IOVA, 2 * PAGE as u32),
    );
    assert_eq!(r.status(), Some(Status::Success));
    assert_eq!(e.drv.ram_read(dst + PAGE, PAGE as usize), first);
    assert_eq!(e.drv.ram_read(dst, PAGE as usize), second);

    // An unmapped source: TRANSLATION_ERROR at once, although the queue blocks on faults.
    let r = run(&mut e, Descriptor::memmove(HOLE_IOVA + 0x10, DST_IOVA, 64));
    assert_eq!(r.status(), Some(Status::TranslationError));
    assert_eq!((r.fault_addr, r.bytes_completed), (HOLE_IOVA + 0x10, 0));
    assert_eq!(
        e.faults.unrecoverable(),
        [untagged_fault(
            HOLE_IOVA + 0x10,
            false,
            UnrecoverableReason::NotPresent
        )]
    );
    assert!(e.faults.page_requests().is_empty());
    e.assert_queue_alive(0, None);

    // The guest blocks the device: its cached ring translation goes with the old domain,
    // and the next descriptor cannot even be read.
    let blocked = DefaultDomain::Blocked(UnrecoverableReason::PasidInvalid);
    e.iommu.set_default_domain(DEV, blocked).unwrap();
    e.drv.clear_swerr();
    e.drv.submit(0, &[Descriptor::nop()]);
    let (swerr, _) = e.drv.wait_swerr();
    assert_eq!(swerr.code(), Status::RingReadFault.code());
    let last = *e.faults.unrecoverable().last().unwrap();
    assert_eq!(
        (last.pasid, last.reason, last.stage),
        (None, UnrecoverableReason::PasidInvalid, None)
    );
}
