//! vfio-user wire format: the message header, command numbers and each message's fixed part.
//! Follows the vfio-user specification (QEMU docs/interop/vfio-user.rst, protocol version 0.1).

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

#[cfg(not(target_endian = "little"))]
compile_error!("vfio-user is little endian on the wire and the structs below are native-endian");

/// Major protocol version we speak (the only one there is).
pub const VERSION_MAJOR: u16 = 0;
/// Minor version we reply with. QEMU 11.1 refuses a reply with a minor above its own 0.
pub const VERSION_MINOR: u16 = 0;
/// Largest REGION_READ/WRITE or DMA_READ/WRITE payload we accept or send.
pub const MAX_DATA_XFER: usize = 1 << 20;
/// Most file descriptors we accept in one message.
pub const MAX_MSG_FDS: usize = 16;
/// Largest message we accept: a full data transfer plus its fixed part, or a VERSION body.
pub const MAX_MESSAGE_SIZE: usize = MAX_DATA_XFER + 64;

/// Header common to every message (spec "Header").
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct Header {
    /// Matches a reply to its request.
    pub msg_id: u16,
    /// A [`Command`] number.
    pub command: u16,
    /// Whole message size in bytes, header included.
    pub message_size: u32,
    /// [`header_flags`]: bits 3:0 message type, then NO_REPLY and ERROR.
    pub flags: u32,
    /// errno of a failed request, valid when ERROR is set.
    pub error: u32,
}
const _: () = assert!(size_of::<Header>() == 16);

/// Size of [`Header`] on the wire.
pub const HEADER_SIZE: usize = size_of::<Header>();

/// Message type, bits 3:0 of the header flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MessageType {
    /// A request, from either side.
    Request,
    /// A reply to a request.
    Reply,
}

/// Header flag fields (spec: "Type" in bits 3:0, "No_reply" bit 4, "Error" bit 5).
pub mod header_flags {
    /// Mask of the message type field.
    pub const TYPE_MASK: u32 = 0xf;
    /// Type value of a request.
    pub const TYPE_REQUEST: u32 = 0;
    /// Type value of a reply.
    pub const TYPE_REPLY: u32 = 1;
    /// The sender expects no reply (posted REGION_WRITE).
    pub const NO_REPLY: u32 = 1 << 4;
    /// The reply reports an error in `Header::error`.
    pub const ERROR: u32 = 1 << 5;
}

impl Header {
    /// The message type, or `None` for a reserved type value.
    pub fn message_type(&self) -> Option<MessageType> {
        match self.flags & header_flags::TYPE_MASK {
            header_flags::TYPE_REQUEST => Some(MessageType::Request),
            header_flags::TYPE_REPLY => Some(MessageType::Reply),
            _ => None,
        }
    }

    /// Whether the sender asked for no reply.
    pub fn no_reply(&self) -> bool {
        self.flags & header_flags::NO_REPLY != 0
    }

    /// Whether this (reply) carries an error.
    pub fn is_error(&self) -> bool {
        self.flags & header_flags::ERROR != 0
    }
}

/// Command numbers (spec "Commands").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
pub enum Command {
    /// Version and capability negotiation, the first message.
    Version = 1,
    /// Add a DMA region (guest memory), optionally with an fd to map.
    DmaMap = 2,
    /// Remove DMA regions.
    DmaUnmap = 3,
    /// Device flags and region/IRQ counts.
    DeviceGetInfo = 4,
    /// One region's size and flags.
    DeviceGetRegionInfo = 5,
    /// ioeventfd/ioregionfd listing (unused by QEMU).
    DeviceGetRegionIoFds = 6,
    /// One IRQ index's count and flags.
    DeviceGetIrqInfo = 7,
    /// Eventfds, masks and triggers of an IRQ index.
    DeviceSetIrqs = 8,
    /// Read from a region.
    RegionRead = 9,
    /// Write to a region.
    RegionWrite = 10,
    /// Server asks the client to read guest memory.
    DmaRead = 11,
    /// Server asks the client to write guest memory.
    DmaWrite = 12,
    /// Reset the device.
    DeviceReset = 13,
    /// Dirty page tracking (migration).
    DirtyPages = 14,
    /// Several region writes in one message.
    RegionWriteMulti = 15,
}

impl TryFrom<u16> for Command {
    type Error = u16;
    fn try_from(value: u16) -> Result<Self, u16> {
        use Command::*;
        const ALL: [Command; 15] = [
            Version,
            DmaMap,
            DmaUnmap,
            DeviceGetInfo,
            DeviceGetRegionInfo,
            DeviceGetRegionIoFds,
            DeviceGetIrqInfo,
            DeviceSetIrqs,
            RegionRead,
            RegionWrite,
            DmaRead,
            DmaWrite,
            DeviceReset,
            DirtyPages,
            RegionWriteMulti,
        ];
        ALL.into_iter().find(|c| *c as u16 == value).ok_or(value)
    }
}

/// VERSION body before the NUL-terminated JSON capabilities string.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct VersionBody {
    /// Protocol major version.
    pub major: u16,
    /// Protocol minor version.
    pub minor: u16,
}

/// DMA_MAP body.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct DmaMap {
    /// Size of this structure.
    pub argsz: u32,
    /// [`dma_map_flags`].
    pub flags: u32,
    /// Offset of the region in the passed fd.
    pub offset: u64,
    /// Guest (DMA) address of the region.
    pub address: u64,
    /// Region size in bytes.
    pub size: u64,
}
const _: () = assert!(size_of::<DmaMap>() == 32);

