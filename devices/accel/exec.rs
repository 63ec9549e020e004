//! accel operations on translated memory: MEMMOVE, FILL, COMPARE, and the reads and writes of
//! batch lists and completion records, page by page under the ATS fence, with page faults
//! resolved as the work queue's fault mode says (block: PRI page request group and retry, PCIe
//! 6.0 §10.4; report: complete with PAGE_FAULT). Physically contiguous pages are coalesced into
//! one `MemView::copy`.

use std::sync::atomic::{fence, Ordering};

use log::{debug, trace};
use zerocopy::{FromBytes, IntoBytes};

use super::completion::{Completion, FaultInfo, Status};
use super::descriptor::{Descriptor, Operation, DESCRIPTOR_SIZE};
use super::device::Core;
use super::svm::{self, Miss, Space, Xlat};
use super::swerr::Origin;
use super::wq::{Slot, Views, WorkQueue};
use crate::iommu::{Access, PageResponseCode};
use crate::mem::{Gpa, MemError, MemView, PAGE_SIZE};
use crate::pri::PriError;

/// Page requests for one page before the fault is reported: a handler that keeps answering
/// Success without mapping the page must not keep the queue forever.
pub const MAX_PAGE_REQUESTS: u32 = 8;
/// Pages one page request group asks for at most: the page that missed and the not-present
/// pages found ahead of it in the descriptor's ranges (fewer when fewer PRI credits are free).
pub const MAX_GROUP_PAGES: usize = 32;
/// Bytes FILL writes and COMPARE reads per access.
const CHUNK: usize = 4096;
/// Pattern bytes repeat every 8.
const PATTERN_LEN: usize = 8;

/// The device was reset: the job stops and publishes nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Reset;

/// Why a job stopped early.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Halt {
    /// Reset: nothing more may be written.
    Reset,
    /// Complete with this status.
    Status(Status),
    /// Complete with a fault status at `addr`.
    Fault {
        /// PAGE_FAULT, PRI_UNAVAILABLE, TRANSLATION_ERROR or DMA_ERROR.
        status: Status,
        /// Faulting input address.
        addr: u64,
        /// The access was a write.
        write: bool,
    },
}

impl Halt {
    /// The completion of a job halted after `done` bytes (or descriptors).
    pub fn complete(self, done: u64, backward: bool) -> Result<Completion, Reset> {
        let mut c = Completion::with_status(Status::Aborted);
        c.bytes_completed = u32::try_from(done).unwrap_or(u32::MAX);
        c.fault_info = FaultInfo::new().with_backward(backward);
        match self {
            Halt::Reset => return Err(Reset),
            Halt::Status(status) => c.status = status,
            Halt::Fault {
                status,
                addr,
                write,
            } => {
                c.status = status;
                c.fault_addr = addr;
                c.fault_info.set_write(write);
            }
        }
        Ok(c)
    }
}

/// How the next miss of a job is resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Retry {
    /// With the pages ahead of it.
    Ahead,
    /// Its page alone.
    Alone,
}

/// What work under the fence can run into.
enum Fail {
    Miss(Miss),
    Halt(Halt),
}

/// Which checks apply: data accesses stop when the PASID or the queue is disabled; a
/// completion record is still written then (the drain is not over before it is).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Purpose {
    Data,
    Record,
}

/// A run of pages contiguous in both source and destination.
#[derive(Clone, Copy, Debug)]
struct Run {
    src: u64,
    dst: u64,
    len: u64,
}

/// What a copy carries from one run to the next within one fence hold.
#[derive(Debug, Default)]
struct Lookahead {
    /// The translations of the page pair that ended the last run, for the byte at `.0`.
    next: Option<(u64, Xlat, Xlat)>,
    /// Ask the ATC for contiguous runs (source, destination): on until a run lookup found the
    /// next page elsewhere, on again once pages turn out contiguous. Probing the next page of
    /// scattered memory costs a cache miss per page for nothing.
    runs: (bool, bool),
}

impl Lookahead {
    fn new() -> Self {
        Lookahead {
            next: None,
            runs: (true, true),
        }
    }
}

/// A range of a descriptor's addresses the job goes on to access, front to back: where a miss
/// looks ahead for more pages to ask for in the same page request group.
#[derive(Clone, Copy, Debug)]
struct Reach {
    start: u64,
    len: u64,
    write: bool,
}

impl Reach {
    fn new(start: u64, len: u64, write: bool) -> Self {
        Reach { start, len, write }
    }

