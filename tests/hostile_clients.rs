//! Hostile clients over a real UNIX socket (issue 12): interrupt fds that would block the
//! server, clients that leave maps, fds and device state behind, and map tables pushed to and
//! past their limits. The server runs in this process, so the tests measure its fds and
//! mappings in /proc/self; a client's departure is followed by the next client being served.

mod common;

use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rustix::event::{eventfd, EventfdFlags};
use rustix::fs::OFlags;
use zerocopy::{FromBytes, IntoBytes};

use common::accel::AccelDriver;
use common::ram::named_sealed_memfd;
use common::socket::{
    connect, hang_up, mappings, memfd_mappings, open_fds, start_accel_server, status_kib,
};
use common::wire::{
    dma_map_body, dma_unmap, outcome, post_reg, read_reg, served_again, set_irqs, wait_until,
    write_reg, BUS_MASTER, MEMORY, PAGE, PCI_COMMAND,
};
use common::RawClient;
use vsvm::devices::accel;
use vsvm::devices::accel::completion::CompletionRecord;
use vsvm::devices::accel::descriptor::{Descriptor, DESCRIPTOR_SIZE};
use vsvm::devices::accel::regs::{offset, wq_offset, DmaCmd, DmaState, DmaStatus, ErrCtl, WqCtrl};
use vsvm::endpoint::CONFIG_REGION;
use vsvm::vfio_user::protocol::{header_flags, Command, DmaAccess};
use vsvm::vfio_user::{Device, DmaLimits, ServerOptions};

const EINVAL: i32 = 22;
const EEXIST: i32 = 17;
const ENOSPC: i32 = 28;
/// An eventfd counter one below its maximum: a blocking write of 1 would wait.
const SATURATED: u64 = u64::MAX - 1;
/// Work queue 0's register block.
const WQ0: u64 = offset::WQ_BLOCKS;

/// The tests count this process's fds and mappings: one test at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

// --- the wire ---------------------------------------------------------------------------------

/// DMA_MAP of `[address, address + size)`, read-write; with `fd` at offset `fd_offset`.
fn dma_map(
    c: &mut RawClient,
    address: u64,
    size: u64,
    fd: Option<(BorrowedFd, u64)>,
) -> Result<(), i32> {
    let (fds, offset) = match fd {
        Some((fd, offset)) => (vec![fd], offset),
        None => (vec![], 0),
    };
    outcome(&c.call_fds(Command::DmaMap, &dma_map_body(address, size, offset), &fds))
}

/// SET_IRQS: `fd` as MSI-X vector `vector`'s interrupt.
fn set_irq_fd(c: &mut RawClient, vector: u32, fd: BorrowedFd) -> Result<(), i32> {
    set_irqs(c, vector, 1, &[fd])
}

/// The `max_dma_maps` the server advertises.
fn negotiate_max_dma_maps(c: &mut RawClient) -> u64 {
    let reply = c.negotiate();
    let json = reply.body[4..].strip_suffix(&[0]).unwrap();
    let caps: serde_json::Value = serde_json::from_slice(json).unwrap();
    caps["capabilities"]["max_dma_maps"].as_u64().unwrap()
}

fn dma_state(c: &mut RawClient) -> DmaState {
    DmaStatus::from_bits(read_reg(c, 0, offset::DMA_STATUS)).state()
}

/// Plays QEMU for one DMA_READ of the server: answers it from `ram`, where guest address
/// `base` is at offset 0.
fn serve_dma_read(c: &mut RawClient, ram: &File, base: u64) {
    let req = c.recv();
    assert_eq!(req.header.command, Command::DmaRead as u16);
    let (access, _) = DmaAccess::read_from_prefix(&req.body).unwrap();
    let mut body = access.as_bytes().to_vec();
    let mut data = vec![0; access.count as usize];
    ram.read_exact_at(&mut data, access.address - base).unwrap();
    body.extend_from_slice(&data);
    let mut header = req.header;
    header.flags = header_flags::TYPE_REPLY;
    header.message_size = (16 + body.len()) as u32;
    let mut bytes = header.as_bytes().to_vec();
    bytes.extend_from_slice(&body);
    c.send_raw(&bytes);
}

fn read_counter(fd: &OwnedFd) -> u64 {
    let mut buf = [0u8; 8];
    rustix::io::read(fd, &mut buf).unwrap();
    u64::from_ne_bytes(buf)
}

