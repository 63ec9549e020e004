//! Fuzz target: the VT-d translation pipeline over arbitrary guest memory — root, context and
//! PASID entries (EntryReader), first-stage 4/5-level, second-stage and nested walks (VT-d spec
//! 3.6–3.8, 9.1–9.9), through the Translator and its caches and called directly.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vsvm::mem::Gpa;
use vsvm::vtd::cache::{
    ContextInvalidation, IotlbInvalidation, PasidCacheInvalidation, PasidIotlbInvalidation,
};
use vsvm::vtd::entries::EntryReader;
use vsvm::vtd::walk::first_stage::{self, FsFlags, FsTable};
use vsvm::vtd::walk::second_stage::{self, SsTable};
use vsvm::vtd::walk::{self, Walked};
use vsvm::vtd::{DomainId, Request, RootTable, RootTableType, SourceId, Translator, VtdConfig};
use vsvm_fuzz::{guest_ram, Input, PAGE};

/// Guest RAM the tables live in: small, so that pointers shaped by [`Input::word`] land in it.
const PAGES: u64 = 16;
/// Operations per input at most (each input stays fast).
const MAX_OPS: usize = 256;

fn config(input: &mut Input) -> VtdConfig {
    VtdConfig {
        mgaw: [39, 48, 57][input.below(3) as usize],
        sagaw: input.u8() & 0xf,
        fl_5level: input.bool(),
        sl_2m: input.bool(),
        sl_1g: input.bool(),
        fl_1g: input.bool(),
        pasid_bits: input.below(21) as u8,
        slads: input.bool(),
        ers: input.bool(),
        srs: input.bool(),
        nest: input.bool(),
        pt: input.bool(),
        ..VtdConfig::default()
    }
}

/// A walk's output keeps the input's offset inside the page it found.
fn check_offset(input: u64, walked: &Walked) {
    let mask = walked.page.bytes() - 1;
    assert_eq!(
        walked.output & mask,
        input & mask,
        "{walked:?} for {input:#x}"
    );
}

fn fs_table(input: &mut Input) -> FsTable {
    let flags = input.u8();
    FsTable {
        root: input.word(PAGES),
        five_level: input.bool(),
        flags: FsFlags {
            sre: flags & 1 != 0,
            wpe: flags & 2 != 0,
            ere: flags & 4 != 0,
            smep: flags & 8 != 0,
            eafe: flags & 16 != 0,
        },
    }
}

fn ss_table(input: &mut Input) -> SsTable {
    SsTable {
        root: input.word(PAGES),
        levels: 3 + input.below(3) as u8,
        width: [39, 48, 57, input.u8()][input.below(4) as usize],
        ad: input.bool(),
        exec: input.bool(),
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let config = config(&mut input);
    let haw = config.mgaw;
    let (_memfd, ram) = guest_ram(PAGES * PAGE);
    let mut translator = Translator::new(config);
    let reader = EntryReader::new(config);
    for _ in 0..MAX_OPS {
        if input.is_empty() {
            break;
        }
        let view = ram.view();
        match input.u8() % 8 {
            // Guest memory changes (also between a walk and its cached result).
            0 | 1 => {
                let slot = input.below(PAGES * PAGE / 8);
                let _ = ram.write_u64(Gpa(slot * 8), input.word(PAGES));
            }
            2 | 3 => {
                let kind = if input.bool() {
                    RootTableType::Scalable
                } else {
                    RootTableType::Legacy
                };
                let root = RootTable {
                    addr: input.word(PAGES),
                    kind,
                };
                let req = Request {
                    source: SourceId(input.u16()),
                    pasid: input.pasid(),
                    addr: input.addr(PAGES),
                    access: input.access(),
                };
                let first = translator.translate(&view, root, &req);
                if let Ok(t) = first {
                    if t.page_size.is_power_of_two() {
                        let mask = t.page_size - 1;
                        assert_eq!(t.output & mask, req.addr & mask, "{t:?} for {req:?}");
                    }
                }
                // The cache answers as the walk did, for a request it just filled.
                let again = translator.translate(&view, root, &req);
                if let (Ok(a), Ok(b)) = (first, again) {
                    assert_eq!(a.output, b.output, "cached translation differs for {req:?}");
                }
            }
            4 => {
                let caches = translator.caches();
                let domain = DomainId(input.u16() & 0xf);
                let source = SourceId(input.u16());
                let addr = input.addr(PAGES);
                let address_mask = input.u8() & 0x3f;
                let ih = input.bool();
                let pasid = input.pasid().unwrap_or_default();
                match input.u8() % 9 {
                    0 => caches.invalidate_context(ContextInvalidation::Global),
                    1 => caches.invalidate_context(ContextInvalidation::Device {
                        domain,
                        source,
                        function_mask: input.u8() & 3,
                    }),
                    2 => caches.invalidate_iotlb(IotlbInvalidation::Domain(domain)),
                    3 => caches.invalidate_iotlb(IotlbInvalidation::Page {
                        domain,
                        addr,
                        address_mask,
                        ih,
                    }),
                    4 => caches
                        .invalidate_pasid_iotlb(PasidIotlbInvalidation::Pasid { domain, pasid }),
                    5 => caches.invalidate_pasid_iotlb(PasidIotlbInvalidation::Page {
                        domain,
                        pasid,
                        addr,
                        address_mask,
                        ih,
                    }),
                    6 => caches
                        .invalidate_pasid_cache(PasidCacheInvalidation::Pasid { domain, pasid }),
                    7 => caches.invalidate_pasid_cache(PasidCacheInvalidation::Domain(domain)),
                    _ => caches.invalidate_iotlb(IotlbInvalidation::Global),
                }
            }
            // The walks on their own, with tables straight from the input.
            5 => {
                let fs = fs_table(&mut input);
                let rsvd = first_stage::reserved(haw, config.fl_1g);
                let addr = input.addr(PAGES);
                let access = input.access();
                if let Ok(w) = walk::first_stage_only(&view, &fs, &rsvd, addr, access) {
                    check_offset(addr, &w);
                }
            }
            6 => {
                let ss = ss_table(&mut input);
                let scalable = input.bool();
                let rsvd = second_stage::reserved(haw, scalable, config.sl_2m, config.sl_1g);
                let addr = input.addr(PAGES);
                let access = input.access();
                let exec = input.bool();
                if let Ok(w) = walk::second_stage_only(&view, &ss, &rsvd, addr, access, exec) {
                    check_offset(addr, &w);
                }
                let fs = fs_table(&mut input);
                let fs_rsvd = first_stage::reserved(haw, config.fl_1g);
                if let Ok(w) = walk::nested(&view, &fs, &fs_rsvd, &ss, &rsvd, addr, access) {
                    check_offset(addr, &w);
                }
            }
            // The entry decoders on their own.
            _ => {
                let root = input.word(PAGES);
                let source = SourceId(input.u16());
                let _ = reader.valid_table(root);
                let _ = reader.legacy_context(&view, root, source);
                if let Ok(context) = reader.scalable_context(&view, root, source) {
                    let pasid = input.pasid().map_or(0, |p| p.raw());
                    let _ = reader.pasid_entry(&view, &context, pasid, input.bool());
                }
            }
        }
    }
});
