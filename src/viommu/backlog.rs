//! The front end's work backlog: what MMIO writes and the host's fault reports hand to the
//! front end's thread, bounded. A guest posts register writes faster than the thread can act
//! on them while it waits (on an interrupt message, a device-TLB invalidation), so an
//! unbounded channel would let a guest make the server allocate without end.
//!
//! Up to [`MAX_BACKLOG`] items wait in order. Past it nothing new is queued unless the thread
//! could not do without it:
//! - doorbells (run the queue, re-read the entries, a register-based invalidation, reset) act
//!   on the registers as they are when the thread gets to them, so one waiting doorbell of a
//!   kind already covers every later one: later ones are merged into it;
//! - interrupt messages are kept one per event (the latest address and data: an MSI that is
//!   already on its way says the same) and sent by one doorbell;
//! - fault reports are handed back to the caller, which answers them as VT-d hardware does
//!   when its queues are full (page request queue overflow 7.5, fault overflow 7.2).
//!
//! Merging moves a doorbell ahead of items queued after its kind's waiting one: acceptable only
//! for a guest that has flooded the unit, which is why merging starts at the limit.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Mutex, MutexGuard};

use log::warn;

use super::registers::Outbox;
use super::worker::Work;
use crate::vtd::sink::VtdInterrupt;

/// Most work items waiting for the front end's thread before later ones are merged.
pub const MAX_BACKLOG: usize = 4096;

/// The kinds of work, as the backlog counts them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Queue,
    Reevaluate,
    ContextCommand,
    IotlbCommand,
    Reset,
    Late,
    Send,
    Fault,
    Control,
}

/// Number of [`Kind`]s (`Control` is the last one).
const KINDS: usize = Kind::Control as usize + 1;

impl Kind {
    fn of(work: &Work) -> Kind {
        match work {
            Work::Queue => Kind::Queue,
            Work::Reevaluate => Kind::Reevaluate,
            Work::ContextCommand => Kind::ContextCommand,
            Work::IotlbCommand => Kind::IotlbCommand,
            Work::Reset => Kind::Reset,
            Work::SendLate => Kind::Late,
            Work::Send(_) => Kind::Send,
            Work::Fault(_) => Kind::Fault,
            Work::Flush(_) | Work::Stop => Kind::Control,
        }
    }

    /// Whether one waiting item of this kind does what any later one would.
    fn mergeable(self) -> bool {
        matches!(
            self,
            Kind::Queue
                | Kind::Reevaluate
                | Kind::ContextCommand
                | Kind::IotlbCommand
                | Kind::Reset
                | Kind::Late
        )
    }
}

/// What became of a work item.
#[derive(Debug)]
pub enum Sent {
    /// Queued for the thread.
    Queued,
    /// Merged into an item already waiting.
    Merged,
    /// The backlog is full: the caller must answer this fault report itself.
    Full(Work),
}

/// The sending side of the front end's work channel, with its bound.
#[derive(Debug)]
pub struct Backlog {
    sender: Mutex<Sender<Work>>,
    limit: usize,
    waiting: [AtomicUsize; KINDS],
    total: AtomicUsize,
    /// Interrupt messages held past the limit, one per event.
    late: Mutex<Vec<VtdInterrupt>>,
    merged: AtomicU64,
}

impl Backlog {
    /// A backlog sending to `sender`, holding at most `limit` items before merging.
    pub fn new(sender: Sender<Work>, limit: usize) -> Self {
        Backlog {
            sender: Mutex::new(sender),
            limit,
            waiting: Default::default(),
            total: AtomicUsize::new(0),
            late: Mutex::default(),
            merged: AtomicU64::new(0),
        }
    }

