//! accel software error reporting: the SWERR record (the first error the device could not
//! report in a completion record, with an overflow flag, as Intel DSA's SWERROR register,
//! DSA spec §9.2.15) and the error interrupt (ERRCTL).

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard};

use log::debug;

use super::completion::Status;
use super::regs::{ErrCtl, Swerr};
use crate::endpoint::Interrupts;

/// Where an error happened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Origin {
    /// Work queue and ring slot, when a descriptor is concerned.
    pub slot: Option<(u8, u16)>,
    /// Index in a batch, when a batch's descriptor is concerned.
    pub batch_index: Option<u16>,
}

/// The SWERR record and the error interrupt.
#[derive(Debug)]
pub struct ErrorLog {
    record: Mutex<(Swerr, u64)>,
    ctl: AtomicU32,
    irqs: Interrupts,
}

impl ErrorLog {
    /// No error recorded, interrupt off.
    pub fn new(irqs: Interrupts) -> Self {
        ErrorLog {
            record: Mutex::new((Swerr::new(), 0)),
            ctl: AtomicU32::new(0),
            irqs,
        }
    }

    fn lock(&self) -> MutexGuard<'_, (Swerr, u64)> {
        self.record.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records `code` (or only OVERFLOW when a record is pending) and raises the error
    /// interrupt.
    pub fn report(&self, code: Status, origin: Origin, addr: u64) {
        self.record(code, origin, addr);
        self.interrupt();
    }

    /// Records `code` (or only OVERFLOW when a record is pending); the caller raises the
    /// error interrupt (a queue engine does once the queue counted the descriptor).
    pub fn record(&self, code: Status, origin: Origin, addr: u64) {
        self.record_if(|| true, code, origin, addr);
    }

    /// As [`ErrorLog::record`], but only if `current()` still holds under the record's lock.
    /// A reset clears the record under that lock after it has made older work stale, so an
    /// error of work the reset stopped is dropped rather than outliving the reset.
    pub fn record_if(
        &self,
        current: impl FnOnce() -> bool,
        code: Status,
        origin: Origin,
        addr: u64,
    ) {
        let mut record = self.lock();
        if !current() {
            debug!("accel software error {code:?} at {origin:?} dropped: reset since");
            return;
        }
        debug!("accel software error {code:?} at {origin:?}, address 0x{addr:x}");
        if record.0.valid() {
            record.0.set_overflow(true);
        } else {
            let (wq, index) = origin.slot.unwrap_or_default();
            // An OVERFLOW nobody cleared yet stays: errors were lost before this one.
            record.0 = Swerr::new()
                .with_overflow(record.0.overflow())
                .with_valid(true)
                .with_code(code.code())
                .with_wq_valid(origin.slot.is_some())
                .with_wq(wq)
                .with_desc_index(index)
                .with_batch(origin.batch_index.is_some())
                .with_batch_index(origin.batch_index.unwrap_or_default());
            record.1 = addr;
        }
    }

    /// Raises the error vector if ERRCTL enables it.
    pub fn interrupt(&self) {
        let ctl = self.ctl();
        if ctl.irq_enable() {
            self.irqs.trigger(ctl.vector().into());
        }
    }

    /// SWERR and SWERR_ADDR.
    pub fn read(&self) -> (Swerr, u64) {
        *self.lock()
    }

    /// A write to SWERR, each RW1C bit on its own: 1 in VALID clears the record, 1 in
    /// OVERFLOW clears OVERFLOW. A driver writes back what it read, so an error that arrived
    /// after its read (and set OVERFLOW) is not wiped out unseen.
    pub fn write(&self, w1c: Swerr) {
        let mut record = self.lock();
        if w1c.valid() {
            *record = (Swerr::new().with_overflow(record.0.overflow()), 0);
        }
        if w1c.overflow() {
            record.0.set_overflow(false);
        }
    }

    /// ERRCTL.
    pub fn ctl(&self) -> ErrCtl {
        ErrCtl::from_bits(self.ctl.load(Ordering::Acquire))
    }

    /// Writes ERRCTL.
    pub fn set_ctl(&self, ctl: ErrCtl) {
        self.ctl.store(ctl.into_bits(), Ordering::Release);
    }

    /// Power-on state.
    pub fn reset(&self) {
        *self.lock() = (Swerr::new(), 0);
        self.ctl.store(0, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_record_if_stale_leaves_the_record_clear() {
        let log = ErrorLog::new(Interrupts::new(4));
        log.record_if(|| false, Status::DmaError, Origin::default(), 0x1000);
        assert_eq!(log.read(), (Swerr::new(), 0));
        log.record_if(|| true, Status::DmaError, Origin::default(), 0x1000);
        assert!(log.read().0.valid());
    }

    #[test]
    fn test_report_keeps_the_first_error_and_flags_overflow() {
        let log = ErrorLog::new(Interrupts::new(4));
        let origin = Origin {
            slot: Some((1, 5)),
            batch_index: Some(2),
        };
        log.report(Status::BadCompletionAddr, origin, 0x1004);
        log.report(Status::RingReadFault, Origin::default(), 0x2000);
        let (swerr, addr) = log.read();
        assert!(swerr.valid() && swerr.overflow() && swerr.wq_valid() && swerr.batch());
        assert_eq!(swerr.code(), Status::BadCompletionAddr.code());
        assert_eq!(
            (swerr.wq(), swerr.desc_index(), swerr.batch_index()),
            (1, 5, 2)
        );
        assert_eq!(addr, 0x1004);
        log.write(swerr); // what was read: VALID and OVERFLOW
        assert_eq!(log.read(), (Swerr::new(), 0));
    }

    #[test]
    fn test_clearing_valid_keeps_an_overflow_the_driver_did_not_see() {
        let log = ErrorLog::new(Interrupts::new(4));
        log.report(Status::BadTail, Origin::default(), 9);
        let seen = log.read().0;
        log.report(Status::BadOpcode, Origin::default(), 10); // after the driver's read
        log.write(Swerr::from_bits(
            seen.into_bits()
                & Swerr::new()
                    .with_valid(true)
                    .with_overflow(true)
                    .into_bits(),
        ));
        let (after, addr) = log.read();
        assert!(!after.valid() && after.overflow(), "the lost error shows");
        assert_eq!(addr, 0);
        log.report(Status::BadSize, Origin::default(), 11);
        assert!(log.read().0.valid() && log.read().0.overflow());
        log.write(Swerr::new().with_valid(true).with_overflow(true));
        assert_eq!(log.read(), (Swerr::new(), 0));
    }

    #[test]
    fn test_write_without_valid_keeps_the_record() {
        let log = ErrorLog::new(Interrupts::new(4));
        log.report(Status::BadTail, Origin::default(), 9);
        log.write(Swerr::new().with_overflow(true));
        assert!(log.read().0.valid());
    }
}
