//! Arbitrary byte streams and arbitrary well-framed messages never panic the server, and the
//! connection always ends once the client hangs up.

mod common;

use std::io::{Read, Write};
use std::net::Shutdown;
use std::sync::mpsc;
use std::time::Duration;

use proptest::prelude::*;
use vsvm::vfio_user::protocol::{Header, VersionBody};
use zerocopy::IntoBytes;

/// Feeds `bytes` to a fresh server connection, hangs up, and checks it finishes in time.
fn survive(bytes: Vec<u8>) {
    let (client, server) = common::spawn_accel();
    let mut sock = client.sock;
    let mut reader = sock.try_clone().unwrap();
    let drain = std::thread::spawn(move || {
        let mut sink = Vec::new();
        let _ = reader.read_to_end(&mut sink);
    });
    let _ = sock.write_all(&bytes);
    let _ = sock.shutdown(Shutdown::Write);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || tx.send(server.join().is_ok()));
    let finished = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("server connection hung");
    assert!(finished, "server thread panicked");
    drop(sock);
    drain.join().unwrap();
}

fn version() -> Vec<u8> {
    let mut body = VersionBody::default().as_bytes().to_vec();
    body.extend_from_slice(b"{\"capabilities\":{}}\0");
    frame(0, 1, 0, &body)
}

fn frame(id: u16, command: u16, flags: u32, body: &[u8]) -> Vec<u8> {
    let header = Header {
        msg_id: id,
        command,
        message_size: 16 + body.len() as u32,
        flags,
        error: 0,
    };
    let mut out = header.as_bytes().to_vec();
    out.extend_from_slice(body);
    out
}

fn message() -> impl Strategy<Value = Vec<u8>> {
    (
        any::<u16>(),
        0u16..18,
        prop_oneof![Just(0u32), Just(0x10), any::<u32>()],
        proptest::collection::vec(any::<u8>(), 0..80),
    )
        .prop_map(|(id, command, flags, body)| frame(id, command, flags, &body))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn test_random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        survive(bytes);
    }

    #[test]
    fn test_random_framed_messages_after_version_never_panic(msgs in proptest::collection::vec(message(), 1..24)) {
        let mut bytes = version();
        msgs.iter().for_each(|m| bytes.extend_from_slice(m));
        survive(bytes);
    }
}
