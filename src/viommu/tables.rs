//! The guest's translation structures as the neutral API needs them: a device's default
//! domain (legacy context entry, or the scalable-mode RID_PASID entry) and the first-stage
//! table a PASID entry points at. Read live from guest memory, never cached: the guest says
//! when they changed. VT-d spec 9.3-9.6 (entry formats), 3.6-3.9 (what each PGTT means).

use crate::iommu::{
    BindTarget, DefaultDomain, FirstStageFlags, PageTable, PagingLevels, Pasid, SecondStageTable,
    UnrecoverableReason,
};
use crate::mem::MemView;
use crate::vtd::context::ScalableContext;
use crate::vtd::entries::{EntryFault, EntryReader};
use crate::vtd::fault::FaultReason;
use crate::vtd::ids::{DomainId, SourceId};
use crate::vtd::pasid::{dir_index, PasidParams, Pgtt};
use crate::vtd::translate::{RootTable, RootTableType};
use crate::vtd::walk::FsTable;

/// What a device's requests without PASID use, as decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decoded {
    /// The domain for the host IOMMU.
    pub domain: DefaultDomain,
    /// Its domain ID in the guest's tables (for domain-selective invalidations).
    pub did: Option<DomainId>,
    /// Why it is blocked, for fault records (and whether FPD suppresses them).
    pub blocked: Option<EntryFault>,
    /// RID_PASID (scalable mode): the PASID whose entry is the default domain.
    pub rid_pasid: Option<u32>,
}

impl Decoded {
    fn identity() -> Self {
        Decoded {
            domain: DefaultDomain::Identity,
            did: None,
            blocked: None,
            rid_pasid: None,
        }
    }

    fn blocked(fault: EntryFault) -> Self {
        Decoded {
            domain: DefaultDomain::Blocked(neutral_reason(fault.reason)),
            did: None,
            blocked: Some(fault),
            rid_pasid: None,
        }
    }
}

/// A snapshot of what decides translation: memory, the latched root table, TE.
pub struct Tables<'a> {
    /// Guest memory (mapped memory only: no DMA message from the front end's thread).
    pub view: MemView,
    /// Entry reader of the unit.
    pub entries: &'a EntryReader,
    /// Latched root table.
    pub root: Option<RootTable>,
    /// GSTS.TES.
    pub enabled: bool,
    /// GSTS.RTPS: an SRTP happened (distinguishes "no root table" from "unusable mode").
    pub root_latched: bool,
}

