//! Queued invalidation: the invalidation queue in guest memory, fetched from IQH to IQT and
//! executed in order; queue errors (FSTS.IQE with IQERCD.IQEI) and the invalidation completion
//! event. VT-d spec 6.5.2 (queued invalidation interface), 6.5.2.9-6.5.2.11 (completion events,
//! queue errors, ordering), 11.4 (IQH, IQT, IQA, ICS, IECTL, IQERCD registers).
//!
//! Execution is synchronous: by the time a descriptor's successor is fetched, its invalidation
//! is complete (device-TLB invalidations included, see [`VtdSink::device_tlb_invalidate`]). A
//! fence (FN) and a page request drain (PD) therefore need no waiting.

use super::cache::{
    Caches, ContextInvalidation, IotlbInvalidation, PasidCacheInvalidation, PasidIotlbInvalidation,
};
use super::cap::VtdConfig;
use super::fault_log;
use super::inv_desc::{DescError, Descriptor, InvDesc, InvWait, DESC_QWORDS, DESC_QWORDS_128};
use super::regs::{
    Fsts, Ics, IqOffset, Iqa, Iqercd, RegisterFile, DMAR_IQH_REG, DMAR_IQT_REG, INVALIDATION_EVENT,
};
use super::sink::{DevTlbInvalidation, PageGroupResponse, VtdSink};
use super::walk::PAGE_SIZE;
use crate::mem::{Gpa, GuestMemory, MemView};

/// Bytes in a quadword.
const QWORD: u64 = 8;
/// Address bits a page-selective mask can cover beyond the page offset: a mask of 52 or more
/// spans the whole 64-bit space.
const MAX_ADDRESS_MASK: u8 = 52;

/// IQERCD.IQEI: why the queue stopped (11.4, IQERCD_REG).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum QueueError {
    /// 1h: invalid tail pointer (beyond the queue, or bit 4 set with 256-bit descriptors).
    InvalidTail = 1,
    /// 2h: fetching the descriptor (or writing its status) hit memory that is not there.
    Memory = 2,
    /// 3h: invalid descriptor type.
    InvalidType = 3,
    /// 4h: reserved field violation (reserved bits, reserved encodings) in a known type.
    ReservedField = 4,
    /// 5h: descriptor width does not fit: a 256-bit-only type in a 128-bit queue.
    InvalidWidth = 5,
}

impl From<DescError> for QueueError {
    fn from(err: DescError) -> Self {
        match err {
            DescError::UnknownType(_) | DescError::WrongType { .. } => QueueError::InvalidType,
            DescError::ReservedBits { .. } | DescError::ReservedEncoding { .. } => {
                QueueError::ReservedField
            }
        }
    }
}

/// The queue as latched when queued invalidation was enabled (GCMD.QIE).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueGeometry {
    /// Guest-physical base, 4 KiB aligned.
    pub base: u64,
    /// Size in bytes: 2^QS pages.
    pub size: u64,
    /// 256-bit descriptors (IQA.DW).
    pub wide: bool,
}

impl QueueGeometry {
    /// From IQA as software programmed it.
    pub fn from_iqa(iqa: Iqa) -> Self {
        QueueGeometry {
            base: iqa.base(),
            size: PAGE_SIZE << iqa.qs(),
            wide: iqa.dw(),
        }
    }

    /// Bytes per descriptor.
    pub fn desc_size(&self) -> u64 {
        self.quadwords() as u64 * QWORD
    }

    fn quadwords(&self) -> usize {
        if self.wide {
            DESC_QWORDS
        } else {
            DESC_QWORDS_128
        }
    }

    /// Whether `offset` can be a queue position: inside the queue, on a descriptor boundary.
    pub fn valid_offset(&self, offset: u64) -> bool {
        offset < self.size && offset % self.desc_size() == 0
    }

    /// Fetches the descriptor at `offset`.
    pub fn fetch(&self, view: &MemView, offset: u64) -> Option<InvDesc> {
        let at = self.base.checked_add(offset)?;
        let mut desc = InvDesc::default();
        for (i, qword) in desc.0.iter_mut().take(self.quadwords()).enumerate() {
            *qword = view.read_u64(Gpa(at.checked_add(i as u64 * QWORD)?)).ok()?;
        }
        Some(desc)
    }
}

