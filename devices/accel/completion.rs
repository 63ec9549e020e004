//! accel completion records: the 32-byte status block a descriptor asks the device to write
//! (through translation, in the descriptor's address space) when it finishes, and the status
//! codes it and the SWERR register share. Layout: devices/accel/README.md, "Completion record".

use bitfield_struct::bitfield;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Size and required alignment of a completion record.
pub const COMPLETION_SIZE: u64 = 32;

/// Completion status codes. Codes below [`Status::FIRST_ERROR`] are outcomes of a well-formed
/// descriptor; the others are errors, and also raise the error interrupt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Status {
    /// 0x00: not written yet (drivers zero the record before submitting).
    None = 0x00,
    /// 0x01: done (COMPARE: see the result).
    Success = 0x01,
    /// 0x02: a page fault ended the operation: in report-fault mode, or the page request was
    /// answered Invalid Request (or went unanswered too often). FAULT_ADDR and
    /// BYTES_COMPLETED say where.
    PageFault = 0x02,
    /// 0x03: stopped by a PASID disable or a work queue disable.
    Aborted = 0x03,
    /// 0x04: a BATCH ran, and at least one of its descriptors did not succeed.
    BatchFail = 0x04,
    /// 0x10: unknown opcode.
    BadOpcode = 0x10,
    /// 0x11: a reserved flag or field is non-zero.
    BadFlags = 0x11,
    /// 0x12: transfer size 0 or above MAX_XFER.
    BadSize = 0x12,
    /// 0x13: BATCH count 0 or above MAX_BATCH, or its list not 64-byte aligned.
    BadBatch = 0x13,
    /// 0x14: a BATCH inside a BATCH.
    NestedBatch = 0x14,
    /// 0x15: a PASID the device cannot use: no SVM, PASID Enable clear, or above 20 bits.
    BadPasid = 0x15,
    /// 0x16: the PASID is not enabled (PASID_CTL).
    PasidDisabled = 0x16,
    /// 0x17: the completion record address is not 32-byte aligned.
    BadCompletionAddr = 0x17,
    /// 0x18: the completion record could not be written.
    CompletionFault = 0x18,
    /// 0x19: the descriptor could not be read from the ring.
    RingReadFault = 0x19,
    /// 0x1a: a TAIL write beyond WQ_SIZE, or to a disabled queue.
    BadTail = 0x1a,
    /// 0x1b: the privileged bit without PASID, or with Privileged Mode Enable clear.
    BadPrivilege = 0x1b,
    /// 0x1c: a page fault needed a page request, and PRI is disabled or stopped.
    PriUnavailable = 0x1c,
    /// 0x1d: the IOMMU refused the translation for good (unbound PASID, bad tables).
    TranslationError = 0x1d,
    /// 0x1e: bus mastering is off, or a translated address is not guest memory.
    DmaError = 0x1e,
    /// 0x1f: WQ_CTRL.ENABLE with a bad WQ_SIZE or WQ_BASE.
    BadWqConfig = 0x1f,
}

impl Status {
    /// The first error code.
    pub const FIRST_ERROR: u8 = 0x10;

    /// Whether this status reports an error (and raises the error interrupt).
    pub const fn is_error(self) -> bool {
        self as u8 >= Self::FIRST_ERROR
    }

    /// The code as written to memory.
    pub const fn code(self) -> u8 {
        self as u8
    }

    /// Decodes a code (driver side and tests).
    pub const fn from_code(code: u8) -> Option<Self> {
        use Status::*;
        const ALL: [Status; 21] = [
            None,
            Success,
            PageFault,
            Aborted,
            BatchFail,
            BadOpcode,
            BadFlags,
            BadSize,
            BadBatch,
            NestedBatch,
            BadPasid,
            PasidDisabled,
            BadCompletionAddr,
            CompletionFault,
            RingReadFault,
            BadTail,
            BadPrivilege,
            PriUnavailable,
            TranslationError,
            DmaError,
            BadWqConfig,
        ];
        let mut i = 0;
        while i < ALL.len() {
            if ALL[i] as u8 == code {
                return Some(ALL[i]);
            }
            i += 1;
        }
        Option::None
    }
}

