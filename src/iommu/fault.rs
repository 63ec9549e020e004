//! Faults as a device's IOMMU reports them, whatever its vendor: page requests (PCIe 6.0
//! §10.4.1 Page Request Message) that a handler answers with a page response (§10.4.2 PRG
//! Response Message), and unrecoverable faults (Linux `iommu_fault`, `IOMMU_FAULT_REASON_*`).

use super::types::{Access, DeviceId, Pasid};

/// A page request as the IOMMU received it from a device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PageRequest {
    /// The requester.
    pub device: DeviceId,
    /// The PASID prefix, if any.
    pub pasid: Option<Pasid>,
    /// Page address (bits 11:0 are zero).
    pub addr: u64,
    /// Requested access (read, write, and with a PASID exec and privileged).
    pub access: Access,
    /// Page Request Group index (9 bits).
    pub group: u16,
    /// Last request of its group: the device waits for one response per group, sent after it.
    pub last: bool,
}

impl PageRequest {
    /// Largest group index (9 bits).
    pub const MAX_GROUP: u16 = (1 << 9) - 1;

    /// A Stop Marker (§10.4.1.2): L set, R and W clear. It tells the IOMMU that the device
    /// has no more requests outstanding for the PASID; it needs no response.
    pub const fn is_stop_marker(&self) -> bool {
        self.last && !self.access.read && !self.access.write
    }

    /// Whether this request ends a group that wants one PRG Response (§10.4.2): Last set, and
    /// not a stop marker.
    pub const fn wants_response(&self) -> bool {
        self.last && !self.is_stop_marker()
    }
}

/// Response code of a PRG Response Message (§10.4.2.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum PageResponseCode {
    /// 0h: the pages are available; the device retries its translation.
    Success = 0x0,
    /// 1h: the request cannot be satisfied; the device fails the access.
    InvalidRequest = 0x1,
    /// Fh: catastrophic error; the device disables its page request interface.
    ResponseFailure = 0xf,
}

impl PageResponseCode {
    /// Decodes the 4-bit field; the other values are reserved.
    pub const fn from_code(code: u8) -> Option<Self> {
        match code {
            0x0 => Some(Self::Success),
            0x1 => Some(Self::InvalidRequest),
            0xf => Some(Self::ResponseFailure),
            _ => None,
        }
    }

    /// The 4-bit code.
    pub const fn code(self) -> u8 {
        self as u8
    }
}

/// A page response: answers one page request group of one device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PageResponse {
    /// The device.
    pub device: DeviceId,
    /// The PASID of the group, when its requests carried one.
    pub pasid: Option<Pasid>,
    /// Page Request Group index.
    pub group: u16,
    /// The result.
    pub code: PageResponseCode,
}

impl PageResponse {
    /// The response with `code` to the group `req` belongs to.
    pub const fn to(req: &PageRequest, code: PageResponseCode) -> Self {
        PageResponse {
            device: req.device,
            pasid: req.pasid,
            group: req.group,
            code,
        }
    }
}

/// Why a request can never be translated (Linux `enum iommu_fault_reason`, with the two
/// conditions a request without PASID cannot page-fault its way out of).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UnrecoverableReason {
    /// No translation for a request that cannot page-fault (a request without PASID: Linux's
    /// DMA domains have no page-fault path): a non-present entry on the walk.
    NotPresent,
    /// The translation forbids the access (a write to a read-only page, a user request to a
    /// supervisor page) of a request that cannot page-fault.
    Permission,
    /// The device is not attached, or the PASID is bound to nothing.
    PasidInvalid,
    /// The PASID table could not be read.
    PasidFetch,
    /// The PASID entry is malformed.
    BadPasidEntry,
    /// The top-level table, the one the table pointer names, could not be read: the pointer
    /// itself is bad (VT-d, for one, reports it apart from a bad entry further down).
    RootFetch,
    /// A page-table entry below the top level could not be read.
    PteFetch,
    /// A page-table entry is malformed (reserved bits).
    Walk,
    /// The address is outside what the tables can translate: beyond the second stage's
    /// address width, or not canonical for the first stage's paging mode.
    OutOfRange,
    /// A vendor condition with no neutral name.
    Other,
}

/// Which translation table a fault was found in (a front end picks the spec's fault reason
/// from it: VT-d has first- and second-stage variants of most conditions).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FaultStage {
    /// The first-stage (CPU-format) table, including the fetch of its entries.
    First,
    /// The second-stage table.
    Second,
}

/// An unrecoverable fault: reported to the handler, answered by nobody.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct UnrecoverableFault {
    /// The requester.
    pub device: DeviceId,
    /// Its PASID, if any.
    pub pasid: Option<Pasid>,
    /// The input address.
    pub addr: u64,
    /// What it wanted.
    pub access: Access,
    /// Why it failed.
    pub reason: UnrecoverableReason,
    /// The table whose walk failed; `None` when no table walk was involved (unattached
    /// device, unbound PASID, blocked default domain, PASID table).
    pub stage: Option<FaultStage>,
}

/// A fault reported to a device's fault handler (Linux `iommu_fault`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IommuFault {
    /// A page request; unless it is a stop marker, its group expects a page response.
    PageRequest(PageRequest),
    /// A translation that failed for good.
    Unrecoverable(UnrecoverableFault),
}

/// Receives a device's faults (Linux `iommu_register_device_fault_handler`). Called on the
/// IOMMU's thread with no IOMMU lock held, so it may call back into the IOMMU (e.g. respond).
pub trait FaultHandler: Send + Sync {
    /// One fault.
    fn handle(&self, fault: &IommuFault);
}

impl<F: Fn(&IommuFault) + Send + Sync> FaultHandler for F {
    fn handle(&self, fault: &IommuFault) {
        self(fault)
    }
}
