//! The devices behind the unit as the host IOMMU has been told about them: each device's
//! default domain and the PASIDs bound for it, with the guest domain IDs they carry (so that
//! domain-selective invalidations can be converted into per-device ones). Changes are made
//! only through the neutral API: set_default_domain, bind, rebind, unbind.

use std::collections::BTreeMap;

use log::debug;

use super::stats::Counters;
use super::tables::{Decoded, Tables};
use crate::iommu::{BindTarget, DefaultDomain, DeviceId, HostIommu, IommuError, Pasid};
use crate::vtd::entries::EntryFault;
use crate::vtd::ids::{DomainId, SourceId};

/// One PASID bound for a device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bound {
    /// What it is bound to.
    pub target: BindTarget,
    /// The guest's domain ID in its PASID entry.
    pub did: DomainId,
}

/// What the host IOMMU holds for one device.
#[derive(Clone, Debug, Default)]
pub struct DeviceState {
    /// The default domain last set (`None`: still the attach-time identity).
    pub default: Option<Decoded>,
    /// PASIDs bound.
    pub pasids: BTreeMap<Pasid, Bound>,
}

impl DeviceState {
    /// The guest domain ID of the default domain, if it has one.
    pub fn default_did(&self) -> Option<DomainId> {
        self.default.and_then(|d| d.did)
    }

    /// RID_PASID, in scalable mode with a usable context entry.
    pub fn rid_pasid(&self) -> Option<u32> {
        self.default.and_then(|d| d.rid_pasid)
    }

    /// Why requests without PASID are blocked, if they are.
    pub fn blocked(&self) -> Option<EntryFault> {
        self.default.and_then(|d| d.blocked)
    }
}

/// The devices behind the unit.
#[derive(Debug)]
pub struct Devices {
    map: BTreeMap<DeviceId, DeviceState>,
}

/// The source-id a device's requests carry.
pub fn source(device: DeviceId) -> SourceId {
    SourceId(device.0)
}

impl Devices {
    /// `ids`, all untranslated with nothing bound (what attach leaves).
    pub fn new(ids: &[DeviceId]) -> Self {
        Devices {
            map: ids.iter().map(|&id| (id, DeviceState::default())).collect(),
        }
    }

    /// Every device with its state.
    pub fn iter(&self) -> impl Iterator<Item = (&DeviceId, &DeviceState)> {
        self.map.iter()
    }

    /// One device.
    pub fn get(&self, device: DeviceId) -> Option<&DeviceState> {
        self.map.get(&device)
    }

    /// The device a source-id names, if it is behind the unit.
    pub fn by_source(&self, source: SourceId) -> Option<DeviceId> {
        let id = DeviceId(source.0);
        self.map.contains_key(&id).then_some(id)
    }

    /// Re-reads every device's default domain and bound PASIDs.
    pub fn refresh_all(&mut self, tables: &Tables, iommu: &dyn HostIommu, counters: &Counters) {
        let ids: Vec<DeviceId> = self.map.keys().copied().collect();
        for id in ids {
            self.refresh_device(id, tables, iommu, counters);
        }
    }

    /// Re-reads one device's default domain and every PASID bound for it.
    pub fn refresh_device(
        &mut self,
        id: DeviceId,
        tables: &Tables,
        iommu: &dyn HostIommu,
        counters: &Counters,
    ) {
        let Some(state) = self.map.get_mut(&id) else {
            return;
        };
        apply_default(
            id,
            state,
            tables.default_domain(source(id)),
            iommu,
            counters,
        );
        let bound: Vec<Pasid> = state.pasids.keys().copied().collect();
        for pasid in bound {
            refresh_pasid(id, state, pasid, tables, iommu, counters);
        }
    }

