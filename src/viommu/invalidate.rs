//! The guest's invalidations, carried out on the host IOMMU (the seed's second API): context-
//! and PASID-cache invalidations re-read the entries they cover and rebind; IOTLB and
//! device-TLB invalidations are converted from guest identities (domain ID, source-id,
//! RID_PASID) to host ones (device, PASID or none) and forwarded; page group responses go back
//! to the device. VT-d spec 6.5.2.1-6.5.2.6 (descriptors), 6.5.1 (what each covers).

use log::debug;

use super::devices::{source, Devices};
use super::registers::Outbox;
use super::stats::Counters;
use super::tables::Tables;
use crate::iommu::{
    CacheInvalidate, CacheType, DeviceId, Granularity, HostIommu, PageResponse, Pasid,
};
use crate::vtd::cache::{
    masked_source_match, ContextInvalidation, IotlbInvalidation, PasidCacheInvalidation,
    PasidIotlbInvalidation,
};
use crate::vtd::ids::DomainId;
use crate::vtd::qi::Executor;
use crate::vtd::sink::{DevTlbInvalidation, PageGroupResponse, VtdSink};
use crate::vtd::walk::PAGE_SHIFT;

/// Carries out invalidations for the front end.
pub struct Forwarder<'a> {
    /// The devices and what they are bound to.
    pub devices: &'a mut Devices,
    /// The guest's structures now.
    pub tables: &'a Tables<'a>,
    /// The host IOMMU.
    pub iommu: &'a dyn HostIommu,
    /// Counters.
    pub counters: &'a Counters,
    /// Interrupts raised meanwhile (the queue's own, by the caller).
    pub outbox: &'a mut Outbox,
}

/// Bytes covered by an address mask of `am` (2^am pages), saturating.
fn mask_bytes(am: u8) -> u64 {
    1u64.checked_shl(u32::from(am) + PAGE_SHIFT)
        .unwrap_or(u64::MAX)
}

impl Forwarder<'_> {
    fn forward(&mut self, device: DeviceId, cache: CacheType, granularity: Granularity) {
        let inv = CacheInvalidate { cache, granularity };
        match self.iommu.cache_invalidate(device, inv) {
            Ok(()) => {
                Counters::bump(&self.counters.invalidations);
                let of_pasid = matches!(
                    granularity,
                    Granularity::Pasid(_) | Granularity::Range { .. }
                );
                match cache {
                    CacheType::Iotlb if of_pasid => {
                        Counters::bump(&self.counters.pasid_iotlb_invalidations)
                    }
                    CacheType::DeviceTlb if of_pasid => {
                        Counters::bump(&self.counters.pasid_devtlb_invalidations)
                    }
                    _ => {}
                }
            }
            Err(e) => debug!("vIOMMU {device}: {inv:?} not forwarded: {e}"),
        }
    }

    /// Devices whose default domain has guest domain ID `did`, and (device, PASID) pairs
    /// bound under it.
    fn in_domain(&self, did: DomainId) -> (Vec<DeviceId>, Vec<(DeviceId, Pasid)>) {
        let mut defaults = Vec::new();
        let mut pasids = Vec::new();
        for (&id, state) in self.devices.iter() {
            if state.default_did() == Some(did) {
                defaults.push(id);
            }
            for (&pasid, bound) in &state.pasids {
                if bound.did == did {
                    pasids.push((id, pasid));
                }
            }
        }
        (defaults, pasids)
    }

    /// Whether `pasid` is `device`'s RID_PASID: its invalidations name requests without PASID.
    fn is_rid_pasid(&self, device: DeviceId, pasid: Pasid) -> bool {
        self.devices
            .get(device)
            .and_then(|s| s.rid_pasid())
            .is_some_and(|rid| rid == pasid.raw())
    }

    /// IOTLB entries of `did` (no-PASID ones with `no_pasid`, PASID ones with `with_pasid`).
    fn iotlb_in_domain(
        &mut self,
        did: DomainId,
        no_pasid: Granularity,
        with_pasid: impl Fn(Pasid) -> Granularity,
    ) {
        let (defaults, pasids) = self.in_domain(did);
        for device in defaults {
            self.forward(device, CacheType::Iotlb, no_pasid);
        }
        for (device, pasid) in pasids {
            self.forward(device, CacheType::Iotlb, with_pasid(pasid));
        }
    }

    /// PASID-based IOTLB invalidation of `pasid`: PASIDs are global to the unit in our host
    /// terms, so every device that has it bound (or uses it as RID_PASID) is covered; the
    /// domain ID only narrows nothing that could be stale.
    fn iotlb_of_pasid(&mut self, pasid: Pasid, range: Option<(u64, u64)>) {
        let ids: Vec<DeviceId> = self.devices.iter().map(|(&id, _)| id).collect();
        for device in ids {
            let granularity = if self.is_rid_pasid(device, pasid) {
                match range {
                    Some((addr, size)) => Granularity::NoPasidRange { addr, size },
                    None => Granularity::NoPasid,
                }
            } else if self
                .devices
                .get(device)
                .is_some_and(|s| s.pasids.contains_key(&pasid))
            {
                match range {
                    Some((addr, size)) => Granularity::Range { pasid, addr, size },
                    None => Granularity::Pasid(pasid),
                }
            } else {
                continue;
            };
            self.forward(device, CacheType::Iotlb, granularity);
        }
    }
}

