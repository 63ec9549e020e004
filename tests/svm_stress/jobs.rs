//! The submitting side of the stress test: random descriptors (good and bad) for random
//! address spaces, written with their data, records and batch lists into the guest, and what
//! each one may complete with (checked in `resolve`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use zerocopy::IntoBytes;

use vsvm::devices::accel::completion::{Status, COMPLETION_SIZE};
use vsvm::devices::accel::descriptor::{Descriptor, DESCRIPTOR_SIZE};
use vsvm::devices::accel::regs::{wq_offset, MAX_BATCH, MAX_XFER};
use vsvm::mem::Gpa;

use crate::accel_driver::{pattern, AccelDriver};
use crate::common_vtd::PAGE;
use crate::guest::{arena_page, Guest, ARENA_PAGES, ARENA_VA, LISTS_VA, LIST_PAGES, RECORDS_VA};
use crate::guest::{RECORD_PAGES, SUPERVISOR_PASID};
use crate::rng::Rng;
use crate::world::UNTAGGED_SCRATCH_PAGES;
use crate::world::{Dev, World, UNTAGGED_RECORDS, UNTAGGED_RECORD_PAGES, UNTAGGED_SCRATCH};

/// Descriptors outstanding per queue at most (the ring holds 63).
pub const MAX_INFLIGHT: u64 = 12;
/// A job not final after this is lost (a hang or a lost completion).
pub const DEADLINE: Duration = Duration::from_secs(10);
/// Descriptors per batch list slot.
const LIST_LEN: u64 = 8;
const LIST_SLOTS: u64 = LIST_PAGES * PAGE / (LIST_LEN * DESCRIPTOR_SIZE);
/// An in-range PASID that is never bound nor enabled.
const NEVER_BOUND: u32 = 0x777;
/// The first PASID value above 20 bits.
const BEYOND_PASIDS: u32 = vsvm::iommu::Pasid::MAX + 1;

/// Where a job's addresses live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobSpace {
    Tagged(u32),
    Untagged,
    /// A PASID the device must refuse before touching memory.
    Bogus(u32),
}

impl JobSpace {
    /// The key of its record pool and page locks.
    pub fn key(self) -> Option<u32> {
        match self {
            JobSpace::Tagged(p) => Some(p),
            _ => None,
        }
    }
}

/// What a descriptor's record (or its absence) may say when nothing disturbed it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// A record with exactly this status.
    Status(Status),
    /// MEMMOVE, FILL, COMPARE: SUCCESS, or PAGE_FAULT inside its ranges.
    Data,
    /// BATCH: SUCCESS or BATCH_FAIL.
    Batch,
    /// BATCH with its list in the arena: also PAGE_FAULT in the list.
    BatchFromArena,
    /// No record, a software error with this code.
    Swerr(Status),
    /// No record asked for, nothing to expect.
    Quiet,
}

/// What the data must look like after a SUCCESS.
#[derive(Clone, Debug)]
pub enum Check {
    None,
    /// `dst` holds `data` (MEMMOVE, FILL).
    Bytes {
        dst: u64,
        data: Vec<u8>,
    },
    /// COMPARE: the result, and the first different byte.
    Compared {
        differs_at: Option<u32>,
    },
}

/// One completion record slot.
#[derive(Clone, Copy, Debug)]
pub struct Record {
    pub index: usize,
    /// Address in the job's space.
    pub addr: u64,
    pub gpa: u64,
}

/// One descriptor (a job's own, or one of its batch).
#[derive(Clone, Debug)]
pub struct Op {
    pub desc: Descriptor,
    pub record: Option<Record>,
    pub expect: Expect,
    pub check: Check,
    /// Ranges (address, length) the op may touch (fault addresses must be in them).
    pub ranges: Vec<(u64, u64)>,
    /// The mutator's touches of its arena pages at submission: with none since, the data
    /// must be right.
    pub touches: Vec<(usize, u64)>,
    pub kind: Kind,
}

