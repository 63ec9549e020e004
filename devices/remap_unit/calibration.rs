//! The DRHD base learned per topology: where firmware puts the remap unit's BAR0 for a given
//! QEMU, machine and set of functions (SeaBIOS places BARs deterministically per topology;
//! see ENVIRONMENT.md), kept in a small JSON file per topology under a cache directory, and
//! learned by a calibration boot (QEMU runs its firmware until BAR0 is placed, no guest).

use std::fmt::Write as _;
use std::io::{self, Read as _, Write as _};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use serde_json::{json, Value};

use super::{bus, endpoint, BaseCheck, RegisterWindow};
use crate::pci::{Bdf, LayoutError};
use crate::vfio_user::{self, ServerOptions};

/// FNV-1a (64-bit) parameters: a hash that stays the same across Rust releases, unlike std's.
const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// JSON field names.
const FIELD_KEY: &str = "topology";
const FIELD_BASE: &str = "drhd_base";
/// Prefix of the cache files' names.
const FILE_PREFIX: &str = "remap-unit-";

fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(FNV_OFFSET_BASIS, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(FNV_PRIME)
    })
}

/// The file holding the calibration of topology `key`. The key itself is stored inside and
/// compared on load, so a hash collision reads as "not calibrated".
pub fn path(dir: &Path, key: &str) -> PathBuf {
    dir.join(format!("{FILE_PREFIX}{:016x}.json", fnv1a(key)))
}

/// The BAR address learned for topology `key`, if any. A missing, unreadable or foreign file
/// is "not calibrated" (logged), never an error.
pub fn load(dir: &Path, key: &str) -> Option<u64> {
    let file = path(dir, key);
    let text = match std::fs::read_to_string(&file) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
        Err(e) => {
            warn!("calibration {} unreadable: {e}", file.display());
            return None;
        }
    };
    let parsed = serde_json::from_str::<Value>(&text).ok().and_then(|v| {
        let stored_key = v.get(FIELD_KEY)?.as_str()?.to_string();
        let base = v.get(FIELD_BASE)?.as_str()?;
        let base = u64::from_str_radix(base.strip_prefix("0x")?, 16).ok()?;
        Some((stored_key, base))
    });
    match parsed {
        Some((stored_key, base)) if stored_key == key => Some(base),
        Some((stored_key, _)) => {
            debug!(
                "calibration {} is for another topology ({stored_key:?})",
                file.display()
            );
            None
        }
        None => {
            warn!("calibration {} is malformed: ignored", file.display());
            None
        }
    }
}

/// Records `address` as the BAR address of topology `key`. Atomic: the file is written under
/// a temporary name in `dir` and renamed over the old one, so a reader sees the old or the new
/// calibration, never a torn one.
pub fn store(dir: &Path, key: &str, address: u64) -> io::Result<()> {
    static TEMP_SERIAL: AtomicU32 = AtomicU32::new(0);
    std::fs::create_dir_all(dir)?;
    let target = path(dir, key);
    let serial = TEMP_SERIAL.fetch_add(1, Ordering::Relaxed);
    let temp = dir.join(format!(
        ".{FILE_PREFIX}{:016x}.{}.{serial}.tmp",
        fnv1a(key),
        std::process::id()
    ));
    let body = json!({ FIELD_KEY: key, FIELD_BASE: format!("0x{address:x}") });
    let result = (|| {
        let mut file = std::fs::File::create(&temp)?;
        file.write_all(format!("{body:#}\n").as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&temp, &target)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}

/// One PCI function of a topology, as far as BAR placement can tell functions apart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Slot {
    /// Where it sits.
    pub bdf: Bdf,
    /// What it is (e.g. "remap-unit", "accel", "virtio-net-pci"): free text.
    pub kind: String,
    /// Sizes of its memory BARs, in BAR order.
    pub bar_sizes: Vec<u64>,
}

/// Builds a topology key: the QEMU version, the machine type and every function with its
/// address and BAR sizes, sorted by address (the order SeaBIOS walks them in does not depend
/// on the order they were named in).
pub fn topology_key(qemu_version: &str, machine: &str, slots: &[Slot]) -> String {
    let mut slots: Vec<&Slot> = slots.iter().collect();
    slots.sort_by_key(|s| s.bdf);
    let mut key = format!("qemu={qemu_version};machine={machine}");
    for slot in slots {
        let _ = write!(key, ";{}={}", slot.bdf, slot.kind);
        for size in &slot.bar_sizes {
            let _ = write!(key, ",0x{size:x}");
        }
    }
    key
}

/// How long the calibration boot waits between looks at QEMU.
const POLL_INTERVAL: Duration = Duration::from_millis(20);
/// How much of QEMU's stderr an error carries.
const OUTPUT_TAIL: usize = 4096;

/// What a calibration boot learned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Calibrated {
    /// Where firmware put BAR0: the DRHD base to publish for this topology.
    pub drhd_base: u64,
    /// From starting QEMU to the placement.
    pub elapsed: Duration,
}