    /// Offset of `addr` in the range, if it falls there.
    fn offset(&self, addr: u64) -> Option<u64> {
        addr.checked_sub(self.start).filter(|&o| o < self.len)
    }
}

/// One descriptor's execution context.
pub(crate) struct Job<'a> {
    core: &'a Core,
    wq: &'a WorkQueue,
    slot: Slot,
    space: Space,
    views: &'a Views,
}

fn dma_fault(e: &MemError, addr: u64, write: bool) -> Fail {
    debug!("accel DMA at 0x{addr:x}: {e}");
    Fail::Halt(Halt::Fault {
        status: Status::DmaError,
        addr,
        write,
    })
}

fn success(done: u64) -> Completion {
    Completion {
        bytes_completed: u32::try_from(done).unwrap_or(u32::MAX),
        ..Completion::with_status(Status::Success)
    }
}

impl<'a> Job<'a> {
    /// A job for the descriptor in `slot`, addressing `space`.
    pub fn new(
        core: &'a Core,
        wq: &'a WorkQueue,
        slot: Slot,
        space: Space,
        views: &'a Views,
    ) -> Self {
        Job {
            core,
            wq,
            slot,
            space,
            views,
        }
    }

    /// The device state.
    pub fn core(&self) -> &Core {
        self.core
    }

    /// Records a software error of this job (dropped if a reset stopped it meanwhile).
    pub fn record_error(&self, code: Status, origin: Origin, addr: u64) {
        self.core
            .record_error(self.slot.generation, code, origin, addr);
    }

    /// The MSI-X vector of completion interrupts.
    pub fn vector(&self) -> u32 {
        self.slot.ctrl.vector().into()
    }

    /// Whether data accesses may go on.
    pub fn check_data(&self) -> Result<(), Halt> {
        self.check(Purpose::Data)
    }

    fn check(&self, purpose: Purpose) -> Result<(), Halt> {
        if self.core.generation() != self.slot.generation {
            return Err(Halt::Reset);
        }
        if !self.core.bus.bus_master() {
            return Err(Halt::Status(Status::DmaError));
        }
        if purpose == Purpose::Data {
            let pasid_off = self
                .space
                .pasid()
                .is_some_and(|p| !self.core.pasids.is_enabled(p));
            if pasid_off || self.wq.epoch() != self.slot.epoch {
                return Err(Halt::Status(Status::Aborted));
            }
        }
        Ok(())
    }

    fn translate(&self, addr: u64, write: bool) -> Result<Xlat, Fail> {
        self.translate_run(addr, write, 0)
    }

    /// Translates `addr` and how far on (about `max` bytes) it stays contiguous.
    fn translate_run(&self, addr: u64, write: bool, max: u64) -> Result<Xlat, Fail> {
        svm::translate_run(
            self.core.svm.as_ref(),
            self.space,
            addr,
            self.space.access(write),
            max,
        )
        .map_err(Fail::Miss)
    }

    /// Runs `f` with the ATS fence held (invalidations wait for it) and a fresh memory view;
    /// a translation miss drops the fence, is resolved, and `f` runs again.
    fn under_fence<T>(
        &self,
        purpose: Purpose,
        f: impl FnMut(&MemView) -> Result<T, Fail>,
    ) -> Result<T, Halt> {
        self.under_fence_ahead(purpose, &[], f)
    }

    /// [`Job::under_fence`], where a miss also asks for the not-present pages that follow it
    /// in `reach` (one page request group).
    fn under_fence_ahead<T>(
        &self,
        purpose: Purpose,
        reach: &[Reach],
        mut f: impl FnMut(&MemView) -> Result<T, Fail>,
    ) -> Result<T, Halt> {
        // Page requests for the page (and access) that missed last: the limit is per page, as
        // a job that runs over many missing pages (a MEMMOVE into a never-touched buffer, under
        // one fence hold) sends one request for each.
        let mut requests = 0;
        let mut last_miss = None;
        // A group answered Invalid Request may have failed on a page after the one that
        // missed: that one is asked for alone next, so the fault names the page that failed.
        let mut alone = false;
        loop {
            self.check(purpose)?;
            let guard = self.core.svm.as_ref().map(|s| s.ats().fence());
            let result = f(self.views.borrow_mut().current());
            drop(guard);
            match result {
                Ok(value) => return Ok(value),
                Err(Fail::Halt(halt)) => return Err(halt),
                Err(Fail::Miss(miss)) => {
                    let key = (miss.addr / PAGE_SIZE, miss.access.write);
                    requests = if last_miss == Some(key) {
                        requests + 1
                    } else {
                        1
                    };
                    last_miss = Some(key);
                    let ahead = if alone { &[][..] } else { reach };
                    alone = self.resolve(miss, purpose, requests, ahead)? == Retry::Alone;
                }
            }
        }
    }

