//! CPU wake-up latency while a client is active (Linux PM QoS, `/dev/cpu_dma_latency`).
//!
//! A BAR read is a chain of hand-offs: QEMU's vCPU thread sends the request and sleeps, our
//! server answers, QEMU's vfio-user I/O thread wakes up and wakes the vCPU thread. Our spinning
//! removes one sleep; the others are QEMU's. When an idle CPU halts, waking a thread on it costs
//! an inter-processor interrupt and, in a virtual machine, an exit to the hypervisor — tens of µs
//! where a local hand-off costs a few. While the server is inside its poll window it therefore
//! asks the kernel for a wake-up latency of 0 µs, which makes the cpuidle governor poll instead
//! of halting (a polling CPU is woken without an interrupt). Once the window has passed the
//! request is lifted again, so an idle guest leaves every CPU free to halt.
//!
//! The request is machine-wide while it is held (that is how PM QoS works) and needs write access
//! to `/dev/cpu_dma_latency` (root); without it the server works as before, only slower.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};

use log::debug;

/// The kernel's character device for CPU latency requests.
pub const DEVICE_PATH: &str = "/dev/cpu_dma_latency";

/// Latency asked for while active: none at all, so idle CPUs poll rather than halt.
const ACTIVE_US: i32 = 0;

/// "No constraint": the kernel's default CPU latency request (PM_QOS_CPU_LATENCY_DEFAULT_VALUE,
/// 2000 s in µs).
const NO_CONSTRAINT_US: i32 = 2_000_000_000;

/// A CPU latency request shared by every connection of a server; cheap to clone. The request
/// is active while at least one [`LatencyHold`] lives.
#[derive(Clone, Default)]
pub struct CpuLatency(Option<Arc<Request>>);

struct Request {
    /// The open request; the kernel drops it when the file is closed.
    file: File,
    /// Live holds. Writes happen under this lock, so the kernel sees them in order.
    holders: Mutex<usize>,
}

impl std::fmt::Debug for CpuLatency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "CpuLatency(on)"
        } else {
            "CpuLatency(off)"
        })
    }
}

impl CpuLatency {
    /// Never asks for anything.
    pub fn off() -> CpuLatency {
        CpuLatency(None)
    }

    /// Opens a request on `path` (normally [`DEVICE_PATH`]), inactive until held.
    pub fn open(path: &Path) -> std::io::Result<CpuLatency> {
        let mut file = OpenOptions::new().write(true).open(path)?;
        file.write_all(&NO_CONSTRAINT_US.to_ne_bytes())?;
        Ok(CpuLatency(Some(Arc::new(Request {
            file,
            holders: Mutex::new(0),
        }))))
    }

    /// Whether a request is open.
    pub fn is_on(&self) -> bool {
        self.0.is_some()
    }

    /// Activates the request until the returned hold (and every other live hold) is dropped.
    pub fn hold(&self) -> LatencyHold {
        if let Some(request) = &self.0 {
            let mut holders = request.holders.lock().unwrap_or_else(|e| e.into_inner());
            if *holders == 0 {
                request.write(ACTIVE_US);
            }
            *holders += 1;
        }
        LatencyHold(self.0.clone())
    }
}

impl Request {
    fn write(&self, micros: i32) {
        // A failed update only costs latency; serving goes on.
        if let Err(e) = (&self.file).write_all(&micros.to_ne_bytes()) {
            debug!("cpu latency request of {micros} µs not taken: {e}");
        }
    }
}

/// Keeps the CPU latency request active while it lives.
#[must_use = "the request is lifted when the hold is dropped"]
pub struct LatencyHold(Option<Arc<Request>>);

impl Drop for LatencyHold {
    fn drop(&mut self) {
        if let Some(request) = &self.0 {
            let mut holders = request.holders.lock().unwrap_or_else(|e| e.into_inner());
            *holders -= 1;
            if *holders == 0 {
                request.write(NO_CONSTRAINT_US);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! The values written are checked through the server in tests/poll_window.rs.
    use super::*;

    #[test]
    fn test_off_holds_nothing_and_open_failure_is_reported() {
        drop(CpuLatency::off().hold());
        assert!(!CpuLatency::off().is_on());
        assert!(CpuLatency::open(Path::new("/nonexistent/cpu_dma_latency")).is_err());
    }
}
