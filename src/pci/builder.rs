//! Lays out a function's configuration space: header, BARs, then the two capability chains.
//! Standard capabilities are placed from 0x40, extended ones from 0x100 (PCIe Base 4.0 §7.6).

use super::caps::{ext_header, Capability, ExtCapability};
use super::config::{ConfigSpace, Registers, WriteHook, CONFIG_SPACE_SIZE};
use super::header::{define_bar, define_header, offset, BarSpec, Identity};

const FIRST_CAP: usize = 0x40;
const STD_END: usize = 0x100;
const FIRST_EXT_CAP: usize = 0x100;

/// Why a layout is impossible.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LayoutError {
    /// Standard capabilities overflow the first 256 bytes.
    #[error("standard capabilities do not fit below 0x100")]
    StdSpaceFull,
    /// Extended capabilities overflow 4 KiB.
    #[error("extended capabilities do not fit below 0x1000")]
    ExtSpaceFull,
    /// A BAR has a bad size or index.
    #[error("bad BAR {0:?}")]
    BadBar(BarSpec),
}

/// Builds a [`ConfigSpace`]; records where each capability went.
#[derive(Debug)]
pub struct ConfigBuilder {
    regs: Registers,
    hooks: Vec<WriteHook>,
    next_std: usize,
    last_std: Option<usize>,
    next_ext: usize,
    last_ext: Option<usize>,
}

impl ConfigBuilder {
    /// A header for `id` with no BARs or capabilities.
    pub fn new(id: &Identity) -> Self {
        let mut regs = Registers::default();
        define_header(&mut regs, id);
        ConfigBuilder {
            regs,
            hooks: Vec::new(),
            next_std: FIRST_CAP,
            last_std: None,
            next_ext: FIRST_EXT_CAP,
            last_ext: None,
        }
    }

    /// Adds a memory BAR.
    pub fn bar(&mut self, bar: &BarSpec) -> Result<&mut Self, LayoutError> {
        if !bar.is_valid() {
            return Err(LayoutError::BadBar(*bar));
        }
        define_bar(&mut self.regs, bar);
        Ok(self)
    }

    /// Appends a standard capability; returns its offset.
    pub fn capability(&mut self, cap: &dyn Capability) -> Result<usize, LayoutError> {
        let base = self.next_std;
        let end = base + cap.size();
        if end > STD_END {
            return Err(LayoutError::StdSpaceFull);
        }
        self.regs.define::<1>(base, cap.id().into(), 0, 0);
        self.regs.define::<1>(base + 1, 0, 0, 0);
        cap.define(&mut self.regs, base);
        match self.last_std {
            Some(prev) => self.regs.set_u8(prev + 1, base as u8),
            None => self.regs.set_u8(offset::CAPABILITY_LIST, base as u8),
        }
        self.push_hook(cap.after_write(), base, end);
        self.last_std = Some(base);
        self.next_std = (end + 3) & !3;
        Ok(base)
    }

    /// Appends an extended capability; returns its offset.
    pub fn ext_capability(&mut self, cap: &dyn ExtCapability) -> Result<usize, LayoutError> {
        let base = self.next_ext;
        let end = base + cap.size();
        if end > CONFIG_SPACE_SIZE {
            return Err(LayoutError::ExtSpaceFull);
        }
        self.regs
            .define::<4>(base, ext_header(cap.id(), cap.version(), 0).into(), 0, 0);
        cap.define(&mut self.regs, base);
        if let Some(prev) = self.last_ext {
            let header = self.regs.u32(prev);
            self.regs.set_u32(prev, header | ext_header(0, 0, base));
        }
        self.push_hook(cap.after_write(), base, end);
        self.last_ext = Some(base);
        self.next_ext = (end + 3) & !3;
        Ok(base)
    }

    fn push_hook(&mut self, hook: Option<fn(&mut Registers, usize)>, base: usize, end: usize) {
        if let Some(after_write) = hook {
            self.hooks.push(WriteHook {
                range: base..end,
                after_write,
            });
        }
    }

    /// The finished configuration space.
    pub fn build(self) -> ConfigSpace {
        ConfigSpace::new(self.regs, self.hooks)
    }
}
