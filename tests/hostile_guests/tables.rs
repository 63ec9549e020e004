//! Translation structures: page-table loops, tables outside RAM or in MMIO, reserved bits, a
//! PASID beyond what the PASID directory covers. Each ends as the fault record with the
//! spec's reason (VT-d 7.1.3), for the device's request without or with PASID.

use crate::common_vtd::driver::*;
use crate::common_vtd::*;
use crate::rig::*;
use vsvm::iommu::Access;
use vsvm::vtd::FaultReason::{self, *};

const R: Access = Access::READ;

/// A bit no address width reaches: reserved in every pointer field.
const ABOVE_WIDTH: u64 = 1 << 62;

/// The request without PASID at IOVA faults with `reason`, recorded for our device.
fn expect_fault(rig: &mut Rig, reason: FaultReason) {
    assert!(
        rig.translate(None, IOVA, R).is_err(),
        "{reason:?}: translated"
    );
    let record = rig.take_fault();
    assert_eq!(record.reason, reason.code(), "{reason:?}: {record:x?}");
    assert_eq!((record.sid, record.pasid), (DEV.0, None));
}

/// After the guest rewrote a structure: the caching-mode flushes Linux would issue.
fn flush(rig: &mut Rig) {
    rig.m.flush_context_present(DEV, &[DMA_DID]);
}

/// A table whose 512 entries all point at itself with `flags`.
fn self_loop(rig: &mut Rig, flags: u64) -> u64 {
    let table = rig.m.ram.page();
    for slot in 0..512 {
        rig.m.ram.write(table + slot * 8, table | flags);
    }
    table
}

#[test]
fn test_first_stage_loops_end_after_the_walks_levels() {
    let mut rig = Rig::new();
    let (_, dir) = rig.dma_domain();
    // Every entry points back at its own table: the walk takes four steps and ends on the
    // table page itself (legal in x86 format: a recursive map), inside RAM.
    let table = self_loop(&mut rig, PAGE_TABLE);
    let entry = PasidEntryBuilder::first_level(table, DMA_DID, false, 2);
    rig.m.set_pasid(dir, 0, entry);
    flush(&mut rig);
    assert_eq!(rig.translate(None, IOVA + 0x10, R), Ok(table + 0x10));
    // A level-3 table pointing back up at the level-4 table: still four steps (top, mid,
    // top, mid), ending on the top table's page.
    let (top, mid) = (rig.m.ram.page(), rig.m.ram.page());
    for slot in 0..512 {
        rig.m.ram.write(top + slot * 8, mid | PAGE_TABLE);
        rig.m.ram.write(mid + slot * 8, top | PAGE_TABLE);
    }
    rig.m.set_pasid(
        dir,
        0,
        PasidEntryBuilder::first_level(top, DMA_DID, false, 2),
    );
    flush(&mut rig);
    assert_eq!(rig.translate(None, IOVA, R), Ok(top));
    // PS in every entry: the top level may not map a page, so the first step faults.
    for slot in 0..512 {
        rig.m.ram.set(table + slot * 8, PAGE_PSE);
    }
    rig.m.set_pasid(dir, 0, entry);
    flush(&mut rig);
    expect_fault(&mut rig, SmFirstStageEntryReserved);
}

#[test]
fn test_second_stage_loops_end_after_the_walks_levels() {
    // Legacy mode (intel_iommu=on,sm_off): a second-stage table pointing at itself.
    let mut rig = Rig::new();
    rig.m.program_events();
    rig.m.enable_qi(0, false);
    rig.m.set_root_entry(false);
    let table = self_loop(&mut rig, DMA_PTE_READ | DMA_PTE_WRITE);
    rig.m
        .legacy_context(DEV, DMA_DID, table, 2, CONTEXT_TT_MULTI_LEVEL);
    assert_eq!(
        rig.m
            .submit(&[qi::cc(1, 0, 0, 0), qi::iotlb(1, 0, 0, false, 0)]),
        QI_DONE
    );
    rig.m.enable_translation();
    assert_eq!(rig.translate(None, IOVA + 8, R), Ok(table + 8));
    for slot in 0..512 {
        rig.m.ram.set(table + slot * 8, DMA_PTE_LARGE_PAGE);
    }
    assert_eq!(rig.m.submit(&[qi::iotlb(1, 0, 0, false, 0)]), QI_DONE);
    expect_fault(&mut rig, PagingEntryReserved);

    // Scalable mode, a second-stage RID_PASID entry (PGTT 010b) over the same kind of loop.
    let mut rig = Rig::new();
    let (_, dir) = rig.scalable_context(7);
    let table = self_loop(&mut rig, DMA_PTE_READ | DMA_PTE_WRITE | DMA_PTE_LARGE_PAGE);
    rig.m
        .set_pasid(dir, 0, PasidEntryBuilder::second_level(table, DMA_DID, 2));
    flush(&mut rig);
    expect_fault(&mut rig, SmSecondStageEntryReserved);
}

