//! accel work queues: a ring of 64-byte descriptors in memory the driver owns (addressed
//! without PASID), its registers (BASE, SIZE, CTRL, HEAD, TAIL doorbell, STATUS, DONE) and the
//! engine thread that runs it. Register map: devices/accel/README.md, "Work queues".
//!
//! A doorbell only stores TAIL and wakes the engine: the register thread (the vfio-user reader)
//! never waits for guest memory, which may be reached through that very client.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Instant;

use zerocopy::IntoBytes;

use super::completion::Status;
use super::descriptor::{Descriptor, DESCRIPTOR_SIZE};
use super::device::Core;
use super::dispatch;
use super::pasid_table::WqMark;
use super::regs::{wq_offset, WqCtrl, WqStatus, MAX_WQ_SIZE, MIN_WQ_SIZE, WQ_BASE_ALIGN};
use super::svm::{self, Space};
use crate::iommu::Access;
use crate::mem::{Gpa, ViewCache};

/// A software error a register write caused: code, ring slot, address.
pub(crate) type WriteError = (Status, u16, u64);

#[derive(Debug, Default)]
struct State {
    base: u64,
    size: u32,
    ctrl: WqCtrl,
    error: u8,
    head: u32,
    tail: u32,
    /// Descriptors submitted / completed in this epoch (for drains).
    submitted: u64,
    completed: u64,
    done: u32,
    /// The engine holds a descriptor, or has not yet let go of the guest memory the last
    /// one used (also after a disable or reset, until the job stopped: drivers wait for it
    /// before reusing that memory).
    busy: bool,
    stop: bool,
    epoch: u64,
}

/// One descriptor handed to the engine.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Slot {
    /// Ring index.
    pub index: u32,
    /// Address of the descriptor (untagged space).
    pub addr: u64,
    /// WQ_CTRL when it was fetched.
    pub ctrl: WqCtrl,
    /// Queue epoch when it was fetched.
    pub epoch: u64,
    /// Device generation when it was fetched.
    pub generation: u64,
}

/// One work queue.
#[derive(Debug)]
pub(crate) struct WorkQueue {
    index: u8,
    state: Mutex<State>,
    wake: Condvar,
    /// Mirrors `State::epoch` for lock-free checks between pages.
    epoch: AtomicU64,
}

fn set_low(r: &mut u64, value: u32) {
    *r = (*r & !u64::from(u32::MAX)) | u64::from(value);
}

fn set_high(r: &mut u64, value: u32) {
    *r = (*r & u64::from(u32::MAX)) | (u64::from(value) << 32);
}

