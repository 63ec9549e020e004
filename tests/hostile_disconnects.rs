//! Hostile clients over a real UNIX socket (issue 12, item 2): clients that leave in the middle
//! of a message, while the server waits for their answer to its own DMA_READ/DMA_WRITE, or
//! while a device job runs; and a second client that connects while one is served. The server
//! runs in this process, so its fds, mappings and resident memory are measured in /proc/self.
//!
//! One socket serves one client at a time: a second client's connection waits in the listen
//! backlog, unanswered, until the first leaves; it never disturbs the first.

mod common;

use std::os::fd::AsFd;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rustix::event::{eventfd, EventfdFlags, PollFd, PollFlags, Timespec};
use zerocopy::IntoBytes;

use common::ram::named_sealed_memfd;
use common::socket::{connect, hang_up, memfd_mappings, open_fds, start_accel_server, status_kib};
use common::wire::*;
use common::RawClient;
use vsvm::devices::accel::regs::{offset, wq_offset, DmaCmd, DmaState, DmaStatus, WqCtrl};
use vsvm::endpoint::CONFIG_REGION;
use vsvm::vfio_user::protocol::{header_flags, Command, HEADER_SIZE};
use vsvm::vfio_user::ServerOptions;

/// The tests count this process's fds and mappings: one test at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Below the server's 5 s wait for a DMA reply: a next client served sooner was not kept
/// waiting for the left client's answer.
const PROMPTLY: Duration = Duration::from_secs(3);

/// Registers a new client must read as at power-on.
fn assert_power_on_state(c: &mut RawClient, what: &str) {
    let wq0 = offset::WQ_BLOCKS;
    for (name, at) in [
        ("DMA_STATUS", offset::DMA_STATUS),
        ("DMA_LEN", offset::DMA_LEN),
        ("SCRATCH", offset::SCRATCH),
        ("WQ0_STATUS", wq0 + wq_offset::STATUS),
        ("WQ0_CTRL", wq0 + wq_offset::CTRL),
    ] {
        assert_eq!(read_reg(c, 0, at), 0, "{what}: {name}");
    }
    assert_eq!(
        read_reg(c, CONFIG_REGION, PCI_COMMAND) & 0xffff,
        0,
        "{what}: command"
    );
}

/// Sends `bytes` (with the fds of `fds`, if any), then leaves.
fn send_and_leave(c: RawClient, bytes: &[u8], with_fds: bool) {
    use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
    use std::io::IoSlice;
    use std::mem::MaybeUninit;
    let efd = eventfd(0, EventfdFlags::NONBLOCK).unwrap();
    let memfd = named_sealed_memfd("hostile-cut-ram", 1 << 20);
    let fds = [efd.as_fd(), memfd.as_fd()];
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(2))];
    let mut ancillary = SendAncillaryBuffer::new(&mut space);
    if with_fds {
        assert!(ancillary.push(SendAncillaryMessage::ScmRights(&fds)));
    }
    if !bytes.is_empty() {
        let sent = rustix::net::sendmsg(
            &c.sock,
            &[IoSlice::new(bytes)],
            &mut ancillary,
            SendFlags::empty(),
        );
        assert_eq!(sent.unwrap(), bytes.len());
    }
    hang_up(c);
}

fn message(command: Command, body: &[u8]) -> Vec<u8> {
    let mut header = common::request(7, command as u16, header_flags::TYPE_REQUEST);
    header.message_size = (HEADER_SIZE + body.len()) as u32;
    let mut bytes = header.as_bytes().to_vec();
    bytes.extend_from_slice(body);
    bytes
}

