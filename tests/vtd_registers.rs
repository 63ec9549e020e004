//! The VT-d remapping unit driven only through its registers and guest RAM, the way Linux's
//! intel-iommu driver does: register reset values and access types, register-based
//! invalidation, queued invalidation (every descriptor type, every error class), fault
//! recording, the page request queue, and the three interrupt sources.

mod common_vtd;

use common_vtd::driver::*;
use common_vtd::Structures;
use proptest::prelude::*;
use vsvm::vtd::cap::{FRCD_OFFSET, IOTLB_OFFSET};
use vsvm::vtd::regs::*;
use vsvm::vtd::{
    Access, DevTlbInvalidation, InterruptKind, PageGroupResponse, PageRequest, PageRequestOutcome,
    PageResponseCode, Pasid, Request, SourceId, VtdConfig, VtdInterrupt,
};

const GCMD_TE: u32 = 1 << 31;
const GCMD_SRTP: u32 = 1 << 30;
const GCMD_SFL: u32 = 1 << 29;
const GCMD_WBF: u32 = 1 << 27;
const GCMD_QIE: u32 = 1 << 26;
const GCMD_IRE: u32 = 1 << 25;
const FSTS_PFO: u32 = 1 << 0;
const FSTS_PPF: u32 = 1 << 1;
const FSTS_IQE: u32 = 1 << 4;
const CTL_IM: u32 = 1 << 31;
const CTL_IP: u32 = 1 << 30;
const FRCD_F: u32 = 1 << 31;
const PRS_PPR: u32 = 1;
const PRS_PRO: u32 = 2;
const DEVICE: SourceId = SourceId::new(0, 5, 0);

fn irq(kind: InterruptKind, data: u32) -> VtdInterrupt {
    VtdInterrupt {
        kind,
        addr: u64::from(FE_ADDR),
        data,
    }
}

fn fault_irq() -> VtdInterrupt {
    irq(InterruptKind::Fault, FE_DATA)
}

fn iqei(m: &Machine) -> u64 {
    m.readq(DMAR_IQER_REG) & 0xf
}

// ---------------------------------------------------------------------------------------------
// Register file: reset values and access types.

#[test]
fn test_reset_values() {
    let config = VtdConfig::default();
    let m = Machine::new(config);
    assert_eq!(m.readl(DMAR_VER_REG), 0x10, "version 1.0");
    assert_eq!(m.readq(DMAR_CAP_REG), config.cap().into_bits());
    assert_eq!(m.readq(DMAR_ECAP_REG), config.ecap().into_bits());
    assert_eq!(
        m.readl(DMAR_CAP_REG + 4) as u64,
        config.cap().into_bits() >> 32,
        "upper half alone"
    );
    for ctl in [DMAR_FECTL_REG, DMAR_IECTL_REG, DMAR_PECTL_REG] {
        assert_eq!(m.readl(ctl), CTL_IM, "interrupts start masked");
    }
    for reg in [
        DMAR_GCMD_REG,
        DMAR_GSTS_REG,
        DMAR_FSTS_REG,
        DMAR_FEDATA_REG,
        DMAR_FEADDR_REG,
        DMAR_FEUADDR_REG,
        DMAR_ICS_REG,
        DMAR_PRS_REG,
        DMAR_PMEN_REG,
    ] {
        assert_eq!(m.readl(reg), 0, "0x{reg:x}");
    }
    for reg in [
        DMAR_RTADDR_REG,
        DMAR_CCMD_REG,
        DMAR_IQH_REG,
        DMAR_IQT_REG,
        DMAR_IQA_REG,
        DMAR_IQER_REG,
        DMAR_PQH_REG,
        DMAR_PQT_REG,
        DMAR_PQA_REG,
        DMAR_AFLOG_REG,
        DMAR_IVA_REG,
        DMAR_IOTLB_REG,
    ] {
        assert_eq!(m.readq(reg), 0, "0x{reg:x}");
    }
    for i in 0..u64::from(config.fault_records) {
        assert_eq!(m.readq(FRCD_OFFSET + 16 * i), 0);
        assert_eq!(m.readq(FRCD_OFFSET + 16 * i + 8), 0);
    }
    assert_eq!(m.unit.register_window_size(), 4096);
}

#[test]
fn test_read_only_registers_ignore_writes() {
    let config = VtdConfig::default();
    let mut m = Machine::new(config);
    for (reg, size) in [
        (DMAR_VER_REG, 4),
        (DMAR_CAP_REG, 8),
        (DMAR_ECAP_REG, 8),
        (DMAR_GSTS_REG, 4),
        (DMAR_IQH_REG, 8),
        (DMAR_IQER_REG, 8),
        (FRCD_OFFSET, 8),
        (DMAR_AFLOG_REG, 8),
        (DMAR_PMEN_REG, 4),
    ] {
        let before = m.unit.mmio_read(reg, size);
        m.unit.mmio_write(reg, size, u64::MAX, &mut m.sink);
        assert_eq!(m.unit.mmio_read(reg, size), before, "0x{reg:x}");
    }
    // FRCD upper half: every field but F is read-only, and F only clears.
    m.writeq(FRCD_OFFSET + 8, u64::MAX);
    assert_eq!(m.readq(FRCD_OFFSET + 8), 0);
    assert!(m.sink.events.is_empty());
}

#[test]
fn test_read_write_masks() {
    let mut m = Machine::default_config();
    let cases: [(u64, usize, u64, u64); 12] = [
        (DMAR_RTADDR_REG, 8, u64::MAX, !0x3ff),
        (DMAR_FEDATA_REG, 4, 0xffff_ffff, 0xffff),
        (DMAR_FEADDR_REG, 4, 0xffff_ffff, 0xffff_fffc),
        (DMAR_FEUADDR_REG, 4, 0xffff_ffff, 0xffff_ffff),
        (DMAR_FECTL_REG, 4, 0xffff_ffff, u64::from(CTL_IM)),
        (DMAR_IQT_REG, 8, u64::MAX, 0x7fff0),
        (DMAR_IQA_REG, 8, u64::MAX, !0x7f8),
        (DMAR_PQH_REG, 8, u64::MAX, 0x7ffe0),
        (DMAR_PQT_REG, 8, u64::MAX, 0x7ffe0),
        (DMAR_PQA_REG, 8, u64::MAX, !0xff8),
        (DMAR_IEADDR_REG, 4, 0xffff_ffff, 0xffff_fffc),
        (DMAR_PEDATA_REG, 4, 0xffff_ffff, 0xffff),
    ];
    for (reg, size, write, expect) in cases {
        m.unit.mmio_write(reg, size, write, &mut m.sink);
        assert_eq!(m.unit.mmio_read(reg, size), expect, "0x{reg:x}");
        m.unit.mmio_write(reg, size, 0, &mut m.sink);
        assert_eq!(m.unit.mmio_read(reg, size), 0, "0x{reg:x} back to 0");
    }
}

