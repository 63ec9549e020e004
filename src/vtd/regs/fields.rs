//! Field layouts of the remapping unit's registers, one bitfield per register, and the masks
//! the register table derives from them. VT-d spec 11.4 (register descriptions).

use bitfield_struct::bitfield;

/// VER_REG: architecture version (11.4.1).
#[bitfield(u32)]
#[derive(PartialEq, Eq)]
pub struct Ver {
    /// MIN: minor version.
    #[bits(4)]
    pub min: u8,
    /// MAX: major version.
    #[bits(4)]
    pub max: u8,
    #[bits(24)]
    __: u32,
}

/// GCMD_REG: global command (11.4.4). Persistent bits (TE, EAFL, QIE, IRE, CFI) give the
/// wanted state; one-shot bits (SRTP, SFL, WBF, SIRTP) request an action when written as 1.
#[bitfield(u32)]
#[derive(PartialEq, Eq)]
pub struct Gcmd {
    #[bits(23)]
    __: u32,
    /// CFI: Compatibility Format Interrupt (bit 23).
    pub cfi: bool,
    /// SIRTP: Set Interrupt Remap Table Pointer (bit 24, one-shot).
    pub sirtp: bool,
    /// IRE: Interrupt Remapping Enable (bit 25).
    pub ire: bool,
    /// QIE: Queued Invalidation Enable (bit 26).
    pub qie: bool,
    /// WBF: Write Buffer Flush (bit 27, one-shot).
    pub wbf: bool,
    /// EAFL: Enable Advanced Fault Logging (bit 28).
    pub eafl: bool,
    /// SFL: Set Fault Log (bit 29, one-shot).
    pub sfl: bool,
    /// SRTP: Set Root Table Pointer (bit 30, one-shot).
    pub srtp: bool,
    /// TE: Translation Enable (bit 31).
    pub te: bool,
}

/// GSTS_REG: global status, one status bit per GCMD bit (11.4.5).
#[bitfield(u32)]
#[derive(PartialEq, Eq)]
pub struct Gsts {
    #[bits(23)]
    __: u32,
    /// CFIS: Compatibility Format Interrupt Status (bit 23).
    pub cfis: bool,
    /// IRTPS: Interrupt Remapping Table Pointer Status (bit 24).
    pub irtps: bool,
    /// IRES: Interrupt Remapping Enable Status (bit 25).
    pub ires: bool,
    /// QIES: Queued Invalidation Enable Status (bit 26).
    pub qies: bool,
    /// WBFS: Write Buffer Flush Status (bit 27).
    pub wbfs: bool,
    /// AFLS: Advanced Fault Logging Status (bit 28).
    pub afls: bool,
    /// FLS: Fault Log Status (bit 29).
    pub fls: bool,
    /// RTPS: Root Table Pointer Status (bit 30).
    pub rtps: bool,
    /// TES: Translation Enable Status (bit 31).
    pub tes: bool,
}

/// RTADDR_REG.TTM: translation table mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum TranslationTableMode {
    /// 00b: legacy root and context entries.
    Legacy = 0,
    /// 01b: scalable-mode root and context entries.
    Scalable = 1,
    /// 10b: reserved.
    Reserved = 2,
    /// 11b: abort-DMA mode (not supported by this model).
    AbortDma = 3,
}

impl TranslationTableMode {
    const fn into_bits(self) -> u8 {
        self as u8
    }

    const fn from_bits(bits: u8) -> Self {
        match bits & 3 {
            0 => Self::Legacy,
            1 => Self::Scalable,
            2 => Self::Reserved,
            _ => Self::AbortDma,
        }
    }
}

/// RTADDR_REG: root table address (11.4.6).
#[bitfield(u64)]
#[derive(PartialEq, Eq)]
pub struct RtAddr {
    #[bits(10)]
    __: u16,
    /// TTM: Translation Table Mode (bits 11:10).
    #[bits(2)]
    pub ttm: TranslationTableMode,
    /// RTA: Root Table Address, 4 KiB page number (bits 63:12).
    #[bits(52)]
    pub rta: u64,
}

