//! `vsvm serve`: builds the topology, writes the DMAR table, tells how to start QEMU and the
//! guest, and serves every function on its socket until SIGTERM.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::thread;

use log::{error, info};

use super::calibrate;
use vsvm::devices::topology::{self, Built, Topology, GUEST_KERNEL_ARGS};
use vsvm::vfio_user;

/// What `serve` needs beyond the topology.
pub struct Plan {
    /// The functions.
    pub topology: Topology,
    /// Where to write the DMAR table (with a remap unit).
    pub dmar: Option<PathBuf>,
    /// The DRHD base, if given; else calibrated with `qemu`.
    pub drhd_base: Option<u64>,
    /// QEMU binary for calibration.
    pub qemu: Option<PathBuf>,
    /// Calibration cache.
    pub cache: PathBuf,
    /// Calibrate even if the cache knows the topology.
    pub recalibrate: bool,
    /// Where to write QEMU's arguments, one per line.
    pub qemu_args: Option<PathBuf>,
    /// Guest RAM size for the printed QEMU arguments.
    pub ram: String,
    /// Server options.
    pub options: vfio_user::ServerOptions,
}

/// The DRHD base the DMAR table will name.
fn drhd_base(plan: &Plan) -> Result<u64, String> {
    if let Some(base) = plan.drhd_base {
        return Ok(base);
    }
    let qemu = plan.qemu.as_deref().ok_or(
        "a remap unit needs --drhd-base ADDR, or --qemu BIN to learn it with a calibration boot",
    )?;
    calibrate::drhd_base(&plan.topology, qemu, &plan.cache, plan.recalibrate)
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), String> {
    std::fs::write(path, bytes).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Builds everything and writes the files QEMU needs.
fn prepare(plan: &Plan) -> Result<Built, String> {
    let base = match &plan.topology.remap {
        Some(_) => drhd_base(plan)?,
        None => 0,
    };
    let built = plan
        .topology
        .build(base, move |placed| topology::log_placement(base, placed))
        .map_err(|e| e.to_string())?;
    if let Some(table) = &built.dmar {
        let path = plan
            .dmar
            .as_deref()
            .ok_or("a remap unit needs --dmar PATH")?;
        write_file(path, table)?;
        info!(
            "DMAR table ({} bytes, DRHD at 0x{base:x}) written to {}",
            table.len(),
            path.display()
        );
    }
    let args = plan
        .topology
        .qemu_args(&plan.ram, built.dmar.as_ref().and(plan.dmar.as_deref()));
    if let Some(path) = &plan.qemu_args {
        write_file(path, (args.join("\n") + "\n").as_bytes())?;
    }
    info!("QEMU arguments for this topology: {}", shell_words(&args));
    if built.front_end.is_some() {
        info!("guest kernel arguments: {GUEST_KERNEL_ARGS}");
    }
    Ok(built)
}

/// Arguments quoted for a POSIX shell.
fn shell_words(args: &[String]) -> String {
    args.iter()
        .map(|a| {
            if a.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_=,./:".contains(c))
            {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Serves until SIGTERM or SIGINT.
pub fn run(plan: Plan) -> ExitCode {
    let built = match prepare(&plan) {
        Ok(built) => built,
        Err(e) => {
            error!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let mut sockets = Vec::new();
    for served in built.functions {
        let listener = match vfio_user::bind(&served.socket) {
            Ok(l) => l,
            Err(e) => {
                error!("cannot listen on {}: {e}", served.socket.display());
                return ExitCode::FAILURE;
            }
        };
        info!("serving {} on {}", served.name, served.socket.display());
        sockets.push(served.socket.clone());
        let (options, socket, mut device) = (plan.options.clone(), served.socket, served.device);
        thread::spawn(move || {
            if let Err(e) = vfio_user::serve(&listener, device.as_mut(), &options) {
                error!("socket {} failed: {e}", socket.display());
            }
        });
    }
    let code = super::super::wait_for_signal(sockets);
    if let Some(front) = &built.front_end {
        info!("vIOMMU: {:?}", front.stats());
    }
    code
}
