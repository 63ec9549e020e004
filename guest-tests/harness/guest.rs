//! Boots guests against one vsvm server and reads what each guest test reported on the console
//! (guest-tests/guest/init: VSVM-START, VSVM-TIME and VSVM-RESULT lines per test).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use super::qemu::{cache_dir, guest_command_with, require, Iommu, Kernel, Memory, RemapUnit};
use super::qemu::{ACCEL_ADDR, REMAP_ADDR};

/// Time allowed for a boot up to the first test (a healthy one takes ~4 s under TCG)...
const BOOT_TIMEOUT: Duration = Duration::from_secs(120);
/// ...and for each test it runs (the longest, accel-wq, takes well under a minute).
const TEST_TIMEOUT: Duration = Duration::from_secs(180);

/// One boot.
pub struct Boot<'a> {
    /// The guest kernel.
    pub kernel: &'a Kernel,
    /// Scripts in guest-tests/guest/tests/ to run, one after another.
    pub tests: &'a [&'a str],
    /// RAM backing.
    pub memory: Memory,
    /// Extra kernel command line (e.g. `vsvm.reads=100`: exported to the test scripts).
    pub append: &'a str,
    /// The guest may hang or die on purpose (a hostile guest): after `HOSTILE_TIMEOUT` it is
    /// stopped, and its run is returned as it is.
    pub may_hang: bool,
}

/// How long a hostile guest may take before it is stopped.
const HOSTILE_TIMEOUT: Duration = Duration::from_secs(90);
/// How long the server may take to listen (the first IOMMU server of a topology runs a
/// calibration boot first, well under a second).
const LISTEN_TIMEOUT: Duration = Duration::from_secs(60);

/// What one boot printed.
pub struct Run {
    /// Everything the guest printed on its serial console.
    pub console: String,
    /// Where that console is kept.
    pub console_path: PathBuf,
    /// Wall-clock seconds from starting QEMU to its exit.
    pub seconds: f64,
    /// Whether the guest powered off by itself (false only for a `may_hang` boot).
    pub finished: bool,
}

/// What one guest test reported.
pub struct Report<'a> {
    /// Its exit code, if the guest got to report it.
    pub rc: Option<i32>,
    /// Seconds it ran in the guest.
    pub seconds: Option<f64>,
    /// The console from its VSVM-START line to its VSVM-RESULT line (or to the end).
    pub output: &'a str,
}

impl Run {
    /// The report of guest test `test`.
    pub fn report(&self, test: &str) -> Report<'_> {
        let start = self
            .console
            .find(&format!("VSVM-START name={test} "))
            .unwrap_or(self.console.len());
        let result = format!("VSVM-RESULT name={test} rc=");
        let end = self.console[start..]
            .find(&result)
            .map(|i| start + i)
            .and_then(|i| self.console[i..].find('\n').map(|n| i + n))
            .unwrap_or(self.console.len());
        let field = |prefix: &str| {
            self.console.lines().find_map(|l| {
                let value = l.trim().strip_prefix(prefix)?;
                Some(value.trim().to_string())
            })
        };
        Report {
            rc: field(&result).and_then(|v| v.parse().ok()),
            seconds: field(&format!("VSVM-TIME name={test} seconds=")).and_then(|v| v.parse().ok()),
            output: &self.console[start..end],
        }
    }

    /// Seconds from power-on to the kernel starting /init (its own timestamp), if it got there.
    pub fn init_seconds(&self) -> Option<f64> {
        let line = self
            .console
            .lines()
            .find(|l| l.contains("Run /init as init process"))?;
        line.split(['[', ']']).nth(1)?.trim().parse().ok()
    }

    /// The last `n` lines of the console (where a panic or a hang shows).
    pub fn tail(&self, n: usize) -> String {
        tail(&self.console, n)
    }
}

/// A running `vsvm serve`: one accel function, behind a remap unit when the IOMMU is on.
pub struct Server {
    child: Child,
    socket: PathBuf,
    remap: Option<RemapUnit>,
    log: PathBuf,
    dir: PathBuf,
    boots: usize,
}

/// The `vsvm serve` arguments of the accelerator alone, or behind a remap unit.
fn serve_args(dir: &Path, socket: &Path, remap: Option<&RemapUnit>) -> Vec<std::ffi::OsString> {
    let arg = |s: String| std::ffi::OsString::from(s);
    let Some(remap) = remap else {
        return vec![
            arg("serve".into()),
            arg("--device".into()),
            arg("accel".into()),
            arg("--socket-path".into()),
            socket.into(),
        ];
    };
    let qemu = require(&cache_dir().join("bin/qemu-system-x86_64"));
    vec![
        arg("serve".into()),
        arg("--remap-unit".into()),
        arg(format!(
            "socket={},addr={REMAP_ADDR}",
            remap.socket.display()
        )),
        arg("--accel".into()),
        arg(format!("socket={},addr={ACCEL_ADDR}", socket.display())),
        arg("--dmar".into()),
        remap.dmar.clone().into(),
        arg("--qemu".into()),
        qemu.into(),
        arg("--calibration-cache".into()),
        cache_dir().join("calibration").into(),
        arg("--qemu-args".into()),
        dir.join("qemu-args").into(),
    ]
}