#[test]
fn test_64_bit_registers_by_32_bit_halves() {
    let mut m = Machine::default_config();
    m.writel(DMAR_IQA_REG, 0x0020_0801);
    m.writel(DMAR_IQA_REG + 4, 0x1);
    assert_eq!(m.readq(DMAR_IQA_REG), 0x1_0020_0801);
    assert_eq!(m.readl(DMAR_IQA_REG), 0x0020_0801);
    assert_eq!(m.readl(DMAR_IQA_REG + 4), 0x1);
    m.writel(DMAR_IQA_REG + 4, 0);
    assert_eq!(
        m.readq(DMAR_IQA_REG),
        0x0020_0801,
        "writing one half keeps the other"
    );
}

#[test]
fn test_invalid_sizes_and_offsets_are_harmless() {
    let mut m = Machine::default_config();
    for size in [0, 1, 2, 3, 5, 16] {
        m.unit
            .mmio_write(DMAR_RTADDR_REG, size, u64::MAX, &mut m.sink);
        assert_eq!(m.unit.mmio_read(DMAR_RTADDR_REG, size), 0);
    }
    m.unit
        .mmio_write(DMAR_RTADDR_REG + 4, 8, u64::MAX, &mut m.sink);
    m.unit.mmio_write(u64::MAX, 4, u64::MAX, &mut m.sink);
    m.unit.mmio_write(0xfff0, 8, u64::MAX, &mut m.sink);
    assert_eq!(m.readq(DMAR_RTADDR_REG), 0);
    assert_eq!(m.unit.mmio_read(u64::MAX - 3, 4), 0);
}

// ---------------------------------------------------------------------------------------------
// GCMD / GSTS.

#[test]
fn test_gcmd_is_write_only_and_gsts_reflects_it() {
    let mut m = Machine::default_config();
    m.set_root_entry(false);
    assert_eq!(m.readl(DMAR_GCMD_REG), 0);
    assert_eq!(m.readl(DMAR_GSTS_REG), GCMD_SRTP, "RTPS");
    m.enable_translation();
    assert_eq!(m.readl(DMAR_GSTS_REG), GCMD_TE | GCMD_SRTP);
    // Linux's iommu_set_root_entry writes gcmd | SRTP with TE already set: TE stays.
    m.set_root_entry(true);
    assert_eq!(m.readl(DMAR_GSTS_REG), GCMD_TE | GCMD_SRTP);
    m.disable_translation();
    assert_eq!(m.readl(DMAR_GSTS_REG), GCMD_SRTP);
    assert_eq!(m.readl(DMAR_GCMD_REG), 0);
}

#[test]
fn test_gcmd_bits_of_unreported_capabilities_do_nothing() {
    let mut m = Machine::default_config();
    m.writel(
        DMAR_GCMD_REG,
        GCMD_WBF | GCMD_SFL | GCMD_IRE | (1 << 28) | (1 << 24) | (1 << 23),
    );
    assert_eq!(
        m.readl(DMAR_GSTS_REG),
        0,
        "no write buffer, fault log or interrupt remapping"
    );
}

#[test]
fn test_srtp_latches_rtaddr_and_later_writes_need_another_srtp() {
    let mut m = Machine::default_config();
    m.set_root_entry(true);
    let latched = m.unit.root_table().unwrap();
    assert_eq!(latched.addr, ROOT_TABLE);
    m.writeq(DMAR_RTADDR_REG, 0x77_7000);
    assert_eq!(
        m.unit.root_table(),
        Some(latched),
        "RTADDR alone changes nothing"
    );
    m.writel(DMAR_GCMD_REG, GCMD_SRTP);
    assert_eq!(m.unit.root_table().unwrap().addr, 0x77_7000);
}

#[test]
fn test_translation_disabled_is_identity() {
    let mut m = Machine::default_config();
    let req = Request {
        source: DEVICE,
        pasid: None,
        addr: 0xdead_b000,
        access: Access::WRITE,
    };
    let t = m.unit.translate(&req, &mut m.sink).unwrap();
    assert_eq!(t.output, 0xdead_b000);
    assert!(t.perms.read && t.perms.write);
    assert_eq!(m.readl(DMAR_FSTS_REG), 0);
}

#[test]
fn test_reserved_ttm_latches_an_unusable_root_and_translations_fault() {
    let mut m = Machine::default_config();
    m.program_events();
    m.writeq(DMAR_RTADDR_REG, ROOT_TABLE | (2 << 10));
    m.writel(DMAR_GCMD_REG, GCMD_SRTP);
    assert_ne!(
        m.readl(DMAR_GSTS_REG) & GCMD_SRTP,
        0,
        "RTPS is still reported"
    );
    assert_eq!(m.unit.root_table(), None);
    m.enable_translation();
    let req = Request {
        source: DEVICE,
        pasid: None,
        addr: 0x1000,
        access: Access::READ,
    };
    assert!(m.unit.translate(&req, &mut m.sink).is_err());
    assert_eq!(
        m.readl(FRCD_OFFSET + 12) & 0xff,
        0x31,
        "invalid TTM (QEMU VTD_FR_RTADDR_INV_TTM)"
    );
}

#[test]
fn test_scalable_ttm_without_smts_is_unusable() {
    let mut m = Machine::new(VtdConfig {
        smts: false,
        ..VtdConfig::default()
    });
    m.set_root_entry(true);
    assert_eq!(m.unit.root_table(), None);
    m.set_root_entry(false);
    assert!(m.unit.root_table().is_some());
}

// ---------------------------------------------------------------------------------------------
// Register-based invalidation.

