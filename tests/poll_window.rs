//! The adaptive poll window as a client sees it: the server holds its CPU latency request while
//! messages keep coming and lifts it once the window has passed without one, so an idle guest
//! leaves every CPU free to halt. A regular file stands in for /dev/cpu_dma_latency and records
//! what the server asked for.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use vsvm::vfio_user::{CpuLatency, PollWindow, ServerOptions};

/// What `CpuLatency` writes: 0 µs while active, the kernel's "no constraint" otherwise.
const ACTIVE: i32 = 0;
const NO_CONSTRAINT: i32 = 2_000_000_000;

struct StandIn(PathBuf);

impl StandIn {
    fn new(name: &str) -> StandIn {
        let path = std::env::temp_dir().join(format!("vsvm-{name}-{}", std::process::id()));
        std::fs::write(&path, b"").unwrap();
        StandIn(path)
    }

    /// The values the server has written so far.
    fn requests(&self) -> Vec<i32> {
        requests(&self.0)
    }
}

fn requests(path: &Path) -> Vec<i32> {
    std::fs::read(path)
        .unwrap()
        .chunks_exact(4)
        .map(|c| i32::from_ne_bytes(c.try_into().unwrap()))
        .collect()
}

impl Drop for StandIn {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn options(window: Duration, file: &StandIn) -> ServerOptions {
    ServerOptions {
        poll: PollWindow(window),
        cpu_latency: CpuLatency::open(&file.0).unwrap(),
        ..ServerOptions::default()
    }
}

/// Waits up to 5 s for the recorded requests to become `want`.
fn wait_for(file: &StandIn, want: &[i32]) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while file.requests() != want {
        assert!(
            Instant::now() < deadline,
            "requests {:?}, want {want:?}",
            file.requests()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn test_request_held_while_busy_and_lifted_when_the_window_passes() {
    let file = StandIn::new("poll-window-qos");
    let (mut client, server) = common::spawn_accel_with(options(Duration::from_millis(300), &file));
    client.negotiate();
    assert_eq!(file.requests(), [NO_CONSTRAINT, ACTIVE]);
    // Messages inside the window keep the one request; nothing new is written.
    for _ in 0..5 {
        client.negotiate();
    }
    assert_eq!(file.requests(), [NO_CONSTRAINT, ACTIVE]);
    // Silence for longer than the window: lifted before the server sleeps.
    wait_for(&file, &[NO_CONSTRAINT, ACTIVE, NO_CONSTRAINT]);
    // The next burst takes it again.
    client.negotiate();
    assert_eq!(
        file.requests(),
        [NO_CONSTRAINT, ACTIVE, NO_CONSTRAINT, ACTIVE]
    );
    // The hold ends with the connection.
    drop(client);
    let _ = server.join().unwrap();
    assert_eq!(
        file.requests(),
        [NO_CONSTRAINT, ACTIVE, NO_CONSTRAINT, ACTIVE, NO_CONSTRAINT]
    );
}

#[test]
fn test_open_starts_lifted_and_the_last_of_several_holds_lifts() {
    let file = StandIn::new("latency-holds");
    let latency = CpuLatency::open(&file.0).unwrap();
    assert!(latency.is_on());
    assert_eq!(file.requests(), [NO_CONSTRAINT]);
    let a = latency.hold();
    let b = latency.clone().hold();
    assert_eq!(file.requests(), [NO_CONSTRAINT, ACTIVE]);
    drop(a);
    assert_eq!(file.requests(), [NO_CONSTRAINT, ACTIVE]);
    drop(b);
    assert_eq!(file.requests(), [NO_CONSTRAINT, ACTIVE, NO_CONSTRAINT]);
}

#[test]
fn test_zero_window_never_asks() {
    let file = StandIn::new("poll-window-off");
    let (mut client, server) = common::spawn_accel_with(options(Duration::ZERO, &file));
    for _ in 0..3 {
        client.negotiate();
    }
    drop(client);
    let _ = server.join().unwrap();
    assert_eq!(file.requests(), [NO_CONSTRAINT]);
}
