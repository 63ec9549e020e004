//! The translation pipeline: IOTLB, then root entry → context entry → (scalable mode) PASID
//! directory and table entry → first-stage, second-stage, nested or pass-through walk.
//! VT-d spec 3.4-3.9 (translation), 6.5 (caching), 7.1.3 (fault conditions).

use std::ops::RangeInclusive;

use super::cache::{CachedContext, Caches, IotlbEntry, IotlbSize};
use super::cap::VtdConfig;
use super::context::{LegacyContext, ScalableContext};
use super::entries::EntryReader;
use super::fault::FaultReason;
use super::ids::{DomainId, Pasid};
use super::pasid::{dir_index, PasidParams, Pgtt};
use super::regs::{RtAddr, TranslationTableMode};
use super::request::{Access, Fault, Perms, Request, Translation};
use super::walk::{
    self, bits_from, Denied, FsFault, FsReserved, SsFault, SsReserved, WalkFault, Walked,
};
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

impl RootTable {
    /// The root table RTADDR names, as SRTP latches it (11.4.5): `None` for a mode the unit
    /// with `config` does not support (reserved, abort-DMA, or scalable without SMTS), which
    /// is latched as unusable: every request then faults with an invalid TTM.
    pub fn latch(rtaddr: RtAddr, config: &VtdConfig) -> Option<RootTable> {
        let addr = rtaddr.addr();
        match rtaddr.ttm() {
            TranslationTableMode::Legacy => Some(RootTable {
                addr,
                kind: RootTableType::Legacy,
            }),
            TranslationTableMode::Scalable if config.smts => Some(RootTable {
                addr,
                kind: RootTableType::Scalable,
            }),
            _ => None,
        }
    }
}

/// The interrupt address range: requests whose output lands here are blocked (VT-d spec 3.15,
/// conditions LGN.4 / SGN.8); interrupts reach the unit as requests to the input range.
pub const INTERRUPT_RANGE: RangeInclusive<u64> = 0xfee0_0000..=0xfeef_ffff;

/// Reserved-bit masks of the paging structures, for this unit's address width and features
/// (those of root, context and PASID entries live in [`EntryReader`]).
#[derive(Debug)]
struct Reserved {
    ss_legacy: SsReserved,
    ss_scalable: SsReserved,
    fs: FsReserved,
}

impl Reserved {
    fn new(c: &VtdConfig) -> Self {
        Reserved {
            ss_legacy: walk::second_stage::reserved(c.mgaw, false, c.sl_2m, c.sl_1g),
            ss_scalable: walk::second_stage::reserved(c.mgaw, true, c.sl_2m, c.sl_1g),
            fs: walk::first_stage::reserved(c.mgaw, c.fl_1g),
        }
    }
}

/// A translation found by the slow path, with what the IOTLB keeps of it.
struct Found {
    output: u64,
    size: IotlbSize,
    perms: Perms,
    entry: IotlbEntry,
    /// FPD of the entries that led here (for a fault found after the walk).
    fpd: bool,
}

/// Which translation a walk fault happened in: the same condition has different codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Legacy,
    FirstStage,
    SecondStage,
    Nested,
}

