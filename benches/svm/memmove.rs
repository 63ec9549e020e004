//! Part of the svm bench: the accelerator's MEMMOVE with PASID-tagged virtual addresses through
//! ATS (warm ATC) and the real VT-d model (`PhysicalIommu`, the process's 4-level tables in the
//! same memfd guest RAM), against host memcpy of the same sizes; single-job latency; and a
//! breakdown of where a job's time goes. Issue 4, "Benchmark"; devices/accel/README.md.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use zerocopy::IntoBytes;

use crate::accel_driver::{AccelDriver, RING_SIZE};
use crate::common_vtd::process::Process;
use crate::common_vtd::{GuestRam, PAGE, PAGE_USER_RW};
use crate::{ram, verdict, Scale};
use vsvm::devices::accel;
use vsvm::devices::accel::completion::Status;
use vsvm::devices::accel::descriptor::{Descriptor, DESCRIPTOR_SIZE};
use vsvm::iommu::{Access, BindTarget, DeviceId, FirstStageFlags, HostIommu, Pasid};
use vsvm::mem::{Gpa, GuestMemory};
use vsvm::vtd::piommu::PhysicalIommu;
use vsvm::vtd::VtdConfig;

const DEV: DeviceId = DeviceId(0x0100);
const PASID: u32 = 1;
const RAM_SIZE: u64 = 16 << 20;
const RINGS: u64 = 0x1000;
const HEAP: u64 = 1 << 20;
const BIG_PAGE: u64 = 2 << 20;
/// Largest transfer: the buffers' size.
const BUFFER: u64 = 1 << 20;
const SRC_VA: u64 = 0x7f00_0000_0000;
const DST_VA: u64 = 0x7f00_4000_0000;
const RECORDS_VA: u64 = 0x7f00_8000_0000;
/// Descriptors kept in the queue while streaming (the ring holds 63); it is topped up
/// whenever it falls to half.
const QUEUE: usize = 48;
/// Fewest rounds per memcpy point.
const MIN_ROUNDS: u64 = 5;
/// Pause before an idle-device latency sample.
const IDLE_PAUSE: Duration = Duration::from_micros(300);
/// Fewest jobs per accelerator throughput point.
const MIN_JOBS: u64 = 2 * QUEUE as u64;
/// Sizes from which the target applies.
const TARGET_FROM: u64 = 64 << 10;
const TARGET: f64 = 0.70;
/// A page-index permutation (97 is odd, so coprime with any power of two): neighbouring
/// pages of a buffer land far apart, as a process's pages do.
const SCATTER_STRIDE: u64 = 97;

/// How the process's buffers are paged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Paging {
    /// 4 KiB pages whose frames are shuffled within their block: one copy per page.
    Scattered4K,
    /// 4 KiB pages on consecutive frames: still a translation per page, one copy per job.
    Contiguous4K,
    /// One 2 MiB page per buffer.
    Huge2M,
}

impl Paging {
    fn label(self) -> &'static str {
        match self {
            Paging::Scattered4K => "4 KiB pages, scattered frames",
            Paging::Contiguous4K => "4 KiB pages, contiguous frames",
            Paging::Huge2M => "2 MiB pages",
        }
    }
}

/// The accelerator behind the VT-d model, one process bound, its buffers mapped.
pub struct Rig {
    pub drv: AccelDriver,
    pub mem: GuestMemory,
    /// Guest-physical address of each 4 KiB page of the source and destination buffers.
    pub src_pages: Vec<u64>,
    pub dst_pages: Vec<u64>,
    records: Vec<(u64, u64)>,
    _iommu: Arc<PhysicalIommu>,
}

/// Maps `BUFFER` bytes at `va`; returns the frame of each 4 KiB page.
fn map_buffer(ram: &mut GuestRam, process: &Process, va: u64, paging: Paging) -> Vec<u64> {
    let pages = BUFFER / PAGE;
    if paging == Paging::Huge2M {
        let probe = ram.page();
        let frame = (probe + BIG_PAGE) & !(BIG_PAGE - 1);
        ram.skip_to(frame);
        ram.alloc(BIG_PAGE / PAGE);
        process.map_2m(ram, va, frame, PAGE_USER_RW);
        return (0..pages).map(|i| frame + i * PAGE).collect();
    }
    let block = ram.alloc(pages);
    let frames: Vec<u64> = (0..pages)
        .map(|i| match paging {
            Paging::Scattered4K => block + (i * SCATTER_STRIDE % pages) * PAGE,
            _ => block + i * PAGE,
        })
        .collect();
    for (i, frame) in frames.iter().enumerate() {
        process.map_4k(ram, va + i as u64 * PAGE, *frame, PAGE_USER_RW);
    }
    frames
}

