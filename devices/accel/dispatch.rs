//! accel descriptor processing: the checks before a descriptor may touch memory (address
//! space, PASID state, completion record alignment, form), BATCH, and the end of every
//! descriptor — its completion record, its interrupt, and SWERR for what no record can carry.
//! Order and outcomes: devices/accel/README.md, "Errors".

use super::completion::{Completion, Status};
use super::descriptor::{Descriptor, Operation, DESCRIPTOR_SIZE};
use super::device::Core;
use super::exec::{Halt, Job, Reset};
use super::swerr::Origin;
use super::wq::{read_slot, Slot, Views, WorkQueue};

/// Processes the descriptor in `slot` of `wq`.
pub(crate) fn slot(core: &Core, wq: &WorkQueue, slot: &Slot, views: &Views) {
    let origin = Origin {
        slot: Some((wq.index(), slot.index as u16)),
        batch_index: None,
    };
    let desc = match read_slot(core, views, slot.addr) {
        Ok(desc) => desc,
        Err(status) => return core.errors.report(status, origin, slot.addr),
    };
    // Without a usable address space there is nowhere to write a record.
    let space = match core.space_for(&desc) {
        Ok(space) => space,
        Err(status) => return core.errors.report(status, origin, desc.completion),
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
            return core
                .errors
                .report(Status::PasidDisabled, origin, desc.completion);
        }
    }
    if !desc.completion_aligned() {
        return core
            .errors
            .report(Status::BadCompletionAddr, origin, desc.completion);
    }
    let completion = match desc.operation() {
        Err(status) => Ok(Completion::with_status(status)),
        Ok(Operation::Batch { list, count }) => batch(&job, list, count, origin),
        Ok(op) => job.execute(op),
    };
    if let Ok(c) = completion {
        finish(&job, &desc, c, origin);
    }
}

/// Runs the `count` descriptors at `list`, in the batch's address space (their PASID fields
/// are ignored). A failing descriptor does not stop the batch; a disable or reset does.
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
        finish(job, &desc, c, origin);
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

/// Ends a descriptor: the record (or SWERR when there is none to carry a failure), the error
/// interrupt for error statuses, the completion interrupt when asked for.
fn finish(job: &Job, desc: &Descriptor, c: Completion, origin: Origin) {
    let core = job.core();
    let control = desc.control();
    if control.completion_valid() {
        match job.write_record(desc.completion, &c) {
            Ok(()) if c.status.is_error() => core.errors.interrupt(),
            Ok(()) => {}
            Err(Halt::Reset) => return,
            // Bus mastering went off: say so rather than blame the record.
            Err(Halt::Status(Status::DmaError)) => {
                core.errors
                    .report(Status::DmaError, origin, desc.completion)
            }
            Err(_) => core
                .errors
                .report(Status::CompletionFault, origin, desc.completion),
        }
    } else if c.status != Status::Success {
        core.errors.report(c.status, origin, c.fault_addr);
    }
    if control.request_interrupt() {
        core.bus.irqs.trigger(job.vector());
    }
}
