//! Guest RAM for tests: memfds sealed against shrinking, as QEMU's memfd backend makes them
//! (the server maps no other kind).
#![allow(dead_code)] // each test crate takes what it needs

use std::fs::File;

use vsvm::mem::GuestMemory;
use vsvm::vfio_user::DmaMapRequest;

/// A zeroed memfd of `size` bytes, sealed against shrinking.
pub fn sealed_memfd(size: u64) -> File {
    let flags = rustix::fs::MemfdFlags::CLOEXEC | rustix::fs::MemfdFlags::ALLOW_SEALING;
    let file = File::from(rustix::fs::memfd_create("guest-ram", flags).unwrap());
    file.set_len(size).unwrap();
    rustix::fs::fcntl_add_seals(&file, rustix::fs::SealFlags::SHRINK).unwrap();
    file
}

/// Guest memory with one read-write memfd map of `size` bytes at GPA 0.
pub fn guest_memory(size: u64) -> GuestMemory {
    let mem = GuestMemory::new();
    let request = DmaMapRequest {
        address: 0,
        size,
        fd_offset: 0,
        readable: true,
        writable: true,
    };
    mem.map(&request, Some(sealed_memfd(size).into())).unwrap();
    mem
}
