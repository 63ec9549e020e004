//! DMA maps and the accel copy engine end to end over the wire: memfd-backed maps (the server
//! maps the fd) and maps without fd (the server sends DMA_READ/DMA_WRITE to the client).

mod common;

use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use common::{errno, spawn_accel, RawClient};
use vsvm::vfio_user::protocol::{
    dma_map_flags, header_flags, Command, DmaAccess, DmaMap, DmaUnmap, RegionAccess,
};
use zerocopy::{FromBytes, IntoBytes};

const EINVAL: i32 = 22;
const EEXIST: i32 = 17;
const ENOENT: i32 = 2;

/// Accel registers (devices/accel/README.md).
const DMA_SRC: u64 = 0x10;
const DMA_DST: u64 = 0x18;
const DMA_LEN: u64 = 0x20;
const DMA_CMD: u64 = 0x24;
const DMA_STATUS: u64 = 0x28;
const COMMAND_REG: u64 = 0x04;
const BUS_MASTER: u32 = 1 << 2;

fn map(address: u64, size: u64, offset: u64, flags: u32) -> Vec<u8> {
    DmaMap {
        argsz: 32,
        flags,
        offset,
        address,
        size,
    }
    .as_bytes()
    .to_vec()
}

fn unmap(address: u64, size: u64, flags: u32) -> Vec<u8> {
    DmaUnmap {
        argsz: 24,
        flags,
        address,
        size,
    }
    .as_bytes()
    .to_vec()
}

fn write_reg(c: &mut RawClient, region: u32, offset: u64, value: u32) {
    let mut body = RegionAccess {
        offset,
        region,
        count: 4,
    }
    .as_bytes()
    .to_vec();
    body.extend_from_slice(&value.to_le_bytes());
    assert!(!c.call(Command::RegionWrite, &body).header.is_error());
}

fn read_reg(c: &mut RawClient, region: u32, offset: u64) -> u32 {
    let reply = c.call(
        Command::RegionRead,
        RegionAccess {
            offset,
            region,
            count: 4,
        }
        .as_bytes(),
    );
    u32::from_le_bytes(reply.body[16..20].try_into().unwrap())
}

fn start_copy(c: &mut RawClient, src: u64, dst: u64, len: u32) {
    write_reg(c, 7, COMMAND_REG, BUS_MASTER | 2);
    for (reg, value) in [(DMA_SRC, src), (DMA_DST, dst)] {
        write_reg(c, 0, reg, value as u32);
        write_reg(c, 0, reg + 4, (value >> 32) as u32);
    }
    write_reg(c, 0, DMA_LEN, len);
    // Posted, as QEMU sends BAR writes: the job may issue DMA requests at once, and a reply to
    // this write would race with them on the wire.
    let mut body = RegionAccess {
        offset: DMA_CMD,
        region: 0,
        count: 4,
    }
    .as_bytes()
    .to_vec();
    body.extend_from_slice(&1u32.to_le_bytes());
    c.send(
        Command::RegionWrite as u16,
        header_flags::NO_REPLY,
        &body,
        &[],
    );
}

fn wait_done(c: &mut RawClient) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let status = read_reg(c, 0, DMA_STATUS);
        if status & 3 != 1 {
            return status;
        }
        assert!(Instant::now() < deadline, "job never finished");
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn test_copy_between_memfd_pages_moves_the_bytes() {
    let (mut c, _server) = spawn_accel();
    c.negotiate();
    let mut ram = common::ram::sealed_memfd(0x10000);
    let pattern: Vec<u8> = (0..0x3000u32).map(|i| (i * 7 + 3) as u8).collect();
    ram.write_all_at_start(&pattern);
    let rw = dma_map_flags::READ | dma_map_flags::WRITE;
    assert!(!c
        .call_fds(
            Command::DmaMap,
            &map(0x100000, 0x10000, 0, rw),
            &[ram.as_fd()]
        )
        .header
        .is_error());
    start_copy(&mut c, 0x100000, 0x108000, 0x3000);
    assert_eq!(wait_done(&mut c), 2);
    let mut out = vec![0; 0x3000];
    ram.seek(SeekFrom::Start(0x8000)).unwrap();
    ram.read_exact(&mut out).unwrap();
    assert_eq!(out, pattern);
}

