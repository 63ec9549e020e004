//! accel per-PASID state (PASID_SEL / PASID_CTL): which PASIDs may run descriptors, and the
//! drains in progress. A disabled PASID drains like DSA's "Drain PASID" (Intel DSA spec
//! §3.7.4): descriptors submitted before the disable finish (aborted), then the PASID is idle.
//!
//! The enable bits are a bitmap over all 2^20 PASIDs (128 KiB, lock-free to read: an engine
//! checks its PASID before every page); drains are rare and live in a small locked map.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use crate::iommu::Pasid;

const WORD_BITS: u32 = u64::BITS;
const WORDS: usize = ((Pasid::MAX + 1) / WORD_BITS) as usize;

/// Where one work queue stood when a drain began: the drain waits until the queue completed
/// every descriptor submitted by then, or was disabled or reset (its epoch moved on).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WqMark {
    /// The queue's epoch (bumped by enable, disable and reset).
    pub epoch: u64,
    /// Descriptors submitted to the queue in that epoch.
    pub submitted: u64,
}

#[derive(Debug)]
struct Drain {
    generation: u64,
    marks: Vec<WqMark>,
}

/// PASID enable bits and drains.
pub struct PasidTable {
    enabled: Box<[AtomicU64]>,
    draining: Mutex<HashMap<Pasid, Drain>>,
}

impl std::fmt::Debug for PasidTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasidTable")
            .field("enabled", &self.enabled_count())
            .field("draining", &self.lock().len())
            .finish()
    }
}

impl Default for PasidTable {
    fn default() -> Self {
        Self::new()
    }
}

fn bit(pasid: Pasid) -> (usize, u64) {
    let raw = pasid.raw();
    ((raw / WORD_BITS) as usize, 1 << (raw % WORD_BITS))
}

impl PasidTable {
    /// Every PASID disabled.
    pub fn new() -> Self {
        PasidTable {
            enabled: (0..WORDS).map(|_| AtomicU64::new(0)).collect(),
            draining: Mutex::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Pasid, Drain>> {
        self.draining.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn word(&self, pasid: Pasid) -> (&AtomicU64, u64) {
        let (index, mask) = bit(pasid);
        // `index` < WORDS for every valid Pasid; fall back to word 0 with no bit otherwise.
        match self.enabled.get(index) {
            Some(word) => (word, mask),
            None => (&self.enabled[0], 0),
        }
    }

    /// Whether descriptors of `pasid` may run.
    pub fn is_enabled(&self, pasid: Pasid) -> bool {
        let (word, mask) = self.word(pasid);
        word.load(Ordering::Acquire) & mask != 0
    }

    /// Whether `pasid` is being drained.
    pub fn is_draining(&self, pasid: Pasid) -> bool {
        self.lock().contains_key(&pasid)
    }

    /// Enables `pasid`; refused (false) while it drains.
    pub fn enable(&self, pasid: Pasid) -> bool {
        let draining = self.lock();
        if draining.contains_key(&pasid) {
            return false;
        }
        let (word, mask) = self.word(pasid);
        word.fetch_or(mask, Ordering::SeqCst);
        true
    }

    /// Disables `pasid` and records its drain; `marks` is called after the enable bit is
    /// clear, so every descriptor that saw it set is counted as submitted. False when the PASID
    /// was not enabled (nothing to drain).
    pub fn begin_drain(
        &self,
        pasid: Pasid,
        generation: u64,
        marks: impl FnOnce() -> Vec<WqMark>,
    ) -> bool {
        let mut draining = self.lock();
        let (word, mask) = self.word(pasid);
        if word.fetch_and(!mask, Ordering::SeqCst) & mask == 0 {
            return false;
        }
        let marks = marks();
        draining.insert(pasid, Drain { generation, marks });
        true
    }

    /// The queue marks of `pasid`'s drain.
    pub fn marks(&self, pasid: Pasid) -> Option<Vec<WqMark>> {
        self.lock().get(&pasid).map(|d| d.marks.clone())
    }

    /// Ends `pasid`'s drain begun in `generation` (a reset in between already ended it).
    pub fn finish_drain(&self, pasid: Pasid, generation: u64) {
        let mut draining = self.lock();
        if draining
            .get(&pasid)
            .is_some_and(|d| d.generation == generation)
        {
            draining.remove(&pasid);
        }
    }

    /// Every PASID disabled, every drain forgotten (reset).
    pub fn clear(&self) {
        let mut draining = self.lock();
        draining.clear();
        for word in self.enabled.iter() {
            word.store(0, Ordering::SeqCst);
        }
    }

    /// Number of enabled PASIDs.
    pub fn enabled_count(&self) -> u32 {
        self.enabled
            .iter()
            .map(|w| w.load(Ordering::Relaxed).count_ones())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pasid(raw: u32) -> Pasid {
        Pasid::new(raw).unwrap()
    }

    #[test]
    fn test_enable_sets_only_that_pasid() {
        let t = PasidTable::new();
        assert!(t.enable(pasid(Pasid::MAX)));
        assert!(t.is_enabled(pasid(Pasid::MAX)));
        assert!(!t.is_enabled(pasid(Pasid::MAX - 1)));
        assert_eq!(t.enabled_count(), 1);
    }

    #[test]
    fn test_drain_disables_and_blocks_reenable_until_finished() {
        let t = PasidTable::new();
        t.enable(pasid(7));
        let mark = WqMark {
            epoch: 1,
            submitted: 3,
        };
        assert!(t.begin_drain(pasid(7), 0, || vec![mark]));
        assert!(!t.is_enabled(pasid(7)));
        assert!(t.is_draining(pasid(7)));
        assert_eq!(t.marks(pasid(7)), Some(vec![mark]));
        assert!(!t.enable(pasid(7)), "no enable while draining");
        t.finish_drain(pasid(7), 0);
        assert!(!t.is_draining(pasid(7)));
        assert!(t.enable(pasid(7)));
    }

    #[test]
    fn test_drain_of_disabled_pasid_is_refused() {
        let t = PasidTable::new();
        assert!(!t.begin_drain(pasid(3), 0, Vec::new));
        assert!(!t.is_draining(pasid(3)));
    }

    #[test]
    fn test_finish_drain_of_an_older_generation_keeps_the_new_drain() {
        let t = PasidTable::new();
        t.enable(pasid(9));
        t.begin_drain(pasid(9), 2, Vec::new);
        t.finish_drain(pasid(9), 1);
        assert!(t.is_draining(pasid(9)));
        t.clear();
        assert!(!t.is_draining(pasid(9)));
    }
}
