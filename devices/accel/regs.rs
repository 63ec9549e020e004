//! accel BAR0 register map (devices/accel/README.md is the guide for driver writers): the plain
//! copy engine at 0x000-0x037 (unchanged since 1.0), then from 0x100 the SVM block — software
//! error record, error interrupt, per-PASID control, limits — and one register block per work
//! queue from 0x200.

use bitfield_struct::bitfield;

/// `ID` register value ("AVSV" in little-endian memory order).
pub const ACCEL_ID: u32 = 0x5653_5641;
/// `VERSION`: major 1 (the plain registers), minor 1 (work queues, SVM).
pub const ACCEL_VERSION: u32 = 0x0001_0001;
/// Largest DMA_LEN.
pub const DMA_MAX_LEN: u32 = 1 << 20;

/// Register offsets in BAR0.
pub mod offset {
    /// ID (RO u32).
    pub const ID: u64 = 0x000;
    /// VERSION (RO u32).
    pub const VERSION: u64 = 0x004;
    /// CAP (RO u32).
    pub const CAP: u64 = 0x008;
    /// DMA_SRC (RW u64).
    pub const DMA_SRC: u64 = 0x010;
    /// DMA_DST (RW u64).
    pub const DMA_DST: u64 = 0x018;
    /// DMA_LEN (RW u32).
    pub const DMA_LEN: u64 = 0x020;
    /// DMA_CMD (WO u32).
    pub const DMA_CMD: u64 = 0x024;
    /// DMA_STATUS (RO u32).
    pub const DMA_STATUS: u64 = 0x028;
    /// DMA_DONE (RO u32).
    pub const DMA_DONE: u64 = 0x02c;
    /// IRQ_RAISE (WO u32): raise the MSI-X vector written (latency measurements, driver tests).
    pub const IRQ_RAISE: u64 = 0x030;
    /// SCRATCH (RW u32): no side effect (a target for timing posted writes).
    pub const SCRATCH: u64 = 0x034;
    /// SWERR (RW1C u64): the software error record, [`super::Swerr`].
    pub const SWERR: u64 = 0x100;
    /// SWERR_ADDR (RO u64): the address the recorded error concerns.
    pub const SWERR_ADDR: u64 = 0x108;
    /// ERRCTL (RW u32): the error interrupt, [`super::ErrCtl`].
    pub const ERRCTL: u64 = 0x110;
    /// PASID_SEL (RW u32): the PASID that PASID_CTL reads and writes.
    pub const PASID_SEL: u64 = 0x118;
    /// PASID_CTL (RW u32): enable / disable (drain) the selected PASID, [`super::PasidCtl`].
    pub const PASID_CTL: u64 = 0x11c;
    /// MAX_XFER (RO u32): largest transfer size of a descriptor, in bytes.
    pub const MAX_XFER: u64 = 0x120;
    /// MAX_BATCH (RO u32): largest descriptor count of a BATCH.
    pub const MAX_BATCH: u64 = 0x124;
    /// MAX_WQ_SIZE (RO u32): largest work queue size, in descriptors.
    pub const MAX_WQ_SIZE: u64 = 0x128;
    /// First work queue register block.
    pub const WQ_BLOCKS: u64 = 0x200;
    /// Distance between work queue register blocks.
    pub const WQ_STRIDE: u64 = 0x40;
}

/// Register offsets inside a work queue's block (at `WQ_BLOCKS + n * WQ_STRIDE`).
pub mod wq_offset {
    /// WQ_BASE (RW u64): ring address, 64-byte aligned (low 6 bits read 0).
    pub const BASE: u64 = 0x00;
    /// WQ_SIZE (RW u32): ring size in descriptors, a power of two.
    pub const SIZE: u64 = 0x08;
    /// WQ_CTRL (RW u32): [`super::WqCtrl`].
    pub const CTRL: u64 = 0x0c;
    /// WQ_HEAD (RO u32): next slot the device reads.
    pub const HEAD: u64 = 0x10;
    /// WQ_TAIL (RW u32): the doorbell, one past the last slot submitted.
    pub const TAIL: u64 = 0x14;
    /// WQ_STATUS (RO u32): [`super::WqStatus`].
    pub const STATUS: u64 = 0x18;
    /// WQ_DONE (RO u32): descriptors completed since the queue was enabled (wraps).
    pub const DONE: u64 = 0x1c;
}

/// Number of work queues.
pub const WQ_COUNT: usize = 2;
/// Largest work queue size (descriptors).
pub const MAX_WQ_SIZE: u32 = 4096;
/// Smallest work queue size (one slot always stays empty).
pub const MIN_WQ_SIZE: u32 = 2;
/// Largest transfer of one descriptor (bytes).
pub const MAX_XFER: u32 = DMA_MAX_LEN;
/// Largest descriptor count of one BATCH.
pub const MAX_BATCH: u32 = 64;
/// Alignment of a work queue ring (one descriptor).
pub const WQ_BASE_ALIGN: u64 = 64;

/// CAP bits.
#[bitfield(u32)]
pub struct Cap {
    /// PLAIN_DMA (bit 0): the plain (guest-physical) copy engine exists.
    pub plain_dma: bool,
    /// WQ (bit 1): work queues exist (registers from 0x100).
    pub work_queues: bool,
    /// SVM (bit 2): descriptors may carry a PASID (the device sits behind an IOMMU).
    pub svm: bool,
    #[bits(5)]
    __: u8,
    /// WQ_COUNT (bits 11:8): number of work queues.
    #[bits(4)]
    pub wq_count: u8,
    #[bits(20)]
    __: u32,
}

