//! The yardstick the lookup benchmarks are read against: a `std::collections::HashMap` lookup
//! of page-aligned keys, the cheapest general-purpose map a cache could be built on.

use std::collections::HashMap;
use std::hint::black_box;

use criterion::{measurement::WallTime, BenchmarkGroup};

/// Benchmarks `std_hashmap_lookup`: `pages` keys `base + n * page`, visited round-robin.
pub fn hashmap_lookup(group: &mut BenchmarkGroup<'_, WallTime>, base: u64, page: u64, pages: u64) {
    let mut map: HashMap<u64, u64> = (0..pages).map(|p| (base + p * page, p)).collect();
    map.shrink_to_fit();
    let mut i = 0u64;
    group.bench_function("std_hashmap_lookup", |b| {
        b.iter(|| {
            i = (i + 1) % pages;
            black_box(map.get(&black_box(base + i * page)))
        })
    });
}
