//! Server-initiated DMA_READ / DMA_WRITE: how a device reaches guest memory that came without an
//! fd. Spec "VFIO_USER_DMA_READ/WRITE": u64 address, u64 count, data at byte 32 of the message.

use std::collections::HashMap;
use std::os::unix::net::UnixStream;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::ThreadId;
use std::time::Duration;

use log::debug;
use zerocopy::{FromBytes, IntoBytes};

use super::protocol::{header_flags, Command, DmaAccess, Header, MAX_DATA_XFER};
use super::transport::{send_message, Message};

/// How long a DMA request may take before we give up on the client.
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// Largest DMA_READ/DMA_WRITE we send. QEMU 11.1 sends a reply with one non-blocking write and
/// treats a partial write as complete (hw/vfio-user/proxy.c `vfio_user_send_qio`), so a
/// DMA_READ reply larger than its socket send buffer (~208 KiB by default) is cut short and the
/// stream is lost. Chunks well below that keep every reply whole.
pub const DMA_CHUNK: usize = 64 << 10;

/// Why a DMA request failed.
#[derive(Debug, thiserror::Error)]
pub enum DmaPortError {
    /// The client answered with an error.
    #[error("client refused the DMA request at 0x{address:x} with errno {errno}")]
    Refused {
        /// Guest address of the failed chunk.
        address: u64,
        /// The client's errno.
        errno: u32,
    },
    /// The client answered with a reply of the wrong shape.
    #[error("malformed DMA reply at 0x{address:x}")]
    BadReply {
        /// Guest address of the failed chunk.
        address: u64,
    },
    /// The connection is gone.
    #[error("client disconnected")]
    Closed,
    /// The client did not answer in time.
    #[error("client did not answer a DMA request within {0:?}")]
    Timeout(Duration),
    /// Called on a connection's reader thread — its own, which would wait on itself, or any
    /// other's: QEMU holds its big lock while it waits for that reader's reply and serves our
    /// DMA requests under the same lock. Refused instead of deadlocking.
    #[error("DMA request issued from a connection's reader thread")]
    WouldDeadlock,
    /// Sending failed.
    #[error("socket error")]
    Io(#[source] std::io::Error),
}

thread_local! {
    /// Whether this thread reads a connection (and answers its requests).
    static READER: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Marks the calling thread as a connection reader for as long as the guard lives: no DMA
/// request may be sent from it, on any connection.
pub fn reader_thread() -> ReaderThread {
    READER.with(|r| r.set(true));
    ReaderThread(())
}

/// While it lives, the thread is a reader (see [`reader_thread`]).
#[derive(Debug)]
pub struct ReaderThread(());

impl Drop for ReaderThread {
    fn drop(&mut self) {
        READER.with(|r| r.set(false));
    }
}

/// Whether the calling thread is a connection reader.
pub fn on_reader_thread() -> bool {
    READER.with(|r| r.get())
}

#[derive(Default)]
struct Pending {
    next_id: u16,
    waiters: HashMap<u16, Sender<Message>>,
    closed: bool,
}

struct Inner {
    /// The connection's socket; taken away by [`DmaPort::close`], so that a clone of the port
    /// that outlives the connection does not keep the client's socket open.
    writer: Mutex<Option<Arc<Mutex<UnixStream>>>>,
    pending: Mutex<Pending>,
    reader: ThreadId,
    max_xfer: usize,
}

/// A handle for sending DMA requests to one connected client; cheap to clone.
#[derive(Clone)]
pub struct DmaPort {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for DmaPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DmaPort")
            .field("max_xfer", &self.inner.max_xfer)
            .finish()
    }
}

impl DmaPort {
    /// A port writing through `writer`, whose replies are read on thread `reader`.
    pub fn new(writer: Arc<Mutex<UnixStream>>, reader: ThreadId, max_xfer: usize) -> Self {
        let max_xfer = max_xfer.clamp(1, MAX_DATA_XFER.min(DMA_CHUNK));
        let pending = Mutex::new(Pending::default());
        DmaPort {
            inner: Arc::new(Inner {
                writer: Mutex::new(Some(writer)),
                pending,
                reader,
                max_xfer,
            }),
        }
    }

    /// Reads guest memory at `address` into `buf`.
    pub fn read(&self, address: u64, buf: &mut [u8]) -> Result<(), DmaPortError> {
        for (i, chunk) in buf.chunks_mut(self.inner.max_xfer).enumerate() {
            let at = address.wrapping_add((i * self.inner.max_xfer) as u64);
            let reply = self.request(Command::DmaRead, at, chunk.len(), &[])?;
            let data = check_reply(&reply, at, chunk.len())?;
            chunk.copy_from_slice(&data[..chunk.len()]);
        }
        Ok(())
    }

    /// Writes `data` to guest memory at `address`.
    pub fn write(&self, address: u64, data: &[u8]) -> Result<(), DmaPortError> {
        for (i, chunk) in data.chunks(self.inner.max_xfer).enumerate() {
            let at = address.wrapping_add((i * self.inner.max_xfer) as u64);
            let reply = self.request(Command::DmaWrite, at, chunk.len(), chunk)?;
            check_reply(&reply, at, 0)?;
        }
        Ok(())
    }

    /// Hands a reply to the request waiting for it. Returns false for a reply to nothing.
    pub fn complete(&self, reply: Message) -> bool {
        let waiter = self
            .inner
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .waiters
            .remove(&reply.header.msg_id);
        match waiter {
            Some(tx) => {
                // The waiter may have timed out and gone; that is not the client's fault.
                let _ = tx.send(reply);
                true
            }
            None => false,
        }
    }

