//! The front end's own thread: runs the invalidation queue and register-based invalidations,
//! re-reads the guest's entries, writes page requests and fault records, and sends interrupt
//! messages — one request at a time, in order. It never holds the register lock while it
//! waits for anything outside: guest memory is read only where it is mapped into the server
//! (no DMA message), and the host IOMMU and interrupt messages are called without the lock.
//! VT-d spec 6.5.2 (queued invalidation: a wait descriptor completes after everything before it).

use std::sync::mpsc::{Receiver, Sender};
use std::sync::Arc;

use log::{debug, trace};

use super::devices::Devices;
use super::faults;
use super::interrupts;
use super::invalidate::Forwarder;
use super::registers::{self, Outbox, Registers};
use super::stats::Counters;
use super::tables::Tables;
use super::Shared;
use crate::iommu::{DeviceId, IommuFault};
use crate::vtd::entries::EntryReader;
use crate::vtd::qi::{self, Executor, QueueError, QueueGeometry};
use crate::vtd::reg_inv;
use crate::vtd::regs::{Fsts, IqOffset, Iva, DMAR_IQH_REG, DMAR_IQT_REG};

/// What the front end's thread is asked to do.
#[derive(Debug)]
pub enum Work {
    /// Run the invalidation queue from IQH to IQT.
    Queue,
    /// The root table or TE changed: re-read every device's entries.
    Reevaluate,
    /// A register-based context-cache invalidation (CCMD.ICC set).
    ContextCommand,
    /// A register-based IOTLB invalidation (IOTLB.IVT set).
    IotlbCommand,
    /// Send these interrupt messages.
    Send(Outbox),
    /// Send the interrupt messages held while the backlog was full.
    SendLate,
    /// A fault the host IOMMU reported for a device behind the unit.
    Fault(IommuFault),
    /// The unit was reset: every device back to untranslated.
    Reset,
    /// Signal when everything before has been done.
    Flush(Sender<()>),
    /// Stop the thread.
    Stop,
}

/// Where the next descriptor is, if the queue has one to run.
enum Next {
    Idle,
    Error(QueueError),
    At {
        queue: QueueGeometry,
        head: u64,
        epoch: u64,
    },
}

fn next_descriptor(regs: &Registers) -> Next {
    let Some(queue) = regs.queue else {
        return Next::Idle;
    };
    if regs.regs.load::<Fsts>().iqe() {
        return Next::Idle;
    }
    let tail = IqOffset::from_bits(regs.regs.get(DMAR_IQT_REG)).bytes();
    if !queue.valid_offset(tail) {
        return Next::Error(QueueError::InvalidTail);
    }
    let head = IqOffset::from_bits(regs.regs.get(DMAR_IQH_REG)).bytes();
    if head == tail {
        return Next::Idle;
    }
    Next::At {
        queue,
        head,
        epoch: regs.epoch,
    }
}

/// The thread's state: what the host IOMMU was told.
pub struct Worker {
    shared: Arc<Shared>,
    devices: Devices,
    entries: EntryReader,
}

impl Worker {
    /// A worker for `devices`.
    pub fn new(shared: Arc<Shared>, devices: &[DeviceId]) -> Self {
        Worker {
            entries: EntryReader::new(shared.config),
            devices: Devices::new(devices),
            shared,
        }
    }

    /// Serves requests until `Stop` (or every sender is gone).
    pub fn run(mut self, requests: Receiver<Work>) {
        for work in requests {
            self.shared.backlog.taken(&work);
            match work {
                Work::Stop => break,
                Work::Flush(done) => {
                    let _ = done.send(());
                }
                Work::Send(outbox) => self.deliver(outbox),
                Work::SendLate => self.deliver(self.shared.backlog.take_late()),
                Work::Reset => self.devices.clear(&*self.shared.iommu, &self.shared.stats),
                Work::Reevaluate => self.reevaluate(),
                Work::Queue => self.run_queue(),
                Work::ContextCommand => self.context_command(),
                Work::IotlbCommand => self.iotlb_command(),
                Work::Fault(fault) => self.fault(&fault),
            }
        }
    }

    fn deliver(&self, outbox: Outbox) {
        interrupts::deliver(&*self.shared.irq, &outbox.interrupts, &self.shared.stats);
        let iommu = &*self.shared.iommu;
        for resp in outbox.responses {
            let response = crate::iommu::PageResponse {
                device: DeviceId(resp.source.0),
                pasid: resp.pasid,
                group: resp.prg_index,
                code: resp.code,
            };
            if let Err(e) = iommu.page_response(response) {
                debug!("vIOMMU: unit's own page response dropped: {e}");
            }
        }
    }

    fn reevaluate(&mut self) {
        let owned = self.snapshot();
        let tables = owned.borrow(&self.entries);
        let (iommu, counters) = (&*self.shared.iommu, &self.shared.stats);
        if tables.enabled {
            self.devices.refresh_all(&tables, iommu, counters);
        } else {
            self.devices.clear(iommu, counters);
        }
    }