#[test]
fn test_copy_to_unmapped_destination_reports_dst_fault() {
    let (mut c, _server) = spawn_accel();
    c.negotiate();
    let ram = common::ram::sealed_memfd(0x2000);
    let rw = dma_map_flags::READ | dma_map_flags::WRITE;
    c.call_fds(Command::DmaMap, &map(0, 0x2000, 0, rw), &[ram.as_fd()]);
    start_copy(&mut c, 0, 0x1800, 0x1000); // runs off the end of the map
    assert_eq!(wait_done(&mut c), 3 | (3 << 8));
}

#[test]
fn test_copy_without_bus_master_faults() {
    let (mut c, _server) = spawn_accel();
    c.negotiate();
    let ram = common::ram::sealed_memfd(0x2000);
    c.call_fds(Command::DmaMap, &map(0, 0x2000, 0, 3), &[ram.as_fd()]);
    start_copy(&mut c, 0, 0x1000, 0x100);
    assert_eq!(wait_done(&mut c), 2);
    write_reg(&mut c, 7, COMMAND_REG, 2); // bus mastering off before the next job
    write_reg(&mut c, 0, DMA_CMD, 1);
    assert_eq!(wait_done(&mut c), 3 | (2 << 8));
}

/// Plays QEMU for the server's DMA requests against `guest` (mapped at `base`) until `n` were
/// served; returns the largest transfer seen.
fn serve_dma_requests(c: &mut RawClient, guest: &mut [u8], base: u64, n: usize) -> u64 {
    let mut largest = 0;
    for _ in 0..n {
        let req = c.recv();
        assert_eq!(
            req.header.flags & header_flags::TYPE_MASK,
            header_flags::TYPE_REQUEST
        );
        let (access, data) = DmaAccess::read_from_prefix(&req.body).unwrap();
        let (at, count) = ((access.address - base) as usize, access.count as usize);
        largest = largest.max(access.count);
        let mut reply_body = access.as_bytes().to_vec();
        if req.header.command == Command::DmaRead as u16 {
            reply_body.extend_from_slice(&guest[at..at + count]);
        } else {
            assert_eq!(req.header.command, Command::DmaWrite as u16);
            guest[at..at + count].copy_from_slice(&data[..count]);
        }
        let mut h = req.header;
        h.flags = header_flags::TYPE_REPLY;
        h.message_size = (16 + reply_body.len()) as u32;
        let mut bytes = h.as_bytes().to_vec();
        bytes.extend_from_slice(&reply_body);
        c.send_raw(&bytes);
    }
    largest
}

#[test]
fn test_copy_through_client_uses_dma_read_and_write() {
    let (mut c, _server) = spawn_accel();
    c.negotiate();
    let mut guest = vec![0u8; 0x4000];
    guest[..0x1000]
        .iter_mut()
        .enumerate()
        .for_each(|(i, b)| *b = i as u8 ^ 0x5a);
    assert!(!c
        .call(Command::DmaMap, &map(0x40000, 0x4000, 0, 3))
        .header
        .is_error());
    start_copy(&mut c, 0x40000, 0x42000, 0x1000);
    serve_dma_requests(&mut c, &mut guest, 0x40000, 2);
    assert_eq!(wait_done(&mut c), 2);
    assert_eq!(guest[0x2000..0x3000], guest[..0x1000]);
}

