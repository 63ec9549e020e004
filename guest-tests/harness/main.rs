//! Real-guest tests: stock QEMU 11 under TCG boots a stock Debian kernel with the vsvm server
//! attached over vfio-user, runs one script from guest-tests/guest/tests/, and reports its
//! exit code on the console. Needs `scripts/setup` (the README's test command runs it).

mod guest;
mod qemu;

use std::time::Duration;

use guest::{Boot, Memory, Server};
use vsvm::devices::remap_unit::calibration::calibrate;

#[test]
fn guest_accel_plain_with_memfd_ram() {
    let server = Server::start("memfd");
    let run = server.boot(&Boot {
        test: "accel-plain",
        memory: Memory::MemfdShared,
        append: "",
    });
    run.assert_passed();
    assert!(
        run.console.contains("irq=yes, OK"),
        "no interrupt-driven job completed"
    );
    let log = server.stop();
    assert!(
        log.contains("mapped with fd"),
        "guest RAM never came with an fd:\n{log}"
    );
}

#[test]
fn guest_accel_plain_without_fd_uses_dma_messages() {
    let server = Server::start("nofd");
    let run = server.boot(&Boot {
        test: "accel-plain",
        memory: Memory::Anonymous,
        append: "",
    });
    run.assert_passed();
    let log = server.stop();
    assert!(
        !log.contains("mapped with fd"),
        "anonymous RAM should come without fds:\n{log}"
    );
    assert!(
        log.contains("DMA_READ") && log.contains("DMA_WRITE"),
        "DMA messages not used:\n{log}"
    );
}

#[test]
fn guest_server_accepts_the_next_client_after_qemu_exits() {
    let server = Server::start("reconnect");
    for round in 0..2 {
        let run = server.boot(&Boot {
            test: "smoke-accel",
            memory: Memory::MemfdShared,
            append: "",
        });
        assert!(run.passed(), "round {round}:\n{}", run.console);
    }
    let log = server.stop();
    assert_eq!(log.matches("client connected").count(), 2, "{log}");
}

#[test]
fn guest_latency_probe_times_every_operation() {
    let server = Server::start("latency");
    let append = "vsvm.reads=200 vsvm.writes=500 vsvm.irqs=100 vsvm.mixed=100 vsvm.idle=0";
    let run = server.boot(&Boot {
        test: "latency",
        memory: Memory::MemfdShared,
        append,
    });
    run.assert_passed();
    for op in ["read", "write", "irq", "mixed"] {
        let line = run
            .console
            .lines()
            .find(|l| l.contains(&format!("BENCH op={op} ")))
            .unwrap_or_else(|| panic!("no {op} line:\n{}", run.console));
        let median: u64 = line
            .split_whitespace()
            .find_map(|f| f.strip_prefix("median_ns="))
            .unwrap()
            .parse()
            .unwrap();
        assert!(median > 0 && median < 1_000_000_000, "{line}");
    }
    server.stop();
}

/// The lines `accel-wq` prints for its cases ("wq <case>: ... OK"); the harness asserts each.
const WQ_CASES: &[&str] = &[
    "wq device: ",
    "wq memmove 64 KiB: ",
    "wq memmove 1 MiB (MAX_XFER): ",
    "wq memmove overlapping 64 KiB: copied backward: OK",
    "wq fill 10000 bytes: ",
    "wq compare: equal: result 0; different: result 1",
    "wq nop: OK",
    "wq batch of 4: ",
    "wq batch with a bad member: batch status 0x04, member status 0x10, error irq: OK",
    "wq nested batch: inner status 0x14: OK",
    "wq empty batch: status 0x13: OK",
    "wq 60 descriptors, one doorbell: ",
    "wq 60 descriptors, a doorbell each: ",
    "wq soak: 100 runs, ",
    "wq bad opcode: status 0x10 (BAD_OPCODE), error irq: OK",
    "wq memmove length 0: status 0x12 (BAD_SIZE), error irq: OK",
    "wq memmove above MAX_XFER: status 0x12 (BAD_SIZE), error irq: OK",
    "wq reserved control bit: status 0x11 (BAD_FLAGS), error irq: OK",
    "wq privileged without PASID: status 0x1b (BAD_PRIVILEGE), error irq: OK",
    "wq bad opcode without record: ",
    "wq misaligned completion record: ",
    "wq PASID-tagged descriptor: ",
    "wq two software errors: first kept",
    "wq doorbell beyond the ring: ",
    "wq queue disabled and enabled again: ring restarted at slot 0: OK",
    "wq memmove 64 KiB after the errors: ",
];

