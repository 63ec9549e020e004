//! The remap unit's function (the guest's VT-d register window as BAR0, served over
//! vfio-user as `vsvm serve --remap-unit` serves it) under the hostile-client treatment of
//! issue 12 item 2: register accesses at odd offsets and sizes, SET_IRQS with eventfds it has
//! no vector for, a DMA map storm past its limit, odd fds, and clients that leave while the
//! front end uses their maps — whose memory must be released, so the front end never reads a
//! released mapping. The server runs in this process: fds and mappings are counted here.

mod common;

use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};

use rustix::event::{eventfd, EventfdFlags};

use common::ram::named_sealed_memfd;
use common::socket::{connect, hang_up, memfd_mappings, open_fds, status_kib};
use common::wire::*;
use common::RawClient;
use vsvm::devices::accel;
use vsvm::devices::topology::{AccelSpec, RemapSpec, Topology};
use vsvm::endpoint::{CONFIG_REGION, MSIX_IRQ_INDEX};
use vsvm::vfio_user::protocol::{header_flags, Command};
use vsvm::vfio_user::{DmaLimits, ServerOptions};
use vsvm::vtd::regs::{DMAR_FSTS_REG, DMAR_GCMD_REG, DMAR_GSTS_REG, DMAR_IQA_REG, DMAR_IQT_REG};

const ENOSPC: i32 = 28;
const MAX_MAPS: usize = 512;
/// The invalidation queue and the wait descriptors' status words, in the client's RAM.
const IQ_BASE: u64 = 0x1_0000;
const STATUS: u64 = 0x2_0000;
/// GCMD.QIE / GSTS.QIES (VT-d 11.4.4), FSTS.IQE (11.4.6).
const QIE: u32 = 1 << 26;
const IQE: u32 = 1 << 4;

/// The tests count this process's fds and mappings: one test at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Serves a remap unit with one accelerator behind it, as `vsvm serve --remap-unit` builds
/// them, from threads of this process; returns the remap unit's socket.
fn start_remap_unit(n: usize) -> PathBuf {
    let dir = std::env::temp_dir();
    let pid = std::process::id();
    let topology = Topology {
        remap: Some(RemapSpec {
            socket: dir.join(format!("vsvm-hostile-remap-{pid}-{n}.sock")),
            addr: "03.0".parse().unwrap(),
        }),
        accels: vec![AccelSpec {
            socket: dir.join(format!("vsvm-hostile-remap-accel-{pid}-{n}.sock")),
            addr: "04.0".parse().unwrap(),
            vendor_id: accel::VENDOR_ID,
            device_id: accel::DEVICE_ID,
        }],
    };
    let options = ServerOptions {
        dma: DmaLimits {
            max_maps: MAX_MAPS,
            max_fd_maps: MAX_MAPS,
        },
        ..ServerOptions::default()
    };
    let built = topology.build(0xfeb0_0000, |_| ()).unwrap();
    let remap_socket = built.functions[0].socket.clone();
    for mut served in built.functions {
        let listener = vsvm::vfio_user::bind(&served.socket).unwrap();
        let options = options.clone();
        std::thread::spawn(move || {
            vsvm::vfio_user::serve(&listener, &mut *served.device, &options)
        });
    }
    // Keep the front end alive with the functions (they hold it too).
    drop(built.front_end);
    remap_socket
}

fn window() -> u64 {
    Topology::window_size()
}

