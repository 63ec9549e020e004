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
    shared_guest_memory(size).1
}

/// Like [`guest_memory`], and the memfd too: for a device's DMA map of the same RAM (a second
/// client-side view, as QEMU sends the same fd to every function).
pub fn shared_guest_memory(size: u64) -> (File, GuestMemory) {
    let memfd = sealed_memfd(size);
    let mem = GuestMemory::new();
    let request = DmaMapRequest {
        address: 0,
        size,
        fd_offset: 0,
        readable: true,
        writable: true,
    };
    mem.map(&request, Some(memfd.try_clone().unwrap().into()))
        .unwrap();
    (memfd, mem)
}

/// Like [`sealed_memfd`], named `name` (so that its mappings can be found in /proc/self/maps).
pub fn named_sealed_memfd(name: &str, size: u64) -> File {
    let flags = rustix::fs::MemfdFlags::CLOEXEC | rustix::fs::MemfdFlags::ALLOW_SEALING;
    let file = File::from(rustix::fs::memfd_create(name, flags).unwrap());
    file.set_len(size).unwrap();
    rustix::fs::fcntl_add_seals(&file, rustix::fs::SealFlags::SHRINK).unwrap();
    file
}
