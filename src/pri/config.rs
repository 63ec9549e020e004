//! Keeps a function's PRI capability registers and its [`Pri`] engine in step: the endpoint
//! hooks of a device with page requests. PCIe 6.0 §7.8.10.2-§7.8.10.3 (PRI Control, Status).
//!
//! The engine is the source of truth for the Status bits the function owns; the registers
//! mirror it. `refresh` (the function's `config_refresh`, run before every guest config read
//! and write) publishes the engine's Response Failure, Unexpected PRG Index and Stopped bits
//! and clears a consumed Reset. `written` (the function's `config_written`, after every
//! write) hands Enable and the allocation to the engine, acts on Reset while Enable is clear,
//! and forwards the guest's RW1C clears: the bits `refresh` published that the write cleared.
//! Since `refresh` runs just before each write, a guest can only clear what it could see.
//! Use it with `PriEngineCapability`, whose Reset bit stays set for `written` to see.

use super::{Pri, PriStatus};
use crate::pci::caps::pri::PriCapability;
use crate::pci::config::Registers;

/// The bits of PRI Status that are RW1C.
fn latched(status: PriStatus) -> PriStatus {
    PriStatus::new()
        .with_response_failure(status.response_failure())
        .with_unexpected_prg_index(status.unexpected_prg_index())
}

/// The PRI capability of one function, at `base` in its configuration space.
#[derive(Clone, Copy, Debug)]
pub struct PriConfig {
    base: usize,
    /// RW1C bits last published into the registers.
    shown: PriStatus,
}

impl PriConfig {
    /// The capability at `base` (what `ConfigBuilder::ext_capability` returned).
    pub fn new(base: usize) -> Self {
        PriConfig {
            base,
            shown: PriStatus::new(),
        }
    }

    /// Offset of the capability.
    pub fn base(&self) -> usize {
        self.base
    }

    /// Before a guest config access: writes the engine's Status bits into the registers and
    /// clears Reset (it reads 0).
    pub fn refresh(&mut self, pri: &Pri, regs: &mut Registers) {
        let engine = pri.status();
        let status = PriCapability::status(regs, self.base)
            .with_response_failure(engine.response_failure())
            .with_unexpected_prg_index(engine.unexpected_prg_index())
            .with_stopped(engine.stopped());
        PriCapability::set_status(regs, self.base, status);
        let control = PriCapability::control(regs, self.base).with_reset(false);
        PriCapability::set_control(regs, self.base, control);
        self.shown = latched(status);
    }

    /// After a guest config write: forwards RW1C clears, Enable and the allocation, then
    /// Reset if Enable is clear (set in the same write or before).
    pub fn written(&mut self, pri: &Pri, regs: &Registers) {
        let now = latched(PriCapability::status(regs, self.base));
        let cleared = self.shown.into_bits() & !now.into_bits();
        if cleared != 0 {
            pri.clear_status(PriStatus::from_bits(cleared));
        }
        self.shown = now;
        let control = PriCapability::control(regs, self.base);
        pri.configure(control.enable(), PriCapability::allocation(regs, self.base));
        if control.reset() && !control.enable() {
            pri.reset();
        }
    }

