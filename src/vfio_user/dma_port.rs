//! Server-initiated DMA_READ / DMA_WRITE: how a device reaches guest memory that came without an
//! fd. Spec "VFIO_USER_DMA_READ/WRITE": u64 address, u64 count, data at byte 32 of the message.

use std::collections::HashMap;
use std::os::unix::net::UnixStream;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::ThreadId;
use std::time::Duration;

use log::{debug, trace, warn};
use zerocopy::{FromBytes, IntoBytes};

use super::protocol::{header_flags, Command, DmaAccess, Header, MAX_DATA_XFER};
use super::transport::{send_message, Message};

/// How long a DMA request may take before we give up on the client.
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// Posted writes whose replies may be outstanding at once; past that a write waits for its
/// reply (and, as the client answers in order, for theirs), so a client that stops answering
/// holds at most this many entries.
const MAX_POSTED: usize = 32;

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

/// Who takes the reply to a request.
enum Waiter {
    /// A thread blocked in [`DmaPort::request`].
    Thread(Sender<Message>),
    /// Nobody: a posted write ([`DmaPort::post_write`]); the reply is only checked.
    Posted {
        /// Where it wrote.
        address: u64,
    },
}

#[derive(Default)]
struct Pending {
    next_id: u16,
    waiters: HashMap<u16, Waiter>,
    /// How many of `waiters` are posted writes.
    posted: usize,
    /// A posted write was refused before (logged once at warn level).
    posted_refused: bool,
    closed: bool,
}

impl Pending {
    /// Registers a posted write at `address` and returns its message ID.
    fn insert_posted(&mut self, address: u64) -> u16 {
        let id = free_id(self);
        self.waiters.insert(id, Waiter::Posted { address });
        self.posted += 1;
        id
    }

    /// Takes the waiter of `msg_id` off the table, keeping the posted count in step (the one
    /// place it goes down, besides [`DmaPort::close`] clearing the table).
    fn remove(&mut self, msg_id: u16) -> Option<Waiter> {
        let waiter = self.waiters.remove(&msg_id);
        if let Some(Waiter::Posted { .. }) = waiter {
            self.posted -= 1;
        }
        waiter
    }
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

    /// Writes a small `data` (at most one chunk) to guest memory at `address` without waiting
    /// for the client's reply: an interrupt message, whose sender has nothing to wait for and
    /// must not be held up by a client that answers late (QEMU answers from its main loop,
    /// sometimes after the guest already reacted to the write). A refusal is logged when its
    /// reply arrives. Past `MAX_POSTED` unanswered writes this waits as [`DmaPort::write`].
    pub fn post_write(&self, address: u64, data: &[u8]) -> Result<(), DmaPortError> {
        if data.len() > self.inner.max_xfer {
            return self.write(address, data);
        }
        self.check_thread()?;
        let msg_id = {
            let mut pending = self.inner.pending.lock().unwrap_or_else(|e| e.into_inner());
            if pending.closed {
                return Err(DmaPortError::Closed);
            }
            if pending.posted >= MAX_POSTED {
                drop(pending);
                return self.write(address, data);
            }
            pending.insert_posted(address)
        };
        debug!("DMA_WRITE 0x{address:x}+0x{:x} (posted)", data.len());
        self.send(msg_id, Command::DmaWrite, address, data.len(), data)
    }