impl RtAddr {
    /// The root table's guest-physical address.
    pub const fn addr(self) -> u64 {
        self.rta() << Self::RTA_OFFSET
    }
}

/// A 2-bit context-cache invalidation granularity: CCMD.CIRG/CAIG and the context-cache
/// invalidate descriptor's G field share this encoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ContextGranularity {
    /// 00b: reserved (as CAIG: the request was not performed).
    Reserved = 0,
    /// 01b: global.
    Global = 1,
    /// 10b: domain-selective.
    Domain = 2,
    /// 11b: device-selective.
    Device = 3,
}

impl ContextGranularity {
    /// Encodes the field.
    pub const fn into_bits(self) -> u8 {
        self as u8
    }

    /// Decodes the field (every 2-bit value has a meaning).
    pub const fn from_bits(bits: u8) -> Self {
        match bits & 3 {
            1 => Self::Global,
            2 => Self::Domain,
            3 => Self::Device,
            _ => Self::Reserved,
        }
    }
}

/// A 2-bit IOTLB invalidation granularity: IOTLB_REG.IIRG/IAIG and the IOTLB invalidate
/// descriptor's G field share this encoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum IotlbGranularity {
    /// 00b: reserved (as IAIG: the request was not performed).
    Reserved = 0,
    /// 01b: global.
    Global = 1,
    /// 10b: domain-selective (DSI).
    Domain = 2,
    /// 11b: page-selective within a domain (PSI).
    Page = 3,
}

impl IotlbGranularity {
    /// Encodes the field.
    pub const fn into_bits(self) -> u8 {
        self as u8
    }

    /// Decodes the field (every 2-bit value has a meaning).
    pub const fn from_bits(bits: u8) -> Self {
        match bits & 3 {
            1 => Self::Global,
            2 => Self::Domain,
            3 => Self::Page,
            _ => Self::Reserved,
        }
    }
}

/// CCMD_REG: context command (11.4.7).
#[bitfield(u64)]
#[derive(PartialEq, Eq)]
pub struct Ccmd {
    /// DID: Domain-ID (bits 15:0).
    pub did: u16,
    /// SID: Source-ID (bits 31:16).
    pub sid: u16,
    /// FM: Function Mask (bits 33:32, write-only).
    #[bits(2)]
    pub fm: u8,
    #[bits(25)]
    __: u32,
    /// CAIG: Context Actual Invalidation Granularity (bits 60:59, read-only).
    #[bits(2)]
    pub caig: ContextGranularity,
    /// CIRG: Context Invalidation Request Granularity (bits 62:61).
    #[bits(2)]
    pub cirg: ContextGranularity,
    /// ICC: Invalidate Context-Cache (bit 63); hardware clears it when done.
    pub icc: bool,
}

/// FSTS_REG: fault status (11.4).
#[bitfield(u32)]
#[derive(PartialEq, Eq)]
pub struct Fsts {
    /// PFO: Primary Fault Overflow (bit 0, RW1C).
    pub pfo: bool,
    /// PPF: Primary Pending Fault (bit 1, read-only: set while any FRCD has F set).
    pub ppf: bool,
    /// AFO: Advanced Fault Overflow (bit 2; no advanced fault logging here).
    pub afo: bool,
    /// APF: Advanced Pending Fault (bit 3; no advanced fault logging here).
    pub apf: bool,
    /// IQE: Invalidation Queue Error (bit 4, RW1C).
    pub iqe: bool,
    /// ICE: Invalidation Completion Error (bit 5, RW1C).
    pub ice: bool,
    /// ITE: Invalidation Time-out Error (bit 6, RW1C).
    pub ite: bool,
    #[bits(1)]
    __: u8,
    /// FRI: Fault Record Index of the first pending fault (bits 15:8).
    pub fri: u8,
    #[bits(16)]
    __: u16,
}

impl Fsts {
    /// The status fields whose being set makes a new fault event "not a new interrupt
    /// condition" (11.4, FECTL_REG.IP).
    pub const fn any_status(self) -> bool {
        self.pfo() || self.ppf() || self.iqe() || self.ice() || self.ite()
    }
}

