//! What the fuzz targets share: structured choices read from the fuzzer's bytes, and guest RAM
//! in a sealed memfd as QEMU's memfd backend gives it (vfio-user spec, "DMA_MAP").

pub mod accel_rig;
pub mod stream;
pub mod svm_guest;

use std::fs::File;

use libfuzzer_sys::arbitrary::Unstructured;
use vsvm::iommu::{Access, Pasid};
use vsvm::mem::GuestMemory;
use vsvm::vfio_user::DmaMapRequest;

/// Bytes per guest page.
pub const PAGE: u64 = 4096;

/// The fuzzer's bytes as a series of choices. Once they run out every choice is 0 (or
/// `false`), so a target's loop ends by checking [`Input::is_empty`].
pub struct Input<'a>(Unstructured<'a>);

impl<'a> Input<'a> {
    /// Choices read from `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Input(Unstructured::new(data))
    }

    /// Whether every byte was used.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The next byte.
    pub fn u8(&mut self) -> u8 {
        self.0.arbitrary().unwrap_or_default()
    }

    /// The next little-endian u16.
    pub fn u16(&mut self) -> u16 {
        self.0.arbitrary().unwrap_or_default()
    }

    /// The next little-endian u32.
    pub fn u32(&mut self) -> u32 {
        self.0.arbitrary().unwrap_or_default()
    }

    /// The next little-endian u64.
    pub fn u64(&mut self) -> u64 {
        self.0.arbitrary().unwrap_or_default()
    }

    /// A flag (one byte, odd = true).
    pub fn bool(&mut self) -> bool {
        self.u8() & 1 == 1
    }

    /// A value in `0..n` (`n` > 0), from as few bytes as `n` needs.
    pub fn below(&mut self, n: u64) -> u64 {
        self.0.int_in_range(0..=n - 1).unwrap_or_default()
    }

    /// Up to `max` bytes, as many as the next byte says.
    pub fn bytes(&mut self, max: usize) -> &'a [u8] {
        let len = (self.below(max as u64 + 1) as usize).min(self.0.len());
        self.0.bytes(len).unwrap_or_default()
    }

    /// A 64-bit word of guest memory or a register: raw, shaped like an entry pointing into
    /// the first `pages` pages of RAM (low flag bits kept, so tables point at each other), or
    /// small. Random raw words almost never point into RAM; these let the walk go deep.
    pub fn word(&mut self, pages: u64) -> u64 {
        match self.u8() % 4 {
            0 => self.u64(),
            1 | 2 => (self.below(pages) * PAGE) | u64::from(self.u16() & 0xfff),
            _ => u64::from(self.u16()),
        }
    }

    /// An address: inside the first `pages` pages, or anything.
    pub fn addr(&mut self, pages: u64) -> u64 {
        if self.bool() {
            self.below(pages * PAGE)
        } else {
            self.u64()
        }
    }

    /// An access kind (one byte of flags).
    pub fn access(&mut self) -> Access {
        let bits = self.u8();
        Access {
            read: bits & 1 != 0,
            write: bits & 2 != 0,
            exec: bits & 4 != 0,
            privileged: bits & 8 != 0,
        }
    }

    /// A PASID or none; small ones more often, so that entries get reused.
    pub fn pasid(&mut self) -> Option<Pasid> {
        match self.u8() % 4 {
            0 => None,
            1 => Pasid::new(u32::from(self.u8())),
            _ => Pasid::new(self.u32() & Pasid::MAX),
        }
    }
}

/// A zeroed memfd of `size` bytes, sealed against shrinking (the server maps no other kind).
pub fn sealed_memfd(size: u64) -> File {
    let file = unsealed_memfd(size);
    rustix::fs::fcntl_add_seals(&file, rustix::fs::SealFlags::SHRINK).expect("sealing a memfd");
    file
}

/// A zeroed memfd of `size` bytes that may still shrink.
pub fn unsealed_memfd(size: u64) -> File {
    let flags = rustix::fs::MemfdFlags::CLOEXEC | rustix::fs::MemfdFlags::ALLOW_SEALING;
    let file = File::from(rustix::fs::memfd_create("fuzz-ram", flags).expect("memfd_create"));
    file.set_len(size).expect("sizing a memfd");
    file
}

/// Guest memory with one read-write map of a fresh memfd of `size` bytes at GPA 0, and the
/// memfd (for a second view, as QEMU gives the same fd to every function).
pub fn guest_ram(size: u64) -> (File, GuestMemory) {
    let memfd = sealed_memfd(size);
    let mem = GuestMemory::new();
    let request = DmaMapRequest {
        address: 0,
        size,
        fd_offset: 0,
        readable: true,
        writable: true,
    };
    let fd = memfd.try_clone().expect("dup of a memfd");
    mem.map(&request, Some(fd.into()))
        .expect("mapping guest RAM");
    (memfd, mem)
}

/// VT-d registers with side effects or state (VT-d spec 11.4), for [`Input::vtd_offset`].
const VTD_REGISTERS: [u64; 22] = {
    use vsvm::vtd::regs::*;
    [
        DMAR_GCMD_REG,
        DMAR_RTADDR_REG,
        DMAR_CCMD_REG,
        DMAR_CCMD_REG + 4,
        DMAR_FSTS_REG,
        DMAR_FECTL_REG,
        DMAR_FEDATA_REG,
        DMAR_FEADDR_REG,
        DMAR_IQH_REG,
        DMAR_IQT_REG,
        DMAR_IQA_REG,
        DMAR_ICS_REG,
        DMAR_IECTL_REG,
        DMAR_PQH_REG,
        DMAR_PQT_REG,
        DMAR_PQA_REG,
        DMAR_PRS_REG,
        DMAR_PECTL_REG,
        DMAR_IVA_REG,
        DMAR_IOTLB_REG,
        DMAR_IOTLB_REG + 4,
        vsvm::vtd::cap::FRCD_OFFSET + 12,
    ]
};

impl Input<'_> {
    /// A VT-d register offset: a register with side effects, anywhere in a `window`-byte
    /// register window (holes, odd alignment), or anything at all.
    pub fn vtd_offset(&mut self, window: u64) -> u64 {
        match self.u8() % 4 {
            0 | 1 => VTD_REGISTERS[self.below(VTD_REGISTERS.len() as u64) as usize],
            2 => self.below(window + 16),
            _ => self.u64(),
        }
    }

    /// An MMIO access size: 4 or 8 mostly, sometimes anything below 16.
    pub fn mmio_size(&mut self) -> usize {
        match self.u8() % 4 {
            0 | 1 => 4,
            2 => 8,
            _ => self.below(16) as usize,
        }
    }
}