#[test]
fn test_ccmd_self_clears_and_reports_actual_granularity() {
    let mut m = Machine::default_config();
    for cirg in 1u64..=3 {
        // __iommu_flush_context: ICC | granularity | FM | SID | DID in one 64-bit write.
        m.writeq(
            DMAR_CCMD_REG,
            (1 << 63) | (cirg << 61) | (1 << 32) | (0x28 << 16) | 5,
        );
        let ccmd = m.readq(DMAR_CCMD_REG);
        assert_eq!(ccmd >> 63, 0, "ICC cleared");
        assert_eq!((ccmd >> 59) & 3, cirg, "CAIG");
        assert_eq!(
            ccmd & 0xffff_ffff,
            (0x28 << 16) | 5,
            "SID and DID read back"
        );
        assert_eq!((ccmd >> 32) & 3, 0, "FM is write-only");
    }
    m.writeq(DMAR_CCMD_REG, 1 << 63);
    assert_eq!(
        m.readq(DMAR_CCMD_REG) >> 59,
        0,
        "reserved granularity: ICC clear, CAIG 0"
    );
}

#[test]
fn test_ccmd_by_halves_acts_when_icc_is_written() {
    let mut m = Machine::default_config();
    m.writel(DMAR_CCMD_REG, 7);
    assert_eq!(m.readq(DMAR_CCMD_REG), 7);
    m.writel(DMAR_CCMD_REG + 4, (1 << 31) | (2 << 29));
    assert_eq!(m.readq(DMAR_CCMD_REG), (2 << 61) | (2 << 59) | 7);
}

#[test]
fn test_iotlb_register_self_clears_and_reports_actual_granularity() {
    let mut m = Machine::default_config();
    let iotlb = IOTLB_OFFSET + 8;
    for iirg in 1u64..=3 {
        // __iommu_flush_iotlb: IVA first for page-selective, then IVT | IIRG | DID.
        m.writeq(IOTLB_OFFSET, 0x1234_5000 | 2);
        m.writeq(
            iotlb,
            (1 << 63) | (iirg << 60) | (1 << 49) | (1 << 48) | (9 << 32),
        );
        let value = m.readq(iotlb);
        assert_eq!(value >> 63, 0, "IVT cleared");
        assert_eq!((value >> 57) & 3, iirg, "IAIG");
        assert_eq!((value >> 32) & 0xffff, 9);
    }
    assert_eq!(m.readq(IOTLB_OFFSET), 0, "IVA is write-only");
    // Address mask above MAMV: performed domain-selective.
    m.writeq(IOTLB_OFFSET, 0x1234_5000 | 19);
    m.writeq(iotlb, (1 << 63) | (3 << 60) | (9 << 32));
    assert_eq!((m.readq(iotlb) >> 57) & 3, 2);
    m.writeq(iotlb, 1 << 63);
    assert_eq!(
        (m.readq(iotlb) >> 57) & 3,
        0,
        "reserved granularity: IAIG 0 (Linux: Flush IOTLB failed)"
    );
}

#[test]
fn test_iotlb_page_selective_without_psi_is_domain_selective() {
    let mut m = Machine::new(VtdConfig {
        psi: false,
        ..VtdConfig::default()
    });
    m.writeq(IOTLB_OFFSET + 8, (1 << 63) | (3 << 60) | (1 << 32));
    assert_eq!((m.readq(IOTLB_OFFSET + 8) >> 57) & 3, 2);
}

// ---------------------------------------------------------------------------------------------
// Queued invalidation.

#[test]
fn test_enable_qi_latches_queue_and_wait_writes_status() {
    let mut m = Machine::default_config();
    m.enable_qi(0, false);
    assert_eq!(m.iqh(), 0);
    assert_eq!(
        m.submit(&[qi::cc(1, 0, 0, 0), qi::iotlb(1, 0, 0, false, 0)]),
        QI_DONE
    );
    assert_eq!(m.iqh(), 3 * 16, "IQH caught up with IQT");
    assert_eq!(m.readq(DMAR_IQT_REG), 3 * 16);
    assert_eq!(m.readl(DMAR_FSTS_REG), 0);
}

#[test]
fn test_qi_256_bit_descriptors() {
    let mut m = Machine::default_config();
    m.enable_qi(1, true);
    assert_eq!(
        m.submit(&[qi::pc(3, 0, 0), qi::piotlb(2, 1, 5, 0, false, 0)]),
        QI_DONE
    );
    assert_eq!(m.iqh(), 3 * 32);
}

#[test]
fn test_qi_tail_written_as_64_bits_too() {
    let mut m = Machine::default_config();
    m.enable_qi(0, true);
    let status = m.status_slot();
    m.push(qi::wait(status, QI_DONE, true, false, false, false));
    m.writeq(DMAR_IQT_REG, m.free_head);
    assert_eq!(m.ram.read_u32(status), QI_DONE);
}

#[test]
fn test_qi_wraps_around_the_queue() {
    let mut m = Machine::default_config();
    m.enable_qi(0, true);
    // 128 slots of 32 bytes; 50 rounds of 3 descriptors wrap the ring more than once.
    for round in 0..50u64 {
        assert_eq!(
            m.submit(&[
                qi::cc(2, round as u16, 0, 0),
                qi::iotlb(2, round as u16, 0, false, 0)
            ]),
            QI_DONE
        );
        assert_eq!(m.iqh(), (round + 1) * 3 * 32 % 4096);
    }
}

#[test]
fn test_every_descriptor_type_and_granularity_is_accepted() {
    let mut m = Machine::default_config();
    m.enable_qi(1, true);
    let descs = [
        qi::cc(1, 0, 0, 0),
        qi::cc(2, 3, 0, 0),
        qi::cc(3, 3, 0x28, 3),
        qi::iotlb(1, 0, 0, false, 0),
        qi::iotlb(2, 3, 0, false, 0),
        qi::iotlb(3, 3, 0x40_0000, true, 9),
        qi::dev_iotlb(0x28, 0, 0x4000, false),
        qi::iec(false, 0, 0),
        qi::iec(true, 0x10, 3),
        qi::wait(0, 0, false, false, true, false),
        qi::wait(0, 0, false, false, false, true),
        qi::piotlb(2, 3, 0x10, 0, false, 0),
        qi::piotlb(3, 3, 0x10, 0x7f_f000, false, 0),
        qi::piotlb(3, 3, 0x10, 0, true, 52),
        qi::pc(0, 3, 0),
        qi::pc(1, 3, 0x10),
        qi::pc(3, 0, 0),
        qi::dev_iotlb_pasid(0x28, 0x10, 0, 0x8000, true, false),
        qi::dev_iotlb_pasid(0x28, 0x10, 0, 0, false, true),
        qi::page_response(0x28, Some(0x10), 0, 0x1ff, true),
    ];
    assert_eq!(m.submit(&descs), QI_DONE);
    assert_eq!(m.iqh(), (descs.len() as u64 + 1) * 32);
    assert_eq!(m.readl(DMAR_FSTS_REG), 0);
}