impl Rig {
    pub fn new(paging: Paging) -> Self {
        let (memfd, mem) = ram::shared_guest_memory(RAM_SIZE);
        let iommu = Arc::new(PhysicalIommu::new(VtdConfig::default(), mem.clone()));
        let ep =
            accel::endpoint_svm(accel::VENDOR_ID, accel::DEVICE_ID, iommu.clone(), DEV).unwrap();
        let mut drv = AccelDriver::new(ep, memfd, RAM_SIZE, RINGS);
        drv.enable_svm_caps();
        let mut ram = GuestRam::with_memory(mem.clone(), RAM_SIZE);
        ram.skip_to(HEAP);
        let process = Process::new(&mut ram, false);
        let src_pages = map_buffer(&mut ram, &process, SRC_VA, paging);
        let dst_pages = map_buffer(&mut ram, &process, DST_VA, paging);
        let record_page = ram.page();
        process.map_4k(&mut ram, RECORDS_VA, record_page, PAGE_USER_RW);
        let records = (0..u64::from(RING_SIZE))
            .map(|i| (RECORDS_VA + 32 * i, record_page + 32 * i))
            .collect();
        let table = BindTarget::GuestPageTable(process.page_table(FirstStageFlags::default()));
        iommu.bind(DEV, Pasid::new(PASID).unwrap(), table).unwrap();
        drv.pasid_ctl(PASID, true);
        drv.enable_wq(0, true);
        let rig = Rig {
            drv,
            mem,
            src_pages,
            dst_pages,
            records,
            _iommu: iommu,
        };
        let data: Vec<u8> = (0..PAGE).map(|i| (i * 7 + 1) as u8).collect();
        for gpa in &rig.src_pages {
            rig.mem.write(Gpa(*gpa), &data).unwrap();
        }
        rig
    }

    /// Spins until the record at `gpa` has a status; returns it.
    fn spin_record(&self, gpa: u64) -> u8 {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut status = [0u8];
        loop {
            self.mem.read(Gpa(gpa), &mut status).unwrap();
            if status[0] != 0 {
                return status[0];
            }
            assert!(Instant::now() < deadline, "no completion record");
            std::hint::spin_loop();
        }
    }

    /// Puts `desc` in the next ring slot, with that slot's record zeroed, through the
    /// mapping (as a guest's stores would); no doorbell. Returns the record's GPA.
    fn put(&mut self, desc: Descriptor) -> u64 {
        let slot = self.drv.tails[0];
        let (va, gpa) = self.records[slot as usize];
        self.mem.write(Gpa(gpa), &[0; 32]).unwrap();
        let desc = desc.with_pasid(PASID).with_completion(va);
        let at = self.drv.ring(0) + u64::from(slot) * DESCRIPTOR_SIZE;
        self.mem.write(Gpa(at), desc.as_bytes()).unwrap();
        self.drv.tails[0] = (slot + 1) % RING_SIZE;
        gpa
    }

    /// Waits for the record at `gpa` and checks it says Success.
    fn expect_success(&self, gpa: u64) {
        assert_eq!(
            self.spin_record(gpa),
            Status::Success.code(),
            "a job failed"
        );
    }

    /// One `desc` on an idle queue: the time from the doorbell to its record.
    pub fn single(&mut self, desc: Descriptor) -> Duration {
        let record = self.put(desc);
        let start = Instant::now();
        self.drv.doorbell(0);
        self.expect_success(record);
        start.elapsed()
    }

    /// Runs `jobs` copies of `desc` with the queue kept full (topped up to [`QUEUE`]
    /// whenever half of it completed, one doorbell per top-up); returns the time per job.
    pub fn stream(&mut self, desc: Descriptor, jobs: usize) -> Duration {
        let mut outstanding = std::collections::VecDeque::new();
        let mut submitted = 0;
        let start = Instant::now();
        while submitted < jobs || !outstanding.is_empty() {
            if outstanding.len() <= QUEUE / 2 && submitted < jobs {
                while outstanding.len() < QUEUE && submitted < jobs {
                    outstanding.push_back(self.put(desc));
                    submitted += 1;
                }
                self.drv.doorbell(0);
            }
            if let Some(record) = outstanding.pop_front() {
                self.expect_success(record);
            }
        }
        start.elapsed() / jobs as u32
    }