/// FECTL_REG / IECTL_REG / PECTL_REG: an event control register (11.4; PECTL is
/// 11.4.11.5): interrupt mask and pending.
#[bitfield(u32)]
#[derive(PartialEq, Eq)]
pub struct EventControl {
    #[bits(30)]
    __: u32,
    /// IP: Interrupt Pending (bit 30, read-only).
    pub ip: bool,
    /// IM: Interrupt Mask (bit 31).
    pub im: bool,
}

/// FEDATA_REG / IEDATA_REG / PEDATA_REG: interrupt message data.
#[bitfield(u32)]
#[derive(PartialEq, Eq)]
pub struct EventData {
    /// IMD: Interrupt Message Data (bits 15:0).
    pub imd: u16,
    /// EIMD: Extended Interrupt Message Data (bits 31:16; RsvdZ without ECAP.EIM).
    pub eimd: u16,
}

/// FEADDR_REG / IEADDR_REG / PEADDR_REG: interrupt message address.
#[bitfield(u32)]
#[derive(PartialEq, Eq)]
pub struct EventAddr {
    #[bits(2)]
    __: u8,
    /// MA: Message Address (bits 31:2).
    #[bits(30)]
    pub ma: u32,
}

/// IVA_REG: invalidate address for page-selective IOTLB invalidation (11.4.8.2).
#[bitfield(u64)]
#[derive(PartialEq, Eq)]
pub struct Iva {
    /// AM: Address Mask (bits 5:0): the range covers 2^AM pages.
    #[bits(6)]
    pub am: u8,
    /// IH: Invalidation Hint (bit 6): only leaf entries changed.
    pub ih: bool,
    #[bits(5)]
    __: u8,
    /// ADDR: page number (bits 63:12).
    #[bits(52)]
    pub addr: u64,
}

/// IOTLB_REG: IOTLB invalidate (11.4.8.1).
#[bitfield(u64)]
#[derive(PartialEq, Eq)]
pub struct IotlbReg {
    #[bits(32)]
    __: u32,
    /// DID: Domain-ID (bits 47:32).
    pub did: u16,
    /// DW: Drain Writes (bit 48).
    pub dw: bool,
    /// DR: Drain Reads (bit 49).
    pub dr: bool,
    #[bits(7)]
    __: u8,
    /// IAIG: IOTLB Actual Invalidation Granularity (bits 58:57, read-only).
    #[bits(2)]
    pub iaig: IotlbGranularity,
    #[bits(1)]
    __: u8,
    /// IIRG: IOTLB Invalidation Request Granularity (bits 61:60).
    #[bits(2)]
    pub iirg: IotlbGranularity,
    #[bits(1)]
    __: u8,
    /// IVT: Invalidate IOTLB (bit 63); hardware clears it when done.
    pub ivt: bool,
}

/// FRCD_REG: one fault recording register, 128 bits (11.4).
#[bitfield(u128)]
#[derive(PartialEq, Eq)]
pub struct Frcd {
    #[bits(12)]
    __: u16,
    /// FI: Fault Info, page number of the faulting address (bits 63:12).
    #[bits(52)]
    pub fi: u64,
    /// SID: Source Identifier (bits 79:64).
    pub sid: u16,
    #[bits(13)]
    __: u16,
    /// PRIV: Privilege Mode Requested (bit 93).
    pub privileged: bool,
    /// EXE: Execute Permission Requested (bit 94).
    pub exe: bool,
    /// PP: PASID Present (bit 95).
    pub pp: bool,
    /// FR: Fault Reason (bits 103:96).
    pub fr: u8,
    /// PV: PASID Value (bits 123:104).
    #[bits(20)]
    pub pv: u32,
    /// AT: Address Type (bits 125:124): 00b untranslated request.
    #[bits(2)]
    pub at: u8,
    /// T: Type (bit 126): 0 write request, 1 read request.
    pub t: bool,
    /// F: Fault (bit 127, RW1C): the record is valid.
    pub f: bool,
}