#[test]
fn test_bound_pasid_table_loop_faults_with_the_pasid() {
    let mut rig = Rig::new();
    let (_, dir) = rig.dma_domain();
    let table = self_loop(&mut rig, PAGE_TABLE | PAGE_PSE);
    rig.m.set_pasid(
        dir,
        PASID,
        PasidEntryBuilder::first_level(table, SVA_DID, false, 2),
    );
    rig.m.flush_pasid_caches(SVA_DID, PASID);
    assert!(rig.translate(Some(PASID), VA, R).is_err());
    let record = rig.take_fault();
    assert_eq!(record.reason, SmFirstStageEntryReserved.code());
    assert_eq!(record.pasid, Some(PASID));
}

/// Each pointer of the chain aimed outside RAM (unmapped, and the two MMIO windows) in turn.
#[test]
fn test_structures_outside_ram_fault_with_the_access_reason() {
    for target in [UNMAPPED, MMIO[0], MMIO[1]] {
        // Root table (RTADDR).
        let mut rig = Rig::new();
        rig.dma_domain();
        rig.m
            .writeq(vsvm::vtd::regs::DMAR_RTADDR_REG, target | (1 << 10));
        rig.m
            .writel(vsvm::vtd::regs::DMAR_GCMD_REG, rig.m.gcmd | (1 << 30));
        expect_fault(&mut rig, SmRootEntryAccess);

        // Context table (root entry), PASID directory (context entry), PASID table
        // (directory entry), first-stage table below the top level.
        for (what, reason) in [
            ("context table", SmContextEntryAccess),
            ("PASID directory", SmPasidDirEntryAccess),
            ("PASID table", SmPasidEntryAccess),
            ("level-3 table", SmFirstStageEntryAccess),
        ] {
            let mut rig = Rig::new();
            let (tree, dir) = rig.dma_domain();
            let (at, keep) = match what {
                "context table" => (ROOT_TABLE, ROOT_PRESENT),
                "PASID directory" => (rig.m.context_entry(DEV), 0xfff),
                "PASID table" => (dir, 0xfff),
                _ => (tree.root + ((IOVA >> 39) & 511) * 8, 0xfff),
            };
            let old = rig.m.ram.read(at);
            rig.m.ram.write(at, (old & keep) | target);
            flush(&mut rig);
            rig.m.flush_pasid_caches(DMA_DID, 0);
            assert!(
                rig.translate(None, IOVA, R).is_err(),
                "{what} at 0x{target:x}"
            );
            let record = rig.take_fault();
            assert_eq!(record.reason, reason.code(), "{what} at 0x{target:x}");
        }

        // Legacy mode: root table and context table.
        let mut rig = Rig::new();
        rig.m.program_events();
        rig.m.writeq(vsvm::vtd::regs::DMAR_RTADDR_REG, target);
        rig.m.writel(vsvm::vtd::regs::DMAR_GCMD_REG, 1 << 30);
        rig.m.enable_translation();
        expect_fault(&mut rig, RootTableInvalid);
        rig.m.disable_translation();
        rig.m.set_root_entry(false);
        rig.m.ram.write(ROOT_TABLE, target | ROOT_PRESENT);
        rig.m.enable_translation();
        expect_fault(&mut rig, ContextTableInvalid);
    }
}

/// A unit in legacy mode with queued invalidation and fault events, and a 4-level second-stage
/// table mapping `IOVA` to `PA` read-only (its context entry is the caller's to write).
fn legacy_rig() -> (Rig, Tree) {
    let mut rig = Rig::new();
    rig.m.program_events();
    rig.m.enable_qi(0, false);
    rig.m.set_root_entry(false);
    let tree = Tree::new(
        &mut rig.m.ram,
        4,
        Space::default(),
        DMA_PTE_READ | DMA_PTE_WRITE,
    );
    tree.map(&mut rig.m.ram, IOVA, PA, 1, DMA_PTE_READ);
    (rig, tree)
}

