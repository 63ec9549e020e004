//! Fuzz target: the page request path — a device's PRI engine (pri::Pri, PCIe 6.0 §10.4) over
//! the physical VT-d model's PRQ bound and fault reporter (VT-d spec 7.5, 7.6): requests, page
//! group responses in any order, duplicates, unknown groups, drains, resets, detaches.
#![no_main]

use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use vsvm::iommu::{
    DeviceEndpoint, DeviceId, FaultHandler, Granularity, HostIommu, IommuFault, PageRequest,
    PageResponse, PageResponseCode,
};
use vsvm::pri::{PageToken, Pri, PriStatus};
use vsvm::vtd::piommu::{PhysicalIommu, PRQ_DEPTH};
use vsvm::vtd::VtdConfig;
use vsvm_fuzz::{guest_ram, Input, PAGE};

const ID: DeviceId = DeviceId(0x18);
const OTHER: DeviceId = DeviceId(0x20);
/// PRG indexes a function can tell apart (9 bits).
const GROUPS: u32 = 512;
/// Long enough that the response timer never fires during a run (it is not what is fuzzed
/// here, and a timer would make runs depend on speed).
const TIMEOUT: Duration = Duration::from_secs(3600);
const MAX_OPS: usize = 256;

/// The device side of the IOMMU: responses go to the device's PRI engine.
#[derive(Default)]
struct Device {
    pri: OnceLock<Weak<Pri>>,
}

impl DeviceEndpoint for Device {
    fn invalidate_atc(&self, _: Granularity) {}
    fn page_response(&self, resp: PageResponse) {
        if let Some(pri) = self.pri.get().and_then(Weak::upgrade) {
            pri.response(resp);
        }
    }
}

/// The OS's fault handler: remembers the page requests it was given, answers none itself.
#[derive(Default)]
struct Handler(Mutex<Vec<PageRequest>>);

impl FaultHandler for Handler {
    fn handle(&self, fault: &IommuFault) {
        if let IommuFault::PageRequest(req) = fault {
            self.0.lock().unwrap().push(*req);
        }
    }
}

fn code(input: &mut Input) -> PageResponseCode {
    match input.u8() % 4 {
        0 | 1 => PageResponseCode::Success,
        2 => PageResponseCode::InvalidRequest,
        _ => PageResponseCode::ResponseFailure,
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let capacity = 1 + input.below(1024) as u32;
    let (_memfd, ram) = guest_ram(4 * PAGE);
    let iommu = Arc::new(PhysicalIommu::with_timeout(
        VtdConfig::default(),
        ram,
        TIMEOUT,
    ));
    let device = Arc::new(Device::default());
    let pri = Arc::new(Pri::new(ID, iommu.clone(), capacity));
    device.pri.set(Arc::downgrade(&pri)).ok();
    iommu.attach(ID, device.clone()).unwrap();
    let handler = Arc::new(Handler::default());
    iommu.register_fault_handler(ID, handler.clone()).unwrap();
    let (mut enabled, mut allocation) = (false, 0u32);
    let (mut attached, mut registered, mut ever_detached) = (true, true, false);
    let mut tokens: Vec<PageToken> = Vec::new();
    for _ in 0..MAX_OPS {
        if input.is_empty() {
            break;
        }
        match input.u8() % 14 {
            0 => {
                enabled = input.bool();
                allocation = if input.bool() {
                    input.u32()
                } else {
                    u32::from(input.u16() & 0x3ff)
                };
                pri.configure(enabled, allocation);
            }
            // A request, unless it would wait for a credit (single-threaded: nobody would
            // ever free it).
            1..=3 => {
                let credits = allocation.min(capacity).min(GROUPS);
                if !enabled || credits == 0 || pri.outstanding() < credits {
                    let access = input.access();
                    if let Ok(token) = pri.request(input.pasid(), input.u64(), access) {
                        tokens.push(token);
                    }
                }
            }
            // The OS answers a request it saw: any of them, any number of times.
            4 | 5 => {
                let seen = handler.0.lock().unwrap().clone();
                if !seen.is_empty() {
                    let req = seen[input.below(seen.len() as u64) as usize];
                    let _ = iommu.page_response(PageResponse::to(&req, code(&mut input)));
                }
            }
            // A response for a group that may never have been requested.
            6 => {
                let resp = PageResponse {
                    device: if input.bool() { ID } else { OTHER },
                    pasid: input.pasid(),
                    group: input.u16() & PageRequest::MAX_GROUP,
                    code: code(&mut input),
                };
                if input.bool() {
                    let _ = iommu.page_response(resp);
                } else {
                    pri.response(resp);
                }
            }
            7 => {
                if !tokens.is_empty() {
                    let token = tokens.swap_remove(input.below(tokens.len() as u64) as usize);
                    if input.bool() {
                        let _ = pri.wait(token, Some(Duration::ZERO));
                    }
                }
            }
            8 => {
                if let Some(pasid) = input.pasid() {
                    pri.drain(pasid);
                }
            }
            9 => pri.reset(),
            10 => pri.clear_status(PriStatus::from_bits(input.u16())),
            11 => {
                if registered {
                    iommu.unregister_fault_handler(ID).unwrap();
                } else {
                    iommu.register_fault_handler(ID, handler.clone()).unwrap();
                }
                registered = !registered;
            }
            12 => {
                if attached {
                    iommu.detach(ID).unwrap();
                    ever_detached = true;
                } else {
                    iommu.attach(ID, device.clone()).unwrap();
                }
                attached = !attached;
            }
            _ => {
                let _ = pri.status();
            }
        }
        assert!(pri.outstanding() <= GROUPS, "more groups than PRG indexes");
        assert!(
            iommu.pending_page_requests() <= PRQ_DEPTH,
            "page request queue past its depth"
        );
    }
    // Nobody will answer any more: the IOMMU answers every pending group, and unless a
    // detach dropped requests on the floor, the device gets every credit back.
    if registered {
        iommu.unregister_fault_handler(ID).unwrap();
    }
    assert_eq!(iommu.pending_page_requests(), 0, "groups left pending");
    if attached && !ever_detached {
        assert_eq!(pri.outstanding(), 0, "credits leaked");
    }
    drop(tokens);
});