    /// Per-job time of `desc` (moving `size` bytes) streamed, over enough jobs to move
    /// `bytes` (at least [`MIN_JOBS`]), after a warm-up run.
    pub fn throughput(&mut self, desc: Descriptor, size: u64, bytes: u64) -> Duration {
        self.stream(desc, QUEUE); // warm: ATC, IOTLB, caches
                                  // NOPs (size 0) count as a page each.
        let jobs = (bytes / size.max(PAGE)).max(MIN_JOBS);
        self.stream(desc, jobs as usize)
    }

    /// Time from the doorbell to the record of one `desc` on an idle queue, medians:
    /// (after a pause long enough for the engine thread to sleep — a device idle for a
    /// while; back to back — the engine's CPU still awake).
    pub fn latency(&mut self, desc: Descriptor, samples: usize) -> (Duration, Duration) {
        self.single(desc);
        let idle = (0..samples.max(1) / 10 + 1)
            .map(|_| {
                std::thread::sleep(IDLE_PAUSE);
                self.single(desc)
            })
            .collect();
        let hot = (0..samples.max(1)).map(|_| self.single(desc)).collect();
        (median(idle), median(hot))
    }
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

/// Host buffers: two `Vec<u8>`s of [`BUFFER`] bytes, allocated once and reused, as the
/// device reuses its buffers.
pub struct Host {
    src: Vec<u8>,
    dst: Vec<u8>,
}

impl Host {
    fn new() -> Self {
        let src: Vec<u8> = (0..BUFFER).map(|i| i as u8).collect();
        let mut dst = vec![0u8; BUFFER as usize];
        dst.copy_from_slice(&src);
        Host { src, dst }
    }

    /// Host memcpy: `copy_from_slice` of `size` bytes between the buffers, per copy.
    fn memcpy(&mut self, size: u64, bytes: u64) -> Duration {
        let size = size as usize;
        let rounds = (bytes / (size as u64 * QUEUE as u64)).max(MIN_ROUNDS);
        let times = (0..rounds)
            .map(|_| {
                let start = Instant::now();
                for _ in 0..QUEUE {
                    self.dst[..size].copy_from_slice(black_box(&self.src[..size]));
                    black_box(&mut self.dst);
                }
                start.elapsed() / QUEUE as u32
            })
            .collect();
        median(times)
    }
}

fn gbps(size: u64, per: Duration) -> f64 {
    size as f64 / per.as_secs_f64() / 1e9
}

fn kib(size: u64) -> String {
    format!("{} KiB", size >> 10)
}

/// Per-copy time of `MemView::copy` of `size` bytes between the rig's two buffer blocks:
/// the device's copy primitive on the memfd mapping, with no translation.
fn memfd_copy(rig: &Rig, size: u64, bytes: u64) -> Duration {
    let block = |pages: &[u64]| pages.iter().copied().min().unwrap();
    let (src, dst) = (block(&rig.src_pages), block(&rig.dst_pages));
    let view = rig.mem.view();
    let rounds = (bytes / (size * QUEUE as u64)).max(MIN_ROUNDS);
    let times = (0..rounds)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..QUEUE {
                view.copy(Gpa(src), Gpa(dst), size as usize).unwrap();
            }
            start.elapsed() / QUEUE as u32
        })
        .collect();
    median(times)
}

/// One row: medians over `scale.trials` interleaved trials of memcpy, the memfd copy and
/// the accelerator (interleaved, so that a slow phase of the machine hits all three).
fn row(
    rig: &mut Rig,
    host_bufs: &mut Host,
    scale: Scale,
    size: u64,
) -> (Duration, Duration, Duration) {
    let desc = Descriptor::memmove(SRC_VA, DST_VA, size as u32);
    let bytes = scale.bytes_per_point / scale.trials as u64;
    let (mut host, mut memfd, mut accel) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..scale.trials {
        host.push(host_bufs.memcpy(size, bytes));
        memfd.push(memfd_copy(rig, size, bytes));
        accel.push(rig.throughput(desc, size, bytes));
    }
    (median(host), median(memfd), median(accel))
}

