//! The accel's configuration space as read over the wire, decoded by an independent decoder
//! (the pcics crate), and its write semantics (RO ignored, RW kept, RW1C cleared, BAR sizing).

mod common;

use common::{spawn_accel, RawClient};
use pcics::capabilities::{Capability, CapabilityKind};
use pcics::extended_capabilities::{ExtendedCapability, ExtendedCapabilityKind};
use pcics::{Capabilities, ExtendedCapabilities, Header, DDR_OFFSET, ECS_OFFSET};
use vsvm::vfio_user::protocol::{Command, RegionAccess};
use zerocopy::IntoBytes;

const CONFIG: u32 = 7;

fn read_config(c: &mut RawClient) -> Vec<u8> {
    let reply = c.call(
        Command::RegionRead,
        RegionAccess {
            offset: 0,
            region: CONFIG,
            count: 4096,
        }
        .as_bytes(),
    );
    assert!(!reply.header.is_error());
    reply.body[16..].to_vec()
}

fn write_config(c: &mut RawClient, offset: u64, data: &[u8]) {
    let mut body = RegionAccess {
        offset,
        region: CONFIG,
        count: data.len() as u32,
    }
    .as_bytes()
    .to_vec();
    body.extend_from_slice(data);
    assert!(!c.call(Command::RegionWrite, &body).header.is_error());
}

fn connected() -> RawClient {
    let (mut c, _server) = spawn_accel();
    c.negotiate();
    c
}

fn ext_caps(cfg: &[u8]) -> Vec<ExtendedCapability<'_>> {
    ExtendedCapabilities::new(&cfg[ECS_OFFSET..])
        .map(|c| c.expect("ext cap decodes"))
        .collect()
}

fn find_ext<'a, T>(
    cfg: &'a [u8],
    pick: impl Fn(&ExtendedCapabilityKind<'a>) -> Option<T>,
) -> (u16, T) {
    ext_caps(cfg)
        .iter()
        .find_map(|c| pick(&c.kind).map(|t| (c.offset, t)))
        .expect("ext cap present")
}

#[test]
fn test_header_identity_and_bars_decode() {
    let mut c = connected();
    let cfg = read_config(&mut c);
    let header = Header::try_from(&cfg[..DDR_OFFSET]).unwrap();
    assert_eq!((header.vendor_id, header.device_id), (0x5653, 0xa001));
    assert_eq!(header.revision_id, 1);
    assert_eq!(
        (header.class_code.base, header.class_code.sub),
        (0x12, 0x00)
    );
    assert!(header.status.capabilities_list);
    assert_eq!(header.capabilities_pointer, 0x40);
}

#[test]
fn test_express_v2_endpoint_with_end_end_tlp_prefix() {
    let mut c = connected();
    let cfg = read_config(&mut c);
    let header = Header::try_from(&cfg[..DDR_OFFSET]).unwrap();
    let caps: Vec<Capability> = Capabilities::new(&cfg[DDR_OFFSET..ECS_OFFSET], &header)
        .map(|c| c.unwrap())
        .collect();
    let exp = caps
        .iter()
        .find_map(|c| match &c.kind {
            CapabilityKind::PciExpress(e) => Some(e),
            _ => None,
        })
        .unwrap();
    assert_eq!(exp.version, 2);
    assert!(matches!(
        exp.device_type,
        pcics::capabilities::pci_express::DeviceType::Endpoint { .. }
    ));
    let dev2 = exp
        .device_2
        .as_ref()
        .expect("DevCap2 exists in a v2 capability");
    assert!(dev2.capabilities.end_end_tlp_prefix_supported);
    let msix = caps
        .iter()
        .find_map(|c| match &c.kind {
            CapabilityKind::MsiX(m) => Some(m),
            _ => None,
        })
        .unwrap();
    assert_eq!(msix.message_control.table_size + 1, 4);
    assert!(!msix.message_control.msi_x_enable);
    assert_eq!(msix.table.offset, 0);
    assert_eq!(msix.pending_bit_array.offset, 0x800);
}

#[test]
fn test_pasid_ats_pri_decode_with_linux_expected_values() {
    let mut c = connected();
    let cfg = read_config(&mut c);
    let (_, pasid) = find_ext(&cfg, |k| match k {
        ExtendedCapabilityKind::ProcessAddressSpaceId(p) => Some(p.clone()),
        _ => None,
    });
    assert!(pasid.pacid_capability.execute_permission_supported);
    assert!(pasid.pacid_capability.privileged_mode_supported);
    assert_eq!(pasid.pacid_capability.max_pasid_width, 20);
    assert!(!pasid.pacid_control.pasid_enable);
    let (_, ats) = find_ext(&cfg, |k| match k {
        ExtendedCapabilityKind::AddressTranslationServices(a) => Some(a.clone()),
        _ => None,
    });
    assert!(ats.ats_capability.page_aligned_request);
    assert!(!ats.ats_control.enable);
    let (_, pri) = find_ext(&cfg, |k| match k {
        ExtendedCapabilityKind::PageRequestInterface(p) => Some(p.clone()),
        _ => None,
    });
    assert!(pri.page_request_status.stopped);
    assert!(pri.page_request_status.prg_response_pasid_required);
    assert!(!pri.page_request_control.enable);
    assert_eq!(pri.outstanding_page_request_capacity, 512);
    assert_eq!(pri.outstanding_page_request_allocation, 0);
}

