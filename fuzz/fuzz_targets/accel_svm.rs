//! Fuzz target: the SVM accelerator behind the physical VT-d model — descriptors of every
//! opcode and BATCH lists, PASID-tagged and untagged, on queues with and without
//! block-on-fault, through ATS and PRI to `PhysicalIommu` over fake guest RAM whose tables
//! (first-stage per PASID, a guest PASID table, the DMA domain's first- or second-stage) the
//! input builds and damages; page requests answered by the input (any order, Invalid
//! Request, Response Failure, duplicates, never: the timer), invalidations, binds, drains and
//! resets between jobs. devices/accel/README.md is the device contract; PCIe 6.0 §10 (ATS,
//! PRI) and VT-d 3.6–3.8 / 7.5 the IOMMU's. The checks a run ends with: `Rig::finish`.
//!
//! Choices are ordered so that an exhausted input (all zeros) takes the common path: a
//! Linux-like setup, tagged descriptors of the first process, Success responses.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vsvm::devices::accel::completion::COMPLETION_SIZE;
use vsvm::devices::accel::descriptor::{Descriptor, DESCRIPTOR_SIZE};
use vsvm::devices::accel::regs::{offset, wq_offset, DmaCmd, WqCtrl, WQ_COUNT};
use vsvm::iommu::{
    BindTarget, CacheInvalidate, CacheType, DefaultDomain, FirstStageFlags, Granularity, HostIommu,
    PageRequest, PageResponse, PageResponseCode, Pasid, UnrecoverableReason,
};
use vsvm::mem::Gpa;
use vsvm::vtd::piommu::PRQ_DEPTH;
use vsvm_fuzz::accel_rig::{ring, wq_reg, Queue, Rig, DEV, RESPONSE_TIMEOUT, RING_SIZE};
use vsvm_fuzz::svm_guest::{self as guest, Process};
use vsvm_fuzz::{Input, PAGE};
use zerocopy::{FromBytes, IntoBytes};

const MAX_OPS: usize = 96;
/// Opcodes 0..=4 exist; 5 is any control byte ("bad opcode" and flags).
const OPCODES: u64 = 6;
/// Longest BATCH list the input writes (the device takes up to 64; more is BAD_BATCH).
const MAX_LIST: u64 = 8;
/// A PASID nothing is bound to.
const UNBOUND_PASID: u32 = 3;
/// Credits Linux allocates (its PRQ depth).
const LINUX_ALLOCATION: u32 = 512;
/// PRI allocations the input picks from (the register is 32 bits; the device clamps).
const SMALL_ALLOCATION: u64 = 8;
/// BAR0 bytes with registers.
const BAR0_SPAN: u64 = 0x300;

/// A PASID for a descriptor or an IOMMU call: a process's mostly, else unbound or anything.
fn pasid(input: &mut Input) -> u32 {
    match input.u8() % 8 {
        6 => UNBOUND_PASID,
        7 => input.u32(),
        n => guest::PASIDS[usize::from(n) % guest::PASIDS.len()],
    }
}

/// An address of a descriptor's space, `align`ed: a process window (tagged) or RAM and the
/// read-only guard (untagged), a page beyond, or anything.
fn address(input: &mut Input, tagged: bool, align: u64) -> u64 {
    let addr = match (input.u8() % 8, tagged) {
        (7, _) => input.u64(),
        (_, true) => guest::WINDOW_VA + input.below((guest::WINDOW_PAGES + 1) * PAGE),
        (_, false) => input.below(guest::MAPPED_BYTES + PAGE),
    };
    addr & !(align - 1)
}

fn allocation(input: &mut Input) -> u32 {
    match input.u8() % 4 {
        0 => LINUX_ALLOCATION,
        1 => 1 + input.below(SMALL_ALLOCATION) as u32,
        2 => 0,
        _ => input.u32(),
    }
}