#[test]
fn test_odd_register_accesses_are_answered_and_the_window_keeps_serving() {
    let _serial = serial();
    let path = start_remap_unit(0);
    let mut c = connect(&path);
    c.negotiate();
    let w = window();
    let offsets = [
        0,
        1,
        2,
        3,
        4,
        7,
        8,
        0x1c,
        0x1d,
        w - 8,
        w - 4,
        w - 1,
        w,
        w + 4,
        1 << 40,
        u64::MAX - 3,
        u64::MAX,
    ];
    let counts = [0u32, 1, 2, 3, 4, 5, 6, 7, 8, 9, 16, 4096];
    let regions = [0u32, 1, 2, 5, CONFIG_REGION, 8, 0xffff];
    let mut cases = 0;
    let (mut ok, mut refused) = (0, 0);
    for region in regions {
        for at in offsets {
            for count in counts {
                let read = c.call(Command::RegionRead, &region_read_body(region, at, count));
                let data = vec![0xffu8; count as usize];
                let write = c.call(Command::RegionWrite, &region_write_body(region, at, &data));
                let body = region_write_body(region, at, &data);
                c.send(
                    Command::RegionWrite as u16,
                    header_flags::NO_REPLY,
                    &body,
                    &[],
                );
                for reply in [read, write] {
                    let beyond = at.checked_add(u64::from(count)).is_none_or(|end| end > w);
                    match outcome(&reply) {
                        Ok(()) => ok += 1,
                        Err(_) => refused += 1,
                    }
                    if region == 0 && beyond {
                        assert!(reply.header.is_error(), "BAR0+0x{at:x}, {count} bytes");
                    }
                }
                cases += 3;
            }
        }
    }
    // Scribbled, but serving: a reset brings the window back, and QI can be turned on.
    assert_eq!(outcome(&c.call(Command::DeviceReset, &[])), Ok(()));
    assert_eq!(read_reg(&mut c, 0, DMAR_GSTS_REG), 0);
    write_reg(&mut c, 0, DMAR_GCMD_REG, QIE);
    assert_eq!(read_reg(&mut c, 0, DMAR_GSTS_REG) & QIE, QIE);
    eprintln!("{cases} odd region accesses on the remap unit: {ok} answered, {refused} refused");
    hang_up(c);
    served_again(&path);
}

#[test]
fn test_set_irqs_storm_and_odd_fds_leave_no_fd_held() {
    let _serial = serial();
    let path = start_remap_unit(1);
    let mut c = connect(&path);
    c.negotiate();
    let fds: Vec<_> = (0..16)
        .map(|_| eventfd(0, EventfdFlags::NONBLOCK).unwrap())
        .collect();
    let borrowed: Vec<BorrowedFd> = fds.iter().map(|f| f.as_fd()).collect();
    let baseline = open_fds();
    // No MSI-X vector to take them: refused, however many, however often.
    for round in 0..200usize {
        let n = 1 + round % 16;
        assert!(
            set_irqs(&mut c, 0, n as u32, &borrowed[..n]).is_err(),
            "round {round}"
        );
        assert_eq!(open_fds(), baseline, "round {round}");
    }
    // Other indexes and a pipe, a directory, a socket as "eventfds".
    let (pipe_read, pipe_write) = rustix::pipe::pipe().unwrap();
    let dir = std::fs::File::open("/").unwrap();
    let (sock, _peer) = std::os::unix::net::UnixStream::pair().unwrap();
    let baseline = open_fds();
    for index in [0u32, 1, 2, 3, 4, 99] {
        for fd in [pipe_write.as_fd(), dir.as_fd(), sock.as_fd(), borrowed[0]] {
            let mut body = set_irqs_body(0, 1);
            body[8..12].copy_from_slice(&index.to_le_bytes());
            let reply = c.call_fds(Command::DeviceSetIrqs, &body, &[fd]);
            assert!(reply.header.is_error(), "index {index}");
            assert_eq!(open_fds(), baseline, "index {index}");
        }
    }
    assert_eq!(MSIX_IRQ_INDEX, 2);
    assert_eq!(read_reg(&mut c, 0, DMAR_GSTS_REG), 0, "still serving");
    hang_up(c);
    served_again(&path);
    drop((pipe_read, pipe_write));
}

#[test]
fn test_map_storm_holds_at_and_past_the_limit() {
    let _serial = serial();
    let path = start_remap_unit(2);
    let ram = named_sealed_memfd("hostile-remap-storm", 4096);
    for round in 0..2 {
        let mut c = connect(&path);
        c.negotiate();
        for i in 0..MAX_MAPS as u64 {
            let fds: &[BorrowedFd] = if i % 2 == 0 { &[ram.as_fd()] } else { &[] };
            assert_eq!(
                dma_map(&mut c, i << 16, PAGE, fds),
                Ok(()),
                "round {round}, map {i}"
            );
        }
        assert_eq!(dma_map(&mut c, 1 << 40, PAGE, &[]), Err(ENOSPC));
        assert_eq!(dma_map(&mut c, 1 << 40, PAGE, &[ram.as_fd()]), Err(ENOSPC));
        assert_eq!(dma_unmap(&mut c, 0, PAGE), Ok(()));
        assert_eq!(dma_map(&mut c, 1 << 40, PAGE, &[]), Ok(()));
        assert_eq!(memfd_mappings("hostile-remap-storm"), MAX_MAPS / 2 - 1);
        assert_eq!(read_reg(&mut c, 0, DMAR_GSTS_REG), 0, "still serving");
        hang_up(c);
        assert_eq!(memfd_mappings("hostile-remap-storm"), 0, "round {round}");
    }
}