#[test]
fn test_device_tlb_invalidations_leave_through_the_sink() {
    let mut m = Machine::default_config();
    m.enable_qi(1, true);
    // Linux's "whole address space" (mask MAX_AGAW_PFN_WIDTH) and a 2-page range.
    let all = (1u64 << 63) - 1;
    assert_eq!(
        m.submit(&[
            qi::dev_iotlb(0x28, 0, all, true),
            qi::dev_iotlb_pasid(0x28, 0x42, 8, 0x4000, true, false)
        ]),
        QI_DONE
    );
    let invs = m.sink.device_tlb_invalidations();
    assert_eq!(
        invs[0],
        DevTlbInvalidation {
            source: SourceId(0x28),
            pasid: None,
            global: false,
            addr: all & !0xfff,
            size: true,
            max_pending: 0
        }
    );
    assert_eq!(invs[0].range(), 0..=u64::MAX);
    assert_eq!(invs[1].pasid, Pasid::new(0x42));
    assert_eq!((invs[1].range(), invs[1].max_pending), (0x4000..=0x5fff, 8));
}

#[test]
fn test_page_group_response_leaves_through_the_sink() {
    let mut m = Machine::default_config();
    m.enable_qi(1, true);
    assert_eq!(
        m.submit(&[qi::page_response(0x28, Some(0x33), 1, 0x42, true)]),
        QI_DONE
    );
    assert_eq!(
        m.sink.page_group_responses(),
        vec![PageGroupResponse {
            source: SourceId(0x28),
            pasid: Pasid::new(0x33),
            prg_index: 0x42,
            code: PageResponseCode::InvalidRequest,
            private_data: None
        }]
    );
}

#[test]
fn test_wait_with_interrupt_flag_sets_iwc_and_raises_completion_event() {
    let mut m = Machine::default_config();
    m.program_events();
    m.enable_qi(0, false);
    m.push(qi::wait(0, 0, false, true, false, false));
    m.ring();
    assert_eq!(m.readl(DMAR_ICS_REG), 1, "IWC");
    assert_eq!(
        m.sink.interrupts(),
        vec![irq(InterruptKind::InvalidationCompletion, IE_DATA)]
    );
    // IWC still set: no new interrupt condition.
    m.push(qi::wait(0, 0, false, true, false, false));
    m.ring();
    assert_eq!(m.sink.interrupts().len(), 1);
    m.writel(DMAR_ICS_REG, 1);
    assert_eq!(m.readl(DMAR_ICS_REG), 0);
    m.push(qi::wait(0, 0, false, true, false, false));
    m.ring();
    assert_eq!(m.sink.interrupts().len(), 2);
}

#[test]
fn test_completion_event_pending_while_masked() {
    let mut m = Machine::default_config();
    m.program_events();
    m.writel(DMAR_IECTL_REG, CTL_IM);
    m.enable_qi(0, false);
    let status = m.status_slot();
    // SW and IF together: status written, event pending.
    m.push(qi::wait(status, QI_DONE, true, true, false, false));
    m.ring();
    assert_eq!(m.ram.read_u32(status), QI_DONE);
    assert!(m.sink.events.is_empty());
    assert_eq!(m.readl(DMAR_IECTL_REG), CTL_IM | CTL_IP);
    m.writel(DMAR_IECTL_REG, 0);
    assert_eq!(
        m.sink.interrupts(),
        vec![irq(InterruptKind::InvalidationCompletion, IE_DATA)]
    );
    assert_eq!(m.readl(DMAR_IECTL_REG), 0);
    // Masked again; servicing IWC before unmasking drops the pending event.
    m.writel(DMAR_ICS_REG, 1);
    m.writel(DMAR_IECTL_REG, CTL_IM);
    m.push(qi::wait(0, 0, false, true, false, false));
    m.ring();
    m.writel(DMAR_ICS_REG, 1);
    assert_eq!(m.readl(DMAR_IECTL_REG), CTL_IM);
    m.writel(DMAR_IECTL_REG, 0);
    assert_eq!(m.sink.interrupts().len(), 1);
}

#[test]
fn test_disabling_qi_resets_iqh() {
    let mut m = Machine::default_config();
    m.enable_qi(0, false);
    assert_eq!(m.submit(&[]), QI_DONE);
    assert_eq!(m.iqh(), 16);
    m.disable_qi();
    assert_eq!(m.iqh(), 0);
    m.enable_qi(0, false);
    assert_eq!(m.iqh(), 0);
    assert_eq!(m.submit(&[]), QI_DONE);
}

#[test]
fn test_iqt_written_while_qi_is_disabled_runs_at_enable() {
    let mut m = Machine::default_config();
    let status = m.status_slot();
    m.ram.write(
        IQ_BASE,
        qi::wait(status, QI_DONE, true, false, false, false)[0],
    );
    m.ram.write(IQ_BASE + 8, status);
    m.writeq(DMAR_IQA_REG, IQ_BASE);
    m.writel(DMAR_IQT_REG, 16);
    assert_eq!(m.ram.read_u32(status), QI_IN_USE, "not before QIE");
    m.writel(DMAR_GCMD_REG, GCMD_QIE);
    assert_eq!(m.ram.read_u32(status), QI_DONE);
}

/// Submits `bad` after a good descriptor and checks the queue stopped on it with `code`.
fn expect_queue_error(m: &mut Machine, bad: [u64; 4], code: u64) {
    m.sink.clear();
    let good = m.push(qi::cc(1, 0, 0, 0));
    let at = m.push(bad);
    let status = m.status_slot();
    m.push(qi::wait(status, QI_DONE, true, false, false, false));
    m.ring();
    assert_eq!(
        m.iqh(),
        at,
        "IQH stays on the bad descriptor (after 0x{good:x})"
    );
    assert_eq!(m.readl(DMAR_FSTS_REG) & FSTS_IQE, FSTS_IQE);
    assert_eq!(iqei(m), code, "IQEI");
    assert_eq!(
        m.ram.read_u32(status),
        QI_IN_USE,
        "later descriptors not run"
    );
    assert_eq!(m.sink.interrupts(), vec![fault_irq()]);
    // Another IQT write while IQE is set does nothing.
    m.ring();
    assert_eq!(m.iqh(), at);
    // Linux's qi_check_fault: replace the bad descriptor by the wait, clear IQE; the queue
    // resumes at IQH.
    let wait = qi::wait(status, QI_DONE, true, false, false, false);
    for (i, qword) in wait.iter().take((m.desc_size / 8) as usize).enumerate() {
        m.ram.write(IQ_BASE + at + i as u64 * 8, *qword);
    }
    m.writel(DMAR_FSTS_REG, FSTS_IQE);
    assert_eq!(m.readl(DMAR_FSTS_REG), 0);
    assert_eq!(m.ram.read_u32(status), QI_DONE);
    assert_eq!(m.iqh(), m.free_head);
}

