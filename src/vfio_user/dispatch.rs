//! One handler per client command: decode and check the body, call the [`Device`], build the
//! reply body. Follows the vfio-user specification's per-command sections.

use std::os::fd::OwnedFd;

use log::debug;
use rustix::io::Errno;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use super::device::{Device, DmaMapRequest, DmaUnmapRequest, IrqAction, IrqData, IrqSetRequest};
use super::protocol::{
    dma_map_flags, dma_unmap_flags, irq_set_flags, region_flags, Command, DeviceInfo, DmaMap,
    DmaUnmap, IrqInfo, IrqSet, RegionAccess, RegionInfo, VersionBody, DEVICE_FLAGS_PCI,
    DEVICE_FLAGS_RESET, IRQ_INFO_EVENTFD, MAX_DATA_XFER, MAX_MSG_FDS, VERSION_MAJOR, VERSION_MINOR,
};
use super::transport::Message;

/// Most vectors one SET_IRQS may name (MSI-X allows 2048 per function); bounds the
/// allocation a de-assign without fds makes.
const MAX_IRQ_VECTORS: usize = 4096;
/// DMA page size we accept maps in (`pgsizes`).
const DMA_PAGE_SIZE: u64 = 4096;

/// Result of handling one request: a reply body, or an errno for an error reply.
pub type Outcome = Result<Vec<u8>, Errno>;

/// What the handshake told us about the client.
#[derive(Clone, Copy, Debug, Default)]
pub struct Session {
    /// VERSION has been negotiated.
    pub negotiated: bool,
    /// Largest DMA_READ/WRITE payload the client accepts.
    pub client_max_xfer: usize,
    /// What we advertise as `max_dma_maps` (the device enforces it).
    pub max_dma_maps: usize,
}

/// Splits a body into its fixed part `T` and the rest; EINVAL when too short.
fn fixed<T: FromBytes + KnownLayout + Immutable>(body: &[u8]) -> Result<(T, &[u8]), Errno> {
    T::read_from_prefix(body).map_err(|_| Errno::INVAL)
}

/// Rejects fds on a command that takes none.
fn no_fds(fds: &[OwnedFd]) -> Result<(), Errno> {
    if fds.is_empty() {
        Ok(())
    } else {
        Err(Errno::INVAL)
    }
}

/// Handles one request from the client.
pub fn handle(msg: Message, device: &mut dyn Device, session: &mut Session) -> Outcome {
    let command = Command::try_from(msg.header.command).map_err(|_| Errno::NOSYS)?;
    if command != Command::Version && !session.negotiated {
        warn_limited!("{command:?} before VERSION");
        return Err(Errno::INVAL);
    }
    let Message { body, fds, .. } = msg;
    match command {
        Command::Version => version(&body, fds, session),
        Command::DmaMap => dma_map(&body, fds, device),
        Command::DmaUnmap => no_fds(&fds).and_then(|_| dma_unmap(&body, device)),
        Command::DeviceGetInfo => no_fds(&fds).and_then(|_| device_info(&body, device)),
        Command::DeviceGetRegionInfo => no_fds(&fds).and_then(|_| region_info(&body, device)),
        Command::DeviceGetIrqInfo => no_fds(&fds).and_then(|_| irq_info(&body, device)),
        Command::DeviceSetIrqs => set_irqs(&body, fds, device),
        Command::RegionRead => no_fds(&fds).and_then(|_| region_read(&body, device)),
        Command::RegionWrite => no_fds(&fds).and_then(|_| region_write(&body, device)),
        Command::DeviceReset => no_fds(&fds).and_then(|_| device.reset().map(|_| Vec::new())),
        // Server-to-client only.
        Command::DmaRead | Command::DmaWrite => Err(Errno::INVAL),
        // Not advertised: no migration, no write_multiple, no io fds.
        Command::DirtyPages | Command::RegionWriteMulti | Command::DeviceGetRegionIoFds => {
            Err(Errno::NOTSUP)
        }
    }
}

