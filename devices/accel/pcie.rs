//! accel following its PCIe capabilities: ATS Control.Enable (PCIe 6.0 §10.5.1.3), PRI Control
//! and Outstanding Page Request Allocation (§10.5.2.2, .5), PRI Status owned by the PRI engine
//! (§10.5.2.3, its RW1C bits cleared through config space) and PASID Control (§7.8.9.3).

use crate::pci::caps::ats::AtsCapability;
use crate::pci::caps::pasid::PasidCapability;
use crate::pci::caps::pri::{PriCapability, PriStatus};
use crate::pci::config::Registers;

use super::device::Core;

/// Offset of Page Request Status inside the PRI capability (PCIe 6.0 §10.5.2.3).
const PRI_STATUS: usize = 0x06;

/// Where the builder put the extended capabilities.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CapOffsets {
    /// ATS capability.
    pub ats: usize,
    /// PRI capability.
    pub pri: usize,
    /// PASID capability.
    pub pasid: usize,
}

/// Tracks the capability registers the device acts on.
#[derive(Debug, Default)]
pub(crate) struct CapFollower {
    offsets: CapOffsets,
    ats_enabled: Option<bool>,
    pri_config: Option<(bool, u32)>,
    /// PRI Status as last shown to the guest: a RW1C bit set there and clear after a write
    /// was cleared by the guest (a bit the engine set since is not in it, so it stays).
    pri_shown: PriStatus,
}

impl CapFollower {
    /// A follower of the capabilities at `offsets`.
    pub fn new(offsets: CapOffsets) -> Self {
        CapFollower {
            offsets,
            ..Default::default()
        }
    }

    /// After a configuration write (or reset): hands changed controls to the engines.
    pub fn written(&mut self, core: &Core, regs: &Registers) {
        let o = self.offsets;
        core.set_pasid_control(PasidCapability::control(regs, o.pasid));
        let Some(svm) = &core.svm else {
            return;
        };
        let ats = AtsCapability::control(regs, o.ats).enable();
        if self.ats_enabled != Some(ats) {
            self.ats_enabled = Some(ats);
            svm.ats().set_enabled(ats);
        }
        let control = PriCapability::control(regs, o.pri);
        if control.reset() && !control.enable() {
            svm.pri().reset();
        }
        let config = (control.enable(), PriCapability::allocation(regs, o.pri));
        if self.pri_config != Some(config) {
            self.pri_config = Some(config);
            svm.pri().configure(config.0, config.1);
        }
        let now = PriCapability::status(regs, o.pri);
        let cleared = PriStatus::new()
            .with_response_failure(self.pri_shown.response_failure() && !now.response_failure())
            .with_unexpected_prg_index(
                self.pri_shown.unexpected_prg_index() && !now.unexpected_prg_index(),
            );
        if cleared.into_bits() != 0 {
            svm.pri().clear_status(cleared);
        }
        self.pri_shown = now;
    }

    /// Before a configuration read: PRI Status from the engine.
    pub fn refresh(&mut self, core: &Core, regs: &mut Registers) {
        let Some(svm) = &core.svm else {
            return;
        };
        let o = self.offsets;
        let engine = svm.pri().status();
        let shown = PriCapability::status(regs, o.pri)
            .with_response_failure(engine.response_failure())
            .with_unexpected_prg_index(engine.unexpected_prg_index())
            .with_stopped(engine.stopped());
        regs.set_u16(o.pri + PRI_STATUS, shown.into_bits());
        self.pri_shown = shown;
    }
}
