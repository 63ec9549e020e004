//! How many client fds the server maps at once. Each mapping is a VMA, and Linux refuses a
//! process more than `vm.max_map_count` of them (mmap(2) fails with ENOMEM; mm/mmap.c): left
//! to clients, their maps would use up the VMAs every other allocation needs.
//!
//! Two budgets, both counted in live mappings: the process's (vm.max_map_count less headroom
//! for everything else the process maps) and each client's (a server option). A map that finds
//! either spent is not refused: it is reached through the client instead.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use log::info;

/// Where Linux publishes the VMA limit.
const MAX_MAP_COUNT_PATH: &str = "/proc/sys/vm/max_map_count";
/// Linux's default vm.max_map_count (`DEFAULT_MAX_MAP_COUNT`, USHRT_MAX - 5), assumed when the
/// sysctl cannot be read.
const DEFAULT_MAX_MAP_COUNT: usize = 65530;
/// VMAs left to the rest of the process: code and libraries, thread stacks (two each),
/// allocator arenas, the VT-d model's own maps. A few hundred in practice.
const HEADROOM: usize = 4096;

/// A count of live mappings against a maximum.
#[derive(Debug)]
pub struct Budget {
    used: AtomicUsize,
    max: AtomicUsize,
}

impl Budget {
    /// A budget of `max` mappings, none used.
    pub const fn new(max: usize) -> Self {
        Budget {
            used: AtomicUsize::new(0),
            max: AtomicUsize::new(max),
        }
    }

    /// Changes the maximum; mappings above it stay until dropped.
    pub fn set_max(&self, max: usize) {
        self.max.store(max, Ordering::Release);
    }

    /// The maximum.
    pub fn max(&self) -> usize {
        self.max.load(Ordering::Acquire)
    }

    /// Mappings counted now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }

    fn take(&self) -> bool {
        let max = self.max();
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                (used < max).then_some(used + 1)
            })
            .is_ok()
    }

    fn give_back(&self) {
        self.used.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The process's budget, read once from vm.max_map_count.
pub fn process() -> &'static Budget {
    static PROCESS: OnceLock<Budget> = OnceLock::new();
    PROCESS.get_or_init(|| {
        let limit = std::fs::read_to_string(MAX_MAP_COUNT_PATH)
            .ok()
            .and_then(|s| s.trim().parse().ok());
        let max = process_max(limit);
        info!(
            "at most {max} client fds mapped at once (vm.max_map_count {}); further maps go \
             through the client",
            limit.unwrap_or(DEFAULT_MAX_MAP_COUNT)
        );
        Budget::new(max)
    })
}

/// The process's budget for a vm.max_map_count of `limit` (unknown: Linux's default).
fn process_max(limit: Option<usize>) -> usize {
    let limit = limit.unwrap_or(DEFAULT_MAX_MAP_COUNT);
    limit - HEADROOM.min(limit / 2)
}

/// One mapping counted against the process's budget and a client's; given back when dropped
/// (when the mapping is unmapped).
#[derive(Debug)]
pub struct Lease {
    process: &'static Budget,
    client: Arc<Budget>,
}

impl Lease {
    /// A lease on both budgets, or `None` when either is spent.
    pub fn take(client: &Arc<Budget>) -> Option<Lease> {
        take_from(process(), client)
    }
}

fn take_from(process: &'static Budget, client: &Arc<Budget>) -> Option<Lease> {
    if !process.take() {
        return None;
    }
    if !client.take() {
        process.give_back();
        return None;
    }
    Some(Lease {
        process,
        client: client.clone(),
    })
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.client.give_back();
        self.process.give_back();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_process_budget_leaves_headroom() {
        assert_eq!(process_max(Some(65530)), 65530 - HEADROOM);
        assert_eq!(process_max(None), DEFAULT_MAX_MAP_COUNT - HEADROOM);
        assert_eq!(process_max(Some(1000)), 500, "a small limit keeps half");
    }

    #[test]
    fn test_lease_counts_on_both_budgets_until_dropped() {
        // A static, as the process budget is (Lease holds a 'static reference).
        static PROCESS: Budget = Budget::new(3);
        let process = &PROCESS;
        let client = Arc::new(Budget::new(2));
        let a = take_from(process, &client).unwrap();
        let _b = take_from(process, &client).unwrap();
        assert!(take_from(process, &client).is_none(), "client spent");
        assert_eq!((process.used(), client.used()), (2, 2));
        drop(a);
        assert_eq!((process.used(), client.used()), (1, 1));
        let other = Arc::new(Budget::new(8));
        let _c = take_from(process, &other).unwrap();
        let _d = take_from(process, &other).unwrap();
        assert!(take_from(process, &other).is_none(), "process spent");
        assert_eq!((process.used(), other.used()), (3, 2));
    }
}
