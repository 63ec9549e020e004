//! Real-guest tests: stock QEMU 11 under TCG boots each stock Debian kernel `scripts/setup`
//! prepared (6.12 of bookworm-backports, the newest of trixie-backports) with the vsvm server
//! attached over vfio-user, runs scripts from guest-tests/guest/tests/ and checks what they
//! report. Needs `scripts/setup` (the README's test command runs it).
//!
//! A runner of its own (`harness = false`): every check in checks.rs runs on every kernel as
//! `guest_<kernel>_<check>` (e.g. `guest_k7_3_accel_work_queues`), and the checks that share a
//! RAM backing share one boot per kernel, so each kernel boots three times (memfd RAM, a second
//! QEMU against the same server, anonymous RAM) instead of once per check. It takes libtest's
//! filters (`cargo test --test guest -- k7_3`, `--exact`, `--skip`, `--list`), prints a line
//! per boot and per check with seconds, and exits non-zero if any check failed on any kernel.

mod args;
mod checks;
mod guest;
mod qemu;

use std::io::Write;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Mutex;
use std::time::Instant;

use args::Args;
use checks::{Check, Evidence, CHECKS};
use guest::{Boot, Run, Server};
use qemu::{Iommu, Kernel, Memory};

/// One check on one kernel.
struct Test<'a> {
    name: String,
    kernel: &'a Kernel,
    check: &'a Check,
}

/// How a test ended: `Err` holds the failure message.
type Outcome = Result<(), String>;

/// The last panic's message and location (set by the hook, read where the unwind is caught).
static LAST_PANIC: Mutex<String> = Mutex::new(String::new());

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn main() {
    let args = Args::parse(std::env::args().skip(1));
    let kernels = match Kernel::all() {
        Ok(kernels) => kernels,
        Err(e) if args.list => return eprintln!("guest runner: no tests to list: {e}"),
        Err(e) => {
            say(&format!("guest runner: FAILED: {e}"));
            std::process::exit(101);
        }
    };
    let tests: Vec<Test> = kernels
        .iter()
        .flat_map(|kernel| CHECKS.iter().map(move |check| (kernel, check)))
        .map(|(kernel, check)| Test {
            name: format!("guest_{}_{}", kernel.name(), check.name),
            kernel,
            check,
        })
        .filter(|t| args.selects(&t.name))
        .collect();
    if args.list {
        tests.iter().for_each(|t| say(&format!("{}: test", t.name)));
        return;
    }
    panic::set_hook(Box::new(|info| {
        *LAST_PANIC.lock().unwrap_or_else(|e| e.into_inner()) = info.to_string();
    }));

    say(&format!("\nrunning {} guest tests", tests.len()));
    let started = Instant::now();
    let mut failures = Vec::new();
    for kernel in &kernels {
        for setup in GROUPS {
            let group: Vec<&Test> = tests
                .iter()
                .filter(|t| t.kernel.tag == kernel.tag && t.check.setup() == *setup)
                .collect();
            if group.is_empty() {
                continue;
            }
            for (test, outcome) in run_group(kernel, *setup, &group, args.show_output) {
                if let Err(message) = outcome {
                    failures.push((test.name.clone(), message));
                }
            }
        }
    }

    let passed = tests.len() - failures.len();
    if !failures.is_empty() {
        say("\nfailures:");
        for (name, message) in &failures {
            say(&format!("\n---- {name} ----\n{message}"));
        }
        say("\nfailures:");
        failures
            .iter()
            .for_each(|(name, _)| say(&format!("    {name}")));
    }
    say(&format!(
        "\ntest result: {}. {passed} passed; {} failed; finished in {:.1}s\n",
        if failures.is_empty() { "ok" } else { "FAILED" },
        failures.len(),
        started.elapsed().as_secs_f64()
    ));
    if !failures.is_empty() {
        std::process::exit(101);
    }
}

/// What a boot is set up with: checks that agree on it share the boot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Setup {
    /// RAM backing.
    pub memory: Memory,
    /// Our VT-d in front of the accelerator, and its mode.
    pub iommu: Iommu,
    /// The guest is hostile on purpose: its boot may hang or die.
    pub hostile: bool,
}

/// The boots of each kernel, in order.
const GROUPS: &[Setup] = &[
    Setup {
        memory: Memory::MemfdShared,
        iommu: Iommu::Off,
        hostile: false,
    },
    Setup {
        memory: Memory::Anonymous,
        iommu: Iommu::Off,
        hostile: false,
    },
    Setup {
        memory: Memory::MemfdShared,
        iommu: Iommu::Scalable,
        hostile: false,
    },
    Setup {
        memory: Memory::MemfdShared,
        iommu: Iommu::Legacy,
        hostile: false,
    },
    Setup {
        memory: Memory::MemfdShared,
        iommu: Iommu::PassThrough,
        hostile: false,
    },
    Setup {
        memory: Memory::MemfdShared,
        iommu: Iommu::Scalable,
        hostile: true,
    },
];

