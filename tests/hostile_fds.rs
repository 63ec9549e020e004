//! Hostile clients over a real UNIX socket (issue 12, item 2): fds of every odd kind on every
//! command, and guest RAM in a memfd the client can still shrink. The server runs in this
//! process, so the fds it holds are counted in /proc/self/fd and its mappings in
//! /proc/self/maps.
//!
//! What the server does with an fd, by command: DMA_MAP maps a memfd sealed against
//! shrinking and reaches any other fd's map through the client (DMA_READ/DMA_WRITE), keeping
//! no fd; SET_IRQS keeps eventfds only; every other command refuses fds with EINVAL and closes
//! them.

mod common;

use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::sync::{Mutex, MutexGuard};

use rustix::event::{eventfd, EventfdFlags};
use zerocopy::{FromBytes, IntoBytes};

use common::ram::named_sealed_memfd;
use common::socket::{connect, hang_up, memfd_mappings, open_fds, start_accel_server, status_kib};
use common::wire::*;
use common::RawClient;
use vsvm::devices::accel::regs::{offset, DmaCmd, DmaState, DmaStatus};
use vsvm::endpoint::CONFIG_REGION;
use vsvm::vfio_user::protocol::{header_flags, Command, DmaAccess, VersionBody};
use vsvm::vfio_user::ServerOptions;

const EINVAL: i32 = 22;
const EFAULT: u32 = 14;
const ENOSYS: i32 = 38;
const ENOTSUP: i32 = 95;

/// The tests count this process's fds and mappings: one test at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn unsealed_memfd(name: &str, size: u64) -> File {
    let flags = rustix::fs::MemfdFlags::CLOEXEC | rustix::fs::MemfdFlags::ALLOW_SEALING;
    let file = File::from(rustix::fs::memfd_create(name, flags).unwrap());
    file.set_len(size).unwrap();
    file
}

/// One fd of each odd kind a client can send, kept open by the test for the whole run.
struct OddFds {
    kinds: Vec<(&'static str, OwnedFd)>,
    /// The other ends, which must stay open (a full pipe's reader, a socket's peer).
    _peers: Vec<OwnedFd>,
}

const SEALED_NAME: &str = "hostile-fds-sealed";

impl OddFds {
    fn new() -> Self {
        let (pipe_read, pipe_write) = rustix::pipe::pipe().unwrap();
        // Full, and blocking again: a write would wait for as long as the reader likes.
        rustix::fs::fcntl_setfl(&pipe_write, rustix::fs::OFlags::NONBLOCK).unwrap();
        while rustix::io::write(&pipe_write, &[0; 4096]).is_ok() {}
        rustix::fs::fcntl_setfl(&pipe_write, rustix::fs::OFlags::empty()).unwrap();
        let (pipe2_read, pipe2_write) = rustix::pipe::pipe().unwrap();
        let saturated = eventfd(0, EventfdFlags::empty()).unwrap();
        rustix::io::write(&saturated, &(u64::MAX - 1).to_ne_bytes()).unwrap();
        let (sock, sock_peer) = std::os::unix::net::UnixStream::pair().unwrap();
        let regular = tempfile_in_tmp();
        let kinds: Vec<(&str, OwnedFd)> = vec![
            ("full pipe, write end", pipe_write),
            ("pipe, read end", pipe2_read),
            ("eventfd", eventfd(0, EventfdFlags::NONBLOCK).unwrap()),
            ("saturated blocking eventfd", saturated),
            ("directory", File::open("/").unwrap().into()),
            (
                "unsealed memfd",
                unsealed_memfd("hostile-fds-unsealed", 1 << 20).into(),
            ),
            (
                "sealed memfd",
                named_sealed_memfd(SEALED_NAME, 1 << 20).into(),
            ),
            ("socket", sock.into()),
            ("/dev/null", File::open("/dev/null").unwrap().into()),
            ("regular file", regular.into()),
        ];
        OddFds {
            kinds,
            _peers: vec![pipe_read, pipe2_write, sock_peer.into()],
        }
    }

