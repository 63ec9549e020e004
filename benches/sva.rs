//! SVA in a stock guest (issue 11's benchmark): one boot of the newest guest kernel behind our
//! VT-d in scalable mode runs `sva-bench` (guest-tests/progs/sva-bench.c), which compares, each
//! side by side and interleaved inside the guest:
//! - device memmove on pre-faulted buffers against the guest CPU's memcpy of the same buffers;
//! - device memmove into never-touched buffers (every page a PRI page request through the
//!   guest's PRQ) against pre-faulted ones;
//! - the page-fault round trip (one never-touched page: submit → completion seen) against the
//!   same job on a pre-faulted page and against the driver's MSI-X round trip. Target ≤ 3 ×.
//!
//! A second boot runs the round trips alone with the server logging at trace level and shows
//! where a page fault's time goes (benches/sva/trace.rs); its logging slows it a little, so
//! its figures are for the breakdown only.
//!
//! Run: `cargo bench --bench sva` (after scripts/setup). Knobs: `VSVM_SVA_BENCH_REPS`,
//! `VSVM_SVA_BENCH_RTT`, `VSVM_SVA_BENCH_MAX_FAULT` (bytes), `VSVM_SVA_BENCH_LOG` (the
//! server's `RUST_LOG`, default `vsvm=info`).

use std::collections::BTreeMap;

#[path = "../guest-tests/harness/guest.rs"]
#[allow(dead_code)]
mod guest;
#[path = "../guest-tests/harness/qemu.rs"]
mod qemu;
#[path = "sva/trace.rs"]
mod trace;

use guest::{Boot, Server};
use qemu::{Iommu, Kernel, Memory};

/// The page-fault round trip may be at most this many MSI-X round trips.
const RTT_TARGET: f64 = 3.0;

/// One `BENCH <what> k=v ...` line's numeric fields.
type Fields = BTreeMap<String, u64>;

fn bench_lines<'a>(output: &'a str, what: &'a str) -> impl Iterator<Item = (Fields, &'a str)> {
    output.lines().filter_map(move |l| {
        let rest = l.trim().strip_prefix("BENCH ")?.strip_prefix(what)?;
        let rest = rest.strip_prefix(' ')?;
        let mut fields = Fields::new();
        let mut kind = "";
        for f in rest.split_whitespace() {
            let (k, v) = f.split_once('=')?;
            match v.parse() {
                Ok(n) => {
                    fields.insert(k.to_string(), n);
                }
                Err(_) if k == "kind" => kind = v,
                Err(_) => {}
            }
        }
        Some((fields, kind))
    })
}

