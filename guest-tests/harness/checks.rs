//! The real-guest checks: what each one needs from a boot (RAM backing, guest scripts, kernel
//! parameters, a second boot) and what it asserts about the console and the server's log.
//! Checks that share a RAM backing share one boot per kernel (main.rs groups them).

use super::guest::{tail, Report, Run};
use super::qemu::Memory;

/// Everything a check may look at once its boots are done.
pub struct Evidence<'a> {
    /// The boot that ran the scripts of every check of the group.
    pub first: &'a Run,
    /// A second boot against the same server (smoke-accel), for checks that ask for it.
    pub second: Option<&'a Run>,
    /// The server's log over all boots of the group.
    pub server_log: &'a str,
}

/// One real-guest check, run on every kernel as `guest_<kernel>_<name>`.
pub struct Check {
    /// The test name without its kernel part.
    pub name: &'static str,
    /// Guest RAM backing (checks with the same one share a boot).
    pub memory: Memory,
    /// Guest scripts it needs in that boot.
    pub scripts: &'static [&'static str],
    /// Extra kernel parameters it needs in that boot.
    pub append: &'static str,
    /// Whether it needs a second boot against the same server after the first guest exits.
    pub second_boot: bool,
    /// Its assertions.
    pub verify: fn(&Evidence) -> Result<(), String>,
}

/// The script the second boot runs.
pub const SECOND_BOOT_SCRIPT: &str = "smoke-accel";

/// Every check, in the order they are reported. Within a boot the scripts run in this order
/// too: accel-wq rebinds the driver, so it comes after the scripts that only use it.
pub const CHECKS: &[Check] = &[
    Check {
        name: "accel_plain_with_memfd_ram",
        memory: Memory::MemfdShared,
        scripts: &["accel-plain"],
        append: "",
        second_boot: false,
        verify: accel_plain_with_memfd_ram,
    },
    Check {
        name: "accel_plain_without_fd_uses_dma_messages",
        memory: Memory::Anonymous,
        scripts: &["accel-plain"],
        append: "",
        second_boot: false,
        verify: accel_plain_without_fd,
    },
    Check {
        name: "latency_probe_times_every_operation",
        memory: Memory::MemfdShared,
        scripts: &["latency"],
        append: "vsvm.reads=200 vsvm.writes=500 vsvm.irqs=100 vsvm.mixed=100 vsvm.idle=0",
        second_boot: false,
        verify: latency_probe,
    },
    Check {
        name: "server_accepts_the_next_client_after_qemu_exits",
        memory: Memory::MemfdShared,
        scripts: &[SECOND_BOOT_SCRIPT],
        append: "",
        second_boot: true,
        verify: next_client,
    },
    Check {
        name: "accel_work_queues",
        memory: Memory::MemfdShared,
        scripts: &["accel-wq"],
        append: "",
        second_boot: false,
        verify: work_queues,
    },
    Check {
        name: "accel_work_queues_without_fd_use_dma_messages",
        memory: Memory::Anonymous,
        scripts: &["accel-wq"],
        append: "",
        second_boot: false,
        verify: work_queues_without_fd,
    },
    Check {
        name: "stock_vfio_modules_load",
        memory: Memory::MemfdShared,
        scripts: &["stock-modules"],
        append: "",
        second_boot: false,
        verify: stock_vfio_modules,
    },
];

/// `Err(message)` unless `cond`.
macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+));
        }
    };
}

/// The report of `script` in `run`, which must have exited 0.
fn passed<'a>(run: &'a Run, script: &str) -> Result<Report<'a>, String> {
    let report = run.report(script);
    match report.rc {
        Some(0) => Ok(report),
        Some(rc) => Err(format!(
            "guest test {script} exited {rc}; its output:\n{}",
            report.output
        )),
        None => Err(format!(
            "guest test {script} reported no result (panic or hang?); console ({}) ends:\n{}",
            run.console_path.display(),
            run.tail(60)
        )),
    }
}