fn assert_work_queue_run(run: &guest::Run) {
    run.assert_passed();
    for case in WQ_CASES {
        let line = run
            .console
            .lines()
            .find(|l| l.starts_with(case))
            .unwrap_or_else(|| panic!("no line {case:?}:\n{}", run.console));
        assert!(line.trim_end().ends_with("OK"), "{line}\n{}", run.console);
    }
    for needle in [
        "code 0x17 (BAD_COMPLETION_ADDR)",
        "code 0x15 (BAD_PASID)",
        "(ring wrapped)",
        "code 0x1a (BAD_TAIL)",
        "accel-wq: 26 cases, 0 failed: PASS",
        "accel-wq: ok: accel-wq --quick after rebinding",
        "accel-wq: PASS",
    ] {
        assert!(
            run.console.contains(needle),
            "no {needle:?}:\n{}",
            run.console
        );
    }
}

/// Work queue 0 in plain mode (no IOMMU) driven by the guest driver: every operation, bad
/// descriptors, SWERR, both MSI-X vectors, ring wrap, a random soak and a driver rebind.
#[test]
fn guest_accel_work_queues() {
    let server = Server::start("wq");
    let run = server.boot(&Boot {
        test: "accel-wq",
        memory: Memory::MemfdShared,
        append: "",
    });
    assert_work_queue_run(&run);
    server.stop();
}

/// The same with anonymous guest RAM: rings, records and data reached through DMA messages.
#[test]
fn guest_accel_work_queues_without_fd_use_dma_messages() {
    let server = Server::start("wq-nofd");
    let run = server.boot(&Boot {
        test: "accel-wq",
        memory: Memory::Anonymous,
        append: "",
    });
    assert_work_queue_run(&run);
    let log = server.stop();
    assert!(
        log.contains("DMA_READ") && log.contains("DMA_WRITE"),
        "DMA messages not used:\n{log}"
    );
}

/// The calibration boot: firmware alone (no kernel) places the remap unit's BAR0 in a topology
/// of remap unit at 03.0 and accelerator at 04.0, the same way twice.
#[test]
fn guest_remap_unit_calibration_boot_places_bar0() {
    const WINDOW: u64 = 0x4000;
    let server = Server::start("calibrate");
    let remap = server.dir().join("remap.sock");
    let mut places = Vec::new();
    for _ in 0..2 {
        let mut qemu = qemu::firmware_command();
        qemu.arg("-device")
            .arg(qemu::vfio_user_device_at(&remap, "03.0"))
            .arg("-device")
            .arg(qemu::vfio_user_device_at(server.socket(), "04.0"));
        let c = calibrate(&mut qemu, &remap, WINDOW, Duration::from_secs(120))
            .unwrap_or_else(|e| panic!("calibration boot failed: {e}"));
        eprintln!(
            "calibration boot: BAR0 at 0x{:x} after {:?}",
            c.drhd_base, c.elapsed
        );
        places.push(c.drhd_base);
    }
    assert_eq!(places[0], places[1], "placement is not deterministic");
    assert_eq!(places[0] % WINDOW, 0, "BAR0 misaligned");
    // SeaBIOS puts 32-bit BARs below the IOAPIC at 0xfec00000 (ENVIRONMENT.md).
    assert!((0xe000_0000..0xfec0_0000).contains(&places[0]));
    server.stop();
}
