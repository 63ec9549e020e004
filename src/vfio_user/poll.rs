//! Adaptive polling: after a message, keep checking the socket for a bounded window before
//! going to sleep in the kernel. A guest's MMIO accesses come in bursts, and every BAR read is a
//! full round trip whose cost is mostly wake-ups; spinning removes ours, and the CPU latency
//! request the server holds for the same window ([`super::cpu_latency`]) makes QEMU's cheaper.

use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use rustix::net::RecvFlags;

/// How long to keep spinning after the last message (0: never spin).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PollWindow(pub Duration);

impl PollWindow {
    /// The default window, chosen with `cargo bench --bench latency` on a 2-core machine
    /// (see README, "MMIO latency").
    pub const DEFAULT: PollWindow = PollWindow(Duration::from_micros(200));

    /// Never spin: block at once.
    pub const OFF: PollWindow = PollWindow(Duration::ZERO);
}

impl Default for PollWindow {
    fn default() -> Self {
        PollWindow::DEFAULT
    }
}

/// Whether a message (or EOF) is waiting, without consuming it or blocking.
fn readable(sock: &UnixStream) -> bool {
    let mut byte = [0u8; 1];
    match rustix::net::recv(sock, &mut byte, RecvFlags::PEEK | RecvFlags::DONTWAIT) {
        Ok(_) => true, // data, or 0 bytes: EOF, which the blocking read will report
        Err(rustix::io::Errno::AGAIN) | Err(rustix::io::Errno::INTR) => false,
        Err(_) => true, // let the real read report the error
    }
}

/// Spins until `sock` is readable or `window` has passed since `last_activity`; says whether it
/// saw data. Returns at once when the window is already over, so an idle server sleeps in the
/// kernel and uses no CPU.
pub fn spin_until_readable(sock: &UnixStream, window: PollWindow, last_activity: Instant) -> bool {
    let deadline = last_activity + window.0;
    while Instant::now() < deadline {
        if readable(sock) {
            return true;
        }
        // Yield rather than burn: on a 2-core host the thread that must answer us (QEMU's
        // I/O thread, or the vCPU itself) may be waiting for this very core.
        std::thread::yield_now();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn test_returns_at_once_when_data_waits() {
        let (a, mut b) = UnixStream::pair().unwrap();
        b.write_all(&[1]).unwrap();
        let start = Instant::now();
        assert!(spin_until_readable(
            &a,
            PollWindow(Duration::from_secs(5)),
            Instant::now()
        ));
        assert!(start.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn test_gives_up_after_the_window() {
        let (a, _b) = UnixStream::pair().unwrap();
        let start = Instant::now();
        assert!(!spin_until_readable(
            &a,
            PollWindow(Duration::from_millis(20)),
            Instant::now()
        ));
        let spent = start.elapsed();
        assert!(
            spent >= Duration::from_millis(20) && spent < Duration::from_secs(2),
            "{spent:?}"
        );
    }

    #[test]
    fn test_zero_window_never_spins() {
        let (a, _b) = UnixStream::pair().unwrap();
        let start = Instant::now();
        assert!(!spin_until_readable(&a, PollWindow::OFF, Instant::now()));
        assert!(start.elapsed() < Duration::from_millis(50));
    }
}