#[test]
fn test_queue_errors_for_each_malformed_class() {
    let mut m = Machine::default_config();
    m.program_events();
    m.enable_qi(0, true);
    // Unknown types (0, 0xa, and a type with bits 11:9 set).
    expect_queue_error(&mut m, [0x0, 0, 0, 0], 3);
    expect_queue_error(&mut m, [0xa, 0, 0, 0], 3);
    expect_queue_error(&mut m, [(1 << 9) | 0x1 | (1 << 4), 0, 0, 0], 3);
    // Reserved bits: in each quadword, including the upper half of a 256-bit descriptor.
    expect_queue_error(
        &mut m,
        {
            let mut d = qi::cc(1, 0, 0, 0);
            d[0] |= 1 << 50;
            d
        },
        4,
    );
    expect_queue_error(
        &mut m,
        {
            let mut d = qi::iotlb(3, 0, 0, false, 0);
            d[1] |= 1 << 7;
            d
        },
        4,
    );
    expect_queue_error(
        &mut m,
        {
            let mut d = qi::wait(0, 0, false, false, false, false);
            d[2] = 1;
            d
        },
        4,
    );
    expect_queue_error(
        &mut m,
        {
            let mut d = qi::pc(1, 0, 0);
            d[3] = 1 << 63;
            d
        },
        4,
    );
    expect_queue_error(
        &mut m,
        {
            let mut d = qi::dev_iotlb(0x28, 0, 0, false);
            d[0] |= 1 << 12;
            d
        },
        4,
    );
    // Bad granularities.
    expect_queue_error(&mut m, qi::cc(0, 0, 0, 0), 4);
    expect_queue_error(&mut m, qi::iotlb(0, 0, 0, false, 0), 4);
    expect_queue_error(&mut m, qi::piotlb(1, 0, 0, 0, false, 0), 4);
    expect_queue_error(&mut m, qi::pc(2, 0, 0), 4);
    // A reserved response code.
    expect_queue_error(&mut m, qi::page_response(0x28, None, 7, 0, true), 4);
    // Status write to memory that is not there.
    expect_queue_error(&mut m, qi::wait(UNMAPPED, 1, true, false, false, false), 2);
}

#[test]
fn test_queue_error_for_256_bit_only_types_in_128_bit_mode() {
    let mut m = Machine::default_config();
    m.program_events();
    m.enable_qi(0, false);
    expect_queue_error(&mut m, qi::piotlb(2, 0, 1, 0, false, 0), 5);
    expect_queue_error(&mut m, qi::pc(3, 0, 0), 5);
    expect_queue_error(&mut m, qi::dev_iotlb_pasid(0x28, 1, 0, 0, false, false), 5);
    expect_queue_error(&mut m, qi::page_response(0x28, Some(1), 0, 0, true), 5);
}

#[test]
fn test_queue_error_for_capability_dependent_bits() {
    let mut m = Machine::new(VtdConfig {
        pds: false,
        draining: false,
        ..VtdConfig::default()
    });
    m.program_events();
    m.enable_qi(0, true);
    expect_queue_error(&mut m, qi::wait(0, 0, false, false, false, true), 4);
    expect_queue_error(
        &mut m,
        {
            let mut d = qi::iotlb(1, 0, 0, false, 0);
            d[0] |= 1 << 7;
            d
        },
        4,
    );
}

#[test]
fn test_invalid_tail_pointer() {
    let mut m = Machine::default_config();
    m.program_events();
    m.enable_qi(0, true);
    // Bit 4 set with 256-bit descriptors.
    m.writel(DMAR_IQT_REG, 0x10);
    assert_eq!(m.readl(DMAR_FSTS_REG), FSTS_IQE);
    assert_eq!((iqei(&m), m.iqh()), (1, 0));
    m.writel(DMAR_IQT_REG, 0);
    m.writel(DMAR_FSTS_REG, FSTS_IQE);
    // Beyond a one-page queue.
    m.writel(DMAR_IQT_REG, 0x2000);
    assert_eq!((m.readl(DMAR_FSTS_REG), iqei(&m)), (FSTS_IQE, 1));
    assert_eq!(m.sink.interrupts().len(), 2);
}

#[test]
fn test_fetch_error_when_queue_memory_is_missing() {
    let mut m = Machine::default_config();
    m.program_events();
    m.writeq(DMAR_IQA_REG, UNMAPPED | 7);
    m.writel(DMAR_GCMD_REG, GCMD_QIE);
    m.writel(DMAR_IQT_REG, 0x80);
    assert_eq!(
        (m.readl(DMAR_FSTS_REG), iqei(&m), m.iqh()),
        (FSTS_IQE, 2, 0)
    );
    // A queue at the very top of the address space: no wrap into low memory.
    m.writel(DMAR_FSTS_REG, FSTS_IQE);
    m.writel(DMAR_GCMD_REG, 0);
    m.writeq(DMAR_IQA_REG, 0xffff_ffff_ffff_f000 | 7);
    m.writel(DMAR_GCMD_REG, GCMD_QIE);
    m.writel(DMAR_IQT_REG, 0x7fff0);
    assert_eq!((m.readl(DMAR_FSTS_REG), iqei(&m)), (FSTS_IQE, 2));
}

#[test]
fn test_queue_error_event_pending_while_fault_events_masked() {
    let mut m = Machine::default_config();
    m.program_events();
    m.writel(DMAR_FECTL_REG, CTL_IM);
    m.enable_qi(0, false);
    m.push([0, 0, 0, 0]);
    m.ring();
    assert!(m.sink.events.is_empty());
    assert_eq!(m.readl(DMAR_FECTL_REG), CTL_IM | CTL_IP);
    m.writel(DMAR_FECTL_REG, 0);
    assert_eq!(m.sink.interrupts(), vec![fault_irq()]);
}

// ---------------------------------------------------------------------------------------------
// Fault recording.

