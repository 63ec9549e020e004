//! VT-d translation model against structures laid out in memfd guest RAM the way Linux lays
//! them out: every PGTT x page size x paging depth, every fault reason the model can raise,
//! A/D updates, FPD, and the caches with every invalidation granularity.

mod common_vtd;

use common_vtd::*;
use vsvm::vtd::cache::{
    ContextInvalidation, IotlbInvalidation, PasidCacheInvalidation, PasidIotlbInvalidation,
};
use vsvm::vtd::translate::{RootTable, RootTableType};
use vsvm::vtd::{DomainId, FaultReason, Pasid, Perms, VtdConfig};

const DID: u16 = 7;
const PASID: u32 = 0x1234;
/// A canonical 4-level address with offset bits set at every page size.
const VA: u64 = 0x0000_7f55_4321_2345;
/// A canonical 5-level address (bits 56:48 used).
const VA5: u64 = 0x00ab_7f55_4321_2345;
/// An output frame aligned for 1 GiB pages.
const PA: u64 = 0x0000_0012_c000_0000;
/// A 39-bit IOVA.
const IOVA: u64 = 0x0000_0012_3456_7abc;
const RW: u64 = DMA_PTE_READ | DMA_PTE_WRITE;

fn size_of_level(level: u8) -> u64 {
    1 << level_shift(level)
}

fn expect(base: u64, input: u64, level: u8) -> u64 {
    base + (input & (size_of_level(level) - 1))
}

/// A scalable-mode device with a first-stage PASID (Linux intel_pasid_setup_first_level).
struct FsDevice {
    dir: u64,
    tree: Tree,
    entry: u64,
}

fn fs_device(
    v: &mut Vtd,
    five: bool,
    flags: impl Fn(PasidEntryBuilder) -> PasidEntryBuilder,
) -> FsDevice {
    let (_, dir) = v.sm_context(DEV, true, 7);
    let tree = Tree::new(
        &mut v.ram,
        if five { 5 } else { 4 },
        Space::default(),
        PAGE_TABLE,
    );
    let entry = v.set_pasid(
        dir,
        PASID,
        flags(PasidEntryBuilder::first_level(tree.root, DID, five, 2)),
    );
    FsDevice { dir, tree, entry }
}

/// A scalable-mode device with a second-stage-only PASID (intel_pasid_setup_second_level).
fn ss_device(
    v: &mut Vtd,
    aw: u8,
    flags: impl Fn(PasidEntryBuilder) -> PasidEntryBuilder,
) -> (u64, Tree) {
    let (_, dir) = v.sm_context(DEV, true, 7);
    let tree = Tree::new(&mut v.ram, aw + 2, Space::default(), RW);
    v.set_pasid(
        dir,
        PASID,
        flags(PasidEntryBuilder::second_level(
            tree.root,
            DID,
            u64::from(aw),
        )),
    );
    (dir, tree)
}

/// Nested: the second stage maps GPA [0, 16M) to RAM [16M, 32M) with 2 MiB pages; the
/// first-stage tables live there, so every table fetch must go through the second stage.
struct NestedDevice {
    dir: u64,
    fs: Tree,
    ss: Tree,
}

fn nested_device(v: &mut Vtd, five: bool, aw: u8, table_flags: u64, ss_flags: u64) -> NestedDevice {
    let (_, dir) = v.sm_context(DEV, true, 7);
    let (fs, ss) = nested_trees(&mut v.ram, five, aw + 2, table_flags, ss_flags);
    v.set_pasid(
        dir,
        PASID,
        PasidEntryBuilder::nested(fs.root, five, ss.root, DID, u64::from(aw)),
    );
    NestedDevice { dir, fs, ss }
}

fn config_5level_ss() -> VtdConfig {
    VtdConfig {
        sagaw: 0b1110,
        ..VtdConfig::default()
    }
}

// ---------------------------------------------------------------------------------------
// Every PGTT x page size x paging depth.

#[test]
fn test_first_stage_every_depth_and_page_size() {
    for five in [false, true] {
        for leaf in 1..=3u8 {
            let mut v = Vtd::scalable();
            let d = fs_device(&mut v, five, |e| e);
            let va = if five { VA5 } else { VA };
            d.tree.map(&mut v.ram, va, PA, leaf, PAGE_USER_RW);
            let t = v.translate(&req(DEV, Some(PASID), va, WRITE)).unwrap();
            assert_eq!(t.output, expect(PA, va, leaf), "five={five} leaf={leaf}");
            assert_eq!(t.page_size, size_of_level(leaf));
            assert_eq!(t.domain, DomainId(DID));
            assert_eq!(
                t.perms,
                Perms {
                    read: true,
                    write: true,
                    exec: false,
                    privileged: false
                }
            );
        }
    }
}

#[test]
fn test_second_stage_only_every_depth_and_page_size() {
    for aw in 1..=3u8 {
        for leaf in 1..=3u8 {
            let mut v = Vtd::new(RootTableType::Scalable, config_5level_ss());
            let (_, tree) = ss_device(&mut v, aw, |e| e);
            tree.map(&mut v.ram, IOVA, PA, leaf, RW | DMA_PTE_SNP);
            let t = v.translate(&req(DEV, Some(PASID), IOVA, WRITE)).unwrap();
            assert_eq!(t.output, expect(PA, IOVA, leaf), "aw={aw} leaf={leaf}");
            assert_eq!(t.page_size, size_of_level(leaf));
            assert!(t.perms.read && t.perms.write);
        }
    }
}

#[test]
fn test_nested_every_depth_and_page_size() {
    const GPA_OUT: u64 = 0x40_0000_0000;
    const HPA_OUT: u64 = 0x1_8000_0000;
    for five in [false, true] {
        for aw in 1..=3u8 {
            for fs_leaf in 1..=3u8 {
                for ss_leaf in 1..=3u8 {
                    let mut v = Vtd::new(RootTableType::Scalable, config_5level_ss());
                    let d = nested_device(&mut v, five, aw, PAGE_TABLE, RW);
                    let va = if five { VA5 } else { VA };
                    d.fs.map(&mut v.ram, va, GPA_OUT, fs_leaf, PAGE_USER_RW);
                    let gpa = expect(GPA_OUT, va, fs_leaf);
                    d.ss.map(&mut v.ram, gpa, HPA_OUT, ss_leaf, RW);
                    let what = format!("five={five} aw={aw} fs={fs_leaf} ss={ss_leaf}");
                    let t = v.translate(&req(DEV, Some(PASID), va, WRITE)).expect(&what);
                    assert_eq!(t.output, expect(HPA_OUT, gpa, ss_leaf), "{what}");
                    assert_eq!(t.page_size, size_of_level(fs_leaf.min(ss_leaf)), "{what}");
                }
            }
        }
    }
}

#[test]
fn test_pass_through_with_and_without_pasid() {
    let mut v = Vtd::scalable();
    let (_, dir) = v.sm_context(DEV, true, 7);
    v.set_pasid(dir, 0, PasidEntryBuilder::pass_through(DID, 2));
    v.set_pasid(dir, PASID, PasidEntryBuilder::pass_through(DID, 2));
    for pasid in [None, Some(PASID)] {
        let t = v
            .translate(&req(DEV, pasid, 0x1234_5678_9abc, WRITE))
            .unwrap();
        assert_eq!(t.output, 0x1234_5678_9abc);
        assert_eq!(t.page_size, 1 << 48);
        assert_eq!(t.domain, DomainId(DID));
    }
}

#[test]
fn test_legacy_second_stage_every_depth_and_page_size() {
    for aw in 1..=3u8 {
        for leaf in 1..=3u8 {
            let mut v = Vtd::new(RootTableType::Legacy, config_5level_ss());
            let tree = Tree::new(&mut v.ram, aw + 2, Space::default(), RW);
            v.legacy_context(DEV, DID, tree.root, u64::from(aw), CONTEXT_TT_MULTI_LEVEL);
            tree.map(&mut v.ram, IOVA, PA, leaf, RW);
            let t = v.translate(&req(DEV, None, IOVA, WRITE)).unwrap();
            assert_eq!(t.output, expect(PA, IOVA, leaf), "aw={aw} leaf={leaf}");
            assert_eq!(t.page_size, size_of_level(leaf));
            assert_eq!(t.domain, DomainId(DID));
        }
    }
}

