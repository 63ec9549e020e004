//! Primary fault logging: the fault recording registers (FRCD), FSTS.PFO/PPF/FRI, and the fault
//! event interrupt. VT-d spec 7.2.1 (primary fault logging), 7.3 (fault event), 11.4 (FSTS,
//! FECTL, FRCD registers).

use super::cap::{VtdConfig, FRCD_OFFSET};
use super::regs::{fault_record_count, Frcd, Fsts, RegisterFile, FAULT_EVENT, FRCD_SIZE};
use super::request::Fault;
use super::sink::VtdSink;
use super::walk::PAGE_SHIFT;

/// What happened to a fault handed to the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordOutcome {
    /// Recorded in fault recording register `index`.
    Recorded {
        /// The register used.
        index: u16,
    },
    /// Not recorded: FSTS.PFO was set already, or the next register still held an unserviced
    /// fault (which sets PFO).
    Overflow,
    /// Not recorded: the entry that decided had Fault Processing Disable set.
    Suppressed,
}

/// The primary fault log's hardware state beyond its registers: the internal index of the next
/// fault recording register to use (7.2.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FaultLog {
    next: u16,
    count: u16,
}

/// Offsets of the two halves of fault recording register `index`.
fn frcd_offsets(index: u16) -> (u64, u64) {
    let lo = FRCD_OFFSET + u64::from(index) * FRCD_SIZE;
    (lo, lo + FRCD_SIZE / 2)
}

/// Fault recording register `index` as a whole.
pub fn frcd(regs: &RegisterFile, index: u16) -> Frcd {
    let (lo, hi) = frcd_offsets(index);
    Frcd::from_bits((u128::from(regs.get(hi)) << u64::BITS) | u128::from(regs.get(lo)))
}

fn set_frcd(regs: &mut RegisterFile, index: u16, value: Frcd) {
    let (lo, hi) = frcd_offsets(index);
    let bits = value.into_bits();
    // Each half is one 64-bit register: split the record into them.
    regs.set(lo, bits as u64);
    regs.set(hi, (bits >> u64::BITS) as u64);
}

/// Sets fault status bits for a new error (IQE, ...) and raises the fault event if it is a new
/// interrupt condition: none of the status fields was set before (11.4 FECTL_REG.IP).
pub fn report_status(regs: &mut RegisterFile, set: Fsts, sink: &mut dyn VtdSink) {
    let before: Fsts = regs.load();
    regs.store(Fsts::from_bits(before.into_bits() | set.into_bits()));
    if !before.any_status() {
        regs.raise_event(&FAULT_EVENT, sink);
    }
}

/// After software wrote FSTS: once every status field is serviced, a fault event held pending
/// by FECTL.IM is dropped (FECTL_REG.IP: "IP ... cleared ... software servicing all the pending
/// interrupt status fields").
pub fn status_written(regs: &mut RegisterFile) {
    if !regs.load::<Fsts>().any_status() {
        regs.event_serviced(&FAULT_EVENT);
    }
}

impl FaultLog {
    /// The log of a unit with `config`: index 0.
    pub fn new(config: &VtdConfig) -> Self {
        FaultLog {
            next: 0,
            count: fault_record_count(config),
        }
    }

    /// Number of fault recording registers.
    pub fn count(&self) -> u16 {
        self.count
    }

    /// The index of the register the next fault goes to.
    pub fn next_index(&self) -> u16 {
        self.next
    }

    /// Back to register 0: hardware does this when both translation and interrupt remapping
    /// are disabled (7.2.1).
    pub fn reset_index(&mut self) {
        self.next = 0;
    }

    /// Records a translation fault (7.2.1): unless PFO is set or the register at the index still
    /// holds a fault, the fault goes there, F and PPF are set (FRI too, when PPF was clear), the
    /// index moves on, and a fault event is raised if this is a new interrupt condition.
    pub fn record(
        &mut self,
        regs: &mut RegisterFile,
        fault: &Fault,
        sink: &mut dyn VtdSink,
    ) -> RecordOutcome {
        if fault.fpd {
            return RecordOutcome::Suppressed;
        }
        let before: Fsts = regs.load();
        if before.pfo() {
            return RecordOutcome::Overflow;
        }
        let index = self.next;
        if frcd(regs, index).f() {
            regs.store(before.with_pfo(true));
            return RecordOutcome::Overflow;
        }
        let request = &fault.request;
        // EXE and PRIV travel in the PASID prefix: a request without PASID has neither (the
        // translator ignores them too), and the fields are defined only with PP set.
        let with_pasid = request.pasid.is_some();
        let record = Frcd::new()
            .with_fi(request.addr >> PAGE_SHIFT)
            .with_sid(request.source.0)
            .with_pp(with_pasid)
            .with_pv(request.pasid.map_or(0, |p| p.raw()))
            .with_exe(with_pasid && request.access.exec)
            .with_privileged(with_pasid && request.access.privileged)
            .with_fr(fault.reason.code())
            // T: 0 for a write request, 1 for a read (Linux prints "DMA Read"/"DMA Write").
            .with_t(!request.access.write)
            .with_f(true);
        set_frcd(regs, index, record);
        let mut after = before.with_ppf(true);
        if !before.ppf() {
            // FRI names the first pending fault: set only when PPF goes from 0 to 1.
            after.set_fri(index as u8);
        }
        regs.store(after);
        self.next = (index + 1) % self.count;
        if !before.any_status() {
            regs.raise_event(&FAULT_EVENT, sink);
        }
        RecordOutcome::Recorded { index }
    }

