//! Learning where firmware puts the remap unit's BAR0 for a topology: a firmware-only QEMU
//! boot of the same functions at the same addresses (no kernel), cached per topology, so
//! that the DMAR table can name the DRHD base before the real boot.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use log::info;

use vsvm::devices::accel;
use vsvm::devices::remap_unit::calibration::{self, calibrate, serve_one, topology_key};
use vsvm::devices::topology::{Topology, MACHINE};
use vsvm::vfio_user;

/// How long a calibration boot may take (TCG firmware needs well under a second).
const TIMEOUT: Duration = Duration::from_secs(120);

/// The QEMU arguments of a calibration boot, before the functions.
const FIRMWARE_ARGS: &[&str] = &[
    "-cpu",
    "max",
    "-m",
    "512M",
    "-nographic",
    "-no-reboot",
    "-nodefaults",
];

/// The first line of `qemu --version`, which keys the calibration.
fn qemu_version(qemu: &Path) -> Result<String, String> {
    let out = Command::new(qemu)
        .arg("--version")
        .output()
        .map_err(|e| format!("cannot run {}: {e}", qemu.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .next()
        .map(str::to_string)
        .filter(|l| out.status.success() && !l.is_empty())
        .ok_or_else(|| format!("{} --version printed no version", qemu.display()))
}

/// Where calibrations are kept by default.
pub fn default_cache() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir)
        .join("vsvm")
        .join("calibration")
}

/// The DRHD base for `topology` with `qemu`: from `cache`, or learned by a calibration boot
/// (then stored) when the cache has none or `fresh` asks for a new one.
pub fn drhd_base(
    topology: &Topology,
    qemu: &Path,
    cache: &Path,
    fresh: bool,
) -> Result<u64, String> {
    let key = topology_key(&qemu_version(qemu)?, MACHINE, &topology.slots());
    if !fresh {
        if let Some(base) = calibration::load(cache, &key) {
            info!(
                "DRHD base 0x{base:x} from {}",
                calibration::path(cache, &key).display()
            );
            return Ok(base);
        }
    }
    info!("calibrating: a firmware-only boot of this topology places the remap unit's BAR0");
    let base = boot(topology, qemu)?;
    calibration::store(cache, &key, base)
        .map_err(|e| format!("cannot store the calibration in {}: {e}", cache.display()))?;
    Ok(base)
}

/// One calibration boot; the accelerators are served (without IOMMU: only their BARs
/// matter) on sockets of a temporary directory.
fn boot(topology: &Topology, qemu: &Path) -> Result<u64, String> {
    let mut probe = topology.clone();
    let Some(remap) = probe.remap.as_mut() else {
        return Err("calibration needs a remap unit".into());
    };
    let addr = remap.addr;
    let dir = std::env::temp_dir().join(format!("vsvm-calibrate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    remap.socket = dir.join("remap.sock");
    let stop = Arc::new(AtomicBool::new(false));
    let mut servers = Vec::new();
    for (i, spec) in probe.accels.iter_mut().enumerate() {
        spec.socket = dir.join(format!("accel{i}.sock"));
        let device = accel::endpoint(spec.vendor_id, spec.device_id).map_err(|e| e.to_string())?;
        let listener = vfio_user::bind(&spec.socket).map_err(|e| e.to_string())?;
        servers.push(serve_one(listener, device, stop.clone()));
    }
    let mut command = Command::new(qemu);
    command
        .arg("-machine")
        .arg(format!("{MACHINE},accel=tcg"))
        .args(FIRMWARE_ARGS)
        .args(probe.qemu_devices());
    let result = calibrate(
        &mut command,
        &dir.join("remap.sock"),
        Topology::window_size(),
        TIMEOUT,
    );
    stop.store(true, std::sync::atomic::Ordering::Release);
    for server in servers {
        let _ = server.join();
    }
    let _ = std::fs::remove_dir_all(&dir);
    let calibrated = result.map_err(|e| format!("calibration boot of {addr}: {e}"))?;
    info!(
        "calibration: BAR0 of the remap unit at {} is 0x{:x} ({:?})",
        addr, calibrated.drhd_base, calibrated.elapsed
    );
    Ok(calibrated.drhd_base)
}
