//! remap_unit: the PCI function that carries our VT-d register window to the guest. Its BAR0 is
//! the DRHD register set the DMAR table points at (VT-d spec chapter 8 and §10.4); the function
//! itself has no guest driver (class 0x0806, IOMMU), no MSI-X and no DMA of its own.
//!
//! Files: `base_check` (is BAR0 where the DMAR table says?), `calibration` (the learned BAR
//! address per topology, and the calibration boot), `dmar` (the ACPI DMAR table).

pub mod base_check;
pub mod calibration;
pub mod dmar;
pub mod front;

use std::sync::Arc;

use log::{debug, trace, warn};

use crate::endpoint::{Bus, Endpoint, Function, Layout};
use crate::pci::caps::express::ExpressCapability;
use crate::pci::config::Registers;
use crate::pci::{BarKind, BarSpec, ConfigBuilder, Identity, LayoutError};

pub use base_check::{BaseCheck, Placement};

/// PCI vendor ID (the accel's; not PCI-SIG assigned).
pub const VENDOR_ID: u16 = crate::devices::accel::VENDOR_ID;
/// PCI device ID.
pub const DEVICE_ID: u16 = 0xa100;
/// Class code: base system peripheral (0x08), IOMMU (0x06), programming interface 0.
pub const CLASS_CODE: u32 = 0x08_06_00;
/// BAR of the register window.
pub const REGS_BAR: usize = 0;
/// MSI-X vectors: none (VT-d raises its interrupts as MSI writes of its own registers'
/// programmed address/data, sent as DMA_WRITE; the function needs no MSI-X).
pub const MSIX_VECTORS: u32 = 0;
/// Access sizes a register window serves.
pub const ACCESS_SIZES: [usize; 4] = [1, 2, 4, 8];

/// The register file behind BAR0 (the guest-facing VT-d front end implements it).
pub trait RegisterWindow: Send + Sync {
    /// Bytes of the window (BAR0's size: a power of two, at least 4 KiB).
    fn size(&self) -> u64;
    /// A read of `size` (1, 2, 4 or 8) bytes at `offset`; must not block on guest memory.
    fn read(&self, offset: u64, size: usize) -> u64;
    /// A write of `size` bytes at `offset`; must not block on guest memory.
    fn write(&self, offset: u64, size: usize, value: u64);
    /// Function-level reset / client gone: back to power-on state.
    fn reset(&self);
}

/// The remap unit's function: BAR0 accesses go to the register window, configuration writes
/// to the BAR placement check.
pub struct RemapUnit {
    window: Arc<dyn RegisterWindow>,
    check: BaseCheck,
    bar: BarSpec,
    /// Whether an access the window cannot take was reported already (logged once).
    odd_access_reported: bool,
}

impl std::fmt::Debug for RemapUnit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemapUnit")
            .field("bar", &self.bar)
            .field("check", &self.check)
            .finish_non_exhaustive()
    }
}

impl RemapUnit {
    /// The BAR placement check.
    pub fn base_check(&self) -> &BaseCheck {
        &self.check
    }

    /// BAR0's shape.
    pub fn bar(&self) -> &BarSpec {
        &self.bar
    }

    /// Whether the window takes an access of `len` bytes to `bar`; logs the first refusal.
    fn takes(&mut self, bar: usize, offset: u64, len: usize, what: &str) -> bool {
        if bar == REGS_BAR && ACCESS_SIZES.contains(&len) {
            return true;
        }
        let message = format!("remap unit: {len}-byte {what} at BAR{bar}+0x{offset:x} ignored");
        if std::mem::replace(&mut self.odd_access_reported, true) {
            debug!("{message}");
        } else {
            warn!("{message} (reported once)");
        }
        false
    }
}

impl Function for RemapUnit {
    fn bar_read(&mut self, bar: usize, offset: u64, data: &mut [u8]) {
        if !self.takes(bar, offset, data.len(), "read") {
            data.fill(0);
            return;
        }
        let value = self.window.read(offset, data.len());
        trace!("remap unit: read 0x{offset:x}");
        data.copy_from_slice(&value.to_le_bytes()[..data.len()]);
    }

    fn bar_write(&mut self, bar: usize, offset: u64, data: &[u8]) {
        if !self.takes(bar, offset, data.len(), "write") {
            return;
        }
        trace!("remap unit: write 0x{offset:x}");
        let mut bytes = [0u8; 8];
        bytes[..data.len()].copy_from_slice(data);
        self.window
            .write(offset, data.len(), u64::from_le_bytes(bytes));
    }

    fn reset(&mut self) {
        self.window.reset();
        self.check.reset();
    }

    fn config_written(&mut self, regs: &Registers) {
        self.check.observe(regs, &self.bar);
    }
}

/// PCI identity of the remap unit.
pub fn identity() -> Identity {
    Identity {
        vendor_id: VENDOR_ID,
        device_id: DEVICE_ID,
        subsystem_vendor_id: VENDOR_ID,
        subsystem_id: DEVICE_ID,
        class_code: CLASS_CODE,
        revision: 1,
    }
}

/// BAR0 for a register window of `size` bytes: 32-bit (firmware places it below 4 GiB, where
/// the DMAR's DRHD base points), non-prefetchable (registers have side effects).
pub fn regs_bar(size: u64) -> BarSpec {
    BarSpec {
        index: REGS_BAR,
        size,
        kind: BarKind::Memory32,
        prefetchable: false,
    }
}

