//! Boots guests against one vsvm server and reads what each guest test reported on the console
//! (guest-tests/guest/init: VSVM-START, VSVM-TIME and VSVM-RESULT lines per test).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use super::qemu::{guest_command, Kernel, Memory};

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
}

/// What one boot printed.
pub struct Run {
    /// Everything the guest printed on its serial console.
    pub console: String,
    /// Where that console is kept.
    pub console_path: PathBuf,
    /// Wall-clock seconds from starting QEMU to its exit.
    pub seconds: f64,
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

/// A running `vsvm serve` with one accel function.
pub struct Server {
    child: Child,
    socket: PathBuf,
    log: PathBuf,
    dir: PathBuf,
    boots: usize,
}

impl Server {
    /// Starts the server in a fresh work directory named after `name` and waits for its socket.
    pub fn start(name: &str) -> Server {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("guest-{name}"));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let (socket, log) = (dir.join("accel.sock"), dir.join("vsvm.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_vsvm"))
            .args(["serve", "--device", "accel", "--socket-path"])
            .arg(&socket)
            .env("RUST_LOG", "vsvm=debug")
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .expect("starting vsvm");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !socket.exists() {
            assert!(Instant::now() < deadline, "vsvm did not create its socket");
            sleep(Duration::from_millis(20));
        }
        Server {
            child,
            socket,
            log,
            dir,
            boots: 0,
        }
    }

    /// The server's socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// A directory for this server's files (removed with the target dir).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Boots a guest attached to this server and waits for it to power off.
    pub fn boot(&mut self, boot: &Boot) -> Run {
        self.boots += 1;
        let console_path = self.dir.join(format!("console-{}.log", self.boots));
        let mut qemu = guest_command(
            boot.kernel,
            &self.socket,
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
        let timeout = BOOT_TIMEOUT + TEST_TIMEOUT * boot.tests.len() as u32;
        let finished = wait_with_timeout(&mut child, timeout);
        let seconds = started.elapsed().as_secs_f64();
        let console = fs::read_to_string(&console_path).unwrap_or_default();
        let run = Run {
            console,
            console_path,
            seconds,
        };
        assert!(
            finished,
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