/// A submitted descriptor and what the test knew then.
#[derive(Debug)]
pub struct Job {
    pub id: u64,
    pub wq: usize,
    pub epoch: u64,
    pub ordinal: u64,
    pub ring_slot: u32,
    pub space: JobSpace,
    pub top: Op,
    pub subs: Vec<Op>,
    pub list: Option<usize>,
    /// Pages locked for the job: (pool key, arena page or scratch page).
    pub pages: Vec<(Option<u32>, usize)>,
    /// The space was usable at submission.
    pub healthy: bool,
    /// Its PASID's disturbance count at submission.
    pub disturb: u64,
    /// PRI was enabled at submission, and `Dev::pri_events` then.
    pub pri: (bool, u64),
    /// PRI was off at some point of its life (set when final).
    pub pri_disturbed: bool,
    pub submitted: Instant,
    /// SWERR codes seen for its ring slot.
    pub swerr: Vec<u8>,
    /// Its own software error may be lost: SWERR showed OVERFLOW while it was pending.
    pub overflowed: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Memmove,
    Fill,
    Compare,
    Nop,
    Batch,
    /// A MEMMOVE or FILL with PRIV.
    Privileged,
    NoRecord,
    BadOpcode,
    BadFlags,
    ZeroLen,
    Oversize,
    Wrap,
    BadBatch,
    MisalignedRecord,
    QuietBadOpcode,
    NestedBatch,
    BogusPasid,
    NeverBoundPasid,
    UntaggedFill,
    UntaggedNop,
    PrivWithoutPasid,
}

const TAGGED_KINDS: [(Kind, u64); 16] = [
    (Kind::Memmove, 30),
    (Kind::Fill, 14),
    (Kind::Compare, 10),
    (Kind::Nop, 4),
    (Kind::Batch, 10),
    (Kind::Privileged, 4),
    (Kind::NoRecord, 3),
    (Kind::BadOpcode, 2),
    (Kind::BadFlags, 2),
    (Kind::ZeroLen, 1),
    (Kind::Oversize, 2),
    (Kind::Wrap, 1),
    (Kind::BadBatch, 2),
    (Kind::MisalignedRecord, 2),
    (Kind::QuietBadOpcode, 1),
    (Kind::NestedBatch, 0),
];

/// How jobs ended.
#[derive(Clone, Debug, Default)]
pub struct JobStats {
    pub submitted: BTreeMap<Kind, u64>,
    pub statuses: BTreeMap<String, u64>,
    /// Completed without a record, a SWERR instead (PASID disabled, record unwritable).
    pub swerr_instead: u64,
    /// Dropped without a record by a queue disable or a reset.
    pub dropped: u64,
    /// Records of batch descriptors a disturbed batch never wrote.
    pub batch_unwritten: u64,
    /// Data compared after SUCCESS.
    pub verified: u64,
    pub swerrs: BTreeMap<String, u64>,
}

/// The submitter's state.
pub struct Jobs {
    pub rng: Rng,
    pub next_id: u64,
    pub pending: Vec<Job>,
    pub locked: HashSet<(Option<u32>, usize)>,
    pub records: HashMap<Option<u32>, Vec<usize>>,
    pub lists: HashMap<u32, Vec<usize>>,
    pub stats: JobStats,
    /// Record statuses of the jobs [`Jobs::watch`]ed, once final (0: no record).
    pub outcomes: HashMap<u64, u8>,
    pub watched: HashSet<u64>,
}

pub fn status_name(code: u8) -> String {
    match Status::from_code(code) {
        Some(s) => format!("{s:?}"),
        None => format!("{code:#x}"),
    }
}

/// Tagged data lengths: mostly small, sometimes several pages.
fn data_len(rng: &mut Rng, max_pages: u64) -> u64 {
    match rng.weighted(&[20, 30, 40, 10]) {
        0 => rng.between(1, 64),
        1 => rng.between(1, PAGE),
        2 => rng.between(1, 4 * PAGE).min(max_pages * PAGE),
        _ => rng.between(1, max_pages * PAGE),
    }
}

