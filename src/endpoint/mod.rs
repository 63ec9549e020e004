//! A PCI Express endpoint served over vfio-user: configuration space, BARs, the MSI-X table,
//! interrupt eventfds and guest memory, around a device model that implements [`Function`].
//! Region and IRQ indexes follow Linux include/uapi/linux/vfio.h (VFIO_PCI_*_INDEX).

pub mod interrupts;
pub mod msix_table;

use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use log::{debug, warn};
use rustix::io::Errno;

use crate::mem::GuestMemory;
use crate::pci::header::{command, offset};
use crate::pci::{BarSpec, ConfigSpace, CONFIG_SPACE_SIZE};
use crate::vfio_user::{
    Device, DmaMapRequest, DmaPort, DmaUnmapRequest, IrqDescription, IrqSetRequest,
    RegionDescription,
};

pub use interrupts::Interrupts;
pub use msix_table::MsixTable;

/// VFIO PCI region index of configuration space.
pub const CONFIG_REGION: u32 = 7;
/// Number of VFIO PCI regions: six BARs, ROM, config, VGA.
pub const NUM_REGIONS: u32 = 9;
/// VFIO PCI IRQ index of MSI-X.
pub const MSIX_IRQ_INDEX: u32 = 2;
/// Number of VFIO PCI IRQ indexes: INTx, MSI, MSI-X, ERR, REQ.
pub const NUM_IRQS: u32 = 5;

/// What a device model shares with its endpoint: guest memory, interrupts and whether the
/// function may master the bus. Cheap to clone into worker threads.
#[derive(Clone, Debug)]
pub struct Bus {
    /// Guest memory as the client mapped it.
    pub mem: GuestMemory,
    /// MSI-X vectors.
    pub irqs: Interrupts,
    bus_master: Arc<AtomicBool>,
}

impl Bus {
    /// Guest memory and `vectors` MSI-X vectors, bus mastering off.
    pub fn new(vectors: u32) -> Self {
        Bus {
            mem: GuestMemory::new(),
            irqs: Interrupts::new(vectors),
            bus_master: Arc::default(),
        }
    }

    /// Whether Bus Master Enable is set: without it the function must not DMA.
    pub fn bus_master(&self) -> bool {
        self.bus_master.load(Ordering::Acquire)
    }
}

/// A device model behind an endpoint: its BARs' registers and its reset.
pub trait Function: Send {
    /// A read of `data.len()` bytes at `offset` of BAR `bar` (within the BAR, checked).
    fn bar_read(&mut self, bar: usize, offset: u64, data: &mut [u8]);
    /// A write at `offset` of BAR `bar` (within the BAR, checked).
    fn bar_write(&mut self, bar: usize, offset: u64, data: &[u8]);
    /// Function-level reset: back to power-on register state, jobs abandoned.
    fn reset(&mut self);
}

/// The fixed shape of a function: its configuration space and BARs.
#[derive(Debug)]
pub struct Layout {
    /// Configuration space at power-on.
    pub config: ConfigSpace,
    /// Memory BARs, the MSI-X BAR among them.
    pub bars: Vec<BarSpec>,
    /// BAR index dedicated to the MSI-X table (at offset 0) and PBA.
    pub msix_bar: usize,
    /// Offset of the PBA in the MSI-X BAR.
    pub msix_pba_offset: u64,
}

/// A served PCI function.
pub struct Endpoint<F: Function> {
    config: ConfigSpace,
    bars: Vec<BarSpec>,
    msix_bar: usize,
    msix: MsixTable,
    bus: Bus,
    function: F,
}

impl<F: Function> Endpoint<F> {
    /// An endpoint of shape `layout` around the device model `function` built on `bus`.
    pub fn new(layout: Layout, bus: Bus, function: F) -> Self {
        let msix = MsixTable::new(bus.irqs.count() as u16, layout.msix_pba_offset);
        let Layout {
            config,
            bars,
            msix_bar,
            ..
        } = layout;
        Endpoint {
            config,
            bars,
            msix_bar,
            msix,
            bus,
            function,
        }
    }

    /// The device model.
    pub fn function(&self) -> &F {
        &self.function
    }

    /// Configuration space as the guest last wrote it.
    pub fn config(&self) -> &ConfigSpace {
        &self.config
    }

