//! Rate-limited logging for what a guest or a client can cause at will (a register write, a
//! bad descriptor, a malformed message): the first [`BURST`] messages of a call site in each
//! [`WINDOW`] are logged, the rest are counted and the count is logged with the next message
//! that gets through. Without it, a guest writing one register in a loop fills the log.
//!
//! `warn_limited!` and `info_limited!` are `log::warn!` / `log::info!` with one limit per call
//! site. They are textually scoped (lib.rs declares this module first), so modules use them by
//! name.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Messages of one call site logged per window.
pub const BURST: u32 = 10;
/// Length of a window.
pub const WINDOW: Duration = Duration::from_secs(1);

#[derive(Debug)]
struct State {
    window_start: Option<Instant>,
    in_window: u32,
    suppressed: u64,
}

/// The limit of one call site.
#[derive(Debug)]
pub struct RateLimit {
    state: Mutex<State>,
}

impl Default for RateLimit {
    fn default() -> Self {
        Self::new()
    }
}

impl RateLimit {
    /// A limit whose first window opens with its first message.
    pub const fn new() -> Self {
        RateLimit {
            state: Mutex::new(State {
                window_start: None,
                in_window: 0,
                suppressed: 0,
            }),
        }
    }

    /// Whether a message at `now` may be logged: `Some(n)` with the number of messages
    /// suppressed since the last one logged, `None` to suppress it.
    pub fn check(&self, now: Instant) -> Option<u64> {
        // A panic while holding it cannot leave the counts inconsistent.
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let expired = state
            .window_start
            .is_none_or(|start| now.saturating_duration_since(start) >= WINDOW);
        if expired {
            state.window_start = Some(now);
            state.in_window = 0;
        }
        if state.in_window >= BURST {
            state.suppressed += 1;
            return None;
        }
        state.in_window += 1;
        Some(std::mem::take(&mut state.suppressed))
    }
}

/// `log::warn!`, at most [`BURST`] times per [`WINDOW`] from this call site.
macro_rules! warn_limited {
    ($($arg:tt)+) => {
        log_limited!(::log::Level::Warn, $($arg)+)
    };
}

/// `log::info!`, at most [`BURST`] times per [`WINDOW`] from this call site.
macro_rules! info_limited {
    ($($arg:tt)+) => {
        log_limited!(::log::Level::Info, $($arg)+)
    };
}

/// `log::log!` at `level`, at most [`BURST`] times per [`WINDOW`] from this call site. With
/// `level` off it costs what `log::log!` does: no clock read, no lock.
macro_rules! log_limited {
    ($level:expr, $($arg:tt)+) => {{
        static LIMIT: $crate::log_limit::RateLimit = $crate::log_limit::RateLimit::new();
        if ::log::log_enabled!($level) {
            if let Some(suppressed) = LIMIT.check(::std::time::Instant::now()) {
                if suppressed > 0 {
                    ::log::log!($level, "({suppressed} similar messages suppressed)");
                }
                ::log::log!($level, $($arg)+);
            }
        }
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_burst_is_logged_then_suppressed_until_the_next_window() {
        let limit = RateLimit::new();
        let start = Instant::now();
        for _ in 0..BURST {
            assert_eq!(limit.check(start), Some(0));
        }
        for _ in 0..1000 {
            assert_eq!(limit.check(start + WINDOW / 2), None, "past the burst");
        }
        assert_eq!(
            limit.check(start + WINDOW),
            Some(1000),
            "the next window logs, with the count it suppressed"
        );
        assert_eq!(limit.check(start + WINDOW), Some(0));
    }

    #[test]
    fn test_macros_compile_at_any_level() {
        for i in 0..(BURST + 5) {
            warn_limited!("warn {i}");
            info_limited!("info {i}");
        }
    }
}