fn accel_plain_with_memfd_ram(e: &Evidence) -> Result<(), String> {
    let plain = passed(e.first, "accel-plain")?;
    ensure!(
        plain.output.contains("irq=yes, OK"),
        "no interrupt-driven job completed:\n{}",
        plain.output
    );
    ensure!(
        e.server_log.contains("mapped with fd"),
        "guest RAM never came with an fd; server log ends:\n{}",
        tail(e.server_log, 40)
    );
    Ok(())
}

fn accel_plain_without_fd(e: &Evidence) -> Result<(), String> {
    passed(e.first, "accel-plain")?;
    ensure!(
        !e.server_log.contains("mapped with fd"),
        "anonymous RAM should come without fds"
    );
    dma_messages_used(e)
}

fn dma_messages_used(e: &Evidence) -> Result<(), String> {
    ensure!(
        e.server_log.contains("DMA_READ") && e.server_log.contains("DMA_WRITE"),
        "DMA messages not used; server log ends:\n{}",
        tail(e.server_log, 40)
    );
    Ok(())
}

fn next_client(e: &Evidence) -> Result<(), String> {
    passed(e.first, SECOND_BOOT_SCRIPT).map_err(|m| format!("first QEMU: {m}"))?;
    let second = e.second.ok_or("no second boot")?;
    passed(second, SECOND_BOOT_SCRIPT).map_err(|m| format!("second QEMU: {m}"))?;
    let connects = e.server_log.matches("client connected").count();
    ensure!(
        connects == 2,
        "{connects} client connections logged, want 2:\n{}",
        tail(e.server_log, 40)
    );
    Ok(())
}

fn latency_probe(e: &Evidence) -> Result<(), String> {
    let latency = passed(e.first, "latency")?;
    for op in ["read", "write", "irq", "mixed"] {
        let line = latency
            .output
            .lines()
            .find(|l| l.contains(&format!("BENCH op={op} ")))
            .ok_or_else(|| format!("no {op} line:\n{}", latency.output))?;
        let median: Option<u64> = line
            .split_whitespace()
            .find_map(|f| f.strip_prefix("median_ns="))
            .and_then(|v| v.parse().ok());
        ensure!(
            matches!(median, Some(ns) if ns > 0 && ns < 1_000_000_000),
            "bad median: {line}"
        );
    }
    Ok(())
}

/// The lines `accel-wq` prints for its cases ("wq <case>: ... OK"); each must be there and OK.
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

/// Work queue 0 in plain mode (no IOMMU) driven by the guest driver: every operation, bad
/// descriptors, SWERR, both MSI-X vectors, ring wrap, a random soak and a driver rebind.
fn work_queues(e: &Evidence) -> Result<(), String> {
    let wq = passed(e.first, "accel-wq")?;
    for case in WQ_CASES {
        let line = wq
            .output
            .lines()
            .find(|l| l.starts_with(case))
            .ok_or_else(|| format!("no line {case:?}:\n{}", wq.output))?;
        ensure!(line.trim_end().ends_with("OK"), "{line}\n{}", wq.output);
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
        ensure!(wq.output.contains(needle), "no {needle:?}:\n{}", wq.output);
    }
    Ok(())
}

/// The same with anonymous guest RAM: rings, records and data reached through DMA messages.
fn work_queues_without_fd(e: &Evidence) -> Result<(), String> {
    work_queues(e)?;
    dma_messages_used(e)
}

/// The stock vfio modules setup put in the initramfs load with modprobe (for later tests that
/// drive a device from guest userspace).
fn stock_vfio_modules(e: &Evidence) -> Result<(), String> {
    let modules = passed(e.first, "stock-modules")?;
    for m in ["vfio", "vfio_iommu_type1", "vfio_pci_core", "vfio_pci"] {
        ensure!(
            modules.output.contains(&format!("stock-modules: {m}: ")),
            "no line for {m}:\n{}",
            modules.output
        );
    }
    Ok(())
}
