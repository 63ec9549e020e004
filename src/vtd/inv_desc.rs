//! Invalidation descriptors as software writes them into the invalidation queue: the raw
//! 128/256-bit form, its type, the reserved bits of each type, and the checked decode into typed
//! descriptors. VT-d spec 6.5.2 (queued invalidation), 6.5.2.1-6.5.2.8 (descriptor formats),
//! 7.6.1 (page group response).
//!
//! Decoding checks what the descriptor alone decides (type, reserved bits, reserved granularity
//! encodings); what depends on the queue or the unit's capabilities (descriptor width, PD without
//! ECAP.PDS, ...) is checked by the queue (`qi.rs`).

use bitfield_struct::bitfield;

use super::cache::{
    ContextInvalidation, IotlbInvalidation, PasidCacheInvalidation, PasidIotlbInvalidation,
};
use super::ids::{DomainId, Pasid, SourceId};
use super::regs::{ContextGranularity, IotlbGranularity};
use super::sink::{DevTlbInvalidation, PageGroupResponse, PageResponseCode};
use super::walk::PAGE_SHIFT;

/// Quadwords in the widest (256-bit) descriptor.
pub const DESC_QWORDS: usize = 4;
/// Quadwords in a 128-bit descriptor.
pub const DESC_QWORDS_128: usize = 2;

/// An invalidation descriptor as fetched: 2 quadwords in 128-bit mode (the others zero), 4 in
/// 256-bit mode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InvDesc(pub [u64; DESC_QWORDS]);

/// The type field, split in two: bits 3:0 and 11:9 of the first quadword.
#[bitfield(u64)]
struct DescHeader {
    #[bits(4)]
    type_lo: u8,
    #[bits(5)]
    __: u8,
    #[bits(3)]
    type_hi: u8,
    #[bits(52)]
    __: u64,
}

/// Descriptor types (6.5.2, Linux `QI_*_TYPE`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum DescKind {
    /// 01h: context-cache invalidate (cc_inv_dsc).
    ContextCache = 0x1,
    /// 02h: IOTLB invalidate (iotlb_inv_dsc).
    Iotlb = 0x2,
    /// 03h: device-TLB invalidate (dev_tlb_inv_dsc).
    DevTlb = 0x3,
    /// 04h: interrupt entry cache invalidate (iec_inv_dsc).
    Iec = 0x4,
    /// 05h: invalidation wait (inv_wait_dsc).
    Wait = 0x5,
    /// 06h: PASID-based IOTLB invalidate (p_iotlb_inv_dsc).
    PasidIotlb = 0x6,
    /// 07h: PASID-cache invalidate (pc_inv_dsc).
    PasidCache = 0x7,
    /// 08h: PASID-based device-TLB invalidate (p_dev_tlb_inv_dsc).
    PasidDevTlb = 0x8,
    /// 09h: page group response (pgrp_resp_dsc).
    PageGroupResponse = 0x9,
}

/// Reserved bits per quadword of each type (one table per type). Type fields are not in them:
/// they are decoded, not reserved. Quadwords a type does not use are reserved entirely. PFSID
/// fields are reserved because the unit does not report ECAP.DIT.
mod rsvd {
    /// Context-cache invalidate.
    pub const CONTEXT_CACHE: [u64; 4] = [0xfffc_0000_0000_f1c0, !0, !0, !0];
    /// IOTLB invalidate.
    pub const IOTLB: [u64; 4] = [0xffff_ffff_0000_f100, 0xf80, !0, !0];
    /// Device-TLB invalidate.
    pub const DEV_TLB: [u64; 4] = [0xffff_0000_ffe0_f1f0, 0xffe, !0, !0];
    /// Interrupt entry cache invalidate.
    pub const IEC: [u64; 4] = [0xffff_0000_07ff_f1e0, !0, !0, !0];
    /// Invalidation wait.
    pub const WAIT: [u64; 4] = [0x0000_0000_ffff_f100, 0x3, !0, !0];
    /// PASID-based IOTLB invalidate.
    pub const PASID_IOTLB: [u64; 4] = [0xfff0_0000_0000_f1c0, 0xf80, !0, !0];
    /// PASID-cache invalidate.
    pub const PASID_CACHE: [u64; 4] = [0xfff0_0000_0000_f1c0, !0, !0, !0];
    /// PASID-based device-TLB invalidate.
    pub const PASID_DEV_TLB: [u64; 4] = [0xfff0_0000_0000_f000, 0x7fe, !0, !0];
    /// Page group response; quadwords 2-3 carry private data when PDP is set.
    pub const PAGE_GROUP_RESPONSE: [u64; 4] =
        [0xfff0_0000_0000_01c0, 0xffff_ffff_ffff_f003, !0, !0];
}

impl DescKind {
    /// From the 7-bit type code.
    pub const fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            0x1 => Self::ContextCache,
            0x2 => Self::Iotlb,
            0x3 => Self::DevTlb,
            0x4 => Self::Iec,
            0x5 => Self::Wait,
            0x6 => Self::PasidIotlb,
            0x7 => Self::PasidCache,
            0x8 => Self::PasidDevTlb,
            0x9 => Self::PageGroupResponse,
            _ => return None,
        })
    }

    /// The scalable-mode descriptor types exist only in the 256-bit format (IQA.DW = 1).
    pub const fn needs_256_bit(self) -> bool {
        matches!(
            self,
            Self::PasidIotlb | Self::PasidCache | Self::PasidDevTlb | Self::PageGroupResponse
        )
    }

    /// Reserved bits of this type, per quadword.
    pub const fn reserved(self) -> [u64; 4] {
        match self {
            Self::ContextCache => rsvd::CONTEXT_CACHE,
            Self::Iotlb => rsvd::IOTLB,
            Self::DevTlb => rsvd::DEV_TLB,
            Self::Iec => rsvd::IEC,
            Self::Wait => rsvd::WAIT,
            Self::PasidIotlb => rsvd::PASID_IOTLB,
            Self::PasidCache => rsvd::PASID_CACHE,
            Self::PasidDevTlb => rsvd::PASID_DEV_TLB,
            Self::PageGroupResponse => rsvd::PAGE_GROUP_RESPONSE,
        }
    }
}

