//! One DMA remapping hardware unit (DRHD) as software sees it: the register file with the side
//! effects of its commands, translation of DMA requests, fault recording, queued invalidation and
//! the page request queue. VT-d spec 11.4 (register side effects), 3.x/7.x (translation, faults),
//! 6.5 (invalidation), 7.5 (page requests).
//!
//! No I/O: MMIO arrives as `mmio_read`/`mmio_write`, DMA requests as `translate`, page requests as
//! `page_request`; interrupts, device-TLB invalidations and page responses leave through the
//! [`VtdSink`] given to each call.

use log::debug;

use super::cache::{Caches, ContextInvalidation, IotlbInvalidation, PasidCacheInvalidation};
use super::cap::{VtdConfig, FRCD_OFFSET};
use super::fault::FaultReason;
use super::fault_log::{self, FaultLog, RecordOutcome};
use super::ids::DomainId;
use super::prq::{self, PageRequest, PageRequestOutcome};
use super::qi::{self, CacheExecutor, QueueContext, QueueGeometry};
use super::reg_inv;
use super::regs::{
    fault_record_count, Ccmd, Fsts, Gcmd, Gsts, IotlbReg, RegisterFile, RtAddr, Written,
    DMAR_CCMD_REG, DMAR_FECTL_REG, DMAR_FSTS_REG, DMAR_GCMD_REG, DMAR_ICS_REG, DMAR_IECTL_REG,
    DMAR_IOTLB_REG, DMAR_IQH_REG, DMAR_IQT_REG, DMAR_PECTL_REG, DMAR_PRS_REG, FAULT_EVENT,
    FRCD_SIZE, INVALIDATION_EVENT, PAGE_REQUEST_EVENT,
};
use super::request::{Fault, Perms, Request, Translation};
use super::sink::{PageResponseCode, VtdSink};
use super::translate::{RootTable, Translator};
use super::walk::PAGE_SIZE;
use crate::mem::GuestMemory;

/// With translation disabled every address maps to itself: one "page" as large as a u64 size
/// can say (2^63), aligned, so that `output - offset-in-page` stays the identity.
pub const UNTRANSLATED_PAGE_SIZE: u64 = 1 << 63;

/// Granularity of the register window the unit occupies (a BAR must cover whole pages).
const WINDOW_ALIGN: u64 = PAGE_SIZE;

/// The model of one DMA remapping unit.
#[derive(Debug)]
pub struct RemappingUnit {
    config: VtdConfig,
    mem: GuestMemory,
    regs: RegisterFile,
    translator: Translator,
    /// The root table latched by the last GCMD.SRTP; `None` before any, or when RTADDR.TTM held
    /// a mode the unit does not support.
    root: Option<RootTable>,
    /// The invalidation queue latched when GCMD.QIE was set; `None` while QI is disabled.
    queue: Option<QueueGeometry>,
    fault_log: FaultLog,
}

impl RemappingUnit {
    /// A unit with capabilities `config` reaching guest memory through `mem`, in reset state.
    pub fn new(config: VtdConfig, mem: GuestMemory) -> Self {
        RemappingUnit {
            regs: RegisterFile::new(&config),
            translator: Translator::new(config),
            root: None,
            queue: None,
            fault_log: FaultLog::new(&config),
            config,
            mem,
        }
    }

    /// The capabilities.
    pub fn config(&self) -> &VtdConfig {
        &self.config
    }

    /// Bytes of register window the unit needs (the fault recording registers come last),
    /// rounded up to whole pages.
    pub fn register_window_size(&self) -> u64 {
        let end = FRCD_OFFSET + u64::from(fault_record_count(&self.config)) * FRCD_SIZE;
        end.div_ceil(WINDOW_ALIGN) * WINDOW_ALIGN
    }

    /// Back to the reset state: registers, latched pointers, caches, fault index.
    pub fn reset(&mut self) {
        self.regs.reset();
        self.translator = Translator::new(self.config);
        self.root = None;
        self.queue = None;
        self.fault_log = FaultLog::new(&self.config);
    }

    /// Whether DMA remapping is on (GSTS.TES).
    pub fn translation_enabled(&self) -> bool {
        self.regs.load::<Gsts>().tes()
    }

    /// The root table latched by GCMD.SRTP, if it is usable.
    pub fn root_table(&self) -> Option<RootTable> {
        self.root
    }

    /// The translation caches (for inspection; software invalidates through the registers).
    pub fn caches(&mut self) -> &mut Caches {
        self.translator.caches()
    }

