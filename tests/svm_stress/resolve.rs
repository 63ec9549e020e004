//! The checking side of the stress test: when a job is final — its record has a status, its
//! queue completed it (WQ_DONE passed it), or its queue was disabled or reset (whatever it
//! left is then final: the disable waited for the queue to stop) — its outcome is checked:
//! status, bytes completed, fault address, the data moved, the records of a batch, the
//! software error standing in for a record. SWERR is collected and attributed here too.

use zerocopy::{FromBytes, IntoBytes};

use vsvm::devices::accel::completion::{CompletionRecord, Status, COMPLETION_SIZE};
use vsvm::devices::accel::regs::wq_offset;
use vsvm::mem::Gpa;

use crate::accel_driver::AccelDriver;
use crate::guest::{Guest, RECORDS_VA};
use crate::jobs::{status_name, Check, Expect, Job, JobSpace, Jobs, Kind, Op, Record, DEADLINE};
use crate::world::{Dev, World, UNTAGGED_RECORDS};

fn read_record(guest: &Guest, r: &Record) -> CompletionRecord {
    let mut bytes = [0u8; 32];
    guest.ram.mem.read(Gpa(r.gpa), &mut bytes).unwrap();
    CompletionRecord::read_from_bytes(&bytes).unwrap()
}

/// Statuses a record may carry.
fn allowed(expect: Expect, disturbed: bool) -> Vec<Status> {
    let (mut ok, extra) = match expect {
        Expect::Status(s) => (vec![s], vec![Status::Aborted]),
        Expect::Data => (
            vec![Status::Success, Status::PageFault],
            vec![Status::Aborted, Status::TranslationError],
        ),
        Expect::Batch => (
            vec![Status::Success, Status::BatchFail],
            vec![Status::Aborted, Status::TranslationError],
        ),
        Expect::BatchFromArena => (
            vec![Status::Success, Status::BatchFail, Status::PageFault],
            vec![Status::Aborted, Status::TranslationError],
        ),
        Expect::Swerr(_) | Expect::Quiet => (vec![], vec![]),
    };
    if disturbed {
        ok.extend(extra);
    }
    ok
}

impl Jobs {
    /// Reads SWERR (after the queues' DONE: an error of a job DONE counted is in it, or was
    /// read before), attributes it to the pending jobs of its ring slot, clears what was read.
    ///
    /// SWERR keeps one error; one reported while VALID is set only sets OVERFLOW. VALID and
    /// OVERFLOW clear independently (README, "Errors"), so an error reported between this read
    /// and the clear leaves OVERFLOW set, and OVERFLOW may read 1 with VALID 0. Every error
    /// reported since the last look is thus in what this read shows (VALID's record or
    /// OVERFLOW) or still in SWERR for the next look, which comes before the job is resolved
    /// (a job is resolved only by a poll, after its `collect_swerr`). Whenever OVERFLOW shows,
    /// every pending job may have lost its software error and is marked.
    fn collect_swerr(&mut self, world: &World, dev: &mut Dev) {
        let (swerr, addr) = dev.drv.swerr();
        if !swerr.valid() && !swerr.overflow() {
            return;
        }
        dev.drv.clear_swerr_seen(swerr);
        for job in &mut self.pending {
            job.overflowed |= swerr.overflow();
        }
        // Without VALID the other fields are no record (and may be read torn).
        if !swerr.valid() {
            return;
        }
        let code = Status::from_code(swerr.code());
        *self
            .stats
            .swerrs
            .entry(status_name(swerr.code()))
            .or_default() += 1;
        match code {
            Some(
                Status::RingReadFault | Status::BadTail | Status::DmaError | Status::BadWqConfig,
            )
            | None => world.fail(format!(
                "unexpected software error {} (SWERR {swerr:?}, address {addr:#x})",
                status_name(swerr.code())
            )),
            _ => {}
        }
        for job in &mut self.pending {
            let mine = swerr.wq_valid()
                && !swerr.batch()
                && usize::from(swerr.wq()) == job.wq
                && u32::from(swerr.desc_index()) == job.ring_slot;
            if mine {
                job.swerr.push(swerr.code());
            }
        }
    }

    /// WQ_DONE of both queues.
    fn done(dev: &mut Dev) -> [u64; 2] {
        [0, 1].map(|wq| u64::from(dev.drv.read32(AccelDriver::wq_reg(wq, wq_offset::DONE))))
    }