fn descriptor(input: &mut Input, rig: &Rig) -> Descriptor {
    if input.u8() % 16 == 15 {
        let raw = input.bytes(DESCRIPTOR_SIZE as usize);
        let mut bytes = [0; DESCRIPTOR_SIZE as usize];
        bytes[..raw.len()].copy_from_slice(raw);
        return Descriptor::read_from_bytes(&bytes).unwrap_or_default();
    }
    let tagged = input.u8() % 4 != 3;
    let len = match input.u8() % 4 {
        0 => 1 + input.below(256),
        1 => 1 + input.below(2 * PAGE),
        2 => 1 + input.below(5 * PAGE),
        _ => input.u32().into(),
    } as u32;
    let mut desc = match input.below(OPCODES) {
        0 => Descriptor::nop(),
        1 => Descriptor::memmove(address(input, tagged, 1), address(input, tagged, 1), len),
        2 => Descriptor::fill(address(input, tagged, 1), len, input.u64()),
        3 => Descriptor::compare(address(input, tagged, 1), address(input, tagged, 1), len),
        4 => {
            let count = input.below(MAX_LIST + 2) as u32;
            let pick = usize::from(input.u8()) % (rig.lists.len() + 1);
            match rig.lists.get(pick) {
                Some(&(_, list)) => Descriptor::batch(list, count),
                None => Descriptor::batch(address(input, tagged, DESCRIPTOR_SIZE), count),
            }
        }
        _ => Descriptor {
            control: input.u8().into(),
            ..Descriptor::default()
        },
    };
    if input.u8() % 8 != 7 {
        let record = address(input, tagged, COMPLETION_SIZE);
        let misaligned = if input.u8() % 32 == 31 { 8 } else { 0 };
        desc = desc.with_completion(record + misaligned);
    }
    if input.bool() {
        desc = desc.with_interrupt();
    }
    if tagged {
        desc = desc.with_pasid(pasid(input));
    }
    if input.u8() % 16 == 15 {
        desc = desc.privileged();
    }
    desc
}

/// Descriptors onto queue `wq`'s ring (no more than fit while it is countable), then its
/// doorbell (rarely a wrong one).
fn submit(input: &mut Input, rig: &mut Rig) {
    let wq = input.below(WQ_COUNT as u64) as usize;
    let head = rig.read32(wq_reg(wq, wq_offset::HEAD));
    let queue = rig.queues[wq];
    let used = queue.tail.wrapping_sub(head) % RING_SIZE;
    let mut count = 1 + input.below(4) as u32;
    if queue.undisturbed {
        count = count.min(RING_SIZE - 1 - used);
    }
    let mut tail = queue.tail;
    for _ in 0..count {
        let desc = descriptor(input, rig);
        let at = ring(wq) + u64::from(tail) * DESCRIPTOR_SIZE;
        let _ = rig.mem.write(Gpa(at), desc.as_bytes());
        tail = (tail + 1) % RING_SIZE;
    }
    let enabled = rig.wq_status(wq).enabled();
    let doorbell = if input.u8() % 16 == 15 {
        input.u32()
    } else {
        tail
    };
    rig.write32(wq_reg(wq, wq_offset::TAIL), doorbell);
    if !enabled || doorbell >= RING_SIZE {
        return; // ignored by the device (BAD_TAIL)
    }
    let queue = &mut rig.queues[wq];
    queue.undisturbed &= doorbell == tail;
    queue.accepted = queue
        .accepted
        .wrapping_add(doorbell.wrapping_sub(queue.tail) % RING_SIZE);
    queue.tail = doorbell;
}

/// A BATCH list in a process window (reached through its PASID) or in untagged RAM.
fn write_list(input: &mut Input, rig: &mut Rig) {
    let slots = PAGE / DESCRIPTOR_SIZE;
    let (space, addr, gpa) = if input.u8() % 4 != 3 {
        let process = Process::new(input.below(2) as usize);
        let (page, slot) = (input.below(guest::WINDOW_PAGES), input.below(slots));
        let va = process.va(page) + slot * DESCRIPTOR_SIZE;
        let gpa = process.data_page(page) * PAGE + slot * DESCRIPTOR_SIZE;
        (Some(process.pasid()), va, gpa)
    } else {
        let gpa = input.below(guest::RAM_PAGES * slots) * DESCRIPTOR_SIZE;
        (None, gpa, gpa)
    };
    for i in 0..=input.below(MAX_LIST) {
        let desc = descriptor(input, rig);
        let _ = rig
            .mem
            .write(Gpa(gpa + i * DESCRIPTOR_SIZE), desc.as_bytes());
    }
    rig.lists.push((space, addr));
}

fn response_code(input: &mut Input) -> PageResponseCode {
    match input.u8() % 8 {
        6 => PageResponseCode::InvalidRequest,
        7 => PageResponseCode::ResponseFailure,
        _ => PageResponseCode::Success,
    }
}

/// The guest answers one of the page requests it saw (any, again maybe), mostly after
/// mapping the page in the process as its fault handler would (its own page or a spare).
fn answer(input: &mut Input, rig: &mut Rig) {
    let seen = rig.handler.requests();
    let index = usize::from(input.u8()) % seen.len().max(1);
    let fault_in = input.u8() % 4 != 3;
    let spare = if input.bool() {
        Some(
            guest::SPARE_PAGES.start
                + input.below(guest::SPARE_PAGES.end - guest::SPARE_PAGES.start),
        )
    } else {
        None
    };
    let code = response_code(input);
    let Some(req) = seen.get(index) else {
        return;
    };
    let process = guest::PASIDS
        .iter()
        .position(|&p| req.pasid.map(Pasid::raw) == Some(p))
        .map(Process::new);
    let page = req.addr.wrapping_sub(guest::WINDOW_VA) / PAGE;
    if let (Some(process), true, true) = (process, page < guest::WINDOW_PAGES, fault_in) {
        let frame = spare.unwrap_or_else(|| process.data_page(page));
        let pte = (frame * PAGE) | guest::PTE_USER_RW;
        let _ = rig.mem.write_u64(Gpa(process.pte_addr(page)), pte);
    }
    let _ = rig.iommu.page_response(PageResponse::to(req, code));
}