    /// A register read of `size` (4 or 8) bytes at `offset`. Reads have no side effects;
    /// other sizes, misaligned offsets and holes read as 0.
    pub fn mmio_read(&self, offset: u64, size: usize) -> u64 {
        self.regs.read(offset, size as u64)
    }

    /// A register write of `size` (4 or 8) bytes at `offset`, with its side effects. An 8-byte
    /// write is one access; 4-byte writes to either half of a 64-bit register work as well.
    pub fn mmio_write(&mut self, offset: u64, size: usize, value: u64, sink: &mut dyn VtdSink) {
        for written in self.regs.write(offset, size as u64, value) {
            self.after_write(&written, sink);
        }
    }

    /// Translates a DMA request. With translation disabled the address is used untranslated;
    /// otherwise the latched root table is walked. A fault is recorded in the fault recording
    /// registers (unless Fault Processing Disable applies) and raises the fault event per FECTL.
    pub fn translate(
        &mut self,
        req: &Request,
        sink: &mut dyn VtdSink,
    ) -> Result<Translation, Fault> {
        if !self.translation_enabled() {
            return Ok(Translation {
                output: req.addr,
                page_size: UNTRANSLATED_PAGE_SIZE,
                perms: Perms::ALL,
                domain: DomainId::default(),
            });
        }
        let result = match self.root {
            Some(root) => self.translator.translate(&self.mem.view(), root, req),
            None => Err(self.no_root_table(req)),
        };
        if let Err(fault) = &result {
            self.record_fault(fault, sink);
        }
        result
    }

    /// A page request from a device (7.5). Queued in the page request queue when the device
    /// may have it queued; otherwise answered by the unit itself, see [`PageRequestOutcome`].
    ///
    /// With translation enabled the device's scalable-mode context entry decides (QEMU
    /// `vtd_pri_request_page`, Linux enables PRE with `context_flip_pri` before `pci_enable_pri`):
    /// a legacy-mode, unusable or missing root table (SRTA.3, SRTA.2, LRT.1), a root or context
    /// entry that is missing or malformed (SRT.x, SCT.x), or a context entry with PRE clear
    /// (SCT.8) is a non-recoverable fault, recorded as translation faults are (FPD applies to
    /// the qualified ones), and the request is refused. Requests while translation is disabled
    /// are refused without a record: no entry could have enabled them.
    pub fn page_request(&mut self, req: PageRequest, sink: &mut dyn VtdSink) -> PageRequestOutcome {
        if !self.config.prs {
            return PageRequestOutcome::Unsupported;
        }
        if !self.translation_enabled() {
            return Self::refuse(&req, sink);
        }
        let request = req.as_request();
        let allowed = match self.root {
            Some(root) => self
                .translator
                .page_request_allowed(&self.mem.view(), root, &request),
            None => Err(self.no_root_table(&request)),
        };
        if let Err(fault) = allowed {
            self.record_fault(&fault, sink);
            return Self::refuse(&req, sink);
        }
        prq::submit(&mut self.regs, &self.mem.view(), &req, sink)
    }

    /// The fault for any request while no usable root table is latched: after an SRTP with
    /// an RTADDR.TTM the unit does not support, SRTA.2 (QEMU's `VTD_FR_RTADDR_INV_TTM`); before
    /// any SRTP (GSTS.RTPS clear), the root table cannot be accessed at all (LRT.1).
    fn no_root_table(&self, req: &Request) -> Fault {
        let reason = if self.regs.load::<Gsts>().rtps() {
            FaultReason::SmInvalidTtm
        } else {
            FaultReason::RootTableInvalid
        };
        Fault {
            reason,
            request: *req,
            fpd: false,
        }
    }

    /// Records a fault in the primary fault log (unless FPD suppresses it).
    fn record_fault(&mut self, fault: &Fault, sink: &mut dyn VtdSink) {
        if self.fault_log.record(&mut self.regs, fault, sink) == RecordOutcome::Overflow {
            debug!(
                "VT-d fault not recorded (overflow): {} from {}",
                fault.reason, fault.request.source
            );
        }
    }

    /// Refuses a page request that cannot be queued for its device: a last request of its
    /// group is answered with Invalid Request, so the device does not wait for a response.
    fn refuse(req: &PageRequest, sink: &mut dyn VtdSink) -> PageRequestOutcome {
        let response = req.auto_response(PageResponseCode::InvalidRequest);
        if let Some(resp) = response {
            sink.page_group_response(resp);
        }
        PageRequestOutcome::Rejected {
            auto_response: response.is_some(),
        }
    }