// --- 1. interrupt fds ---------------------------------------------------------------------

/// IRQ_RAISE of vector 0 from the connection thread, then a plain-engine job that fails (no
/// bus mastering) and raises vector 0 from the engine thread; both must leave the server
/// answering.
fn raise_from_both_threads(c: &mut RawClient) {
    write_reg(c, 0, offset::IRQ_RAISE, 0);
    write_reg(c, CONFIG_REGION, PCI_COMMAND, MEMORY);
    write_reg(c, 0, offset::DMA_LEN, PAGE as u32);
    let cmd = DmaCmd::new().with_start(true).with_irq(true);
    write_reg(c, 0, offset::DMA_CMD, cmd.into_bits());
    wait_until("the job failed", || dma_state(c) == DmaState::Error);
}

#[test]
fn test_saturated_blocking_eventfd_never_blocks_the_server() {
    let _serial = serial();
    let path = start_accel_server(ServerOptions::default());
    let mut c = connect(&path);
    c.negotiate();
    let efd = eventfd(0, EventfdFlags::empty()).unwrap();
    rustix::io::write(&efd, &SATURATED.to_ne_bytes()).unwrap();
    assert_eq!(set_irq_fd(&mut c, 0, efd.as_fd()), Ok(()));
    raise_from_both_threads(&mut c);
    // The interrupt was pending all along; once taken, the vector fires again.
    assert_eq!(read_counter(&efd), SATURATED);
    write_reg(&mut c, 0, offset::IRQ_RAISE, 0);
    // 1, or 2 when the failed job's interrupt came after the read.
    assert!((1..=2).contains(&read_counter(&efd)));
    hang_up(c);
    served_again(&path);
}

#[test]
fn test_eventfd_the_client_makes_blocking_again_is_dropped_not_waited_on() {
    let _serial = serial();
    let path = start_accel_server(ServerOptions::default());
    let mut c = connect(&path);
    c.negotiate();
    let efd = eventfd(0, EventfdFlags::NONBLOCK).unwrap();
    assert_eq!(set_irq_fd(&mut c, 0, efd.as_fd()), Ok(()));
    write_reg(&mut c, 0, offset::IRQ_RAISE, 0);
    assert_eq!(read_counter(&efd), 1, "a well-behaved eventfd is signalled");
    // The file status flags are shared with the server's copy: make it blocking, and full.
    rustix::fs::fcntl_setfl(&efd, OFlags::empty()).unwrap();
    rustix::io::write(&efd, &SATURATED.to_ne_bytes()).unwrap();
    raise_from_both_threads(&mut c);
    assert_eq!(read_counter(&efd), SATURATED, "never written again");
    write_reg(&mut c, 0, offset::IRQ_RAISE, 0);
    let mut pfd = [rustix::event::PollFd::new(
        &efd,
        rustix::event::PollFlags::IN,
    )];
    let zero = rustix::event::Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    assert_eq!(
        rustix::event::poll(&mut pfd, Some(&zero)).unwrap(),
        0,
        "vector dropped"
    );
    hang_up(c);
    served_again(&path);
}

#[test]
fn test_interrupt_fds_that_are_not_eventfds_are_refused() {
    let _serial = serial();
    let path = start_accel_server(ServerOptions::default());
    let mut c = connect(&path);
    c.negotiate();
    // A full pipe whose read end the client keeps: a write would wait as long as it likes.
    let (pipe_read, pipe_write) = rustix::pipe::pipe().unwrap();
    rustix::fs::fcntl_setfl(&pipe_write, OFlags::NONBLOCK).unwrap();
    while rustix::io::write(&pipe_write, &[0; 4096]).is_ok() {}
    rustix::fs::fcntl_setfl(&pipe_write, OFlags::empty()).unwrap();
    assert_eq!(set_irq_fd(&mut c, 0, pipe_write.as_fd()), Err(EINVAL));
    // A file: 8 bytes written into it would be data, not an interrupt.
    let file = named_sealed_memfd("hostile-irq-file", 0);
    assert_eq!(set_irq_fd(&mut c, 1, file.as_fd()), Err(EINVAL));
    let (sock, _peer) = std::os::unix::net::UnixStream::pair().unwrap();
    assert_eq!(set_irq_fd(&mut c, 2, sock.as_fd()), Err(EINVAL));
    raise_from_both_threads(&mut c);
    write_reg(&mut c, 0, offset::IRQ_RAISE, 1);
    assert_eq!(file.metadata().unwrap().len(), 0);
    hang_up(c);
    served_again(&path);
    drop(pipe_read);
}