impl Server {
    /// Starts the server in a fresh work directory named after `name` and waits for its
    /// sockets: the accelerator's, and with `iommu` the remap unit's (and its DMAR table).
    /// It logs at debug level (the checks read some of those lines).
    pub fn start(name: &str, iommu: Iommu) -> Server {
        Server::start_logging(name, iommu, "vsvm=debug")
    }

    /// The same, logging as `filter` (`RUST_LOG` syntax) says: benchmarks measure the server
    /// as deployed (info), as a debug line on a hot path costs a write to the log file.
    pub fn start_logging(name: &str, iommu: Iommu, filter: &str) -> Server {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("guest-{name}"));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let (socket, log) = (dir.join("accel.sock"), dir.join("vsvm.log"));
        let remap = (iommu != Iommu::Off).then(|| RemapUnit {
            socket: dir.join("remap.sock"),
            dmar: dir.join("dmar.bin"),
        });
        let child = Command::new(env!("CARGO_BIN_EXE_vsvm"))
            .args(serve_args(&dir, &socket, remap.as_ref()))
            .env("RUST_LOG", filter)
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .expect("starting vsvm");
        let mut server = Server {
            child,
            socket,
            remap,
            log,
            dir,
            boots: 0,
        };
        server.wait_listening();
        server
    }

    fn wait_listening(&mut self) {
        let deadline = Instant::now() + LISTEN_TIMEOUT;
        let mut paths = vec![self.socket.clone()];
        paths.extend(self.remap.iter().map(|r| r.socket.clone()));
        while !paths.iter().all(|p| p.exists()) {
            if let Ok(Some(status)) = self.child.try_wait() {
                let log = fs::read_to_string(&self.log).unwrap_or_default();
                panic!(
                    "vsvm exited with {status} before listening:\n{}",
                    tail(&log, 30)
                );
            }
            assert!(Instant::now() < deadline, "vsvm did not create its sockets");
            sleep(Duration::from_millis(20));
        }
    }

    /// Boots a guest attached to this server and waits for it to power off.
    pub fn boot(&mut self, boot: &Boot) -> Run {
        self.boots += 1;
        let console_path = self.dir.join(format!("console-{}.log", self.boots));
        let mut qemu = guest_command_with(
            boot.kernel,
            &self.socket,
            self.remap.as_ref(),
            &boot.tests.join(","),
            boot.append,
            boot.memory,
        );
        let console_file = fs::File::create(&console_path).unwrap();
        let started = Instant::now();
        let mut child = qemu
            .stdin(Stdio::null())
            .stdout(console_file.try_clone().unwrap())
            .stderr(console_file)
            .spawn()
            .expect("starting qemu");
        let timeout = if boot.may_hang {
            HOSTILE_TIMEOUT
        } else {
            BOOT_TIMEOUT + TEST_TIMEOUT * boot.tests.len() as u32
        };
        let finished = wait_with_timeout(&mut child, timeout);
        let seconds = started.elapsed().as_secs_f64();
        let console = fs::read_to_string(&console_path).unwrap_or_default();
        let run = Run {
            console,
            console_path,
            seconds,
            finished,
        };
        assert!(
            finished || boot.may_hang,
            "guest did not power off within {timeout:?}; console ({}) ends:\n{}",
            run.console_path.display(),
            run.tail(40)
        );
        run
    }

    /// Stops the server with SIGTERM, checks it exits 0, and returns its log.
    pub fn stop(mut self) -> String {
        let pid = rustix::process::Pid::from_child(&self.child);
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).expect("SIGTERM to vsvm");
        let status = self.child.wait().expect("waiting for vsvm");
        let log = fs::read_to_string(&self.log).unwrap_or_default();
        assert!(
            status.success(),
            "vsvm exited with {status} on SIGTERM; log ({}) ends:\n{}",
            self.log.display(),
            tail(&log, 40)
        );
        assert!(!self.socket.exists(), "vsvm left its socket behind");
        if let Some(remap) = &self.remap {
            assert!(
                !remap.socket.exists(),
                "vsvm left the remap unit's socket behind"
            );
        }
        log
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn wait_with_timeout(child: &mut Child, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            return true;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return false;
        }
        sleep(Duration::from_millis(50));
    }
}