    /// The not-present pages after `miss` in `reach`, nearest first (each range's pages at the
    /// same offset from the miss are neighbours), to ask for with it: at most
    /// [`MAX_GROUP_PAGES`] in all, from a window of as many pages per range. Translated (ATS
    /// translation requests) under the fence, only to see which are missing.
    fn look_ahead(&self, miss: &Miss, reach: &[Reach]) -> Vec<(u64, Access)> {
        let mut pages: Vec<(u64, Access)> = Vec::new();
        let offset = reach
            .iter()
            .filter(|r| r.write == miss.access.write)
            .find_map(|r| r.offset(miss.addr));
        let (Some(offset), Some(svm)) = (offset, self.core.svm.as_ref()) else {
            return pages;
        };
        let first = miss.addr & !(PAGE_SIZE - 1);
        let mut open: Vec<bool> = vec![true; reach.len()];
        let _fence = svm.ats().fence();
        for step in 0..MAX_GROUP_PAGES as u64 {
            for (r, open) in reach.iter().zip(open.iter_mut()) {
                // The window starts at the miss's offset in this range (its page; never below
                // the range's first page) and ends with the range.
                let at = (r.start + offset.min(r.len)) & !(PAGE_SIZE - 1);
                let page = at.saturating_add(step * PAGE_SIZE);
                if !*open || page >= r.start.saturating_add(r.len) {
                    continue;
                }
                let access = self.space.access(r.write);
                match svm::translate(Some(svm), self.space, page.max(r.start), access) {
                    Ok(_) => continue,
                    // Refused for good: the job faults there when it gets there.
                    Err(m) if m.unrecoverable => {
                        *open = false;
                        continue;
                    }
                    Err(_) => {}
                }
                if page == first && access.write == miss.access.write {
                    continue;
                }
                match pages.iter().position(|p| p.0 == page) {
                    Some(i) => {
                        pages[i].1.read |= access.read;
                        pages[i].1.write |= access.write;
                    }
                    None if pages.len() + 1 < MAX_GROUP_PAGES => pages.push((page, access)),
                    None => return pages,
                }
            }
        }
        pages
    }

    /// Resolves a miss with a page request group of the missing page and the not-present
    /// pages ahead of it in `reach`: Ok means "translate again".
    fn resolve(
        &self,
        miss: Miss,
        purpose: Purpose,
        requests: u32,
        reach: &[Reach],
    ) -> Result<Retry, Halt> {
        let fault = |status| Halt::Fault {
            status,
            addr: miss.addr,
            write: miss.access.write,
        };
        if miss.unrecoverable {
            return Err(fault(Status::TranslationError));
        }
        let Some(svm) = self.core.svm.as_ref() else {
            return Err(fault(Status::PageFault));
        };
        if !self.slot.ctrl.block_on_fault() || requests > MAX_PAGE_REQUESTS {
            return Err(fault(Status::PageFault));
        }
        let more = self.look_ahead(&miss, reach);
        let token = {
            let _order = svm.request_order();
            // After a PASID's drain began, no page request for it (its stop marker is sent
            // or about to be).
            if let Some(pasid) = self.space.pasid() {
                if !self.core.pasids.is_enabled(pasid) {
                    return Err(Halt::Status(Status::Aborted));
                }
            }
            let first = (miss.addr, miss.access);
            svm.pri().request_group(self.space.pasid(), first, &more)
        };
        let pages = token.as_ref().map_or(0, |t| t.pages());
        let response = token.and_then(|t| svm.pri().wait(t, None));
        trace!("accel: page response {response:?} ({pages} pages): the engine goes on");
        match response {
            Ok(PageResponseCode::Success) => Ok(Retry::Ahead),
            Ok(PageResponseCode::InvalidRequest) if pages > 1 => Ok(Retry::Alone),
            Ok(PageResponseCode::InvalidRequest) | Err(PriError::TimedOut) => {
                Err(fault(Status::PageFault))
            }
            Ok(PageResponseCode::ResponseFailure)
            | Err(PriError::Disabled)
            | Err(PriError::Stopped) => Err(fault(Status::PriUnavailable)),
            Err(PriError::Aborted) => {
                // A drain or reset aborted the wait: say which; otherwise PRI went away.
                self.check(purpose)?;
                Err(fault(Status::PriUnavailable))
            }
        }
    }

