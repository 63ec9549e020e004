//! accel work descriptors: the 64-byte job a driver writes into a work queue ring (or into a
//! BATCH list), and its decoding into an operation. Layout: devices/accel/README.md,
//! "Descriptor". Checks here need nothing but the descriptor; PASID and completion-record
//! checks need device state and live in the work queue engine.

use bitfield_struct::bitfield;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use super::completion::{Status, COMPLETION_SIZE};
use super::regs::{MAX_BATCH, MAX_XFER};

/// Size (and alignment in a ring or batch list) of a descriptor.
pub const DESCRIPTOR_SIZE: u64 = 64;

/// Operation codes (CONTROL bits 7:0).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Opcode {
    /// No memory access; completes (record, interrupt) in order.
    Nop = 0x00,
    /// Copy LEN bytes from SRC to DST; overlapping ranges are copied as memmove does.
    Memmove = 0x01,
    /// Fill LEN bytes at DST with the 8-byte PATTERN (byte i gets pattern byte i % 8).
    Fill = 0x02,
    /// Compare LEN bytes at SRC and DST; the result says whether they differ.
    Compare = 0x03,
    /// Run LEN descriptors from the 64-byte aligned list at SRC (same address space).
    Batch = 0x04,
}

impl Opcode {
    /// Decodes an opcode byte.
    pub const fn from_code(code: u8) -> Option<Self> {
        match code {
            0x00 => Some(Opcode::Nop),
            0x01 => Some(Opcode::Memmove),
            0x02 => Some(Opcode::Fill),
            0x03 => Some(Opcode::Compare),
            0x04 => Some(Opcode::Batch),
            _ => None,
        }
    }
}

/// CONTROL word of a descriptor (offset 0x00).
#[bitfield(u32)]
pub struct DescControl {
    /// OPCODE (bits 7:0): [`Opcode`].
    pub opcode: u8,
    /// CRAV (bit 8): Completion Record Address Valid — write a record at COMPLETION.
    pub completion_valid: bool,
    /// RCI (bit 9): Request Completion Interrupt — raise the queue's vector when done.
    pub request_interrupt: bool,
    /// PV (bit 10): PASID Valid — addresses are virtual addresses of PASID.
    pub pasid_valid: bool,
    /// PRIV (bit 11): privileged (supervisor) requests; needs PV.
    pub privileged: bool,
    /// Reserved (bits 31:12), must be 0.
    #[bits(20)]
    pub reserved: u32,
}

/// A descriptor as it lies in memory (little endian).
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct Descriptor {
    /// 0x00: [`DescControl`].
    pub control: u32,
    /// 0x04: PASID (bits 19:0; larger values are invalid). Ignored inside a BATCH.
    pub pasid: u32,
    /// 0x08: completion record address (32-byte aligned), when CRAV.
    pub completion: u64,
    /// 0x10: source (BATCH: the descriptor list).
    pub src: u64,
    /// 0x18: destination (COMPARE: the second source).
    pub dst: u64,
    /// 0x20: transfer size in bytes (BATCH: descriptor count).
    pub len: u32,
    /// 0x24: reserved, must be 0.
    pub reserved0: u32,
    /// 0x28: FILL pattern.
    pub pattern: u64,
    /// 0x30: reserved, must be 0.
    pub reserved1: [u64; 2],
}

const _: () = assert!(size_of::<Descriptor>() == DESCRIPTOR_SIZE as usize);

/// A decoded, well-formed operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    /// NOP.
    Nop,
    /// MEMMOVE.
    Memmove {
        /// Source.
        src: u64,
        /// Destination.
        dst: u64,
        /// Bytes.
        len: u32,
    },
    /// FILL.
    Fill {
        /// Destination.
        dst: u64,
        /// Bytes.
        len: u32,
        /// Pattern.
        pattern: u64,
    },
    /// COMPARE.
    Compare {
        /// First source.
        src: u64,
        /// Second source.
        dst: u64,
        /// Bytes.
        len: u32,
    },
    /// BATCH.
    Batch {
        /// Descriptor list.
        list: u64,
        /// Descriptors.
        count: u32,
    },
}