    /// Re-reads `pasid`'s entry of every device (a PASID-selective PASID-cache invalidation
    /// names no device): binds, rebinds or unbinds; for a device whose RID_PASID it is, the
    /// default domain.
    pub fn refresh_pasid_everywhere(
        &mut self,
        pasid: Pasid,
        tables: &Tables,
        iommu: &dyn HostIommu,
        counters: &Counters,
    ) {
        for (&id, state) in self.map.iter_mut() {
            let decoded = tables.default_domain(source(id));
            if decoded.rid_pasid == Some(pasid.raw()) {
                apply_default(id, state, decoded, iommu, counters);
            } else {
                refresh_pasid(id, state, pasid, tables, iommu, counters);
            }
        }
    }

    /// Every device back to untranslated, nothing bound (reset, translation off).
    pub fn clear(&mut self, iommu: &dyn HostIommu, counters: &Counters) {
        for (&id, state) in self.map.iter_mut() {
            for pasid in std::mem::take(&mut state.pasids).into_keys() {
                unbind(id, pasid, iommu, counters);
            }
            if state.default.take().is_some() {
                set_default(id, DefaultDomain::Identity, iommu, counters);
            }
        }
    }
}

/// Gives the host IOMMU `decoded` as `id`'s default domain, if it differs from what it has.
fn apply_default(
    id: DeviceId,
    state: &mut DeviceState,
    decoded: Decoded,
    iommu: &dyn HostIommu,
    counters: &Counters,
) {
    let current = state.default.map_or(DefaultDomain::Identity, |d| d.domain);
    if current != decoded.domain {
        set_default(id, decoded.domain, iommu, counters);
    }
    if let Some(fault) = decoded.blocked {
        debug!(
            "vIOMMU {id}: requests without PASID blocked: {}",
            fault.reason
        );
    }
    state.default = Some(decoded);
}

fn set_default(id: DeviceId, domain: DefaultDomain, iommu: &dyn HostIommu, counters: &Counters) {
    match iommu.set_default_domain(id, domain) {
        Ok(()) => {
            Counters::bump(&counters.default_domains);
            info_limited!("vIOMMU {id}: default domain {domain:?}");
        }
        Err(e) => warn_limited!("vIOMMU {id}: default domain {domain:?} refused: {e}"),
    }
}

/// Re-reads `pasid` of `id` and makes the host IOMMU's binding match it.
fn refresh_pasid(
    id: DeviceId,
    state: &mut DeviceState,
    pasid: Pasid,
    tables: &Tables,
    iommu: &dyn HostIommu,
    counters: &Counters,
) {
    let wanted = match tables.pasid(source(id), pasid) {
        Ok(wanted) => wanted,
        Err(fault) => {
            debug!(
                "vIOMMU {id}: PASID {pasid} entry unusable: {}",
                fault.reason
            );
            None
        }
    };
    let had = state.pasids.get(&pasid).copied();
    match (had, wanted) {
        (None, None) => {}
        (Some(_), None) => {
            state.pasids.remove(&pasid);
            unbind(id, pasid, iommu, counters);
        }
        (had, Some((target, did))) => {
            let result = match had {
                Some(old) if old.target == target => Ok(()),
                Some(_) => iommu.rebind(id, pasid, target),
                None => iommu.bind(id, pasid, target),
            };
            match result {
                Ok(()) => {
                    if had.map(|b| b.target) != Some(target) {
                        Counters::bump(&counters.binds);
                        info_limited!("vIOMMU {id}: PASID {pasid} bound to {target:?}");
                    }
                    state.pasids.insert(pasid, Bound { target, did });
                }
                Err(e) => {
                    warn_limited!("vIOMMU {id}: PASID {pasid} bind refused: {e}");
                    if had.is_some() {
                        state.pasids.remove(&pasid);
                        unbind(id, pasid, iommu, counters);
                    }
                }
            }
        }
    }
}

fn unbind(id: DeviceId, pasid: Pasid, iommu: &dyn HostIommu, counters: &Counters) {
    match iommu.unbind(id, pasid) {
        Ok(()) | Err(IommuError::NotBound { .. }) => {
            Counters::bump(&counters.unbinds);
            info_limited!("vIOMMU {id}: PASID {pasid} unbound");
        }
        Err(e) => warn_limited!("vIOMMU {id}: unbind of PASID {pasid}: {e}"),
    }
}