    fn fault(&mut self, fault: &IommuFault) {
        let owned = self.snapshot();
        let tables = owned.borrow(&self.entries);
        let mut outbox = Outbox::default();
        faults::handle(&self.shared, &self.devices, &tables, fault, &mut outbox);
        drop(tables);
        self.deliver(outbox);
    }

    /// Runs `f` with an executor over the current tables, then sends what it raised.
    fn with_forwarder(&mut self, f: impl FnOnce(&mut Forwarder<'_>)) {
        let view_tables = self.snapshot();
        let mut outbox = Outbox::default();
        {
            let tables = view_tables.borrow(&self.entries);
            let mut forwarder = Forwarder {
                devices: &mut self.devices,
                tables: &tables,
                iommu: &*self.shared.iommu,
                counters: &self.shared.stats,
                outbox: &mut outbox,
            };
            f(&mut forwarder);
        }
        self.deliver(outbox);
    }

    /// What decides translation now, as the registers latched it.
    fn snapshot(&self) -> OwnedTables {
        let regs = self.shared.regs();
        OwnedTables {
            root: regs.root,
            enabled: regs.translation_enabled(),
            root_latched: regs.regs.load::<crate::vtd::regs::Gsts>().rtps(),
            mem: self.shared.mem.clone(),
        }
    }

    /// Runs the invalidation queue until it is empty or stops on an error.
    fn run_queue(&mut self) {
        loop {
            let next = next_descriptor(&self.shared.regs());
            let (queue, head, epoch) = match next {
                Next::Idle => return,
                Next::Error(error) => return self.queue_error(error),
                Next::At { queue, head, epoch } => (queue, head, epoch),
            };
            if let Err(error) = self.run_descriptor(&queue, head) {
                return self.queue_error(error);
            }
            let mut regs = self.shared.regs();
            if regs.epoch != epoch || regs.queue != Some(queue) {
                return; // reset or QI disabled meanwhile: the old queue is gone
            }
            let next = (head + queue.desc_size()) % queue.size;
            regs.regs
                .set(DMAR_IQH_REG, IqOffset::from_bytes(next).into_bits());
        }
    }

    /// Fetches and performs the descriptor at `head`; a wait descriptor completes here, after
    /// everything before it (device-TLB invalidations included: they return when done).
    fn run_descriptor(&mut self, queue: &QueueGeometry, head: u64) -> Result<(), QueueError> {
        let view = self.shared.mem.local_view();
        let desc = queue.fetch(&view, head).ok_or(QueueError::Memory)?;
        trace!("vIOMMU: QI descriptor {:?}", desc.kind());
        Counters::bump(&self.shared.stats.descriptors);
        let config = self.shared.config;
        let mut result = Ok(None);
        self.with_forwarder(|forwarder| {
            result = qi::execute(&config, queue, &desc, forwarder);
        });
        if let Some(wait) = result? {
            qi::write_wait_status(&view, &wait)?;
            let mut outbox = Outbox::default();
            qi::wait_event(&mut self.shared.regs().regs, &wait, &mut outbox);
            self.deliver(outbox);
        }
        Ok(())
    }

    fn queue_error(&mut self, error: QueueError) {
        let mut outbox = Outbox::default();
        qi::report_error(&mut self.shared.regs().regs, error, &mut outbox);
        self.deliver(outbox);
    }

    /// CCMD (11.4.7): invalidate as asked, then clear ICC and report the granularity done.
    fn context_command(&mut self) {
        let ccmd = registers::context_command(&self.shared.regs());
        if let Some(inv) = reg_inv::context_invalidation(ccmd) {
            self.with_forwarder(|f| f.context_cache(inv));
        }
        let mut regs = self.shared.regs();
        let now = registers::context_command(&regs);
        regs.regs.store(now.with_icc(false).with_caig(ccmd.cirg()));
    }

    /// IOTLB register (11.4.8.1): invalidate as asked, then clear IVT and report in IAIG the
    /// granularity performed (Linux prints "Flush IOTLB failed" when it is 0).
    fn iotlb_command(&mut self) {
        let (cmd, iva) = {
            let regs = self.shared.regs();
            (registers::iotlb_command(&regs), regs.regs.load::<Iva>())
        };
        let requested = reg_inv::iotlb_invalidation(cmd, iva);
        let config = self.shared.config;
        let performed = requested.map(|inv| qi::coarsen_iotlb(&config, inv));
        if let Some(inv) = performed {
            self.with_forwarder(|f| f.iotlb(inv));
        }
        let iaig = reg_inv::performed_granularity(performed);
        let mut regs = self.shared.regs();
        let now = registers::iotlb_command(&regs);
        regs.regs.store(now.with_ivt(false).with_iaig(iaig));
    }
}

/// The parts of [`Tables`] that outlive a borrow of the worker.
struct OwnedTables {
    root: Option<crate::vtd::translate::RootTable>,
    enabled: bool,
    root_latched: bool,
    mem: crate::mem::GuestMemory,
}

impl OwnedTables {
    fn borrow<'a>(&self, entries: &'a EntryReader) -> Tables<'a> {
        Tables {
            view: self.mem.local_view(),
            entries,
            root: self.root,
            enabled: self.enabled,
            root_latched: self.root_latched,
        }
    }
}
