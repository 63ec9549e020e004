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
    /// Groups awaiting a response, with their deadline.
    pending: HashMap<GroupKey, Instant>,
    stopping: bool,
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
            take_pending(&mut state, |key| key.0 == device)
        };
        self.answer_invalid(orphans);
        Ok(())
    }

    /// Reports `fault` to its device's handler. A page request of a device without a handler
    /// is answered at once with Invalid Request (when it ends its group) and `NoHandler` is
    /// returned; the last request of a group puts the group on the pending list.
    pub fn report(&self, fault: IommuFault) -> Result<()> {
        let device = match &fault {
            IommuFault::PageRequest(req) => req.device,
            IommuFault::Unrecoverable(f) => f.device,
        };
        let handler = {
            let mut state = self.shared.lock();
            let handler = state.handlers.get(&device).cloned();
            if let (Some(_), IommuFault::PageRequest(req)) = (&handler, &fault) {
                if req.last && !req.is_stop_marker() {
                    let deadline = Instant::now() + self.shared.timeout;
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
                if req.last && !req.is_stop_marker() {
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
                .filter(|(_, deadline)| **deadline <= now)
                .map(|(key, _)| *key)
                .collect();
            if expired.is_empty() {
                match state.pending.values().min().copied() {
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
