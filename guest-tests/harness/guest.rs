//! Boots one guest against one vsvm server and collects what happened.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::thread::sleep;

use super::qemu::guest_command;
pub use super::qemu::Memory;
use std::time::{Duration, Instant};

/// Hard limit for one boot (a healthy one takes ~10 s under TCG).
const BOOT_TIMEOUT: Duration = Duration::from_secs(240);
/// Guests run one at a time: two TCG guests on a 2-core machine only slow each other down.
static ONE_GUEST: Mutex<()> = Mutex::new(());

/// One boot.
pub struct Boot<'a> {
    /// Script in guest-tests/guest/tests/ to run.
    pub test: &'a str,
    /// RAM backing.
    pub memory: Memory,
    /// Extra kernel command line (e.g. `vsvm.reads=100`: exported to the test script).
    pub append: &'a str,
}

/// The result of one boot.
pub struct Run {
    /// Everything the guest printed on its serial console.
    pub console: String,
    /// The test's exit code, if the guest got to report it.
    pub rc: Option<i32>,
}

impl Run {
    /// Whether the test script exited 0.
    pub fn passed(&self) -> bool {
        self.rc == Some(0)
    }

    /// Panics with the console unless the test script exited 0.
    pub fn assert_passed(&self) {
        assert!(
            self.passed(),
            "guest test rc={:?}; console:\n{}",
            self.rc,
            self.console
        );
    }
}

fn work_dir(name: &str) -> PathBuf {
    let dir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("guest-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// A running `vsvm serve` with one accel function.
pub struct Server {
    child: Child,
    socket: PathBuf,
    log: PathBuf,
    dir: PathBuf,
    _one_guest: MutexGuard<'static, ()>,
}

impl Server {
    /// Starts the server and waits for its socket.
    pub fn start(name: &str) -> Server {
        let guard = ONE_GUEST.lock().unwrap_or_else(|e| e.into_inner());
        let dir = work_dir(name);
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
            _one_guest: guard,
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
    pub fn boot(&self, boot: &Boot) -> Run {
        let console_path = self.dir.join(format!("console-{}.log", boot.test));
        let mut qemu = guest_command(&self.socket, boot.test, boot.append, boot.memory);
        let console_file = fs::File::create(&console_path).unwrap();
        let mut child = qemu
            .stdin(Stdio::null())
            .stdout(console_file.try_clone().unwrap())
            .stderr(console_file)
            .spawn()
            .expect("starting qemu");
        let finished = wait_with_timeout(&mut child, BOOT_TIMEOUT);
        let console = fs::read_to_string(&console_path).unwrap_or_default();
        assert!(
            finished,
            "guest did not power off within {BOOT_TIMEOUT:?}; console:\n{console}"
        );
        let rc = parse_result(&console, boot.test);
        Run { console, rc }
    }

    /// Stops the server with SIGTERM, checks it exits 0, and returns its log.
    pub fn stop(mut self) -> String {
        let pid = rustix::process::Pid::from_child(&self.child);
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).expect("SIGTERM to vsvm");
        let status = self.child.wait().expect("waiting for vsvm");
        let log = fs::read_to_string(&self.log).unwrap_or_default();
        assert!(
            status.success(),
            "vsvm exited with {status} on SIGTERM; log:\n{log}"
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

/// Finds `VSVM-RESULT name=<test> rc=<n>` on the console.
fn parse_result(console: &str, test: &str) -> Option<i32> {
    let prefix = format!("VSVM-RESULT name={test} rc=");
    console
        .lines()
        .find_map(|l| l.trim().strip_prefix(&prefix)?.trim().parse().ok())
}
