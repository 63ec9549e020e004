//! Message framing on a UNIX stream socket: whole messages in and out, fds by SCM_RIGHTS.
//! Follows the vfio-user specification, "Socket" and "Message format".

use std::io::{IoSliceMut, Write};
use std::mem::MaybeUninit;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;

use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags};
use zerocopy::IntoBytes;

use super::protocol::{Header, HEADER_SIZE, MAX_MESSAGE_SIZE, MAX_MSG_FDS};

/// One received message.
#[derive(Debug)]
pub struct Message {
    /// The header as received.
    pub header: Header,
    /// Everything after the header (`message_size - 16` bytes).
    pub body: Vec<u8>,
    /// File descriptors that came with the message.
    pub fds: Vec<OwnedFd>,
}

/// Why a message could not be framed. All of them end the connection: after one of these the
/// byte stream can no longer be trusted to be aligned on message boundaries.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The peer closed the socket between messages.
    #[error("peer closed the connection")]
    Closed,
    /// A socket call failed.
    #[error("socket error")]
    Io(#[source] std::io::Error),
    /// The header's size field lies: it is smaller than the header itself.
    #[error("message size {size} is smaller than the header")]
    ShortSize {
        /// The size field.
        size: u32,
    },
    /// The header's size field is above what we accept.
    #[error("message size {size} exceeds the limit of {max} bytes")]
    TooLarge {
        /// The offending header, so that the request can still be answered.
        header: Header,
        /// The size field.
        size: u32,
        /// Our limit.
        max: usize,
    },
    /// The kernel truncated the fds (more than we have room for).
    #[error("more than {max} file descriptors in one message")]
    TooManyFds {
        /// Our limit.
        max: usize,
    },
    /// The peer closed the socket in the middle of a message.
    #[error("peer closed after {got} of {want} bytes of a message")]
    Truncated {
        /// Bytes received.
        got: usize,
        /// Bytes announced.
        want: usize,
    },
}

impl From<rustix::io::Errno> for TransportError {
    fn from(e: rustix::io::Errno) -> Self {
        TransportError::Io(e.into())
    }
}

/// Receives exactly `buf.len()` bytes, collecting any fds that arrive on the way.
fn recv_exact(
    sock: &UnixStream,
    buf: &mut [u8],
    fds: &mut Vec<OwnedFd>,
    at_boundary: bool,
) -> Result<(), TransportError> {
    let mut got = 0;
    while got < buf.len() {
        let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(MAX_MSG_FDS))];
        let mut ancillary = RecvAncillaryBuffer::new(&mut space);
        let mut iov = [IoSliceMut::new(&mut buf[got..])];
        let msg =
            match rustix::net::recvmsg(sock, &mut iov, &mut ancillary, RecvFlags::CMSG_CLOEXEC) {
                Ok(msg) => msg,
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            };
        for message in ancillary.drain() {
            if let RecvAncillaryMessage::ScmRights(received) = message {
                fds.extend(received);
            }
        }
        if msg.flags.contains(ReturnFlags::CTRUNC) || fds.len() > MAX_MSG_FDS {
            return Err(TransportError::TooManyFds { max: MAX_MSG_FDS });
        }
        if msg.bytes == 0 {
            return Err(if at_boundary && got == 0 {
                TransportError::Closed
            } else {
                TransportError::Truncated {
                    got,
                    want: buf.len(),
                }
            });
        }
        got += msg.bytes;
    }
    Ok(())
}

/// Receives one whole message. Sizes are checked before anything is allocated.
pub fn recv_message(sock: &UnixStream) -> Result<Message, TransportError> {
    let mut fds = Vec::new();
    let mut raw = [0u8; HEADER_SIZE];
    recv_exact(sock, &mut raw, &mut fds, true)?;
    let header: Header = zerocopy::transmute!(raw);
    let size = header.message_size as usize;
    if size < HEADER_SIZE {
        return Err(TransportError::ShortSize {
            size: header.message_size,
        });
    }
    if size > MAX_MESSAGE_SIZE {
        return Err(TransportError::TooLarge {
            header,
            size: header.message_size,
            max: MAX_MESSAGE_SIZE,
        });
    }
    let mut body = vec![0u8; size - HEADER_SIZE];
    recv_exact(sock, &mut body, &mut fds, false)?;
    Ok(Message { header, body, fds })
}

/// Sends one message made of a header and body parts; `header.message_size` is filled in.
pub fn send_message(
    mut sock: &UnixStream,
    mut header: Header,
    parts: &[&[u8]],
) -> std::io::Result<()> {
    let size = HEADER_SIZE + parts.iter().map(|p| p.len()).sum::<usize>();
    header.message_size = u32::try_from(size)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "message too large"))?;
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(header.as_bytes());
    parts.iter().for_each(|p| out.extend_from_slice(p));
    sock.write_all(&out)
}