#[test]
fn test_disconnect_in_the_middle_of_a_message_releases_everything() {
    let _serial = serial();
    let path = start_accel_server(ServerOptions::default());
    served_again(&path);
    let idle = open_fds();
    let rss_before = status_kib("VmRSS");
    let messages = [
        message(Command::DmaMap, &dma_map_body(0, 1 << 20, 0)),
        message(Command::DeviceSetIrqs, &set_irqs_body(0, 2)),
        message(
            Command::RegionWrite,
            &region_write_body(0, offset::SCRATCH, &[1; 4]),
        ),
        message(
            Command::RegionWrite,
            &region_write_body(0, 0, &vec![0; 64 << 10]),
        ),
    ];
    let mut cases = 0;
    for bytes in &messages {
        // Nothing, part of the header, the header alone, half the body, all but one byte.
        let cuts = [
            0,
            7,
            HEADER_SIZE,
            (HEADER_SIZE + bytes.len()) / 2,
            bytes.len() - 1,
        ];
        for cut in cuts {
            for with_fds in [false, true] {
                if cut == 0 && with_fds {
                    continue; // fds need at least one byte to travel with
                }
                let mut c = connect(&path);
                c.negotiate();
                write_reg(&mut c, 0, offset::SCRATCH, 0x5a5a);
                send_and_leave(c, &bytes[..cut], with_fds);
                let mut next = connect(&path);
                next.negotiate();
                let what = format!("cut at {cut} of {}, fds {with_fds}", bytes.len());
                assert_power_on_state(&mut next, &what);
                hang_up(next);
                assert_eq!(open_fds(), idle, "{what}");
                assert_eq!(memfd_mappings("hostile-cut-ram"), 0, "{what}");
                cases += 1;
            }
        }
    }
    let rss_after = status_kib("VmRSS");
    eprintln!(
        "{cases} cut messages; fds {idle} -> {}; VmRSS KiB {rss_before} -> {rss_after}",
        open_fds()
    );
    assert!(rss_after < rss_before + 8 * 1024);
}

/// Enables bus mastering and starts a plain-engine copy of `len` bytes (posted, as QEMU
/// writes BARs), with the completion interrupt on vector 0.
fn start_copy(c: &mut RawClient, src: u64, dst: u64, len: u32) {
    write_reg(c, CONFIG_REGION, PCI_COMMAND, MEMORY | BUS_MASTER);
    for (reg, value) in [(offset::DMA_SRC, src), (offset::DMA_DST, dst)] {
        write_reg(c, 0, reg, value as u32);
        write_reg(c, 0, reg + 4, (value >> 32) as u32);
    }
    write_reg(c, 0, offset::DMA_LEN, len);
    let start = DmaCmd::new().with_start(true).with_irq(true).into_bits();
    post_reg(c, 0, offset::DMA_CMD, start);
}

/// How the client leaves while the server waits for its answer to a DMA request.
#[derive(Clone, Copy, Debug)]
enum Leave {
    /// Never answers.
    Silent,
    /// Sends half of the reply's header.
    HalfHeader,
    /// Sends the reply's header announcing the data, and half of it.
    HalfBody,
}

fn leave_during(mut c: RawClient, leave: Leave) {
    let req = c.recv();
    let mut header = req.header;
    header.flags = header_flags::TYPE_REPLY;
    match leave {
        Leave::Silent => {}
        Leave::HalfHeader => c.send_raw(&header.as_bytes()[..8]),
        Leave::HalfBody => {
            header.message_size = (HEADER_SIZE + req.body.len() + 4096) as u32;
            let mut bytes = header.as_bytes().to_vec();
            bytes.extend_from_slice(&req.body[..req.body.len() / 2]);
            c.send_raw(&bytes);
        }
    }
    hang_up(c);
}