/// IQH_REG / IQT_REG: an invalidation queue offset (11.4).
#[bitfield(u64)]
#[derive(PartialEq, Eq)]
pub struct IqOffset {
    #[bits(4)]
    __: u8,
    /// QH / QT: offset in 128-bit units (bits 18:4); bit 4 must be 0 with 256-bit descriptors.
    #[bits(15)]
    pub index: u16,
    #[bits(45)]
    __: u64,
}

impl IqOffset {
    /// Byte offset in the queue.
    pub const fn bytes(self) -> u64 {
        (self.index() as u64) << Self::INDEX_OFFSET
    }

    /// From a byte offset (the low 4 bits are dropped).
    pub const fn from_bytes(bytes: u64) -> Self {
        Self::new()
            .with_index(((bytes >> Self::INDEX_OFFSET) & ((1 << Self::INDEX_BITS) - 1)) as u16)
    }
}

/// IQA_REG: invalidation queue address (11.4).
#[bitfield(u64)]
#[derive(PartialEq, Eq)]
pub struct Iqa {
    /// QS: Queue Size (bits 2:0): 2^QS 4 KiB pages.
    #[bits(3)]
    pub qs: u8,
    #[bits(8)]
    __: u8,
    /// DW: Descriptor Width (bit 11): 0 for 128-bit, 1 for 256-bit descriptors.
    pub dw: bool,
    /// IQA: queue base page number (bits 63:12).
    #[bits(52)]
    pub iqa: u64,
}

impl Iqa {
    /// The queue's guest-physical base address.
    pub const fn base(self) -> u64 {
        self.iqa() << Self::IQA_OFFSET
    }
}

/// ICS_REG: invalidation completion status (11.4).
#[bitfield(u32)]
#[derive(PartialEq, Eq)]
pub struct Ics {
    /// IWC: Invalidation Wait Descriptor Complete (bit 0, RW1C).
    pub iwc: bool,
    #[bits(31)]
    __: u32,
}

/// IQERCD_REG: invalidation queue error record (11.4).
#[bitfield(u64)]
#[derive(PartialEq, Eq)]
pub struct Iqercd {
    /// IQEI: Invalidation Queue Error Info (bits 3:0), valid while FSTS.IQE is set.
    #[bits(4)]
    pub iqei: u8,
    #[bits(28)]
    __: u32,
    /// ITESID: Invalidation Time-out Error Source-ID (bits 47:32).
    pub itesid: u16,
    /// ICESID: Invalidation Completion Error Source-ID (bits 63:48).
    pub icesid: u16,
}

/// PQH_REG / PQT_REG: a page request queue offset (11.4.11.1, 11.4.11.2).
#[bitfield(u64)]
#[derive(PartialEq, Eq)]
pub struct PqOffset {
    #[bits(5)]
    __: u8,
    /// PQH / PQT: offset in 256-bit units (bits 18:5).
    #[bits(14)]
    pub index: u16,
    #[bits(45)]
    __: u64,
}

impl PqOffset {
    /// Byte offset in the queue.
    pub const fn bytes(self) -> u64 {
        (self.index() as u64) << Self::INDEX_OFFSET
    }

    /// From a byte offset (the low 5 bits are dropped).
    pub const fn from_bytes(bytes: u64) -> Self {
        Self::new()
            .with_index(((bytes >> Self::INDEX_OFFSET) & ((1 << Self::INDEX_BITS) - 1)) as u16)
    }
}

/// PQA_REG: page request queue address (11.4.11.3).
#[bitfield(u64)]
#[derive(PartialEq, Eq)]
pub struct Pqa {
    /// PQS: Page Queue Size (bits 2:0): 2^PQS 4 KiB pages, 2^(PQS + 7) entries.
    #[bits(3)]
    pub pqs: u8,
    #[bits(9)]
    __: u16,
    /// PQA: queue base page number (bits 63:12).
    #[bits(52)]
    pub pqa: u64,
}

impl Pqa {
    /// The queue's guest-physical base address.
    pub const fn base(self) -> u64 {
        self.pqa() << Self::PQA_OFFSET
    }
}

