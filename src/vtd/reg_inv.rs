//! Register-based invalidation: what a CCMD or IOTLB register command asks for, and the
//! granularity the unit reports back as performed. VT-d spec 11.4.7 (CCMD), 11.4.8 (IOTLB_REG,
//! IVA_REG), 6.5.1 (register-based invalidation interface).

use super::cache::{ContextInvalidation, IotlbInvalidation};
use super::ids::{DomainId, SourceId};
use super::inv_desc::masked_page_addr;
use super::regs::{Ccmd, ContextGranularity, IotlbGranularity, IotlbReg, Iva};

/// The context-cache invalidation CCMD asks for; `None` for the reserved granularity.
pub fn context_invalidation(ccmd: Ccmd) -> Option<ContextInvalidation> {
    let domain = DomainId(ccmd.did());
    match ccmd.cirg() {
        ContextGranularity::Global => Some(ContextInvalidation::Global),
        ContextGranularity::Domain => Some(ContextInvalidation::Domain(domain)),
        ContextGranularity::Device => Some(ContextInvalidation::Device {
            domain,
            source: SourceId(ccmd.sid()),
            function_mask: ccmd.fm(),
        }),
        ContextGranularity::Reserved => None,
    }
}

/// The IOTLB invalidation the IOTLB register asks for (page-selective from IVA); `None` for
/// the reserved granularity.
pub fn iotlb_invalidation(cmd: IotlbReg, iva: Iva) -> Option<IotlbInvalidation> {
    let domain = DomainId(cmd.did());
    match cmd.iirg() {
        IotlbGranularity::Global => Some(IotlbInvalidation::Global),
        IotlbGranularity::Domain => Some(IotlbInvalidation::Domain(domain)),
        IotlbGranularity::Page => Some(IotlbInvalidation::Page {
            domain,
            addr: masked_page_addr(iva.addr(), iva.am()),
            address_mask: iva.am(),
            ih: iva.ih(),
        }),
        IotlbGranularity::Reserved => None,
    }
}

/// IAIG: the granularity actually performed (0, reserved, when nothing was: Linux then prints
/// "Flush IOTLB failed").
pub fn performed_granularity(performed: Option<IotlbInvalidation>) -> IotlbGranularity {
    match performed {
        None => IotlbGranularity::Reserved,
        Some(IotlbInvalidation::Global) => IotlbGranularity::Global,
        Some(IotlbInvalidation::Domain(_)) => IotlbGranularity::Domain,
        Some(IotlbInvalidation::Page { .. }) => IotlbGranularity::Page,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_reserved_granularities_ask_for_nothing() {
        let ccmd = Ccmd::new().with_cirg(ContextGranularity::Reserved);
        assert_eq!(context_invalidation(ccmd), None);
        let cmd = IotlbReg::new().with_iirg(IotlbGranularity::Reserved);
        assert_eq!(iotlb_invalidation(cmd, Iva::new()), None);
        assert_eq!(performed_granularity(None), IotlbGranularity::Reserved);
    }

    #[test]
    fn test_device_selective_context_invalidation_carries_sid_and_mask() {
        let ccmd = Ccmd::new()
            .with_cirg(ContextGranularity::Device)
            .with_did(7)
            .with_sid(0x20)
            .with_fm(1);
        assert_eq!(
            context_invalidation(ccmd),
            Some(ContextInvalidation::Device {
                domain: DomainId(7),
                source: SourceId(0x20),
                function_mask: 1
            })
        );
    }
}
