//! Device-side Page Request Services: a function's page requests to the host IOMMU when a
//! translation fails, the outstanding-request credits software allocates, and the PRG
//! responses that release them. PCIe 6.0 §10.4 (Page Request Services) and §7.8.10 (the PRI
//! capability, whose Control and Status this engine backs through [`PriConfig`]).
//!
//! A Page Request Group is one or more page requests sharing a 9-bit PRG index unique among
//! outstanding groups, Last set on the final one (§10.4.1). Each request holds one credit of
//! the Outstanding Page Request Allocation until the group's one PRG Response arrives. The
//! engine thread that faulted blocks in [`Pri::wait`]; responses arrive on whatever thread the
//! IOMMU delivers them ([`Pri::response`]).
//!
//! Send no page request while holding an ATS fence: the response may need an invalidation.

mod config;

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use log::{debug, trace, warn};
use thiserror::Error;

use crate::iommu::{
    Access, DeviceId, HostIommu, PageRequest, PageResponse, PageResponseCode, Pasid,
};
pub use crate::pci::caps::pri::PriStatus;
pub use config::PriConfig;

/// Page request addresses are 4 KiB page addresses: bits 11:0 are zero (§10.4.1).
const PAGE_OFFSET_MASK: u64 = 0xfff;
/// Number of PRG indexes (9 bits).
const GROUPS: u32 = PageRequest::MAX_GROUP as u32 + 1;

/// Why a page request got no response.
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq, Hash)]
pub enum PriError {
    /// The request was dropped before its response: PRI reset, or its PASID drained.
    #[error("page request aborted")]
    Aborted,
    /// PRI Control.Enable is clear, or no outstanding request is allocated.
    #[error("page request interface disabled")]
    Disabled,
    /// A Response Failure stopped the interface until software disables and re-enables it.
    #[error("page request interface stopped by a response failure")]
    Stopped,
    /// No response within the time the caller waits; the request stays outstanding.
    #[error("no page response in time")]
    TimedOut,
}

/// What became of an outstanding group's waiter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Waiter {
    /// Its token will collect the response.
    Waiting,
    /// Its token was dropped: the response only releases the credit.
    Abandoned,
    /// Its PASID was drained: the waiter got `Aborted`, the response is ignored.
    Drained,
}

/// An outstanding page request group.
#[derive(Clone, Copy, Debug)]
struct Outstanding {
    serial: u64,
    pasid: Option<Pasid>,
    /// Page requests in the group: the credits it holds.
    pages: u32,
    waiter: Waiter,
}

/// A requester waiting for a credit.
#[derive(Clone, Copy, Debug)]
struct Blocked {
    pasid: Option<Pasid>,
    aborted: bool,
}

#[derive(Debug, Default)]
struct State {
    enabled: bool,
    /// Outstanding Page Request Allocation as software wrote it.
    requested: u32,
    /// The allocation in effect: at most the capacity.
    allocation: u32,
    /// A Response Failure arrived: no requests, responses ignored, until re-enabled.
    halted: bool,
    response_failure: bool,
    unexpected_prg_index: bool,
    /// Outstanding groups by PRG index.
    outstanding: HashMap<u16, Outstanding>,
    /// Results not yet collected, by request serial.
    done: HashMap<u64, Result<PageResponseCode, PriError>>,
    /// Requesters waiting for a credit, by serial.
    blocked: HashMap<u64, Blocked>,
    next_group: u16,
    next_serial: u64,
}

impl State {
    /// Whether new requests may be issued.
    fn issuing(&self) -> Result<(), PriError> {
        if !self.enabled || self.allocation == 0 {
            Err(PriError::Disabled)
        } else if self.halted {
            Err(PriError::Stopped)
        } else {
            Ok(())
        }
    }

    fn serial(&mut self) -> u64 {
        self.next_serial = self.next_serial.wrapping_add(1);
        self.next_serial
    }

    /// Credits held by outstanding groups (one per page request).
    fn credits_used(&self) -> u32 {
        self.outstanding.values().map(|o| o.pages).sum()
    }

    /// A free PRG index and how many of `want` page requests the free credits allow (at
    /// least one), if an index and a credit are free (at most 512 groups can be told apart).
    fn free_group(&mut self, want: u32) -> Option<(u16, u32)> {
        let free = self.allocation.saturating_sub(self.credits_used());
        if free == 0 || self.outstanding.len() >= GROUPS as usize {
            return None;
        }
        let group = (0..=PageRequest::MAX_GROUP)
            .map(|i| self.next_group.wrapping_add(i) & PageRequest::MAX_GROUP)
            .find(|g| !self.outstanding.contains_key(g))?;
        self.next_group = group.wrapping_add(1) & PageRequest::MAX_GROUP;
        Some((group, want.clamp(1, free)))
    }