#[test]
fn test_legacy_pass_through_and_device_tlb_types() {
    let mut v = Vtd::legacy();
    v.legacy_context(DEV, DID, 0, 2, CONTEXT_TT_PASS_THROUGH);
    assert_eq!(
        v.translate(&req(DEV, None, 0xabc_d000, READ))
            .unwrap()
            .output,
        0xabc_d000
    );
    let other = vsvm::vtd::SourceId::new(0, 4, 0);
    let tree = Tree::new(&mut v.ram, 4, Space::default(), RW);
    v.legacy_context(other, DID, tree.root, 2, CONTEXT_TT_DEV_IOTLB);
    tree.map(&mut v.ram, IOVA, PA, 1, DMA_PTE_READ);
    assert_eq!(
        v.translate(&req(other, None, IOVA, READ)).unwrap().output,
        expect(PA, IOVA, 1)
    );
}

#[test]
fn test_requests_without_pasid_use_rid_pasid_and_rid_priv() {
    let mut v = Vtd::scalable();
    let (ctx, dir) = v.sm_context(DEV, false, 7);
    let tree = Tree::new(&mut v.ram, 4, Space::default(), PAGE_TABLE);
    v.set_pasid(
        dir,
        5,
        PasidEntryBuilder::first_level(tree.root, DID, false, 2).sre(),
    );
    // A supervisor page: only RID_PRIV requests may use it.
    tree.map(&mut v.ram, VA, PA, 1, PAGE_PRESENT | PAGE_RW);
    v.ram.write(ctx + 8, 5); // RID_PASID = 5
    assert_eq!(
        v.reason(&req(DEV, None, VA, READ)),
        FaultReason::SmUserPrivilege
    );
    v.ram.write(ctx + 8, 5 | (1 << 20)); // RID_PRIV
    v.translator
        .caches()
        .invalidate_context(ContextInvalidation::Global);
    let t = v.translate(&req(DEV, None, VA, READ)).unwrap();
    assert_eq!(t.output, expect(PA, VA, 1));
    assert!(t.perms.privileged);
}

// ---------------------------------------------------------------------------------------
// First-stage access rights: U/S, R/W, XD, SRE, WPE, ERE, SMEP.

#[test]
fn test_first_stage_user_supervisor_and_write_protect() {
    let mut v = Vtd::scalable();
    let d = fs_device(&mut v, false, |e| e.sre().ere());
    let kernel_ro = 0x1000_0000u64;
    d.tree.map(&mut v.ram, kernel_ro, PA, 1, PAGE_PRESENT);
    assert_eq!(
        v.reason(&req(DEV, Some(PASID), kernel_ro, READ)),
        FaultReason::SmUserPrivilege
    );
    let t = v
        .translate(&req(DEV, Some(PASID), kernel_ro, SUP_READ))
        .unwrap();
    assert_eq!(
        t.perms,
        Perms {
            read: true,
            write: true,
            exec: true,
            privileged: true
        }
    );
    // WPE clear: a supervisor write to a read-only page is allowed.
    assert!(v
        .translate(&req(DEV, Some(PASID), kernel_ro, SUP_WRITE))
        .is_ok());

    let mut v = Vtd::scalable();
    let d = fs_device(&mut v, false, |e| e.sre().wpe());
    d.tree.map(&mut v.ram, kernel_ro, PA, 1, PAGE_PRESENT);
    assert_eq!(
        v.reason(&req(DEV, Some(PASID), kernel_ro, SUP_WRITE)),
        FaultReason::SmWriteNotPermitted
    );
}

#[test]
fn test_first_stage_read_only_user_page() {
    let mut v = Vtd::scalable();
    let d = fs_device(&mut v, false, |e| e);
    d.tree.map(&mut v.ram, VA, PA, 1, PAGE_PRESENT | PAGE_USER);
    assert!(v.translate(&req(DEV, Some(PASID), VA, READ)).is_ok());
    assert_eq!(
        v.reason(&req(DEV, Some(PASID), VA, WRITE)),
        FaultReason::SmWriteNotPermitted
    );
    // R/W clear in a non-leaf entry also forbids the write.
    let other = VA + 0x20_0000;
    let leaf = d.tree.map(&mut v.ram, other, PA, 1, PAGE_USER_RW);
    assert!(v.translate(&req(DEV, Some(PASID), other, WRITE)).is_ok());
    let pde = d.tree.slot(&v.ram, other, 2);
    v.ram.clear(pde, PAGE_RW);
    v.translator
        .caches()
        .invalidate_pasid_iotlb(PasidIotlbInvalidation::Pasid {
            domain: DomainId(DID),
            pasid: Pasid::new(PASID).unwrap(),
        });
    assert_eq!(
        v.reason(&req(DEV, Some(PASID), other, WRITE)),
        FaultReason::SmWriteNotPermitted
    );
    assert_ne!(v.ram.read(leaf), 0);
}

#[test]
fn test_first_stage_execute_rules() {
    let mut v = Vtd::scalable();
    let d = fs_device(&mut v, false, |e| e);
    d.tree.map(&mut v.ram, VA, PA, 1, PAGE_USER_RW);
    assert_eq!(
        v.reason(&req(DEV, Some(PASID), VA, EXEC)),
        FaultReason::SmExecuteRequestsDisabled
    );

    let mut v = Vtd::scalable();
    let d = fs_device(&mut v, false, |e| e.ere().sre().smep());
    d.tree.map(&mut v.ram, VA, PA, 1, PAGE_USER_RW);
    let nx = VA + 0x1000;
    d.tree.map(&mut v.ram, nx, PA, 1, PAGE_USER_RW | PAGE_NX);
    assert!(
        v.translate(&req(DEV, Some(PASID), VA, EXEC))
            .unwrap()
            .perms
            .exec
    );
    assert_eq!(
        v.reason(&req(DEV, Some(PASID), nx, EXEC)),
        FaultReason::SmExecuteNotPermitted
    );
    // SMEP: no supervisor instruction fetch from a user page.
    assert_eq!(
        v.reason(&req(DEV, Some(PASID), VA, SUP_EXEC)),
        FaultReason::SmExecuteNotPermitted
    );
    // XD in a non-leaf entry covers everything below it.
    let far = VA + (1 << 30);
    d.tree.map(&mut v.ram, far, PA, 1, PAGE_USER_RW);
    v.ram.set(d.tree.slot(&v.ram, far, 3), PAGE_NX);
    assert_eq!(
        v.reason(&req(DEV, Some(PASID), far, EXEC)),
        FaultReason::SmExecuteNotPermitted
    );
}

#[test]
fn test_supervisor_request_needs_sre() {
    let mut v = Vtd::scalable();
    let d = fs_device(&mut v, false, |e| e);
    d.tree.map(&mut v.ram, VA, PA, 1, PAGE_USER_RW);
    assert_eq!(
        v.reason(&req(DEV, Some(PASID), VA, SUP_READ)),
        FaultReason::SmSupervisorRequestsDisabled
    );
}

#[test]
fn test_second_stage_execute_with_ssee() {
    let mut v = Vtd::scalable();
    let (_, tree) = ss_device(&mut v, 2, |e| e.ere().ssee());
    // With SSEE, X is cumulative like R and W: the tables must allow it too.
    let tree = Tree {
        table_flags: RW | DMA_PTE_EXEC,
        ..tree
    };
    tree.map(&mut v.ram, IOVA, PA, 1, RW);
    tree.map(&mut v.ram, IOVA + 0x1000, PA, 1, RW | DMA_PTE_EXEC);
    assert_eq!(
        v.reason(&req(DEV, Some(PASID), IOVA, EXEC)),
        FaultReason::SmExecuteNotPermitted
    );
    assert!(
        v.translate(&req(DEV, Some(PASID), IOVA + 0x1000, EXEC))
            .unwrap()
            .perms
            .exec
    );
}