    /// Hands `work` to the thread (see the module comment for what happens past the limit).
    /// The registers must already show what the work is about: a merged doorbell relies on
    /// the waiting one reading them later.
    pub fn send(&self, work: Work) -> Sent {
        let kind = Kind::of(&work);
        // One sender at a time, so that the check and the queueing agree.
        let sender = self.sender.lock().unwrap_or_else(|e| e.into_inner());
        if kind != Kind::Control && self.total.load(Ordering::SeqCst) >= self.limit {
            match work {
                Work::Send(outbox) => {
                    self.hold_late(outbox);
                    return self.queue_or_merge(&sender, Work::SendLate);
                }
                Work::Fault(_) => return Sent::Full(work),
                _ => return self.queue_or_merge(&sender, work),
            }
        }
        self.queue(&sender, work)
    }

    /// The thread took `work` off the channel; call before acting on it.
    pub fn taken(&self, work: &Work) {
        self.waiting[Kind::of(work) as usize].fetch_sub(1, Ordering::SeqCst);
        self.total.fetch_sub(1, Ordering::SeqCst);
    }

    /// The interrupt messages held past the limit, to be sent now.
    pub fn take_late(&self) -> Outbox {
        Outbox {
            interrupts: std::mem::take(&mut *self.late()),
            responses: Vec::new(),
        }
    }

    /// Items waiting now.
    pub fn waiting(&self) -> usize {
        self.total.load(Ordering::SeqCst)
    }

    /// Items merged into waiting ones so far.
    pub fn merged(&self) -> u64 {
        self.merged.load(Ordering::Relaxed)
    }

    fn late(&self) -> MutexGuard<'_, Vec<VtdInterrupt>> {
        self.late.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn hold_late(&self, outbox: Outbox) {
        let mut late = self.late();
        for irq in outbox.interrupts {
            match late.iter_mut().find(|held| held.kind == irq.kind) {
                Some(held) => *held = irq,
                None => late.push(irq),
            }
        }
    }

    fn queue_or_merge(&self, sender: &Sender<Work>, work: Work) -> Sent {
        let kind = Kind::of(&work);
        if kind.mergeable() && self.waiting[kind as usize].load(Ordering::SeqCst) > 0 {
            if self.merged.fetch_add(1, Ordering::Relaxed) == 0 {
                warn!(
                    "vIOMMU: {} work items waiting: later register writes are merged into \
                     waiting ones (logged once)",
                    self.limit
                );
            }
            return Sent::Merged;
        }
        self.queue(sender, work)
    }