/// Fault-reason table for walk outcomes (VT-d spec 7.1.3, legacy LSL/LGN and scalable
/// SFS/SSS/SGN conditions).
fn walk_reason(mode: Mode, fault: WalkFault, write: bool) -> FaultReason {
    use FaultReason::*;
    match (mode, fault) {
        (Mode::Legacy, WalkFault::Second(SsFault::BeyondWidth)) => AddressBeyondMgaw,
        (Mode::Legacy, WalkFault::Second(SsFault::Reserved)) => PagingEntryReserved,
        (Mode::Legacy, WalkFault::Second(SsFault::NotPresent)) if write => WriteNotPermitted,
        (Mode::Legacy, WalkFault::Second(SsFault::NotPresent)) => ReadNotPermitted,
        (Mode::Legacy, WalkFault::Second(_)) => PagingEntryInvalid,
        (Mode::Legacy, WalkFault::SecondDenied(Denied::Write)) => WriteNotPermitted,
        (Mode::Legacy, _) => ReadNotPermitted,
        (Mode::Nested, WalkFault::Second(SsFault::BeyondWidth)) => SmNestedFirstStageBeyondWidth,
        (_, WalkFault::Second(SsFault::BeyondWidth)) => SmAddressBeyondMax,
        (_, WalkFault::Second(SsFault::RootAccess)) => SmSecondStageRootInvalid,
        (_, WalkFault::Second(SsFault::TableAccess | SsFault::AdUpdate)) => {
            SmSecondStageEntryAccess
        }
        (_, WalkFault::Second(SsFault::NotPresent)) => SmSecondStageEntryPermission,
        (_, WalkFault::Second(SsFault::Reserved)) => SmSecondStageEntryReserved,
        (_, WalkFault::FirstDenied(d) | WalkFault::SecondDenied(d)) => match d {
            Denied::User => SmUserPrivilege,
            Denied::Write => SmWriteNotPermitted,
            Denied::Exec => SmExecuteNotPermitted,
            Denied::Read => SmReadNotPermitted,
        },
        (_, WalkFault::First(first)) => match first {
            FsFault::NonCanonical => SmNonCanonical,
            FsFault::RootAccess => SmFirstStageRootAccess,
            FsFault::TableAccess => SmFirstStageEntryAccess,
            FsFault::NotPresent => SmFirstStageEntryNotPresent,
            FsFault::Reserved => SmFirstStageEntryReserved,
            FsFault::AdUpdate => SmFirstStageAdUpdate,
            FsFault::Nested { root, write, fault } => match fault {
                SsFault::BeyondWidth => SmNestedFirstStageBeyondWidth,
                SsFault::RootAccess => SmSecondStageRootInvalid,
                SsFault::TableAccess | SsFault::AdUpdate => SmSecondStageEntryAccess,
                SsFault::Reserved => SmSecondStageEntryReserved,
                SsFault::NotPresent if write => SmNestedFirstStageEntryWrite,
                SsFault::NotPresent if root => SmNestedFirstStageRootRead,
                SsFault::NotPresent => SmNestedFirstStageEntryRead,
            },
        },
    }
}

/// A fault for `req`; `fpd` is the FPD of the entries read so far, which suppresses only
/// qualified faults.
fn fault(req: &Request, reason: FaultReason, fpd: bool) -> Fault {
    Fault {
        reason,
        request: *req,
        fpd: fpd && reason.is_qualified(),
    }
}

/// Translates requests for one remapping unit.
#[derive(Debug)]
pub struct Translator {
    config: VtdConfig,
    caches: Caches,
    rsvd: Reserved,
    entries: EntryReader,
    /// The root table the caches were filled under.
    root: Option<RootTable>,
}

impl Translator {
    /// A translator with empty caches.
    pub fn new(config: VtdConfig) -> Self {
        Translator {
            rsvd: Reserved::new(&config),
            entries: EntryReader::new(config),
            config,
            caches: Caches::default(),
            root: None,
        }
    }

    /// Translates `req` with translation enabled (GSTS.TES = 1). The IOTLB answers first; on a
    /// miss the walk fills it. Requests without PASID carry no execute or privilege attribute
    /// (those travel in the PASID prefix), so `req.access.exec`/`privileged` are ignored for
    /// them; in scalable mode their privilege is the context entry's RID_PRIV.
    pub fn translate(
        &mut self,
        mem: &MemView,
        root: RootTable,
        req: &Request,
    ) -> Result<Translation, Fault> {
        self.latch_root(root);
        if let Some((output, perms, entry)) = self
            .caches
            .iotlb_serve(req.source, req.pasid, req.addr, req.access)
        {
            if !INTERRUPT_RANGE.contains(&output) {
                return Ok(Translation {
                    output,
                    page_size: entry.size.bytes(),
                    perms,
                    domain: entry.domain,
                });
            }
        }
        let found = match root.kind {
            RootTableType::Legacy => self.legacy(mem, root.addr, req)?,
            RootTableType::Scalable => self.scalable(mem, root.addr, req)?,
        };
        if INTERRUPT_RANGE.contains(&found.output) {
            let reason = match root.kind {
                RootTableType::Legacy => FaultReason::InterruptAddress,
                RootTableType::Scalable => FaultReason::SmInterruptAddress,
            };
            return Err(fault(req, reason, found.fpd));
        }
        self.caches.insert_iotlb(req.source, req.pasid, found.entry);
        Ok(Translation {
            output: found.output,
            page_size: found.size.bytes(),
            perms: found.perms,
            domain: found.entry.domain,
        })
    }

