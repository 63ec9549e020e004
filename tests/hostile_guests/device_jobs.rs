//! Device jobs aimed at memory nobody mapped behind the IOMMU: the accelerator's plain engine
//! behind the front end, with the guest's first-stage DMA domain as its default domain. An IOVA
//! the guest never mapped ends as the TRANSLATION status and the guest's fault record; an IOVA
//! the guest mapped to a GPA outside its RAM (unmapped, a guard, MMIO) translates, and the
//! access itself fails with the source or destination fault status — nothing is written
//! outside RAM either way.

#[path = "../common/accel.rs"]
pub mod accel_driver;

use std::sync::Arc;
use std::time::Duration;

use accel_driver::AccelDriver;
use vsvm::devices::accel;
use vsvm::devices::accel::regs::{DmaError, DmaState};
use vsvm::iommu::HostIommu;
use vsvm::vfio_user::Device as _;
use vsvm::viommu::FrontEnd;
use vsvm::vtd::piommu::PhysicalIommu;
use vsvm::vtd::{FaultReason, VtdConfig};

use crate::common_vtd::driver::*;
use crate::common_vtd::guarded::{GuardedRam, GUARD};
use crate::common_vtd::*;
use crate::rig::{Front, Msi, DMA_DID, ID, IOVA, LONG, MMIO, PA};

/// IOVAs of the guest's DMA domain: one never mapped, and three mapped outside RAM.
const HOLE: u64 = 0x20_0000;
const OUTSIDE: [(u64, u64); 3] = [
    (0x30_0000, UNMAPPED),
    (0x30_1000, GUARD + RAM_SIZE),
    (0x30_2000, MMIO[0]),
];
const LEN: u32 = 256;

pub struct AccelRig {
    pub m: Machine<Front>,
    pub drv: AccelDriver,
    pub guarded: GuardedRam,
}

impl Drop for AccelRig {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            assert!(self.m.unit.0.running());
            self.guarded.assert_intact();
        }
    }
}

impl AccelRig {
    /// The accelerator and the front end over one physical model on guarded RAM (both the
    /// endpoint's and the unit's mappings of it guarded), page requests answered by the host
    /// after `timeout`; the guest has not programmed the unit yet. Work-queue rings go at
    /// the start of RAM.
    pub fn new(timeout: Duration) -> Self {
        let config = VtdConfig::default();
        let guarded = GuardedRam::new(RAM_SIZE);
        let mem = guarded.memory();
        let iommu = Arc::new(PhysicalIommu::with_timeout(config, mem.clone(), timeout));
        let ep =
            accel::endpoint_svm(accel::VENDOR_ID, accel::DEVICE_ID, iommu.clone(), ID).unwrap();
        let memfd = guarded.memfd.try_clone().unwrap();
        let mut drv = AccelDriver::new(ep, memfd, guarded.end() + GUARD, GUARD);
        for unmap in guarded.guard_unmaps() {
            drv.ep.dma_unmap(unmap).unwrap();
        }
        assert_eq!(guarded.arm(), 1, "the device's own mapping guarded too");
        let msi = Arc::new(Msi::default());
        let front = FrontEnd::new(
            config,
            mem.clone(),
            iommu.clone() as Arc<dyn HostIommu>,
            &[ID],
            msi,
        )
        .unwrap();
        let mut ram = GuestRam::guarded(mem, &guarded);
        ram.skip_to(ALLOC_BASE);
        let m = Machine::with_unit(ram, Front(front));
        AccelRig { m, drv, guarded }
    }
}

/// The guest booted in scalable mode with a first-stage DMA domain mapping IOVA to PA and
/// the OUTSIDE IOVAs out of RAM.
fn accel_rig() -> AccelRig {
    let mut rig = AccelRig::new(LONG);
    let m = &mut rig.m;
    m.boot_scalable();
    let (_, dir) = m.sm_context(DEV, true, 7);
    let tree = Tree::new(&mut m.ram, 4, Space::default(), PAGE_TABLE);
    let leaf = PAGE_USER_RW | PAGE_ACCESSED | PAGE_DIRTY;
    tree.map(&mut m.ram, IOVA, PA, 1, leaf);
    for (iova, gpa) in OUTSIDE {
        tree.map(&mut m.ram, iova, gpa, 1, leaf);
    }
    m.set_pasid(
        dir,
        0,
        PasidEntryBuilder::first_level(tree.root, DMA_DID, false, 2),
    );
    m.flush_context_present(DEV, &[DMA_DID]);
    rig
}

#[test]
fn test_plain_job_to_an_unmapped_iova_fails_with_translation_and_a_fault_record() {
    let mut rig = accel_rig();
    let status = rig.drv.plain_copy(IOVA, HOLE, LEN);
    assert_eq!(
        (status.state(), status.error()),
        (DmaState::Error, DmaError::Translation)
    );
    rig.m.unit.0.flush();
    let (hi, lo, addr) = rig.m.fault_record(0);
    assert_ne!(hi & (1 << 31), 0, "recorded");
    assert_eq!(hi as u8, FaultReason::SmFirstStageEntryNotPresent.code());
    assert_eq!((lo as u16, addr & !0xfff), (DEV.0, HOLE));
    // The device still works.
    let status = rig.drv.plain_copy(IOVA, IOVA + 0x800, LEN);
    assert_eq!(status.state(), DmaState::Done);
}

#[test]
fn test_plain_job_mapped_outside_ram_fails_at_the_access() {
    let mut rig = accel_rig();
    rig.drv.ram_write(PA, &[0x5a; LEN as usize]);
    for (iova, gpa) in OUTSIDE {
        let status = rig.drv.plain_copy(IOVA, iova, LEN);
        let got = (status.state(), status.error());
        assert_eq!(got, (DmaState::Error, DmaError::DstFault), "to 0x{gpa:x}");
        let status = rig.drv.plain_copy(iova, IOVA + 0x800, LEN);
        let got = (status.state(), status.error());
        assert_eq!(got, (DmaState::Error, DmaError::SrcFault), "from 0x{gpa:x}");
        rig.guarded.assert_intact();
    }
    assert_eq!(rig.drv.ram_read(PA + 0x800, 1), [0], "nothing copied");
}
