//! Real-guest tests: stock QEMU 11 under TCG boots a stock Debian kernel with the vsvm server
//! attached over vfio-user, runs one script from guest-tests/guest/tests/, and reports its
//! exit code on the console. Needs `scripts/setup` (the README's test command runs it).

mod guest;
mod qemu;

use guest::{Boot, Memory, Server};

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