#[test]
fn test_disconnect_while_the_server_waits_for_a_dma_reply_frees_the_server_at_once() {
    let _serial = serial();
    let path = start_accel_server(ServerOptions::default());
    served_again(&path);
    let idle = open_fds();
    let rss_before = status_kib("VmRSS");
    let ram_name = "hostile-dma-wait-ram";
    let mut cases = 0;
    // DMA_READ: the source has no fd. DMA_WRITE: the source is a mapped memfd, the
    // destination has no fd.
    for command in [Command::DmaRead, Command::DmaWrite] {
        for leave in [Leave::Silent, Leave::HalfHeader, Leave::HalfBody] {
            let mut c = connect(&path);
            c.negotiate();
            let ram = named_sealed_memfd(ram_name, 1 << 20);
            let irq = eventfd(0, EventfdFlags::NONBLOCK).unwrap();
            assert_eq!(set_irqs(&mut c, 0, 1, &[irq.as_fd()]), Ok(()));
            assert_eq!(dma_map(&mut c, 0, 1 << 20, &[ram.as_fd()]), Ok(()));
            assert_eq!(dma_map(&mut c, 1 << 30, 1 << 20, &[]), Ok(()));
            let (src, dst) = match command {
                Command::DmaRead => (1 << 30, 0),
                _ => (0, 1 << 30),
            };
            start_copy(&mut c, src, dst, 1 << 20);
            let left = Instant::now();
            leave_during(c, leave);
            drop((ram, irq));
            let mut next = connect(&path);
            next.negotiate();
            let what = format!("{command:?}, {leave:?}");
            assert!(
                left.elapsed() < PROMPTLY,
                "{what}: next client kept waiting {:?}",
                left.elapsed()
            );
            assert_power_on_state(&mut next, &what);
            hang_up(next);
            assert_eq!(open_fds(), idle, "{what}");
            assert_eq!(memfd_mappings(ram_name), 0, "{what}");
            cases += 1;
        }
    }
    let rss_after = status_kib("VmRSS");
    eprintln!("{cases} clients left during a DMA request; fds {idle} -> {}; VmRSS KiB {rss_before} -> {rss_after}", open_fds());
    assert!(rss_after < rss_before + 8 * 1024);
}

#[test]
fn test_disconnect_in_the_middle_of_device_jobs_releases_everything() {
    let _serial = serial();
    let path = start_accel_server(ServerOptions::default());
    served_again(&path);
    let idle = open_fds();
    let (rss_before, shmem_before) = (status_kib("VmRSS"), status_kib("RssShmem"));
    let ram_name = "hostile-job-ram";
    let size: u64 = 64 << 20;
    let mut shmem_during = 0;
    for round in 0..4 {
        let mut c = connect(&path);
        c.negotiate();
        let ram = named_sealed_memfd(ram_name, size);
        let irqs: Vec<_> = (0..4)
            .map(|_| eventfd(0, EventfdFlags::NONBLOCK).unwrap())
            .collect();
        let borrowed: Vec<_> = irqs.iter().map(|f| f.as_fd()).collect();
        assert_eq!(set_irqs(&mut c, 0, 4, &borrowed), Ok(()));
        assert_eq!(dma_map(&mut c, 0, size, &[ram.as_fd()]), Ok(()));
        if round % 2 == 0 {
            // The plain engine: 1 MiB copies, the client leaves as soon as one starts.
            start_copy(&mut c, 0, 32 << 20, 1 << 20);
        } else {
            // Work queue 0: 63 MiB of copies queued (a ring of 64 at 0x1000).
            write_reg(&mut c, CONFIG_REGION, PCI_COMMAND, MEMORY | BUS_MASTER);
            let wq0 = offset::WQ_BLOCKS;
            write_reg(&mut c, 0, wq0 + wq_offset::BASE, 0x1000);
            write_reg(&mut c, 0, wq0 + wq_offset::SIZE, 64);
            let enable = WqCtrl::new().with_enable(true).into_bits();
            write_reg(&mut c, 0, wq0 + wq_offset::CTRL, enable);
            use std::os::unix::fs::FileExt;
            use vsvm::devices::accel::descriptor::{Descriptor, DESCRIPTOR_SIZE};
            for i in 0..63u64 {
                let desc = Descriptor::memmove(i << 20, (32 << 20) + ((i % 31) << 20), 1 << 20);
                ram.write_all_at(desc.as_bytes(), 0x1000 + i * DESCRIPTOR_SIZE)
                    .unwrap();
            }
            post_reg(&mut c, 0, wq0 + wq_offset::TAIL, 63);
        }
        // Leave once the engine has touched guest RAM through its mapping of it.
        wait_until("the job runs", || {
            status_kib("RssShmem") > shmem_before + 512
        });
        shmem_during = shmem_during.max(status_kib("RssShmem"));
        drop((ram, irqs));
        drop(c); // gone at once: no hang-up handshake
        let mut next = connect(&path);
        next.negotiate();
        let what = format!("round {round}");
        assert_power_on_state(&mut next, &what);
        hang_up(next);
        assert_eq!(open_fds(), idle, "{what}");
        assert_eq!(memfd_mappings(ram_name), 0, "{what}");
    }
    let (rss_after, shmem_after) = (status_kib("VmRSS"), status_kib("RssShmem"));
    eprintln!(
        "4 clients left with jobs running; fds {idle} -> {}; VmRSS KiB {rss_before} -> \
         {rss_after}; RssShmem KiB {shmem_before} -> up to {shmem_during} -> {shmem_after}",
        open_fds()
    );
    assert!(rss_after < rss_before + 8 * 1024);
    assert!(
        shmem_after < shmem_before + 1024,
        "the pages jobs touched are freed"
    );
}