/// The SVA kernel: SVA binds work on 7.x only (Debian's 6.12 refuses them on x86).
fn sva_kernel() -> Kernel {
    let kernels = Kernel::all().unwrap_or_else(|e| panic!("{e}"));
    let version = |k: &Kernel| -> Vec<u32> {
        k.tag
            .split(['.', '-'])
            .map(|p| p.parse().unwrap_or(0))
            .collect()
    };
    kernels
        .into_iter()
        .max_by_key(version)
        .expect("Kernel::all returns at least one kernel")
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

fn mbps(len: u64, ns: u64) -> f64 {
    len as f64 / ns.max(1) as f64 * 1e3
}

fn size(len: u64) -> String {
    if len >= 1 << 20 {
        format!("{} MiB", len >> 20)
    } else {
        format!("{} KiB", len >> 10)
    }
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        // `cargo test --all-targets` runs bench targets without --bench: only the build counts.
        println!("sva: run with `cargo bench --bench sva`");
        return;
    }
    let kernel = sva_kernel();
    let append = format!(
        "{} vsvm.reps={} vsvm.rtt={} vsvm.max_fault={}",
        Iommu::Scalable.kernel_args(),
        env_or("VSVM_SVA_BENCH_REPS", "9"),
        env_or("VSVM_SVA_BENCH_RTT", "200"),
        env_or("VSVM_SVA_BENCH_MAX_FAULT", "16777216"),
    );
    // The server as deployed logs at info: a debug line on the page-fault path is a write to
    // the log file. VSVM_SVA_BENCH_LOG=vsvm=debug traces the path instead.
    let log = env_or("VSVM_SVA_BENCH_LOG", "vsvm=info");
    let mut server = Server::start_logging("bench-sva", Iommu::Scalable, &log);
    let run = server.boot(&Boot {
        kernel: &kernel,
        tests: &["sva-bench"],
        memory: Memory::MemfdShared,
        append: &append,
        may_hang: false,
    });
    server.stop();
    let report = run.report("sva-bench");
    assert_eq!(
        report.rc,
        Some(0),
        "sva-bench failed (console {}):\n{}",
        run.console_path.display(),
        report.output
    );

    println!(
        "\nSVA in the guest: kernel {}, our VT-d in scalable mode, QEMU TCG; one boot, \
         measurements interleaved",
        kernel.release
    );
    println!("\ndevice memmove, pre-faulted buffers, against the guest CPU's memcpy (medians)");
    println!(
        "{:>8} | {:>10} | {:>13} | {:>8} || {:>15} | {:>9}",
        "size", "memcpy MB/s", "device MB/s", "dev/cpu", "never-touched MB/s", "nt/pre"
    );
    let mut summary = Vec::new();
    for (f, _) in bench_lines(report.output, "sva-copy") {
        let (len, cpu, dev, fault) = (f["len"], f["cpu_ns"], f["device_ns"], f["fault_ns"]);
        let (cpu_r, dev_r) = (mbps(len, cpu), mbps(len, dev));
        let (fault_col, fault_ratio) = if fault == 0 {
            ("-".to_string(), "-".to_string())
        } else {
            let r = mbps(len, fault);
            (format!("{r:.1}"), format!("{:.3}", r / dev_r))
        };
        println!(
            "{:>8} | {cpu_r:>11.1} | {dev_r:>13.1} | {:>8.2} || {fault_col:>18} | {fault_ratio:>9}",
            size(len),
            dev_r / cpu_r,
        );
        summary.push(format!(
            "{:>8}: device/memcpy {:.2}, never-touched/pre-faulted {fault_ratio}",
            size(len),
            dev_r / cpu_r
        ));
    }

    let rtt: BTreeMap<String, Fields> = bench_lines(report.output, "sva-rtt")
        .map(|(f, kind)| (kind.to_string(), f))
        .collect();
    println!("\nround trips as the guest sees them (µs)");
    println!("{:>52} | {:>8} | {:>8} | {:>8}", "", "median", "p90", "min");
    let rows = [
        ("fault", "page fault: 8 B into a never-touched page"),
        ("job", "job: 8 B into a pre-faulted page (no fault)"),
        ("msix", "MSI-X: driver's IRQ_RAISE round trip (kernel)"),
    ];
    for (kind, label) in rows {
        if let Some(f) = rtt.get(kind) {
            let us = |k: &str| f[k] as f64 / 1e3;
            println!(
                "{label:>52} | {:>8.1} | {:>8.1} | {:>8.1}",
                us("median_ns"),
                us("p90_ns"),
                us("min_ns")
            );
        }
    }
    if let (Some(fault), Some(job), Some(msix)) =
        (rtt.get("fault"), rtt.get("job"), rtt.get("msix"))
    {
        let ratio = |a: &Fields, b: &Fields, k: &str| a[k] as f64 / b[k].max(1) as f64;
        for (name, base) in [("job", job), ("MSI-X", msix)] {
            let (m, p) = (
                ratio(fault, base, "median_ns"),
                ratio(fault, base, "p90_ns"),
            );
            let verdict = if m <= RTT_TARGET { "met" } else { "NOT met" };
            summary.push(format!(
                "page fault / {name} round trip: median {m:.2} ×, p90 {p:.2} × \
                 (target ≤ {RTT_TARGET} ×: {verdict})"
            ));
        }
    }
    for (f, _) in bench_lines(report.output, "sva-prq") {
        summary.push(format!(
            "guest PRQ interrupts during the run: {}",
            f.get("interrupts").copied().unwrap_or(0)
        ));
    }
    breakdown(&kernel);
    println!("\nratios");
    for line in summary {
        println!("  {line}");
    }
}

fn percentile(v: &mut [f64], p: usize) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() * p / 100).copied().unwrap_or(0.0)
}

/// A boot of the round trips alone, the server logging at trace level: the page fault's
/// stretches, as the server's log timestamps them.
fn breakdown(kernel: &Kernel) {
    let mut server = Server::start_logging("bench-sva-trace", Iommu::Scalable, "vsvm=trace");
    let append = format!(
        "{} vsvm.parts=rtt vsvm.rtt=100",
        Iommu::Scalable.kernel_args()
    );
    let run = server.boot(&Boot {
        kernel,
        tests: &["sva-bench"],
        memory: Memory::MemfdShared,
        append: &append,
        may_hang: false,
    });
    let log = server.stop();
    let report = run.report("sva-bench");
    assert_eq!(
        report.rc,
        Some(0),
        "sva-bench (trace boot) failed:\n{}",
        report.output
    );
    let faults = trace::faults(&log);
    let guest_median = bench_lines(report.output, "sva-rtt")
        .find(|(_, kind)| *kind == "fault")
        .map(|(f, _)| f["median_ns"] as f64 / 1e3)
        .unwrap_or(0.0);
    println!(
        "\nwhere a page fault goes: {} one-page faults timed by the server's log (trace level; \
         the guest saw a median {guest_median:.1} µs in this boot)",
        faults.len()
    );
    if faults.is_empty() {
        return;
    }
    let row = |name: &str, mut v: Vec<f64>| {
        println!(
            "{name:>66} | {:>8.1} | {:>8.1}",
            percentile(&mut v, 50),
            percentile(&mut v, 90)
        );
    };
    println!("{:>66} | {:>8} | {:>8}", "µs", "median", "p90");
    for (i, name) in trace::SEGMENTS.iter().enumerate() {
        row(name, faults.iter().map(|f| f.segments[i]).collect());
    }
    let total: Vec<f64> = faults.iter().map(|f| f.segments.iter().sum()).collect();
    row("doorbell to completion interrupt", total);
    let acks = trace::acknowledgements(&log);
    if !acks.is_empty() {
        row("(aside) interrupt's posted DMA_WRITE to QEMU's reply", acks);
    }
    let waited = faults.iter().filter(|f| f.answer_waited).count();
    println!(
        "the guest's answer (IQT write) came before the front end's thread had sent the \
         interrupt (waiting for QEMU's reply) in {waited} of {} faults",
        faults.len()
    );
}
