//! Interrupt messages of the front end (fault event, page request event, invalidation
//! completion event: VT-d spec 7.3, 7.5, 6.5.2.9) leave as MSI writes. With QEMU as the client
//! an MSI is a vfio-user DMA_WRITE of the data to the address, which QEMU performs on a
//! function's bus-master address space: the carrier is whatever function has bus mastering on.

use std::sync::atomic::{AtomicBool, Ordering};

use log::{debug, warn};

use super::stats::Counters;
use crate::vtd::sink::VtdInterrupt;
use crate::vtd::translate::INTERRUPT_RANGE;

/// Sends interrupt messages on behalf of the front end.
pub trait InterruptPort: Send + Sync {
    /// Sends a 32-bit write of `data` to `addr`. Returns false when no function can carry it
    /// now (no client, or none with bus mastering on). Called on the front end's thread only,
    /// never under a lock an MMIO reply waits on: it may wait for the client's reply (a port
    /// should not, where it can help it: the front end's next job may be the guest's answer).
    fn send(&self, addr: u64, data: u32) -> bool;
}

/// Whether a message was already dropped for want of a carrier (logged once at warn level).
static DROPPED_BEFORE: AtomicBool = AtomicBool::new(false);
/// Whether a message to an address outside the interrupt range was already dropped.
static MISADDRESSED_BEFORE: AtomicBool = AtomicBool::new(false);

/// Sends `irqs` in order through `port`, counting what went and what could not.
pub fn deliver(port: &dyn InterruptPort, irqs: &[VtdInterrupt], counters: &Counters) {
    for irq in irqs {
        // The unit's event address registers must name the interrupt range (VT-d spec 5.1:
        // FEEx_xxxxh). Anything else would make the unit a DMA engine the guest aims at its own
        // RAM or at device MMIO through the client, bypassing every translation.
        if !INTERRUPT_RANGE.contains(&irq.addr) {
            counters.interrupts_dropped.fetch_add(1, Ordering::Relaxed);
            if !MISADDRESSED_BEFORE.swap(true, Ordering::Relaxed) {
                warn!(
                    "vIOMMU {:?} interrupt to 0x{:x} dropped: not an interrupt address \
                     (further ones are logged at debug level)",
                    irq.kind, irq.addr
                );
            } else {
                debug!(
                    "vIOMMU {:?} interrupt to 0x{:x} dropped",
                    irq.kind, irq.addr
                );
            }
            continue;
        }
        if port.send(irq.addr, irq.data) {
            counters.interrupts_sent.fetch_add(1, Ordering::Relaxed);
            debug!(
                "vIOMMU {:?} interrupt: 0x{:x} -> 0x{:x}",
                irq.kind, irq.data, irq.addr
            );
            continue;
        }
        counters.interrupts_dropped.fetch_add(1, Ordering::Relaxed);
        if !DROPPED_BEFORE.swap(true, Ordering::Relaxed) {
            warn!(
                "vIOMMU {:?} interrupt (0x{:x} -> 0x{:x}) dropped: no function behind the unit \
                 could carry it as a DMA write (none has bus mastering on, or the client refused \
                 the address; further drops are logged at debug level)",
                irq.kind, irq.data, irq.addr
            );
        } else {
            debug!("vIOMMU {:?} interrupt dropped: no carrier", irq.kind);
        }
    }
}
