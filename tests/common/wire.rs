//! Requests a hostile-client test sends over a raw client, with their outcome as an errno, and
//! the small waits such tests share.

use std::os::fd::BorrowedFd;
use std::path::Path;
use std::time::{Duration, Instant};

use zerocopy::IntoBytes;

use vsvm::endpoint::MSIX_IRQ_INDEX;
use vsvm::vfio_user::protocol::{
    dma_map_flags, header_flags, irq_set_flags, Command, DmaMap, DmaUnmap, IrqSet, RegionAccess,
};
use vsvm::vfio_user::transport::Message;

use super::socket::{connect, hang_up};
use super::RawClient;

/// PCI Command (config space offset 4): memory space, and bus mastering.
pub const PCI_COMMAND: u64 = 0x04;
pub const MEMORY: u32 = 1 << 1;
pub const BUS_MASTER: u32 = 1 << 2;
pub const PAGE: u64 = 4096;

/// Ok, or the errno of an error reply.
pub fn outcome(reply: &Message) -> Result<(), i32> {
    match reply.header.is_error() {
        true => Err(reply.header.error as i32),
        false => Ok(()),
    }
}

/// The body of a read-write DMA_MAP of `[address, address + size)` at fd offset `offset`.
pub fn dma_map_body(address: u64, size: u64, offset: u64) -> Vec<u8> {
    DmaMap {
        argsz: size_of::<DmaMap>() as u32,
        flags: dma_map_flags::READ | dma_map_flags::WRITE,
        offset,
        address,
        size,
    }
    .as_bytes()
    .to_vec()
}

/// DMA_MAP with `fds` (none: a map reached through DMA_READ/DMA_WRITE).
pub fn dma_map(c: &mut RawClient, address: u64, size: u64, fds: &[BorrowedFd]) -> Result<(), i32> {
    outcome(&c.call_fds(Command::DmaMap, &dma_map_body(address, size, 0), fds))
}

pub fn dma_unmap_body(address: u64, size: u64) -> Vec<u8> {
    DmaUnmap {
        argsz: size_of::<DmaUnmap>() as u32,
        flags: 0,
        address,
        size,
    }
    .as_bytes()
    .to_vec()
}

pub fn dma_unmap(c: &mut RawClient, address: u64, size: u64) -> Result<(), i32> {
    outcome(&c.call(Command::DmaUnmap, &dma_unmap_body(address, size)))
}

/// SET_IRQS body: MSI-X vectors `start..start + count`, eventfd trigger.
pub fn set_irqs_body(start: u32, count: u32) -> Vec<u8> {
    IrqSet {
        argsz: size_of::<IrqSet>() as u32,
        flags: irq_set_flags::DATA_EVENTFD | irq_set_flags::ACTION_TRIGGER,
        index: MSIX_IRQ_INDEX,
        start,
        count,
    }
    .as_bytes()
    .to_vec()
}

pub fn set_irqs(c: &mut RawClient, start: u32, count: u32, fds: &[BorrowedFd]) -> Result<(), i32> {
    outcome(&c.call_fds(Command::DeviceSetIrqs, &set_irqs_body(start, count), fds))
}

pub fn region_read_body(region: u32, at: u64, count: u32) -> Vec<u8> {
    RegionAccess {
        offset: at,
        region,
        count,
    }
    .as_bytes()
    .to_vec()
}

pub fn region_write_body(region: u32, at: u64, data: &[u8]) -> Vec<u8> {
    let mut body = region_read_body(region, at, data.len() as u32);
    body.extend_from_slice(data);
    body
}

/// A register write the server answers.
pub fn write_reg(c: &mut RawClient, region: u32, at: u64, value: u32) {
    let reply = c.call(
        Command::RegionWrite,
        &region_write_body(region, at, &value.to_le_bytes()),
    );
    assert_eq!(outcome(&reply), Ok(()), "write of 0x{at:x}");
}

/// A posted register write, as QEMU sends BAR writes.
pub fn post_reg(c: &mut RawClient, region: u32, at: u64, value: u32) {
    let body = region_write_body(region, at, &value.to_le_bytes());
    c.send(
        Command::RegionWrite as u16,
        header_flags::NO_REPLY,
        &body,
        &[],
    );
}

pub fn read_reg(c: &mut RawClient, region: u32, at: u64) -> u32 {
    let reply = c.call(Command::RegionRead, &region_read_body(region, at, 4));
    assert_eq!(outcome(&reply), Ok(()), "read of 0x{at:x}");
    u32::from_le_bytes(reply.body[16..20].try_into().unwrap())
}

pub fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A new client is answered (the last one's disconnect is over), and leaves.
pub fn served_again(path: &Path) {
    let mut next = connect(path);
    next.negotiate();
    hang_up(next);
}
