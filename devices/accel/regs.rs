//! accel BAR0 register map (devices/accel/README.md is the guide for driver writers).

use bitfield_struct::bitfield;

/// `ID` register value ("AVSV" in little-endian memory order).
pub const ACCEL_ID: u32 = 0x5653_5641;
/// `VERSION`: major 1, minor 0.
pub const ACCEL_VERSION: u32 = 0x0001_0000;
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
}

/// CAP bits.
#[bitfield(u32)]
pub struct Cap {
    /// The plain (guest-physical) copy engine exists.
    pub plain_dma: bool,
    #[bits(31)]
    __: u32,
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