    /// The side effects of a register write.
    fn after_write(&mut self, written: &Written, sink: &mut dyn VtdSink) {
        match written.offset {
            DMAR_GCMD_REG => self.global_command(Gcmd::from_bits(written.data as u32), sink),
            DMAR_CCMD_REG if Ccmd::from_bits(written.new).icc() => self.context_command(),
            DMAR_IOTLB_REG if IotlbReg::from_bits(written.new).ivt() => self.iotlb_command(),
            DMAR_IQT_REG => self.process_queue(sink),
            DMAR_FSTS_REG => {
                fault_log::status_written(&mut self.regs);
                let iqe_cleared =
                    Fsts::from_bits(written.old as u32).iqe() && !self.regs.load::<Fsts>().iqe();
                if iqe_cleared {
                    // Software fixed the queue: processing resumes at IQH (6.5.2.10).
                    self.process_queue(sink);
                }
            }
            DMAR_FECTL_REG => self.regs.event_control_written(&FAULT_EVENT, sink),
            DMAR_ICS_REG => qi::ics_written(&mut self.regs),
            DMAR_IECTL_REG => self.regs.event_control_written(&INVALIDATION_EVENT, sink),
            DMAR_PRS_REG => prq::prs_written(&mut self.regs),
            DMAR_PECTL_REG => self.regs.event_control_written(&PAGE_REQUEST_EVENT, sink),
            offset if offset >= FRCD_OFFSET => self.fault_log.frcd_written(&mut self.regs),
            _ => {}
        }
    }

    /// GCMD (11.4.4): one-shot bits act when written as 1; persistent bits act when they differ
    /// from the status. GSTS reports the result before the write returns (no delay modelled).
    fn global_command(&mut self, cmd: Gcmd, sink: &mut dyn VtdSink) {
        let status: Gsts = self.regs.load();
        if cmd.srtp() {
            self.set_root_table_pointer();
        }
        if cmd.qie() != status.qies() && self.config.qi {
            self.set_queued_invalidation(cmd.qie(), sink);
        }
        if cmd.te() != status.tes() {
            self.set_translation(cmd.te());
        }
        // WBF, SFL, EAFL, IRE, SIRTP and CFI belong to capabilities the unit does not report
        // (CAP.RWBF, CAP.AFL, ECAP.IR): nothing to do, their status bits stay clear.
    }

    /// Drops every cached translation. A cache may always be emptied, and with caching mode
    /// (CAP.CM) software may have left not-present entries cached: after a new root table or a
    /// change of TE nothing cached under the old state may be used again.
    fn drop_caches(&mut self) {
        let caches = self.translator.caches();
        caches.invalidate_context(ContextInvalidation::Global);
        caches.invalidate_pasid_cache(PasidCacheInvalidation::Global);
        caches.invalidate_iotlb(IotlbInvalidation::Global);
    }

    /// SRTP: latch RTADDR (address and table mode) and report RTPS.
    fn set_root_table_pointer(&mut self) {
        let rtaddr: RtAddr = self.regs.load();
        self.root = RootTable::latch(rtaddr, &self.config);
        if self.root.is_none() {
            debug!(
                "VT-d root table with unsupported mode {:?} latched",
                rtaddr.ttm()
            );
        }
        self.regs.update(|gsts: Gsts| gsts.with_rtps(true));
        self.drop_caches();
    }

    /// TE: enable or disable DMA remapping.
    fn set_translation(&mut self, enable: bool) {
        self.regs.update(|gsts: Gsts| gsts.with_tes(enable));
        if !enable {
            // The fault index resets when translation and interrupt remapping (never enabled
            // here) are both off (7.2.1).
            self.fault_log.reset_index();
        }
        self.drop_caches();
    }

    /// QIE: enable queued invalidation (latch IQA, start at IQH = 0) or disable it (IQH is reset
    /// whenever QI is disabled, 11.4 IQH_REG).
    fn set_queued_invalidation(&mut self, enable: bool, sink: &mut dyn VtdSink) {
        self.regs.set(DMAR_IQH_REG, 0);
        self.regs.update(|gsts: Gsts| gsts.with_qies(enable));
        if enable {
            self.queue = Some(QueueGeometry::from_iqa(self.regs.load()));
            // Software sets IQT to 0 before enabling; if it did not, the queue runs now.
            self.process_queue(sink);
        } else {
            self.queue = None;
        }
    }