    /// After software wrote a fault recording register (F is RW1C): PPF follows the F bits,
    /// and a pending fault event is dropped once nothing is left to service.
    pub fn frcd_written(&self, regs: &mut RegisterFile) {
        let pending = (0..self.count).any(|i| frcd(regs, i).f());
        regs.update(|fsts: Fsts| fsts.with_ppf(pending));
        status_written(regs);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vtd::fault::FaultReason;
    use crate::vtd::ids::{Pasid, SourceId};
    use crate::vtd::regs::{DMAR_FECTL_REG, DMAR_FSTS_REG};
    use crate::vtd::request::{Access, Request};
    use crate::vtd::sink::RecordingSink;

    fn fault(addr: u64, write: bool, fpd: bool) -> Fault {
        let access = if write { Access::WRITE } else { Access::READ };
        Fault {
            reason: FaultReason::ContextEntryNotPresent,
            request: Request {
                source: SourceId::new(0, 5, 0),
                pasid: Pasid::new(7),
                addr,
                access,
            },
            fpd,
        }
    }

    fn setup(records: u16) -> (RegisterFile, FaultLog, RecordingSink) {
        let config = VtdConfig {
            fault_records: records,
            ..VtdConfig::default()
        };
        let mut regs = RegisterFile::new(&config);
        regs.write(DMAR_FECTL_REG, 4, 0);
        (regs, FaultLog::new(&config), RecordingSink::new())
    }

    #[test]
    fn test_record_fills_fields_and_raises_one_event() {
        let (mut regs, mut log, mut sink) = setup(2);
        assert_eq!(
            log.record(&mut regs, &fault(0x1234_5678, false, false), &mut sink),
            RecordOutcome::Recorded { index: 0 }
        );
        let rec = frcd(&regs, 0);
        assert!(rec.f() && rec.t() && rec.pp());
        assert_eq!(rec.fi() << PAGE_SHIFT, 0x1234_5000);
        assert_eq!((rec.sid(), rec.pv(), rec.fr()), (0x28, 7, 2));
        let fsts: Fsts = regs.load();
        assert!(fsts.ppf() && !fsts.pfo());
        assert_eq!(fsts.fri(), 0);
        assert_eq!(sink.interrupts().len(), 1);
        // A second fault while PPF is set is no new interrupt condition.
        log.record(&mut regs, &fault(0x2000, true, false), &mut sink);
        assert!(!frcd(&regs, 1).t(), "a write");
        assert_eq!(sink.interrupts().len(), 1);
    }

    #[test]
    fn test_exe_and_priv_only_with_a_pasid() {
        let (mut regs, mut log, mut sink) = setup(2);
        let mut f = fault(0x1000, false, false);
        f.request.access.exec = true;
        f.request.access.privileged = true;
        log.record(&mut regs, &f, &mut sink);
        f.request.pasid = None;
        log.record(&mut regs, &f, &mut sink);
        let (with, without) = (frcd(&regs, 0), frcd(&regs, 1));
        assert!(with.pp() && with.exe() && with.privileged());
        assert!(!without.pp() && !without.exe() && !without.privileged());
    }

    #[test]
    fn test_overflow_when_next_register_is_full_then_pfo_blocks() {
        let (mut regs, mut log, mut sink) = setup(1);
        log.record(&mut regs, &fault(0x1000, false, false), &mut sink);
        assert_eq!(
            log.record(&mut regs, &fault(0x2000, false, false), &mut sink),
            RecordOutcome::Overflow
        );
        assert!(regs.load::<Fsts>().pfo());
        assert_eq!(frcd(&regs, 0).fi(), 1, "the first record is kept");
        // Clearing F does not let new faults in while PFO is set.
        regs.write(FRCD_OFFSET + 12, 4, 1 << 31);
        log.frcd_written(&mut regs);
        assert_eq!(
            log.record(&mut regs, &fault(0x3000, false, false), &mut sink),
            RecordOutcome::Overflow
        );
        regs.write(DMAR_FSTS_REG, 4, 1);
        assert!(matches!(
            log.record(&mut regs, &fault(0x3000, false, false), &mut sink),
            RecordOutcome::Recorded { .. }
        ));
    }

    #[test]
    fn test_fpd_suppresses_recording() {
        let (mut regs, mut log, mut sink) = setup(2);
        assert_eq!(
            log.record(&mut regs, &fault(0x1000, false, true), &mut sink),
            RecordOutcome::Suppressed
        );
        assert!(!frcd(&regs, 0).f());
        assert!(sink.events.is_empty());
    }

    #[test]
    fn test_ppf_follows_f_bits_and_fri_names_first_pending() {
        let (mut regs, mut log, mut sink) = setup(4);
        for addr in [0x1000, 0x2000] {
            log.record(&mut regs, &fault(addr, false, false), &mut sink);
        }
        regs.write(FRCD_OFFSET + 8, 8, 1 << 63);
        log.frcd_written(&mut regs);
        assert!(regs.load::<Fsts>().ppf(), "register 1 still pending");
        regs.write(FRCD_OFFSET + FRCD_SIZE + 8, 8, 1 << 63);
        log.frcd_written(&mut regs);
        assert!(!regs.load::<Fsts>().ppf());
        log.record(&mut regs, &fault(0x3000, false, false), &mut sink);
        assert_eq!(
            regs.load::<Fsts>().fri(),
            2,
            "index continues round the ring"
        );
        assert_eq!(sink.interrupts().len(), 2);
    }
}