/// Why a descriptor is malformed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DescError {
    /// A field holds a reserved encoding (e.g. granularity 00b).
    #[error("reserved encoding 0x{value:x} in field {field}")]
    ReservedEncoding {
        /// The field.
        field: &'static str,
        /// Its value.
        value: u8,
    },
    /// Reserved bits are set.
    #[error("reserved bits 0x{bits:016x} set in quadword {qword}")]
    ReservedBits {
        /// Which quadword.
        qword: usize,
        /// The offending bits.
        bits: u64,
    },
    /// Not a descriptor type the unit knows.
    #[error("unknown descriptor type 0x{0:02x}")]
    UnknownType(u8),
    /// A known type, but not the one asked for.
    #[error("descriptor is a {found:?}, not a {expected:?}")]
    WrongType {
        /// The type wanted.
        expected: DescKind,
        /// The type found.
        found: DescKind,
    },
}

impl InvDesc {
    /// The 7-bit type code: bits 11:9 above bits 3:0 of the first quadword.
    pub fn type_code(&self) -> u8 {
        let header = DescHeader::from_bits(self.0[0]);
        (header.type_hi() << DescHeader::TYPE_LO_BITS) | header.type_lo()
    }

    /// The descriptor type, if known.
    pub fn kind(&self) -> Option<DescKind> {
        DescKind::from_code(self.type_code())
    }

    /// Checks the type is `expected` and no reserved bit is set.
    fn check(&self, expected: DescKind, reserved: [u64; 4]) -> Result<(), DescError> {
        let found = self
            .kind()
            .ok_or(DescError::UnknownType(self.type_code()))?;
        if found != expected {
            return Err(DescError::WrongType { expected, found });
        }
        for (qword, (&value, &mask)) in self.0.iter().zip(reserved.iter()).enumerate() {
            if value & mask != 0 {
                return Err(DescError::ReservedBits {
                    qword,
                    bits: value & mask,
                });
            }
        }
        Ok(())
    }
}

/// A 20-bit PASID field (always a valid PASID).
fn pasid_field(value: u32) -> Pasid {
    Pasid::new(value & Pasid::MAX).unwrap_or_default()
}

/// Context-cache invalidate descriptor, first quadword (6.5.2.1).
#[bitfield(u64)]
pub struct ContextCacheQw0 {
    #[bits(4)]
    __: u8,
    /// G: granularity (bits 5:4).
    #[bits(2)]
    pub g: ContextGranularity,
    #[bits(10)]
    __: u16,
    /// DID: domain-ID (bits 31:16).
    pub did: u16,
    /// SID: source-ID (bits 47:32).
    pub sid: u16,
    /// FM: function mask (bits 49:48).
    #[bits(2)]
    pub fm: u8,
    #[bits(14)]
    __: u16,
}

/// A context-cache invalidation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ContextCacheInv(pub ContextInvalidation);

impl TryFrom<&InvDesc> for ContextCacheInv {
    type Error = DescError;

    fn try_from(desc: &InvDesc) -> Result<Self, DescError> {
        desc.check(DescKind::ContextCache, rsvd::CONTEXT_CACHE)?;
        let qw0 = ContextCacheQw0::from_bits(desc.0[0]);
        let domain = DomainId(qw0.did());
        Ok(Self(match qw0.g() {
            ContextGranularity::Global => ContextInvalidation::Global,
            ContextGranularity::Domain => ContextInvalidation::Domain(domain),
            ContextGranularity::Device => ContextInvalidation::Device {
                domain,
                source: SourceId(qw0.sid()),
                function_mask: qw0.fm(),
            },
            ContextGranularity::Reserved => {
                return Err(DescError::ReservedEncoding {
                    field: "G",
                    value: qw0.g().into_bits(),
                })
            }
        }))
    }
}

/// IOTLB invalidate descriptor, first quadword (6.5.2.3).
#[bitfield(u64)]
pub struct IotlbQw0 {
    #[bits(4)]
    __: u8,
    /// G: granularity (bits 5:4).
    #[bits(2)]
    pub g: IotlbGranularity,
    /// DW: drain writes (bit 6).
    pub dw: bool,
    /// DR: drain reads (bit 7).
    pub dr: bool,
    #[bits(8)]
    __: u8,
    /// DID: domain-ID (bits 31:16).
    pub did: u16,
    #[bits(32)]
    __: u32,
}

/// Address quadword of the IOTLB and PASID-based IOTLB invalidate descriptors.
#[bitfield(u64)]
pub struct InvAddrQw1 {
    /// AM: address mask (bits 5:0).
    #[bits(6)]
    pub am: u8,
    /// IH: invalidation hint (bit 6).
    pub ih: bool,
    #[bits(5)]
    __: u8,
    /// ADDR: page number (bits 63:12).
    #[bits(52)]
    pub addr: u64,
}

impl InvAddrQw1 {
    /// The address, aligned down to the range the mask covers.
    pub fn aligned_addr(self) -> u64 {
        masked_page_addr(self.addr(), self.am())
    }
}

