//! Bounded resources over a real socket (issue 12): what one message may carry — bytes and
//! fds — and what SET_IRQS may make the server hold, each at its limit and one past it. The
//! server runs in this process, so the fds it holds are counted in /proc/self/fd.

mod common;

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::{Mutex, MutexGuard};
use std::thread::JoinHandle;

use rustix::event::{eventfd, EventfdFlags};
use zerocopy::IntoBytes;

use common::socket::{open_fds, HANG};
use common::{errno, request, spawn_accel, RawClient};
use vsvm::devices::accel::MSIX_VECTORS;
use vsvm::endpoint::{CONFIG_REGION, MSIX_IRQ_INDEX};
use vsvm::vfio_user::protocol::{
    header_flags, irq_set_flags, Command, IrqSet, RegionAccess, HEADER_SIZE, MAX_MESSAGE_SIZE,
    MAX_MSG_FDS,
};
use vsvm::vfio_user::transport::TransportError;

const EINVAL: i32 = 22;
const E2BIG: i32 = 7;

/// The tests count this process's fds: one test at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn eventfds(n: usize) -> Vec<OwnedFd> {
    (0..n)
        .map(|_| eventfd(0, EventfdFlags::NONBLOCK).unwrap())
        .collect()
}

/// SET_IRQS of `fds` as MSI-X vectors `start..start + count` (eventfds, trigger).
fn set_irqs(c: &mut RawClient, start: u32, count: u32, fds: &[BorrowedFd]) -> Result<(), i32> {
    let body = IrqSet {
        argsz: size_of::<IrqSet>() as u32,
        flags: irq_set_flags::DATA_EVENTFD | irq_set_flags::ACTION_TRIGGER,
        index: MSIX_IRQ_INDEX,
        start,
        count,
    };
    let reply = c.call_fds(Command::DeviceSetIrqs, body.as_bytes(), fds);
    if reply.header.is_error() {
        Err(reply.header.error as i32)
    } else {
        Ok(())
    }
}

/// A client whose reads fail after [`HANG`] instead of hanging the test.
fn client() -> (RawClient, JoinHandle<Result<(), TransportError>>) {
    let (c, server) = spawn_accel();
    c.sock.set_read_timeout(Some(HANG)).unwrap();
    (c, server)
}

/// A request the server answers: the connection still serves.
fn still_serving(c: &mut RawClient) {
    let body = RegionAccess {
        offset: 0,
        region: CONFIG_REGION,
        count: 4,
    };
    let reply = c.call(Command::RegionRead, body.as_bytes());
    assert!(!reply.header.is_error(), "the vendor ID reads");
}

#[test]
fn test_max_msg_fds_in_one_message_are_received_and_one_more_ends_the_connection() {
    let _serial = serial();
    let (mut c, server) = client();
    c.negotiate();
    let fds = eventfds(MAX_MSG_FDS + 1);
    let borrowed: Vec<BorrowedFd> = fds.iter().map(|f| f.as_fd()).collect();
    let before = open_fds();
    // At the limit: the message is read whole and answered (DMA_MAP takes one fd at most),
    // and the server keeps none of the fds.
    let reply = c.call_fds(Command::DmaMap, &[0u8; 32], &borrowed[..MAX_MSG_FDS]);
    assert_eq!(errno(&reply), EINVAL);
    assert_eq!(open_fds(), before, "every fd of the refused message closed");
    still_serving(&mut c);
    // Past it: framing cannot be trusted, the connection ends.
    c.send(
        Command::DmaMap as u16,
        header_flags::TYPE_REQUEST,
        &[0u8; 32],
        &borrowed,
    );
    // A server that took the message would wait for the next one: say there is none.
    c.sock.shutdown(std::net::Shutdown::Write).unwrap();
    assert!(matches!(
        server.join().unwrap(),
        Err(TransportError::TooManyFds { max: MAX_MSG_FDS })
    ));
}

#[test]
fn test_message_of_max_size_is_read_and_one_byte_more_is_refused() {
    let _serial = serial();
    let (mut c, server) = client();
    c.negotiate();
    // A REGION_WRITE exactly MAX_MESSAGE_SIZE long: read whole, answered (the config space is
    // much smaller than the write), and the connection serves on.
    let data = vec![0u8; MAX_MESSAGE_SIZE - HEADER_SIZE - size_of::<RegionAccess>()];
    let mut body = RegionAccess {
        offset: 0,
        region: CONFIG_REGION,
        count: data.len() as u32,
    }
    .as_bytes()
    .to_vec();
    body.extend_from_slice(&data);
    assert_eq!(errno(&c.call(Command::RegionWrite, &body)), EINVAL);
    still_serving(&mut c);
    // One byte more: refused before anything is allocated, then the connection ends.
    let mut header = request(9, Command::RegionWrite as u16, header_flags::TYPE_REQUEST);
    header.message_size = (MAX_MESSAGE_SIZE + 1) as u32;
    c.send_raw(header.as_bytes());
    let reply = c.recv();
    assert_eq!((reply.header.msg_id, errno(&reply)), (9, E2BIG));
    assert!(matches!(
        server.join().unwrap(),
        Err(TransportError::TooLarge { size, .. }) if size as usize == MAX_MESSAGE_SIZE + 1
    ));
}

#[test]
fn test_repeated_set_irqs_replaces_eventfds_and_holds_at_most_one_per_vector() {
    let _serial = serial();
    let (mut c, _server) = client();
    c.negotiate();
    let before = open_fds();
    // The same vector a thousand times: the server holds only the last eventfd.
    for _ in 0..1000 {
        let fd = eventfds(1).remove(0);
        set_irqs(&mut c, 0, 1, &[fd.as_fd()]).unwrap();
    }
    assert_eq!(open_fds(), before + 1);
    // Every vector at once: one eventfd each.
    let vectors = u32::from(MSIX_VECTORS);
    let fds = eventfds(usize::from(MSIX_VECTORS) + 1);
    let borrowed: Vec<BorrowedFd> = fds.iter().map(|f| f.as_fd()).collect();
    set_irqs(&mut c, 0, vectors, &borrowed[..usize::from(MSIX_VECTORS)]).unwrap();
    let held = open_fds() - fds.len();
    assert_eq!(held, before + usize::from(MSIX_VECTORS));
    // One vector more than the index has: refused, and nothing more is held.
    assert_eq!(set_irqs(&mut c, 0, vectors + 1, &borrowed), Err(EINVAL));
    assert_eq!(set_irqs(&mut c, vectors, 1, &borrowed[..1]), Err(EINVAL));
    assert_eq!(open_fds() - fds.len(), held);
    still_serving(&mut c);
}
