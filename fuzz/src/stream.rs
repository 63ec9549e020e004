//! A vfio-user client's byte stream, fds included, driven into the real server loop
//! (`serve_connection`: framing, dispatch, a function) over a socketpair — vfio-user
//! specification, "Message format", "Socket" (SCM_RIGHTS) and the per-command sections.
//! Shared by the `vfio_stream` (accelerator) and `remap_stream` (remap unit) targets.
//!
//! Input: a series of `[fd choice byte][message]`, where the message is as long as its
//! header's size field says (or what is left). The fd choice attaches 1–4 fds to that
//! message's first byte: bits 2:0 pick the kind (0: none; sealed, large sparse or unsealed
//! memfds, eventfds (one saturated and blocking), the write end of a pipe, or a directory),
//! bits 4:3 the count less one, bit 5 mixes kinds (each next fd is `step` kinds further,
//! `step` = 1 + bits 7:6).

use std::fs::File;
use std::io::{IoSlice, Read};
use std::mem::MaybeUninit;
use std::net::Shutdown;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::mpsc;
use std::time::Duration;

use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
use vsvm::vfio_user::protocol::HEADER_SIZE;
use vsvm::vfio_user::{serve_connection, Device, ServerOptions};

use crate::{sealed_memfd, unsealed_memfd};

/// Offset of the header's `message_size` field (u16 id, u16 command, u32 size, ...).
const SIZE_FIELD: usize = 4;
/// Small guest RAM, and QEMU's 256 MiB (sparse: nothing is allocated until touched).
const SMALL_RAM: u64 = 1 << 20;
const LARGE_RAM: u64 = 256 << 20;
/// A blocking eventfd one below its maximum: a write of 1 would block forever.
const SATURATED: u64 = 0xffff_ffff_ffff_fffe;
/// How long the server may take to let go of the client's socket after it hung up.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(10);
/// Fd kinds (1..=KINDS; 0 is "no fds").
const KINDS: u8 = 7;
/// Most fds one choice attaches.
const MAX_FDS: usize = 4;

/// One fd of `kind` (1..=KINDS). Keeps what must stay open meanwhile (a pipe's read end).
fn one(kind: u8, keep: &mut Vec<OwnedFd>) -> OwnedFd {
    match kind {
        1 => sealed_memfd(SMALL_RAM).into(),
        2 => sealed_memfd(LARGE_RAM).into(),
        3 => unsealed_memfd(SMALL_RAM).into(),
        4 => {
            let flags =
                rustix::event::EventfdFlags::CLOEXEC | rustix::event::EventfdFlags::NONBLOCK;
            rustix::event::eventfd(0, flags).unwrap()
        }
        5 => {
            let fd = rustix::event::eventfd(0, rustix::event::EventfdFlags::CLOEXEC).unwrap();
            rustix::io::write(&fd, &SATURATED.to_ne_bytes()).unwrap();
            fd
        }
        6 => {
            let (read, write) = rustix::pipe::pipe().unwrap();
            keep.push(read);
            write
        }
        _ => File::open("/").unwrap().into(),
    }
}

/// The fds a choice byte stands for (module docs).
pub fn fds(choice: u8, keep: &mut Vec<OwnedFd>) -> Vec<OwnedFd> {
    let first = choice & 7;
    if first == 0 {
        return Vec::new();
    }
    let count = 1 + usize::from((choice >> 3) & 3);
    let mixed = choice & 0x20 != 0;
    let step = 1 + (choice >> 6);
    (0..count as u8)
        .map(|i| {
            let kind = match mixed {
                true => (first - 1 + i * step) % KINDS + 1,
                false => first,
            };
            one(kind, keep)
        })
        .collect()
}

/// Sends `bytes` with `fds` attached; false when the socket is full (the rest is dropped).
fn send(sock: &UnixStream, bytes: &[u8], fds: &[OwnedFd]) -> bool {
    let borrowed: Vec<BorrowedFd> = fds.iter().map(|f| f.as_fd()).collect();
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut ancillary = SendAncillaryBuffer::new(&mut space);
    if !borrowed.is_empty() {
        ancillary.push(SendAncillaryMessage::ScmRights(&borrowed));
    }
    let flags = SendFlags::DONTWAIT | SendFlags::NOSIGNAL;
    let mut sent = match rustix::net::sendmsg(sock, &[IoSlice::new(bytes)], &mut ancillary, flags) {
        Ok(n) => n,
        Err(_) => return false,
    };
    while sent < bytes.len() {
        match rustix::net::send(sock, &bytes[sent..], flags) {
            Ok(n) => sent += n,
            Err(_) => return false,
        }
    }
    true
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

/// Runs one input as one client of `device`: the whole stream goes in before the server reads
/// (it fits the socket buffer: inputs are small), then the client hangs up its sending side.
/// Checks that the server lets go of the socket and of every fd the client sent.
pub fn run(data: &[u8], device: &mut dyn Device) {
    let fds_before = open_fds();
    let (client, server) = UnixStream::pair().unwrap();
    let mut keep = Vec::new();
    let mut rest = data;
    while let Some((&choice, tail)) = rest.split_first() {
        let size = tail
            .get(SIZE_FIELD..SIZE_FIELD + 4)
            .map_or(0, |b| u32::from_le_bytes(b.try_into().unwrap()) as usize);
        let (message, tail) = tail.split_at(size.max(HEADER_SIZE).min(tail.len()));
        rest = tail;
        if !send(&client, message, &fds(choice, &mut keep)) {
            break;
        }
    }
    client.shutdown(Shutdown::Write).unwrap();
    // Replies (and the server's own DMA requests, which nobody answers) are read and dropped.
    let mut reader = client.try_clone().unwrap();
    let (released, wait_release) = mpsc::channel();
    let drain = std::thread::spawn(move || {
        let mut sink = [0u8; 1 << 16];
        while matches!(reader.read(&mut sink), Ok(n) if n > 0) {}
        let _ = released.send(());
    });
    let _ = serve_connection(server, device, &ServerOptions::default());
    // The connection is over: the server must hold no end of the socket any more.
    wait_release
        .recv_timeout(RELEASE_TIMEOUT)
        .expect("the server kept the client's socket after the connection ended");
    drain.join().unwrap();
    drop(client);
    drop(keep);
    assert_eq!(open_fds(), fds_before, "fds leaked by a connection");
}
