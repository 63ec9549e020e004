//! Guest memory as a device sees it: the map table plus the client port for maps without fd.
//! Every access is bounds-checked against the table; nothing outside a map is ever touched.
//!
//! The table is copy-on-write: DMA_MAP/UNMAP build a new table and swap it in, and an access
//! works on a snapshot ([`MemView`]) taken without holding any lock. A walk that reads many
//! table entries takes one snapshot, and an unmap racing with it never blocks on it (nor on a
//! DMA_READ the walk is waiting for, which the unmapping thread itself would have to deliver).

use std::cell::RefCell;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use log::{debug, info};
use rustix::io::Errno;

use crate::vfio_user::{DmaLimits, DmaMapRequest, DmaPort, DmaPortError, DmaUnmapRequest};

use super::address::Gpa;
use super::budget::{Budget, Lease};
use super::mapping::{Mapping, MappingError};
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

#[derive(Debug)]
struct Inner {
    table: RwLock<Arc<MapTable>>,
    port: RwLock<Option<DmaPort>>,
    /// Bumped after every change of the table or the port (see [`ViewCache`]).
    generation: AtomicU64,
    /// Most regions in the table (read under the table's write lock).
    max_maps: RwLock<usize>,
    /// The client's fd mappings, against [`DmaLimits::max_fd_maps`].
    fd_maps: Arc<Budget>,
    /// A map went to the client for want of budget since the last clear (said once).
    budget_spent_said: AtomicBool,
}

impl Default for Inner {
    fn default() -> Self {
        Inner {
            table: RwLock::default(),
            port: RwLock::default(),
            generation: AtomicU64::new(0),
            max_maps: RwLock::new(DmaLimits::DEFAULT.max_maps),
            fd_maps: Arc::new(Budget::new(DmaLimits::DEFAULT.max_fd_maps)),
            budget_spent_said: AtomicBool::new(false),
        }
    }
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

    /// Sets what the client may make us hold (see [`DmaLimits`]).
    pub fn set_limits(&self, limits: DmaLimits) {
        *self
            .inner
            .max_maps
            .write()
            .unwrap_or_else(|e| e.into_inner()) = limits.max_maps;
        self.inner.fd_maps.set_max(limits.max_fd_maps);
    }

    /// Replaces the table with `f(copy of the table, the map limit)` (copy-on-write; the copy
    /// shares all but the changed path with the table).
    fn update<T>(
        &self,
        f: impl FnOnce(&mut MapTable, usize) -> Result<T, MapError>,
    ) -> Result<T, MapError> {
        let mut slot = self.inner.table.write().unwrap_or_else(|e| e.into_inner());
        let max = *self
            .inner
            .max_maps
            .read()
            .unwrap_or_else(|e| e.into_inner());
        let mut table = MapTable::clone(&slot);
        let out = f(&mut table, max)?;
        *slot = Arc::new(table);
        self.changed();
        Ok(out)
    }

    /// How a map with `fd` is reached: mapped into the server if the budgets allow and the fd
    /// is fit for it; otherwise through the client (slower, never wrong).
    fn backing(&self, request: &DmaMapRequest, fd: &OwnedFd) -> Result<Backing, MapError> {
        let at = request.address;
        let Some(lease) = Lease::take(&self.inner.fd_maps) else {
            if !self.inner.budget_spent_said.swap(true, Ordering::Relaxed) {
                info!(
                    "DMA_MAP 0x{at:x}: fd mapping budget spent (client {}, process {}): this \
                     and further maps go through the client",
                    self.inner.fd_maps.max(),
                    super::budget::process().max()
                );
            }
            return Ok(Backing::Remote);
        };
        let mapping =
            match Mapping::new(fd, request.fd_offset, request.size, request.writable, lease) {
                Ok(mapping) => mapping,
                Err(MappingError::NotSealed) => {
                    info_limited!(
                        "DMA_MAP 0x{at:x}: fd not sealed against shrinking, not mapping it"
                    );
                    return Ok(Backing::Remote);
                }
                // Out of address space or VMAs after all.
                Err(MappingError::Io(e))
                    if e.raw_os_error() == Some(Errno::NOMEM.raw_os_error()) =>
                {
                    info_limited!(
                        "DMA_MAP 0x{at:x}: cannot map the fd ({e}), reaching it through the client"
                    );
                    return Ok(Backing::Remote);
                }
                Err(e) => return Err(e.into()),
            };
        Ok(Backing::Mapped {
            mapping: Arc::new(mapping),
            offset: 0,
        })
    }

