//! An interrupt eventfd the client handed over with SET_IRQS, written so that no server thread
//! ever blocks on it. Follows eventfd(2): a write blocks only while the counter is saturated,
//! and with O_NONBLOCK it fails with EAGAIN instead (the interrupt is pending anyway).
//!
//! Only eventfds are accepted: a pipe, socket or file could block a write for as long as the
//! client likes (a full pipe, a FUSE file served by the client itself), and a write of 8 bytes
//! would mean something else to it anyway. The fd's file status flags are shared with the
//! client (one open file description), so O_NONBLOCK is set on receipt and checked again
//! before every write: a client that clears it loses the vector instead of stalling us.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use log::{debug, warn};
use rustix::fs::OFlags;
use rustix::io::Errno;

/// What `readlink` of `/proc/self/fd/N` says for an eventfd (fs/eventfd.c names its anon inode
/// "[eventfd]").
const EVENTFD_LINK: &str = "anon_inode:[eventfd]";

/// Why an fd cannot serve as an interrupt.
#[derive(Debug, thiserror::Error)]
pub enum IrqFdError {
    /// The fd is not an eventfd.
    #[error("interrupt fd is {0:?}, not an eventfd")]
    NotEventfd(String),
    /// The fd could not be inspected or made non-blocking.
    #[error("cannot set up interrupt fd")]
    Io(#[source] std::io::Error),
}

/// What became of one signal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signalled {
    /// The counter went up: the client sees an interrupt.
    Sent,
    /// The counter is saturated: an interrupt is pending already, nothing is lost.
    AlreadyPending,
    /// The client made the fd blocking again behind our back: not written, and the vector
    /// should be dropped.
    Tampered,
    /// The write failed otherwise.
    Failed(Errno),
}

/// An eventfd made non-blocking, ready to signal.
#[derive(Debug)]
pub struct IrqFd {
    fd: OwnedFd,
}

impl IrqFd {
    /// Takes `fd` as an interrupt: refuses anything but an eventfd and sets O_NONBLOCK.
    pub fn new(fd: OwnedFd) -> Result<Self, IrqFdError> {
        let link = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
            .map_err(IrqFdError::Io)?;
        let link = link.to_string_lossy().into_owned();
        if link != EVENTFD_LINK {
            return Err(IrqFdError::NotEventfd(link));
        }
        let flags = rustix::fs::fcntl_getfl(&fd).map_err(|e| IrqFdError::Io(e.into()))?;
        if !flags.contains(OFlags::NONBLOCK) {
            debug!("interrupt eventfd came blocking: made non-blocking");
            rustix::fs::fcntl_setfl(&fd, flags | OFlags::NONBLOCK)
                .map_err(|e| IrqFdError::Io(e.into()))?;
        }
        Ok(IrqFd { fd })
    }

    /// Adds 1 to the counter, never waiting.
    pub fn signal(&self) -> Signalled {
        // The flags may have changed since `new`: the client shares them. What remains is a
        // window of one system call in which a client flipping O_NONBLOCK in a loop could
        // still catch a write with a saturated counter; closing it would take a write that a
        // signal can interrupt.
        match rustix::fs::fcntl_getfl(&self.fd) {
            Ok(flags) if flags.contains(OFlags::NONBLOCK) => {}
            Ok(_) => return Signalled::Tampered,
            Err(e) => return Signalled::Failed(e),
        }
        match rustix::io::write(self.fd.as_fd(), &1u64.to_ne_bytes()) {
            Ok(_) => Signalled::Sent,
            Err(Errno::AGAIN) => Signalled::AlreadyPending,
            Err(e) => Signalled::Failed(e),
        }
    }
}

/// Logs what a signal came to; says whether the client has an interrupt pending now.
pub(crate) fn report(vector: usize, outcome: Signalled) -> bool {
    match outcome {
        Signalled::Sent => true,
        Signalled::AlreadyPending => {
            debug!("MSI-X vector {vector}: eventfd counter saturated, interrupt already pending");
            true
        }
        Signalled::Tampered => {
            warn!(
                "MSI-X vector {vector}: client cleared O_NONBLOCK on its eventfd; vector dropped"
            );
            false
        }
        Signalled::Failed(e) => {
            warn_limited!("cannot signal MSI-X vector {vector}: {e}");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::event::{eventfd, EventfdFlags};

    fn counter(fd: &OwnedFd) -> u64 {
        let mut buf = [0u8; 8];
        rustix::io::read(fd, &mut buf).unwrap();
        u64::from_ne_bytes(buf)
    }

    #[test]
    fn test_blocking_eventfd_is_made_non_blocking_and_saturation_is_pending() {
        let fd = eventfd(0, EventfdFlags::empty()).unwrap();
        let ours = IrqFd::new(rustix::io::dup(&fd).unwrap()).unwrap();
        assert!(rustix::fs::fcntl_getfl(&fd)
            .unwrap()
            .contains(OFlags::NONBLOCK));
        assert_eq!(ours.signal(), Signalled::Sent);
        assert_eq!(counter(&fd), 1);
        rustix::io::write(&fd, &(u64::MAX - 1).to_ne_bytes()).unwrap();
        assert_eq!(ours.signal(), Signalled::AlreadyPending);
        assert_eq!(counter(&fd), u64::MAX - 1);
    }

    #[test]
    fn test_flags_cleared_by_the_client_are_tampering() {
        let fd = eventfd(0, EventfdFlags::NONBLOCK).unwrap();
        let ours = IrqFd::new(rustix::io::dup(&fd).unwrap()).unwrap();
        rustix::fs::fcntl_setfl(&fd, OFlags::empty()).unwrap();
        rustix::io::write(&fd, &(u64::MAX - 1).to_ne_bytes()).unwrap();
        assert_eq!(ours.signal(), Signalled::Tampered);
    }

    #[test]
    fn test_pipes_sockets_and_files_are_refused() {
        let (_r, w) = rustix::pipe::pipe().unwrap();
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let memfd = rustix::fs::memfd_create("irq", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
        for fd in [w, OwnedFd::from(a), memfd] {
            assert!(matches!(IrqFd::new(fd), Err(IrqFdError::NotEventfd(_))));
        }
    }
}