    fn bar(&self, index: u32) -> Option<&BarSpec> {
        self.bars.iter().find(|b| b.index as u32 == index)
    }

    /// Checks that `[offset, offset + len)` lies in BAR `index`.
    fn bar_access(&self, index: u32, offset: u64, len: usize) -> Result<usize, Errno> {
        let bar = self.bar(index).ok_or(Errno::INVAL)?;
        let end = offset.checked_add(len as u64).ok_or(Errno::INVAL)?;
        if end > bar.size {
            return Err(Errno::INVAL);
        }
        Ok(bar.index)
    }

    fn after_config_write(&mut self) {
        let cmd = self.config.regs().u16(offset::COMMAND);
        self.bus
            .bus_master
            .store(cmd & command::BUS_MASTER != 0, Ordering::Release);
    }

    fn power_on(&mut self) {
        self.config.reset();
        self.after_config_write();
        self.msix.reset();
        self.function.reset();
    }
}

impl<F: Function> Device for Endpoint<F> {
    fn counts(&self) -> (u32, u32) {
        (NUM_REGIONS, NUM_IRQS)
    }

    fn region(&self, index: u32) -> Result<RegionDescription, Errno> {
        let rw = |size| RegionDescription {
            size,
            readable: true,
            writable: true,
        };
        match index {
            CONFIG_REGION => Ok(rw(CONFIG_SPACE_SIZE as u64)),
            i if i < NUM_REGIONS => Ok(self
                .bar(i)
                .map_or(RegionDescription::default(), |b| rw(b.size))),
            _ => Err(Errno::INVAL),
        }
    }

    fn irq(&self, index: u32) -> Result<IrqDescription, Errno> {
        match index {
            MSIX_IRQ_INDEX => Ok(IrqDescription {
                count: self.bus.irqs.count(),
            }),
            i if i < NUM_IRQS => Ok(IrqDescription { count: 0 }),
            _ => Err(Errno::INVAL),
        }
    }

    fn set_irqs(&mut self, request: IrqSetRequest) -> Result<(), Errno> {
        match request.index {
            MSIX_IRQ_INDEX => self.bus.irqs.set(request),
            // Zero-vector indexes: only "disable all" is meaningful.
            i if i < NUM_IRQS && request.count == 0 => Ok(()),
            _ => Err(Errno::INVAL),
        }
    }

    fn region_read(&mut self, index: u32, offset: u64, data: &mut [u8]) -> Result<(), Errno> {
        if index == CONFIG_REGION {
            return self.config.read(offset, data).map_err(|_| Errno::INVAL);
        }
        let bar = self.bar_access(index, offset, data.len())?;
        if bar == self.msix_bar {
            self.msix.read(offset, data, &self.bus.irqs);
        } else {
            self.function.bar_read(bar, offset, data);
        }
        Ok(())
    }

    fn region_write(&mut self, index: u32, offset: u64, data: &[u8]) -> Result<(), Errno> {
        if index == CONFIG_REGION {
            self.config.write(offset, data).map_err(|_| Errno::INVAL)?;
            self.after_config_write();
            return Ok(());
        }
        let bar = self.bar_access(index, offset, data.len())?;
        if bar == self.msix_bar {
            self.msix.write(offset, data);
        } else {
            self.function.bar_write(bar, offset, data);
        }
        Ok(())
    }

    fn dma_map(&mut self, request: DmaMapRequest, fd: Option<OwnedFd>) -> Result<(), Errno> {
        self.bus.mem.map(&request, fd).map_err(|e| {
            warn!(
                "DMA_MAP 0x{:x}+0x{:x} refused: {e}",
                request.address, request.size
            );
            e.errno()
        })
    }

    fn dma_unmap(&mut self, request: DmaUnmapRequest) -> Result<(), Errno> {
        self.bus.mem.unmap(&request).map_err(|e| {
            debug!("DMA_UNMAP {request:?} refused: {e}");
            e.errno()
        })
    }

    fn reset(&mut self) -> Result<(), Errno> {
        self.power_on();
        Ok(())
    }

    fn connected(&mut self, port: DmaPort) {
        self.bus.mem.set_port(Some(port));
    }

    fn disconnected(&mut self) {
        self.bus.mem.clear();
        self.bus.irqs.clear();
        self.power_on();
    }
}
