//! accel following its PCIe capabilities: ATS Control.Enable (PCIe 6.0 §10.5.1.3), PRI Control
//! and Outstanding Page Request Allocation (§10.5.2.2, .5), PRI Status owned by the PRI engine
//! (§10.5.2.3, its RW1C bits cleared through config space) and PASID Control (§7.8.9.3).

use crate::pci::caps::ats::AtsCapability;
use crate::pci::caps::pasid::PasidCapability;
use crate::pci::config::Registers;
use crate::pri::PriConfig;

use super::device::Core;

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
#[derive(Debug)]
pub(crate) struct CapFollower {
    offsets: CapOffsets,
    ats_enabled: Option<bool>,
    /// The PRI registers kept in step with the PRI engine (SVM devices only).
    pri: PriConfig,
}

impl CapFollower {
    /// A follower of the capabilities at `offsets`.
    pub fn new(offsets: CapOffsets) -> Self {
        CapFollower {
            offsets,
            ats_enabled: None,
            pri: PriConfig::new(offsets.pri),
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
        self.pri.written(svm.pri(), regs);
    }

    /// Before a configuration access: PRI Status from the engine.
    pub fn refresh(&mut self, core: &Core, regs: &mut Registers) {
        if let Some(svm) = &core.svm {
            self.pri.refresh(svm.pri(), regs);
        }
    }

    /// Function-level reset: the PRI engine back to its power-on state.
    pub fn reset(&mut self, core: &Core) {
        self.ats_enabled = None;
        if let Some(svm) = &core.svm {
            self.pri.power_on(svm.pri());
        }
    }
}