// --- 2 and 3. what a client leaves behind -------------------------------------------------

/// A guest-RAM layout for one work-queue client.
const RING: u64 = 0x1000;
const RECORDS: u64 = 0x4000;
const SRC: u64 = 0x10_0000;
const DST: u64 = 0x80_0000;
const MIB: u32 = 1 << 20;

/// Maps `ram` (`size` bytes) at GPA 0, enables bus mastering and work queue 0 with a 64-slot
/// ring at [`RING`], writes `jobs` 1 MiB MEMMOVEs with records at [`RECORDS`] and rings the
/// doorbell (posted, as QEMU would).
fn start_work_queue(c: &mut RawClient, ram: &File, size: u64, jobs: u32) {
    assert_eq!(dma_map(c, 0, size, Some((ram.as_fd(), 0))), Ok(()));
    write_reg(c, CONFIG_REGION, PCI_COMMAND, MEMORY | BUS_MASTER);
    write_reg(c, 0, WQ0 + wq_offset::BASE, RING as u32);
    write_reg(c, 0, WQ0 + wq_offset::SIZE, 64);
    let ctrl = WqCtrl::new().with_enable(true);
    write_reg(c, 0, WQ0 + wq_offset::CTRL, ctrl.into_bits());
    for i in 0..jobs {
        let record = RECORDS + u64::from(i) * 32;
        let desc = Descriptor::memmove(SRC, DST, MIB).with_completion(record);
        let slot = RING + u64::from(i) * DESCRIPTOR_SIZE;
        ram.write_all_at(desc.as_bytes(), slot).unwrap();
    }
    post_reg(c, 0, WQ0 + wq_offset::TAIL, jobs);
}

fn record(ram: &File, index: u64) -> CompletionRecord {
    let mut bytes = [0u8; 32];
    ram.read_exact_at(&mut bytes, RECORDS + index * 32).unwrap();
    CompletionRecord::read_from_bytes(&bytes).unwrap()
}

#[test]
fn test_disconnect_releases_the_clients_maps_fds_and_memory() {
    let _serial = serial();
    let path = start_accel_server(ServerOptions::default());
    // What a fresh client costs: its socket, the server's end and the server's writer.
    let idle_fds = open_fds();
    let mut fresh = connect(&path);
    fresh.negotiate();
    let connected_fds = open_fds();
    hang_up(fresh);
    let (rss_before, shmem_before) = (status_kib("VmRSS"), status_kib("RssShmem"));

    let name = "hostile-disconnect-ram";
    let size = 256 << 20;
    let mut c = connect(&path);
    c.negotiate();
    let ram = named_sealed_memfd(name, size);
    start_work_queue(&mut c, &ram, size, 1);
    wait_until("the job completed", || record(&ram, 0).status != 0);
    assert_eq!(record(&ram, 0).bytes_completed, MIB);
    assert_eq!(memfd_mappings(name), 1, "the server maps the client's RAM");
    let (rss_during, shmem_during) = (status_kib("VmRSS"), status_kib("RssShmem"));
    drop(ram);
    hang_up(c);

    let mut next = connect(&path);
    next.negotiate();
    let (rss_after, shmem_after) = (status_kib("VmRSS"), status_kib("RssShmem"));
    eprintln!(
        "fds: idle {idle_fds}, with a fresh client {connected_fds}, with the next client \
         after a work-queue client left {}; RSS KiB {rss_before} -> {rss_during} (job ran) \
         -> {rss_after} (client left); RssShmem KiB {shmem_before} -> {shmem_during} -> \
         {shmem_after}",
        open_fds()
    );
    assert_eq!(memfd_mappings(name), 0, "the left client's RAM is unmapped");
    assert_eq!(
        open_fds(),
        connected_fds,
        "no fd of the left client is kept"
    );
    assert!(
        shmem_after + 1024 < shmem_during,
        "the pages the job touched are freed"
    );
    // And its address space is free for the next client's RAM.
    let ram = named_sealed_memfd("hostile-disconnect-next", size);
    assert_eq!(dma_map(&mut next, 0, size, Some((ram.as_fd(), 0))), Ok(()));
    hang_up(next);
}

