//! The accel copy engine: runs jobs on its own thread, so that a job whose memory is reached
//! through the client (DMA_READ/WRITE) never blocks the thread answering the client.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::thread;

use log::{debug, warn};

use super::regs::{DmaError, DmaState, DmaStatus, DMA_MAX_LEN};
use crate::endpoint::Bus;
use crate::mem::Gpa;

/// MSI-X vector raised when a job ends.
pub const COMPLETION_VECTOR: u32 = 0;

/// One copy job.
#[derive(Clone, Copy, Debug)]
pub struct Job {
    /// Source guest-physical address.
    pub src: Gpa,
    /// Destination guest-physical address.
    pub dst: Gpa,
    /// Bytes to copy.
    pub len: u32,
    /// Raise the completion vector at the end.
    pub irq: bool,
}

/// State the register file reads and the worker writes.
#[derive(Debug, Default)]
pub struct Shared {
    status: AtomicU32,
    done: AtomicU32,
    /// Bumped by reset, so a job that outlives a reset does not publish its result.
    generation: AtomicU64,
}

impl Shared {
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
    /// Starts the engine thread on `bus`.
    pub fn start(bus: Bus) -> Self {
        let shared = Arc::new(Shared::default());
        let (jobs, rx) = mpsc::channel();
        let worker_shared = shared.clone();
        thread::Builder::new()
            .name("accel-engine".into())
            .spawn(move || worker(rx, bus, worker_shared))
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
        self.shared.status.store(busy, Ordering::Release);
        let generation = self.shared.generation.load(Ordering::Acquire);
        self.jobs.send((job, generation)).is_ok()
    }

    /// Forgets every job: status idle, counter zero; a running job's result is dropped.
    pub fn reset(&self) {
        self.shared.generation.fetch_add(1, Ordering::AcqRel);
        self.shared.status.store(0, Ordering::Release);
        self.shared.done.store(0, Ordering::Release);
    }
}

fn worker(jobs: Receiver<(Job, u64)>, bus: Bus, shared: Arc<Shared>) {
    let mut buf = Vec::new();
    for (job, generation) in jobs {
        let error = run(&job, &bus, &mut buf);
        if shared.generation.load(Ordering::Acquire) != generation {
            debug!("job {job:?} finished after a reset; result dropped");
            continue;
        }
        let state = if error == DmaError::None {
            DmaState::Done
        } else {
            DmaState::Error
        };
        let status = DmaStatus::new().with_state(state).with_error(error);
        shared.status.store(status.into_bits(), Ordering::Release);
        shared.done.fetch_add(1, Ordering::AcqRel);
        if job.irq && !bus.irqs.trigger(COMPLETION_VECTOR) {
            debug!("completion interrupt not delivered (vector masked or unassigned)");
        }
    }
}

fn run(job: &Job, bus: &Bus, buf: &mut Vec<u8>) -> DmaError {
    if job.len == 0 || job.len > DMA_MAX_LEN {
        return DmaError::BadLen;
    }
    if !bus.bus_master() {
        warn!("DMA job with bus mastering disabled");
        return DmaError::SrcFault;
    }
    buf.resize(job.len as usize, 0);
    if let Err(e) = bus.mem.read(job.src, buf) {
        warn!("DMA source {}: {e}", job.src);
        return DmaError::SrcFault;
    }
    if let Err(e) = bus.mem.write(job.dst, buf) {
        warn!("DMA destination {}: {e}", job.dst);
        return DmaError::DstFault;
    }
    DmaError::None
}
