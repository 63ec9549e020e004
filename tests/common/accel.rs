//! A register-level driver for the accel SVM accelerator (devices/accel/README.md), shared by
//! the accel tests and the svm bench: guest RAM in a sealed memfd given to the endpoint as its
//! DMA map, MSI-X vectors as eventfds, PASID/ATS/PRI enabled in config space as Linux does,
//! BAR0 registers, work-queue rings, doorbells, and waits for records, idle queues,
//! interrupts, software errors and PASID drains.
//!
//! It knows nothing of address translation: rings live at guest-physical addresses (the
//! untagged space, which the IOMMUs used here pass through), and whoever knows how a PASID's
//! virtual addresses translate hands the driver guest-physical addresses to read.
#![allow(dead_code)] // each test crate and the bench take what they need

use std::fs::File;
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use zerocopy::{FromBytes, IntoBytes};

use vsvm::devices::accel::completion::CompletionRecord;
use vsvm::devices::accel::descriptor::{Descriptor, DESCRIPTOR_SIZE};
use vsvm::devices::accel::regs::{
    offset, wq_offset, DmaCmd, DmaState, DmaStatus, ErrCtl, PasidCtl, Swerr, WqCtrl, WqStatus,
};
use vsvm::devices::accel::svm::Svm;
use vsvm::devices::accel::{Accel, MSIX_VECTORS};
use vsvm::endpoint::{Endpoint, CONFIG_REGION, MSIX_IRQ_INDEX};
use vsvm::pci::caps::ats::EXT_CAP_ID_ATS;
use vsvm::pci::caps::pasid::EXT_CAP_ID_PASID;
use vsvm::pci::caps::pri::EXT_CAP_ID_PRI;
use vsvm::vfio_user::{Device, DmaMapRequest, IrqAction, IrqData, IrqSetRequest};

/// How long any wait lasts before the test fails.
pub const TIMEOUT: Duration = Duration::from_secs(5);
/// Descriptors per ring.
pub const RING_SIZE: u32 = 64;
/// Bytes per ring.
pub const RING_BYTES: u64 = RING_SIZE as u64 * DESCRIPTOR_SIZE;
/// MSI-X vector of queue completions.
pub const VECTOR_WQ: u8 = 1;
/// MSI-X vector of the error interrupt.
pub const VECTOR_ERR: u8 = 3;
/// Outstanding page requests the driver allocates (Linux: PRQ depth).
pub const PRI_ALLOCATION: u32 = 512;

// Config space bits the driver writes (PCI command; PCIe 6.0 §7.8.9.3, §7.8.10.2, §10.5.1.3).
const PCI_COMMAND: u64 = 0x04;
const COMMAND_MEMORY: u16 = 1 << 1;
const COMMAND_BUS_MASTER: u16 = 1 << 2;
const PASID_CONTROL: u64 = 6;
const PASID_ENABLE: u16 = 1 << 0;
const PASID_EXEC: u16 = 1 << 1;
const PASID_PRIV: u16 = 1 << 2;
const ATS_CONTROL: u64 = 6;
const ATS_ENABLE: u16 = 1 << 15;
const PRI_CONTROL: u64 = 4;
const PRI_ENABLE: u16 = 1 << 0;
const PRI_ALLOC: u64 = 0xc;

/// The driver of one accel function.
pub struct AccelDriver {
    /// The function.
    pub ep: Endpoint<Accel>,
    /// Guest RAM (the function's only DMA map, at GPA 0).
    pub ram: File,
    vectors: Vec<OwnedFd>,
    /// The next free slot of each ring (what TAIL was last written to).
    pub tails: [u32; 2],
    /// Guest-physical address of queue 0's ring; queue n's follows at `n * RING_BYTES`.
    rings: u64,
}