/// SWERR (0x100): the first software error since it was last cleared — an error the device
/// could not report in a completion record. Writing 1 to VALID clears the record.
#[bitfield(u64)]
#[derive(PartialEq, Eq)]
pub struct Swerr {
    /// VALID (bit 0, RW1C): an error is recorded.
    pub valid: bool,
    /// OVERFLOW (bit 1): more errors happened while VALID was set (cleared with VALID).
    pub overflow: bool,
    /// BATCH (bit 2): the error concerns descriptor BATCH_INDEX of a batch.
    pub batch: bool,
    /// WQ_VALID (bit 3): WQ and DESC_INDEX are meaningful.
    pub wq_valid: bool,
    #[bits(4)]
    __: u8,
    /// CODE (bits 15:8): a completion status code ([`super::completion::Status`]).
    pub code: u8,
    /// WQ (bits 19:16): the work queue.
    #[bits(4)]
    pub wq: u8,
    #[bits(12)]
    __: u16,
    /// DESC_INDEX (bits 47:32): the ring slot of the descriptor.
    pub desc_index: u16,
    /// BATCH_INDEX (bits 63:48): the descriptor's index in its batch.
    pub batch_index: u16,
}

/// ERRCTL (0x110): the error interrupt.
#[bitfield(u32)]
#[derive(PartialEq, Eq)]
pub struct ErrCtl {
    /// IRQ_EN (bit 0): raise VECTOR on a software error and on every error completion.
    pub irq_enable: bool,
    #[bits(7)]
    __: u8,
    /// VECTOR (bits 10:8): MSI-X vector of the error interrupt.
    #[bits(3)]
    pub vector: u8,
    #[bits(21)]
    __: u32,
}

/// PASID_CTL (0x11C), for the PASID in PASID_SEL.
#[bitfield(u32)]
#[derive(PartialEq, Eq)]
pub struct PasidCtl {
    /// ENABLE (bit 0): descriptors of the PASID may run. Writing 0 to an enabled PASID starts
    /// its drain.
    pub enable: bool,
    #[bits(30)]
    __: u32,
    /// DRAINING (bit 31, RO): the drain started by a disable has not finished.
    pub draining: bool,
}

/// WQ_CTRL.
#[bitfield(u32)]
#[derive(PartialEq, Eq)]
pub struct WqCtrl {
    /// ENABLE (bit 0): 1 starts the queue (HEAD = TAIL = 0), 0 stops it (the descriptor
    /// in flight aborts, queued ones are dropped).
    pub enable: bool,
    /// BOF (bit 1): block on fault — a page fault waits for a PRI page response; when clear
    /// the descriptor completes with PAGE_FAULT.
    pub block_on_fault: bool,
    #[bits(6)]
    __: u8,
    /// VECTOR (bits 10:8): MSI-X vector of completion interrupts.
    #[bits(3)]
    pub vector: u8,
    #[bits(21)]
    __: u32,
}

/// WQ_STATUS.
#[bitfield(u32)]
#[derive(PartialEq, Eq)]
pub struct WqStatus {
    /// ENABLED (bit 0).
    pub enabled: bool,
    /// BUSY (bit 1): a descriptor is in flight (also after a disable, until it stopped).
    pub busy: bool,
    #[bits(6)]
    __: u8,
    /// ERROR (bits 15:8): why the last enable was refused (BAD_WQ_CONFIG), else 0.
    pub error: u8,
    #[bits(16)]
    __: u16,
}

/// DMA_CMD bits.
#[bitfield(u32)]
pub struct DmaCmd {
    /// Start a job with the programmed SRC/DST/LEN.
    pub start: bool,
    /// Raise MSI-X vector 0 when the job ends.
    pub irq: bool,
    #[bits(30)]
    __: u32,
}

/// Engine state, DMA_STATUS bits 1:0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum DmaState {
    /// No job since reset.
    Idle = 0,
    /// A job is running.
    Busy = 1,
    /// The last job completed.
    Done = 2,
    /// The last job failed; see the error code.
    Error = 3,
}

impl DmaState {
    const fn into_bits(self) -> u8 {
        self as u8
    }

    const fn from_bits(bits: u8) -> Self {
        match bits & 3 {
            0 => DmaState::Idle,
            1 => DmaState::Busy,
            2 => DmaState::Done,
            _ => DmaState::Error,
        }
    }
}

/// Job error codes, DMA_STATUS bits 15:8.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum DmaError {
    /// No error.
    None = 0,
    /// DMA_LEN is 0 or above [`DMA_MAX_LEN`].
    BadLen = 1,
    /// The source is not readable guest memory (or bus mastering is off).
    SrcFault = 2,
    /// The destination is not writable guest memory.
    DstFault = 3,
    /// Behind an IOMMU: the IOMMU refused to translate an IOVA of the source or destination
    /// (not mapped in the device's default domain, or not allowed). 4 is `BUSY` in the
    /// README's list, which no job reports.
    Translation = 5,
}

impl DmaError {
    const fn into_bits(self) -> u8 {
        self as u8
    }

    const fn from_bits(bits: u8) -> Self {
        match bits {
            0 => DmaError::None,
            1 => DmaError::BadLen,
            2 => DmaError::SrcFault,
            5 => DmaError::Translation,
            _ => DmaError::DstFault,
        }
    }
}

/// DMA_STATUS.
#[bitfield(u32)]
pub struct DmaStatus {
    /// Engine state.
    #[bits(2)]
    pub state: DmaState,
    #[bits(6)]
    __: u8,
    /// Error code of the last job.
    #[bits(8)]
    pub error: DmaError,
    #[bits(16)]
    __: u16,
}
