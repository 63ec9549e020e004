//! A whole remapping unit under arbitrary guest input: random guest memory (with table
//! pointers biased into it), arbitrary accesses to every register offset, and arbitrary DMA
//! and page requests. Nothing may panic (debug overflow checks included) or hang.

#[path = "common/ram.rs"]
mod ram;

use proptest::prelude::*;

use vsvm::mem::{Gpa, GuestMemory, PAGE_SIZE};
use vsvm::vtd::cap::FRCD_OFFSET;
use vsvm::vtd::regs::{
    Gcmd, DMAR_CCMD_REG, DMAR_FSTS_REG, DMAR_GCMD_REG, DMAR_IOTLB_REG, DMAR_IQA_REG, DMAR_IQT_REG,
    DMAR_PQA_REG, DMAR_RTADDR_REG,
};
use vsvm::vtd::sink::RecordingSink;
use vsvm::vtd::{Access, PageRequest, Pasid, RemappingUnit, Request, SourceId, VtdConfig};

/// Guest RAM at GPA 0 holding `words`, so that random table pointers often land in it.
fn ram_with(words: &[u64]) -> GuestMemory {
    let size = (words.len() as u64 * 8).next_multiple_of(PAGE_SIZE);
    let mem = ram::guest_memory(size);
    for (i, word) in words.iter().enumerate() {
        mem.write_u64(Gpa(i as u64 * 8), *word).unwrap();
    }
    mem
}

/// A guest word: arbitrary, or shaped like an entry whose pointer lands in the RAM.
fn word() -> impl Strategy<Value = u64> {
    prop_oneof![
        any::<u64>(),
        any::<u64>().prop_map(|w| w & 0xf00f_ffff_0000_3fff),
        any::<u64>().prop_map(|w| w & 0x3fff),
    ]
}

/// An access to the register window: any offset (also past the end and unaligned), any size,
/// arbitrary data; biased towards the registers with side effects.
fn access() -> impl Strategy<Value = (u64, usize, u64)> {
    let offset = prop_oneof![
        0u64..0x1100,
        prop::sample::select(vec![
            DMAR_GCMD_REG,
            DMAR_IQT_REG,
            DMAR_CCMD_REG + 4,
            DMAR_IOTLB_REG + 4,
            DMAR_FSTS_REG,
            FRCD_OFFSET + 12,
        ]),
        any::<u64>(),
    ];
    (
        offset,
        prop_oneof![Just(4usize), Just(8usize), 0usize..16],
        prop_oneof![any::<u64>(), word()],
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn test_arbitrary_register_memory_and_requests_never_panic(
        smts in any::<bool>(),
        records in 1u16..=256,
        words in prop::collection::vec(word(), 2048),
        accesses in prop::collection::vec(access(), 1..48),
        requests in prop::collection::vec(
            (any::<u16>(), any::<u32>(), any::<u64>(), any::<[bool; 5]>()),
            0..16,
        ),
    ) {
        let config = VtdConfig {
            smts,
            fault_records: records,
            ..VtdConfig::default()
        };
        let mut unit = RemappingUnit::new(config, ram_with(&words));
        let mut sink = RecordingSink::new();
        // Start from a programmed unit: root table, queue and PRQ in the random RAM.
        let mode = u64::from(smts) << 10;
        unit.mmio_write(DMAR_RTADDR_REG, 8, 0x1000 | mode, &mut sink);
        unit.mmio_write(DMAR_IQA_REG, 8, 0x2000 | (1 << 11), &mut sink);
        unit.mmio_write(DMAR_PQA_REG, 8, 0x3000, &mut sink);
        let go = Gcmd::new().with_srtp(true).with_qie(true).with_te(true);
        unit.mmio_write(DMAR_GCMD_REG, 4, go.into_bits().into(), &mut sink);
        for (i, (offset, size, value)) in accesses.into_iter().enumerate() {
            unit.mmio_write(offset, size, value, &mut sink);
            let _ = unit.mmio_read(offset, size);
            let Some(&(source, pasid, addr, [read, write, exec, privileged, last])) =
                requests.get(i)
            else {
                continue;
            };
            let pasid = (pasid & 1 == 0).then(|| Pasid::new(pasid >> 12).unwrap_or_default());
            let access = Access { read, write, exec, privileged };
            let req = Request { source: SourceId(source), pasid, addr, access };
            let _ = unit.translate(&req, &mut sink);
            let page = PageRequest {
                source: SourceId(source),
                pasid,
                addr,
                read,
                write,
                exec,
                privileged,
                last_in_group: last,
                prg_index: source,
                private_data: None,
            };
            let _ = unit.page_request(page, &mut sink);
        }
    }
}