// ---------------------------------------------------------------------------------------
// Legacy-mode fault reasons.

fn legacy_device(v: &mut Vtd, aw: u64) -> (u64, Tree) {
    let tree = Tree::new(&mut v.ram, aw as u8 + 2, Space::default(), RW);
    let ctx = v.legacy_context(DEV, DID, tree.root, aw, CONTEXT_TT_MULTI_LEVEL);
    (ctx, tree)
}

#[test]
fn test_legacy_root_and_context_faults() {
    use FaultReason::*;
    let mut v = Vtd::legacy();
    assert_eq!(v.reason(&req(DEV, None, IOVA, READ)), RootEntryNotPresent);
    let ctx = v.context_entry(DEV);
    assert_eq!(
        v.reason(&req(DEV, None, IOVA, READ)),
        ContextEntryNotPresent
    );
    v.ram.write(ctx, 0x5000 | (3 << 2) | CONTEXT_PRESENT); // TT = 11b
    v.ram.write(ctx + 8, 2);
    assert_eq!(v.reason(&req(DEV, None, IOVA, READ)), ContextEntryInvalid);
    v.ram.write(ctx, 0x5000 | CONTEXT_PRESENT);
    v.ram.write(ctx + 8, 3); // AW 5-level, not in SAGAW 0b0110
    assert_eq!(v.reason(&req(DEV, None, IOVA, READ)), ContextEntryInvalid);
    v.ram.write(ctx + 8, 2 | (1 << 7)); // bit 71 reserved
    assert_eq!(v.reason(&req(DEV, None, IOVA, READ)), ContextEntryReserved);
    v.ram.write(ctx + 8, 2);
    v.ram.write(ctx, 0x5000 | (1 << 4) | CONTEXT_PRESENT);
    assert_eq!(v.reason(&req(DEV, None, IOVA, READ)), ContextEntryReserved);
    v.ram.set(v.root, 1 << 3);
    assert_eq!(v.reason(&req(DEV, None, IOVA, READ)), RootEntryReserved);
    v.ram.clear(v.root, 1 << 3);
    v.ram.write(v.root + 8, 1);
    assert_eq!(
        v.reason(&req(DEV, None, IOVA, READ)),
        RootEntryReserved,
        "upper word reserved"
    );
    v.ram.write(v.root + 8, 0);
    v.ram.write(v.root, 0x4000_0000 | ROOT_PRESENT); // context table outside guest RAM
    assert_eq!(v.reason(&req(DEV, None, IOVA, READ)), ContextTableInvalid);
    assert_eq!(v.reason(&req(DEV, Some(1), IOVA, READ)), SmInvalidTtm);

    let view = v.ram.view();
    let outside = RootTable {
        addr: 0x4000_0000,
        kind: RootTableType::Legacy,
    };
    let r = v
        .translator
        .translate(&view, outside, &req(DEV, None, IOVA, READ));
    assert_eq!(r.unwrap_err().reason, RootTableInvalid);
    let unaligned = RootTable {
        addr: v.root + 8,
        kind: RootTableType::Legacy,
    };
    let r = v
        .translator
        .translate(&view, unaligned, &req(DEV, None, IOVA, READ));
    assert_eq!(r.unwrap_err().reason, RootTableInvalid);
}

#[test]
fn test_legacy_device_tlb_type_needs_dt() {
    let mut v = Vtd::new(
        RootTableType::Legacy,
        VtdConfig {
            dt: false,
            ..VtdConfig::default()
        },
    );
    let tree = Tree::new(&mut v.ram, 4, Space::default(), RW);
    v.legacy_context(DEV, DID, tree.root, 2, CONTEXT_TT_DEV_IOTLB);
    assert_eq!(
        v.reason(&req(DEV, None, IOVA, READ)),
        FaultReason::ContextEntryInvalid
    );
}

#[test]
fn test_legacy_walk_faults() {
    use FaultReason::*;
    let mut v = Vtd::legacy();
    let (_, tree) = legacy_device(&mut v, 1);
    assert_eq!(v.reason(&req(DEV, None, 1 << 39, READ)), AddressBeyondMgaw);
    assert_eq!(
        v.reason(&req(DEV, None, IOVA, READ)),
        ReadNotPermitted,
        "not present"
    );
    assert_eq!(
        v.reason(&req(DEV, None, IOVA, WRITE)),
        WriteNotPermitted,
        "not present"
    );
    let leaf = tree.map(&mut v.ram, IOVA, PA, 1, DMA_PTE_READ);
    assert_eq!(v.reason(&req(DEV, None, IOVA, WRITE)), WriteNotPermitted);
    v.ram.write(leaf, PA | DMA_PTE_WRITE);
    assert_eq!(v.reason(&req(DEV, None, IOVA, READ)), ReadNotPermitted);
    v.ram.write(leaf, PA | RW | (1 << 50));
    assert_eq!(
        v.reason(&req(DEV, None, IOVA, READ)),
        PagingEntryReserved,
        "above MGAW"
    );
    v.ram.write(leaf, PA | RW | DMA_PTE_SNP);
    assert_eq!(
        v.reason(&req(DEV, None, IOVA, READ)),
        PagingEntryReserved,
        "SNP without ECAP.SC"
    );
    v.ram.write(leaf, 0xfee0_0000 | RW);
    assert_eq!(v.reason(&req(DEV, None, IOVA, READ)), InterruptAddress);
    let pde = tree.slot(&v.ram, IOVA, 2);
    v.ram.write(pde, 0x4000_0000 | RW); // page table outside guest RAM
    assert_eq!(v.reason(&req(DEV, None, IOVA, READ)), PagingEntryInvalid);
    v.ram.write(pde, PA | RW | DMA_PTE_LARGE_PAGE | 0x1000);
    assert_eq!(
        v.reason(&req(DEV, None, IOVA, READ)),
        PagingEntryReserved,
        "unaligned 2 MiB"
    );

    let mut v = Vtd::legacy();
    let (_, tree) = legacy_device(&mut v, 2);
    tree.map(&mut v.ram, IOVA, PA, 1, RW);
    v.ram.set(tree.slot(&v.ram, IOVA, 4), DMA_PTE_LARGE_PAGE);
    assert_eq!(
        v.reason(&req(DEV, None, IOVA, READ)),
        PagingEntryReserved,
        "PS in an SL-PML4E"
    );
}

#[test]
fn test_legacy_large_pages_need_sllps() {
    let config = VtdConfig {
        sl_2m: false,
        sl_1g: false,
        ..VtdConfig::default()
    };
    let mut v = Vtd::new(RootTableType::Legacy, config);
    let (_, tree) = legacy_device(&mut v, 2);
    tree.map(&mut v.ram, IOVA, PA, 2, RW);
    tree.map(&mut v.ram, IOVA + (4 << 30), PA, 3, RW);
    assert_eq!(
        v.reason(&req(DEV, None, IOVA, READ)),
        FaultReason::PagingEntryReserved
    );
    assert_eq!(
        v.reason(&req(DEV, None, IOVA + (4 << 30), READ)),
        FaultReason::PagingEntryReserved
    );
}

// ---------------------------------------------------------------------------------------
// Scalable-mode fault reasons: root, context, PASID directory and table.