fn version(body: &[u8], fds: Vec<OwnedFd>, session: &mut Session) -> Outcome {
    no_fds(&fds)?;
    let (v, rest) = fixed::<VersionBody>(body)?;
    if v.major != VERSION_MAJOR {
        warn_limited!(
            "client speaks vfio-user {}.{}, we speak {VERSION_MAJOR}.x",
            v.major,
            v.minor
        );
        return Err(Errno::NOTSUP);
    }
    session.client_max_xfer = client_max_xfer(rest)?;
    session.negotiated = true;
    debug!(
        "client version {}.{}, max_data_xfer_size {}",
        v.major, v.minor, session.client_max_xfer
    );
    let caps = serde_json::json!({ "capabilities": {
        "max_msg_fds": MAX_MSG_FDS,
        "max_data_xfer_size": MAX_DATA_XFER,
        "pgsizes": DMA_PAGE_SIZE,
        "max_dma_maps": session.max_dma_maps,
    }});
    let mut out = VersionBody {
        major: VERSION_MAJOR,
        minor: VERSION_MINOR,
    }
    .as_bytes()
    .to_vec();
    out.extend_from_slice(caps.to_string().as_bytes());
    out.push(0);
    Ok(out)
}

/// Reads `max_data_xfer_size` from the client's (optional) NUL-terminated JSON.
fn client_max_xfer(json: &[u8]) -> Result<usize, Errno> {
    const SPEC_DEFAULT: usize = 1 << 20;
    if json.is_empty() {
        return Ok(SPEC_DEFAULT);
    }
    let text = json.strip_suffix(&[0]).ok_or(Errno::INVAL)?;
    let value: serde_json::Value = serde_json::from_slice(text).map_err(|_| Errno::INVAL)?;
    let caps = value.get("capabilities").ok_or(Errno::INVAL)?;
    let max = caps.get("max_data_xfer_size").and_then(|v| v.as_u64());
    Ok(max.map_or(SPEC_DEFAULT, |m| (m as usize).clamp(1, MAX_DATA_XFER)))
}

fn dma_map(body: &[u8], mut fds: Vec<OwnedFd>, device: &mut dyn Device) -> Outcome {
    let (m, _) = fixed::<DmaMap>(body)?;
    let known = dma_map_flags::READ | dma_map_flags::WRITE;
    if (m.argsz as usize) < size_of::<DmaMap>() || m.flags & !known != 0 || fds.len() > 1 {
        return Err(Errno::INVAL);
    }
    let request = DmaMapRequest {
        address: m.address,
        size: m.size,
        fd_offset: m.offset,
        readable: m.flags & dma_map_flags::READ != 0,
        writable: m.flags & dma_map_flags::WRITE != 0,
    };
    device.dma_map(request, fds.pop())?;
    Ok(Vec::new())
}

fn dma_unmap(body: &[u8], device: &mut dyn Device) -> Outcome {
    let (u, _) = fixed::<DmaUnmap>(body)?;
    if (u.argsz as usize) < size_of::<DmaUnmap>() {
        return Err(Errno::INVAL);
    }
    let request = match u.flags {
        0 => DmaUnmapRequest::Range {
            address: u.address,
            size: u.size,
        },
        dma_unmap_flags::ALL if u.address == 0 && u.size == 0 => DmaUnmapRequest::All,
        f if f & dma_unmap_flags::GET_DIRTY_BITMAP != 0 => return Err(Errno::NOTSUP),
        _ => return Err(Errno::INVAL),
    };
    device.dma_unmap(request)?;
    let reply = DmaUnmap {
        argsz: size_of::<DmaUnmap>() as u32,
        ..u
    };
    Ok(reply.as_bytes().to_vec())
}

fn device_info(body: &[u8], device: &mut dyn Device) -> Outcome {
    let (info, _) = fixed::<DeviceInfo>(body)?;
    if (info.argsz as usize) < size_of::<DeviceInfo>() {
        return Err(Errno::INVAL);
    }
    let (num_regions, num_irqs) = device.counts();
    let flags = DEVICE_FLAGS_PCI | DEVICE_FLAGS_RESET;
    let argsz = size_of::<DeviceInfo>() as u32;
    Ok(DeviceInfo {
        argsz,
        flags,
        num_regions,
        num_irqs,
    }
    .as_bytes()
    .to_vec())
}

