//! accel: the vsvm accelerator, plain form — a guest-physical copy engine with an MSI-X
//! completion interrupt, on an endpoint that advertises PASID, ATS and PRI.
//! Register map and PCI identity: devices/accel/README.md.

pub mod engine;
pub mod regs;

use log::warn;

use crate::endpoint::{Bus, Endpoint, Function, Interrupts, Layout};
use crate::mem::Gpa;
use crate::pci::caps::ats::AtsCapability;
use crate::pci::caps::express::ExpressCapability;
use crate::pci::caps::msix::MsixCapability;
use crate::pci::caps::pasid::PasidCapability;
use crate::pci::caps::pri::PriCapability;
use crate::pci::{BarKind, BarSpec, ConfigBuilder, Identity, LayoutError};
use engine::{Engine, Job};
use regs::{offset, Cap, DmaCmd, ACCEL_ID, ACCEL_VERSION};

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

/// The accelerator's register file.
#[derive(Debug)]
pub struct Accel {
    scratch: u32,
    irqs: Interrupts,
    src: u64,
    dst: u64,
    len: u32,
    engine: Engine,
}

impl Accel {
    /// An accelerator whose engine works on `bus`.
    pub fn new(bus: Bus) -> Self {
        let irqs = bus.irqs.clone();
        Accel {
            scratch: 0,
            irqs,
            src: 0,
            dst: 0,
            len: 0,
            engine: Engine::start(bus),
        }
    }

    fn read_dword(&self, at: u64) -> u32 {
        let shared = self.engine.shared();
        match at {
            offset::ID => ACCEL_ID,
            offset::VERSION => ACCEL_VERSION,
            offset::CAP => Cap::new().with_plain_dma(true).into_bits(),
            offset::DMA_SRC => self.src as u32,
            o if o == offset::DMA_SRC + 4 => (self.src >> 32) as u32,
            offset::DMA_DST => self.dst as u32,
            o if o == offset::DMA_DST + 4 => (self.dst >> 32) as u32,
            offset::DMA_LEN => self.len,
            offset::DMA_STATUS => shared.status().into_bits(),
            offset::DMA_DONE => shared.done(),
            offset::SCRATCH => self.scratch,
            _ => 0,
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
            _ => {}
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
            warn!("DMA_CMD START while a job runs: ignored");
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
            _ => warn!(
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
        self.engine.reset();
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

/// Builds a served accel function with the given PCI IDs.
pub fn endpoint(vendor_id: u16, device_id: u16) -> Result<Endpoint<Accel>, LayoutError> {
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
    b.ext_capability(&AtsCapability)?;
    b.ext_capability(&PriCapability {
        capacity: PRI_CAPACITY,
    })?;
    b.ext_capability(&PasidCapability { width: PASID_WIDTH })?;
    let layout = Layout {
        config: b.build(),
        bars,
        msix_bar: MSIX_BAR,
        msix_pba_offset: MSIX_PBA_OFFSET.into(),
    };
    let bus = Bus::new(MSIX_VECTORS.into());
    let accel = Accel::new(bus.clone());
    Ok(Endpoint::new(layout, bus, accel))
}