    /// Whether `serial` still awaits its response as group `group`.
    fn awaits(&self, group: u16, serial: u64) -> bool {
        self.outstanding
            .get(&group)
            .is_some_and(|o| o.serial == serial)
    }

    /// A Response Failure: every outstanding group is over (no more responses will come).
    fn fail_all(&mut self) {
        self.response_failure = true;
        self.halted = true;
        for (_, o) in self.outstanding.drain() {
            if o.waiter == Waiter::Waiting {
                self.done.insert(o.serial, Err(PriError::Stopped));
            }
        }
    }
}

struct Shared {
    device: DeviceId,
    iommu: Arc<dyn HostIommu>,
    capacity: u32,
    state: Mutex<State>,
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // No code panics while holding it; a poisoned lock still holds consistent state.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn wait<'a>(&self, state: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        self.changed.wait(state).unwrap_or_else(|e| e.into_inner())
    }
}

/// One outstanding page request group, redeemed with [`Pri::wait`]. Dropping it unredeemed
/// is fine: the response, when it comes, only releases the credit.
#[derive(Debug)]
#[must_use = "wait for the page response with Pri::wait"]
pub struct PageToken {
    serial: u64,
    group: u16,
    pasid: Option<Pasid>,
    pages: u32,
    shared: Weak<Shared>,
}

impl PageToken {
    /// The PRG index.
    pub fn group(&self) -> u16 {
        self.group
    }

    /// The PASID of the request.
    pub fn pasid(&self) -> Option<Pasid> {
        self.pasid
    }

    /// Page requests sent in the group (the first ones asked for; at least one).
    pub fn pages(&self) -> u32 {
        self.pages
    }
}

impl Drop for PageToken {
    fn drop(&mut self) {
        let Some(shared) = self.shared.upgrade() else {
            return;
        };
        let mut state = shared.lock();
        state.done.remove(&self.serial);
        if let Some(o) = state.outstanding.get_mut(&self.group) {
            if o.serial == self.serial {
                o.waiter = Waiter::Abandoned;
            }
        }
    }
}

/// One function's page request interface. `Send + Sync`.
pub struct Pri {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Pri {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.shared.lock();
        f.debug_struct("Pri")
            .field("device", &self.shared.device)
            .field("enabled", &state.enabled)
            .field("allocation", &state.allocation)
            .field("outstanding", &state.outstanding.len())
            .field("credits", &state.credits_used())
            .field("halted", &state.halted)
            .finish()
    }
}

impl Pri {
    /// The page request interface of `device` behind `iommu`, able to keep `capacity`
    /// requests outstanding (the capability's Outstanding Page Request Capacity). Starts
    /// disabled with nothing allocated, as PRI Control does.
    pub fn new(device: DeviceId, iommu: Arc<dyn HostIommu>, capacity: u32) -> Self {
        Pri {
            shared: Arc::new(Shared {
                device,
                iommu,
                capacity,
                state: Mutex::default(),
                changed: Condvar::new(),
            }),
        }
    }

    /// The requester.
    pub fn device(&self) -> DeviceId {
        self.shared.device
    }

    /// Follows PRI Control.Enable and the Outstanding Page Request Allocation (clamped to
    /// the capacity). Enabling after a disable lifts a Response Failure stop. Disabling
    /// refuses requests waiting for a credit; outstanding ones still get their responses.
    pub fn configure(&self, enabled: bool, allocation: u32) {
        let mut state = self.shared.lock();
        // Config writes repeat the allocation: complain once per value.
        if allocation > self.shared.capacity && allocation != state.requested {
            warn!(
                "{}: PRI allocation {allocation} above capacity {}: clamped",
                self.shared.device, self.shared.capacity
            );
        }
        if enabled && !state.enabled {
            state.halted = false;
        }
        state.enabled = enabled;
        state.requested = allocation;
        state.allocation = allocation.min(self.shared.capacity);
        self.shared.changed.notify_all();
    }

    /// PRI Control.Reset: forgets every outstanding request and credit; waiters and
    /// requesters waiting for a credit get `Aborted`. (The spec acts on Reset only while
    /// Enable is clear; [`PriConfig`] checks that, a function-level reset does not.)
    pub fn reset(&self) {
        let mut state = self.shared.lock();
        state.outstanding.clear();
        state.done.clear();
        for blocked in state.blocked.values_mut() {
            blocked.aborted = true;
        }
        self.shared.changed.notify_all();
    }