fn faulting_request(addr: u64, access: Access, pasid: Option<u32>) -> Request {
    Request {
        source: DEVICE,
        pasid: pasid.and_then(Pasid::new),
        addr,
        access,
    }
}

/// A read without PASID from `DEVICE` at `addr`, which faults on a machine without contexts.
fn read_fault(m: &mut Machine, addr: u64) {
    let _ = m
        .unit
        .translate(&faulting_request(addr, Access::READ, None), &mut m.sink);
}

/// Translation on with a root table; every translation faults (no context entries).
fn machine_with_translation(records: u16) -> Machine {
    let mut m = Machine::new(VtdConfig {
        fault_records: records,
        ..VtdConfig::default()
    });
    m.program_events();
    m.set_root_entry(false);
    m.enable_translation();
    m
}

#[test]
fn test_fault_is_recorded_bit_by_bit_and_raises_fault_event() {
    let mut m = machine_with_translation(4);
    let req = faulting_request(0x1234_5678, Access::READ, Some(0x4321));
    let fault = m.unit.translate(&req, &mut m.sink).unwrap_err();
    let (hi, mid, lo) = m.fault_record(0);
    assert_eq!(hi >> 31, 1, "F");
    assert_eq!((hi >> 30) & 1, 1, "T: read");
    assert_eq!((hi >> 28) & 3, 0, "AT: untranslated");
    assert_eq!((hi >> 8) & 0xfffff, 0x4321, "PV");
    assert_eq!(hi & 0xff, u32::from(fault.reason.code()), "FR");
    assert_eq!(mid >> 31, 1, "PP");
    assert_eq!((mid >> 29) & 3, 0, "EXE, PRIV");
    assert_eq!(mid & 0xffff, u32::from(DEVICE.0), "SID");
    assert_eq!(lo, 0x1234_5000, "FI");
    assert_eq!(m.readl(DMAR_FSTS_REG), FSTS_PPF, "PPF, FRI 0");
    assert_eq!(m.sink.interrupts(), vec![fault_irq()]);

    let write = faulting_request(
        0x8000,
        Access {
            read: false,
            write: true,
            exec: true,
            privileged: true,
        },
        Some(1),
    );
    m.unit.translate(&write, &mut m.sink).unwrap_err();
    let (hi, mid, _) = m.fault_record(1);
    assert_eq!((hi >> 30) & 1, 0, "T: write");
    assert_eq!((mid >> 29) & 3, 3, "EXE, PRIV");
    let no_pasid = faulting_request(0x8000, Access::READ, None);
    m.unit.translate(&no_pasid, &mut m.sink).unwrap_err();
    let (hi, mid, _) = m.fault_record(2);
    assert_eq!((mid >> 31, (hi >> 8) & 0xfffff), (0, 0), "no PASID");
    assert_eq!(
        m.sink.interrupts().len(),
        1,
        "PPF was set: no new condition"
    );
}

#[test]
fn test_fault_overflow_sets_pfo_and_keeps_records() {
    let mut m = machine_with_translation(2);
    for addr in [0x1000, 0x2000, 0x3000] {
        read_fault(&mut m, addr);
    }
    assert_eq!(m.readl(DMAR_FSTS_REG), FSTS_PFO | FSTS_PPF);
    assert_eq!(m.fault_record(0).2, 0x1000);
    assert_eq!(m.fault_record(1).2, 0x2000);
    // Linux's dmar_fault: clear each F (writel at +12), then PFO | PPF.
    m.writel(FRCD_OFFSET + 12, FRCD_F);
    m.writel(FRCD_OFFSET + 16 + 12, FRCD_F);
    assert_eq!(m.readl(DMAR_FSTS_REG), FSTS_PFO, "PPF follows the F bits");
    read_fault(&mut m, 0x4000);
    assert_eq!(
        m.fault_record(0).0 >> 31,
        0,
        "nothing recorded while PFO is set"
    );
    m.writel(DMAR_FSTS_REG, FSTS_PFO | FSTS_PPF | (1 << 7));
    assert_eq!(m.readl(DMAR_FSTS_REG), 0);
    read_fault(&mut m, 0x5000);
    // The index went on to register 0 after wrapping (records 0 and 1 used, overflow at 0).
    assert_eq!(m.fault_record(0).2, 0x5000);
    assert_eq!(m.readl(DMAR_FSTS_REG), FSTS_PPF, "FRI = 0");
    assert_eq!(m.sink.interrupts().len(), 2);
}

#[test]
fn test_fri_names_the_first_pending_record() {
    let mut m = machine_with_translation(4);
    read_fault(&mut m, 0x1000);
    m.writel(FRCD_OFFSET + 12, FRCD_F);
    read_fault(&mut m, 0x2000);
    read_fault(&mut m, 0x3000);
    assert_eq!(m.readl(DMAR_FSTS_REG), FSTS_PPF | (1 << 8), "FRI = 1");
}

#[test]
fn test_fault_event_pending_while_masked_and_dropped_when_serviced() {
    let mut m = machine_with_translation(4);
    m.writel(DMAR_FECTL_REG, CTL_IM);
    read_fault(&mut m, 0x1000);
    assert!(m.sink.events.is_empty());
    assert_eq!(m.readl(DMAR_FECTL_REG), CTL_IM | CTL_IP);
    m.writel(DMAR_FECTL_REG, 0);
    assert_eq!(m.sink.interrupts(), vec![fault_irq()]);
    // Masked; servicing the record before unmasking drops the pending message.
    m.writel(FRCD_OFFSET + 12, FRCD_F);
    m.writel(DMAR_FECTL_REG, CTL_IM);
    read_fault(&mut m, 0x2000);
    assert_eq!(m.readl(DMAR_FECTL_REG), CTL_IM | CTL_IP);
    m.writel(FRCD_OFFSET + 16 + 12, FRCD_F);
    assert_eq!(m.readl(DMAR_FECTL_REG), CTL_IM);
    m.writel(DMAR_FECTL_REG, 0);
    assert_eq!(m.sink.interrupts().len(), 1);
}

#[test]
fn test_fault_index_resets_when_translation_is_disabled() {
    let mut m = machine_with_translation(4);
    read_fault(&mut m, 0x1000);
    m.writel(FRCD_OFFSET + 12, FRCD_F);
    m.disable_translation();
    m.enable_translation();
    read_fault(&mut m, 0x2000);
    assert_eq!(m.fault_record(0).2, 0x2000);
    assert_eq!(m.fault_record(1).0, 0);
}

