//! The MSI-X table and PBA as bytes in a BAR (PCI 3.0 §6.8.2.6-.7). QEMU emulates the table
//! itself and never forwards it, but other clients read it, so it holds what was written,
//! starts with every vector masked, and the PBA reports pending vectors.

use super::interrupts::Interrupts;
use crate::pci::caps::msix::{TABLE_ENTRY_SIZE, VECTOR_CTRL_MASKED};

/// Table and PBA storage for `vectors` vectors.
#[derive(Debug)]
pub struct MsixTable {
    table: Vec<u8>,
    pba_offset: u64,
}

impl MsixTable {
    /// A power-on table; the PBA follows at `pba_offset` in the same BAR.
    pub fn new(vectors: u16, pba_offset: u64) -> Self {
        let mut t = MsixTable {
            table: vec![0; usize::from(vectors) * TABLE_ENTRY_SIZE as usize],
            pba_offset,
        };
        t.reset();
        t
    }

    /// Every entry zero and masked.
    pub fn reset(&mut self) {
        self.table.fill(0);
        for entry in self.table.chunks_mut(TABLE_ENTRY_SIZE as usize) {
            entry[12..16].copy_from_slice(&VECTOR_CTRL_MASKED.to_le_bytes());
        }
    }

    /// A read anywhere in the BAR: table bytes, PBA bits, zero elsewhere.
    pub fn read(&self, offset: u64, data: &mut [u8], irqs: &Interrupts) {
        for (i, byte) in data.iter_mut().enumerate() {
            let at = offset + i as u64;
            *byte = if let Some(b) = self.table.get(at as usize) {
                *b
            } else if at >= self.pba_offset {
                let first = ((at - self.pba_offset) * 8) as u32;
                (0..8)
                    .filter(|bit| irqs.pending(first + bit))
                    .fold(0, |acc, bit| acc | (1 << bit))
            } else {
                0
            };
        }
    }

    /// A write: only table bytes change; the PBA is read-only.
    pub fn write(&mut self, offset: u64, data: &[u8]) {
        for (i, byte) in data.iter().enumerate() {
            if let Some(b) = self.table.get_mut(offset as usize + i) {
                *b = *byte;
            }
        }
    }
}