    /// Runs the invalidation queue, if enabled.
    fn process_queue(&mut self, sink: &mut dyn VtdSink) {
        let Some(queue) = self.queue else {
            return;
        };
        let mut exec = CacheExecutor {
            caches: self.translator.caches(),
            sink,
        };
        let mut ctx = QueueContext {
            regs: &mut self.regs,
            mem: &self.mem,
            config: &self.config,
            exec: &mut exec,
        };
        qi::process(&mut ctx, &queue);
    }

    /// CCMD with ICC (11.4.7): invalidate the context cache at the requested granularity, then
    /// clear ICC and report the granularity performed in CAIG (Linux waits for ICC to clear).
    /// Register-based invalidation is honoured even with QI enabled (undefined there): with
    /// caching mode, invalidations are how the unit learns of changes, so none is ignored.
    fn context_command(&mut self) {
        let ccmd: Ccmd = self.regs.load();
        if let Some(inv) = reg_inv::context_invalidation(ccmd) {
            self.translator.caches().invalidate_context(inv);
        }
        // Every requested granularity is performed as asked; a reserved one is not performed.
        self.regs.store(ccmd.with_icc(false).with_caig(ccmd.cirg()));
    }

    /// IOTLB with IVT (11.4.8.1): invalidate at the requested granularity (page-selective from
    /// IVA), then clear IVT and report the granularity actually performed in IAIG; Linux prints
    /// "Flush IOTLB failed" when IAIG is 0.
    fn iotlb_command(&mut self) {
        let cmd: IotlbReg = self.regs.load();
        let requested = reg_inv::iotlb_invalidation(cmd, self.regs.load());
        let performed = requested.map(|inv| qi::coarsen_iotlb(&self.config, inv));
        let iaig = reg_inv::performed_granularity(performed);
        if let Some(inv) = performed {
            self.translator.caches().invalidate_iotlb(inv);
        }
        self.regs.store(cmd.with_ivt(false).with_iaig(iaig));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vtd::request::Access;
    use crate::vtd::sink::RecordingSink;
    use crate::vtd::SourceId;

    fn unit(config: VtdConfig) -> RemappingUnit {
        RemappingUnit::new(config, GuestMemory::new())
    }

    #[test]
    fn test_register_window_covers_the_fault_records() {
        assert_eq!(unit(VtdConfig::default()).register_window_size(), 0x1000);
        let many = VtdConfig {
            fault_records: 256,
            ..VtdConfig::default()
        };
        assert_eq!(
            unit(many).register_window_size(),
            0x2000,
            "0x200 + 256 * 16"
        );
    }

    #[test]
    fn test_untranslated_when_translation_is_off() {
        let mut unit = unit(VtdConfig::default());
        let mut sink = RecordingSink::new();
        let req = Request {
            source: SourceId(1),
            pasid: None,
            addr: u64::MAX,
            access: Access::READ,
        };
        let t = unit.translate(&req, &mut sink).unwrap();
        assert_eq!(t.output, u64::MAX);
        assert_eq!(
            t.output & !(t.page_size - 1) | (req.addr & (t.page_size - 1)),
            req.addr
        );
        assert!(sink.events.is_empty());
    }

    #[test]
    fn test_te_without_root_table_faults_root_table_invalid() {
        let mut unit = unit(VtdConfig::default());
        let mut sink = RecordingSink::new();
        unit.mmio_write(
            DMAR_GCMD_REG,
            4,
            Gcmd::new().with_te(true).into_bits().into(),
            &mut sink,
        );
        assert!(unit.translation_enabled());
        let req = Request {
            source: SourceId(1),
            pasid: None,
            addr: 0x1000,
            access: Access::READ,
        };
        assert_eq!(
            unit.translate(&req, &mut sink).unwrap_err().reason,
            FaultReason::RootTableInvalid,
            "no SRTP yet"
        );
        assert!(unit.regs.load::<Fsts>().ppf());
    }

    #[test]
    fn test_qie_ignored_without_queued_invalidation() {
        let mut unit = unit(VtdConfig {
            qi: false,
            ..VtdConfig::default()
        });
        let mut sink = RecordingSink::new();
        unit.mmio_write(
            DMAR_GCMD_REG,
            4,
            Gcmd::new().with_qie(true).into_bits().into(),
            &mut sink,
        );
        assert!(!unit.regs.load::<Gsts>().qies());
        assert!(unit.queue.is_none());
    }
}