/// What carries out the invalidations a queue (or the register interface) asks for. The
/// self-translating unit drops entries from its own caches ([`CacheExecutor`]); the
/// guest-facing front end forwards them to a host IOMMU through the neutral API. Each call
/// returns once the invalidation is complete.
pub trait Executor {
    /// A context-cache invalidation.
    fn context_cache(&mut self, inv: ContextInvalidation);
    /// An IOTLB invalidation (second-stage and pass-through mappings), already coarsened to
    /// what the unit performs ([`coarsen_iotlb`]).
    fn iotlb(&mut self, inv: IotlbInvalidation);
    /// A PASID-based IOTLB invalidation (first-stage mappings).
    fn pasid_iotlb(&mut self, inv: PasidIotlbInvalidation);
    /// A PASID-cache invalidation.
    fn pasid_cache(&mut self, inv: PasidCacheInvalidation);
    /// A device-TLB invalidation, with or without PASID.
    fn device_tlb(&mut self, inv: DevTlbInvalidation);
    /// A page group response to deliver to a device.
    fn page_group_response(&mut self, resp: PageGroupResponse);
    /// Where the queue's interrupts (completion and error events) go.
    fn sink(&mut self) -> &mut dyn VtdSink;
}

/// The executor of a unit that translates by itself: its caches, and the sink for what leaves.
pub struct CacheExecutor<'a> {
    /// The caches invalidations drop entries from.
    pub caches: &'a mut Caches,
    /// Device-TLB invalidations and page responses go here.
    pub sink: &'a mut dyn VtdSink,
}

impl Executor for CacheExecutor<'_> {
    fn context_cache(&mut self, inv: ContextInvalidation) {
        self.caches.invalidate_context(inv);
    }

    fn iotlb(&mut self, inv: IotlbInvalidation) {
        self.caches.invalidate_iotlb(inv);
    }

    fn pasid_iotlb(&mut self, inv: PasidIotlbInvalidation) {
        self.caches.invalidate_pasid_iotlb(inv);
    }

    fn pasid_cache(&mut self, inv: PasidCacheInvalidation) {
        self.caches.invalidate_pasid_cache(inv);
    }

    fn device_tlb(&mut self, inv: DevTlbInvalidation) {
        self.sink.device_tlb_invalidate(inv);
    }

    fn page_group_response(&mut self, resp: PageGroupResponse) {
        self.sink.page_group_response(resp);
    }

    fn sink(&mut self) -> &mut dyn VtdSink {
        self.sink
    }
}

/// What the queue needs from its unit while it runs.
pub struct QueueContext<'a> {
    /// The registers.
    pub regs: &'a mut RegisterFile,
    /// Guest memory (queue and status writes).
    pub mem: &'a GuestMemory,
    /// Capabilities.
    pub config: &'a VtdConfig,
    /// Carries out the invalidations; its sink takes the interrupts.
    pub exec: &'a mut dyn Executor,
}

/// Records a queue error: FSTS.IQE and IQERCD.IQEI, fault event per FECTL. IQH is left on the
/// descriptor at fault and processing stops until software clears IQE (6.5.2.10).
pub fn report_error(regs: &mut RegisterFile, error: QueueError, sink: &mut dyn VtdSink) {
    let head = IqOffset::from_bits(regs.get(DMAR_IQH_REG)).bytes();
    warn_limited!("VT-d invalidation queue error {error:?} at offset 0x{head:x}");
    regs.update(|r: Iqercd| r.with_iqei(error as u8));
    fault_log::report_status(regs, Fsts::new().with_iqe(true), sink);
}

fn queue_error(ctx: &mut QueueContext<'_>, error: QueueError) {
    report_error(ctx.regs, error, ctx.exec.sink());
}

