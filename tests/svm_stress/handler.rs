//! The guest's IOMMU driver in the stress test: the fault handler registered with the IOMMU
//! only queues page requests; a resolver thread answers each at random — Success after the
//! guest mapped the page, Invalid Request, Success without mapping anything (a lying handler:
//! the device must give up after a few), late, or not at all (the IOMMU's timer must answer).
//! Once quiescing, every request is resolved and answered Success.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use vsvm::iommu::{
    FaultHandler, HostIommu, IommuError, IommuFault, PageRequest, PageResponse, PageResponseCode,
};

use crate::rng::Rng;
use crate::world::{World, DEV};

/// Counters of the fault path.
#[derive(Clone, Copy, Debug, Default)]
pub struct HandlerStats {
    pub requests: u64,
    pub stop_markers: u64,
    pub unrecoverable: u64,
    pub success: u64,
    pub invalid: u64,
    pub lies: u64,
    pub ignored: u64,
    /// Responses the IOMMU refused as not pending (the timer or an unbind was first).
    pub late: u64,
}

/// The registered fault handler.
pub struct Handler {
    queue: Mutex<Option<Sender<PageRequest>>>,
    receiver: Mutex<Option<Receiver<PageRequest>>>,
    pub stats: Mutex<HandlerStats>,
    /// Answer everything, Success.
    pub quiesce: AtomicBool,
    /// Ends the resolver.
    pub stop: AtomicBool,
}

impl Default for Handler {
    fn default() -> Self {
        let (tx, rx) = mpsc::channel();
        Handler {
            queue: Mutex::new(Some(tx)),
            receiver: Mutex::new(Some(rx)),
            stats: Mutex::default(),
            quiesce: AtomicBool::new(false),
            stop: AtomicBool::new(false),
        }
    }
}

impl Handler {
    fn count(&self, f: impl FnOnce(&mut HandlerStats)) {
        f(&mut self.stats.lock().unwrap_or_else(|e| e.into_inner()));
    }

    pub fn stats(&self) -> HandlerStats {
        *self.stats.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl FaultHandler for Handler {
    fn handle(&self, fault: &IommuFault) {
        match fault {
            IommuFault::PageRequest(req) if req.is_stop_marker() => {
                self.count(|s| s.stop_markers += 1)
            }
            IommuFault::PageRequest(req) => {
                self.count(|s| s.requests += 1);
                let queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(tx) = queue.as_ref() {
                    // The resolver may be gone at the very end; the timer answers then.
                    let _ = tx.send(*req);
                }
            }
            IommuFault::Unrecoverable(_) => self.count(|s| s.unrecoverable += 1),
        }
    }
}

/// What the resolver does with one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Answer {
    Resolve,
    Invalid,
    Lie,
    Ignore,
    Late,
}

fn answer(world: &World, req: &PageRequest, code: PageResponseCode) {
    match world.iommu.page_response(PageResponse::to(req, code)) {
        Ok(()) => {}
        Err(IommuError::NotPending { .. }) => world.handler.count(|s| s.late += 1),
        Err(e) => world.fail(format!("page response to {req:?}: {e}")),
    }
}

/// Maps the page in the guest and answers Success (Invalid Request where the guest has
/// nothing to map: then the device asked for an address no job names).
fn resolve(world: &World, req: &PageRequest) {
    let Some(p) = req.pasid.map(|p| p.raw()) else {
        world.fail(format!("page request without PASID: {req:?}"));
        return answer(world, req, PageResponseCode::InvalidRequest);
    };
    let code = world.guest().fault_in(p, req.addr, req.access.write, false);
    let code = code.unwrap_or_else(|| {
        world.fail(format!("page request for an address no job names: {req:?}"));
        PageResponseCode::InvalidRequest
    });
    world.handler.count(|s| s.success += 1);
    answer(world, req, code);
}

fn handle_one(world: &World, req: PageRequest, rng: &mut Rng) {
    let choice = if world.handler.quiesce.load(Ordering::Acquire) {
        Answer::Resolve
    } else {
        const ANSWERS: [Answer; 5] = [
            Answer::Resolve,
            Answer::Invalid,
            Answer::Lie,
            Answer::Ignore,
            Answer::Late,
        ];
        ANSWERS[rng.weighted(&[64, 10, 3, 13, 10])]
    };
    assert_eq!(req.device, DEV);
    match choice {
        Answer::Resolve => resolve(world, &req),
        Answer::Late => {
            thread::sleep(Duration::from_millis(rng.between(1, 30)));
            resolve(world, &req);
        }
        Answer::Invalid => {
            world.handler.count(|s| s.invalid += 1);
            answer(world, &req, PageResponseCode::InvalidRequest);
        }
        Answer::Lie => {
            world.handler.count(|s| s.lies += 1);
            answer(world, &req, PageResponseCode::Success);
        }
        Answer::Ignore => world.handler.count(|s| s.ignored += 1),
    }
}

/// Starts the resolver thread.
pub fn spawn(world: Arc<World>, seed: u64) -> thread::JoinHandle<()> {
    let rx = world
        .handler
        .receiver
        .lock()
        .unwrap()
        .take()
        .expect("one resolver");
    thread::Builder::new()
        .name("stress-resolver".into())
        .spawn(move || {
            let mut rng = Rng::new(seed, 3);
            while !world.handler.stop.load(Ordering::Acquire) {
                match rx.recv_timeout(Duration::from_millis(5)) {
                    Ok(req) => handle_one(&world, req, &mut rng),
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => return,
                }
            }
        })
        .unwrap()
}
