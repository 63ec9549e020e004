//! accel's shared device state: what the register thread, the work queue engines and the
//! drainer all reach — guest memory and interrupts, the IOMMU connection, the queues, the PASID
//! table, the error log, the reset generation and the PASID capability's control bits.

use std::sync::atomic::{fence, AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use super::completion::Status;
use super::descriptor::Descriptor;
use super::pasid_table::{PasidTable, WqMark};
use super::svm::{Space, Svm};
use super::swerr::{ErrorLog, Origin};
use super::wq::WorkQueue;
use crate::endpoint::Bus;
use crate::iommu::Pasid;
use crate::pci::caps::pasid::PasidControl;

/// State shared by every thread of one accelerator.
#[derive(Debug)]
pub(crate) struct Core {
    pub bus: Bus,
    pub svm: Option<Svm>,
    pub wqs: Vec<WorkQueue>,
    pub pasids: PasidTable,
    pub errors: ErrorLog,
    /// Bumped by reset: work of an older generation stops and publishes nothing.
    generation: AtomicU64,
    /// PASID Control as the guest last wrote it (PCIe 6.0 §7.8.9.3).
    pasid_control: AtomicU16,
    /// Signalled whenever a queue completes a descriptor or goes idle (drains wait on it).
    progress: Mutex<()>,
    progressed: Condvar,
    /// Threads in `wait_progress`.
    progress_waiters: AtomicUsize,
}

impl Core {
    /// A device on `bus` with `wq_count` queues, behind `svm` if any.
    pub fn new(bus: Bus, svm: Option<Svm>, wq_count: usize) -> Self {
        Core {
            errors: ErrorLog::new(bus.irqs.clone()),
            bus,
            svm,
            wqs: (0..wq_count).map(|i| WorkQueue::new(i as u8)).collect(),
            pasids: PasidTable::new(),
            generation: AtomicU64::new(0),
            pasid_control: AtomicU16::new(0),
            progress: Mutex::new(()),
            progressed: Condvar::new(),
            progress_waiters: AtomicUsize::new(0),
        }
    }

    /// The reset generation.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Records a software error of work fetched in `generation`, unless a reset has started a
    /// newer generation since (checked under the error log's lock, see
    /// [`ErrorLog::record_if`]).
    pub fn record_error(&self, generation: u64, code: Status, origin: Origin, addr: u64) {
        self.errors
            .record_if(|| self.generation() == generation, code, origin, addr);
    }

    /// Starts a new generation (reset).
    pub fn bump_generation(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// PASID Control.
    pub fn pasid_control(&self) -> PasidControl {
        PasidControl::from_bits(self.pasid_control.load(Ordering::Acquire))
    }

    /// Follows a PASID Control write.
    pub fn set_pasid_control(&self, control: PasidControl) {
        self.pasid_control
            .store(control.into_bits(), Ordering::Release);
    }

    /// Wakes drains waiting for queue progress. Engines call it after every descriptor, so
    /// with nobody waiting it costs one atomic load, not a futex wake-up.
    pub fn notify_progress(&self) {
        // Pairs with the waiter's increment: either we see the waiter, or it sees our
        // progress when it checks before sleeping.
        fence(Ordering::SeqCst);
        if self.progress_waiters.load(Ordering::SeqCst) == 0 {
            return;
        }
        let _guard = self.progress.lock().unwrap_or_else(|e| e.into_inner());
        self.progressed.notify_all();
    }

    /// Waits for queue progress unless `done` already holds, at most `timeout` (a drain
    /// re-checks after it anyway).
    pub fn wait_progress(&self, done: impl Fn() -> bool, timeout: Duration) {
        let guard = self.progress.lock().unwrap_or_else(|e| e.into_inner());
        self.progress_waiters.fetch_add(1, Ordering::SeqCst);
        if !done() {
            drop(self.progressed.wait_timeout(guard, timeout));
        }
        self.progress_waiters.fetch_sub(1, Ordering::SeqCst);
    }

    /// Where every queue stands (for a drain's start).
    pub fn marks(&self) -> Vec<WqMark> {
        self.wqs.iter().map(WorkQueue::mark).collect()
    }

    /// Whether every queue got past `pasid`'s drain marks.
    pub fn drain_reached(&self, pasid: Pasid) -> bool {
        let Some(marks) = self.pasids.marks(pasid) else {
            return true;
        };
        self.wqs.iter().zip(marks).all(|(wq, mark)| wq.passed(mark))
    }

    /// The address space of a top-level descriptor, or the status that stops it before any
    /// memory access (no completion record can be written for these: SWERR).
    pub fn space_for(&self, desc: &Descriptor) -> Result<Space, Status> {
        let control = desc.control();
        if !control.pasid_valid() {
            return Ok(match self.svm {
                Some(_) => Space::Untagged,
                None => Space::Physical,
            });
        }
        let pasid_control = self.pasid_control();
        let pasid = Pasid::new(desc.pasid)
            .filter(|_| self.svm.is_some() && pasid_control.enable())
            .ok_or(Status::BadPasid)?;
        if control.privileged() && !pasid_control.privileged() {
            return Err(Status::BadPrivilege);
        }
        Ok(Space::Tagged {
            pasid,
            privileged: control.privileged(),
        })
    }
}