#[test]
fn test_scalable_root_and_context_faults() {
    use FaultReason::*;
    let mut v = Vtd::scalable();
    let r = req(DEV, Some(PASID), VA, READ);
    assert_eq!(v.reason(&r), SmRootEntryNotPresent);
    let ctx = v.context_entry(DEV);
    assert_eq!(v.reason(&r), SmContextEntryNotPresent);
    v.ram.set(v.root, 1 << 3);
    assert_eq!(v.reason(&r), SmRootEntryReserved);
    v.ram.clear(v.root, 1 << 3);
    let (ctx2, _) = v.sm_context(DEV, true, 7);
    assert_eq!(ctx, ctx2);
    v.ram.write(ctx + 16, 1);
    assert_eq!(v.reason(&r), SmContextEntryReserved, "bits 191:128");
    v.ram.write(ctx + 16, 0);
    v.ram.set(ctx, 1 << 6);
    assert_eq!(v.reason(&r), SmContextEntryReserved, "bits 8:5");
    v.ram.clear(ctx, 1 << 6);
    let root_lo = v.ram.read(v.root);
    v.ram.write(v.root, 0x4000_0000 | ROOT_PRESENT);
    assert_eq!(v.reason(&r), SmContextEntryAccess);
    v.ram.write(v.root, root_lo);

    let view = v.ram.view();
    let outside = RootTable {
        addr: 0x4000_0000,
        kind: RootTableType::Scalable,
    };
    assert_eq!(
        v.translator
            .translate(&view, outside, &r)
            .unwrap_err()
            .reason,
        SmRootEntryAccess
    );
    let unaligned = RootTable {
        addr: v.root + 0x10,
        kind: RootTableType::Scalable,
    };
    assert_eq!(
        v.translator
            .translate(&view, unaligned, &r)
            .unwrap_err()
            .reason,
        SmRootTableAddressInvalid
    );
}

#[test]
fn test_upper_devfn_uses_upper_root_half() {
    let mut v = Vtd::scalable();
    let upper = vsvm::vtd::SourceId::new(0, 20, 1);
    let (_, dir) = v.sm_context(upper, true, 7);
    v.set_pasid(dir, PASID, PasidEntryBuilder::pass_through(DID, 2));
    assert_eq!(v.ram.read(v.root) & ROOT_PRESENT, 0, "lower half untouched");
    assert_eq!(
        v.translate(&req(upper, Some(PASID), 0x5000, READ))
            .unwrap()
            .output,
        0x5000
    );
    assert_eq!(
        v.reason(&req(DEV, Some(PASID), 0x5000, READ)),
        FaultReason::SmRootEntryNotPresent
    );
}

#[test]
fn test_pasid_range_faults() {
    use FaultReason::*;
    let mut v = Vtd::scalable();
    let (ctx, dir) = v.sm_context(DEV, false, 0); // PDTS 0: 128 directory entries, 8192 PASIDs
    v.set_pasid(dir, 0, PasidEntryBuilder::pass_through(DID, 2));
    assert_eq!(v.reason(&req(DEV, Some(1), 0, READ)), SmPasidDisabled);
    v.ram.set(ctx, CONTEXT_SM_PASIDE);
    v.translator
        .caches()
        .invalidate_context(ContextInvalidation::Global);
    assert_eq!(v.reason(&req(DEV, Some(8192), 0, READ)), SmPasidTooLarge);
    assert_eq!(
        v.reason(&req(DEV, Some(8191), 0, READ)),
        SmPasidDirEntryNotPresent
    );
    v.ram.write(ctx + 8, 8192); // RID_PASID beyond the directory
    v.translator
        .caches()
        .invalidate_context(ContextInvalidation::Global);
    assert_eq!(v.reason(&req(DEV, None, 0, READ)), SmRidPasidInvalid);

    let config = VtdConfig {
        pasid_bits: 10,
        ..VtdConfig::default()
    };
    let mut v = Vtd::new(RootTableType::Scalable, config);
    v.sm_context(DEV, true, 7);
    assert_eq!(
        v.reason(&req(DEV, Some(1024), 0, READ)),
        SmPasidTooLarge,
        "beyond ECAP.PSS"
    );
}

#[test]
fn test_pasid_directory_and_table_faults() {
    use FaultReason::*;
    let mut v = Vtd::scalable();
    let (ctx, dir) = v.sm_context(DEV, true, 7);
    let r = req(DEV, Some(PASID), 0x5000, READ);
    assert_eq!(v.reason(&r), SmPasidDirEntryNotPresent);
    let entry = v.pasid_entry_addr(dir, PASID);
    let dir_slot = dir + u64::from(PASID >> PASID_PDE_SHIFT) * 8;
    assert_eq!(v.reason(&r), SmPasidEntryNotPresent);
    v.ram.set(dir_slot, 1 << 2);
    assert_eq!(v.reason(&r), SmPasidDirEntryReserved);
    let good = v.ram.read(dir_slot) & !(1 << 2);
    v.ram.write(dir_slot, 0x4000_0000 | PASID_PTE_PRESENT);
    assert_eq!(v.reason(&r), SmPasidEntryAccess);
    v.ram.write(dir_slot, good);
    v.set_pasid(dir, PASID, PasidEntryBuilder::pass_through(DID, 2));
    v.ram.write(entry + 24, 1);
    assert_eq!(v.reason(&r), SmPasidEntryReserved, "bits 255:192");
    v.ram.write(entry + 24, 0);
    v.ram.set(entry + 8, 1 << 16);
    assert_eq!(v.reason(&r), SmPasidEntryReserved, "bits 86:80");
    v.ram.clear(entry + 8, 1 << 16);
    v.set_pasid(
        dir,
        PASID,
        PasidEntryBuilder::pass_through(DID, 2).translation_type(5),
    );
    assert_eq!(v.reason(&r), SmPasidEntryInvalid);
    v.set_pasid(dir, PASID, PasidEntryBuilder::second_level(0x5000, DID, 3));
    assert_eq!(v.reason(&r), SmPasidEntryInvalid, "AW not in SAGAW");
    v.set_pasid(
        dir,
        PASID,
        PasidEntryBuilder::pass_through(DID, 2).set_bits(2, 1 << 7),
    );
    assert_eq!(v.reason(&r), SmPasidEntryReserved, "EAFE without ECAP.EAFS");
    v.ram.write(
        ctx,
        (0x4000_0000) | CONTEXT_SM_PASIDE | (7 << 9) | CONTEXT_PRESENT,
    );
    v.translator
        .caches()
        .invalidate_context(ContextInvalidation::Global);
    assert_eq!(v.reason(&r), SmPasidDirEntryAccess);
}

#[test]
fn test_pasid_entry_features_the_unit_lacks() {
    use FaultReason::*;
    let config = VtdConfig {
        fl_5level: false,
        slads: false,
        flts: false,
        ..VtdConfig::default()
    };
    let mut v = Vtd::new(RootTableType::Scalable, config);
    let (_, dir) = v.sm_context(DEV, true, 7);
    let r = req(DEV, Some(PASID), 0x5000, READ);
    v.set_pasid(
        dir,
        PASID,
        PasidEntryBuilder::first_level(0x5000, DID, false, 2),
    );
    assert_eq!(
        v.reason(&r),
        SmPasidEntryInvalid,
        "PGTT first-stage without FLTS"
    );
    v.set_pasid(
        dir,
        PASID,
        PasidEntryBuilder::nested(0x5000, true, 0x6000, DID, 2),
    );
    assert_eq!(v.reason(&r), SmPasidEntryInvalid, "5-level without FS5LP");
    v.set_pasid(
        dir,
        PASID,
        PasidEntryBuilder::second_level(0x5000, DID, 2).ssade(),
    );
    assert_eq!(v.reason(&r), SmPasidEntryReserved, "SSADE without SSADS");
}

// ---------------------------------------------------------------------------------------
// Scalable-mode walk faults.

