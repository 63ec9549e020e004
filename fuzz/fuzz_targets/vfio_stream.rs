//! Fuzz target: a vfio-user client's byte stream, fds of mixed kinds included, into the real
//! server loop serving the accelerator function (`vsvm_fuzz::stream` has the input format) —
//! vfio-user specification, "Message format", "Socket" and the per-command sections.
#![no_main]

use std::sync::Mutex;

use libfuzzer_sys::fuzz_target;
use vsvm::devices::accel::{self, Accel};
use vsvm::endpoint::Endpoint;

/// One function for every run, as `serve` keeps one between clients: the reset a disconnect
/// does is part of what is fuzzed (and a run costs no thread start-ups).
static DEVICE: Mutex<Option<Endpoint<Accel>>> = Mutex::new(None);

fuzz_target!(|data: &[u8]| {
    let mut device = DEVICE.lock().unwrap_or_else(|e| e.into_inner());
    let ep =
        device.get_or_insert_with(|| accel::endpoint(accel::VENDOR_ID, accel::DEVICE_ID).unwrap());
    vsvm_fuzz::stream::run(data, ep);
});
