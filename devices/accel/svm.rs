//! accel's SVM side: the device behind a host IOMMU — its ATS (translation, ATC) and PRI
//! (page requests), the port through which the IOMMU reaches them (ATS invalidations, PRG
//! responses: PCIe 6.0 §10.3, §10.4.2), and the address spaces a descriptor's addresses live
//! in (guest-physical without an IOMMU; untagged or PASID-tagged behind one).

use std::sync::{Arc, Mutex, MutexGuard};

use log::warn;

use crate::ats::{Ats, AtsMode};
use crate::iommu::{
    Access, DeviceEndpoint, DeviceId, Granularity, HostIommu, IommuError, PageResponse, Pasid,
    TranslateFailure,
};
use crate::mem::GuestMemory;
use crate::pri::Pri;

/// What the IOMMU calls on the device: ATS invalidations go to the ATC, PRG responses to PRI;
/// and what it walks the device's tables in: the function's own DMA map.
struct Port {
    ats: Arc<Ats>,
    pri: Arc<Pri>,
    mem: GuestMemory,
}

impl DeviceEndpoint for Port {
    fn invalidate_atc(&self, granularity: Granularity) {
        self.ats.invalidate(granularity);
    }

    fn page_response(&self, resp: PageResponse) {
        self.pri.response(resp);
    }

    fn dma_memory(&self) -> Option<GuestMemory> {
        Some(self.mem.clone())
    }
}

/// The device's connection to its host IOMMU.
pub struct Svm {
    device: DeviceId,
    iommu: Arc<dyn HostIommu>,
    ats: Arc<Ats>,
    pri: Arc<Pri>,
    /// Orders "is the PASID still enabled? then send a page request" (engines) against
    /// "the PASID is disabled: drain PRI" (the drainer), so that no page request of a PASID
    /// follows its stop marker (PCIe 6.0 §10.4.1.2).
    request_order: Mutex<()>,
}

impl std::fmt::Debug for Svm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Svm").field("device", &self.device).finish()
    }
}

impl Svm {
    /// Attaches `device` to `iommu` with an ATS engine (translated requests through an ATC)
    /// and a PRI engine of `pri_capacity` outstanding requests; the IOMMU walks the device's
    /// tables in `mem`, the function's DMA map.
    pub fn attach(
        device: DeviceId,
        iommu: Arc<dyn HostIommu>,
        pri_capacity: u32,
        mem: GuestMemory,
    ) -> Result<Self, IommuError> {
        let ats = Arc::new(Ats::new(device, iommu.clone(), AtsMode::Translated));
        let pri = Arc::new(Pri::new(device, iommu.clone(), pri_capacity));
        let port = Arc::new(Port {
            ats: ats.clone(),
            pri: pri.clone(),
            mem,
        });
        iommu.attach(device, port)?;
        Ok(Svm {
            device,
            iommu,
            ats,
            pri,
            request_order: Mutex::new(()),
        })
    }

    /// The requester ID the IOMMU knows the device by.
    pub fn device(&self) -> DeviceId {
        self.device
    }

    /// The ATS engine.
    pub fn ats(&self) -> &Ats {
        &self.ats
    }

    /// The PRI engine.
    pub fn pri(&self) -> &Pri {
        &self.pri
    }

    /// The IOMMU.
    pub fn iommu(&self) -> &Arc<dyn HostIommu> {
        &self.iommu
    }

    /// Holds off stop markers while a page request is being decided on and sent.
    pub(crate) fn request_order(&self) -> MutexGuard<'_, ()> {
        self.request_order.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Svm {
    fn drop(&mut self) {
        if let Err(e) = self.iommu.detach(self.device) {
            warn!("accel {}: detach: {e}", self.device);
        }
    }
}

/// The address space of a descriptor's addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Space {
    /// No IOMMU: guest-physical addresses.
    Physical,
    /// Behind an IOMMU, requests without PASID (IOVAs).
    Untagged,
    /// Behind an IOMMU, requests with a PASID (virtual addresses of that PASID).
    Tagged {
        /// The PASID.
        pasid: Pasid,
        /// Privileged (supervisor) requests.
        privileged: bool,
    },
}

impl Space {
    /// The PASID requests carry, if any.
    pub fn pasid(self) -> Option<Pasid> {
        match self {
            Space::Tagged { pasid, .. } => Some(pasid),
            _ => None,
        }
    }

