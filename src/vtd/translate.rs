//! The translation pipeline: root entry → context entry → (scalable mode) PASID directory and
//! table entry → first-stage, second-stage, nested or pass-through walk, with caches.
//! VT-d spec 3.4-3.9. PLACEHOLDER API: the contract; the pipeline is being written.

use super::cache::Caches;
use super::cap::VtdConfig;
use super::fault::FaultReason;
use super::request::{Fault, Request, Translation};
use crate::mem::MemView;

/// Translation table type, RTADDR_REG.TTM (bits 11:10).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RootTableType {
    /// 00b: legacy mode root/context entries.
    Legacy,
    /// 01b: scalable mode root/context entries.
    Scalable,
}

/// The root table as the guest last latched it with GCMD.SRTP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RootTable {
    /// Guest-physical address of the 4 KiB root table.
    pub addr: u64,
    /// Legacy or scalable.
    pub kind: RootTableType,
}

/// Translates requests for one remapping unit.
#[derive(Debug)]
pub struct Translator {
    config: VtdConfig,
    caches: Caches,
}

impl Translator {
    /// A translator with empty caches.
    pub fn new(config: VtdConfig) -> Self {
        Translator {
            config,
            caches: Caches::default(),
        }
    }

    /// Translates `req` with translation enabled (GSTS.TES = 1).
    pub fn translate(
        &mut self,
        _mem: &MemView,
        _root: RootTable,
        req: &Request,
    ) -> Result<Translation, Fault> {
        let _ = &self.config;
        Err(Fault {
            reason: FaultReason::RootEntryNotPresent,
            request: *req,
            fpd: false,
        })
    }

    /// The caches, for invalidation.
    pub fn caches(&mut self) -> &mut Caches {
        &mut self.caches
    }
}