/// A second-stage table (legacy mode) whose next-level pointer leads outside RAM.
#[test]
fn test_second_stage_table_outside_ram_is_an_invalid_pointer() {
    for target in [UNMAPPED, MMIO[0]] {
        let (mut rig, tree) = legacy_rig();
        let slot = tree.slot(&rig.m.ram, IOVA, 2);
        rig.m.ram.write(slot, target | DMA_PTE_READ | DMA_PTE_WRITE);
        rig.m
            .legacy_context(DEV, DMA_DID, tree.root, 2, CONTEXT_TT_MULTI_LEVEL);
        assert_eq!(rig.m.submit(&[qi::cc(1, 0, 0, 0)]), QI_DONE);
        rig.m.enable_translation();
        expect_fault(&mut rig, PagingEntryInvalid);
    }
}

#[test]
fn test_reserved_bits_fault_with_the_reserved_reason() {
    // Scalable mode: root entry, context entry, PASID directory entry, PASID entry (address
    // bits above the width), a first-stage top-level entry (PS, reserved there).
    for (what, reason) in [
        ("root entry", SmRootEntryReserved),
        ("context entry", SmContextEntryReserved),
        ("PASID directory entry", SmPasidDirEntryReserved),
        ("PASID entry", SmPasidEntryReserved),
        ("first-stage entry", SmFirstStageEntryReserved),
    ] {
        let mut rig = Rig::new();
        let (tree, dir) = rig.dma_domain();
        let at = match what {
            "root entry" => ROOT_TABLE,
            "context entry" => rig.m.context_entry(DEV),
            "PASID directory entry" => dir,
            "PASID entry" => rig.m.pasid_entry_addr(dir, 0) + 16,
            _ => tree.slot(&rig.m.ram, IOVA, 4),
        };
        let bit = if what == "first-stage entry" {
            PAGE_PSE
        } else {
            ABOVE_WIDTH
        };
        rig.m.ram.set(at, bit);
        flush(&mut rig);
        rig.m.flush_pasid_caches(DMA_DID, 0);
        assert!(rig.translate(None, IOVA, R).is_err(), "{what}");
        assert_eq!(rig.take_fault().reason, reason.code(), "{what}");
    }
    // Legacy mode: root entry, context entry, second-stage entry.
    for (what, reason) in [
        ("root entry", RootEntryReserved),
        ("context entry", ContextEntryReserved),
        ("second-stage entry", PagingEntryReserved),
    ] {
        let (mut rig, tree) = legacy_rig();
        let context = rig
            .m
            .legacy_context(DEV, DMA_DID, tree.root, 2, CONTEXT_TT_MULTI_LEVEL);
        let at = match what {
            "root entry" => ROOT_TABLE,
            "context entry" => context,
            _ => tree.slot(&rig.m.ram, IOVA, 3),
        };
        rig.m.ram.set(at, ABOVE_WIDTH);
        assert_eq!(rig.m.submit(&[qi::cc(1, 0, 0, 0)]), QI_DONE);
        rig.m.enable_translation();
        expect_fault(&mut rig, reason);
    }
}

/// A context entry whose PASID directory covers 2^(0+7) entries of 64 PASIDs: PASIDs from
/// 8192 on are beyond it, whether the guest writes an entry for one or not, and so is a
/// RID_PASID there.
#[test]
fn test_pasid_beyond_the_directory_size_faults() {
    const COVERED: u32 = 128 * 64;
    let mut rig = Rig::new();
    let (_, dir) = rig.scalable_context(0);
    let tree = Tree::new(&mut rig.m.ram, 4, Space::default(), PAGE_TABLE);
    tree.map(
        &mut rig.m.ram,
        VA,
        PA,
        1,
        PAGE_USER_RW | PAGE_ACCESSED | PAGE_DIRTY,
    );
    rig.m.set_pasid(
        dir,
        0,
        PasidEntryBuilder::first_level(tree.root, DMA_DID, false, 2),
    );
    flush(&mut rig);
    // The guest writes entries past the directory's end (inside RAM) and flushes them.
    for pasid in [COVERED, 0xf_ffff] {
        let entry = PasidEntryBuilder::first_level(tree.root, SVA_DID, false, 2);
        rig.m.set_pasid(dir, pasid, entry);
        rig.m.flush_pasid_caches(SVA_DID, pasid);
        assert!(
            rig.translate(Some(pasid), VA, R).is_err(),
            "PASID 0x{pasid:x} bound"
        );
        let record = rig.take_fault();
        assert_eq!(record.reason, SmPasidTooLarge.code(), "PASID 0x{pasid:x}");
        assert_eq!(record.pasid, Some(pasid));
    }
    // The last PASID it covers works.
    let entry = PasidEntryBuilder::first_level(tree.root, SVA_DID, false, 2);
    rig.m.set_pasid(dir, COVERED - 1, entry);
    rig.m.flush_pasid_caches(SVA_DID, COVERED - 1);
    assert_eq!(rig.translate(Some(COVERED - 1), VA, R), Ok(PA));
    assert_eq!(
        rig.m.unit.0.stats().binds,
        1,
        "only the covered PASID is bound"
    );
    // RID_PASID beyond the directory: requests without PASID fault.
    let context = rig.m.context_entry(DEV);
    rig.m.ram.write(context + 8, u64::from(COVERED));
    flush(&mut rig);
    expect_fault(&mut rig, SmRidPasidInvalid);
}