fn granularity(input: &mut Input) -> Granularity {
    let pasid = Pasid::new(pasid(input) & Pasid::MAX).unwrap_or_default();
    let addr = address(input, true, 1);
    let size = match input.u8() % 4 {
        3 => input.u64(),
        _ => PAGE * (1 + input.below(guest::WINDOW_PAGES)),
    };
    match input.u8() % 5 {
        0 => Granularity::Range { pasid, addr, size },
        1 => Granularity::Pasid(pasid),
        2 => Granularity::Domain,
        3 => Granularity::NoPasid,
        _ => Granularity::NoPasidRange {
            addr: address(input, false, 1),
            size,
        },
    }
}

fn invalidate(input: &mut Input, rig: &mut Rig) {
    let cache = [
        CacheType::DeviceTlb,
        CacheType::Iotlb,
        CacheType::PasidCache,
    ][input.below(3) as usize];
    let granularity = granularity(input);
    let _ = rig
        .iommu
        .cache_invalidate(DEV, CacheInvalidate { cache, granularity });
}

/// The guest changes a PTE of a process window (unmap, read-only, anything, back to its
/// page) and mostly invalidates as Linux does: PASID-based IOTLB, then device TLB.
fn change_pte(input: &mut Input, rig: &mut Rig) {
    let process = Process::new(input.below(2) as usize);
    let i = input.below(guest::WINDOW_PAGES);
    let frame = process.data_page(i) * PAGE;
    let pte = match input.u8() % 4 {
        0 => 0,
        1 => frame | guest::PTE_PRESENT | guest::PTE_USER,
        2 => input.word(guest::RAM_PAGES + guest::GUARD_PAGES + 1),
        _ => frame | guest::PTE_USER_RW,
    };
    let _ = rig.mem.write_u64(Gpa(process.pte_addr(i)), pte);
    if input.u8() % 4 != 3 {
        let pasid = Pasid::new(process.pasid()).unwrap_or_default();
        let granularity = Granularity::Range {
            pasid,
            addr: process.va(i),
            size: PAGE,
        };
        for cache in [CacheType::Iotlb, CacheType::DeviceTlb] {
            let _ = rig
                .iommu
                .cache_invalidate(DEV, CacheInvalidate { cache, granularity });
        }
    }
}

/// Bind, rebind or unbind a PASID: a process table (4- or 5-level, any flags, nested or
/// not) or the guest's PASID table.
fn bind(input: &mut Input, rig: &mut Rig) {
    let raw = pasid(input);
    let flags = input.u8();
    let process = Process::new(input.below(2) as usize);
    let five = input.bool();
    let table = process.page_table(
        five,
        FirstStageFlags {
            supervisor: flags & 1 == 0,
            write_protect: flags & 2 != 0,
            extended_accessed: flags & 4 != 0,
        },
    );
    let target = match input.u8() % 4 {
        2 => BindTarget::Process(table),
        3 => {
            let dir = match input.bool() {
                false => guest::PASID_DIR_PAGE * PAGE,
                true => input.word(guest::RAM_PAGES),
            };
            let pasid_bits = match input.bool() {
                false => guest::PASID_BITS,
                true => input.u8(),
            };
            BindTarget::GuestPasidTable { dir, pasid_bits }
        }
        _ => BindTarget::GuestPageTable(table),
    };
    let Some(pasid) = Pasid::new(raw) else {
        return;
    };
    let _ = match input.u8() % 4 {
        2 => rig.iommu.rebind(DEV, pasid, target),
        3 => rig.iommu.unbind(DEV, pasid),
        _ => rig.iommu.bind(DEV, pasid, target),
    };
}

/// The device's default domain (its untagged requests: rings, untagged descriptors, the
/// plain engine): identity, blocked, or the DMA domain as a first- or second-stage table.
fn default_domain(input: &mut Input, rig: &mut Rig) {
    let domain = match input.u8() % 5 {
        0 => DefaultDomain::FirstStage(guest::dma_first_stage()),
        1 => DefaultDomain::Identity,
        2 => DefaultDomain::Blocked(UnrecoverableReason::NotPresent),
        _ => DefaultDomain::SecondStage(guest::dma_second_stage(3 + input.below(4) as u8)),
    };
    let _ = rig.iommu.set_default_domain(DEV, domain);
}

