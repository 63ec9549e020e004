//! The adversary of the stress test: while jobs run, it changes what they run on — zaps,
//! swaps out, write-protects and maps arena pages (each followed by the IOTLB and device-TLB
//! invalidation Linux sends, then the zapped frame is freed), flushes for no reason, disables
//! and re-enables PASIDs in the device, unbinds and rebinds them in the IOMMU (the driver's
//! way, or rudely under a device still using them), toggles ATS Enable, cycles queues and
//! resets the function.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use vsvm::iommu::Granularity;

use crate::common_vtd::PAGE;
use crate::guest::{arena_va, ARENA_PAGES};
use crate::rng::Rng;
use crate::world::{pasid, PasidState, World};

/// What the mutator may do, and how often.
#[derive(Clone, Copy, Debug)]
pub struct Mix {
    pub pages: bool,
    pub pasids: bool,
    pub ats: bool,
    pub queues: bool,
    /// PRI Enable toggles.
    pub pri: bool,
    /// FLRs per run at most.
    pub flrs: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Action {
    Zap,
    Swap,
    Protect,
    Map,
    Flush,
    Pasid,
    Ats,
    Pri,
    Queue,
    Flr,
}

const ACTIONS: [(Action, u64); 10] = [
    (Action::Zap, 18),
    (Action::Swap, 18),
    (Action::Protect, 10),
    (Action::Map, 14),
    (Action::Flush, 1),
    (Action::Pasid, 3),
    (Action::Ats, 2),
    (Action::Pri, 1),
    (Action::Queue, 1),
    (Action::Flr, 1),
];

fn enabled(mix: &Mix, action: Action) -> bool {
    match action {
        Action::Zap | Action::Swap | Action::Protect | Action::Map | Action::Flush => mix.pages,
        Action::Pasid => mix.pasids,
        Action::Ats => mix.ats,
        Action::Pri => mix.pri,
        Action::Queue => mix.queues,
        Action::Flr => mix.flrs > 0,
    }
}

/// Changes pages `first..first + n` of `p`, invalidates, frees what was zapped — all under
/// the guest's lock, so a job submitted after sees the change complete.
fn pages(world: &World, rng: &mut Rng, action: Action, p: u32, first: usize, n: usize) {
    let mut freed = Vec::new();
    let mut changed = false;
    let mut guest = world.guest();
    for i in first..first + n {
        match action {
            Action::Zap => {
                if let Some(frame) = guest.zap(p, i) {
                    freed.push(frame);
                    changed = true;
                }
            }
            Action::Swap => changed |= guest.swap_out(p, i),
            Action::Protect => changed |= guest.write_protect(p, i),
            // Granting needs no invalidation (VT-d caches no non-present entry).
            _ => {
                guest.fault_in(p, arena_va(i), true, true);
            }
        }
    }
    world.trace(format!(
        "{action:?} PASID {p:#x} pages {first}..{}",
        first + n
    ));
    if !changed {
        return;
    }
    // Linux flushes the range; a wider flush now and then.
    let granularity = match rng.below(40) {
        0 => Granularity::Pasid(pasid(p)),
        1 => Granularity::Domain,
        _ => Granularity::Range {
            pasid: pasid(p),
            addr: arena_va(first),
            size: n as u64 * PAGE,
        },
    };
    world.invalidate(granularity);
    for frame in freed {
        guest.release(frame);
    }
    for i in first..first + n {
        guest.seal(p, i);
    }
}

fn step(
    world: &World,
    rng: &mut Rng,
    mix: &Mix,
    action: Action,
    down: &mut Vec<(u32, Instant)>,
) -> Result<(), String> {
    let p = rng.pick(&world.pasids);
    match action {
        Action::Zap | Action::Swap | Action::Protect | Action::Map => {
            // Half the time a page a job was just given: a change under a running job.
            match world.hot_page(rng).filter(|_| rng.chance(50)) {
                Some((p, i)) => pages(world, rng, action, p, i, 1),
                None => {
                    let n = if rng.chance(25) { rng.between(2, 4) } else { 1 } as usize;
                    let first = rng.below((ARENA_PAGES - n + 1) as u64) as usize;
                    pages(world, rng, action, p, first, n);
                }
            }
        }
        Action::Flush => {
            let granularity = if rng.chance(50) {
                Granularity::Pasid(pasid(p))
            } else {
                Granularity::Domain
            };
            world.trace(format!("flush {granularity:?}"));
            world.invalidate(granularity);
        }
        Action::Pasid => {
            // Down for a short while: most jobs should find their PASID usable.
            if world.dev().pasids[&p] == PasidState::Healthy {
                let to = rng.pick(&[
                    PasidState::DeviceOff,
                    PasidState::Unbound,
                    PasidState::RudeUnbound,
                ]);
                world.set_pasid(p, to)?;
                let dwell = Duration::from_micros(rng.between(1000, 15000));
                down.push((p, Instant::now() + dwell));
            }
        }
        Action::Ats => {
            let mut dev = world.dev();
            let on = !dev.ats;
            world.trace(format!("ATS Enable {on}"));
            dev.set_ats(on);
        }
        Action::Pri => {
            // Off for a moment: block-on-fault jobs that need a page then fail.
            world.trace("PRI Enable off and on".into());
            world.dev().set_pri(false);
            thread::sleep(Duration::from_micros(rng.between(100, 3000)));
            world.dev().set_pri(true);
        }
        Action::Queue => {
            let wq = rng.below(2) as usize;
            world.trace(format!("queue {wq} disabled and enabled"));
            world.dev().cycle_queue(wq)?;
        }
        Action::Flr => {
            let mut dev = world.dev();
            if dev.flrs < mix.flrs {
                world.trace("FLR".into());
                dev.flr()?;
            }
        }
    }
    Ok(())
}

/// Starts the mutator; it runs until `stop`.
pub fn spawn(
    world: Arc<World>,
    seed: u64,
    mix: Mix,
    stop: Arc<AtomicBool>,
) -> thread::JoinHandle<()> {
    thread::Builder::new()
        .name("stress-mutator".into())
        .spawn(move || {
            let mut rng = Rng::new(seed, 2);
            let actions: Vec<(Action, u64)> = ACTIONS
                .iter()
                .map(|&(a, w)| (a, if enabled(&mix, a) { w } else { 0 }))
                .collect();
            let weights: Vec<u64> = actions.iter().map(|a| a.1).collect();
            if weights.iter().all(|w| *w == 0) {
                return;
            }
            let mut down = Vec::new();
            while !stop.load(Ordering::Acquire) && !world.failed() {
                thread::sleep(Duration::from_micros(rng.below(3000)));
                let action = actions[rng.weighted(&weights)].0;
                let mut result = step(&world, &mut rng, &mix, action, &mut down);
                let now = Instant::now();
                for (p, _) in down.iter().filter(|(_, at)| *at <= now) {
                    result = result.and_then(|()| world.set_pasid(*p, PasidState::Healthy));
                }
                down.retain(|(_, at)| *at > now);
                if let Err(e) = result {
                    world.fail(e);
                }
            }
        })
        .unwrap()
}