    /// Checks that the device behind a page request may have it queued (VT-d spec 7.5): the
    /// root table is scalable-mode, the device's scalable-mode context entry is present and
    /// valid, and its PRE (Page Request Enable) field is set. The context entry comes from the
    /// context cache like a translation's, and fills it. The fault is the one to record; FPD
    /// of the context entry applies to the qualified ones (not present, PRE clear), as QEMU's
    /// `vtd_check_pre_bit` does.
    pub fn page_request_allowed(
        &mut self,
        mem: &MemView,
        root: RootTable,
        req: &Request,
    ) -> Result<(), Fault> {
        self.latch_root(root);
        match root.kind {
            RootTableType::Legacy => Err(fault(req, FaultReason::SmPageRequestLegacyMode, false)),
            RootTableType::Scalable => {
                if !self.valid_table(root.addr) {
                    return Err(fault(req, FaultReason::SmRootTableAddressInvalid, false));
                }
                let context = self.scalable_context(mem, root.addr, req)?;
                if context.page_request_enable {
                    Ok(())
                } else {
                    Err(fault(req, FaultReason::SmPageRequestDisabled, context.fpd))
                }
            }
        }
    }

    /// The caches, for invalidation.
    pub fn caches(&mut self) -> &mut Caches {
        &mut self.caches
    }

    /// Notes the root table in use: caches filled under another one are dropped. Software
    /// must invalidate after SRTP; dropping everything ourselves as well is harmless.
    fn latch_root(&mut self, root: RootTable) {
        if self.root != Some(root) {
            self.caches.flush_all();
            self.root = Some(root);
        }
    }

    /// Whether a table pointer is 4 KiB aligned and below the host address width.
    fn valid_table(&self, addr: u64) -> bool {
        self.entries.valid_table(addr)
    }

    /// Legacy mode: context entry (TT, AW, SLPTPTR, DID), then second stage or pass-through.
    fn legacy(&mut self, mem: &MemView, root: u64, req: &Request) -> Result<Found, Fault> {
        if req.pasid.is_some() {
            return Err(fault(req, FaultReason::SmInvalidTtm, false));
        }
        if !self.valid_table(root) {
            return Err(fault(req, FaultReason::RootTableInvalid, false));
        }
        let context = match self.caches.context(req.source) {
            Some(CachedContext::Legacy(context)) => context,
            _ => {
                let context = self.read_legacy_context(mem, root, req)?;
                self.caches
                    .insert_context(req.source, CachedContext::Legacy(context));
                context
            }
        };
        let access = Access {
            exec: false,
            privileged: false,
            ..req.access
        };
        let walked = match context.table {
            None => self.pass_through(req, false, context.fpd, FaultReason::AddressBeyondMgaw)?,
            Some(table) => {
                walk::second_stage_only(mem, &table, &self.rsvd.ss_legacy, req.addr, access, false)
                    .map_err(|f| {
                        fault(req, walk_reason(Mode::Legacy, f, access.write), context.fpd)
                    })?
            }
        };
        let owner = Owner {
            domain: context.did,
            pasid: None,
            first_stage: false,
            rid_priv: false,
            pass_through: context.table.is_none(),
            fpd: context.fpd,
        };
        Ok(found(req, walked, owner, self.config.mgaw, access))
    }

    fn read_legacy_context(
        &self,
        mem: &MemView,
        root: u64,
        req: &Request,
    ) -> Result<LegacyContext, Fault> {
        self.entries
            .legacy_context(mem, root, req.source)
            .map_err(|f| fault(req, f.reason, f.fpd))
    }

