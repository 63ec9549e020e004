//! Fuzz target: the guest-facing vIOMMU (viommu::FrontEnd) over the physical VT-d model — its
//! register file (VT-d spec 11.4), queued invalidations (6.5.2), the root/context/PASID entries
//! it decodes (9.1–9.6), page requests into the guest's PRQ (7.5) and faults it records (7.2).
#![no_main]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use vsvm::iommu::{DeviceEndpoint, DeviceId, Granularity, HostIommu, PageRequest, PageResponse};
use vsvm::mem::Gpa;
use vsvm::viommu::{FrontEnd, InterruptPort};
use vsvm::vtd::piommu::PhysicalIommu;
use vsvm::vtd::regs::{
    Gcmd, DMAR_GCMD_REG, DMAR_IQA_REG, DMAR_IQT_REG, DMAR_PQA_REG, DMAR_RTADDR_REG,
};
use vsvm::vtd::VtdConfig;
use vsvm_fuzz::{guest_ram, Input, PAGE};

/// Guest RAM: root table in page 1, the invalidation queue in page 2, the PRQ in page 3.
const PAGES: u64 = 16;
const ROOT: u64 = PAGE;
const QUEUE: u64 = 2 * PAGE;
const PRQ: u64 = 3 * PAGE;
/// IQA.DW: 256-bit descriptors (scalable mode).
const IQA_DW: u64 = 1 << 11;
/// RTADDR.TTM = 01b: scalable-mode root table.
const RTADDR_SCALABLE: u64 = 1 << 10;
/// The device behind the unit (00:03.0) and another one.
const DEVICES: [DeviceId; 2] = [DeviceId(0x18), DeviceId(0x20)];
const MAX_OPS: usize = 192;

/// The device side: counts what the IOMMU sent it.
#[derive(Default)]
struct Device {
    atc: AtomicUsize,
    responses: AtomicUsize,
}

impl DeviceEndpoint for Device {
    fn invalidate_atc(&self, _: Granularity) {
        self.atc.fetch_add(1, Ordering::Relaxed);
    }
    fn page_response(&self, _: PageResponse) {
        self.responses.fetch_add(1, Ordering::Relaxed);
    }
}

/// Interrupt messages: always deliverable.
struct Msi;

impl InterruptPort for Msi {
    fn send(&self, _: u64, _: u32) -> bool {
        true
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let smts = input.bool();
    let config = VtdConfig {
        smts,
        fault_records: 1 + input.below(16) as u16,
        pasid_bits: input.below(21) as u8,
        fl_5level: input.bool(),
        ..VtdConfig::default()
    };
    let (_memfd, ram) = guest_ram(PAGES * PAGE);
    let iommu = Arc::new(PhysicalIommu::new(config, ram.clone()));
    let device = Arc::new(Device::default());
    for id in DEVICES {
        iommu
            .attach(id, device.clone())
            .expect("attaching a device");
    }
    let front = FrontEnd::new(config, ram.clone(), iommu.clone(), &DEVICES, Arc::new(Msi))
        .expect("the vIOMMU thread starts");
    let window = front.window_size();
    let wide = smts || input.bool();
    let desc_bytes: u64 = if wide { 32 } else { 16 };
    // Mostly start from a unit set up as Linux sets it up, one GCMD command at a time.
    if !input.u8().is_multiple_of(4) {
        let mode = if smts { RTADDR_SCALABLE } else { 0 };
        front.write(DMAR_RTADDR_REG, 8, ROOT | mode);
        front.write(
            DMAR_GCMD_REG,
            4,
            Gcmd::new().with_srtp(true).into_bits().into(),
        );
        let dw = if wide { IQA_DW } else { 0 };
        front.write(DMAR_IQA_REG, 8, QUEUE | dw);
        let qie = Gcmd::new().with_qie(true);
        front.write(DMAR_GCMD_REG, 4, qie.into_bits().into());
        front.write(DMAR_PQA_REG, 8, PRQ);
        front.write(DMAR_GCMD_REG, 4, qie.with_te(true).into_bits().into());
        front.flush();
    }
    let slots = PAGE / desc_bytes;
    let mut tail = 0;
    for _ in 0..MAX_OPS {
        if input.is_empty() {
            break;
        }
        match input.u8() % 9 {
            0 | 1 => {
                let offset = input.vtd_offset(window);
                let size = input.mmio_size();
                front.write(offset, size, input.word(PAGES));
                front.flush();
            }
            2 => {
                let _ = front.read(input.vtd_offset(window), input.mmio_size());
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
                front.write(DMAR_IQT_REG, 8, tail * desc_bytes);
                front.flush();
            }
            // The device's side: translations and page requests through the host model.
            6 => {
                let id = DEVICES[input.below(2) as usize];
                let _ = iommu.translate(id, input.pasid(), input.addr(PAGES), input.access());
                front.flush();
            }
            7 => {
                let req = PageRequest {
                    device: DEVICES[input.below(2) as usize],
                    pasid: input.pasid(),
                    addr: input.addr(PAGES) & !(PAGE - 1),
                    access: input.access(),
                    group: input.u16() & PageRequest::MAX_GROUP,
                    last: input.bool(),
                };
                iommu.page_request(req);
                front.flush();
            }
            _ => {
                front.reset();
                tail = 0;
                front.flush();
            }
        }
    }
    drop(front);
});