/// Boots `kernel` once with the scripts of every test in `group` (all with one `setup`), a
/// second time if one of them asks for it, and runs each test's assertions on what happened.
fn run_group<'a>(
    kernel: &Kernel,
    setup: Setup,
    group: &[&'a Test<'a>],
    show_output: bool,
) -> Vec<(&'a Test<'a>, Outcome)> {
    let ram = match setup.memory {
        Memory::MemfdShared => "memfd",
        Memory::Anonymous => "anon",
    };
    let mut label = format!("{}-{ram}", kernel.name());
    if setup.iommu != Iommu::Off {
        label = format!("{label}-{}", setup.iommu.name());
    }
    if setup.hostile {
        label.push_str("-hostile");
    }
    let boots = panic::catch_unwind(AssertUnwindSafe(|| {
        boot_group(kernel, setup, group, &label, show_output)
    }));
    let (runs, server_log) = match boots {
        Ok(boots) => boots,
        Err(_) => {
            let message =
                std::mem::take(&mut *LAST_PANIC.lock().unwrap_or_else(|e| e.into_inner()));
            say(&format!("boot {label}: FAILED: {message}"));
            return group
                .iter()
                .map(|t| {
                    say(&format!("test {} ... FAILED (boot {label})", t.name));
                    (*t, Err(format!("boot {label} failed: {message}")))
                })
                .collect();
        }
    };
    let evidence = Evidence {
        first: &runs[0],
        second: runs.get(1),
        server_log: &server_log,
        setup,
    };
    group
        .iter()
        .map(|t| {
            let outcome =
                panic::catch_unwind(|| (t.check.verify)(&evidence)).unwrap_or_else(|_| {
                    Err(std::mem::take(
                        &mut *LAST_PANIC.lock().unwrap_or_else(|e| e.into_inner()),
                    ))
                });
            let in_guest: f64 = t
                .check
                .scripts
                .iter()
                .filter_map(|s| runs[0].report(s).seconds)
                .sum();
            let verdict = if outcome.is_ok() { "ok" } else { "FAILED" };
            let second = match runs.get(1) {
                Some(run) if t.check.second_boot.is_some() => {
                    format!(", then a second boot of {:.1} s", run.seconds)
                }
                _ => String::new(),
            };
            say(&format!(
                "test {} ... {verdict} ({in_guest:.1} s in the guest{second})",
                t.name
            ));
            (*t, outcome)
        })
        .collect()
}

/// The boots of one group against one server: the shared boot and, if asked for, a second QEMU.
/// Returns their runs and the server's log (the server must exit 0 on SIGTERM).
fn boot_group(
    kernel: &Kernel,
    setup: Setup,
    group: &[&Test],
    label: &str,
    show_output: bool,
) -> (Vec<Run>, String) {
    let memory = setup.memory;
    // the scripts in CHECKS order (group is in that order), each once
    let mut scripts: Vec<&str> = Vec::new();
    for s in group.iter().flat_map(|t| t.check.scripts) {
        if !scripts.contains(s) {
            scripts.push(s);
        }
    }
    let appends: Vec<&str> = group
        .iter()
        .map(|t| t.check.append)
        .filter(|a| !a.is_empty())
        .collect();
    let append = [setup.iommu.kernel_args(), &appends.join(" ")].join(" ");
    let mut server = Server::start(label, setup.iommu);
    let mut runs = vec![server.boot(&Boot {
        kernel,
        tests: &scripts,
        memory,
        append: &append,
        may_hang: setup.hostile,
    })];
    report_boot(label, kernel, &scripts, &runs[0], show_output);
    if let Some(script) = group.iter().find_map(|t| t.check.second_boot) {
        let second = server.boot(&Boot {
            kernel,
            tests: &[script],
            memory,
            append: setup.iommu.kernel_args(),
            may_hang: false,
        });
        report_boot(
            &format!("{label} (second QEMU)"),
            kernel,
            &[script],
            &second,
            show_output,
        );
        runs.push(second);
    }
    (runs, server.stop())
}

fn report_boot(label: &str, kernel: &Kernel, scripts: &[&str], run: &Run, show_output: bool) {
    if show_output {
        say(&run.console);
    }
    let init = run
        .init_seconds()
        .map_or("never reached /init".to_string(), |s| {
            format!("/init at {s:.1} s")
        });
    let per_script: Vec<String> = scripts
        .iter()
        .map(|s| match run.report(s).seconds {
            Some(secs) => format!("{s} {secs:.1} s"),
            None => format!("{s} -"),
        })
        .collect();
    let stopped = if run.finished {
        ""
    } else {
        ", stopped: did not power off"
    };
    say(&format!(
        "boot {label}: {:.1} s{stopped} (kernel {}, {init}; {}; console {})",
        run.seconds,
        kernel.release,
        per_script.join(", "),
        run.console_path.display()
    ));
}