fn region_info(body: &[u8], device: &mut dyn Device) -> Outcome {
    let (info, _) = fixed::<RegionInfo>(body)?;
    if (info.argsz as usize) < size_of::<RegionInfo>() {
        return Err(Errno::INVAL);
    }
    let region = device.region(info.index)?;
    let mut flags = 0;
    if region.readable {
        flags |= region_flags::READ;
    }
    if region.writable {
        flags |= region_flags::WRITE;
    }
    let argsz = size_of::<RegionInfo>() as u32;
    let reply = RegionInfo {
        argsz,
        flags,
        index: info.index,
        cap_offset: 0,
        size: region.size,
        offset: 0,
    };
    Ok(reply.as_bytes().to_vec())
}

fn irq_info(body: &[u8], device: &mut dyn Device) -> Outcome {
    let (info, _) = fixed::<IrqInfo>(body)?;
    if (info.argsz as usize) < size_of::<IrqInfo>() {
        return Err(Errno::INVAL);
    }
    let irq = device.irq(info.index)?;
    let argsz = size_of::<IrqInfo>() as u32;
    Ok(IrqInfo {
        argsz,
        flags: IRQ_INFO_EVENTFD,
        index: info.index,
        count: irq.count,
    }
    .as_bytes()
    .to_vec())
}

fn set_irqs(body: &[u8], fds: Vec<OwnedFd>, device: &mut dyn Device) -> Outcome {
    use irq_set_flags::*;
    let (s, rest) = fixed::<IrqSet>(body)?;
    let action = match s.flags & ACTION_MASK_ALL {
        ACTION_MASK => IrqAction::Mask,
        ACTION_UNMASK => IrqAction::Unmask,
        ACTION_TRIGGER => IrqAction::Trigger,
        _ => return Err(Errno::INVAL),
    };
    if (s.argsz as usize) < size_of::<IrqSet>() || s.flags & !(DATA_MASK | ACTION_MASK_ALL) != 0 {
        return Err(Errno::INVAL);
    }
    let count = s.count as usize;
    let data = match s.flags & DATA_MASK {
        DATA_NONE => no_fds(&fds).map(|_| IrqData::None)?,
        DATA_BOOL if rest.len() == count => {
            no_fds(&fds)?;
            IrqData::Bool(rest.iter().map(|b| *b != 0).collect())
        }
        DATA_EVENTFD if action == IrqAction::Trigger && fds.len() == count => {
            IrqData::Eventfds(fds.into_iter().map(Some).collect())
        }
        // QEMU sends a run of -1 fds as a message with no fds: de-assign.
        DATA_EVENTFD
            if action == IrqAction::Trigger && fds.is_empty() && count <= MAX_IRQ_VECTORS =>
        {
            IrqData::Eventfds((0..count).map(|_| None).collect())
        }
        _ => return Err(Errno::INVAL),
    };
    device.set_irqs(IrqSetRequest {
        index: s.index,
        start: s.start,
        count: s.count,
        action,
        data,
    })?;
    Ok(Vec::new())
}

fn region_read(body: &[u8], device: &mut dyn Device) -> Outcome {
    let (access, rest) = fixed::<RegionAccess>(body)?;
    if !rest.is_empty() || access.count as usize > MAX_DATA_XFER {
        return Err(Errno::INVAL);
    }
    let mut out = access.as_bytes().to_vec();
    let start = out.len();
    out.resize(start + access.count as usize, 0);
    device.region_read(access.region, access.offset, &mut out[start..])?;
    Ok(out)
}

fn region_write(body: &[u8], device: &mut dyn Device) -> Outcome {
    let (access, data) = fixed::<RegionAccess>(body)?;
    if data.len() != access.count as usize {
        return Err(Errno::INVAL);
    }
    device.region_write(access.region, access.offset, data)?;
    Ok(access.as_bytes().to_vec())
}
