//! The accel copy engine: runs jobs on its own thread, so that a job whose memory is reached
//! through the client (DMA_READ/WRITE) never blocks the thread answering the client.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::Instant;

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

fn worker(jobs: Receiver<(Job, u64)>, bus: Bus, shared: Arc<Shared>) {
    let mut buf = Vec::new();
    for (job, generation) in jobs {
        shared.run().running = true;
        let error = run(&job, &bus, &mut buf);
        if publish(&shared, generation, error) && job.irq && !bus.irqs.trigger(COMPLETION_VECTOR) {
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