/// Processes descriptors from IQH up to IQT, unless IQE is pending. Terminates: IQH moves one
/// descriptor per step towards a tail that was checked to lie inside the queue.
pub fn process(ctx: &mut QueueContext<'_>, queue: &QueueGeometry) {
    if ctx.regs.load::<Fsts>().iqe() {
        return;
    }
    let tail = IqOffset::from_bits(ctx.regs.get(DMAR_IQT_REG)).bytes();
    if !queue.valid_offset(tail) {
        queue_error(ctx, QueueError::InvalidTail);
        return;
    }
    let view = ctx.mem.view();
    let mut head = IqOffset::from_bits(ctx.regs.get(DMAR_IQH_REG)).bytes();
    while head != tail {
        let Some(desc) = queue.fetch(&view, head) else {
            queue_error(ctx, QueueError::Memory);
            return;
        };
        let done = match execute(ctx.config, queue, &desc, ctx.exec) {
            Ok(Some(wait)) => wait_descriptor(ctx, &view, &wait),
            Ok(None) => Ok(()),
            Err(error) => Err(error),
        };
        if let Err(error) = done {
            queue_error(ctx, error);
            return;
        }
        head = (head + queue.desc_size()) % queue.size;
        ctx.regs
            .set(DMAR_IQH_REG, IqOffset::from_bytes(head).into_bits());
    }
}

/// Decodes and performs one descriptor with `exec`. An invalidation wait is returned for the
/// caller to complete (status write, completion event): only the caller knows when every
/// earlier descriptor has completed.
pub fn execute(
    config: &VtdConfig,
    queue: &QueueGeometry,
    desc: &InvDesc,
    exec: &mut dyn Executor,
) -> Result<Option<InvWait>, QueueError> {
    let kind = desc.kind().ok_or(QueueError::InvalidType)?;
    if kind.needs_256_bit() && !queue.wide {
        return Err(QueueError::InvalidWidth);
    }
    match Descriptor::try_from(desc)? {
        Descriptor::ContextCache(cc) => exec.context_cache(cc.0),
        Descriptor::Iotlb(iotlb) => {
            if (iotlb.drain_reads || iotlb.drain_writes) && !config.draining {
                return Err(QueueError::ReservedField);
            }
            exec.iotlb(coarsen_iotlb(config, iotlb.inv));
        }
        Descriptor::DevTlb(dev) => exec.device_tlb(dev.0),
        // No interrupt remapping (ECAP.IR = 0): nothing is cached, the descriptor is a no-op.
        Descriptor::Iec(_) => {}
        Descriptor::Wait(wait) => {
            if wait.page_drain && !config.pds {
                // PD is defined only with ECAP.PDS.
                return Err(QueueError::ReservedField);
            }
            return Ok(Some(wait));
        }
        Descriptor::PasidIotlb(piotlb) => exec.pasid_iotlb(clamp_pasid_iotlb(piotlb.0)),
        Descriptor::PasidCache(pc) => exec.pasid_cache(pc.0),
        Descriptor::PasidDevTlb(dev) => exec.device_tlb(dev.0),
        Descriptor::PageGroupResponse(resp) => exec.page_group_response(resp.0),
    }
    Ok(None)
}

/// Page-selective IOTLB invalidation the unit cannot do as asked becomes domain-selective,
/// which invalidates a superset (an invalidation may always drop more): without CAP.PSI, or
/// with an address mask above CAP.MAMV.
pub fn coarsen_iotlb(config: &VtdConfig, inv: IotlbInvalidation) -> IotlbInvalidation {
    match inv {
        IotlbInvalidation::Page {
            domain,
            address_mask,
            ..
        } if !config.psi || address_mask > config.mamv => IotlbInvalidation::Domain(domain),
        other => other,
    }
}

/// PASID-based IOTLB invalidation takes any address mask regardless of MAMV (11.4.2 CAP.MAMV:
/// "implementations supporting SMTS must support ... p_iotlb_inv_dsc with any defined address
/// mask"); masks beyond the address width all mean "every address".
fn clamp_pasid_iotlb(inv: PasidIotlbInvalidation) -> PasidIotlbInvalidation {
    match inv {
        PasidIotlbInvalidation::Page {
            domain,
            pasid,
            addr,
            address_mask,
            ih,
        } => PasidIotlbInvalidation::Page {
            domain,
            pasid,
            addr,
            address_mask: address_mask.min(MAX_ADDRESS_MASK),
            ih,
        },
        other => other,
    }
}

/// Invalidation wait (6.5.2.8): every earlier descriptor is complete, so the status write and
/// the completion interrupt can happen now; SW before IF.
fn wait_descriptor(
    ctx: &mut QueueContext<'_>,
    view: &MemView,
    wait: &InvWait,
) -> Result<(), QueueError> {
    write_wait_status(view, wait)?;
    wait_event(ctx.regs, wait, ctx.exec.sink());
    Ok(())
}

