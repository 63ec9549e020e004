//! Every malformed message class gets an error reply or a clean disconnect, never a panic.

mod common;

use common::{errno, request, spawn_accel};
use std::os::fd::AsFd;
use vsvm::vfio_user::protocol::{header_flags, Command, RegionAccess};
use vsvm::vfio_user::transport::TransportError;
use zerocopy::IntoBytes;

const EINVAL: i32 = 22;
const ENOSYS: i32 = 38;
const E2BIG: i32 = 7;
const ENOTSUP: i32 = 95;

#[test]
fn test_version_reply_is_0_0_with_nul_terminated_capabilities() {
    let (mut c, _server) = spawn_accel();
    let reply = c.negotiate();
    assert_eq!(&reply.body[..4], &[0, 0, 0, 0]);
    let json = reply.body[4..]
        .strip_suffix(&[0])
        .expect("NUL at the very end");
    let v: serde_json::Value = serde_json::from_slice(json).unwrap();
    assert_eq!(v["capabilities"]["max_data_xfer_size"], 1 << 20);
    assert_eq!(v["capabilities"]["max_msg_fds"], 16);
    assert!(v["capabilities"].get("write_multiple").is_none());
}

#[test]
fn test_version_minor_1_is_accepted_and_major_1_refused() {
    let (mut c, _server) = spawn_accel();
    let reply = c.call(Command::Version, &[1, 0, 0, 0]);
    assert_eq!(errno(&reply), ENOTSUP);
    let reply = c.call(Command::Version, &[0, 0, 1, 0]);
    assert!(!reply.header.is_error());
}

#[test]
fn test_version_with_bad_json_is_einval() {
    let (mut c, _server) = spawn_accel();
    assert_eq!(
        errno(&c.call(Command::Version, b"\0\0\0\0{not json\0")),
        EINVAL
    );
    assert_eq!(errno(&c.call(Command::Version, b"\0\0\0\0{}")), EINVAL); // no NUL
    assert_eq!(errno(&c.call(Command::Version, b"\0\0")), EINVAL); // short
}