impl Executor for Forwarder<'_> {
    fn context_cache(&mut self, inv: ContextInvalidation) {
        let (tables, iommu, counters) = (self.tables, self.iommu, self.counters);
        match inv {
            ContextInvalidation::Device {
                source: sid,
                function_mask,
                ..
            } => {
                let ids: Vec<DeviceId> = self
                    .devices
                    .iter()
                    .map(|(&id, _)| id)
                    .filter(|id| masked_source_match(source(*id), sid, function_mask))
                    .collect();
                for id in ids {
                    self.devices.refresh_device(id, tables, iommu, counters);
                }
            }
            ContextInvalidation::Global | ContextInvalidation::Domain(_) => {
                self.devices.refresh_all(tables, iommu, counters)
            }
        }
    }

    fn iotlb(&mut self, inv: IotlbInvalidation) {
        match inv {
            IotlbInvalidation::Global => {
                let ids: Vec<DeviceId> = self.devices.iter().map(|(&id, _)| id).collect();
                for device in ids {
                    self.forward(device, CacheType::Iotlb, Granularity::Domain);
                }
            }
            IotlbInvalidation::Domain(did) => {
                self.iotlb_in_domain(did, Granularity::NoPasid, Granularity::Pasid)
            }
            IotlbInvalidation::Page {
                domain,
                addr,
                address_mask,
                ..
            } => {
                let size = mask_bytes(address_mask);
                self.iotlb_in_domain(domain, Granularity::NoPasidRange { addr, size }, |pasid| {
                    Granularity::Range { pasid, addr, size }
                })
            }
        }
    }

    fn pasid_iotlb(&mut self, inv: PasidIotlbInvalidation) {
        match inv {
            PasidIotlbInvalidation::Pasid { pasid, .. } => self.iotlb_of_pasid(pasid, None),
            PasidIotlbInvalidation::Page {
                pasid,
                addr,
                address_mask,
                ..
            } => self.iotlb_of_pasid(pasid, Some((addr, mask_bytes(address_mask)))),
        }
    }

    fn pasid_cache(&mut self, inv: PasidCacheInvalidation) {
        let (tables, iommu, counters) = (self.tables, self.iommu, self.counters);
        match inv {
            PasidCacheInvalidation::Pasid { pasid, .. } => self
                .devices
                .refresh_pasid_everywhere(pasid, tables, iommu, counters),
            PasidCacheInvalidation::Global | PasidCacheInvalidation::Domain(_) => {
                self.devices.refresh_all(tables, iommu, counters)
            }
        }
    }

    fn device_tlb(&mut self, inv: DevTlbInvalidation) {
        let Some(device) = self.devices.by_source(inv.source) else {
            debug!(
                "vIOMMU: device-TLB invalidation for {} (not behind the unit)",
                inv.source
            );
            return;
        };
        let range = inv.range();
        // Whole space when the size does not fit a u64 (0..=u64::MAX).
        let (addr, size) = (*range.start(), (range.end() - range.start()).checked_add(1));
        let (whole, size) = (size.is_none(), size.unwrap_or(u64::MAX));
        let pasid = inv.pasid.filter(|&p| !self.is_rid_pasid(device, p));
        let granularity = match (pasid, whole) {
            (_, _) if inv.global => Granularity::Domain,
            (None, true) => Granularity::NoPasid,
            (None, false) => Granularity::NoPasidRange { addr, size },
            (Some(pasid), true) => Granularity::Pasid(pasid),
            (Some(pasid), false) => Granularity::Range { pasid, addr, size },
        };
        self.forward(device, CacheType::DeviceTlb, granularity);
    }

    fn page_group_response(&mut self, resp: PageGroupResponse) {
        let response = PageResponse {
            device: DeviceId(resp.source.0),
            pasid: resp.pasid,
            group: resp.prg_index,
            code: resp.code,
        };
        match self.iommu.page_response(response) {
            Ok(()) => Counters::bump(&self.counters.page_responses),
            // A response after the host answered the group (its timer, or an unbind of the
            // PASID): dropped quietly, counted.
            Err(e) => {
                Counters::bump(&self.counters.late_page_responses);
                debug!("vIOMMU: page response {response:?} dropped: {e}")
            }
        }
    }

    fn sink(&mut self) -> &mut dyn VtdSink {
        self.outbox
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_mask_bytes_saturates() {
        assert_eq!(mask_bytes(0), 0x1000);
        assert_eq!(mask_bytes(9), 0x20_0000);
        assert_eq!(mask_bytes(52), u64::MAX);
        assert_eq!(mask_bytes(63), u64::MAX);
    }
}