impl Jobs {
    pub fn new(seed: u64, pasids: &[u32]) -> Self {
        let mut records = HashMap::new();
        records.insert(
            None,
            (0..(UNTAGGED_RECORD_PAGES * PAGE / COMPLETION_SIZE) as usize).collect(),
        );
        let mut lists = HashMap::new();
        for &p in pasids {
            records.insert(
                Some(p),
                (0..(RECORD_PAGES * PAGE / COMPLETION_SIZE) as usize).collect(),
            );
            lists.insert(p, (0..LIST_SLOTS as usize).collect());
        }
        Jobs {
            rng: Rng::new(seed, 1),
            next_id: 1,
            pending: Vec::new(),
            locked: HashSet::new(),
            records,
            lists,
            stats: JobStats::default(),
            outcomes: HashMap::new(),
            watched: HashSet::new(),
        }
    }

    fn record(&mut self, guest: &Guest, key: Option<u32>) -> Option<Record> {
        let pool = self.records.get_mut(&key)?;
        if pool.is_empty() {
            return None;
        }
        let at = self.rng.below(pool.len() as u64) as usize;
        let index = pool.swap_remove(at);
        let offset = index as u64 * COMPLETION_SIZE;
        let (addr, gpa) = match key {
            Some(p) => (
                RECORDS_VA + offset,
                guest.record_gpa(p, RECORDS_VA + offset),
            ),
            None => (UNTAGGED_RECORDS + offset, UNTAGGED_RECORDS + offset),
        };
        guest.ram.mem.write(Gpa(gpa), &[0; 32]).unwrap();
        Some(Record { index, addr, gpa })
    }

    pub fn free_record(&mut self, guest: &Guest, key: Option<u32>, r: Record) {
        guest.ram.mem.write(Gpa(r.gpa), &[0; 32]).unwrap();
        self.records.get_mut(&key).unwrap().push(r.index);
    }

    /// A range of `len` bytes whose pages are not locked; locks them into `pages`.
    fn range(
        &mut self,
        key: Option<u32>,
        len: u64,
        pages: &mut Vec<(Option<u32>, usize)>,
    ) -> Option<u64> {
        let (base, count) = match key {
            Some(_) => (ARENA_VA, ARENA_PAGES as u64),
            None => (UNTAGGED_SCRATCH, UNTAGGED_SCRATCH_PAGES),
        };
        let span = count * PAGE;
        for _ in 0..8 {
            let start = base + self.rng.below(span - len + 1);
            let first = (start - base) / PAGE;
            let last = (start + len - 1 - base) / PAGE;
            let wanted: Vec<_> = (first..=last).map(|i| (key, i as usize)).collect();
            if wanted
                .iter()
                .all(|k| !self.locked.contains(k) && !pages.contains(k))
            {
                pages.extend(wanted);
                return Some(start);
            }
        }
        None
    }

    /// The mutator's touches of the arena pages under `ranges` of `p`.
    fn touches(guest: &Guest, p: u32, ranges: &[(u64, u64)]) -> Vec<(usize, u64)> {
        let mut out = Vec::new();
        for &(va, len) in ranges {
            for i in arena_page(va).unwrap()..=arena_page(va + len - 1).unwrap() {
                out.push((i, guest.touches(p, i)));
            }
        }
        out
    }

    /// Writes `data` at `va` of the space (arena or untagged scratch); returns what the
    /// device will find there.
    fn write(guest: &mut Guest, key: Option<u32>, va: u64, data: &[u8]) -> Vec<u8> {
        match key {
            Some(p) => guest.write_arena(p, va, data),
            None => {
                guest.ram.mem.write(Gpa(va), data).unwrap();
                data.to_vec()
            }
        }
    }

    pub fn read(guest: &Guest, key: Option<u32>, va: u64, len: usize) -> Option<Vec<u8>> {
        match key {
            Some(p) => guest.read_arena(p, va, len),
            None => {
                let mut out = vec![0; len];
                guest.ram.mem.read(Gpa(va), &mut out).unwrap();
                Some(out)
            }
        }
    }

    fn op(desc: Descriptor, record: Option<Record>, expect: Expect, kind: Kind) -> Op {
        let desc = match record {
            Some(r) => desc.with_completion(r.addr),
            None => desc,
        };
        Op {
            desc,
            record,
            expect,
            check: Check::None,
            ranges: Vec::new(),
            touches: Vec::new(),
            kind,
        }
    }

