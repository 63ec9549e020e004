//! An accel server in this process on a real UNIX socket, raw clients for it, and what a test
//! measures of the process that runs it: open fds, mappings of a named memfd, resident memory.

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use vsvm::devices::accel;
use vsvm::vfio_user::ServerOptions;

use super::RawClient;

/// How long a client waits for any message before it calls the server hung.
pub const HANG: Duration = Duration::from_secs(10);

static NEXT_SOCKET: AtomicUsize = AtomicUsize::new(0);

/// Serves an accel function at a fresh socket path from a thread of this process, one client
/// after the other (the thread ends with the test process). The function and its engine
/// threads exist when this returns, so fd and mapping counts taken afterwards include them.
pub fn start_accel_server(options: ServerOptions) -> PathBuf {
    let n = NEXT_SOCKET.fetch_add(1, Ordering::Relaxed);
    let name = format!("vsvm-hostile-{}-{n}.sock", std::process::id());
    let path = std::env::temp_dir().join(name);
    let listener = vsvm::vfio_user::bind(&path).unwrap();
    let mut device = accel::endpoint(accel::VENDOR_ID, accel::DEVICE_ID).unwrap();
    std::thread::spawn(move || vsvm::vfio_user::serve(&listener, &mut device, &options));
    path
}

/// A raw client on `path` whose reads and writes fail after [`HANG`] instead of hanging.
pub fn connect(path: &Path) -> RawClient {
    let sock = UnixStream::connect(path).unwrap();
    sock.set_read_timeout(Some(HANG)).unwrap();
    sock.set_write_timeout(Some(HANG)).unwrap();
    RawClient::new(sock)
}

/// Leaves like a client that closes its socket, and returns once the server has let go of
/// the connection: the server's ends of the socket close only after its disconnect handling
/// ran, so the end of the stream marks it (pending messages are read and dropped).
pub fn hang_up(client: RawClient) {
    use std::io::Read;
    let mut sock = client.sock;
    sock.shutdown(std::net::Shutdown::Write).unwrap();
    let mut buf = [0u8; 4096];
    while sock.read(&mut buf).expect("the server closes its end") != 0 {}
}

/// Open fds of this process.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// Mappings in this process of memfds named `name` (they show as `/memfd:NAME (deleted)`).
pub fn memfd_mappings(name: &str) -> usize {
    let needle = format!("/memfd:{name} ");
    std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .filter(|l| l.contains(&needle))
        .count()
}

/// All mappings of this process.
pub fn mappings() -> usize {
    std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .count()
}

/// A `/proc/self/status` field in KiB (`VmRSS`, `RssShmem`, ...).
pub fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with(&format!("{field}:")))
        .unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}