#[test]
fn test_enable_sequence_as_linux_does_it() {
    let mut c = connected();
    let cfg = read_config(&mut c);
    let (pasid_at, _) = find_ext(&cfg, |k| {
        matches!(k, ExtendedCapabilityKind::ProcessAddressSpaceId(_)).then_some(())
    });
    let (ats_at, _) = find_ext(&cfg, |k| {
        matches!(k, ExtendedCapabilityKind::AddressTranslationServices(_)).then_some(())
    });
    let (pri_at, _) = find_ext(&cfg, |k| {
        matches!(k, ExtendedCapabilityKind::PageRequestInterface(_)).then_some(())
    });
    // pci_enable_pasid: ENABLE | EXEC | PRIV; pci_enable_ats(12): ENABLE | STU 0;
    // pci_enable_pri: ALLOC = min(cap, 2048), then ENABLE.
    write_config(&mut c, u64::from(pasid_at) + 6, &0x0007u16.to_le_bytes());
    write_config(&mut c, u64::from(ats_at) + 6, &0x8000u16.to_le_bytes());
    write_config(&mut c, u64::from(pri_at) + 0xc, &512u32.to_le_bytes());
    write_config(&mut c, u64::from(pri_at) + 4, &1u16.to_le_bytes());
    let cfg = read_config(&mut c);
    let (_, pasid) = find_ext(&cfg, |k| match k {
        ExtendedCapabilityKind::ProcessAddressSpaceId(p) => Some(p.clone()),
        _ => None,
    });
    assert!(
        pasid.pacid_control.pasid_enable
            && pasid.pacid_control.execute_permission_enable
            && pasid.pacid_control.privileged_mode_enable
    );
    let (_, ats) = find_ext(&cfg, |k| match k {
        ExtendedCapabilityKind::AddressTranslationServices(a) => Some(a.clone()),
        _ => None,
    });
    assert!(ats.ats_control.enable);
    let (_, pri) = find_ext(&cfg, |k| match k {
        ExtendedCapabilityKind::PageRequestInterface(p) => Some(p.clone()),
        _ => None,
    });
    assert!(pri.page_request_control.enable);
    assert!(
        !pri.page_request_status.stopped,
        "Stopped must clear while PRI is enabled"
    );
    assert_eq!(pri.outstanding_page_request_allocation, 512);
    // Disable again: Stopped comes back (nothing outstanding); RESET reads as 0.
    write_config(&mut c, u64::from(pri_at) + 4, &2u16.to_le_bytes());
    let cfg = read_config(&mut c);
    let (_, pri) = find_ext(&cfg, |k| match k {
        ExtendedCapabilityKind::PageRequestInterface(p) => Some(p.clone()),
        _ => None,
    });
    assert!(
        pri.page_request_status.stopped
            && !pri.page_request_control.enable
            && !pri.page_request_control.reset
    );
}

#[test]
fn test_read_only_fields_ignore_writes() {
    let mut c = connected();
    let before = read_config(&mut c);
    let offsets: Vec<u64> = ext_caps(&before)
        .iter()
        .map(|e| u64::from(e.offset))
        .collect();
    // Identity, class, then each extended capability's header and capability register
    // (ATS cap, PRI control/status, PASID cap) and PRI's capacity.
    let mut ro = vec![(0u64, 4usize), (8, 4)];
    for at in &offsets {
        ro.extend([(*at, 4), (*at + 4, 2)]);
    }
    ro.push((offsets[1] + 8, 4));
    for &(at, len) in &ro {
        write_config(&mut c, at, &vec![0xff; len]);
    }
    let after = read_config(&mut c);
    for &(at, len) in &ro {
        let at = at as usize;
        if at == offsets[1] as usize + 4 {
            // PRI Control: only Enable is RW (Reset reads 0).
            assert_eq!(after[at], 0x01);
            continue;
        }
        assert_eq!(
            after[at..at + len],
            before[at..at + len],
            "RO bytes at {at:#x} changed"
        );
    }
    assert_eq!(
        ext_caps(&after).len(),
        3,
        "the extended capability chain survived"
    );
}

#[test]
fn test_bar_sizing_reads_back_the_size_mask() {
    let mut c = connected();
    write_config(&mut c, 0x10, &[0xff; 4]);
    let cfg = read_config(&mut c);
    assert_eq!(
        u32::from_le_bytes(cfg[0x10..0x14].try_into().unwrap()),
        0xffff_f000
    );
    write_config(&mut c, 0x10, &0xfebf_1000u32.to_le_bytes());
    let cfg = read_config(&mut c);
    assert_eq!(
        u32::from_le_bytes(cfg[0x10..0x14].try_into().unwrap()),
        0xfebf_1000
    );
    // BAR1 does not exist (BAR0 is 32-bit): it stays 0.
    write_config(&mut c, 0x14, &[0xff; 4]);
    assert_eq!(read_config(&mut c)[0x14..0x18], [0; 4]);
}

#[test]
fn test_status_error_bits_are_write_one_to_clear() {
    let mut c = connected();
    // Command: only implemented bits stick.
    write_config(&mut c, 4, &0xffffu16.to_le_bytes());
    let cfg = read_config(&mut c);
    assert_eq!(u16::from_le_bytes([cfg[4], cfg[5]]), 0x0546);
    // Status: writing ones to RW1C bits that are clear leaves them clear; CAP_LIST stays.
    write_config(&mut c, 6, &0xffffu16.to_le_bytes());
    let cfg = read_config(&mut c);
    assert_eq!(u16::from_le_bytes([cfg[6], cfg[7]]), 0x0010);
}

#[test]
fn test_device_reset_restores_power_on_config() {
    let mut c = connected();
    let before = read_config(&mut c);
    write_config(&mut c, 4, &0x0006u16.to_le_bytes());
    write_config(&mut c, 0x10, &0xfebf_1000u32.to_le_bytes());
    assert!(!c.call(Command::DeviceReset, &[]).header.is_error());
    assert_eq!(read_config(&mut c), before);
}
