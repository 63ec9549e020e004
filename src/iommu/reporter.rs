//! The fault reporting framework, per device (Linux `iommu_fault_param`, io-pgfault.c): a
//! registered fault handler, the list of page request groups awaiting a response, and a timer
//! that answers the groups nobody answers.
//!
//! The timer answers with Invalid Request, as Linux's iopf does for a fault no handler takes
//! (`iopf_error_response`): the device fails that access and PRI stays usable. Response
//! Failure would stop PRI for every PASID of the function because one handler was slow.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::thread;
use std::time::{Duration, Instant};

use log::{debug, warn};

use super::fault::{FaultHandler, IommuFault, PageRequest, PageResponse, PageResponseCode};
use super::types::{DeviceId, Pasid};
use super::{IommuError, Result};

/// How long a page request group may wait for its response by default.
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Delivers a response the framework generated (to the device's PRI engine).
pub type Responder = Arc<dyn Fn(PageResponse) + Send + Sync>;

/// One group awaiting its response.
type GroupKey = (DeviceId, Option<Pasid>, u16);

#[derive(Default)]
struct State {
    handlers: HashMap<DeviceId, Arc<dyn FaultHandler>>,
    /// Groups awaiting a response, with their deadline (`None`: a timeout too long for an
    /// `Instant`, i.e. never).
    pending: HashMap<GroupKey, Option<Instant>>,
    /// Groups whose Last has not come yet, and whether they were admitted: a group is admitted
    /// or refused whole, on its first request, so that no handler sees half a group.
    partial: HashMap<GroupKey, bool>,
    stopping: bool,
}

impl State {
    /// Whether `req` may be reported with at most `max_pending` groups pending or under way
    /// (its group's first request decides for all of them).
    fn admit(&mut self, req: &PageRequest, max_pending: usize) -> bool {
        let key = group_key(req);
        let admitted = match self.partial.get(&key) {
            Some(&admitted) if !req.is_stop_marker() => admitted,
            _ => {
                let under_way = self.partial.values().filter(|a| **a).count();
                self.pending.len() + under_way < max_pending
            }
        };
        if req.last {
            self.partial.remove(&key);
        } else {
            self.partial.insert(key, admitted);
        }
        admitted
    }
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    responder: Responder,
    timeout: Duration,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A poisoned lock only means a handler panicked on another thread; the map is intact.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Fault handlers and pending page requests of every device behind one IOMMU.
pub struct FaultReporter {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for FaultReporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.shared.lock();
        f.debug_struct("FaultReporter")
            .field("handlers", &state.handlers.len())
            .field("pending", &state.pending.len())
            .field("timeout", &self.shared.timeout)
            .finish()
    }
}

impl FaultReporter {
    /// A reporter whose timer answers groups left unanswered for `timeout` through `responder`.
    pub fn new(timeout: Duration, responder: Responder) -> Self {
        let shared = Arc::new(Shared {
            state: Mutex::default(),
            wake: Condvar::new(),
            responder,
            timeout,
        });
        let weak = Arc::downgrade(&shared);
        let spawned = thread::Builder::new()
            .name("iommu-fault-timer".into())
            .spawn(move || timer(weak));
        if let Err(e) = spawned {
            warn!("no page response timer ({e}): unanswered page requests stay pending");
        }
        FaultReporter { shared }
    }

    /// Registers `handler` for `device`'s faults. One handler per device.
    pub fn register(&self, device: DeviceId, handler: Arc<dyn FaultHandler>) -> Result<()> {
        let mut state = self.shared.lock();
        if state.handlers.contains_key(&device) {
            return Err(IommuError::HandlerRegistered(device));
        }
        state.handlers.insert(device, handler);
        Ok(())
    }

    /// Removes `device`'s handler. Groups still pending are answered with Invalid Request, so
    /// that no device waits for a response that can no longer come.
    pub fn unregister(&self, device: DeviceId) -> Result<()> {
        let orphans = {
            let mut state = self.shared.lock();
            if state.handlers.remove(&device).is_none() {
                return Err(IommuError::NoHandler(device));
            }
            state.partial.retain(|key, _| key.0 != device);
            take_pending(&mut state, |key| key.0 == device)
        };
        self.answer_invalid(orphans);
        Ok(())
    }

    /// Reports `fault` to its device's handler. A page request of a device without a handler
    /// is answered at once with Invalid Request (when it ends its group) and `NoHandler` is
    /// returned; the last request of a group puts the group on the pending list.
    pub fn report(&self, fault: IommuFault) -> Result<()> {
        self.report_within(fault, usize::MAX)
    }

    /// [`FaultReporter::report`], except that a page request finding `max_pending` groups
    /// pending is neither reported nor put on the list: `QueueFull`, and the caller answers it
    /// (the check and the insertion are one step, so concurrent requests cannot overshoot).
    pub fn report_within(&self, fault: IommuFault, max_pending: usize) -> Result<()> {
        let device = match &fault {
            IommuFault::PageRequest(req) => req.device,
            IommuFault::Unrecoverable(f) => f.device,
        };
        let handler = {
            let mut state = self.shared.lock();
            if let IommuFault::PageRequest(req) = &fault {
                if !state.admit(req, max_pending) {
                    return Err(IommuError::QueueFull(state.pending.len()));
                }
            }
            let handler = state.handlers.get(&device).cloned();
            if let (Some(_), IommuFault::PageRequest(req)) = (&handler, &fault) {
                if req.wants_response() {
                    let deadline = Instant::now().checked_add(self.shared.timeout);
                    state.pending.insert(group_key(req), deadline);
                    self.shared.wake.notify_one();
                }
            }
            handler
        };
        match (handler, fault) {
            (Some(handler), fault) => {
                handler.handle(&fault);
                Ok(())
            }
            (None, IommuFault::PageRequest(req)) => {
                if req.wants_response() {
                    (self.shared.responder)(PageResponse::to(
                        &req,
                        PageResponseCode::InvalidRequest,
                    ));
                }
                Err(IommuError::NoHandler(device))
            }
            (None, IommuFault::Unrecoverable(_)) => Err(IommuError::NoHandler(device)),
        }
    }

    /// Takes `resp`'s group off the pending list. `NotPending` when no such group awaits a
    /// response (already answered, timed out, or never requested): the caller must not
    /// deliver it, as a device would see an unexpected group index.
    pub fn complete(&self, resp: &PageResponse) -> Result<()> {
        let key = (resp.device, resp.pasid, resp.group);
        match self.shared.lock().pending.remove(&key) {
            Some(_) => Ok(()),
            None => Err(IommuError::NotPending {
                device: resp.device,
                group: resp.group,
            }),
        }
    }

    /// Answers, with Invalid Request, every group of `device` pending for `pasid` (all its
    /// PASIDs when `None`): on unbind or detach nobody will answer them any more.
    pub fn abort(&self, device: DeviceId, pasid: Option<Pasid>) {
        let orphans = take_pending(&mut self.shared.lock(), |key| {
            key.0 == device && (pasid.is_none() || key.1 == pasid)
        });
        self.answer_invalid(orphans);
    }

    /// Number of groups awaiting a response.
    pub fn pending(&self) -> usize {
        self.shared.lock().pending.len()
    }

    fn answer_invalid(&self, groups: Vec<GroupKey>) {
        for key in groups {
            (self.shared.responder)(invalid(key));
        }
    }
}

impl Drop for FaultReporter {
    fn drop(&mut self) {
        self.shared.lock().stopping = true;
        self.shared.wake.notify_all();
    }
}

fn group_key(req: &PageRequest) -> GroupKey {
    (req.device, req.pasid, req.group)
}

fn invalid((device, pasid, group): GroupKey) -> PageResponse {
    PageResponse {
        device,
        pasid,
        group,
        code: PageResponseCode::InvalidRequest,
    }
}

fn take_pending(state: &mut State, pick: impl Fn(&GroupKey) -> bool) -> Vec<GroupKey> {
    let keys: Vec<GroupKey> = state.pending.keys().copied().filter(|k| pick(k)).collect();
    for key in &keys {
        state.pending.remove(key);
    }
    keys
}

/// The timer thread: sleeps until the earliest deadline, answers expired groups. Ends when the
/// reporter is dropped.
fn timer(shared: Weak<Shared>) {
    while let Some(shared) = shared.upgrade() {
        let expired = {
            let mut state = shared.lock();
            if state.stopping {
                return;
            }
            let now = Instant::now();
            let expired: Vec<GroupKey> = state
                .pending
                .iter()
                .filter(|(_, deadline)| deadline.is_some_and(|d| d <= now))
                .map(|(key, _)| *key)
                .collect();
            if expired.is_empty() {
                match state.pending.values().flatten().min().copied() {
                    Some(next) => drop(shared.wake.wait_timeout(state, next - now)),
                    None => drop(shared.wake.wait(state)),
                }
                continue;
            }
            for key in &expired {
                state.pending.remove(key);
            }
            expired
        };
        for key in expired {
            warn!(
                "page request group {} of {} (PASID {:?}) unanswered for {:?}: Invalid Request",
                key.2, key.0, key.1, shared.timeout
            );
            (shared.responder)(invalid(key));
        }
    }
    debug!("fault timer stopped");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::iommu::fault::{UnrecoverableFault, UnrecoverableReason};
    use crate::iommu::types::Access;

    const DEV: DeviceId = DeviceId(0x0018);
    const OTHER: DeviceId = DeviceId(0x0020);
    const LONG: Duration = Duration::from_secs(60);

    /// A responder that records what it is asked to deliver.
    fn recording() -> (Responder, Arc<Mutex<Vec<PageResponse>>>) {
        let sent = Arc::new(Mutex::new(Vec::new()));
        let log = sent.clone();
        let responder: Responder = Arc::new(move |resp| log.lock().unwrap().push(resp));
        (responder, sent)
    }

    /// A handler that records the faults it sees.
    fn handler() -> (Arc<dyn FaultHandler>, Arc<Mutex<Vec<IommuFault>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let handler: Arc<dyn FaultHandler> =
            Arc::new(move |fault: &IommuFault| log.lock().unwrap().push(*fault));
        (handler, seen)
    }

    fn request(device: DeviceId, pasid: u32, group: u16, last: bool) -> PageRequest {
        PageRequest {
            device,
            pasid: Pasid::new(pasid),
            addr: 0x7000_0000,
            access: Access::WRITE,
            group,
            last,
        }
    }

    fn invalid(req: &PageRequest) -> PageResponse {
        PageResponse::to(req, PageResponseCode::InvalidRequest)
    }

    /// Waits up to 5 s for `done`.
    fn eventually(done: impl Fn() -> bool) -> bool {
        let until = Instant::now() + Duration::from_secs(5);
        while Instant::now() < until {
            if done() {
                return true;
            }
            thread::sleep(Duration::from_millis(2));
        }
        done()
    }

    #[test]
    fn test_report_with_handler_calls_it_and_keeps_group_pending() {
        let (responder, sent) = recording();
        let reporter = FaultReporter::new(LONG, responder);
        let (h, seen) = handler();
        reporter.register(DEV, h).unwrap();
        let req = request(DEV, 1, 7, true);
        reporter.report(IommuFault::PageRequest(req)).unwrap();
        assert_eq!(*seen.lock().unwrap(), [IommuFault::PageRequest(req)]);
        assert_eq!(reporter.pending(), 1);
        assert!(sent.lock().unwrap().is_empty());
    }

    #[test]
    fn test_report_without_handler_answers_invalid_request_at_once() {
        let (responder, sent) = recording();
        let reporter = FaultReporter::new(LONG, responder);
        let req = request(DEV, 1, 7, true);
        assert_eq!(
            reporter.report(IommuFault::PageRequest(req)),
            Err(IommuError::NoHandler(DEV))
        );
        assert_eq!(*sent.lock().unwrap(), [invalid(&req)]);
        assert_eq!(reporter.pending(), 0);
        let fault = IommuFault::Unrecoverable(UnrecoverableFault {
            device: DEV,
            pasid: None,
            addr: 0,
            access: Access::READ,
            reason: UnrecoverableReason::Walk,
            stage: None,
        });
        assert_eq!(reporter.report(fault), Err(IommuError::NoHandler(DEV)));
        assert_eq!(sent.lock().unwrap().len(), 1, "nothing to answer");
    }

    #[test]
    fn test_report_within_takes_groups_up_to_the_bound_and_refuses_the_next() {
        let (responder, sent) = recording();
        let reporter = FaultReporter::new(LONG, responder);
        let (h, seen) = handler();
        reporter.register(DEV, h).unwrap();
        for group in 0..2 {
            let req = IommuFault::PageRequest(request(DEV, 1, group, true));
            reporter.report_within(req, 2).unwrap();
        }
        let third = request(DEV, 1, 2, true);
        assert_eq!(
            reporter.report_within(IommuFault::PageRequest(third), 2),
            Err(IommuError::QueueFull(2))
        );
        assert_eq!(reporter.pending(), 2);
        assert_eq!(seen.lock().unwrap().len(), 2, "the third is not reported");
        assert!(sent.lock().unwrap().is_empty(), "the caller answers it");
        // An answered group makes room for the next.
        reporter
            .complete(&PageResponse::to(
                &request(DEV, 1, 0, true),
                PageResponseCode::Success,
            ))
            .unwrap();
        reporter
            .report_within(IommuFault::PageRequest(third), 2)
            .unwrap();
        assert_eq!(reporter.pending(), 2);
    }

    #[test]
    fn test_report_within_admits_or_refuses_a_multi_request_group_whole() {
        let (responder, sent) = recording();
        let reporter = FaultReporter::new(LONG, responder);
        let (h, seen) = handler();
        reporter.register(DEV, h).unwrap();
        let report = |group, last| {
            let req = IommuFault::PageRequest(request(DEV, 1, group, last));
            reporter.report_within(req, 1)
        };
        // Group 0 is under way: it takes the one place, so group 1 is refused whole.
        report(0, false).unwrap();
        assert_eq!(report(1, false), Err(IommuError::QueueFull(0)));
        report(0, false).unwrap();
        report(0, true).unwrap();
        assert_eq!(reporter.pending(), 1);
        reporter
            .complete(&PageResponse::to(
                &request(DEV, 1, 0, true),
                PageResponseCode::Success,
            ))
            .unwrap();
        // Room again, but group 1 was refused at its first request: its Last is refused too.
        assert!(report(1, true).is_err());
        assert_eq!(reporter.pending(), 0);
        assert_eq!(
            seen.lock().unwrap().len(),
            3,
            "group 0 whole, nothing of group 1"
        );
        assert!(sent.lock().unwrap().is_empty());
        // A group after it starts afresh.
        report(1, true).unwrap();
        assert_eq!(reporter.pending(), 1);
    }

    #[test]
    fn test_report_non_last_and_stop_marker_not_pending() {
        let (responder, sent) = recording();
        let reporter = FaultReporter::new(LONG, responder);
        let (h, seen) = handler();
        reporter.register(DEV, h).unwrap();
        let mut stop = request(DEV, 1, 3, true);
        stop.access = Access::default();
        assert!(stop.is_stop_marker());
        reporter
            .report(IommuFault::PageRequest(request(DEV, 1, 3, false)))
            .unwrap();
        reporter.report(IommuFault::PageRequest(stop)).unwrap();
        assert_eq!(seen.lock().unwrap().len(), 2, "both reported");
        assert_eq!(reporter.pending(), 0);
        reporter.unregister(DEV).unwrap();
        assert!(sent.lock().unwrap().is_empty());
        // Without a handler neither is answered: no response is expected for them.
        reporter.report(IommuFault::PageRequest(stop)).unwrap_err();
        assert!(sent.lock().unwrap().is_empty());
    }

    #[test]
    fn test_complete_takes_group_off_then_not_pending() {
        let (responder, _) = recording();
        let reporter = FaultReporter::new(LONG, responder);
        reporter.register(DEV, handler().0).unwrap();
        let req = request(DEV, 1, 7, true);
        reporter.report(IommuFault::PageRequest(req)).unwrap();
        let other_pasid = PageResponse {
            pasid: Pasid::new(2),
            ..PageResponse::to(&req, PageResponseCode::Success)
        };
        let not_pending = Err(IommuError::NotPending {
            device: DEV,
            group: 7,
        });
        assert_eq!(reporter.complete(&other_pasid), not_pending);
        let resp = PageResponse::to(&req, PageResponseCode::Success);
        assert_eq!(reporter.complete(&resp), Ok(()));
        assert_eq!(reporter.complete(&resp), not_pending, "answered already");
        assert_eq!(reporter.pending(), 0);
    }

    #[test]
    fn test_timer_answers_unanswered_groups_invalid_request() {
        let (responder, sent) = recording();
        let reporter = FaultReporter::new(Duration::from_millis(20), responder);
        reporter.register(DEV, handler().0).unwrap();
        let first = request(DEV, 1, 1, true);
        reporter.report(IommuFault::PageRequest(first)).unwrap();
        thread::sleep(Duration::from_millis(5));
        let second = request(DEV, 1, 2, true);
        reporter.report(IommuFault::PageRequest(second)).unwrap();
        assert!(eventually(|| sent.lock().unwrap().len() == 2));
        let mut answered = sent.lock().unwrap().clone();
        answered.sort_by_key(|r| r.group);
        assert_eq!(answered, [invalid(&first), invalid(&second)]);
        assert_eq!(reporter.pending(), 0);
        let late = PageResponse::to(&first, PageResponseCode::Success);
        assert!(reporter.complete(&late).is_err(), "timed out: not pending");
    }

    #[test]
    fn test_timeout_too_long_for_instant_never_expires() {
        let (responder, sent) = recording();
        let reporter = FaultReporter::new(Duration::MAX, responder);
        reporter.register(DEV, handler().0).unwrap();
        let req = request(DEV, 1, 1, true);
        reporter.report(IommuFault::PageRequest(req)).unwrap();
        thread::sleep(Duration::from_millis(20));
        assert_eq!(reporter.pending(), 1);
        assert!(sent.lock().unwrap().is_empty());
        reporter.unregister(DEV).unwrap();
        assert_eq!(*sent.lock().unwrap(), [invalid(&req)]);
    }

    #[test]
    fn test_unregister_answers_pending_groups_of_that_device_only() {
        let (responder, sent) = recording();
        let reporter = FaultReporter::new(LONG, responder);
        reporter.register(DEV, handler().0).unwrap();
        reporter.register(OTHER, handler().0).unwrap();
        let mine = request(DEV, 1, 1, true);
        reporter.report(IommuFault::PageRequest(mine)).unwrap();
        reporter
            .report(IommuFault::PageRequest(request(OTHER, 1, 1, true)))
            .unwrap();
        reporter.unregister(DEV).unwrap();
        assert_eq!(*sent.lock().unwrap(), [invalid(&mine)]);
        assert_eq!(reporter.pending(), 1);
        assert_eq!(reporter.unregister(DEV), Err(IommuError::NoHandler(DEV)));
    }

    #[test]
    fn test_abort_answers_groups_of_one_pasid_or_all() {
        let (responder, sent) = recording();
        let reporter = FaultReporter::new(LONG, responder);
        reporter.register(DEV, handler().0).unwrap();
        let reqs = [
            request(DEV, 1, 1, true),
            request(DEV, 2, 2, true),
            request(DEV, 2, 3, true),
        ];
        for req in reqs {
            reporter.report(IommuFault::PageRequest(req)).unwrap();
        }
        reporter.abort(DEV, Pasid::new(2));
        let mut answered = sent.lock().unwrap().clone();
        answered.sort_by_key(|r| r.group);
        assert_eq!(answered, [invalid(&reqs[1]), invalid(&reqs[2])]);
        reporter.abort(OTHER, None);
        assert_eq!(reporter.pending(), 1);
        reporter.abort(DEV, None);
        assert_eq!(sent.lock().unwrap().last(), Some(&invalid(&reqs[0])));
        assert_eq!(reporter.pending(), 0);
    }

    #[test]
    fn test_register_twice_is_refused() {
        let reporter = FaultReporter::new(LONG, recording().0);
        reporter.register(DEV, handler().0).unwrap();
        assert_eq!(
            reporter.register(DEV, handler().0),
            Err(IommuError::HandlerRegistered(DEV))
        );
    }

    #[test]
    fn test_handler_may_complete_from_inside_handle() {
        let reporter = Arc::new(FaultReporter::new(LONG, recording().0));
        let inner = Arc::downgrade(&reporter);
        let answered = Arc::new(Mutex::new(Vec::new()));
        let log = answered.clone();
        let responding = move |fault: &IommuFault| {
            if let (IommuFault::PageRequest(req), Some(reporter)) = (fault, inner.upgrade()) {
                let resp = PageResponse::to(req, PageResponseCode::Success);
                log.lock().unwrap().push(reporter.complete(&resp));
            }
        };
        reporter.register(DEV, Arc::new(responding)).unwrap();
        reporter
            .report(IommuFault::PageRequest(request(DEV, 1, 9, true)))
            .unwrap();
        assert_eq!(*answered.lock().unwrap(), [Ok(())]);
        assert_eq!(reporter.pending(), 0);
    }

    #[test]
    fn test_drop_stops_the_timer_thread() {
        let (responder, _) = recording();
        let held = Arc::downgrade(&responder);
        let reporter = FaultReporter::new(LONG, responder);
        reporter.register(DEV, handler().0).unwrap();
        reporter
            .report(IommuFault::PageRequest(request(DEV, 1, 1, true)))
            .unwrap();
        drop(reporter);
        // The timer thread held the last reference to the shared state (and its responder).
        assert!(eventually(|| held.upgrade().is_none()));
    }
}