    /// Resolves every job that is final; fails the ones past the deadline.
    pub fn poll(&mut self, world: &World, dev: &mut Dev) {
        let done = Self::done(dev);
        self.collect_swerr(world, dev);
        let guest = world.guest();
        let mut i = 0;
        while i < self.pending.len() {
            let job = &self.pending[i];
            let current = dev.queues[job.wq].epoch == job.epoch;
            let processed = current && done[job.wq] > job.ordinal;
            let has_status = job
                .top
                .record
                .filter(|_| job.top.desc.completion_aligned())
                .is_some_and(|r| read_record(&guest, &r).status != 0);
            if !current || processed || has_status {
                let mut job = self.pending.swap_remove(i);
                job.pri_disturbed = job.pri != (true, dev.pri_events);
                let disturbed = !job.healthy
                    || !current
                    || match job.space {
                        JobSpace::Tagged(p) => dev.disturbance(p) != job.disturb,
                        _ => false,
                    };
                self.resolve(world, &guest, job, disturbed, processed);
                continue;
            }
            if job.submitted.elapsed() > DEADLINE {
                let job = self.pending.swap_remove(i);
                world.fail(format!(
                    "lost completion: job {} ({:?} on queue {}, {:?}) not final after {:?}",
                    job.id, job.top.kind, job.wq, job.space, DEADLINE
                ));
                continue;
            }
            i += 1;
        }
    }

    fn resolve(
        &mut self,
        world: &World,
        guest: &Guest,
        job: Job,
        disturbed: bool,
        processed: bool,
    ) {
        let key = job.space.key();
        let what = format!(
            "job {} ({:?} on queue {}, {:?}, disturbed {disturbed})",
            job.id, job.top.kind, job.wq, job.space
        );
        let top = self.check_op(world, guest, &job.top, &job, disturbed, processed, &what);
        if self.watched.remove(&job.id) {
            self.outcomes.insert(job.id, top.map_or(0, Status::code));
        }
        let batch_status = top.filter(|_| job.top.kind == Kind::Batch);
        // A list in the arena the mutator changed may have been read as NOPs.
        let list_stable = job.top.expect != Expect::BatchFromArena
            || key.is_some_and(|p| {
                let touches = &job.top.touches;
                touches.iter().all(|&(i, t)| guest.touches(p, i) == t)
            });
        for (i, sub) in job.subs.iter().enumerate() {
            let what = format!("{what}, batch descriptor {i}");
            let sub_status = self.check_op(world, guest, sub, &job, disturbed, false, &what);
            if !list_stable || sub.expect == Expect::Quiet {
                continue;
            }
            match (batch_status, sub_status) {
                (Some(Status::Success), s) if s != Some(Status::Success) => world.fail(format!(
                    "{what}: the batch succeeded but this descriptor has status {s:?}"
                )),
                (Some(Status::BatchFail), None)
                    if !disturbed && sub.record.is_some() && sub.desc.completion_aligned() =>
                {
                    world.fail(format!("{what}: the batch completed without this record"))
                }
                _ => {}
            }
        }
        if batch_status == Some(Status::BatchFail)
            && !disturbed
            && list_stable
            && job
                .subs
                .iter()
                .all(|s| s.expect == Expect::Data || s.expect == Expect::Status(Status::Success))
        {
            // Every descriptor could succeed: one of them must have reported a failure.
            let failed = job.subs.iter().any(|s| {
                s.record
                    .is_some_and(|r| read_record(guest, &r).status != Status::Success.code())
            });
            if !failed {
                world.fail(format!(
                    "{what}: BATCH_FAIL, yet every descriptor succeeded"
                ));
            }
        }
        for op in job.subs.into_iter().chain([job.top]) {
            self.release_op(guest, key, op);
        }
        if let (Some(slot), Some(p)) = (job.list, key) {
            self.lists.get_mut(&p).unwrap().push(slot);
        }
        for page in job.pages {
            self.locked.remove(&page);
        }
    }