    fn is_eventfd(name: &str) -> bool {
        name.contains("eventfd")
    }
}

/// A regular file, already unlinked.
fn tempfile_in_tmp() -> File {
    let path = std::env::temp_dir().join(format!("vsvm-hostile-fds-{}", std::process::id()));
    let file = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    file.set_len(1 << 20).unwrap();
    std::fs::remove_file(&path).unwrap();
    file
}

/// A command with a body that is right but for the fds.
struct Case {
    command: u16,
    body: Vec<u8>,
}

fn version_body() -> Vec<u8> {
    let mut body = VersionBody { major: 0, minor: 0 }.as_bytes().to_vec();
    body.extend_from_slice(b"{\"capabilities\":{}}\0");
    body
}

fn cases(fds: usize) -> Vec<Case> {
    let c = |command: Command, body: Vec<u8>| Case {
        command: command as u16,
        body,
    };
    vec![
        c(Command::Version, version_body()),
        c(Command::DmaMap, dma_map_body(1 << 32, PAGE, 0)),
        c(Command::DmaUnmap, dma_unmap_body(1 << 32, PAGE)),
        c(Command::DeviceGetInfo, [16u8, 0, 0, 0].repeat(4)),
        c(Command::DeviceGetRegionInfo, {
            let mut b = vec![0u8; 32];
            b[0] = 32;
            b
        }),
        c(Command::DeviceGetIrqInfo, [16u8, 0, 0, 0].repeat(4)),
        c(Command::DeviceSetIrqs, set_irqs_body(0, fds as u32)),
        c(Command::RegionRead, region_read_body(CONFIG_REGION, 0, 4)),
        c(
            Command::RegionWrite,
            region_write_body(0, offset::SCRATCH, &[1, 2, 3, 4]),
        ),
        c(Command::DeviceReset, vec![]),
        c(Command::DmaRead, vec![0; 16]),
        c(Command::DmaWrite, vec![0; 24]),
        c(Command::DirtyPages, vec![0; 8]),
        c(Command::RegionWriteMulti, vec![0; 8]),
        c(Command::DeviceGetRegionIoFds, vec![0; 16]),
        Case {
            command: 99,
            body: vec![0; 8],
        },
    ]
}

/// What the server must answer `command` carrying `fds` (all of kind `kind`, or mixed).
fn expected(command: u16, kind: Option<&str>, fds: usize) -> Result<(), i32> {
    let Ok(command) = Command::try_from(command) else {
        return Err(ENOSYS);
    };
    match command {
        // One fd of any kind: a sealed memfd is mapped, anything else reached through the
        // client, as maps without fd are.
        Command::DmaMap if fds == 1 => Ok(()),
        Command::DeviceSetIrqs if kind.is_some_and(OddFds::is_eventfd) && fds <= 4 => Ok(()),
        Command::DirtyPages | Command::RegionWriteMulti | Command::DeviceGetRegionIoFds => {
            Err(ENOTSUP)
        }
        _ => Err(EINVAL),
    }
}

/// Undoes what an accepted case made the server hold.
fn undo(c: &mut RawClient, command: u16, fds: usize) {
    if command == Command::DmaMap as u16 {
        assert_eq!(dma_unmap(c, 1 << 32, PAGE), Ok(()));
    } else if command == Command::DeviceSetIrqs as u16 {
        // No fds: de-assign, as QEMU sends a run of -1.
        assert_eq!(set_irqs(c, 0, fds as u32, &[]), Ok(()));
    }
}

#[test]
fn test_odd_fds_on_every_command_are_refused_or_used_and_never_kept() {
    let _serial = serial();
    let path = start_accel_server(ServerOptions::default());
    let odd = OddFds::new();
    let idle = open_fds();
    // A first message with fds, before VERSION: refused, and the handshake still works.
    let mut c = connect(&path);
    let all: Vec<BorrowedFd> = odd.kinds.iter().map(|(_, f)| f.as_fd()).collect();
    let reply = c.call_fds(Command::Version, &version_body(), &all);
    assert_eq!(outcome(&reply), Err(EINVAL));
    c.negotiate();
    let baseline = open_fds();
    let rss_before = status_kib("VmRSS");

    // Each kind alone, each kind three times, and one of every kind at once.
    let mut sets: Vec<(Option<&str>, Vec<BorrowedFd>)> = Vec::new();
    for (name, fd) in &odd.kinds {
        sets.push((Some(name), vec![fd.as_fd()]));
        sets.push((Some(name), vec![fd.as_fd(); 3]));
    }
    sets.push((None, all.clone()));
    let mut tried = 0;
    for (kind, fds) in &sets {
        for case in cases(fds.len()) {
            let id = c.send(case.command, header_flags::TYPE_REQUEST, &case.body, fds);
            let reply = c.recv();
            assert_eq!(reply.header.msg_id, id);
            let what = format!("command {} with {} x {kind:?}", case.command, fds.len());
            let want = expected(case.command, *kind, fds.len());
            assert_eq!(outcome(&reply), want, "{what}");
            // The reply is sent after the request's fds were dropped: count now.
            let held = match (want, case.command == Command::DeviceSetIrqs as u16) {
                (Ok(()), true) => fds.len(),
                _ => 0,
            };
            assert_eq!(open_fds(), baseline + held, "fds held after {what}");
            if want.is_ok() {
                undo(&mut c, case.command, fds.len());
                assert_eq!(open_fds(), baseline, "fds held after undoing {what}");
            }
            assert_eq!(memfd_mappings(SEALED_NAME), 0, "{what}");
            tried += 1;
        }
        // Posted (no reply wanted) and a reserved message type, with the same fds.
        write_reg(&mut c, 0, offset::SCRATCH, 0xaaaa_5555);
        let body = region_write_body(0, offset::SCRATCH, &[5, 6, 7, 8]);
        c.send(
            Command::RegionWrite as u16,
            header_flags::NO_REPLY,
            &body,
            fds,
        );
        let id = c.send(
            Command::RegionRead as u16,
            0x7,
            &region_read_body(0, 0, 4),
            fds,
        );
        let reply = c.recv();
        assert_eq!((reply.header.msg_id, outcome(&reply)), (id, Err(EINVAL)));
        assert_eq!(
            read_reg(&mut c, 0, offset::SCRATCH),
            0xaaaa_5555,
            "posted write refused"
        );
        assert_eq!(
            open_fds(),
            baseline,
            "fds held after posted/reserved with {kind:?}"
        );
        tried += 2;
    }
    // Still serving its function: a register round trip, and a map with a sealed memfd used.
    write_reg(&mut c, 0, offset::SCRATCH, 0x1234_5678);
    assert_eq!(read_reg(&mut c, 0, offset::SCRATCH), 0x1234_5678);
    let sealed = &odd
        .kinds
        .iter()
        .find(|(n, _)| *n == "sealed memfd")
        .unwrap()
        .1;
    assert_eq!(dma_map(&mut c, 0, 1 << 20, &[sealed.as_fd()]), Ok(()));
    assert_eq!(memfd_mappings(SEALED_NAME), 1);
    hang_up(c);
    served_again(&path);
    let rss_after = status_kib("VmRSS");
    eprintln!(
        "{tried} odd-fd cases over {} fd sets; fds {idle} before the client, {} after; \
         VmRSS KiB {rss_before} -> {rss_after}",
        sets.len(),
        open_fds()
    );
    assert_eq!(
        memfd_mappings(SEALED_NAME),
        0,
        "the map left with its client"
    );
    assert_eq!(open_fds(), idle, "every fd the client sent is closed");
    assert!(
        rss_after < rss_before + 8 * 1024,
        "RSS grew by {} KiB",
        rss_after - rss_before
    );
}

/// Plays QEMU for one DMA_READ: answers `data`, or the error `errno` when `data` is None.
fn answer_dma_read(c: &mut RawClient, data: impl FnOnce(&DmaAccess) -> Option<Vec<u8>>) {
    let req = c.recv();
    assert_eq!(req.header.command, Command::DmaRead as u16);
    let (access, _) = DmaAccess::read_from_prefix(&req.body).unwrap();
    let mut header = req.header;
    let mut body = Vec::new();
    match data(&access) {
        Some(bytes) => {
            header.flags = header_flags::TYPE_REPLY;
            body.extend_from_slice(access.as_bytes());
            body.extend_from_slice(&bytes);
        }
        None => {
            header.flags = header_flags::TYPE_REPLY | header_flags::ERROR;
            header.error = EFAULT;
        }
    }
    header.message_size = (16 + body.len()) as u32;
    let mut bytes = header.as_bytes().to_vec();
    bytes.extend_from_slice(&body);
    c.send_raw(&bytes);
}

/// A one-page copy from `src_gpa` (a map without fd, backed by `src` at offset 0) to GPA 0, its
/// DMA_READ answered from `src` as QEMU would: an error when the read of the file fails.
fn copy_page_from_file(c: &mut RawClient, src: &File, src_gpa: u64) {
    copy(c, src_gpa, 0, PAGE as u32);
    answer_dma_read(c, |a| {
        let mut buf = vec![0; a.count as usize];
        src.read_exact_at(&mut buf, a.address - src_gpa)
            .ok()
            .map(|()| buf)
    });
}

fn copy(c: &mut RawClient, src: u64, dst: u64, len: u32) -> DmaStatus {
    for (reg, value) in [(offset::DMA_SRC, src), (offset::DMA_DST, dst)] {
        write_reg(c, 0, reg, value as u32);
        write_reg(c, 0, reg + 4, (value >> 32) as u32);
    }
    write_reg(c, 0, offset::DMA_LEN, len);
    let start = DmaCmd::new().with_start(true).into_bits();
    post_reg(c, 0, offset::DMA_CMD, start);
    DmaStatus::from_bits(0)
}

fn dma_status(c: &mut RawClient) -> DmaStatus {
    DmaStatus::from_bits(read_reg(c, 0, offset::DMA_STATUS))
}

#[test]
fn test_unsealed_memfd_truncated_under_a_map_is_never_mapped_so_never_sigbus() {
    let _serial = serial();
    let path = start_accel_server(ServerOptions::default());
    let idle = open_fds();
    let mut c = connect(&path);
    c.negotiate();
    let (src_name, dst_name) = ("hostile-trunc-src", "hostile-trunc-dst");
    let src = unsealed_memfd(src_name, 1 << 20);
    src.write_all_at(&[0x5a; PAGE as usize], 0).unwrap();
    let dst = named_sealed_memfd(dst_name, 1 << 20);
    let src_gpa = 1 << 30;
    assert_eq!(dma_map(&mut c, src_gpa, 1 << 20, &[src.as_fd()]), Ok(()));
    assert_eq!(dma_map(&mut c, 0, 1 << 20, &[dst.as_fd()]), Ok(()));
    assert_eq!(
        memfd_mappings(src_name),
        0,
        "a memfd that can shrink is never mapped"
    );
    assert_eq!(memfd_mappings(dst_name), 1, "a sealed one is");
    // The kind the server maps cannot be cut under it.
    assert!(
        dst.set_len(0).is_err(),
        "F_SEAL_SHRINK refuses the truncate"
    );
    // The other kind is cut under its map; a job reading it goes through the client, whose
    // read of the vanished page fails: it answers an error and the job fails.
    src.set_len(0).unwrap();
    write_reg(&mut c, CONFIG_REGION, PCI_COMMAND, MEMORY | BUS_MASTER);
    copy_page_from_file(&mut c, &src, src_gpa);
    wait_until("the job failed", || {
        dma_status(&mut c).state() == DmaState::Error
    });
    let mut page = vec![0; PAGE as usize];
    dst.read_exact_at(&mut page, 0).unwrap();
    assert!(page.iter().all(|b| *b == 0), "nothing copied");
    // The file grows back: the next job is served the same way, and succeeds.
    src.set_len(1 << 20).unwrap();
    src.write_all_at(&[0x77; PAGE as usize], 0).unwrap();
    copy_page_from_file(&mut c, &src, src_gpa);
    wait_until("the job is done", || {
        dma_status(&mut c).state() == DmaState::Done
    });
    dst.read_exact_at(&mut page, 0).unwrap();
    assert!(page.iter().all(|b| *b == 0x77));
    hang_up(c);
    served_again(&path);
    assert_eq!(memfd_mappings(dst_name), 0);
    drop((src, dst));
    assert_eq!(open_fds(), idle, "no fd of the client is kept");
}