#[test]
fn test_first_stage_walk_faults() {
    use FaultReason::*;
    let mut v = Vtd::scalable();
    let d = fs_device(&mut v, false, |e| e);
    let r = |addr| req(DEV, Some(PASID), addr, READ);
    assert_eq!(v.reason(&r(0x0000_8000_0000_0000)), SmNonCanonical);
    assert_eq!(v.reason(&r(VA)), SmFirstStageEntryNotPresent);
    let leaf = d.tree.map(&mut v.ram, VA, PA, 1, PAGE_USER_RW);
    v.ram.write(leaf, PA | PAGE_USER_RW | (1 << 49));
    assert_eq!(v.reason(&r(VA)), SmFirstStageEntryReserved, "above MGAW");
    v.ram.write(leaf, 0xfee0_0000 | PAGE_USER_RW);
    assert_eq!(v.reason(&r(VA)), SmInterruptAddress);
    v.ram.write(leaf, PA | PAGE_USER_RW);
    let pml4e = d.tree.slot(&v.ram, VA, 4);
    v.ram.set(pml4e, PAGE_PSE);
    assert_eq!(v.reason(&r(VA)), SmFirstStageEntryReserved, "PS in a PML4E");
    v.ram.clear(pml4e, PAGE_PSE);
    let pde = d.tree.slot(&v.ram, VA, 2);
    let saved = v.ram.read(pde);
    v.ram.write(pde, PA | PAGE_USER_RW | PAGE_PSE | (1 << 13));
    assert_eq!(
        v.reason(&r(VA)),
        SmFirstStageEntryReserved,
        "unaligned 2 MiB frame"
    );
    v.ram.write(pde, 0x4000_0000 | PAGE_TABLE);
    assert_eq!(v.reason(&r(VA)), SmFirstStageEntryAccess);
    v.ram.write(pde, saved);
    assert!(v.translate(&r(VA)).is_ok());
    // No 1 GiB first-stage pages: PS in a PDPE is reserved.
    let mut v = Vtd::new(
        RootTableType::Scalable,
        VtdConfig {
            fl_1g: false,
            ..VtdConfig::default()
        },
    );
    let d = fs_device(&mut v, false, |e| e);
    d.tree.map(&mut v.ram, VA, PA, 3, PAGE_USER_RW);
    assert_eq!(v.reason(&r(VA)), SmFirstStageEntryReserved);
    // FSPTPTR outside guest RAM.
    let mut v = Vtd::scalable();
    let (_, dir) = v.sm_context(DEV, true, 7);
    v.set_pasid(
        dir,
        PASID,
        PasidEntryBuilder::first_level(0x4000_0000, DID, false, 2),
    );
    assert_eq!(v.reason(&r(VA)), SmFirstStageRootAccess);
}

#[test]
fn test_first_stage_five_level_canonical_check() {
    let mut v = Vtd::scalable();
    let d = fs_device(&mut v, true, |e| e);
    d.tree.map(&mut v.ram, VA5, PA, 1, PAGE_USER_RW);
    assert!(v.translate(&req(DEV, Some(PASID), VA5, READ)).is_ok());
    let r = req(DEV, Some(PASID), 0x0100_0000_0000_0000, READ);
    assert_eq!(v.reason(&r), FaultReason::SmNonCanonical);
}

#[test]
fn test_second_stage_only_walk_faults() {
    use FaultReason::*;
    let mut v = Vtd::scalable();
    let (_, tree) = ss_device(&mut v, 1, |e| e);
    let r = |addr, access| req(DEV, Some(PASID), addr, access);
    assert_eq!(v.reason(&r(1 << 39, READ)), SmAddressBeyondMax);
    assert_eq!(
        v.reason(&r(IOVA, READ)),
        SmSecondStageEntryPermission,
        "not present"
    );
    let leaf = tree.map(&mut v.ram, IOVA, PA, 1, DMA_PTE_READ);
    assert_eq!(v.reason(&r(IOVA, WRITE)), SmWriteNotPermitted);
    v.ram.write(leaf, PA | DMA_PTE_WRITE);
    assert_eq!(v.reason(&r(IOVA, READ)), SmReadNotPermitted);
    v.ram.write(leaf, PA | RW | (1 << 62));
    assert_eq!(v.reason(&r(IOVA, READ)), SmSecondStageEntryReserved, "TM");
    v.ram.write(leaf, PA | RW | DMA_PTE_SNP);
    assert!(
        v.translate(&r(IOVA, READ)).is_ok(),
        "SNP is a leaf attribute in scalable mode"
    );
    v.translator
        .caches()
        .invalidate_iotlb(IotlbInvalidation::Global);
    let pde = tree.slot(&v.ram, IOVA, 2);
    v.ram.write(pde, 0x4000_0000 | RW);
    assert_eq!(v.reason(&r(IOVA, READ)), SmSecondStageEntryAccess);
    v.ram.write(pde, 0x4000_0000 | RW | DMA_PTE_SNP);
    assert_eq!(
        v.reason(&r(IOVA, READ)),
        SmSecondStageEntryReserved,
        "SNP in a non-leaf"
    );

    let mut v = Vtd::scalable();
    let (_, dir) = v.sm_context(DEV, true, 7);
    v.set_pasid(
        dir,
        PASID,
        PasidEntryBuilder::second_level(0x4000_0000, DID, 2),
    );
    assert_eq!(v.reason(&r(IOVA, READ)), SmSecondStageRootInvalid);
}

#[test]
fn test_pass_through_faults() {
    let mut v = Vtd::scalable();
    let (_, dir) = v.sm_context(DEV, true, 7);
    v.set_pasid(dir, PASID, PasidEntryBuilder::pass_through(DID, 2));
    assert_eq!(
        v.reason(&req(DEV, Some(PASID), 1 << 48, READ)),
        FaultReason::SmAddressBeyondMax
    );
    assert_eq!(
        v.reason(&req(DEV, Some(PASID), 0xfee0_0040, WRITE)),
        FaultReason::SmInterruptAddress
    );
    let mut v = Vtd::legacy();
    v.legacy_context(DEV, DID, 0, 2, CONTEXT_TT_PASS_THROUGH);
    assert_eq!(
        v.reason(&req(DEV, None, 1 << 48, READ)),
        FaultReason::AddressBeyondMgaw
    );
}

#[test]
fn test_nested_table_fetch_faults() {
    use FaultReason::*;
    let r = req(DEV, Some(PASID), VA, READ);
    // A fresh nested device mapping VA to PA, changed by `setup`: the fault translating `r`.
    let fault =
        |aw: u8, table_flags: u64, ss_flags: u64, setup: &dyn Fn(&mut Vtd, &NestedDevice)| {
            let mut v = Vtd::scalable();
            let d = nested_device(&mut v, false, aw, table_flags, ss_flags);
            d.fs.map(&mut v.ram, VA, PA, 1, PAGE_USER_RW);
            setup(&mut v, &d);
            v.reason(&r)
        };
    let table_at = |gpa: u64| {
        move |v: &mut Vtd, d: &NestedDevice| v.ram.write(d.fs.slot(&v.ram, VA, 3), gpa | PAGE_TABLE)
    };
    let output_at = |gpa: u64| {
        move |v: &mut Vtd, d: &NestedDevice| {
            d.fs.map(&mut v.ram, VA, gpa, 1, PAGE_USER_RW);
        }
    };
    // FSPTPTR's GPA is not mapped by the second stage.
    let root_unmapped = |v: &mut Vtd, d: &NestedDevice| {
        let entry = PasidEntryBuilder::nested(32 << 20, false, d.ss.root, DID, 2);
        v.set_pasid(d.dir, PASID, entry);
    };
    assert_eq!(
        fault(2, PAGE_TABLE, RW, &root_unmapped),
        SmNestedFirstStageRootRead
    );
    // A lower first-stage table not mapped by the second stage.
    assert_eq!(
        fault(2, PAGE_TABLE, RW, &table_at(32 << 20)),
        SmNestedFirstStageEntryRead
    );
    // A first-stage table address, or the final output, beyond the second stage's width.
    assert_eq!(
        fault(1, PAGE_TABLE, RW, &table_at(1 << 40)),
        SmNestedFirstStageBeyondWidth
    );
    assert_eq!(
        fault(1, PAGE_TABLE, RW, &output_at(1 << 40)),
        SmNestedFirstStageBeyondWidth
    );
    // Second stage read-only on the tables and A clear: the A update is a denied write.
    let no_a = PAGE_PRESENT | PAGE_RW | PAGE_USER;
    assert_eq!(
        fault(2, no_a, DMA_PTE_READ, &|_, _| ()),
        SmNestedFirstStageEntryWrite
    );
    // Second stage faults on the table itself.
    let ss_reserved = |v: &mut Vtd, d: &NestedDevice| v.ram.set(d.ss.slot(&v.ram, 0, 2), 1 << 62);
    assert_eq!(
        fault(2, PAGE_TABLE, RW, &ss_reserved),
        SmSecondStageEntryReserved
    );
    // The final output is not mapped by the second stage.
    let unmapped = 0x40_0000_0000;
    assert_eq!(
        fault(2, PAGE_TABLE, RW, &output_at(unmapped)),
        SmSecondStageEntryPermission
    );
    // Once the second stage maps it read-only, reads go through and writes fault.
    let mut v = Vtd::scalable();
    let d = nested_device(&mut v, false, 2, PAGE_TABLE, RW);
    d.fs.map(&mut v.ram, VA, unmapped, 1, PAGE_USER_RW);
    d.ss.map(&mut v.ram, unmapped, PA, 1, DMA_PTE_READ);
    assert!(v.translate(&r).is_ok());
    assert_eq!(
        v.reason(&req(DEV, Some(PASID), VA, WRITE)),
        SmWriteNotPermitted
    );
}