/// FAULT_INFO byte of a completion record.
#[bitfield(u8)]
#[derive(PartialEq, Eq)]
pub struct FaultInfo {
    /// WRITE (bit 0): the faulting access was a write (else a read).
    pub write: bool,
    /// BACKWARD (bit 1): MEMMOVE ran from the end (overlapping ranges, dst above src), so
    /// BYTES_COMPLETED counts bytes at the end of the buffers.
    pub backward: bool,
    #[bits(6)]
    __: u8,
}

/// A completion record as it lies in memory (little endian, 32-byte aligned).
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct CompletionRecord {
    /// 0x00: [`Status`] code; the device writes it last.
    pub status: u8,
    /// 0x01: [`FaultInfo`].
    pub fault_info: u8,
    /// 0x02: reserved (0).
    pub reserved0: u16,
    /// 0x04: bytes processed (BATCH: descriptors processed; COMPARE with a difference: offset
    /// of the first differing byte).
    pub bytes_completed: u32,
    /// 0x08: the faulting address (page faults, translation and DMA errors).
    pub fault_addr: u64,
    /// 0x10: COMPARE: 0 equal, 1 different. Otherwise 0.
    pub result: u64,
    /// 0x18: reserved (0).
    pub reserved1: u64,
}

const _: () = assert!(size_of::<CompletionRecord>() == COMPLETION_SIZE as usize);

impl CompletionRecord {
    /// The decoded status, if the code is known.
    pub fn status(&self) -> Option<Status> {
        Status::from_code(self.status)
    }

    /// The decoded fault info.
    pub fn fault_info(&self) -> FaultInfo {
        FaultInfo::from_bits(self.fault_info)
    }
}

/// How an operation ended, before it is written as a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Completion {
    /// The status.
    pub status: Status,
    /// Bytes (or descriptors) completed.
    pub bytes_completed: u32,
    /// Faulting address, if any.
    pub fault_addr: u64,
    /// Fault access and direction.
    pub fault_info: FaultInfo,
    /// Operation result.
    pub result: u64,
}

impl Completion {
    /// A completion with `status` and nothing else.
    pub const fn with_status(status: Status) -> Self {
        Completion {
            status,
            bytes_completed: 0,
            fault_addr: 0,
            fault_info: FaultInfo::new(),
            result: 0,
        }
    }

    /// The record to write.
    pub fn record(&self) -> CompletionRecord {
        CompletionRecord {
            status: self.status.code(),
            fault_info: self.fault_info.into_bits(),
            reserved0: 0,
            bytes_completed: self.bytes_completed,
            fault_addr: self.fault_addr,
            result: self.result,
            reserved1: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_status_codes_round_trip_and_classify() {
        for code in 0..=u8::MAX {
            if let Some(s) = Status::from_code(code) {
                assert_eq!(s.code(), code);
                assert_eq!(s.is_error(), code >= Status::FIRST_ERROR);
            }
        }
        assert_eq!(Status::from_code(0x05), None);
        assert!(!Status::PageFault.is_error());
        assert!(Status::BadOpcode.is_error());
    }

    #[test]
    fn test_record_layout_puts_fields_at_documented_offsets() {
        let c = Completion {
            status: Status::PageFault,
            bytes_completed: 0x1122_3344,
            fault_addr: 0x5566_7788_99aa_bbcc,
            fault_info: FaultInfo::new().with_write(true).with_backward(true),
            result: 1,
        };
        let bytes = c.record().as_bytes().to_vec();
        assert_eq!(bytes[0], 0x02);
        assert_eq!(bytes[1], 0b11);
        assert_eq!(bytes[4..8], 0x1122_3344u32.to_le_bytes());
        assert_eq!(bytes[8..16], 0x5566_7788_99aa_bbccu64.to_le_bytes());
        assert_eq!(bytes[16..24], 1u64.to_le_bytes());
        assert_eq!(bytes[24..32], [0; 8]);
    }
}
