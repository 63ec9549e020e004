//! The guest-facing VT-d: the remapping unit the guest's own intel-iommu driver programs, in
//! caching mode (VT-d spec 6.1: every change to a translation structure is followed by an
//! invalidation the unit can act on). Registers 11.4, queued invalidation 6.5.2, fault
//! recording 7.2, page requests 7.5.
//!
//! The front end translates nothing itself. It reads the guest's root, context and PASID
//! entries when the guest says they changed (SRTP, TE, context- and PASID-cache invalidations)
//! and drives a host IOMMU only through the neutral API ([`crate::iommu::HostIommu`]): each
//! device's default domain (requests without PASID), PASID binds of the guest's first-stage
//! tables (walked live, nested over the client's DMA map: first-stage tables are never
//! invalidated on map, even in caching mode), invalidations converted to host granularity,
//! and page responses. The host's fault reports come back as page request descriptors in the
//! guest's page request queue, or as fault records in its fault recording registers.
//!
//! Threads: an MMIO access takes the register lock briefly and touches neither guest memory
//! nor the host IOMMU. Queued invalidations, register-based invalidations, entry decoding,
//! page requests, fault records and interrupt messages run on the front end's own thread, in
//! the order they were asked for.

mod backlog;
mod devices;
mod faults;
mod interrupts;
mod invalidate;
mod registers;
mod stats;
mod tables;
mod worker;

use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};

use crate::iommu::{DeviceId, HostIommu};
use crate::mem::GuestMemory;
use crate::vtd::cap::VtdConfig;

pub use backlog::MAX_BACKLOG;
pub use interrupts::InterruptPort;
pub use registers::window_size;
pub use stats::Stats;

use backlog::Backlog;
use registers::Registers;
use worker::{Work, Worker};

/// What the MMIO side and the worker share.
struct Shared {
    config: VtdConfig,
    regs: Mutex<Registers>,
    /// Guest memory as the remap unit's client maps it: the guest's tables and queues.
    mem: GuestMemory,
    iommu: Arc<dyn HostIommu>,
    irq: Arc<dyn InterruptPort>,
    stats: stats::Counters,
    /// Work for the front end's thread.
    backlog: Backlog,
}

impl Shared {
    fn regs(&self) -> MutexGuard<'_, Registers> {
        // A poisoned lock only means a panic elsewhere; every update leaves the registers whole.
        self.regs.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The guest-facing VT-d of one remapping unit, for the devices behind it.
pub struct FrontEnd {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    /// The devices whose faults it handles.
    devices: Vec<DeviceId>,
}

impl std::fmt::Debug for FrontEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrontEnd")
            .field("stats", &self.stats())
            .finish()
    }
}

impl FrontEnd {
    /// A front end with capabilities `config` (caching mode is forced on) for `devices`, which
    /// reads the guest's structures through `mem` and drives `iommu`; its interrupt messages
    /// leave through `irq`. Registers a fault handler with `iommu` for each device. Fails only
    /// when its thread cannot be started.
    pub fn new(
        config: VtdConfig,
        mem: GuestMemory,
        iommu: Arc<dyn HostIommu>,
        devices: &[DeviceId],
        irq: Arc<dyn InterruptPort>,
    ) -> std::io::Result<Self> {
        let config = VtdConfig {
            caching_mode: true,
            ..config
        };
        let (work, queue) = mpsc::channel();
        let shared = Arc::new(Shared {
            regs: Mutex::new(Registers::new(&config)),
            config,
            mem,
            iommu,
            irq,
            stats: stats::Counters::default(),
            backlog: Backlog::new(work, MAX_BACKLOG),
        });
        let worker = Worker::new(shared.clone(), devices);
        let thread = thread::Builder::new()
            .name("viommu".into())
            .spawn(move || worker.run(queue))?;
        for &device in devices {
            faults::register(&shared, device);
        }
        Ok(FrontEnd {
            shared,
            thread: Some(thread),
            devices: devices.to_vec(),
        })
    }

    /// The capabilities the guest sees.
    pub fn config(&self) -> &VtdConfig {
        &self.shared.config
    }

    /// Bytes of register window (the fault recording registers come last), whole pages.
    pub fn window_size(&self) -> u64 {
        window_size(&self.shared.config)
    }

    /// A register read: no side effects; holes and odd sizes read as 0.
    pub fn read(&self, offset: u64, size: usize) -> u64 {
        self.shared.regs().read(offset, size)
    }

    /// A register write. Its immediate effects happen before this returns; what needs guest
    /// memory or the host IOMMU is handed to the front end's thread.
    pub fn write(&self, offset: u64, size: usize, value: u64) {
        let work = self
            .shared
            .regs()
            .write(&self.shared.config, offset, size, value);
        for item in work {
            self.send(item);
        }
    }

    /// Back to the reset state (function reset, or the client went away): registers, and
    /// every device back to untranslated with no PASID bound.
    pub fn reset(&self) {
        self.shared.regs().reset(&self.shared.config);
        self.send(Work::Reset);
    }

    /// Waits until the front end's thread has done everything asked of it so far.
    pub fn flush(&self) {
        let (done, wait) = mpsc::channel();
        self.send(Work::Flush(done));
        let _ = wait.recv();
    }

    /// Whether the front end's thread is still serving (it ends only when the front end is
    /// dropped; anything else is a bug, which tests check for).
    pub fn running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// What the front end did so far.
    pub fn stats(&self) -> Stats {
        self.shared.stats.snapshot()
    }

    fn send(&self, work: Work) {
        // Only fault reports come back from a full backlog, and they never come this way.
        let _ = self.shared.backlog.send(work);
    }

    /// Work items waiting for the front end's thread now, and items merged into waiting ones
    /// so far (see [`MAX_BACKLOG`]).
    pub fn backlog(&self) -> (usize, u64) {
        (self.shared.backlog.waiting(), self.shared.backlog.merged())
    }
}

impl Drop for FrontEnd {
    fn drop(&mut self) {
        for &device in &self.devices {
            // Pending page requests of the device are answered Invalid Request by the host.
            let _ = self.shared.iommu.unregister_fault_handler(device);
        }
        self.send(Work::Stop);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