/// The base address of a page-selective invalidation of page number `page` with address mask
/// `am`: the range is 2^am pages, and hardware ignores the page-number bits below the mask.
pub fn masked_page_addr(page: u64, am: u8) -> u64 {
    let span_log2 = u32::from(am).min(u64::BITS - PAGE_SHIFT);
    let page = page & !((1u64 << span_log2) - 1);
    page << PAGE_SHIFT
}

/// An IOTLB invalidation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IotlbInv {
    /// What to invalidate.
    pub inv: IotlbInvalidation,
    /// DR: drain reads.
    pub drain_reads: bool,
    /// DW: drain writes.
    pub drain_writes: bool,
}

impl TryFrom<&InvDesc> for IotlbInv {
    type Error = DescError;

    fn try_from(desc: &InvDesc) -> Result<Self, DescError> {
        desc.check(DescKind::Iotlb, rsvd::IOTLB)?;
        let qw0 = IotlbQw0::from_bits(desc.0[0]);
        let qw1 = InvAddrQw1::from_bits(desc.0[1]);
        let domain = DomainId(qw0.did());
        let inv = match qw0.g() {
            IotlbGranularity::Global => IotlbInvalidation::Global,
            IotlbGranularity::Domain => IotlbInvalidation::Domain(domain),
            IotlbGranularity::Page => IotlbInvalidation::Page {
                domain,
                addr: qw1.aligned_addr(),
                address_mask: qw1.am(),
                ih: qw1.ih(),
            },
            IotlbGranularity::Reserved => {
                return Err(DescError::ReservedEncoding {
                    field: "G",
                    value: qw0.g().into_bits(),
                })
            }
        };
        Ok(Self {
            inv,
            drain_reads: qw0.dr(),
            drain_writes: qw0.dw(),
        })
    }
}

/// Device-TLB invalidate descriptor, first quadword (6.5.2.5).
#[bitfield(u64)]
pub struct DevTlbQw0 {
    #[bits(16)]
    __: u16,
    /// MIP: max invalidations pending (bits 20:16).
    #[bits(5)]
    pub mip: u8,
    #[bits(11)]
    __: u16,
    /// SID: source-ID of the device (bits 47:32).
    pub sid: u16,
    #[bits(16)]
    __: u16,
}

/// Address quadword of the device-TLB invalidate descriptor.
#[bitfield(u64)]
pub struct DevTlbQw1 {
    /// S: size (bit 0): the range is encoded in ADDR.
    pub s: bool,
    #[bits(11)]
    __: u16,
    /// ADDR (bits 63:12).
    #[bits(52)]
    pub addr: u64,
}

/// A device-TLB invalidation for requests without PASID.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DevTlbInv(pub DevTlbInvalidation);

impl TryFrom<&InvDesc> for DevTlbInv {
    type Error = DescError;

    fn try_from(desc: &InvDesc) -> Result<Self, DescError> {
        desc.check(DescKind::DevTlb, rsvd::DEV_TLB)?;
        let qw0 = DevTlbQw0::from_bits(desc.0[0]);
        let qw1 = DevTlbQw1::from_bits(desc.0[1]);
        Ok(Self(DevTlbInvalidation {
            source: SourceId(qw0.sid()),
            pasid: None,
            global: false,
            addr: qw1.addr() << DevTlbQw1::ADDR_OFFSET,
            size: qw1.s(),
            max_pending: qw0.mip(),
        }))
    }
}

/// Interrupt entry cache invalidate descriptor, first quadword (6.5.2.7).
#[bitfield(u64)]
pub struct IecQw0 {
    #[bits(4)]
    __: u8,
    /// G: granularity (bit 4): 0 global, 1 index-selective.
    pub g: bool,
    #[bits(22)]
    __: u32,
    /// IM: index mask (bits 31:27).
    #[bits(5)]
    pub im: u8,
    /// IIDX: interrupt index (bits 47:32).
    pub iidx: u16,
    #[bits(16)]
    __: u16,
}

/// An interrupt entry cache invalidation (no interrupt remapping here: checked, then a no-op).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IecInv {
    /// `None`: every entry; else the first index and the index mask.
    pub selective: Option<(u16, u8)>,
}

impl TryFrom<&InvDesc> for IecInv {
    type Error = DescError;

    fn try_from(desc: &InvDesc) -> Result<Self, DescError> {
        desc.check(DescKind::Iec, rsvd::IEC)?;
        let qw0 = IecQw0::from_bits(desc.0[0]);
        Ok(Self {
            selective: qw0.g().then_some((qw0.iidx(), qw0.im())),
        })
    }
}

/// Invalidation wait descriptor, first quadword (6.5.2.8).
#[bitfield(u64)]
pub struct WaitQw0 {
    #[bits(4)]
    __: u8,
    /// IF: interrupt flag (bit 4).
    pub interrupt_flag: bool,
    /// SW: status write (bit 5).
    pub status_write: bool,
    /// FN: fence (bit 6).
    pub fence: bool,
    /// PD: page request drain (bit 7).
    pub page_drain: bool,
    #[bits(24)]
    __: u32,
    /// Status data (bits 63:32).
    pub status_data: u32,
}

/// Status address quadword of the invalidation wait descriptor.
#[bitfield(u64)]
pub struct WaitQw1 {
    #[bits(2)]
    __: u8,
    /// Status address, in dwords (bits 63:2).
    #[bits(62)]
    pub status_addr: u64,
}