/// The table for one paging: memcpy vs accelerator throughput, ratio, latency.
fn table(host: &mut Host, scale: Scale, paging: Paging) -> Vec<(u64, f64)> {
    println!("-- {} --", paging.label());
    println!(
        "{:>9} {:>12} {:>11} {:>11} {:>7} {:>8} {:>24}",
        "size",
        "memcpy GB/s",
        "memfd GB/s",
        "accel GB/s",
        "ratio",
        "target",
        "latency µs idle / hot"
    );
    let mut rig = Rig::new(paging);
    let mut ratios = Vec::new();
    for &size in scale.sizes {
        let (host, memfd, per_job) = row(&mut rig, host, scale, size);
        let desc = Descriptor::memmove(SRC_VA, DST_VA, size as u32);
        let latency = rig.latency(desc, scale.latency_samples);
        let ratio = gbps(size, per_job) / gbps(size, host);
        let target = if size >= TARGET_FROM {
            verdict(ratio >= TARGET)
        } else {
            "-"
        };
        println!(
            "{:>9} {:>12.2} {:>11.2} {:>11.2} {:>6.0}% {:>8} {:>14.1} / {:>5.1}",
            kib(size),
            gbps(size, host),
            gbps(size, memfd),
            gbps(size, per_job),
            ratio * 100.0,
            target,
            latency.0.as_secs_f64() * 1e6,
            latency.1.as_secs_f64() * 1e6
        );
        ratios.push((size, ratio));
    }
    ratios
}

/// Runs the comparison: 4 KiB pages (the realistic worst case) first, then, to show what
/// the paging costs, contiguous 4 KiB frames and 2 MiB pages; then the breakdown.
pub fn compare(scale: Scale) {
    println!("memcpy: copy_from_slice between two Vec<u8> (one thread);");
    println!("memfd:  MemView::copy between the buffers' frame blocks in the memfd mapping");
    println!("        (the device's copy primitive, one piece, no translation);");
    println!(
        "accel:  MEMMOVEs streamed, the queue kept at {}..{QUEUE} descriptors, time",
        QUEUE / 2
    );
    println!("        per job (4 KiB process pages on scattered frames unless said otherwise);");
    println!("latency: doorbell → record of one job on an empty queue, medians: idle = after");
    println!("        {IDLE_PAUSE:?} without work (engine asleep), hot = jobs back to back;");
    println!(
        "ratio = accel / memcpy, target >= {:.0} % from {}; medians of interleaved trials.",
        TARGET * 100.0,
        kib(TARGET_FROM)
    );
    let mut host = Host::new();
    let worst = table(&mut host, scale, Paging::Scattered4K);
    let judged: Vec<f64> = worst
        .iter()
        .filter(|(size, _)| *size >= TARGET_FROM)
        .map(|(_, ratio)| *ratio)
        .collect();
    let met = judged.iter().all(|ratio| *ratio >= TARGET);
    match judged.is_empty() {
        true => println!("target with 4 KiB pages: not measured (smoke run)"),
        false => println!("target with 4 KiB pages: {}", verdict(met)),
    }
    table(&mut host, scale, Paging::Contiguous4K);
    table(&mut host, scale, Paging::Huge2M);
    breakdown(scale);
}

/// Runs `size`-byte MEMMOVEs (NOPs for 0) with the queue full for about three seconds.
pub fn profile(size: u64, paging: Option<&str>) {
    let paging = match paging {
        Some("2m") => Paging::Huge2M,
        Some("contiguous") => Paging::Contiguous4K,
        _ => Paging::Scattered4K,
    };
    let mut rig = Rig::new(paging);
    let desc = match size {
        0 => Descriptor::nop(),
        _ => Descriptor::memmove(SRC_VA, DST_VA, size as u32),
    };
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(3) {
        let per = rig.throughput(desc, size, 64 << 20);
        println!(
            "{}, {}: {:.0} ns per job, {:.2} GB/s",
            paging.label(),
            kib(size),
            per.as_secs_f64() * 1e9,
            gbps(size, per)
        );
    }
}

/// Times `reps` calls of `f`, per call.
fn per_call(reps: u32, mut f: impl FnMut(u32)) -> Duration {
    let start = Instant::now();
    for r in 0..reps {
        f(r);
    }
    start.elapsed() / reps
}

/// ATC lookups (hits and misses) one `desc` costs, its ring read and record included.
fn atc_lookups(rig: &mut Rig, desc: Descriptor) -> u64 {
    let count = |rig: &Rig| {
        let stats = rig.drv.svm().unwrap().ats().stats();
        stats.hits + stats.misses
    };
    let before = count(rig);
    rig.single(desc);
    count(rig) - before
}