/// What a new client must read: the function at power-on.
fn assert_power_on_state(c: &mut RawClient, round: usize) {
    let regs = [
        ("WQ0_STATUS", WQ0 + wq_offset::STATUS),
        ("WQ0_CTRL", WQ0 + wq_offset::CTRL),
        ("WQ0_HEAD", WQ0 + wq_offset::HEAD),
        ("WQ0_TAIL", WQ0 + wq_offset::TAIL),
        ("WQ0_DONE", WQ0 + wq_offset::DONE),
        ("WQ0_BASE", WQ0 + wq_offset::BASE),
        ("DMA_STATUS", offset::DMA_STATUS),
        ("DMA_DONE", offset::DMA_DONE),
        ("SWERR", offset::SWERR),
        ("ERRCTL", offset::ERRCTL),
    ];
    for (name, at) in regs {
        assert_eq!(read_reg(c, 0, at), 0, "round {round}: {name}");
    }
    let command = read_reg(c, CONFIG_REGION, PCI_COMMAND) & 0xffff;
    assert_eq!(command, 0, "round {round}: PCI command");
}

#[test]
fn test_next_client_sees_power_on_state_after_a_work_queue_client() {
    let _serial = serial();
    let path = start_accel_server(ServerOptions::default());
    let size = 16 << 20;
    for round in 0..6 {
        let mut c = connect(&path);
        c.negotiate();
        if round % 2 == 0 {
            // 63 MiB of copying queued: the engine is busy when the client leaves.
            let ram = named_sealed_memfd("hostile-state-ram", size);
            start_work_queue(&mut c, &ram, size, 63);
            let errctl = ErrCtl::new().with_irq_enable(true).with_vector(3);
            write_reg(&mut c, 0, offset::ERRCTL, errctl.into_bits());
        } else {
            // RAM without fd: the engine waits for a DMA_READ reply that never comes.
            assert_eq!(dma_map(&mut c, 0, size, None), Ok(()));
            write_reg(&mut c, CONFIG_REGION, PCI_COMMAND, MEMORY | BUS_MASTER);
            write_reg(&mut c, 0, WQ0 + wq_offset::BASE, RING as u32);
            write_reg(&mut c, 0, WQ0 + wq_offset::SIZE, 64);
            let ctrl = WqCtrl::new().with_enable(true);
            write_reg(&mut c, 0, WQ0 + wq_offset::CTRL, ctrl.into_bits());
            post_reg(&mut c, 0, WQ0 + wq_offset::TAIL, 1);
            let req = c.recv();
            assert_eq!(req.header.command, Command::DmaRead as u16, "ring fetch");
        }
        // Gone at once, without waiting for the server: the next client's first read may
        // race with the disconnect, and must still find the function at power-on.
        drop(c);
        let mut next = connect(&path);
        next.negotiate();
        assert_power_on_state(&mut next, round);
        hang_up(next);
    }
}

/// The same, with no socket in between, so nothing hides a gap between `disconnected`
/// returning and the engines letting go: the device must be quiet when it returns.
#[test]
fn test_disconnected_returns_only_once_the_engines_let_go() {
    let _serial = serial();
    let name = "hostile-quiesce-ram";
    let size = 80 << 20;
    let ep = accel::endpoint(accel::VENDOR_ID, accel::DEVICE_ID).unwrap();
    let mut drv = AccelDriver::new(ep, named_sealed_memfd(name, size), size, RING);
    drv.enable_wq(0, false);
    let jobs: Vec<_> = (0..63u64)
        .map(|i| Descriptor::memmove(SRC + (i << 20), DST + (i << 20), MIB))
        .collect();
    drv.submit(0, &jobs);
    wait_until("the engine runs", || drv.wq_status(0).busy());
    drv.ep.disconnected();
    assert_eq!(memfd_mappings(name), 0, "no engine holds the RAM any more");
    assert_eq!(drv.read32(AccelDriver::wq_reg(0, wq_offset::STATUS)), 0);
}

// --- 4. the map limit ---------------------------------------------------------------------

fn limits(max_maps: usize, max_fd_maps: usize) -> ServerOptions {
    ServerOptions {
        dma: DmaLimits {
            max_maps,
            max_fd_maps,
        },
        ..ServerOptions::default()
    }
}