/// Queue modes (block-on-fault or report-fault), disables, and the capabilities.
fn configure(input: &mut Input, rig: &mut Rig) {
    match input.u8() % 4 {
        0 => {
            let wq = input.below(2) as usize;
            let bof = input.bool();
            rig.enable_queue(wq, bof, input.below(8) as u8);
        }
        1 => {
            let wq = input.below(2) as usize;
            let ctrl = WqCtrl::new()
                .with_enable(true)
                .with_block_on_fault(input.bool());
            rig.write32(wq_reg(wq, wq_offset::CTRL), ctrl.into_bits());
        }
        2 => {
            let wq = input.below(2) as usize;
            rig.write32(wq_reg(wq, wq_offset::CTRL), 0);
            rig.queues[wq].undisturbed = false;
        }
        _ => {
            let (pasid, ats, pri) = (!input.bool(), !input.bool(), !input.bool());
            let allocation = allocation(input);
            rig.config_caps(pasid, ats, pri, allocation);
        }
    }
}

fn plain_job(input: &mut Input, rig: &mut Rig) {
    let src = address(input, false, 1);
    let dst = address(input, false, 1);
    for (at, value) in [(offset::DMA_SRC, src), (offset::DMA_DST, dst)] {
        rig.write32(at, value as u32);
        rig.write32(at + 4, (value >> 32) as u32);
    }
    rig.write32(offset::DMA_LEN, 1 + input.below(3 * PAGE) as u32);
    rig.write32(offset::DMA_CMD, DmaCmd::new().with_start(true).into_bits());
}

/// Resets, fault handler (un)registration, and any BAR0 register.
fn disturb(input: &mut Input, rig: &mut Rig) {
    match input.u8() % 4 {
        0 => {
            let _ = vsvm::vfio_user::Device::reset(&mut rig.ep);
            rig.queues = [Queue::default(); WQ_COUNT];
        }
        1 => {
            let result = if rig.registered {
                rig.iommu.unregister_fault_handler(DEV)
            } else {
                rig.iommu.register_fault_handler(DEV, rig.handler.clone())
            };
            assert!(result.is_ok(), "fault handler (un)registration: {result:?}");
            rig.registered = !rig.registered;
        }
        _ => {
            // The queues are not countable any more once their block may have changed.
            let at = input.below(BAR0_SPAN) & !3;
            rig.write32(at, input.word(guest::RAM_PAGES) as u32);
            let touches_queues = at >= offset::WQ_BLOCKS;
            rig.queues
                .iter_mut()
                .for_each(|q| q.undisturbed &= !touches_queues);
        }
    }
}

/// One step of the run.
fn step(input: &mut Input, rig: &mut Rig) {
    match input.u8() % 20 {
        0..=3 => submit(input, rig),
        4 => write_list(input, rig),
        5 | 6 => answer(input, rig),
        // A response for a group that may never have been requested.
        7 => {
            let pasid = Pasid::new(pasid(input));
            let group = input.u16() & PageRequest::MAX_GROUP;
            let code = response_code(input);
            let resp = PageResponse {
                device: DEV,
                pasid,
                group,
                code,
            };
            let _ = rig.iommu.page_response(resp);
        }
        8 | 9 => rig.settle(),
        // Nobody answers for a while: the IOMMU's timer does.
        10 => std::thread::sleep(RESPONSE_TIMEOUT * 2),
        11 => invalidate(input, rig),
        12 => change_pte(input, rig),
        // The guest damages a table.
        13 => {
            let tables = guest::TABLES.end - guest::TABLES.start;
            let slot = guest::TABLES.start * PAGE / 8 + input.below(tables * PAGE / 8);
            let word = input.word(guest::RAM_PAGES);
            let _ = rig.mem.write_u64(Gpa(slot * 8), word);
        }
        14 => bind(input, rig),
        15 => default_domain(input, rig),
        16 => {
            let pasid = pasid(input);
            let enable = input.bool();
            rig.pasid_ctl(pasid, enable);
        }
        17 => configure(input, rig),
        18 => plain_job(input, rig),
        _ => disturb(input, rig),
    }
    let pending = rig.iommu.pending_page_requests();
    assert!(pending <= PRQ_DEPTH, "page request queue past its depth");
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let five_level = input.u8() % 4 != 3;
    let present = [!input.u16(), !input.u16()];
    let mut rig = Rig::new(five_level, present);
    if input.u8() % 8 != 7 {
        let allocation = allocation(&mut input);
        let mut queues = [(false, 0); WQ_COUNT];
        for queue in &mut queues {
            *queue = (input.u8() % 4 != 3, input.below(4) as u8);
        }
        rig.linux_setup(allocation, queues);
    }
    for _ in 0..MAX_OPS {
        if input.is_empty() {
            break;
        }
        step(&mut input, &mut rig);
    }
    rig.finish();
});