    /// The access a read (or write) of this space makes.
    pub fn access(self, write: bool) -> Access {
        let privileged = matches!(
            self,
            Space::Tagged {
                privileged: true,
                ..
            }
        );
        Access {
            read: !write,
            write,
            exec: false,
            privileged,
        }
    }
}

/// Granule of guest-physical "translations" (and of pages whose size the IOMMU gets wrong).
pub const PAGE_SIZE: u64 = 4096;

/// One translated byte address and the page around it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Xlat {
    /// Input address.
    pub addr: u64,
    /// Guest-physical address of that byte.
    pub gpa: u64,
    /// Size of the naturally aligned page holding it (a power of two).
    pub page_size: u64,
    /// Bytes from the address on known to be contiguous in both spaces (0: only to the end
    /// of the page).
    pub extent: u64,
}

impl Xlat {
    fn offset(&self) -> u64 {
        self.addr & (self.page_size - 1)
    }

    /// Bytes from the address on that this translation covers: to the end of its page, or
    /// the whole contiguous run it was found in.
    pub fn forward(&self) -> u64 {
        self.forward_in_page().max(self.extent)
    }

    /// Bytes from the address to the end of its page.
    pub fn forward_in_page(&self) -> u64 {
        self.page_size - self.offset()
    }

    /// Bytes from the start of its page up to and including the address.
    pub fn backward(&self) -> u64 {
        self.offset() + 1
    }
}

/// A translation the device could not get.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Miss {
    /// Input address.
    pub addr: u64,
    /// The access that needed it.
    pub access: Access,
    /// The IOMMU refused for good (else: not present, a page request may help).
    pub unrecoverable: bool,
}

/// Translates `addr` of `space` for `access`. Call with the ATS fence held and keep it while
/// the result is in use.
pub fn translate(svm: Option<&Svm>, space: Space, addr: u64, access: Access) -> Result<Xlat, Miss> {
    translate_run(svm, space, addr, access, 0)
}

/// Translates `addr` as [`translate`] does, and finds how far on (up to about `max` bytes)
/// the translation stays contiguous, from the ATC in one lookup ([`Ats::translate_run`]).
pub fn translate_run(
    svm: Option<&Svm>,
    space: Space,
    addr: u64,
    access: Access,
    max: u64,
) -> Result<Xlat, Miss> {
    let miss = |unrecoverable| Miss {
        addr,
        access,
        unrecoverable,
    };
    let (svm, pasid) = match (svm, space) {
        (_, Space::Physical) | (None, _) => {
            return Ok(Xlat {
                addr,
                gpa: addr,
                page_size: PAGE_SIZE,
                extent: max,
            })
        }
        (Some(svm), space) => (svm, space.pasid()),
    };
    match svm.ats.translate_run(pasid, addr, access, max) {
        Ok((t, extent)) if t.perms.allow(access) => {
            // A page size that is no power of two is an IOMMU bug; the 4 KiB page around the
            // address is still right.
            let page_size = if t.page_size.is_power_of_two() && t.page_size >= PAGE_SIZE {
                t.page_size
            } else {
                PAGE_SIZE
            };
            Ok(Xlat {
                addr,
                gpa: t.output,
                page_size,
                extent,
            })
        }
        Ok(_) | Err(TranslateFailure::NotPresent) => Err(miss(false)),
        Err(TranslateFailure::Unrecoverable(_)) => Err(miss(true)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_xlat_page_bounds_around_the_address() {
        let x = Xlat {
            addr: 0x1_2345,
            gpa: 0x9_9345,
            page_size: 0x1000,
            extent: 0,
        };
        assert_eq!(x.forward(), 0xcbb);
        assert_eq!(x.backward(), 0x346);
    }

    #[test]
    fn test_physical_space_translates_to_itself() {
        let x = translate(None, Space::Physical, 0x1234, Access::READ).unwrap();
        assert_eq!((x.gpa, x.page_size), (0x1234, PAGE_SIZE));
    }

    #[test]
    fn test_space_access_carries_privilege_only_with_a_pasid() {
        let tagged = Space::Tagged {
            pasid: Pasid::new(3).unwrap(),
            privileged: true,
        };
        assert!(tagged.access(true).privileged && tagged.access(true).write);
        assert!(!Space::Untagged.access(false).privileged);
        assert_eq!(tagged.pasid(), Pasid::new(3));
    }
}
