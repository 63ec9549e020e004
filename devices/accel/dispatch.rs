//! accel descriptor processing: the checks before a descriptor may touch memory (address
//! space, PASID state, completion record alignment, form), BATCH, and the end of every
//! descriptor — its completion record, its interrupts, and SWERR for what no record can carry.
//! A ring descriptor's interrupts are handed back to the engine, which raises them once the
//! queue counted the descriptor (HEAD, WQ_DONE). Order and outcomes: devices/accel/README.md,
//! "Errors" and "Interrupts".

use super::completion::{Completion, Status};
use super::descriptor::{Descriptor, Operation, DESCRIPTOR_SIZE};
use super::device::Core;
use super::exec::{Halt, Job, Reset};
use super::swerr::Origin;
use super::wq::{read_slot, Slot, Views, WorkQueue};

/// The interrupts a descriptor raises. Held back for a ring descriptor until the queue counted
/// it: a driver woken by one takes the descriptor as done and its ring slot as free.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[must_use = "a descriptor's interrupts must be raised"]
pub(crate) struct Raise {
    /// The error interrupt (ERRCTL decides whether it goes out).
    error: bool,
    /// The queue's completion vector.
    completion: Option<u32>,
}

impl Raise {
    /// Only the error interrupt.
    fn error() -> Self {
        Raise {
            error: true,
            completion: None,
        }
    }

    /// Raises the interrupts: the error interrupt first, then the completion vector.
    pub fn fire(self, core: &Core) {
        if self.error {
            core.errors.interrupt();
        }
        if let Some(vector) = self.completion {
            log::trace!("accel: completion interrupt, vector {vector}");
            core.bus.irqs.trigger(vector);
        }
    }
}

/// Processes the descriptor in `slot` of `wq`; returns the interrupts to raise once the queue
/// moved past it.
pub(crate) fn slot(core: &Core, wq: &WorkQueue, slot: &Slot, views: &Views) -> Raise {
    let origin = Origin {
        slot: Some((wq.index(), slot.index as u16)),
        batch_index: None,
    };
    // Refused before it ran: SWERR and the error interrupt only, no completion interrupt.
    let refuse = |status, addr| {
        core.record_error(slot.generation, status, origin, addr);
        Raise::error()
    };
    let desc = match read_slot(core, views, slot.addr) {
        Ok(desc) => desc,
        Err(status) => return refuse(status, slot.addr),
    };
    // Without a usable address space there is nowhere to write a record.
    let space = match core.space_for(&desc) {
        Ok(space) => space,
        Err(status) => return refuse(status, desc.completion),
    };
    let job = Job::new(core, wq, *slot, space, views);
    if let Some(pasid) = space.pasid() {
        if !core.pasids.is_enabled(pasid) {
            // Submitted before (or during) a drain: the drain is not over, so the record may
            // still be written. After the drain the PASID's memory is off limits.
            if core.pasids.is_draining(pasid) && desc.completion_aligned() {
                return finish(
                    &job,
                    &desc,
                    Completion::with_status(Status::Aborted),
                    origin,
                );
            }
            return refuse(Status::PasidDisabled, desc.completion);
        }
    }
    if !desc.completion_aligned() {
        return refuse(Status::BadCompletionAddr, desc.completion);
    }
    let completion = match desc.operation() {
        Err(status) => Ok(Completion::with_status(status)),
        Ok(Operation::Batch { list, count }) => batch(&job, list, count, origin),
        Ok(op) => job.execute(op),
    };
    match completion {
        Ok(c) => finish(&job, &desc, c, origin),
        Err(Reset) => Raise::default(),
    }
}

/// Runs the `count` descriptors at `list`, in the batch's address space (their PASID fields
/// are ignored). A failing descriptor does not stop the batch; a disable or reset does. The
/// members' interrupts go out as each ends: the batch itself is not done yet.
fn batch(job: &Job, list: u64, count: u32, origin: Origin) -> Result<Completion, Reset> {
    let mut failed = false;
    for i in 0..count {
        let origin = Origin {
            batch_index: Some(i as u16),
            ..origin
        };
        // `list + count * 64` was checked not to wrap.
        let at = list + u64::from(i) * DESCRIPTOR_SIZE;
        let desc = match job.read_descriptor(at) {
            Ok(desc) => inherit_space(desc),
            Err(halt) => return halt.complete(i.into(), false),
        };
        if !desc.completion_aligned() {
            job.core()
                .errors
                .report(Status::BadCompletionAddr, origin, desc.completion);
            failed = true;
            continue;
        }
        let c = match desc.operation() {
            Err(status) => Completion::with_status(status),
            Ok(Operation::Batch { .. }) => Completion::with_status(Status::NestedBatch),
            Ok(op) => job.execute(op)?,
        };
        failed |= c.status != Status::Success;
        finish(job, &desc, c, origin).fire(job.core());
        if let Err(halt) = job.check_data() {
            return halt.complete(u64::from(i) + 1, false);
        }
    }
    let status = if failed {
        Status::BatchFail
    } else {
        Status::Success
    };
    Ok(Completion {
        bytes_completed: count,
        ..Completion::with_status(status)
    })
}

/// A batch's descriptor runs in the batch's address space: its PV and PRIV bits are ignored.
fn inherit_space(desc: Descriptor) -> Descriptor {
    let control = desc
        .control()
        .with_pasid_valid(false)
        .with_privileged(false);
    Descriptor {
        control: control.into_bits(),
        ..desc
    }
}

/// Ends a descriptor: the record (or SWERR when there is none to carry a failure); returns
/// the error interrupt for error statuses and the completion interrupt when asked for.
fn finish(job: &Job, desc: &Descriptor, c: Completion, origin: Origin) -> Raise {
    let control = desc.control();
    let mut raise = Raise::default();
    if control.completion_valid() {
        match job.write_record(desc.completion, &c) {
            Ok(()) => raise.error = c.status.is_error(),
            Err(Halt::Reset) => return raise,
            // Bus mastering went off: say so rather than blame the record.
            Err(Halt::Status(Status::DmaError)) => {
                job.record_error(Status::DmaError, origin, desc.completion);
                raise.error = true;
            }
            Err(_) => {
                job.record_error(Status::CompletionFault, origin, desc.completion);
                raise.error = true;
            }
        }
    } else if c.status != Status::Success {
        job.record_error(c.status, origin, c.fault_addr);
        raise.error = true;
    }
    if control.request_interrupt() {
        raise.completion = Some(job.vector());
    }
    raise
}