#[test]
fn test_command_before_version_is_einval() {
    let (mut c, _server) = spawn_accel();
    assert_eq!(
        errno(&c.call(
            Command::DeviceGetInfo,
            &[16, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
        )),
        EINVAL
    );
}

#[test]
fn test_unknown_command_is_enosys() {
    let (mut c, _server) = spawn_accel();
    c.negotiate();
    let id = c.send(99, header_flags::TYPE_REQUEST, &[], &[]);
    let reply = c.recv();
    assert_eq!(reply.header.msg_id, id);
    assert_eq!(errno(&reply), ENOSYS);
}

#[test]
fn test_unsupported_commands_are_refused_and_server_keeps_serving() {
    let (mut c, _server) = spawn_accel();
    c.negotiate();
    assert_eq!(errno(&c.call(Command::DirtyPages, &[0; 8])), ENOTSUP);
    assert_eq!(errno(&c.call(Command::DmaRead, &[0; 16])), EINVAL);
    assert_eq!(errno(&c.call(Command::RegionWriteMulti, &[0; 8])), ENOTSUP);
    let ok = c.call(
        Command::DeviceGetInfo,
        &[16, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
    );
    assert!(!ok.header.is_error());
}

#[test]
fn test_short_bodies_are_einval() {
    let (mut c, _server) = spawn_accel();
    c.negotiate();
    for cmd in [
        Command::DmaMap,
        Command::DmaUnmap,
        Command::DeviceGetInfo,
        Command::DeviceGetRegionInfo,
        Command::DeviceGetIrqInfo,
        Command::DeviceSetIrqs,
        Command::RegionRead,
        Command::RegionWrite,
    ] {
        assert_eq!(errno(&c.call(cmd, &[8, 0, 0])), EINVAL, "{cmd:?}");
    }
}

#[test]
fn test_region_write_whose_count_lies_is_einval() {
    let (mut c, _server) = spawn_accel();
    c.negotiate();
    let mut body = RegionAccess {
        offset: 0,
        region: 0,
        count: 8,
    }
    .as_bytes()
    .to_vec();
    body.extend_from_slice(&[1, 2, 3, 4]);
    assert_eq!(errno(&c.call(Command::RegionWrite, &body)), EINVAL);
}

#[test]
fn test_region_read_above_max_transfer_is_einval() {
    let (mut c, _server) = spawn_accel();
    c.negotiate();
    let body = RegionAccess {
        offset: 0,
        region: 7,
        count: (1 << 20) + 1,
    }
    .as_bytes()
    .to_vec();
    assert_eq!(errno(&c.call(Command::RegionRead, &body)), EINVAL);
}

#[test]
fn test_region_access_out_of_bounds_is_einval() {
    let (mut c, _server) = spawn_accel();
    c.negotiate();
    for (region, offset, count) in [
        (0, 4094, 4),
        (7, 4095, 2),
        (1, 0, 4),
        (9, 0, 4),
        (0, u64::MAX, 4),
    ] {
        let body = RegionAccess {
            offset,
            region,
            count,
        }
        .as_bytes()
        .to_vec();
        assert_eq!(
            errno(&c.call(Command::RegionRead, &body)),
            EINVAL,
            "region {region} +{offset:#x}"
        );
    }
}

#[test]
fn test_fds_on_a_command_that_takes_none_are_einval() {
    let (mut c, _server) = spawn_accel();
    c.negotiate();
    let file = std::fs::File::open("/dev/null").unwrap();
    let reply = c.call_fds(
        Command::DeviceGetInfo,
        &[16, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        &[file.as_fd()],
    );
    assert_eq!(errno(&reply), EINVAL);
}

#[test]
fn test_posted_write_gets_no_reply() {
    let (mut c, _server) = spawn_accel();
    c.negotiate();
    let mut body = RegionAccess {
        offset: 0x10,
        region: 0,
        count: 4,
    }
    .as_bytes()
    .to_vec();
    body.extend_from_slice(&0x1234u32.to_le_bytes());
    c.send(
        Command::RegionWrite as u16,
        header_flags::NO_REPLY,
        &body,
        &[],
    );
    // The next thing on the wire must be the reply to the read, which sees the posted write.
    let read = RegionAccess {
        offset: 0x10,
        region: 0,
        count: 4,
    }
    .as_bytes()
    .to_vec();
    let reply = c.call(Command::RegionRead, &read);
    assert_eq!(&reply.body[16..], &0x1234u32.to_le_bytes());
}

#[test]
fn test_size_below_header_disconnects() {
    let (mut c, server) = spawn_accel();
    let mut h = request(0, Command::Version as u16, 0);
    h.message_size = 8;
    c.send_raw(h.as_bytes());
    assert!(matches!(
        server.join().unwrap(),
        Err(TransportError::ShortSize { size: 8 })
    ));
}

#[test]
fn test_huge_size_gets_e2big_then_disconnects() {
    let (mut c, server) = spawn_accel();
    let mut h = request(7, Command::Version as u16, 0);
    h.message_size = u32::MAX;
    c.send_raw(h.as_bytes());
    let reply = c.recv();
    assert_eq!((reply.header.msg_id, errno(&reply)), (7, E2BIG));
    assert!(matches!(
        server.join().unwrap(),
        Err(TransportError::TooLarge { .. })
    ));
}

#[test]
fn test_truncated_message_disconnects_cleanly() {
    let (mut c, server) = spawn_accel();
    let mut h = request(0, Command::Version as u16, 0);
    h.message_size = 64;
    c.send_raw(h.as_bytes());
    c.send_raw(&[0; 10]);
    drop(c);
    assert!(matches!(
        server.join().unwrap(),
        Err(TransportError::Truncated { got: 10, want: 48 })
    ));
}

#[test]
fn test_reply_to_nothing_disconnects() {
    let (mut c, server) = spawn_accel();
    c.negotiate();
    c.send(
        Command::DmaRead as u16,
        header_flags::TYPE_REPLY,
        &[0; 16],
        &[],
    );
    assert!(server.join().unwrap().is_err());
}

#[test]
fn test_reserved_message_type_is_einval() {
    let (mut c, _server) = spawn_accel();
    let id = c.send(Command::Version as u16, 0x7, &[0, 0, 0, 0], &[]);
    let reply = c.recv();
    assert_eq!((reply.header.msg_id, errno(&reply)), (id, EINVAL));
}

#[test]
fn test_clean_close_ends_connection_without_error() {
    let (mut c, server) = spawn_accel();
    c.negotiate();
    drop(c);
    assert!(matches!(
        server.join().unwrap(),
        Err(TransportError::Closed)
    ));
}