impl Tables<'_> {
    /// The root table, or the fault every request gets without a usable one.
    fn root(&self) -> Result<RootTable, EntryFault> {
        let no_root = |reason| EntryFault { reason, fpd: false };
        let root = self.root.ok_or_else(|| {
            no_root(if self.root_latched {
                FaultReason::SmInvalidTtm
            } else {
                FaultReason::RootTableInvalid
            })
        })?;
        if !self.entries.valid_table(root.addr) {
            return Err(no_root(match root.kind {
                RootTableType::Legacy => FaultReason::RootTableInvalid,
                RootTableType::Scalable => FaultReason::SmRootTableAddressInvalid,
            }));
        }
        Ok(root)
    }

    /// Whether the unit is in scalable mode.
    pub fn scalable(&self) -> bool {
        matches!(
            self.root,
            Some(RootTable {
                kind: RootTableType::Scalable,
                ..
            })
        )
    }

    /// The default domain of `source`.
    pub fn default_domain(&self, source: SourceId) -> Decoded {
        if !self.enabled {
            return Decoded::identity();
        }
        let decoded = match self.root() {
            Err(fault) => return Decoded::blocked(fault),
            Ok(root) if root.kind == RootTableType::Legacy => self.legacy(root, source),
            Ok(root) => self.scalable_default(root, source),
        };
        decoded.unwrap_or_else(Decoded::blocked)
    }

    fn legacy(&self, root: RootTable, source: SourceId) -> Result<Decoded, EntryFault> {
        let context = self.entries.legacy_context(&self.view, root.addr, source)?;
        let domain = match context.table {
            None => DefaultDomain::Identity,
            Some(table) => DefaultDomain::SecondStage(SecondStageTable {
                root: table.root,
                levels: table.levels,
            }),
        };
        Ok(Decoded {
            domain,
            did: Some(context.did),
            blocked: None,
            rid_pasid: None,
        })
    }

    fn context(&self, root: RootTable, source: SourceId) -> Result<ScalableContext, EntryFault> {
        self.entries.scalable_context(&self.view, root.addr, source)
    }

    fn scalable_default(&self, root: RootTable, source: SourceId) -> Result<Decoded, EntryFault> {
        let context = self.context(root, source)?;
        let rid_pasid = context.rid_pasid;
        if dir_index(rid_pasid) >= u64::from(context.pasid_dir_entries) {
            return Err(EntryFault {
                reason: FaultReason::SmRidPasidInvalid,
                fpd: context.fpd,
            });
        }
        let params = self
            .entries
            .pasid_entry(&self.view, &context, rid_pasid, context.fpd)?;
        let domain = match (params.pgtt, params.first, params.second) {
            (Pgtt::FirstStage, Some(fs), _) => DefaultDomain::FirstStage(page_table(&fs)),
            (Pgtt::SecondStage, _, Some(ss)) => DefaultDomain::SecondStage(SecondStageTable {
                root: ss.root,
                levels: ss.levels,
            }),
            (Pgtt::PassThrough, _, _) => DefaultDomain::Identity,
            // Nested RID_PASID entries belong to a VMM inside the guest: not served here.
            _ => {
                return Err(EntryFault {
                    reason: FaultReason::SmPasidEntryInvalid,
                    fpd: params.fpd,
                })
            }
        };
        Ok(Decoded {
            domain,
            did: Some(params.did),
            blocked: None,
            rid_pasid: Some(rid_pasid),
        })
    }

    /// What `pasid` of `source` is bound to: `Ok(None)` when its entry is not present (or
    /// translation is off), an error for an entry that cannot be bound.
    pub fn pasid(
        &self,
        source: SourceId,
        pasid: Pasid,
    ) -> Result<Option<(BindTarget, DomainId)>, EntryFault> {
        if !self.enabled || !self.scalable() {
            return Ok(None);
        }
        let root = self.root()?;
        match self.pasid_params(root, source, pasid) {
            Ok(params) => bind_target(&params).map(|t| Some((t, params.did))),
            // PASIDs disabled in the context entry: nothing is bound either.
            Err(f) if f.reason == FaultReason::SmPasidDisabled || not_present(f.reason) => Ok(None),
            Err(f) => Err(f),
        }
    }

    /// Why the guest's structures give `pasid` of `source` no usable entry, when they do not
    /// (7.1.3, the first check that fails on the way): the reason its request with that PASID
    /// faults with. `None` with translation off, or when the entry is usable after all.
    pub fn pasid_refusal(&self, source: SourceId, pasid: Pasid) -> Option<EntryFault> {
        if !self.enabled {
            return None;
        }
        let root = match self.root() {
            Ok(root) if root.kind == RootTableType::Legacy => {
                return Some(EntryFault {
                    reason: FaultReason::SmInvalidTtm,
                    fpd: false,
                })
            }
            Ok(root) => root,
            Err(fault) => return Some(fault),
        };
        match self.pasid_params(root, source, pasid) {
            Err(fault) => Some(fault),
            Ok(params) => bind_target(&params).err(),
        }
    }

    /// The PASID entry of `pasid` of `source` under the scalable-mode `root`, checked on the
    /// way as 7.1.3 orders it: context entry, PASIDs enabled, PASID within the directory.
    fn pasid_params(
        &self,
        root: RootTable,
        source: SourceId,
        pasid: Pasid,
    ) -> Result<PasidParams, EntryFault> {
        let context = self.context(root, source)?;
        let fault = |reason| EntryFault {
            reason,
            fpd: context.fpd,
        };
        if !context.pasid_enable {
            return Err(fault(FaultReason::SmPasidDisabled));
        }
        if dir_index(pasid.raw()) >= u64::from(context.pasid_dir_entries) {
            return Err(fault(FaultReason::SmPasidTooLarge));
        }
        self.entries
            .pasid_entry(&self.view, &context, pasid.raw(), context.fpd)
    }

    /// Whether `source` may have page requests queued (7.5): scalable mode, a valid context
    /// entry with PRE set.
    pub fn page_requests_allowed(&self, source: SourceId) -> Result<(), EntryFault> {
        let fault = |reason, fpd| Err(EntryFault { reason, fpd });
        if !self.enabled {
            return fault(FaultReason::SmPageRequestDisabled, false);
        }
        let root = self.root()?;
        if root.kind == RootTableType::Legacy {
            return fault(FaultReason::SmPageRequestLegacyMode, false);
        }
        let context = self.context(root, source)?;
        if !context.page_request_enable {
            return fault(FaultReason::SmPageRequestDisabled, context.fpd);
        }
        Ok(())
    }
}

/// Entries the guest simply has not set up (nothing is bound), as opposed to malformed ones.
fn not_present(reason: FaultReason) -> bool {
    matches!(
        reason,
        FaultReason::SmPasidEntryNotPresent | FaultReason::SmPasidDirEntryNotPresent
    )
}

/// A PASID entry the host IOMMU can bind: first-stage only (what Linux's SVA writes).
fn bind_target(params: &PasidParams) -> Result<BindTarget, EntryFault> {
    match (params.pgtt, params.first) {
        (Pgtt::FirstStage, Some(fs)) => Ok(BindTarget::GuestPageTable(page_table(&fs))),
        _ => Err(EntryFault {
            reason: FaultReason::SmPasidEntryInvalid,
            fpd: params.fpd,
        }),
    }
}

/// A first-stage table in neutral terms.
fn page_table(fs: &FsTable) -> PageTable {
    PageTable {
        root: fs.root,
        levels: if fs.five_level {
            PagingLevels::Five
        } else {
            PagingLevels::Four
        },
        flags: FirstStageFlags {
            supervisor: fs.flags.sre,
            write_protect: fs.flags.wpe,
            extended_accessed: fs.flags.eafe,
        },
    }
}

/// The neutral name of why an entry blocks requests.
fn neutral_reason(reason: FaultReason) -> UnrecoverableReason {
    use FaultReason::*;
    match reason {
        SmPasidDirEntryAccess | SmPasidEntryAccess | SmContextEntryAccess | SmRootEntryAccess => {
            UnrecoverableReason::PasidFetch
        }
        SmPasidEntryReserved
        | SmPasidDirEntryReserved
        | SmPasidEntryInvalid
        | SmContextEntryReserved => UnrecoverableReason::BadPasidEntry,
        _ => UnrecoverableReason::PasidInvalid,
    }
}
