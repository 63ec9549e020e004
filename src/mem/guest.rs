//! Guest memory as a device sees it: the map table plus the client port for maps without fd.
//! Every access is bounds-checked against the table; nothing outside a map is ever touched.

use std::os::fd::OwnedFd;
use std::sync::{Arc, RwLock};

use log::debug;

use crate::vfio_user::{DmaMapRequest, DmaPort, DmaPortError, DmaUnmapRequest};

use super::address::Gpa;
use super::mapping::Mapping;
use super::table::{Backing, MapError, MapTable, Region};

/// Why a guest-memory access failed.
#[derive(Debug, thiserror::Error)]
pub enum MemError {
    /// No map covers the address.
    #[error("guest address {0} is not mapped")]
    Unmapped(Gpa),
    /// The map does not allow this access.
    #[error("guest address {0} is mapped without {1} permission")]
    Denied(Gpa, &'static str),
    /// The map has no fd and no client is connected to carry the access.
    #[error("guest address {0} needs the client (no fd) and none is connected")]
    NoClient(Gpa),
    /// The client failed a DMA_READ/DMA_WRITE.
    #[error("DMA through the client failed")]
    Client(#[from] DmaPortError),
    /// An aligned 64-bit access was asked for at an unaligned address.
    #[error("guest address {0} is not 8-byte aligned")]
    Unaligned(Gpa),
}

#[derive(Debug, Default)]
struct Inner {
    table: RwLock<MapTable>,
    port: RwLock<Option<DmaPort>>,
}

/// Shared handle to one client's guest memory; cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct GuestMemory {
    inner: Arc<Inner>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Access {
    Read,
    Write,
}

impl GuestMemory {
    /// An empty guest memory.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a DMA_MAP region; with an fd it is mapped into the server.
    pub fn map(&self, request: &DmaMapRequest, fd: Option<OwnedFd>) -> Result<(), MapError> {
        let backing = match fd {
            Some(fd) => {
                let mapping = Mapping::new(&fd, request.fd_offset, request.size, request.writable)?;
                Backing::Mapped {
                    mapping: Arc::new(mapping),
                    offset: 0,
                }
            }
            None => Backing::Remote,
        };
        let region = Region {
            start: Gpa(request.address),
            size: request.size,
            readable: request.readable,
            writable: request.writable,
            backing,
        };
        let remote = matches!(region.backing, Backing::Remote);
        let offset = if remote { 0 } else { request.fd_offset };
        self.inner.table.write().unwrap().insert(region, offset)?;
        let how = if remote {
            "without fd (DMA_READ/DMA_WRITE)"
        } else {
            "mapped with fd"
        };
        debug!("DMA_MAP 0x{:x}+0x{:x} {how}", request.address, request.size);
        Ok(())
    }

    /// Removes DMA_UNMAP'ed ranges. Accesses in flight keep their mapping alive until done.
    pub fn unmap(&self, request: &DmaUnmapRequest) -> Result<(), MapError> {
        let mut table = self.inner.table.write().unwrap();
        match *request {
            DmaUnmapRequest::All => table.clear(),
            DmaUnmapRequest::Range { address, size } => {
                table.remove(address, size)?;
            }
        }
        Ok(())
    }

    /// Forgets every map and the client (disconnect).
    pub fn clear(&self) {
        self.inner.table.write().unwrap().clear();
        *self.inner.port.write().unwrap() = None;
    }

    /// Sets the client port used for maps without fd.
    pub fn set_port(&self, port: Option<DmaPort>) {
        *self.inner.port.write().unwrap() = port;
    }

    /// Number of maps.
    pub fn map_count(&self) -> usize {
        self.inner.table.read().unwrap().len()
    }

    /// The region containing `gpa`, checked for `access`.
    fn region(&self, gpa: Gpa, access: Access) -> Result<Arc<Region>, MemError> {
        let table = self.inner.table.read().unwrap();
        let region = table.find(gpa).ok_or(MemError::Unmapped(gpa))?;
        match access {
            Access::Read if !region.readable => Err(MemError::Denied(gpa, "read")),
            Access::Write if !region.writable => Err(MemError::Denied(gpa, "write")),
            _ => Ok(region.clone()),
        }
    }

    fn port(&self, gpa: Gpa) -> Result<DmaPort, MemError> {
        self.inner
            .port
            .read()
            .unwrap()
            .clone()
            .ok_or(MemError::NoClient(gpa))
    }

    /// Walks `[gpa, gpa + len)` region by region, calling `f(region, gpa, range in buffer)`.
    fn for_each_chunk(
        &self,
        gpa: Gpa,
        len: usize,
        access: Access,
        mut f: impl FnMut(&Region, Gpa, std::ops::Range<usize>) -> Result<(), MemError>,
    ) -> Result<(), MemError> {
        let mut done = 0usize;
        while done < len {
            let at = gpa
                .checked_add(done as u64)
                .ok_or(MemError::Unmapped(gpa))?;
            let region = self.region(at, access)?;
            let n = ((region.end() - at.0) as usize).min(len - done);
            f(&region, at, done..done + n)?;
            done += n;
        }
        Ok(())
    }

    /// Reads `buf.len()` bytes at `gpa`.
    pub fn read(&self, gpa: Gpa, buf: &mut [u8]) -> Result<(), MemError> {
        self.for_each_chunk(
            gpa,
            buf.len(),
            Access::Read,
            |region, at, range| match &region.backing {
                Backing::Mapped { mapping, offset } => {
                    let off = offset + (at.0 - region.start.0) as usize;
                    mapping
                        .read(off, &mut buf[range])
                        .then_some(())
                        .ok_or(MemError::Unmapped(at))
                }
                Backing::Remote => Ok(self.port(at)?.read(at.0, &mut buf[range])?),
            },
        )
    }

    /// Writes `data` at `gpa`.
    pub fn write(&self, gpa: Gpa, data: &[u8]) -> Result<(), MemError> {
        self.for_each_chunk(
            gpa,
            data.len(),
            Access::Write,
            |region, at, range| match &region.backing {
                Backing::Mapped { mapping, offset } => {
                    let off = offset + (at.0 - region.start.0) as usize;
                    mapping
                        .write(off, &data[range])
                        .then_some(())
                        .ok_or(MemError::Denied(at, "write"))
                }
                Backing::Remote => Ok(self.port(at)?.write(at.0, &data[range])?),
            },
        )
    }

    /// One aligned 64-bit load (a table entry or descriptor word): atomic when mapped.
    pub fn read_u64(&self, gpa: Gpa) -> Result<u64, MemError> {
        if gpa.0 % 8 != 0 {
            return Err(MemError::Unaligned(gpa));
        }
        let region = self.region(gpa, Access::Read)?;
        match &region.backing {
            Backing::Mapped { mapping, offset } => mapping
                .load_u64(offset + (gpa.0 - region.start.0) as usize)
                .ok_or(MemError::Unmapped(gpa)),
            Backing::Remote => {
                let mut bytes = [0u8; 8];
                self.port(gpa)?.read(gpa.0, &mut bytes)?;
                Ok(u64::from_le_bytes(bytes))
            }
        }
    }

    /// One aligned 64-bit store: atomic when mapped.
    pub fn write_u64(&self, gpa: Gpa, value: u64) -> Result<(), MemError> {
        if gpa.0 % 8 != 0 {
            return Err(MemError::Unaligned(gpa));
        }
        let region = self.region(gpa, Access::Write)?;
        match &region.backing {
            Backing::Mapped { mapping, offset } => mapping
                .store_u64(offset + (gpa.0 - region.start.0) as usize, value)
                .ok_or(MemError::Denied(gpa, "write")),
            Backing::Remote => Ok(self.port(gpa)?.write(gpa.0, &value.to_le_bytes())?),
        }
    }
}
