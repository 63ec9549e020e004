//! The server-side device interface: what a vfio-user server asks of the device it serves.
//! Mirrors the device-facing commands of the vfio-user specification (DMA_MAP .. DEVICE_RESET).

use std::os::fd::OwnedFd;

use rustix::io::Errno;

use super::dma_port::DmaPort;

/// A DMA_MAP request, decoded and checked for form (not for overlap: that is the table's job).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DmaMapRequest {
    /// Guest (DMA) address of the region.
    pub address: u64,
    /// Size in bytes.
    pub size: u64,
    /// Offset of the region in the fd, when there is one.
    pub fd_offset: u64,
    /// The device may read the region.
    pub readable: bool,
    /// The device may write the region.
    pub writable: bool,
}

/// What one client may make us hold through DMA_MAP; a server option, handed to the device
/// when the client connects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DmaLimits {
    /// Most regions in the map table at once, regions that a partial unmap split included.
    /// Advertised in the VERSION reply as `max_dma_maps`; a DMA_MAP, or a DMA_UNMAP cutting a
    /// region in two, that would go past it is refused with ENOSPC.
    pub max_maps: usize,
    /// Most of the client's fds mapped into the server at once (each costs one of the
    /// process's `vm.max_map_count` mappings; the process has its own budget besides). A map
    /// with an fd beyond it is still accepted, and reached with DMA_READ/DMA_WRITE.
    pub max_fd_maps: usize,
}

impl DmaLimits {
    /// The defaults: 65,535 maps (as Linux VFIO type1's `dma_entry_limit`, U16_MAX), any of
    /// them with its fd mapped while the process's budget lasts.
    pub const DEFAULT: DmaLimits = DmaLimits {
        max_maps: 65535,
        max_fd_maps: 65535,
    };
}

impl Default for DmaLimits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// A DMA_UNMAP request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DmaUnmapRequest {
    /// Remove every mapping inside `[address, address + size)`.
    Range {
        /// Start of the range.
        address: u64,
        /// Length of the range.
        size: u64,
    },
    /// Remove every mapping.
    All,
}

/// What SET_IRQS asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IrqAction {
    /// Mask the vectors.
    Mask,
    /// Unmask the vectors.
    Unmask,
    /// Assign eventfds (with eventfd data) or fire the vectors (with none/bool data).
    Trigger,
}

/// The data part of SET_IRQS.
#[derive(Debug)]
pub enum IrqData {
    /// Apply the action to every vector in range.
    None,
    /// Apply the action to the vectors whose byte is non-zero.
    Bool(Vec<bool>),
    /// One eventfd per vector; `None` de-assigns (QEMU sends no fds for a run of -1s).
    Eventfds(Vec<Option<OwnedFd>>),
}

/// A decoded SET_IRQS request.
#[derive(Debug)]
pub struct IrqSetRequest {
    /// IRQ index (VFIO_PCI_*_IRQ_INDEX).
    pub index: u32,
    /// First vector.
    pub start: u32,
    /// Number of vectors.
    pub count: u32,
    /// The action.
    pub action: IrqAction,
    /// The data.
    pub data: IrqData,
}

/// Size, flags and index of one region.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RegionDescription {
    /// Size in bytes; 0 means the region does not exist.
    pub size: u64,
    /// Readable.
    pub readable: bool,
    /// Writable.
    pub writable: bool,
}

/// One IRQ index.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IrqDescription {
    /// Number of vectors (0: the index exists but is unused).
    pub count: u32,
}

/// A device as the vfio-user server sees it. Every method is called on the connection's reader
/// thread and must answer promptly: the client holds its big lock while it waits.
/// Errors are errnos that go back to the client in an error reply.
pub trait Device: Send {
    /// Number of regions and IRQ indexes (DEVICE_GET_INFO).
    fn counts(&self) -> (u32, u32);
    /// One region (DEVICE_GET_REGION_INFO).
    fn region(&self, index: u32) -> Result<RegionDescription, Errno>;
    /// One IRQ index (DEVICE_GET_IRQ_INFO).
    fn irq(&self, index: u32) -> Result<IrqDescription, Errno>;
    /// SET_IRQS.
    fn set_irqs(&mut self, request: IrqSetRequest) -> Result<(), Errno>;
    /// REGION_READ into `data`.
    fn region_read(&mut self, index: u32, offset: u64, data: &mut [u8]) -> Result<(), Errno>;
    /// REGION_WRITE of `data`.
    fn region_write(&mut self, index: u32, offset: u64, data: &[u8]) -> Result<(), Errno>;
    /// DMA_MAP.
    fn dma_map(&mut self, request: DmaMapRequest, fd: Option<OwnedFd>) -> Result<(), Errno>;
    /// DMA_UNMAP.
    fn dma_unmap(&mut self, request: DmaUnmapRequest) -> Result<(), Errno>;
    /// DEVICE_RESET.
    fn reset(&mut self) -> Result<(), Errno>;
    /// A client connected; `port` sends DMA_READ/DMA_WRITE to it (never from this thread),
    /// and `limits` bound what its DMA_MAPs may make us hold.
    fn connected(&mut self, port: DmaPort, limits: DmaLimits);
    /// The client is gone: drop its maps, eventfds and port, and return to power-on state.
    fn disconnected(&mut self);
}