    /// A data operation of `kind` in the space of `key`, its record from that space's pool.
    fn data_op(
        &mut self,
        guest: &mut Guest,
        key: Option<u32>,
        kind: Kind,
        pages: &mut Vec<(Option<u32>, usize)>,
        id: u64,
    ) -> Option<Op> {
        let record = None;
        let max_pages = if key.is_some() { 8 } else { 4 };
        let len = data_len(&mut self.rng, max_pages);
        let seed = id as u8;
        let mut op = match kind {
            Kind::Memmove => {
                let overlap = self.rng.chance(15);
                let (src, dst) = if overlap {
                    let whole = self.range(key, len + len / 2 + 1, pages)?;
                    let shift = self.rng.between(1, len / 2 + 1);
                    if self.rng.chance(50) {
                        (whole, whole + shift)
                    } else {
                        (whole + shift, whole)
                    }
                } else {
                    (self.range(key, len, pages)?, self.range(key, len, pages)?)
                };
                let data = pattern(len as usize, seed);
                if !overlap {
                    let inverse: Vec<u8> = data.iter().map(|b| !b).collect();
                    Self::write(guest, key, dst, &inverse);
                }
                let data = Self::write(guest, key, src, &data);
                let mut op = Self::op(
                    Descriptor::memmove(src, dst, len as u32),
                    record,
                    Expect::Data,
                    kind,
                );
                op.ranges = vec![(src, len), (dst, len)];
                op.check = Check::Bytes { dst, data };
                op
            }
            Kind::Fill | Kind::NoRecord => {
                let dst = self.range(key, len, pages)?;
                let fill = self.rng.next_u64();
                let bytes = fill.to_le_bytes();
                let data: Vec<u8> = (0..len as usize).map(|i| bytes[i % 8]).collect();
                let inverse: Vec<u8> = data.iter().map(|b| !b).collect();
                Self::write(guest, key, dst, &inverse);
                let expect = if kind == Kind::NoRecord {
                    Expect::Quiet
                } else {
                    Expect::Data
                };
                let mut op = Self::op(
                    Descriptor::fill(dst, len as u32, fill),
                    record,
                    expect,
                    kind,
                );
                op.ranges = vec![(dst, len)];
                op.check = Check::Bytes { dst, data };
                op
            }
            Kind::Compare => {
                let (a, b) = (self.range(key, len, pages)?, self.range(key, len, pages)?);
                let data = pattern(len as usize, seed);
                let mut other = data.clone();
                if self.rng.chance(50) {
                    other[self.rng.below(len) as usize] ^= 0x10;
                }
                let a_holds = Self::write(guest, key, a, &data);
                let b_holds = Self::write(guest, key, b, &other);
                let differs_at = a_holds
                    .iter()
                    .zip(&b_holds)
                    .position(|(x, y)| x != y)
                    .map(|at| at as u32);
                let mut op = Self::op(
                    Descriptor::compare(a, b, len as u32),
                    record,
                    Expect::Data,
                    kind,
                );
                op.ranges = vec![(a, len), (b, len)];
                op.check = Check::Compared { differs_at };
                op
            }
            _ => unreachable!("not a data op: {kind:?}"),
        };
        if let Some(p) = key {
            op.touches = Self::touches(guest, p, &op.ranges);
        }
        // The record last: nothing can fail after it is taken.
        if kind != Kind::NoRecord {
            let r = self.record(guest, key)?;
            op.desc = op.desc.with_completion(r.addr);
            op.record = Some(r);
        }
        Some(op)
    }

