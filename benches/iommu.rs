//! Plain-engine copy throughput with the guest's IOMMU (our VT-d, scalable mode: a first-stage
//! DMA domain walked nested over the DMA map) against the same guest without an IOMMU, in one
//! run: each round boots the default guest kernel twice, interleaved, and the driver times
//! every copy job from START to completion. Target: with the IOMMU at least 80 % of the
//! IOMMU-off throughput from 64 KiB up. Run: `cargo bench --bench iommu` (after scripts/setup).

use std::collections::BTreeMap;

#[path = "../guest-tests/harness/guest.rs"]
#[allow(dead_code)]
mod guest;
#[path = "../guest-tests/harness/qemu.rs"]
mod qemu;

use guest::{Boot, Server};
use qemu::{Iommu, Kernel, Memory};

const ROUNDS: usize = 5;
const TARGET: f64 = 0.80;

/// Nanoseconds per job for each length, from one boot.
fn boot(kernel: &Kernel, iommu: Iommu) -> BTreeMap<u64, u64> {
    let mut server = Server::start(&format!("bench-iommu-{}", iommu.name()), iommu);
    let append = format!("{} vsvm.iters=100", iommu.kernel_args());
    let run = server.boot(&Boot {
        kernel,
        tests: &["copy-bench"],
        memory: Memory::MemfdShared,
        append: &append,
        may_hang: false,
    });
    server.stop();
    let report = run.report("copy-bench");
    assert_eq!(report.rc, Some(0), "copy-bench failed:\n{}", report.output);
    report
        .output
        .lines()
        .filter_map(|l| {
            let l = l.strip_prefix("BENCH copy ")?;
            let field = |k: &str| {
                l.split_whitespace()
                    .find_map(|f| f.strip_prefix(k)?.parse::<u64>().ok())
            };
            Some((field("len=")?, field("ns_per_job=")?))
        })
        .collect()
}

fn median(v: &mut [u64]) -> u64 {
    v.sort_unstable();
    v[v.len() / 2]
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        // `cargo test --all-targets` runs bench targets without --bench: only the build counts.
        println!("iommu: run with `cargo bench --bench iommu`");
        return;
    }
    let kernel = Kernel::default_kernel();
    let mut off: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    let mut on: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for round in 0..ROUNDS {
        // Alternate which goes first, so that drift of the machine does not favour one.
        let order = if round % 2 == 0 {
            [Iommu::Off, Iommu::Scalable]
        } else {
            [Iommu::Scalable, Iommu::Off]
        };
        for iommu in order {
            let into = if iommu == Iommu::Off {
                &mut off
            } else {
                &mut on
            };
            for (len, ns) in boot(&kernel, iommu) {
                into.entry(len).or_default().push(ns);
            }
        }
        eprintln!("iommu bench: round {} of {ROUNDS} done", round + 1);
    }
    println!(
        "\nplain-engine copy, guest kernel {}, {ROUNDS} rounds (medians of per-boot median jobs)",
        kernel.release
    );
    println!(
        "{:>9} | {:>14} | {:>14} | ratio (target >= {:.0} % from 64 KiB)",
        "size",
        "IOMMU off MB/s",
        "IOMMU on MB/s",
        TARGET * 100.0
    );
    for (len, samples) in off.iter_mut() {
        let Some(with) = on.get_mut(len) else {
            continue;
        };
        let (a, b) = (median(samples), median(with));
        let rate = |ns: u64| *len as f64 / ns.max(1) as f64 * 1e3;
        let ratio = rate(b) / rate(a);
        let verdict = match (*len >= 64 << 10, ratio >= TARGET) {
            (false, _) => "",
            (true, true) => "met",
            (true, false) => "NOT met",
        };
        println!(
            "{:>7} K | {:>14.1} | {:>14.1} | {:>5.0} % {verdict}",
            len >> 10,
            rate(a),
            rate(b),
            ratio * 100.0
        );
    }
}