    /// Function-level reset: the engine disabled with nothing allocated, its outstanding
    /// requests forgotten and its status clear, as after power-on.
    pub fn power_on(&mut self, pri: &Pri) {
        pri.configure(false, 0);
        pri.reset();
        pri.clear_status(
            PriStatus::new()
                .with_response_failure(true)
                .with_unexpected_prg_index(true),
        );
        self.shown = PriStatus::new();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::super::tests::{pri, FakeIommu, DEV};
    use super::super::PriError;
    use super::*;
    use crate::iommu::{Access, PageResponse, PageResponseCode, Pasid};
    use crate::pci::caps::pri::PriEngineCapability;
    use crate::pci::config::ConfigSpace;
    use crate::pci::{ConfigBuilder, Identity};

    /// A function with the engine capability, driven the way the endpoint drives its hooks.
    struct Function {
        space: ConfigSpace,
        cfg: PriConfig,
        pri: Arc<Pri>,
        iommu: Arc<FakeIommu>,
    }

    impl Function {
        fn new() -> Self {
            let id = Identity::TEST;
            let mut b = ConfigBuilder::new(&id);
            let base = b
                .ext_capability(&PriEngineCapability { capacity: 16 })
                .unwrap();
            let (iommu, pri) = pri(0);
            let mut f = Function {
                space: b.build(),
                cfg: PriConfig::new(base),
                pri,
                iommu,
            };
            f.cfg.written(&f.pri, f.space.regs());
            f
        }

        fn write(&mut self, at: usize, data: &[u8]) {
            self.cfg.refresh(&self.pri, self.space.regs_mut());
            let offset = (self.cfg.base() + at) as u64;
            self.space.write(offset, data).unwrap();
            self.cfg.written(&self.pri, self.space.regs());
        }

        fn status(&mut self) -> PriStatus {
            self.cfg.refresh(&self.pri, self.space.regs_mut());
            PriCapability::status(self.space.regs(), self.cfg.base())
        }

        fn control(&mut self) -> u16 {
            self.cfg.refresh(&self.pri, self.space.regs_mut());
            PriCapability::control(self.space.regs(), self.cfg.base()).into_bits()
        }

        /// What Linux's pci_enable_pri does: allocation, then Enable.
        fn enable(&mut self, allocation: u32) {
            self.write(0xc, &allocation.to_le_bytes());
            self.write(4, &1u16.to_le_bytes());
        }
    }

    fn p1() -> Option<Pasid> {
        Pasid::new(1)
    }

    #[test]
    fn test_power_on_state_is_disabled_and_stopped() {
        let mut f = Function::new();
        let status = f.status();
        assert!(status.stopped() && status.prg_response_pasid_required());
        assert!(!status.response_failure() && !status.unexpected_prg_index());
        assert_eq!(
            f.pri.request(p1(), 0, Access::READ).err(),
            Some(PriError::Disabled)
        );
    }

    #[test]
    fn test_enable_and_allocation_reach_the_engine() {
        let mut f = Function::new();
        f.enable(2);
        assert!(!f.status().stopped());
        let _a = f.pri.request(p1(), 0, Access::READ).unwrap();
        let _b = f.pri.request(p1(), 0, Access::READ).unwrap();
        assert_eq!(f.pri.outstanding(), 2);
        f.write(4, &0u16.to_le_bytes());
        assert!(
            !f.status().stopped(),
            "disabled but requests are outstanding"
        );
    }

    #[test]
    fn test_guest_write_one_clears_an_engine_event_and_zero_keeps_it() {
        let mut f = Function::new();
        f.enable(2);
        f.pri.response(PageResponse {
            device: DEV,
            pasid: p1(),
            group: 3,
            code: PageResponseCode::Success,
        });
        assert!(f.status().unexpected_prg_index());
        // Writing 0 to the bit, or writing another register, keeps it.
        f.write(6, &0u16.to_le_bytes());
        f.write(0xc, &2u32.to_le_bytes());
        assert!(f.status().unexpected_prg_index());
        assert!(f.pri.status().unexpected_prg_index());
        let w1c = PriStatus::new().with_unexpected_prg_index(true);
        f.write(6, &w1c.into_bits().to_le_bytes());
        assert!(!f.status().unexpected_prg_index());
        assert!(!f.pri.status().unexpected_prg_index());
    }

    #[test]
    fn test_event_latched_after_the_last_read_is_not_lost_to_an_unrelated_write() {
        let mut f = Function::new();
        f.enable(1);
        assert!(!f.status().unexpected_prg_index());
        f.pri.response(PageResponse {
            device: DEV,
            pasid: None,
            group: 9,
            code: PageResponseCode::Success,
        });
        f.write(0xc, &1u32.to_le_bytes());
        assert!(f.status().unexpected_prg_index());
    }

    #[test]
    fn test_reset_forgets_requests_only_while_disabled_and_reads_zero() {
        let mut f = Function::new();
        f.enable(2);
        let token = f.pri.request(p1(), 0, Access::READ).unwrap();
        // Enable | Reset: no action while enabled.
        f.write(4, &3u16.to_le_bytes());
        assert_eq!(f.control(), 1, "Reset reads 0");
        assert_eq!(f.pri.outstanding(), 1);
        // Clearing Enable and setting Reset in the same write acts.
        f.write(4, &2u16.to_le_bytes());
        assert_eq!(f.control(), 0);
        assert_eq!(f.pri.outstanding(), 0);
        assert!(f.status().stopped());
        assert_eq!(f.pri.wait(token, None), Err(PriError::Aborted));
        // Re-enabling afterwards works, and an unrelated write does not reset again.
        f.enable(2);
        let _t = f.pri.request(p1(), 0, Access::READ).unwrap();
        f.write(0xc, &2u32.to_le_bytes());
        assert_eq!(f.pri.outstanding(), 1);
        assert_eq!(f.iommu.requests().len(), 2);
    }

    #[test]
    fn test_response_failure_shows_and_reenable_lifts_the_stop() {
        let mut f = Function::new();
        f.enable(2);
        let token = f.pri.request(p1(), 0, Access::READ).unwrap();
        let req = f.iommu.requests()[0];
        f.pri
            .response(PageResponse::to(&req, PageResponseCode::ResponseFailure));
        assert_eq!(
            f.pri.wait(token, None),
            Ok(PageResponseCode::ResponseFailure)
        );
        assert!(f.status().response_failure());
        assert_eq!(
            f.pri.request(p1(), 0, Access::READ).err(),
            Some(PriError::Stopped)
        );
        f.write(4, &0u16.to_le_bytes());
        f.write(4, &1u16.to_le_bytes());
        assert!(f.pri.request(p1(), 0, Access::READ).is_ok());
        let w1c = PriStatus::new().with_response_failure(true);
        f.write(6, &w1c.into_bits().to_le_bytes());
        assert!(!f.status().response_failure());
    }

    #[test]
    fn test_power_on_disables_forgets_and_clears_status() {
        let mut f = Function::new();
        f.enable(2);
        let _t = f.pri.request(p1(), 0, Access::READ).unwrap();
        f.pri.response(PageResponse {
            device: DEV,
            pasid: None,
            group: 77,
            code: PageResponseCode::Success,
        });
        f.space.reset();
        f.cfg.power_on(&f.pri);
        f.cfg.written(&f.pri, f.space.regs());
        let status = f.status();
        assert!(status.stopped() && !status.unexpected_prg_index());
        assert_eq!(f.pri.outstanding(), 0);
    }
}