    /// Adds a DMA_MAP region; with an fd it is mapped into the server (see [`DmaLimits`]).
    pub fn map(&self, request: &DmaMapRequest, fd: Option<OwnedFd>) -> Result<(), MapError> {
        let backing = match fd {
            Some(fd) => self.backing(request, &fd)?,
            None => Backing::Remote,
        };
        let remote = matches!(backing, Backing::Remote);
        let region = Region {
            start: Gpa(request.address),
            size: request.size,
            readable: request.readable,
            writable: request.writable,
            backing,
        };
        let offset = if remote { 0 } else { request.fd_offset };
        self.update(|t, max| t.insert(region, offset, max))?;
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
        match *request {
            DmaUnmapRequest::All => self.update(|t, _| {
                t.clear();
                Ok(())
            }),
            DmaUnmapRequest::Range { address, size } => {
                self.update(|t, max| t.remove(address, size, max).map(|_| ()))
            }
        }
    }

    /// Forgets every map and the client (disconnect).
    pub fn clear(&self) {
        *self.inner.table.write().unwrap_or_else(|e| e.into_inner()) = Arc::default();
        *self.inner.port.write().unwrap_or_else(|e| e.into_inner()) = None;
        self.inner.budget_spent_said.store(false, Ordering::Relaxed);
        self.changed();
    }

    /// Number of the client's fds mapped now.
    pub fn fd_map_count(&self) -> usize {
        self.inner.fd_maps.used()
    }

    /// Sets the client port used for maps without fd.
    pub fn set_port(&self, port: Option<DmaPort>) {
        *self.inner.port.write().unwrap_or_else(|e| e.into_inner()) = port;
        self.changed();
    }

    fn changed(&self) {
        self.inner.generation.fetch_add(1, Ordering::Release);
    }