/// The status write of an invalidation wait (SW), if it asks for one.
pub fn write_wait_status(view: &MemView, wait: &InvWait) -> Result<(), QueueError> {
    if wait.status_write {
        view.write(Gpa(wait.status_addr), &wait.status_data.to_le_bytes())
            .map_err(|_| QueueError::Memory)?;
    }
    Ok(())
}

/// The completion event of an invalidation wait (IF), after its status write.
pub fn wait_event(regs: &mut RegisterFile, wait: &InvWait, sink: &mut dyn VtdSink) {
    if wait.interrupt {
        // A completion event while IWC is still set is no new interrupt condition (6.5.2.9).
        let ics: Ics = regs.load();
        if !ics.iwc() {
            regs.store(ics.with_iwc(true));
            regs.raise_event(&INVALIDATION_EVENT, sink);
        }
    }
}

/// After software wrote ICS: once IWC is clear, a completion event held pending is dropped.
pub fn ics_written(regs: &mut RegisterFile) {
    if !regs.load::<Ics>().iwc() {
        regs.event_serviced(&INVALIDATION_EVENT);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vtd::ids::{DomainId, Pasid};

    #[test]
    fn test_geometry_from_iqa() {
        let iqa = Iqa::new().with_iqa(0x200).with_dw(true).with_qs(1);
        let queue = QueueGeometry::from_iqa(iqa);
        assert_eq!(
            queue,
            QueueGeometry {
                base: 0x20_0000,
                size: 0x2000,
                wide: true
            }
        );
        assert_eq!(queue.desc_size(), 32);
        assert!(queue.valid_offset(0x1fe0));
        assert!(!queue.valid_offset(0x2000), "beyond the queue");
        assert!(!queue.valid_offset(0x10), "not on a 256-bit boundary");
        let narrow = QueueGeometry::from_iqa(Iqa::new().with_qs(7));
        assert_eq!((narrow.size, narrow.desc_size()), (0x8_0000, 16));
        assert!(narrow.valid_offset(0x7fff0));
    }

    #[test]
    fn test_fetch_does_not_wrap_around_the_address_space() {
        let queue = QueueGeometry {
            base: !0xfff,
            size: 0x1000,
            wide: true,
        };
        assert!(queue.fetch(&GuestMemory::new().view(), 0xfe0).is_none());
    }

    #[test]
    fn test_descriptor_errors_map_to_iqei() {
        assert_eq!(
            QueueError::from(DescError::UnknownType(0)),
            QueueError::InvalidType
        );
        assert_eq!(
            QueueError::from(DescError::ReservedBits { qword: 0, bits: 1 }),
            QueueError::ReservedField
        );
        let encoding = DescError::ReservedEncoding {
            field: "G",
            value: 0,
        };
        assert_eq!(QueueError::from(encoding), QueueError::ReservedField);
        assert_eq!(QueueError::InvalidWidth as u8, 5);
    }

    #[test]
    fn test_page_selective_iotlb_coarsens_to_domain_when_unsupported() {
        let page = IotlbInvalidation::Page {
            domain: DomainId(4),
            addr: 0,
            address_mask: 19,
            ih: false,
        };
        let config = VtdConfig::default();
        assert_eq!(
            coarsen_iotlb(&config, page),
            IotlbInvalidation::Domain(DomainId(4)),
            "AM > MAMV"
        );
        let small = IotlbInvalidation::Page {
            domain: DomainId(4),
            addr: 0,
            address_mask: 18,
            ih: false,
        };
        assert_eq!(coarsen_iotlb(&config, small), small);
        let no_psi = VtdConfig {
            psi: false,
            ..config
        };
        assert_eq!(
            coarsen_iotlb(&no_psi, small),
            IotlbInvalidation::Domain(DomainId(4))
        );
    }

    #[test]
    fn test_pasid_iotlb_mask_is_clamped_not_refused() {
        let pasid = Pasid::new(1).unwrap();
        let inv = PasidIotlbInvalidation::Page {
            domain: DomainId(1),
            pasid,
            addr: 0,
            address_mask: 63,
            ih: false,
        };
        let PasidIotlbInvalidation::Page { address_mask, .. } = clamp_pasid_iotlb(inv) else {
            panic!("still page-selective");
        };
        assert_eq!(address_mask, MAX_ADDRESS_MASK);
    }
}
