//! Guest-physical addresses as a type of their own, so an offset or an IOVA cannot be passed
//! where a GPA is expected. (Address newtypes as in rust-vmm vm-memory's `GuestAddress`.)

use std::fmt;

/// A guest-physical address: what the device sees on the bus in plain (untranslated) mode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Gpa(pub u64);

impl Gpa {
    /// The raw value.
    pub const fn raw(self) -> u64 {
        self.0
    }

    /// `self + offset`, or `None` on overflow.
    pub fn checked_add(self, offset: u64) -> Option<Gpa> {
        self.0.checked_add(offset).map(Gpa)
    }
}

impl fmt::Display for Gpa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{:x}", self.0)
    }
}