/// Guest address of the `i`th three-page region of a table test.
fn region(i: u64) -> u64 {
    0x1_0000_0000 + i * 0x10000
}

#[test]
fn test_map_limit_holds_at_and_past_the_edge_splits_included() {
    let _serial = serial();
    let path = start_accel_server(limits(64, 64));
    let mut c = connect(&path);
    assert_eq!(negotiate_max_dma_maps(&mut c), 64);
    for i in 0..64 {
        assert_eq!(
            dma_map(&mut c, region(i), 3 * PAGE, None),
            Ok(()),
            "map {i}"
        );
    }
    assert_eq!(dma_map(&mut c, region(64), PAGE, None), Err(ENOSPC));
    // A cut inside a region would leave 65.
    assert_eq!(dma_unmap(&mut c, region(5) + PAGE, PAGE), Err(ENOSPC));
    assert_eq!(
        dma_map(&mut c, region(5) + PAGE, PAGE, None),
        Err(EEXIST),
        "the refused unmap changed nothing"
    );
    // Cutting an end, or across two regions, adds none.
    assert_eq!(dma_unmap(&mut c, region(5), PAGE), Ok(()));
    assert_eq!(dma_unmap(&mut c, region(6) + 2 * PAGE, 0x10000), Ok(()));
    assert_eq!(dma_map(&mut c, region(64), PAGE, None), Err(ENOSPC));
    // One region gone makes room for exactly one split.
    assert_eq!(dma_unmap(&mut c, region(8), 3 * PAGE), Ok(()));
    assert_eq!(dma_unmap(&mut c, region(9) + PAGE, PAGE), Ok(()));
    assert_eq!(dma_unmap(&mut c, region(10) + PAGE, PAGE), Err(ENOSPC));
    assert_eq!(dma_map(&mut c, region(64), PAGE, None), Err(ENOSPC));
    hang_up(c);
    // The next client starts from an empty table.
    let mut next = connect(&path);
    next.negotiate();
    for i in 0..64 {
        assert_eq!(dma_map(&mut next, region(i), PAGE, None), Ok(()), "map {i}");
    }
    hang_up(next);
}

/// Median time of `f(i)` for each `i` in `range` (the median: other processes on this
/// machine preempt the odd call).
fn median(range: std::ops::Range<u64>, mut f: impl FnMut(u64)) -> Duration {
    let mut times: Vec<Duration> = range
        .map(|i| {
            let start = Instant::now();
            f(i);
            start.elapsed()
        })
        .collect();
    times.sort();
    times[times.len() / 2]
}

#[test]
fn test_map_and_unmap_cost_does_not_grow_with_the_table() {
    let _serial = serial();
    let path = start_accel_server(ServerOptions::default());
    let mut c = connect(&path);
    let max = negotiate_max_dma_maps(&mut c);
    assert_eq!(max, DmaLimits::DEFAULT.max_maps as u64);
    const N: u64 = 2000;
    let map = |c: &mut RawClient, i| assert_eq!(dma_map(c, region(i), 3 * PAGE, None), Ok(()));
    let trim = |c: &mut RawClient, i| assert_eq!(dma_unmap(c, region(i), PAGE), Ok(()));
    let map_empty = median(0..N, |i| map(&mut c, i));
    let unmap_empty = median(0..N, |i| trim(&mut c, i));
    let fill = Instant::now();
    (N..max).for_each(|i| map(&mut c, i));
    let fill = fill.elapsed();
    assert_eq!(dma_map(&mut c, region(max), PAGE, None), Err(ENOSPC));
    assert_eq!(dma_unmap(&mut c, region(N) + PAGE, PAGE), Err(ENOSPC));
    let unmap_full = median(N..2 * N, |i| trim(&mut c, i));
    let remove = |c: &mut RawClient, i| assert_eq!(dma_unmap(c, region(i), 3 * PAGE), Ok(()));
    (N..2 * N).for_each(|i| remove(&mut c, i));
    let map_full = median(N..2 * N, |i| map(&mut c, i));
    eprintln!(
        "per DMA_MAP: {map_empty:?} with up to {N} maps, {map_full:?} with {max}; per \
         DMA_UNMAP: {unmap_empty:?} / {unmap_full:?}; {} maps filled in {fill:?}",
        max - N
    );
    // A table copied per change costs ~30x more per map at the limit than near empty.
    assert!(map_full < map_empty * 4, "{map_full:?} vs {map_empty:?}");
    assert!(
        unmap_full < unmap_empty * 4,
        "{unmap_full:?} vs {unmap_empty:?}"
    );
}