#[test]
fn test_large_copy_through_client_is_split_below_qemu_socket_buffer() {
    let (mut c, _server) = spawn_accel();
    c.negotiate();
    let mut guest = vec![0u8; 0x60000];
    guest[..0x30000]
        .iter_mut()
        .enumerate()
        .for_each(|(i, b)| *b = (i / 7) as u8);
    assert!(!c
        .call(Command::DmaMap, &map(0x100000, 0x60000, 0, 3))
        .header
        .is_error());
    start_copy(&mut c, 0x100000, 0x130000, 0x30000);
    let largest = serve_dma_requests(&mut c, &mut guest, 0x100000, 6);
    assert_eq!(largest, vsvm::vfio_user::dma_port::DMA_CHUNK as u64);
    assert_eq!(wait_done(&mut c), 2);
    assert_eq!(guest[0x30000..], guest[..0x30000]);
}

#[test]
fn test_map_errors_have_their_errnos() {
    let (mut c, _server) = spawn_accel();
    c.negotiate();
    let ram = common::ram::sealed_memfd(0x4000);
    let ok = |r: &vsvm::vfio_user::transport::Message| !r.header.is_error();
    assert!(ok(&c.call_fds(
        Command::DmaMap,
        &map(0x10000, 0x4000, 0, 3),
        &[ram.as_fd()]
    )));
    assert_eq!(
        errno(&c.call(Command::DmaMap, &map(0x12000, 0x1000, 0, 3))),
        EEXIST
    );
    assert_eq!(
        errno(&c.call(Command::DmaMap, &map(0x20000, 0, 0, 3))),
        EINVAL
    );
    assert_eq!(
        errno(&c.call(Command::DmaMap, &map(0x20001, 0x1000, 0, 3))),
        EINVAL
    );
    assert_eq!(
        errno(&c.call(Command::DmaMap, &map(0x20000, 0x1000, 0, 0x80))),
        EINVAL
    );
    // The fd is 16 KiB: a map past its end would SIGBUS on access, so it is refused.
    assert_eq!(
        errno(&c.call_fds(Command::DmaMap, &map(0x30000, 0x8000, 0, 3), &[ram.as_fd()])),
        EINVAL
    );
    assert_eq!(
        errno(&c.call(Command::DmaUnmap, &unmap(0x50000, 0x1000, 0))),
        ENOENT
    );
    assert_eq!(
        errno(&c.call(Command::DmaUnmap, &unmap(0x10000, 0x1000, 2))),
        EINVAL
    );
    // Partial unmap, then UNMAP_ALL.
    let reply = c.call(Command::DmaUnmap, &unmap(0x11000, 0x1000, 0));
    assert_eq!(reply.body, unmap(0x11000, 0x1000, 0));
    assert!(ok(&c.call(Command::DmaUnmap, &unmap(0, 0, 2))));
    assert_eq!(
        errno(&c.call(Command::DmaUnmap, &unmap(0x10000, 0x1000, 0))),
        ENOENT
    );
}

#[test]
fn test_partial_unmap_keeps_the_rest_usable() {
    let (mut c, _server) = spawn_accel();
    c.negotiate();
    let mut ram = common::ram::sealed_memfd(0x4000);
    ram.write_all_at_start(&[0xab; 0x1000]);
    c.call_fds(Command::DmaMap, &map(0x10000, 0x4000, 0, 3), &[ram.as_fd()]);
    assert!(!c
        .call(Command::DmaUnmap, &unmap(0x11000, 0x1000, 0))
        .header
        .is_error());
    start_copy(&mut c, 0x10000, 0x13000, 0x1000);
    assert_eq!(wait_done(&mut c), 2);
    start_copy(&mut c, 0x10000, 0x11000, 0x10);
    assert_eq!(wait_done(&mut c), 3 | (3 << 8));
}

trait WriteAtStart {
    fn write_all_at_start(&mut self, data: &[u8]);
}

impl WriteAtStart for std::fs::File {
    fn write_all_at_start(&mut self, data: &[u8]) {
        self.seek(SeekFrom::Start(0)).unwrap();
        self.write_all(data).unwrap();
    }
}