/// How long a thread blocked on a condvar takes to run once notified (what a doorbell on
/// an idle queue costs before the engine does anything): (median, fastest).
fn wake_up(samples: usize) -> (Duration, Duration) {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Condvar, Mutex};
    let shared = Arc::new((Mutex::new(0u64), Condvar::new(), AtomicU64::new(0)));
    let waiter = shared.clone();
    let thread = std::thread::spawn(move || {
        let (generation, wake, ack) = &*waiter;
        let mut seen = 0;
        while seen != u64::MAX {
            let mut g = generation.lock().unwrap();
            while *g == seen {
                g = wake.wait(g).unwrap();
            }
            seen = *g;
            ack.store(seen, Ordering::Release);
        }
    });
    let (generation, wake, ack) = &*shared;
    let mut times = Vec::new();
    for i in 1..=samples.max(1) as u64 {
        // Let the waiter block in the kernel, as an idle engine does.
        std::thread::sleep(Duration::from_micros(200));
        let start = Instant::now();
        *generation.lock().unwrap() = i;
        wake.notify_one();
        while ack.load(Ordering::Acquire) != i {
            std::hint::spin_loop();
        }
        times.push(start.elapsed());
    }
    *generation.lock().unwrap() = u64::MAX;
    wake.notify_one();
    thread.join().unwrap();
    let fastest = times.iter().copied().min().unwrap_or_default();
    (median(times), fastest)
}

fn line(label: &str, ns: f64, note: &str) {
    println!("{label:<46} {ns:>9.0} ns {note}");
}

/// Where a scattered-4K job's time goes: each part timed alone on this thread, the
/// lookups a job makes counted, and the sum compared with the measured per-job time.
fn breakdown(scale: Scale) {
    println!("-- breakdown (4 KiB scattered pages; parts timed alone) --");
    let mut rig = Rig::new(Paging::Scattered4K);
    let reps = scale.latency_samples.max(1) as u32 * 50;
    let pages = BUFFER / PAGE;
    let ats = rig.drv.svm().unwrap().ats();
    let pasid = Pasid::new(PASID);
    for i in 0..pages {
        ats.translate(pasid, SRC_VA + i * PAGE, Access::READ)
            .unwrap();
    }
    let lookup = per_call(reps, |r| {
        let va = SRC_VA + (u64::from(r) % pages) * PAGE;
        black_box(ats.translate(pasid, black_box(va), Access::READ).unwrap());
    });
    let fence = per_call(reps, |_| drop(black_box(ats.fence())));
    let view = per_call(reps, |_| drop(black_box(rig.mem.view())));
    let snapshot = rig.mem.view();
    let pairs: Vec<(u64, u64)> = rig
        .src_pages
        .iter()
        .copied()
        .zip(rig.dst_pages.iter().copied())
        .collect();
    let piece = per_call(reps, |r| {
        let (s, d) = pairs[r as usize % pairs.len()];
        snapshot.copy(Gpa(s), Gpa(d), PAGE as usize).unwrap();
    });
    drop(snapshot);
    let wake = wake_up(scale.latency_samples.min(500));
    let nop = rig.throughput(Descriptor::nop(), 0, scale.bytes_per_point / 64);
    let nop_latency = rig.latency(Descriptor::nop(), scale.latency_samples);
    let nop_lookups = atc_lookups(&mut rig, Descriptor::nop());
    let ns = |d: Duration| d.as_secs_f64() * 1e9;
    line("ATC hit (Ats::translate)", ns(lookup), "");
    line("ATS fence take + drop", ns(fence), "");
    line("GuestMemory::view", ns(view), "");
    let note = format!("({:.1} GB/s)", gbps(PAGE, piece));
    line("MemView::copy of one 4 KiB page", ns(piece), &note);
    let note = format!("(fastest {:.0} ns)", ns(wake.1));
    line("thread wake-up: notify → waiter runs", ns(wake.0), &note);
    let note = format!("({nop_lookups} ATC lookups: ring read, record)");
    line(
        "NOP jobs streamed (per-job cost, upper bound)",
        ns(nop),
        &note,
    );
    let note = format!("(back to back: {:.0} ns)", ns(nop_latency.1));
    line("NOP job latency (idle device)", ns(nop_latency.0), &note);
    for size in [TARGET_FROM, BUFFER] {
        let desc = Descriptor::memmove(SRC_VA, DST_VA, size as u32);
        let measured = ns(rig.throughput(desc, size, scale.bytes_per_point / 4));
        let n = size / PAGE;
        let lookups = atc_lookups(&mut rig, desc) - nop_lookups;
        let copy = n as f64 * ns(piece);
        // One fence hold and one (cached) view per job; a lookup per page and direction.
        let translation = lookups as f64 * ns(lookup) + ns(fence) + ns(view);
        let rest = measured - copy - translation;
        let share = |part: f64| 100.0 * part / measured;
        println!(
            "{} MEMMOVE, {n} pages: {measured:.0} ns per job = copies {copy:.0} ({:.0} %) \
             + translation {translation:.0} ({:.0} %: {lookups} ATC hits, one fence \
             and view) + the rest {rest:.0} ({:.0} %: per-job costs, cache effects)",
            kib(size),
            share(copy),
            share(translation),
            share(rest)
        );
    }
}