// --- 5. fd maps and the process's mappings ------------------------------------------------

#[test]
fn test_fd_maps_beyond_the_budget_are_reached_through_the_client() {
    let _serial = serial();
    let path = start_accel_server(limits(64, 8));
    let mut c = connect(&path);
    c.negotiate();
    let name = "hostile-budget-ram";
    let ram = named_sealed_memfd(name, 16 * PAGE);
    for page in 0..16u8 {
        ram.write_all_at(&[page + 1; PAGE as usize], u64::from(page) * PAGE)
            .unwrap();
    }
    // Region i: one page at GPA 1 GiB + i MiB, fd page i.
    let gpa = |i: u64| (1 << 30) + (i << 20);
    for i in 0..12 {
        let fd = Some((ram.as_fd(), i * PAGE));
        assert_eq!(dma_map(&mut c, gpa(i), PAGE, fd), Ok(()), "map {i}");
    }
    assert_eq!(memfd_mappings(name), 8, "8 mapped, 4 through the client");
    // Copy from a map past the budget into a mapped one: the source comes by DMA_READ.
    write_reg(&mut c, CONFIG_REGION, PCI_COMMAND, MEMORY | BUS_MASTER);
    for (reg, value) in [(offset::DMA_SRC, gpa(10)), (offset::DMA_DST, gpa(0))] {
        write_reg(&mut c, 0, reg, value as u32);
        write_reg(&mut c, 0, reg + 4, (value >> 32) as u32);
    }
    write_reg(&mut c, 0, offset::DMA_LEN, PAGE as u32);
    post_reg(
        &mut c,
        0,
        offset::DMA_CMD,
        DmaCmd::new().with_start(true).into_bits(),
    );
    serve_dma_read(&mut c, &ram, gpa(10) - 10 * PAGE);
    wait_until("the copy is done", || dma_state(&mut c) == DmaState::Done);
    let mut page0 = vec![0; PAGE as usize];
    ram.read_exact_at(&mut page0, 0).unwrap();
    assert!(page0.iter().all(|b| *b == 11), "page 10's bytes arrived");
    // An unmapped fd map gives its place back.
    assert_eq!(dma_unmap(&mut c, gpa(0), PAGE), Ok(()));
    assert_eq!(memfd_mappings(name), 7);
    assert_eq!(
        dma_map(&mut c, gpa(12), PAGE, Some((ram.as_fd(), 0))),
        Ok(())
    );
    assert_eq!(memfd_mappings(name), 8);
    hang_up(c);
    served_again(&path);
    assert_eq!(memfd_mappings(name), 0);
}

#[test]
fn test_fd_maps_up_to_max_dma_maps_never_exhaust_the_process_mappings() {
    let _serial = serial();
    let path = start_accel_server(ServerOptions::default());
    let mut c = connect(&path);
    let max = negotiate_max_dma_maps(&mut c);
    let max_map_count: usize = std::fs::read_to_string("/proc/sys/vm/max_map_count")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let name = "hostile-vma-ram";
    let ram = named_sealed_memfd(name, PAGE);
    // Every map is the same page, so the kernel cannot merge the mappings.
    for i in 0..max {
        let fd = Some((ram.as_fd(), 0));
        assert_eq!(dma_map(&mut c, i * 2 * PAGE, PAGE, fd), Ok(()), "map {i}");
    }
    assert_eq!(
        dma_map(&mut c, max * 2 * PAGE, PAGE, Some((ram.as_fd(), 0))),
        Err(ENOSPC)
    );
    let (ours, all) = (memfd_mappings(name), mappings());
    eprintln!("{max} fd maps: {ours} mapped, {all} mappings in all (max {max_map_count})");
    assert!(ours > 0 && all < max_map_count, "{all} of {max_map_count}");
    // The process can still map memory and start threads.
    let big = vec![1u8; 64 << 20];
    assert_eq!(std::thread::spawn(move || big[12345]).join().unwrap(), 1);
    hang_up(c);
    served_again(&path);
    assert_eq!(memfd_mappings(name), 0);
}