/// An input address that is not canonical for the first-stage table's paging mode (bits
/// 63:47 not all equal with 4 levels) faults as non-canonical (SGN.8: 0x80), with or without
/// PASID, and no page request can fix it.
#[test]
fn test_non_canonical_first_stage_address_faults_as_non_canonical() {
    const NOT_CANONICAL: u64 = 1 << 47;
    let mut rig = Rig::new();
    let (_, dir) = rig.dma_domain();
    rig.sva(dir);
    assert!(rig.translate(None, NOT_CANONICAL, R).is_err());
    let record = rig.take_fault();
    assert_eq!(record.reason, SmNonCanonical.code(), "{record:x?}");
    assert_eq!((record.pasid, record.addr), (None, NOT_CANONICAL));
    assert!(rig.translate(Some(PASID), VA | NOT_CANONICAL, R).is_err());
    let record = rig.take_fault();
    assert_eq!(record.reason, SmNonCanonical.code(), "{record:x?}");
    assert_eq!(record.pasid, Some(PASID));
    // The canonical neighbours still translate.
    assert_eq!(rig.translate(Some(PASID), VA, R), Ok(PA));
}

/// The table pointer of a PASID entry (FSPTPTR of a first-stage entry, SSPTPTR of a
/// second-stage one) or of a legacy context entry (SLPTPTR) aimed outside RAM: the top-level
/// table cannot be read, which has its own reason (SFS.4 0x73, SSS.4 0x7b; legacy LSL.1 0x07
/// like any unreadable second-stage table).
#[test]
fn test_unreadable_top_level_table_faults_with_the_table_pointer_reason() {
    for target in [UNMAPPED, MMIO[0], MMIO[1]] {
        // A first-stage DMA domain (RID_PASID) and a bound PASID.
        let mut rig = Rig::new();
        let (_, dir) = rig.dma_domain();
        let entry = PasidEntryBuilder::first_level(target, DMA_DID, false, 2);
        rig.m.set_pasid(dir, 0, entry);
        flush(&mut rig);
        rig.m.flush_pasid_caches(DMA_DID, 0);
        expect_fault(&mut rig, SmFirstStageRootAccess);
        let entry = PasidEntryBuilder::first_level(target, SVA_DID, false, 2);
        rig.m.set_pasid(dir, PASID, entry);
        rig.m.flush_pasid_caches(SVA_DID, PASID);
        assert!(rig.translate(Some(PASID), VA, R).is_err());
        let record = rig.take_fault();
        assert_eq!(record.reason, SmFirstStageRootAccess.code(), "0x{target:x}");
        assert_eq!(record.pasid, Some(PASID));

        // A second-stage DMA domain (RID_PASID, PGTT 010b).
        let mut rig = Rig::new();
        let (_, dir) = rig.scalable_context(7);
        let entry = PasidEntryBuilder::second_level(target, DMA_DID, 2);
        rig.m.set_pasid(dir, 0, entry);
        flush(&mut rig);
        expect_fault(&mut rig, SmSecondStageRootInvalid);

        // Legacy mode.
        let mut rig = Rig::new();
        rig.m.program_events();
        rig.m.enable_qi(0, false);
        rig.m.set_root_entry(false);
        rig.m
            .legacy_context(DEV, DMA_DID, target, 2, CONTEXT_TT_MULTI_LEVEL);
        assert_eq!(rig.m.submit(&[qi::cc(1, 0, 0, 0)]), QI_DONE);
        rig.m.enable_translation();
        expect_fault(&mut rig, PagingEntryInvalid);
    }
}
