//! accel: the vsvm SVM accelerator. Two programming models on one function:
//! - the plain copy engine (registers 0x000-0x037): one copy at a time, of guest-physical
//!   addresses, or of IOVAs (requests without PASID) behind an IOMMU;
//! - work queues of 64-byte descriptors (MEMMOVE, FILL, COMPARE, BATCH, NOP) carrying a PASID
//!   and virtual addresses, translated through ATS with page faults resolved through PRI
//!   (block-on-fault) or reported (report-fault), completion records written through
//!   translation, per-PASID enable and drain, and MSI-X completion / error interrupts.
//!
//! Register map, descriptor and completion formats: devices/accel/README.md. Files: `regs`
//! (BAR0 map), `descriptor`, `completion`, `wq` (rings and their engine threads), `dispatch`
//! (checks, BATCH, completion), `exec` (operations, faults), `svm` (IOMMU connection, address
//! spaces), `pasid_table`, `drain`, `swerr`, `pcie` (capability controls), `engine` (plain).

mod device;
mod dispatch;
mod drain;
mod exec;
mod pasid_table;
mod pcie;
mod swerr;
mod wq;

pub mod completion;
pub mod descriptor;
pub mod engine;
pub mod regs;
pub mod svm;

pub use exec::{MAX_GROUP_PAGES, MAX_PAGE_REQUESTS};

use std::sync::mpsc::{self, Sender};
use std::sync::Arc;
use std::thread;
use std::time::Instant;

use log::warn;

use crate::endpoint::{Bus, Endpoint, Function, Interrupts, Layout};
use crate::iommu::{DeviceId, HostIommu, IommuError, Pasid};
use crate::mem::Gpa;
use crate::pci::caps::ats::AtsCapability;
use crate::pci::caps::express::ExpressCapability;
use crate::pci::caps::msix::MsixCapability;
use crate::pci::caps::pasid::PasidCapability;
use crate::pci::caps::pri::{PriCapability, PriEngineCapability};
use crate::pci::config::Registers;
use crate::pci::{BarKind, BarSpec, ConfigBuilder, Identity, LayoutError};
use device::Core;
use drain::DrainRequest;
use engine::{Engine, Job};
use pcie::{CapFollower, CapOffsets};
use regs::{
    offset, Cap, DmaCmd, ErrCtl, PasidCtl, Swerr, ACCEL_ID, ACCEL_VERSION, MAX_BATCH, MAX_WQ_SIZE,
    MAX_XFER, WQ_COUNT,
};
use svm::Svm;
use swerr::Origin;

/// Default PCI vendor ID (not PCI-SIG assigned; see the README).
pub const VENDOR_ID: u16 = 0x5653;
/// Default PCI device ID.
pub const DEVICE_ID: u16 = 0xa001;
/// Class code: processing accelerator.
pub const CLASS_CODE: u32 = 0x12_00_00;
/// Number of MSI-X vectors.
pub const MSIX_VECTORS: u16 = 4;
/// BAR of the device registers.
pub const REGS_BAR: usize = 0;
/// BAR of the MSI-X table and PBA.
pub const MSIX_BAR: usize = 2;
/// Offset of the PBA in the MSI-X BAR.
pub const MSIX_PBA_OFFSET: u32 = 0x800;
/// Size of each BAR (one page).
pub const BAR_SIZE: u64 = 4096;
/// Max PASID width advertised.
pub const PASID_WIDTH: u8 = 20;
/// Outstanding page request capacity advertised.
pub const PRI_CAPACITY: u32 = 512;

