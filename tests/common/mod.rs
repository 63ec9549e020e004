//! A raw vfio-user client over a socketpair, for driving the server message by message.
#![allow(dead_code)]

pub mod accel;
pub mod guarded;
pub mod ram;
pub mod socket;
pub mod wire;

use std::io::{IoSlice, Write};
use std::mem::MaybeUninit;
use std::os::fd::BorrowedFd;
use std::os::unix::net::UnixStream;
use std::thread::JoinHandle;

use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
use zerocopy::IntoBytes;

use vsvm::devices::accel as accel_device;
use vsvm::vfio_user::protocol::{header_flags, Command, Header, VersionBody};
use vsvm::vfio_user::transport::{recv_message, Message, TransportError};
use vsvm::vfio_user::ServerOptions;

/// The client end, speaking raw messages.
pub struct RawClient {
    pub sock: UnixStream,
    next_id: u16,
}

/// Starts an accel function serving one connection on a socketpair.
pub fn spawn_accel() -> (RawClient, JoinHandle<Result<(), TransportError>>) {
    spawn_accel_with(ServerOptions::default())
}

/// Starts an accel function serving one connection on a socketpair, with `options`.
pub fn spawn_accel_with(
    options: ServerOptions,
) -> (RawClient, JoinHandle<Result<(), TransportError>>) {
    spawn_device(
        || accel_device::endpoint(accel_device::VENDOR_ID, accel_device::DEVICE_ID).unwrap(),
        options,
    )
}

/// Starts the device `make` builds (on the server thread) serving one connection on a
/// socketpair, with `options`.
pub fn spawn_device<D: vsvm::vfio_user::Device>(
    make: impl FnOnce() -> D + Send + 'static,
    options: ServerOptions,
) -> (RawClient, JoinHandle<Result<(), TransportError>>) {
    let (client, server) = UnixStream::pair().unwrap();
    let handle = std::thread::spawn(move || {
        let mut device = make();
        vsvm::vfio_user::serve_connection(server, &mut device, &options)
    });
    (
        RawClient {
            sock: client,
            next_id: 0,
        },
        handle,
    )
}

/// Header of a request.
pub fn request(msg_id: u16, command: u16, flags: u32) -> Header {
    Header {
        msg_id,
        command,
        message_size: 0,
        flags,
        error: 0,
    }
}

impl RawClient {
    /// A client speaking on `sock`.
    pub fn new(sock: UnixStream) -> Self {
        RawClient { sock, next_id: 0 }
    }

    /// Sends raw bytes as they are.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.sock.write_all(bytes).unwrap();
    }

    /// Sends a request with a correct size field; returns its id.
    pub fn send(&mut self, command: u16, flags: u32, body: &[u8], fds: &[BorrowedFd]) -> u16 {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        let mut header = request(id, command, flags);
        header.message_size = (16 + body.len()) as u32;
        let mut bytes = header.as_bytes().to_vec();
        bytes.extend_from_slice(body);
        let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(32))];
        let mut ancillary = SendAncillaryBuffer::new(&mut space);
        if !fds.is_empty() {
            assert!(ancillary.push(SendAncillaryMessage::ScmRights(fds)));
        }
        rustix::net::sendmsg(
            &self.sock,
            &[IoSlice::new(&bytes)],
            &mut ancillary,
            SendFlags::empty(),
        )
        .unwrap();
        id
    }

    /// Receives one message.
    pub fn recv(&mut self) -> Message {
        recv_message(&self.sock).expect("a message from the server")
    }

    /// Sends a request and returns the reply, checking it answers this request.
    pub fn call(&mut self, command: Command, body: &[u8]) -> Message {
        self.call_fds(command, body, &[])
    }

    /// Like `call`, with fds.
    pub fn call_fds(&mut self, command: Command, body: &[u8], fds: &[BorrowedFd]) -> Message {
        let id = self.send(command as u16, header_flags::TYPE_REQUEST, body, fds);
        let reply = self.recv();
        assert_eq!(reply.header.msg_id, id);
        assert_eq!(
            reply.header.flags & header_flags::TYPE_MASK,
            header_flags::TYPE_REPLY
        );
        reply
    }

    /// VERSION handshake as QEMU does it.
    pub fn negotiate(&mut self) -> Message {
        let mut body = VersionBody { major: 0, minor: 0 }.as_bytes().to_vec();
        body.extend_from_slice(
            br#"{"capabilities":{"max_msg_fds":16,"max_data_xfer_size":1048576}}"#,
        );
        body.push(0);
        let reply = self.call(Command::Version, &body);
        assert!(!reply.header.is_error(), "VERSION refused");
        reply
    }
}

/// The errno of an error reply (panics on success).
pub fn errno(reply: &Message) -> i32 {
    assert!(
        reply.header.is_error(),
        "expected an error reply, got success"
    );
    reply.header.error as i32
}
