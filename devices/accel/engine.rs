//! The accel plain copy engine: runs jobs on its own thread, so that a job whose memory is
//! reached through the client (DMA_READ/WRITE) never blocks the thread answering the client.
//! Without an IOMMU DMA_SRC/DMA_DST are guest-physical; behind one they are IOVAs, translated
//! page by page as requests without PASID (through ATS when it is enabled), PCIe 6.0 §10.1.

use std::ops::Range;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::Instant;

use log::debug;

use super::device::Core;
use super::regs::{DmaError, DmaState, DmaStatus, DMA_MAX_LEN};
use super::svm::{self, Space, Svm};
use crate::mem::{Gpa, MemError, MemView, ViewCache};

/// MSI-X vector raised when a job ends.
pub const COMPLETION_VECTOR: u32 = 0;

/// One copy job.
#[derive(Clone, Copy, Debug)]
pub struct Job {
    /// Source: guest-physical address, or an IOVA behind an IOMMU.
    pub src: Gpa,
    /// Destination: guest-physical address, or an IOVA behind an IOMMU.
    pub dst: Gpa,
    /// Bytes to copy.
    pub len: u32,
    /// Raise the completion vector at the end.
    pub irq: bool,
}

/// The worker's progress, under one lock with the reset generation: a job publishes its
/// result under it, so a reset cannot slip between the job's check and its publication.
#[derive(Debug, Default)]
struct Run {
    /// Bumped by reset, so a job that outlives a reset does not publish its result.
    generation: u64,
    /// The worker holds a job.
    running: bool,
}

/// State the register file reads and the worker writes.
#[derive(Debug, Default)]
pub struct Shared {
    status: AtomicU32,
    done: AtomicU32,
    run: Mutex<Run>,
    /// Signalled when the worker lets go of a job.
    idle: Condvar,
}

impl Shared {
    fn run(&self) -> MutexGuard<'_, Run> {
        self.run.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// DMA_STATUS.
    pub fn status(&self) -> DmaStatus {
        DmaStatus::from_bits(self.status.load(Ordering::Acquire))
    }

    /// DMA_DONE.
    pub fn done(&self) -> u32 {
        self.done.load(Ordering::Acquire)
    }
}

/// Handle to the engine thread; dropping it stops the thread.
#[derive(Debug)]
pub struct Engine {
    jobs: Sender<(Job, u64)>,
    shared: Arc<Shared>,
}

impl Engine {
    /// Starts the engine thread of the device `core` (its bus, and its IOMMU if any).
    pub(crate) fn start(core: Arc<Core>) -> Self {
        let shared = Arc::new(Shared::default());
        let (jobs, rx) = mpsc::channel();
        let worker_shared = shared.clone();
        thread::Builder::new()
            .name("accel-engine".into())
            .spawn(move || worker(rx, &core, worker_shared))
            .expect("spawning the engine thread");
        Engine { jobs, shared }
    }

    /// The registers' view of the engine.
    pub fn shared(&self) -> &Shared {
        &self.shared
    }

    /// Queues a job unless one is running. Returns false when busy.
    pub fn submit(&self, job: Job) -> bool {
        let busy = DmaStatus::new().with_state(DmaState::Busy).into_bits();
        let current = self.shared.status.load(Ordering::Acquire);
        if DmaStatus::from_bits(current).state() == DmaState::Busy {
            return false;
        }
        let generation = self.shared.run().generation;
        self.shared.status.store(busy, Ordering::Release);
        self.jobs.send((job, generation)).is_ok()
    }

    /// Forgets every job: status idle, counter zero; a running job's result is dropped.
    pub fn reset(&self) {
        let mut run = self.shared.run();
        run.generation += 1;
        self.shared.status.store(0, Ordering::Release);
        self.shared.done.store(0, Ordering::Release);
    }