// ---------------------------------------------------------------------------------------------
// Page request queue.

fn page_request(addr: u64, pasid: Option<u32>, last: bool, prg_index: u16) -> PageRequest {
    PageRequest {
        source: DEVICE,
        pasid: pasid.and_then(Pasid::new),
        addr,
        read: true,
        write: false,
        exec: false,
        privileged: false,
        last_in_group: last,
        prg_index,
        private_data: None,
    }
}

/// Scalable translation on, a page request queue of 2^order pages, and page requests enabled
/// (context PRE) for `DEVICE` and for `sources`.
fn machine_with_prq(order: u8, sources: &[SourceId]) -> Machine {
    let mut m = Machine::default_config();
    m.boot_scalable();
    m.enable_prq(order);
    for &sid in [DEVICE].iter().chain(sources) {
        m.sm_context(sid, true, 7);
        m.enable_page_requests(sid, &[]);
    }
    m.sink.clear();
    m
}

#[test]
fn test_page_request_descriptor_bit_by_bit() {
    let mut m = machine_with_prq(0, &[SourceId(0x0128)]);
    let req = PageRequest {
        source: SourceId(0x0128),
        pasid: Pasid::new(0xabcde),
        addr: 0x7fff_dead_b123,
        read: true,
        write: true,
        exec: true,
        privileged: true,
        last_in_group: true,
        prg_index: 0x155,
        private_data: Some([0x1111_2222, 0x3333_4444]),
    };
    assert_eq!(
        m.unit.page_request(req, &mut m.sink),
        PageRequestOutcome::Queued { offset: 0 }
    );
    let [qw0, qw1, qw2, qw3] = [0, 8, 16, 24].map(|o| m.ram.read(PRQ_BASE + o));
    // struct page_req_dsc and decode_prq_descriptor.
    assert_eq!(qw0 & 0xff, 1, "type");
    assert_eq!((qw0 >> 8) & 1, 1, "pasid_present");
    assert_eq!((qw0 >> 9) & 1, 1, "private data present");
    assert_eq!((qw0 >> 10) & 0x3f, 0, "reserved");
    assert_eq!((qw0 >> 16) & 0xffff, 0x0128, "rid");
    assert_eq!((qw0 >> 32) & 0xfffff, 0xabcde, "pasid");
    assert_eq!((qw0 >> 52) & 3, 3, "exe_req, pm_req");
    assert_eq!(qw0 >> 54, 0, "reserved");
    assert_eq!(qw1 & 7, 7, "rd_req, wr_req, lpig");
    assert_eq!((qw1 >> 3) & 0x1ff, 0x155, "prg_index");
    assert_eq!(qw1 >> 12, 0x0007_fffd_eadb, "addr");
    assert_eq!((qw2, qw3), (0x1111_2222, 0x3333_4444));
    assert_eq!(m.readq(DMAR_PQT_REG), 0x20);
    assert_eq!(m.readl(DMAR_PRS_REG), PRS_PPR);
    assert_eq!(
        m.sink.interrupts(),
        vec![irq(InterruptKind::PageRequest, PE_DATA)]
    );
}

#[test]
fn test_page_request_event_once_per_ppr() {
    let mut m = machine_with_prq(0, &[]);
    for i in 0..3 {
        m.unit
            .page_request(page_request(0x1000 * i, Some(1), i == 2, 0), &mut m.sink);
    }
    assert_eq!(m.sink.interrupts().len(), 1, "PPR stayed set");
    assert_eq!(m.drain_prq(4096).len(), 3);
    assert_eq!(m.readl(DMAR_PRS_REG), 0);
    m.unit
        .page_request(page_request(0x4000, Some(1), true, 1), &mut m.sink);
    assert_eq!(m.sink.interrupts().len(), 2);
}

#[test]
fn test_page_request_event_pending_while_masked() {
    let mut m = machine_with_prq(0, &[]);
    m.writel(DMAR_PECTL_REG, CTL_IM);
    m.unit
        .page_request(page_request(0x1000, Some(1), true, 0), &mut m.sink);
    assert_eq!(m.readl(DMAR_PECTL_REG), CTL_IM | CTL_IP);
    m.writel(DMAR_PECTL_REG, 0);
    assert_eq!(
        m.sink.interrupts(),
        vec![irq(InterruptKind::PageRequest, PE_DATA)]
    );
    m.writel(DMAR_PECTL_REG, CTL_IM);
    m.drain_prq(4096);
    m.unit
        .page_request(page_request(0x2000, Some(1), true, 0), &mut m.sink);
    m.writel(DMAR_PRS_REG, PRS_PPR);
    assert_eq!(
        m.readl(DMAR_PECTL_REG),
        CTL_IM,
        "serviced before unmask: dropped"
    );
    m.writel(DMAR_PECTL_REG, 0);
    assert_eq!(m.sink.interrupts().len(), 1);
}

#[test]
fn test_page_request_queue_wraps_around() {
    let mut m = machine_with_prq(0, &[]);
    // 128 entries of 32 bytes; 300 requests drained in batches of 50.
    let mut seen = 0u64;
    for batch in 0..6u64 {
        for i in 0..50u64 {
            let n = batch * 50 + i;
            assert!(matches!(
                m.unit
                    .page_request(page_request(n << 12, Some(1), false, 0), &mut m.sink),
                PageRequestOutcome::Queued { .. }
            ));
        }
        for desc in m.drain_prq(4096) {
            assert_eq!(desc[1] >> 12, seen, "in order across the wrap");
            seen += 1;
        }
    }
    assert_eq!(seen, 300);
    assert_eq!(m.readq(DMAR_PQT_REG), 300 * 32 % 4096);
}