    /// A descriptor the device must refuse (or a NOP), with a record of `key`'s pool.
    fn bad_op(&mut self, guest: &mut Guest, key: Option<u32>, kind: Kind) -> Option<Op> {
        let record = self.record(guest, key)?;
        let rng = &mut self.rng;
        let (desc, status) = match kind {
            Kind::Nop => (Descriptor::nop(), Status::Success),
            Kind::BadOpcode | Kind::QuietBadOpcode => {
                let mut d = Descriptor::fill(ARENA_VA, 64, 0);
                let control = d.control().with_opcode(rng.between(5, 255) as u8);
                d.control = control.into_bits();
                (d, Status::BadOpcode)
            }
            Kind::BadFlags => {
                let mut d = Descriptor::fill(ARENA_VA, 64, 0);
                match rng.below(3) {
                    0 => d.control = d.control().with_reserved(1 << rng.below(20)).into_bits(),
                    1 => d.reserved0 = 1,
                    _ => d.reserved1[1] = 1 << 63,
                }
                (d, Status::BadFlags)
            }
            Kind::ZeroLen => (
                Descriptor::memmove(ARENA_VA, ARENA_VA + PAGE, 0),
                Status::BadSize,
            ),
            Kind::Oversize => {
                let len = rng.between(u64::from(MAX_XFER) + 1, u64::from(u32::MAX)) as u32;
                (Descriptor::fill(ARENA_VA, len, 0), Status::BadSize)
            }
            Kind::Wrap => (
                Descriptor::memmove(u64::MAX - rng.below(4096), ARENA_VA, 8192),
                Status::BadSize,
            ),
            Kind::BadBatch => {
                let d = match rng.below(3) {
                    0 => Descriptor::batch(LISTS_VA, 0),
                    1 => Descriptor::batch(
                        LISTS_VA,
                        rng.between(u64::from(MAX_BATCH) + 1, 5000) as u32,
                    ),
                    _ => Descriptor::batch(LISTS_VA + 8 * rng.between(1, 7), 2),
                };
                (d, Status::BadBatch)
            }
            Kind::PrivWithoutPasid => (Descriptor::nop().privileged(), Status::BadPrivilege),
            _ => unreachable!("not a bad op: {kind:?}"),
        };
        let mut op = Self::op(desc, Some(record), Expect::Status(status), kind);
        if kind == Kind::QuietBadOpcode {
            // No record: the status goes to SWERR.
            op.desc.control = op.desc.control().with_completion_valid(false).into_bits();
            op.expect = Expect::Swerr(Status::BadOpcode);
        }
        Some(op)
    }

    /// A BATCH of a few descriptors in `p`'s space, written into a free list slot.
    fn batch_op(
        &mut self,
        guest: &mut Guest,
        p: u32,
        pages: &mut Vec<(Option<u32>, usize)>,
        id: u64,
        pasids: &[u32],
    ) -> Option<(Op, Vec<Op>, Option<usize>)> {
        let lists = self.lists.get_mut(&p)?;
        if lists.is_empty() {
            return None;
        }
        let slot = lists.swap_remove(0);
        let mut subs = Vec::new();
        let count = self.rng.between(1, LIST_LEN);
        for i in 0..count {
            let kind = [
                Kind::Memmove,
                Kind::Fill,
                Kind::Compare,
                Kind::Nop,
                Kind::BadOpcode,
            ][self.rng.weighted(&[30, 25, 15, 10, 5])];
            let sub = match kind {
                Kind::Nop | Kind::BadOpcode => self.bad_op(guest, Some(p), kind),
                _ => self.data_op(guest, Some(p), kind, pages, id * 16 + i),
            };
            let Some(mut sub) = sub else { break };
            match self.rng.below(10) {
                // PV, PRIV and PASID of a batch's descriptor are ignored: it runs in the
                // batch's space, whatever it says.
                0 => sub.desc = sub.desc.with_pasid(self.rng.pick(pasids)),
                1 => sub.desc = sub.desc.with_pasid(NEVER_BOUND).privileged(),
                2 => {
                    sub.desc.control = sub.desc.control().with_opcode(4).into_bits();
                    sub.desc.len = 1;
                    sub.desc.src = LISTS_VA;
                    sub.expect = Expect::Status(Status::NestedBatch);
                    sub.kind = Kind::NestedBatch;
                    sub.check = Check::None;
                }
                3 if sub.record.is_some() => {
                    sub.desc.completion += 8;
                    sub.expect = Expect::Swerr(Status::BadCompletionAddr);
                    sub.kind = Kind::MisalignedRecord;
                }
                _ => {}
            }
            subs.push(sub);
        }
        if subs.is_empty() {
            self.lists.get_mut(&p).unwrap().push(slot);
            return None;
        }
        let bytes: Vec<u8> = subs
            .iter()
            .flat_map(|s| s.desc.as_bytes().to_vec())
            .collect();
        // Now and then the list lives in the arena, where reading it may fault.
        let in_arena = self.rng.chance(20);
        let list = if in_arena {
            self.lists.get_mut(&p).unwrap().push(slot);
            let at = self.range(Some(p), bytes.len() as u64 + DESCRIPTOR_SIZE, pages)?;
            let list = at.next_multiple_of(DESCRIPTOR_SIZE);
            let holds = Self::write(guest, Some(p), list, &bytes);
            for (sub, seen) in subs.iter_mut().zip(holds.chunks(DESCRIPTOR_SIZE as usize)) {
                if seen != sub.desc.as_bytes() {
                    // A zapped page: the device will read a NOP without record.
                    sub.expect = Expect::Quiet;
                    sub.check = Check::None;
                }
            }
            list
        } else {
            let list = LISTS_VA + slot as u64 * LIST_LEN * DESCRIPTOR_SIZE;
            guest
                .ram
                .mem
                .write(Gpa(guest.list_gpa(p, list)), &bytes)
                .unwrap();
            list
        };
        let record = self.record(guest, Some(p));
        let Some(record) = record else {
            for sub in subs {
                self.release_op(guest, Some(p), sub);
            }
            if !in_arena {
                self.lists.get_mut(&p).unwrap().push(slot);
            }
            return None;
        };
        let desc = Descriptor::batch(list, subs.len() as u32);
        let mut op = Self::op(desc, Some(record), Expect::Batch, Kind::Batch);
        if in_arena {
            op.expect = Expect::BatchFromArena;
            op.ranges = vec![(list, bytes.len() as u64)];
            op.touches = Self::touches(guest, p, &op.ranges);
        }
        Some((op, subs, (!in_arena).then_some(slot)))
    }