    /// Waits until the worker holds no job (and so no guest memory), or until `deadline`;
    /// says whether it does not.
    pub fn wait_idle(&self, deadline: Instant) -> bool {
        let mut run = self.shared.run();
        while run.running {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return false;
            };
            run = self
                .shared
                .idle
                .wait_timeout(run, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }
}

fn worker(jobs: Receiver<(Job, u64)>, core: &Core, shared: Arc<Shared>) {
    let mut buf = Vec::new();
    let mut views = ViewCache::new(core.bus.mem.clone());
    for (job, generation) in jobs {
        shared.run().running = true;
        let error = run(&job, core, &mut views, &mut buf);
        // Idle engines hold no view: a client that leaves takes its maps with it.
        views.release();
        if publish(&shared, generation, error)
            && job.irq
            && !core.bus.irqs.trigger(COMPLETION_VECTOR)
        {
            debug!("completion interrupt not delivered (vector masked or unassigned)");
        }
        shared.run().running = false;
        shared.idle.notify_all();
    }
}

/// Publishes a job's result unless a reset came since it was submitted; says whether it did.
fn publish(shared: &Shared, generation: u64, error: DmaError) -> bool {
    let run = shared.run();
    if run.generation != generation {
        debug!("job finished after a reset; result dropped");
        return false;
    }
    let state = if error == DmaError::None {
        DmaState::Done
    } else {
        DmaState::Error
    };
    let status = DmaStatus::new().with_state(state).with_error(error);
    shared.status.store(status.into_bits(), Ordering::Release);
    shared.done.fetch_add(1, Ordering::AcqRel);
    true
}

/// Runs one job: the whole source is read, then the whole destination written (so
/// overlapping ranges copy as from a snapshot of the source).
fn run(job: &Job, core: &Core, views: &mut ViewCache, buf: &mut Vec<u8>) -> DmaError {
    if job.len == 0 || job.len > DMA_MAX_LEN {
        return DmaError::BadLen;
    }
    if !core.bus.bus_master() {
        warn_limited!("DMA job with bus mastering disabled");
        return DmaError::SrcFault;
    }
    buf.resize(job.len as usize, 0);
    let Some(svm) = core.svm.as_ref() else {
        let view = views.current();
        if let Err(e) = view.read(job.src, buf) {
            warn_limited!("DMA source {}: {e}", job.src);
            return DmaError::SrcFault;
        }
        if let Err(e) = view.write(job.dst, buf) {
            warn_limited!("DMA destination {}: {e}", job.dst);
            return DmaError::DstFault;
        }
        return DmaError::None;
    };
    let (src, dst, len) = (job.src.0, job.dst.0, buf.len());
    let read = |view: &MemView, gpa, range: Range<usize>| view.read(Gpa(gpa), &mut buf[range]);
    if let Err(e) = translated(svm, views, src, len, false, read) {
        return e;
    }
    let write = |view: &MemView, gpa, range: Range<usize>| view.write(Gpa(gpa), &buf[range]);
    if let Err(e) = translated(svm, views, dst, len, true, write) {
        return e;
    }
    DmaError::None
}

/// Accesses the `len` bytes at IOVA `addr` page by page: each page is translated as a
/// request without PASID (a write for the destination) and handed to `access` as (view,
/// guest-physical address, range of the job's buffer) under the ATS fence, so that an
/// invalidation of the page waits for its access. A translation the IOMMU refuses (the
/// default domain maps nothing there, or forbids the access) is `Translation`; memory that
/// cannot be accessed, or a range that wraps, is `SrcFault` / `DstFault`.
fn translated(
    svm: &Svm,
    views: &mut ViewCache,
    addr: u64,
    len: usize,
    write: bool,
    mut access: impl FnMut(&MemView, u64, Range<usize>) -> Result<(), MemError>,
) -> Result<(), DmaError> {
    let (side, fault) = if write {
        ("destination", DmaError::DstFault)
    } else {
        ("source", DmaError::SrcFault)
    };
    if addr.checked_add(len as u64).is_none() {
        warn_limited!("DMA {side} 0x{addr:x}+0x{len:x} wraps the address space");
        return Err(fault);
    }
    let mut done = 0;
    while done < len {
        let at = addr + done as u64;
        let _fence = svm.ats().fence();
        let space = Space::Untagged;
        // One ATC lookup for a whole run of pages contiguous in both spaces: the copy then
        // moves the run in one piece instead of page by page.
        let left = (len - done) as u64;
        let page = svm::translate_run(Some(svm), space, at, space.access(write), left).map_err(
            |miss| {
                debug!("DMA {side} IOVA 0x{at:x} not translated: {miss:?}");
                DmaError::Translation
            },
        )?;
        let n = usize::try_from(page.forward()).map_or(len - done, |n| n.min(len - done));
        access(views.current(), page.gpa, done..done + n).map_err(|e| {
            warn_limited!("DMA {side} IOVA 0x{at:x} (GPA 0x{:x}): {e}", page.gpa);
            fault
        })?;
        done += n;
    }
    Ok(())
}