    /// Number of maps.
    pub fn map_count(&self) -> usize {
        self.inner
            .table
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    /// The client port that reaches memory without fd (and carries server-initiated writes
    /// such as interrupt messages), while a client is connected.
    pub fn port(&self) -> Option<DmaPort> {
        self.inner
            .port
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// A snapshot of the maps that reaches only memory mapped into the server: regions without
    /// fd fail with [`MemError::NoClient`] instead of sending a DMA message. For code that may
    /// hold a lock a client's MMIO reply waits on (DESIGN.md: a reply never waits on our own
    /// DMA request).
    pub fn local_view(&self) -> MemView {
        MemView {
            port: None,
            ..self.view()
        }
    }

    /// A snapshot of the maps for a series of accesses (a table walk, a copy).
    pub fn view(&self) -> MemView {
        MemView {
            table: self
                .inner
                .table
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
            port: self
                .inner
                .port
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
            last: RefCell::new(None),
        }
    }

    /// Reads `buf.len()` bytes at `gpa`.
    pub fn read(&self, gpa: Gpa, buf: &mut [u8]) -> Result<(), MemError> {
        self.view().read(gpa, buf)
    }

    /// Writes `data` at `gpa`.
    pub fn write(&self, gpa: Gpa, data: &[u8]) -> Result<(), MemError> {
        self.view().write(gpa, data)
    }

    /// One aligned 64-bit load (a table entry or descriptor word): atomic when mapped.
    pub fn read_u64(&self, gpa: Gpa) -> Result<u64, MemError> {
        self.view().read_u64(gpa)
    }

    /// One aligned 64-bit store: atomic when mapped.
    pub fn write_u64(&self, gpa: Gpa, value: u64) -> Result<(), MemError> {
        self.view().write_u64(gpa, value)
    }
}

/// One thread's view of guest memory kept across many short accesses (a device engine's
/// jobs): taking a snapshot costs a lock and reference counts, so it is taken again only
/// when a map, unmap or (dis)connect happened since. Staleness is bounded by the caller:
/// `current` at the start of each unit of work sees every change made before it.
///
/// A view keeps the client's mappings and its socket alive: a thread that goes idle calls
/// [`ViewCache::release`], so that a client that left is not held past its last job.
#[derive(Debug)]
pub struct ViewCache {
    mem: GuestMemory,
    seen: u64,
    view: Option<MemView>,
}

impl ViewCache {
    /// A cache of `mem`'s views, holding none yet.
    pub fn new(mem: GuestMemory) -> Self {
        ViewCache {
            mem,
            seen: 0,
            view: None,
        }
    }

    /// The view, taken again if the maps changed since the last one.
    pub fn current(&mut self) -> &MemView {
        let now = self.mem.inner.generation.load(Ordering::Acquire);
        if self.view.is_none() || now != self.seen {
            // Generation first: a change racing with the snapshot bumps it again.
            self.seen = now;
            self.view = Some(self.mem.view());
        }
        self.view.get_or_insert_with(|| self.mem.view())
    }

    /// Drops the view (and with it the mappings and client port it holds).
    pub fn release(&mut self) {
        self.view = None;
    }

    /// Whether a view is held.
    pub fn holds_view(&self) -> bool {
        self.view.is_some()
    }
}

/// A consistent snapshot of guest memory's maps. Holds no lock; remembers the last region hit,
/// since table walks and copies touch the same region again and again.
#[derive(Debug)]
pub struct MemView {
    table: Arc<MapTable>,
    port: Option<DmaPort>,
    last: RefCell<Option<Arc<Region>>>,
}

impl MemView {
    /// Runs `f` on the region containing `gpa`, checked for `access`. The last region found is
    /// kept, so walks and copies skip the table lookup, and a hit touches no reference count.
    /// `f` must not call back into the view (it runs while the cache is borrowed).
    fn with_region<R>(
        &self,
        gpa: Gpa,
        access: Access,
        f: impl FnOnce(&Region) -> Result<R, MemError>,
    ) -> Result<R, MemError> {
        let last = self.last.borrow();
        if let Some(region) = last.as_ref().filter(|r| r.start <= gpa && gpa.0 < r.end()) {
            check_access(region, gpa, access)?;
            return f(region);
        }
        drop(last);
        let region = self.table.find(gpa).ok_or(MemError::Unmapped(gpa))?;
        check_access(region, gpa, access)?;
        *self.last.borrow_mut() = Some(region.clone());
        f(region)
    }

    fn port(&self, gpa: Gpa) -> Result<&DmaPort, MemError> {
        self.port.as_ref().ok_or(MemError::NoClient(gpa))
    }

    /// Walks `[gpa, gpa + len)` region by region, calling `f(backing, gpa, offset in the
    /// mapping (0 for a remote region), range in the buffer)`.
    fn for_each_chunk(
        &self,
        gpa: Gpa,
        len: usize,
        access: Access,
        mut f: impl FnMut(&Backing, Gpa, usize, std::ops::Range<usize>) -> Result<(), MemError>,
    ) -> Result<(), MemError> {
        let mut done = 0usize;
        while done < len {
            let at = gpa
                .checked_add(done as u64)
                .ok_or(MemError::Unmapped(gpa))?;
            done += self.with_region(at, access, |region| {
                let n = ((region.end() - at.0) as usize).min(len - done);
                let offset = match &region.backing {
                    Backing::Mapped { offset, .. } => offset + (at.0 - region.start.0) as usize,
                    Backing::Remote => 0,
                };
                f(&region.backing, at, offset, done..done + n).map(|_| n)
            })?;
        }
        Ok(())
    }

    /// Reads `buf.len()` bytes at `gpa`.
    pub fn read(&self, gpa: Gpa, buf: &mut [u8]) -> Result<(), MemError> {
        self.for_each_chunk(
            gpa,
            buf.len(),
            Access::Read,
            |backing, at, off, range| match backing {
                Backing::Mapped { mapping, .. } => mapping
                    .read(off, &mut buf[range])
                    .then_some(())
                    .ok_or(MemError::Unmapped(at)),
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
            |backing, at, off, range| match backing {
                Backing::Mapped { mapping, .. } => mapping
                    .write(off, &data[range])
                    .then_some(())
                    .ok_or(MemError::Denied(at, "write")),
                Backing::Remote => Ok(self.port(at)?.write(at.0, &data[range])?),
            },
        )
    }

    /// Copies `len` bytes from `src` to `dst` (a device's memmove: the ranges may overlap).
    /// When both ranges lie inside fd-backed maps this is one direct copy between the
    /// mappings; otherwise the bytes go through a buffer (and the client, for maps without fd).
    pub fn copy(&self, src: Gpa, dst: Gpa, len: usize) -> Result<(), MemError> {
        if let (Some(from), Some(to)) = (
            self.mapped(src, len, Access::Read),
            self.mapped(dst, len, Access::Write),
        ) {
            let ((src_map, src_off), (dst_map, dst_off)) = (from?, to?);
            return src_map
                .copy_to(src_off, dst_map, dst_off, len)
                .then_some(())
                .ok_or(MemError::Denied(dst, "write"));
        }
        let mut buf = vec![0u8; len];
        self.read(src, &mut buf)?;
        self.write(dst, &buf)
    }

    /// The mapping and offset holding all of `[gpa, gpa + len)`, when one fd-backed map does;
    /// `Some(Err)` when the map refuses `access`.
    fn mapped(
        &self,
        gpa: Gpa,
        len: usize,
        access: Access,
    ) -> Option<Result<(&Mapping, usize), MemError>> {
        let region = self.table.find(gpa)?;
        let end = gpa.0.checked_add(len as u64)?;
        let Backing::Mapped { mapping, offset } = &region.backing else {
            return None;
        };
        if end > region.end() {
            return None;
        }
        Some(
            check_access(region, gpa, access)
                .map(|()| (&**mapping, offset + (gpa.0 - region.start.0) as usize)),
        )
    }

    /// Applies `f` to the mapping and offset of the aligned u64 at `gpa`; `Ok(None)` when its
    /// region has no fd, and the caller has to go through the client.
    fn on_mapped_word<R>(
        &self,
        gpa: Gpa,
        access: Access,
        f: impl FnOnce(&Mapping, usize) -> Result<R, MemError>,
    ) -> Result<Option<R>, MemError> {
        if gpa.0 % 8 != 0 {
            return Err(MemError::Unaligned(gpa));
        }
        self.with_region(gpa, access, |region| match &region.backing {
            Backing::Mapped { mapping, offset } => {
                f(mapping, offset + (gpa.0 - region.start.0) as usize).map(Some)
            }
            Backing::Remote => Ok(None),
        })
    }

    /// One aligned 64-bit load (a table entry or descriptor word): atomic when mapped.
    pub fn read_u64(&self, gpa: Gpa) -> Result<u64, MemError> {
        let load = |m: &Mapping, off| m.load_u64(off).ok_or(MemError::Unmapped(gpa));
        match self.on_mapped_word(gpa, Access::Read, load)? {
            Some(value) => Ok(value),
            None => {
                let mut bytes = [0u8; 8];
                self.port(gpa)?.read(gpa.0, &mut bytes)?;
                Ok(u64::from_le_bytes(bytes))
            }
        }
    }

    /// One aligned 64-bit store: atomic when mapped.
    pub fn write_u64(&self, gpa: Gpa, value: u64) -> Result<(), MemError> {
        let store = |m: &Mapping, off| {
            m.store_u64(off, value)
                .ok_or(MemError::Denied(gpa, "write"))
        };
        match self.on_mapped_word(gpa, Access::Write, store)? {
            Some(()) => Ok(()),
            None => Ok(self.port(gpa)?.write(gpa.0, &value.to_le_bytes())?),
        }
    }

    /// Atomically replaces the aligned u64 at `gpa` with `new` if it still holds `current`
    /// (accessed/dirty updates: the guest may change the entry meanwhile). Returns the value
    /// found. Without an fd there is no atomic access: read, compare and write through the
    /// client, which is exact only while the guest does not race with us.
    pub fn compare_exchange_u64(&self, gpa: Gpa, current: u64, new: u64) -> Result<u64, MemError> {
        let exchange = |m: &Mapping, off| {
            m.compare_exchange_u64(off, current, new)
                .ok_or(MemError::Denied(gpa, "write"))
        };
        match self.on_mapped_word(gpa, Access::Write, exchange)? {
            Some(found) => Ok(found),
            None => {
                let found = self.read_u64(gpa)?;
                if found == current {
                    self.write_u64(gpa, new)?;
                }
                Ok(found)
            }
        }
    }
}

/// Checks that `region` allows `access`.
fn check_access(region: &Region, gpa: Gpa, access: Access) -> Result<(), MemError> {
    match access {
        Access::Read if !region.readable => Err(MemError::Denied(gpa, "read")),
        Access::Write if !region.writable => Err(MemError::Denied(gpa, "write")),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Guest memory with one memfd-backed map of `size` bytes at `gpa`.
    fn memfd_memory(gpa: u64, size: u64, writable: bool) -> GuestMemory {
        let fd = rustix::fs::memfd_create(
            "ram",
            rustix::fs::MemfdFlags::CLOEXEC | rustix::fs::MemfdFlags::ALLOW_SEALING,
        )
        .unwrap();
        rustix::fs::ftruncate(&fd, size).unwrap();
        rustix::fs::fcntl_add_seals(&fd, rustix::fs::SealFlags::SHRINK).unwrap();
        let mem = GuestMemory::new();
        let request = DmaMapRequest {
            address: gpa,
            size,
            fd_offset: 0,
            readable: true,
            writable,
        };
        mem.map(&request, Some(fd)).unwrap();
        mem
    }

    #[test]
    fn test_view_cache_sees_a_map_made_after_it_was_taken() {
        let mem = memfd_memory(0x10000, 0x1000, true);
        let mut cache = ViewCache::new(mem.clone());
        assert!(cache.current().read_u64(Gpa(0x10000)).is_ok());
        mem.unmap(&DmaUnmapRequest::All).unwrap();
        assert!(matches!(
            cache.current().read_u64(Gpa(0x10000)),
            Err(MemError::Unmapped(_))
        ));
    }

    #[test]
    fn test_released_view_cache_holds_no_mapping() {
        let mem = memfd_memory(0x10000, 0x1000, true);
        let mut cache = ViewCache::new(mem.clone());
        assert!(
            !cache.holds_view(),
            "nothing is taken before the first access"
        );
        let mapping = match &cache.current().table.find(Gpa(0x10000)).unwrap().backing {
            Backing::Mapped { mapping, .. } => Arc::downgrade(mapping),
            Backing::Remote => unreachable!("memfd maps are mapped"),
        };
        mem.clear();
        assert!(mapping.upgrade().is_some(), "the cached view still maps it");
        cache.release();
        assert!(mapping.upgrade().is_none(), "released: unmapped");
        assert!(cache.current().read_u64(Gpa(0x10000)).is_err());
    }

    #[test]
    fn test_copy_overlapping_moves_like_memmove() {
        let mem = memfd_memory(0x10000, 0x2000, true);
        let data: Vec<u8> = (0..64).collect();
        mem.write(Gpa(0x10000), &data).unwrap();
        let view = mem.view();
        view.copy(Gpa(0x10000), Gpa(0x10010), 64).unwrap();
        let mut buf = [0; 64];
        mem.read(Gpa(0x10010), &mut buf).unwrap();
        assert_eq!(buf.to_vec(), data);
    }

    #[test]
    fn test_copy_outside_or_into_read_only_map_fails() {
        let mem = memfd_memory(0x10000, 0x1000, true);
        let view = mem.view();
        assert!(matches!(
            view.copy(Gpa(0x10f00), Gpa(0x10000), 0x200),
            Err(MemError::Unmapped(_))
        ));
        let ro = memfd_memory(0x10000, 0x1000, false);
        assert!(matches!(
            ro.view().copy(Gpa(0x10000), Gpa(0x10800), 16),
            Err(MemError::Denied(_, "write"))
        ));
    }

    #[test]
    fn test_bytes_and_words_round_trip() {
        let mem = memfd_memory(0x10000, 0x2000, true);
        mem.write(Gpa(0x10ff8), &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10])
            .unwrap();
        let mut buf = [0; 10];
        mem.read(Gpa(0x10ff8), &mut buf).unwrap();
        assert_eq!(buf, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
        assert_eq!(
            mem.read_u64(Gpa(0x10ff8)).unwrap(),
            u64::from_le_bytes([1, 2, 3, 4, 5, 6, 7, 8])
        );
    }

    #[test]
    fn test_accesses_outside_maps_fail() {
        let mem = memfd_memory(0x10000, 0x1000, true);
        assert!(matches!(
            mem.read_u64(Gpa(0x11000)),
            Err(MemError::Unmapped(_))
        ));
        assert!(matches!(
            mem.write(Gpa(0x10ffc), &[0; 8]),
            Err(MemError::Unmapped(_))
        ));
        assert!(matches!(
            mem.read_u64(Gpa(0x10004)),
            Err(MemError::Unaligned(_))
        ));
        assert!(matches!(
            mem.read(Gpa(u64::MAX), &mut [0; 2]),
            Err(MemError::Unmapped(_))
        ));
    }

    #[test]
    fn test_read_only_map_refuses_writes() {
        let mem = memfd_memory(0, 0x1000, false);
        assert!(matches!(
            mem.write_u64(Gpa(0), 1),
            Err(MemError::Denied(..))
        ));
        assert!(matches!(
            mem.view().compare_exchange_u64(Gpa(0), 0, 1),
            Err(MemError::Denied(..))
        ));
        assert_eq!(mem.read_u64(Gpa(0)).unwrap(), 0);
    }

    #[test]
    fn test_compare_exchange_only_replaces_the_expected_value() {
        let mem = memfd_memory(0, 0x1000, true);
        let view = mem.view();
        view.write_u64(Gpa(8), 5).unwrap();
        assert_eq!(view.compare_exchange_u64(Gpa(8), 4, 9).unwrap(), 5);
        assert_eq!(view.read_u64(Gpa(8)).unwrap(), 5);
        assert_eq!(view.compare_exchange_u64(Gpa(8), 5, 9).unwrap(), 5);
        assert_eq!(view.read_u64(Gpa(8)).unwrap(), 9);
    }

    #[test]
    fn test_unsealed_fd_is_not_mapped_but_reached_through_the_client() {
        let fd = rustix::fs::memfd_create("ram", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
        rustix::fs::ftruncate(&fd, 0x1000).unwrap();
        let mem = GuestMemory::new();
        let request = DmaMapRequest {
            address: 0,
            size: 0x1000,
            fd_offset: 0,
            readable: true,
            writable: true,
        };
        mem.map(&request, Some(fd)).unwrap();
        // No client port in this test: a remote region says so instead of touching the fd.
        assert!(matches!(mem.read_u64(Gpa(0)), Err(MemError::NoClient(_))));
    }

    #[test]
    fn test_view_keeps_its_snapshot_across_an_unmap() {
        let mem = memfd_memory(0, 0x1000, true);
        mem.write_u64(Gpa(0), 7).unwrap();
        let view = mem.view();
        mem.unmap(&DmaUnmapRequest::All).unwrap();
        assert_eq!(
            view.read_u64(Gpa(0)).unwrap(),
            7,
            "the snapshot still maps it"
        );
        assert!(mem.read_u64(Gpa(0)).is_err(), "a new access does not");
    }
}