    /// Scalable mode: context entry, PASID (or RID_PASID), PASID directory and table entry,
    /// then the walk PGTT selects.
    fn scalable(&mut self, mem: &MemView, root: u64, req: &Request) -> Result<Found, Fault> {
        use FaultReason::*;
        if !self.valid_table(root) {
            return Err(fault(req, SmRootTableAddressInvalid, false));
        }
        let context = self.scalable_context(mem, root, req)?;
        let mut fpd = context.fpd;
        let (pasid, access) = match req.pasid {
            Some(pasid) => {
                if !context.pasid_enable {
                    return Err(fault(req, SmPasidDisabled, fpd));
                }
                // ECAP.PSS: PASIDs wider than the unit supports are out of range too.
                let too_wide = u64::from(pasid.raw())
                    .checked_shr(u32::from(self.config.pasid_bits))
                    .unwrap_or(0)
                    != 0;
                if too_wide || dir_index(pasid.raw()) >= u64::from(context.pasid_dir_entries) {
                    return Err(fault(req, SmPasidTooLarge, fpd));
                }
                (pasid.raw(), req.access)
            }
            None => {
                if dir_index(context.rid_pasid) >= u64::from(context.pasid_dir_entries) {
                    return Err(fault(req, SmRidPasidInvalid, fpd));
                }
                let access = Access {
                    exec: false,
                    privileged: context.rid_priv,
                    ..req.access
                };
                (context.rid_pasid, access)
            }
        };
        let params = match self.caches.pasid(req.source, pasid) {
            Some(params) => params,
            None => {
                let params = self.read_pasid_entry(mem, &context, pasid, req, fpd)?;
                self.caches.insert_pasid(req.source, pasid, params);
                params
            }
        };
        fpd |= params.fpd;
        if access.exec && !params.flags.ere {
            return Err(fault(req, SmExecuteRequestsDisabled, fpd));
        }
        let first_stage = matches!(params.pgtt, Pgtt::FirstStage | Pgtt::Nested);
        if access.privileged && first_stage && !params.flags.sre {
            return Err(fault(req, SmSupervisorRequestsDisabled, fpd));
        }
        let rsvd = &self.rsvd;
        let (walked, mode) = match (params.pgtt, params.first, params.second) {
            (Pgtt::FirstStage, Some(fs), _) => (
                walk::first_stage_only(mem, &fs, &rsvd.fs, req.addr, access),
                Mode::FirstStage,
            ),
            (Pgtt::SecondStage, _, Some(ss)) => (
                walk::second_stage_only(
                    mem,
                    &ss,
                    &rsvd.ss_scalable,
                    req.addr,
                    access,
                    params.flags.ere,
                ),
                Mode::SecondStage,
            ),
            (Pgtt::Nested, Some(fs), Some(ss)) => (
                walk::nested(mem, &fs, &rsvd.fs, &ss, &rsvd.ss_scalable, req.addr, access),
                Mode::Nested,
            ),
            (Pgtt::PassThrough, _, _) => {
                let walked = self.pass_through(req, params.flags.ere, fpd, SmAddressBeyondMax)?;
                (Ok(walked), Mode::SecondStage)
            }
            // PasidEntry::check only returns tables that match the PGTT.
            _ => return Err(fault(req, SmPasidEntryInvalid, fpd)),
        };
        let walked = walked.map_err(|f| fault(req, walk_reason(mode, f, access.write), fpd))?;
        let owner = Owner {
            domain: params.did,
            pasid: Pasid::new(pasid),
            first_stage,
            rid_priv: context.rid_priv,
            pass_through: params.pgtt == Pgtt::PassThrough,
            fpd,
        };
        Ok(found(req, walked, owner, self.config.mgaw, access))
    }

    /// The scalable-mode context entry of `req.source`, from the context cache or read (and
    /// then cached).
    fn scalable_context(
        &mut self,
        mem: &MemView,
        root: u64,
        req: &Request,
    ) -> Result<ScalableContext, Fault> {
        if let Some(CachedContext::Scalable(context)) = self.caches.context(req.source) {
            return Ok(context);
        }
        let context = self.read_scalable_context(mem, root, req)?;
        self.caches
            .insert_context(req.source, CachedContext::Scalable(context));
        Ok(context)
    }

    fn read_scalable_context(
        &self,
        mem: &MemView,
        root: u64,
        req: &Request,
    ) -> Result<ScalableContext, Fault> {
        self.entries
            .scalable_context(mem, root, req.source)
            .map_err(|f| fault(req, f.reason, f.fpd))
    }

    fn read_pasid_entry(
        &self,
        mem: &MemView,
        context: &ScalableContext,
        pasid: u32,
        req: &Request,
        context_fpd: bool,
    ) -> Result<PasidParams, Fault> {
        self.entries
            .pasid_entry(mem, context, pasid, context_fpd)
            .map_err(|f| fault(req, f.reason, f.fpd))
    }

    /// Pass-through: the output is the input, for inputs below the host address width.
    fn pass_through(
        &self,
        req: &Request,
        exec: bool,
        fpd: bool,
        beyond: FaultReason,
    ) -> Result<Walked, Fault> {
        if req.addr & bits_from(self.config.mgaw) != 0 {
            return Err(fault(req, beyond, fpd));
        }
        let perms = Perms {
            read: true,
            write: true,
            exec,
            privileged: false,
        };
        Ok(Walked {
            output: req.addr,
            page: walk::PageSize::Size4K,
            user: perms,
            supervisor: Perms {
                privileged: true,
                ..perms
            },
            dirty: true,
        })
    }
}