/// An invalidation wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InvWait {
    /// IF: raise the invalidation completion event.
    pub interrupt: bool,
    /// SW: write `status_data` to `status_addr`.
    pub status_write: bool,
    /// FN: later descriptors wait for this one.
    pub fence: bool,
    /// PD: drain page requests first.
    pub page_drain: bool,
    /// The value written.
    pub status_data: u32,
    /// Where it is written (4-byte aligned).
    pub status_addr: u64,
}

impl TryFrom<&InvDesc> for InvWait {
    type Error = DescError;

    fn try_from(desc: &InvDesc) -> Result<Self, DescError> {
        desc.check(DescKind::Wait, rsvd::WAIT)?;
        let qw0 = WaitQw0::from_bits(desc.0[0]);
        let qw1 = WaitQw1::from_bits(desc.0[1]);
        Ok(Self {
            interrupt: qw0.interrupt_flag(),
            status_write: qw0.status_write(),
            fence: qw0.fence(),
            page_drain: qw0.page_drain(),
            status_data: qw0.status_data(),
            status_addr: qw1.status_addr() << WaitQw1::STATUS_ADDR_OFFSET,
        })
    }
}

/// First quadword shared by the PASID-based IOTLB (6.5.2.4) and PASID-cache (6.5.2.2)
/// invalidate descriptors: what to invalidate (G), in which domain, for which PASID.
#[bitfield(u64)]
pub struct PasidScopeQw0 {
    #[bits(4)]
    __: u8,
    /// G: granularity (bits 5:4); see [`p_iotlb_g`] and [`pc_g`].
    #[bits(2)]
    pub g: u8,
    #[bits(10)]
    __: u16,
    /// DID: domain-ID (bits 31:16).
    pub did: u16,
    /// PASID (bits 51:32).
    #[bits(20)]
    pub pasid: u32,
    #[bits(12)]
    __: u16,
}

/// G of the PASID-based IOTLB descriptor (00b and 01b are reserved).
pub mod p_iotlb_g {
    /// 10b: every mapping of a PASID in a domain.
    pub const PASID: u8 = 2;
    /// 11b: pages of a PASID in a domain.
    pub const PAGE: u8 = 3;
}

/// G of the PASID-cache descriptor (10b is reserved).
pub mod pc_g {
    /// 00b: every PASID of a domain.
    pub const DOMAIN: u8 = 0;
    /// 01b: one PASID of a domain.
    pub const PASID: u8 = 1;
    /// 11b: everything.
    pub const GLOBAL: u8 = 3;
}

/// A PASID-based IOTLB invalidation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PasidIotlbInv(pub PasidIotlbInvalidation);

impl TryFrom<&InvDesc> for PasidIotlbInv {
    type Error = DescError;

    fn try_from(desc: &InvDesc) -> Result<Self, DescError> {
        desc.check(DescKind::PasidIotlb, rsvd::PASID_IOTLB)?;
        let qw0 = PasidScopeQw0::from_bits(desc.0[0]);
        let qw1 = InvAddrQw1::from_bits(desc.0[1]);
        let (domain, pasid) = (DomainId(qw0.did()), pasid_field(qw0.pasid()));
        Ok(Self(match qw0.g() {
            p_iotlb_g::PASID => PasidIotlbInvalidation::Pasid { domain, pasid },
            p_iotlb_g::PAGE => PasidIotlbInvalidation::Page {
                domain,
                pasid,
                addr: qw1.aligned_addr(),
                address_mask: qw1.am(),
                ih: qw1.ih(),
            },
            value => return Err(DescError::ReservedEncoding { field: "G", value }),
        }))
    }
}

/// A PASID-cache invalidation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PasidCacheInv(pub PasidCacheInvalidation);

impl TryFrom<&InvDesc> for PasidCacheInv {
    type Error = DescError;

    fn try_from(desc: &InvDesc) -> Result<Self, DescError> {
        desc.check(DescKind::PasidCache, rsvd::PASID_CACHE)?;
        let qw0 = PasidScopeQw0::from_bits(desc.0[0]);
        let domain = DomainId(qw0.did());
        Ok(Self(match qw0.g() {
            pc_g::DOMAIN => PasidCacheInvalidation::Domain(domain),
            pc_g::PASID => PasidCacheInvalidation::Pasid {
                domain,
                pasid: pasid_field(qw0.pasid()),
            },
            pc_g::GLOBAL => PasidCacheInvalidation::Global,
            value => return Err(DescError::ReservedEncoding { field: "G", value }),
        }))
    }
}

/// PASID-based device-TLB invalidate descriptor, first quadword (6.5.2.6).
#[bitfield(u64)]
pub struct PasidDevTlbQw0 {
    #[bits(4)]
    __: u8,
    /// MIP: max invalidations pending (bits 8:4).
    #[bits(5)]
    pub mip: u8,
    #[bits(7)]
    __: u8,
    /// SID: source-ID of the device (bits 31:16).
    pub sid: u16,
    /// PASID (bits 51:32).
    #[bits(20)]
    pub pasid: u32,
    #[bits(12)]
    __: u16,
}

/// Address quadword of the PASID-based device-TLB invalidate descriptor.
#[bitfield(u64)]
pub struct PasidDevTlbQw1 {
    /// G: global (bit 0): also global translations of every PASID.
    pub g: bool,
    #[bits(10)]
    __: u16,
    /// S: size (bit 11).
    pub s: bool,
    /// ADDR (bits 63:12).
    #[bits(52)]
    pub addr: u64,
}

/// A device-TLB invalidation for one PASID.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PasidDevTlbInv(pub DevTlbInvalidation);

impl TryFrom<&InvDesc> for PasidDevTlbInv {
    type Error = DescError;