    /// Runs a data operation (not BATCH).
    pub fn execute(&self, op: Operation) -> Result<Completion, Reset> {
        match op {
            Operation::Nop | Operation::Batch { .. } => match self.check(Purpose::Data) {
                Ok(()) => Ok(success(0)),
                Err(halt) => halt.complete(0, false),
            },
            Operation::Memmove { src, dst, len } => self.memmove(src, dst, len.into()),
            Operation::Fill { dst, len, pattern } => self.fill(dst, len.into(), pattern),
            Operation::Compare { src, dst, len } => self.compare(src, dst, len.into()),
        }
    }

    fn memmove(&self, src: u64, dst: u64, len: u64) -> Result<Completion, Reset> {
        // Overlapping with the destination above: copy from the end, as memmove does.
        let backward = dst > src && dst - src < len;
        let mut done = 0;
        // One fence hold covers run after run until the job ends or misses: the pair of pages
        // that ended one run starts the next without being translated again (a translation is
        // only valid under the fence it was obtained under).
        // Looking ahead only forward: a backward copy goes page by page.
        let reach = [Reach::new(src, len, false), Reach::new(dst, len, true)];
        let reach = if backward { &[][..] } else { &reach[..] };
        let moved = self.under_fence_ahead(Purpose::Data, reach, |view| {
            let mut ahead = Lookahead::new();
            while done < len {
                self.check(Purpose::Data).map_err(Fail::Halt)?;
                let run = self.run(src, dst, len, done, backward, &mut ahead)?;
                view.copy(Gpa(run.src), Gpa(run.dst), run.len as usize)
                    .map_err(|e| {
                        let write = matches!(e, MemError::Denied(_, "write"));
                        dma_fault(&e, if write { dst } else { src }, write)
                    })?;
                done += run.len;
            }
            Ok(())
        });
        if let Err(halt) = moved {
            return halt.complete(done, backward);
        }
        let mut c = success(done);
        c.fault_info.set_backward(backward);
        Ok(c)
    }

    /// The source and destination translations of byte `offset` of a copy: the lookahead's
    /// when it holds them (translated for the same byte under the same fence), else fresh
    /// ones, each with how far it stays contiguous up to `len` bytes when runs are asked for
    /// (never for a backward copy, which goes page by page).
    fn pair(
        &self,
        (src, dst): (u64, u64),
        offset: u64,
        len: u64,
        la: &mut Lookahead,
    ) -> Result<(Xlat, Xlat), Fail> {
        if let Some((_, s, d)) = la.next.take().filter(|(at, ..)| *at == offset) {
            return Ok((s, d));
        }
        let ahead = |on: bool| if on { len } else { 0 };
        let s = self.translate_run(src + offset, false, ahead(la.runs.0))?;
        let d = self.translate_run(dst + offset, true, ahead(la.runs.1))?;
        // A run lookup that stopped at its own page found the next one elsewhere.
        la.runs.0 &= s.extent > s.forward_in_page();
        la.runs.1 &= d.extent > d.forward_in_page();
        Ok((s, d))
    }

    /// The longest run of pages, from byte `done` (counted from the end when `backward`), that
    /// is contiguous in both source and destination. The translations of the pair of pages
    /// that ended the run are left in `next`.
    fn run(
        &self,
        src: u64,
        dst: u64,
        len: u64,
        done: u64,
        backward: bool,
        la: &mut Lookahead,
    ) -> Result<Run, Fail> {
        let mut run: Option<Run> = None;
        let mut done = done;
        while done < len {
            // Forward: the next byte is `done`; backward: the last byte not yet copied.
            let (offset, ahead) = if backward {
                (len - done - 1, 0)
            } else {
                (done, len - done)
            };
            let (s, d) = match (self.pair((src, dst), offset, ahead, la), run) {
                (Ok(pair), _) => pair,
                (Err(fail), None) => return Err(fail),
                (Err(_), Some(run)) => return Ok(run),
            };
            let n = if backward {
                s.backward().min(d.backward())
            } else {
                s.forward().min(d.forward())
            }
            .min(len - done);
            // Start addresses of this piece.
            let (ps, pd) = if backward {
                (s.gpa.wrapping_sub(n - 1), d.gpa.wrapping_sub(n - 1))
            } else {
                (s.gpa, d.gpa)
            };
            match &mut run {
                None => {
                    run = Some(Run {
                        src: ps,
                        dst: pd,
                        len: n,
                    })
                }
                Some(r)
                    if !backward
                        && r.src.wrapping_add(r.len) == ps
                        && r.dst.wrapping_add(r.len) == pd =>
                {
                    // Contiguous after all: worth asking for runs again.
                    la.runs = (true, true);
                    r.len += n
                }
                Some(r)
                    if backward && ps.wrapping_add(n) == r.src && pd.wrapping_add(n) == r.dst =>
                {
                    *r = Run {
                        src: ps,
                        dst: pd,
                        len: r.len + n,
                    }
                }
                Some(r) => {
                    la.next = Some((offset, s, d));
                    return Ok(*r);
                }
            }
            done += n;
        }
        // Only reached with done < len on entry, so at least one piece was added.
        run.ok_or(Fail::Halt(Halt::Status(Status::BadSize)))
    }