/// Why a calibration boot learned nothing.
#[derive(Debug, thiserror::Error)]
pub enum CalibrationError {
    /// The socket could not be bound.
    #[error("listening on {path}: {source}")]
    Listen {
        /// The socket path.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The remap unit could not be built (bad window size).
    #[error("building the remap unit: {0}")]
    Layout(#[from] LayoutError),
    /// QEMU ended before firmware placed BAR0.
    #[error("QEMU exited ({status}) before firmware placed BAR0; its last output:\n{output}")]
    QemuExited {
        /// Its exit status.
        status: ExitStatus,
        /// The end of its stderr.
        output: String,
    },
    /// QEMU could not be started.
    #[error("starting QEMU: {0}")]
    Spawn(#[source] io::Error),
    /// Firmware did not place BAR0 in time.
    #[error("firmware did not place BAR0 within {timeout:?}; QEMU's last output:\n{output}")]
    Timeout {
        /// The time allowed.
        timeout: Duration,
        /// The end of QEMU's stderr.
        output: String,
    },
}

/// A register window that is only there to be placed: reads 0, ignores writes.
struct Unwired(u64);

impl RegisterWindow for Unwired {
    fn size(&self) -> u64 {
        self.0
    }
    fn read(&self, _: u64, _: usize) -> u64 {
        0
    }
    fn write(&self, _: u64, _: usize, _: u64) {}
    fn reset(&self) {}
}

/// A calibration boot: serves a remap unit with a `window_size`-byte BAR0 on `socket`, runs
/// `qemu` (which must attach a `vfio-user-pci` device to `socket` at the remap unit's address,
/// and describe the rest of the topology exactly as the real run will: machine, the other
/// functions and their addresses; no kernel is needed), waits until firmware places BAR0, then
/// kills QEMU. The other vfio-user functions on the command line must be served by the caller
/// meanwhile (QEMU does not start without them). QEMU's stdout is discarded, its stderr kept
/// for errors.
pub fn calibrate(
    qemu: &mut Command,
    socket: &Path,
    window_size: u64,
    timeout: Duration,
) -> Result<Calibrated, CalibrationError> {
    let (placed, placements) = mpsc::channel();
    let check = BaseCheck::new(None).on_assigned(move |address| {
        let _ = placed.send(address);
    });
    let device = endpoint(bus(), Arc::new(Unwired(window_size)), check)?;
    let listener = vfio_user::bind(socket).map_err(|source| CalibrationError::Listen {
        path: socket.to_path_buf(),
        source,
    })?;
    let stop = Arc::new(AtomicBool::new(false));
    let server = serve_one(listener, device, Arc::clone(&stop));
    let started = Instant::now();
    let result = match qemu
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(mut child) => {
            let output = collect_tail(&mut child);
            let outcome = wait_for_placement(&mut child, &placements, started, timeout);
            let _ = child.kill();
            let _ = child.wait();
            let output = output.join().unwrap_or_default();
            match outcome {
                Wait::Placed(drhd_base, elapsed) => Ok(Calibrated { drhd_base, elapsed }),
                Wait::Exited(status) => Err(CalibrationError::QemuExited { status, output }),
                Wait::TimedOut => Err(CalibrationError::Timeout { timeout, output }),
            }
        }
        Err(e) => Err(CalibrationError::Spawn(e)),
    };
    stop.store(true, Ordering::Release);
    let _ = server.join();
    let _ = std::fs::remove_file(socket);
    if let Ok(c) = &result {
        info!(
            "calibration: BAR0 at 0x{:x} after {:?}",
            c.drhd_base, c.elapsed
        );
    }
    result
}

enum Wait {
    Placed(u64, Duration),
    Exited(ExitStatus),
    TimedOut,
}

fn wait_for_placement(
    child: &mut Child,
    placements: &mpsc::Receiver<u64>,
    started: Instant,
    timeout: Duration,
) -> Wait {
    loop {
        if let Ok(address) = placements.recv_timeout(POLL_INTERVAL) {
            return Wait::Placed(address, started.elapsed());
        }
        if let Ok(Some(status)) = child.try_wait() {
            // A placement may have raced with the exit.
            return match placements.try_recv() {
                Ok(address) => Wait::Placed(address, started.elapsed()),
                Err(_) => Wait::Exited(status),
            };
        }
        if started.elapsed() > timeout {
            return Wait::TimedOut;
        }
    }
}

/// Accepts one client on `listener` (giving up once `stop` is set) and serves it until it
/// leaves.
pub fn serve_one(
    listener: UnixListener,
    mut device: impl vfio_user::Device + 'static,
    stop: Arc<AtomicBool>,
) -> JoinHandle<()> {
    thread::spawn(move || {
        if let Err(e) = listener.set_nonblocking(true) {
            warn!("calibration: socket setup failed: {e}");
            return;
        }
        let stream = loop {
            match listener.accept() {
                Ok((stream, _)) => break stream,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if stop.load(Ordering::Acquire) {
                        return;
                    }
                    thread::sleep(POLL_INTERVAL);
                }
                Err(e) => {
                    warn!("calibration: accept failed: {e}");
                    return;
                }
            }
        };
        if let Err(e) = stream.set_nonblocking(false) {
            warn!("calibration: socket setup failed: {e}");
            return;
        }
        match vfio_user::serve_connection(stream, &mut device, &ServerOptions::default()) {
            Ok(()) | Err(vfio_user::transport::TransportError::Closed) => {}
            Err(e) => debug!("calibration: client dropped: {e}"),
        }
    })
}

/// Reads the child's stderr to its end on a thread; yields the last [`OUTPUT_TAIL`] bytes.
fn collect_tail(child: &mut Child) -> JoinHandle<String> {
    let stderr = child.stderr.take();
    thread::spawn(move || {
        let Some(mut stderr) = stderr else {
            return String::new();
        };
        let mut tail = Vec::new();
        let mut chunk = [0u8; 1024];
        while let Ok(n) = stderr.read(&mut chunk) {
            if n == 0 {
                break;
            }
            tail.extend_from_slice(&chunk[..n]);
            let excess = tail.len().saturating_sub(OUTPUT_TAIL);
            tail.drain(..excess);
        }
        String::from_utf8_lossy(&tail).into_owned()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh directory under the system's temporary directory.
    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "vsvm-calibration-{name}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn test_store_then_load_returns_the_address() {
        let dir = temp_dir("roundtrip");
        assert_eq!(load(&dir, "topo-a"), None, "nothing stored yet");
        store(&dir, "topo-a", 0xfeb0_0000).unwrap();
        store(&dir, "topo-b", 0xfebf_c000).unwrap();
        assert_eq!(load(&dir, "topo-a"), Some(0xfeb0_0000));
        assert_eq!(load(&dir, "topo-b"), Some(0xfebf_c000));
        store(&dir, "topo-a", 0xfeaf_0000).unwrap();
        assert_eq!(load(&dir, "topo-a"), Some(0xfeaf_0000), "overwritten");
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 2, "no temporary files left: {names:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn test_file_of_another_topology_is_not_used() {
        let dir = temp_dir("collision");
        store(&dir, "topo-a", 0xfeb0_0000).unwrap();
        // Pretend topo-c hashes to topo-a's file.
        std::fs::rename(path(&dir, "topo-a"), path(&dir, "topo-c")).unwrap();
        assert_eq!(load(&dir, "topo-c"), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn test_malformed_files_read_as_not_calibrated() {
        let dir = temp_dir("malformed");
        std::fs::create_dir_all(&dir).unwrap();
        for body in [
            "",
            "{",
            "[]",
            r#"{"topology":"k"}"#,
            r#"{"topology":"k","drhd_base":4273995776}"#,
            r#"{"topology":"k","drhd_base":"feb00000"}"#,
            r#"{"topology":"k","drhd_base":"0xzz"}"#,
            r#"{"topology":"k","drhd_base":"0x1ffffffffffffffff"}"#,
        ] {
            std::fs::write(path(&dir, "k"), body).unwrap();
            assert_eq!(load(&dir, "k"), None, "{body:?}");
        }
        std::fs::write(
            path(&dir, "k"),
            r#"{"topology":"k","drhd_base":"0xfeb00000"}"#,
        )
        .unwrap();
        assert_eq!(
            load(&dir, "k"),
            Some(0xfeb0_0000),
            "the format itself is right"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn test_store_into_an_unwritable_place_fails() {
        let dir = temp_dir("unwritable");
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("a-file");
        std::fs::write(&file, "").unwrap();
        assert!(store(&file, "k", 1).is_err(), "a file is not a directory");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn test_topology_key_is_sorted_and_complete() {
        let remap = Slot {
            bdf: "03.0".parse().unwrap(),
            kind: "remap-unit".into(),
            bar_sizes: vec![0x4000],
        };
        let accel = Slot {
            bdf: "05.0".parse().unwrap(),
            kind: "accel".into(),
            bar_sizes: vec![0x1000, 0x1000],
        };
        let key = topology_key("11.1.3", "q35", &[accel.clone(), remap.clone()]);
        assert_eq!(
            key,
            "qemu=11.1.3;machine=q35;00:03.0=remap-unit,0x4000;00:05.0=accel,0x1000,0x1000"
        );
        assert_eq!(key, topology_key("11.1.3", "q35", &[remap, accel]));
    }

    #[test]
    fn test_calibrate_reports_qemu_exiting_early_with_its_output() {
        let dir = temp_dir("exit");
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("remap.sock");
        let mut fake = Command::new("sh");
        fake.args(["-c", "echo 'cannot open socket' >&2; exit 3"]);
        let err = calibrate(&mut fake, &socket, 0x4000, Duration::from_secs(30)).unwrap_err();
        let CalibrationError::QemuExited { status, output } = err else {
            panic!("not an early exit: {err}");
        };
        assert_eq!(status.code(), Some(3));
        assert_eq!(output, "cannot open socket\n");
        assert!(!socket.exists(), "the socket is removed");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn test_calibrate_gives_up_after_the_timeout() {
        let dir = temp_dir("timeout");
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("remap.sock");
        let mut fake = Command::new("sleep");
        fake.arg("30");
        let started = Instant::now();
        let err = calibrate(&mut fake, &socket, 0x4000, Duration::from_millis(200)).unwrap_err();
        assert!(matches!(err, CalibrationError::Timeout { .. }), "{err}");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "sleep was killed"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn test_calibrate_refuses_a_window_that_is_no_bar() {
        let mut never = Command::new("false");
        let err = calibrate(
            &mut never,
            Path::new("/nonexistent/s"),
            0x3000,
            Duration::ZERO,
        );
        assert!(matches!(err, Err(CalibrationError::Layout(_))));
    }

    #[test]
    fn test_path_is_stable_across_builds() {
        // FNV-1a of "a" (published test vector): the file name must not change between
        // releases, or every cache would be lost.
        assert_eq!(fnv1a("a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(
            path(Path::new("/c"), "a"),
            Path::new("/c/remap-unit-af63dc4c8601ec8c.json")
        );
    }
}