/// DMA_MAP flags.
pub mod dma_map_flags {
    /// The device may read the region.
    pub const READ: u32 = 1 << 0;
    /// The device may write the region.
    pub const WRITE: u32 = 1 << 1;
}

/// DMA_UNMAP body; the reply echoes it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct DmaUnmap {
    /// Size of this structure (plus a dirty bitmap, which we do not support).
    pub argsz: u32,
    /// [`dma_unmap_flags`].
    pub flags: u32,
    /// Start of the range to unmap.
    pub address: u64,
    /// Length of the range to unmap.
    pub size: u64,
}
const _: () = assert!(size_of::<DmaUnmap>() == 24);

/// DMA_UNMAP flags.
pub mod dma_unmap_flags {
    /// Return a dirty page bitmap (migration; unsupported).
    pub const GET_DIRTY_BITMAP: u32 = 1 << 0;
    /// Unmap every region; address and size must be 0.
    pub const ALL: u32 = 1 << 1;
}

/// DEVICE_GET_INFO body (struct vfio_device_info).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct DeviceInfo {
    /// Size of this structure.
    pub argsz: u32,
    /// VFIO_DEVICE_FLAGS_*.
    pub flags: u32,
    /// Number of regions.
    pub num_regions: u32,
    /// Number of IRQ indexes.
    pub num_irqs: u32,
}

/// DEVICE_GET_INFO flag: the device supports reset.
pub const DEVICE_FLAGS_RESET: u32 = 1 << 0;
/// DEVICE_GET_INFO flag: the device is a PCI device.
pub const DEVICE_FLAGS_PCI: u32 = 1 << 1;

/// DEVICE_GET_REGION_INFO body (struct vfio_region_info).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct RegionInfo {
    /// Size of the client's buffer; the reply must not exceed it.
    pub argsz: u32,
    /// [`region_flags`].
    pub flags: u32,
    /// Region index.
    pub index: u32,
    /// Offset of the first capability, 0 for none.
    pub cap_offset: u32,
    /// Region size in bytes.
    pub size: u64,
    /// Offset to mmap the region's fd at.
    pub offset: u64,
}
const _: () = assert!(size_of::<RegionInfo>() == 32);

/// Region flags (VFIO_REGION_INFO_FLAG_*).
pub mod region_flags {
    /// The region can be read.
    pub const READ: u32 = 1 << 0;
    /// The region can be written.
    pub const WRITE: u32 = 1 << 1;
}

/// DEVICE_GET_IRQ_INFO body (struct vfio_irq_info).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct IrqInfo {
    /// Size of this structure.
    pub argsz: u32,
    /// VFIO_IRQ_INFO_*.
    pub flags: u32,
    /// IRQ index.
    pub index: u32,
    /// Number of vectors at this index.
    pub count: u32,
}

/// IRQ info flag: vectors are signalled through eventfds.
pub const IRQ_INFO_EVENTFD: u32 = 1 << 0;

/// DEVICE_SET_IRQS body (struct vfio_irq_set without its data).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct IrqSet {
    /// Size of this structure.
    pub argsz: u32,
    /// [`irq_set_flags`]: one DATA_* and one ACTION_*.
    pub flags: u32,
    /// IRQ index.
    pub index: u32,
    /// First vector.
    pub start: u32,
    /// Number of vectors.
    pub count: u32,
}
const _: () = assert!(size_of::<IrqSet>() == 20);

/// SET_IRQS flags (VFIO_IRQ_SET_*).
pub mod irq_set_flags {
    /// No data.
    pub const DATA_NONE: u32 = 1 << 0;
    /// One byte per vector follows.
    pub const DATA_BOOL: u32 = 1 << 1;
    /// One fd per vector is attached (or none: de-assign).
    pub const DATA_EVENTFD: u32 = 1 << 2;
    /// Mask the vectors.
    pub const ACTION_MASK: u32 = 1 << 3;
    /// Unmask the vectors.
    pub const ACTION_UNMASK: u32 = 1 << 4;
    /// Set up (eventfd) or fire (none/bool) the vectors.
    pub const ACTION_TRIGGER: u32 = 1 << 5;
    /// All DATA_* bits.
    pub const DATA_MASK: u32 = DATA_NONE | DATA_BOOL | DATA_EVENTFD;
    /// All ACTION_* bits.
    pub const ACTION_MASK_ALL: u32 = ACTION_MASK | ACTION_UNMASK | ACTION_TRIGGER;
}

/// REGION_READ/REGION_WRITE fixed part; data follows for writes and read replies.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct RegionAccess {
    /// Offset into the region.
    pub offset: u64,
    /// Region index.
    pub region: u32,
    /// Bytes to transfer.
    pub count: u32,
}
const _: () = assert!(size_of::<RegionAccess>() == 16);

/// DMA_READ/DMA_WRITE fixed part (spec layout: u64 address, u64 count, data at byte 32 of the
/// message); data follows for DMA_WRITE requests and DMA_READ replies.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct DmaAccess {
    /// Guest address.
    pub address: u64,
    /// Bytes to transfer.
    pub count: u64,
}
const _: () = assert!(size_of::<DmaAccess>() == 16);