    /// The Status bits the function owns: Response Failure and Unexpected PRG Index as
    /// latched, Stopped = disabled with nothing outstanding.
    pub fn status(&self) -> PriStatus {
        let state = self.shared.lock();
        PriStatus::new()
            .with_response_failure(state.response_failure)
            .with_unexpected_prg_index(state.unexpected_prg_index)
            .with_stopped(!state.enabled && state.outstanding.is_empty())
    }

    /// Clears the latched bits set in `w1c` (the guest's RW1C write).
    pub fn clear_status(&self, w1c: PriStatus) {
        let mut state = self.shared.lock();
        state.response_failure &= !w1c.response_failure();
        state.unexpected_prg_index &= !w1c.unexpected_prg_index();
    }

    /// Page requests outstanding (credits in use), drained and abandoned ones included.
    pub fn outstanding(&self) -> u32 {
        self.shared.lock().credits_used()
    }

    /// Page request groups outstanding.
    pub fn outstanding_groups(&self) -> u32 {
        self.shared.lock().outstanding.len() as u32
    }

    /// Sends a one-page Page Request Group for `addr` (rounded down to its 4 KiB page):
    /// takes a PRG index and a credit, blocking while every allocated credit is in use.
    /// Without a PASID, exec and privileged are dropped; exec implies read, and a request
    /// asking for neither read nor write asks for read (R = W = 0 would be a Stop Marker).
    pub fn request(
        &self,
        pasid: Option<Pasid>,
        addr: u64,
        access: Access,
    ) -> Result<PageToken, PriError> {
        self.request_group(pasid, (addr, access), &[])
    }

    /// Sends a Page Request Group of `first` and then as many of `more` as free credits allow
    /// (one credit per page): one PRG index, Last set on the final request, one response for
    /// all ([`PageToken::pages`] says how many went). Blocks while no credit is free. Each
    /// page is normalised as [`Pri::request`] says.
    pub fn request_group(
        &self,
        pasid: Option<Pasid>,
        first: (u64, Access),
        more: &[(u64, Access)],
    ) -> Result<PageToken, PriError> {
        let want = u32::try_from(more.len())
            .unwrap_or(u32::MAX)
            .saturating_add(1);
        let (group, serial, pages) = self.reserve(pasid, want)?;
        let sent = std::iter::once(&first).chain(more).take(pages as usize);
        // Unlocked: the IOMMU may answer at once (on Last), calling back into `response`.
        for (i, &(addr, access)) in sent.enumerate() {
            let req = PageRequest {
                device: self.shared.device,
                pasid,
                addr: addr & !PAGE_OFFSET_MASK,
                access: request_access(pasid, access),
                group,
                last: i + 1 == pages as usize,
            };
            debug!("{}: page request {req:?}", self.shared.device);
            self.shared.iommu.page_request(req);
        }
        Ok(PageToken {
            serial,
            group,
            pasid,
            pages,
            shared: Arc::downgrade(&self.shared),
        })
    }

    /// Takes a PRG index and credits for up to `want` requests of `pasid` (at least one),
    /// waiting for a credit.
    fn reserve(&self, pasid: Option<Pasid>, want: u32) -> Result<(u16, u64, u32), PriError> {
        let mut state = self.shared.lock();
        state.issuing()?;
        let (group, pages) = match state.free_group(want) {
            Some(group) => group,
            None => {
                let ticket = state.serial();
                let blocked = Blocked {
                    pasid,
                    aborted: false,
                };
                state.blocked.insert(ticket, blocked);
                let got = loop {
                    state = self.shared.wait(state);
                    if state.blocked.get(&ticket).is_none_or(|b| b.aborted) {
                        break Err(PriError::Aborted);
                    }
                    if let Err(e) = state.issuing() {
                        break Err(e);
                    }
                    if let Some(got) = state.free_group(want) {
                        break Ok(got);
                    }
                };
                state.blocked.remove(&ticket);
                got?
            }
        };
        let serial = state.serial();
        let waiter = Waiter::Waiting;
        let o = Outstanding {
            serial,
            pasid,
            pages,
            waiter,
        };
        state.outstanding.insert(group, o);
        Ok((group, serial, pages))
    }

    /// Waits for the response to `token`'s group, at most `timeout` (forever if `None`).
    /// `TimedOut` leaves the request outstanding; its response then only frees the credit.
    pub fn wait(
        &self,
        token: PageToken,
        timeout: Option<Duration>,
    ) -> Result<PageResponseCode, PriError> {
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        self.collect(&token, deadline)
        // `token` drops here, after the lock is released: a timed-out group is abandoned.
    }