/// Whose translation a walk produced: the tags its IOTLB entry carries.
struct Owner {
    domain: DomainId,
    /// PASID used (RID_PASID for requests without PASID), `None` in legacy mode.
    pasid: Option<Pasid>,
    /// PGTT first-stage or nested.
    first_stage: bool,
    /// RID_PRIV of the context entry.
    rid_priv: bool,
    /// Pass-through: the entry covers the whole address space.
    pass_through: bool,
    /// FPD of the context, PASID-directory and PASID entries used.
    fpd: bool,
}

/// Assembles the answer and its IOTLB entry from a walk.
fn found(req: &Request, walked: Walked, owner: Owner, haw: u8, access: Access) -> Found {
    let Owner {
        domain,
        pasid,
        first_stage,
        rid_priv,
        pass_through,
        fpd,
    } = owner;
    let size = if pass_through {
        IotlbSize::Whole { width: haw }
    } else {
        IotlbSize::Page(walked.page)
    };
    let mask = size.bytes().wrapping_sub(1);
    let perms = if access.privileged {
        walked.supervisor
    } else {
        walked.user
    };
    let entry = IotlbEntry {
        base: req.addr & !mask,
        output: walked.output & !mask,
        size,
        user: walked.user,
        supervisor: walked.supervisor,
        dirty: walked.dirty,
        domain,
        pasid,
        first_stage,
        rid_priv,
    };
    Found {
        output: walked.output,
        size,
        perms,
        entry,
        fpd,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_walk_reasons_by_mode() {
        use FaultReason::*;
        let beyond = WalkFault::Second(SsFault::BeyondWidth);
        assert_eq!(walk_reason(Mode::Legacy, beyond, false), AddressBeyondMgaw);
        assert_eq!(
            walk_reason(Mode::SecondStage, beyond, false),
            SmAddressBeyondMax
        );
        assert_eq!(
            walk_reason(Mode::Nested, beyond, false),
            SmNestedFirstStageBeyondWidth
        );
        let absent = WalkFault::Second(SsFault::NotPresent);
        assert_eq!(walk_reason(Mode::Legacy, absent, true), WriteNotPermitted);
        assert_eq!(walk_reason(Mode::Legacy, absent, false), ReadNotPermitted);
        assert_eq!(
            walk_reason(Mode::SecondStage, absent, true),
            SmSecondStageEntryPermission
        );
        assert_eq!(
            walk_reason(Mode::Legacy, WalkFault::Second(SsFault::RootAccess), false),
            PagingEntryInvalid
        );
        assert_eq!(
            walk_reason(Mode::Nested, WalkFault::Second(SsFault::RootAccess), false),
            SmSecondStageRootInvalid
        );
    }

    #[test]
    fn test_nested_fetch_reasons() {
        use FaultReason::*;
        let nested = |root, write, fault| WalkFault::First(FsFault::Nested { root, write, fault });
        let reason = |f| walk_reason(Mode::Nested, f, false);
        assert_eq!(
            reason(nested(true, false, SsFault::NotPresent)),
            SmNestedFirstStageRootRead
        );
        assert_eq!(
            reason(nested(false, false, SsFault::NotPresent)),
            SmNestedFirstStageEntryRead
        );
        assert_eq!(
            reason(nested(true, true, SsFault::NotPresent)),
            SmNestedFirstStageEntryWrite
        );
        assert_eq!(
            reason(nested(false, false, SsFault::BeyondWidth)),
            SmNestedFirstStageBeyondWidth
        );
        assert_eq!(
            reason(nested(false, false, SsFault::Reserved)),
            SmSecondStageEntryReserved
        );
        assert_eq!(
            reason(WalkFault::First(FsFault::AdUpdate)),
            SmFirstStageAdUpdate
        );
        assert_eq!(
            reason(WalkFault::FirstDenied(Denied::User)),
            SmUserPrivilege
        );
    }

    #[test]
    fn test_fpd_suppresses_only_qualified_faults() {
        let req = Request {
            source: crate::vtd::SourceId(1),
            pasid: None,
            addr: 0,
            access: Access::READ,
        };
        assert!(fault(&req, FaultReason::ContextEntryNotPresent, true).fpd);
        assert!(!fault(&req, FaultReason::RootEntryNotPresent, true).fpd);
        assert!(!fault(&req, FaultReason::ReadNotPermitted, false).fpd);
    }

    #[test]
    fn test_interrupt_range_bounds() {
        assert!(INTERRUPT_RANGE.contains(&0xfee0_0000));
        assert!(INTERRUPT_RANGE.contains(&0xfeef_ffff));
        assert!(!INTERRUPT_RANGE.contains(&0xfef0_0000));
        assert!(!INTERRUPT_RANGE.contains(&0xfedf_ffff));
    }
}