    pub fn release_op(&mut self, guest: &Guest, key: Option<u32>, op: Op) {
        if let Some(r) = op.record {
            self.free_record(guest, key, r);
        }
    }

    /// Builds a job of `kind` for `space`: (top op, batch ops, list slot, locked pages).
    #[allow(clippy::type_complexity)]
    fn build(
        &mut self,
        guest: &mut Guest,
        space: JobSpace,
        kind: Kind,
        id: u64,
        pasids: &[u32],
    ) -> Option<(Op, Vec<Op>, Option<usize>, Vec<(Option<u32>, usize)>)> {
        let mut pages = Vec::new();
        let key = space.key();
        let built = match (space, kind) {
            (JobSpace::Bogus(_), _) => {
                let status = match kind {
                    Kind::BogusPasid => Status::BadPasid,
                    _ => Status::PasidDisabled,
                };
                let mut op = Self::op(Descriptor::nop(), None, Expect::Swerr(status), kind);
                op.desc = op.desc.with_completion(RECORDS_VA);
                Some((op, Vec::new(), None))
            }
            (JobSpace::Tagged(p), Kind::Privileged) => {
                let kind = self.rng.pick(&[Kind::Memmove, Kind::Fill]);
                let mut op = self.data_op(guest, key, kind, &mut pages, id)?;
                op.desc = op.desc.privileged();
                op.kind = Kind::Privileged;
                if p != SUPERVISOR_PASID {
                    // Refused for good (no SRE); the record write is privileged too.
                    op.expect = Expect::Swerr(Status::CompletionFault);
                    op.check = Check::None;
                }
                Some((op, Vec::new(), None))
            }
            (_, Kind::Memmove | Kind::Fill | Kind::Compare | Kind::NoRecord) => self
                .data_op(guest, key, kind, &mut pages, id)
                .map(|op| (op, Vec::new(), None)),
            (_, Kind::UntaggedFill) => self
                .data_op(guest, None, Kind::Fill, &mut pages, id)
                .map(|op| (op, Vec::new(), None)),
            (_, Kind::UntaggedNop) => self
                .bad_op(guest, None, Kind::Nop)
                .map(|op| (op, Vec::new(), None)),
            (JobSpace::Tagged(p), Kind::Batch) => self.batch_op(guest, p, &mut pages, id, pasids),
            (_, Kind::MisalignedRecord) => {
                let mut op = self.bad_op(guest, key, Kind::Nop)?;
                op.desc.completion += self.rng.pick(&[4, 8, 16, 24]);
                op.expect = Expect::Swerr(Status::BadCompletionAddr);
                op.kind = kind;
                Some((op, Vec::new(), None))
            }
            _ => self
                .bad_op(guest, key, kind)
                .map(|op| (op, Vec::new(), None)),
        };
        built.map(|(op, subs, list)| (op, subs, list, pages))
    }

