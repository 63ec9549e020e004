//! A PCI Express function's 4 KiB configuration space with per-bit write semantics.
//! Follows PCI Local Bus 3.0 §6.1 and PCI Express Base 4.0 §7.2 (RO, RW and RW1C fields).
//!
//! Every byte has a value, a write mask (RW bits) and a write-1-to-clear mask (RW1C bits);
//! a write is `(old & !wmask) | (new & wmask)`, then RW1C bits written as 1 are cleared.
//! Capabilities with side effects register a hook that runs after a write touches them.

use std::ops::Range;

/// Size of PCI Express configuration space.
pub const CONFIG_SPACE_SIZE: usize = 4096;

/// The raw registers with their masks; what capability code and hooks work on.
#[derive(Clone)]
pub struct Registers {
    data: Box<[u8; CONFIG_SPACE_SIZE]>,
    wmask: Box<[u8; CONFIG_SPACE_SIZE]>,
    w1c: Box<[u8; CONFIG_SPACE_SIZE]>,
}

impl std::fmt::Debug for Registers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registers")
            .field("vendor", &self.u16(0))
            .field("device", &self.u16(2))
            .finish()
    }
}

impl Default for Registers {
    fn default() -> Self {
        let zero = || Box::new([0u8; CONFIG_SPACE_SIZE]);
        Registers {
            data: zero(),
            wmask: zero(),
            w1c: zero(),
        }
    }
}

impl Registers {
    /// Defines a little-endian field of `N` bytes: its value, RW mask and RW1C mask.
    pub fn define<const N: usize>(&mut self, offset: usize, value: u64, wmask: u64, w1c: u64) {
        for i in 0..N {
            let shift = 8 * i;
            self.data[offset + i] = (value >> shift) as u8;
            self.wmask[offset + i] = (wmask >> shift) as u8;
            self.w1c[offset + i] = (w1c >> shift) as u8;
        }
    }

    /// Reads a little-endian u16 (no side effects).
    pub fn u16(&self, offset: usize) -> u16 {
        u16::from_le_bytes([self.data[offset], self.data[offset + 1]])
    }

    /// Reads a little-endian u32 (no side effects).
    pub fn u32(&self, offset: usize) -> u32 {
        let b = &self.data[offset..offset + 4];
        u32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }

    /// Sets a u16 as the device (not the guest): masks do not apply.
    pub fn set_u16(&mut self, offset: usize, value: u16) {
        self.data[offset..offset + 2].copy_from_slice(&value.to_le_bytes());
    }

    /// Sets a u32 as the device.
    pub fn set_u32(&mut self, offset: usize, value: u32) {
        self.data[offset..offset + 4].copy_from_slice(&value.to_le_bytes());
    }

    /// Sets a byte as the device.
    pub fn set_u8(&mut self, offset: usize, value: u8) {
        self.data[offset] = value;
    }
}

/// Runs after a guest write touched `range`; gets the capability's base offset.
#[derive(Clone, Debug)]
pub struct WriteHook {
    /// Bytes the hook watches.
    pub range: Range<usize>,
    /// The side effect.
    pub after_write: fn(&mut Registers, usize),
}

/// Why an access was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("config access of {len} bytes at 0x{offset:x} is outside the 4 KiB space")]
pub struct OutOfRange {
    /// Offset.
    pub offset: u64,
    /// Length.
    pub len: usize,
}

/// Configuration space of one function.
#[derive(Clone, Debug)]
pub struct ConfigSpace {
    regs: Registers,
    power_on: Registers,
    hooks: Vec<WriteHook>,
}

impl ConfigSpace {
    /// A configuration space whose power-on state is `regs`.
    pub fn new(regs: Registers, hooks: Vec<WriteHook>) -> Self {
        ConfigSpace {
            power_on: regs.clone(),
            regs,
            hooks,
        }
    }

    fn range(offset: u64, len: usize) -> Result<Range<usize>, OutOfRange> {
        let start = usize::try_from(offset).map_err(|_| OutOfRange { offset, len })?;
        match start.checked_add(len) {
            Some(end) if end <= CONFIG_SPACE_SIZE => Ok(start..end),
            _ => Err(OutOfRange { offset, len }),
        }
    }

    /// A guest read.
    pub fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), OutOfRange> {
        let range = Self::range(offset, buf.len())?;
        buf.copy_from_slice(&self.regs.data[range]);
        Ok(())
    }

    /// A guest write: read-only bits keep their value, RW1C bits clear on 1, hooks run.
    pub fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), OutOfRange> {
        let range = Self::range(offset, data.len())?;
        for (i, &new) in range.clone().zip(data) {
            let r = &mut self.regs;
            let kept = r.data[i] & !r.wmask[i];
            r.data[i] = (kept | (new & r.wmask[i])) & !(new & r.w1c[i]);
        }
        for hook in &self.hooks {
            if hook.range.start < range.end && range.start < hook.range.end {
                (hook.after_write)(&mut self.regs, hook.range.start);
            }
        }
        Ok(())
    }

    /// Back to power-on state (device reset).
    pub fn reset(&mut self) {
        self.regs = self.power_on.clone();
    }

    /// The registers, for the device's own reads.
    pub fn regs(&self) -> &Registers {
        &self.regs
    }

    /// The registers, for the device's own updates (status bits it owns).
    pub fn regs_mut(&mut self) -> &mut Registers {
        &mut self.regs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn space() -> ConfigSpace {
        let mut r = Registers::default();
        r.define::<2>(0x0, 0x1234, 0, 0);
        r.define::<2>(0x4, 0, 0x0006, 0);
        r.define::<2>(0x6, 0x8110, 0, 0x8100);
        ConfigSpace::new(r, vec![])
    }

    #[test]
    fn test_write_read_only_field_is_ignored() {
        let mut c = space();
        c.write(0, &[0xff, 0xff]).unwrap();
        assert_eq!(c.regs().u16(0), 0x1234);
    }

    #[test]
    fn test_write_rw_bits_only_change_under_mask() {
        let mut c = space();
        c.write(4, &[0xff, 0xff]).unwrap();
        assert_eq!(c.regs().u16(4), 0x0006);
    }

    #[test]
    fn test_write_one_clears_w1c_bits_and_zero_keeps_them() {
        let mut c = space();
        c.write(6, &[0x00, 0x00]).unwrap();
        assert_eq!(c.regs().u16(6), 0x8110);
        c.write(6, &[0x00, 0x80]).unwrap();
        assert_eq!(c.regs().u16(6), 0x0110);
    }

    #[test]
    fn test_access_past_end_is_refused() {
        let mut c = space();
        assert!(c.write(4095, &[0, 0]).is_err());
        assert!(c.read(u64::MAX, &mut [0]).is_err());
        c.read(4092, &mut [0; 4]).unwrap();
    }

    #[test]
    fn test_reset_restores_power_on_values() {
        let mut c = space();
        c.write(4, &[0x06, 0]).unwrap();
        c.reset();
        assert_eq!(c.regs().u16(4), 0);
    }
}
