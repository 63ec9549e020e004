//! The listening socket and the per-connection loop: requests go to the device, replies to our
//! own DMA requests go to the [`DmaPort`]. One socket serves one PCI function, one client at a time.

use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::{Arc, Mutex};

use log::{debug, info, warn};

use super::cpu_latency::{CpuLatency, LatencyHold};
use super::device::{Device, DmaLimits};
use super::dispatch::{handle, Session};
use super::dma_port::DmaPort;
use super::poll::{spin_until_readable, PollWindow};
use super::protocol::{header_flags, Header, MessageType};
use super::transport::{recv_message, send_message, TransportError};

/// How long a send to the client may wait for room in its socket before we give up on it.
const SEND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Binds a listening socket at `path`, replacing a stale socket file left by a previous run.
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        use std::os::unix::fs::FileTypeExt;
        if meta.file_type().is_socket() {
            std::fs::remove_file(path)?;
        }
    }
    UnixListener::bind(path)
}

/// How a server runs.
#[derive(Clone, Debug, Default)]
pub struct ServerOptions {
    /// Spin this long after each message before sleeping (see [`PollWindow`]).
    pub poll: PollWindow,
    /// Held while inside the poll window, so QEMU's own threads wake up fast too (see
    /// [`CpuLatency`]).
    pub cpu_latency: CpuLatency,
    /// What a client may make us hold through DMA_MAP; `max_maps` is advertised.
    pub dma: DmaLimits,
}

/// Serves clients on `listener` one after another, forever. A client that leaves, or breaks the
/// protocol, is disconnected and the next one is accepted.
pub fn serve(
    listener: &UnixListener,
    device: &mut dyn Device,
    options: &ServerOptions,
) -> std::io::Result<()> {
    loop {
        let (stream, _) = listener.accept()?;
        info!("client connected");
        match serve_connection(stream, device, options) {
            Ok(()) | Err(TransportError::Closed) => info!("client disconnected"),
            Err(e) => warn!("client dropped: {e}"),
        }
    }
}

/// Serves one connection until the client closes it or breaks framing. When it returns, the
/// device has let go of everything the client gave it (see [`Device::disconnected`]).
pub fn serve_connection(
    stream: UnixStream,
    device: &mut dyn Device,
    options: &ServerOptions,
) -> Result<(), TransportError> {
    let _reader = super::dma_port::reader_thread();
    // A client that stops reading must not hold a reply, or a device thread's DMA request,
    // in a blocking send forever (the option is the socket's: the clone shares it).
    stream
        .set_write_timeout(Some(SEND_TIMEOUT))
        .map_err(TransportError::Io)?;
    let writer = Arc::new(Mutex::new(stream.try_clone().map_err(TransportError::Io)?));
    let mut session = Session {
        max_dma_maps: options.dma.max_maps,
        ..Session::default()
    };
    let mut port: Option<DmaPort> = None;
    let result = connection_loop(&stream, &writer, device, &mut session, &mut port, options);
    if let Some(port) = port {
        port.close();
    }
    device.disconnected();
    result
}

fn connection_loop(
    stream: &UnixStream,
    writer: &Arc<Mutex<UnixStream>>,
    device: &mut dyn Device,
    session: &mut Session,
    port: &mut Option<DmaPort>,
    options: &ServerOptions,
) -> Result<(), TransportError> {
    let mut last_activity = std::time::Instant::now();
    let mut active: Option<LatencyHold> = None;
    loop {
        if !spin_until_readable(stream, options.poll, last_activity) {
            // The window has passed: let idle CPUs halt again before we sleep ourselves.
            active = None;
        }
        let received = recv_message(stream);
        last_activity = std::time::Instant::now();
        if active.is_none() && options.poll != PollWindow::OFF {
            active = Some(options.cpu_latency.hold());
        }
        let msg = match received {
            Ok(msg) => msg,
            Err(e @ TransportError::TooLarge { header, .. }) => {
                // The body is not read: framing is lost, so say why and hang up.
                let _ = send_reply(writer, &header, Err(rustix::io::Errno::TOOBIG));
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        let header = msg.header;
        match header.message_type() {
            Some(MessageType::Reply) => {
                let answered = port.as_ref().is_some_and(|p| p.complete(msg));
                if !answered {
                    warn!("reply id {} to no request of ours", header.msg_id);
                    return Err(TransportError::Io(std::io::ErrorKind::InvalidData.into()));
                }
            }
            Some(MessageType::Request) => {
                let was_negotiated = session.negotiated;
                let outcome = handle(msg, device, session);
                if let Err(e) = &outcome {
                    debug!("command {} failed: {e}", header.command);
                }
                if !header.no_reply() {
                    send_reply(writer, &header, outcome).map_err(TransportError::Io)?;
                }
                if session.negotiated && !was_negotiated {
                    let p = DmaPort::new(
                        writer.clone(),
                        std::thread::current().id(),
                        session.client_max_xfer,
                    );
                    device.connected(p.clone(), options.dma);
                    *port = Some(p);
                }
            }
            None => {
                if !header.no_reply() {
                    send_reply(writer, &header, Err(rustix::io::Errno::INVAL))
                        .map_err(TransportError::Io)?;
                }
            }
        }
    }
}

fn send_reply(
    writer: &Mutex<UnixStream>,
    request: &Header,
    outcome: Result<Vec<u8>, rustix::io::Errno>,
) -> std::io::Result<()> {
    let mut header = Header {
        msg_id: request.msg_id,
        command: request.command,
        flags: header_flags::TYPE_REPLY,
        ..Default::default()
    };
    let body = match outcome {
        Ok(body) => body,
        Err(errno) => {
            header.flags |= header_flags::ERROR;
            header.error = errno.raw_os_error() as u32;
            Vec::new()
        }
    };
    send_message(
        &writer.lock().unwrap_or_else(|e| e.into_inner()),
        header,
        &[&body],
    )
}
