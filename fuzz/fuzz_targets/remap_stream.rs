//! Fuzz target: a vfio-user client's byte stream, fds of mixed kinds included, into the real
//! server loop serving the remap unit's function — the guest-facing VT-d front end as BAR0,
//! the physical model behind it, one accelerator behind the unit — built as `vsvm serve
//! --remap-unit` builds it (`vsvm_fuzz::stream` has the input format). vfio-user
//! specification, per-command sections; VT-d spec 10.4 (the register window).
#![no_main]

use std::sync::Mutex;

use libfuzzer_sys::fuzz_target;
use vsvm::devices::accel;
use vsvm::devices::topology::{AccelSpec, Built, RemapSpec, Topology};

/// One topology for every run, as `serve` keeps its functions between clients: the remap
/// unit's reset on disconnect (and the front end's state across it) is part of what is
/// fuzzed. The accelerator is kept alive with it (its connection carries the unit's MSIs).
static TOPOLOGY: Mutex<Option<Built>> = Mutex::new(None);

fn build() -> Built {
    let topology = Topology {
        remap: Some(RemapSpec {
            socket: "/nonexistent/remap.sock".into(),
            addr: "03.0".parse().unwrap(),
        }),
        accels: vec![AccelSpec {
            socket: "/nonexistent/accel.sock".into(),
            addr: "04.0".parse().unwrap(),
            vendor_id: accel::VENDOR_ID,
            device_id: accel::DEVICE_ID,
        }],
    };
    topology.build(0xfeb0_0000, |_| ()).unwrap()
}

fuzz_target!(|data: &[u8]| {
    let mut built = TOPOLOGY.lock().unwrap_or_else(|e| e.into_inner());
    let remap_unit = &mut built.get_or_insert_with(build).functions[0].device;
    vsvm_fuzz::stream::run(data, &mut **remap_unit);
});