/// PRS_REG: page request status (11.4.11.4).
#[bitfield(u32)]
#[derive(PartialEq, Eq)]
pub struct Prs {
    /// PPR: Pending Page Request (bit 0, RW1C).
    pub ppr: bool,
    /// PRO: Page Request Overflow (bit 1, RW1C).
    pub pro: bool,
    #[bits(30)]
    __: u32,
}

/// The version reported: 1.0. Linux does not gate features on it (it reads CAP/ECAP), QEMU
/// reports the same, and a stock 6.12 guest was verified to run scalable mode with it.
pub const VERSION: Ver = Ver::new().with_max(1).with_min(0);

/// VER_REG's value.
pub(super) const VER_RESET: u64 = VERSION.into_bits() as u64;
/// Masks the register table uses, built from the fields rather than typed as numbers.
pub(super) const ALL32: u64 = u32::MAX as u64;
pub(super) const GCMD_BITS: u64 = Gcmd::new()
    .with_te(true)
    .with_srtp(true)
    .with_sfl(true)
    .with_eafl(true)
    .with_wbf(true)
    .with_qie(true)
    .with_ire(true)
    .with_sirtp(true)
    .with_cfi(true)
    .into_bits() as u64;
pub(super) const RTADDR_RW: u64 = RtAddr::new()
    .with_rta((1 << RtAddr::RTA_BITS) - 1)
    .with_ttm(TranslationTableMode::AbortDma)
    .into_bits();
pub(super) const CCMD_RW: u64 = Ccmd::new()
    .with_icc(true)
    .with_cirg(ContextGranularity::Device)
    .with_fm(3)
    .with_sid(u16::MAX)
    .with_did(u16::MAX)
    .into_bits();
pub(super) const CCMD_WO: u64 = Ccmd::new().with_fm(3).into_bits();
pub(super) const FSTS_W1C: u64 = Fsts::new()
    .with_pfo(true)
    .with_iqe(true)
    .with_ice(true)
    .with_ite(true)
    .into_bits() as u64;
pub(super) const EVENT_IM: u64 = EventControl::new().with_im(true).into_bits() as u64;
pub(super) const EVENT_DATA_RW: u64 = EventData::new().with_imd(u16::MAX).into_bits() as u64;
pub(super) const EVENT_ADDR_RW: u64 = EventAddr::new()
    .with_ma((1 << EventAddr::MA_BITS) - 1)
    .into_bits() as u64;
pub(super) const IQT_RW: u64 = IqOffset::new()
    .with_index((1 << IqOffset::INDEX_BITS) - 1)
    .into_bits();
pub(super) const IQA_RW: u64 = Iqa::new()
    .with_iqa((1 << Iqa::IQA_BITS) - 1)
    .with_dw(true)
    .with_qs((1 << Iqa::QS_BITS) - 1)
    .into_bits();
pub(super) const ICS_W1C: u64 = Ics::new().with_iwc(true).into_bits() as u64;
pub(super) const PQ_OFFSET_RW: u64 = PqOffset::new()
    .with_index((1 << PqOffset::INDEX_BITS) - 1)
    .into_bits();
pub(super) const PQA_RW: u64 = Pqa::new()
    .with_pqa((1 << Pqa::PQA_BITS) - 1)
    .with_pqs((1 << Pqa::PQS_BITS) - 1)
    .into_bits();
pub(super) const PRS_W1C: u64 = Prs::new().with_ppr(true).with_pro(true).into_bits() as u64;
pub(super) const IVA_RW: u64 = Iva::new()
    .with_addr((1 << Iva::ADDR_BITS) - 1)
    .with_ih(true)
    .with_am((1 << Iva::AM_BITS) - 1)
    .into_bits();
pub(super) const IOTLB_RW: u64 = IotlbReg::new()
    .with_ivt(true)
    .with_iirg(IotlbGranularity::Page)
    .with_dr(true)
    .with_dw(true)
    .with_did(u16::MAX)
    .into_bits();
/// FRCD upper half: only F is writable (RW1C).
pub(super) const FRCD_HI_W1C: u64 = (Frcd::new().with_f(true).into_bits() >> u64::BITS) as u64;
