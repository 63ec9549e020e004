//! Fuzz target: one VT-d remapping unit driven through its registers — queued invalidation
//! from arbitrary descriptors and tails (VT-d spec 6.5.2), register-based invalidation, fault
//! recording (7.2), the page request queue (7.5) — with its tables in arbitrary guest memory.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vsvm::mem::Gpa;
use vsvm::vtd::regs::{
    Gcmd, DMAR_GCMD_REG, DMAR_IQA_REG, DMAR_IQT_REG, DMAR_PQA_REG, DMAR_RTADDR_REG,
};
use vsvm::vtd::sink::RecordingSink;
use vsvm::vtd::{PageRequest, RemappingUnit, Request, SourceId, VtdConfig};
use vsvm_fuzz::{guest_ram, Input, PAGE};

/// Guest RAM: root table in page 1, the invalidation queue in page 2, the PRQ in page 3.
const PAGES: u64 = 16;
const ROOT: u64 = PAGE;
const QUEUE: u64 = 2 * PAGE;
const PRQ: u64 = 3 * PAGE;
/// IQA.DW (bit 11): 256-bit descriptors, as scalable mode requires.
const IQA_DW: u64 = 1 << 11;
/// RTADDR.TTM = 01b (bits 11:10): scalable-mode root table.
const RTADDR_SCALABLE: u64 = 1 << 10;
const MAX_OPS: usize = 256;

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let smts = input.bool();
    let config = VtdConfig {
        smts,
        fault_records: 1 + input.below(256) as u16,
        prs: input.bool(),
        caching_mode: input.bool(),
        pasid_bits: input.below(21) as u8,
        ..VtdConfig::default()
    };
    let (_memfd, ram) = guest_ram(PAGES * PAGE);
    let mut unit = RemappingUnit::new(config, ram.clone());
    let window = unit.register_window_size();
    let mut sink = RecordingSink::new();
    // Mostly start from a unit set up as Linux leaves it, so that the queue runs at once.
    let wide = smts || input.bool();
    let desc_bytes: u64 = if wide { 32 } else { 16 };
    if !input.u8().is_multiple_of(4) {
        let mode = if smts { RTADDR_SCALABLE } else { 0 };
        unit.mmio_write(DMAR_RTADDR_REG, 8, ROOT | mode, &mut sink);
        let dw = if wide { IQA_DW } else { 0 };
        unit.mmio_write(DMAR_IQA_REG, 8, QUEUE | dw, &mut sink);
        unit.mmio_write(DMAR_PQA_REG, 8, PRQ, &mut sink);
        let go = Gcmd::new().with_srtp(true).with_qie(true).with_te(true);
        unit.mmio_write(DMAR_GCMD_REG, 4, go.into_bits().into(), &mut sink);
    }
    let slots = PAGE / desc_bytes;
    let mut tail = 0;
    for _ in 0..MAX_OPS {
        if input.is_empty() {
            break;
        }
        match input.u8() % 8 {
            0 | 1 => {
                let offset = input.vtd_offset(window);
                let size = input.mmio_size();
                unit.mmio_write(offset, size, input.word(PAGES), &mut sink);
            }
            2 => {
                let _ = unit.mmio_read(input.vtd_offset(window), input.mmio_size());
            }
            3 => {
                let slot = input.below(PAGES * PAGE / 8);
                let _ = ram.write_u64(Gpa(slot * 8), input.word(PAGES));
            }
            // Descriptors at the tail, then the doorbell: type in bits 3:0 and 11:9.
            4 | 5 => {
                for _ in 0..=input.below(4) {
                    let at = QUEUE + tail * desc_bytes;
                    let kind = (input.u64() & !0xe0f) | input.below(16);
                    let _ = ram.write_u64(Gpa(at), kind);
                    for word in 1..desc_bytes / 8 {
                        let _ = ram.write_u64(Gpa(at + 8 * word), input.word(PAGES));
                    }
                    tail = (tail + 1) % slots;
                }
                unit.mmio_write(DMAR_IQT_REG, 8, tail * desc_bytes, &mut sink);
            }
            6 => {
                let req = Request {
                    source: SourceId(input.u16()),
                    pasid: input.pasid(),
                    addr: input.addr(PAGES),
                    access: input.access(),
                };
                let _ = unit.translate(&req, &mut sink);
            }
            _ => {
                let access = input.access();
                let page = PageRequest {
                    source: SourceId(input.u16()),
                    pasid: input.pasid(),
                    addr: input.addr(PAGES),
                    read: access.read,
                    write: access.write,
                    exec: access.exec,
                    privileged: access.privileged,
                    last_in_group: input.bool(),
                    prg_index: input.u16() & 0x1ff,
                    private_data: input.bool().then(|| [input.u64(), input.u64()]),
                };
                let _ = unit.page_request(page, &mut sink);
            }
        }
    }
});
