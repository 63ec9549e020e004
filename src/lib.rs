//! vsvm: the hardware half of Shared Virtual Memory for a VM, in userspace — SVM-capable PCIe
//! devices served to a stock QEMU over vfio-user. Layers import only downward (see DESIGN.md):
//! devices → endpoint, ats / pri → iommu (the neutral API) ← vtd (implements it) → mem / pci →
//! vfio_user (tests/layering.rs checks it).
#![warn(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]
// Raw guest memory is touched in one file only (mem/mapping.rs, which allows it).
#![deny(unsafe_code)]

// First, so that its macros (`warn_limited!`, `info_limited!`) are in scope everywhere below.
#[macro_use]
pub mod log_limit;

pub mod ats;
pub mod endpoint;
pub mod iommu;
pub mod mem;
pub mod pci;
pub mod pri;
pub mod vfio_user;
pub mod viommu;
pub mod vtd;

#[path = "../devices/mod.rs"]
pub mod devices;