impl AccelDriver {
    /// Takes over `ep`: maps `ram` (`ram_size` bytes) at GPA 0, wires the MSI-X vectors to
    /// eventfds, enables memory space and bus mastering and the error interrupt. Queue rings
    /// go at `rings`.
    pub fn new(ep: Endpoint<Accel>, ram: File, ram_size: u64, rings: u64) -> Self {
        let mut drv = AccelDriver {
            ep,
            ram,
            vectors: Vec::new(),
            tails: [0; 2],
            rings,
        };
        let fd = drv.ram.try_clone().unwrap();
        let map = DmaMapRequest {
            address: 0,
            size: ram_size,
            fd_offset: 0,
            readable: true,
            writable: true,
        };
        drv.ep.dma_map(map, Some(fd.into())).unwrap();
        let flags = rustix::event::EventfdFlags::CLOEXEC | rustix::event::EventfdFlags::NONBLOCK;
        drv.vectors = (0..MSIX_VECTORS)
            .map(|_| rustix::event::eventfd(0, flags).unwrap())
            .collect();
        let fds = drv
            .vectors
            .iter()
            .map(|f| Some(f.try_clone().unwrap()))
            .collect();
        drv.ep
            .set_irqs(IrqSetRequest {
                index: MSIX_IRQ_INDEX,
                start: 0,
                count: MSIX_VECTORS.into(),
                action: IrqAction::Trigger,
                data: IrqData::Eventfds(fds),
            })
            .unwrap();
        drv.set_command(true);
        let errctl = ErrCtl::new().with_irq_enable(true).with_vector(VECTOR_ERR);
        drv.write32(offset::ERRCTL, errctl.into_bits());
        drv
    }

    /// The function's IOMMU connection (ATS, PRI), when it has one.
    pub fn svm(&self) -> Option<&Svm> {
        self.ep.function().svm()
    }

    // --- config space ---------------------------------------------------------------------

    /// Offset of the extended capability `id` (panics when absent).
    pub fn ext_cap(&mut self, id: u16) -> u64 {
        let mut at = 0x100;
        loop {
            let mut header = [0; 4];
            self.ep.region_read(CONFIG_REGION, at, &mut header).unwrap();
            let header = u32::from_le_bytes(header);
            if header as u16 == id {
                return at;
            }
            at = u64::from(header >> 20);
            assert_ne!(at, 0, "capability 0x{id:x} not found");
        }
    }

    /// PCI Command: memory space, and bus mastering when `bus_master`.
    pub fn set_command(&mut self, bus_master: bool) {
        let master = if bus_master { COMMAND_BUS_MASTER } else { 0 };
        self.cfg_write16(PCI_COMMAND, COMMAND_MEMORY | master);
    }

    /// PASID Control: Enable and Execute, and Privileged Mode when `privileged`
    /// (Linux `pci_enable_pasid`).
    pub fn enable_pasid_cap(&mut self, privileged: bool) {
        let pasid = self.ext_cap(EXT_CAP_ID_PASID);
        let privileged = if privileged { PASID_PRIV } else { 0 };
        self.cfg_write16(
            pasid + PASID_CONTROL,
            PASID_ENABLE | PASID_EXEC | privileged,
        );
    }

    /// Clears PASID Control.
    pub fn disable_pasid_cap(&mut self) {
        let pasid = self.ext_cap(EXT_CAP_ID_PASID);
        self.cfg_write16(pasid + PASID_CONTROL, 0);
    }

    /// ATS Control.Enable (Linux `pci_enable_ats`, STU 4 KiB).
    pub fn enable_ats(&mut self) {
        let ats = self.ext_cap(EXT_CAP_ID_ATS);
        self.cfg_write16(ats + ATS_CONTROL, ATS_ENABLE);
    }

    /// PRI: the outstanding request allocation, then Enable (`on`) as Linux `pci_enable_pri`.
    pub fn enable_pri(&mut self, on: bool) {
        let pri = self.ext_cap(EXT_CAP_ID_PRI);
        self.cfg_write32(pri + PRI_ALLOC, PRI_ALLOCATION);
        self.cfg_write16(pri + PRI_CONTROL, if on { PRI_ENABLE } else { 0 });
    }

    /// PASID (with privileged mode), ATS and PRI, in the order Linux's intel-iommu enables
    /// them for SVA.
    pub fn enable_svm_caps(&mut self) {
        self.enable_pasid_cap(true);
        self.enable_ats();
        self.enable_pri(true);
    }

    pub fn cfg_write16(&mut self, at: u64, v: u16) {
        self.ep
            .region_write(CONFIG_REGION, at, &v.to_le_bytes())
            .unwrap();
    }

    pub fn cfg_write32(&mut self, at: u64, v: u32) {
        self.ep
            .region_write(CONFIG_REGION, at, &v.to_le_bytes())
            .unwrap();
    }

    pub fn cfg_read16(&mut self, at: u64) -> u16 {
        let mut b = [0; 2];
        self.ep.region_read(CONFIG_REGION, at, &mut b).unwrap();
        u16::from_le_bytes(b)
    }

    // --- BAR0 -------------------------------------------------------------------------------