/// A queued-invalidation wait with a status write of `data` to `status` (16-byte form).
fn wait_descriptor(status: u64, data: u32) -> [u8; 16] {
    let mut desc = [0u8; 16];
    let low = (u64::from(data) << 32) | (1 << 5) | 0x5; // SW, type 5
    desc[..8].copy_from_slice(&low.to_le_bytes());
    desc[8..].copy_from_slice(&status.to_le_bytes());
    desc
}

fn status_word(ram: &std::fs::File) -> u32 {
    let mut b = [0u8; 4];
    ram.read_exact_at(&mut b, STATUS).unwrap();
    u32::from_le_bytes(b)
}

/// Turns QI on with the queue at [`IQ_BASE`] and rings one wait descriptor in slot `slot`.
fn ring_wait(c: &mut RawClient, ram: Option<&std::fs::File>, slot: u64, data: u32) {
    if let Some(ram) = ram {
        let at = IQ_BASE + slot * 16;
        ram.write_all_at(&wait_descriptor(STATUS, data), at)
            .unwrap();
    }
    if slot == 0 {
        write_reg(c, 0, DMAR_IQT_REG, 0);
        write_reg(c, 0, DMAR_IQA_REG, IQ_BASE as u32);
        write_reg(c, 0, DMAR_IQA_REG + 4, 0);
        write_reg(c, 0, DMAR_GCMD_REG, QIE);
    }
    post_reg(c, 0, DMAR_IQT_REG, ((slot + 1) * 16) as u32);
}

#[test]
fn test_disconnect_releases_the_maps_the_front_end_was_using() {
    let _serial = serial();
    let path = start_remap_unit(3);
    served_again(&path);
    let idle = open_fds();
    let rss_before = status_kib("VmRSS");
    let name = "hostile-remap-ram";
    for round in 0..4u32 {
        let mut c = connect(&path);
        c.negotiate();
        let ram = named_sealed_memfd(name, 1 << 20);
        assert_eq!(dma_map(&mut c, 0, 1 << 20, &[ram.as_fd()]), Ok(()));
        // The front end fetches descriptors from the client's RAM and writes status there.
        ring_wait(&mut c, Some(&ram), 0, 0x100 + round);
        wait_until("the wait completes", || status_word(&ram) == 0x100 + round);
        // Next descriptor queued, and the client leaves (at once in odd rounds).
        ring_wait(&mut c, Some(&ram), 1, 0x200 + round);
        if round % 2 == 1 {
            drop(c);
        } else {
            hang_up(c);
        }
        let mut next = connect(&path);
        next.negotiate();
        assert_eq!(
            memfd_mappings(name),
            0,
            "round {round}: the left client's RAM unmapped"
        );
        assert_eq!(
            read_reg(&mut next, 0, DMAR_GSTS_REG),
            0,
            "round {round}: reset"
        );
        // The same queue rung with no RAM mapped: the front end reaches nothing of the
        // left client's; the fetch fails as the spec says (IQE).
        ram.write_all_at(&[0; 4], STATUS).unwrap();
        ring_wait(&mut next, None, 0, 0);
        wait_until("IQE", || read_reg(&mut next, 0, DMAR_FSTS_REG) & IQE != 0);
        assert_eq!(
            status_word(&ram),
            0,
            "round {round}: nothing written to the old RAM"
        );
        hang_up(next);
        drop(ram);
        assert_eq!(open_fds(), idle, "round {round}");
    }
    let rss_after = status_kib("VmRSS");
    eprintln!("4 remap-unit clients left with QI running; fds {idle} -> {}; VmRSS KiB {rss_before} -> {rss_after}", open_fds());
    assert!(rss_after < rss_before + 8 * 1024);
}