#[test]
fn test_first_stage_ad_update_failure() {
    let mut v = Vtd::scalable();
    let (_, dir) = v.sm_context(DEV, true, 7);
    // The PML4 sits in a map the device may read but not write; its entry lacks A.
    let pdpt = v.ram.page();
    let pml4e = ((VA >> 39) & 511) * 8;
    let ro = v.ram.map_read_only(
        64 << 20,
        1 << 20,
        &[(pml4e, pdpt | PAGE_PRESENT | PAGE_RW | PAGE_USER)],
    );
    v.set_pasid(
        dir,
        PASID,
        PasidEntryBuilder::first_level(ro, DID, false, 2),
    );
    let pde_table = v.ram.page();
    v.ram
        .write(pdpt + ((VA >> 30) & 511) * 8, pde_table | PAGE_TABLE);
    assert_eq!(
        v.reason(&req(DEV, Some(PASID), VA, READ)),
        FaultReason::SmFirstStageAdUpdate
    );
}

#[test]
fn test_second_stage_ad_update_failure() {
    let mut v = Vtd::scalable();
    let (_, dir) = v.sm_context(DEV, true, 7);
    // SSADE on; the top-level table sits in a read-only map and its entry lacks A.
    let next = v.ram.page();
    let slot = ((IOVA >> 39) & 511) * 8;
    let ro = v.ram.map_read_only(64 << 20, 1 << 20, &[(slot, next | RW)]);
    let entry = PasidEntryBuilder::second_level(ro, DID, 2).ssade();
    v.set_pasid(dir, PASID, entry);
    assert_eq!(
        v.reason(&req(DEV, Some(PASID), IOVA, READ)),
        FaultReason::SmSecondStageEntryAccess
    );
}

// ---------------------------------------------------------------------------------------
// FPD.

#[test]
fn test_fpd_marks_qualified_faults_only() {
    let mut v = Vtd::legacy();
    assert!(!v.translate(&req(DEV, None, IOVA, READ)).unwrap_err().fpd);
    let ctx = v.context_entry(DEV);
    v.ram.write(ctx, CONTEXT_FPD); // not present, FPD set
    let f = v.translate(&req(DEV, None, IOVA, READ)).unwrap_err();
    assert_eq!(
        (f.reason, f.fpd),
        (FaultReason::ContextEntryNotPresent, true)
    );
    let (ctx, _) = legacy_device(&mut v, 2);
    v.ram.set(ctx, CONTEXT_FPD);
    let f = v.translate(&req(DEV, None, IOVA, READ)).unwrap_err();
    assert_eq!((f.reason, f.fpd), (FaultReason::ReadNotPermitted, true));
    v.ram.set(ctx, 1 << 4); // reserved: not qualified
    v.translator
        .caches()
        .invalidate_context(ContextInvalidation::Global);
    let f = v.translate(&req(DEV, None, IOVA, READ)).unwrap_err();
    assert_eq!(
        (f.reason, f.fpd),
        (FaultReason::ContextEntryReserved, false)
    );

    let mut v = Vtd::scalable();
    let d = fs_device(&mut v, false, |e| e.fault_disable());
    let f = v.translate(&req(DEV, Some(PASID), VA, READ)).unwrap_err();
    assert_eq!(
        (f.reason, f.fpd),
        (FaultReason::SmFirstStageEntryNotPresent, true)
    );
    v.ram.clear(d.entry, PASID_PTE_FPD);
    v.translator
        .caches()
        .invalidate_pasid_cache(PasidCacheInvalidation::Global);
    assert!(
        !v.translate(&req(DEV, Some(PASID), VA, READ))
            .unwrap_err()
            .fpd
    );
    let dir_slot = d.dir + u64::from(PASID >> PASID_PDE_SHIFT) * 8;
    v.ram.set(dir_slot, PASID_PTE_FPD);
    v.translator
        .caches()
        .invalidate_pasid_cache(PasidCacheInvalidation::Global);
    assert!(
        v.translate(&req(DEV, Some(PASID), VA, READ))
            .unwrap_err()
            .fpd,
        "directory FPD"
    );
}

// ---------------------------------------------------------------------------------------
// Accessed and dirty flags.

#[test]
fn test_first_stage_accessed_and_dirty() {
    let mut v = Vtd::scalable();
    let d = fs_device(&mut v, false, |e| e);
    let tables = PAGE_PRESENT | PAGE_RW | PAGE_USER;
    let tree = Tree {
        table_flags: tables,
        ..d.tree
    };
    let leaf = tree.map(&mut v.ram, VA, PA, 1, PAGE_USER_RW);
    v.translate(&req(DEV, Some(PASID), VA, READ)).unwrap();
    for level in 1..=4 {
        let entry = v.ram.read(tree.slot(&v.ram, VA, level));
        assert_ne!(entry & PAGE_ACCESSED, 0, "A at level {level}");
        assert_eq!(entry & PAGE_DIRTY, 0, "a read sets no D (level {level})");
        assert_eq!(entry & PAGE_EA, 0, "EAFE clear: no EA");
    }
    v.translate(&req(DEV, Some(PASID), VA, WRITE)).unwrap();
    assert_ne!(
        v.ram.read(leaf) & PAGE_DIRTY,
        0,
        "a write sets D in the leaf"
    );
    assert_eq!(
        v.ram.read(tree.slot(&v.ram, VA, 2)) & PAGE_DIRTY,
        0,
        "D only in the leaf"
    );
    // A denied write sets no D.
    let ro = VA + 0x1000;
    let ro_leaf = tree.map(&mut v.ram, ro, PA, 1, PAGE_PRESENT | PAGE_USER);
    v.translate(&req(DEV, Some(PASID), ro, WRITE)).unwrap_err();
    assert_eq!(v.ram.read(ro_leaf) & PAGE_DIRTY, 0);
    assert_ne!(v.ram.read(ro_leaf) & PAGE_ACCESSED, 0);
}

#[test]
fn test_second_stage_accessed_and_dirty_with_ssade() {
    let mut v = Vtd::scalable();
    let (_, tree) = ss_device(&mut v, 2, |e| e.ssade());
    let leaf = tree.map(&mut v.ram, IOVA, PA, 2, RW);
    v.translate(&req(DEV, Some(PASID), IOVA, READ)).unwrap();
    for level in 2..=4 {
        let entry = v.ram.read(tree.slot(&v.ram, IOVA, level));
        assert_ne!(entry & DMA_PTE_ACCESSED, 0, "A at level {level}");
        assert_eq!(entry & DMA_PTE_DIRTY, 0);
    }
    v.translate(&req(DEV, Some(PASID), IOVA, WRITE)).unwrap();
    assert_ne!(v.ram.read(leaf) & DMA_PTE_DIRTY, 0);
    // Without SSADE nothing is written.
    let mut v = Vtd::scalable();
    let (_, tree) = ss_device(&mut v, 2, |e| e);
    let leaf = tree.map(&mut v.ram, IOVA, PA, 1, RW);
    v.translate(&req(DEV, Some(PASID), IOVA, WRITE)).unwrap();
    assert_eq!(v.ram.read(leaf), PA | RW);
}

