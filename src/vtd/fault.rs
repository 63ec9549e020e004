//! Fault reasons: the architected codes recorded in fault recording registers.
//! VT-d spec 7.1.3 (Table "Fault reasons"); names follow Linux dmar.c's fault reason strings.

use std::fmt;

/// A fault reason code (FR field of a fault record).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FaultReason {
    /// Present bit in root entry is clear.
    RootEntryNotPresent = 0x01,
    /// Present bit in context entry is clear.
    ContextEntryNotPresent = 0x02,
    /// Invalid context entry.
    ContextEntryInvalid = 0x03,
    /// Access beyond MGAW.
    AddressBeyondMgaw = 0x04,
    /// PTE write access is not set.
    WriteNotPermitted = 0x05,
    /// PTE read access is not set.
    ReadNotPermitted = 0x06,
    /// Next page table pointer is invalid.
    PagingEntryInvalid = 0x07,
    /// Root table address invalid.
    RootTableInvalid = 0x08,
    /// Context table pointer is invalid.
    ContextTableInvalid = 0x09,
    /// Non-zero reserved fields in root entry.
    RootEntryReserved = 0x0a,
    /// Non-zero reserved fields in context entry.
    ContextEntryReserved = 0x0b,
    /// Non-zero reserved fields in PTE.
    PagingEntryReserved = 0x0c,
    /// Context entry TT field is invalid.
    ContextEntryTranslationType = 0x0d,
}

impl FaultReason {
    /// The code as recorded.
    pub const fn code(self) -> u8 {
        self as u8
    }
}

impl fmt::Display for FaultReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} (0x{:02x})", self, self.code())
    }
}