    fn try_from(desc: &InvDesc) -> Result<Self, DescError> {
        desc.check(DescKind::PasidDevTlb, rsvd::PASID_DEV_TLB)?;
        let qw0 = PasidDevTlbQw0::from_bits(desc.0[0]);
        let qw1 = PasidDevTlbQw1::from_bits(desc.0[1]);
        Ok(Self(DevTlbInvalidation {
            source: SourceId(qw0.sid()),
            pasid: Some(pasid_field(qw0.pasid())),
            global: qw1.g(),
            addr: qw1.addr() << PasidDevTlbQw1::ADDR_OFFSET,
            size: qw1.s(),
            max_pending: qw0.mip(),
        }))
    }
}

/// Page group response descriptor, first quadword (7.6.1).
#[bitfield(u64)]
pub struct PageGroupRespQw0 {
    #[bits(4)]
    __: u8,
    /// PP: PASID present (bit 4).
    pub pp: bool,
    /// PDP: private data present (bit 5): quadwords 2-3 hold it.
    pub pdp: bool,
    #[bits(6)]
    __: u8,
    /// RC: response code (bits 15:12).
    #[bits(4)]
    pub rc: u8,
    /// RID: requester-ID (bits 31:16).
    pub rid: u16,
    /// PASID (bits 51:32).
    #[bits(20)]
    pub pasid: u32,
    #[bits(12)]
    __: u16,
}

/// Page group response descriptor, second quadword.
#[bitfield(u64)]
pub struct PageGroupRespQw1 {
    #[bits(2)]
    __: u8,
    /// LPIG (bit 2): reserved since revision 4.0, but Linux before 6.18 still sets it, so it is
    /// accepted and ignored.
    pub lpig: bool,
    /// PRGI: page request group index (bits 11:3).
    #[bits(9)]
    pub prgi: u16,
    #[bits(52)]
    __: u64,
}

/// A page group response for a device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageGroupResp(pub PageGroupResponse);

impl TryFrom<&InvDesc> for PageGroupResp {
    type Error = DescError;

    fn try_from(desc: &InvDesc) -> Result<Self, DescError> {
        let qw0 = PageGroupRespQw0::from_bits(desc.0[0]);
        let mut reserved = rsvd::PAGE_GROUP_RESPONSE;
        if qw0.pdp() {
            reserved[2] = 0;
            reserved[3] = 0;
        }
        desc.check(DescKind::PageGroupResponse, reserved)?;
        let qw1 = PageGroupRespQw1::from_bits(desc.0[1]);
        let code = PageResponseCode::from_code(qw0.rc()).ok_or(DescError::ReservedEncoding {
            field: "RC",
            value: qw0.rc(),
        })?;
        Ok(Self(PageGroupResponse {
            source: SourceId(qw0.rid()),
            pasid: qw0.pp().then(|| pasid_field(qw0.pasid())),
            prg_index: qw1.prgi(),
            code,
            private_data: qw0.pdp().then_some([desc.0[2], desc.0[3]]),
        }))
    }
}

/// Any decoded descriptor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Descriptor {
    /// Context-cache invalidate.
    ContextCache(ContextCacheInv),
    /// IOTLB invalidate.
    Iotlb(IotlbInv),
    /// Device-TLB invalidate.
    DevTlb(DevTlbInv),
    /// Interrupt entry cache invalidate.
    Iec(IecInv),
    /// Invalidation wait.
    Wait(InvWait),
    /// PASID-based IOTLB invalidate.
    PasidIotlb(PasidIotlbInv),
    /// PASID-cache invalidate.
    PasidCache(PasidCacheInv),
    /// PASID-based device-TLB invalidate.
    PasidDevTlb(PasidDevTlbInv),
    /// Page group response.
    PageGroupResponse(PageGroupResp),
}

impl TryFrom<&InvDesc> for Descriptor {
    type Error = DescError;