#[test]
fn test_nested_ad_updates_go_through_the_second_stage() {
    let mut v = Vtd::scalable();
    let d = nested_device(&mut v, false, 2, PAGE_PRESENT | PAGE_RW | PAGE_USER, RW);
    // SSADE on, so the second stage records the first stage's A/D writes as writes.
    let entry = v.pasid_entry_addr(d.dir, PASID);
    v.ram.set(entry, 1 << 9);
    let leaf = d.fs.map(&mut v.ram, VA, 0x40_0000_0000, 1, PAGE_USER_RW);
    d.ss.map(&mut v.ram, 0x40_0000_0000, PA, 1, RW);
    v.translate(&req(DEV, Some(PASID), VA, WRITE)).unwrap();
    assert!(
        leaf >= NEST_OFFSET,
        "first-stage tables live behind the second stage"
    );
    assert_eq!(
        v.ram.read(leaf) & (PAGE_ACCESSED | PAGE_DIRTY),
        PAGE_ACCESSED | PAGE_DIRTY
    );
    let table_page = d.ss.slot(&v.ram, d.fs.space.gpa(leaf), 2);
    assert_ne!(
        v.ram.read(table_page) & DMA_PTE_DIRTY,
        0,
        "SS D on the table page"
    );
    let data_page = d.ss.slot(&v.ram, 0x40_0000_0000, 1);
    assert_ne!(
        v.ram.read(data_page) & DMA_PTE_DIRTY,
        0,
        "SS D on the data page"
    );
}

#[test]
fn test_legacy_walk_writes_nothing() {
    let mut v = Vtd::legacy();
    let (_, tree) = legacy_device(&mut v, 2);
    let leaf = tree.map(&mut v.ram, IOVA, PA, 1, RW);
    v.translate(&req(DEV, None, IOVA, WRITE)).unwrap();
    assert_eq!(v.ram.read(leaf), PA | RW);
}

// ---------------------------------------------------------------------------------------
// Caches.

fn fs_ready() -> (Vtd, FsDevice) {
    let mut v = Vtd::scalable();
    let d = fs_device(&mut v, false, |e| e);
    d.tree.map(
        &mut v.ram,
        VA,
        PA,
        1,
        PAGE_USER_RW | PAGE_ACCESSED | PAGE_DIRTY,
    );
    (v, d)
}

/// Remaps VA to a new frame behind the caches' back, so a hit shows the old one.
fn remap(v: &mut Vtd, d: &FsDevice, to: u64) {
    d.tree.map(
        &mut v.ram,
        VA,
        to,
        1,
        PAGE_USER_RW | PAGE_ACCESSED | PAGE_DIRTY,
    );
}

#[test]
fn test_iotlb_hit_after_walk() {
    let (mut v, _) = fs_ready();
    let r = req(DEV, Some(PASID), VA, READ);
    let first = v.translate(&r).unwrap();
    let stats = v.translator.caches().stats();
    assert_eq!(
        (stats.iotlb.hits, stats.iotlb.misses, stats.iotlb.entries),
        (0, 1, 1)
    );
    assert_eq!((stats.context.misses, stats.pasid.misses), (1, 1));
    assert_eq!(v.translate(&r).unwrap(), first);
    assert_eq!(
        v.translate(&req(DEV, Some(PASID), VA + 8, WRITE))
            .unwrap()
            .output,
        first.output + 8
    );
    let stats = v.translator.caches().stats();
    assert_eq!((stats.iotlb.hits, stats.iotlb.misses), (2, 1));
    assert_eq!(
        (
            stats.context.hits + stats.context.misses,
            stats.pasid.misses
        ),
        (1, 1),
        "no walk"
    );
}

#[test]
fn test_write_after_read_walks_again_to_set_dirty() {
    let mut v = Vtd::scalable();
    let d = fs_device(&mut v, false, |e| e);
    let leaf = d.tree.map(&mut v.ram, VA, PA, 1, PAGE_USER_RW);
    v.translate(&req(DEV, Some(PASID), VA, READ)).unwrap();
    v.translate(&req(DEV, Some(PASID), VA, WRITE)).unwrap();
    assert_ne!(v.ram.read(leaf) & PAGE_DIRTY, 0);
    let stats = v.translator.caches().stats();
    assert_eq!((stats.iotlb.hits, stats.iotlb.misses), (0, 2));
    assert_eq!(
        stats.context.hits, 1,
        "the second walk used the cached context entry"
    );
    v.translate(&req(DEV, Some(PASID), VA, WRITE)).unwrap();
    assert_eq!(v.translator.caches().stats().iotlb.hits, 1);
}

#[test]
fn test_iotlb_stays_stale_until_invalidated() {
    let (mut v, d) = fs_ready();
    let r = req(DEV, Some(PASID), VA, READ);
    v.translate(&r).unwrap();
    remap(&mut v, &d, PA + 0x10_0000);
    assert_eq!(v.translate(&r).unwrap().output, expect(PA, VA, 1), "cached");
    let pasid = Pasid::new(PASID).unwrap();
    v.translator
        .caches()
        .invalidate_pasid_iotlb(PasidIotlbInvalidation::Page {
            domain: DomainId(DID + 1),
            pasid,
            addr: VA & !0xfff,
            address_mask: 0,
            ih: false,
        });
    assert_eq!(
        v.translate(&r).unwrap().output,
        expect(PA, VA, 1),
        "other domain: still cached"
    );
    v.translator
        .caches()
        .invalidate_pasid_iotlb(PasidIotlbInvalidation::Page {
            domain: DomainId(DID),
            pasid,
            addr: VA & !0xfff,
            address_mask: 0,
            ih: false,
        });
    assert_eq!(
        v.translate(&r).unwrap().output,
        expect(PA + 0x10_0000, VA, 1)
    );
}

#[test]
fn test_every_iotlb_invalidation_granularity_causes_a_miss() {
    let pasid = Pasid::new(PASID).unwrap();
    let did = DomainId(DID);
    type Invalidate = Box<dyn Fn(&mut Vtd)>;
    let invalidations: Vec<Invalidate> = vec![
        Box::new(|v| {
            v.translator
                .caches()
                .invalidate_iotlb(IotlbInvalidation::Global)
        }),
        Box::new(move |v| {
            v.translator
                .caches()
                .invalidate_iotlb(IotlbInvalidation::Domain(did))
        }),
        Box::new(move |v| {
            // Page-selective without PASID drops the domain's first-stage entries wholesale.
            let inv = IotlbInvalidation::Page {
                domain: did,
                addr: 0,
                address_mask: 0,
                ih: true,
            };
            v.translator.caches().invalidate_iotlb(inv)
        }),
        Box::new(move |v| {
            let inv = PasidIotlbInvalidation::Pasid { domain: did, pasid };
            v.translator.caches().invalidate_pasid_iotlb(inv)
        }),
        Box::new(move |v| {
            // AM = 9: the 2 MiB range holding VA, given by an address inside it.
            let addr = (VA & !0x1f_ffff) + 0x5_5000;
            let inv = PasidIotlbInvalidation::Page {
                domain: did,
                pasid,
                addr,
                address_mask: 9,
                ih: false,
            };
            v.translator.caches().invalidate_pasid_iotlb(inv)
        }),
    ];
    for (i, invalidate) in invalidations.iter().enumerate() {
        let (mut v, d) = fs_ready();
        let r = req(DEV, Some(PASID), VA, READ);
        v.translate(&r).unwrap();
        remap(&mut v, &d, PA + 0x10_0000);
        invalidate(&mut v);
        assert_eq!(
            v.translate(&r).unwrap().output,
            expect(PA + 0x10_0000, VA, 1),
            "invalidation {i}"
        );
        assert_eq!(
            v.translator.caches().stats().iotlb.misses,
            2,
            "invalidation {i}"
        );
    }
}