#[test]
fn test_page_request_overflow_sets_pro_and_auto_responds_success() {
    let mut m = machine_with_prq(0, &[]);
    for i in 0..127 {
        assert!(matches!(
            m.unit
                .page_request(page_request(0x1000, Some(1), false, i), &mut m.sink),
            PageRequestOutcome::Queued { .. }
        ));
    }
    // Full: PQT is one descriptor behind PQH.
    assert_eq!(m.readq(DMAR_PQT_REG), 127 * 32);
    let last = page_request(0x2000, Some(7), true, 0x99);
    assert_eq!(
        m.unit.page_request(last, &mut m.sink),
        PageRequestOutcome::Overflow {
            auto_response: true
        }
    );
    assert_eq!(m.readl(DMAR_PRS_REG), PRS_PPR | PRS_PRO);
    assert_eq!(
        m.sink.page_group_responses(),
        vec![PageGroupResponse {
            source: DEVICE,
            pasid: Pasid::new(7),
            prg_index: 0x99,
            code: PageResponseCode::Success,
            private_data: None
        }]
    );
    assert_eq!(m.sink.interrupts().len(), 1, "PPR was set: no new event");
    // Not last in group, and stop markers: dropped without response.
    assert_eq!(
        m.unit
            .page_request(page_request(0x3000, Some(7), false, 1), &mut m.sink),
        PageRequestOutcome::Overflow {
            auto_response: false
        }
    );
    let stop = PageRequest {
        read: false,
        write: false,
        ..page_request(0, Some(7), true, 2)
    };
    assert_eq!(
        m.unit.page_request(stop, &mut m.sink),
        PageRequestOutcome::Overflow {
            auto_response: false
        }
    );
    // Linux drains, then clears PRO once head == tail; while PRO is set nothing is queued.
    assert_eq!(m.drain_prq(4096).len(), 127);
    assert_eq!(
        m.unit
            .page_request(page_request(0x4000, Some(7), true, 3), &mut m.sink),
        PageRequestOutcome::Overflow {
            auto_response: true
        }
    );
    m.writel(DMAR_PRS_REG, PRS_PRO);
    assert_eq!(m.readl(DMAR_PRS_REG), 0);
    assert!(matches!(
        m.unit
            .page_request(page_request(0x5000, Some(7), true, 4), &mut m.sink),
        PageRequestOutcome::Queued { .. }
    ));
}

#[test]
fn test_page_request_with_pointers_outside_the_queue_is_not_written() {
    let mut m = machine_with_prq(0, &[]);
    m.writeq(DMAR_PQT_REG, 0x1000);
    assert_eq!(
        m.unit
            .page_request(page_request(0x1000, Some(1), true, 0), &mut m.sink),
        PageRequestOutcome::Overflow {
            auto_response: true
        }
    );
    assert_eq!(m.ram.read(PRQ_BASE + 0x1000), 0);
    assert_eq!(m.readl(DMAR_PRS_REG), PRS_PRO);
    assert_eq!(m.sink.interrupts().len(), 1, "PRO is a new condition");
    // Queue memory that is not there.
    let mut m = machine_with_prq(0, &[]);
    m.writeq(DMAR_PQA_REG, UNMAPPED);
    assert!(matches!(
        m.unit
            .page_request(page_request(0x1000, Some(1), true, 0), &mut m.sink),
        PageRequestOutcome::Overflow { .. }
    ));
    assert_eq!(m.readq(DMAR_PQT_REG), 0);
}

#[test]
fn test_page_requests_rejected_without_scalable_translation() {
    let mut m = Machine::default_config();
    m.enable_prq(0);
    let req = page_request(0x1000, Some(1), true, 5);
    assert_eq!(
        m.unit.page_request(req, &mut m.sink),
        PageRequestOutcome::Rejected {
            auto_response: true
        }
    );
    assert_eq!(
        m.sink.page_group_responses()[0].code,
        PageResponseCode::InvalidRequest
    );
    assert_eq!(m.fault_record(0).0, 0, "translation off: nothing recorded");
    m.set_root_entry(false);
    m.enable_translation();
    assert_eq!(
        m.unit
            .page_request(page_request(0x1000, Some(1), false, 5), &mut m.sink),
        PageRequestOutcome::Rejected {
            auto_response: false
        }
    );
    assert_eq!(m.readq(DMAR_PQT_REG), 0);
    assert_eq!(m.readl(DMAR_PRS_REG), 0);
    let (hi, mid, lo) = m.fault_record(0);
    assert_eq!(hi & 0xff, 0x32, "SRTA.3: page request with legacy TTM");
    assert_eq!((mid & 0xffff, lo), (u32::from(DEVICE.0), 0x1000));
}

#[test]
fn test_page_requests_unsupported_without_prs() {
    let mut m = Machine::new(VtdConfig {
        prs: false,
        ..VtdConfig::default()
    });
    m.boot_scalable();
    m.enable_prq(0);
    assert_eq!(m.readq(DMAR_PQA_REG), 0, "PRQ registers are RsvdZ");
    assert_eq!(
        m.unit
            .page_request(page_request(0x1000, Some(1), true, 0), &mut m.sink),
        PageRequestOutcome::Unsupported
    );
    assert!(m.sink.page_group_responses().is_empty());
}

// ---------------------------------------------------------------------------------------------
// Reset and robustness.

#[test]
fn test_reset_returns_to_reset_state() {
    let mut m = machine_with_prq(0, &[]);
    m.unit
        .page_request(page_request(0x1000, Some(1), true, 0), &mut m.sink);
    m.unit.reset();
    let fresh = Machine::default_config();
    for offset in (0..fresh.unit.register_window_size()).step_by(4) {
        assert_eq!(m.readl(offset), fresh.readl(offset), "0x{offset:x}");
    }
    assert!(m.unit.root_table().is_none());
    assert!(!m.unit.translation_enabled());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Arbitrary register writes, queue contents and page requests never panic and always
    /// return: every pointer and size the guest controls is checked.
    #[test]
    fn test_arbitrary_register_programming_never_panics(
        writes in proptest::collection::vec(
            (0u64..0x400, prop_oneof![Just(4usize), Just(8usize)], any::<u64>()),
            1..64,
        ),
        queue in proptest::collection::vec(any::<u64>(), 64),
        requests in proptest::collection::vec((any::<u64>(), any::<u16>(), any::<bool>()), 0..8),
    ) {
        let mut m = Machine::default_config();
        for (i, qword) in queue.iter().enumerate() {
            m.ram.write(IQ_BASE + 8 * i as u64, *qword);
        }
        m.writeq(DMAR_IQA_REG, IQ_BASE | (1 << 11));
        m.writeq(DMAR_PQA_REG, PRQ_BASE);
        for (offset, size, value) in writes {
            let offset = offset & !(size as u64 - 1);
            m.unit.mmio_write(offset, size, value, &mut m.sink);
            let _ = m.unit.mmio_read(offset, size);
        }
        for (addr, index, last) in requests {
            let req = page_request(addr, Some(u32::from(index)), last, index);
            let _ = m.unit.page_request(req, &mut m.sink);
            read_fault(&mut m, addr);
        }
    }
}