impl WorkQueue {
    /// Queue `index`, disabled.
    pub fn new(index: u8) -> Self {
        WorkQueue {
            index,
            state: Mutex::default(),
            wake: Condvar::new(),
            epoch: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The queue's number.
    pub fn index(&self) -> u8 {
        self.index
    }

    /// The current epoch: a job of an older one was stopped by a disable or reset.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    fn new_epoch(&self, s: &mut State) {
        s.epoch += 1;
        s.submitted = 0;
        s.completed = 0;
        self.epoch.store(s.epoch, Ordering::Release);
        self.wake.notify_all();
    }

    /// A register read at `reg` (offset in the queue's block).
    pub fn read(&self, reg: u64) -> u32 {
        let s = self.lock();
        match reg {
            wq_offset::BASE => s.base as u32,
            r if r == wq_offset::BASE + 4 => (s.base >> 32) as u32,
            wq_offset::SIZE => s.size,
            wq_offset::CTRL => s.ctrl.into_bits(),
            wq_offset::HEAD => s.head,
            wq_offset::TAIL => s.tail,
            wq_offset::STATUS => WqStatus::new()
                .with_enabled(s.ctrl.enable())
                .with_busy(s.busy)
                .with_error(s.error)
                .into_bits(),
            wq_offset::DONE => s.done,
            _ => 0,
        }
    }

    /// A register write at `reg`; returns the software error it caused, if any.
    pub fn write(&self, reg: u64, value: u32) -> Option<WriteError> {
        let mut s = self.lock();
        let enabled = s.ctrl.enable();
        match reg {
            // The ring's shape is fixed while the queue runs.
            wq_offset::BASE if !enabled => {
                set_low(&mut s.base, value & !(WQ_BASE_ALIGN as u32 - 1))
            }
            r if r == wq_offset::BASE + 4 && !enabled => set_high(&mut s.base, value),
            wq_offset::SIZE if !enabled => s.size = value,
            wq_offset::CTRL => self.write_ctrl(&mut s, WqCtrl::from_bits(value)),
            wq_offset::TAIL => return self.doorbell(&mut s, value),
            _ => {}
        }
        None
    }

    fn write_ctrl(&self, s: &mut State, ctrl: WqCtrl) {
        let was = s.ctrl.enable();
        s.ctrl = ctrl;
        if ctrl.enable() && !was {
            let ring_fits = u64::from(s.size)
                .checked_mul(DESCRIPTOR_SIZE)
                .and_then(|len| s.base.checked_add(len))
                .is_some();
            let size_ok = s.size.is_power_of_two() && (MIN_WQ_SIZE..=MAX_WQ_SIZE).contains(&s.size);
            if !(size_ok && ring_fits) {
                s.error = Status::BadWqConfig.code();
                s.ctrl.set_enable(false);
                return;
            }
            s.error = 0;
            s.head = 0;
            s.tail = 0;
            s.done = 0;
            self.new_epoch(s);
        } else if !ctrl.enable() && was {
            // The descriptor in flight aborts (epoch), the queued ones are dropped.
            s.tail = s.head;
            self.new_epoch(s);
        }
    }

    fn doorbell(&self, s: &mut State, tail: u32) -> Option<WriteError> {
        log::trace!("accel: doorbell, TAIL {tail}");
        if !s.ctrl.enable() || tail >= s.size {
            return Some((Status::BadTail, tail as u16, u64::from(tail)));
        }
        let added = tail.wrapping_sub(s.tail) & (s.size - 1);
        s.tail = tail;
        s.submitted += u64::from(added);
        self.wake.notify_all();
        None
    }

    /// Blocks until a descriptor is due (marking the queue busy) or the queue is stopped.
    /// Before it goes idle it calls `on_idle`, where the engine lets go of the guest memory
    /// it holds; only then is the queue idle ([`WorkQueue::wait_idle`]).
    pub fn next(&self, core: &Core, mut on_idle: impl FnMut()) -> Option<Slot> {
        let mut s = self.lock();
        loop {
            if s.stop {
                return None;
            }
            if s.ctrl.enable() && s.head != s.tail {
                s.busy = true;
                let offset = u64::from(s.head) * DESCRIPTOR_SIZE;
                return Some(Slot {
                    index: s.head,
                    // Checked at enable: the ring does not wrap the address space.
                    addr: s.base.wrapping_add(offset),
                    ctrl: s.ctrl,
                    epoch: s.epoch,
                    generation: core.generation(),
                });
            }
            if s.busy {
                // Not under the lock: dropping the last view of a map unmaps it.
                drop(s);
                on_idle();
                s = self.lock();
                s.busy = false;
                self.wake.notify_all();
                continue;
            }
            s = self.wake.wait(s).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Waits until the engine is idle, holding no descriptor and no guest memory, or until
    /// `deadline`; says whether it is.
    pub fn wait_idle(&self, deadline: Instant) -> bool {
        let mut s = self.lock();
        while s.busy && !s.stop {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return false;
            };
            s = self
                .wake
                .wait_timeout(s, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }

    /// The engine is done with `slot`: HEAD moves on unless the queue was disabled or reset.
    pub fn finish(&self, slot: &Slot) {
        let mut s = self.lock();
        if s.epoch == slot.epoch && s.size.is_power_of_two() {
            s.head = (s.head + 1) & (s.size - 1);
            s.completed += 1;
            s.done = s.done.wrapping_add(1);
        }
    }

    /// Where the queue stands, for a drain.
    pub fn mark(&self) -> WqMark {
        let s = self.lock();
        WqMark {
            epoch: s.epoch,
            submitted: s.submitted,
        }
    }

    /// Whether the queue completed what was submitted at `mark` (or moved to a new epoch).
    pub fn passed(&self, mark: WqMark) -> bool {
        let s = self.lock();
        s.epoch != mark.epoch || s.completed >= mark.submitted
    }

    /// Power-on state: disabled, empty; the job in flight stops (BUSY until it has).
    pub fn reset(&self) {
        let mut s = self.lock();
        let (busy, stop) = (s.busy, s.stop);
        let epoch = s.epoch;
        *s = State {
            busy,
            stop,
            epoch,
            ..State::default()
        };
        self.new_epoch(&mut s);
    }

    /// Ends the engine thread.
    pub fn stop(&self) {
        self.lock().stop = true;
        self.wake.notify_all();
    }
}

/// An engine thread's view of guest memory, kept from job to job (see [`ViewCache`]).
pub(crate) type Views = RefCell<ViewCache>;

/// Reads the descriptor at `addr` of the ring (untagged space: rings are driver memory, never
/// faulted in). The error is the software error to report.
pub(crate) fn read_slot(core: &Core, views: &Views, addr: u64) -> Result<Descriptor, Status> {
    if !core.bus.bus_master() {
        return Err(Status::DmaError);
    }
    let svm = core.svm.as_ref();
    let space = match svm {
        Some(_) => Space::Untagged,
        None => Space::Physical,
    };
    let _fence = svm.map(|s| s.ats().fence());
    let at = svm::translate(svm, space, addr, Access::READ).map_err(|_| Status::RingReadFault)?;
    let mut desc = Descriptor::default();
    views
        .borrow_mut()
        .current()
        .read(Gpa(at.gpa), desc.as_mut_bytes())
        .map_err(|_| Status::RingReadFault)?;
    Ok(desc)
}

/// The engine thread of queue `index`: runs descriptors until the queue is stopped.
pub(crate) fn run(core: Arc<Core>, index: usize) {
    let Some(wq) = core.wqs.get(index) else {
        return;
    };
    let views = RefCell::new(ViewCache::new(core.bus.mem.clone()));
    while let Some(slot) = wq.next(&core, || views.borrow_mut().release()) {
        let raise = dispatch::slot(&core, wq, &slot, &views);
        // HEAD and WQ_DONE first: a driver woken by the interrupt finds the slot free.
        wq.finish(&slot);
        raise.fire(&core);
        core.notify_progress();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue(size: u32) -> WorkQueue {
        let wq = WorkQueue::new(0);
        wq.write(wq_offset::BASE, 0x1040);
        wq.write(wq_offset::SIZE, size);
        wq.write(wq_offset::CTRL, WqCtrl::new().with_enable(true).into_bits());
        wq
    }

    fn status(wq: &WorkQueue) -> WqStatus {
        WqStatus::from_bits(wq.read(wq_offset::STATUS))
    }

    #[test]
    fn test_ring_of_max_wq_size_enables_and_the_next_size_is_refused() {
        assert!(status(&queue(MAX_WQ_SIZE)).enabled());
        let past = queue(MAX_WQ_SIZE * 2);
        assert!(!status(&past).enabled());
        assert_eq!(status(&past).error(), Status::BadWqConfig.code());
    }

    #[test]
    fn test_enable_with_bad_size_is_refused_with_config_error() {
        for size in [0, 1, 48, MAX_WQ_SIZE * 2] {
            let wq = queue(size);
            assert!(!status(&wq).enabled(), "size {size}");
            assert_eq!(status(&wq).error(), Status::BadWqConfig.code());
        }
        assert!(status(&queue(MIN_WQ_SIZE)).enabled());
    }

    #[test]
    fn test_enable_with_ring_wrapping_the_address_space_is_refused() {
        let wq = WorkQueue::new(0);
        wq.write(wq_offset::BASE, 0xffff_ffc0);
        wq.write(wq_offset::BASE + 4, u32::MAX);
        wq.write(wq_offset::SIZE, 4);
        wq.write(wq_offset::CTRL, WqCtrl::new().with_enable(true).into_bits());
        assert!(!status(&wq).enabled());
    }

    #[test]
    fn test_doorbell_counts_submissions_across_the_wrap() {
        let wq = queue(8);
        assert_eq!(wq.write(wq_offset::TAIL, 6), None);
        assert_eq!(wq.write(wq_offset::TAIL, 2), None);
        assert_eq!(wq.mark().submitted, 10);
        assert_eq!(wq.read(wq_offset::TAIL), 2);
    }

    #[test]
    fn test_tail_beyond_size_or_on_disabled_queue_is_bad_tail() {
        let wq = queue(8);
        assert_eq!(wq.write(wq_offset::TAIL, 8), Some((Status::BadTail, 8, 8)));
        assert_eq!(wq.read(wq_offset::TAIL), 0);
        let off = WorkQueue::new(1);
        assert!(off.write(wq_offset::TAIL, 1).is_some());
    }

    #[test]
    fn test_ring_shape_is_fixed_while_enabled() {
        let wq = queue(8);
        wq.write(wq_offset::BASE, 0x9000);
        wq.write(wq_offset::SIZE, 16);
        assert_eq!(
            (wq.read(wq_offset::BASE), wq.read(wq_offset::SIZE)),
            (0x1040, 8)
        );
        let off = WorkQueue::new(0);
        off.write(wq_offset::BASE, 0x1234_5678);
        assert_eq!(off.read(wq_offset::BASE), 0x1234_5640, "64-byte aligned");
    }

    #[test]
    fn test_disable_drops_queued_work_and_passes_drain_marks() {
        let wq = queue(8);
        wq.write(wq_offset::TAIL, 3);
        let mark = wq.mark();
        assert!(!wq.passed(mark));
        let epoch = wq.epoch();
        wq.write(wq_offset::CTRL, 0);
        assert!(wq.passed(mark));
        assert_ne!(wq.epoch(), epoch);
        assert_eq!(wq.read(wq_offset::TAIL), wq.read(wq_offset::HEAD));
    }

    #[test]
    fn test_after_reset_busy_and_idle_wait_until_the_engine_let_go_of_memory() {
        let core = Core::new(crate::endpoint::Bus::new(1), None, 1);
        let wq = queue(8);
        wq.write(wq_offset::TAIL, 1);
        let slot = wq.next(&core, || unreachable!("work is due")).unwrap();
        wq.reset();
        assert!(status(&wq).busy() && !status(&wq).enabled());
        let soon = Instant::now() + std::time::Duration::from_millis(20);
        assert!(!wq.wait_idle(soon), "the engine still holds its job");
        wq.finish(&slot);
        let released = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|threads| {
            threads.spawn(|| wq.next(&core, || released.store(true, Ordering::Release)));
            let later = Instant::now() + std::time::Duration::from_secs(5);
            assert!(wq.wait_idle(later));
            assert!(
                released.load(Ordering::Acquire),
                "idle only after letting go"
            );
            wq.stop();
        });
    }

    #[test]
    fn test_reset_returns_to_power_on_and_moves_the_epoch() {
        let wq = queue(8);
        wq.write(wq_offset::TAIL, 3);
        let epoch = wq.epoch();
        wq.reset();
        assert_ne!(wq.epoch(), epoch);
        assert_eq!(wq.read(wq_offset::STATUS), 0);
        assert_eq!((wq.read(wq_offset::BASE), wq.read(wq_offset::TAIL)), (0, 0));
    }
}