    fn collect(
        &self,
        token: &PageToken,
        deadline: Option<Instant>,
    ) -> Result<PageResponseCode, PriError> {
        let mut state = self.shared.lock();
        loop {
            if let Some(result) = state.done.remove(&token.serial) {
                return result;
            }
            if !state.awaits(token.group, token.serial) {
                return Err(PriError::Aborted);
            }
            state = match deadline {
                None => self.shared.wait(state),
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(PriError::TimedOut);
                    }
                    let waited = self.shared.changed.wait_timeout(state, left);
                    waited.unwrap_or_else(|e| e.into_inner()).0
                }
            };
        }
    }

    /// A PRG Response Message. Wakes the group's waiter and frees its credit. A response for
    /// no outstanding group (or another PASID) sets Unexpected PRG Index; Response Failure
    /// sets Response Failure and stops the interface: every outstanding group is over and
    /// later responses are ignored until software disables and re-enables PRI.
    pub fn response(&self, resp: PageResponse) {
        if resp.device != self.shared.device {
            warn_limited!(
                "{}: page response for {} ignored",
                self.shared.device,
                resp.device
            );
            return;
        }
        let mut state = self.shared.lock();
        if state.halted {
            debug!("{}: response after Response Failure ignored", resp.device);
            return;
        }
        let matched = state
            .outstanding
            .get(&resp.group)
            .is_some_and(|o| o.pasid == resp.pasid);
        let Some(o) = matched
            .then(|| state.outstanding.remove(&resp.group))
            .flatten()
        else {
            // Responses come from the guest through the IOMMU: log the latching one only.
            if !state.unexpected_prg_index {
                warn!(
                    "{}: unexpected PRG index {} (PASID {:?})",
                    resp.device, resp.group, resp.pasid
                );
            }
            state.unexpected_prg_index = true;
            return;
        };
        let code = resp.code;
        trace!(
            "{}: page response, group {}: {code:?}",
            resp.device,
            resp.group
        );
        if o.waiter == Waiter::Waiting {
            state.done.insert(o.serial, Ok(code));
        }
        if code == PageResponseCode::ResponseFailure {
            warn!("{}: Response Failure: PRI stopped", resp.device);
            state.fail_all();
        }
        self.shared.changed.notify_all();
    }

    /// Stops using `pasid` (§10.4.1.2): its waiters, and requesters waiting for a credit,
    /// get `Aborted`; its outstanding groups keep their credits until their responses
    /// arrive, which are then ignored; then, if PRI may issue requests, a Stop Marker is
    /// sent. The caller must have stopped issuing requests for `pasid`.
    pub fn drain(&self, pasid: Pasid) {
        let send = {
            let mut guard = self.shared.lock();
            let state = &mut *guard;
            for o in state.outstanding.values_mut() {
                if o.pasid == Some(pasid) && o.waiter == Waiter::Waiting {
                    o.waiter = Waiter::Drained;
                    state.done.insert(o.serial, Err(PriError::Aborted));
                }
            }
            for b in state.blocked.values_mut() {
                b.aborted |= b.pasid == Some(pasid);
            }
            self.shared.changed.notify_all();
            state.issuing().is_ok()
        };
        if send {
            debug!("{}: stop marker for PASID {pasid}", self.shared.device);
            self.shared.iommu.page_request(PageRequest {
                device: self.shared.device,
                pasid: Some(pasid),
                addr: 0,
                access: Access::default(),
                group: 0,
                last: true,
            });
        }
    }
}