impl Descriptor {
    /// A descriptor of `opcode` with nothing else set.
    pub fn new(opcode: Opcode) -> Self {
        Descriptor {
            control: DescControl::new().with_opcode(opcode as u8).into_bits(),
            ..Default::default()
        }
    }

    /// NOP.
    pub fn nop() -> Self {
        Self::new(Opcode::Nop)
    }

    /// MEMMOVE of `len` bytes from `src` to `dst`.
    pub fn memmove(src: u64, dst: u64, len: u32) -> Self {
        Descriptor {
            src,
            dst,
            len,
            ..Self::new(Opcode::Memmove)
        }
    }

    /// FILL of `len` bytes at `dst` with `pattern`.
    pub fn fill(dst: u64, len: u32, pattern: u64) -> Self {
        Descriptor {
            dst,
            len,
            pattern,
            ..Self::new(Opcode::Fill)
        }
    }

    /// COMPARE of `len` bytes at `a` and `b`.
    pub fn compare(a: u64, b: u64, len: u32) -> Self {
        Descriptor {
            src: a,
            dst: b,
            len,
            ..Self::new(Opcode::Compare)
        }
    }

    /// BATCH of the `count` descriptors at `list`.
    pub fn batch(list: u64, count: u32) -> Self {
        Descriptor {
            src: list,
            len: count,
            ..Self::new(Opcode::Batch)
        }
    }

    /// The CONTROL word.
    pub fn control(&self) -> DescControl {
        DescControl::from_bits(self.control)
    }

    fn map_control(mut self, f: impl FnOnce(DescControl) -> DescControl) -> Self {
        self.control = f(self.control()).into_bits();
        self
    }

    /// Tags the descriptor with `pasid` (PV set).
    pub fn with_pasid(self, pasid: u32) -> Self {
        Descriptor {
            pasid,
            ..self.map_control(|c| c.with_pasid_valid(true))
        }
    }

    /// Sets PRIV.
    pub fn privileged(self) -> Self {
        self.map_control(|c| c.with_privileged(true))
    }

    /// Asks for a completion record at `addr` (CRAV set).
    pub fn with_completion(self, addr: u64) -> Self {
        Descriptor {
            completion: addr,
            ..self.map_control(|c| c.with_completion_valid(true))
        }
    }

    /// Asks for a completion interrupt (RCI set).
    pub fn with_interrupt(self) -> Self {
        self.map_control(|c| c.with_request_interrupt(true))
    }

    /// Whether the completion record address is usable (CRAV clear, or 32-byte aligned).
    pub fn completion_aligned(&self) -> bool {
        !self.control().completion_valid() || self.completion % COMPLETION_SIZE == 0
    }