    fn try_from(desc: &InvDesc) -> Result<Self, DescError> {
        let kind = desc
            .kind()
            .ok_or(DescError::UnknownType(desc.type_code()))?;
        Ok(match kind {
            DescKind::ContextCache => Self::ContextCache(desc.try_into()?),
            DescKind::Iotlb => Self::Iotlb(desc.try_into()?),
            DescKind::DevTlb => Self::DevTlb(desc.try_into()?),
            DescKind::Iec => Self::Iec(desc.try_into()?),
            DescKind::Wait => Self::Wait(desc.try_into()?),
            DescKind::PasidIotlb => Self::PasidIotlb(desc.try_into()?),
            DescKind::PasidCache => Self::PasidCache(desc.try_into()?),
            DescKind::PasidDevTlb => Self::PasidDevTlb(desc.try_into()?),
            DescKind::PageGroupResponse => Self::PageGroupResponse(desc.try_into()?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bits 3:0 and 11:9: the type field, decoded rather than reserved.
    const TYPE_BITS: u64 = 0xe0f;

    fn desc(qw: [u64; 4]) -> InvDesc {
        InvDesc(qw)
    }

    #[test]
    fn test_reserved_tables_match_qemu_masks() {
        // QEMU hw/i386/intel_iommu_internal.h; QEMU's masks include the type bits it does not
        // decode, so compare with those added back where QEMU has them.
        assert_eq!(
            rsvd::IOTLB[0],
            0xffff_ffff_0000_f100,
            "VTD_INV_DESC_IOTLB_RSVD_LO"
        );
        assert_eq!(rsvd::IOTLB[1], 0xf80, "VTD_INV_DESC_IOTLB_RSVD_HI");
        assert_eq!(
            rsvd::CONTEXT_CACHE[0] | 0xe00,
            0xfffc_0000_0000_ffc0,
            "VTD_INV_DESC_CC_RSVD"
        );
        assert_eq!(
            rsvd::DEV_TLB[0] | 0xe08,
            0xffff_0000_ffe0_fff8,
            "VTD_INV_DESC_DEVICE_IOTLB_RSVD_LO"
        );
        assert_eq!(rsvd::DEV_TLB[1], 0xffe, "VTD_INV_DESC_DEVICE_IOTLB_RSVD_HI");
        assert_eq!(rsvd::IEC[0], 0xffff_0000_07ff_f1e0, "VTD_INV_DESC_IEC_RSVD");
        // QEMU predates PD (bit 7).
        assert_eq!(
            rsvd::WAIT[0] | 0xe00 | 0x80,
            0xffff_ff80,
            "VTD_INV_DESC_WAIT_RSVD_LO"
        );
        assert_eq!(rsvd::WAIT[1], 0x3, "VTD_INV_DESC_WAIT_RSVD_HI");
        assert_eq!(
            rsvd::PASID_IOTLB[0],
            0xfff0_0000_0000_f1c0,
            "VTD_INV_DESC_PIOTLB_RSVD_VAL0"
        );
        assert_eq!(rsvd::PASID_IOTLB[1], 0xf80, "VTD_INV_DESC_PIOTLB_RSVD_VAL1");
        assert_eq!(
            rsvd::PASID_CACHE[0],
            0xfff0_0000_0000_f1c0,
            "VTD_INV_DESC_PASIDC_RSVD_VAL0"
        );
        assert_eq!(
            rsvd::PASID_DEV_TLB[0],
            0xfff0_0000_0000_f000,
            "PASID_DEVICE_IOTLB_RSVD_VAL0"
        );
        assert_eq!(
            rsvd::PASID_DEV_TLB[1],
            0x7fe,
            "PASID_DEVICE_IOTLB_RSVD_VAL1"
        );
        // QEMU treats PDP (bit 5) as reserved; 3.x defined it, so it is accepted here.
        assert_eq!(
            rsvd::PAGE_GROUP_RESPONSE[0] | 0x20,
            0xfff0_0000_0000_01e0,
            "VTD_INV_DESC_PGRESP_RSVD_LO"
        );
        assert_eq!(
            rsvd::PAGE_GROUP_RESPONSE[1],
            0xffff_ffff_ffff_f003,
            "VTD_INV_DESC_PGRESP_RSVD_HI"
        );
    }

    /// For each type: reserved bits, field bits and type bits partition each quadword.
    #[test]
    fn test_reserved_tables_partition_with_fields() {
        let fields: [(DescKind, [u64; 2]); 9] = [
            (
                DescKind::ContextCache,
                [
                    ContextCacheQw0::new()
                        .with_g(ContextGranularity::Device)
                        .with_did(!0)
                        .with_sid(!0)
                        .with_fm(3)
                        .into_bits(),
                    0,
                ],
            ),
            (
                DescKind::Iotlb,
                [
                    IotlbQw0::new()
                        .with_g(IotlbGranularity::Page)
                        .with_dw(true)
                        .with_dr(true)
                        .with_did(!0)
                        .into_bits(),
                    InvAddrQw1::new()
                        .with_am(0x3f)
                        .with_ih(true)
                        .with_addr((1 << 52) - 1)
                        .into_bits(),
                ],
            ),
            (
                DescKind::DevTlb,
                [
                    DevTlbQw0::new().with_mip(0x1f).with_sid(!0).into_bits(),
                    DevTlbQw1::new()
                        .with_s(true)
                        .with_addr((1 << 52) - 1)
                        .into_bits(),
                ],
            ),
            (
                DescKind::Iec,
                [
                    IecQw0::new()
                        .with_g(true)
                        .with_im(0x1f)
                        .with_iidx(!0)
                        .into_bits(),
                    0,
                ],
            ),
            (
                DescKind::Wait,
                [
                    WaitQw0::new()
                        .with_interrupt_flag(true)
                        .with_status_write(true)
                        .with_fence(true)
                        .with_page_drain(true)
                        .with_status_data(!0)
                        .into_bits(),
                    WaitQw1::new().with_status_addr((1 << 62) - 1).into_bits(),
                ],
            ),
            (
                DescKind::PasidIotlb,
                [
                    PasidScopeQw0::new()
                        .with_g(p_iotlb_g::PAGE)
                        .with_did(!0)
                        .with_pasid(Pasid::MAX)
                        .into_bits(),
                    InvAddrQw1::new()
                        .with_am(0x3f)
                        .with_ih(true)
                        .with_addr((1 << 52) - 1)
                        .into_bits(),
                ],
            ),
            (
                DescKind::PasidCache,
                [
                    PasidScopeQw0::new()
                        .with_g(pc_g::GLOBAL)
                        .with_did(!0)
                        .with_pasid(Pasid::MAX)
                        .into_bits(),
                    0,
                ],
            ),
            (
                DescKind::PasidDevTlb,
                [
                    PasidDevTlbQw0::new()
                        .with_mip(0x1f)
                        .with_sid(!0)
                        .with_pasid(Pasid::MAX)
                        .into_bits(),
                    PasidDevTlbQw1::new()
                        .with_g(true)
                        .with_s(true)
                        .with_addr((1 << 52) - 1)
                        .into_bits(),
                ],
            ),
            (
                DescKind::PageGroupResponse,
                [
                    PageGroupRespQw0::new()
                        .with_pp(true)
                        .with_pdp(true)
                        .with_rc(0xf)
                        .with_rid(!0)
                        .with_pasid(Pasid::MAX)
                        .into_bits(),
                    PageGroupRespQw1::new()
                        .with_lpig(true)
                        .with_prgi(0x1ff)
                        .into_bits(),
                ],
            ),
        ];
        for (kind, [f0, f1]) in fields {
            let rsvd = kind.reserved();
            assert_eq!(rsvd[0] & (f0 | TYPE_BITS), 0, "{kind:?} qw0 overlaps");
            assert_eq!(
                rsvd[0] | f0 | TYPE_BITS,
                !0,
                "{kind:?} qw0 has undefined bits"
            );
            assert_eq!(rsvd[1] & f1, 0, "{kind:?} qw1 overlaps");
            assert_eq!(rsvd[1] | f1, !0, "{kind:?} qw1 has undefined bits");
            assert_eq!((rsvd[2], rsvd[3]), (!0, !0), "{kind:?} upper quadwords");
        }
    }

    #[test]
    fn test_type_code_uses_both_type_fields() {
        assert_eq!(desc([0x5, 0, 0, 0]).kind(), Some(DescKind::Wait));
        assert_eq!(
            desc([0x9, 0, 0, 0]).kind(),
            Some(DescKind::PageGroupResponse)
        );
        assert_eq!(desc([0x205, 0, 0, 0]).type_code(), 0x15);
        assert_eq!(desc([0x205, 0, 0, 0]).kind(), None);
        for code in [0x0, 0xa, 0xf] {
            assert_eq!(
                Descriptor::try_from(&desc([code, 0, 0, 0])),
                Err(DescError::UnknownType(code as u8))
            );
        }
    }

    #[test]
    fn test_decode_linux_context_and_iotlb_descriptors() {
        // qi_flush_context(iommu, did 5, sid 0x28, fm 1, DMA_CCMD_DEVICE_INVL).
        let cc = desc([
            (1 << 48) | (0x28 << 32) | (5 << 16) | (3 << 4) | 0x1,
            0,
            0,
            0,
        ]);
        assert_eq!(
            Descriptor::try_from(&cc),
            Ok(Descriptor::ContextCache(ContextCacheInv(
                ContextInvalidation::Device {
                    domain: DomainId(5),
                    source: SourceId(0x28),
                    function_mask: 1
                }
            )))
        );
        // qi_flush_iotlb PSI: did 7, addr 0x12345000, am 2 (low bits of the page dropped), ih.
        let iotlb = desc([
            (7 << 16) | (1 << 7) | (3 << 4) | 0x2,
            0x1234_5000 | (1 << 6) | 2,
            0,
            0,
        ]);
        assert_eq!(
            IotlbInv::try_from(&iotlb),
            Ok(IotlbInv {
                inv: IotlbInvalidation::Page {
                    domain: DomainId(7),
                    addr: 0x1234_4000,
                    address_mask: 2,
                    ih: true
                },
                drain_reads: true,
                drain_writes: false,
            })
        );
        let global = IotlbInv::try_from(&desc([(1 << 4) | 0x2, 0, 0, 0])).unwrap();
        assert_eq!(global.inv, IotlbInvalidation::Global);
        let domain =
            ContextCacheInv::try_from(&desc([(9 << 16) | (2 << 4) | 0x1, 0, 0, 0])).unwrap();
        assert_eq!(domain.0, ContextInvalidation::Domain(DomainId(9)));
    }

    #[test]
    fn test_decode_device_tlb_descriptors() {
        // qi_desc_dev_iotlb: sid 0x28, qdep 0 (32), size bit with address encoding.
        let dev = DevTlbInv::try_from(&desc([(0x28 << 32) | 0x3, 0x1_7000 | 1, 0, 0])).unwrap();
        assert_eq!(dev.0.source, SourceId(0x28));
        assert_eq!(
            (dev.0.pasid, dev.0.size, dev.0.addr),
            (None, true, 0x1_7000)
        );
        // qi_desc_dev_iotlb_pasid: pasid 0x42, sid 0x28, qdep 8, G.
        let pdev = PasidDevTlbInv::try_from(&desc([
            (0x42 << 32) | (0x28 << 16) | (8 << 4) | 0x8,
            0x5000 | 1,
            0,
            0,
        ]))
        .unwrap();
        assert_eq!(pdev.0.pasid, Pasid::new(0x42));
        assert_eq!(
            (pdev.0.global, pdev.0.size, pdev.0.max_pending, pdev.0.addr),
            (true, false, 8, 0x5000)
        );
    }

    #[test]
    fn test_decode_wait_and_iec() {
        // qi_submit_sync's wait: QI_DONE (2), SW, status address.
        let wait =
            InvWait::try_from(&desc([(2 << 32) | (1 << 5) | 0x5, 0x7654_3214, 0, 0])).unwrap();
        assert!(wait.status_write && !wait.interrupt && !wait.fence && !wait.page_drain);
        assert_eq!((wait.status_data, wait.status_addr), (2, 0x7654_3214));
        let iec =
            IecInv::try_from(&desc([(0x10 << 32) | (2 << 27) | (1 << 4) | 0x4, 0, 0, 0])).unwrap();
        assert_eq!(iec.selective, Some((0x10, 2)));
        assert_eq!(
            IecInv::try_from(&desc([0x4, 0, 0, 0])).unwrap().selective,
            None
        );
    }

    #[test]
    fn test_decode_pasid_descriptors() {
        // qi_desc_piotlb PSI: did 3, pasid 0x10, addr 0x40_0000, am 9, no ih.
        let p = PasidIotlbInv::try_from(&desc([
            (0x10 << 32) | (3 << 16) | (3 << 4) | 0x6,
            0x40_0000 | 9,
            0,
            0,
        ]))
        .unwrap();
        assert_eq!(
            p.0,
            PasidIotlbInvalidation::Page {
                domain: DomainId(3),
                pasid: Pasid::new(0x10).unwrap(),
                addr: 0x40_0000,
                address_mask: 9,
                ih: false
            }
        );
        let all =
            PasidIotlbInv::try_from(&desc([(0x10 << 32) | (3 << 16) | (2 << 4) | 0x6, 0, 0, 0]))
                .unwrap();
        assert_eq!(
            all.0,
            PasidIotlbInvalidation::Pasid {
                domain: DomainId(3),
                pasid: Pasid::new(0x10).unwrap()
            }
        );
        let pc = |g: u64| {
            PasidCacheInv::try_from(&desc([(0x10 << 32) | (3 << 16) | (g << 4) | 0x7, 0, 0, 0]))
        };
        assert_eq!(
            pc(0).unwrap().0,
            PasidCacheInvalidation::Domain(DomainId(3))
        );
        assert_eq!(
            pc(1).unwrap().0,
            PasidCacheInvalidation::Pasid {
                domain: DomainId(3),
                pasid: Pasid::new(0x10).unwrap()
            }
        );
        assert_eq!(pc(3).unwrap().0, PasidCacheInvalidation::Global);
        assert_eq!(
            pc(2),
            Err(DescError::ReservedEncoding {
                field: "G",
                value: 2
            })
        );
    }

    #[test]
    fn test_decode_page_group_response_as_linux_sends_it() {
        // intel_iommu_page_response: pasid 0x33, rid 0x28, PP, code INVALID (1), grpid 0x1ff,
        // LPIG set (Linux before 6.18).
        let qw0 = (0x33 << 32) | (0x28 << 16) | (1 << 12) | (1 << 4) | 0x9;
        let resp = PageGroupResp::try_from(&desc([qw0, (0x1ff << 3) | (1 << 2), 0, 0])).unwrap();
        assert_eq!(
            resp.0,
            PageGroupResponse {
                source: SourceId(0x28),
                pasid: Pasid::new(0x33),
                prg_index: 0x1ff,
                code: PageResponseCode::InvalidRequest,
                private_data: None,
            }
        );
        let with_data = PageGroupResp::try_from(&desc([qw0 | (1 << 5), 0, 0xaa, 0xbb])).unwrap();
        assert_eq!(with_data.0.private_data, Some([0xaa, 0xbb]));
        assert_eq!(
            PageGroupResp::try_from(&desc([qw0, 0, 0xaa, 0])),
            Err(DescError::ReservedBits {
                qword: 2,
                bits: 0xaa
            }),
            "private data without PDP"
        );
        assert_eq!(
            PageGroupResp::try_from(&desc([qw0 & !(0xf << 12) | (5 << 12), 0, 0, 0])),
            Err(DescError::ReservedEncoding {
                field: "RC",
                value: 5
            })
        );
    }

    #[test]
    fn test_every_type_rejects_each_reserved_bit() {
        let valid: [[u64; 4]; 9] = [
            [(1 << 4) | 0x1, 0, 0, 0],
            [(1 << 4) | 0x2, 0, 0, 0],
            [0x3, 0, 0, 0],
            [0x4, 0, 0, 0],
            [0x5, 0, 0, 0],
            [(2 << 4) | 0x6, 0, 0, 0],
            [0x7, 0, 0, 0],
            [0x8, 0, 0, 0],
            [0x9, 0, 0, 0],
        ];
        for qw in valid {
            let base = desc(qw);
            let kind = base.kind().unwrap();
            assert!(Descriptor::try_from(&base).is_ok(), "{kind:?}");
            for (qword, mask) in kind.reserved().iter().enumerate() {
                for bit in (0..64).filter(|b| mask & (1 << b) != 0) {
                    let mut bad = base;
                    bad.0[qword] |= 1 << bit;
                    let err = Descriptor::try_from(&bad).unwrap_err();
                    assert_eq!(
                        err,
                        DescError::ReservedBits {
                            qword,
                            bits: 1 << bit
                        },
                        "{kind:?} qw{qword} bit {bit}"
                    );
                }
            }
        }
    }

    #[test]
    fn test_reserved_granularities_and_wrong_types() {
        assert_eq!(
            Descriptor::try_from(&desc([0x1, 0, 0, 0])),
            Err(DescError::ReservedEncoding {
                field: "G",
                value: 0
            })
        );
        assert_eq!(
            Descriptor::try_from(&desc([0x2, 0, 0, 0])),
            Err(DescError::ReservedEncoding {
                field: "G",
                value: 0
            })
        );
        for g in [0, 1] {
            assert_eq!(
                Descriptor::try_from(&desc([(g << 4) | 0x6, 0, 0, 0])),
                Err(DescError::ReservedEncoding {
                    field: "G",
                    value: g as u8
                })
            );
        }
        assert_eq!(
            IotlbInv::try_from(&desc([(1 << 4) | 0x1, 0, 0, 0])),
            Err(DescError::WrongType {
                expected: DescKind::Iotlb,
                found: DescKind::ContextCache
            })
        );
    }

    #[test]
    fn test_masked_page_addr_never_overflows() {
        assert_eq!(masked_page_addr(0x12345, 0), 0x1234_5000);
        assert_eq!(masked_page_addr(0x12345, 4), 0x1234_0000);
        assert_eq!(masked_page_addr((1 << 52) - 1, 63), 0);
    }
}