/// The access fields of a page request for `access` (see [`Pri::request`]).
fn request_access(pasid: Option<Pasid>, access: Access) -> Access {
    let exec = access.exec && pasid.is_some();
    Access {
        read: access.read || exec || !access.write,
        write: access.write,
        exec,
        privileged: access.privileged && pasid.is_some(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::mpsc;
    use std::thread;

    use super::*;
    pub(super) use crate::iommu::fake::FakeIommu;

    pub(super) const DEV: DeviceId = DeviceId(0x0100);
    /// Long enough for a blocked thread to have blocked; only ever waited on negative outcomes.
    const SETTLE: Duration = Duration::from_millis(50);
    const LONG: Duration = Duration::from_secs(10);

    pub(super) fn pri(allocation: u32) -> (Arc<FakeIommu>, Arc<Pri>) {
        let iommu = Arc::new(FakeIommu::default());
        let pri = Arc::new(Pri::new(DEV, iommu.clone(), 512));
        pri.configure(true, allocation);
        (iommu, pri)
    }

    fn p(raw: u32) -> Option<Pasid> {
        Pasid::new(raw)
    }

    fn answer(pri: &Pri, req: &PageRequest, code: PageResponseCode) {
        pri.response(PageResponse::to(req, code));
    }

    /// Runs `pri.request` on another thread; its result arrives on the channel.
    fn request_in_thread(
        pri: &Arc<Pri>,
        pasid: Option<Pasid>,
    ) -> mpsc::Receiver<Result<u16, PriError>> {
        let (tx, rx) = mpsc::channel();
        let pri = pri.clone();
        thread::spawn(move || {
            let got = pri.request(pasid, 0x1000, Access::READ).map(|t| t.group());
            tx.send(got).unwrap();
        });
        rx
    }

    #[test]
    fn test_request_response_round_trip_returns_the_code() {
        let (iommu, pri) = pri(4);
        let token = pri.request(p(5), 0x7fff_1234, Access::WRITE).unwrap();
        let req = iommu.last();
        assert_eq!((req.device, req.pasid, req.addr), (DEV, p(5), 0x7fff_1000));
        assert!(req.last && req.access.write && !req.is_stop_marker());
        assert_eq!((req.group, token.group()), (token.group(), req.group));
        assert_eq!(pri.outstanding(), 1);
        answer(&pri, &req, PageResponseCode::Success);
        assert_eq!(pri.outstanding(), 0);
        assert_eq!(pri.wait(token, Some(LONG)), Ok(PageResponseCode::Success));
        let token = pri.request(p(5), 0x1000, Access::READ).unwrap();
        answer(&pri, &iommu.last(), PageResponseCode::InvalidRequest);
        assert_eq!(pri.wait(token, None), Ok(PageResponseCode::InvalidRequest));
        assert_eq!(pri.status(), PriStatus::new());
    }

    fn pages(n: u64) -> Vec<(u64, Access)> {
        (1..=n).map(|i| (i << 12, Access::WRITE)).collect()
    }

    #[test]
    fn test_request_group_shares_one_prg_index_with_last_only_on_the_final_request() {
        let (iommu, pri) = pri(32);
        let more = pages(4);
        let token = pri
            .request_group(p(3), (0x0123, Access::READ), &more)
            .unwrap();
        let reqs = iommu.requests();
        assert_eq!((reqs.len(), token.pages()), (5, 5));
        assert!(reqs
            .iter()
            .all(|r| r.group == token.group() && r.pasid == p(3)));
        let lasts: Vec<bool> = reqs.iter().map(|r| r.last).collect();
        assert_eq!(lasts, [false, false, false, false, true]);
        assert_eq!((reqs[0].addr, reqs[0].access), (0, Access::READ));
        assert_eq!((reqs[4].addr, reqs[4].access), (0x4000, Access::WRITE));
        assert_eq!((pri.outstanding(), pri.outstanding_groups()), (5, 1));
        answer(&pri, &reqs[4], PageResponseCode::Success);
        assert_eq!(pri.outstanding(), 0, "one response frees every credit");
        assert_eq!(pri.wait(token, None), Ok(PageResponseCode::Success));
    }

    #[test]
    fn test_request_group_takes_only_the_free_credits_and_blocks_when_none() {
        let (iommu, pri) = pri(4);
        let held = pri.request(p(1), 0, Access::READ).unwrap();
        let group = pri
            .request_group(p(1), (0, Access::WRITE), &pages(7))
            .unwrap();
        assert_eq!(group.pages(), 3, "three credits were free");
        assert_eq!(iommu.requests().len(), 4);
        assert!(iommu.last().last);
        assert_eq!(pri.outstanding(), 4);
        let blocked = request_in_thread(&pri, p(1));
        assert!(blocked.recv_timeout(SETTLE).is_err(), "no credit left");
        answer(&pri, &iommu.requests()[0], PageResponseCode::Success);
        assert!(blocked.recv_timeout(LONG).unwrap().is_ok());
        assert_eq!(pri.wait(held, None), Ok(PageResponseCode::Success));
        assert!(pri.outstanding() <= 4);
        drop(group);
    }

    #[test]
    fn test_request_group_answered_by_the_iommu_on_last_does_not_deadlock() {
        let (iommu, pri) = pri(8);
        let weak = Arc::downgrade(&pri);
        *iommu.responder.lock().unwrap() = Some(Box::new(move |req: &PageRequest| {
            if let Some(pri) = weak.upgrade() {
                if req.last {
                    pri.response(PageResponse::to(req, PageResponseCode::InvalidRequest));
                }
            }
        }));
        let token = pri
            .request_group(p(1), (0, Access::READ), &pages(6))
            .unwrap();
        assert_eq!(pri.wait(token, None), Ok(PageResponseCode::InvalidRequest));
        assert_eq!(pri.outstanding(), 0);
        assert!(!pri.status().unexpected_prg_index());
    }

    #[test]
    fn test_request_with_pri_disabled_or_nothing_allocated_is_refused() {
        let iommu = Arc::new(FakeIommu::default());
        let pri = Pri::new(DEV, iommu.clone(), 8);
        assert_eq!(
            pri.request(p(1), 0, Access::READ).err(),
            Some(PriError::Disabled)
        );
        pri.configure(true, 0);
        assert_eq!(
            pri.request(p(1), 0, Access::READ).err(),
            Some(PriError::Disabled)
        );
        pri.configure(false, 8);
        assert_eq!(
            pri.request(p(1), 0, Access::READ).err(),
            Some(PriError::Disabled)
        );
        assert!(iommu.requests().is_empty());
    }

    #[test]
    fn test_request_blocks_at_allocation_and_resumes_on_a_response() {
        let (iommu, pri) = pri(2);
        let first = pri.request(p(1), 0x1000, Access::READ).unwrap();
        let _second = pri.request(p(1), 0x2000, Access::READ).unwrap();
        let third = request_in_thread(&pri, p(1));
        assert!(
            third.recv_timeout(SETTLE).is_err(),
            "no credit left: blocked"
        );
        assert_eq!(iommu.requests().len(), 2);
        answer(&pri, &iommu.requests()[0], PageResponseCode::Success);
        assert!(third.recv_timeout(LONG).unwrap().is_ok());
        assert_eq!(pri.outstanding(), 2);
        assert_eq!(pri.wait(first, None), Ok(PageResponseCode::Success));
    }

    #[test]
    fn test_allocation_is_clamped_to_capacity() {
        let iommu = Arc::new(FakeIommu::default());
        let pri = Arc::new(Pri::new(DEV, iommu, 1));
        pri.configure(true, 1000);
        let _held = pri.request(p(1), 0, Access::READ).unwrap();
        let blocked = request_in_thread(&pri, p(1));
        assert!(blocked.recv_timeout(SETTLE).is_err());
        pri.configure(false, 1);
        assert_eq!(blocked.recv_timeout(LONG).unwrap(), Err(PriError::Disabled));
    }

    #[test]
    fn test_prg_indexes_are_unique_among_outstanding_groups() {
        let (iommu, pri) = pri(512);
        let tokens: Vec<PageToken> = (0..512)
            .map(|i| pri.request(p(1), i << 12, Access::READ).unwrap())
            .collect();
        let groups: HashSet<u16> = tokens.iter().map(PageToken::group).collect();
        assert_eq!(groups.len(), 512);
        assert!(groups.iter().all(|&g| g <= PageRequest::MAX_GROUP));
        // Free one in the middle: the next request can only get that index.
        let freed = iommu.requests()[100];
        answer(&pri, &freed, PageResponseCode::Success);
        let again = pri.request(p(1), 0, Access::READ).unwrap();
        assert_eq!(again.group(), freed.group);
    }

    #[test]
    fn test_prg_indexes_wrap_after_511() {
        let (iommu, pri) = pri(1);
        let mut seen = Vec::new();
        for _ in 0..600 {
            let token = pri.request(None, 0, Access::READ).unwrap();
            seen.push(token.group());
            answer(&pri, &iommu.last(), PageResponseCode::Success);
            assert_eq!(pri.wait(token, None), Ok(PageResponseCode::Success));
        }
        assert_eq!(seen[511], 511);
        assert_eq!(&seen[512..515], &[0, 1, 2]);
        assert!(!pri.status().unexpected_prg_index());
    }

    #[test]
    fn test_response_for_unknown_group_or_pasid_sets_unexpected_prg_index() {
        let (iommu, pri) = pri(4);
        let token = pri.request(p(1), 0, Access::READ).unwrap();
        let req = iommu.last();
        let wrong_pasid = PageResponse {
            pasid: p(2),
            ..PageResponse::to(&req, PageResponseCode::Success)
        };
        pri.response(wrong_pasid);
        assert!(pri.status().unexpected_prg_index());
        assert_eq!(pri.outstanding(), 1, "the real group is still outstanding");
        pri.clear_status(PriStatus::new().with_unexpected_prg_index(true));
        assert!(!pri.status().unexpected_prg_index());
        let unknown = PageResponse {
            group: req.group ^ 1,
            ..PageResponse::to(&req, PageResponseCode::Success)
        };
        pri.response(unknown);
        assert!(pri.status().unexpected_prg_index());
        answer(&pri, &req, PageResponseCode::Success);
        assert_eq!(pri.wait(token, None), Ok(PageResponseCode::Success));
    }

    #[test]
    fn test_response_failure_stops_pri_until_disabled_and_reenabled() {
        let (iommu, pri) = pri(4);
        let failed = pri.request(p(1), 0x1000, Access::READ).unwrap();
        let other = pri.request(p(2), 0x2000, Access::READ).unwrap();
        let [req_failed, req_other] = [iommu.requests()[0], iommu.requests()[1]];
        answer(&pri, &req_failed, PageResponseCode::ResponseFailure);
        assert_eq!(
            pri.wait(failed, None),
            Ok(PageResponseCode::ResponseFailure)
        );
        assert_eq!(pri.wait(other, None), Err(PriError::Stopped));
        assert!(pri.status().response_failure());
        assert_eq!(pri.outstanding(), 0);
        assert_eq!(
            pri.request(p(1), 0, Access::READ).err(),
            Some(PriError::Stopped)
        );
        // Later responses are ignored without setting Unexpected PRG Index.
        answer(&pri, &req_other, PageResponseCode::Success);
        assert!(!pri.status().unexpected_prg_index());
        // Writing Enable again without clearing it first changes nothing.
        pri.configure(true, 4);
        assert_eq!(
            pri.request(p(1), 0, Access::READ).err(),
            Some(PriError::Stopped)
        );
        pri.configure(false, 4);
        assert!(pri.status().stopped());
        pri.configure(true, 4);
        assert!(pri.request(p(1), 0, Access::READ).is_ok());
        assert!(
            pri.status().response_failure(),
            "the RW1C bit stays until cleared"
        );
    }

    #[test]
    fn test_drain_aborts_only_that_pasids_waiters_and_sends_a_stop_marker() {
        let (iommu, pri) = pri(4);
        let drained = pri.request(p(1), 0x1000, Access::READ).unwrap();
        let kept = pri.request(p(2), 0x2000, Access::READ).unwrap();
        let [req_drained, req_kept] = [iommu.requests()[0], iommu.requests()[1]];
        let waiter = {
            let pri = pri.clone();
            thread::spawn(move || pri.wait(drained, Some(LONG)))
        };
        pri.drain(Pasid::new(1).unwrap());
        assert_eq!(waiter.join().unwrap(), Err(PriError::Aborted));
        let marker = iommu.last();
        assert!(marker.is_stop_marker());
        assert_eq!((marker.pasid, marker.device), (p(1), DEV));
        // The drained group keeps its credit until its response, which is then ignored.
        assert_eq!(pri.outstanding(), 2);
        answer(&pri, &req_drained, PageResponseCode::Success);
        assert_eq!(pri.outstanding(), 1);
        assert!(!pri.status().unexpected_prg_index());
        answer(&pri, &req_kept, PageResponseCode::Success);
        assert_eq!(pri.wait(kept, None), Ok(PageResponseCode::Success));
    }

    #[test]
    fn test_drain_aborts_that_pasids_requester_waiting_for_a_credit() {
        let (_, pri) = pri(1);
        let _held = pri.request(p(2), 0, Access::READ).unwrap();
        let of_1 = request_in_thread(&pri, p(1));
        let of_2 = request_in_thread(&pri, p(2));
        assert!(of_1.recv_timeout(SETTLE).is_err());
        pri.drain(Pasid::new(1).unwrap());
        assert_eq!(of_1.recv_timeout(LONG).unwrap(), Err(PriError::Aborted));
        assert!(
            of_2.recv_timeout(SETTLE).is_err(),
            "PASID 2's requester still waits"
        );
        pri.reset();
        assert_eq!(of_2.recv_timeout(LONG).unwrap(), Err(PriError::Aborted));
    }

    #[test]
    fn test_drain_with_pri_disabled_sends_no_stop_marker() {
        let (iommu, pri) = pri(1);
        pri.configure(false, 1);
        pri.drain(Pasid::new(1).unwrap());
        assert!(iommu.requests().is_empty());
    }

    #[test]
    fn test_reset_aborts_every_waiter_and_forgets_outstanding_requests() {
        let (iommu, pri) = pri(2);
        let a = pri.request(p(1), 0, Access::READ).unwrap();
        let b = pri.request(None, 0, Access::READ).unwrap();
        let blocked = request_in_thread(&pri, p(3));
        let waiter = {
            let pri = pri.clone();
            thread::spawn(move || pri.wait(a, Some(LONG)))
        };
        assert!(blocked.recv_timeout(SETTLE).is_err());
        pri.configure(false, 2);
        assert_eq!(blocked.recv_timeout(LONG).unwrap(), Err(PriError::Disabled));
        assert!(!pri.status().stopped(), "requests are still outstanding");
        pri.reset();
        assert_eq!(waiter.join().unwrap(), Err(PriError::Aborted));
        assert_eq!(pri.wait(b, None), Err(PriError::Aborted));
        assert_eq!((pri.outstanding(), pri.status().stopped()), (0, true));
        // A response to a forgotten group is unexpected.
        answer(&pri, &iommu.requests()[0], PageResponseCode::Success);
        assert!(pri.status().unexpected_prg_index());
    }

    #[test]
    fn test_wait_times_out_and_the_late_response_frees_the_credit() {
        let (iommu, pri) = pri(1);
        let token = pri.request(p(1), 0, Access::READ).unwrap();
        assert_eq!(
            pri.wait(token, Some(Duration::from_millis(5))),
            Err(PriError::TimedOut)
        );
        assert_eq!(pri.outstanding(), 1);
        answer(&pri, &iommu.last(), PageResponseCode::Success);
        assert_eq!(pri.outstanding(), 0);
        assert!(!pri.status().unexpected_prg_index());
        assert!(pri.request(p(1), 0, Access::READ).is_ok());
    }

    #[test]
    fn test_dropped_token_response_only_frees_the_credit() {
        let (iommu, pri) = pri(1);
        drop(pri.request(p(1), 0, Access::READ).unwrap());
        answer(&pri, &iommu.last(), PageResponseCode::Success);
        assert_eq!(pri.outstanding(), 0);
        assert!(
            pri.shared.lock().done.is_empty(),
            "no result kept for nobody"
        );
    }

    #[test]
    fn test_iommu_answering_inside_page_request_does_not_deadlock() {
        let (iommu, pri) = pri(1);
        let weak = Arc::downgrade(&pri);
        *iommu.responder.lock().unwrap() = Some(Box::new(move |req: &PageRequest| {
            if let Some(pri) = weak.upgrade() {
                if !req.is_stop_marker() {
                    pri.response(PageResponse::to(req, PageResponseCode::InvalidRequest));
                }
            }
        }));
        for _ in 0..3 {
            let token = pri.request(p(1), 0, Access::READ).unwrap();
            assert_eq!(pri.wait(token, None), Ok(PageResponseCode::InvalidRequest));
        }
        pri.drain(Pasid::new(1).unwrap());
    }

    #[test]
    fn test_request_access_fields_are_normalised() {
        let (iommu, pri) = pri(8);
        let exec_priv = Access {
            read: false,
            write: false,
            exec: true,
            privileged: true,
        };
        let _a = pri.request(p(1), 0, exec_priv).unwrap();
        let _b = pri.request(None, 0, exec_priv).unwrap();
        let _c = pri.request(p(1), 0, Access::default()).unwrap();
        let reqs = iommu.requests();
        assert_eq!(
            reqs[0].access,
            Access {
                read: true,
                ..exec_priv
            }
        );
        assert_eq!(reqs[1].access, Access::READ);
        assert_eq!(reqs[2].access, Access::READ);
        assert!(reqs.iter().all(|r| !r.is_stop_marker()));
    }

    #[test]
    fn test_stopped_means_disabled_with_nothing_outstanding() {
        let iommu = Arc::new(FakeIommu::default());
        let pri = Pri::new(DEV, iommu.clone(), 8);
        assert!(pri.status().stopped());
        pri.configure(true, 8);
        assert!(!pri.status().stopped());
        let token = pri.request(None, 0, Access::READ).unwrap();
        pri.configure(false, 8);
        assert!(!pri.status().stopped());
        answer(&pri, &iommu.last(), PageResponseCode::Success);
        assert!(pri.status().stopped());
        assert_eq!(pri.wait(token, None), Ok(PageResponseCode::Success));
    }

    #[test]
    fn test_response_for_another_device_is_ignored() {
        let (iommu, pri) = pri(1);
        let _t = pri.request(None, 0, Access::READ).unwrap();
        pri.response(PageResponse {
            device: DeviceId(7),
            ..PageResponse::to(&iommu.last(), PageResponseCode::Success)
        });
        assert_eq!(pri.outstanding(), 1);
        assert_eq!(pri.status(), PriStatus::new());
    }

    #[test]
    fn test_pri_is_shared_between_threads() {
        fn shared<T: Send + Sync>() {}
        shared::<Pri>();
        shared::<PageToken>();
    }
}