/// Configuration space and BARs of a remap unit with a window of `window_size` bytes: the
/// header, BAR0 and a version-2 PCI Express capability (an endpoint on pcie.0, which QEMU
/// turns into a root-complex integrated endpoint). No MSI-X.
pub fn layout(window_size: u64) -> Result<Layout, LayoutError> {
    let bar = regs_bar(window_size);
    let mut b = ConfigBuilder::new(&identity());
    b.bar(&bar)?;
    b.capability(&ExpressCapability)?;
    Ok(Layout {
        config: b.build(),
        bars: vec![bar],
        msix_bar: None,
        msix_pba_offset: 0,
    })
}

/// A bus for a remap unit: guest memory as its client maps it, no interrupt vectors. Create
/// it first to hand `bus.mem` to the front end, then pass it to [`endpoint`].
pub fn bus() -> Bus {
    Bus::new(MSIX_VECTORS)
}

/// Builds a served remap unit on `bus` (from [`bus`]) whose BAR0 is `window`, checking BAR0's
/// placement with `base`.
pub fn endpoint(
    bus: Bus,
    window: Arc<dyn RegisterWindow>,
    base: BaseCheck,
) -> Result<Endpoint<RemapUnit>, LayoutError> {
    let layout = layout(window.size())?;
    let unit = RemapUnit {
        bar: layout.bars[0],
        window,
        check: base,
        odd_access_reported: false,
    };
    Ok(Endpoint::new(layout, bus, unit))
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::endpoint::{CONFIG_REGION, MSIX_IRQ_INDEX};
    use crate::pci::header::offset;
    use crate::vfio_user::Device;

    /// Records accesses; reads return `offset | size << 56`.
    #[derive(Default)]
    struct Recorder {
        log: Mutex<Vec<(char, u64, usize, u64)>>,
    }

    impl RegisterWindow for Recorder {
        fn size(&self) -> u64 {
            0x4000
        }
        fn read(&self, offset: u64, size: usize) -> u64 {
            self.log.lock().unwrap().push(('r', offset, size, 0));
            offset | (size as u64) << 56
        }
        fn write(&self, offset: u64, size: usize, value: u64) {
            self.log.lock().unwrap().push(('w', offset, size, value));
        }
        fn reset(&self) {
            self.log.lock().unwrap().push(('x', 0, 0, 0));
        }
    }

    fn unit() -> (Endpoint<RemapUnit>, Arc<Recorder>) {
        let window = Arc::new(Recorder::default());
        let ep = endpoint(bus(), window.clone(), BaseCheck::new(None)).unwrap();
        (ep, window)
    }

    #[test]
    fn test_accesses_of_every_size_reach_the_window_little_endian() {
        let (mut ep, window) = unit();
        let mut q = [0u8; 8];
        ep.region_read(0, 0x10, &mut q).unwrap();
        assert_eq!(u64::from_le_bytes(q), 0x0800_0000_0000_0010);
        let mut b = [0u8; 1];
        ep.region_read(0, 0x3fff, &mut b).unwrap();
        assert_eq!(b, [0xff]);
        ep.region_write(0, 0x20, &0x1122_3344_5566_7788u64.to_le_bytes())
            .unwrap();
        ep.region_write(0, 0x28, &[0xaa, 0xbb]).unwrap();
        assert_eq!(
            *window.log.lock().unwrap(),
            [
                ('r', 0x10, 8, 0),
                ('r', 0x3fff, 1, 0),
                ('w', 0x20, 8, 0x1122_3344_5566_7788),
                ('w', 0x28, 2, 0xbbaa),
            ]
        );
    }

    #[test]
    fn test_odd_sizes_and_out_of_range_never_reach_the_window() {
        let (mut ep, window) = unit();
        let mut three = [0xffu8; 3];
        ep.region_read(0, 0, &mut three).unwrap();
        assert_eq!(three, [0; 3]);
        ep.region_write(0, 0, &[1; 16]).unwrap();
        assert!(
            ep.region_read(0, 0x3ffc, &mut [0; 8]).is_err(),
            "crosses the end"
        );
        assert!(ep.region_write(2, 0, &[0; 4]).is_err(), "no BAR2");
        assert!(window.log.lock().unwrap().is_empty());
    }

    #[test]
    fn test_reset_and_disconnect_reset_the_window() {
        let (mut ep, window) = unit();
        ep.reset().unwrap();
        ep.disconnected();
        assert_eq!(
            *window.log.lock().unwrap(),
            [('x', 0, 0, 0), ('x', 0, 0, 0)]
        );
    }

    #[test]
    fn test_regions_and_irqs_describe_one_bar_and_no_vectors() {
        let (ep, _) = unit();
        assert_eq!(ep.region(0).unwrap().size, 0x4000);
        for empty in 1..=6 {
            assert_eq!(ep.region(empty).unwrap().size, 0, "region {empty}");
        }
        assert_eq!(ep.region(CONFIG_REGION).unwrap().size, 4096);
        assert_eq!(ep.irq(MSIX_IRQ_INDEX).unwrap().count, 0);
        let regs = ep.config().regs();
        assert_eq!(regs.u32(offset::CLASS_REVISION) >> 8, CLASS_CODE);
    }

    #[test]
    fn test_window_sizes_that_are_no_bar_are_refused() {
        struct Sized(u64);
        impl RegisterWindow for Sized {
            fn size(&self) -> u64 {
                self.0
            }
            fn read(&self, _: u64, _: usize) -> u64 {
                0
            }
            fn write(&self, _: u64, _: usize, _: u64) {}
            fn reset(&self) {}
        }
        for size in [0, 0x800, 0x3000, 1 << 32] {
            let r = endpoint(bus(), Arc::new(Sized(size)), BaseCheck::new(None));
            assert!(
                matches!(r, Err(LayoutError::BadBar(_))),
                "size 0x{size:x} accepted"
            );
        }
    }
}
