//! The `vsvm` command's contracts (DESIGN.md): `--help` lists the subcommands; `serve` serves one
//! function per socket, several in one process, and exits 0 on SIGTERM, removing its sockets.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn socket(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("vsvm-cli-{name}-{}.sock", std::process::id()))
}

#[test]
fn test_help_lists_serve() {
    let out = Command::new(env!("CARGO_BIN_EXE_vsvm"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("serve"));
}

#[test]
fn test_serve_help_documents_the_latency_knobs() {
    let out = Command::new(env!("CARGO_BIN_EXE_vsvm"))
        .args(["serve", "--help"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("--poll-us") && help.contains("--no-cpu-latency-qos"));
}

#[test]
fn test_serve_two_functions_then_sigterm_exits_0() {
    let (a, b) = (socket("a"), socket("b"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_vsvm"))
        .args(["serve", "--device", "accel", "--socket-path"])
        .arg(&a)
        .args(["--device", "accel", "--socket-path"])
        .arg(&b)
        .args(["--device-id", "0xa002"])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(a.exists() && b.exists()) {
        assert!(Instant::now() < deadline, "sockets never appeared");
        std::thread::sleep(Duration::from_millis(10));
    }
    for path in [&a, &b] {
        let mut client = vfio_user::Client::new(path).unwrap();
        let mut id = [0u8; 4];
        client.region_read(7, 0, &mut id).unwrap();
        assert_eq!(u32::from_le_bytes(id), 0xa002_5653);
    }
    let pid = rustix::process::Pid::from_child(&child);
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    assert!(child.wait().unwrap().success());
    assert!(!a.exists() && !b.exists(), "sockets left behind");
}

#[test]
fn test_serve_with_mismatched_pairs_fails() {
    let status = Command::new(env!("CARGO_BIN_EXE_vsvm"))
        .args([
            "serve",
            "--device",
            "accel",
            "--device",
            "accel",
            "--socket-path",
        ])
        .arg(socket("c"))
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(2));
}