    fn fill(&self, dst: u64, len: u64, pattern: u64) -> Result<Completion, Reset> {
        let bytes = pattern.to_le_bytes();
        let buf: Vec<u8> = (0..CHUNK + PATTERN_LEN)
            .map(|i| bytes[i % PATTERN_LEN])
            .collect();
        let mut done = 0;
        while done < len {
            let reach = [Reach::new(dst + done, len - done, true)];
            let step = self.under_fence_ahead(Purpose::Data, &reach, |view| {
                let d = self.translate(dst + done, true)?;
                let n = d.forward().min(len - done).min(CHUNK as u64) as usize;
                let phase = (done % PATTERN_LEN as u64) as usize;
                view.write(Gpa(d.gpa), &buf[phase..phase + n])
                    .map_err(|e| dma_fault(&e, dst + done, true))?;
                Ok(n as u64)
            });
            match step {
                Ok(n) => done += n,
                Err(halt) => return halt.complete(done, false),
            }
        }
        Ok(success(done))
    }

    fn compare(&self, a: u64, b: u64, len: u64) -> Result<Completion, Reset> {
        let (mut buf_a, mut buf_b) = (vec![0u8; CHUNK], vec![0u8; CHUNK]);
        let mut done = 0;
        while done < len {
            let left = len - done;
            let reach = [
                Reach::new(a + done, left, false),
                Reach::new(b + done, left, false),
            ];
            let step = self.under_fence_ahead(Purpose::Data, &reach, |view| {
                let (x, y) = (
                    self.translate(a + done, false)?,
                    self.translate(b + done, false)?,
                );
                let n = x
                    .forward()
                    .min(y.forward())
                    .min(len - done)
                    .min(CHUNK as u64) as usize;
                view.read(Gpa(x.gpa), &mut buf_a[..n])
                    .map_err(|e| dma_fault(&e, a + done, false))?;
                view.read(Gpa(y.gpa), &mut buf_b[..n])
                    .map_err(|e| dma_fault(&e, b + done, false))?;
                let differs = buf_a[..n].iter().zip(&buf_b[..n]).position(|(p, q)| p != q);
                Ok((n as u64, differs))
            });
            match step {
                Ok((_, Some(at))) => {
                    let mut c = success(done + at as u64);
                    c.result = 1;
                    return Ok(c);
                }
                Ok((n, None)) => done += n,
                Err(halt) => return halt.complete(done, false),
            }
        }
        Ok(success(done))
    }

    /// Reads the descriptor at `addr` of the job's space (a batch list entry).
    pub fn read_descriptor(&self, addr: u64) -> Result<Descriptor, Halt> {
        self.under_fence(Purpose::Data, |view| {
            let at = self.translate(addr, false)?;
            let mut bytes = [0u8; DESCRIPTOR_SIZE as usize];
            view.read(Gpa(at.gpa), &mut bytes)
                .map_err(|e| dma_fault(&e, addr, false))?;
            Descriptor::read_from_bytes(&bytes)
                .map_err(|_| Fail::Halt(Halt::Status(Status::DmaError)))
        })
    }

    /// Writes `c` as the completion record at `addr` (32-byte aligned, so in one page): every
    /// field first, then the status byte, so a driver polling the status sees a whole record.
    pub fn write_record(&self, addr: u64, c: &Completion) -> Result<(), Halt> {
        let record = c.record();
        let bytes = record.as_bytes();
        self.under_fence(Purpose::Record, |view| {
            let at = self.translate(addr, true)?;
            let (status, rest) = bytes.split_at(1);
            let write = |gpa: u64, data: &[u8]| {
                view.write(Gpa(gpa), data)
                    .map_err(|e| dma_fault(&e, addr, true))
            };
            write(at.gpa + 1, rest)?;
            fence(Ordering::Release);
            write(at.gpa, status)
        })
    }
}