    fn pick_job(&mut self, pasids: &[u32]) -> (JobSpace, Kind) {
        match self.rng.weighted(&[88, 4, 3, 3, 2]) {
            0 => {
                let weights: Vec<u64> = TAGGED_KINDS.iter().map(|k| k.1).collect();
                let kind = TAGGED_KINDS[self.rng.weighted(&weights)].0;
                (JobSpace::Tagged(self.rng.pick(pasids)), kind)
            }
            1 => {
                let kind = self.rng.pick(&[Kind::UntaggedFill, Kind::UntaggedNop]);
                (JobSpace::Untagged, kind)
            }
            2 => (JobSpace::Untagged, Kind::PrivWithoutPasid),
            3 => {
                let bogus = self.rng.pick(&[BEYOND_PASIDS, u32::MAX, 0x8000_0000]);
                (JobSpace::Bogus(bogus), Kind::BogusPasid)
            }
            _ => (JobSpace::Bogus(NEVER_BOUND), Kind::NeverBoundPasid),
        }
    }

    /// Queue `wq`'s descriptors in flight.
    fn inflight(dev: &mut Dev, wq: usize) -> u64 {
        let done = dev.drv.read32(AccelDriver::wq_reg(wq, wq_offset::DONE));
        dev.queues[wq].submitted.saturating_sub(u64::from(done))
    }

    /// Keeps the record status of job `id` in [`Jobs::outcomes`] when it is final.
    pub fn watch(&mut self, id: u64) {
        self.watched.insert(id);
    }

    /// Submits one random job (or `forced`) if its queue has room; returns its id.
    pub fn submit(
        &mut self,
        world: &World,
        dev: &mut Dev,
        forced: Option<(usize, JobSpace, Kind)>,
    ) -> Option<u64> {
        let (wq, space, kind) = match forced {
            Some(f) => f,
            None => {
                let (space, kind) = self.pick_job(&world.pasids);
                (self.rng.below(2) as usize, space, kind)
            }
        };
        if Self::inflight(dev, wq) >= MAX_INFLIGHT {
            return None;
        }
        let id = self.next_id;
        let mut guest = world.guest();
        let (top, subs, list, pages) = self.build(&mut guest, space, kind, id, &world.pasids)?;
        drop(guest);
        self.next_id += 1;
        let desc = match space {
            JobSpace::Tagged(p) | JobSpace::Bogus(p) => top.desc.with_pasid(p),
            JobSpace::Untagged => top.desc,
        };
        let desc = if self.rng.chance(20) {
            desc.with_interrupt()
        } else {
            desc
        };
        let ring_slot = dev.drv.tails[wq];
        dev.drv.submit(wq, &[desc]);
        let (healthy, disturb) = match space {
            JobSpace::Tagged(p) => (dev.healthy(p), dev.disturbance(p)),
            _ => (true, 0),
        };
        let q = &mut dev.queues[wq];
        let job = Job {
            id,
            wq,
            epoch: q.epoch,
            ordinal: q.submitted,
            ring_slot,
            space,
            top,
            subs,
            list,
            pages: pages.clone(),
            healthy,
            disturb,
            pri: (dev.pri, dev.pri_events),
            pri_disturbed: false,
            submitted: Instant::now(),
            swerr: Vec::new(),
            overflowed: false,
        };
        q.submitted += 1;
        world.heat(pages.iter().filter_map(|&(key, i)| Some((key?, i))));
        self.locked.extend(pages);
        *self.stats.submitted.entry(kind).or_default() += 1;
        self.pending.push(job);
        Some(id)
    }
}
