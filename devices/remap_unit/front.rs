//! The remap unit wired to the guest-facing VT-d: BAR0 is the front end's register file, and
//! its interrupt messages leave as DMA writes on the connection of a function behind the unit
//! that has bus mastering on (the remap unit has no guest driver, so its own Bus Master Enable
//! stays clear and QEMU would drop writes sent on its socket).

use log::debug;

use super::RegisterWindow;
use crate::endpoint::Bus;
use crate::viommu::{FrontEnd, InterruptPort};

impl RegisterWindow for FrontEnd {
    fn size(&self) -> u64 {
        self.window_size()
    }

    fn read(&self, offset: u64, size: usize) -> u64 {
        FrontEnd::read(self, offset, size)
    }

    fn write(&self, offset: u64, size: usize, value: u64) {
        FrontEnd::write(self, offset, size, value)
    }

    fn reset(&self) {
        FrontEnd::reset(self)
    }
}

/// Sends interrupt messages through the first function that can carry them (a refusal the
/// client sends back later is only logged: the message is gone by then).
#[derive(Debug)]
pub struct MsiRoute {
    carriers: Vec<Bus>,
}

impl MsiRoute {
    /// A route over the buses of the functions behind the unit, tried in order.
    pub fn new(carriers: Vec<Bus>) -> Self {
        MsiRoute { carriers }
    }
}

impl InterruptPort for MsiRoute {
    fn send(&self, addr: u64, data: u32) -> bool {
        for bus in self.carriers.iter().filter(|b| b.bus_master()) {
            let Some(port) = bus.mem.port() else {
                continue;
            };
            // Posted: the front end's thread must not wait for QEMU's reply, which can come
            // after the guest already answered the interrupt (README, "SVA in the guest").
            match port.post_write(addr, &data.to_le_bytes()) {
                Ok(()) => return true,
                Err(e) => debug!("MSI 0x{data:x} -> 0x{addr:x} not carried: {e}"),
            }
        }
        false
    }
}