    pub fn write32(&mut self, at: u64, v: u32) {
        self.ep.region_write(0, at, &v.to_le_bytes()).unwrap();
    }

    pub fn write64(&mut self, at: u64, v: u64) {
        self.ep.region_write(0, at, &v.to_le_bytes()).unwrap();
    }

    pub fn read32(&mut self, at: u64) -> u32 {
        let mut b = [0; 4];
        self.ep.region_read(0, at, &mut b).unwrap();
        u32::from_le_bytes(b)
    }

    pub fn read64(&mut self, at: u64) -> u64 {
        let mut b = [0; 8];
        self.ep.region_read(0, at, &mut b).unwrap();
        u64::from_le_bytes(b)
    }

    /// Runs a plain-engine job (DMA_SRC, DMA_DST, DMA_LEN, DMA_CMD START) and waits until
    /// it left busy; returns DMA_STATUS.
    pub fn plain_copy(&mut self, src: u64, dst: u64, len: u32) -> DmaStatus {
        self.write64(offset::DMA_SRC, src);
        self.write64(offset::DMA_DST, dst);
        self.write32(offset::DMA_LEN, len);
        self.write32(offset::DMA_CMD, DmaCmd::new().with_start(true).into_bits());
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let status = DmaStatus::from_bits(self.read32(offset::DMA_STATUS));
            if status.state() != DmaState::Busy {
                return status;
            }
            assert!(Instant::now() < deadline, "plain job still busy");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// BAR0 offset of register `reg` of queue `wq`.
    pub fn wq_reg(wq: usize, reg: u64) -> u64 {
        offset::WQ_BLOCKS + wq as u64 * offset::WQ_STRIDE + reg
    }

    // --- work queues ------------------------------------------------------------------------

    /// Guest-physical address of queue `wq`'s ring.
    pub fn ring(&self, wq: usize) -> u64 {
        self.rings + wq as u64 * RING_BYTES
    }

    /// Sets up and enables queue `wq` (block-on-fault or report-fault).
    pub fn enable_wq(&mut self, wq: usize, block_on_fault: bool) {
        self.write64(Self::wq_reg(wq, wq_offset::BASE), self.ring(wq));
        self.write32(Self::wq_reg(wq, wq_offset::SIZE), RING_SIZE);
        let ctrl = WqCtrl::new()
            .with_enable(true)
            .with_block_on_fault(block_on_fault)
            .with_vector(VECTOR_WQ);
        self.write32(Self::wq_reg(wq, wq_offset::CTRL), ctrl.into_bits());
        self.tails[wq] = 0;
        assert!(self.wq_status(wq).enabled());
    }

    pub fn wq_status(&mut self, wq: usize) -> WqStatus {
        WqStatus::from_bits(self.read32(Self::wq_reg(wq, wq_offset::STATUS)))
    }

    /// Writes `descs` into queue `wq`'s ring and rings the doorbell.
    pub fn submit(&mut self, wq: usize, descs: &[Descriptor]) {
        self.write_descriptors(wq, descs);
        self.doorbell(wq);
    }

    /// Writes `descs` into queue `wq`'s ring from the tail on, without telling the device.
    pub fn write_descriptors(&mut self, wq: usize, descs: &[Descriptor]) {
        for d in descs {
            let slot = self.ring(wq) + u64::from(self.tails[wq]) * DESCRIPTOR_SIZE;
            self.ram.write_all_at(d.as_bytes(), slot).unwrap();
            self.tails[wq] = (self.tails[wq] + 1) % RING_SIZE;
        }
    }

    /// Writes queue `wq`'s TAIL: the device runs what was written up to it.
    pub fn doorbell(&mut self, wq: usize) {
        let tail = self.tails[wq];
        self.write32(Self::wq_reg(wq, wq_offset::TAIL), tail);
    }

    /// Waits until queue `wq` consumed everything and is not busy.
    pub fn wait_idle(&mut self, wq: usize) {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let head = self.read32(Self::wq_reg(wq, wq_offset::HEAD));
            if head == self.tails[wq] && !self.wq_status(wq).busy() {
                return;
            }
            assert!(Instant::now() < deadline, "queue {wq} never went idle");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    // --- guest RAM and completion records -----------------------------------------------------

    pub fn ram_write(&self, gpa: u64, data: &[u8]) {
        self.ram.write_all_at(data, gpa).unwrap();
    }

    pub fn ram_read(&self, gpa: u64, len: usize) -> Vec<u8> {
        let mut out = vec![0; len];
        self.ram.read_exact_at(&mut out, gpa).unwrap();
        out
    }

    /// The completion record at guest-physical `gpa`.
    pub fn read_record_at(&self, gpa: u64) -> CompletionRecord {
        let bytes = self.ram_read(gpa, 32);
        CompletionRecord::read_from_bytes(&bytes).unwrap()
    }

    /// Waits for the record at guest-physical `gpa` to get a status.
    pub fn wait_record_at(&self, gpa: u64) -> CompletionRecord {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let r = self.read_record_at(gpa);
            if r.status != 0 {
                return r;
            }
            assert!(
                Instant::now() < deadline,
                "no completion record at GPA 0x{gpa:x}"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    // --- interrupts ----------------------------------------------------------------------------

    /// Interrupts on `vector` since the last call.
    pub fn irqs(&self, vector: u8) -> u64 {
        let mut b = [0u8; 8];
        match rustix::io::read(&self.vectors[usize::from(vector)], &mut b) {
            Ok(_) => u64::from_le_bytes(b),
            Err(_) => 0,
        }
    }

    /// Waits for interrupts on `vector`; returns how many arrived since the last call.
    pub fn wait_irq(&self, vector: u8) -> u64 {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let n = self.irqs(vector);
            if n > 0 {
                return n;
            }
            assert!(Instant::now() < deadline, "no interrupt on vector {vector}");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Blocks until `vector` fires, without polling delays (a driver's interrupt handler runs
    /// right after the message); returns how many arrived since the last call.
    pub fn wait_irq_now(&self, vector: u8) -> u64 {
        let fd = &self.vectors[usize::from(vector)];
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let n = self.irqs(vector);
            if n > 0 {
                return n;
            }
            assert!(Instant::now() < deadline, "no interrupt on vector {vector}");
            let mut fds = [rustix::event::PollFd::new(fd, rustix::event::PollFlags::IN)];
            let timeout = rustix::event::Timespec {
                tv_sec: 0,
                tv_nsec: 100_000_000,
            };
            let _ = rustix::event::poll(&mut fds, Some(&timeout));
        }
    }

    // --- PASIDs ----------------------------------------------------------------------------------

    /// PASID_CTL.ENABLE of `pasid`.
    pub fn pasid_ctl(&mut self, pasid: u32, enable: bool) {
        self.write32(offset::PASID_SEL, pasid);
        self.write32(
            offset::PASID_CTL,
            PasidCtl::new().with_enable(enable).into_bits(),
        );
    }

    pub fn read_pasid_ctl(&mut self, pasid: u32) -> PasidCtl {
        self.write32(offset::PASID_SEL, pasid);
        PasidCtl::from_bits(self.read32(offset::PASID_CTL))
    }

    /// Waits until `pasid` no longer drains (the driver's unbind step before the IOMMU's).
    pub fn wait_drained(&mut self, pasid: u32) {
        let deadline = Instant::now() + TIMEOUT;
        while self.read_pasid_ctl(pasid).draining() {
            assert!(Instant::now() < deadline, "drain never finished");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    // --- software errors ---------------------------------------------------------------------------

    pub fn swerr(&mut self) -> (Swerr, u64) {
        (
            Swerr::from_bits(self.read64(offset::SWERR)),
            self.read64(offset::SWERR_ADDR),
        )
    }

    /// Clears SWERR: the record and OVERFLOW.
    pub fn clear_swerr(&mut self) {
        self.clear_swerr_seen(Swerr::new().with_valid(true).with_overflow(true));
    }

    /// Clears what a read of SWERR showed (VALID and OVERFLOW as read), as a driver does: an
    /// error reported since then leaves OVERFLOW set.
    pub fn clear_swerr_seen(&mut self, seen: Swerr) {
        let w1c = Swerr::new()
            .with_valid(seen.valid())
            .with_overflow(seen.overflow());
        self.write64(offset::SWERR, w1c.into_bits());
    }

    /// Waits for a software error and clears it.
    pub fn wait_swerr(&mut self) -> (Swerr, u64) {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let (swerr, addr) = self.swerr();
            if swerr.valid() {
                self.clear_swerr_seen(swerr);
                return (swerr, addr);
            }
            assert!(Instant::now() < deadline, "no software error");
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// `len` bytes of a recognisable pattern, different for each `seed`.
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 8) as u8)
        .collect()
}