/// Whether a reply is waiting on `c` within `wait`.
fn readable(c: &RawClient, wait: Duration) -> bool {
    let mut pfd = [PollFd::new(&c.sock, PollFlags::IN)];
    let ts = Timespec {
        tv_sec: wait.as_secs() as i64,
        tv_nsec: wait.subsec_nanos() as i64,
    };
    rustix::event::poll(&mut pfd, Some(&ts)).unwrap() == 1
}

#[test]
fn test_second_client_waits_unanswered_and_never_disturbs_the_first() {
    let _serial = serial();
    let path = start_accel_server(ServerOptions::default());
    let mut first = connect(&path);
    first.negotiate();
    let ram = named_sealed_memfd("hostile-second-ram", 1 << 20);
    assert_eq!(dma_map(&mut first, 0, 1 << 20, &[ram.as_fd()]), Ok(()));
    write_reg(&mut first, 0, offset::SCRATCH, 0x1111);
    // The second client connects (the kernel queues it) and asks; a third asks and leaves.
    let mut second = connect(&path);
    let version = second.send(
        Command::Version as u16,
        header_flags::TYPE_REQUEST,
        &{
            let mut b = vec![0u8; 4];
            b.extend_from_slice(b"{\"capabilities\":{}}\0");
            b
        },
        &[],
    );
    let mut third = connect(&path);
    third.send(
        Command::DeviceReset as u16,
        header_flags::TYPE_REQUEST,
        &[],
        &[],
    );
    drop(third);
    assert!(
        !readable(&second, Duration::from_millis(300)),
        "one client at a time"
    );
    // The first is served as before: its registers, its map, a job with its fds.
    assert_eq!(read_reg(&mut first, 0, offset::SCRATCH), 0x1111);
    let irq = eventfd(0, EventfdFlags::NONBLOCK).unwrap();
    assert_eq!(set_irqs(&mut first, 0, 1, &[irq.as_fd()]), Ok(()));
    use std::os::unix::fs::FileExt;
    ram.write_all_at(&[0x42; 4096], 0).unwrap();
    start_copy(&mut first, 0, 0x8000, 4096);
    wait_until("the job is done", || {
        DmaStatus::from_bits(read_reg(&mut first, 0, offset::DMA_STATUS)).state() == DmaState::Done
    });
    let mut out = [0u8; 4096];
    ram.read_exact_at(&mut out, 0x8000).unwrap();
    assert!(out.iter().all(|b| *b == 0x42));
    assert!(!readable(&second, Duration::ZERO));
    // Once the first leaves, the second is answered, and finds the function at power-on.
    hang_up(first);
    assert_eq!(memfd_mappings("hostile-second-ram"), 0);
    assert!(
        readable(&second, Duration::from_secs(5)),
        "the second client is served"
    );
    let reply = second.recv();
    assert_eq!(reply.header.msg_id, version);
    assert!(!reply.header.is_error());
    assert_power_on_state(&mut second, "second client");
    hang_up(second);
    // The third client's leftover request did not keep the socket from the next one.
    served_again(&path);
}