    fn queue(&self, sender: &Sender<Work>, work: Work) -> Sent {
        let kind = Kind::of(&work);
        self.waiting[kind as usize].fetch_add(1, Ordering::SeqCst);
        self.total.fetch_add(1, Ordering::SeqCst);
        if sender.send(work).is_err() {
            self.waiting[kind as usize].fetch_sub(1, Ordering::SeqCst);
            self.total.fetch_sub(1, Ordering::SeqCst);
            warn!("vIOMMU thread gone: request dropped");
        }
        Sent::Queued
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::{self, Receiver};

    use crate::iommu::{Access, PageRequest};
    use crate::iommu::{DeviceId, IommuFault, UnrecoverableFault, UnrecoverableReason};
    use crate::vtd::sink::InterruptKind;

    const LIMIT: usize = 8;

    fn backlog() -> (Backlog, Receiver<Work>) {
        let (tx, rx) = mpsc::channel();
        (Backlog::new(tx, LIMIT), rx)
    }

    fn fault() -> Work {
        Work::Fault(IommuFault::Unrecoverable(UnrecoverableFault {
            device: DeviceId(0x20),
            pasid: None,
            addr: 0x1000,
            access: Access::READ,
            reason: UnrecoverableReason::NotPresent,
            stage: None,
        }))
    }

    fn page_request() -> Work {
        Work::Fault(IommuFault::PageRequest(PageRequest {
            device: DeviceId(0x20),
            pasid: None,
            addr: 0x1000,
            access: Access::READ,
            group: 1,
            last: true,
        }))
    }

    fn interrupt(kind: InterruptKind, data: u32) -> Work {
        Work::Send(Outbox {
            interrupts: vec![VtdInterrupt {
                kind,
                addr: 0xfee0_0000,
                data,
            }],
            responses: Vec::new(),
        })
    }

    /// Takes one item off the channel as the thread does.
    fn take(b: &Backlog, rx: &Receiver<Work>) -> Work {
        let work = rx.try_recv().expect("an item waits");
        b.taken(&work);
        work
    }

    #[test]
    fn test_faults_queue_up_to_the_limit_and_the_next_is_handed_back() {
        let (b, rx) = backlog();
        for _ in 0..LIMIT {
            assert!(matches!(b.send(fault()), Sent::Queued));
        }
        assert_eq!(b.waiting(), LIMIT);
        assert!(matches!(b.send(page_request()), Sent::Full(Work::Fault(_))));
        assert_eq!(
            rx.try_iter().count(),
            LIMIT,
            "nothing queued past the limit"
        );
    }

    #[test]
    fn test_room_after_the_thread_took_an_item() {
        let (b, rx) = backlog();
        for _ in 0..LIMIT {
            b.send(fault());
        }
        take(&b, &rx);
        assert!(matches!(b.send(fault()), Sent::Queued));
        assert!(matches!(b.send(fault()), Sent::Full(_)));
    }

    #[test]
    fn test_doorbells_below_the_limit_are_never_merged() {
        let (b, rx) = backlog();
        for _ in 0..LIMIT {
            assert!(matches!(b.send(Work::Queue), Sent::Queued));
        }
        assert_eq!(rx.try_iter().count(), LIMIT);
        assert_eq!(b.merged(), 0);
    }

    #[test]
    fn test_doorbells_past_the_limit_merge_into_a_waiting_one_of_their_kind() {
        let (b, rx) = backlog();
        for _ in 0..LIMIT {
            b.send(fault());
        }
        // No doorbell of these kinds waits: each gets one slot past the limit.
        for work in [Work::Queue, Work::Reevaluate, Work::ContextCommand] {
            assert!(matches!(b.send(work), Sent::Queued));
        }
        for _ in 0..1000 {
            for work in [Work::Queue, Work::Reevaluate, Work::ContextCommand] {
                assert!(matches!(b.send(work), Sent::Merged));
            }
        }
        assert_eq!(b.waiting(), LIMIT + 3);
        assert_eq!(b.merged(), 3000);
        // Once the waiting doorbell is taken, the next one is queued again.
        let items: Vec<Work> = rx.try_iter().collect();
        items.iter().for_each(|w| b.taken(w));
        assert!(matches!(items[LIMIT], Work::Queue));
        assert!(matches!(b.send(Work::Queue), Sent::Queued));
    }

    #[test]
    fn test_interrupts_past_the_limit_are_held_one_per_event() {
        let (b, rx) = backlog();
        for _ in 0..LIMIT {
            b.send(fault());
        }
        for data in 0..100 {
            b.send(interrupt(InterruptKind::Fault, data));
            b.send(interrupt(InterruptKind::PageRequest, data));
        }
        assert_eq!(b.waiting(), LIMIT + 1, "one doorbell sends them");
        let late = b.take_late();
        let kinds: Vec<(InterruptKind, u32)> =
            late.interrupts.iter().map(|i| (i.kind, i.data)).collect();
        assert_eq!(
            kinds,
            [(InterruptKind::Fault, 99), (InterruptKind::PageRequest, 99)],
            "the latest message of each event"
        );
        assert!(matches!(rx.try_iter().last(), Some(Work::SendLate)));
    }

    #[test]
    fn test_flush_is_queued_past_the_limit() {
        let (b, _rx) = backlog();
        for _ in 0..LIMIT {
            b.send(fault());
        }
        let (done, _wait) = mpsc::channel();
        assert!(matches!(b.send(Work::Flush(done)), Sent::Queued));
    }
}