    /// Decodes the operation, checking what needs no device state: reserved bits, opcode,
    /// sizes. The error is the status to complete with.
    pub fn operation(&self) -> Result<Operation, Status> {
        let control = self.control();
        if control.reserved() != 0 || self.reserved0 != 0 || self.reserved1 != [0; 2] {
            return Err(Status::BadFlags);
        }
        if control.privileged() && !control.pasid_valid() {
            return Err(Status::BadPrivilege);
        }
        let opcode = Opcode::from_code(control.opcode()).ok_or(Status::BadOpcode)?;
        let len = self.len;
        // Ranges must not wrap the address space (the engine adds offsets to them unchecked).
        let fits = |addr: u64| addr.checked_add(len.into()).is_some();
        let sized = |addrs: &[u64], op: Operation| {
            if len == 0 || len > MAX_XFER || !addrs.iter().all(|&a| fits(a)) {
                Err(Status::BadSize)
            } else {
                Ok(op)
            }
        };
        match opcode {
            Opcode::Nop => Ok(Operation::Nop),
            Opcode::Memmove => sized(
                &[self.src, self.dst],
                Operation::Memmove {
                    src: self.src,
                    dst: self.dst,
                    len,
                },
            ),
            Opcode::Fill => sized(
                &[self.dst],
                Operation::Fill {
                    dst: self.dst,
                    len,
                    pattern: self.pattern,
                },
            ),
            Opcode::Compare => sized(
                &[self.src, self.dst],
                Operation::Compare {
                    src: self.src,
                    dst: self.dst,
                    len,
                },
            ),
            Opcode::Batch
                if len == 0
                    || len > MAX_BATCH
                    || self.src % DESCRIPTOR_SIZE != 0
                    || self
                        .src
                        .checked_add(u64::from(len) * DESCRIPTOR_SIZE)
                        .is_none() =>
            {
                Err(Status::BadBatch)
            }
            Opcode::Batch => Ok(Operation::Batch {
                list: self.src,
                count: len,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_builders_decode_to_their_operation() {
        assert_eq!(Descriptor::nop().operation(), Ok(Operation::Nop));
        assert_eq!(
            Descriptor::memmove(1, 2, 3).operation(),
            Ok(Operation::Memmove {
                src: 1,
                dst: 2,
                len: 3
            })
        );
        assert_eq!(
            Descriptor::fill(8, 16, 0xab).with_pasid(5).operation(),
            Ok(Operation::Fill {
                dst: 8,
                len: 16,
                pattern: 0xab
            })
        );
        assert_eq!(
            Descriptor::batch(0x1000, 4).operation(),
            Ok(Operation::Batch {
                list: 0x1000,
                count: 4
            })
        );
    }

    #[test]
    fn test_batch_of_max_batch_descriptors_is_taken_and_one_more_refused() {
        assert_eq!(
            Descriptor::batch(0x1000, MAX_BATCH).operation(),
            Ok(Operation::Batch {
                list: 0x1000,
                count: MAX_BATCH,
            })
        );
        assert_eq!(
            Descriptor::batch(0x1000, MAX_BATCH + 1).operation(),
            Err(Status::BadBatch)
        );
    }

    #[test]
    fn test_operation_bad_sizes_fail_with_size_status() {
        assert_eq!(
            Descriptor::memmove(0, 0, 0).operation(),
            Err(Status::BadSize)
        );
        assert_eq!(
            Descriptor::fill(0, MAX_XFER + 1, 0).operation(),
            Err(Status::BadSize)
        );
        assert_eq!(
            Descriptor::batch(0x1000, MAX_BATCH + 1).operation(),
            Err(Status::BadBatch)
        );
        assert_eq!(
            Descriptor::batch(0x1008, 1).operation(),
            Err(Status::BadBatch)
        );
        assert_eq!(
            Descriptor::memmove(u64::MAX - 8, 0, 16).operation(),
            Err(Status::BadSize)
        );
        assert!(Descriptor::fill(0, 16, 0)
            .with_completion(0)
            .operation()
            .is_ok());
    }

    #[test]
    fn test_operation_reserved_bits_and_opcodes_fail() {
        let mut d = Descriptor::nop();
        d.control |= 1 << 31;
        assert_eq!(d.operation(), Err(Status::BadFlags));
        let mut d = Descriptor::nop();
        d.reserved1[1] = 1;
        assert_eq!(d.operation(), Err(Status::BadFlags));
        let mut d = Descriptor::nop();
        d.control = DescControl::new().with_opcode(0x77).into_bits();
        assert_eq!(d.operation(), Err(Status::BadOpcode));
        assert_eq!(
            Descriptor::nop().privileged().operation(),
            Err(Status::BadPrivilege)
        );
    }

    #[test]
    fn test_completion_alignment_is_checked_only_with_crav() {
        let mut d = Descriptor::nop();
        d.completion = 0x1004;
        assert!(d.completion_aligned());
        assert!(!d.with_completion(0x1004).completion_aligned());
        assert!(Descriptor::nop()
            .with_completion(0x1020)
            .completion_aligned());
    }
}
