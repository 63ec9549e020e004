//! Our server driven by an independent implementation of the protocol: the rust-vmm
//! `vfio_user` crate's Client, over a real UNIX socket; then a second client after the first
//! leaves (QEMU restarted).

#[path = "common/ram.rs"]
mod ram;

use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::time::Duration;

use vfio_user::Client;
use vsvm::devices::accel;

const CONFIG: u32 = 7;
const MSIX: u32 = 2;
const DATA_EVENTFD_TRIGGER: u32 = (1 << 2) | (1 << 5);

fn start_server(name: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("vsvm-{name}-{}.sock", std::process::id()));
    let listener = vsvm::vfio_user::bind(&path).unwrap();
    std::thread::spawn(move || {
        let mut device = accel::endpoint(accel::VENDOR_ID, accel::DEVICE_ID).unwrap();
        vsvm::vfio_user::serve(&listener, &mut device, &Default::default())
    });
    path
}

fn write32(c: &mut Client, region: u32, offset: u64, v: u32) {
    c.region_write(region, offset, &v.to_le_bytes()).unwrap();
}

fn read32(c: &mut Client, region: u32, offset: u64) -> u32 {
    let mut b = [0; 4];
    c.region_read(region, offset, &mut b).unwrap();
    u32::from_le_bytes(b)
}

/// Waits up to `timeout` for the eventfd to be signalled.
fn wait_eventfd(fd: &OwnedFd, timeout: Duration) -> bool {
    let mut pfd = [rustix::event::PollFd::new(fd, rustix::event::PollFlags::IN)];
    let ts = rustix::event::Timespec {
        tv_sec: timeout.as_secs() as i64,
        tv_nsec: 0,
    };
    rustix::event::poll(&mut pfd, Some(&ts)).unwrap() == 1
}

#[test]
fn test_independent_client_sees_regions_and_irqs() {
    let path = start_server("regions");
    let mut c = Client::new(&path).unwrap();
    assert_eq!(c.region(0).unwrap().size, 4096);
    assert_eq!(c.region(1).unwrap().size, 0);
    assert_eq!(c.region(2).unwrap().size, 4096);
    assert_eq!(c.region(CONFIG).unwrap().size, 4096);
    assert_eq!(c.get_irq_info(MSIX).unwrap().count, 4);
    assert_eq!(read32(&mut c, CONFIG, 0), 0xa001_5653);
    assert_eq!(read32(&mut c, 0, 0), 0x5653_5641);
}

#[test]
fn test_independent_client_runs_a_job_with_msix_completion() {
    let path = start_server("job");
    let mut c = Client::new(&path).unwrap();
    let eventfd = rustix::event::eventfd(0, rustix::event::EventfdFlags::CLOEXEC).unwrap();
    c.set_irqs(MSIX, DATA_EVENTFD_TRIGGER, 0, 1, &[eventfd.as_raw_fd()])
        .unwrap();
    let mut ram = ram::sealed_memfd(0x20000);
    ram.write_all(&[0x3c; 0x2000]).unwrap();
    c.dma_map(0, 0x8000_0000, 0x20000, ram.as_raw_fd()).unwrap();
    write32(&mut c, CONFIG, 4, 0x6); // memory + bus master
    write32(&mut c, 0, 0x10, 0x8000_0000);
    write32(&mut c, 0, 0x18, 0x8001_0000);
    write32(&mut c, 0, 0x20, 0x2000);
    write32(&mut c, 0, 0x24, 0x3); // START | IRQ
    assert!(
        wait_eventfd(&eventfd, Duration::from_secs(5)),
        "no MSI-X completion"
    );
    assert_eq!(read32(&mut c, 0, 0x28), 2);
    let mut out = vec![0; 0x2000];
    ram.seek(SeekFrom::Start(0x10000)).unwrap();
    ram.read_exact(&mut out).unwrap();
    assert!(out.iter().all(|b| *b == 0x3c));
}

#[test]
fn test_next_client_is_served_after_the_first_leaves() {
    let path = start_server("reconnect");
    for _ in 0..3 {
        let mut c = Client::new(&path).unwrap();
        write32(&mut c, 0, 0x20, 0x1234);
        assert_eq!(read32(&mut c, 0, 0x20), 0x1234);
        c.shutdown().unwrap();
        drop(c);
        // The next client must see a device back at power-on state.
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut c = Client::new(&path).unwrap();
    assert_eq!(read32(&mut c, 0, 0x20), 0);
}