    /// Fails every outstanding and future request and lets go of the socket (the client is
    /// gone).
    pub fn close(&self) {
        let mut pending = self.inner.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending.closed = true;
        pending.waiters.clear();
        drop(pending);
        self.writer().take();
    }

    fn writer(&self) -> std::sync::MutexGuard<'_, Option<Arc<Mutex<UnixStream>>>> {
        self.inner.writer.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn register(&self) -> Result<(u16, Receiver<Message>), DmaPortError> {
        let mut pending = self.inner.pending.lock().unwrap_or_else(|e| e.into_inner());
        if pending.closed {
            return Err(DmaPortError::Closed);
        }
        let id = pending.next_id;
        pending.next_id = id.wrapping_add(1);
        let (tx, rx) = mpsc::channel();
        pending.waiters.insert(id, tx);
        Ok((id, rx))
    }

    fn request(
        &self,
        command: Command,
        address: u64,
        count: usize,
        data: &[u8],
    ) -> Result<Message, DmaPortError> {
        if std::thread::current().id() == self.inner.reader || on_reader_thread() {
            return Err(DmaPortError::WouldDeadlock);
        }
        let (msg_id, rx) = self.register()?;
        debug!(
            "{} 0x{address:x}+0x{count:x}",
            if command == Command::DmaRead {
                "DMA_READ"
            } else {
                "DMA_WRITE"
            }
        );
        let header = Header {
            msg_id,
            command: command as u16,
            flags: header_flags::TYPE_REQUEST,
            ..Default::default()
        };
        let access = DmaAccess {
            address,
            count: count as u64,
        };
        let Some(writer) = self.writer().clone() else {
            self.forget(msg_id);
            return Err(DmaPortError::Closed);
        };
        let sent = send_message(
            &writer.lock().unwrap_or_else(|e| e.into_inner()),
            header,
            &[access.as_bytes(), data],
        );
        if let Err(e) = sent {
            self.forget(msg_id);
            // Part of the message may have gone out: the stream is no longer framed. Hang
            // up, so that the connection ends instead of reading garbage.
            let stream = writer.lock().unwrap_or_else(|e| e.into_inner());
            let _ = stream.shutdown(std::net::Shutdown::Both);
            return Err(DmaPortError::Io(e));
        }
        match rx.recv_timeout(REPLY_TIMEOUT) {
            Ok(reply) => Ok(reply),
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(DmaPortError::Closed),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                self.forget(msg_id);
                Err(DmaPortError::Timeout(REPLY_TIMEOUT))
            }
        }
    }

    /// Stops waiting for the reply to `msg_id`.
    fn forget(&self, msg_id: u16) {
        self.inner
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .waiters
            .remove(&msg_id);
    }
}

/// Checks a DMA reply and returns the data that follows its fixed part.
fn check_reply(reply: &Message, address: u64, want: usize) -> Result<&[u8], DmaPortError> {
    if reply.header.is_error() {
        return Err(DmaPortError::Refused {
            address,
            errno: reply.header.error,
        });
    }
    let Ok((access, data)) = DmaAccess::read_from_prefix(&reply.body) else {
        return Err(DmaPortError::BadReply { address });
    };
    if access.address != address || data.len() < want {
        return Err(DmaPortError::BadReply { address });
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(reader: ThreadId) -> (DmaPort, UnixStream) {
        let (ours, theirs) = UnixStream::pair().unwrap();
        (
            DmaPort::new(Arc::new(Mutex::new(ours)), reader, 1 << 20),
            theirs,
        )
    }

    #[test]
    fn test_request_from_reader_thread_is_refused() {
        let (port, _peer) = port(std::thread::current().id());
        let err = port.read(0x1000, &mut [0; 8]).unwrap_err();
        assert!(matches!(err, DmaPortError::WouldDeadlock));
    }

    #[test]
    fn test_request_from_another_connections_reader_is_refused() {
        let other = std::thread::spawn(|| ()).thread().id();
        let (port, _peer) = port(other);
        let guard = reader_thread();
        let err = port.write(0x1000, &[1]).unwrap_err();
        assert!(matches!(err, DmaPortError::WouldDeadlock));
        drop(guard);
        assert!(!on_reader_thread(), "the mark ends with the guard");
    }

    #[test]
    fn test_closed_port_fails_at_once() {
        let other = std::thread::spawn(|| ()).thread().id();
        let (port, _peer) = port(other);
        port.close();
        assert!(matches!(
            port.write(0, &[1]).unwrap_err(),
            DmaPortError::Closed
        ));
    }

    #[test]
    fn test_close_lets_go_of_the_socket() {
        let other = std::thread::spawn(|| ()).thread().id();
        let (ours, _peer) = UnixStream::pair().unwrap();
        let writer = Arc::new(Mutex::new(ours));
        let port = DmaPort::new(writer.clone(), other, 1 << 20);
        let clone = port.clone();
        assert_eq!(Arc::strong_count(&writer), 2);
        port.close();
        assert_eq!(Arc::strong_count(&writer), 1, "the clone holds no socket");
        assert!(matches!(clone.read(0, &mut [0]), Err(DmaPortError::Closed)));
    }

    #[test]
    fn test_reply_to_unknown_id_is_not_taken() {
        let other = std::thread::spawn(|| ()).thread().id();
        let (port, _peer) = port(other);
        let stray = Message {
            header: Header {
                msg_id: 42,
                ..Default::default()
            },
            body: vec![],
            fds: vec![],
        };
        assert!(!port.complete(stray));
    }
}