#[test]
fn test_page_selective_mask_boundaries() {
    let (mut v, d) = fs_ready();
    let pasid = Pasid::new(PASID).unwrap();
    let base = VA & !0xfff;
    for page in 1..4u64 {
        d.tree.map(
            &mut v.ram,
            base + page * 0x1000,
            PA,
            1,
            PAGE_USER_RW | PAGE_ACCESSED,
        );
    }
    for page in 0..4u64 {
        v.translate(&req(DEV, Some(PASID), base + page * 0x1000, READ))
            .unwrap();
    }
    assert_eq!(v.translator.caches().stats().iotlb.entries, 4);
    // VA's page has index 2 in its 16 KiB block: AM = 1 drops pages 2-3 of the block.
    let inv = PasidIotlbInvalidation::Page {
        domain: DomainId(DID),
        pasid,
        addr: base,
        address_mask: 1,
        ih: false,
    };
    v.translator.caches().invalidate_pasid_iotlb(inv);
    assert_eq!(v.translator.caches().stats().iotlb.entries, 2);
    let hits_before = v.translator.caches().stats().iotlb.hits;
    for page in 0..4u64 {
        v.translate(&req(DEV, Some(PASID), base + page * 0x1000, READ))
            .unwrap();
    }
    assert_eq!(v.translator.caches().stats().iotlb.hits - hits_before, 2);
}

#[test]
fn test_second_stage_iotlb_page_invalidation() {
    let mut v = Vtd::legacy();
    let (_, tree) = legacy_device(&mut v, 2);
    tree.map(&mut v.ram, IOVA, PA, 1, RW);
    let r = req(DEV, None, IOVA, READ);
    v.translate(&r).unwrap();
    tree.map(&mut v.ram, IOVA, PA + 0x10_0000, 1, RW);
    let page = IOVA & !0xfff;
    let miss = IotlbInvalidation::Page {
        domain: DomainId(DID),
        addr: page + 0x1000,
        address_mask: 0,
        ih: false,
    };
    v.translator.caches().invalidate_iotlb(miss);
    assert_eq!(
        v.translate(&r).unwrap().output,
        expect(PA, IOVA, 1),
        "neighbour page only"
    );
    // The 8 KiB block [page - 4K, page + 4K), named by its first page.
    let hit = IotlbInvalidation::Page {
        domain: DomainId(DID),
        addr: page - 0x1000,
        address_mask: 1,
        ih: false,
    };
    v.translator.caches().invalidate_iotlb(hit);
    assert_eq!(
        v.translate(&r).unwrap().output,
        expect(PA + 0x10_0000, IOVA, 1)
    );
}

#[test]
fn test_context_cache_invalidations() {
    let did = DomainId(DID);
    let invalidations = [
        ContextInvalidation::Global,
        ContextInvalidation::Domain(did),
        ContextInvalidation::Device {
            domain: did,
            source: DEV,
            function_mask: 0,
        },
        ContextInvalidation::Device {
            domain: did,
            source: vsvm::vtd::SourceId::new(0, 3, 7),
            function_mask: 3,
        },
    ];
    for inv in invalidations {
        let mut v = Vtd::legacy();
        let (ctx, tree) = legacy_device(&mut v, 2);
        tree.map(&mut v.ram, IOVA, PA, 1, RW);
        v.translate(&req(DEV, None, IOVA, READ)).unwrap();
        v.ram.write(ctx, 0); // context entry gone
        v.translator
            .caches()
            .invalidate_iotlb(IotlbInvalidation::Global);
        assert!(
            v.translate(&req(DEV, None, IOVA, READ)).is_ok(),
            "context entry still cached"
        );
        v.translator
            .caches()
            .invalidate_iotlb(IotlbInvalidation::Global);
        v.translator.caches().invalidate_context(inv);
        assert_eq!(
            v.reason(&req(DEV, None, IOVA, READ)),
            FaultReason::ContextEntryNotPresent,
            "{inv:?}"
        );
    }
    // A device-selective invalidation for another function keeps the entry.
    let mut v = Vtd::legacy();
    let (ctx, tree) = legacy_device(&mut v, 2);
    tree.map(&mut v.ram, IOVA, PA, 1, RW);
    v.translate(&req(DEV, None, IOVA, READ)).unwrap();
    v.ram.write(ctx, 0);
    let other = vsvm::vtd::SourceId::new(0, 3, 1);
    v.translator
        .caches()
        .invalidate_context(ContextInvalidation::Device {
            domain: did,
            source: other,
            function_mask: 0,
        });
    v.translator
        .caches()
        .invalidate_iotlb(IotlbInvalidation::Global);
    assert!(v.translate(&req(DEV, None, IOVA, READ)).is_ok());
}

#[test]
fn test_pasid_cache_invalidations() {
    let pasid = Pasid::new(PASID).unwrap();
    let did = DomainId(DID);
    let invalidations = [
        PasidCacheInvalidation::Global,
        PasidCacheInvalidation::Domain(did),
        PasidCacheInvalidation::Pasid { domain: did, pasid },
    ];
    for inv in invalidations {
        let (mut v, d) = fs_ready();
        let r = req(DEV, Some(PASID), VA, READ);
        v.translate(&r).unwrap();
        v.ram.clear(d.entry, PASID_PTE_PRESENT);
        v.translator
            .caches()
            .invalidate_pasid_iotlb(PasidIotlbInvalidation::Pasid { domain: did, pasid });
        assert!(v.translate(&r).is_ok(), "PASID entry still cached");
        assert_eq!(v.translator.caches().stats().pasid.hits, 1);
        v.translator
            .caches()
            .invalidate_pasid_iotlb(PasidIotlbInvalidation::Pasid { domain: did, pasid });
        v.translator.caches().invalidate_pasid_cache(inv);
        assert_eq!(v.reason(&r), FaultReason::SmPasidEntryNotPresent, "{inv:?}");
    }
    let (mut v, d) = fs_ready();
    let r = req(DEV, Some(PASID), VA, READ);
    v.translate(&r).unwrap();
    v.ram.clear(d.entry, PASID_PTE_PRESENT);
    v.translator
        .caches()
        .invalidate_pasid_cache(PasidCacheInvalidation::Pasid {
            domain: DomainId(DID + 1),
            pasid,
        });
    v.translator
        .caches()
        .invalidate_pasid_iotlb(PasidIotlbInvalidation::Pasid { domain: did, pasid });
    assert!(
        v.translate(&r).is_ok(),
        "other domain's invalidation keeps the entry"
    );
}

#[test]
fn test_new_root_table_flushes_caches() {
    let (mut v, _) = fs_ready();
    let r = req(DEV, Some(PASID), VA, READ);
    v.translate(&r).unwrap();
    let view = v.ram.view();
    let empty = RootTable {
        addr: v.ram.page(),
        kind: RootTableType::Scalable,
    };
    assert_eq!(
        v.translator.translate(&view, empty, &r).unwrap_err().reason,
        FaultReason::SmRootEntryNotPresent
    );
    assert_eq!(v.translator.caches().stats().iotlb.entries, 0);
}

#[test]
fn test_faults_are_not_cached() {
    let mut v = Vtd::scalable();
    let d = fs_device(&mut v, false, |e| e);
    let r = req(DEV, Some(PASID), VA, READ);
    assert!(v.translate(&r).is_err());
    d.tree.map(&mut v.ram, VA, PA, 1, PAGE_USER_RW);
    assert!(
        v.translate(&r).is_ok(),
        "a not-present entry made present needs no invalidation"
    );
}