    /// Hands a reply to the request waiting for it. Returns false for a reply to nothing.
    pub fn complete(&self, reply: Message) -> bool {
        let mut pending = self.inner.pending.lock().unwrap_or_else(|e| e.into_inner());
        match pending.remove(reply.header.msg_id) {
            Some(Waiter::Thread(tx)) => {
                drop(pending);
                // The waiter may have timed out and gone; that is not the client's fault.
                let _ = tx.send(reply);
                true
            }
            Some(Waiter::Posted { address }) => {
                let result = check_reply(&reply, address, 0).map(|_| ());
                let first_refusal =
                    result.is_err() && !std::mem::replace(&mut pending.posted_refused, true);
                // Logged unlocked: senders of posted writes take the same lock.
                drop(pending);
                match result {
                    Ok(()) => trace!("DMA_WRITE 0x{address:x} (posted) acknowledged"),
                    Err(e) if first_refusal => {
                        warn!("posted DMA_WRITE: {e} (further refusals at debug level)")
                    }
                    Err(e) => debug!("posted DMA_WRITE: {e}"),
                }
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
        pending.posted = 0;
        drop(pending);
        self.writer().take();
    }

    fn writer(&self) -> std::sync::MutexGuard<'_, Option<Arc<Mutex<UnixStream>>>> {
        self.inner.writer.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Refuses a request from a thread that reads this connection's replies: it would wait
    /// for a reply only it can read.
    fn check_thread(&self) -> Result<(), DmaPortError> {
        if std::thread::current().id() == self.inner.reader || on_reader_thread() {
            return Err(DmaPortError::WouldDeadlock);
        }
        Ok(())
    }

    fn register(&self) -> Result<(u16, Receiver<Message>), DmaPortError> {
        let mut pending = self.inner.pending.lock().unwrap_or_else(|e| e.into_inner());
        if pending.closed {
            return Err(DmaPortError::Closed);
        }
        let id = free_id(&mut pending);
        let (tx, rx) = mpsc::channel();
        pending.waiters.insert(id, Waiter::Thread(tx));
        Ok((id, rx))
    }

    fn request(
        &self,
        command: Command,
        address: u64,
        count: usize,
        data: &[u8],
    ) -> Result<Message, DmaPortError> {
        self.check_thread()?;
        let (msg_id, rx) = self.register()?;
        debug!(
            "{} 0x{address:x}+0x{count:x}",
            if command == Command::DmaRead {
                "DMA_READ"
            } else {
                "DMA_WRITE"
            }
        );
        self.send(msg_id, command, address, count, data)?;
        match rx.recv_timeout(REPLY_TIMEOUT) {
            Ok(reply) => Ok(reply),
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(DmaPortError::Closed),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                self.forget(msg_id);
                Err(DmaPortError::Timeout(REPLY_TIMEOUT))
            }
        }
    }

    /// Sends request `msg_id`, registered already; on failure it is forgotten.
    fn send(
        &self,
        msg_id: u16,
        command: Command,
        address: u64,
        count: usize,
        data: &[u8],
    ) -> Result<(), DmaPortError> {
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
        Ok(())
    }

    /// Stops waiting for the reply to `msg_id`.
    fn forget(&self, msg_id: u16) {
        self.inner
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(msg_id);
    }
}

/// The next message ID no outstanding request uses (at most `MAX_POSTED` + one per waiting
/// thread are in use, far fewer than the 65536 IDs).
fn free_id(pending: &mut Pending) -> u16 {
    loop {
        let id = pending.next_id;
        pending.next_id = id.wrapping_add(1);
        if !pending.waiters.contains_key(&id) {
            return id;
        }
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

    /// The client's reply to request `msg_id` (a DMA_WRITE at `address`), or its refusal.
    fn reply(msg_id: u16, address: u64, errno: Option<u32>) -> Message {
        let access = DmaAccess { address, count: 4 };
        Message {
            header: Header {
                msg_id,
                command: Command::DmaWrite as u16,
                flags: header_flags::TYPE_REPLY | errno.map_or(0, |_| header_flags::ERROR),
                error: errno.unwrap_or(0),
                ..Default::default()
            },
            body: access.as_bytes().to_vec(),
            fds: vec![],
        }
    }

    fn posted(port: &DmaPort) -> usize {
        port.inner.pending.lock().unwrap().posted
    }

    #[test]
    fn test_post_write_sends_at_once_and_its_reply_is_taken_later() {
        let other = std::thread::spawn(|| ()).thread().id();
        let (port, peer) = port(other);
        port.post_write(0xfee0_0000, &0x21u32.to_le_bytes())
            .unwrap();
        let msg = crate::vfio_user::transport::recv_message(&peer).unwrap();
        assert_eq!(msg.header.command, Command::DmaWrite as u16);
        let (access, data) = DmaAccess::read_from_prefix(&msg.body).unwrap();
        assert_eq!((access.address, access.count), (0xfee0_0000, 4));
        assert_eq!(&data[..4], &0x21u32.to_le_bytes());
        assert_eq!(posted(&port), 1);
        assert!(port.complete(reply(msg.header.msg_id, 0xfee0_0000, None)));
        assert_eq!(posted(&port), 0, "the reply released its entry");
    }

    #[test]
    fn test_post_write_refused_later_is_taken_and_released() {
        let other = std::thread::spawn(|| ()).thread().id();
        let (port, peer) = port(other);
        port.post_write(0x1000, &[1, 2, 3, 4]).unwrap();
        let msg = crate::vfio_user::transport::recv_message(&peer).unwrap();
        assert!(port.complete(reply(msg.header.msg_id, 0x1000, Some(14))));
        assert_eq!(posted(&port), 0);
    }

    #[test]
    fn test_post_write_past_the_limit_waits_for_its_reply() {
        let other = std::thread::spawn(|| ()).thread().id();
        let (port, peer) = port(other);
        for _ in 0..MAX_POSTED {
            port.post_write(0x1000, &[1]).unwrap();
        }
        let writer = {
            let port = port.clone();
            std::thread::spawn(move || port.post_write(0x2000, &[2]))
        };
        let mut last = None;
        for _ in 0..=MAX_POSTED {
            last = Some(crate::vfio_user::transport::recv_message(&peer).unwrap());
        }
        let last = last.unwrap();
        assert!(!writer.is_finished(), "the write past the limit waits");
        assert_eq!(posted(&port), MAX_POSTED, "and holds no posted entry");
        assert!(port.complete(reply(last.header.msg_id, 0x2000, None)));
        writer.join().unwrap().unwrap();
    }

    #[test]
    fn test_post_write_from_reader_or_after_close_is_refused() {
        let (reader, _peer) = port(std::thread::current().id());
        assert!(matches!(
            reader.post_write(0, &[1]),
            Err(DmaPortError::WouldDeadlock)
        ));
        let other = std::thread::spawn(|| ()).thread().id();
        let (closed, _peer2) = port(other);
        closed.close();
        assert!(matches!(
            closed.post_write(0, &[1]),
            Err(DmaPortError::Closed)
        ));
        assert_eq!(posted(&closed), 0);
    }
}
