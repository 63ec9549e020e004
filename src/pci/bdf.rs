//! A PCI function's address in its segment: bus, device, function, and the requester ID it forms.
//! Follows PCI Express Base 4.0 §2.2.6.2 (Requester ID: bus 15:8, device 7:3, function 2:0).

use std::fmt;
use std::str::FromStr;

/// Devices on a bus (5 bits).
pub const DEVICES_PER_BUS: u8 = 32;
/// Functions in a device (3 bits).
pub const FUNCTIONS_PER_DEVICE: u8 = 8;

const DEVICE_SHIFT: u32 = 3;
const FUNCTION_MASK: u8 = FUNCTIONS_PER_DEVICE - 1;
const BUS_SHIFT: u32 = 8;

/// Bus, device and function of a PCI function (segment 0).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Bdf {
    bus: u8,
    device: u8,
    function: u8,
}

/// Why a text is not a PCI address.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BdfError {
    /// The device number is 32 or more.
    #[error("device 0x{0:x} out of range (0..0x20)")]
    Device(u32),
    /// The function number is 8 or more.
    #[error("function {0} out of range (0..8)")]
    Function(u32),
    /// Not of the forms `BB:DD.F`, `DD.F` or `DD`.
    #[error("{0:?} is not a PCI address (BB:DD.F, DD.F or DD, hexadecimal)")]
    Syntax(String),
}

impl Bdf {
    /// The function `bus:device.function`, or `None` when device ≥ 32 or function ≥ 8.
    pub const fn new(bus: u8, device: u8, function: u8) -> Option<Bdf> {
        if device >= DEVICES_PER_BUS || function >= FUNCTIONS_PER_DEVICE {
            return None;
        }
        Some(Bdf {
            bus,
            device,
            function,
        })
    }

    /// Bus number.
    pub const fn bus(self) -> u8 {
        self.bus
    }

    /// Device number (0..32).
    pub const fn device(self) -> u8 {
        self.device
    }

    /// Function number (0..8).
    pub const fn function(self) -> u8 {
        self.function
    }

    /// Device and function as one byte (Linux `PCI_DEVFN`).
    pub const fn devfn(self) -> u8 {
        (self.device << DEVICE_SHIFT) | self.function
    }

    /// The 16-bit requester ID this function puts in its requests (what
    /// `iommu::DeviceId` holds).
    pub const fn requester_id(self) -> u16 {
        ((self.bus as u16) << BUS_SHIFT) | self.devfn() as u16
    }

    /// The function a requester ID names (every 16-bit value is one).
    pub const fn from_requester_id(rid: u16) -> Bdf {
        let devfn = rid as u8;
        Bdf {
            bus: (rid >> BUS_SHIFT) as u8,
            device: devfn >> DEVICE_SHIFT,
            function: devfn & FUNCTION_MASK,
        }
    }

    /// The `DD.F` form of QEMU's `addr` device property (the bus is the one the device is
    /// plugged into, named separately).
    pub fn qemu_addr(self) -> String {
        format!("{:02x}.{:x}", self.device, self.function)
    }
}

impl From<Bdf> for u16 {
    fn from(bdf: Bdf) -> u16 {
        bdf.requester_id()
    }
}

impl fmt::Display for Bdf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:02x}:{:02x}.{:x}",
            self.bus, self.device, self.function
        )
    }
}

/// One hexadecimal field of at most `digits` digits.
fn hex_field(text: &str, digits: usize, whole: &str) -> Result<u32, BdfError> {
    let syntax = || BdfError::Syntax(whole.to_string());
    if text.is_empty() || text.len() > digits || !text.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(syntax());
    }
    u32::from_str_radix(text, 16).map_err(|_| syntax())
}

impl FromStr for Bdf {
    type Err = BdfError;

    /// `BB:DD.F` (lspci), or `DD.F` / `DD` (QEMU's `addr` property, bus 0, function 0 when
    /// omitted); all fields hexadecimal.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (bus, slot) = match text.split_once(':') {
            Some((bus, slot)) => (hex_field(bus, 2, text)?, slot),
            None => (0, text),
        };
        let (device, function) = match slot.split_once('.') {
            Some((device, function)) => {
                (hex_field(device, 2, text)?, hex_field(function, 1, text)?)
            }
            None => (hex_field(slot, 2, text)?, 0),
        };
        if device >= u32::from(DEVICES_PER_BUS) {
            return Err(BdfError::Device(device));
        }
        if function >= u32::from(FUNCTIONS_PER_DEVICE) {
            return Err(BdfError::Function(function));
        }
        // Each field was range-checked above (bus: two hex digits).
        Ok(Bdf {
            bus: bus as u8,
            device: device as u8,
            function: function as u8,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_parse_lspci_and_qemu_forms() {
        assert_eq!("00:04.0".parse(), Ok(Bdf::new(0, 4, 0).unwrap()));
        assert_eq!("3a:1f.7".parse(), Ok(Bdf::new(0x3a, 0x1f, 7).unwrap()));
        assert_eq!("04.0".parse(), Ok(Bdf::new(0, 4, 0).unwrap()));
        assert_eq!("05.3".parse(), Ok(Bdf::new(0, 5, 3).unwrap()));
        assert_eq!("1F".parse(), Ok(Bdf::new(0, 0x1f, 0).unwrap()));
    }

    #[test]
    fn test_parse_out_of_range_fields_are_errors() {
        assert_eq!("00:20.0".parse::<Bdf>(), Err(BdfError::Device(0x20)));
        assert_eq!("04.8".parse::<Bdf>(), Err(BdfError::Function(8)));
    }

    #[test]
    fn test_parse_malformed_text_is_a_syntax_error() {
        for bad in [
            "",
            ":",
            "04.",
            ".0",
            "100:04.0",
            "00:004.0",
            "04.00",
            "0x4.0",
            "00:04:0.0",
            "g4.0",
            " 04.0",
            "04.0 ",
            "+4.0",
            "00:04.0.1",
        ] {
            assert!(
                matches!(bad.parse::<Bdf>(), Err(BdfError::Syntax(_))),
                "{bad:?} parsed"
            );
        }
    }

    #[test]
    fn test_display_and_qemu_addr_round_trip() {
        let bdf = Bdf::new(0x12, 0x05, 3).unwrap();
        assert_eq!(bdf.to_string(), "12:05.3");
        assert_eq!(bdf.qemu_addr(), "05.3");
        assert_eq!(bdf.to_string().parse(), Ok(bdf));
        assert_eq!(
            bdf.qemu_addr().parse(),
            Ok(Bdf::new(0, 5, 3).unwrap()),
            "the addr form names no bus"
        );
    }

    #[test]
    fn test_requester_id_layout_and_inverse() {
        let bdf = Bdf::new(0x12, 0x05, 3).unwrap();
        assert_eq!(bdf.devfn(), 0x2b);
        assert_eq!(bdf.requester_id(), 0x122b);
        assert_eq!(u16::from(bdf), 0x122b);
        for rid in [0u16, 0x0018, 0x122b, 0xffff] {
            assert_eq!(Bdf::from_requester_id(rid).requester_id(), rid);
        }
    }

    #[test]
    fn test_new_rejects_out_of_range() {
        assert_eq!(Bdf::new(0, 32, 0), None);
        assert_eq!(Bdf::new(0, 0, 8), None);
        assert!(Bdf::new(0xff, 31, 7).is_some());
    }
}
