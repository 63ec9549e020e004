//! Invalidation fences: what lets an ATS Invalidate Completion promise that no request using
//! an invalidated translation is still in flight (PCIe 6.0 §10.3.1, "the Function must not
//! send the Invalidate Completion until … all requests that used it have completed").
//!
//! Fences are counted per epoch. An invalidation first drops its ATC entries, then closes the
//! current epoch and waits until no fence of a closed epoch remains: a fence taken later can
//! only see the ATC without the dropped entries.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard};

#[derive(Debug, Default)]
struct State {
    /// The epoch new fences join.
    epoch: u64,
    /// Live fences per epoch, oldest first, no zero counts.
    live: VecDeque<(u64, usize)>,
    /// Invalidations waiting: only then does a release pay for a wake-up (a syscall).
    waiting: usize,
}

/// The fences of one ATS function.
#[derive(Debug, Default)]
pub(super) struct Fences {
    state: Mutex<State>,
    released: Condvar,
}

impl Fences {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The counts are updated without panicking; a poisoned lock still holds them.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A fence in the current epoch.
    pub(super) fn take(&self) -> AtsFence<'_> {
        let mut state = self.lock();
        let epoch = state.epoch;
        match state.live.back_mut() {
            Some((e, count)) if *e == epoch => *count += 1,
            _ => state.live.push_back((epoch, 1)),
        }
        AtsFence {
            fences: self,
            epoch,
        }
    }

    /// Closes the current epoch and waits until every fence of it and older ones is dropped.
    pub(super) fn wait_older(&self) {
        let mut state = self.lock();
        let closed = state.epoch;
        state.epoch = closed.wrapping_add(1);
        state.waiting += 1;
        while state.live.front().is_some_and(|&(e, _)| e <= closed) {
            state = self.released.wait(state).unwrap_or_else(|e| e.into_inner());
        }
        state.waiting -= 1;
    }

    /// The epoch new fences join (tests wait on it to order a fence after an invalidation).
    #[cfg(test)]
    pub(super) fn epoch(&self) -> u64 {
        self.lock().epoch
    }

    fn release(&self, epoch: u64) {
        let mut state = self.lock();
        let Some(at) = state.live.iter().position(|&(e, _)| e == epoch) else {
            return;
        };
        let emptied = match state.live.get_mut(at) {
            Some((_, count)) => {
                *count -= 1;
                *count == 0
            }
            None => false,
        };
        if emptied {
            state.live.remove(at);
            if state.waiting > 0 {
                self.released.notify_all();
            }
        }
    }
}

/// Held while a translation is in use; an invalidation that started after it was taken
/// completes only after it is dropped. Never hold one while waiting for a page response.
#[derive(Debug)]
#[must_use = "a fence protects the accesses made while it is held"]
pub struct AtsFence<'a> {
    fences: &'a Fences,
    epoch: u64,
}

impl Drop for AtsFence<'_> {
    fn drop(&mut self) {
        self.fences.release(self.epoch);
    }
}
