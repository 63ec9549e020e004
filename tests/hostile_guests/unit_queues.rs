//! The invalidation-queue cases of queues.rs against the translating unit itself
//! (`vtd::RemappingUnit`, driven through its registers as tests/vtd_registers.rs does) on
//! guarded guest RAM: the same tails, queue bases, wait status addresses and malformed
//! descriptors end the same way (IQE with the spec's IQEI, stopped until fixed, nothing
//! written outside RAM).

use crate::common_vtd::driver::*;
use crate::common_vtd::guarded::GuardedRam;
use crate::common_vtd::GuestRam;
use crate::queues::*;
use vsvm::vtd::{RemappingUnit, VtdConfig};

/// The unit over guarded RAM; dropping it checks the guards.
struct UnitRig {
    m: Machine,
    guarded: GuardedRam,
}

impl UnitRig {
    fn new() -> Self {
        let guarded = GuardedRam::new(RAM_SIZE);
        let mem = guarded.memory();
        let mut ram = GuestRam::guarded(mem.clone(), &guarded);
        ram.skip_to(ALLOC_BASE);
        let unit = RemappingUnit::new(VtdConfig::default(), mem);
        UnitRig {
            m: Machine::with_unit(ram, unit),
            guarded,
        }
    }

    fn queued() -> Self {
        let mut rig = Self::new();
        queued(&mut rig.m);
        rig
    }
}

impl Drop for UnitRig {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            self.guarded.assert_intact();
        }
    }
}

#[test]
fn test_unit_tail_games_stop_the_queue_until_fixed() {
    for bad in TAILS_PAST_END {
        tail_past_the_end(&mut UnitRig::queued().m, bad);
    }
    let mut rig = UnitRig::queued();
    tail_at_and_behind_the_head(&mut rig.m);
}

#[test]
fn test_unit_queue_outside_ram_is_a_fetch_error_until_moved() {
    for base in QUEUES_OUTSIDE_RAM {
        queue_outside_ram(&mut UnitRig::new().m, base);
    }
}

#[test]
fn test_unit_wait_status_outside_ram_is_a_queue_error_and_writes_nothing() {
    for addr in WAITS_OUTSIDE_RAM {
        wait_status_outside_ram(&mut UnitRig::queued().m, addr);
    }
    wait_status_at_the_end_of_ram(&mut UnitRig::queued().m);
}

#[test]
fn test_unit_malformed_descriptors_stop_the_queue_with_their_code() {
    for (desc, code) in malformed_descriptors() {
        malformed(&mut UnitRig::queued().m, desc, code);
    }
    for desc in wide_only() {
        too_wide(&mut UnitRig::new().m, desc);
    }
}
