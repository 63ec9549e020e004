//! A PCI Express endpoint served over vfio-user: configuration space, BARs, the MSI-X table,
//! interrupt eventfds and guest memory, around a device model that implements [`Function`].
//! Region and IRQ indexes follow Linux include/uapi/linux/vfio.h (VFIO_PCI_*_INDEX).

pub mod interrupts;
pub mod irq_fd;
pub mod msix_table;

use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, warn};
use rustix::io::Errno;

use crate::mem::GuestMemory;
use crate::pci::header::{command, offset};
use crate::pci::{BarSpec, ConfigSpace, CONFIG_SPACE_SIZE};
use crate::vfio_user::{
    Device, DmaLimits, DmaMapRequest, DmaPort, DmaUnmapRequest, IrqDescription, IrqSetRequest,
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
/// How long a disconnect waits for the function's threads to let go of the client's memory.
/// Work stops at its next check after a reset (a page, a chunk, a DMA request the closed port
/// fails at once), so this is a bound that only a bug reaches.
const QUIESCE_TIMEOUT: Duration = Duration::from_secs(5);

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

/// A device model behind an endpoint: its BARs' registers, its reset, and the configuration
/// registers it follows or owns.
///
/// Config hooks: before every guest config read or write the endpoint calls
/// [`Function::config_refresh`], where the function writes the status bits it owns (e.g. PRI
/// Stopped, latched RW1C events); after every write — capability write hooks already run —
/// and after power-on it calls [`Function::config_written`], where the function follows the
/// control bits (ATS/PRI Enable, allocations, PRI Reset) and notices the RW1C bits the guest
/// cleared (published by the refresh just before the write, clear after it).
pub trait Function: Send {
    /// A read of `data.len()` bytes at `offset` of BAR `bar` (within the BAR, checked).
    fn bar_read(&mut self, bar: usize, offset: u64, data: &mut [u8]);
    /// A write at `offset` of BAR `bar` (within the BAR, checked).
    fn bar_write(&mut self, bar: usize, offset: u64, data: &[u8]);
    /// Function-level reset: back to power-on register state, jobs abandoned.
    fn reset(&mut self);
    /// After a reset on disconnect: waits until no thread of the function runs work from
    /// before the reset or holds guest memory, at most until `deadline`; says whether that
    /// is so. Only called once the client is gone: while it is connected, device work may
    /// be waiting for its replies, which the calling thread itself delivers. A function
    /// without threads of its own has nothing to wait for.
    fn quiesce(&mut self, _deadline: Instant) -> bool {
        true
    }
    /// After every guest config write (capability hooks ran), at construction and after
    /// every reset: follow the control registers.
    fn config_written(&mut self, _regs: &crate::pci::config::Registers) {}
    /// Before every guest config read or write: write the status bits the function owns.
    fn config_refresh(&mut self, _regs: &mut crate::pci::config::Registers) {}
}

/// The fixed shape of a function: its configuration space and BARs.
#[derive(Debug)]
pub struct Layout {
    /// Configuration space at power-on.
    pub config: ConfigSpace,
    /// Memory BARs, the MSI-X BAR among them.
    pub bars: Vec<BarSpec>,
    /// BAR index dedicated to the MSI-X table (at offset 0) and PBA; `None` for a function
    /// without MSI-X (its [`Bus`] then has no vectors).
    pub msix_bar: Option<usize>,
    /// Offset of the PBA in the MSI-X BAR.
    pub msix_pba_offset: u64,
}

/// A served PCI function.
pub struct Endpoint<F: Function> {
    config: ConfigSpace,
    bars: Vec<BarSpec>,
    msix_bar: Option<usize>,
    msix: MsixTable,
    bus: Bus,
    function: F,
}

impl<F: Function> Endpoint<F> {
    /// An endpoint of shape `layout` around the device model `function` built on `bus`.
    /// The function first sees the power-on registers through [`Function::config_written`].
    pub fn new(layout: Layout, bus: Bus, mut function: F) -> Self {
        let msix = MsixTable::new(bus.irqs.count() as u16, layout.msix_pba_offset);
        let Layout {
            config,
            bars,
            msix_bar,
            ..
        } = layout;
        function.config_written(config.regs());
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

    /// What the function shares with the endpoint: guest memory, interrupts, bus mastering.
    pub fn bus(&self) -> &Bus {
        &self.bus
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
        self.function.config_written(self.config.regs());
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
            self.function.config_refresh(self.config.regs_mut());
            return self.config.read(offset, data).map_err(|_| Errno::INVAL);
        }
        let bar = self.bar_access(index, offset, data.len())?;
        if Some(bar) == self.msix_bar {
            self.msix.read(offset, data, &self.bus.irqs);
        } else {
            self.function.bar_read(bar, offset, data);
        }
        Ok(())
    }

    fn region_write(&mut self, index: u32, offset: u64, data: &[u8]) -> Result<(), Errno> {
        if index == CONFIG_REGION {
            self.function.config_refresh(self.config.regs_mut());
            self.config.write(offset, data).map_err(|_| Errno::INVAL)?;
            self.after_config_write();
            self.function.config_written(self.config.regs());
            return Ok(());
        }
        let bar = self.bar_access(index, offset, data.len())?;
        if Some(bar) == self.msix_bar {
            self.msix.write(offset, data);
        } else {
            self.function.bar_write(bar, offset, data);
        }
        Ok(())
    }

    fn dma_map(&mut self, request: DmaMapRequest, fd: Option<OwnedFd>) -> Result<(), Errno> {
        self.bus.mem.map(&request, fd).map_err(|e| {
            warn_limited!(
                "DMA_MAP 0x{:x}+0x{:x} refused: {e}",
                request.address,
                request.size
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

    fn connected(&mut self, port: DmaPort, limits: DmaLimits) {
        self.bus.mem.set_limits(limits);
        self.bus.mem.set_port(Some(port));
    }

    fn disconnected(&mut self) {
        // Stop the function first, so that no new work takes a new hold on the client's
        // memory; then drop ours, and wait for the device threads to drop theirs.
        self.power_on();
        self.bus.irqs.clear();
        self.bus.mem.clear();
        if !self.function.quiesce(Instant::now() + QUIESCE_TIMEOUT) {
            warn!(
                "device work from the last client still runs after {QUIESCE_TIMEOUT:?}; \
                 serving the next client anyway"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::pci::caps::pri::{PriCapability, PriEngineCapability, PriStatus};
    use crate::pci::config::Registers;
    use crate::pci::{BarKind, ConfigBuilder, Identity};

    /// What the test function's hooks saw, in order.
    #[derive(Debug, PartialEq, Eq)]
    enum Event {
        Refresh,
        Written { control: u16 },
        Reset,
    }

    struct Hooked {
        pri_at: usize,
        events: Arc<Mutex<Vec<Event>>>,
    }

    impl Function for Hooked {
        fn bar_read(&mut self, _: usize, _: u64, data: &mut [u8]) {
            data.fill(0);
        }
        fn bar_write(&mut self, _: usize, _: u64, _: &[u8]) {}
        fn reset(&mut self) {
            self.events.lock().unwrap().push(Event::Reset);
        }
        fn config_written(&mut self, regs: &Registers) {
            let control = PriCapability::control(regs, self.pri_at).into_bits();
            self.events.lock().unwrap().push(Event::Written { control });
        }
        fn config_refresh(&mut self, regs: &mut Registers) {
            let status = PriCapability::status(regs, self.pri_at).with_unexpected_prg_index(true);
            PriCapability::set_status(regs, self.pri_at, status);
            self.events.lock().unwrap().push(Event::Refresh);
        }
    }

    fn endpoint() -> (Endpoint<Hooked>, usize, Arc<Mutex<Vec<Event>>>) {
        let id = Identity::TEST;
        let msix = BarSpec {
            index: 2,
            size: 4096,
            kind: BarKind::Memory32,
            prefetchable: false,
        };
        let mut b = ConfigBuilder::new(&id);
        b.bar(&msix).unwrap();
        let pri_at = b
            .ext_capability(&PriEngineCapability { capacity: 4 })
            .unwrap();
        let layout = Layout {
            config: b.build(),
            bars: vec![msix],
            msix_bar: Some(2),
            msix_pba_offset: 0x800,
        };
        let events = Arc::default();
        let function = Hooked {
            pri_at,
            events: Arc::clone(&events),
        };
        (Endpoint::new(layout, Bus::new(1), function), pri_at, events)
    }

    #[test]
    fn test_config_hooks_run_around_guest_accesses_and_after_power_on() {
        let (mut ep, pri_at, events) = endpoint();
        let control = (pri_at + 4) as u64;
        ep.region_write(CONFIG_REGION, control, &[0x02, 0]).unwrap();
        let mut status = [0; 2];
        ep.region_read(CONFIG_REGION, (pri_at + 6) as u64, &mut status)
            .unwrap();
        let status = PriStatus::from_bits(u16::from_le_bytes(status));
        assert!(
            status.unexpected_prg_index(),
            "the refresh ran before the read"
        );
        ep.reset().unwrap();
        assert_eq!(
            *events.lock().unwrap(),
            [
                Event::Written { control: 0 },
                Event::Refresh,
                Event::Written { control: 2 },
                Event::Refresh,
                Event::Reset,
                Event::Written { control: 0 },
            ]
        );
    }

    #[test]
    fn test_config_access_out_of_range_runs_no_written_hook() {
        let (mut ep, _, events) = endpoint();
        assert!(ep.region_write(CONFIG_REGION, 4095, &[0, 0]).is_err());
        assert_eq!(
            *events.lock().unwrap(),
            [Event::Written { control: 0 }, Event::Refresh]
        );
    }
}