    /// Checks one op's outcome; returns its record's status, if it has one.
    #[allow(clippy::too_many_arguments)]
    fn check_op(
        &mut self,
        world: &World,
        guest: &Guest,
        op: &Op,
        job: &Job,
        disturbed: bool,
        processed: bool,
        what: &str,
    ) -> Option<Status> {
        let record = op.record.map(|r| read_record(guest, &r));
        if let Expect::Swerr(code) = op.expect {
            if record.is_some_and(|r| r.as_bytes() != [0; 32]) {
                world.fail(format!(
                    "{what}: a record was written for a misaligned address"
                ));
            }
            let seen = job.swerr.contains(&code.code()) || job.overflowed;
            // Batch descriptors' errors are not attributed (`processed` is false for them).
            if processed && !disturbed && !seen {
                world.fail(format!("{what}: no software error {code:?} reported"));
            }
            return None;
        }
        let record = record.filter(|_| op.desc.control().completion_valid())?;
        if record.status == 0 {
            let top = std::ptr::eq(op, &job.top);
            let swerr = !job.swerr.is_empty() || job.overflowed;
            if op.expect == Expect::Quiet {
            } else if top && processed && !swerr {
                world.fail(format!(
                    "{what}: completed without a record and without a software error"
                ));
            } else if !disturbed && top {
                world.fail(format!(
                    "{what}: final without a completion record (SWERR {:x?})",
                    job.swerr
                ));
            } else if top && processed {
                self.stats.swerr_instead += 1;
            } else if top {
                self.stats.dropped += 1;
            } else {
                self.stats.batch_unwritten += 1;
            }
            return None;
        }
        *self
            .stats
            .statuses
            .entry(status_name(record.status))
            .or_default() += 1;
        let Some(status) = Status::from_code(record.status) else {
            world.fail(format!(
                "{what}: record status {:#x} is no status",
                record.status
            ));
            return None;
        };
        let mut ok = allowed(op.expect, disturbed);
        if job.pri_disturbed && matches!(op.expect, Expect::Data | Expect::BatchFromArena) {
            ok.push(Status::PriUnavailable);
        }
        if !ok.contains(&status) {
            world.fail(format!(
                "{what}: status {status:?} where {:?} was expected (record {record:?})",
                op.expect
            ));
            return Some(status);
        }
        self.check_record(world, guest, op, job, status, &record, what);
        Some(status)
    }

    #[allow(clippy::too_many_arguments)]
    fn check_record(
        &mut self,
        world: &World,
        guest: &Guest,
        op: &Op,
        job: &Job,
        status: Status,
        r: &CompletionRecord,
        what: &str,
    ) {
        let len = u64::from(op.desc.len);
        let in_ranges = |addr: u64| op.ranges.iter().any(|&(a, l)| (a..a + l).contains(&addr));
        match status {
            Status::PageFault | Status::TranslationError | Status::PriUnavailable
                if matches!(op.expect, Expect::Data | Expect::BatchFromArena) =>
            {
                if !in_ranges(r.fault_addr) {
                    world.fail(format!(
                        "{what}: {status:?} at {:#x}, outside the job's ranges {:x?}",
                        r.fault_addr, op.ranges
                    ));
                }
                if u64::from(r.bytes_completed) >= len {
                    world.fail(format!("{what}: {status:?} after all {len} bytes"));
                }
            }
            Status::Success if op.expect == Expect::Data => {
                self.check_data(world, guest, op, job, r, what)
            }
            _ => {}
        }
    }

    fn check_data(
        &mut self,
        world: &World,
        guest: &Guest,
        op: &Op,
        job: &Job,
        r: &CompletionRecord,
        what: &str,
    ) {
        let len = op.desc.len;
        let key = job.space.key();
        let unchanged = match key {
            None => true,
            Some(p) => op.touches.iter().all(|&(i, t)| guest.touches(p, i) == t),
        };
        match &op.check {
            Check::Compared { differs_at } => {
                let expected = match differs_at {
                    Some(at) => (1, *at),
                    None => (0, len),
                };
                if unchanged && (r.result, r.bytes_completed) != expected {
                    world.fail(format!(
                        "{what}: COMPARE gave (result, bytes) ({}, {}), expected {expected:?}",
                        r.result, r.bytes_completed
                    ));
                }
            }
            Check::Bytes { dst, data } => {
                if r.bytes_completed != len {
                    world.fail(format!(
                        "{what}: SUCCESS after {} of {len} bytes",
                        r.bytes_completed
                    ));
                }
                if !unchanged {
                    return;
                }
                let Some(got) = Self::read(guest, key, *dst, data.len()) else {
                    return world.fail(format!(
                        "{what}: SUCCESS, yet the guest never mapped the destination"
                    ));
                };
                self.stats.verified += 1;
                if got != *data {
                    let at = got.iter().zip(data).position(|(a, b)| a != b);
                    world.fail(format!(
                        "{what}: wrong data at {dst:#x} (first difference at byte {at:?} of {len})"
                    ));
                }
            }
            Check::None => {}
        }
    }

    /// Every record slot of every pool, all free now, must be zero: no late or stray writes.
    pub fn check_pools(&self, world: &World) {
        let guest = world.guest();
        for (key, pool) in &self.records {
            for &index in pool {
                let offset = index as u64 * COMPLETION_SIZE;
                let gpa = match key {
                    Some(p) => guest.record_gpa(*p, RECORDS_VA + offset),
                    None => UNTAGGED_RECORDS + offset,
                };
                let r = read_record(
                    &guest,
                    &Record {
                        index,
                        addr: 0,
                        gpa,
                    },
                );
                if r.as_bytes() != [0; 32] {
                    world.fail(format!(
                        "record slot {index} of {key:?} written while free: {r:?}"
                    ));
                }
            }
        }
    }
}