/// Why an accel function could not be built.
#[derive(Debug, thiserror::Error)]
pub enum AccelError {
    /// The IOMMU refused to attach the device.
    #[error("attaching to the IOMMU: {0}")]
    Attach(#[from] IommuError),
    /// The configuration space layout does not fit.
    #[error("configuration space: {0}")]
    Layout(#[from] LayoutError),
}

/// The accelerator's register file.
#[derive(Debug)]
pub struct Accel {
    scratch: u32,
    irqs: Interrupts,
    src: u64,
    dst: u64,
    len: u32,
    engine: Engine,
    core: Arc<Core>,
    drains: Sender<DrainRequest>,
    pasid_sel: u32,
    caps: CapFollower,
}

fn spawn(name: String, f: impl FnOnce() + Send + 'static) {
    thread::Builder::new()
        .name(name)
        .spawn(f)
        .expect("spawning an accel thread");
}

impl Accel {
    /// An accelerator on `bus` whose capabilities sit at `caps`, behind `svm` if any. Starts
    /// the plain engine, one engine per work queue and the drainer.
    pub fn new(bus: Bus, caps: CapOffsets, svm: Option<Svm>) -> Self {
        let irqs = bus.irqs.clone();
        let core = Arc::new(Core::new(bus, svm, WQ_COUNT));
        for index in 0..WQ_COUNT {
            let core = core.clone();
            spawn(format!("accel-wq{index}"), move || wq::run(core, index));
        }
        let (drains, requests) = mpsc::channel();
        let drainer_core = core.clone();
        spawn("accel-drain".into(), move || {
            drain::run(drainer_core, requests)
        });
        Accel {
            scratch: 0,
            irqs,
            src: 0,
            dst: 0,
            len: 0,
            engine: Engine::start(core.clone()),
            core,
            drains,
            pasid_sel: 0,
            caps: CapFollower::new(caps),
        }
    }

    /// The IOMMU connection (ATS, PRI, requester ID), when the device has one.
    pub fn svm(&self) -> Option<&Svm> {
        self.core.svm.as_ref()
    }

    /// Number of PASIDs enabled through PASID_CTL.
    pub fn enabled_pasids(&self) -> u32 {
        self.core.pasids.enabled_count()
    }

    fn cap(&self) -> Cap {
        Cap::new()
            .with_plain_dma(true)
            .with_work_queues(true)
            .with_svm(self.core.svm.is_some())
            .with_wq_count(WQ_COUNT as u8)
    }

    /// The work queue whose register block holds `at`, and the offset in the block.
    fn wq_register(&self, at: u64) -> Option<(&wq::WorkQueue, u64)> {
        let rel = at.checked_sub(offset::WQ_BLOCKS)?;
        let index = usize::try_from(rel / offset::WQ_STRIDE).ok()?;
        Some((self.core.wqs.get(index)?, rel % offset::WQ_STRIDE))
    }

    fn pasid_ctl(&self) -> PasidCtl {
        let Some(pasid) = Pasid::new(self.pasid_sel) else {
            return PasidCtl::new();
        };
        PasidCtl::new()
            .with_enable(self.core.pasids.is_enabled(pasid))
            .with_draining(self.core.pasids.is_draining(pasid))
    }

    /// PASID_CTL write: enable at once; a disable marks the PASID and leaves the drain to the
    /// drainer (it waits for engines, which this thread must never do).
    fn write_pasid_ctl(&self, ctl: PasidCtl) {
        let Some(pasid) = Pasid::new(self.pasid_sel).filter(|_| self.core.svm.is_some()) else {
            warn_limited!(
                "accel: PASID_CTL for PASID_SEL 0x{:x} ignored",
                self.pasid_sel
            );
            return;
        };
        let core = &self.core;
        if ctl.enable() {
            if !core.pasids.enable(pasid) {
                warn_limited!("accel: PASID {pasid} enabled while it drains: ignored");
            }
            return;
        }
        let generation = core.generation();
        if core.pasids.begin_drain(pasid, generation, || core.marks())
            && self.drains.send((pasid, generation)).is_err()
        {
            warn!("accel: drainer gone; PASID {pasid} stays draining");
        }
    }

    fn read_dword(&self, at: u64) -> u32 {
        let shared = self.engine.shared();
        let swerr = || self.core.errors.read();
        match at {
            offset::ID => ACCEL_ID,
            offset::VERSION => ACCEL_VERSION,
            offset::CAP => self.cap().into_bits(),
            offset::DMA_SRC => self.src as u32,
            o if o == offset::DMA_SRC + 4 => (self.src >> 32) as u32,
            offset::DMA_DST => self.dst as u32,
            o if o == offset::DMA_DST + 4 => (self.dst >> 32) as u32,
            offset::DMA_LEN => self.len,
            offset::DMA_STATUS => shared.status().into_bits(),
            offset::DMA_DONE => shared.done(),
            offset::SCRATCH => self.scratch,
            offset::SWERR => swerr().0.into_bits() as u32,
            o if o == offset::SWERR + 4 => (swerr().0.into_bits() >> 32) as u32,
            offset::SWERR_ADDR => swerr().1 as u32,
            o if o == offset::SWERR_ADDR + 4 => (swerr().1 >> 32) as u32,
            offset::ERRCTL => self.core.errors.ctl().into_bits(),
            offset::PASID_SEL => self.pasid_sel,
            offset::PASID_CTL => self.pasid_ctl().into_bits(),
            offset::MAX_XFER => MAX_XFER,
            offset::MAX_BATCH => MAX_BATCH,
            offset::MAX_WQ_SIZE => MAX_WQ_SIZE,
            o => self.wq_register(o).map_or(0, |(wq, reg)| wq.read(reg)),
        }
    }

    fn write_dword(&mut self, at: u64, value: u32) {
        let set_low = |r: &mut u64| *r = (*r & !0xffff_ffff) | u64::from(value);
        let set_high = |r: &mut u64| *r = (*r & 0xffff_ffff) | (u64::from(value) << 32);
        match at {
            offset::DMA_SRC => set_low(&mut self.src),
            o if o == offset::DMA_SRC + 4 => set_high(&mut self.src),
            offset::DMA_DST => set_low(&mut self.dst),
            o if o == offset::DMA_DST + 4 => set_high(&mut self.dst),
            offset::DMA_LEN => self.len = value,
            offset::DMA_CMD => self.command(DmaCmd::from_bits(value)),
            offset::IRQ_RAISE => {
                self.irqs.trigger(value);
            }
            offset::SCRATCH => self.scratch = value,
            offset::SWERR => self.core.errors.write(Swerr::from_bits(value.into())),
            offset::ERRCTL => self.core.errors.set_ctl(ErrCtl::from_bits(value)),
            offset::PASID_SEL => self.pasid_sel = value,
            offset::PASID_CTL => self.write_pasid_ctl(PasidCtl::from_bits(value)),
            o => {
                let Some((wq, reg)) = self.wq_register(o) else {
                    return;
                };
                if let Some((code, index, addr)) = wq.write(reg, value) {
                    let origin = Origin {
                        slot: Some((wq.index(), index)),
                        batch_index: None,
                    };
                    self.core.errors.report(code, origin, addr);
                }
            }
        }
    }

    fn command(&mut self, cmd: DmaCmd) {
        if !cmd.start() {
            return;
        }
        let job = Job {
            src: Gpa(self.src),
            dst: Gpa(self.dst),
            len: self.len,
            irq: cmd.irq(),
        };
        if !self.engine.submit(job) {
            warn_limited!("DMA_CMD START while a job runs: ignored");
        }
    }

    /// Stops every queue's work: jobs of the old generation publish nothing, page requests
    /// waited on are abandoned.
    fn stop_work(&self) {
        let core = &self.core;
        core.bump_generation();
        for wq in &core.wqs {
            wq.reset();
        }
        core.pasids.clear();
        if let Some(svm) = &core.svm {
            svm.pri().reset();
        }
        core.notify_progress();
    }
}

impl Drop for Accel {
    fn drop(&mut self) {
        self.stop_work();
        for wq in &self.core.wqs {
            wq.stop();
        }
    }
}

impl Function for Accel {
    fn bar_read(&mut self, bar: usize, at: u64, data: &mut [u8]) {
        if bar != REGS_BAR {
            data.fill(0);
            return;
        }
        // Any size and alignment: assemble the bytes from the dwords that hold them.
        for (i, byte) in data.iter_mut().enumerate() {
            let a = at + i as u64;
            *byte = (self.read_dword(a & !3) >> (8 * (a & 3))) as u8;
        }
    }

    fn bar_write(&mut self, bar: usize, at: u64, data: &[u8]) {
        // Aligned 32-bit writes, and aligned 64-bit writes as two dwords (low first).
        match (bar, data) {
            (REGS_BAR, &[a, b, c, d]) if at % 4 == 0 => {
                self.write_dword(at, u32::from_le_bytes([a, b, c, d]))
            }
            (REGS_BAR, &[a, b, c, d, e, f, g, h]) if at % 8 == 0 => {
                self.write_dword(at, u32::from_le_bytes([a, b, c, d]));
                self.write_dword(at + 4, u32::from_le_bytes([e, f, g, h]));
            }
            _ => warn_limited!(
                "accel: ignored {}-byte write at BAR{bar}+0x{at:x}",
                data.len()
            ),
        }
    }

    fn reset(&mut self) {
        self.scratch = 0;
        self.src = 0;
        self.dst = 0;
        self.len = 0;
        self.pasid_sel = 0;
        self.engine.reset();
        self.stop_work();
        self.core.errors.reset();
        self.caps.reset(&self.core);
    }

    fn quiesce(&mut self, deadline: Instant) -> bool {
        let queues = self.core.wqs.iter().all(|wq| wq.wait_idle(deadline));
        queues && self.engine.wait_idle(deadline)
    }

    fn config_written(&mut self, regs: &Registers) {
        self.caps.written(&self.core, regs);
    }

    fn config_refresh(&mut self, regs: &mut Registers) {
        self.caps.refresh(&self.core, regs);
    }
}

/// PCI identity of an accel function.
pub fn identity(vendor_id: u16, device_id: u16) -> Identity {
    Identity {
        vendor_id,
        device_id,
        subsystem_vendor_id: vendor_id,
        subsystem_id: device_id,
        class_code: CLASS_CODE,
        revision: 1,
    }
}

/// Configuration space and BARs of an accel function, and where its extended capabilities went.
/// With `svm`, the PRI engine owns PRI Status and Reset.
fn layout(vendor_id: u16, device_id: u16, svm: bool) -> Result<(Layout, CapOffsets), LayoutError> {
    let bars = vec![
        BarSpec {
            index: REGS_BAR,
            size: BAR_SIZE,
            kind: BarKind::Memory32,
            prefetchable: false,
        },
        BarSpec {
            index: MSIX_BAR,
            size: BAR_SIZE,
            kind: BarKind::Memory32,
            prefetchable: false,
        },
    ];
    let mut b = ConfigBuilder::new(&identity(vendor_id, device_id));
    for bar in &bars {
        b.bar(bar)?;
    }
    b.capability(&ExpressCapability)?;
    b.capability(&MsixCapability {
        vectors: MSIX_VECTORS,
        table_bar: MSIX_BAR as u8,
        table_offset: 0,
        pba_bar: MSIX_BAR as u8,
        pba_offset: MSIX_PBA_OFFSET,
    })?;
    let caps = CapOffsets {
        ats: b.ext_capability(&AtsCapability)?,
        pri: if svm {
            b.ext_capability(&PriEngineCapability {
                capacity: PRI_CAPACITY,
            })?
        } else {
            b.ext_capability(&PriCapability {
                capacity: PRI_CAPACITY,
            })?
        },
        pasid: b.ext_capability(&PasidCapability { width: PASID_WIDTH })?,
    };
    let layout = Layout {
        config: b.build(),
        bars,
        msix_bar: Some(MSIX_BAR),
        msix_pba_offset: MSIX_PBA_OFFSET.into(),
    };
    Ok((layout, caps))
}

/// Builds a served accel function with the given PCI IDs, without an IOMMU: descriptors
/// address guest-physical memory, PASID-tagged ones fail (CAP.SVM clear).
pub fn endpoint(vendor_id: u16, device_id: u16) -> Result<Endpoint<Accel>, LayoutError> {
    let (layout, caps) = layout(vendor_id, device_id, false)?;
    let bus = Bus::new(MSIX_VECTORS.into());
    let accel = Accel::new(bus.clone(), caps, None);
    Ok(Endpoint::new(layout, bus, accel))
}

/// Builds a served accel function behind `iommu`, attached as requester `id`: the plain
/// engine's DMA_SRC/DMA_DST and untagged descriptors address IOVAs (requests without PASID,
/// translated by the device's default domain), PASID-tagged ones the PASID's address space,
/// all through ATS (an ATC), with page faults of PASID-tagged requests resolved through PRI. The IOMMU reaches the device's
/// ATC and PRI through the port given to `attach`; dropping the endpoint detaches it.
pub fn endpoint_svm(
    vendor_id: u16,
    device_id: u16,
    iommu: Arc<dyn HostIommu>,
    id: DeviceId,
) -> Result<Endpoint<Accel>, AccelError> {
    let (layout, caps) = layout(vendor_id, device_id, true)?;
    // The bus first: the IOMMU walks the device's tables in the function's own DMA map.
    let bus = Bus::new(MSIX_VECTORS.into());
    let svm = Svm::attach(id, iommu, PRI_CAPACITY, bus.mem.clone())?;
    let accel = Accel::new(bus.clone(), caps, Some(svm));
    Ok(Endpoint::new(layout, bus, accel))
}
